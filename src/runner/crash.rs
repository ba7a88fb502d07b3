//! Named crash points for fault-injection tests. With `MSAE_CRASH_AT=<name>` in its environment,
//! the process kills itself with SIGKILL (no destructor, no flush: what an OOM kill or a lost
//! login node does) the first time it reaches the point of that name, so a test can stop a
//! coordinator deterministically between two steps of its bookkeeping and check that a restart
//! neither loses nor duplicates work. Unset (always, outside such tests) a crash point costs one
//! comparison.
//!
//! The points: `slurm-submitted` (sbatch returned a job id that the coordinator has not yet
//! remembered), `result-read` (a job's result file was read, not yet recorded), `recorded` (the
//! record is durably in the index, the job's result file not yet removed) and `result-removed`
//! (both done).

use std::sync::OnceLock;

/// The environment variable that names the crash point.
pub const VARIABLE: &str = "MSAE_CRASH_AT";

/// Dies here when `MSAE_CRASH_AT` names this point.
pub fn crash_point(name: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    if AT.get_or_init(|| std::env::var(VARIABLE).ok()).as_deref() == Some(name) {
        eprintln!("msae: crash point `{name}` reached ({VARIABLE}); killing this process");
        signal_hook::low_level::raise(signal_hook::consts::SIGKILL).ok();
        std::process::abort();
    }
}
