//! `iommu-trace record`: live events -> a capture file, until Ctrl-C, SIGTERM or --duration.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::capture::inspect::Summary;
use crate::capture::{CaptureError, CaptureHeader, LostTotals, RecordingWriter, Rotation};
use crate::collect::{self, EventSink, Live, LiveOptions};
use crate::events::Event;

pub struct RecordOptions {
    pub output: PathBuf,
    pub duration: Option<Duration>,
    /// Write a rotated set of files instead of one.
    pub rotation: Rotation,
    /// How to trace this host.
    pub live: LiveOptions,
    /// Created once the probes are attached (for scripts that must not start the workload
    /// before the recorder sees it).
    pub ready_file: Option<PathBuf>,
}

struct Recorder {
    writer: RecordingWriter,
    summary: Summary,
}

impl Recorder {
    /// A write that failed stops the recording: the error says what the file still holds.
    fn failed(&self, e: CaptureError) -> anyhow::Error {
        let file = self.writer.current_path().display();
        let stats = self.writer.current_stats();
        let unsure = stats.events - stats.flushed_events;
        let full = matches!(&e, CaptureError::Io { source, .. }
            if source.raw_os_error() == Some(libc::ENOSPC));
        let why = if full {
            "the disk is full"
        } else {
            "writing failed"
        };
        anyhow::anyhow!(
            "{file}: {why} ({e}); recording stopped. The file reads up to its last complete \
             frame: it holds the {} events written before the last flush; the {unsure} \
             since then (about a second's) may be missing, and nothing after this one is \
             recorded. `iommu-trace inspect --summary` shows what it holds",
            stats.flushed_events
        )
    }
}

impl EventSink for Recorder {
    fn event(&mut self, event: Event) -> Result<()> {
        self.summary.add(&event);
        self.writer.write(&event).map_err(|e| self.failed(e))
    }

    fn tick(&mut self) -> Result<()> {
        // Bounded loss on a crash: at most about a second of events.
        self.writer.tick().map_err(|e| self.failed(e))
    }
}

pub fn run(opts: RecordOptions) -> Result<()> {
    let mut live = Live::start(&opts.live)?;
    let header =
        CaptureHeader::for_this_host(live.session().clone(), opts.live.ringbuf_bytes as u64);
    let writer = RecordingWriter::create(&opts.output, header, opts.rotation)
        .with_context(|| format!("creating {}", opts.output.display()))?;
    let first = writer.current_path().display().to_string();
    let mut recorder = Recorder {
        writer,
        summary: Summary::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stats = runtime.block_on(async {
        // Signal handlers first, so that a stop right after "ready" is never missed.
        let stop = collect::stop_signal(opts.duration)?;
        if let Some(ready) = &opts.ready_file {
            std::fs::write(ready, b"ready\n")
                .with_context(|| format!("writing {}", ready.display()))?;
        }
        eprintln!(
            "recording to {first} ({} probes attached); Ctrl-C to stop",
            live.session().attached_count()
        );
        live.run(&mut recorder, stop).await
    })?;
    let written = recorder.writer.finish(LostTotals {
        ringbuf_full: stats.lost_ringbuf_full,
        context_full: stats.lost_context_full,
    })?;
    eprintln!(
        "recorded {} events in {} bytes ({:.1} bytes/event); lost: {} (ring buffer full), {} (context table full); decode errors: {}",
        written.events,
        written.bytes,
        written.bytes_per_event(),
        stats.lost_ringbuf_full,
        stats.lost_context_full,
        stats.decode_errors,
    );
    Ok(())
}
