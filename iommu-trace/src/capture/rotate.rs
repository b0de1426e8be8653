//! Writing a recording as one capture file, or as a rotated set of them (tcpdump's `-C`,
//! `-G` and `-W`): each part a complete, finalized capture with its own header, the parts
//! numbered in their headers; an event is never split across parts, nor repeated.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    CaptureError, CaptureHeader, CaptureWriter, ClockBase, FinishInfo, LostTotals, RotationPart,
    WriteStats,
};
use crate::events::Event;

/// When to start a new part, and how many to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Start a new part once this many bytes are in the current one.
    pub max_bytes: Option<u64>,
    /// Start a new part once the current one is this old.
    pub every: Option<Duration>,
    /// Delete the oldest parts beyond this many.
    pub keep: Option<usize>,
}

impl Rotation {
    pub fn is_set(&self) -> bool {
        self.max_bytes.is_some() || self.every.is_some()
    }
}

/// The writer `record` uses: one file at `output`, or with a [`Rotation`], the parts
/// [`part_path`]`(output, 0)`, `(output, 1)`, ...
pub struct RecordingWriter {
    output: PathBuf,
    rotation: Rotation,
    /// The header every part repeats (its clock and part number set per part).
    header: CaptureHeader,
    current: CaptureWriter<BufWriter<File>>,
    current_path: PathBuf,
    started: Instant,
    /// Parts still on disk, oldest first (the current one last).
    kept: VecDeque<PathBuf>,
    /// Sums over the finished parts.
    done: WriteStats,
    /// Loss the finished parts' trailers reported.
    lost_done: LostTotals,
}

impl RecordingWriter {
    /// Creates the first file. `header.rotation` is set here when rotating.
    pub fn create(
        output: &Path,
        mut header: CaptureHeader,
        rotation: Rotation,
    ) -> Result<RecordingWriter, CaptureError> {
        let path = if rotation.is_set() {
            header.rotation = Some(RotationPart {
                set: recording_id(),
                part: 0,
            });
            part_path(output, 0)
        } else {
            output.to_path_buf()
        };
        let current = CaptureWriter::create(&path, &header)?;
        Ok(RecordingWriter {
            output: output.to_path_buf(),
            rotation,
            header,
            current,
            kept: VecDeque::from([path.clone()]),
            current_path: path,
            started: Instant::now(),
            done: WriteStats::default(),
            lost_done: LostTotals::default(),
        })
    }

    /// The file being written.
    pub fn current_path(&self) -> &Path {
        &self.current_path
    }

    /// What the file being written holds so far.
    pub fn current_stats(&self) -> WriteStats {
        self.current.stats()
    }

    /// Adds one event, first starting a new part if the current one is full.
    pub fn write(&mut self, ev: &Event) -> Result<(), CaptureError> {
        if let Some(max) = self.rotation.max_bytes {
            let s = self.current.stats();
            // At least one event per part, or a tiny limit would rotate forever.
            if s.events > 0 && s.bytes + self.current.pending_bytes() >= max {
                self.rotate()?;
            }
        }
        self.current.write(ev)
    }

    /// About once a second: flushes (bounded loss on a crash) and starts a new part when the
    /// current one is `every` old.
    pub fn tick(&mut self) -> Result<(), CaptureError> {
        if self
            .rotation
            .every
            .is_some_and(|every| self.started.elapsed() >= every)
        {
            return self.rotate();
        }
        self.current.flush()
    }

    /// Finishes the last part: `lost_reported` is the recorder's total for the whole
    /// recording; the parts before reported their own share.
    pub fn finish(self, lost_reported: LostTotals) -> Result<WriteStats, CaptureError> {
        let lost = LostTotals {
            ringbuf_full: lost_reported
                .ringbuf_full
                .saturating_sub(self.lost_done.ringbuf_full),
            context_full: lost_reported
                .context_full
                .saturating_sub(self.lost_done.context_full),
        };
        let last = self.current.finish(FinishInfo {
            lost_reported: lost,
            end: Some(ClockBase::now()),
        })?;
        Ok(WriteStats {
            events: self.done.events + last.events,
            bytes: self.done.bytes + last.bytes,
            frames: self.done.frames + last.frames,
            flushed_events: self.done.flushed_events + last.flushed_events,
        })
    }

