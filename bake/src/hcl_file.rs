//! docker-bake.hcl and docker-bake.json: variables (defaults, types, validations, environment
//! overrides), global attributes, user-defined functions, targets with `inherits` and `matrix`,
//! references between targets (`target.NAME.FIELD`), groups; parsed by `hcl-rs`, evaluated by
//! [`crate::eval`] with the functions of [`crate::funcs`].
//!
//! Names resolve lazily as in buildx's `hclparser`: a variable, attribute, function or target attribute
//! is evaluated when first used, and one that needs itself is a cycle error naming it.
//!
//! A JSON bake file is turned into the same HCL body first (strings with `${…}` become templates), as
//! buildx reads JSON through HCL's JSON syntax.

use std::cell::RefCell;
use std::collections::HashMap;

use hcl::{Body, Expression, Value};

use crate::eval::{self, Host, Scope};
use crate::types::Type;
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
    for attr in body.attributes() {
        if let Some(span) = attr.span() {
            out.insert(
                (String::new(), String::new(), attr.key.as_str().to_owned()),
                line(span.start),
            );
        }
    }
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
        // A variable's `validation` blocks, as `validation.N`.
        for (i, inner) in block.body.blocks().enumerate() {
            if let Some(span) = inner.span() {
                out.insert(
                    (
                        kind.clone(),
                        label.clone(),
                        format!("{}.{i}", inner.ident.as_str()),
                    ),
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
        if !matches!(kind.as_str(), "variable" | "target" | "group" | "function") {
            // Any other key is a global attribute (buildx: `{"FOO": "abc", "target": …}`).
            body = body.add_attribute(hcl::Attribute::new(kind.as_str(), json_expression(blocks)));
            continue;
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
                // A variable's validations are blocks: an object, or a list of objects.
                if kind == "variable" && key == "validation" {
                    let list = match value {
                        serde_json::Value::Array(items) => items.clone(),
                        other => vec![other.clone()],
                    };
                    for v in list {
                        let mut inner = hcl::Block::builder("validation");
                        for (k, x) in v.as_object().into_iter().flatten() {
                            inner = inner
                                .add_attribute(hcl::Attribute::new(k.as_str(), json_expression(x)));
                        }
                        block = block.add_block(inner.build());
                    }
                    continue;
                }
                let expr = match (kind.as_str(), key.as_str()) {
                    // A type is an expression written as a string (`"list(string)"`).
                    ("variable", "type") => match value.as_str() {
                        Some(text) => text
                            .parse::<Expression>()
                            .map_err(|e| bad(format!("variable {label:?} type {text:?}: {e}")))?,
                        None => json_expression(value),
                    },
                    // Parameter names are strings in JSON (HCL's JSON syntax reads them as keywords).
                    ("function", "params") => Expression::Array(
                        value
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|p| match p.as_str() {
                                Some(name) => {
                                    Expression::Variable(hcl::expr::Variable::sanitized(name))
                                }
                                None => json_expression(p),
                            })
                            .collect(),
                    ),
                    ("function", "variadic_params") => match value.as_str() {
                        Some(name) => Expression::Variable(hcl::expr::Variable::sanitized(name)),
                        None => json_expression(value),
                    },
                    // A JSON function result is an expression template, whether or not it has `${`.
                    ("function", "result") => match value.as_str() {
                        Some(text) => Expression::TemplateExpr(Box::new(
                            hcl::TemplateExpr::QuotedString(text.to_owned()),
                        )),
                        None => json_expression(value),
                    },
                    _ => json_expression(value),
                };
                block = block.add_attribute(hcl::Attribute::new(key.as_str(), expr));
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

/// A `variable` block (the last definition of a name wins, as in buildx).
struct VarDef<'f> {
    place: String,
    default: Option<&'f Expression>,
    ty: Option<&'f Expression>,
    /// (condition, error_message, place) of each `validation` block.
    validations: Vec<(Option<&'f Expression>, Option<&'f Expression>, String)>,
}

/// A `function` block: `params = [a, b]`, `variadic_params = rest`, `result = expr`.
struct FuncDef<'f> {
    place: String,
    params: Vec<String>,
    variadic: Option<String>,
    result: &'f Expression,
}

/// The values of one matrix combination, by matrix key.
type Combination = Vec<(String, Value)>;

/// One target a `target` block makes: the block itself, or one matrix combination of it.
struct Instance<'f> {
    file: usize,
    label: String,
    name: String,
    body: &'f Body,
    /// The matrix values of this combination.
    vars: Vec<(String, Value)>,
}

