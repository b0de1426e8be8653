//! `iommu-trace inspect`: print a capture as text or JSON lines, or its summary.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::capture::inspect::{dump, Format, Summary};
use crate::capture::{CaptureSet, CaptureSource};

/// Prints the events (unless `summary_only`) and returns the summary. A damaged capture is
/// read up to its last good frame; the warning (with the byte offset) goes to stderr.
pub fn run(
    files: &[PathBuf],
    format: Format,
    summary_only: bool,
    out: &mut dyn Write,
) -> Result<Summary> {
    let mut reader = CaptureSet::open(files)?;
    let name = reader.name().to_string();
    let missing_points = reader.header().missing_points();
    if let Some(problem) = &reader.header().session_problem {
        super::warn(
            &name,
            format_args!("{problem}: which probe points recorded is unknown"),
        );
    }
    let mut summary = if summary_only {
        let mut summary = Summary::new();
        for item in reader.by_ref() {
            let Ok(ev) = item else { break };
            summary.add(&ev);
        }
        summary.set_ending(reader.ending());
        summary
    } else {
        let mut out = std::io::BufWriter::new(out);
        let s = dump(&mut reader, format, &mut out).context("writing the events")?;
        out.flush()?;
        s
    };
    summary.missing_points = missing_points;
    if let Some(warning) = reader.ending().and_then(|e| e.warning()) {
        super::warn(&name, warning);
    }
    Ok(summary)
}
