//! Reading a capture back.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::codec::{Dec, Decoded, Decoder};
use super::{
    frame_crc, CaptureError, CaptureHeader, Trailer, FORMAT_VERSION, MAGIC, MAX_FRAME_LEN,
    MIN_FORMAT_VERSION,
};
use crate::events::Event;

/// Why reading stopped before a clean end.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StopReason {
    #[error(
        "the file ends inside a frame ({0}): the recording was cut short (crash, kill or full \
         disk) and its last frame is lost"
    )]
    Truncated(String),
    #[error(
        "frame checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file \
         is corrupted here"
    )]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("impossible frame length {0}: the file is corrupted here")]
    BadFrameLength(u32),
    #[error("undecodable record: {0}")]
    Undecodable(String),
    #[error(
        "the file ends without a trailer: the recorder did not finish cleanly (crash or kill), \
         but every frame in it is intact"
    )]
    NoTrailer,
    #[error("there are bytes after the trailer, which should end the file")]
    DataAfterTrailer,
    #[error("read error: {0}")]
    Io(String),
    #[error(
        "the recording's first {0} rotated part(s) are not among the files read (removed by \
         --rotate-keep, or not given): what happened before this stream began is not in it"
    )]
    EarlierPartsMissing(u64),
}

/// Where and why reading stopped early: a warning to print; the events before it are good.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}capture reading stopped at byte offset {offset}, after {events} events: {reason}",
    .file.as_deref().map(|f| format!("{f}: ")).unwrap_or_default()
)]
pub struct CaptureWarning {
    /// The file it is in, when the capture is a set of several (a rotated recording).
    pub file: Option<String>,
    /// Byte offset in the file of the frame (or record) that could not be read.
    pub offset: u64,
    /// Events read before it.
    pub events: u64,
    pub reason: StopReason,
}

/// How a capture ended, once it has been read to its end.
#[derive(Clone, Debug, PartialEq)]
pub enum Ending {
    /// Finished cleanly: the trailer was read, at the end of the file.
    Finalized { trailer: Trailer, file_len: u64 },
    /// Cut short, damaged, or never finished.
    Incomplete(CaptureWarning),
}

impl Ending {
    pub fn is_finalized(&self) -> bool {
        matches!(self, Ending::Finalized { .. })
    }

    pub fn warning(&self) -> Option<&CaptureWarning> {
        match self {
            Ending::Finalized { .. } => None,
            Ending::Incomplete(w) => Some(w),
        }
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Finalized { trailer, file_len } => write!(
                f,
                "finalized ({} events, {file_len} bytes, {} lost reported at close)",
                trailer.events,
                trailer.lost_reported.total()
            ),
            Ending::Incomplete(w) => write!(f, "{w}"),
        }
    }
}

/// A capture being read, one file ([`CaptureReader`]) or a rotated set of them
/// ([`CaptureSet`](super::CaptureSet)): its header, its events, then how it ended. Every
/// consumer of a capture reads through this.
pub trait CaptureSource: Iterator<Item = Result<Event, CaptureWarning>> {
    fn header(&self) -> &CaptureHeader;
    /// How the capture ended; `None` until the iterator has reached its end.
    fn ending(&self) -> Option<&Ending>;
}

impl<R: Read> CaptureSource for CaptureReader<R> {
    fn header(&self) -> &CaptureHeader {
        &self.header
    }

    fn ending(&self) -> Option<&Ending> {
        self.ending.as_ref()
    }
}

/// Reads a capture: the header at open, then the events as an iterator.
///
/// The iterator yields `Ok(event)` for every event up to the last good frame. If the file
/// does not end cleanly (truncated, corrupted, no trailer) it then yields one
/// `Err(CaptureWarning)`, naming the byte offset where it stopped and why, and ends.
/// It never panics on bad input. After the end, [`ending`](CaptureReader::ending) says how
/// the file ended.
pub struct CaptureReader<R: Read> {
    src: R,
    header: CaptureHeader,
    version: u32,
    /// Bytes consumed from `src`.
    offset: u64,
    /// Payload of the current frame and the position of the next record in it.
    frame: Vec<u8>,
    pos: usize,
    frame_start: u64,
    dec: Decoder,
    events: u64,
    trailer: Option<Trailer>,
    ending: Option<Ending>,
}

