//! The built-in functions of bake files: buildx's list (`bake/hclparser/stdlib.go`), with go-cty's
//! behaviour (`cty/function/stdlib`, hashicorp's `go-cty-funcs`), called by [`crate::eval`].
//!
//! `try`, `can` and `convert` are in the evaluator (they see their arguments' errors, or a type
//! expression). Left out of buildx's list: `bcrypt`, `rsadecrypt`, `byteslen` and `bytesslice` (see
//! [`MISSING`]); calling one is an error naming it.

use base64::Engine as _;
use hcl::{Map, Value};

use crate::value::{equal, num_text, number, to_bool, to_number, to_text, type_name};

type R = Result<Value, String>;

/// The names of the functions [`call`] provides, `try` and `can` included (for the docs and tests).
pub const NAMES: &[&str] = &[
    "absolute",
    "add",
    "and",
    "base64decode",
    "base64encode",
    "basename",
    "can",
    "ceil",
    "chomp",
    "chunklist",
    "cidrhost",
    "cidrnetmask",
    "cidrsubnet",
    "cidrsubnets",
    "coalesce",
    "coalescelist",
    "compact",
    "concat",
    "contains",
    "convert",
    "csvdecode",
    "dirname",
    "distinct",
    "divide",
    "element",
    "equal",
    "flatten",
    "floor",
    "format",
    "formatdate",
    "formatlist",
    "formattimestamp",
    "greaterthan",
    "greaterthanorequalto",
    "hasindex",
    "homedir",
    "indent",
    "index",
    "indexof",
    "int",
    "join",
    "jsondecode",
    "jsonencode",
    "keys",
    "length",
    "lessthan",
    "lessthanorequalto",
    "log",
    "lookup",
    "lower",
    "max",
    "md5",
    "merge",
    "min",
    "modulo",
    "multiply",
    "negate",
    "not",
    "notequal",
    "or",
    "parseint",
    "pow",
    "range",
    "regex",
    "regex_replace",
    "regexall",
    "replace",
    "reverse",
    "reverselist",
    "sanitize",
    "semvercmp",
    "sethaselement",
    "setintersection",
    "setproduct",
    "setsubtract",
    "setsymmetricdifference",
    "setunion",
    "sha1",
    "sha256",
    "sha512",
    "signum",
    "slice",
    "sort",
    "split",
    "strlen",
    "substr",
    "subtract",
    "timeadd",
    "timestamp",
    "title",
    "trim",
    "trimprefix",
    "trimspace",
    "trimsuffix",
    "try",
    "unixtimestampparse",
    "upper",
    "urlencode",
    "uuidv4",
    "uuidv5",
    "values",
    "zipmap",
];

/// Functions of buildx's list that rbuild does not provide (rarely used in bake files).
pub const MISSING: &[&str] = &["bcrypt", "byteslen", "bytesslice", "rsadecrypt"];

fn arity(a: &[Value], min: usize, max: Option<usize>) -> Result<(), String> {
    let n = a.len();
    if n < min || max.is_some_and(|m| n > m) {
        let want = match max {
            Some(m) if m == min => format!("{min}"),
            Some(m) => format!("{min} to {m}"),
            None => format!("at least {min}"),
        };
        return Err(format!("takes {want} argument(s), got {n}"));
    }
    Ok(())
}

fn s(a: &[Value], i: usize) -> Result<String, String> {
    to_text(&a[i]).map_err(|e| format!("argument {}: {e}", i + 1))
}
fn n(a: &[Value], i: usize) -> Result<f64, String> {
    to_number(&a[i]).map_err(|e| format!("argument {}: {e}", i + 1))
}
fn int(a: &[Value], i: usize) -> Result<i64, String> {
    let x = n(a, i)?;
    if x.fract() != 0.0 {
        return Err(format!("argument {}: must be a whole number", i + 1));
    }
    #[allow(clippy::cast_possible_truncation)]
    Ok(x as i64)
}
fn list(a: &[Value], i: usize) -> Result<Vec<Value>, String> {
    match &a[i] {
        Value::Array(v) => Ok(v.clone()),
        other => Err(format!(
            "argument {}: a list is required, got {}",
            i + 1,
            type_name(other)
        )),
    }
}
fn object(a: &[Value], i: usize) -> Result<Map<String, Value>, String> {
    match &a[i] {
        Value::Object(m) => Ok(m.clone()),
        other => Err(format!(
            "argument {}: a map or object is required, got {}",
            i + 1,
            type_name(other)
        )),
    }
}
fn strs(v: Vec<String>) -> Value {
    Value::Array(v.into_iter().map(Value::String).collect())
}
/// An object with its keys sorted (cty's maps and objects have no other order).
fn sorted(m: Map<String, Value>) -> Map<String, Value> {
    let mut kv: Vec<(String, Value)> = m.into_iter().collect();
    kv.sort_by(|x, y| x.0.cmp(&y.0));
    kv.into_iter().collect()
}

