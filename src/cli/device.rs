//! `--device`: cpu, cuda, cuda:N or auto.

use anyhow::{bail, Result};

/// Checks the device choice against what this build supports and resolves `auto`.
pub fn resolve(choice: &str) -> Result<String> {
    let choice = choice.trim().to_ascii_lowercase();
    let cuda_built = cfg!(feature = "cuda");
    match choice.as_str() {
        "cpu" => Ok("cpu".into()),
        "auto" => Ok(if cuda_built {
            "cuda:0".into()
        } else {
            "cpu".into()
        }),
        c if c == "cuda" || c.starts_with("cuda:") => {
            let ordinal = c.strip_prefix("cuda:").unwrap_or("0");
            if ordinal.parse::<usize>().is_err() {
                bail!("`--device {c}`: the GPU number must be an integer, e.g. cuda:0");
            }
            if !cuda_built {
                bail!("`--device {c}`: this msae was built without CUDA support; rebuild with `cargo build --release --features cuda` or use --device cpu");
            }
            Ok(format!("cuda:{ordinal}"))
        }
        other => bail!("unknown device `{other}`; use cpu, cuda, cuda:N or auto"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!(resolve("CPU").unwrap(), "cpu");
        assert!(resolve("tpu").is_err());
        assert!(resolve("cuda:x").is_err());
        if !cfg!(feature = "cuda") {
            assert_eq!(resolve("auto").unwrap(), "cpu");
            assert!(resolve("cuda").is_err());
        }
    }
}
