//! Reading an experiment file: TOML → validated step definitions (before grid expansion).
//!
//! Every check that can be made without running anything is made here, and each failure becomes a
//! [`Diagnostic`] pointing at the offending key or value.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::diagnostic::{nearest, Diagnostic, SourceSpan};
use crate::experiment::reference::{is_identifier, Reference};
use crate::experiment::toml_tree::{self, Entry, Node, NodeValue};
use crate::step::spec::{quoted_list, ParamSpec, ParamType, Role};
use crate::step::value::Value;
use crate::step::{Registry, Step};

/// Keys of a step table that are not parameters.
const STEP_KEYS: &[&str] = &["kind", "variant", "match", "resources"];
const EXPERIMENT_KEYS: &[&str] = &["name", "seed", "description", "defaults"];

/// A validated experiment file, before grid expansion.
pub struct Experiment {
    pub path: PathBuf,
    /// Relative paths in the file resolve against this folder.
    pub dir: PathBuf,
    pub text: String,
    pub name: String,
    pub seed: i64,
    pub description: Option<String>,
    pub steps: Vec<StepDef>,
    /// The step kinds the file was read against (handed in by the program).
    pub kinds: Registry,
}

pub struct StepDef {
    pub id: String,
    pub id_span: Range<usize>,
    pub kind: &'static dyn Step,
    /// At least one; a step without `[[variant]]` tables has exactly one.
    pub variants: Vec<Variant>,
    /// Coordinates on which fanned-out inputs must agree (explicit pairing).
    pub match_keys: Vec<(String, Range<usize>)>,
    /// What a cluster scheduler gives each instance (`[steps.<id>.resources]`; not keyed).
    pub resources: crate::experiment::resources::Resources,
}

/// The parameter settings of one variant (base table merged with one `[[variant]]`).
#[derive(Clone)]
pub struct Variant {
    pub settings: BTreeMap<String, Setting>,
    /// Parameters set in the `[[variant]]` table itself: they name the instance.
    pub variant_keys: BTreeSet<String>,
}

#[derive(Clone)]
pub struct Setting {
    pub value: SettingValue,
    pub span: Range<usize>,
}

#[derive(Clone)]
pub enum SettingValue {
    /// One value.
    Single(Value),
    /// A grid axis: one instance per value.
    Axis(Vec<Value>),
    /// References to upstream outputs (a list is a union).
    Refs(Vec<(Reference, Range<usize>)>),
}

impl Experiment {
    pub fn span(&self, range: Range<usize>) -> SourceSpan {
        SourceSpan::new(&self.path, &self.text, range)
    }

    pub fn error(&self, message: impl Into<String>, range: Range<usize>) -> Diagnostic {
        Diagnostic::new(message).at(Some(self.span(range)))
    }

    pub fn step(&self, id: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Resolves a path written in the experiment file.
    pub fn resolve(&self, written: &str) -> PathBuf {
        let p = Path::new(written);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}

/// Reads and validates an experiment file against the step kinds of `kinds`.
pub fn load(path: &Path, kinds: Registry) -> Result<Experiment, Diagnostic> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostic::new(format!(
            "cannot read experiment file {}: {e}",
            path.display()
        ))
        .help("check the path; experiment files are TOML, e.g. experiments/quickstart.toml")
    })?;
    parse(path, text, kinds)
}

/// Validates experiment text (`path` is used for messages and to resolve relative paths).
pub fn parse(path: &Path, text: String, kinds: Registry) -> Result<Experiment, Diagnostic> {
    let dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let dir = dir.canonicalize().unwrap_or(dir);
    let mut exp = Experiment {
        path: path.to_path_buf(),
        dir,
        text,
        name: String::new(),
        seed: 42,
        description: None,
        steps: Vec::new(),
        kinds,
    };
    let root = toml_tree::parse(&exp.text).map_err(|(msg, span)| {
        let d = Diagnostic::new(format!("TOML syntax error: {}", msg.trim()));
        match span {
            Some(r) => d.at(Some(exp.span(r))),
            None => d.in_file(path),
        }
        .help("fix the TOML syntax at the marked position")
    })?;
    let root_entries = root.entries().unwrap_or(&[]);
    for entry in root_entries {
        if entry.key != "experiment" && entry.key != "steps" {
            let mut d = exp.error(
                format!("unknown top-level table `{}`", entry.key),
                entry.key_span.clone(),
            );
            d = d.help(match nearest(&entry.key, ["experiment", "steps"]) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "an experiment file has an `[experiment]` table and `[steps.<id>]` tables"
                    .to_string(),
            });
            return Err(d);
        }
    }
    let defaults = read_header(&mut exp, root.get("experiment"))?;
    let steps_entry = root.get("steps").ok_or_else(|| {
        Diagnostic::new("the experiment has no steps")
            .in_file(path)
            .help("add a step, e.g.\n\n  [steps.data]\n  kind = \"synth\"\n")
    })?;
    let step_entries = expect_table(&exp, steps_entry)?;
    if step_entries.is_empty() {
        return Err(exp
            .error("the experiment has no steps", steps_entry.key_span.clone())
            .help("add `[steps.<id>]` tables with a `kind`"));
    }
    let mut steps = Vec::new();
    for entry in step_entries {
        steps.push(read_step(&exp, entry, &defaults)?);
    }
    exp.steps = steps;
    check_references(&exp)?;
    Ok(exp)
}

