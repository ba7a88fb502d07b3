//! A Hugging Face model card (`README.md`): a YAML metadata header between `---` lines, then
//! Markdown. The header is written in a small subset of YAML that both YAML 1.1 readers (PyYAML,
//! which the hub's Python client uses) and YAML 1.2 readers take the same way: block maps and
//! lists, keys plain where they are simple words and double-quoted otherwise, every string value
//! double-quoted (in JSON's escapes, which YAML shares), numbers with a decimal point and a signed
//! exponent, `true`, `false` and `null`.

use serde_json::Value as Json;

/// The card's parts, in the order they are written.
pub struct Card {
    /// The hub's `library_name` (which library loads the files).
    pub library_name: String,
    pub tags: Vec<String>,
    /// Hugging Face dataset ids the model was trained on, when known.
    pub datasets: Vec<String>,
    /// The Hugging Face model whose outputs the SAE reads, when known.
    pub base_model: Option<String>,
    /// Further header fields, in order (objects become nested maps).
    pub fields: Vec<(String, Json)>,
    /// The Markdown after the header.
    pub body: String,
}

impl Card {
    /// The whole `README.md`.
    pub fn render(&self) -> String {
        let mut head = String::new();
        field(
            &mut head,
            0,
            "library_name",
            &Json::from(self.library_name.clone()),
        );
        field(&mut head, 0, "tags", &Json::from(self.tags.clone()));
        if !self.datasets.is_empty() {
            field(&mut head, 0, "datasets", &Json::from(self.datasets.clone()));
        }
        if let Some(m) = &self.base_model {
            field(&mut head, 0, "base_model", &Json::from(m.clone()));
        }
        for (k, v) in &self.fields {
            field(&mut head, 0, k, v);
        }
        format!("---\n{head}---\n\n{}", self.body)
    }
}

/// One `key: value` entry at `indent` spaces, nested values on the following lines.
fn field(out: &mut String, indent: usize, key: &str, value: &Json) {
    let pad = " ".repeat(indent);
    match value {
        Json::Object(m) if !m.is_empty() => {
            out.push_str(&format!("{pad}{}:\n", yaml_key(key)));
            for (k, v) in m {
                field(out, indent + 2, k, v);
            }
        }
        Json::Array(items) if !items.is_empty() => {
            out.push_str(&format!("{pad}{}:\n", yaml_key(key)));
            list(out, indent + 2, items);
        }
        _ => out.push_str(&format!("{pad}{}: {}\n", yaml_key(key), scalar(value))),
    }
}

/// Block list items at `indent` spaces; a map item starts on the dash's line.
fn list(out: &mut String, indent: usize, items: &[Json]) {
    let pad = " ".repeat(indent);
    for item in items {
        match item {
            Json::Object(m) if !m.is_empty() => {
                let mut inner = String::new();
                for (k, v) in m {
                    field(&mut inner, indent + 2, k, v);
                }
                // The first entry moves onto the dash's line.
                out.push_str(&format!("{pad}- {}", &inner[indent + 2..]));
            }
            Json::Array(inner) if !inner.is_empty() => {
                out.push_str(&format!("{pad}-\n"));
                list(out, indent + 2, inner);
            }
            _ => out.push_str(&format!("{pad}- {}\n", scalar(item))),
        }
    }
}

/// A key: plain when it is a simple word no YAML reader takes for a boolean or null, else quoted.
fn yaml_key(key: &str) -> String {
    let simple = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let special = matches!(
        key.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
    );
    if simple && !special {
        key.to_string()
    } else {
        Json::from(key).to_string()
    }
}

/// A scalar (or an empty map or list) in flow form.
fn scalar(v: &Json) -> String {
    match v {
        Json::Number(n) if n.is_f64() => float(n.as_f64().unwrap_or(f64::NAN)),
        Json::Object(_) => "{}".into(),
        Json::Array(_) => "[]".into(),
        // JSON strings are YAML double-quoted strings; integers, booleans and null read the same.
        other => other.to_string(),
    }
}

/// A float as YAML 1.1 and 1.2 both read it: a decimal point in the mantissa and a sign in the
/// exponent (`1e-5` is a string to YAML 1.1).
fn float(x: f64) -> String {
    if x.is_nan() {
        return ".nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    let text = Json::from(x).to_string();
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m.to_string(), Some(e.to_string())),
        None => (text, None),
    };
    let mantissa = if mantissa.contains('.') {
        mantissa
    } else {
        format!("{mantissa}.0")
    };
    match exponent {
        Some(e) if e.starts_with(['-', '+']) => format!("{mantissa}e{e}"),
        Some(e) => format!("{mantissa}e+{e}"),
        None => mantissa,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_keep_a_point_and_a_signed_exponent() {
        assert_eq!(float(0.5), "0.5");
        assert_eq!(float(2.0), "2.0");
        assert_eq!(float(1e-7), "1.0e-7");
        assert_eq!(float(3.5e300), "3.5e+300");
        assert_eq!(float(f64::NAN), ".nan");
        assert_eq!(float(f64::NEG_INFINITY), "-.inf");
    }

    #[test]
    fn the_header_is_block_yaml_with_quoted_keys_and_strings() {
        let card = Card {
            library_name: "saelens".into(),
            tags: vec!["sparse-autoencoder".into(), "msae".into()],
            datasets: vec![],
            base_model: Some("org/model".into()),
            fields: vec![(
                "msae".into(),
                json!({"key": "abc", "k": 8, "metrics": [{"instance": "s[a=b]", "values": {"fvu@16": 0.25}}], "empty": [], "levels": [4, 8], "on": true}),
            )],
            body: "# Title\n".into(),
        };
        let want = r#"---
library_name: "saelens"
tags:
  - "sparse-autoencoder"
  - "msae"
base_model: "org/model"
msae:
  empty: []
  k: 8
  key: "abc"
  levels:
    - 4
    - 8
  metrics:
    - instance: "s[a=b]"
      values:
        "fvu@16": 0.25
  "on": true
---

# Title
"#;
        assert_eq!(card.render(), want);
    }
}
