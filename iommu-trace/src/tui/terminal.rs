//! The terminal while the TUI owns it: raw mode and the alternate screen, stderr sent
//! elsewhere (logs must never draw over the screen), and everything put back on quit, on a
//! signal (the caller stops the loop) and on a panic (a hook restores first, then reports).

use std::fs::File;
use std::io::{IsTerminal, Stdout};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Once;

use anyhow::{bail, Context, Result};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::Terminal;

/// The terminal is in raw mode on the alternate screen.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// A copy of the real stderr while fd 2 points at the log (-1: not redirected).
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);
static HOOK: Once = Once::new();

/// True once the terminal has been given back (the draw loop must stop drawing).
pub fn restored() -> bool {
    !ACTIVE.load(Ordering::SeqCst)
}

/// Fails with a clear message when stdout is not a terminal.
pub fn check_tty() -> Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!(
            "iommu-trace top draws a full-screen view and needs a terminal on stdout, but \
             stdout is a pipe or a file. Run it in a terminal; to save events for later use \
             `iommu-trace record -o FILE` (then `iommu-trace top --from FILE` in a terminal), \
             or `iommu-trace inspect FILE --summary` for text output."
        );
    }
    Ok(())
}

/// Owns the terminal: restores it when dropped.
pub struct TerminalGuard {
    _log: Option<OwnedFd>,
}

impl TerminalGuard {
    /// Sends stderr to `log` (or nowhere), installs the panic hook, enters raw mode and the
    /// alternate screen, and returns the guard and a terminal to draw on.
    pub fn enter(
        log: Option<&Path>,
    ) -> Result<(TerminalGuard, Terminal<CrosstermBackend<Stdout>>)> {
        check_tty()?;
        let target = match log {
            Some(p) => File::options()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening the log file {}", p.display()))?,
            None => File::options()
                .write(true)
                .open("/dev/null")
                .context("opening /dev/null for the logs")?,
        };
        let saved = nix::unistd::dup(2).context("duplicating stderr")?;
        SAVED_STDERR.store(saved, Ordering::SeqCst);
        nix::unistd::dup2(target.as_raw_fd(), 2).context("redirecting stderr to the log")?;
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        terminal::enable_raw_mode().context("putting the terminal in raw mode")?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut stdout = std::io::stdout();
        if let Err(e) = execute!(stdout, terminal::EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e).context("switching to the alternate screen");
        }
        let term = match Terminal::new(CrosstermBackend::new(std::io::stdout())) {
            Ok(t) => t,
            Err(e) => {
                restore();
                return Err(e).context("setting up the terminal");
            }
        };
        Ok((
            TerminalGuard {
                _log: Some(target.into()),
            },
            term,
        ))
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Gives the terminal back (idempotent; safe from a panic hook): leaves the alternate
/// screen, shows the cursor, leaves raw mode, points stderr back at the terminal.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let mut stdout = std::io::stdout();
        let _ = execute!(stdout, terminal::LeaveAlternateScreen, cursor::Show);
        let _ = terminal::disable_raw_mode();
    }
    let saved = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if saved >= 0 {
        let _ = nix::unistd::dup2(saved, 2);
        let _ = nix::unistd::close(saved);
    }
}
