//! Parameter values after validation, with one canonical form for hashing and naming.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated parameter value. Floats and integers are kept apart by the parameter's declared
/// type (an integer written where a float is expected becomes a float), so `lr = 1` and
/// `lr = 1.0` hash the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
}

impl Value {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The canonical JSON text of this value: the input to step keys.
    /// Floats use the shortest text that reads back to the same number.
    pub fn canonical(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            // Floats are keyed as text so that JSON number handling can never merge 1 and 1.0.
            Value::Float(f) => serde_json::Value::String(format!("f:{}", FloatText(*f))),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::List(items) => {
                serde_json::Value::Array(items.iter().map(Value::canonical).collect())
            }
        }
    }
}

/// Shortest round-trip text of a float (Rust's `Display` already is), with `-0` folded into `0`.
struct FloatText(f64);

impl fmt::Display for FloatText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = if self.0 == 0.0 { 0.0 } else { self.0 };
        write!(f, "{v}")
    }
}

impl fmt::Display for Value {
    /// The text used in instance names and tables: `8`, `0.001`, `topk`, `[16,32]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", FloatText(*x)),
            Value::Str(s) => write!(f, "{s}"),
            Value::List(items) => {
                write!(f, "[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    write!(f, "{item}")?;
                }
                write!(f, "]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_and_ints_never_share_a_canonical_form() {
        assert_ne!(Value::Int(1).canonical(), Value::Float(1.0).canonical());
        assert_eq!(Value::Float(0.001).to_string(), "0.001");
        assert_eq!(
            Value::Float(-0.0).canonical(),
            Value::Float(0.0).canonical()
        );
        assert_eq!(
            Value::Float(1e-3).canonical(),
            Value::Float(0.001).canonical()
        );
    }
}
