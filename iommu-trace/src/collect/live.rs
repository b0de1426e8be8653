//! The one live start-up path that `record`, `serve` and `top` share: discover the plan
//! for this kernel, load and attach it, report what is missing, then collect events into a
//! sink until stopped.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{CollectStats, Decoder, EventSink};
use crate::probe::{self, Tracer, TracerOptions};
use crate::session::Session;

/// How to trace this host.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Kernel ring-buffer size in bytes (a power of two, at least 4096).
    pub ringbuf_bytes: u32,
    /// Trace only this process (thread group) when non-zero.
    pub filter_pid: u32,
    /// Symbols to refuse, as if the kernel lacked them (`--deny-symbol`).
    pub deny: Vec<String>,
    /// Every program returns at once: nothing is recorded (`--floor`, for benchmarks).
    pub floor: bool,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            ringbuf_bytes: 1 << 22,
            filter_pid: 0,
            deny: Vec::new(),
            floor: false,
        }
    }
}

/// Programs attached to this kernel, ready to collect.
pub struct Live {
    tracer: Tracer,
    decoder: Decoder,
}

impl Live {
    /// Discovers, loads and attaches; warns (through `log`) about every attachment the
    /// kernel refused and every probe point that will record nothing.
    pub fn start(opts: &LiveOptions) -> Result<Live> {
        let plan = probe::discover(&opts.deny, &probe::Sources::default())?;
        let tracer = Tracer::start(
            &plan,
            &TracerOptions {
                ringbuf_bytes: opts.ringbuf_bytes,
                filter_pid: opts.filter_pid,
                floor: opts.floor,
            },
        )?;
        if opts.floor {
            log::warn!("--floor: every program returns at once; nothing will be recorded");
        }
        for r in &tracer.session.refused {
            log::warn!("not attached: {}: {r}", r.symbol);
        }
        for m in tracer.session.missing_points() {
            log::warn!(
                "probe point {} is missing ({}): events of that kind will not be recorded",
                m.point,
                m.why
            );
        }
        let decoder = Decoder::new(plan.drivers.clone()).with_objects(&plan);
        Ok(Live { tracer, decoder })
    }

    /// What was planned and what the kernel refused.
    pub fn session(&self) -> &Session {
        &self.tracer.session
    }

    /// Collects into `sink` until `stop` resolves (or the sink fails).
    pub async fn run(
        &mut self,
        sink: &mut dyn EventSink,
        stop: impl Future<Output = ()>,
    ) -> Result<CollectStats> {
        super::run(&mut self.tracer, &self.decoder, sink, stop).await
    }
}

/// Installs SIGINT and SIGTERM handlers now and returns a future that resolves on either,
/// or when `duration` passes. A process started with `&` from a script ignores SIGINT
/// unless it handles it itself; installing before reporting "ready" means no stop is missed.
/// Must be called inside a tokio runtime.
pub fn stop_signal(duration: Option<Duration>) -> Result<impl Future<Output = ()>> {
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
