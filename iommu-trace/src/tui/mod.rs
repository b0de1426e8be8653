//! The live TUI (`iommu-trace top`): ratatui over `state/`.
//!
//! * `board`: `state::State` plus what only a screen needs (lingering freed domains, recent
//!   events, page-table growth, rates, per-process failures, replay verdicts);
//! * `app`: view state and keys; `render`: one frame from both (tested with TestBackend),
//!   one file per view; `format`: units and text (bytes, durations, flags, events);
//! * `terminal`: raw mode, alternate screen, stderr away from the screen, restore on quit,
//!   signal and panic;
//! * [`run_ui`]: the draw/input loop, on its own thread, while the caller feeds [`SharedBoard`]
//!   from the live ring buffer or a capture (`commands/top.rs`): one event stream, two
//!   sources, the same code after it.

pub mod app;
pub mod board;
pub mod format;
pub mod render;
pub mod terminal;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Result;
use ratatui::backend::Backend;
use ratatui::crossterm::event::{self, Event as TermEvent};
use ratatui::Terminal;

pub use app::App;
pub use board::{Mode, Model, SessionInfo};

/// What the source (ingest) side and the UI thread share.
pub struct SharedBoard {
    pub model: Mutex<Model>,
    /// The user paused: a replay stops its clock (live keeps ingesting).
    pub paused: AtomicBool,
    /// Stop everything (the UI sets it on q / Ctrl-C; the source side on a signal).
    pub quit: AtomicBool,
    /// Wakes the source side when the UI quits.
    pub quit_notify: tokio::sync::Notify,
}

impl SharedBoard {
    pub fn new(model: Model) -> SharedBoard {
        SharedBoard {
            model: Mutex::new(model),
            paused: AtomicBool::new(false),
            quit: AtomicBool::new(false),
            quit_notify: tokio::sync::Notify::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn request_quit(&self) {
        self.quit.store(true, Ordering::SeqCst);
        self.quit_notify.notify_waiters();
        self.quit_notify.notify_one();
    }
}

/// Sets `quit` when the UI loop ends, however it ends (a panic included).
struct QuitOnDrop<'a>(&'a SharedBoard);

impl Drop for QuitOnDrop<'_> {
    fn drop(&mut self) {
        self.0.request_quit();
    }
}

pub struct UiOptions {
    /// Time between frames.
    pub refresh: Duration,
    /// Advance the model's clock with CLOCK_MONOTONIC (live); a replay's feeder moves it.
    pub live_clock: bool,
}

/// Draws and reads keys until the user quits or `shared.quit` is set.
pub fn run_ui<B: Backend>(
    shared: &SharedBoard,
    term: &mut Terminal<B>,
    opts: &UiOptions,
) -> Result<()> {
    let _quit = QuitOnDrop(shared);
    let mut app = App::default();
    let mut frozen: Option<Model> = None;
    let mut last_draw: Option<Instant> = None;
    let mut dirty = true;
    // Fault injection for the real-terminal test of the panic path: panic after one frame.
    let panic_after_frame = std::env::var_os("IOMMU_TRACE_TUI_TEST_PANIC").is_some();
    loop {
        if panic_after_frame && last_draw.is_some() {
            panic!("IOMMU_TRACE_TUI_TEST_PANIC is set: panicking to test the terminal restore");
        }
        if shared.quit.load(Ordering::SeqCst) || terminal::restored() {
            return Ok(());
        }
        let due = last_draw.is_none_or(|t| t.elapsed() >= opts.refresh);
        if dirty || due {
            match &frozen {
                Some(m) => {
                    term.draw(|f| render::draw(f, &app, m))?;
                }
                None => {
                    let mut m = shared.lock();
                    if opts.live_clock {
                        m.advance(crate::events::clock::monotonic_ns());
                    }
                    term.draw(|f| render::draw(f, &app, &m))?;
                }
            }
            last_draw = Some(Instant::now());
            dirty = false;
        }
        let wait = last_draw
            .map_or(Duration::ZERO, |t| opts.refresh.saturating_sub(t.elapsed()))
            .min(Duration::from_millis(100));
        if !event::poll(wait)? {
            continue;
        }
        match event::read()? {
            TermEvent::Key(k) => {
                let action = match &frozen {
                    Some(m) => app.on_key(k, m),
                    None => app.on_key(k, &shared.lock()),
                };
                match action {
                    app::Action::Quit => return Ok(()),
                    app::Action::Pause => {
                        frozen = app.paused.then(|| shared.lock().clone());
                        shared.paused.store(app.paused, Ordering::SeqCst);
                    }
                    app::Action::None => {}
                }
                dirty = true;
            }
            TermEvent::Resize(..) => dirty = true,
            _ => {}
        }
    }
}
