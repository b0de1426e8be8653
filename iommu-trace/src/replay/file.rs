//! Replaying a capture file: the one path that `iommu-trace replay`, `serve --verify`,
//! `top --from` and the golden tests take, so that they cannot disagree. The kernel
//! behaviour the models follow comes from the capture's session (what the traced kernel
//! contained) unless the user overrides it, and no verdict passes without the probe points
//! the verification needs.

use std::path::PathBuf;

use crate::capture::{CaptureError, CaptureHeader, CaptureSet, CaptureSource, Ending};
use crate::model::{KernelBehaviour, ModelSelect, SmmuBehaviour, VtdBehaviour};
use crate::session::{MissingPoint, Session, TOP_GROWTH_POINT};

use super::{replay_with_progress, ReplayOptions, Report, POINTS_OBJECTS, POINTS_VERIFIED};

/// What the user chose; behaviours left unset come from the capture.
#[derive(Clone, Copy, Debug, Default)]
pub struct Choice {
    pub model: ModelSelect,
    pub vtd: Option<VtdBehaviour>,
    pub smmu: Option<SmmuBehaviour>,
    pub what_if: bool,
}

/// The replay options for a capture with this header: the kernel behaviour its session
/// detected, overridden by the user's choice.
pub fn options_for(header: &CaptureHeader, choice: &Choice) -> ReplayOptions {
    options_for_session(header.session.as_ref(), choice)
}

/// The replay options for a session (a capture's, or this host's live one).
pub fn options_for_session(session: Option<&Session>, choice: &Choice) -> ReplayOptions {
    let detected = session
        .map(|s| KernelBehaviour::detected(s.features()))
        .unwrap_or_default();
    ReplayOptions {
        model: choice.model,
        behaviour: KernelBehaviour {
            vtd: choice.vtd.unwrap_or(detected.vtd),
            smmu: choice.smmu.unwrap_or(detected.smmu),
        },
        what_if: choice.what_if,
        top_growth: session.is_some_and(|s| s.records(TOP_GROWTH_POINT)),
        ..Default::default()
    }
}

/// The probe points the verification needs that recorded nothing in `session`. When the
/// session is unknown (a capture header whose session record is unreadable: `Err(why)`)
/// that is a gap too: a verdict never passes what cannot be shown to have been recorded.
pub fn verification_gaps(session: Result<&Session, &str>) -> Vec<MissingPoint> {
    match session {
        Err(problem) => vec![MissingPoint {
            point: "(every point)".into(),
            why: format!("unknown: {problem}"),
        }],
        Ok(session) => session
            .missing_points()
            .into_iter()
            .filter(|m| POINTS_VERIFIED.contains(&m.point.as_str()))
            .collect(),
    }
}

/// `verification_gaps` of a capture.
pub fn capture_gaps(header: &CaptureHeader) -> Vec<MissingPoint> {
    verification_gaps(
        header.session.as_ref().ok_or(
            header
                .session_problem
                .as_deref()
                .unwrap_or("the header records no tracing session"),
        ),
    )
}

/// A replayed capture, and why the events after some point were not read, if they were not.
pub struct FileReport {
    pub report: Report,
    /// The reader's warning (a damaged or truncated capture, with the byte offset).
    pub warning: Option<String>,
}

/// Replays the capture in `files` (one file, or the parts of a rotated recording);
/// `progress` is called with the events done so far. Events after a damaged frame are not
/// read: `warning` says so, and the report covers what was read.
pub fn replay_file(
    files: &[PathBuf],
    choice: &Choice,
    progress: impl FnMut(u64),
) -> Result<FileReport, CaptureError> {
    Ok(replay_reader(CaptureSet::open(files)?, choice, progress))
}

