//! `[steps.<id>.resources]`: what a cluster scheduler should give each instance of a step
//! (partition, GPUs, CPUs, memory, time limit, account, QOS, extra `sbatch` flags). Never part of
//! any key: the same work on another partition is the same result.

use std::collections::BTreeMap;

use crate::diagnostic::{nearest, Diagnostic};
use crate::experiment::load::Experiment;
use crate::experiment::toml_tree::{Entry, NodeValue};
use crate::step::spec::quoted_list;

/// Keys of a resources table, each with the `sbatch` option it becomes.
pub const KEYS: &[(&str, &str)] = &[
    ("partition", "--partition"),
    ("gres", "--gres"),
    ("gpus", "--gpus"),
    ("cpus", "--cpus-per-task"),
    ("mem", "--mem"),
    ("time", "--time"),
    ("account", "--account"),
    ("qos", "--qos"),
];

/// Scheduler settings of one step (or the command-line defaults). Values are kept as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub settings: BTreeMap<String, String>,
    /// Extra `sbatch` flags, passed as written (e.g. `--constraint=a100`).
    pub extra: Vec<String>,
}

impl Resources {
    /// `self` with `defaults` filling what it does not set.
    pub fn over(&self, defaults: &Resources) -> Resources {
        let mut settings = defaults.settings.clone();
        settings.extend(self.settings.clone());
        let mut extra = defaults.extra.clone();
        extra.extend(self.extra.clone());
        Resources { settings, extra }
    }

    /// The `sbatch` options these settings become.
    pub fn sbatch_args(&self) -> Vec<String> {
        let mut out: Vec<String> = KEYS
            .iter()
            .filter_map(|(k, flag)| self.settings.get(*k).map(|v| format!("{flag}={v}")))
            .collect();
        out.extend(self.extra.iter().cloned());
        out
    }

    /// CPUs per instance, if set.
    pub fn cpus(&self) -> Option<usize> {
        self.settings.get("cpus").and_then(|c| c.parse().ok())
    }

    /// Whether the instance asks for GPUs.
    pub fn has_gpus(&self) -> bool {
        self.settings.contains_key("gpus")
            || self
                .settings
                .get("gres")
                .is_some_and(|g| g.starts_with("gpu"))
            || self.extra.iter().any(|e| e.contains("gpu"))
    }

    /// Parses `KEY=VALUE` command-line defaults (`extra=FLAG` adds a raw flag).
    pub fn from_assignments(items: &[String]) -> anyhow::Result<Resources> {
        let mut r = Resources::default();
        for item in items {
            let Some((k, v)) = item.split_once('=') else {
                anyhow::bail!(
                    "`--resource {item}`: write KEY=VALUE, e.g. --resource partition=gpu"
                );
            };
            let k = k.trim();
            if k == "extra" {
                r.extra.push(v.to_string());
            } else if KEYS.iter().any(|(name, _)| *name == k) {
                r.settings.insert(k.to_string(), v.to_string());
            } else {
                anyhow::bail!(
                    "`--resource {item}`: unknown resource `{k}`; known: {}, extra",
                    KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                );
            }
        }
        Ok(r)
    }
}

/// Reads the `resources` table of step `step`.
pub fn read(exp: &Experiment, step: &str, e: &Entry) -> Result<Resources, Diagnostic> {
    let NodeValue::Table(entries) = &e.node.value else {
        return Err(exp
            .error("`resources` must be a table", e.node.span.clone())
            .help(format!(
                "write [steps.{step}.resources] with e.g. partition = \"gpu\", gpus = 1, time = \"4:00:00\""
            )));
    };
    let mut r = Resources::default();
    let names: Vec<&str> = KEYS.iter().map(|(k, _)| *k).chain(["extra"]).collect();
    for item in entries {
        let key = item.key.as_str();
        if key == "extra" {
            let NodeValue::Array(flags) = &item.node.value else {
                return Err(exp
                    .error(
                        "`extra` must be a list of sbatch flags",
                        item.node.span.clone(),
                    )
                    .help("e.g. extra = [\"--constraint=a100\", \"--signal=B:USR1@120\"]"));
            };
            for f in flags {
                match &f.value {
                    NodeValue::Str(s) => r.extra.push(s.clone()),
                    _ => {
                        return Err(exp.error("each `extra` flag must be a string", f.span.clone()))
                    }
                }
            }
            continue;
        }
        if !names.contains(&key) {
            let hint = match nearest(key, names.iter().copied()) {
                Some(n) => format!("did you mean `{n}`?"),
                None => format!("known resources: {}", quoted_list(&names)),
            };
            return Err(exp
                .error(format!("unknown resource `{key}`"), item.key_span.clone())
                .help(hint));
        }
        let value = match &item.node.value {
            NodeValue::Str(s) => s.clone(),
            NodeValue::Int(i) if *i > 0 => i.to_string(),
            _ => {
                return Err(exp.error(
                    format!("`{key}` must be a string or a positive integer"),
                    item.node.span.clone(),
                ))
            }
        };
        if value.trim().is_empty() || value.contains(char::is_whitespace) {
            return Err(exp.error(
                format!("`{key}` must be one word without spaces"),
                item.node.span.clone(),
            ));
        }
        r.settings.insert(key.to_string(), value);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const BASE: &str =
        "[steps.data]\nkind = \"synth\"\ndim = 8\nn_features = 16\ntrain = 100\ntest = 10\n";

    #[test]
    fn a_resources_table_is_read_and_never_a_parameter() {
        let text = format!("{BASE}\n[steps.data.resources]\npartition = \"gpu\"\ngpus = 2\ntime = \"1:00:00\"\nextra = [\"--constraint=a100\"]\n");
        let exp = crate::experiment::load::parse(
            Path::new("e.toml"),
            text,
            crate::step::fake::registry(),
        )
        .unwrap();
        let r = &exp.step("data").unwrap().resources;
        assert_eq!(r.settings["partition"], "gpu");
        assert_eq!(r.settings["gpus"], "2");
        assert_eq!(r.extra, ["--constraint=a100"]);
        // Not part of the instance's parameters (so not of its key).
        let plan = crate::experiment::expand(&exp).unwrap();
        assert!(!plan.instances[0].params.contains_key("partition"));
    }

    #[test]
    fn mistakes_in_a_resources_table_are_explained() {
        for (table, expect) in [
            ("partiton = \"gpu\"", "did you mean `partition`"),
            ("cpus = -2", "must be a string or a positive integer"),
            ("time = \"1 h\"", "one word without spaces"),
            ("extra = \"--x\"", "list of sbatch flags"),
        ] {
            let text = format!("{BASE}\n[steps.data.resources]\n{table}\n");
            let err = crate::experiment::load::parse(
                Path::new("e.toml"),
                text,
                crate::step::fake::registry(),
            )
            .err()
            .unwrap_or_else(|| panic!("{table} must be refused"));
            let shown = format!("{err}");
            assert!(shown.contains(expect), "{table}: {shown}");
        }
    }
}