/// Everything the files define, resolved on first use (buildx's `hclparser` order and errors).
struct Resolver<'f> {
    files: &'f [HclFile],
    env: &'f dyn Fn(&str) -> Option<String>,
    vars: HashMap<String, VarDef<'f>>,
    /// Global attributes (`FOO = "x"` at the top level): like variables, but never from the environment.
    attrs: HashMap<String, (String, &'f Expression)>,
    funcs: HashMap<String, FuncDef<'f>>,
    values: RefCell<HashMap<String, Value>>,
    resolving: RefCell<Vec<String>>,
    calling: RefCell<Vec<String>>,
    instances: RefCell<Option<std::rc::Rc<Vec<Instance<'f>>>>>,
    expanding: RefCell<bool>,
    fields: RefCell<HashMap<(usize, String), Value>>,
    field_progress: RefCell<Vec<(usize, String)>>,
}

fn root_scope(vars: &[(String, Value)]) -> Scope<'static> {
    let mut s = Scope::default();
    for (k, v) in vars {
        s.set(k, v.clone());
    }
    s
}

impl<'f> Resolver<'f> {
    fn new(files: &'f [HclFile], env: &'f dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let mut vars = HashMap::new();
        let mut attrs = HashMap::new();
        let mut funcs = HashMap::new();
        for f in files {
            for a in f.body.attributes() {
                let key = a.key.as_str();
                attrs.insert(key.to_owned(), (f.place("", "", key), &a.expr));
            }
            for block in f.body.blocks() {
                let kind = block.identifier();
                if kind != "variable" && kind != "function" {
                    continue;
                }
                let name = label(block).ok_or_else(|| Error::Eval {
                    file: f.place(kind, "", ""),
                    what: kind.to_owned(),
                    message: format!("a {kind} needs a name label"),
                })?;
                if kind == "variable" {
                    let validations = block
                        .body
                        .blocks()
                        .filter(|b| b.identifier() == "validation")
                        .enumerate()
                        .map(|(i, b)| {
                            (
                                attr(&b.body, "condition"),
                                attr(&b.body, "error_message"),
                                f.place("variable", name, &format!("validation.{i}")),
                            )
                        })
                        .collect();
                    vars.insert(
                        name.to_owned(),
                        VarDef {
                            place: f.place("variable", name, "default"),
                            default: attr(&block.body, "default"),
                            ty: attr(&block.body, "type"),
                            validations,
                        },
                    );
                } else {
                    funcs.insert(name.to_owned(), function_def(f, name, &block.body)?);
                }
            }
        }
        let r = Self {
            files,
            env,
            vars,
            attrs,
            funcs,
            values: RefCell::default(),
            resolving: RefCell::default(),
            calling: RefCell::default(),
            instances: RefCell::default(),
            expanding: RefCell::default(),
            fields: RefCell::default(),
            field_progress: RefCell::default(),
        };
        r.check_function_cycles()?;
        Ok(r)
    }

