//! Progress display: one overall bar for the run plus one line per running instance, drawn on
//! a terminal; silent otherwise or under `--quiet`.
//!
//! A step draws into the line of its instance ([`Progress::for_instance`]): the bar it asks for
//! with [`Progress::bar`] *is* that line. The bars keep counting when nothing is drawn, so the
//! runner can publish each running instance's position and ETA for `msae status` either way
//! (it reads the line through [`Progress::line`]). The handle lives with the steps because
//! they draw into it; the runner, above them, creates and observes it.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
    /// `--quiet`: no per-instance lines either.
    quiet: bool,
    /// The line of the instance this handle belongs to, if any.
    slot: Option<ProgressBar>,
}

const BAR: &str = "{spinner} {msg:40!} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}";
const SPINNER: &str = "{spinner} {msg:40!} {elapsed}";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("=> ")
}

impl Progress {
    /// Bars are shown only when stderr is a terminal and the user did not ask for quiet.
    pub fn new(quiet: bool) -> Progress {
        let show = !quiet && std::io::stderr().is_terminal();
        Progress {
            multi: show.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            quiet,
            slot: None,
        }
    }

    /// No bars; per-instance lines still go to stderr unless `quiet`.
    pub fn hidden(quiet: bool) -> Progress {
        Progress {
            multi: None,
            quiet,
            slot: None,
        }
    }

    /// A handle for one running instance: a line of its own (a spinner with its name until the
    /// step asks for a bar).
    pub fn for_instance(&self, name: &str) -> Progress {
        let line = match &self.multi {
            Some(m) => {
                let b = m.add(ProgressBar::new_spinner());
                b.enable_steady_tick(Duration::from_millis(200));
                b
            }
            None => ProgressBar::hidden(),
        };
        line.set_style(style(SPINNER));
        line.set_message(name.to_string());
        Progress {
            multi: self.multi.clone(),
            quiet: self.quiet,
            slot: Some(line),
        }
    }

    /// A bar of `len` units: the instance's own line when this handle has one, else a new line;
    /// hidden (but counting) when progress is off.
    pub fn bar(&self, len: u64, message: &str) -> ProgressBar {
        let bar = match (&self.slot, &self.multi) {
            (Some(line), _) => {
                line.reset();
                line.set_length(len);
                line.clone()
            }
            (None, Some(m)) => {
                let b = m.add(ProgressBar::new(len));
                b.enable_steady_tick(Duration::from_millis(200));
                b
            }
            (None, None) => ProgressBar::hidden(),
        };
        bar.set_length(len);
        bar.set_style(style(BAR));
        bar.set_message(message.to_string());
        bar
    }

    /// Prints a per-instance line above the bars (plainly when there are none; nothing under
    /// `--quiet`).
    pub fn println(&self, line: &str) {
        if self.quiet {
            return;
        }
        self.warn(line);
    }

    /// Prints a line that `--quiet` does not silence (warnings).
    pub fn warn(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                m.println(line).ok();
            }
            None => eprintln!("{line}"),
        }
    }

    /// Removes this instance's line (the instance finished).
    pub fn finish(&self) {
        if let Some(line) = &self.slot {
            line.finish_and_clear();
            if let Some(m) = &self.multi {
                m.remove(line);
            }
        }
    }

    /// This instance's line, if the handle has one (for the runner's view of its position).
    pub fn line(&self) -> Option<&ProgressBar> {
        self.slot.as_ref()
    }
}
