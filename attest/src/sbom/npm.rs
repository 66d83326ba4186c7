//! npm packages: `package-lock.json` (lockfile v1 `dependencies`, v2/v3 `packages`) and installed
//! `node_modules/NAME/package.json` / `node_modules/@SCOPE/NAME/package.json`.

use serde_json::Value;

use std::collections::BTreeSet;

use super::{purl_encode, Ecosystem, Package, Tree};

/// The packages, and (from v2/v3 lock files) which depends on which, as (dependent, dependency) purls.
pub(crate) fn scan(
    tree: &dyn Tree,
    candidates: &[String],
    dependencies: &mut BTreeSet<(String, String)>,
) -> Result<Vec<Package>, crate::Error> {
    let mut out = Vec::new();
    for path in candidates {
        let in_modules = path.contains("/node_modules/");
        if path.ends_with("/package-lock.json") && !in_modules {
            if let Some(doc) = read_json(tree, path)? {
                lock_packages(&doc, path, &mut out);
                lock_dependencies(&doc, dependencies);
            }
        } else if path.ends_with("/package.json") && installed_manifest(path) {
            if let Some(doc) = read_json(tree, path)? {
                if let Some(p) = manifest_package(&doc, path) {
                    out.push(p);
                }
            }
        }
    }
    Ok(out)
}

/// Whether a `package.json` is a package's own manifest directly under a `node_modules` directory.
fn installed_manifest(path: &str) -> bool {
    let parts: Vec<&str> = path.rsplit('/').collect();
    // [package.json, NAME, node_modules, ..] or [package.json, NAME, @SCOPE, node_modules, ..]
    match parts.as_slice() {
        [_, _, "node_modules", ..] => true,
        [_, _, scope, "node_modules", ..] => scope.starts_with('@'),
        _ => false,
    }
}

fn read_json(tree: &dyn Tree, path: &str) -> Result<Option<Value>, crate::Error> {
    let Some(bytes) = tree.read(path)? else {
        return Ok(None);
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            tracing::warn!(path, error = %e, "skipping unreadable npm file");
            Ok(None)
        }
    }
}

fn lock_packages(doc: &Value, path: &str, out: &mut Vec<Package>) {
    if let Some(packages) = doc.get("packages").and_then(Value::as_object) {
        for (key, p) in packages {
            // "" is the project itself; links point at workspace folders listed under their own key.
            if key.is_empty() || p.get("link").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| key.rsplit_once("node_modules/").map(|(_, n)| n.to_owned()));
            let (Some(name), Some(version)) = (name, p.get("version").and_then(Value::as_str))
            else {
                continue;
            };
            out.push(package(&name, version, license(p), path));
        }
    } else if let Some(deps) = doc.get("dependencies").and_then(Value::as_object) {
        v1_dependencies(deps, path, out);
    }
}

/// The runtime dependency edges of a v2/v3 lock file: each package's `dependencies` and
/// `optionalDependencies`, resolved as Node resolves them — the nearest `node_modules/NAME` from the
/// dependent's folder up (devDependencies are the project's own and not followed).
fn lock_dependencies(doc: &Value, out: &mut BTreeSet<(String, String)>) {
    let Some(packages) = doc.get("packages").and_then(Value::as_object) else {
        return;
    };
    let purl_at = |key: &str| {
        let p = packages.get(key)?;
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| key.rsplit_once("node_modules/").map(|(_, n)| n.to_owned()))?;
        let version = p.get("version").and_then(Value::as_str)?;
        Some(package(&name, version, Vec::new(), "").purl)
    };
    for (key, p) in packages {
        if key.is_empty() {
            continue; // the project itself is not one of the image's packages
        }
        let Some(from) = purl_at(key) else { continue };
        let names = ["dependencies", "optionalDependencies"]
            .iter()
            .filter_map(|k| p.get(*k).and_then(Value::as_object))
            .flat_map(|m| m.keys());
        for dep in names {
            let mut dir = key.as_str();
            let found = loop {
                let candidate = if dir.is_empty() {
                    format!("node_modules/{dep}")
                } else {
                    format!("{dir}/node_modules/{dep}")
                };
                if packages.contains_key(&candidate) {
                    break Some(candidate);
                }
                // Up one package folder: `a/node_modules/b` -> `a`; the top is the project's.
                match dir.rsplit_once("/node_modules/") {
                    Some((up, _)) => dir = up,
                    None if !dir.is_empty() => dir = "",
                    None => break None,
                }
            };
            if let Some(to) = found.as_deref().and_then(purl_at) {
                out.insert((from.clone(), to));
            }
        }
    }
}