/// Calls built-in function `name`; `None` when there is no such built-in.
#[allow(clippy::too_many_lines)]
pub(crate) fn call(name: &str, a: &[Value]) -> Option<R> {
    let r: R = (|| -> R {
        Ok(match name {
            // ---- strings ----
            "upper" => {
                arity(a, 1, Some(1))?;
                s(a, 0)?.to_uppercase().into()
            }
            "lower" => {
                arity(a, 1, Some(1))?;
                s(a, 0)?.to_lowercase().into()
            }
            "title" => {
                arity(a, 1, Some(1))?;
                title(&s(a, 0)?).into()
            }
            "trimspace" => {
                arity(a, 1, Some(1))?;
                s(a, 0)?.trim().into()
            }
            "trimprefix" => {
                arity(a, 2, Some(2))?;
                let (x, p) = (s(a, 0)?, s(a, 1)?);
                x.strip_prefix(p.as_str()).unwrap_or(&x).into()
            }
            "trimsuffix" => {
                arity(a, 2, Some(2))?;
                let (x, p) = (s(a, 0)?, s(a, 1)?);
                x.strip_suffix(p.as_str()).unwrap_or(&x).into()
            }
            "trim" => {
                arity(a, 2, Some(2))?;
                let cut = s(a, 1)?;
                s(a, 0)?.trim_matches(|c| cut.contains(c)).into()
            }
            "chomp" => {
                arity(a, 1, Some(1))?;
                s(a, 0)?.trim_end_matches(['\n', '\r']).into()
            }
            "indent" => {
                arity(a, 2, Some(2))?;
                let pad = " ".repeat(usize::try_from(int(a, 0)?).unwrap_or(0));
                s(a, 1)?.replace('\n', &format!("\n{pad}")).into()
            }
            "replace" => {
                arity(a, 3, Some(3))?;
                s(a, 0)?.replace(s(a, 1)?.as_str(), &s(a, 2)?).into()
            }
            "regex_replace" => {
                arity(a, 3, Some(3))?;
                let re = regex::Regex::new(&s(a, 1)?).map_err(|e| e.to_string())?;
                re.replace_all(&s(a, 0)?, s(a, 2)?.as_str())
                    .into_owned()
                    .into()
            }
            "regex" => {
                arity(a, 2, Some(2))?;
                let re = regex::Regex::new(&s(a, 0)?).map_err(|e| e.to_string())?;
                let text = s(a, 1)?;
                let caps = re
                    .captures(&text)
                    .ok_or("pattern did not match any part of the given string")?;
                regex_result(&re, &caps)
            }
            "regexall" => {
                arity(a, 2, Some(2))?;
                let re = regex::Regex::new(&s(a, 0)?).map_err(|e| e.to_string())?;
                let text = s(a, 1)?;
                Value::Array(
                    re.captures_iter(&text)
                        .map(|c| regex_result(&re, &c))
                        .collect(),
                )
            }
            "split" => {
                arity(a, 2, Some(2))?;
                let (sep, x) = (s(a, 0)?, s(a, 1)?);
                strs(x.split(sep.as_str()).map(str::to_owned).collect())
            }
            "join" => {
                arity(a, 2, None)?;
                let sep = s(a, 0)?;
                let mut parts = Vec::new();
                for i in 1..a.len() {
                    for v in list(a, i)? {
                        parts.push(to_text(&v).map_err(|e| format!("join: {e}"))?);
                    }
                }
                parts.join(&sep).into()
            }
            "substr" => {
                arity(a, 3, Some(3))?;
                substr(&s(a, 0)?, int(a, 1)?, int(a, 2)?).into()
            }
            "strlen" => {
                arity(a, 1, Some(1))?;
                (s(a, 0)?.chars().count() as u64).into()
            }
            "reverse" => {
                arity(a, 1, Some(1))?;
                s(a, 0)?.chars().rev().collect::<String>().into()
            }
            "format" => {
                arity(a, 1, None)?;
                format(&s(a, 0)?, &a[1..])?.into()
            }
            "formatlist" => {
                arity(a, 1, None)?;
                formatlist(&s(a, 0)?, &a[1..])?
            }
            "sanitize" => {
                arity(a, 1, Some(1))?;
                // buildx's own: only [a-zA-Z0-9_-] stays, everything else becomes `_`.
                s(a, 0)?
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect::<String>()
                    .into()
            }
            "basename" => {
                arity(a, 1, Some(1))?;
                go_path_base(&s(a, 0)?).into()
            }
            "dirname" => {
                arity(a, 1, Some(1))?;
                go_path_dir(&s(a, 0)?).into()
            }
            "homedir" => {
                arity(a, 0, Some(0))?;
                std::env::var("HOME")
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "/root".to_owned())
                    .into()
            }
            // ---- encodings and hashes ----
            "base64encode" => {
                arity(a, 1, Some(1))?;
                base64::engine::general_purpose::STANDARD
                    .encode(s(a, 0)?)
                    .into()
            }
            "base64decode" => {
                arity(a, 1, Some(1))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s(a, 0)?)
                    .map_err(|e| format!("failed to decode base64 data: {e}"))?;
                String::from_utf8(bytes)
                    .map_err(|_| "the result of decoding the provided string is not valid UTF-8")?
                    .into()
            }
            "urlencode" => {
                arity(a, 1, Some(1))?;
                urlencode(&s(a, 0)?).into()
            }
            "md5" => {
                arity(a, 1, Some(1))?;
                use md5::Digest as _;
                hex::encode(md5::Md5::digest(s(a, 0)?.as_bytes())).into()
            }
            "sha1" => {
                arity(a, 1, Some(1))?;
                use sha1::Digest as _;
                hex::encode(sha1::Sha1::digest(s(a, 0)?.as_bytes())).into()
            }
            "sha256" => {
                arity(a, 1, Some(1))?;
                use sha2::Digest as _;
                hex::encode(sha2::Sha256::digest(s(a, 0)?.as_bytes())).into()
            }
            "sha512" => {
                arity(a, 1, Some(1))?;
                use sha2::Digest as _;
                hex::encode(sha2::Sha512::digest(s(a, 0)?.as_bytes())).into()
            }
            "jsonencode" => {
                arity(a, 1, Some(1))?;
                json_encode(&a[0]).into()
            }
            "jsondecode" => {
                arity(a, 1, Some(1))?;
                let j: serde_json::Value =
                    serde_json::from_str(&s(a, 0)?).map_err(|e| e.to_string())?;
                json_value(j)
            }
            "csvdecode" => {
                arity(a, 1, Some(1))?;
                csvdecode(&s(a, 0)?)?
            }
            // ---- numbers ----
            "add" => num2(a, |x, y| Ok(x + y))?,
            "subtract" => num2(a, |x, y| Ok(x - y))?,
            "multiply" => num2(a, |x, y| Ok(x * y))?,
            "divide" => num2(a, |x, y| {
                if y == 0.0 {
                    Err("divide by zero".into())
                } else {
                    Ok(x / y)
                }
            })?,
            "modulo" => num2(a, |x, y| {
                if y == 0.0 {
                    Err("divide by zero".into())
                } else {
                    Ok(x % y)
                }
            })?,
            "pow" => num2(a, |x, y| Ok(x.powf(y)))?,
            "log" => num2(a, |x, y| Ok(x.ln() / y.ln()))?,
            "absolute" => num1(a, f64::abs)?,
            "negate" => num1(a, |x| -x)?,
            "ceil" => num1(a, f64::ceil)?,
            "floor" => num1(a, f64::floor)?,
            "int" => num1(a, f64::trunc)?,
            "signum" => num1(a, |x| if x == 0.0 { 0.0 } else { x.signum() })?,
            "max" | "min" => {
                arity(a, 1, None)?;
                let mut best = n(a, 0)?;
                for i in 1..a.len() {
                    let x = n(a, i)?;
                    if (name == "max" && x > best) || (name == "min" && x < best) {
                        best = x;
                    }
                }
                number(best)
            }
            "parseint" => {
                arity(a, 2, Some(2))?;
                let base = u32::try_from(int(a, 1)?).map_err(|_| "base must be 2 to 62")?;
                if !(2..=62).contains(&base) {
                    return Err("base must be a whole number between 2 and 62 inclusive".into());
                }
                parseint(&s(a, 0)?, base)?
            }
            "greaterthan" => cmp2(a, |x, y| x > y)?,
            "greaterthanorequalto" => cmp2(a, |x, y| x >= y)?,
            "lessthan" => cmp2(a, |x, y| x < y)?,
            "lessthanorequalto" => cmp2(a, |x, y| x <= y)?,
            // ---- logic ----
            "equal" => {
                arity(a, 2, Some(2))?;
                equal(&a[0], &a[1]).into()
            }
            "notequal" => {
                arity(a, 2, Some(2))?;
                (!equal(&a[0], &a[1])).into()
            }
            "and" => {
                arity(a, 2, Some(2))?;
                (to_bool(&a[0])? && to_bool(&a[1])?).into()
            }
            "or" => {
                arity(a, 2, Some(2))?;
                (to_bool(&a[0])? || to_bool(&a[1])?).into()
            }
            "not" => {
                arity(a, 1, Some(1))?;
                (!to_bool(&a[0])?).into()
            }
            "coalesce" => {
                arity(a, 1, None)?;
                a.iter()
                    .find(|v| !v.is_null() && v.as_str() != Some(""))
                    .cloned()
                    .ok_or("no non-null, non-empty-string arguments")?
            }
            // ---- collections ----
            "length" => {
                arity(a, 1, Some(1))?;
                match &a[0] {
                    Value::String(x) => x.chars().count(),
                    Value::Array(v) => v.len(),
                    Value::Object(m) => m.len(),
                    other => {
                        return Err(format!(
                            "argument must be a string, a collection type, or a structural type, got {}",
                            type_name(other)
                        ))
                    }
                }
                .into()
            }
            "concat" => {
                arity(a, 1, None)?;
                let mut out = Vec::new();
                for i in 0..a.len() {
                    out.extend(list(a, i)?);
                }
                Value::Array(out)
            }
            "coalescelist" => {
                arity(a, 1, None)?;
                for i in 0..a.len() {
                    let l = list(a, i)?;
                    if !l.is_empty() {
                        return Ok(Value::Array(l));
                    }
                }
                return Err("no non-null arguments".into());
            }
            "compact" => {
                arity(a, 1, Some(1))?;
                Value::Array(
                    list(a, 0)?
                        .into_iter()
                        .filter(|v| !v.is_null() && v.as_str() != Some(""))
                        .collect(),
                )
            }
            "contains" => {
                arity(a, 2, Some(2))?;
                list(a, 0)?.iter().any(|v| equal(v, &a[1])).into()
            }
            "distinct" => {
                arity(a, 1, Some(1))?;
                Value::Array(dedupe(list(a, 0)?))
            }
            "flatten" => {
                arity(a, 1, Some(1))?;
                let mut out = Vec::new();
                flatten(list(a, 0)?, &mut out);
                Value::Array(out)
            }
            "chunklist" => {
                arity(a, 2, Some(2))?;
                let size = int(a, 1)?;
                if size < 0 {
                    return Err("the size argument must be positive".into());
                }
                let l = list(a, 0)?;
                if size == 0 {
                    Value::Array(vec![Value::Array(l)])
                } else {
                    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
                    Value::Array(
                        l.chunks(size as usize)
                            .map(|c| Value::Array(c.to_vec()))
                            .collect(),
                    )
                }
            }
            "element" => {
                arity(a, 2, Some(2))?;
                let l = list(a, 0)?;
                if l.is_empty() {
                    return Err("cannot use element function with an empty list".into());
                }
                let i = int(a, 1)?;
                if i < 0 {
                    return Err("cannot use element function with a negative index".into());
                }
                #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
                l[(i as usize) % l.len()].clone()
            }
            "index" => {
                arity(a, 2, Some(2))?;
                match &a[0] {
                    Value::Array(l) => {
                        let i = int(a, 1)?;
                        usize::try_from(i)
                            .ok()
                            .and_then(|i| l.get(i))
                            .cloned()
                            .ok_or("the given index is greater than or equal to the length of the collection")?
                    }
                    Value::Object(m) => m.get(&s(a, 1)?).cloned().ok_or(
                        "the given key does not identify an element in this collection value",
                    )?,
                    other => {
                        return Err(format!(
                            "the first argument must be a list or map, got {}",
                            type_name(other)
                        ))
                    }
                }
            }
            "indexof" => {
                arity(a, 2, Some(2))?;
                let l = list(a, 0).map_err(|_| "argument must be a list or tuple")?;
                if l.is_empty() {
                    return Err("cannot search an empty list".into());
                }
                let i = l
                    .iter()
                    .position(|v| equal(v, &a[1]))
                    .ok_or("item not found")?;
                (i as u64).into()
            }
            "hasindex" => {
                arity(a, 2, Some(2))?;
                match &a[0] {
                    Value::Array(l) => to_number(&a[1])
                        .is_ok_and(|i| i.fract() == 0.0 && i >= 0.0 && i < l.len() as f64),
                    Value::Object(m) => to_text(&a[1]).is_ok_and(|k| m.contains_key(&k)),
                    _ => false,
                }
                .into()
            }
            "slice" => {
                arity(a, 3, Some(3))?;
                let l = list(a, 0)?;
                let (from, to) = (int(a, 1)?, int(a, 2)?);
                if from < 0 || to < from || usize::try_from(to).is_ok_and(|t| t > l.len()) {
                    return Err(format!(
                        "the indexes {from} and {to} are out of range for a list of {} elements",
                        l.len()
                    ));
                }
                #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
                Value::Array(l[from as usize..to as usize].to_vec())
            }
            "reverselist" => {
                arity(a, 1, Some(1))?;
                let mut l = list(a, 0)?;
                l.reverse();
                Value::Array(l)
            }
            "sort" => {
                arity(a, 1, Some(1))?;
                let mut l: Vec<String> =
                    list(a, 0)?.iter().map(to_text).collect::<Result<_, _>>()?;
                l.sort();
                strs(l)
            }
            "range" => range(a)?,
            "keys" => {
                arity(a, 1, Some(1))?;
                let mut k: Vec<String> = object(a, 0)?.keys().cloned().collect();
                k.sort();
                strs(k)
            }
            "values" => {
                arity(a, 1, Some(1))?;
                Value::Array(sorted(object(a, 0)?).into_values().collect())
            }
            "lookup" => {
                arity(a, 2, Some(3))?;
                let m = object(a, 0)?;
                match m.get(&s(a, 1)?) {
                    Some(v) => v.clone(),
                    None if a.len() == 3 => a[2].clone(),
                    None => {
                        return Err(format!(
                        "the given key {:?} does not identify an element in this collection value",
                        s(a, 1)?
                    ))
                    }
                }
            }
            "merge" => {
                let mut out = Map::new();
                for (i, v) in a.iter().enumerate() {
                    if v.is_null() {
                        continue;
                    }
                    for (k, v) in object(a, i)? {
                        out.insert(k, v);
                    }
                }
                Value::Object(sorted(out))
            }
            "zipmap" => {
                arity(a, 2, Some(2))?;
                let (k, v) = (list(a, 0)?, list(a, 1)?);
                if k.len() != v.len() {
                    return Err(format!(
                        "number of keys ({}) does not match number of values ({})",
                        k.len(),
                        v.len()
                    ));
                }
                let mut out = Map::new();
                for (k, v) in k.iter().zip(v) {
                    out.insert(to_text(k)?, v);
                }
                Value::Object(sorted(out))
            }
            // ---- sets (cty sets of primitives iterate in sorted order) ----
            "sethaselement" => {
                arity(a, 2, Some(2))?;
                list(a, 0)?.iter().any(|v| equal(v, &a[1])).into()
            }
            "setunion" => {
                arity(a, 1, None)?;
                let mut all = Vec::new();
                for i in 0..a.len() {
                    all.extend(list(a, i)?);
                }
                set(all)
            }
            "setintersection" => {
                arity(a, 1, None)?;
                let mut acc = list(a, 0)?;
                for i in 1..a.len() {
                    let other = list(a, i)?;
                    acc.retain(|v| other.iter().any(|w| equal(v, w)));
                }
                set(acc)
            }
            "setsubtract" => {
                arity(a, 2, Some(2))?;
                let other = list(a, 1)?;
                let mut acc = list(a, 0)?;
                acc.retain(|v| !other.iter().any(|w| equal(v, w)));
                set(acc)
            }
            "setsymmetricdifference" => {
                arity(a, 1, None)?;
                let sets: Vec<Vec<Value>> = (0..a.len())
                    .map(|i| list(a, i).map(dedupe))
                    .collect::<Result<_, _>>()?;
                let all: Vec<Value> = sets.iter().flatten().cloned().collect();
                let odd: Vec<Value> = all
                    .iter()
                    .filter(|v| {
                        sets.iter()
                            .filter(|s| s.iter().any(|w| equal(v, w)))
                            .count()
                            % 2
                            == 1
                    })
                    .cloned()
                    .collect();
                set(odd)
            }
            "setproduct" => {
                arity(a, 1, None)?;
                let mut combos: Vec<Vec<Value>> = vec![Vec::new()];
                for i in 0..a.len() {
                    let l = list(a, i)?;
                    combos = combos
                        .into_iter()
                        .flat_map(|c| {
                            l.iter().map(move |v| {
                                let mut c = c.clone();
                                c.push(v.clone());
                                c
                            })
                        })
                        .collect();
                }
                Value::Array(combos.into_iter().map(Value::Array).collect())
            }
            "uuidv4" => {
                arity(a, 0, Some(0))?;
                let mut b = [0u8; 16];
                use std::io::Read as _;
                fs_err::File::open("/dev/urandom")
                    .and_then(|mut f| f.read_exact(&mut b))
                    .map_err(|e| e.to_string())?;
                uuid_text(b, 4).into()
            }
            "uuidv5" => {
                arity(a, 2, Some(2))?;
                uuidv5(&s(a, 0)?, &s(a, 1)?)?.into()
            }
            "semvercmp" => {
                arity(a, 2, Some(2))?;
                crate::semver::satisfies(&s(a, 0)?, &s(a, 1)?)?.into()
            }
            // ---- networks (go-cty-funcs' cidr, on hashicorp/go-cidr) ----
            "cidrhost" => {
                arity(a, 2, Some(2))?;
                let net = Cidr::parse(&s(a, 0)?)?;
                net.host(int(a, 1)?)?.into()
            }
            "cidrnetmask" => {
                arity(a, 1, Some(1))?;
                let net = Cidr::parse(&s(a, 0)?)?;
                if net.bits != 32 {
                    return Err("only IPv4 networks are supported".into());
                }
                let mask = u32::MAX.checked_shl(32 - net.len).unwrap_or(0);
                std::net::Ipv4Addr::from(mask).to_string().into()
            }
            "cidrsubnet" => {
                arity(a, 3, Some(3))?;
                let net = Cidr::parse(&s(a, 0)?)?;
                let (newbits, num) = (int(a, 1)?, int(a, 2)?);
                net.subnet(newbits, num)?.to_string().into()
            }
            "cidrsubnets" => {
                arity(a, 1, None)?;
                let net = Cidr::parse(&s(a, 0)?)?;
                let mut out = Vec::new();
                let mut next: Option<u128> = Some(net.base);
                for i in 1..a.len() {
                    let nb = int(a, i)?;
                    let first = net.subnet(nb, 0)?;
                    let size = first.size();
                    let start = next
                        .filter(|_| size != 0)
                        .and_then(|n| n.checked_add(size - 1))
                        .map(|n| n / size * size)
                        .filter(|st| st.checked_add(size - 1).is_some_and(|e| e <= net.last()))
                        .ok_or_else(|| {
                            format!("not enough remaining address space for a subnet with a prefix of {} bits after {}", first.len, out.last().map_or(String::new(), Value::to_string))
                        })?;
                    let sub = Cidr {
                        base: start,
                        ..first
                    };
                    next = start.checked_add(size);
                    out.push(Value::String(sub.to_string()));
                }
                Value::Array(out)
            }
            // ---- time ----
            "timestamp" => {
                arity(a, 0, Some(0))?;
                // buildx: time.Now().UTC() in RFC 3339 (SOURCE_DATE_EPOCH is not read here).
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(|e| e.to_string())?;
                #[allow(clippy::cast_possible_wrap)]
                crate::time::rfc3339(now.as_secs() as i64).into()
            }
            "formatdate" => {
                arity(a, 2, Some(2))?;
                let t = crate::time::parse_rfc3339(&s(a, 1)?)?;
                crate::time::format(&s(a, 0)?, &t)?.into()
            }
            "formattimestamp" => {
                arity(a, 2, Some(2))?;
                let t = match &a[1] {
                    Value::String(ts) => crate::time::parse_rfc3339(ts)
                        .map_err(|_| "timestamp string must be RFC3339".to_owned())?,
                    Value::Number(_) => crate::time::Time::utc(
                        int(a, 1).map_err(|_| "unix timestamp must be an integer".to_owned())?,
                    ),
                    _ => return Err("must be a string timestamp or a unix timestamp number".into()),
                };
                let f = s(a, 0)?;
                if f == "X" {
                    t.unix().to_string().into()
                } else {
                    crate::time::format(&f, &t)?.into()
                }
            }
            "timeadd" => {
                arity(a, 2, Some(2))?;
                let t = crate::time::parse_rfc3339(&s(a, 0)?)?;
                let d = crate::time::parse_duration(&s(a, 1)?)?;
                t.add_seconds(d).to_rfc3339().into()
            }
            "unixtimestampparse" => {
                arity(a, 1, Some(1))?;
                let secs = int(a, 0).map_err(|_| "unix timestamp must be an integer".to_owned())?;
                crate::time::Time::utc(secs).parts()
            }
            _ => return Err(UNKNOWN.into()),
        })
    })();
    match r {
        Err(e) if e == UNKNOWN => None,
        other => Some(other),
    }
}

