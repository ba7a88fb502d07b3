//! Several SAEs per data pass: a grid of M models trained together (`train_group`, one batch
//! read and standardised per step for all) next to the same M models trained one after another,
//! in one process, alternating rounds.
//!
//! `cargo bench --bench fused_grid -- [--device cpu|cuda:N] [--models M] [--arch topk]
//! [--d D] [--n N] [--batch B] [--steps S] [--rounds R] [--threads T]`
//!
//! Every model of the grid has its own learning rate (so each is a different model), the same
//! data, batch size, epochs and seed (so they read the same batches). The table gives the
//! median over the rounds of the samples/s summed over the models, and checks on the way that
//! every fused model ends with the bytes of its sequential twin.

mod common;

use common::{load_average, median};
use std::time::Instant;

use msae::kinds::sae_common::device;
use msae::sae::training::train_loop::{train_group, Member};
use msae::sae::training::{train, MatrixSource, TrainOptions, TrainOutcome};
use msae::sae::Standardization;
use msae::sae::{Arch, TrainConfig};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// A model's per-step progress callback (here: nothing to report).
type Callback = Box<dyn FnMut(&msae::sae::training::records::TrainProgress)>;

struct Args {
    device: String,
    models: usize,
    arch: String,
    d: usize,
    n: usize,
    batch: usize,
    steps: usize,
    rounds: usize,
    threads: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        device: "cpu".into(),
        models: 8,
        arch: "topk".into(),
        d: 256,
        n: 1024,
        batch: 1024,
        steps: 8,
        rounds: 3,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let num = |v: String| -> usize { v.parse().unwrap_or_else(|_| panic!("bad number {v}")) };
        match flag.as_str() {
            "--device" => a.device = value(),
            "--models" => a.models = num(value()),
            "--arch" => a.arch = value(),
            "--d" => a.d = num(value()),
            "--n" => a.n = num(value()),
            "--batch" => a.batch = num(value()),
            "--steps" => a.steps = num(value()),
            "--rounds" => a.rounds = num(value()),
            "--threads" => a.threads = num(value()),
            // Flags that cargo passes to every bench target.
            "--bench" | "--nocapture" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn weights(o: &TrainOutcome) -> Vec<Vec<u32>> {
    o.model
        .params()
        .iter()
        .map(|t| {
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map(|v| v.iter().map(|x| x.to_bits()).collect())
                .unwrap_or_default()
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let a = parse_args();
    rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build_global()?;
    let dev = device(&a.device)?;
    let arch: Arch = serde_json::from_str(&format!("\"{}\"", a.arch))
        .map_err(|_| anyhow::anyhow!("unknown architecture {}", a.arch))?;
    let rows = a.batch * a.steps;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let data: Vec<f32> = (0..rows * a.d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let data = MatrixSource::new(data, a.d)?;
    let std = Standardization::identity(a.d);
    let configs: Vec<TrainConfig> = (0..a.models)
        .map(|m| TrainConfig {
            arch,
            n_latents: Some(a.n),
            batch_size: a.batch,
            epochs: 1,
            lr: Some(1e-4 * (m + 1) as f64),
            ..Default::default()
        })
        .collect();
    let opts = TrainOptions::default();
    let load_start = load_average();
    let (mut seq, mut fused) = (Vec::new(), Vec::new());
    let samples = (rows * a.models) as f64;
    for round in 0..a.rounds {
        let t = Instant::now();
        let alone: Vec<TrainOutcome> = configs
            .iter()
            .map(|c| train(c, &data, &std, &[], &dev, &opts, &mut |_| {}))
            .collect::<Result<_, _>>()?;
        seq.push(samples / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut noop: Vec<Callback> = configs.iter().map(|_| Box::new(|_: &_| {}) as _).collect();
        let members = configs
            .iter()
            .zip(noop.iter_mut())
            .map(|(config, progress)| Member {
                config,
                options: &opts,
                validation: &[],
                progress: progress.as_mut(),
            })
            .collect();
        let together = train_group(&data, &std, &dev, members)?;
        fused.push(samples / t.elapsed().as_secs_f64());
        if round == 0 {
            for (m, (x, y)) in alone.iter().zip(&together).enumerate() {
                anyhow::ensure!(
                    weights(x) == weights(y),
                    "model {m}: fused weights differ from training it alone"
                );
            }
        }
        eprintln!(
            "round {}: sequential {:.0}, fused {:.0} samples/s",
            round + 1,
            seq[round],
            fused[round]
        );
    }
    println!(
        "\nFused grid of {} {} SAEs (d = {}, n = {}, batch {}, {} steps each) on {}, {} threads, \
         median of {} alternating rounds; one-minute load average {} at the start, {} at the \
         end; fused weights equal the sequential ones bit for bit\n",
        a.models,
        a.arch,
        a.d,
        a.n,
        a.batch,
        a.steps,
        a.device,
        a.threads,
        a.rounds,
        load_start,
        load_average()
    );
    println!("| mode | samples/s (all models) | ratio |");
    println!("|---|---|---|");
    let (s, f) = (median(&seq).unwrap_or(0.0), median(&fused).unwrap_or(0.0));
    println!("| {} sequential trainings | {s:.0} | 1.00 |", a.models);
    println!("| fused, one data pass | {f:.0} | {:.2} |", f / s);
    Ok(())
}
