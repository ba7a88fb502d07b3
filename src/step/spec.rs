//! What a step kind declares about itself: its parameters and its outputs.
//!
//! The experiment loader validates TOML against these declarations, so a step kind never sees a
//! misspelled key, a wrong type or an out-of-range value.

use crate::step::value::Value;

/// The type a parameter's value must have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamType {
    Bool,
    Int,
    Float,
    Str,
    /// A string from a fixed set.
    Choice(&'static [&'static str]),
    /// A list of integers (never a grid axis: the whole list is one value).
    IntList,
    /// A list of finite numbers (never a grid axis: the whole list is one value); integers are
    /// read as numbers.
    FloatList,
    /// A list of strings (never a grid axis: the whole list is one value).
    StrList,
}

impl ParamType {
    pub fn describe(&self) -> String {
        match self {
            ParamType::Bool => "a boolean".into(),
            ParamType::Int => "an integer".into(),
            ParamType::Float => "a number".into(),
            ParamType::Str => "a string".into(),
            ParamType::Choice(options) => format!("one of {}", quoted_list(options)),
            ParamType::IntList => "a list of integers".into(),
            ParamType::FloatList => "a list of numbers".into(),
            ParamType::StrList => "a list of strings".into(),
        }
    }
}

/// How the runner treats a parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Role {
    /// Part of the step's key: changing it re-runs the step.
    Keyed,
    /// A reference to another step's output (`"step.output"`); its content hash enters the key.
    Input,
    /// A path to a file outside the store; the path as written and the file's content hash enter
    /// the key. Relative paths resolve against the experiment file's folder.
    File,
    /// Changes how the step runs but never what it produces (block sizes, checkpoint intervals):
    /// recorded, not keyed.
    Exec,
    /// Names external files the step reads (a model folder, a dataset): not keyed itself — the
    /// step resolves it to files whose content enters the key (see `Step::resources`), so the same
    /// files under another name or path keep their cached results.
    Locator,
}

/// A parameter's value when the experiment does not set it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default {
    /// The experiment must set it.
    Required,
    /// Absent unless set (optional inputs and files).
    Absent,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'static str),
    IntList(&'static [i64]),
    FloatList(&'static [f64]),
    /// The `[experiment] seed`.
    ExperimentSeed,
}

#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub role: Role,
    pub default: Default,
    /// A list written for this parameter is a grid axis.
    pub gridable: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub doc: &'static str,
}

impl ParamSpec {
    /// A keyed, non-grid parameter; fill in the rest with struct-update syntax.
    pub const BASE: ParamSpec = ParamSpec {
        name: "",
        ty: ParamType::Int,
        role: Role::Keyed,
        default: Default::Required,
        gridable: false,
        min: None,
        max: None,
        doc: "",
    };

    pub fn default_value(&self, experiment_seed: i64) -> Option<Value> {
        match self.default {
            Default::Required | Default::Absent => None,
            Default::Bool(b) => Some(Value::Bool(b)),
            Default::Int(i) => Some(Value::Int(i)),
            Default::Float(f) => Some(Value::Float(f)),
            Default::Str(s) => Some(Value::Str(s.to_string())),
            Default::IntList(l) => Some(Value::List(l.iter().map(|i| Value::Int(*i)).collect())),
            Default::FloatList(l) => {
                Some(Value::List(l.iter().map(|f| Value::Float(*f)).collect()))
            }
            Default::ExperimentSeed => Some(Value::Int(experiment_seed)),
        }
    }
}

/// One named result of a step: a file in the store.
#[derive(Debug, Clone, Copy)]
pub struct OutputSpec {
    pub name: &'static str,
    /// Optional outputs exist only for some parameter values (e.g. an imported label list).
    pub optional: bool,
    pub doc: &'static str,
}

pub fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
