//! Training throughput of msae next to a PyTorch implementation of the same recipe.
//!
//! `cargo bench --bench train_throughput -- [--threads N] [--steps S] [--rounds R]
//! [--archs topk,msae,...] [--d D] [--n N] [--batch B] [--device cpu|cuda:N] [--latent-bias V]`
//!
//! For every architecture msae trains on an in-memory matrix of standard-normal rows and
//! `benches/torch_sae.py` (started once per architecture, same thread count) holds the same
//! recipe in PyTorch. After one warm-up step each, the two alternate: S timed msae steps, then
//! S timed PyTorch steps, R rounds, so that both see the same machine load; the table reports
//! the median samples/s of the rounds. `--latent-bias V` starts both models with every latent
//! bias at V (the `latent_bias_init` knob): a negative value starts the ReLU and JumpReLU codes
//! at the sparser densities of a model in training; the output prints the density each
//! architecture's code starts at. The Python interpreter is `$MSAE_TORCH_PYTHON` (default
//! `python3`); without PyTorch only the msae column is printed.

mod common;
mod train_floor;

use common::{load_average, median};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use candle_core::{DType, Tensor};
use msae::kinds::sae_common::device;
use msae::sae::training::{train, MatrixSource, TrainOptions};
use msae::sae::Standardization;
use msae::sae::{Arch, Sae, TrainConfig};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

struct Args {
    threads: usize,
    steps: usize,
    rounds: usize,
    archs: Vec<String>,
    d: usize,
    n: usize,
    batch: usize,
    /// `cpu` or `cuda[:N]`, for msae and PyTorch alike.
    device: String,
    /// Initial latent bias of both implementations.
    latent_bias: f64,
}

fn parse_args() -> Args {
    let mut a = Args {
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        steps: 3,
        rounds: 3,
        archs: ["relu", "topk", "batchtopk", "jumprelu", "msae"]
            .map(String::from)
            .to_vec(),
        d: 768,
        n: 6144,
        batch: 4096,
        device: "cpu".into(),
        latent_bias: 0.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let num = |v: String| -> usize { v.parse().unwrap_or_else(|_| panic!("bad number {v}")) };
        match flag.as_str() {
            "--threads" => a.threads = num(value()),
            "--steps" => a.steps = num(value()),
            "--rounds" => a.rounds = num(value()),
            "--archs" => a.archs = value().split(',').map(|s| s.trim().to_string()).collect(),
            "--d" => a.d = num(value()),
            "--n" => a.n = num(value()),
            "--batch" => a.batch = num(value()),
            "--device" => a.device = value(),
            "--latent-bias" => {
                let v = value();
                a.latent_bias = v.parse().unwrap_or_else(|_| panic!("bad number {v}"))
            }
            // Flags that cargo passes to every bench target.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// A running `benches/torch_sae.py` for one architecture.
struct Torch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Torch {
    /// Starts the script and waits until its model is built and warmed up.
    fn start(python: &str, arch: &str, a: &Args) -> Result<Torch, String> {
        // The script beside the sources; `MSAE_TORCH_SCRIPT` names it where the benchmark binary
        // runs away from its build folder (on a GPU machine).
        let script = std::env::var("MSAE_TORCH_SCRIPT").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_sae.py").to_string()
        });
        let script = script.as_str();
        let mut child = Command::new(python)
            .arg(script)
            .args([a.threads, a.d, a.n, a.batch].iter().map(|v| v.to_string()))
            .arg(arch)
            .arg(&a.device)
            .arg(a.latent_bias.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {script}: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut t = Torch {
            child,
            stdin,
            stdout,
        };
        let ready = t.line()?;
        eprintln!(
            "pytorch {arch}: {} intra-op threads, {} inter-op threads, OMP_NUM_THREADS {}, \
             OMP_WAIT_POLICY {}",
            ready["threads"],
            ready["interop_threads"],
            ready["omp_num_threads"],
            ready["omp_wait_policy"]
        );
        Ok(t)
    }

    /// Samples/s of `steps` timed PyTorch steps.
    fn run(&mut self, steps: usize) -> Result<f64, String> {
        writeln!(self.stdin, "{steps}").map_err(|e| format!("torch_sae.py: {e}"))?;
        self.stdin
            .flush()
            .map_err(|e| format!("torch_sae.py: {e}"))?;
        self.reply("samples_per_s")?
            .as_f64()
            .ok_or_else(|| "torch_sae.py: bad samples_per_s".into())
    }

    /// Field `key` of the script's next JSON line.
    fn reply(&mut self, key: &str) -> Result<serde_json::Value, String> {
        Ok(self.line()?[key].clone())
    }

    /// The script's next JSON line.
    fn line(&mut self) -> Result<serde_json::Value, String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("torch_sae.py: {e}"))?;
        serde_json::from_str(&line)
            .map_err(|e| format!("torch_sae.py: bad output line {line:?}: {e}"))
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        // The script waits for its next command forever; it has no state worth a clean exit.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python interpreter with PyTorch, or the reason there is none.
fn torch_python() -> Result<String, String> {
    let python = std::env::var("MSAE_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "{python} cannot import torch; install it with `{python} -m pip install torch` \
             (or `pip install torch`), or point MSAE_TORCH_PYTHON at an interpreter that has it"
        ));
    }
    Ok(python)
}

