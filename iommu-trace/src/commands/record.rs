//! `iommu-trace record`: live events -> a capture file, until Ctrl-C, SIGTERM or --duration.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::capture::inspect::Summary;
use crate::capture::{CaptureHeader, CaptureWriter, ClockBase, FinishInfo, LostTotals};
use crate::collect::{self, EventSink, Live, LiveOptions};
use crate::events::Event;

pub struct RecordOptions {
    pub output: PathBuf,
    pub duration: Option<Duration>,
    /// How to trace this host.
    pub live: LiveOptions,
    /// Created once the probes are attached (for scripts that must not start the workload
    /// before the recorder sees it).
    pub ready_file: Option<PathBuf>,
}

struct Recorder {
    writer: CaptureWriter<std::io::BufWriter<std::fs::File>>,
    summary: Summary,
}

impl EventSink for Recorder {
    fn event(&mut self, event: Event) -> Result<()> {
        self.summary.add(&event);
        self.writer.write(&event)?;
        Ok(())
    }

    fn tick(&mut self) -> Result<()> {
        // Bounded loss on a crash: at most about a second of events.
        self.writer.flush()?;
        Ok(())
    }
}

pub fn run(opts: RecordOptions) -> Result<()> {
    let mut live = Live::start(&opts.live)?;
    let header =
        CaptureHeader::for_this_host(live.session().clone(), opts.live.ringbuf_bytes as u64);
    let writer = CaptureWriter::create(&opts.output, &header)
        .with_context(|| format!("creating {}", opts.output.display()))?;
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
            "recording to {} ({} probes attached); Ctrl-C to stop",
            opts.output.display(),
            live.session().attached_count()
        );
        live.run(&mut recorder, stop).await
    })?;
    let written = recorder.writer.finish(FinishInfo {
        lost_reported: LostTotals {
            ringbuf_full: stats.lost_ringbuf_full,
            context_full: stats.lost_context_full,
        },
        end: Some(ClockBase::now()),
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
