//! go-cty's conversions and comparisons of values, shared by the evaluator, the built-in functions
//! and the variable types.

use hcl::Value;

/// cty's friendly type name of a value.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "tuple",
        Value::Object(_) => "object",
    }
}

/// A number as cty prints it: integers without a fraction, others in their shortest form.
pub(crate) fn num_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        #[allow(clippy::cast_possible_truncation)]
        let i = n as i64;
        i.to_string()
    } else {
        n.to_string()
    }
}

/// A number value: an integer when it has no fraction.
pub(crate) fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        #[allow(clippy::cast_possible_truncation)]
        Value::from(n as i64)
    } else {
        Value::from(n)
    }
}

/// A value converted to a number (cty converts numeric strings).
pub(crate) fn to_number(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| "a number out of range".to_owned()),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .ok_or_else(|| format!("a number is required, got the string {s:?}")),
        Value::Null => Err("a number is required, got null".into()),
        other => Err(format!("a number is required, got {}", type_name(other))),
    }
}

/// A value converted to a bool (cty converts "true" and "false").
pub(crate) fn to_bool(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        Value::Null => Err("a bool is required, got null".into()),
        other => Err(format!("a bool is required, got {}", type_name(other))),
    }
}

/// A primitive converted to a string, as cty does (numbers in their shortest form).
pub(crate) fn to_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.as_f64().map_or_else(|| n.to_string(), num_text)),
        Value::Null => Err("a string is required, got null".into()),
        other => Err(format!("a string is required, got {}", type_name(other))),
    }
}

/// cty's equality: numbers by value, collections element by element, no conversion between types.
pub(crate) fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}