/// Per-round samples/s of msae and (when `torch` is given) PyTorch for `arch`: one msae
/// training run whose progress callback, after every `steps` timed steps, hands the machine to
/// PyTorch for `steps` steps and restarts the msae clock afterwards.
fn rounds(
    arch: Arch,
    a: &Args,
    data: &MatrixSource,
    mut torch: Option<&mut Torch>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let rows = data.data().len() / a.d;
    let total = a.steps * a.rounds;
    let cfg = config(arch, a, (total + 1).div_ceil(rows.div_ceil(a.batch)));
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut torch_err = None;
    // Progress is reported after every step: the first report closes the warm-up step.
    let mut started: Option<Instant> = None;
    let mut timed = 0usize;
    train(
        &cfg,
        data,
        &Standardization::identity(a.d),
        &[],
        &device(&a.device)?,
        &TrainOptions {
            stop_after_steps: Some(total as u64 + 1),
            ..Default::default()
        },
        &mut |_| {
            if let Some(t) = started {
                timed += 1;
                if !timed.is_multiple_of(a.steps) {
                    return;
                }
                ours.push((a.steps * a.batch) as f64 / t.elapsed().as_secs_f64());
                if let Some(torch) = torch.as_deref_mut() {
                    match torch.run(a.steps) {
                        Ok(s) => theirs.push(s),
                        Err(e) => torch_err = Some(e),
                    }
                }
            }
            started = Some(Instant::now());
        },
    )?;
    if let Some(e) = torch_err {
        anyhow::bail!(e);
    }
    anyhow::ensure!(ours.len() == a.rounds, "not every round ran");
    Ok((ours, theirs))
}

/// The benchmark's training configuration of `arch`.
fn config(arch: Arch, a: &Args, epochs: usize) -> TrainConfig {
    TrainConfig {
        arch,
        n_latents: Some(a.n),
        batch_size: a.batch,
        epochs,
        latent_bias_init: a.latent_bias,
        ..Default::default()
    }
}

/// Fraction of non-zero entries of the training code of a freshly built `arch` model on the
/// first batch: the density the timed steps start from.
fn start_density(arch: Arch, a: &Args, data: &MatrixSource) -> anyhow::Result<f64> {
    let dev = device(&a.device)?;
    let model = Sae::new(&config(arch, a, 1), a.d, &dev)?;
    let x = Tensor::from_slice(&data.data()[..a.batch * a.d], (a.batch, a.d), &dev)?;
    let z = model.forward_train(&x)?.levels.pop().map(|l| l.z);
    let z = z.ok_or_else(|| anyhow::anyhow!("no code"))?;
    let kept = z
        .ne(0f32)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(kept as f64 / (a.batch * a.n) as f64)
}

/// Throughput goal of msae relative to PyTorch on the same device.
fn goal(arch: &str, gpu: bool) -> Option<f64> {
    if gpu {
        return match arch {
            "topk" | "batchtopk" => Some(1.5),
            "msae" => Some(3.0),
            _ => None,
        };
    }
    match arch {
        "topk" | "batchtopk" => Some(2.5),
        "msae" => Some(4.0),
        "relu" | "jumprelu" => Some(2.0),
        _ => None,
    }
}