const UNKNOWN: &str = "\u{0}unknown function";

fn num1(a: &[Value], f: fn(f64) -> f64) -> R {
    arity(a, 1, Some(1))?;
    Ok(number(f(n(a, 0)?)))
}
fn num2(a: &[Value], f: impl Fn(f64, f64) -> Result<f64, String>) -> R {
    arity(a, 2, Some(2))?;
    Ok(number(f(n(a, 0)?, n(a, 1)?)?))
}
fn cmp2(a: &[Value], f: fn(f64, f64) -> bool) -> R {
    arity(a, 2, Some(2))?;
    Ok(f(n(a, 0)?, n(a, 1)?).into())
}

fn dedupe(l: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for v in l {
        if !out.iter().any(|o| equal(o, &v)) {
            out.push(v);
        }
    }
    out
}

/// A cty set as a list: no duplicates; strings and numbers in cty's set order (sorted).
fn set(l: Vec<Value>) -> Value {
    let mut out = dedupe(l);
    if out.iter().all(Value::is_string) {
        out.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
    } else if out.iter().all(Value::is_number) {
        out.sort_by(|x, y| {
            let (x, y) = (to_number(x).unwrap_or(0.0), to_number(y).unwrap_or(0.0));
            x.total_cmp(&y)
        });
    }
    Value::Array(out)
}

