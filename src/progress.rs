//! Progress on a terminal: listing, reading manifests, deleting. Hidden when
//! stderr is not a terminal (cron, CI) or when asked to be quiet, so that output
//! stays machine-friendly.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A progress display on stderr if it is a terminal and `enabled`.
    pub fn new(enabled: bool) -> Self {
        let visible = enabled && std::io::stderr().is_terminal();
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar }
    }

    pub fn hidden() -> Self {
        Progress {
            bar: ProgressBar::hidden(),
        }
    }

    pub fn set_listing_prefixes(&self, prefixes: u64) {
        self.bar.set_style(
            ProgressStyle::with_template("{spinner} listing {pos} keys ({msg}) {elapsed}")
                .expect("valid template"),
        );
        self.bar.set_message(format!("{prefixes} prefixes"));
    }

    pub fn listed_keys(&self, n: u64) {
        self.bar.inc(n);
    }

    pub fn start_phase(&self, what: &str, total: u64) {
        self.bar.reset();
        self.bar.set_length(total);
        self.bar.set_position(0);
        let template = format!("{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {{elapsed}}");
        self.bar.set_style(
            ProgressStyle::with_template(&template)
                .expect("valid template")
                .progress_chars("=> "),
        );
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress {
    pub fn inc_length(&self, n: u64) {
        self.bar.inc_length(n);
    }
}
