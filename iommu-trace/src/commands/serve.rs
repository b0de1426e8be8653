//! `iommu-trace serve`: the Prometheus exporter. Live events (or a capture's, with
//! `--from FILE`) -> `state/` -> `/metrics`, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::capture::pace::{FeedTarget, Pace, Pacer};
use crate::capture::{CaptureSet, CaptureSource, CaptureWarning};
use crate::collect::{self, EventSink, Live, LiveOptions};
use crate::events::Event;
use crate::export::http::{Server, ServerContext};
use crate::export::{
    CgroupIds, CgroupNamer, CgroupPaths, ExportOptions, Exported, ExporterInfo, ReplaySummary,
};
use crate::probe::RunStats;
use crate::replay::{replay_file, Choice};
use crate::session::Session;

/// The exporter's default address: loopback only; `--listen 0.0.0.0:9464` to expose it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Serve a capture's metrics instead of tracing this host (its file, or the parts of a
    /// rotated recording); empty: trace this host.
    pub from: Vec<PathBuf>,
    /// Owner cgroups with their own series (the rest: `cgroup="other"`).
    pub top_cgroups: usize,
    /// Live: how to trace this host.
    pub live: LiveOptions,
    /// Created once metrics are served (and, live, the probes attached).
    pub ready_file: Option<PathBuf>,
    /// `--from`: also replay the capture against the reference models and export verdicts.
    pub verify: bool,
    /// `--from`: feed the capture this many times (0: until stopped), for load tests.
    pub repeat: u64,
    /// `--from`: at most this many events per second (default: as fast as they are read).
    pub rate: Option<f64>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: DEFAULT_LISTEN.parse().expect("valid address"),
            from: Vec::new(),
            top_cgroups: 10,
            live: LiveOptions::default(),
            ready_file: None,
            verify: false,
            repeat: 1,
            rate: None,
        }
    }
}

fn bind(addr: SocketAddr) -> Result<Server> {
    use std::io::ErrorKind;
    Server::bind(addr).map_err(|e| {
        // The advice names the real cause: the OS says which it is.
        let advice = match e.kind() {
            ErrorKind::AddrInUse => {
                "another exporter (or another iommu-trace serve) holds that \
                port: pick another with --listen ADDRESS:PORT"
            }
            ErrorKind::PermissionDenied => {
                "ports below 1024 need root or \
                CAP_NET_BIND_SERVICE: pick a port above 1023 with --listen ADDRESS:PORT"
            }
            ErrorKind::AddrNotAvailable => {
                "this host has no such address: give one of its \
                own addresses (127.0.0.1, or 0.0.0.0 for all) with --listen ADDRESS:PORT"
            }
            _ => "pick another address with --listen ADDRESS:PORT",
        };
        anyhow::anyhow!("cannot listen on {addr}: {e}. {advice}.")
    })
}

pub fn run(opts: ServeOptions) -> Result<()> {
    let server = bind(opts.listen)?;
    let addr = server.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if opts.from.is_empty() {
        serve_live(&opts, server, &runtime)
    } else {
        serve_capture(&opts, &opts.from, server, &runtime)
    }
    .map(|()| eprintln!("stopped serving on {addr}"))
}

fn context(shared: Arc<Exported>, namer: Box<dyn CgroupNamer>, top: usize) -> Arc<ServerContext> {
    Arc::new(ServerContext::new(
        shared,
        ExportOptions {
            top_cgroups: top,
            cgroups: namer,
        },
        Arc::new(AtomicBool::new(true)),
    ))
}

fn announce(addr: SocketAddr, what: &str, ready: &Option<PathBuf>) -> Result<()> {
    eprintln!("serving metrics of {what} on http://{addr}/metrics; Ctrl-C to stop");
    if let Some(ready) = ready {
        std::fs::write(ready, format!("{addr}\n"))
            .with_context(|| format!("writing {}", ready.display()))?;
    }
    Ok(())
}

// ---- capture ----------------------------------------------------------------------------

fn serve_capture(
    opts: &ServeOptions,
    files: &[PathBuf],
    server: Server,
    runtime: &tokio::runtime::Runtime,
) -> Result<()> {
    let reader = CaptureSet::open(files)?;
    let header = reader.header().clone();
    let name = reader.name().to_string();
    drop(reader);
    if let Some(problem) = &header.session_problem {
        log::warn!("{name}: {problem}: which probes recorded is unknown");
    }
    let probes = header
        .session
        .as_ref()
        .map(Session::probe_status)
        .unwrap_or_default();
    let replay = if opts.verify {
        Some(verify(files, &name)?)
    } else {
        None
    };
    let shared = Exported::new(ExporterInfo {
        source: "capture".into(),
        kernel_release: header.kernel_release.clone(),
        probes,
        bpf_programs: Vec::new(),
        replay,
    });
    let ctx = context(shared.clone(), Box::new(CgroupIds), opts.top_cgroups);
    let handle = server.spawn(ctx)?;
    runtime.block_on(async {
        let stop = collect_stop()?;
        tokio::pin!(stop);
        announce(handle.addr, &name, &opts.ready_file)?;
        tokio::select! {
            r = feed(files, &name, &shared, opts.repeat, opts.rate) => {
                r?;
                // Everything is in: keep serving until stopped.
                stop.await;
            }
            _ = &mut stop => {}
        }
        Ok::<(), anyhow::Error>(())
    })?;
    handle.shutdown();
    Ok(())
}

