//! Replay: run each domain's reference model (`crate::model`) over an event stream and
//! verify, operation by operation, that the kernel allocated and freed exactly the
//! page-table pages the model predicts.
//!
//! How events line up (the tracer's contract, per domain pointer):
//! * `pt_alloc` of cause `alloc` follow their `domain_alloc` (the top-level table);
//! * `pt_alloc` / `pt_free` of cause `map` precede their `map` event (emitted when
//!   `iommu_map` returns), those of cause `unmap` precede their `unmap`, those of cause
//!   `free` precede `domain_free`.
//!
//! Page events are buffered per (domain, thread) until the operation event of that thread
//! arrives; then the model replays the operation and its predicted runs of allocations and
//! frees are compared with the observed ones, in order. Runs, not single events, are
//! compared, because the tracer may sum pages into one event.
//!
//! Use [`replay`] (or [`Replayer`] for a stream fed event by event), read the [`Report`]
//! (`Display` for people, `serde` for `--json`), and [`Report::all_verified`] for the exit
//! status.
//!
//! Layout: [`Replayer::push`] hands each event to its operation: `alloc.rs` (`domain_alloc`),
//! `pages.rs` (`pt_alloc` / `pt_free`), `map.rs` (`map` / `unmap`), `free.rs` (`domain_free`
//! and the end of the stream); `domain.rs` holds the per-domain bookkeeping they share,
//! `budget.rs` the bound on the models' memory, `runs.rs` the page runs, `report.rs` the
//! report types and their text; `objects.rs` checks the iommufd object graph beside them.

mod alloc;
mod budget;
mod domain;
mod file;
mod free;
mod map;
mod objects;
mod pages;
mod pins;
mod report;
mod runs;

use std::borrow::Borrow;

use serde::Serialize;

use crate::events::{Event, EventBody, Lost, PtCause};
use crate::model::{KernelBehaviour, Model, ModelSelect, PageLog};
use domain::Compact;

pub use file::{
    capture_gaps, options_for, options_for_session, replay_file, replay_reader, verification_gaps,
    Choice, FileReport,
};
pub use objects::{GraphFinding, ObjectsReport};
pub use pins::{PinFinding, PinsReport};
pub use report::{
    ContextEvent, Divergence, DomainReport, Outcome, PageTotals, Report, Uncharged, Verdict,
    WhatIfDomain, WhatIfRow, POINTS_OBJECTS, POINTS_VERIFIED,
};
pub use runs::PageRun;

/// What the replay does. `Default` is: model by driver name, Debian 6.12 behaviour,
/// 3 events of context around a divergence, no what-if.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ReplayOptions {
    /// Which model family to use (`--model auto|vtd|smmuv3`).
    pub model: ModelSelect,
    /// Kernel behaviour the models follow (legacy VT-d / generic page table / 7.0+
    /// whole-range unmap; io-pgtable-arm 6.12 / 7.x). See [`KernelBehaviour`].
    pub behaviour: KernelBehaviour,
    /// Also replay every domain's maps and unmaps under other page-table formats.
    pub what_if: bool,
    /// Events of the diverging domain to show before and after a divergence.
    pub context: usize,
    /// The capture records page-table growth (`pt_grow` events): a model whose top grows
    /// must grow at the same maps, to the same levels.
    pub top_growth: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            model: ModelSelect::Auto,
            behaviour: KernelBehaviour::default(),
            what_if: false,
            context: 3,
            top_growth: false,
        }
    }
}

/// Domains by kernel pointer (not attacker-chosen, so FxHash rather than SipHash).
type DomainMap = rustc_hash::FxHashMap<u64, DomainState>;

// ---- per-domain state -------------------------------------------------------------

/// Page events of one thread waiting for their operation event.
#[derive(Default)]
struct Pending {
    tid: u32,
    runs: Vec<PageRun>,
    cause: Option<PtCause>,
    first_index: u64,
    mixed_causes: bool,
    /// Levels the last `pt_grow` of this thread gave the table.
    grew_to: Option<u32>,
}

struct OpenAlloc {
    predicted: Vec<PageRun>,
    observed: Vec<PageRun>,
}

struct WhatIfState {
    format: String,
    actual: bool,
    /// None once an operation would have taken it beyond the budget (`budget.rs`).
    model: Option<Model>,
    log: PageLog,
    failed: u64,
}

struct DomainState {
    report: usize,
    model: Option<Model>,
    /// Verification stopped (divergence or unverifiable).
    stopped: bool,
    open_alloc: Option<OpenAlloc>,
    pending: Vec<Pending>,
    /// Buffers kept between operations (no allocation per operation): the predicted runs,
    /// and the runs Vec of the last pending entry consumed.
    pred_buf: Vec<PageRun>,
    spare_runs: Vec<PageRun>,
    log: PageLog,
    ring: std::collections::VecDeque<Compact>,
    /// Events still to collect after a divergence.
    after: usize,
    observed_live: u64,
    whatif: Vec<WhatIfState>,
}

