//! Writing a capture.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::codec::{encode_trailer, Encoder};
use super::{
    frame_crc, CaptureError, CaptureHeader, ClockBase, LostTotals, Trailer, FORMAT_VERSION, MAGIC,
    MAX_FRAME_LEN,
};
use crate::events::{Event, EventBody};

/// A frame is closed once its payload reaches this size.
const FRAME_TARGET: usize = 64 << 10;

/// What the recorder knows at close, for the trailer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FinishInfo {
    /// Loss reported by the kernel-side counters at the end of the recording.
    pub lost_reported: LostTotals,
    /// Clock readings at the end of the recording.
    pub end: Option<ClockBase>,
}

/// What has been written so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Events written (buffered ones included).
    pub events: u64,
    /// Bytes handed to the underlying writer (magic, header and frames; not the events still
    /// buffered for the next frame).
    pub bytes: u64,
    /// Frames written, the header's included.
    pub frames: u64,
    /// Events in the file for certain: those written before the last flush that succeeded.
    pub flushed_events: u64,
}

impl WriteStats {
    /// Average file bytes per event.
    pub fn bytes_per_event(&self) -> f64 {
        if self.events == 0 {
            0.0
        } else {
            self.bytes as f64 / self.events as f64
        }
    }
}

/// Writes a capture: magic, version and header at creation, then events in checked frames,
/// then a trailer on [`finish`](CaptureWriter::finish).
///
/// Events are buffered into a frame that is written when it is full, on [`flush`]
/// (call it about once a second), and at least every `flush_interval` (1 s by default) while
/// events arrive (the clock is read once per `CLOCK_EVERY` events: in an emulated guest a
/// clock read can be a trapped timer access, and at full rate it cost more than encoding). A writer dropped without `finish` writes what it buffered, and the file
/// then reads as "not finalized".
///
/// [`flush`]: CaptureWriter::flush
/// How many writes go between two reads of the clock for the time-based flush. The owner's
/// own `flush` (the recorder's tick) covers slow streams.
const CLOCK_EVERY: u32 = 256;

pub struct CaptureWriter<W: Write> {
    out: W,
    enc: Encoder,
    frame: Vec<u8>,
    stats: WriteStats,
    lost_in_stream: LostTotals,
    flush_interval: Option<Duration>,
    last_flush: Instant,
    /// Events written since the clock was last read.
    unclocked: u32,
    finished: bool,
    failed: bool,
}

impl CaptureWriter<BufWriter<File>> {
    /// Creates (or truncates) `path` and writes the capture header to it.
    pub fn create(
        path: impl AsRef<Path>,
        header: &CaptureHeader,
    ) -> Result<CaptureWriter<BufWriter<File>>, CaptureError> {
        let path = path.as_ref();
        let what = path.display().to_string();
        let file = File::create(path).map_err(|e| CaptureError::io(&what, e))?;
        CaptureWriter::new(BufWriter::with_capacity(256 << 10, file), header).map_err(|e| match e {
            CaptureError::Io { source, .. } => CaptureError::io(what, source),
            e => e,
        })
    }
}

impl<W: Write> CaptureWriter<W> {
    /// Writes the magic, the version and `header` to `out`, and flushes them.
    pub fn new(mut out: W, header: &CaptureHeader) -> Result<CaptureWriter<W>, CaptureError> {
        let json = header.to_json().map_err(|e| CaptureError::BadHeader {
            what: "the new capture".into(),
            reason: format!("header does not serialize: {e}"),
        })?;
        let mut start = Vec::with_capacity(12 + 8 + json.len());
        start.extend_from_slice(&MAGIC);
        start.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        push_frame(&mut start, &json)?;
        let io = |e| CaptureError::io("writing the capture header", e);
        out.write_all(&start).map_err(io)?;
        out.flush().map_err(io)?;
        Ok(CaptureWriter {
            out,
            enc: Encoder::new(header.clock.monotonic_ns),
            frame: Vec::with_capacity(FRAME_TARGET + 1024),
            stats: WriteStats {
                events: 0,
                bytes: start.len() as u64,
                frames: 1,
                flushed_events: 0,
            },
            lost_in_stream: LostTotals::default(),
            flush_interval: Some(Duration::from_secs(1)),
            last_flush: Instant::now(),
            unclocked: 0,
            finished: false,
            failed: false,
        })
    }