fn main() -> anyhow::Result<()> {
    let a = parse_args();
    rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build_global()?;
    // Two batches of standard-normal rows: the epochs alternate between them.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let rows = 2 * a.batch;
    let data: Vec<f32> = (0..rows * a.d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let data = MatrixSource::new(data, a.d)?;

    let load_start = load_average();
    let python = torch_python();
    let mut results = Vec::new();
    for name in &a.archs {
        let arch: Arch = serde_json::from_str(&format!("\"{name}\""))
            .map_err(|_| anyhow::anyhow!("unknown architecture {name}"))?;
        let mut torch = match &python {
            Ok(py) => Some(Torch::start(py, name, &a).map_err(anyhow::Error::msg)?),
            Err(_) => None,
        };
        let density = start_density(arch, &a, &data)?;
        eprintln!(
            "{name}: code density at the start {:.1} % (latent bias {})",
            100.0 * density,
            a.latent_bias
        );
        let (ours, theirs) = rounds(arch, &a, &data, torch.as_mut())?;
        let show = |v: &[f64]| v.iter().map(|s| format!("{s:.0}")).collect::<Vec<_>>();
        eprintln!("msae {name}: {:?} samples/s", show(&ours));
        if torch.is_some() {
            eprintln!("pytorch {name}: {:?} samples/s", show(&theirs));
        }
        results.push((name.clone(), median(&ours), median(&theirs), density));
    }
    // The dense floor, where a code keeps enough entries for msae's dense products.
    let dense: Vec<_> = results
        .iter()
        .filter(|r| matches!(r.0.as_str(), "relu" | "jumprelu") && r.3 >= DENSE_FROM)
        .collect();
    let floor = if a.device == "cpu" && !dense.is_empty() {
        Some(dense_floor(&a, python.as_ref().ok())?)
    } else {
        None
    };
    let load_end = load_average();

    println!(
        "\nTraining throughput on {}, d = {}, n = {}, batch {}, {} threads asked, msae's rayon pool {} \
         threads, latent bias {}, median of {} alternating rounds of {} timed steps (after one \
         warm-up step); one-minute load average {} at the start, {} at the end\n",
        a.device,
        a.d,
        a.n,
        a.batch,
        a.threads,
        rayon::current_num_threads(),
        a.latent_bias,
        a.rounds,
        a.steps,
        load_start,
        load_end
    );
    match python {
        Ok(_) => {
            println!("| arch | msae samples/s | PyTorch samples/s | ratio | goal | met? |");
            println!("|---|---|---|---|---|---|");
            for (name, s, theirs, _) in &results {
                let s = s.unwrap_or(f64::NAN);
                let ratio = theirs.map(|p| s / p);
                let (goal_s, met) = match (goal(name, a.device.starts_with("cuda")), ratio) {
                    (Some(g), Some(r)) => (format!("{g}×"), if r >= g { "yes" } else { "no" }),
                    (Some(g), None) => (format!("{g}×"), "?"),
                    (None, _) => ("none".to_string(), "—"),
                };
                println!(
                    "| {name} | {s:.0} | {} | {} | {goal_s} | {met} |",
                    theirs.map_or("—".into(), |p| format!("{p:.0}")),
                    ratio.map_or("—".into(), |r| format!("{r:.2}")),
                );
            }
        }
        Err(why) => {
            println!("PyTorch column skipped: {why}\n");
            println!("| arch | msae samples/s |");
            println!("|---|---|");
            for (name, s, _, _) in &results {
                println!("| {name} | {:.0} |", s.unwrap_or(f64::NAN));
            }
        }
    }
    if let Some((ours, theirs)) = floor {
        print_floor(&a, &dense, ours, theirs);
    }
    Ok(())
}

/// Code density from which msae's ReLU and JumpReLU steps take dense products
/// (`SPARSE_BELOW` in src/sae/sparse/thresholded.rs).
const DENSE_FROM: f64 = 0.12;

/// Seconds per step of the five dense products of a step, msae's and (with PyTorch)
/// PyTorch's: medians of alternating rounds, as for the steps.
fn dense_floor(a: &Args, python: Option<&String>) -> anyhow::Result<(f64, Option<f64>)> {
    let mut products = train_floor::Products::new(a.batch, a.d, a.n);
    products.time(1);
    let mut torch = match python {
        Some(py) => Some(Torch::start(py, "products", a).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        ours.push(products.time(a.steps) / a.steps as f64);
        if let Some(t) = torch.as_mut() {
            theirs.push(a.batch as f64 / t.run(a.steps).map_err(anyhow::Error::msg)?);
        }
    }
    let show = |v: &[f64]| v.iter().map(|s| format!("{s:.3}")).collect::<Vec<_>>();
    eprintln!("msae products: {:?} s per step", show(&ours));
    if torch.is_some() {
        eprintln!("pytorch products: {:?} s per step", show(&theirs));
    }
    Ok((median(&ours).unwrap_or(f64::NAN), median(&theirs)))
}

/// The floor table: how close each dense step is to its products, and the highest ratio
/// against PyTorch that a step computing them can reach.
fn print_floor(
    a: &Args,
    dense: &[&(String, Option<f64>, Option<f64>, f64)],
    ours: f64,
    theirs: Option<f64>,
) {
    println!(
        "\nDense floor: the five {b}×{d}×{n} matrix products of a step on a code keeping ≥ {:.0} % \
         of its entries (encoder product, reconstruction, code gradient, decoder and encoder \
         gradients), into buffers allocated once: msae (gemm) {ours:.3} s, PyTorch {} s per \
         step (medians of {r} alternating rounds of {s}).\n",
        100.0 * DENSE_FROM,
        theirs.map_or("—".into(), |t| format!("{t:.3}")),
        b = a.batch,
        d = a.d,
        n = a.n,
        r = a.rounds,
        s = a.steps,
    );
    // The fastest of the two product timings bounds any step that computes the products.
    let fastest = theirs.map_or(ours, |t| t.min(ours));
    println!(
        "| arch | code density at the start | msae step s | msae step / products | PyTorch step s | \
         highest ratio a step with these products reaches | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, s, p, density) in dense {
        let step = s.map_or(f64::NAN, |s| a.batch as f64 / s);
        let torch_step = p.map(|p| a.batch as f64 / p);
        println!(
            "| {name} | {:.1} % | {step:.3} | {:.2} | {} | {} | {} |",
            100.0 * density,
            step / ours,
            torch_step.map_or("—".into(), |t| format!("{t:.3}")),
            torch_step.map_or("—".into(), |t| format!("{:.2}", t / fastest)),
            torch_step.map_or("—".into(), |t| format!("{:.2}", t / step)),
        );
    }
}