fn expect_table<'a>(exp: &Experiment, entry: &'a Entry) -> Result<&'a [Entry], Diagnostic> {
    entry.node.entries().ok_or_else(|| {
        exp.error(
            format!(
                "`{}` must be a table, but it is {}",
                entry.key,
                entry.node.type_name()
            ),
            entry.node.span.clone(),
        )
    })
}

type KindDefaults = BTreeMap<String, Vec<Entry>>;

fn read_header(exp: &mut Experiment, header: Option<&Entry>) -> Result<KindDefaults, Diagnostic> {
    let stem = exp
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "experiment".into());
    exp.name = stem;
    let Some(header) = header else {
        return Ok(KindDefaults::new());
    };
    let mut defaults = KindDefaults::new();
    for e in expect_table(exp, header)? {
        match e.key.as_str() {
            "name" => match &e.node.value {
                NodeValue::Str(s) if is_identifier(s) => exp.name = s.clone(),
                _ => return Err(exp
                    .error(
                        "`name` must be a string of letters, digits, `_` or `-`",
                        e.node.span.clone(),
                    )
                    .help(
                        "the name becomes the folder results/<name>/, e.g. name = \"quickstart\"",
                    )),
            },
            "seed" => match &e.node.value {
                NodeValue::Int(i) if *i >= 0 => exp.seed = *i,
                _ => {
                    return Err(exp
                        .error("`seed` must be a non-negative integer", e.node.span.clone())
                        .help("e.g. seed = 42"))
                }
            },
            "description" => match &e.node.value {
                NodeValue::Str(s) => exp.description = Some(s.clone()),
                _ => return Err(exp.error("`description` must be a string", e.node.span.clone())),
            },
            "defaults" => {
                for kind_entry in expect_table(exp, e)? {
                    if exp.kinds.find(&kind_entry.key).is_none() {
                        return Err(unknown_kind(
                            exp,
                            &kind_entry.key,
                            kind_entry.key_span.clone(),
                        ));
                    }
                    defaults.insert(
                        kind_entry.key.clone(),
                        expect_table(exp, kind_entry)?.to_vec(),
                    );
                }
            }
            other => {
                let mut d = exp.error(
                    format!("unknown key `{other}` in [experiment]"),
                    e.key_span.clone(),
                );
                d = d.help(match nearest(other, EXPERIMENT_KEYS.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("[experiment] takes {}", quoted_list(EXPERIMENT_KEYS)),
                });
                return Err(d);
            }
        }
    }
    Ok(defaults)
}

fn unknown_kind(exp: &Experiment, kind: &str, span: Range<usize>) -> Diagnostic {
    let known = exp.kinds.names();
    let mut d = exp.error(format!("unknown step kind `{kind}`"), span);
    if let Some(s) = nearest(kind, known.iter().copied()) {
        d = d.help(format!("did you mean `{s}`?"));
    }
    d.note(format!("known kinds: {}", quoted_list(&known)))
}