    /// A function that calls itself, directly or through others, is an error (buildx: "function cycle
    /// not allowed"), found before anything is evaluated.
    fn check_function_cycles(&self) -> Result<(), Error> {
        fn visit(
            r: &Resolver<'_>,
            name: &str,
            path: &mut Vec<String>,
            done: &mut Vec<String>,
        ) -> Result<(), Error> {
            if done.iter().any(|d| d == name) {
                return Ok(());
            }
            let f = &r.funcs[name];
            if path.iter().any(|p| p == name) {
                path.push(name.to_owned());
                return Err(Error::Eval {
                    file: f.place.clone(),
                    what: format!("function {name:?}"),
                    message: format!(
                        "function cycle not allowed for {name} ({})",
                        path.join(" -> ")
                    ),
                });
            }
            path.push(name.to_owned());
            let mut called = Vec::new();
            eval::calls(f.result, &mut called);
            for c in called {
                if r.funcs.contains_key(&c) && crate::funcs::call(&c, &[]).is_none() {
                    visit(r, &c, path, done)?;
                }
            }
            path.pop();
            done.push(name.to_owned());
            Ok(())
        }
        let mut names: Vec<&String> = self.funcs.keys().collect();
        names.sort();
        let mut done = Vec::new();
        for n in names {
            visit(self, n, &mut Vec::new(), &mut done)?;
        }
        Ok(())
    }

    /// A variable's value: typed, overridden by the environment, cached; `None` if no such variable.
    fn variable(&self, name: &str) -> Result<Option<Value>, Error> {
        if let Some(v) = builtin_variable(name) {
            return Ok(Some(v));
        }
        if let Some(v) = self.values.borrow().get(name) {
            return Ok(Some(v.clone()));
        }
        let (place, what) = if let Some(d) = self.vars.get(name) {
            (d.place.clone(), format!("variable {name:?}"))
        } else if let Some((place, _)) = self.attrs.get(name) {
            (place.clone(), format!("attribute {name:?}"))
        } else {
            return Ok(None);
        };
        if self.resolving.borrow().iter().any(|r| r == name) {
            return Err(Error::Eval {
                file: place,
                what,
                message: format!("variable cycle not allowed for {name}"),
            });
        }
        self.resolving.borrow_mut().push(name.to_owned());
        let v = match self.vars.get(name) {
            Some(d) => self.compute_variable(name, d),
            None => eval::eval(self.attrs[name].1, &Scope::default(), self),
        };
        self.resolving.borrow_mut().retain(|r| r != name);
        let v = v.map_err(|message| Error::Eval {
            file: place,
            what,
            message,
        })?;
        self.values.borrow_mut().insert(name.to_owned(), v.clone());
        Ok(Some(v))
    }

