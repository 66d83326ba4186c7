//! The HCL functions of bake files: the common ones of buildx's documented list (go-cty's standard
//! library names and behaviour), as [`hcl::eval::FuncDef`]s.

use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};
use hcl::Value;

fn string(args: &FuncArgs, i: usize) -> String {
    args[i].as_str().map(str::to_owned).unwrap_or_default()
}

fn upper(a: FuncArgs) -> Result<Value, String> {
    Ok(string(&a, 0).to_uppercase().into())
}
fn lower(a: FuncArgs) -> Result<Value, String> {
    Ok(string(&a, 0).to_lowercase().into())
}
fn trimspace(a: FuncArgs) -> Result<Value, String> {
    Ok(string(&a, 0).trim().into())
}
fn trimprefix(a: FuncArgs) -> Result<Value, String> {
    let s = string(&a, 0);
    let p = string(&a, 1);
    Ok(s.strip_prefix(p.as_str()).unwrap_or(&s).into())
}
fn trimsuffix(a: FuncArgs) -> Result<Value, String> {
    let s = string(&a, 0);
    let p = string(&a, 1);
    Ok(s.strip_suffix(p.as_str()).unwrap_or(&s).into())
}
fn trim(a: FuncArgs) -> Result<Value, String> {
    let cut = string(&a, 1);
    Ok(string(&a, 0)
        .trim_matches(|c| cut.contains(c))
        .to_owned()
        .into())
}
fn replace(a: FuncArgs) -> Result<Value, String> {
    Ok(string(&a, 0)
        .replace(string(&a, 1).as_str(), &string(&a, 2))
        .into())
}
fn regex_replace(a: FuncArgs) -> Result<Value, String> {
    let re = regex::Regex::new(&string(&a, 1)).map_err(|e| e.to_string())?;
    // go-cty's `$1`/`${name}` replacement syntax is the regex crate's.
    Ok(re
        .replace_all(&string(&a, 0), string(&a, 2).as_str())
        .into_owned()
        .into())
}
fn join(a: FuncArgs) -> Result<Value, String> {
    let sep = string(&a, 0);
    let mut parts = Vec::new();
    for list in a.iter().skip(1) {
        for v in list.as_array().into_iter().flatten() {
            parts.push(scalar_text(v)?);
        }
    }
    Ok(parts.join(&sep).into())
}
fn split(a: FuncArgs) -> Result<Value, String> {
    let sep = string(&a, 0);
    let s = string(&a, 1);
    Ok(Value::Array(
        s.split(sep.as_str()).map(Value::from).collect(),
    ))
}
fn substr(a: FuncArgs) -> Result<Value, String> {
    let s: Vec<char> = string(&a, 0).chars().collect();
    let offset = a[1].as_i64().ok_or("offset must be an integer")?;
    let length = a[2].as_i64().ok_or("length must be an integer")?;
    let start = if offset < 0 {
        s.len().saturating_sub(offset.unsigned_abs() as usize)
    } else {
        (offset as usize).min(s.len())
    };
    let end = if length < 0 {
        s.len()
    } else {
        (start + length as usize).min(s.len())
    };
    Ok(s[start..end].iter().collect::<String>().into())
}
fn sanitize(a: FuncArgs) -> Result<Value, String> {
    // buildx's own: every character but ASCII letters, digits and `_` becomes `_`.
    Ok(string(&a, 0)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .into())
}
fn length(a: FuncArgs) -> Result<Value, String> {
    Ok(match &a[0] {
        Value::String(s) => s.chars().count(),
        Value::Array(v) => v.len(),
        Value::Object(m) => m.len(),
        other => return Err(format!("length of {other} is not defined")),
    }
    .into())
}
fn concat(a: FuncArgs) -> Result<Value, String> {
    Ok(Value::Array(
        a.iter()
            .flat_map(|l| l.as_array().cloned().unwrap_or_default())
            .collect(),
    ))
}
fn contains(a: FuncArgs) -> Result<Value, String> {
    Ok(a[0].as_array().is_some_and(|l| l.contains(&a[1])).into())
}
fn distinct(a: FuncArgs) -> Result<Value, String> {
    let mut out: Vec<Value> = Vec::new();
    for v in a[0].as_array().into_iter().flatten() {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    Ok(Value::Array(out))
}
fn coalesce(a: FuncArgs) -> Result<Value, String> {
    a.iter()
        .find(|v| !v.is_null() && v.as_str() != Some(""))
        .cloned()
        .ok_or_else(|| "no non-null, non-empty argument".to_owned())
}
fn keys(a: FuncArgs) -> Result<Value, String> {
    let m = a[0].as_object().ok_or("keys needs an object")?;
    let mut k: Vec<&String> = m.keys().collect();
    k.sort();
    Ok(Value::Array(
        k.into_iter().map(|s| s.as_str().into()).collect(),
    ))
}
fn values(a: FuncArgs) -> Result<Value, String> {
    let m = a[0].as_object().ok_or("values needs an object")?;
    let mut k: Vec<(&String, &Value)> = m.iter().collect();
    k.sort_by(|x, y| x.0.cmp(y.0));
    Ok(Value::Array(
        k.into_iter().map(|(_, v)| v.clone()).collect(),
    ))
}
fn equal(a: FuncArgs) -> Result<Value, String> {
    Ok((a[0] == a[1]).into())
}
fn notequal(a: FuncArgs) -> Result<Value, String> {
    Ok((a[0] != a[1]).into())
}
fn and(a: FuncArgs) -> Result<Value, String> {
    Ok((a[0].as_bool() == Some(true) && a[1].as_bool() == Some(true)).into())
}
fn or(a: FuncArgs) -> Result<Value, String> {
    Ok((a[0].as_bool() == Some(true) || a[1].as_bool() == Some(true)).into())
}
fn not(a: FuncArgs) -> Result<Value, String> {
    Ok((a[0].as_bool() != Some(true)).into())
}
fn add(a: FuncArgs) -> Result<Value, String> {
    arith(&a, |x, y| x + y)
}
fn subtract(a: FuncArgs) -> Result<Value, String> {
    arith(&a, |x, y| x - y)
}
fn multiply(a: FuncArgs) -> Result<Value, String> {
    arith(&a, |x, y| x * y)
}
fn arith(a: &FuncArgs, f: fn(f64, f64) -> f64) -> Result<Value, String> {
    let x = a[0].as_f64().ok_or("not a number")?;
    let y = a[1].as_f64().ok_or("not a number")?;
    let r = f(x, y);
    #[allow(clippy::cast_possible_truncation)]
    if r.fract() == 0.0 && r.abs() < 9.0e15 {
        Ok((r as i64).into())
    } else {
        Ok(r.into())
    }
}
fn format(a: FuncArgs) -> Result<Value, String> {
    // The verbs bake files use: %s, %d, %v and %%.
    let fmt = string(&a, 0);
    let mut out = String::new();
    let mut args = a.iter().skip(1);
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('s' | 'd' | 'v') => {
                let v = args.next().ok_or("too few arguments for format")?;
                out.push_str(&scalar_text(v)?);
            }
            other => return Err(format!("unsupported format verb %{}", other.unwrap_or(' '))),
        }
    }
    Ok(out.into())
}