fn read_step(
    exp: &Experiment,
    entry: &Entry,
    defaults: &KindDefaults,
) -> Result<StepDef, Diagnostic> {
    if !is_identifier(&entry.key) {
        return Err(exp
            .error(
                format!(
                    "step id `{}` may only hold letters, digits, `_` and `-`",
                    entry.key
                ),
                entry.key_span.clone(),
            )
            .help("`.` and `[` are used by references such as \"data.train\" and \"sae[k=32]\""));
    }
    let fields = expect_table(exp, entry)?;
    let kind_entry = fields.iter().find(|e| e.key == "kind").ok_or_else(|| {
        exp.error(
            format!("step `{}` has no `kind`", entry.key),
            entry.key_span.clone(),
        )
        .help(format!(
            "add e.g. kind = \"synth\"; known kinds: {}",
            quoted_list(&exp.kinds.names())
        ))
    })?;
    let kind_name = match &kind_entry.node.value {
        NodeValue::Str(s) => s.clone(),
        _ => return Err(exp.error("`kind` must be a string", kind_entry.node.span.clone())),
    };
    let kind = exp
        .kinds
        .find(&kind_name)
        .ok_or_else(|| unknown_kind(exp, &kind_name, kind_entry.node.span.clone()))?;

    // Base settings: experiment-wide defaults for this kind, then the step's own table.
    let mut base = BTreeMap::new();
    if let Some(entries) = defaults.get(kind.kind()) {
        for e in entries {
            let (name, setting) = read_setting(exp, kind, &entry.key, e)?;
            base.insert(name, setting);
        }
    }
    let mut variant_nodes: Option<&Entry> = None;
    let mut match_keys = Vec::new();
    let mut resources = Default::default();
    for e in fields {
        match e.key.as_str() {
            "kind" => {}
            "resources" => resources = crate::experiment::resources::read(exp, &entry.key, e)?,
            "variant" => variant_nodes = Some(e),
            "match" => match_keys = read_match(exp, e)?,
            _ => {
                let (name, setting) = read_setting(exp, kind, &entry.key, e)?;
                base.insert(name, setting);
            }
        }
    }
    let mut variants = Vec::new();
    if let Some(vs) = variant_nodes {
        let NodeValue::Array(items) = &vs.node.value else {
            return Err(exp
                .error("`variant` must be an array of tables", vs.node.span.clone())
                .help(format!(
                    "write each variant as [[steps.{}.variant]]",
                    entry.key
                )));
        };
        if items.is_empty() {
            return Err(exp.error(
                "`variant` is empty: the step would have no instance",
                vs.node.span.clone(),
            ));
        }
        for item in items {
            let Some(var_entries) = item.entries() else {
                return Err(exp.error("each variant must be a table", item.span.clone()));
            };
            let mut settings = base.clone();
            let mut variant_keys = BTreeSet::new();
            for e in var_entries {
                if STEP_KEYS.contains(&e.key.as_str()) {
                    return Err(exp
                        .error(
                            format!("`{}` cannot be set inside a variant", e.key),
                            e.key_span.clone(),
                        )
                        .help("set it in the step's own table"));
                }
                let (name, setting) = read_setting(exp, kind, &entry.key, e)?;
                variant_keys.insert(name.clone());
                settings.insert(name, setting);
            }
            variants.push(Variant {
                settings,
                variant_keys,
            });
        }
    } else {
        variants.push(Variant {
            settings: base,
            variant_keys: BTreeSet::new(),
        });
    }
    for v in &variants {
        check_required(exp, kind, &entry.key, entry.key_span.clone(), v)?;
    }
    Ok(StepDef {
        id: entry.key.clone(),
        id_span: entry.key_span.clone(),
        kind,
        variants,
        match_keys,
        resources,
    })
}

fn read_match(exp: &Experiment, e: &Entry) -> Result<Vec<(String, Range<usize>)>, Diagnostic> {
    let bad = || {
        exp.error(
            "`match` must be a list of coordinate names",
            e.node.span.clone(),
        )
        .help("e.g. match = [\"arch\", \"expansion\"] pairs inputs that agree on those coordinates")
    };
    let NodeValue::Array(items) = &e.node.value else {
        return Err(bad());
    };
    items
        .iter()
        .map(|n| match &n.value {
            NodeValue::Str(s) => Ok((s.clone(), n.span.clone())),
            _ => Err(bad()),
        })
        .collect()
}

fn check_required(
    exp: &Experiment,
    kind: &dyn Step,
    step_id: &str,
    span: Range<usize>,
    variant: &Variant,
) -> Result<(), Diagnostic> {
    for p in kind.params() {
        if p.default == crate::step::spec::Default::Required
            && !variant.settings.contains_key(p.name)
        {
            return Err(exp
                .error(
                    format!(
                        "step `{step_id}` (kind `{}`) needs parameter `{}`",
                        kind.kind(),
                        p.name
                    ),
                    span,
                )
                .help(format!(
                    "add `{} = ...` ({}): {}",
                    p.name,
                    p.ty.describe(),
                    p.doc
                )));
        }
    }
    Ok(())
}

