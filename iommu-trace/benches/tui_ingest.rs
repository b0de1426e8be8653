//! `cargo bench -p iommu-trace --bench tui_ingest`: unpaced ingest cost per event,
//! `state::State` alone vs the TUI's model (which wraps it), over the feed the TUI
//! benchmarks share. Reported, not asserted.

use std::time::Instant;

use iommu_trace::events::Event;

#[path = "common/tui_feed.rs"]
mod tui_feed;

use tui_feed::bench_feed;

/// Unpaced ingest cost per event: `state::State` alone vs the TUI's model (which wraps it).
fn main() {
    use iommu_trace::tui::{Mode, Model, SessionInfo};
    let template = bench_feed();
    let n = 2_000_000usize;
    let feed = |f: &mut dyn FnMut(Event)| {
        let mut ts = 1_000_000_000u64;
        for i in 0..n {
            let mut e = template[i % template.len()].clone();
            ts += 10_000;
            e.ts_ns = ts;
            f(e);
        }
    };
    let t = Instant::now();
    let mut clones = 0usize;
    feed(&mut |e| clones += e.comm.len());
    let clone_ns = t.elapsed().as_nanos() as f64 / n as f64;
    let mut state = iommu_trace::state::State::new();
    let t = Instant::now();
    feed(&mut |e| state.apply(&e));
    let state_ns = t.elapsed().as_nanos() as f64 / n as f64;
    let mut model = Model::new(SessionInfo {
        mode: Mode::Live,
        kernel_release: "bench".into(),
        probes_attached: 0,
        probes_missing: Vec::new(),
        replay: Default::default(),
        verification_gaps: Vec::new(),
    });
    let t = Instant::now();
    feed(&mut |e| model.apply(e));
    let model_ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "per event: clone {clone_ns:.0} ns, state/ {state_ns:.0} ns, TUI model {model_ns:.0} ns ({clones})"
    );
}