    /// buildx's `resolveValue` for a `variable` block.
    fn compute_variable(&self, name: &str, d: &VarDef<'_>) -> Result<Value, String> {
        let ty = match d.ty {
            None => None,
            Some(Expression::Null) => None,
            Some(e) => Some(Type::parse(e).map_err(|e| format!("type: {e}"))?),
        };
        let typed = ty.is_some();
        let (text, json) = match self.env_override(name, typed) {
            Some((t, j)) => (Some(t), j),
            None => (None, false),
        };
        let value = match d.default {
            None if text.is_none() => {
                // No value: a typed variable is null, an untyped one the empty string.
                return Ok(if typed {
                    Value::Null
                } else {
                    Value::String(String::new())
                });
            }
            None => None,
            Some(e) => {
                let v = eval::eval(e, &Scope::default(), self)?;
                Some(match &ty {
                    Some(t) => t.convert(v).map_err(|e| {
                        format!(
                            "invalid type {} for variable {name} default value: {e}",
                            t.name()
                        )
                    })?,
                    None => v,
                })
            }
        };
        let Some(text) = text else {
            return Ok(value.unwrap_or(Value::Null));
        };
        match (&ty, &value) {
            (Some(t), _) if json => {
                let j: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| format!("failed to convert variable {name} from JSON: {e}"))?;
                t.convert(crate::funcs::json_value(j))
                    .map_err(|e| format!("failed to convert variable {name} from JSON: {e}"))
            }
            (Some(t), _) => t.read_env(name, &text),
            (None, None | Some(Value::Null)) => Ok(Value::String(text)),
            (None, Some(v)) => match crate::types::of(v) {
                Some(t) => crate::types::primitive(name, &text, &t),
                None => Err(format!(
                    "unsupported type {} for variable {name}",
                    eval::type_name(v)
                )),
            },
        }
    }

    /// The environment's value for a variable and whether it came as JSON (`NAME_JSON`, read when
    /// there is no plain `NAME` or the variable is typed, and no variable is itself named `NAME_JSON`).
    fn env_override(&self, name: &str, favor_json: bool) -> Option<(String, bool)> {
        let plain = (self.env)(name);
        if plain.is_none() || favor_json {
            let json_name = format!("{name}_JSON");
            if !self.vars.contains_key(&json_name) {
                if let Some(j) = (self.env)(&json_name) {
                    return Some((j, true));
                }
            }
        }
        plain.map(|p| (p, false))
    }

    /// Checks every variable's `validation` blocks (after all variables are known), in the order the
    /// variables are defined; the first failure is the error.
    fn validate(&self, order: &[String]) -> Result<(), Error> {
        for name in order {
            for (cond, msg, place) in &self.vars[name].validations {
                let fail = |message: String| Error::Eval {
                    file: place.clone(),
                    what: format!("variable {name:?} validation"),
                    message,
                };
                let v = match cond {
                    Some(c) => eval::eval(c, &Scope::default(), self).map_err(&fail)?,
                    None => Value::Null,
                };
                if v.is_null() {
                    return Err(fail(
                        "Invalid condition result: Condition expression must return either true or false, not null".into(),
                    ));
                }
                let ok = eval::to_bool(&v).map_err(|e| {
                    fail(format!(
                        "Invalid condition result: Invalid condition result value: {e}"
                    ))
                })?;
                if !ok {
                    let text = match msg {
                        Some(m) => match eval::eval(m, &Scope::default(), self).map_err(&fail)? {
                            Value::Null => None,
                            v => Some(eval::to_text(&v).map_err(&fail)?),
                        },
                        None => None,
                    };
                    return Err(fail(format!(
                        "Validation failed: {}",
                        text.as_deref()
                            .unwrap_or("This check failed, but has an invalid error message.")
                    )));
                }
            }
        }
        Ok(())
    }

    /// Every target block expanded (matrix combinations named), in file and block order.
    fn instances(&self) -> Result<std::rc::Rc<Vec<Instance<'f>>>, Error> {
        if let Some(i) = self.instances.borrow().as_ref() {
            return Ok(i.clone());
        }
        if self.expanding.replace(true) {
            return Err(Error::Eval {
                file: String::new(),
                what: "target".into(),
                message: "a target's matrix or name cannot refer to a target (reference cycle)"
                    .into(),
            });
        }
        let mut out = Vec::new();
        let mut result = Ok(());
        'files: for (i, f) in self.files.iter().enumerate() {
            for block in f.body.blocks().filter(|b| b.identifier() == "target") {
                let Some(name) = label(block) else {
                    result = Err(Error::Eval {
                        file: f.place("target", "", ""),
                        what: "target".into(),
                        message: "a target needs a name label".into(),
                    });
                    break 'files;
                };
                match self.expand(f, name, &block.body) {
                    Ok(list) => out.extend(list.into_iter().map(|(n, vars)| Instance {
                        file: i,
                        label: name.to_owned(),
                        name: n,
                        body: &block.body,
                        vars,
                    })),
                    Err(e) => {
                        result = Err(e);
                        break 'files;
                    }
                }
            }
        }
        self.expanding.replace(false);
        result?;
        let rc = std::rc::Rc::new(out);
        *self.instances.borrow_mut() = Some(rc.clone());
        Ok(rc)
    }

    /// The (name, matrix values) of each target one block makes: itself, or one per combination of
    /// its `matrix` values, named by its `name` attribute.
    fn expand(
        &self,
        f: &HclFile,
        label: &str,
        body: &Body,
    ) -> Result<Vec<(String, Combination)>, Error> {
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
            if attr(body, "name").is_some() {
                return Err(err(
                    format!("target {label:?} name"),
                    "name requires matrix".into(),
                ));
            }
            return Ok(vec![(label.to_owned(), Vec::new())]);
        };
        let m = eval::eval(matrix, &Scope::default(), self)
            .map_err(|e| err(format!("target {label:?} matrix"), e))?;
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
        // Without a name, every combination is named like the block (buildx), so more than one
        // combination is a duplicate name.
        let name_expr = attr(body, "name");
        let mut out: Vec<(String, Combination)> = Vec::new();
        for combo in combos {
            let scope = root_scope(&combo);
            let evaluated = match name_expr {
                Some(e) => eval::eval(e, &scope, self),
                None => Ok(Value::String(label.to_owned())),
            };
            let name = match evaluated {
                Ok(Value::String(s)) => s,
                Ok(other) => {
                    return Err(err(
                        format!("target {label:?} name"),
                        format!("must be a string, got {other}"),
                    ))
                }
                Err(e) => return Err(err(format!("target {label:?} name"), e)),
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
            if out.iter().any(|(n, _)| *n == name) {
                let what = if name_expr.is_some() {
                    "name"
                } else {
                    "matrix"
                };
                return Err(err(
                    format!("target {label:?} {what}"),
                    format!("duplicate name {name:?} (give the matrix target a name that uses its values, e.g. name = \"{label}-${{item}}\")"),
                ));
            }
            out.push((name, combo));
        }
        Ok(out)
    }

    /// One attribute of one target instance, evaluated once; a reference back to an attribute being
    /// evaluated is a cycle.
    fn field(&self, idx: usize, inst: &Instance<'_>, key: &str) -> Result<Value, Error> {
        let id = (idx, key.to_owned());
        if let Some(v) = self.fields.borrow().get(&id) {
            return Ok(v.clone());
        }
        let f = &self.files[inst.file];
        let place = f.place("target", &inst.label, key);
        let what = format!("target {:?} attribute {key}", inst.name);
        if self.field_progress.borrow().contains(&id) {
            return Err(Error::Eval {
                file: place,
                what,
                message: format!("reference cycle not allowed for target.{}.{key}", inst.name),
            });
        }
        let Some(expr) = attr(inst.body, key) else {
            return Ok(Value::Null);
        };
        self.field_progress.borrow_mut().push(id.clone());
        let scope = root_scope(&inst.vars);
        let v = eval::eval(expr, &scope, self);
        self.field_progress.borrow_mut().retain(|p| *p != id);
        let mut v = v.map_err(|message| Error::Eval {
            file: place,
            what,
            message,
        })?;
        if matches!(key, "args" | "labels" | "contexts") {
            v = stringify_value_map(v);
        }
        self.fields.borrow_mut().insert(id, v.clone());
        Ok(v)
    }

    /// `target.NAME.FIELD` across every definition of NAME (later definitions win, maps merge), or the
    /// whole target as an object; the block's own attributes (`inherits` is applied later, as buildx).
    fn target_ref(&self, name: &str, field: Option<&str>) -> Result<Option<Value>, Error> {
        let all = self.instances()?;
        let mine: Vec<(usize, &Instance<'_>)> = all
            .iter()
            .enumerate()
            .filter(|(_, i)| i.name == name)
            .collect();
        if mine.is_empty() {
            return Ok(None);
        }
        let one = |key: &str| -> Result<Value, Error> {
            if key == "name" {
                return Ok(Value::String(name.to_owned()));
            }
            let mut out = Value::Null;
            for (idx, inst) in &mine {
                if attr(inst.body, key).is_none() {
                    continue;
                }
                let v = self.field(*idx, inst, key)?;
                out = match (out, v) {
                    (Value::Object(mut a), Value::Object(b)) => {
                        a.extend(b);
                        Value::Object(a)
                    }
                    (_, v) => v,
                };
            }
            Ok(out)
        };
        if let Some(key) = field {
            return one(key).map(Some);
        }
        let mut keys: Vec<String> = vec!["name".into()];
        for (_, inst) in &mine {
            for a in inst.body.attributes() {
                let k = a.key.as_str();
                if k != "matrix" && !keys.iter().any(|x| x == k) {
                    keys.push(k.to_owned());
                }
            }
        }
        let mut m = hcl::Map::new();
        for k in keys {
            let v = one(&k)?;
            m.insert(k, v);
        }
        Ok(Some(Value::Object(m)))
    }
}