fn collect_stop() -> Result<impl std::future::Future<Output = ()>> {
    collect::stop_signal(None)
}

/// Replays the capture once and sums the verdicts.
fn verify(files: &[PathBuf], name: &str) -> Result<ReplaySummary> {
    // The same replay as `iommu-trace replay`: the kernel behaviour the capture's probe
    // plan detected, and no verdict without the probe points it needs.
    let done = replay_file(files, &Choice::default(), |_| {})?;
    if let Some(warning) = &done.warning {
        super::warn(name, warning);
    }
    Ok(ReplaySummary::of(&done.report))
}

/// The exporter's state as a paced feed's target.
struct StateFeed<'a> {
    shared: &'a Exported,
    name: &'a str,
    pass: u64,
}

impl FeedTarget for StateFeed<'_> {
    fn apply(&mut self, batch: &mut Vec<Event>, _clock: Option<u64>) {
        if batch.is_empty() {
            return;
        }
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        for e in batch.drain(..) {
            state.apply(&e);
        }
    }

    fn damaged(&mut self, warning: &CaptureWarning) {
        if self.pass == 1 {
            log::warn!("{}: {warning}", self.name);
        }
    }
}

/// Feeds the capture into the state `repeat` times (0: forever), pacing to `rate` events/s.
async fn feed(
    files: &[PathBuf],
    name: &str,
    shared: &Exported,
    repeat: u64,
    rate: Option<f64>,
) -> Result<()> {
    let pace = match rate {
        Some(r) => Pace::EventsPerSec(r),
        None => Pace::Unpaced,
    };
    let mut pacer = Pacer::new(pace, 256);
    let mut fed = 0u64;
    let mut pass = 0u64;
    while repeat == 0 || pass < repeat {
        pass += 1;
        let mut reader = CaptureSet::open(files)?;
        let mut target = StateFeed { shared, name, pass };
        let done = pacer.feed(&mut reader, &mut target).await;
        fed += done.events;
        if done.damaged {
            // A damaged or truncated capture: its bad frame counts as a decode error.
            shared
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .note_decode_errors(1);
        }
        if repeat == 0 && fed == 0 {
            anyhow::bail!("{name} holds no events to repeat");
        }
    }
    Ok(())
}

// ---- live -------------------------------------------------------------------------------

struct StateSink {
    shared: Arc<Exported>,
    bpf: Option<RunStats>,
}

impl EventSink for StateSink {
    fn decode_errors(&mut self, n: u64) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note_decode_errors(n);
    }

    fn event(&mut self, event: Event) -> Result<()> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(&event);
        Ok(())
    }

    fn tick(&mut self) -> Result<()> {
        // About once a second: the kernel's own VmPin / VmLck beside the ledger, read
        // outside the lock.
        let lock = || self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let procs = lock().pins().process_names();
        let readings = crate::procfs::memory_held_of(&procs);
        let now = crate::events::clock::monotonic_ns();
        lock().reconcile_pins(&readings, now);
        if let Some(b) = &self.bpf {
            let stats = b.read();
            self.shared
                .meta
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .bpf_programs = stats;
        }
        Ok(())
    }
}

fn serve_live(
    opts: &ServeOptions,
    server: Server,
    runtime: &tokio::runtime::Runtime,
) -> Result<()> {
    let mut live = Live::start(&opts.live)?;
    let shared = Exported::new(ExporterInfo {
        source: "live".into(),
        kernel_release: live.session().kernel_release().to_string(),
        probes: live.session().probe_status(),
        bpf_programs: Vec::new(),
        replay: None,
    });
    let ctx = context(
        shared.clone(),
        Box::new(CgroupPaths::new("/sys/fs/cgroup")),
        opts.top_cgroups,
    );
    let healthy = ctx.healthy.clone();
    let handle = server.spawn(ctx)?;
    let mut sink = StateSink {
        shared: shared.clone(),
        bpf: RunStats::enable(live.session()),
    };
    let result = runtime.block_on(async {
        let stop = collect_stop()?;
        announce(
            handle.addr,
            &format!(
                "this host ({} probes attached)",
                live.session().attached_count()
            ),
            &opts.ready_file,
        )?;
        live.run(&mut sink, stop).await
    });
    match result {
        // Decode errors reached the state as they happened (EventSink::decode_errors).
        Ok(_stats) => {
            handle.shutdown();
            Ok(())
        }
        Err(e) => {
            healthy.store(false, Ordering::Relaxed);
            handle.shutdown();
            Err(e)
        }
    }
}
