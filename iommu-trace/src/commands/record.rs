//! `iommu-trace record`: live events -> a capture file, until Ctrl-C, SIGTERM or --duration.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::capture::inspect::Summary;
use crate::capture::{CaptureHeader, CaptureWriter, ClockBase, FinishInfo, LostTotals};
use crate::collect::{self, Decoder, EventSink};
use crate::events::Event;
use crate::probe::{self, Tracer, TracerOptions};

pub struct RecordOptions {
    pub output: PathBuf,
    pub duration: Option<Duration>,
    pub ringbuf_bytes: u32,
    pub filter_pid: u32,
    /// Created once the probes are attached (for scripts that must not start the workload
    /// before the recorder sees it).
    pub ready_file: Option<PathBuf>,
    /// Symbols to refuse, as if the kernel lacked them.
    pub deny: Vec<String>,
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

/// Installs SIGINT and SIGTERM handlers now and returns a future that resolves on either,
/// or when `duration` passes. A recorder started with `&` from a script ignores SIGINT
/// unless it handles it itself; installing before reporting "ready" means no stop is missed.
/// Must be called inside a tokio runtime.
pub fn stop_signal(duration: Option<Duration>) -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    Ok(async move {
        let sleep = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = sleep => {}
        }
    })
}

pub fn run(opts: RecordOptions) -> Result<()> {
    let plan = probe::discover(&opts.deny, &probe::Sources::default());
    let mut tracer = Tracer::start(
        &plan,
        &TracerOptions {
            ringbuf_bytes: opts.ringbuf_bytes,
            filter_pid: opts.filter_pid,
        },
    )?;
    let mut header = CaptureHeader::for_this_host(
        serde_json::to_value(&plan).context("serializing the probe plan")?,
        opts.ringbuf_bytes as u64,
    );
    header.extra.insert(
        "attach_failed".into(),
        serde_json::to_value(&tracer.failed).context("serializing attach failures")?,
    );
    let writer = CaptureWriter::create(&opts.output, &header)
        .with_context(|| format!("creating {}", opts.output.display()))?;
    for gap in &tracer.failed {
        log::warn!("not attached: {}: {}", gap.symbol, gap.reason);
    }
    for m in plan.missing_points(&tracer.failed) {
        log::warn!(
            "probe point {} is missing ({}): events of that kind will not be recorded",
            m.point,
            m.why
        );
    }
    let mut recorder = Recorder {
        writer,
        summary: Summary::new(),
    };
    let decoder = Decoder::new(plan.drivers.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stats = runtime.block_on(async {
        // Signal handlers first, so that a stop right after "ready" is never missed.
        let stop = stop_signal(opts.duration)?;
        if let Some(ready) = &opts.ready_file {
            std::fs::write(ready, b"ready\n")
                .with_context(|| format!("writing {}", ready.display()))?;
        }
        eprintln!(
            "recording to {} ({} probes attached); Ctrl-C to stop",
            opts.output.display(),
            tracer.attached.len()
        );
        collect::run(&mut tracer, &decoder, &mut recorder, stop).await
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
