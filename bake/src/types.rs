//! Variable types (`type = list(string)`): HCL's type expressions, go-cty's conversion of a value to a
//! type, and buildx's reading of an environment override for a typed variable (primitives, CSV for
//! lists/sets/tuples/maps, JSON through `NAME_JSON`).

use hcl::expr::{Expression, TraversalOperator};
use hcl::{Map, Value};

use crate::value::{to_bool, to_number, to_text, type_name};

/// A type constraint.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Type {
    Any,
    String,
    Number,
    Bool,
    List(Box<Type>),
    Set(Box<Type>),
    Map(Box<Type>),
    Tuple(Vec<Type>),
    Object(Vec<(String, Type)>),
}

impl Type {
    /// Parses a type expression (`string`, `list(number)`, `object({a = string})`, …).
    pub(crate) fn parse(e: &Expression) -> Result<Self, String> {
        match e {
            Expression::Variable(v) => match v.as_str() {
                "string" => Ok(Type::String),
                "number" => Ok(Type::Number),
                "bool" => Ok(Type::Bool),
                "any" => Ok(Type::Any),
                "list" | "set" | "map" | "tuple" | "object" => Err(format!(
                    "the {:?} type constructor requires one argument specifying the element type",
                    v.as_str()
                )),
                other => Err(format!(
                    "the keyword {other:?} is not a valid type specification"
                )),
            },
            Expression::FuncCall(call) => {
                let name = call.name.name.as_str();
                let [arg] = call.args.as_slice() else {
                    return Err(format!(
                        "the {name:?} type constructor requires one argument"
                    ));
                };
                match name {
                    "list" => Ok(Type::List(Box::new(Type::parse(arg)?))),
                    "set" => Ok(Type::Set(Box::new(Type::parse(arg)?))),
                    "map" => Ok(Type::Map(Box::new(Type::parse(arg)?))),
                    "tuple" => match arg {
                        Expression::Array(items) => Ok(Type::Tuple(
                            items.iter().map(Type::parse).collect::<Result<_, _>>()?,
                        )),
                        _ => Err("the tuple type constructor requires a list of element types".into()),
                    },
                    "object" => match arg {
                        Expression::Object(fields) => Ok(Type::Object(
                            fields
                                .iter()
                                .map(|(k, v)| Ok((k.to_string(), Type::parse(v)?)))
                                .collect::<Result<_, String>>()?,
                        )),
                        _ => Err("the object type constructor requires an object of attribute types".into()),
                    },
                    other => Err(format!(
                        "{other:?} is not a valid type constructor"
                    )),
                }
            }
            Expression::Traversal(t) if matches!(t.operators.first(), Some(TraversalOperator::GetAttr(_))) => {
                Err("a type expression is a keyword or a type constructor, not an attribute access: not a valid type specification".into())
            }
            other => Err(format!(
                "{other} is not a valid type specification (a type keyword or constructor is expected)"
            )),
        }
    }

    /// cty's friendly name (`list of string`, `map of number`).
    pub(crate) fn name(&self) -> String {
        match self {
            Type::Any => "any".into(),
            Type::String => "string".into(),
            Type::Number => "number".into(),
            Type::Bool => "bool".into(),
            Type::List(t) => format!("list of {}", t.name()),
            Type::Set(t) => format!("set of {}", t.name()),
            Type::Map(t) => format!("map of {}", t.name()),
            Type::Tuple(_) => "tuple".into(),
            Type::Object(_) => "object".into(),
        }
    }

    fn is_primitive(&self) -> bool {
        matches!(self, Type::String | Type::Number | Type::Bool)
    }

