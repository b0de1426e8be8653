//! The capture file: what `iommu-trace record` writes and `inspect` / `replay` read.
//!
//! A capture holds the same [`Event`](crate::events::Event) stream a live session sees, so that
//! every consumer takes one stream whatever its source. Reading a capture back yields exactly
//! the `Event` values that were written, every field included.
//!
//! # Layout (format versions 1 to 4)
//!
//! All integers in fixed-size fields are little-endian.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "IOMMUTRC"
//! 8       4     format version, u32 (1 to 4)
//! 12      ...   header frame: its payload is the JSON object `CaptureHeader` (header.rs:
//!               versions 1 and 2 differ only in how it records the tracing session; 3
//!               adds the object records below, 4 the pinned-memory records)
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
//! | 24..=26 | event (version 3) | `object_alloc`, `object_abort`, `object_destroy` |
//! | 27..=29 | event (version 4) | an IOAS operation (`ioas_map`, `ioas_map_file`, `ioas_copy`, `ioas_unmap`, `ioas_change_process`), `option`, `pin` |
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
//!   {driver_fields} (0x10; count, then name and value pairs), {viommu_id} (0x20, version 3;
//!   op 3 is `viommu_nested`).
//! - `hwpt_alloc`: flags, dev_id, pt_id, data_type, data_len, hwpt_id, `[errno]` (0x04 = 0), latency_ns.
//! - `domain_free`: domain, latency_ns.
//! - `lost`: ringbuf_full, context_full.
//! - `object_alloc`: object (string), id, obj, ictx, `[errno]` (0x04 = 0), size, latency_ns,
//!   the number of references (at most 16) then name (string) and id pairs, {domain} (0x08),
//!   {virt_id} (0x10).
//! - `object_abort`: object, id, obj, ictx, size, {errno} (0x20).
//! - `object_destroy`: object, id, obj, how (one byte: destroy, unbind, close, put).
//! - IOAS operation: op (one byte: map, map_file, copy, unmap, change_process), ictx, ioas,
//!   iova, length, flags, `[errno]` (0x04 = 0), latency_ns, {user_va} (0x08), {fd} (0x10,
//!   as u32), {start} (0x20), {src_ioas} (0x40), {src_iova} (0x80).
//! - `option`: ictx, option (string), op (string), object_id, val64, `[errno]` (0x04 = 0),
//!   latency_ns.
//! - `pin`: iopt_pages, pages (zigzag), bytes (zigzag), charged (zigzag), mode (one byte: none, user, mm),
//!   target_pid, {target_uid} (0x08), {target_mm} (0x10, a pointer), {limit_bytes} (0x20),
//!   locked_bytes, pinned_pages, total_pages, pinned_vm_bytes, `[errno]` (0x04 = 0),
//!   latency_ns.
//!
//! A reader that meets a tag or a version it does not know stops with an error saying so; new
//! record kinds need a new format version.

mod codec;
mod header;
pub mod inspect;
pub mod pace;
mod reader;
mod rotate;
mod set;
mod writer;

#[cfg(test)]
mod tests;

pub use header::{CaptureHeader, ClockBase, LostTotals, RotationPart, Trailer};
pub use reader::{read_all, CaptureReader, CaptureSource, CaptureWarning, Ending, StopReason};
pub use rotate::{part_path, RecordingWriter, Rotation};
pub use set::CaptureSet;
pub use writer::{CaptureWriter, FinishInfo, WriteStats};

/// The first eight bytes of every capture file.
pub const MAGIC: [u8; 8] = *b"IOMMUTRC";
/// The format version this build writes (and the newest it reads). 2: the header records
/// the typed tracing session (`session`) instead of the untyped probe plan. 3: iommufd
/// object records (tags 24 to 26). 4: IOAS operation, option and pin records (27 to 29).
pub const FORMAT_VERSION: u32 = 5;
/// The oldest format version this build reads.
pub const MIN_FORMAT_VERSION: u32 = 1;
/// Largest frame payload a reader accepts.
pub const MAX_FRAME_LEN: u32 = 64 << 20;

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
    #[error("{0}")]
    NotOneSet(String),
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