impl CaptureReader<BufReader<File>> {
    /// Opens `path` and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<CaptureReader<BufReader<File>>, CaptureError> {
        let path = path.as_ref();
        let what = path.display().to_string();
        // Before opening: opening a FIFO blocks until a writer comes.
        if let Some(kind) = crate::files::not_regular(path) {
            return Err(CaptureError::NotACapture {
                what,
                detail: format!("it is {kind}, not a regular file"),
            });
        }
        let file = File::open(path).map_err(|e| CaptureError::io(&what, e))?;
        CaptureReader::with_name(BufReader::with_capacity(256 << 10, file), what)
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads the header from `src`.
    pub fn new(src: R) -> Result<CaptureReader<R>, CaptureError> {
        CaptureReader::with_name(src, "the input".into())
    }

    /// Like `new`; `what` names the input in errors.
    pub fn with_name(mut src: R, what: String) -> Result<CaptureReader<R>, CaptureError> {
        let mut start = [0u8; 12];
        let n = read_full(&mut src, &mut start).map_err(|e| CaptureError::io(&what, e))?;
        let got = &start[..n];
        if n < MAGIC.len() || start[..8] != MAGIC {
            if !got.is_empty() && MAGIC.starts_with(got) {
                return Err(CaptureError::BadHeader {
                    what,
                    reason: format!("the file ends after {n} bytes"),
                });
            }
            return Err(CaptureError::NotACapture {
                detail: describe_start(got),
                what,
            });
        }
        if n < 12 {
            return Err(CaptureError::BadHeader {
                what,
                reason: format!("the file ends after {n} bytes, inside the format version"),
            });
        }
        let version = u32::from_le_bytes(start[8..12].try_into().expect("4 bytes"));
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(CaptureError::UnsupportedVersion {
                what,
                found: version,
                min: MIN_FORMAT_VERSION,
                max: FORMAT_VERSION,
                tool_version: env!("CARGO_PKG_VERSION"),
                advice: if version > FORMAT_VERSION {
                    "it was written by a newer iommu-trace: read it with that version, or \
                     upgrade this one"
                } else {
                    "no iommu-trace release writes that version: the file is damaged"
                },
            });
        }
        let mut frame = Vec::new();
        let header = match read_frame(&mut src, &mut frame) {
            Ok(Some(_)) => {
                CaptureHeader::from_json(&frame, version).map_err(|e| CaptureError::BadHeader {
                    what: what.clone(),
                    reason: format!("header is not valid JSON: {e}"),
                })?
            }
            Ok(None) => {
                return Err(CaptureError::BadHeader {
                    what,
                    reason: "the file ends before its header".into(),
                })
            }
            Err((reason, _)) => {
                return Err(CaptureError::BadHeader {
                    what,
                    reason: reason.to_string(),
                })
            }
        };
        let offset = 12 + 8 + frame.len() as u64;
        Ok(CaptureReader {
            src,
            dec: Decoder::new(header.clock.monotonic_ns, version),
            header,
            version,
            offset,
            frame: Vec::new(),
            pos: 0,
            frame_start: offset,
            events: 0,
            trailer: None,
            ending: None,
        })
    }

    /// The file's format version.
    pub fn version(&self) -> u32 {
        self.version
    }

    fn stop(&mut self, offset: u64, reason: StopReason) -> CaptureWarning {
        let w = CaptureWarning {
            file: None,
            offset,
            events: self.events,
            reason,
        };
        self.frame.clear();
        self.pos = 0;
        self.ending = Some(Ending::Incomplete(w.clone()));
        w
    }
}

