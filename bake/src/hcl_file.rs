//! docker-bake.hcl and docker-bake.json: variables (defaults, environment overrides), targets with
//! `inherits` and `matrix`, groups, and the functions of [`crate::funcs`], evaluated with `hcl-rs`.
//!
//! A JSON bake file is turned into the same HCL body first (strings with `${…}` become templates), as
//! buildx reads JSON through HCL's JSON syntax.

use std::collections::{BTreeMap, HashMap};

use hcl::eval::{Context, Evaluate};
use hcl::{Body, Expression, Value};

use crate::{Definition, Error, Target};

/// A parsed HCL or JSON bake file.
pub(crate) struct HclFile {
    pub(crate) name: String,
    pub(crate) body: Body,
    /// 1-based line of each (block type, block label, attribute) of an HCL file; `""` as the attribute
    /// is the block's own line. Empty for JSON files.
    lines: HashMap<(String, String, String), usize>,
}

impl HclFile {
    /// `FILE:LINE` of an attribute (else of its block, else the file alone), for errors.
    fn place(&self, kind: &str, label: &str, key: &str) -> String {
        let at = |k: &str| {
            self.lines
                .get(&(kind.to_owned(), label.to_owned(), k.to_owned()))
                .copied()
        };
        match at(key).or_else(|| at("")) {
            Some(line) => format!("{}:{line}", self.name),
            None => self.name.clone(),
        }
    }
}

/// The lines of every block and attribute of an HCL text (hcl-rs's evaluated body keeps no positions;
/// hcl-edit's parse does).
fn lines_of(text: &str) -> HashMap<(String, String, String), usize> {
    use hcl::edit::Span as _;
    let line = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut out = HashMap::new();
    let Ok(body) = hcl::edit::parser::parse_body(text) else {
        return out;
    };
    for block in body.blocks() {
        let kind = block.ident.as_str().to_owned();
        let label = block
            .labels
            .first()
            .map(|l| l.as_str().to_owned())
            .unwrap_or_default();
        if let Some(span) = block.span() {
            out.insert(
                (kind.clone(), label.clone(), String::new()),
                line(span.start),
            );
        }
        for attr in block.body.attributes() {
            if let Some(span) = attr.span() {
                out.insert(
                    (kind.clone(), label.clone(), attr.key.as_str().to_owned()),
                    line(span.start),
                );
            }
        }
    }
    out
}

/// Parses an HCL bake file.
pub(crate) fn parse_hcl(name: &str, text: &str) -> Result<HclFile, Error> {
    let body = hcl::parse(text).map_err(|e| Error::Parse {
        file: name.to_owned(),
        message: e.to_string(),
    })?;
    Ok(HclFile {
        name: name.to_owned(),
        body,
        lines: lines_of(text),
    })
}

/// Parses a JSON bake file into an HCL body: `{"variable": {...}, "target": {...}, "group": {...}}`.
pub(crate) fn parse_json(name: &str, text: &str) -> Result<HclFile, Error> {
    let bad = |message: String| Error::Parse {
        file: name.to_owned(),
        message,
    };
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let top = v
        .as_object()
        .ok_or_else(|| bad("the top level must be an object".into()))?;
    let mut body = Body::builder();
    for (kind, blocks) in top {
        if !matches!(kind.as_str(), "variable" | "target" | "group") {
            return Err(bad(format!(
                "unknown key {kind:?} (expected variable, target or group)"
            )));
        }
        let blocks = blocks
            .as_object()
            .ok_or_else(|| bad(format!("{kind:?} must map names to objects")))?;
        for (label, attrs) in blocks {
            let attrs = attrs
                .as_object()
                .ok_or_else(|| bad(format!("{kind} {label:?} must be an object")))?;
            let mut block = hcl::Block::builder(kind.as_str()).add_label(label.as_str());
            for (key, value) in attrs {
                block =
                    block.add_attribute(hcl::Attribute::new(key.as_str(), json_expression(value)));
            }
            body = body.add_block(block.build());
        }
    }
    Ok(HclFile {
        name: name.to_owned(),
        body: body.build(),
        lines: HashMap::new(),
    })
}

/// A JSON value as an HCL expression; strings holding `${` are templates.
fn json_expression(v: &serde_json::Value) -> Expression {
    match v {
        serde_json::Value::String(s) if s.contains("${") => {
            Expression::TemplateExpr(Box::new(hcl::TemplateExpr::QuotedString(s.clone())))
        }
        serde_json::Value::Array(a) => Expression::Array(a.iter().map(json_expression).collect()),
        serde_json::Value::Object(m) => Expression::Object(
            m.iter()
                .map(|(k, v)| (hcl::ObjectKey::from(k.as_str()), json_expression(v)))
                .collect(),
        ),
        other => hcl::to_expression(other).unwrap_or(Expression::Null),
    }
}

