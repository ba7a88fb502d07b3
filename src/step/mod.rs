//! The step contract: what the engine (loader, runner, report) knows of a step kind — its
//! parameters and outputs ([`spec`]), their values ([`value`]), what it is handed to run
//! ([`StepContext`]), the progress handle it draws into ([`progress`]) — and the [`Registry`]
//! through which the engine finds kinds without naming any.
//!
//! A step never sees the store: inputs arrive as paths of immutable files, outputs are written
//! into a scratch folder the runner hands over and then moves into the store.

pub mod context;
#[cfg(test)]
pub(crate) mod fake;
pub mod progress;
pub mod registry;
pub mod spec;
pub mod value;

pub use context::{InputArtifact, Metrics, Resource, StepContext, StopRequest};
pub use registry::Registry;
pub use spec::{OutputSpec, ParamSpec};

/// A kind of step, e.g. `synth` or `train`.
pub trait Step: Sync {
    /// The name used as `kind = "..."` in experiment files.
    fn kind(&self) -> &'static str;
    /// Bumped whenever the step's results would change for the same inputs; part of every key.
    fn version(&self) -> u32;
    /// One line for `msae kinds` and error messages.
    fn about(&self) -> &'static str;
    /// Longer notes that `msae kinds` prints after the parameters and outputs (formulas,
    /// conventions), lines of at most 100 characters; empty for most kinds.
    fn details(&self) -> &'static str {
        ""
    }
    fn params(&self) -> &'static [ParamSpec];
    /// The first output is the default one (what `"<step>"` without `.output` refers to).
    fn outputs(&self) -> &'static [OutputSpec];
    /// A parameter by name.
    fn param(&self, name: &str) -> Option<&'static ParamSpec> {
        self.params().iter().find(|p| p.name == name)
    }
    /// Computes the outputs into `ctx.output_path(..)` and returns the metrics for the tables.
    fn run(&self, ctx: &mut StepContext) -> anyhow::Result<Metrics>;

    /// Instances whose keys here are equal (and not None) may run together as one group
    /// ([`Step::run_group`]), e.g. trainings that read the same batches; None runs alone.
    fn fusion_key(
        &self,
        _params: &std::collections::BTreeMap<String, crate::step::value::Value>,
        _inputs: &std::collections::BTreeMap<String, InputArtifact>,
    ) -> Option<String> {
        None
    }

    /// Runs instances with one fusion key together: one result per context, in their order,
    /// each equal to what [`Step::run`] gives that instance alone.
    fn run_group(&self, ctxs: &mut [StepContext]) -> Vec<anyhow::Result<Metrics>> {
        ctxs.iter_mut().map(|c| self.run(c)).collect()
    }

    /// What one instance needs to run; the runner schedules by it (see [`Needs`]).
    fn needs(&self) -> Needs {
        Needs::CPU
    }

    /// External files this instance reads beyond its `File` parameters — a model's folder, a
    /// dataset's shards — resolved before the key is computed (relative paths against `base`,
    /// the experiment file's folder). Each group's combined content hash enters the key, and the
    /// step finds the same files in [`StepContext::resources`] when it runs.
    fn resources(
        &self,
        _params: &std::collections::BTreeMap<String, crate::step::value::Value>,
        _base: &std::path::Path,
    ) -> anyhow::Result<Vec<Resource>> {
        Ok(Vec::new())
    }
}

/// What a step kind needs from the machine, declared once per kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Needs {
    /// Puts tensors on the chosen device: with GPUs, each running instance gets one of its own.
    /// Steps without it always run on the CPU and never wait for a GPU.
    pub device: bool,
    /// Uses many CPU threads: it gets its share of `--threads` (else one thread).
    pub threads: bool,
}

impl Needs {
    /// CPU work spread over threads (the default).
    pub const CPU: Needs = Needs {
        device: false,
        threads: true,
    };
    /// Tensor work on the run's device.
    pub const DEVICE: Needs = Needs {
        device: true,
        threads: true,
    };
    /// Light bookkeeping: one thread.
    pub const LIGHT: Needs = Needs {
        device: false,
        threads: false,
    };
}