fn read_setting(
    exp: &Experiment,
    kind: &dyn Step,
    step_id: &str,
    e: &Entry,
) -> Result<(String, Setting), Diagnostic> {
    let spec = kind.param(&e.key).ok_or_else(|| {
        let names: Vec<&str> = kind.params().iter().map(|p| p.name).collect();
        let mut d = exp.error(
            format!(
                "unknown parameter `{}` for step `{step_id}` (kind `{}`)",
                e.key,
                kind.kind()
            ),
            e.key_span.clone(),
        );
        if let Some(s) = nearest(&e.key, names.iter().copied()) {
            d = d.help(format!("did you mean `{s}`?"));
        }
        d.note(format!("`{}` takes {}", kind.kind(), quoted_list(&names)))
    })?;
    let value = read_value(exp, spec, e)?;
    Ok((
        spec.name.to_string(),
        Setting {
            value,
            span: e.node.span.clone(),
        },
    ))
}

fn read_value(exp: &Experiment, spec: &ParamSpec, e: &Entry) -> Result<SettingValue, Diagnostic> {
    let node = &e.node;
    if spec.role == Role::Input {
        let mut refs = Vec::new();
        let items: Vec<&Node> = match &node.value {
            NodeValue::Array(items) if !items.is_empty() => items.iter().collect(),
            NodeValue::Array(_) => {
                return Err(exp.error(format!("`{}` lists no input", spec.name), node.span.clone()))
            }
            _ => vec![node],
        };
        for item in items {
            let NodeValue::Str(s) = &item.value else {
                return Err(exp
                    .error(
                        format!(
                            "`{}` must be a reference to another step's output, but it is {}",
                            spec.name,
                            item.type_name()
                        ),
                        item.span.clone(),
                    )
                    .help("write \"<step>\" or \"<step>.<output>\", e.g. \"data.train\""));
            };
            let r = Reference::parse(s).map_err(|why| {
                exp.error(
                    format!("`{s}` is not a valid reference: {why}"),
                    item.span.clone(),
                )
                .help("write \"<step>\", \"<step>.<output>\" or \"<step>[key=value].<output>\"")
            })?;
            refs.push((r, item.span.clone()));
        }
        return Ok(SettingValue::Refs(refs));
    }
    if let NodeValue::Array(items) = &node.value {
        if matches!(
            spec.ty,
            ParamType::IntList | ParamType::FloatList | ParamType::StrList
        ) {
            return Ok(SettingValue::Single(read_scalar(exp, spec, node)?));
        }
        if !spec.gridable {
            return Err(exp
                .error(
                    format!(
                        "`{}` takes a single value, not a list (it is not a grid axis)",
                        spec.name
                    ),
                    node.span.clone(),
                )
                .help(format!(
                    "write one value ({}); to compare several, use [[variant]] tables",
                    spec.ty.describe()
                )));
        }
        if items.is_empty() {
            return Err(exp
                .error(
                    format!(
                        "the grid axis `{}` is empty: the step would have no instance",
                        spec.name
                    ),
                    node.span.clone(),
                )
                .help("list at least one value"));
        }
        let mut values = Vec::new();
        for item in items {
            let v = read_scalar(exp, spec, item)?;
            if values.contains(&v) {
                return Err(exp.error(
                    format!("`{}` lists the value {v} twice", spec.name),
                    item.span.clone(),
                ));
            }
            values.push(v);
        }
        return Ok(SettingValue::Axis(values));
    }
    Ok(SettingValue::Single(read_scalar(exp, spec, node)?))
}