fn flatten(l: Vec<Value>, out: &mut Vec<Value>) {
    for v in l {
        match v {
            Value::Array(inner) => flatten(inner, out),
            other => out.push(other),
        }
    }
}

fn range(a: &[Value]) -> R {
    arity(a, 1, Some(3))?;
    let (start, end, step) = match a.len() {
        1 => (0.0, n(a, 0)?, 1.0),
        2 => (n(a, 0)?, n(a, 1)?, 1.0),
        _ => (n(a, 0)?, n(a, 1)?, n(a, 2)?),
    };
    // go-cty: the default step of a decreasing range is -1; a step against the direction is an error.
    let step = if a.len() < 3 && end < start {
        -1.0
    } else {
        step
    };
    if step == 0.0 {
        return Err("step must not be zero".into());
    }
    if (end > start && step < 0.0) || (end < start && step > 0.0) {
        return Err(
            "step must be positive for an increasing range (or negative for a decreasing one)"
                .into(),
        );
    }
    let mut out = Vec::new();
    let mut x = start;
    while (step > 0.0 && x < end) || (step < 0.0 && x > end) {
        if out.len() == 1024 {
            return Err("more than 1024 values were generated; either decrease the difference between start and end or use a smaller step".into());
        }
        out.push(number(x));
        x += step;
    }
    Ok(Value::Array(out))
}

