//! `--device`: cpu, cuda, cuda:N or auto.
//!
//! For work that runs in this process the choice is checked against the machine: `auto` takes
//! GPU 0 only when this build has CUDA support *and* the GPU opens, and `cuda[:N]` fails with a
//! message when it does not. For a scheduler the GPUs live on other nodes, so only the build is
//! checked here (the job itself fails clearly if its node has no GPU).

use anyhow::{bail, Result};

/// Whether GPU `ordinal` can be used, and why not.
type Probe<'a> = &'a dyn Fn(usize) -> std::result::Result<(), String>;

/// Resolves the device for work that runs on this machine.
pub fn resolve_here(choice: &str) -> Result<String> {
    resolve_with(choice, cfg!(feature = "cuda"), &open_gpu)
}

/// Resolves the device for work that runs on scheduler nodes (not checked against this machine).
pub fn resolve_for_nodes(choice: &str) -> Result<String> {
    resolve_with(choice, cfg!(feature = "cuda"), &|_| Ok(()))
}

/// Opens GPU `ordinal` through candle (without CUDA support this reports that instead).
fn open_gpu(ordinal: usize) -> std::result::Result<(), String> {
    candle_core::Device::new_cuda(ordinal)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The rule, with the build flag and the GPU probe passed in so it can be tested anywhere.
fn resolve_with(choice: &str, cuda_built: bool, probe: Probe) -> Result<String> {
    let choice = choice.trim().to_ascii_lowercase();
    match choice.as_str() {
        "cpu" => Ok("cpu".into()),
        "auto" => Ok(if cuda_built && probe(0).is_ok() {
            "cuda:0".into()
        } else {
            "cpu".into()
        }),
        c if c == "cuda" || c.starts_with("cuda:") => {
            let ordinal = c.strip_prefix("cuda:").unwrap_or("0");
            let Ok(n) = ordinal.parse::<usize>() else {
                bail!("`--device {c}`: the GPU number must be an integer, e.g. cuda:0");
            };
            if !cuda_built {
                bail!("`--device {c}`: this msae was built without CUDA support; rebuild with `cargo build --release --features cuda` or use --device cpu (or auto)");
            }
            if let Err(why) = probe(n) {
                bail!("`--device {c}`: no usable GPU {n} on this machine ({why}); use --device cpu (or auto)");
            }
            Ok(format!("cuda:{n}"))
        }
        other => bail!("unknown device `{other}`; use cpu, cuda, cuda:N or auto"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_gpu(_: usize) -> std::result::Result<(), String> {
        Err("no CUDA-capable device is detected".into())
    }

    fn two_gpus(n: usize) -> std::result::Result<(), String> {
        if n < 2 {
            Ok(())
        } else {
            Err("invalid device ordinal".into())
        }
    }

    #[test]
    fn parses_devices() {
        assert_eq!(resolve_here("CPU").unwrap(), "cpu");
        assert!(resolve_here("tpu").is_err());
        assert!(resolve_here("cuda:x").is_err());
    }

    #[test]
    fn auto_takes_a_gpu_only_when_one_opens() {
        assert_eq!(resolve_with("auto", false, &two_gpus).unwrap(), "cpu");
        assert_eq!(resolve_with("auto", true, &no_gpu).unwrap(), "cpu");
        assert_eq!(resolve_with("auto", true, &two_gpus).unwrap(), "cuda:0");
    }

    #[test]
    fn cuda_without_a_gpu_fails_clearly() {
        let e = resolve_with("cuda", true, &no_gpu).unwrap_err().to_string();
        assert!(
            e.contains("no usable GPU 0") && e.contains("--device cpu"),
            "{e}"
        );
        let e = resolve_with("cuda:2", true, &two_gpus)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no usable GPU 2"), "{e}");
        assert_eq!(resolve_with("cuda:1", true, &two_gpus).unwrap(), "cuda:1");
        let e = resolve_with("cuda", false, &two_gpus)
            .unwrap_err()
            .to_string();
        assert!(e.contains("without CUDA support"), "{e}");
    }

    /// On the machine the tests run on: whatever the build, `auto` must not name a GPU that
    /// does not open, and `cuda` must either open or fail.
    #[test]
    fn this_machine_is_probed_for_real() {
        let gpu = open_gpu(0).is_ok();
        let auto = resolve_here("auto").unwrap();
        assert_eq!(auto, if gpu { "cuda:0" } else { "cpu" });
        assert_eq!(resolve_here("cuda").is_ok(), gpu);
        assert!(resolve_for_nodes("cuda").is_ok() == cfg!(feature = "cuda"));
    }
}