    /// Finalizes the current part and opens the next; then deletes the oldest parts beyond
    /// `keep`.
    fn rotate(&mut self) -> Result<(), CaptureError> {
        let mut header = self.header.clone();
        let part = header.rotation.as_ref().map_or(0, |r| r.part) + 1;
        if let Some(r) = &mut header.rotation {
            r.part = part;
        }
        header.clock = ClockBase::now();
        let path = part_path(&self.output, part);
        // The next part is created before the current one is closed: a part that cannot be
        // created leaves the current one open, and `finish` still closes it.
        let next = CaptureWriter::create(&path, &header)?;
        let previous = std::mem::replace(&mut self.current, next);
        // Loss a part's `lost` events carry is all it can report; the kernel's counters at
        // the end go to the last part (`finish`).
        let in_stream = previous.lost_in_stream();
        let stats = previous.finish(FinishInfo {
            lost_reported: in_stream,
            end: Some(header.clock),
        })?;
        self.done.events += stats.events;
        self.done.bytes += stats.bytes;
        self.done.frames += stats.frames;
        self.done.flushed_events += stats.flushed_events;
        self.lost_done.ringbuf_full += in_stream.ringbuf_full;
        self.lost_done.context_full += in_stream.context_full;
        self.header = header;
        self.current_path = path.clone();
        self.started = Instant::now();
        self.kept.push_back(path);
        if let Some(keep) = self.rotation.keep {
            while self.kept.len() > keep.max(1) {
                let old = self.kept.pop_front().expect("more than one part kept");
                if let Err(e) = std::fs::remove_file(&old) {
                    log::warn!("rotation: could not delete {}: {e}", old.display());
                }
            }
        }
        Ok(())
    }
}

/// The file names of a rotated recording to `output`: part N of `dir/name.ext` is
/// `dir/name.NNNNNN.ext` (`name.NNNNNN` without an extension), so that a shell's sorted
/// glob lists the parts in order.
pub fn part_path(output: &Path, part: u64) -> PathBuf {
    let stem = output.file_stem().unwrap_or_default().to_string_lossy();
    let name = match output.extension() {
        Some(ext) => format!("{stem}.{part:06}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{part:06}"),
    };
    output.with_file_name(name)
}

