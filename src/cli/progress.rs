//! Progress for the shell's long work (an import's upload and the server's turn, an export, a
//! ledger check): a bar or a spinner on stderr while a person watches a terminal, nothing at
//! all when stderr is a file or a pipe, so scripts and logs see only the result.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over a known number of bytes, or a spinner counting them when the total is unknown.
pub fn bytes(total: Option<u64>, what: &str) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(style(
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta})",
        )),
        None => ProgressBar::new_spinner().with_style(style(
            "{spinner} {msg} {binary_bytes} ({binary_bytes_per_sec})",
        )),
    };
    shown(bar.with_message(what.to_owned()))
}

/// A spinner for work whose end is not known, with the time it has taken.
pub fn waiting(what: &str) -> ProgressBar {
    let spinner = ProgressBar::new_spinner()
        .with_style(style("{spinner} {msg} ({elapsed})"))
        .with_message(what.to_owned());
    spinner.enable_steady_tick(Duration::from_millis(120));
    shown(spinner)
}

/// A spinner counting things (entities, records) as they pass.
pub fn counting(what: &str) -> ProgressBar {
    shown(
        ProgressBar::new_spinner()
            .with_style(style("{spinner} {msg} {human_pos} ({per_sec})"))
            .with_message(what.to_owned()),
    )
}

/// Drawn on stderr only when it is a terminal.
fn shown(bar: ProgressBar) -> ProgressBar {
    let target = match std::io::stderr().is_terminal() {
        true => ProgressDrawTarget::stderr(),
        false => ProgressDrawTarget::hidden(),
    };
    bar.set_draw_target(target);
    bar
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .progress_chars("=> ")
}