fn attr<'b>(body: &'b Body, key: &str) -> Option<&'b Expression> {
    body.attributes()
        .find(|a| a.key.as_str() == key)
        .map(|a| &a.expr)
}

fn label(block: &hcl::Block) -> Option<&str> {
    block.labels().first().map(hcl::BlockLabel::as_str)
}

/// Evaluates the variables of all files (a later file's definition wins), then every target and group,
/// into `def`. `env` reads the environment (a variable named like an environment variable takes its value).
pub(crate) fn evaluate(
    files: &[HclFile],
    env: &dyn Fn(&str) -> Option<String>,
    def: &mut Definition,
) -> Result<(), Error> {
    let mut ctx = Context::new();
    crate::funcs::declare(&mut ctx);
    declare_variables(files, env, &mut ctx)?;
    for f in files {
        for block in f.body.blocks() {
            let kind = block.identifier();
            let name = label(block).unwrap_or("");
            let eval_err = |what: String, e: &dyn std::fmt::Display| Error::Eval {
                file: f.place(kind, name, "targets"),
                what,
                message: e.to_string(),
            };
            match kind {
                "variable" => {}
                "function" => {
                    return Err(eval_err(
                        format!("function {:?}", label(block).unwrap_or("")),
                        &"user-defined functions are not supported yet (the built-in ones are)",
                    ))
                }
                "group" => {
                    let name = label(block)
                        .ok_or_else(|| eval_err("group".into(), &"a group needs a name label"))?;
                    let targets = match attr(&block.body, "targets") {
                        Some(e) => e
                            .evaluate(&ctx)
                            .map_err(|e| eval_err(format!("group {name:?}"), &e))?,
                        None => Value::Array(Vec::new()),
                    };
                    let list: Vec<String> =
                        serde_json::from_value(serde_json::to_value(&targets).unwrap_or_default())
                            .map_err(|e| eval_err(format!("group {name:?} targets"), &e))?;
                    let g = def.groups.entry(name.to_owned()).or_default();
                    for t in list {
                        if !g.contains(&t) {
                            g.push(t);
                        }
                    }
                }
                "target" => {
                    let name = label(block)
                        .ok_or_else(|| eval_err("target".into(), &"a target needs a name label"))?;
                    for (full, t) in target_block(f, name, &block.body, &ctx)? {
                        if full != name {
                            let expanded = def.matrix.entry(name.to_owned()).or_default();
                            if !expanded.contains(&full) {
                                expanded.push(full.clone());
                            }
                        }
                        def.add_target(&full, &t);
                    }
                }
                other => {
                    return Err(eval_err(
                        format!("block {other:?}"),
                        &"unknown block type (expected variable, target, group)",
                    ))
                }
            }
        }
    }
    Ok(())
}

