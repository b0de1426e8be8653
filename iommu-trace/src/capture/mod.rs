//! The capture file: what `iommu-trace record` writes and `inspect` / `replay` read.
//!
//! A capture holds the same [`Event`](crate::events::Event) stream a live session sees, so that
//! every consumer takes one stream whatever its source. Reading a capture back yields exactly
//! the `Event` values that were written, every field included.
//!
//! # Layout (format version 1)
//!
//! All integers in fixed-size fields are little-endian.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "IOMMUTRC"
//! 8       4     format version, u32 (1)
//! 12      ...   header frame: its payload is the JSON object `CaptureHeader`
//! ...     ...   record frames, each: u32 payload length, u32 CRC-32, payload
//!               (the last frame of a cleanly finished file ends with the trailer record)
//! ```
//!
//! Frame: `len: u32` (1 ..= 64 MiB), `crc: u32` = CRC-32 (IEEE, as zlib/`crc32fast`) of the
//! four length bytes followed by the payload, then `len` payload bytes. Every frame is
//! checked on its own, so a file cut short loses at most its last, partial, frame and a
//! damaged frame is detected; reading stops at the first bad frame and reports its offset.
//! The writer closes a frame when it reaches 64 KiB and on every `flush()`
//! (at least once a second while events arrive).
//!
//! A record frame's payload is a sequence of records; a record never spans two frames.
//! Integers in records are LEB128 varints (unsigned) or zigzag varints (signed, and deltas).
//! Each record starts with a one-byte tag:
//!
//! | tag | record | contents |
//! |-----|--------|----------|
//! | 0 | task | tid, pid, comm (varint length + UTF-8), cgroup_id: defines task index *n* (0, 1, ...) |
//! | 1 | pointer | a kernel pointer value: defines pointer index *n* (0, 1, ...) |
//! | 2 | reset | forget all task and pointer definitions and per-pointer predictions |
//! | 3 | trailer | varint length + JSON object `Trailer`; only on clean close, always last |
//! | 16..=23 | event | `domain_alloc`, `hwpt_alloc`, `domain_free`, `map`, `unmap`, `pt_alloc`, `pt_free`, `lost` |
//!
//! An event record is: tag, a flags byte, the timestamp as a zigzag delta from the previous
//! event's (the first one from the header's `clock.monotonic_ns`), the CPU unless flag 0x01
//! (same CPU as the previous event), the task index unless flag 0x02 (same task), then the
//! body. Kernel pointers in bodies are pointer indexes. The writer emits a task or pointer
//! record the first time it needs it, just before the event that uses it; the reader
//! rebuilds the same tables (and resets them when it reads a reset record, which the writer
//! emits when a table grows past its limit).
//!
//! Bodies (`[x]` is present only when its flag bit is clear, `{x}` only when set):
//!
//! - `map`/`unmap`: domain, `[iova]` (zigzag delta from the end of the previous map, resp.
//!   unmap, of that domain; flag 0x04 = equal), size (flag 0x40 = stored in 4 KiB pages),
//!   `[done]` (0x08 = equal to size), `[paddr]` (zigzag delta from the end of the previous map's
//!   physical range of that domain, 0 for unmaps; 0x20 = equal), `[errno]` (0x10 = 0), latency_ns.
//! - `pt_alloc`/`pt_free`: domain, `[pages]` (0x80 = 1), memcg_id unless 0x08 (= 0) or 0x10
//!   (= the event's cgroup_id); 0x04 = charged; bits 5-6 = cause (alloc, map, unmap, free).
//! - `domain_alloc`: driver (string), op, kind (one byte each), flags, data_type, data_len,
//!   {data} (0x08; a one-byte variant then its fields), parent, domain, `[errno]` (0x04 = 0),
//!   latency_ns, pgsize_bitmap, aperture_start, aperture_end, domain_type,
//!   {driver_fields} (0x10; count, then name and value pairs).
//! - `hwpt_alloc`: flags, dev_id, pt_id, data_type, data_len, hwpt_id, `[errno]` (0x04 = 0), latency_ns.
//! - `domain_free`: domain, latency_ns.
//! - `lost`: ringbuf_full, context_full.
//!
//! A reader that meets a tag or a version it does not know stops with an error saying so; new
//! record kinds need a new format version.

mod codec;
pub mod inspect;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use reader::{read_all, CaptureReader, CaptureWarning, Ending, StopReason};
pub use writer::{CaptureWriter, FinishInfo, WriteStats};

use serde::{Deserialize, Serialize};