impl<R: Read> Iterator for CaptureReader<R> {
    type Item = Result<Event, CaptureWarning>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ending.is_some() {
            return None;
        }
        loop {
            if self.pos < self.frame.len() {
                let at = self.frame_start + 8 + self.pos as u64;
                if self.trailer.is_some() {
                    let reason = StopReason::Undecodable("records after the trailer".into());
                    return Some(Err(self.stop(at, reason)));
                }
                let mut d = Dec::new(&self.frame[self.pos..]);
                match self.dec.decode(&mut d) {
                    Ok(decoded) => {
                        self.pos += d.pos;
                        match decoded {
                            Some(Decoded::Event(e)) => {
                                self.events += 1;
                                return Some(Ok(e));
                            }
                            Some(Decoded::Trailer(t)) => {
                                if t.events != self.events {
                                    let reason = StopReason::Undecodable(format!(
                                        "the trailer counts {} events, the file holds {}",
                                        t.events, self.events
                                    ));
                                    return Some(Err(self.stop(at, reason)));
                                }
                                self.trailer = Some(t);
                            }
                            None => {}
                        }
                    }
                    Err(msg) => return Some(Err(self.stop(at, StopReason::Undecodable(msg)))),
                }
                continue;
            }
            self.frame_start = self.offset;
            self.pos = 0;
            match read_frame(&mut self.src, &mut self.frame) {
                Ok(Some(n)) => {
                    self.offset += n;
                    if self.trailer.is_some() {
                        let at = self.frame_start;
                        return Some(Err(self.stop(at, StopReason::DataAfterTrailer)));
                    }
                }
                Ok(None) => {
                    return match self.trailer.take() {
                        Some(trailer) => {
                            self.ending = Some(Ending::Finalized {
                                trailer,
                                file_len: self.offset,
                            });
                            None
                        }
                        None => {
                            let at = self.offset;
                            Some(Err(self.stop(at, StopReason::NoTrailer)))
                        }
                    };
                }
                Err((reason, n)) => {
                    self.offset += n;
                    let at = self.frame_start;
                    let reason = if self.trailer.is_some() {
                        StopReason::DataAfterTrailer
                    } else {
                        reason
                    };
                    return Some(Err(self.stop(at, reason)));
                }
            }
        }
    }
}

/// Reads one frame's payload into `buf`. `Ok(None)` at a clean end of file, else the bytes
/// consumed; on error, the reason and the bytes consumed.
fn read_frame<R: Read>(src: &mut R, buf: &mut Vec<u8>) -> Result<Option<u64>, (StopReason, u64)> {
    buf.clear();
    let mut head = [0u8; 8];
    let n = read_full(src, &mut head).map_err(|e| (StopReason::Io(e.to_string()), 0))?;
    if n == 0 {
        return Ok(None);
    }
    if n < head.len() {
        return Err((
            StopReason::Truncated(format!("{n} of the 8 bytes of a frame header")),
            n as u64,
        ));
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let stored = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_FRAME_LEN {
        return Err((StopReason::BadFrameLength(len), 8));
    }
    // `take` grows the buffer as data arrives: a damaged length cannot allocate 64 MiB
    // up front for a short file.
    let got = src
        .by_ref()
        .take(len as u64)
        .read_to_end(buf)
        .map_err(|e| (StopReason::Io(e.to_string()), 8))?;
    let consumed = 8 + got as u64;
    if got < len as usize {
        return Err((
            StopReason::Truncated(format!("a {len}-byte frame with only {got} bytes present")),
            consumed,
        ));
    }
    let computed = frame_crc(len, buf);
    if computed != stored {
        return Err((StopReason::CrcMismatch { stored, computed }, consumed));
    }
    Ok(Some(consumed))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(src: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Says what a file that is not a capture seems to be.
fn describe_start(start: &[u8]) -> String {
    if start.is_empty() {
        return "the file is empty".into();
    }
    let kind = if start.starts_with(b"\x1f\x8b") {
        " (gzip data: decompress it first)"
    } else if start.starts_with(b"(\xb5/\xfd") {
        " (zstd data: decompress it first)"
    } else if start.starts_with(b"\x7fELF") {
        " (an ELF executable)"
    } else if start.first() == Some(&b'{') {
        " (JSON text, perhaps `inspect --format jsonl` output, which cannot be read back)"
    } else {
        ""
    };
    let shown: String = start
        .iter()
        .take(8)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect();
    format!("it starts with \"{shown}\"{kind}, not \"IOMMUTRC\"")
}

/// Reads a whole capture: its header, every event it holds, and how it ended.
pub fn read_all(
    path: impl AsRef<Path>,
) -> Result<(CaptureHeader, Vec<Event>, Ending), CaptureError> {
    let mut r = CaptureReader::open(path)?;
    let events: Vec<Event> = r.by_ref().filter_map(Result::ok).collect();
    let ending = r.ending.take().expect("the reader has reached its end");
    Ok((r.header, events, ending))
}
