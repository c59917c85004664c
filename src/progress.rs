//! Progress on stderr: the only user of `indicatif`.
//!
//! Bars show only when stderr is a terminal and `--quiet` is off; log lines written
//! through [`LogWriter`] suspend the bars so the two never mix.

use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

static MULTI: OnceLock<MultiProgress> = OnceLock::new();
static ENABLED: OnceLock<bool> = OnceLock::new();

/// Turns progress display on or off for the process; call once, before any bar.
pub fn init(quiet: bool) {
    let enabled = !quiet && io::stderr().is_terminal();
    let _ = ENABLED.set(enabled);
    let multi = MultiProgress::with_draw_target(if enabled {
        ProgressDrawTarget::stderr_with_hz(4)
    } else {
        ProgressDrawTarget::hidden()
    });
    let _ = MULTI.set(multi);
}

fn multi() -> &'static MultiProgress {
    MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::hidden()))
}

/// A cheap handle to one progress line; silent where display is off.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A counter without a known total: `{prefix} {count} {unit} ({rate}/s) {message}`.
    pub fn counter(prefix: &str, unit: &str) -> Self {
        let bar = multi().add(ProgressBar::no_length());
        let style = ProgressStyle::with_template(&format!(
            "{{spinner}} {{prefix}} {{human_pos}} {unit} ({{per_sec}}) {{elapsed_precise}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_prefix(prefix.to_owned());
        if *ENABLED.get().unwrap_or(&false) {
            bar.enable_steady_tick(Duration::from_millis(250));
        }
        Progress { bar }
    }

    /// A bar towards a known total.
    pub fn bar(prefix: &str, total: u64, unit: &str) -> Self {
        let bar = multi().add(ProgressBar::new(total));
        let style = ProgressStyle::with_template(&format!(
            "{{prefix}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(prefix.to_owned());
        Progress { bar }
    }

    /// Adds `n` to the position.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Sets the trailing message.
    pub fn message(&self, msg: String) {
        self.bar.set_message(msg);
    }

    /// Removes the line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A `tracing` writer to stderr that suspends the progress bars while it writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        multi().suspend(|| io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}
