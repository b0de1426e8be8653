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

mod file;
pub use file::{missing_for_verification, options_for, replay_file, Choice, FileReport};

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Serialize;

use crate::events::{DomainKind, Event, EventBody, KernelPtr, PtCause};
use crate::model::{KernelBehaviour, Model, ModelConfig, ModelSelect, PageLog, PageOp};

/// cgroup v2 id of the root cgroup (its kernfs node id).
const ROOT_CGROUP_ID: u64 = 1;

/// What the replay does. `Default` is: model by driver name, Debian 6.12 behaviour,
/// 3 events of context around a divergence, no what-if.
#[derive(Clone, Debug, Serialize)]
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
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            model: ModelSelect::Auto,
            behaviour: KernelBehaviour::default(),
            what_if: false,
            context: 3,
        }
    }
}

/// A run of consecutive page allocations or frees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PageRun {
    Alloc { pages: u64 },
    Free { pages: u64 },
}

impl fmt::Display for PageRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageRun::Alloc { pages } => write!(f, "+{pages}"),
            PageRun::Free { pages } => write!(f, "-{pages}"),
        }
    }
}

fn push_run(runs: &mut Vec<PageRun>, alloc: bool, pages: u64) {
    if pages == 0 {
        return;
    }
    match (runs.last_mut(), alloc) {
        (Some(PageRun::Alloc { pages: p }), true) | (Some(PageRun::Free { pages: p }), false) => {
            *p += pages
        }
        _ => runs.push(if alloc {
            PageRun::Alloc { pages }
        } else {
            PageRun::Free { pages }
        }),
    }
}

fn runs_of(ops: &[PageOp]) -> Vec<PageRun> {
    let mut runs = Vec::new();
    runs_into(ops, &mut runs);
    runs
}

/// [`runs_of`] into a buffer the caller reuses.
fn runs_into(ops: &[PageOp], runs: &mut Vec<PageRun>) {
    runs.clear();
    for op in ops {
        match *op {
            PageOp::Alloc { pages, .. } => push_run(runs, true, pages),
            PageOp::Free { pages } => push_run(runs, false, pages),
        }
    }
}

/// A hasher for the domain table's keys (kernel pointers; not attacker-chosen, so no need
/// for SipHash): an FxHash-style multiply, rotated so that the well-mixed high bits pick
/// the bucket (pointers are aligned, so their low bits, and the product's, are zero).
#[derive(Default)]
struct PtrHasher(u64);

impl Hasher for PtrHasher {
    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

type DomainMap = HashMap<u64, DomainState, BuildHasherDefault<PtrHasher>>;

fn fmt_runs(runs: &[PageRun]) -> String {
    if runs.is_empty() {
        return "nothing".into();
    }
    runs.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The outcome for one domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    /// Every operation's page allocations and frees matched the model.
    Verified,
    /// The kernel did something the model did not predict (see `divergence`).
    Diverged,
    /// The domain could not be checked: unknown configuration, no model for its driver,
    /// allocated before the capture started, or a path the model does not reproduce.
    Unverifiable(String),
}

/// One event shown around a divergence.
#[derive(Clone, Debug, Serialize)]
pub struct ContextEvent {
    pub index: u64,
    pub event: String,
    /// This is the event where the divergence was found.
    pub here: bool,
}

/// The first place where the kernel and the model disagreed.
#[derive(Clone, Debug, Serialize)]
pub struct Divergence {
    /// Index (0-based, in the stream) of the event at which the mismatch was found.
    pub event_index: u64,
    pub reason: String,
    /// Page runs the model predicted for that operation.
    pub predicted: Vec<PageRun>,
    /// Page runs observed for it.
    pub observed: Vec<PageRun>,
    /// A few events of this domain around it.
    pub context: Vec<ContextEvent>,
}

/// Pages allocated without a memory-cgroup charge, split by cause.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Uncharged {
    /// Uncharged by kernel policy: the top-level table allocated with the domain
    /// (GFP_KERNEL in `paging_domain_alloc`, `arm_64_lpae_alloc_pgtable_s1/s2`,
    /// `pt_iommu_*_init`), tables of a split block (GFP_ATOMIC in
    /// `arm_lpae_split_blk_unmap`), or a non-iommufd caller's gfp.
    pub policy: u64,
    /// Uncharged where iommufd asked for GFP_KERNEL_ACCOUNT (tables allocated by
    /// `iommu_map` from iommufd): a defect.
    pub unexpected: u64,
    /// Index of the first event with unexpected uncharged pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_unexpected_index: Option<u64>,
}