    /// `v` converted to this type as go-cty's `convert.Convert` does (null stays null).
    pub(crate) fn convert(&self, v: Value) -> Result<Value, String> {
        if v.is_null() {
            return Ok(v);
        }
        let elems = |v: Value, want: &str| match v {
            Value::Array(items) => Ok(items),
            other => Err(format!("{want} required, got {}", type_name(&other))),
        };
        match self {
            Type::Any => Ok(v),
            Type::String => to_text(&v).map(Value::String),
            Type::Number => to_number(&v).map(crate::value::number),
            Type::Bool => to_bool(&v).map(Value::Bool),
            Type::List(t) => elems(v, "list of")
                .map_err(|e| format!("{} {e}", self.name()))?
                .into_iter()
                .map(|x| t.convert(x))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Type::Set(t) => {
                let items = elems(v, "set of")
                    .map_err(|e| format!("{} {e}", self.name()))?
                    .into_iter()
                    .map(|x| t.convert(x))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut out: Vec<Value> = Vec::new();
                for x in items {
                    if !out.iter().any(|o| crate::value::equal(o, &x)) {
                        out.push(x);
                    }
                }
                if out.iter().all(Value::is_string) {
                    out.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                } else if out.iter().all(Value::is_number) {
                    out.sort_by(|a, b| {
                        to_number(a)
                            .unwrap_or(0.0)
                            .total_cmp(&to_number(b).unwrap_or(0.0))
                    });
                }
                Ok(Value::Array(out))
            }
            Type::Map(t) => match v {
                Value::Object(m) => {
                    let mut kv: Vec<(String, Value)> = m.into_iter().collect();
                    kv.sort_by(|a, b| a.0.cmp(&b.0));
                    kv.into_iter()
                        .map(|(k, x)| Ok((k, t.convert(x)?)))
                        .collect::<Result<Map<_, _>, String>>()
                        .map(Value::Object)
                }
                other => Err(format!(
                    "{} required, got {}",
                    self.name(),
                    type_name(&other)
                )),
            },
            Type::Tuple(ts) => {
                let items = elems(v, "tuple").map_err(|e| format!("a {e}"))?;
                if items.len() != ts.len() {
                    return Err(format!(
                        "a tuple of {} elements is required, got {}",
                        ts.len(),
                        items.len()
                    ));
                }
                ts.iter()
                    .zip(items)
                    .map(|(t, x)| t.convert(x))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            Type::Object(fields) => match v {
                Value::Object(mut m) => {
                    let mut out = Map::new();
                    for (k, t) in fields {
                        let x = m
                            .swap_remove(k)
                            .ok_or_else(|| format!("attribute {k:?} is required"))?;
                        out.insert(k.clone(), t.convert(x)?);
                    }
                    Ok(Value::Object(out))
                }
                other => Err(format!("an object is required, got {}", type_name(&other))),
            },
        }
    }

    /// The value of an environment override `text` for a variable of this type that was not given as
    /// JSON: a primitive parsed, a list/set/tuple/map read as CSV (map entries as `key:value`).
    pub(crate) fn read_env(&self, var: &str, text: &str) -> Result<Value, String> {
        if self.is_primitive() {
            return primitive(var, text, self);
        }
        let fields = csv_fields(text, ',');
        let csv_err = |e: String| format!("failed to convert variable {var} from CSV: {e}");
        let unsupported = || {
            csv_err(format!(
                "unsupported type {} for CSV specification",
                self.name()
            ))
        };
        match self {
            Type::List(t) | Type::Set(t) => {
                if !t.is_primitive() {
                    return Err(unsupported());
                }
                let items = fields
                    .iter()
                    .map(|f| primitive(var, f, t))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(csv_err)?;
                self.convert(Value::Array(items)).map_err(csv_err)
            }
            Type::Tuple(ts) => {
                if ts.len() != fields.len() {
                    return Err(csv_err(format!(
                        "{} expects {} elements but only {} provided",
                        self.name(),
                        ts.len(),
                        fields.len()
                    )));
                }
                let mut out = Vec::new();
                for (t, f) in ts.iter().zip(&fields) {
                    if !t.is_primitive() {
                        return Err(unsupported());
                    }
                    out.push(primitive(var, f, t).map_err(csv_err)?);
                }
                Ok(Value::Array(out))
            }
            Type::Map(t) => {
                if !t.is_primitive() {
                    return Err(unsupported());
                }
                let mut m = Map::new();
                for f in &fields {
                    let kv = csv_fields(f, ':');
                    let [k, v] = kv.as_slice() else {
                        return Err(csv_err(format!(
                            "expected one k/v pair but got {} pieces from {f}",
                            kv.len()
                        )));
                    };
                    m.insert(k.clone(), primitive(var, v, t).map_err(csv_err)?);
                }
                self.convert(Value::Object(m)).map_err(csv_err)
            }
            _ => Err(format!(
                "unsupported type {} for variable {var}",
                self.name()
            )),
        }
    }
}

/// A primitive from text as buildx's `convertPrimitive` (Go's strconv.ParseBool / ParseFloat).
pub(crate) fn primitive(var: &str, text: &str, t: &Type) -> Result<Value, String> {
    match t {
        Type::Bool => match text {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Value::Bool(true)),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Value::Bool(false)),
            _ => Err(format!(
                "failed to parse {var} as bool: strconv.ParseBool: parsing {text:?}: invalid syntax"
            )),
        },
        Type::Number => text
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(crate::value::number)
            .ok_or_else(|| {
                format!(
                    "failed to parse {var} as number: strconv.ParseFloat: parsing {text:?}: invalid syntax"
                )
            }),
        _ => Ok(Value::String(text.to_owned())),
    }
}

/// The fields of one CSV record (quotes and doubled quotes as Go's encoding/csv).
fn csv_fields(text: &str, comma: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
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
        } else if c == '"' && field.is_empty() {
            quoted = true;
        } else if c == comma {
            out.push(std::mem::take(&mut field));
        } else {
            field.push(c);
        }
    }
    out.push(field);
    out
}

/// The type a value has (untyped variables' env overrides are read as their default's type).
pub(crate) fn of(v: &Value) -> Option<Type> {
    match v {
        Value::String(_) => Some(Type::String),
        Value::Number(_) => Some(Type::Number),
        Value::Bool(_) => Some(Type::Bool),
        _ => None,
    }
}