/// A scalar as text (strings as they are, numbers and bools as HCL prints them).
fn scalar_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("{other} is not a string, number or bool")),
    }
}

/// Declares every supported function in `ctx`.
pub(crate) fn declare(ctx: &mut Context<'_>) {
    use ParamType::{Any, Array, Bool, Number, Object, String as Str};
    let arr = || Array(Box::new(Any));
    let f = |params: Vec<ParamType>, func: hcl::eval::Func| FuncDef::new(func, params);
    let variadic = |params: Vec<ParamType>, var: ParamType, func: hcl::eval::Func| {
        FuncDef::builder()
            .params(params)
            .variadic_param(var)
            .build(func)
    };
    let defs: Vec<(&str, FuncDef)> = vec![
        ("upper", f(vec![Str], upper)),
        ("lower", f(vec![Str], lower)),
        ("trimspace", f(vec![Str], trimspace)),
        ("trimprefix", f(vec![Str, Str], trimprefix)),
        ("trimsuffix", f(vec![Str, Str], trimsuffix)),
        ("trim", f(vec![Str, Str], trim)),
        ("replace", f(vec![Str, Str, Str], replace)),
        ("regex_replace", f(vec![Str, Str, Str], regex_replace)),
        ("join", variadic(vec![Str], arr(), join)),
        ("split", f(vec![Str, Str], split)),
        ("substr", f(vec![Str, Number, Number], substr)),
        ("sanitize", f(vec![Str], sanitize)),
        ("length", f(vec![Any], length)),
        ("concat", variadic(vec![], arr(), concat)),
        ("contains", f(vec![arr(), Any], contains)),
        ("distinct", f(vec![arr()], distinct)),
        ("coalesce", variadic(vec![], Any, coalesce)),
        ("keys", f(vec![Object(Box::new(Any))], keys)),
        ("values", f(vec![Object(Box::new(Any))], values)),
        ("equal", f(vec![Any, Any], equal)),
        ("notequal", f(vec![Any, Any], notequal)),
        ("and", f(vec![Bool, Bool], and)),
        ("or", f(vec![Bool, Bool], or)),
        ("not", f(vec![Bool], not)),
        ("add", f(vec![Number, Number], add)),
        ("subtract", f(vec![Number, Number], subtract)),
        ("multiply", f(vec![Number, Number], multiply)),
        ("format", variadic(vec![Str], Any, format)),
    ];
    for (name, def) in defs {
        ctx.declare_func(name, def);
    }
}

/// The names of the functions [`declare`] provides (for the docs' list and its test).
pub const NAMES: &[&str] = &[
    "add",
    "and",
    "coalesce",
    "concat",
    "contains",
    "distinct",
    "equal",
    "format",
    "join",
    "keys",
    "length",
    "lower",
    "multiply",
    "not",
    "notequal",
    "or",
    "regex_replace",
    "replace",
    "sanitize",
    "split",
    "substr",
    "subtract",
    "trim",
    "trimprefix",
    "trimspace",
    "trimsuffix",
    "upper",
    "values",
];
