//! The expression evaluator of bake files: HCL expressions (as parsed by `hcl-rs`) evaluated with
//! go-cty's semantics, the way buildx's `hclparser` evaluates them.
//!
//! `hcl-rs` ships an evaluator too, but its functions are plain `fn` pointers that see only their
//! arguments: a user-defined `function` block (whose result is an expression evaluated with its
//! parameters), `try`/`can` (which must see their arguments' errors, not fail on them) and lazy
//! `target.NAME.FIELD` references need more. Names the expression itself does not bind are asked of a
//! [`Host`] (variables, global attributes, other blocks' attributes, user functions), which resolves
//! them on first use and detects cycles, as buildx's parser does.

use std::collections::HashMap;

use hcl::expr::{
    BinaryOperator, Conditional, Expression, ForExpr, FuncCall, Operation, TraversalOperator,
    UnaryOperator,
};
use hcl::template::{Directive, Element, Strip, Template};
use hcl::{Map, Value};

pub(crate) use crate::value::{equal, num_text, number, to_bool, to_number, to_text, type_name};

/// What an expression refers to beyond its own local names.
pub(crate) trait Host {
    /// The value of a top-level name (a variable or a global attribute); `Ok(None)` when undefined.
    fn global(&self, name: &str) -> Result<Option<Value>, String>;
    /// `KIND.NAME.FIELD` (`target.base.tags`): one attribute of a block, or the whole block as an object
    /// when `field` is `None`; `Ok(None)` when no block of that kind has that name.
    fn block(&self, kind: &str, name: &str, field: Option<&str>) -> Result<Option<Value>, String>;
    /// Whether `kind` is a block type whose blocks expressions may refer to (`target`, `group`).
    fn is_block_kind(&self, kind: &str) -> bool;
    /// Calls the user-defined function `name`; `None` when there is none.
    fn call(&self, name: &str, args: Vec<Value>) -> Option<Result<Value, String>>;
}

/// Local names: matrix values, function parameters, `for` variables. A chain from inner to outer.
#[derive(Default)]
pub(crate) struct Scope<'p> {
    vars: HashMap<String, Value>,
    parent: Option<&'p Scope<'p>>,
}