fn regex_result(re: &regex::Regex, caps: &regex::Captures<'_>) -> Value {
    let text = |i: usize| caps.get(i).map_or(Value::Null, |m| m.as_str().into());
    if re.captures_len() == 1 {
        return text(0);
    }
    let names: Vec<Option<&str>> = re.capture_names().skip(1).collect();
    if names.iter().all(Option::is_some) {
        let mut m = Map::new();
        for (i, name) in names.iter().enumerate() {
            m.insert((*name).unwrap_or_default().to_owned(), text(i + 1));
        }
        Value::Object(sorted(m))
    } else {
        Value::Array((1..re.captures_len()).map(text).collect())
    }
}

fn title(x: &str) -> String {
    // Go's strings.Title: the first letter of each word (after a non-letter) in upper case.
    let mut out = String::with_capacity(x.len());
    let mut prev_letter = false;
    for c in x.chars() {
        if prev_letter {
            out.push(c);
        } else {
            out.extend(c.to_uppercase());
        }
        prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
    }
    out
}

fn substr(x: &str, offset: i64, length: i64) -> String {
    let chars: Vec<char> = x.chars().collect();
    let len = chars.len() as i64;
    let start = if offset < 0 {
        (len + offset).max(0)
    } else {
        offset.min(len)
    };
    let end = if length < 0 {
        len
    } else {
        (start + length).min(len)
    };
    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
    chars[start as usize..end as usize].iter().collect()
}

