//! compose.yaml: every service's `build:` section as a target named after the service (`image:` is its
//! first tag), and a `default` group of them all, as buildx reads a Compose file.
//!
//! buildx's `x-bake` extension in a `build:` section takes bake fields (`platforms`, `output`, `tags`,
//! `cache-to`, …, named as in HCL) laid over the section; other `x-` keys are ignored, as Compose does.
//!
//! Values are interpolated from the environment first (`${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `$VAR`, `$$` for a literal `$`), as Compose does.

use std::path::Path;

use serde_json::Value;

use crate::{Definition, Error, Target};

/// Reads a Compose file into `def`; `dir` is the file's directory (contexts are relative to it).
pub(crate) fn load(
    name: &str,
    text: &str,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    def: &mut Definition,
) -> Result<(), Error> {
    let bad = |what: String, message: String| Error::Eval {
        file: name.to_owned(),
        what,
        message,
    };
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| Error::Parse {
        file: name.to_owned(),
        message: e.to_string(),
    })?;
    let services = doc
        .get("services")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::Parse {
            file: name.to_owned(),
            message: "no `services:` mapping".into(),
        })?;
    let secrets = doc.get("secrets").and_then(Value::as_object);
    for (service, s) in services {
        let Some(build) = s.get("build") else {
            continue;
        };
        let what = |field: &str| format!("service {service:?} build.{field}");
        let text_of = |v: &Value, field: &str| -> Result<String, Error> {
            match v {
                Value::String(s) => interpolate(s, env).map_err(|m| bad(what(field), m)),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                _ => Err(bad(what(field), "expected a string".into())),
            }
        };
        let mut t = Target::default();
        let build = match build {
            Value::String(ctx) => {
                let mut m = serde_json::Map::new();
                m.insert("context".into(), Value::String(ctx.clone()));
                Value::Object(m)
            }
            Value::Object(_) => build.clone(),
            _ => return Err(bad(what(""), "expected a path or a mapping".into())),
        };
        let context = match build.get("context") {
            Some(v) => text_of(v, "context")?,
            None => ".".to_owned(),
        };
        t.context = Some(relative_to(dir, &context));
        let mut x_bake = None;
        for (key, v) in build.as_object().into_iter().flatten() {
            match key.as_str() {
                "context" => {}
                "dockerfile" => t.dockerfile = Some(text_of(v, key)?),
                "dockerfile_inline" => t.dockerfile_inline = Some(text_of(v, key)?),
                "target" => t.target = Some(text_of(v, key)?),
                "network" => t.network = Some(text_of(v, key)?),
                "shm_size" => t.shm_size = Some(text_of(v, key)?),
                "no_cache" => t.no_cache = v.as_bool(),
                "pull" => t.pull = v.as_bool(),
                "args" => t.args = pairs(v, env).map_err(|m| bad(what(key), m))?,
                "labels" => t.labels = pairs(v, env).map_err(|m| bad(what(key), m))?,
                "additional_contexts" => {
                    t.contexts = pairs(v, env).map_err(|m| bad(what(key), m))?;
                    for c in t.contexts.values_mut() {
                        if !c.contains(':') {
                            *c = relative_to(dir, c);
                        }
                    }
                }
                "tags" => t.tags = strings(v, env).map_err(|m| bad(what(key), m))?,
                "cache_from" => t.cache_from = strings(v, env).map_err(|m| bad(what(key), m))?,
                "cache_to" => t.cache_to = strings(v, env).map_err(|m| bad(what(key), m))?,
                "platforms" => t.platforms = strings(v, env).map_err(|m| bad(what(key), m))?,
                "extra_hosts" => {
                    t.extra_hosts = match v {
                        Value::Object(_) => pairs(v, env)
                            .map_err(|m| bad(what(key), m))?
                            .into_iter()
                            .map(|(h, ip)| format!("{h}={ip}"))
                            .collect(),
                        _ => strings(v, env).map_err(|m| bad(what(key), m))?,
                    }
                }
                "ssh" => {
                    t.ssh = match v {
                        Value::Object(_) => pairs(v, env)
                            .map_err(|m| bad(what(key), m))?
                            .into_iter()
                            .map(|(id, p)| format!("{id}={p}"))
                            .collect(),
                        _ => strings(v, env).map_err(|m| bad(what(key), m))?,
                    }
                }
                "secrets" => {
                    for s in v.as_array().into_iter().flatten() {
                        let id = match s {
                            Value::String(id) => id.clone(),
                            Value::Object(o) => o
                                .get("source")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            _ => String::new(),
                        };
                        let src = secrets.and_then(|all| all.get(&id)).ok_or_else(|| {
                            bad(
                                what(key),
                                format!(
                                    "secret {id:?} is not defined under the top-level `secrets:`"
                                ),
                            )
                        })?;
                        let spec = if let Some(file) = src.get("file").and_then(Value::as_str) {
                            format!("id={id},src={}", relative_to(dir, file))
                        } else if let Some(var) = src.get("environment").and_then(Value::as_str) {
                            format!("id={id},env={var}")
                        } else {
                            return Err(bad(
                                what(key),
                                format!("secret {id:?} needs `file:` or `environment:`"),
                            ));
                        };
                        t.secret.push(spec);
                    }
                }
                // buildx's extension: bake fields (their bake names) laid over the build section.
                "x-bake" => {
                    let extra: Target = serde_json::from_value(v.clone())
                        .map_err(|e| bad(what(key), e.to_string()))?;
                    x_bake = Some(extra);
                }
                other if other.starts_with("x-") => {}
                other => {
                    return Err(bad(
                        what(other),
                        "not supported by rbuild bake (docs/BAKE.md lists the supported keys)"
                            .into(),
                    ))
                }
            }
        }
        if let Some(extra) = &x_bake {
            t.merge(extra);
        }
        if let Some(image) = s.get("image") {
            let image = text_of(image, "image")?;
            t.tags.retain(|x| *x != image);
            t.tags.insert(0, image);
        }
        def.add_target(service, &t);
        let g = def.groups.entry("default".to_owned()).or_default();
        if !g.contains(service) {
            g.push(service.clone());
        }
    }
    Ok(())
}