impl<'p> Scope<'p> {
    /// A scope inside `self`.
    pub(crate) fn child(&'p self) -> Scope<'p> {
        Scope {
            vars: HashMap::new(),
            parent: Some(self),
        }
    }

    /// Binds `name` in this scope.
    pub(crate) fn set(&mut self, name: &str, v: Value) {
        self.vars.insert(name.to_owned(), v);
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.vars
            .get(name)
            .or_else(|| self.parent.and_then(|p| p.get(name)))
    }
}

/// Evaluates `expr` in `scope`, asking `host` for everything else.
pub(crate) fn eval(expr: &Expression, scope: &Scope<'_>, host: &dyn Host) -> Result<Value, String> {
    match expr {
        Expression::Null => Ok(Value::Null),
        Expression::Bool(b) => Ok(Value::Bool(*b)),
        Expression::Number(n) => Ok(Value::Number(*n)),
        Expression::String(s) => Ok(Value::String(s.clone())),
        Expression::Array(items) => items
            .iter()
            .map(|e| eval(e, scope, host))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Expression::Object(obj) => {
            let mut out = Map::new();
            for (k, v) in obj {
                let key = match k {
                    hcl::ObjectKey::Identifier(id) => id.to_string(),
                    hcl::ObjectKey::Expression(e) => match eval(e, scope, host)? {
                        Value::String(s) => s,
                        v @ (Value::Number(_) | Value::Bool(_)) => to_text(&v)?,
                        other => {
                            return Err(format!(
                                "object key must be a string, got {}",
                                type_name(&other)
                            ))
                        }
                    },
                    _ => k.to_string(),
                };
                out.insert(key, eval(v, scope, host)?);
            }
            Ok(Value::Object(out))
        }
        Expression::TemplateExpr(t) => {
            let template = Template::from_expr(t).map_err(|e| e.to_string())?;
            // A template that is one interpolation alone gives the value itself (HCL's unwrapping).
            if let [Element::Interpolation(i)] = template.elements() {
                return eval(&i.expr, scope, host);
            }
            let mut out = String::new();
            template_into(&mut out, &template, scope, host, Strip::None, Strip::None)?;
            Ok(Value::String(out))
        }
        Expression::Variable(v) => variable(v.as_str(), scope, host),
        Expression::Traversal(t) => traversal(&t.expr, &t.operators, scope, host),
        Expression::FuncCall(call) => func_call(call, scope, host),
        Expression::Parenthesis(e) => eval(e, scope, host),
        Expression::Conditional(c) => conditional(c, scope, host),
        Expression::Operation(op) => operation(op, scope, host),
        Expression::ForExpr(f) => for_expr(f, scope, host),
        other => Err(format!("unsupported expression {other}")),
    }
}

fn variable(name: &str, scope: &Scope<'_>, host: &dyn Host) -> Result<Value, String> {
    if let Some(v) = scope.get(name) {
        return Ok(v.clone());
    }
    if host.is_block_kind(name) {
        return Err(format!("cannot access {name} as a variable"));
    }
    host.global(name)?
        .ok_or_else(|| format!("unknown variable or attribute {name:?}"))
}

fn traversal(
    root: &Expression,
    ops: &[TraversalOperator],
    scope: &Scope<'_>,
    host: &dyn Host,
) -> Result<Value, String> {
    // `target.NAME.FIELD`: resolve just that attribute of that block (buildx evaluates only what is
    // referenced, so two targets may read each other's other attributes without a cycle).
    if let Expression::Variable(v) = root {
        let kind = v.as_str();
        if scope.get(kind).is_none() && host.is_block_kind(kind) {
            let Some(TraversalOperator::GetAttr(name)) = ops.first() else {
                return Err(format!("cannot traverse {kind} without attribute"));
            };
            let field = match ops.get(1) {
                Some(TraversalOperator::GetAttr(f)) => Some(f.as_str()),
                _ => None,
            };
            let value = host
                .block(kind, name.as_str(), field)?
                .ok_or_else(|| format!("unknown {kind} {:?}", name.as_str()))?;
            let rest = if field.is_some() {
                &ops[2..]
            } else {
                &ops[1..]
            };
            return apply_ops(value, rest, scope, host);
        }
    }
    let value = eval(root, scope, host)?;
    apply_ops(value, ops, scope, host)
}

fn apply_ops(
    mut value: Value,
    ops: &[TraversalOperator],
    scope: &Scope<'_>,
    host: &dyn Host,
) -> Result<Value, String> {
    let mut i = 0;
    while i < ops.len() {
        value = match &ops[i] {
            TraversalOperator::GetAttr(name) => get_attr(value, name.as_str())?,
            TraversalOperator::LegacyIndex(n) => index(value, &Value::from(*n))?,
            TraversalOperator::Index(e) => index(value, &eval(e, scope, host)?)?,
            TraversalOperator::AttrSplat => {
                // `.*` applies the attribute accesses that follow to each element.
                let mut j = i + 1;
                while matches!(ops.get(j), Some(TraversalOperator::GetAttr(_))) {
                    j += 1;
                }
                let v = splat(value, &ops[i + 1..j], scope, host)?;
                i = j;
                value = v;
                continue;
            }
            TraversalOperator::FullSplat => {
                let v = splat(value, &ops[i + 1..], scope, host)?;
                return Ok(v);
            }
        };
        i += 1;
    }
    Ok(value)
}

fn splat(
    value: Value,
    ops: &[TraversalOperator],
    scope: &Scope<'_>,
    host: &dyn Host,
) -> Result<Value, String> {
    match value {
        Value::Null => Ok(Value::Array(Vec::new())),
        Value::Array(items) => items
            .into_iter()
            .map(|v| apply_ops(v, ops, scope, host))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(Value::Array(vec![apply_ops(other, ops, scope, host)?])),
    }
}

fn get_attr(value: Value, name: &str) -> Result<Value, String> {
    match value {
        Value::Object(mut m) => m
            .swap_remove(name)
            .ok_or_else(|| format!("object has no attribute {name:?}")),
        Value::Null => Err(format!(
            "attempt to get attribute {name:?} from a null value"
        )),
        other => Err(format!(
            "cannot get attribute {name:?} of a {}",
            type_name(&other)
        )),
    }
}

fn index(value: Value, key: &Value) -> Result<Value, String> {
    match value {
        Value::Array(mut items) => {
            let n = to_number(key)?;
            if n.fract() != 0.0 || n < 0.0 || n >= items.len() as f64 {
                return Err(format!(
                    "index {} out of range for a list of {} elements",
                    num_text(n),
                    items.len()
                ));
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(items.swap_remove(n as usize))
        }
        Value::Object(mut m) => {
            let k = to_text(key)?;
            m.swap_remove(&k)
                .ok_or_else(|| format!("the map has no element for the key {k:?}"))
        }
        Value::Null => Err("cannot index a null value".into()),
        other => Err(format!("cannot index a {}", type_name(&other))),
    }
}

fn func_call(call: &FuncCall, scope: &Scope<'_>, host: &dyn Host) -> Result<Value, String> {
    let name = call.name.name.as_str();
    // try and can see their arguments' errors instead of failing on them (hcl's tryfunc).
    match name {
        "try" => {
            let mut last = String::from("at least one argument is required");
            for arg in &call.args {
                match eval(arg, scope, host) {
                    Ok(v) => return Ok(v),
                    Err(e) => last = e,
                }
            }
            return Err(format!(
                "call to function \"try\" failed: no expression succeeded: {last}"
            ));
        }
        // convert(value, type): the second argument is a type expression, not a value (typeexpr).
        "convert" => {
            let [value, ty] = call.args.as_slice() else {
                return Err("function \"convert\" takes a value and a type".into());
            };
            let ty = crate::types::Type::parse(ty)?;
            let v = eval(value, scope, host)?;
            return ty
                .convert(v)
                .map_err(|e| format!("call to function \"convert\" failed: {e}"));
        }
        "can" => {
            let [arg] = call.args.as_slice() else {
                return Err("function \"can\" takes exactly one argument".into());
            };
            return Ok(Value::Bool(eval(arg, scope, host).is_ok()));
        }
        _ => {}
    }
    let mut args = Vec::with_capacity(call.args.len());
    for (i, arg) in call.args.iter().enumerate() {
        let v = eval(arg, scope, host)?;
        if call.expand_final && i + 1 == call.args.len() {
            match v {
                Value::Array(items) => args.extend(items),
                other => {
                    return Err(format!(
                        "the final argument of {name}(…) must be a list to expand, got {}",
                        type_name(&other)
                    ))
                }
            }
        } else {
            args.push(v);
        }
    }
    if let Some(result) = crate::funcs::call(name, &args) {
        return result.map_err(|e| format!("call to function {name:?} failed: {e}"));
    }
    if let Some(result) = host.call(name, args) {
        return result.map_err(|e| format!("call to function {name:?} failed: {e}"));
    }
    Err(format!("there is no function named {name:?}"))
}

fn conditional(c: &Conditional, scope: &Scope<'_>, host: &dyn Host) -> Result<Value, String> {
    let cond = eval(&c.cond_expr, scope, host)?;
    if cond.is_null() {
        return Err("the condition value is null".into());
    }
    if to_bool(&cond)? {
        eval(&c.true_expr, scope, host)
    } else {
        eval(&c.false_expr, scope, host)
    }
}

fn operation(op: &Operation, scope: &Scope<'_>, host: &dyn Host) -> Result<Value, String> {
    match op {
        Operation::Unary(u) => {
            let v = eval(&u.expr, scope, host)?;
            match u.operator {
                UnaryOperator::Not => Ok(Value::Bool(!to_bool(&v)?)),
                UnaryOperator::Neg => Ok(number(-to_number(&v)?)),
            }
        }
        Operation::Binary(b) => {
            use BinaryOperator as B;
            let l = eval(&b.lhs_expr, scope, host)?;
            // `&&` and `||` do not evaluate their right side when the left decides (as HCL).
            match b.operator {
                B::And if !to_bool(&l)? => return Ok(Value::Bool(false)),
                B::Or if to_bool(&l)? => return Ok(Value::Bool(true)),
                _ => {}
            }
            let r = eval(&b.rhs_expr, scope, host)?;
            let n = |v: &Value| to_number(v);
            Ok(match b.operator {
                B::Eq => Value::Bool(equal(&l, &r)),
                B::NotEq => Value::Bool(!equal(&l, &r)),
                B::And | B::Or => Value::Bool(to_bool(&r)?),
                B::Less => Value::Bool(n(&l)? < n(&r)?),
                B::LessEq => Value::Bool(n(&l)? <= n(&r)?),
                B::Greater => Value::Bool(n(&l)? > n(&r)?),
                B::GreaterEq => Value::Bool(n(&l)? >= n(&r)?),
                B::Plus => number(n(&l)? + n(&r)?),
                B::Minus => number(n(&l)? - n(&r)?),
                B::Mul => number(n(&l)? * n(&r)?),
                B::Div => {
                    let d = n(&r)?;
                    if d == 0.0 {
                        return Err("divide by zero".into());
                    }
                    number(n(&l)? / d)
                }
                B::Mod => {
                    let d = n(&r)?;
                    if d == 0.0 {
                        return Err("divide by zero".into());
                    }
                    number(n(&l)? % d)
                }
            })
        }
    }
}

/// The (key, value) pairs a `for` iterates: a list's indexes, or an object's keys in sorted order
/// (cty's order for maps and objects).
fn pairs(v: Value) -> Result<Vec<(Value, Value)>, String> {
    match v {
        Value::Array(items) => Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (Value::from(i as u64), v))
            .collect()),
        Value::Object(m) => {
            let mut kv: Vec<(String, Value)> = m.into_iter().collect();
            kv.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(kv.into_iter().map(|(k, v)| (Value::String(k), v)).collect())
        }
        Value::Null => Err("a for expression cannot iterate over a null value".into()),
        other => Err(format!(
            "a for expression needs a list or an object, got {}",
            type_name(&other)
        )),
    }
}