/// The replay engine, fed one event at a time.
pub struct Replayer {
    opts: ReplayOptions,
    index: u64,
    active: DomainMap,
    reports: Vec<DomainReport>,
    /// Domains freed, kept for their what-if rows and post-divergence context.
    done_whatif: Vec<WhatIfDomain>,
    lost_events: u64,
    lost_contexts: u64,
    failed_allocs: u64,
    /// The models' memory, bounded.
    budget: budget::Budget,
    /// The iommufd objects and their invariants.
    objects: objects::ObjectGraph,
    /// The pinned-page accounting.
    pins: pins::PinLedger,
}

impl Replayer {
    pub fn new(opts: ReplayOptions) -> Self {
        Replayer {
            opts,
            index: 0,
            active: DomainMap::default(),
            reports: Vec::new(),
            done_whatif: Vec::new(),
            lost_events: 0,
            lost_contexts: 0,
            failed_allocs: 0,
            budget: budget::Budget::default(),
            objects: objects::ObjectGraph::default(),
            pins: pins::PinLedger::default(),
        }
    }

    /// Events consumed so far.
    pub fn events_done(&self) -> u64 {
        self.index
    }

    /// Feed one event.
    pub fn push(&mut self, ev: &Event) {
        let index = self.index;
        self.index += 1;
        match &ev.body {
            EventBody::Lost(l) => self.lost(index, l),
            EventBody::HwptAlloc(_) => {}
            EventBody::DomainAlloc(a) => {
                if a.errno == 0 && a.domain.0 != 0 {
                    self.objects.domain_alloc(index, a.domain);
                }
                self.domain_alloc(index, ev, a)
            }
            EventBody::PtAlloc(p) => self.pt_pages(index, ev, p, true),
            EventBody::PtFree(p) => self.pt_pages(index, ev, p, false),
            EventBody::PtGrow(g) => self.pt_grow(index, ev, g),
            EventBody::Map(m) => self.map_unmap(index, ev, m, true),
            EventBody::Unmap(m) => self.map_unmap(index, ev, m, false),
            EventBody::DomainFree(f) => {
                self.objects.domain_free(index, f.domain);
                self.domain_free(index, ev, f)
            }
            EventBody::ObjectAlloc(o) => self.objects.alloc(index, o),
            EventBody::ObjectAbort(_) => self.objects.abort(),
            EventBody::ObjectDestroy(o) => self.objects.destroy(index, o),
            EventBody::Pin(p) => self.pins.pin(index, p),
            // The accounting is checked call by call (`pins.rs`); the operations that make
            // the calls are not modelled.
            EventBody::IoasMap(_)
            | EventBody::IoasMapFile(_)
            | EventBody::IoasCopy(_)
            | EventBody::IoasUnmap(_)
            | EventBody::IoasChangeProcess(_)
            | EventBody::Option(_) => {}
        }
    }

    /// A `lost` event: count the losses and note them in every live domain.
    fn lost(&mut self, index: u64, l: &Lost) {
        // Saturating: a crafted capture's counts must not wrap back to "nothing lost".
        self.lost_events = self.lost_events.saturating_add(l.ringbuf_full);
        self.lost_contexts = self.lost_contexts.saturating_add(l.context_full);
        if l.ringbuf_full != 0 || l.context_full != 0 {
            self.pins.lost();
            for st in self.active.values() {
                let r = &mut self.reports[st.report];
                if r.notes.iter().all(|n| !n.starts_with("events were lost")) {
                    r.notes.push(format!(
                        "events were lost at event {index}: later results may be incomplete"
                    ));
                }
            }
        }
    }
}

/// Replay a whole stream.
pub fn replay<I>(events: I, opts: &ReplayOptions) -> Report
where
    I: IntoIterator,
    I::Item: Borrow<Event>,
{
    replay_with_progress(events, opts, |_| {})
}

/// Replay a whole stream, calling `progress(events_done)` every 4096 events and at the end
/// (for a progress bar).
pub fn replay_with_progress<I, F>(events: I, opts: &ReplayOptions, mut progress: F) -> Report
where
    I: IntoIterator,
    I::Item: Borrow<Event>,
    F: FnMut(u64),
{
    let mut r = Replayer::new(opts.clone());
    for ev in events {
        r.push(ev.borrow());
        if r.index.is_multiple_of(4096) {
            progress(r.index);
        }
    }
    progress(r.index);
    r.finish()
}

#[cfg(test)]
mod tests;
