//! `iommu-trace top`: the live TUI. Events from the ring buffer (live, needs root) or from a
//! capture (`--from FILE`, replayed at `--speed N` times real time, 0 = at once) go into the
//! TUI's model on this thread; the draw/input loop runs on its own thread (`tui::run_ui`).
//! Stops on q, Ctrl-C, SIGINT or SIGTERM; the terminal is restored on each, and on a panic.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::capture::pace::{FeedTarget, Pace, Pacer};
use crate::capture::{CaptureSet, CaptureSource, CaptureWarning};
use crate::collect::{self, EventSink, Live, LiveOptions};
use crate::events::Event;
use crate::probe::RunStats;
use crate::tui::terminal::{self, TerminalGuard};
use crate::tui::{self, Model, SessionInfo, SharedBoard, UiOptions};

pub struct TopOptions {
    /// Browse a capture instead of tracing this host (its file, or the parts of a rotated
    /// recording); empty: trace this host.
    pub from: Vec<PathBuf>,
    /// `--from`: times real time; 0 = as fast as possible, then hold the final state.
    pub speed: f64,
    /// Time between frames.
    pub refresh: Duration,
    /// Live: how to trace this host.
    pub live: LiveOptions,
    /// Where logs go while the screen is ours (default: nowhere).
    pub log: Option<PathBuf>,
}

impl Default for TopOptions {
    fn default() -> Self {
        TopOptions {
            from: Vec::new(),
            speed: 1.0,
            refresh: Duration::from_millis(250),
            live: LiveOptions::default(),
            log: None,
        }
    }
}

