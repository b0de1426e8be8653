//! The capture header: where and how a capture was recorded, and the tracing session
//! (`crate::session::Session`: the plan and what the kernel refused). Stored as JSON in the
//! file's first frame.
//!
//! Format 2 stores the session under `session`. Format 1 stored the probe plan untyped
//! under `probe_plan` and the attach failures under `attach_failed`; they are read into the
//! same [`Session`]. A session record that does not parse is not fatal (the events still
//! read) but is never silent: [`CaptureHeader::session_problem`] says why, and the
//! consumers show it and give no verdict that depends on it.

use serde::{Deserialize, Serialize};

use crate::session::{MissingPoint, Plan, Refusal, Session};

/// The matching CLOCK_MONOTONIC and CLOCK_REALTIME readings, to turn event times
/// (monotonic) into wall-clock times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockBase {
    pub monotonic_ns: u64,
    pub realtime_ns: u64,
}

impl ClockBase {
    /// Reads both clocks now.
    pub fn now() -> ClockBase {
        ClockBase {
            monotonic_ns: crate::events::clock::monotonic_ns(),
            realtime_ns: crate::events::clock::realtime_ns(),
        }
    }
}

/// What a capture says about where and how it was recorded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CaptureHeader {
    /// The iommu-trace version that wrote the file.
    pub tool_version: String,
    /// `uname -r` of the traced kernel.
    pub kernel_release: String,
    pub hostname: String,
    /// The recorder's command line.
    pub command_line: Vec<String>,
    /// Clock readings taken when recording started; event times are CLOCK_MONOTONIC.
    pub clock: ClockBase,
    /// Size of the kernel ring buffer, bytes.
    pub ringbuf_bytes: u64,
    /// The tracing session, when the header holds one this version reads.
    pub session: Option<Session>,
    /// Why the header's session record could not be read (`session` is then `None`).
    pub session_problem: Option<String>,
    /// Set when the file is one part of a rotated recording (`record --rotate-*`).
    pub rotation: Option<RotationPart>,
    /// Fields written by other versions, kept as they are.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The header as stored (both formats: `session` in 2, `probe_plan` + `attach_failed` in 1).
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    tool_version: String,
    #[serde(default)]
    kernel_release: String,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    command_line: Vec<String>,
    #[serde(default)]
    clock: ClockBase,
    #[serde(default)]
    ringbuf_bytes: u64,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    session: serde_json::Value,
    /// Format 3+: the format version again, inside the CRC-checked header, so that damage
    /// to the unchecked version field that makes another readable version is caught.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    format_version: Option<u32>,
    /// A part of a rotated set (format 5 files of this version on; older ones are whole
    /// recordings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotation: Option<RotationPart>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

/// Which part of which rotated recording a file is: the parts of one `record` share `set`
/// and are numbered from 0 without gaps, so a reader can order them and tell one missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPart {
    /// The recording's identity (a random UUID read from the kernel at its start).
    pub set: String,
    /// 0 for the first file of the recording.
    pub part: u64,
}

/// A format-1 attach failure: the reason was free text.
#[derive(Deserialize)]
struct V1Failure {
    symbol: String,
    reason: String,
}