/// A path of the Compose file, relative to the directory bake runs in.
fn relative_to(dir: &Path, p: &str) -> String {
    if dir.as_os_str().is_empty() || dir == Path::new(".") || Path::new(p).is_absolute() {
        return p.to_owned();
    }
    if p == "." {
        return dir.display().to_string();
    }
    dir.join(p).display().to_string()
}

/// A list of strings (or one string).
fn strings(v: &Value, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![interpolate(s, env)?]),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => interpolate(s, env),
                other => Ok(other.to_string()),
            })
            .collect(),
        _ => Err("expected a list of strings".into()),
    }
}

/// A mapping, or a list of `KEY=VALUE` (a bare `KEY` takes the environment's value, as Compose).
fn pairs(
    v: &Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let v = match v {
                    Value::Null => match env(k) {
                        Some(e) => e,
                        None => continue,
                    },
                    Value::String(s) => interpolate(s, env)?,
                    other => other.to_string(),
                };
                out.insert(k.clone(), v);
            }
        }
        Value::Array(a) => {
            for item in a {
                let s = item.as_str().ok_or("expected KEY=VALUE strings")?;
                let s = interpolate(s, env)?;
                match s.split_once('=') {
                    Some((k, v)) => {
                        out.insert(k.to_owned(), v.to_owned());
                    }
                    None => {
                        if let Some(e) = env(&s) {
                            out.insert(s, e);
                        }
                    }
                }
            }
        }
        _ => return Err("expected a mapping or a list of KEY=VALUE".into()),
    }
    Ok(out)
}

/// Compose's interpolation of `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `$VAR` and `$$`.
pub(crate) fn interpolate(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(a) = after.strip_prefix('{') {
            let end = a
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let inner = &a[..end];
            let value = if let Some((var, def)) = inner.split_once(":-") {
                env(var)
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| def.to_owned())
            } else if let Some((var, def)) = inner.split_once('-') {
                env(var).unwrap_or_else(|| def.to_owned())
            } else {
                env(inner).unwrap_or_default()
            };
            out.push_str(&value);
            rest = &a[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(&env(&after[..len]).unwrap_or_default());
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}