fn for_expr(f: &ForExpr, scope: &Scope<'_>, host: &dyn Host) -> Result<Value, String> {
    let items = pairs(eval(&f.collection_expr, scope, host)?)?;
    let mut list = Vec::new();
    let mut obj: Map<String, Value> = Map::new();
    for (k, v) in items {
        let mut inner = scope.child();
        if let Some(kv) = &f.key_var {
            inner.set(kv.as_str(), k);
        }
        inner.set(f.value_var.as_str(), v);
        if let Some(c) = &f.cond_expr {
            if !to_bool(&eval(c, &inner, host)?)? {
                continue;
            }
        }
        let value = eval(&f.value_expr, &inner, host)?;
        match &f.key_expr {
            None => list.push(value),
            Some(ke) => {
                let key = to_text(&eval(ke, &inner, host)?)?;
                if f.grouping {
                    if let Value::Array(a) =
                        obj.entry(key).or_insert_with(|| Value::Array(Vec::new()))
                    {
                        a.push(value);
                    }
                } else if obj.contains_key(&key) {
                    return Err(format!(
                        "duplicate object key {key:?} (use ... after the value to group)"
                    ));
                } else {
                    obj.insert(key, value);
                }
            }
        }
    }
    Ok(if f.key_expr.is_some() {
        Value::Object(obj)
    } else {
        Value::Array(list)
    })
}

