//! `iommu-trace replay`: a capture through the reference page-table models
//! (`replay::replay_file`), with a progress bar for large captures on a terminal.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;

use crate::capture::CaptureSet;
use crate::replay::{replay_reader, Choice, Report};

/// Captures larger than this get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 8 << 20;

/// Replays the capture in `files` (one, or a rotated set). Events after a damaged frame are
/// not read; the warning (with its file and byte offset) goes to stderr and the report covers
/// what was read.
pub fn run(files: &[PathBuf], choice: &Choice) -> Result<Report> {
    let size: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let reader = CaptureSet::open(files)?;
    let name = reader.name().to_string();
    let bar = (size >= PROGRESS_MIN_BYTES && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {msg}: {human_pos} events ({per_sec})",
        ) {
            bar.set_style(style);
        }
        bar.set_message(format!("replaying {name}"));
        bar
    });
    let done = replay_reader(reader, choice, |n| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(warning) = &done.warning {
        super::warn(&name, warning);
    }
    Ok(done.report)
}