/// Page totals, observed or predicted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PageTotals {
    pub allocated: u64,
    pub freed: u64,
    pub peak: u64,
}

/// Everything the replay found about one domain.
#[derive(Clone, Debug, Serialize)]
pub struct DomainReport {
    pub domain: KernelPtr,
    pub driver: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<DomainKind>,
    /// The model and configuration used, e.g. "VT-d legacy 4-level gaw 48 4K+2M+1G ...".
    pub model: Option<String>,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub alloc_index: Option<u64>,
    pub free_index: Option<u64>,
    pub maps: u64,
    pub unmaps: u64,
    pub observed: PageTotals,
    /// Model totals while verification ran (up to a divergence).
    pub predicted: PageTotals,
    /// Pages never freed: still held at the end of the capture (domain alive), or left
    /// after the domain was freed.
    pub never_freed: u64,
    /// The domain was still alive at the end of the capture.
    pub alive_at_end: bool,
    pub uncharged: Uncharged,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence: Option<Divergence>,
    /// Things worth knowing that are not a divergence.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One format replayed in `--what-if`.
#[derive(Clone, Debug, Serialize)]
pub struct WhatIfRow {
    pub format: String,
    /// The format the kernel actually used.
    pub actual: bool,
    pub peak_pages: u64,
    /// Pages held after the last operation (before the domain free, if any).
    pub final_pages: u64,
    /// Maps or unmaps this format could not do (alignment, range).
    pub failed_ops: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct WhatIfDomain {
    pub domain: KernelPtr,
    pub rows: Vec<WhatIfRow>,
}

/// The replay's findings.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub options: ReplayOptions,
    pub events: u64,
    /// Ring-buffer and context-table losses reported by `lost` events.
    pub lost_events: u64,
    pub lost_contexts: u64,
    /// Failed `domain_alloc` ops (no domain to model).
    pub failed_allocs: u64,
    pub domains: Vec<DomainReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub what_if: Vec<WhatIfDomain>,
    /// Probe points the verification needs that recorded nothing (from the capture
    /// header): with one missing, a domain that "verifies" proves nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_points: Vec<crate::session::MissingPoint>,
}

/// The probe points whose events the replay compares: without any of them a capture
/// cannot verify.
pub const POINTS_VERIFIED: &[&str] = &["driver_alloc", "domain_free", "map", "unmap", "pt_pages"];

impl Report {
    /// True when every domain verified, nothing was lost, and every probe point the
    /// verification needs recorded: the exit status.
    pub fn all_verified(&self) -> bool {
        self.lost_events == 0
            && self.lost_contexts == 0
            && self.missing_points.is_empty()
            && self.domains.iter().all(|d| d.verdict == Verdict::Verified)
    }

    /// Domains whose pages were uncharged against iommufd's GFP_KERNEL_ACCOUNT.
    pub fn unexpected_uncharged(&self) -> u64 {
        self.domains.iter().map(|d| d.uncharged.unexpected).sum()
    }

