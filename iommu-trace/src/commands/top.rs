//! `iommu-trace top`: the live TUI. Events from the ring buffer (live, needs root) or from a
//! capture (`--from FILE`, replayed at `--speed N` times real time, 0 = at once) go into the
//! TUI's model on this thread; the draw/input loop runs on its own thread (`tui::run_ui`).
//! Stops on q, Ctrl-C, SIGINT or SIGTERM; the terminal is restored on each, and on a panic.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::capture::CaptureReader;
use crate::collect::{self, EventSink, Live, LiveOptions};
use crate::events::{Event, EventBody};
use crate::tui::terminal::{self, TerminalGuard};
use crate::tui::{self, Meta, Model, Shared, UiOptions};

pub struct TopOptions {
    /// Browse a capture instead of tracing this host.
    pub from: Option<PathBuf>,
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
            from: None,
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
    match &opts.from {
        Some(file) => run_capture(&opts, file),
        None => run_live(&opts),
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
    shared: Arc<Shared>,
    live_clock: bool,
    source: F,
) -> Result<()>
where
    F: FnOnce(Arc<Shared>) -> Fut,
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

fn run_capture(opts: &TopOptions, file: &Path) -> Result<()> {
    let reader = CaptureReader::open(file)?;
    let meta = Meta::for_capture(reader.header(), &file.display().to_string(), opts.speed);
    if let Some(problem) = &reader.header().session_problem {
        log::warn!("{}: {problem}", file.display());
    }
    drop(reader);
    let shared = Arc::new(Shared::new(Model::new(meta)));
    let speed = opts.speed;
    let file = file.to_path_buf();
    with_ui(opts, shared, false, move |shared| async move {
        feed_capture(&file, &shared, speed).await?;
        // The final state stays on screen until the user quits.
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// Feeds a capture into the model, paced at `speed` times real time (0: at once), holding
/// still while the user has paused.
pub async fn feed_capture(file: &Path, shared: &Shared, speed: f64) -> Result<()> {
    const BATCH: usize = 512;
    const STEP: Duration = Duration::from_millis(50);
    let mut reader = CaptureReader::open(file)?;
    let mut batch: Vec<Event> = Vec::with_capacity(BATCH);
    // Replay time: real time elapsed while not paused, times `speed`.
    let mut virt = Duration::ZERO;
    let mut last = Instant::now();
    let mut first_ts: Option<u64> = None;
    let flush = |batch: &mut Vec<Event>, clock: Option<u64>| {
        let mut m = shared.lock();
        for e in batch.drain(..) {
            m.apply(e);
        }
        if let Some(c) = clock {
            m.advance(c);
        }
    };
    loop {
        if shared.quit.load(Ordering::SeqCst) {
            return Ok(());
        }
        let ev = match reader.next() {
            None => break,
            Some(Ok(ev)) => ev,
            Some(Err(w)) => {
                shared.lock().warning = Some(format!("capture damaged: {w}"));
                continue;
            }
        };
        if speed > 0.0 && !matches!(ev.body, EventBody::Lost(_)) {
            let first = *first_ts.get_or_insert(ev.ts_ns);
            let due = Duration::from_nanos(ev.ts_ns.saturating_sub(first));
            loop {
                let now = Instant::now();
                if !shared.paused.load(Ordering::SeqCst) {
                    virt += (now - last).mul_f64(speed);
                }
                last = now;
                if virt >= due || shared.quit.load(Ordering::SeqCst) {
                    break;
                }
                flush(&mut batch, Some(first + virt.as_nanos() as u64));
                let wait = (due - virt).div_f64(speed).min(STEP);
                tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
            }
        }
        while speed == 0.0 && shared.paused.load(Ordering::SeqCst) {
            flush(&mut batch, None);
            if shared.quit.load(Ordering::SeqCst) {
                return Ok(());
            }
            tokio::time::sleep(STEP).await;
        }
        batch.push(ev);
        if batch.len() >= BATCH {
            flush(&mut batch, None);
            // Let the signal handlers and the quit notification run.
            tokio::task::yield_now().await;
        }
    }
    flush(&mut batch, None);
    shared.lock().finished = true;
    Ok(())
}

// ---- live -------------------------------------------------------------------------------

/// Live events -> the model, in batches (one lock per batch, at most 50 ms late).
struct TuiSink {
    shared: Arc<Shared>,
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
        Ok(())
    }
}

fn run_live(opts: &TopOptions) -> Result<()> {
    let mut live = Live::start(&opts.live)?;
    let mut model = Model::new(Meta::for_live(live.session()));
    model.start_clock(crate::events::clock::monotonic_ns());
    let shared = Arc::new(Shared::new(model));
    with_ui(opts, shared, true, |shared| async move {
        let mut sink = TuiSink {
            shared: shared.clone(),
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
