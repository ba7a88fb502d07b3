//! One function per subcommand.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};

use std::time::Duration;

use super::args::{CacheCommand, Cli, Command, ExecutorKind, GraphFormat, RunArgs};
use super::device;
use crate::diagnostic::nearest;
use crate::experiment::resources::Resources;
use crate::experiment::{self, Experiment, Plan};
use crate::report::live::LiveReport;
use crate::report::state::Snapshot;
use crate::report::{self, graph, table};
use crate::runner::executor::Executor;
use crate::runner::local::Local;
use crate::runner::plan::{cached_records, plan, PlanStatus};
use crate::runner::reasons::Reason;
use crate::runner::slurm::{Slurm, SlurmOptions};
use crate::runner::{self, RunOptions, Status};
use crate::steps::progress::Progress;
use crate::steps::spec::{Default, Role};
use crate::store::Store;

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match &cli.command {
        Command::Run(args) => run(g, args),
        Command::Plan { experiment, json } => plan_cmd(g, experiment, *json),
        Command::Why {
            experiment,
            instance,
            json,
        } => why(g, experiment, instance, *json),
        Command::Status { experiment, json } => super::status::status(g, experiment, *json),
        Command::Graph { experiment, format } => {
            let (_, p) = load(experiment)?;
            print!(
                "{}",
                match format {
                    GraphFormat::Dot => graph::dot(&p),
                    GraphFormat::Mermaid => graph::mermaid(&p),
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Table {
            experiment,
            format,
            kind,
        } => table_cmd(g, experiment, *format, kind.as_deref()),
        Command::Gc {
            experiments,
            dry_run,
        } => gc(g, experiments, *dry_run),
        Command::Cache(CacheCommand::Du { json }) => du(g, *json),
        Command::Cache(CacheCommand::Verify) => verify(g),
        Command::Kinds => kinds(),
        Command::Export(args) => super::export::export(g, args),
        Command::Cancel { experiment } => super::cancel::cancel(g, experiment),
        Command::Exec { spec } => crate::runner::worker::exec(spec),
        Command::Report {
            experiment,
            results,
        } => report_cmd(g, experiment, results),
    }
}

pub(super) fn load(path: &Path) -> Result<(Experiment, Plan)> {
    let exp = experiment::load(path)?;
    let plan = experiment::expand(&exp)?;
    Ok((exp, plan))
}

pub(super) fn open(g: &super::args::Global, command: &str) -> Result<Store> {
    Store::open(&g.cache, command, g.wait)
}

/// For commands that only read: while a run holds the store, its published snapshot.
pub(super) fn open_read(g: &super::args::Global, command: &str) -> Result<Store> {
    Store::open_read(&g.cache, command, g.wait)
}

fn run(g: &super::args::Global, args: &RunArgs) -> Result<ExitCode> {
    let (exp, p) = load(&args.experiment)?;
    // GPUs are checked here only when the work runs here.
    let resolve = match args.executor {
        ExecutorKind::Local => device::resolve_here,
        ExecutorKind::Slurm => device::resolve_for_nodes,
    };
    let device = resolve(&args.device)?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    let devices = args
        .devices
        .iter()
        .map(|d| resolve(d))
        .collect::<Result<Vec<_>>>()?;
    if devices.iter().any(|d| d == "cpu") {
        bail!("--devices lists GPUs (e.g. cuda:0,cuda:1); for the CPU use --device cpu");
    }
    let command = format!("msae run {}", args.experiment.display());
    let store = open(g, &command)?;
    let progress = if args.json {
        Progress::hidden(g.quiet)
    } else {
        Progress::new(g.quiet)
    };
    let mut executor: Box<dyn Executor> = match args.executor {
        ExecutorKind::Local => Box::new(Local::new(
            args.jobs,
            threads,
            devices,
            args.per_device,
            device.clone(),
            progress.clone(),
        )?),
        ExecutorKind::Slurm => {
            let seconds = |s: f64, what: &str| {
                if s.is_finite() && s >= 0.0 {
                    Ok(Duration::from_secs_f64(s))
                } else {
                    Err(anyhow::anyhow!("{what} must be a number of seconds ≥ 0"))
                }
            };
            Box::new(Slurm::new(
                &store.root,
                &exp.name,
                SlurmOptions {
                    defaults: Resources::from_assignments(&args.resources)?,
                    max_jobs: args.max_jobs,
                    submit_per_second: args.submit_rate,
                    poll_min: seconds(args.poll, "--poll")?.max(Duration::from_millis(100)),
                    poll_max: seconds(args.poll_max, "--poll-max")?.max(Duration::from_millis(100)),
                    result_grace: seconds(args.result_grace, "--result-grace")?,
                    device: device.clone(),
                },
            )?)
        }
    };
    let results_dir = args.results.join(&exp.name);
    // Small SAEs leave a GPU mostly idle, so a grid fills it by training together; on the CPU a
    // training already uses every core, and sharing only the batch reading gains little.
    let fuse = match args.fuse {
        Some(0) => anyhow::bail!("--fuse must be at least 1"),
        Some(n) => n,
        None if device.starts_with("cuda")
            || args.devices.iter().any(|d| d.starts_with("cuda")) =>
        {
            8
        }
        None => 1,
    };
    let opts = RunOptions {
        fuse,
        keep_going: args.keep_going,
        verify: args.verify,
        device,
        threads,
        command,
        observer: Some(Box::new(LiveReport {
            dir: results_dir.clone(),
        })),
    };
    let outcomes = runner::run(&exp, &p, &store, &opts, &progress, executor.as_mut())?;
    let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
    let (ran, cached, failed, skipped) = (
        count(Status::Ran),
        count(Status::Cached),
        count(Status::Failed),
        count(Status::Skipped),
    );
    let records = cached_records(&p, &store)?;
    let tables = table::build(&p, &records);
    table::write_all(&results_dir, &tables)?;
    // The final page: what is cached now, failures with their errors.
    let page = Snapshot::from_outcomes(&p, &store, &outcomes, &[], false)
        .and_then(|snap| report::page::write(&results_dir, &exp, &p, &snap, &store.objects));
    if let Err(e) = page {
        eprintln!("warning: the report page could not be written: {e:#}");
    }
    if args.json {
        let summary = serde_json::json!({
            "experiment": exp.name,
            "run": ran,
            "cached": cached,
            "failed": failed,
            "skipped": skipped,
            "results": results_dir,
            "instances": outcomes,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        for o in outcomes.iter().filter(|o| o.status == Status::Failed) {
            eprintln!(
                "error: {} failed: {}",
                o.name,
                o.error.as_deref().unwrap_or("")
            );
        }
        let mut line = format!("{ran} run, {cached} cached, {failed} failed");
        if skipped > 0 {
            line.push_str(&format!(", {skipped} skipped"));
        }
        println!("{line}");
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn report_cmd(g: &super::args::Global, path: &Path, results: &Path) -> Result<ExitCode> {
    let (exp, p) = load(path)?;
    let store = open_read(g, "msae report")?;
    let snap = Snapshot::from_store(&exp, &p, &store)?;
    let page = report::page::write(&results.join(&exp.name), &exp, &p, &snap, &store.objects)?;
    println!("{}", page.display());
    Ok(ExitCode::SUCCESS)
}

fn plan_cmd(g: &super::args::Global, path: &Path, json: bool) -> Result<ExitCode> {
    let (exp, p) = load(path)?;
    let store = open_read(g, "msae plan")?;
    let entries = plan(&exp, &p, &store)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
    for e in &entries {
        let status = format!("{:?}", e.status).to_lowercase();
        println!("{status:8} {:width$}  {}", e.name, join(&e.reasons));
    }
    let n = |s: PlanStatus| {
        entries
            .iter()
            .filter(|e| std::mem::discriminant(&e.status) == std::mem::discriminant(&s))
            .count()
    };
    println!(
        "{} cached, {} new, {} changed, {} pending, {} error",
        n(PlanStatus::Cached),
        n(PlanStatus::New),
        n(PlanStatus::Changed),
        n(PlanStatus::Pending),
        n(PlanStatus::Error)
    );
    Ok(ExitCode::SUCCESS)
}

/// The instance `name` of the plan, or an error that suggests the nearest name.
pub(super) fn find_instance<'p>(
    exp: &Experiment,
    p: &'p Plan,
    name: &str,
) -> Result<&'p crate::experiment::Instance> {
    if let Some(inst) = p.find(name) {
        return Ok(inst);
    }
    let names: Vec<&str> = p.instances.iter().map(|i| i.name.as_str()).collect();
    let hint = match nearest(name, names.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("its instances are: {}", names.join(", ")),
    };
    bail!(
        "experiment `{}` has no instance `{name}`\n  = help: {hint}",
        exp.name
    )
}

fn join(reasons: &[Reason]) -> String {
    reasons
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// One link of a `why` answer: the instance and its plan state.
#[derive(serde::Serialize)]
struct WhyLink {
    instance: String,
    status: PlanStatus,
    key: Option<String>,
    reasons: Vec<Reason>,
}

fn why(g: &super::args::Global, path: &Path, name: &str, json: bool) -> Result<ExitCode> {
    let (exp, p) = load(path)?;
    find_instance(&exp, &p, name)?;
    let store = open_read(g, "msae why")?;
    let entries = plan(&exp, &p, &store)?;
    // Follow "waits for" links upstream until an instance whose own state explains it.
    let mut chain = Vec::new();
    let mut current = name.to_string();
    let mut seen = BTreeSet::new();
    while seen.insert(current.clone()) {
        let e = entries
            .iter()
            .find(|e| e.name == current)
            .expect("instance of the plan");
        chain.push(WhyLink {
            instance: current.clone(),
            status: e.status.clone(),
            key: e.key.clone(),
            reasons: e.reasons.clone(),
        });
        match e.reasons.first() {
            Some(Reason::Upstream { instance }) if matches!(e.status, PlanStatus::Pending) => {
                current = instance.clone();
            }
            _ => break,
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&chain)?);
        return Ok(ExitCode::SUCCESS);
    }
    for link in &chain {
        let current = &link.instance;
        match link.status {
            PlanStatus::Cached => println!(
                "{current}: cached (key {}): nothing changed since its last run",
                short(link.key.as_deref())
            ),
            PlanStatus::New => println!("{current}: never ran under this name: it will run"),
            PlanStatus::Changed => {
                println!(
                    "{current}: will run again (new key {}) because:",
                    short(link.key.as_deref())
                );
                for r in &link.reasons {
                    println!("  - {r}");
                }
            }
            PlanStatus::Error => println!("{current}: cannot run: {}", join(&link.reasons)),
            PlanStatus::Pending => {
                let upstream = match link.reasons.first() {
                    Some(Reason::Upstream { instance }) => instance.as_str(),
                    _ => "",
                };
                println!("{current}: its key is known only after its input `{upstream}` runs again (if that yields the same bytes, {current} stays cached)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn short(key: Option<&str>) -> &str {
    key.map(|k| &k[..k.len().min(12)]).unwrap_or("?")
}

fn table_cmd(
    g: &super::args::Global,
    path: &Path,
    format: table::Format,
    kind: Option<&str>,
) -> Result<ExitCode> {
    let (exp, p) = load(path)?;
    let store = open_read(g, "msae table")?;
    let records = cached_records(&p, &store)?;
    let tables = table::build(&p, &records);
    if let Some(k) = kind {
        if !tables.iter().any(|t| t.kind == k) {
            let kinds: Vec<&str> = tables.iter().map(|t| t.kind.as_str()).collect();
            bail!(
                "no table for step kind `{k}` in experiment `{}` (tables: {})",
                exp.name,
                kinds.join(", ")
            );
        }
    }
    if tables.is_empty() {
        eprintln!(
            "no finished instances yet: run `msae run {}` first",
            path.display()
        );
    }
    for t in tables.iter().filter(|t| kind.is_none_or(|k| t.kind == k)) {
        print!("{}", table::render(t, format));
        if format == table::Format::Markdown {
            println!();
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

fn gc(
    g: &super::args::Global,
    experiments: &[std::path::PathBuf],
    dry_run: bool,
) -> Result<ExitCode> {
    let loaded: Vec<(Experiment, Plan)> =
        experiments.iter().map(|e| load(e)).collect::<Result<_>>()?;
    let store = open(g, "msae gc")?;
    let mut keep_keys = BTreeSet::new();
    for (exp, p) in &loaded {
        for r in cached_records(p, &store)?.into_iter().flatten() {
            keep_keys.insert(r.key);
        }
        // Checkpoints of instances that will run are worth keeping too.
        for e in plan(exp, p, &store)? {
            if let Some(k) = e.key {
                keep_keys.insert(k);
            }
        }
    }
    let records = store.index.all_records()?;
    let mut live_objects = BTreeSet::new();
    let mut dropped = 0;
    for r in &records {
        if keep_keys.contains(&r.key) {
            live_objects.extend(r.outputs.values().map(|a| a.hash.clone()));
        } else {
            dropped += 1;
            if !dry_run {
                store.index.remove_record(&r.key)?;
            }
        }
    }
    let mut freed = 0u64;
    let mut objects = 0;
    for (hash, size) in store.objects.list()? {
        if !live_objects.contains(&hash) {
            freed += size;
            objects += 1;
            if !dry_run {
                store.objects.discard(&hash);
            }
        }
    }
    let mut partials = 0;
    if let Ok(entries) = std::fs::read_dir(store.root.join("partial")) {
        for e in entries.flatten() {
            let key = e.file_name().to_string_lossy().to_string();
            if !keep_keys.contains(&key) {
                freed += dir_size(&e.path());
                partials += 1;
                if !dry_run {
                    std::fs::remove_dir_all(e.path()).ok();
                }
            }
        }
    }
    if !dry_run {
        store.index.prune_pointers()?;
        store.index.flush()?;
    }
    println!(
        "{}{dropped} record(s), {objects} object(s), {partials} checkpoint folder(s): {} freed",
        if dry_run { "would remove " } else { "removed " },
        human_bytes(freed)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Records and distinct objects (hash → size) of one (experiment, step, kind).
type DuGroups = BTreeMap<(String, String, String), (usize, BTreeMap<String, u64>)>;

/// One row of `cache du`.
#[derive(serde::Serialize)]
struct DuRow {
    experiment: String,
    step: String,
    kind: String,
    records: usize,
    bytes: u64,
}

fn du(g: &super::args::Global, json: bool) -> Result<ExitCode> {
    let store = open_read(g, "msae cache du")?;
    let mut groups = DuGroups::new();
    for r in store.index.all_records()? {
        let step = r
            .instance
            .split('[')
            .next()
            .unwrap_or(&r.instance)
            .to_string();
        let entry = groups
            .entry((r.experiment.clone(), step, r.components.kind.clone()))
            .or_default();
        entry.0 += 1;
        for a in r.outputs.values() {
            entry.1.insert(a.hash.clone(), a.size);
        }
    }
    let rows: Vec<DuRow> = groups
        .into_iter()
        .map(|((experiment, step, kind), (records, objs))| DuRow {
            experiment,
            step,
            kind,
            records,
            bytes: objs.values().sum(),
        })
        .collect();
    let objects: u64 = store.objects.list()?.iter().map(|(_, s)| s).sum();
    let checkpoints = dir_size(&store.root.join("partial"));
    if json {
        let report = serde_json::json!({
            "steps": rows,
            "objects_bytes": objects,
            "checkpoints_bytes": checkpoints,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("| experiment | step | kind | records | bytes |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.experiment,
            r.step,
            r.kind,
            r.records,
            human_bytes(r.bytes)
        );
    }
    println!(
        "\nobjects on disk: {} (identical outputs stored once); checkpoints: {}",
        human_bytes(objects),
        human_bytes(checkpoints)
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(g: &super::args::Global) -> Result<ExitCode> {
    let store = open(g, "msae cache verify")?;
    let mut checked = BTreeMap::new();
    let mut bad = 0;
    for r in store.index.all_records()? {
        for (name, a) in &r.outputs {
            let ok = match checked.get(&a.hash) {
                Some(ok) => *ok,
                None => {
                    let ok = store.objects.verify(&a.hash, a.size)?;
                    checked.insert(a.hash.clone(), ok);
                    if !ok {
                        store.objects.discard(&a.hash);
                    }
                    ok
                }
            };
            if !ok {
                bad += 1;
                println!(
                    "damaged: output `{name}` of {} ({})",
                    r.instance,
                    &a.hash[..12]
                );
            }
        }
    }
    println!("{} object(s) checked, {bad} damaged", checked.len());
    if bad > 0 {
        println!("damaged objects were removed; the next `msae run` recomputes them");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn kinds() -> Result<ExitCode> {
    for step in crate::steps::registry() {
        println!(
            "{} (version {}): {}",
            step.kind(),
            step.version(),
            step.about()
        );
        for p in step.params() {
            let default = match p.default {
                Default::Required => "required".to_string(),
                Default::Absent => "optional".to_string(),
                Default::ExperimentSeed => "default: experiment seed".to_string(),
                other => format!(
                    "default: {}",
                    p.default_value(0)
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| format!("{other:?}"))
                ),
            };
            let role = match p.role {
                Role::Keyed => "",
                Role::Input => ", input",
                Role::File => ", file",
                Role::Exec => ", not keyed",
                Role::Locator => ", locates files (their content is keyed)",
            };
            let grid = if p.gridable { ", grid" } else { "" };
            println!(
                "  {:14} {}{grid}{role} ({default}): {}",
                p.name,
                p.ty.describe(),
                p.doc
            );
        }
        for o in step.outputs() {
            println!(
                "  -> {:11} {}{}",
                o.name,
                o.doc,
                if o.optional { " (optional)" } else { "" }
            );
        }
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