/// Declares each variable: its environment value (typed like its default), else its default, which may
/// use variables declared before it in any file.
fn declare_variables(
    files: &[HclFile],
    env: &dyn Fn(&str) -> Option<String>,
    ctx: &mut Context<'_>,
) -> Result<(), Error> {
    // Later definitions of a variable replace earlier ones (an override file changes a default).
    let mut vars: Vec<(String, String, Option<Expression>)> = Vec::new();
    // (name, place for errors, default)
    for f in files {
        for block in f.body.blocks().filter(|b| b.identifier() == "variable") {
            let name = label(block).ok_or_else(|| Error::Eval {
                file: f.name.clone(),
                what: "variable".into(),
                message: "a variable needs a name label".into(),
            })?;
            let default = attr(&block.body, "default").cloned();
            vars.retain(|(n, _, _)| n != name);
            vars.push((
                name.to_owned(),
                f.place("variable", name, "default"),
                default,
            ));
        }
    }
    // Defaults may refer to each other in any order: evaluate until nothing more can be.
    let mut pending = vars;
    loop {
        let mut left = Vec::new();
        let mut last_err = None;
        let before = pending.len();
        for (name, file, default) in pending {
            let value = match &default {
                None => Ok(Value::String(String::new())),
                Some(e) => e.evaluate(ctx),
            };
            match value {
                Ok(v) => {
                    let v = match env(&name) {
                        Some(text) => typed_like(&v, text),
                        None => v,
                    };
                    ctx.declare_var(name.as_str(), v);
                }
                Err(e) => {
                    last_err = Some(Error::Eval {
                        file: file.clone(),
                        what: format!("variable {name:?}"),
                        message: e.to_string(),
                    });
                    left.push((name, file, default));
                }
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if left.len() == before {
            return Err(last_err.expect("an unevaluated variable has an error"));
        }
        pending = left;
    }
}

/// An environment value typed like the variable's default (bool and number defaults parse it), as buildx.
fn typed_like(default: &Value, text: String) -> Value {
    match default {
        Value::Bool(_) => match text.parse::<bool>() {
            Ok(b) => Value::Bool(b),
            Err(_) => Value::String(text),
        },
        Value::Number(_) => match text.parse::<i64>() {
            Ok(n) => n.into(),
            Err(_) => text.parse::<f64>().map_or(Value::String(text), Value::from),
        },
        _ => Value::String(text),
    }
}

/// The targets one `target` block makes: itself, or one per combination of its `matrix` values (each
/// named by its `name` attribute).
fn target_block(
    f: &HclFile,
    label: &str,
    body: &Body,
    ctx: &Context<'_>,
) -> Result<Vec<(String, Target)>, Error> {
    let err = |what: String, message: String| Error::Eval {
        file: f.place(
            "target",
            label,
            if what.ends_with(" name") {
                "name"
            } else {
                "matrix"
            },
        ),
        what,
        message,
    };
    let Some(matrix) = attr(body, "matrix") else {
        return Ok(vec![(
            label.to_owned(),
            target_attrs(f, label, label, body, ctx)?,
        )]);
    };
    let m = matrix
        .evaluate(ctx)
        .map_err(|e| err(format!("target {label:?} matrix"), e.to_string()))?;
    let Value::Object(m) = m else {
        return Err(err(
            format!("target {label:?} matrix"),
            "must be an object of lists".into(),
        ));
    };
    // Every combination, the first key varying slowest (buildx's order).
    let mut combos: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (k, vs) in &m {
        let Value::Array(vs) = vs else {
            return Err(err(
                format!("target {label:?} matrix {k:?}"),
                "must be a list".into(),
            ));
        };
        combos = combos
            .into_iter()
            .flat_map(|c| {
                vs.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((k.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    let name_expr = attr(body, "name").ok_or_else(|| {
        err(
            format!("target {label:?}"),
            "a target with a matrix needs a name attribute (e.g. name = \"app-${item}\")".into(),
        )
    })?;
    let mut out = Vec::new();
    for combo in combos {
        let mut c = ctx.clone();
        for (k, v) in combo {
            c.declare_var(k.as_str(), v);
        }
        let name = match name_expr.evaluate(&c) {
            Ok(Value::String(s)) => s,
            Ok(other) => {
                return Err(err(
                    format!("target {label:?} name"),
                    format!("must be a string, got {other}"),
                ))
            }
            Err(e) => return Err(err(format!("target {label:?} name"), e.to_string())),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        {
            return Err(err(
                format!("target {label:?} name"),
                format!("{name:?} is not a valid target name (letters, digits, _ and -; sanitize() helps)"),
            ));
        }
        let t = target_attrs(f, label, &name, body, &c)?;
        out.push((name, t));
    }
    Ok(out)
}

/// Evaluates a target block's attributes (all but `matrix` and `name`) into a [`Target`]; `label` is the
/// block's, `name` the target's (they differ under a matrix).
fn target_attrs(
    f: &HclFile,
    label: &str,
    name: &str,
    body: &Body,
    ctx: &Context<'_>,
) -> Result<Target, Error> {
    let mut map = serde_json::Map::new();
    for a in body.attributes() {
        let key = a.key.as_str();
        if key == "matrix" || key == "name" {
            continue;
        }
        let v = a.expr.evaluate(ctx).map_err(|e| Error::Eval {
            file: f.place("target", label, key),
            what: format!("target {name:?} attribute {key}"),
            message: e.to_string(),
        })?;
        let mut j = serde_json::to_value(&v).unwrap_or_default();
        if matches!(key, "args" | "labels" | "contexts") {
            j = stringify_map(j);
        }
        if j.is_null() {
            continue;
        }
        map.insert(key.to_owned(), j);
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| Error::Eval {
        file: f.place("target", label, ""),
        what: format!("target {name:?}"),
        message: e.to_string(),
    })
}

/// `args`/`labels` values may be numbers or bools in HCL; null entries are left out (unset), as buildx.
pub(crate) fn stringify_map(v: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(m) = v else {
        return v;
    };
    let out: BTreeMap<String, serde_json::Value> = m
        .into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some((k, s.into())),
            other => Some((k, other.to_string().into())),
        })
        .collect();
    serde_json::to_value(out).unwrap_or_default()
}