pub fn run(opts: TopOptions) -> Result<()> {
    // Every error a user can fix is reported before the screen is taken.
    terminal::check_tty()?;
    if !(opts.speed.is_finite() && opts.speed >= 0.0) {
        bail!(
            "--speed {} is invalid: give a factor of real time (2 = twice as fast), or 0 to \
             replay as fast as possible",
            opts.speed
        );
    }
    if opts.from.is_empty() {
        run_live(&opts)
    } else {
        run_capture(&opts, &opts.from)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Takes the terminal, runs the UI on its own thread, runs `source` here until it ends,
/// the UI quits or a signal comes, then gives the terminal back.
fn with_ui<F, Fut>(
    opts: &TopOptions,
    shared: Arc<SharedBoard>,
    live_clock: bool,
    source: F,
) -> Result<()>
where
    F: FnOnce(Arc<SharedBoard>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let rt = runtime()?;
    rt.block_on(async {
        // Handlers first: a SIGTERM must restore the terminal, not kill us with it raw.
        let signal = collect::stop_signal(None)?;
        let (guard, mut term) = TerminalGuard::enter(opts.log.as_deref())?;
        let ui_shared = shared.clone();
        let ui_opts = UiOptions {
            refresh: opts.refresh,
            live_clock,
        };
        let ui = std::thread::Builder::new()
            .name("top-ui".into())
            .spawn(move || tui::run_ui(&ui_shared, &mut term, &ui_opts))
            .context("starting the display thread")?;
        let quit = shared.quit_notify.notified();
        let result = tokio::select! {
            r = source(shared.clone()) => r,
            _ = signal => Ok(()),
            _ = quit => Ok(()),
        };
        shared.request_quit();
        let ui_result = ui.join();
        drop(guard);
        match ui_result {
            Ok(r) => r.context("drawing the screen")?,
            Err(_) => bail!("the display thread panicked (message above)"),
        }
        result
    })
}

// ---- capture ----------------------------------------------------------------------------

fn run_capture(opts: &TopOptions, files: &[PathBuf]) -> Result<()> {
    let reader = CaptureSet::open(files)?;
    let meta = SessionInfo::for_capture(reader.header(), reader.name(), opts.speed);
    if let Some(problem) = &reader.header().session_problem {
        log::warn!("{}: {problem}", reader.name());
    }
    drop(reader);
    let shared = Arc::new(SharedBoard::new(Model::new(meta)));
    let speed = opts.speed;
    let files = files.to_vec();
    with_ui(opts, shared, false, move |shared| async move {
        feed_capture(&files, &shared, speed).await?;
        // The final state stays on screen until the user quits.
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// The TUI's board as a paced feed's target: the user's pause and quit hold and stop it.
struct BoardFeed<'a> {
    shared: &'a SharedBoard,
}

impl FeedTarget for BoardFeed<'_> {
    fn apply(&mut self, batch: &mut Vec<Event>, clock: Option<u64>) {
        if batch.is_empty() && clock.is_none() {
            return;
        }
        let mut m = self.shared.lock();
        for e in batch.drain(..) {
            m.apply(e);
        }
        if let Some(c) = clock {
            m.advance(c);
        }
    }

    fn damaged(&mut self, warning: &CaptureWarning) {
        self.shared.lock().warning = Some(format!("capture damaged: {warning}"));
    }

    fn paused(&self) -> bool {
        self.shared.paused.load(Ordering::SeqCst)
    }

    fn stopped(&self) -> bool {
        self.shared.quit.load(Ordering::SeqCst)
    }
}

/// Feeds a capture into the board, paced at `speed` times real time (0: at once), holding
/// still while the user has paused.
pub async fn feed_capture(files: &[PathBuf], shared: &SharedBoard, speed: f64) -> Result<()> {
    let mut reader = CaptureSet::open(files)?;
    let mut target = BoardFeed { shared };
    Pacer::new(Pace::RealTime(speed), 512)
        .feed(&mut reader, &mut target)
        .await;
    if !target.stopped() {
        shared.lock().finished = true;
    }
    Ok(())
}

// ---- live -------------------------------------------------------------------------------

/// Live events -> the model, in batches (one lock per batch, at most 50 ms late).
struct TuiSink {
    shared: Arc<SharedBoard>,
    /// BPF run-time statistics, while the kernel keeps them for us.
    bpf: Option<RunStats>,
    buf: Vec<Event>,
    last_flush: Instant,
}

impl TuiSink {
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut m = self.shared.lock();
        for e in self.buf.drain(..) {
            m.apply(e);
        }
        drop(m);
        self.last_flush = Instant::now();
    }
}

impl EventSink for TuiSink {
    fn event(&mut self, event: Event) -> Result<()> {
        self.buf.push(event);
        if self.buf.len() >= 1024 || self.last_flush.elapsed() >= Duration::from_millis(50) {
            self.flush();
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<()> {
        self.flush();
        // About once a second: the kernel's own VmPin / VmLck beside the ledger, read
        // outside the lock.
        let procs = self.shared.lock().state().pins().process_names();
        let readings = crate::procfs::memory_held_of(&procs);
        let now = crate::events::clock::monotonic_ns();
        // Our own programs' cumulative run time, for the header's cost per operation.
        let run_ns = self
            .bpf
            .as_ref()
            .map(|b| b.read().iter().map(|p| p.run_time_ns).sum::<u64>());
        let mut m = self.shared.lock();
        m.reconcile_pins(&readings, now);
        if let Some(run_ns) = run_ns {
            m.note_bpf_run_time(run_ns, now);
        }
        Ok(())
    }
}

fn run_live(opts: &TopOptions) -> Result<()> {
    let mut live = Live::start(&opts.live)?;
    let mut model = Model::new(SessionInfo::for_live(live.session()));
    model.start_clock(crate::events::clock::monotonic_ns());
    let shared = Arc::new(SharedBoard::new(model));
    with_ui(opts, shared, true, |shared| async move {
        let mut sink = TuiSink {
            shared: shared.clone(),
            bpf: RunStats::enable(live.session()),
            buf: Vec::with_capacity(1024),
            last_flush: Instant::now(),
        };
        // Stopped by `with_ui` (quit or signal) dropping this future.
        let stats = live.run(&mut sink, std::future::pending()).await;
        sink.flush();
        let stats = stats?;
        shared.lock().note_decode_errors(stats.decode_errors);
        Ok(())
    })
}