    /// The first divergence in stream order, if any.
    pub fn first_divergence(&self) -> Option<(&DomainReport, &Divergence)> {
        self.domains
            .iter()
            .filter_map(|d| d.divergence.as_ref().map(|v| (d, v)))
            .min_by_key(|(_, v)| v.event_index)
    }
}

// ---- per-domain state -------------------------------------------------------------

/// A compact event of one domain, kept for context (no heap per event).
#[derive(Clone, Copy, Debug)]
struct Compact {
    index: u64,
    tid: u32,
    body: CompactBody,
}

#[derive(Clone, Copy, Debug)]
enum CompactBody {
    Alloc,
    Free,
    Map {
        iova: u64,
        size: u64,
        done: u64,
        errno: i32,
    },
    Unmap {
        iova: u64,
        size: u64,
        done: u64,
    },
    Pt {
        alloc: bool,
        pages: u64,
        charged: bool,
        cause: PtCause,
    },
}

impl fmt::Display for Compact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tid {} ", self.tid)?;
        match self.body {
            CompactBody::Alloc => write!(f, "domain_alloc"),
            CompactBody::Free => write!(f, "domain_free"),
            CompactBody::Map {
                iova,
                size,
                done,
                errno,
            } => {
                write!(f, "map iova {iova:#x} size {size:#x} done {done:#x}")?;
                if errno != 0 {
                    write!(f, " errno {errno}")?;
                }
                Ok(())
            }
            CompactBody::Unmap { iova, size, done } => {
                write!(f, "unmap iova {iova:#x} size {size:#x} done {done:#x}")
            }
            CompactBody::Pt {
                alloc,
                pages,
                charged,
                cause,
            } => write!(
                f,
                "{} {} page(s) cause {:?}{}",
                if alloc { "pt_alloc" } else { "pt_free" },
                pages,
                cause,
                if alloc && !charged {
                    " (uncharged)"
                } else {
                    ""
                }
            ),
        }
    }
}

/// Page events of one thread waiting for their operation event.
#[derive(Default)]
struct Pending {
    tid: u32,
    runs: Vec<PageRun>,
    cause: Option<PtCause>,
    first_index: u64,
    mixed_causes: bool,
}

struct OpenAlloc {
    predicted: Vec<PageRun>,
    observed: Vec<PageRun>,
}