/// [`replay_file`] of a capture already opened (files, or bytes in memory).
pub fn replay_reader(
    mut reader: impl CaptureSource,
    choice: &Choice,
    progress: impl FnMut(u64),
) -> FileReport {
    let opts = options_for(reader.header(), choice);
    let missing_points = capture_gaps(reader.header());
    let events = reader.by_ref().map_while(Result::ok);
    let mut report = replay_with_progress(events, &opts, progress);
    report.missing_points = missing_points;
    if let (Some(objects), Some(session)) = (&mut report.objects, &reader.header().session) {
        let mut gaps: Vec<String> = session
            .missing_points()
            .iter()
            .filter(|m| POINTS_OBJECTS.contains(&m.point.as_str()))
            .map(|m| format!("probe point {m} recorded nothing"))
            .collect();
        // One type's destroy op missing is enough: its objects would look immortal.
        if let Some(p) = session.plan.point("object_destroy") {
            let refused = session.refused.iter().filter(|r| {
                !matches!(r.fallback, crate::session::Fallback::Attached { .. })
                    && p.attach.iter().any(|a| a.symbol == r.symbol)
            });
            gaps.extend(
                p.gaps
                    .iter()
                    .map(|g| format!("{} not traced: {}", g.symbol, g.reason))
                    .chain(refused.map(|r| format!("{} refused: {}", r.symbol, r.error))),
            );
        }
        if let Some(pid) = session.filter_pid {
            gaps.push(format!(
                "recorded with --pid {pid}: what other processes did to its objects is not in it"
            ));
        }
        if !gaps.is_empty() {
            objects.set_unchecked(gaps.join("; "));
        }
    }
    if let (Some(pins), Some(session)) = (&mut report.pins, &reader.header().session) {
        let mut gaps: Vec<String> = session
            .missing_points()
            .iter()
            .filter(|m| m.point == "pin_accounting")
            .map(|m| format!("probe point {m} recorded nothing"))
            .collect();
        if let Some(pid) = session.filter_pid {
            gaps.push(format!(
                "recorded with --pid {pid}: other processes' calls on its mappings are not in it"
            ));
        }
        if !gaps.is_empty() {
            pins.set_unchecked(gaps.join("; "));
        }
    }
    report.incomplete = incomplete(reader.ending());
    let warning = reader
        .ending()
        .and_then(|e| e.warning())
        .map(|w| w.to_string());
    FileReport { report, warning }
}

/// Why a capture that ended like this cannot be verified whole (empty when it can).
fn incomplete(ending: Option<&Ending>) -> Vec<String> {
    match ending {
        None => vec!["the capture could not be read to its end".into()],
        Some(Ending::Incomplete(w)) => vec![w.to_string()],
        // Loss the stream's `lost` events show is counted from them; the trailer can report
        // more (drops counted at close that no `lost` event carried).
        Some(Ending::Finalized { trailer, .. })
            if trailer.lost_reported.total() > trailer.lost_in_stream.total() =>
        {
            vec![format!(
                "the recorder reported {} event(s) lost at close ({} ring buffer full, {} \
                 context table full), more than the capture's {} lost event(s) show",
                trailer.lost_reported.total(),
                trailer.lost_reported.ringbuf_full,
                trailer.lost_reported.context_full,
                trailer.lost_in_stream.total()
            )]
        }
        Some(Ending::Finalized { .. }) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{KernelBehaviour, SmmuBehaviour, VtdBehaviour};
    use crate::session::KernelFeatures;

    #[test]
    fn behaviour_follows_the_detected_features() {
        let b = KernelBehaviour::detected(&KernelFeatures::default());
        assert_eq!(
            (b.vtd, b.smmu),
            (VtdBehaviour::Legacy, SmmuBehaviour::V6_12)
        );
        let b = KernelBehaviour::detected(&KernelFeatures {
            vtd_generic_pt: true,
            ..Default::default()
        });
        assert_eq!(b.vtd, VtdBehaviour::GenericPt);
        let b = KernelBehaviour::detected(&KernelFeatures {
            vtd_generic_pt: true,
            generic_pt_whole_range_unmap: true,
            io_pgtable_arm_concat_mandatory: true,
            unknown: vec![],
        });
        assert_eq!(
            (b.vtd, b.smmu),
            (VtdBehaviour::GenericPtWholeRange, SmmuBehaviour::V7)
        );
    }
}
