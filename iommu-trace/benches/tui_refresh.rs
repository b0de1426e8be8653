//! `cargo bench -p iommu-trace --bench tui_refresh`: what the TUI costs beyond the headless
//! aggregate, measured side by side in one run (ratios, not absolute times: the machine is
//! noisy). Reported, not asserted.

use std::time::{Duration, Instant};

#[path = "common/tui_feed.rs"]
mod tui_feed;

use tui_feed::bench_feed;

/// 100,000 events per second for `TUI_BENCH_SECS` (default 20) seconds, twice: into a
/// headless `state::State`, then into the TUI's model with a frame drawn every 250 ms at
/// 160x48 through the crossterm backend (into /dev/null). Reports the CPU used beyond the
/// headless ingest, as a share of one core, and the resident memory over time.
fn main() {
    use iommu_trace::tui::{render, App, Mode, Model, SessionInfo};
    use ratatui::backend::CrosstermBackend;
    use ratatui::layout::Rect;
    use ratatui::{Terminal, TerminalOptions, Viewport};

    let secs: u64 = std::env::var("TUI_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let template = bench_feed();
    let rate = 100_000u64;
    let tick = Duration::from_millis(10);
    let per_tick = (rate / 100) as usize;

    let run = |tui: bool| -> (f64, f64, Vec<u64>) {
        let mut state = iommu_trace::state::State::new();
        let mut model = Model::new(SessionInfo {
            mode: Mode::Live,
            kernel_release: "bench".into(),
            probes_attached: 9,
            probes_missing: Vec::new(),
            replay: Default::default(),
            verification_gaps: Vec::new(),
        });
        let devnull = std::fs::File::options()
            .write(true)
            .open("/dev/null")
            .expect("/dev/null");
        let mut term = Terminal::with_options(
            CrosstermBackend::new(devnull),
            TerminalOptions {
                viewport: Viewport::Fixed(Rect::new(0, 0, 160, 48)),
            },
        )
        .expect("terminal");
        let app = App::default();
        let start = Instant::now();
        let cpu0 = thread_cpu();
        let mut draw_cpu = 0.0;
        let mut next = start;
        let mut last_draw = start;
        let mut i = 0usize;
        let mut ts = 1_000_000_000u64;
        let mut rss = Vec::new();
        let mut last_rss = start;
        while start.elapsed() < Duration::from_secs(secs) {
            for _ in 0..per_tick {
                let mut e = template[i % template.len()].clone();
                i += 1;
                ts += 10_000;
                e.ts_ns = ts;
                if tui {
                    model.apply(e);
                } else {
                    state.apply(&e);
                }
            }
            if tui && last_draw.elapsed() >= Duration::from_millis(250) {
                let c = thread_cpu();
                model.advance(ts);
                term.draw(|f| render::draw(f, &app, &model)).expect("draw");
                draw_cpu += thread_cpu() - c;
                last_draw = Instant::now();
            }
            if last_rss.elapsed() >= Duration::from_secs(5) {
                rss.push(rss_kib());
                last_rss = Instant::now();
            }
            next += tick;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        let wall = start.elapsed().as_secs_f64();
        ((thread_cpu() - cpu0) / wall, draw_cpu / wall, rss)
    };
    let (headless, _, rss_h) = run(false);
    let (tui, draw, rss_t) = run(true);
    println!("feed: {rate} events/s for {secs} s each");
    println!("headless state/ ingest: {:.2}% of a core", headless * 100.0);
    println!(
        "TUI (model ingest + draws every 250 ms at 160x48): {:.2}% of a core; draws alone {:.2}%; beyond headless {:.2}%; ratio {:.2}x",
        tui * 100.0,
        draw * 100.0,
        (tui - headless) * 100.0,
        tui / headless
    );
    println!("RSS KiB every 5 s: headless {rss_h:?}");
    println!("RSS KiB every 5 s: TUI      {rss_t:?}");
}

fn thread_cpu() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).expect("clock");
    t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .map_or(0, |p| p * 4)
}
