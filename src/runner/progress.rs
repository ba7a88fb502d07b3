//! What the runner publishes about a running instance's progress line for `msae status`.

use crate::step::progress::Progress;
use crate::store::live::LiveProgress;

/// Where an instance's line stands: its message, position, length, elapsed time and ETA.
pub fn snapshot(progress: &Progress) -> Option<LiveProgress> {
    let line = progress.line()?;
    let length = line.length();
    let position = line.position();
    let eta = match length {
        Some(l) if l > 0 && position > 0 && position < l => Some(line.eta().as_secs_f64()),
        _ => None,
    };
    Some(LiveProgress {
        message: line.message(),
        position,
        length,
        elapsed_seconds: line.elapsed().as_secs_f64(),
        eta_seconds: eta,
    })
}