fn strip_of(e: &Element) -> Strip {
    match e {
        Element::Literal(_) => Strip::None,
        Element::Interpolation(i) => i.strip,
        Element::Directive(d) => {
            let (start, end) = match &**d {
                Directive::If(d) => (d.if_strip, d.endif_strip),
                Directive::For(d) => (d.for_strip, d.endfor_strip),
            };
            match (start.strip_start(), end.strip_end()) {
                (true, true) => Strip::Both,
                (true, false) => Strip::Start,
                (false, true) => Strip::End,
                (false, false) => Strip::None,
            }
        }
    }
}

fn template_into(
    out: &mut String,
    t: &Template,
    scope: &Scope<'_>,
    host: &dyn Host,
    before: Strip,
    after: Strip,
) -> Result<(), String> {
    let elems = t.elements();
    for (i, e) in elems.iter().enumerate() {
        let prev = if i == 0 {
            before
        } else {
            strip_of(&elems[i - 1])
        };
        let next = elems.get(i + 1).map_or(after, strip_of);
        match e {
            Element::Literal(s) => {
                let mut s = s.as_str();
                let space = |c: char| c.is_whitespace() && c != '\n' && c != '\r';
                if prev.strip_end() {
                    s = s.trim_start_matches(space);
                    s = s
                        .strip_prefix("\r\n")
                        .or_else(|| s.strip_prefix('\n'))
                        .unwrap_or(s);
                }
                if next.strip_start() {
                    s = s.trim_end_matches(space);
                    s = s
                        .strip_suffix("\r\n")
                        .or_else(|| s.strip_suffix('\n'))
                        .unwrap_or(s);
                }
                out.push_str(s);
            }
            Element::Interpolation(i) => {
                let v = eval(&i.expr, scope, host)?;
                if v.is_null() {
                    return Err("cannot include a null value in a string template".into());
                }
                out.push_str(&to_text(&v).map_err(|_| {
                    format!(
                        "cannot include a {} in a string template: a string is required",
                        type_name(&v)
                    )
                })?);
            }
            Element::Directive(d) => match &**d {
                Directive::If(d) => {
                    if to_bool(&eval(&d.cond_expr, scope, host)?)? {
                        let end = if d.false_template.is_some() {
                            d.else_strip
                        } else {
                            d.endif_strip
                        };
                        template_into(out, &d.true_template, scope, host, d.if_strip, end)?;
                    } else if let Some(f) = &d.false_template {
                        template_into(out, f, scope, host, d.else_strip, d.endif_strip)?;
                    }
                }
                Directive::For(d) => {
                    for (k, v) in pairs(eval(&d.collection_expr, scope, host)?)? {
                        let mut inner = scope.child();
                        if let Some(kv) = &d.key_var {
                            inner.set(kv.as_str(), k);
                        }
                        inner.set(d.value_var.as_str(), v);
                        template_into(out, &d.template, &inner, host, d.for_strip, d.endfor_strip)?;
                    }
                }
            },
        }
    }
    Ok(())
}