    /// How often `write` flushes by itself (`None`: only on `flush` and full frames).
    pub fn set_flush_interval(&mut self, interval: Option<Duration>) {
        self.flush_interval = interval;
    }

    pub fn stats(&self) -> WriteStats {
        self.stats
    }

    /// Bytes of events buffered for the next frame (not in `stats().bytes` yet).
    pub fn pending_bytes(&self) -> u64 {
        self.frame.len() as u64
    }

    /// The sum of the `lost` events written.
    pub fn lost_in_stream(&self) -> LostTotals {
        self.lost_in_stream
    }

    #[cfg(test)]
    pub(crate) fn set_table_limits(&mut self, max_tasks: usize, max_ptrs: usize) {
        self.enc.set_limits(max_tasks, max_ptrs);
    }

    /// Adds one event.
    pub fn write(&mut self, ev: &Event) -> Result<(), CaptureError> {
        if self.failed || self.finished {
            return Err(CaptureError::WriterFailed);
        }
        let before = self.frame.len();
        self.enc.encode(ev, &mut self.frame);
        if self.frame.len() > MAX_FRAME_LEN as usize {
            // The encoder's tables now hold definitions the reader will never see.
            self.failed = true;
            return Err(CaptureError::RecordTooLarge(self.frame.len() - before));
        }
        self.stats.events += 1;
        if let EventBody::Lost(l) = &ev.body {
            self.lost_in_stream.ringbuf_full = self
                .lost_in_stream
                .ringbuf_full
                .saturating_add(l.ringbuf_full);
            self.lost_in_stream.context_full = self
                .lost_in_stream
                .context_full
                .saturating_add(l.context_full);
        }
        if self.frame.len() >= FRAME_TARGET {
            self.end_frame()?;
        }
        if let Some(every) = self.flush_interval {
            self.unclocked += 1;
            if self.unclocked >= CLOCK_EVERY {
                self.unclocked = 0;
                if self.last_flush.elapsed() >= every {
                    self.flush()?;
                }
            }
        }
        Ok(())
    }

    /// Writes the buffered events as a frame and flushes the underlying writer, so that a
    /// crash after this loses nothing written before it.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        if self.failed {
            return Err(CaptureError::WriterFailed);
        }
        self.end_frame()?;
        self.last_flush = Instant::now();
        if let Err(e) = self.out.flush() {
            self.failed = true;
            return Err(CaptureError::io("flushing the capture", e));
        }
        self.stats.flushed_events = self.stats.events;
        Ok(())
    }

    /// Writes the trailer (event count, loss totals) and flushes: the file is then complete.
    pub fn finish(mut self, info: FinishInfo) -> Result<WriteStats, CaptureError> {
        if self.failed {
            return Err(CaptureError::WriterFailed);
        }
        let trailer = Trailer {
            events: self.stats.events,
            lost_in_stream: self.lost_in_stream,
            lost_reported: info.lost_reported,
            end: info.end,
        };
        encode_trailer(&trailer, &mut self.frame);
        self.flush()?;
        self.finished = true;
        Ok(self.stats)
    }

    fn end_frame(&mut self) -> Result<(), CaptureError> {
        if self.frame.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(self.frame.len() + 8);
        push_frame(&mut buf, &self.frame)?;
        self.frame.clear();
        if let Err(e) = self.out.write_all(&buf) {
            self.failed = true;
            return Err(CaptureError::io("writing the capture", e));
        }
        self.stats.bytes += buf.len() as u64;
        self.stats.frames += 1;
        Ok(())
    }
}

impl<W: Write> Drop for CaptureWriter<W> {
    fn drop(&mut self) {
        if !self.finished && !self.failed {
            if let Err(e) = self.flush() {
                log::warn!("capture writer dropped without finish, and flushing failed: {e}");
            }
        }
    }
}

/// Appends `payload` as a frame (length, CRC, payload) to `out`.
fn push_frame(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), CaptureError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= MAX_FRAME_LEN)
        .ok_or(CaptureError::RecordTooLarge(payload.len()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&frame_crc(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}