fn go_path_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Go's `path.Base`.
fn go_path_base(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return "/".into();
    }
    t.rsplit('/').next().unwrap_or(t).to_owned()
}

/// Go's `path.Dir`.
fn go_path_dir(p: &str) -> String {
    let dir = match p.rfind('/') {
        Some(i) => &p[..=i],
        None => "",
    };
    go_path_clean(dir)
}

/// Go's `url.QueryEscape`.
fn urlencode(x: &str) -> String {
    let mut out = String::new();
    for b in x.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn parseint(x: &str, base: u32) -> R {
    let (neg, digits) = match x.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, x.strip_prefix('+').unwrap_or(x)),
    };
    let bad = || format!("cannot parse {x:?} as a base {base} integer");
    if digits.is_empty() {
        return Err(bad());
    }
    let mut acc: i64 = 0;
    for c in digits.chars() {
        // Go's big.Int digits: 0-9, then a-z, then A-Z for bases above 36.
        let d = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 10,
            'A'..='Z' if base <= 36 => c as u32 - 'A' as u32 + 10,
            'A'..='Z' => c as u32 - 'A' as u32 + 36,
            _ => return Err(bad()),
        };
        if d >= base {
            return Err(bad());
        }
        acc = acc
            .checked_mul(i64::from(base))
            .and_then(|v| v.checked_add(i64::from(d)))
            .ok_or_else(bad)?;
    }
    Ok(Value::from(if neg { -acc } else { acc }))
}