impl Host for Resolver<'_> {
    fn global(&self, name: &str) -> Result<Option<Value>, String> {
        self.variable(name).map_err(|e| e.to_string())
    }

    fn block(&self, kind: &str, name: &str, field: Option<&str>) -> Result<Option<Value>, String> {
        match kind {
            "target" => self.target_ref(name, field).map_err(|e| e.to_string()),
            _ => {
                // group.NAME.targets
                let mut targets = None;
                for f in self.files {
                    for b in f
                        .body
                        .blocks()
                        .filter(|b| b.identifier() == "group" && label(b) == Some(name))
                    {
                        if let Some(e) = attr(&b.body, "targets") {
                            targets = Some(eval::eval(e, &Scope::default(), self)?);
                        }
                    }
                }
                let Some(targets) = targets else {
                    return Ok(None);
                };
                let mut m = hcl::Map::new();
                m.insert("name".to_owned(), Value::String(name.to_owned()));
                m.insert("targets".to_owned(), targets);
                let obj = Value::Object(m);
                Ok(Some(match field {
                    Some(f) => match obj {
                        Value::Object(mut m) => m.swap_remove(f).unwrap_or(Value::Null),
                        other => other,
                    },
                    None => obj,
                }))
            }
        }
    }

    fn is_block_kind(&self, kind: &str) -> bool {
        matches!(kind, "target" | "group")
    }

    fn call(&self, name: &str, args: Vec<Value>) -> Option<Result<Value, String>> {
        let f = self.funcs.get(name)?;
        Some((|| {
            if self.calling.borrow().iter().any(|c| c == name) {
                return Err(format!("function cycle not allowed for {name}"));
            }
            if args.len() < f.params.len() {
                return Err(format!(
                    "not enough function arguments: {} takes {}, got {}",
                    name,
                    f.params.len(),
                    args.len()
                ));
            }
            if args.len() > f.params.len() && f.variadic.is_none() {
                return Err(format!(
                    "too many function arguments: {} takes {}, got {}",
                    name,
                    f.params.len(),
                    args.len()
                ));
            }
            // The result sees the parameters and the top-level names only (buildx's userfunc).
            let mut scope = Scope::default();
            let mut args = args.into_iter();
            for p in &f.params {
                scope.set(p, args.next().expect("checked: enough arguments"));
            }
            if let Some(v) = &f.variadic {
                scope.set(v, Value::Array(args.collect()));
            }
            self.calling.borrow_mut().push(name.to_owned());
            let r = eval::eval(f.result, &scope, self);
            self.calling.borrow_mut().retain(|c| c != name);
            r.map_err(|e| format!("{}: function {name:?}: {e}", f.place))
        })())
    }
}