/// The first eight bytes of every capture file.
pub const MAGIC: [u8; 8] = *b"IOMMUTRC";
/// The format version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u32 = 1;
/// The oldest format version this build reads.
pub const MIN_FORMAT_VERSION: u32 = 1;
/// Largest frame payload a reader accepts.
pub const MAX_FRAME_LEN: u32 = 64 << 20;

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
        fn read(clock: libc::clockid_t) -> u64 {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid, writable timespec; both clocks always exist on Linux.
            let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
            if rc != 0 {
                return 0;
            }
            (ts.tv_sec as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(ts.tv_nsec as u64)
        }
        let monotonic_ns = read(libc::CLOCK_MONOTONIC);
        let realtime_ns = read(libc::CLOCK_REALTIME);
        ClockBase {
            monotonic_ns,
            realtime_ns,
        }
    }

    /// The wall-clock time (ns since the Unix epoch) of a monotonic timestamp.
    pub fn realtime_of(&self, monotonic_ns: u64) -> i128 {
        self.realtime_ns as i128 + (monotonic_ns as i128 - self.monotonic_ns as i128)
    }
}

/// What a capture says about where and how it was recorded. Stored as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureHeader {
    /// The iommu-trace version that wrote the file.
    #[serde(default)]
    pub tool_version: String,
    /// `uname -r` of the traced kernel.
    #[serde(default)]
    pub kernel_release: String,
    #[serde(default)]
    pub hostname: String,
    /// The recorder's command line.
    #[serde(default)]
    pub command_line: Vec<String>,
    /// Clock readings taken when recording started; event times are CLOCK_MONOTONIC.
    #[serde(default)]
    pub clock: ClockBase,
    /// Size of the kernel ring buffer, bytes.
    #[serde(default)]
    pub ringbuf_bytes: u64,
    /// What was attached where (the probe plan, as `probe/` serializes it).
    #[serde(default)]
    pub probe_plan: serde_json::Value,
    /// Fields written by other versions, kept as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl CaptureHeader {
    /// The recorder's probe plan and the attachments the kernel refused at attach time;
    /// `None` when the header holds no plan this version reads.
    pub fn plan(&self) -> Option<(crate::probe::Plan, Vec<crate::probe::plan::Gap>)> {
        let plan = serde_json::from_value(self.probe_plan.clone()).ok()?;
        let failed = self
            .extra
            .get("attach_failed")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        Some((plan, failed))
    }

    /// Probe points that recorded nothing in this capture, with why.
    pub fn missing_points(&self) -> Vec<crate::probe::plan::MissingPoint> {
        self.plan()
            .map(|(plan, failed)| plan.missing_points(&failed))
            .unwrap_or_default()
    }

    /// A header describing this host and process now: tool version, kernel release,
    /// hostname, command line and clock base are filled in.
    pub fn for_this_host(probe_plan: serde_json::Value, ringbuf_bytes: u64) -> CaptureHeader {
        let proc_str = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        CaptureHeader {
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_release: proc_str("/proc/sys/kernel/osrelease"),
            hostname: proc_str("/proc/sys/kernel/hostname"),
            command_line: std::env::args().collect(),
            clock: ClockBase::now(),
            ringbuf_bytes,
            probe_plan,
            extra: serde_json::Map::new(),
        }
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

/// Why a capture could not be written, or could not be opened at all.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{what} is not an iommu-trace capture file ({detail}); give this command a file \
         written by `iommu-trace record -o FILE`"
    )]
    NotACapture { what: String, detail: String },
    #[error(
        "{what} is an iommu-trace capture in format version {found}, but this iommu-trace \
         ({tool_version}) reads versions {min} to {max} only; {advice}"
    )]
    UnsupportedVersion {
        what: String,
        found: u32,
        min: u32,
        max: u32,
        tool_version: &'static str,
        advice: &'static str,
    },
    #[error(
        "{what} is an iommu-trace capture whose header is damaged or incomplete ({reason}); \
         it cannot be read without its header: record it again"
    )]
    BadHeader { what: String, reason: String },
    #[error("an event record of {0} bytes does not fit in a capture frame")]
    RecordTooLarge(usize),
    #[error("the capture writer failed earlier, so the file is incomplete; start a new capture")]
    WriterFailed,
}

impl CaptureError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> CaptureError {
        CaptureError::Io {
            what: what.into(),
            source,
        }
    }
}

/// CRC of a frame: over its length field, then its payload.
pub(crate) fn frame_crc(len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}