/// A recording's identity for its parts' headers: the kernel's random UUID, or (without
/// /proc) the process and the time.
fn recording_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            format!(
                "{}-{}",
                std::process::id(),
                crate::events::clock::realtime_ns()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::tests::{header, realistic_stream};
    use crate::capture::{CaptureSet, CaptureSource, Ending, StopReason};
    use crate::events::EventBody;

    const SMALL: u64 = 64 << 10;

    /// Records `events` to `dir/rec.itc` rotating at 64 KiB; returns the parts written.
    fn record(dir: &Path, events: &[Event], keep: Option<usize>, lost: LostTotals) -> Vec<PathBuf> {
        let rotation = Rotation {
            max_bytes: Some(SMALL),
            every: None,
            keep,
        };
        let mut w = RecordingWriter::create(&dir.join("rec.itc"), header(), rotation).unwrap();
        for e in events {
            w.write(e).unwrap();
        }
        let stats = w.finish(lost).unwrap();
        assert_eq!(stats.events, events.len() as u64);
        let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        parts.sort();
        parts
    }

    fn read(parts: &[PathBuf]) -> (Vec<Event>, Ending) {
        let mut set = CaptureSet::open(parts).unwrap();
        let events: Vec<Event> = set.by_ref().map_while(Result::ok).collect();
        (events, set.ending().cloned().expect("read to the end"))
    }

    fn lost_in(events: &[Event]) -> u64 {
        events
            .iter()
            .map(|e| match &e.body {
                EventBody::Lost(l) => l.ringbuf_full + l.context_full,
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn a_rotated_set_reads_back_as_the_one_stream_written() {
        let dir = tempfile::tempdir().unwrap();
        let events = realistic_stream(40_000);
        let in_stream = lost_in(&events);
        let lost = LostTotals {
            ringbuf_full: in_stream + 7,
            context_full: 0,
        };
        let parts = record(dir.path(), &events, None, lost);
        assert!(parts.len() >= 4, "{parts:?}");
        assert_eq!(parts[1].file_name().unwrap(), "rec.000001.itc");
        for p in &parts {
            let size = std::fs::metadata(p).unwrap().len();
            // A part closes at the first frame past the limit: at most one frame over.
            assert!(size < SMALL + (80 << 10), "{}: {size}", p.display());
        }
        // Given in any order, the parts are one stream: every event once, in order.
        let mut shuffled = parts.clone();
        shuffled.reverse();
        let (read_back, ending) = read(&shuffled);
        assert_eq!(read_back, events);
        let Ending::Finalized { trailer, .. } = ending else {
            panic!("{ending}")
        };
        assert_eq!(trailer.events, events.len() as u64);
        assert_eq!(trailer.lost_in_stream.total(), in_stream);
        // The loss reported at the end, and only that, is more than the stream carried.
        assert_eq!(trailer.lost_reported, lost);
    }

    #[test]
    fn each_part_is_a_complete_capture_and_a_later_one_says_what_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let events = realistic_stream(20_000);
        let parts = record(dir.path(), &events, None, LostTotals::default());
        let (first, ending) = read(&parts[..1]);
        assert!(ending.is_finalized(), "{ending}");
        let (second, ending) = read(&parts[1..2]);
        assert!(first.len() + second.len() <= events.len());
        assert_eq!(second[..], events[first.len()..first.len() + second.len()]);
        let w = ending
            .warning()
            .expect("part 1 alone is not the whole recording");
        assert_eq!(w.reason, StopReason::EarlierPartsMissing(1));
    }

    #[test]
    fn keep_deletes_the_oldest_parts_and_the_rest_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let events = realistic_stream(40_000);
        let parts = record(dir.path(), &events, Some(2), LostTotals::default());
        assert_eq!(parts.len(), 2, "{parts:?}");
        let (tail, ending) = read(&parts);
        assert_eq!(tail[..], events[events.len() - tail.len()..]);
        let Some(w) = ending.warning() else {
            panic!("a set missing its start must not read as complete")
        };
        assert!(matches!(w.reason, StopReason::EarlierPartsMissing(n) if n >= 2));
    }

    #[test]
    fn files_that_are_not_one_set_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let events = realistic_stream(20_000);
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let pa = record(&a, &events, None, LostTotals::default());
        let pb = record(&b, &events, None, LostTotals::default());
        let err = |paths: &[PathBuf]| match CaptureSet::open(paths) {
            Ok(_) => panic!("accepted {paths:?}"),
            Err(e) => e.to_string(),
        };
        let e = err(&[pa[0].clone(), pa[2].clone()]);
        assert!(e.contains("part 1 of the recording is missing"), "{e}");
        let e = err(&[pa[0].clone(), pb[1].clone()]);
        assert!(e.contains("different recordings"), "{e}");
        let e = err(&[pa[0].clone(), pa[0].clone()]);
        assert!(e.contains("both part 0"), "{e}");
        let whole = dir.path().join("whole.itc");
        let w = RecordingWriter::create(&whole, header(), Rotation::default()).unwrap();
        w.finish(LostTotals::default()).unwrap();
        let e = err(&[whole, pa[1].clone()]);
        assert!(e.contains("is a whole recording"), "{e}");
    }

    #[test]
    fn a_damaged_part_ends_the_stream_there_naming_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let events = realistic_stream(40_000);
        let parts = record(dir.path(), &events, None, LostTotals::default());
        let bytes = std::fs::read(&parts[1]).unwrap();
        std::fs::write(&parts[1], &bytes[..bytes.len() - 100]).unwrap();
        let (got, ending) = read(&parts);
        assert!(got.len() < events.len());
        assert_eq!(got[..], events[..got.len()]);
        let w = ending.warning().expect("damaged");
        let name = parts[1].display().to_string();
        assert_eq!(w.file.as_deref(), Some(name.as_str()));
        assert!(w.to_string().starts_with(&name), "{w}");
    }

    #[test]
    fn without_rotation_the_file_is_written_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("one.itc");
        let events = realistic_stream(5_000);
        let mut w = RecordingWriter::create(&out, header(), Rotation::default()).unwrap();
        for e in &events {
            w.write(e).unwrap();
        }
        w.finish(LostTotals::default()).unwrap();
        let (got, ending) = read(std::slice::from_ref(&out));
        assert_eq!(got, events);
        assert!(ending.is_finalized());
        let r = crate::capture::CaptureReader::open(&out).unwrap();
        assert_eq!(r.header().rotation, None);
    }

    #[test]
    fn rotate_every_starts_a_part_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_bytes: None,
            every: Some(Duration::ZERO),
            keep: None,
        };
        let out = dir.path().join("t.itc");
        let mut w = RecordingWriter::create(&out, header(), rotation).unwrap();
        let events = realistic_stream(300);
        for chunk in events.chunks(100) {
            for e in chunk {
                w.write(e).unwrap();
            }
            w.tick().unwrap();
        }
        w.finish(LostTotals::default()).unwrap();
        let parts: Vec<PathBuf> = (0..4).map(|n| part_path(&out, n)).collect();
        assert!(parts.iter().all(|p| p.exists()), "{parts:?}");
        let (got, ending) = read(&parts);
        assert_eq!(got, events);
        assert!(ending.is_finalized(), "{ending}");
    }

    #[test]
    fn part_names_keep_the_extension_and_sort_in_order() {
        assert_eq!(
            part_path(Path::new("/var/x/cap.itc"), 12),
            Path::new("/var/x/cap.000012.itc")
        );
        assert_eq!(part_path(Path::new("cap"), 0), Path::new("cap.000000"));
    }
}

