//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::report::table::Format;

#[derive(Parser)]
#[command(
    name = "msae",
    version,
    about = "Reproducible sparse-autoencoder experiments on CLIP embeddings, driven by one TOML file"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
pub struct Global {
    /// The store folder (sled index + content-addressed objects).
    #[arg(long, global = true, env = "MSAE_CACHE", default_value = "cache")]
    pub cache: PathBuf,
    /// If another msae process holds the store, wait for it instead of failing.
    #[arg(long, global = true)]
    pub wait: bool,
    /// A read-only upstream store (e.g. a team's shared results) that serves results this store
    /// lacks, verified by content hash on the way in; repeatable, asked in order. In the
    /// environment, several folders are separated by `:`.
    #[arg(
        long = "cache-from",
        value_name = "DIR",
        global = true,
        env = "MSAE_CACHE_FROM",
        value_delimiter = ':'
    )]
    pub cache_from: Vec<PathBuf>,
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress bars and no per-instance lines.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run every instance that is not cached, then write the result tables and the report page.
    Run(RunArgs),
    /// Dry run: say for each instance whether it is cached, new or changed, and why.
    Plan {
        experiment: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Explain exactly what changed for one instance since its cached run.
    Why {
        experiment: PathBuf,
        instance: String,
        /// Machine-readable output (typed reasons with old and new values).
        #[arg(long)]
        json: bool,
    },
    /// The state of each instance, including the last error of failed ones; while a run holds
    /// the store, what it is doing now (running instances with their progress).
    Status {
        experiment: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Draw the instance DAG.
    Graph {
        experiment: PathBuf,
        #[arg(long, value_enum, default_value = "mermaid")]
        format: GraphFormat,
    },
    /// Print the result tables (one per step kind) of the cached instances.
    Table {
        experiment: PathBuf,
        #[arg(long, value_enum, default_value = "markdown")]
        format: Format,
        /// Only the table of this step kind.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Remove records, objects and checkpoints that none of the given experiments reaches.
    Gc {
        #[arg(required = true)]
        experiments: Vec<PathBuf>,
        /// Report what would be removed without removing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write the report page (figures, tables, instances) of the cached results to
    /// <results>/<experiment>/index.html.
    Report {
        experiment: PathBuf,
        /// Folder for the results; the page goes to <results>/<experiment name>/.
        #[arg(long, default_value = "results")]
        results: PathBuf,
    },
    /// Inspect the store.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// List the step kinds with their parameters, outputs and notes (losses of `train`).
    Kinds {
        /// Only this kind, e.g. `train`.
        kind: Option<String>,
    },
    /// Cancel the scheduler jobs of an experiment's run on this store (`--executor slurm`).
    Cancel { experiment: PathBuf },
    /// Run one instance from a job specification (what a scheduler job executes).
    #[command(hide = true)]
    Exec { spec: PathBuf },
    /// Copy an output of a finished instance out of the store, or write a model in the SAELens
    /// layout (`cfg.json` + `sae_weights.safetensors`).
    Export(ExportArgs),
    /// Write an SAE as a folder ready to upload to a Hugging Face model repository: the SAELens
    /// layout and a model card (README.md) with the training parameters, the training data and
    /// the experiment's evaluations.
    Publish(PublishArgs),
}

#[derive(Args)]
pub struct PublishArgs {
    pub experiment: PathBuf,
    /// The SAE instance (of a `train` or `import_sae` step), as `msae plan` names it.
    pub instance: String,
    /// Destination folder (created if needed).
    #[arg(long)]
    pub to: PathBuf,
    /// A Matryoshka model: the nesting level to write (0, the first, is the one msae scores).
    #[arg(long)]
    pub level: Option<usize>,
    /// SAELens metadata: the model the SAE's inputs come from (default: the embedding model of
    /// the training data, when the experiment names one).
    #[arg(long)]
    pub model_name: Option<String>,
    /// SAELens metadata: the hook (layer) the SAE's inputs come from.
    #[arg(long)]
    pub hook_name: Option<String>,
}

#[derive(Args)]
pub struct ExportArgs {
    pub experiment: PathBuf,
    /// The instance, as `msae plan` names it (e.g. `sae[arch=topk]`).
    pub instance: String,
    /// Destination folder (created if needed).
    #[arg(long)]
    pub to: PathBuf,
    /// Which output of the instance (default: its step's first output).
    #[arg(long)]
    pub output: Option<String>,
    /// `raw` copies the stored file; `saelens` converts an SAE model.
    #[arg(long, value_enum, default_value = "raw")]
    pub format: ExportFormat,
    /// SAELens metadata: the model the SAE's inputs come from.
    #[arg(long)]
    pub model_name: Option<String>,
    /// SAELens metadata: the hook (layer) the SAE's inputs come from.
    #[arg(long)]
    pub hook_name: Option<String>,
    /// A Matryoshka model: the nesting level to write (0, the first, is the one msae scores).
    #[arg(long)]
    pub level: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum ExportFormat {
    Raw,
    Saelens,
}

#[derive(Args)]
pub struct RunArgs {
    pub experiment: PathBuf,
    /// After a failure, go on with the instances that do not depend on it.
    #[arg(long)]
    pub keep_going: bool,
    /// Re-hash every cached output before using it (slow for big stores).
    #[arg(long)]
    pub verify: bool,
    /// Print a JSON summary (one entry per instance) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Where tensors live: cpu, cuda, cuda:N or auto (recorded, not part of any key).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Worker threads for CPU work (default: all cores; recorded, not keyed). With -j they are
    /// divided among the instances that run at once.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run up to N ready instances at once.
    #[arg(short = 'j', long = "jobs", default_value_t = 1)]
    pub jobs: usize,
    /// GPUs to spread instances over, e.g. `cuda:0,cuda:1`: each instance of a step that uses a
    /// device gets one of its own (default: the single --device).
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<String>,
    /// Instances that may share one GPU of --devices at the same time.
    #[arg(long, default_value_t = 1)]
    pub per_device: usize,
    /// Train up to N SAEs of a grid together in one pass over their data when they read the
    /// same batches (same data, standardisation, batch size, epochs and seed); each ends with
    /// the bytes of training it alone. Default: 8 when training on a GPU, 1 on the CPU.
    #[arg(long)]
    pub fuse: Option<usize>,
    /// Where instances run: threads of this process, or one Slurm job each.
    #[arg(long, value_enum, default_value = "local")]
    pub executor: ExecutorKind,
    /// Slurm resources of steps that set none in `[steps.<id>.resources]`, as KEY=VALUE
    /// (partition, gres, gpus, cpus, mem, time, account, qos, extra=FLAG); repeatable.
    #[arg(long = "resource", value_name = "KEY=VALUE")]
    pub resources: Vec<String>,
    /// Slurm: most jobs in flight at once.
    #[arg(long, default_value_t = 100)]
    pub max_jobs: usize,
    /// Slurm: most submissions per second.
    #[arg(long, default_value_t = 5)]
    pub submit_rate: usize,
    /// Slurm: seconds between `squeue` calls while jobs change (half as long again after each
    /// quiet cycle, up to --poll-max, while nothing does).
    #[arg(long, default_value_t = 5.0)]
    pub poll: f64,
    #[arg(long, default_value_t = 60.0)]
    pub poll_max: f64,
    /// Slurm: seconds a job may be gone from the queue before a missing result file counts as
    /// a failure (shared filesystems can be slow to show it).
    #[arg(long, default_value_t = 60.0)]
    pub result_grace: f64,
    /// Folder for the result tables and the report page; they go to <results>/<experiment name>/.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum ExecutorKind {
    Local,
    Slurm,
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Bytes stored per step.
    Du {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every object that a record refers to; damaged ones are removed so they are
    /// recomputed by the next run.
    Verify,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}