struct WhatIfState {
    format: String,
    actual: bool,
    model: Model,
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
        }
    }

    /// Events consumed so far.
    pub fn events_done(&self) -> u64 {
        self.index
    }

    fn new_domain(
        reports: &mut Vec<DomainReport>,
        domain: u64,
        driver: &str,
        kind: Option<DomainKind>,
    ) -> DomainState {
        reports.push(DomainReport {
            domain: KernelPtr(domain),
            driver: driver.to_string(),
            kind,
            model: None,
            verdict: Verdict::Verified,
            alloc_index: None,
            free_index: None,
            maps: 0,
            unmaps: 0,
            observed: PageTotals::default(),
            predicted: PageTotals::default(),
            never_freed: 0,
            alive_at_end: false,
            uncharged: Uncharged::default(),
            divergence: None,
            notes: Vec::new(),
        });
        DomainState {
            report: reports.len() - 1,
            model: None,
            stopped: false,
            open_alloc: None,
            pending: Vec::new(),
            pred_buf: Vec::new(),
            spare_runs: Vec::new(),
            log: PageLog::new(),
            ring: std::collections::VecDeque::new(),
            after: 0,
            observed_live: 0,
            whatif: Vec::new(),
        }
    }

    /// Feed one event.
    pub fn push(&mut self, ev: &Event) {
        let index = self.index;
        self.index += 1;
        match &ev.body {
            EventBody::Lost(l) => {
                self.lost_events += l.ringbuf_full;
                self.lost_contexts += l.context_full;
                if l.ringbuf_full + l.context_full > 0 {
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
            EventBody::HwptAlloc(_) => {}
            EventBody::DomainAlloc(a) => {
                if a.errno != 0 {
                    self.failed_allocs += 1;
                    return;
                }
                let domain = a.domain.0;
                if let Some(old) = self.active.remove(&domain) {
                    self.close_domain(
                        old,
                        Some(
                            "the domain pointer was allocated again without a domain_free event"
                                .into(),
                        ),
                    );
                }
                let mut st = Self::new_domain(&mut self.reports, domain, &a.driver, Some(a.kind));
                let r = &mut self.reports[st.report];
                r.alloc_index = Some(index);
                match ModelConfig::from_alloc(a, self.opts.model, self.opts.behaviour) {
                    Ok(cfg) => {
                        r.model = Some(cfg.describe());
                        let mut model = cfg.build();
                        st.log.clear();
                        model.domain_alloc(&mut st.log);
                        st.open_alloc = Some(OpenAlloc {
                            predicted: runs_of(&st.log.ops),
                            observed: Vec::new(),
                        });
                        if self.opts.what_if {
                            let mut rows = vec![(cfg.describe(), true, cfg.build())];
                            for v in cfg.what_if_variants() {
                                if v != cfg {
                                    rows.push((v.describe(), false, v.build()));
                                }
                            }
                            st.whatif = rows
                                .into_iter()
                                .map(|(format, actual, mut model)| {
                                    let mut log = PageLog::new();
                                    model.domain_alloc(&mut log);
                                    WhatIfState {
                                        format,
                                        actual,
                                        model,
                                        log,
                                        failed: 0,
                                    }
                                })
                                .collect();
                        }
                        st.model = Some(model);
                    }
                    Err(e) => {
                        r.verdict = Verdict::Unverifiable(e.to_string());
                        st.stopped = true;
                    }
                }
                Self::remember(
                    &mut st,
                    &self.opts,
                    index,
                    ev.tid,
                    CompactBody::Alloc,
                    &mut self.reports,
                );
                self.active.insert(domain, st);
            }
            EventBody::PtAlloc(p) | EventBody::PtFree(p) => {
                let alloc = matches!(ev.body, EventBody::PtAlloc(_));
                let st = Self::ensure(&mut self.active, &mut self.reports, p.domain.0);
                let body = CompactBody::Pt {
                    alloc,
                    pages: p.pages,
                    charged: p.charged,
                    cause: p.cause,
                };
                Self::remember(st, &self.opts, index, ev.tid, body, &mut self.reports);
                let r = &mut self.reports[st.report];
                if alloc {
                    r.observed.allocated += p.pages;
                    st.observed_live += p.pages;
                    r.observed.peak = r.observed.peak.max(st.observed_live);
                    if !p.charged {
                        // Classify by cause (kernel-notes.md §3.3).
                        let policy = match p.cause {
                            PtCause::Alloc | PtCause::Unmap => true,
                            // A task in the root cgroup is never charged (the root memcg does
                            // not account kmem, mm/memcontrol.c __memcg_kmem_charge_page).
                            PtCause::Map if ev.cgroup_id == ROOT_CGROUP_ID => true,
                            PtCause::Map => !matches!(
                                r.kind,
                                Some(DomainKind::Paging | DomainKind::Nested | DomainKind::Auto)
                            ),
                            PtCause::Free => false,
                        };
                        if policy {
                            r.uncharged.policy += p.pages;
                        } else {
                            r.uncharged.unexpected += p.pages;
                            r.uncharged.first_unexpected_index.get_or_insert(index);
                        }
                    }
                } else {
                    r.observed.freed += p.pages;
                    st.observed_live = st.observed_live.saturating_sub(p.pages);
                }
                if p.cause == PtCause::Alloc {
                    if let Some(open) = st.open_alloc.as_mut() {
                        push_run(&mut open.observed, alloc, p.pages);
                        // Verify as they come: observed must stay a prefix of predicted.
                        if !st.stopped && !is_prefix(&open.observed, &open.predicted) {
                            let (pred, obs) = (open.predicted.clone(), open.observed.clone());
                            Self::diverge(
                                st,
                                &mut self.reports,
                                &self.opts,
                                index,
                                "domain-allocation pages differ from the model".into(),
                                pred,
                                obs,
                            );
                        }
                        return;
                    }
                    // cause alloc without an open allocation: treat like any pending page.
                }
                Self::close_alloc(st, &mut self.reports, &self.opts, index);
                let pend = match st.pending.iter_mut().position(|q| q.tid == ev.tid) {
                    Some(i) => &mut st.pending[i],
                    None => {
                        st.pending.push(Pending {
                            tid: ev.tid,
                            first_index: index,
                            runs: std::mem::take(&mut st.spare_runs),
                            ..Default::default()
                        });
                        st.pending.last_mut().expect("just pushed")
                    }
                };
                if pend.runs.is_empty() {
                    pend.first_index = index;
                }
                match pend.cause {
                    None => pend.cause = Some(p.cause),
                    Some(c) if c != p.cause => pend.mixed_causes = true,
                    _ => {}
                }
                push_run(&mut pend.runs, alloc, p.pages);
            }
            EventBody::Map(m) | EventBody::Unmap(m) => {
                let is_map = matches!(ev.body, EventBody::Map(_));
                let body = if is_map {
                    CompactBody::Map {
                        iova: m.iova,
                        size: m.size,
                        done: m.done,
                        errno: m.errno,
                    }
                } else {
                    CompactBody::Unmap {
                        iova: m.iova,
                        size: m.size,
                        done: m.done,
                    }
                };
                let st = Self::ensure(&mut self.active, &mut self.reports, m.domain.0);
                Self::remember(st, &self.opts, index, ev.tid, body, &mut self.reports);
                Self::close_alloc(st, &mut self.reports, &self.opts, index);
                let r = &mut self.reports[st.report];
                if is_map {
                    r.maps += 1;
                } else {
                    r.unmaps += 1;
                }
                let observed = take_pending(st, ev.tid);
                let expect_cause = if is_map { PtCause::Map } else { PtCause::Unmap };
                // what-if: the same successful operations under other formats.
                for w in st.whatif.iter_mut() {
                    w.log.clear();
                    if is_map {
                        if m.errno == 0 && w.model.map(m.iova, m.paddr, m.size, &mut w.log).is_err()
                        {
                            w.failed += 1;
                        }
                    } else if w.model.unmap(m.iova, m.size, &mut w.log) == 0 && m.done != 0 {
                        w.failed += 1;
                    }
                }
                if st.stopped {
                    return;
                }
                let Some(model) = st.model.as_mut() else {
                    return;
                };
                st.log.clear();
                let (what, predicted_done) = if is_map {
                    let res = model.map(m.iova, m.paddr, m.size, &mut st.log);
                    match (res, m.errno) {
                        (Ok(_), 0) => ("map", m.done),
                        (Err(e), k) if e == k => ("map", m.done),
                        (Ok(_), k) => {
                            Self::unverifiable(st, &mut self.reports, format!(
                                "event {index}: the kernel's map failed (errno {k}) where the model \
                                 succeeds (e.g. -ENOMEM): the failure path is not modelled"));
                            return;
                        }
                        (Err(e), k) => {
                            let reason = format!(
                                "the model's map fails with errno {e}, the kernel's returned {k}"
                            );
                            let pred = runs_of(&st.log.ops);
                            let obs = observed.map(|p| p.runs).unwrap_or_default();
                            Self::diverge(
                                st,
                                &mut self.reports,
                                &self.opts,
                                index,
                                reason,
                                pred,
                                obs,
                            );
                            return;
                        }
                    }
                } else {
                    ("unmap", model.unmap(m.iova, m.size, &mut st.log))
                };
                if let Some(why) = model.unsupported() {
                    let why = why.to_string();
                    Self::unverifiable(
                        st,
                        &mut self.reports,
                        format!(
                            "event {index}: {why} (kernel behaviour the model does not reproduce)"
                        ),
                    );
                    return;
                }
                let mut pred = std::mem::take(&mut st.pred_buf);
                runs_into(&st.log.ops, &mut pred);
                let r = &mut self.reports[st.report];
                r.predicted.allocated = st.log.allocated;
                r.predicted.freed = st.log.freed;
                r.predicted.peak = st.log.peak;
                let (obs, cause_ok) = match observed {
                    Some(p) => {
                        let ok = !p.mixed_causes && p.cause == Some(expect_cause);
                        (p.runs, ok)
                    }
                    None => (Vec::new(), true),
                };
                let reason = if !is_map && predicted_done != m.done {
                    Some(format!(
                        "the model unmapped {predicted_done:#x} bytes, the kernel {:#x}",
                        m.done
                    ))
                } else if pred != obs {
                    Some(format!(
                        "{what} iova {:#x} size {:#x}: the model predicts {}, the kernel did {}",
                        m.iova,
                        m.size,
                        fmt_runs(&pred),
                        fmt_runs(&obs)
                    ))
                } else if !cause_ok {
                    Some(format!(
                        "page events before this {what} were attributed to another cause"
                    ))
                } else {
                    None
                };
                match reason {
                    Some(reason) => {
                        Self::diverge(st, &mut self.reports, &self.opts, index, reason, pred, obs)
                    }
                    None => {
                        // Keep both buffers for the next operations.
                        st.pred_buf = pred;
                        if obs.capacity() > 0 {
                            st.spare_runs = obs;
                            st.spare_runs.clear();
                        }
                    }
                }
            }
            EventBody::DomainFree(f) => {
                let mut st = match self.active.remove(&f.domain.0) {
                    Some(st) => st,
                    None => Self::unknown_domain(&mut self.reports, f.domain.0),
                };
                Self::remember(
                    &mut st,
                    &self.opts,
                    index,
                    ev.tid,
                    CompactBody::Free,
                    &mut self.reports,
                );
                Self::close_alloc(&mut st, &mut self.reports, &self.opts, index);
                self.reports[st.report].free_index = Some(index);
                let observed = take_pending(&mut st, ev.tid);
                if !st.stopped {
                    if let Some(model) = st.model.as_mut() {
                        st.log.clear();
                        model.domain_free(&mut st.log);
                        let left = model.live_pages();
                        let pred = runs_of(&st.log.ops);
                        let r = &mut self.reports[st.report];
                        r.predicted.allocated = st.log.allocated;
                        r.predicted.freed = st.log.freed;
                        r.predicted.peak = st.log.peak;
                        if left != 0 {
                            r.notes.push(format!(
                                "the model itself keeps {left} page(s) after domain free"
                            ));
                        }
                        let (obs, cause_ok) = match observed {
                            Some(p) => (p.runs, !p.mixed_causes && p.cause == Some(PtCause::Free)),
                            None => (Vec::new(), true),
                        };
                        if pred != obs {
                            let reason = format!(
                                "domain free: the model predicts {}, the kernel did {}",
                                fmt_runs(&pred),
                                fmt_runs(&obs)
                            );
                            Self::diverge(
                                &mut st,
                                &mut self.reports,
                                &self.opts,
                                index,
                                reason,
                                pred,
                                obs,
                            );
                        } else if !cause_ok {
                            Self::diverge(&mut st, &mut self.reports, &self.opts, index,
                                "page events before this domain_free were attributed to another cause".into(),
                                pred, obs);
                        }
                    }
                }
                // Any pending pages of other threads: see close_domain.
                self.close_domain(st, None);
            }
        }
    }

    /// The state of a domain, created as "allocated before the capture" when unknown.
    fn ensure<'a>(
        active: &'a mut DomainMap,
        reports: &mut Vec<DomainReport>,
        domain: u64,
    ) -> &'a mut DomainState {
        active
            .entry(domain)
            .or_insert_with(|| Self::unknown_domain(reports, domain))
    }

    /// A domain first seen after its allocation: "allocated before the capture".
    fn unknown_domain(reports: &mut Vec<DomainReport>, domain: u64) -> DomainState {
        let mut st = Self::new_domain(reports, domain, "unknown", None);
        st.stopped = true;
        reports[st.report].verdict = Verdict::Unverifiable(
            "allocated before the capture started (no domain_alloc event)".into(),
        );
        st
    }

    fn remember(
        st: &mut DomainState,
        opts: &ReplayOptions,
        index: u64,
        tid: u32,
        body: CompactBody,
        reports: &mut [DomainReport],
    ) {
        let c = Compact { index, tid, body };
        if st.after > 0 {
            st.after -= 1;
            if let Some(d) = reports[st.report].divergence.as_mut() {
                d.context.push(ContextEvent {
                    index,
                    event: c.to_string(),
                    here: false,
                });
            }
        }
        if opts.context == 0 {
            return;
        }
        if st.ring.len() == opts.context + 1 {
            st.ring.pop_front();
        }
        st.ring.push_back(c);
    }

    fn diverge(
        st: &mut DomainState,
        reports: &mut [DomainReport],
        opts: &ReplayOptions,
        index: u64,
        reason: String,
        predicted: Vec<PageRun>,
        observed: Vec<PageRun>,
    ) {
        st.stopped = true;
        let r = &mut reports[st.report];
        r.verdict = Verdict::Diverged;
        let context = st
            .ring
            .iter()
            .map(|c| ContextEvent {
                index: c.index,
                event: c.to_string(),
                here: c.index == index,
            })
            .collect();
        st.after = opts.context;
        r.divergence = Some(Divergence {
            event_index: index,
            reason,
            predicted,
            observed,
            context,
        });
    }

    fn unverifiable(st: &mut DomainState, reports: &mut [DomainReport], reason: String) {
        st.stopped = true;
        reports[st.report].verdict = Verdict::Unverifiable(reason);
    }

    /// End the domain-allocation phase: every predicted alloc-time page must have come.
    fn close_alloc(
        st: &mut DomainState,
        reports: &mut [DomainReport],
        opts: &ReplayOptions,
        index: u64,
    ) {
        if let Some(open) = st.open_alloc.take() {
            if !st.stopped && open.observed != open.predicted {
                let reason = format!(
                    "domain allocation: the model predicts {} (the top-level table), the kernel did {}",
                    fmt_runs(&open.predicted), fmt_runs(&open.observed));
                Self::diverge(
                    st,
                    reports,
                    opts,
                    index,
                    reason,
                    open.predicted,
                    open.observed,
                );
            }
        }
    }

    fn close_domain(&mut self, mut st: DomainState, note: Option<String>) {
        let index = self.index.saturating_sub(1);
        Self::close_alloc(&mut st, &mut self.reports, &self.opts, index);
        let r = &mut self.reports[st.report];
        if let Some(n) = note {
            r.notes.push(n);
        }
        for p in &st.pending {
            if !p.runs.is_empty() {
                r.notes.push(format!(
                    "page events from event {} (tid {}: {}) had no operation event",
                    p.first_index,
                    p.tid,
                    fmt_runs(&p.runs)
                ));
            }
        }
        r.never_freed = st.observed_live;
        if !st.whatif.is_empty() {
            self.done_whatif.push(whatif_of(r.domain, &st.whatif));
        }
    }

    /// Finish: domains still alive are reported with what they still hold.
    pub fn finish(mut self) -> Report {
        let mut alive: Vec<_> = self.active.drain().map(|(_, st)| st).collect();
        alive.sort_by_key(|st| st.report);
        let index = self.index.saturating_sub(1);
        for mut st in alive {
            Self::close_alloc(&mut st, &mut self.reports, &self.opts, index);
            let r = &mut self.reports[st.report];
            r.alive_at_end = true;
            for p in &st.pending {
                if !p.runs.is_empty() {
                    r.notes.push(format!(
                        "page events from event {} (tid {}: {}) had no operation event before the capture ended",
                        p.first_index, p.tid, fmt_runs(&p.runs)
                    ));
                }
            }
            r.never_freed = st.observed_live;
            if !st.whatif.is_empty() {
                self.done_whatif.push(whatif_of(r.domain, &st.whatif));
            }
        }
        Report {
            options: self.opts,
            events: self.index,
            lost_events: self.lost_events,
            lost_contexts: self.lost_contexts,
            failed_allocs: self.failed_allocs,
            domains: self.reports,
            what_if: self.done_whatif,
            missing_points: Vec::new(),
        }
    }
}