/// buildx's built-in variables (commands/bake.go): they win over a variable of the same name and the
/// environment. `BAKE_CMD_CONTEXT` is the working directory (buildx's `cwd://`; rbuild reads local
/// files only), `BAKE_LOCAL_PLATFORM` the host's platform.
fn builtin_variable(name: &str) -> Option<Value> {
    match name {
        "BAKE_CMD_CONTEXT" => Some(Value::String(".".into())),
        "BAKE_LOCAL_PLATFORM" => {
            let arch = match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                "x86" => "386",
                "powerpc64" => "ppc64le",
                "loongarch64" => "loong64",
                other => other,
            };
            Some(Value::String(format!("linux/{arch}")))
        }
        _ => None,
    }
}

/// Reads a `function` block, with buildx's errors for a missing `params` or `result`.
fn function_def<'f>(f: &HclFile, name: &str, body: &'f Body) -> Result<FuncDef<'f>, Error> {
    let err = |message: String| Error::Eval {
        file: f.place("function", name, ""),
        what: format!("function {name:?}"),
        message,
    };
    let result =
        attr(body, "result").ok_or_else(|| err(format!("empty result not allowed for {name}")))?;
    let params =
        attr(body, "params").ok_or_else(|| err(format!("empty params not allowed for {name}")))?;
    let keyword = |e: &Expression| match e {
        Expression::Variable(v) => Some(v.as_str().to_owned()),
        _ => None,
    };
    let Expression::Array(items) = params else {
        return Err(err("params must be a list of parameter names".into()));
    };
    let params = items
        .iter()
        .map(|p| {
            keyword(p).ok_or_else(|| {
                err("Invalid param element: Each parameter name must be an identifier.".into())
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let variadic = match attr(body, "variadic_params") {
        None => None,
        Some(e) => Some(keyword(e).ok_or_else(|| {
            err(
                "Invalid variadic_params: The variadic parameter name must be an identifier."
                    .into(),
            )
        })?),
    };
    for key in body.attributes().map(|a| a.key.as_str()) {
        if !matches!(key, "params" | "variadic_params" | "result") {
            return Err(err(format!(
                "unknown attribute {key:?} (a function has params, variadic_params and result)"
            )));
        }
    }
    Ok(FuncDef {
        place: f.place("function", name, "result"),
        params,
        variadic,
        result,
    })
}

/// Evaluates every file: variables (all of them, then their validations), user functions, targets
/// (matrix expanded, references between them resolved) and groups, into `def`. `env` reads the
/// environment (a variable named like an environment variable takes its value).
pub(crate) fn evaluate(
    files: &[HclFile],
    env: &dyn Fn(&str) -> Option<String>,
    def: &mut Definition,
) -> Result<(), Error> {
    for f in files {
        for block in f.body.blocks() {
            let kind = block.identifier();
            if !matches!(kind, "variable" | "function" | "group" | "target") {
                return Err(Error::Eval {
                    file: f.place(kind, label(block).unwrap_or(""), ""),
                    what: format!("block {kind:?}"),
                    message: "unknown block type (expected variable, function, target, group)"
                        .into(),
                });
            }
        }
    }
    let r = Resolver::new(files, env)?;
    // Every variable is evaluated (a broken one is an error even when unused), in file order.
    for f in files {
        for block in f.body.blocks().filter(|b| b.identifier() == "variable") {
            if let Some(name) = label(block) {
                r.variable(name)?;
            }
        }
    }
    let mut order: Vec<String> = Vec::new();
    for f in files {
        for block in f.body.blocks().filter(|b| b.identifier() == "variable") {
            if let Some(name) = label(block) {
                order.retain(|o| o != name);
                order.push(name.to_owned());
            }
        }
    }
    r.validate(&order)?;
    let instances = r.instances()?;
    for (idx, inst) in instances.iter().enumerate() {
        if inst.name != inst.label || attr(inst.body, "matrix").is_some() {
            let expanded = def.matrix.entry(inst.label.clone()).or_default();
            if !expanded.contains(&inst.name) {
                expanded.push(inst.name.clone());
            }
        }
        let t = target_of(&r, idx, inst)?;
        def.add_target(&inst.name, &t);
    }
    for f in files {
        for block in f.body.blocks().filter(|b| b.identifier() == "group") {
            let eval_err = |what: String, message: String| Error::Eval {
                file: f.place("group", label(block).unwrap_or(""), "targets"),
                what,
                message,
            };
            let name = label(block)
                .ok_or_else(|| eval_err("group".into(), "a group needs a name label".into()))?;
            let targets = match attr(&block.body, "targets") {
                Some(e) => eval::eval(e, &Scope::default(), &r)
                    .map_err(|e| eval_err(format!("group {name:?}"), e))?,
                None => Value::Array(Vec::new()),
            };
            let list: Vec<String> =
                serde_json::from_value(serde_json::to_value(&targets).unwrap_or_default())
                    .map_err(|e| eval_err(format!("group {name:?} targets"), e.to_string()))?;
            let g = def.groups.entry(name.to_owned()).or_default();
            for t in list {
                if !g.contains(&t) {
                    g.push(t);
                }
            }
        }
    }
    // Global attributes are evaluated too, used or not (buildx).
    let mut names: Vec<&String> = r.attrs.keys().collect();
    names.sort();
    for n in names {
        r.variable(n)?;
    }
    Ok(())
}

/// A target instance's attributes (all but `matrix` and `name`) as a [`Target`].
fn target_of(r: &Resolver<'_>, idx: usize, inst: &Instance<'_>) -> Result<Target, Error> {
    let mut map = serde_json::Map::new();
    for a in inst.body.attributes() {
        let key = a.key.as_str();
        if key == "matrix" || key == "name" {
            continue;
        }
        let v = r.field(idx, inst, key)?;
        let mut j = serde_json::to_value(&v).unwrap_or_default();
        if j.is_null() {
            continue;
        }
        match key {
            "cache-from" | "cache-to" | "output" | "attest" | "secret" | "ssh" => j = csv_list(j),
            "extra-hosts" => j = host_list(j),
            _ => {}
        }
        map.insert(key.to_owned(), j);
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| Error::Eval {
        file: r.files[inst.file].place("target", &inst.label, ""),
        what: format!("target {:?}", inst.name),
        message: e.to_string(),
    })
}

/// buildx's list options take entries as strings (`"type=registry,ref=x"`) or objects
/// (`{ type = "registry", ref = "x" }`), one or a list; each object becomes the string form (`type`
/// and `id` first, then the other keys sorted, as buildx prints them; null values left out).
fn csv_list(j: serde_json::Value) -> serde_json::Value {
    let entry = |e: serde_json::Value| match e {
        serde_json::Value::Object(m) => {
            let mut parts: Vec<String> = Vec::new();
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            for first in ["type", "id"] {
                if let Some(v) = m.get(first).filter(|v| !v.is_null()) {
                    parts.push(format!("{first}={}", text(v)));
                }
            }
            for (k, v) in &m {
                if k != "type" && k != "id" && !v.is_null() {
                    parts.push(format!("{k}={}", text(v)));
                }
            }
            serde_json::Value::String(parts.join(","))
        }
        other => other,
    };
    match j {
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(entry).collect())
        }
        serde_json::Value::Object(_) => serde_json::Value::Array(vec![entry(j)]),
        serde_json::Value::String(s) => {
            serde_json::Value::Array(vec![serde_json::Value::String(s)])
        }
        other => other,
    }
}

/// buildx's `extra-hosts` is a map (`{ db = "10.0.0.2" }`); rbuild's list form (`["db=10.0.0.2"]`) stays.
fn host_list(j: serde_json::Value) -> serde_json::Value {
    match j {
        serde_json::Value::Object(m) => serde_json::Value::Array(
            m.into_iter()
                .filter_map(|(k, v)| v.as_str().map(|ip| format!("{k}={ip}").into()))
                .collect(),
        ),
        other => other,
    }
}

/// `args`/`labels`/`contexts` values may be numbers or bools in HCL; null entries are left out
/// (unset), as buildx.
fn stringify_value_map(v: Value) -> Value {
    let Value::Object(m) = v else {
        return v;
    };
    let mut kv: Vec<(String, Value)> = m
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::Null => None,
            Value::String(s) => Some((k, Value::String(s))),
            other => Some((
                k,
                Value::String(eval::to_text(&other).unwrap_or_else(|_| other.to_string())),
            )),
        })
        .collect();
    kv.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Object(kv.into_iter().collect())
}
