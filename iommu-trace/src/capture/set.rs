//! A capture read as one stream: one file, or the parts of a rotated recording
//! (`record --rotate-*`) in order, each a complete capture with its own header.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use super::reader::CaptureSource;
use super::{
    CaptureError, CaptureHeader, CaptureReader, CaptureWarning, Ending, StopReason, Trailer,
};
use crate::events::Event;

/// The files of one capture, read in order as one stream of events.
///
/// Several files must be parts of one rotated recording: the same `rotation.set` in their
/// headers, part numbers without a gap (in any order on the command line: they are sorted).
/// The stream ends at the first part that does not end cleanly, with a warning naming that
/// file. A set whose first part is not part 0 (the oldest rotated away by `--rotate-keep`)
/// is read whole, then ends as incomplete: what happened before it is not in the stream.
pub struct CaptureSet {
    /// The files after the current one, in order.
    rest: std::vec::IntoIter<(PathBuf, Option<u64>)>,
    current: CaptureReader<BufReader<File>>,
    current_name: String,
    /// Whether warnings name their file (a set of more than one).
    several: bool,
    header: CaptureHeader,
    /// Sums over the parts read to their end.
    total: Trailer,
    file_len: u64,
    /// Parts before the first one given, when it is not part 0.
    earlier_missing: u64,
    name: String,
    ending: Option<Ending>,
}

impl CaptureSet {
    /// Opens `paths` (at least one) and reads the first one's header; the others' headers are
    /// read to check that they are parts of the same recording.
    pub fn open(paths: &[PathBuf]) -> Result<CaptureSet, CaptureError> {
        let mut parts = Vec::with_capacity(paths.len());
        for path in paths {
            let reader = CaptureReader::open(path)?;
            let rotation = reader.header().rotation.clone();
            parts.push((path.clone(), rotation));
        }
        let Some(first) = parts.first() else {
            return Err(CaptureError::NotOneSet("no capture file was given".into()));
        };
        if parts.len() > 1 {
            let set = &first.1;
            for (path, r) in &parts {
                let Some(r) = r else {
                    return Err(CaptureError::NotOneSet(format!(
                        "{} is a whole recording, not a part of a rotated one: give one such \
                         file at a time, or the parts of one `record --rotate-*` together",
                        path.display()
                    )));
                };
                if set.as_ref().is_some_and(|s| s.set != r.set) {
                    return Err(CaptureError::NotOneSet(format!(
                        "{} and {} are parts of different recordings: give the parts of one \
                         `record --rotate-*` together",
                        first.0.display(),
                        path.display()
                    )));
                }
            }
            parts.sort_by_key(|(_, r)| r.as_ref().map(|r| r.part));
            for pair in parts.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                let (pa, pb) = (part_of(a), part_of(b));
                if pa == pb {
                    return Err(CaptureError::NotOneSet(format!(
                        "{} and {} are both part {pa} of the recording: give each part once",
                        a.0.display(),
                        b.0.display()
                    )));
                }
                if pb != pa + 1 {
                    return Err(CaptureError::NotOneSet(format!(
                        "part {} of the recording is missing between {} (part {pa}) and {} \
                         (part {pb}): give every part in between, or only the parts after it",
                        pa + 1,
                        a.0.display(),
                        b.0.display()
                    )));
                }
            }
        }
        let name = match parts.as_slice() {
            [one] => one.0.display().to_string(),
            [first, .., last] => format!(
                "{} … {} ({} files)",
                first.0.display(),
                last.0.display(),
                parts.len()
            ),
            [] => unreachable!("checked above"),
        };
        let earlier_missing = parts.first().map_or(0, part_of);
        let several = parts.len() > 1;
        let paths: Vec<(PathBuf, Option<u64>)> = parts
            .into_iter()
            .map(|(p, r)| (p, r.map(|r| r.part)))
            .collect();
        let mut rest = paths.into_iter();
        let (path, _) = rest.next().expect("at least one part");
        let current = CaptureReader::open(&path)?;
        Ok(CaptureSet {
            header: current.header().clone(),
            current,
            current_name: path.display().to_string(),
            rest,
            several,
            total: Trailer::default(),
            file_len: 0,
            earlier_missing,
            name,
            ending: None,
        })
    }

    /// The capture for messages: its file, or the first and last of a set.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Ends the stream with `warning`, naming its file when the set has several.
    fn stop(&mut self, mut warning: CaptureWarning) -> CaptureWarning {
        if self.several {
            warning.file = Some(self.current_name.clone());
        }
        self.ending = Some(Ending::Incomplete(warning.clone()));
        warning
    }

    /// The current part ended cleanly: adds it to the totals and opens the next, if any.
    /// `Some(warning)` when the stream ends incomplete here.
    fn next_part(&mut self) -> Option<Option<CaptureWarning>> {
        if let Some(Ending::Finalized { trailer, file_len }) = CaptureSource::ending(&self.current)
        {
            self.total.events += trailer.events;
            add_lost(&mut self.total.lost_in_stream, &trailer.lost_in_stream);
            add_lost(&mut self.total.lost_reported, &trailer.lost_reported);
            self.total.end = trailer.end;
            self.file_len += file_len;
        }
        let events = self.total.events;
        let Some((path, part)) = self.rest.next() else {
            if self.earlier_missing > 0 {
                let w = CaptureWarning {
                    file: None,
                    offset: 0,
                    events,
                    reason: StopReason::EarlierPartsMissing(self.earlier_missing),
                };
                return Some(Some(self.stop(w)));
            }
            self.ending = Some(Ending::Finalized {
                trailer: self.total.clone(),
                file_len: self.file_len,
            });
            return Some(None);
        };
        self.current_name = path.display().to_string();
        let reopened = CaptureReader::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                let now = r.header().rotation.as_ref().map(|r| r.part);
                if now == part
                    && r.header().rotation.as_ref().map(|r| &r.set)
                        == self.header.rotation.as_ref().map(|r| &r.set)
                {
                    Ok(r)
                } else {
                    Err(
                        "the file changed since it was opened: it is no longer the next part"
                            .into(),
                    )
                }
            });
        match reopened {
            Ok(r) => {
                self.current = r;
                None
            }
            Err(reason) => {
                let w = CaptureWarning {
                    file: None,
                    offset: 0,
                    events: 0,
                    reason: StopReason::Io(reason),
                };
                Some(Some(self.stop(w)))
            }
        }
    }
}

fn part_of((_, r): &(PathBuf, Option<super::RotationPart>)) -> u64 {
    r.as_ref().map_or(0, |r| r.part)
}

fn add_lost(sum: &mut super::LostTotals, more: &super::LostTotals) {
    sum.ringbuf_full = sum.ringbuf_full.saturating_add(more.ringbuf_full);
    sum.context_full = sum.context_full.saturating_add(more.context_full);
}

impl Iterator for CaptureSet {
    type Item = Result<Event, CaptureWarning>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.ending.is_some() {
                return None;
            }
            match self.current.next() {
                Some(Ok(ev)) => return Some(Ok(ev)),
                Some(Err(w)) => return Some(Err(self.stop(w))),
                None => match self.next_part() {
                    None => continue,
                    Some(None) => return None,
                    Some(Some(w)) => return Some(Err(w)),
                },
            }
        }
    }
}

impl CaptureSource for CaptureSet {
    /// The first part's header (every part repeats the recording's session).
    fn header(&self) -> &CaptureHeader {
        &self.header
    }

    fn ending(&self) -> Option<&Ending> {
        self.ending.as_ref()
    }
}