fn is_prefix(observed: &[PageRun], predicted: &[PageRun]) -> bool {
    if observed.len() > predicted.len() {
        return false;
    }
    let n = observed.len();
    if n == 0 {
        return true;
    }
    observed[..n - 1] == predicted[..n - 1]
        && match (observed[n - 1], predicted[n - 1]) {
            (PageRun::Alloc { pages: a }, PageRun::Alloc { pages: b })
            | (PageRun::Free { pages: a }, PageRun::Free { pages: b }) => a <= b,
            _ => false,
        }
}

fn take_pending(st: &mut DomainState, tid: u32) -> Option<Pending> {
    let i = st.pending.iter().position(|p| p.tid == tid)?;
    Some(st.pending.swap_remove(i))
}

fn whatif_of(domain: KernelPtr, w: &[WhatIfState]) -> WhatIfDomain {
    WhatIfDomain {
        domain,
        rows: w
            .iter()
            .map(|s| WhatIfRow {
                format: s.format.clone(),
                actual: s.actual,
                peak_pages: s.log.peak,
                final_pages: s.model.live_pages(),
                failed_ops: s.failed,
            })
            .collect(),
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

// ---- human-readable report ----------------------------------------------------------

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Verified => f.write_str("verified"),
            Verdict::Diverged => f.write_str("DIVERGED"),
            Verdict::Unverifiable(why) => write!(f, "unverifiable: {why}"),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replayed {} events, {} domain(s); VT-d model: {}; SMMUv3 model: {}",
            self.events,
            self.domains.len(),
            self.options.behaviour.vtd,
            self.options.behaviour.smmu
        )?;
        if self.lost_events + self.lost_contexts > 0 {
            writeln!(
                f,
                "WARNING: {} event(s) lost (ring buffer full), {} operation(s) unattributed: \
                 the capture is incomplete, so it cannot verify",
                self.lost_events, self.lost_contexts
            )?;
        }
        for m in &self.missing_points {
            writeln!(
                f,
                "WARNING: probe point {m} recorded nothing: the capture cannot verify"
            )?;
        }
        if self.failed_allocs > 0 {
            writeln!(
                f,
                "{} domain allocation(s) failed (nothing to model)",
                self.failed_allocs
            )?;
        }
        for d in &self.domains {
            writeln!(f)?;
            writeln!(
                f,
                "domain {} ({}{}): {}",
                d.domain,
                d.driver,
                d.kind
                    .map(|k| format!(", {}", k.name()))
                    .unwrap_or_default(),
                d.verdict
            )?;
            if let Some(m) = &d.model {
                writeln!(f, "  model: {m}")?;
            }
            writeln!(
                f,
                "  {} map(s), {} unmap(s); pages observed: +{} -{} (peak {}); predicted: +{} -{} (peak {})",
                d.maps, d.unmaps, d.observed.allocated, d.observed.freed, d.observed.peak,
                d.predicted.allocated, d.predicted.freed, d.predicted.peak
            )?;
            if d.never_freed > 0 {
                if d.alive_at_end {
                    writeln!(
                        f,
                        "  {} page(s) still held at the end of the capture (domain alive)",
                        d.never_freed
                    )?;
                } else {
                    writeln!(
                        f,
                        "  {} page(s) never freed after the domain was freed",
                        d.never_freed
                    )?;
                }
            }
            if d.uncharged.policy + d.uncharged.unexpected > 0 {
                write!(
                    f,
                    "  not charged to a memory cgroup: {} page(s) by kernel policy",
                    d.uncharged.policy
                )?;
                if d.uncharged.unexpected > 0 {
                    write!(
                        f,
                        ", {} UNEXPECTED (iommufd maps with GFP_KERNEL_ACCOUNT; first at event {})",
                        d.uncharged.unexpected,
                        d.uncharged.first_unexpected_index.unwrap_or(0)
                    )?;
                }
                writeln!(f)?;
            }
            if let Some(v) = &d.divergence {
                writeln!(
                    f,
                    "  first divergence at event {}: {}",
                    v.event_index, v.reason
                )?;
                for c in &v.context {
                    writeln!(
                        f,
                        "    {} {:>8} {}",
                        if c.here { ">" } else { " " },
                        c.index,
                        c.event
                    )?;
                }
            }
            for n in &d.notes {
                writeln!(f, "  note: {n}")?;
            }
        }
        if !self.what_if.is_empty() {
            writeln!(f)?;
            writeln!(f, "what if (page-table pages, peak / final):")?;
            for w in &self.what_if {
                writeln!(f, "  domain {}", w.domain)?;
                for row in &w.rows {
                    write!(
                        f,
                        "    {} {:>8} / {:<8} {}",
                        if row.actual { "*" } else { " " },
                        row.peak_pages,
                        row.final_pages,
                        row.format
                    )?;
                    if row.failed_ops > 0 {
                        write!(f, " ({} op(s) impossible in this format)", row.failed_ops)?;
                    }
                    writeln!(f)?;
                }
            }
        }
        writeln!(f)?;
        if self.all_verified() {
            writeln!(f, "result: every domain verified")
        } else {
            let bad = self
                .domains
                .iter()
                .filter(|d| d.verdict != Verdict::Verified)
                .count();
            writeln!(
                f,
                "result: NOT verified ({bad} domain(s) diverged or could not be checked{})",
                if self.missing_points.is_empty() {
                    ""
                } else {
                    "; probe points missing"
                }
            )
        }
    }
}

#[cfg(test)]
mod tests;