impl CaptureHeader {
    /// A header describing this host and process now, for `session`: tool version, kernel
    /// release, hostname, command line and clock base are filled in.
    pub fn for_this_host(session: Session, ringbuf_bytes: u64) -> CaptureHeader {
        let proc_str = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        CaptureHeader {
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_release: crate::session::running_kernel_release(),
            hostname: proc_str("/proc/sys/kernel/hostname"),
            command_line: std::env::args().collect(),
            clock: ClockBase::now(),
            ringbuf_bytes,
            session: Some(session),
            session_problem: None,
            rotation: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Probe points that recorded nothing in this capture, with why (none known when the
    /// session is unreadable: see `session_problem`).
    pub fn missing_points(&self) -> Vec<MissingPoint> {
        self.session
            .as_ref()
            .map(Session::missing_points)
            .unwrap_or_default()
    }

    /// The header as the current format stores it.
    pub(super) fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let session = match &self.session {
            Some(s) => serde_json::to_value(s)?,
            None => serde_json::Value::Null,
        };
        serde_json::to_vec(&Stored {
            tool_version: self.tool_version.clone(),
            kernel_release: self.kernel_release.clone(),
            hostname: self.hostname.clone(),
            command_line: self.command_line.clone(),
            clock: self.clock,
            ringbuf_bytes: self.ringbuf_bytes,
            session,
            format_version: Some(super::FORMAT_VERSION),
            rotation: self.rotation.clone(),
            extra: self.extra.clone(),
        })
    }

    /// Reads a header of format `version`. Only JSON that is not a header object fails;
    /// an unreadable session record is kept as `session_problem`.
    pub(super) fn from_json(json: &[u8], version: u32) -> serde_json::Result<CaptureHeader> {
        let stored: Stored = serde_json::from_slice(json)?;
        if let Some(v) = stored.format_version.filter(|v| *v != version) {
            return Err(serde::de::Error::custom(format!(
                "the header says format version {v}, the file's version field {version}"
            )));
        }
        let mut h = CaptureHeader {
            tool_version: stored.tool_version,
            kernel_release: stored.kernel_release,
            hostname: stored.hostname,
            command_line: stored.command_line,
            clock: stored.clock,
            ringbuf_bytes: stored.ringbuf_bytes,
            session: None,
            session_problem: None,
            rotation: stored.rotation,
            extra: stored.extra,
        };
        let session = if version == 1 {
            h.session_from_v1()
        } else if stored.session.is_null() {
            Err("the header records no tracing session".to_string())
        } else {
            serde_json::from_value(stored.session.clone()).map_err(|e| {
                // Kept as read, for a newer version to make sense of.
                h.extra.insert("session".into(), stored.session);
                format!("its session record does not parse: {e}")
            })
        };
        match session {
            Ok(s) => h.session = Some(s),
            Err(problem) => h.session_problem = Some(problem),
        }
        Ok(h)
    }

    /// Format 1: the plan under `probe_plan`, the attach failures under `attach_failed`.
    /// They leave `extra` only once they have parsed, so an unreadable one is kept as read.
    fn session_from_v1(&mut self) -> Result<Session, String> {
        let plan = match self.extra.get("probe_plan") {
            None | Some(serde_json::Value::Null) => {
                return Err("the header records no probe plan".into())
            }
            Some(v) => serde_json::from_value::<Plan>(v.clone())
                .map_err(|e| format!("its probe plan does not parse: {e}"))?,
        };
        let refused = match self.extra.get("attach_failed") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(v) => serde_json::from_value::<Vec<V1Failure>>(v.clone())
                .map_err(|e| format!("its list of refused attachments does not parse: {e}"))?
                .into_iter()
                .map(|f| Refusal::from_v1_text(&f.symbol, &f.reason))
                .collect(),
        };
        self.extra.remove("probe_plan");
        self.extra.remove("attach_failed");
        Ok(Session {
            plan,
            refused,
            filter_pid: None,
        })
    }
}

/// Events lost, by cause (as in [`Lost`](crate::events::Lost)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostTotals {
    pub ringbuf_full: u64,
    pub context_full: u64,
}

impl LostTotals {
    pub fn total(&self) -> u64 {
        self.ringbuf_full.saturating_add(self.context_full)
    }
}

/// The last record of a cleanly finished capture. Stored as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trailer {
    /// Events in the file.
    pub events: u64,
    /// Sum of the `lost` events in the file.
    #[serde(default)]
    pub lost_in_stream: LostTotals,
    /// Loss the recorder reported at close (e.g. the per-CPU kernel counters), which can
    /// include drops that no `lost` event reported.
    #[serde(default)]
    pub lost_reported: LostTotals,
    /// Clock readings taken when recording stopped, if the recorder gave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<ClockBase>,
}
