//! `iommu-trace replay`: a capture through the reference page-table models
//! (`replay::replay_file`), with a progress bar for large captures on a terminal.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Result;

use crate::replay::{replay_file, Choice, Report};

/// Captures larger than this get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 8 << 20;

/// Replays `path`. Events after a damaged frame are not read; the warning (with its byte
/// offset) goes to stderr and the report covers what was read.
pub fn run(path: &Path, choice: &Choice) -> Result<Report> {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let bar = (size >= PROGRESS_MIN_BYTES && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {msg}: {human_pos} events ({per_sec})",
        ) {
            bar.set_style(style);
        }
        bar.set_message(format!("replaying {}", path.display()));
        bar
    });
    let done = replay_file(path, choice, |n| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(warning) = &done.warning {
        super::warn(path, warning);
    }
    Ok(done.report)
}
