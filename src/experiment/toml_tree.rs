//! A TOML document as a plain tree that remembers where every key and value was written.
//!
//! `toml_edit` keeps byte spans while parsing; we copy them into our own small tree so the rest of
//! the validation code can point at the exact key or value that is wrong.

use std::ops::Range;

use toml_edit::{Document, Item, Table, Value as TomlValue};

/// A parsed TOML value with the byte range it occupies in the source text.
#[derive(Debug, Clone)]
pub struct Node {
    pub span: Range<usize>,
    pub value: NodeValue,
}

#[derive(Debug, Clone)]
pub enum NodeValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Date-times have no use in an experiment file; kept only to report them as wrong.
    DateTime(String),
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

/// One `key = value` of a table, with the span of the key itself.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub key_span: Range<usize>,
    pub node: Node,
}

impl Node {
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Int(_) => "an integer",
            NodeValue::Float(_) => "a float",
            NodeValue::Str(_) => "a string",
            NodeValue::DateTime(_) => "a date-time",
            NodeValue::Array(_) => "an array",
            NodeValue::Table(_) => "a table",
        }
    }

    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            NodeValue::Table(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries()?.iter().find(|e| e.key == key)
    }
}

/// Parses TOML text; the error carries the byte range of the syntax problem.
pub fn parse(text: &str) -> Result<Node, (String, Option<Range<usize>>)> {
    let doc = Document::parse(text).map_err(|e| (e.message().to_string(), e.span()))?;
    Ok(table_node(doc.as_table(), 0..text.len()))
}

fn table_node(table: &Table, fallback: Range<usize>) -> Node {
    let span = table.span().unwrap_or(fallback.clone());
    let mut entries = Vec::new();
    for (key, item) in table.iter() {
        let key_span = table
            .key(key)
            .and_then(|k| k.span())
            .unwrap_or(span.clone());
        if let Some(node) = item_node(item, key_span.clone()) {
            entries.push(Entry {
                key: key.to_string(),
                key_span,
                node,
            });
        }
    }
    Node {
        span,
        value: NodeValue::Table(entries),
    }
}

fn item_node(item: &Item, fallback: Range<usize>) -> Option<Node> {
    match item {
        Item::None => None,
        Item::Value(v) => Some(value_node(v, fallback)),
        Item::Table(t) => Some(table_node(t, fallback)),
        Item::ArrayOfTables(tables) => {
            let span = tables.span().unwrap_or(fallback.clone());
            let items = tables
                .iter()
                .map(|t| table_node(t, fallback.clone()))
                .collect();
            Some(Node {
                span,
                value: NodeValue::Array(items),
            })
        }
    }
}

fn value_node(value: &TomlValue, fallback: Range<usize>) -> Node {
    let span = value.span().unwrap_or(fallback.clone());
    let v = match value {
        TomlValue::String(s) => NodeValue::Str(s.value().clone()),
        TomlValue::Integer(i) => NodeValue::Int(*i.value()),
        TomlValue::Float(f) => NodeValue::Float(*f.value()),
        TomlValue::Boolean(b) => NodeValue::Bool(*b.value()),
        TomlValue::Datetime(d) => NodeValue::DateTime(d.value().to_string()),
        TomlValue::Array(a) => {
            NodeValue::Array(a.iter().map(|v| value_node(v, span.clone())).collect())
        }
        TomlValue::InlineTable(t) => {
            let mut entries = Vec::new();
            for (key, v) in t.iter() {
                let key_span = t.key(key).and_then(|k| k.span()).unwrap_or(span.clone());
                entries.push(Entry {
                    key: key.to_string(),
                    key_span,
                    node: value_node(v, span.clone()),
                });
            }
            NodeValue::Table(entries)
        }
    };
    Node { span, value: v }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_spans_of_keys_and_values() {
        let text = "[steps.a]\nkind = \"synth\"\ndim = [1, 2]\n";
        let root = parse(text).unwrap();
        let steps = &root.get("steps").unwrap().node;
        let a = &steps.get("a").unwrap().node;
        let kind = a.get("kind").unwrap();
        assert_eq!(&text[kind.key_span.clone()], "kind");
        assert_eq!(&text[kind.node.span.clone()], "\"synth\"");
        let dim = a.get("dim").unwrap();
        assert!(matches!(dim.node.value, NodeValue::Array(ref v) if v.len() == 2));
    }

    #[test]
    fn syntax_error_has_a_span() {
        let err = parse("[steps.a\nkind = 1").unwrap_err();
        assert!(err.1.is_some());
    }
}