#[cfg(test)]
mod full_disk_tests {
    use std::cell::RefCell;
    use std::io::{self, Write};
    use std::rc::Rc;

    use crate::capture::tests::{header, realistic_stream};
    use crate::capture::{CaptureError, CaptureReader, CaptureSource, CaptureWriter};

    /// A disk of `room` bytes: writes past it fail with ENOSPC, what fits is kept.
    struct SmallDisk {
        kept: Rc<RefCell<Vec<u8>>>,
        room: usize,
    }

    impl Write for SmallDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut kept = self.kept.borrow_mut();
            let n = buf.len().min(self.room - kept.len());
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            kept.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_keeps_every_flushed_event_readable() {
        let events = realistic_stream(30_000);
        let kept = Rc::new(RefCell::new(Vec::new()));
        let disk = SmallDisk {
            kept: kept.clone(),
            room: 200_000,
        };
        let mut w = CaptureWriter::new(disk, &header()).unwrap();
        w.set_flush_interval(None);
        let mut error = None;
        for (i, e) in events.iter().enumerate() {
            let r = w
                .write(e)
                .and_then(|()| if i % 500 == 499 { w.flush() } else { Ok(()) });
            if let Err(e) = r {
                error = Some(e);
                break;
            }
        }
        let Some(CaptureError::Io { source, .. }) = error else {
            panic!("the disk never filled: {error:?}")
        };
        assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
        let stats = w.stats();
        assert!(stats.flushed_events > 0 && stats.flushed_events < stats.events);
        drop(w);
        let kept = kept.borrow();
        let mut r = CaptureReader::new(&kept[..]).unwrap();
        let read: Vec<_> = r.by_ref().map_while(Result::ok).collect();
        // Every event flushed before the disk filled reads back, in order.
        assert!(
            read.len() as u64 >= stats.flushed_events,
            "{} < {}",
            read.len(),
            stats.flushed_events
        );
        assert_eq!(read[..], events[..read.len()]);
        assert!(r.ending().is_some_and(|e| !e.is_finalized()));
    }
}