/// `format`'s verbs (Go's fmt as go-cty uses it): `%s %d %f %e %g %t %v %q %x %X %o %b %%`, with
/// flags `-+ 0`, a width and a precision.
fn format(fmt: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let mut next = 0usize;
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space) = (false, false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                _ => break,
            }
            chars.next();
        }
        let mut width = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            chars.next();
        }
        let mut prec: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                chars.next();
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let verb = chars
            .next()
            .ok_or("unterminated format sequence at the end")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let arg = args
            .get(next)
            .ok_or_else(|| format!("not enough arguments for %{verb}"))?;
        next += 1;
        let sign = |x: f64, body: String| {
            if x < 0.0 || body.starts_with('-') {
                body
            } else if plus {
                format!("+{body}")
            } else if space {
                format!(" {body}")
            } else {
                body
            }
        };
        let body = match verb {
            's' => {
                let t = to_text(arg).map_err(|e| format!("%s: {e}"))?;
                match prec {
                    Some(p) => t.chars().take(p).collect(),
                    None => t,
                }
            }
            'v' => match arg {
                Value::Array(_) | Value::Object(_) => json_encode(arg),
                Value::Null => "null".into(),
                other => to_text(other)?,
            },
            'q' => json_encode(&Value::String(to_text(arg)?)),
            't' => to_bool(arg)?.to_string(),
            'd' => {
                let x = to_number(arg)?;
                if x.fract() != 0.0 {
                    return Err(format!("%d requires an integer, got {}", num_text(x)));
                }
                sign(x, num_text(x))
            }
            'f' | 'e' | 'E' | 'g' => {
                let x = to_number(arg)?;
                let p = prec.unwrap_or(6);
                let body = match verb {
                    'f' => format!("{x:.p$}"),
                    'e' | 'E' => {
                        let t = format!("{x:.p$e}");
                        // Go writes the exponent with a sign and at least two digits.
                        let (m, e) = t.split_once('e').unwrap_or((&t, "0"));
                        let ev: i32 = e.parse().unwrap_or(0);
                        let t = format!("{m}e{}{:02}", if ev < 0 { '-' } else { '+' }, ev.abs());
                        if verb == 'E' {
                            t.to_uppercase()
                        } else {
                            t
                        }
                    }
                    _ => num_text(x),
                };
                sign(x, body)
            }
            'x' | 'X' | 'o' | 'b' => {
                if let (Value::String(t), 'x' | 'X') = (arg, verb) {
                    let h = hex::encode(t.as_bytes());
                    if verb == 'X' {
                        h.to_uppercase()
                    } else {
                        h
                    }
                } else {
                    let x = to_number(arg)?;
                    if x.fract() != 0.0 {
                        return Err(format!("%{verb} requires an integer"));
                    }
                    #[allow(clippy::cast_possible_truncation)]
                    let i = x as i64;
                    let mag = i.unsigned_abs();
                    let digits = match verb {
                        'x' => format!("{mag:x}"),
                        'X' => format!("{mag:X}"),
                        'o' => format!("{mag:o}"),
                        _ => format!("{mag:b}"),
                    };
                    sign(x, if i < 0 { format!("-{digits}") } else { digits })
                }
            }
            other => return Err(format!("unsupported format verb %{other}")),
        };
        let w: usize = width.parse().unwrap_or(0);
        let len = body.chars().count();
        if len >= w {
            out.push_str(&body);
        } else if minus {
            out.push_str(&body);
            out.push_str(&" ".repeat(w - len));
        } else if zero && matches!(verb, 'd' | 'f' | 'e' | 'E' | 'g' | 'x' | 'X' | 'o' | 'b') {
            let (sgn, digits) = match body.chars().next() {
                Some(c @ ('-' | '+' | ' ')) => (c.to_string(), body[1..].to_owned()),
                _ => (String::new(), body.clone()),
            };
            out.push_str(&sgn);
            out.push_str(&"0".repeat(w - len));
            out.push_str(&digits);
        } else {
            out.push_str(&" ".repeat(w - len));
            out.push_str(&body);
        }
    }
    if next < args.len() {
        return Err(format!(
            "too many arguments; only {next} used by format string"
        ));
    }
    Ok(out)
}

fn formatlist(fmt: &str, args: &[Value]) -> R {
    let mut n: Option<usize> = None;
    for a in args {
        if let Value::Array(l) = a {
            match n {
                Some(m) if m != l.len() => {
                    return Err(format!(
                        "all list arguments must have the same length ({m} and {})",
                        l.len()
                    ))
                }
                _ => n = Some(l.len()),
            }
        }
    }
    let n = n.unwrap_or(1);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let row: Vec<Value> = args
            .iter()
            .map(|a| match a {
                Value::Array(l) => l[i].clone(),
                other => other.clone(),
            })
            .collect();
        out.push(Value::String(format(fmt, &row)?));
    }
    Ok(Value::Array(out))
}

/// cty's JSON: object keys sorted, compact, `<`, `>` and `&` escaped as Go's encoding/json does.
pub(crate) fn json_encode(v: &Value) -> String {
    fn string(out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                }
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    fn walk(out: &mut String, v: &Value) {
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(&b.to_string()),
            Value::Number(n) => out.push_str(&to_text(&Value::Number(*n)).unwrap_or_default()),
            Value::String(s) => string(out, s),
            Value::Array(l) => {
                out.push('[');
                for (i, x) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    walk(out, x);
                }
                out.push(']');
            }
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    string(out, k);
                    out.push(':');
                    walk(out, &m[k]);
                }
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    walk(&mut out, v);
    out
}