fn v1_dependencies(deps: &serde_json::Map<String, Value>, path: &str, out: &mut Vec<Package>) {
    for (name, d) in deps {
        if let Some(version) = d.get("version").and_then(Value::as_str) {
            out.push(package(name, version, Vec::new(), path));
        }
        if let Some(nested) = d.get("dependencies").and_then(Value::as_object) {
            v1_dependencies(nested, path, out);
        }
    }
}

fn manifest_package(doc: &Value, path: &str) -> Option<Package> {
    let name = doc.get("name")?.as_str()?;
    let version = doc.get("version")?.as_str()?;
    Some(package(name, version, license(doc), path))
}

/// `license` as a string, or the old `{type}` object and `licenses` array forms.
fn license(doc: &Value) -> Vec<String> {
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("type")?.as_str().map(str::to_owned),
        _ => None,
    };
    if let Some(l) = doc.get("license").and_then(one) {
        return vec![l];
    }
    doc.get("licenses")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(one).collect())
        .unwrap_or_default()
}

fn package(name: &str, version: &str, licenses: Vec<String>, path: &str) -> Package {
    let purl = match name.split_once('/') {
        Some((scope, n)) if scope.starts_with('@') => format!(
            "pkg:npm/{}/{}@{}",
            purl_encode(scope),
            purl_encode(n),
            purl_encode(version)
        ),
        _ => format!("pkg:npm/{}@{}", purl_encode(name), purl_encode(version)),
    };
    Package {
        ecosystem: Ecosystem::Npm,
        name: name.to_owned(),
        version: version.to_owned(),
        arch: None,
        source: None,
        licenses,
        purl,
        found_in: path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_dependencies_resolve_as_node_does_nearest_node_modules_first() {
        // `a` needs b@2 (nested under it) and c (hoisted); `b`@1 at the top is another package's;
        // dev dependencies are not followed; the project ("") is not a package.
        let doc: Value = serde_json::from_str(
            r#"{"lockfileVersion": 3, "packages": {
                "": {"name": "app", "dependencies": {"a": "^1"}, "devDependencies": {"t": "1"}},
                "node_modules/a": {"version": "1.0.0", "dependencies": {"b": "^2", "c": "^1"},
                                   "optionalDependencies": {"@s/o": "1"}, "devDependencies": {"t": "1"}},
                "node_modules/a/node_modules/b": {"version": "2.0.0", "dependencies": {"c": "^1"}},
                "node_modules/b": {"version": "1.0.0"},
                "node_modules/c": {"version": "1.5.0"},
                "node_modules/@s/o": {"version": "1.0.0"},
                "node_modules/t": {"version": "1.0.0", "dev": true}
            }}"#,
        )
        .unwrap();
        let mut deps = BTreeSet::new();
        lock_dependencies(&doc, &mut deps);
        let got: Vec<(&str, &str)> = deps.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(
            got,
            [
                ("pkg:npm/a@1.0.0", "pkg:npm/%40s/o@1.0.0"),
                ("pkg:npm/a@1.0.0", "pkg:npm/b@2.0.0"),
                ("pkg:npm/a@1.0.0", "pkg:npm/c@1.5.0"),
                ("pkg:npm/b@2.0.0", "pkg:npm/c@1.5.0"),
            ]
        );
    }

    #[test]
    fn manifest_paths() {
        assert!(installed_manifest("/app/node_modules/express/package.json"));
        assert!(installed_manifest(
            "/app/node_modules/@types/node/package.json"
        ));
        assert!(installed_manifest(
            "/a/node_modules/x/node_modules/y/package.json"
        ));
        assert!(!installed_manifest("/app/package.json"));
        assert!(!installed_manifest(
            "/app/node_modules/express/lib/package.json"
        ));
    }

    #[test]
    fn lockfile_v3_and_v1() {
        let v3 = serde_json::json!({
            "lockfileVersion": 3,
            "packages": {
                "": {"name": "app", "version": "1.0.0"},
                "node_modules/express": {"version": "4.18.2", "license": "MIT"},
                "node_modules/@types/node": {"version": "20.1.0"},
                "node_modules/a/node_modules/b": {"version": "0.1.0"},
                "packages/ws": {"link": true}
            }
        });
        let mut out = Vec::new();
        lock_packages(&v3, "/app/package-lock.json", &mut out);
        let names: Vec<_> = out
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("@types/node", "20.1.0"),
                ("b", "0.1.0"),
                ("express", "4.18.2")
            ]
        );
        assert_eq!(out[0].purl, "pkg:npm/%40types/node@20.1.0");
        assert_eq!(out[2].licenses, ["MIT"]);

        let v1 = serde_json::json!({"dependencies": {"a": {"version": "1.0.0",
            "dependencies": {"b": {"version": "2.0.0"}}}}});
        let mut out = Vec::new();
        lock_packages(&v1, "/p/package-lock.json", &mut out);
        assert_eq!(out.len(), 2);
    }
}