/// The names of the functions `expr` calls (anywhere inside it, templates included).
pub(crate) fn calls(expr: &Expression, out: &mut Vec<String>) {
    fn template(t: &Template, out: &mut Vec<String>) {
        for e in t.elements() {
            match e {
                Element::Literal(_) => {}
                Element::Interpolation(i) => calls(&i.expr, out),
                Element::Directive(d) => match &**d {
                    Directive::If(d) => {
                        calls(&d.cond_expr, out);
                        template(&d.true_template, out);
                        if let Some(f) = &d.false_template {
                            template(f, out);
                        }
                    }
                    Directive::For(d) => {
                        calls(&d.collection_expr, out);
                        template(&d.template, out);
                    }
                },
            }
        }
    }
    match expr {
        Expression::Array(items) => items.iter().for_each(|e| calls(e, out)),
        Expression::Object(obj) => {
            for (k, v) in obj {
                if let hcl::ObjectKey::Expression(e) = k {
                    calls(e, out);
                }
                calls(v, out);
            }
        }
        Expression::TemplateExpr(t) => {
            if let Ok(t) = Template::from_expr(t) {
                template(&t, out);
            }
        }
        Expression::Traversal(t) => {
            calls(&t.expr, out);
            for op in &t.operators {
                if let TraversalOperator::Index(e) = op {
                    calls(e, out);
                }
            }
        }
        Expression::FuncCall(c) => {
            out.push(c.name.name.to_string());
            c.args.iter().for_each(|e| calls(e, out));
        }
        Expression::Parenthesis(e) => calls(e, out),
        Expression::Conditional(c) => {
            calls(&c.cond_expr, out);
            calls(&c.true_expr, out);
            calls(&c.false_expr, out);
        }
        Expression::Operation(op) => match &**op {
            Operation::Unary(u) => calls(&u.expr, out),
            Operation::Binary(b) => {
                calls(&b.lhs_expr, out);
                calls(&b.rhs_expr, out);
            }
        },
        Expression::ForExpr(f) => {
            calls(&f.collection_expr, out);
            if let Some(k) = &f.key_expr {
                calls(k, out);
            }
            calls(&f.value_expr, out);
            if let Some(c) = &f.cond_expr {
                calls(c, out);
            }
        }
        _ => {}
    }
}