/// A JSON value as an HCL value.
pub(crate) fn json_value(j: serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_f64().map(number))
            .unwrap_or(Value::Null),
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(a) => Value::Array(a.into_iter().map(json_value).collect()),
        serde_json::Value::Object(m) => {
            Value::Object(m.into_iter().map(|(k, v)| (k, json_value(v))).collect())
        }
    }
}

/// go-cty's `csvdecode`: a list of objects keyed by the header row; every row as long as the header.
fn csvdecode(text: &str) -> R {
    let rows = csv_rows(text)?;
    let mut rows = rows.into_iter();
    let header = rows.next().ok_or("missing header line")?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        if row.len() != header.len() {
            return Err(format!(
                "record on line {} has {} fields, the header has {}",
                i + 2,
                row.len(),
                header.len()
            ));
        }
        let m: Map<String, Value> = header
            .iter()
            .cloned()
            .zip(row.into_iter().map(Value::String))
            .collect();
        out.push(Value::Object(sorted(m)));
    }
    Ok(Value::Array(out))
}

/// RFC 4180 records (Go's encoding/csv: quotes, doubled quotes, CRLF).
fn csv_rows(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                any = false;
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err("extraneous or missing \" in quoted-field".into());
    }
    if any {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

/// 16 bytes as an RFC 4122 UUID of `version` (version and variant bits set).
fn uuid_text(mut b: [u8; 16], version: u8) -> String {
    b[6] = (b[6] & 0x0f) | (version << 4);
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// go-cty-funcs' `uuidv5`: the namespace is `dns`, `url`, `oid`, `x500` or a UUID.
fn uuidv5(namespace: &str, name: &str) -> Result<String, String> {
    let ns = match namespace {
        "dns" => "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        "url" => "6ba7b811-9dad-11d1-80b4-00c04fd430c8",
        "oid" => "6ba7b812-9dad-11d1-80b4-00c04fd430c8",
        "x500" => "6ba7b814-9dad-11d1-80b4-00c04fd430c8",
        other => other,
    };
    let bytes = hex::decode(ns.replace('-', ""))
        .ok()
        .filter(|b| b.len() == 16 && ns.len() == 36)
        .ok_or_else(|| format!("uuidv5() doesn't support namespace {namespace}"))?;
    use sha1::Digest as _;
    let mut h = sha1::Sha1::new();
    h.update(&bytes);
    h.update(name.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    Ok(uuid_text(b, 5))
}

/// An IPv4 or IPv6 network: its base address (as a number), prefix length and address size in bits.
#[derive(Clone, Copy)]
struct Cidr {
    base: u128,
    len: u32,
    bits: u32,
}

impl Cidr {
    /// Go's `net.ParseCIDR`: the address masked to its network.
    fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("invalid CIDR expression: invalid CIDR address: {text}");
        let (ip, len) = text.split_once('/').ok_or_else(bad)?;
        let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
        let len: u32 = len.parse().map_err(|_| bad())?;
        let (n, bits) = match ip {
            std::net::IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
            std::net::IpAddr::V6(v6) => (u128::from(v6), 128),
        };
        if len > bits {
            return Err(bad());
        }
        let c = Self { base: 0, len, bits };
        Ok(Self {
            base: n & !c.size().wrapping_sub(1),
            ..c
        })
    }

    /// The number of addresses; 0 stands for 2^128 (`::/0`).
    fn size(self) -> u128 {
        1u128.checked_shl(self.bits - self.len).unwrap_or(0)
    }

    fn last(self) -> u128 {
        self.base.wrapping_add(self.size().wrapping_sub(1))
    }

    fn addr(self, n: u128) -> String {
        if self.bits == 32 {
            #[allow(clippy::cast_possible_truncation)]
            std::net::Ipv4Addr::from(n as u32).to_string()
        } else {
            std::net::Ipv6Addr::from(n).to_string()
        }
    }

    /// go-cidr's `HostBig`: host `num` of the network, counting from the end when negative.
    fn host(self, num: i64) -> Result<String, String> {
        let room = self.bits - self.len;
        let fits = if num >= 0 {
            room >= 64 || u128::from(num.unsigned_abs()) < (1u128 << room)
        } else {
            room >= 64 || u128::from(num.unsigned_abs()) <= (1u128 << room)
        };
        if !fits {
            return Err(format!(
                "prefix of {} bits cannot accommodate a host numbered {num}",
                self.len
            ));
        }
        let n = if num >= 0 {
            self.base + u128::from(num.unsigned_abs())
        } else {
            self.last()
                .wrapping_add(1)
                .wrapping_sub(u128::from(num.unsigned_abs()))
        };
        Ok(self.addr(n))
    }

    /// go-cidr's `SubnetBig`: subnet `num` of the prefix extended by `newbits`.
    fn subnet(self, newbits: i64, num: i64) -> Result<Cidr, String> {
        let nb = u32::try_from(newbits).map_err(|_| "newbits must not be negative".to_owned())?;
        if self.len + nb > self.bits {
            return Err(format!(
                "insufficient address space to extend prefix of {} by {nb}",
                self.len
            ));
        }
        let num = u128::try_from(num).map_err(|_| "netnum must not be negative".to_owned())?;
        if nb < 128 && num >= (1u128 << nb) {
            return Err(format!(
                "prefix extension of {nb} does not accommodate a subnet numbered {num}"
            ));
        }
        let sub = Cidr {
            base: 0,
            len: self.len + nb,
            bits: self.bits,
        };
        Ok(Cidr {
            base: self.base.wrapping_add(num.wrapping_mul(sub.size())),
            ..sub
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr(self.base), self.len)
    }
}