fn read_scalar(exp: &Experiment, spec: &ParamSpec, node: &Node) -> Result<Value, Diagnostic> {
    let wrong = || {
        exp.error(
            format!(
                "`{}` must be {}, but it is {}",
                spec.name,
                spec.ty.describe(),
                node.type_name()
            ),
            node.span.clone(),
        )
        .help(spec.doc.to_string())
    };
    let value = match (&spec.ty, &node.value) {
        (ParamType::Bool, NodeValue::Bool(b)) => Value::Bool(*b),
        (ParamType::Int, NodeValue::Int(i)) => Value::Int(*i),
        (ParamType::Float, NodeValue::Int(i)) => Value::Float(*i as f64),
        (ParamType::Float, NodeValue::Float(f)) => {
            if !f.is_finite() {
                return Err(exp.error(
                    format!("`{}` must be a finite number", spec.name),
                    node.span.clone(),
                ));
            }
            Value::Float(*f)
        }
        (ParamType::Str, NodeValue::Str(s)) => Value::Str(s.clone()),
        (ParamType::Choice(options), NodeValue::Str(s)) => {
            if !options.contains(&s.as_str()) {
                let mut d = exp.error(
                    format!("`{s}` is not a valid value for `{}`", spec.name),
                    node.span.clone(),
                );
                if let Some(n) = nearest(s, options.iter().copied()) {
                    d = d.help(format!("did you mean `{n}`?"));
                }
                return Err(d.note(format!("`{}` is {}", spec.name, spec.ty.describe())));
            }
            Value::Str(s.clone())
        }
        (ParamType::StrList, NodeValue::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                match &item.value {
                    NodeValue::Str(s) => out.push(Value::Str(s.clone())),
                    _ => return Err(wrong()),
                }
            }
            if out.is_empty() {
                return Err(exp.error(
                    format!("`{}` is an empty list", spec.name),
                    node.span.clone(),
                ));
            }
            return Ok(Value::List(out));
        }
        (ParamType::IntList, NodeValue::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                match item.value {
                    NodeValue::Int(i) => {
                        check_range(exp, spec, i as f64, item)?;
                        out.push(Value::Int(i));
                    }
                    _ => return Err(wrong()),
                }
            }
            if out.is_empty() {
                return Err(exp.error(
                    format!("`{}` is an empty list", spec.name),
                    node.span.clone(),
                ));
            }
            return Ok(Value::List(out));
        }
        (ParamType::FloatList, NodeValue::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                let x = match item.value {
                    NodeValue::Int(i) => i as f64,
                    NodeValue::Float(f) if f.is_finite() => f,
                    NodeValue::Float(_) => {
                        return Err(exp.error(
                            format!("`{}` must hold finite numbers", spec.name),
                            item.span.clone(),
                        ))
                    }
                    _ => return Err(wrong()),
                };
                check_range(exp, spec, x, item)?;
                out.push(Value::Float(x));
            }
            if out.is_empty() {
                return Err(exp.error(
                    format!("`{}` is an empty list", spec.name),
                    node.span.clone(),
                ));
            }
            return Ok(Value::List(out));
        }
        _ => return Err(wrong()),
    };
    if let Some(x) = value.as_float() {
        check_range(exp, spec, x, node)?;
    }
    Ok(value)
}

fn check_range(exp: &Experiment, spec: &ParamSpec, x: f64, node: &Node) -> Result<(), Diagnostic> {
    let below = spec.min.is_some_and(|m| x < m);
    let above = spec.max.is_some_and(|m| x > m);
    if below || above {
        let range = match (spec.min, spec.max) {
            (Some(a), Some(b)) => format!("between {a} and {b}"),
            (Some(a), None) => format!("at least {a}"),
            (None, Some(b)) => format!("at most {b}"),
            (None, None) => unreachable!(),
        };
        return Err(exp
            .error(
                format!("`{}` = {x} is out of range: it must be {range}", spec.name),
                node.span.clone(),
            )
            .help(spec.doc.to_string()));
    }
    Ok(())
}

/// Dangling step ids and unknown output names, reported at the reference that names them.
fn check_references(exp: &Experiment) -> Result<(), Diagnostic> {
    let ids: Vec<&str> = exp.steps.iter().map(|s| s.id.as_str()).collect();
    for step in &exp.steps {
        for variant in &step.variants {
            for setting in variant.settings.values() {
                let SettingValue::Refs(refs) = &setting.value else {
                    continue;
                };
                for (r, span) in refs {
                    let Some(target) = exp.step(&r.step) else {
                        let mut d = exp.error(
                            format!(
                                "step `{}` refers to `{}`, which is not a step of this experiment",
                                step.id, r.step
                            ),
                            span.clone(),
                        );
                        d = d.help(match nearest(&r.step, ids.iter().copied()) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => format!("the steps are {}", quoted_list(&ids)),
                        });
                        return Err(d);
                    };
                    if let Some(o) = &r.output {
                        let outputs: Vec<&str> =
                            target.kind.outputs().iter().map(|o| o.name).collect();
                        if !outputs.contains(&o.as_str()) {
                            let mut d = exp.error(
                                format!(
                                    "step `{}` (kind `{}`) has no output `{o}`",
                                    r.step,
                                    target.kind.kind()
                                ),
                                span.clone(),
                            );
                            if let Some(s) = nearest(o, outputs.iter().copied()) {
                                d = d.help(format!("did you mean `{s}`?"));
                            }
                            return Err(
                                d.note(format!("its outputs are {}", quoted_list(&outputs)))
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
