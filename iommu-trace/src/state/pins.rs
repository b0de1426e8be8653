//! The pinned-memory ledger (docs/kernel-facts.md §8): the guest memory iommufd holds pinned
//! now, per mapping creator (process), per accounting target (a uid, or a creator's mm) and
//! per cgroup; each target's locked total and RLIMIT_MEMLOCK as the kernel last reported
//! them; and the refusals by cause, each explained with what this process and the others
//! hold. Memory grows with the `iopt_pages` holding pins and their creators, never with the
//! event count.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rustc_hash::FxHashMap;

use crate::events::{Event, KernelPtr, Pin, PinMode};
use crate::procfs::MemoryHeld;
use crate::uapi::errno::{EINVAL, ENOMEM};
use crate::units::bytes_long;

/// Who a charge goes to (`iopt_pages::account_mode`, §8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PinTarget {
    /// Mode `none`: charged to nobody (the creator had CAP_IPC_LOCK).
    Nobody,
    /// Mode `user`: the uid's `locked_vm`.
    User(u32),
    /// Mode `mm`: the creator's mm.
    Mm(KernelPtr),
}

impl PinTarget {
    fn of(p: &Pin) -> PinTarget {
        match (p.mode, p.target_uid, p.target_mm) {
            (PinMode::User, Some(uid), _) => PinTarget::User(uid),
            (PinMode::Mm, _, Some(mm)) => PinTarget::Mm(mm),
            _ => PinTarget::Nobody,
        }
    }

    pub fn mode(self) -> PinMode {
        match self {
            PinTarget::Nobody => PinMode::None,
            PinTarget::User(_) => PinMode::User,
            PinTarget::Mm(_) => PinMode::Mm,
        }
    }
}

/// Why a pin was refused: the exporter's bounded `cause` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalCause {
    /// ENOMEM: over the creator's RLIMIT_MEMLOCK, per-user accounting.
    MemlockUser,
    /// ENOMEM: over the creator's RLIMIT_MEMLOCK, per-mm accounting.
    MemlockMm,
    /// EINVAL in per-mm accounting: the creator's mm is gone.
    MmGone,
    Other,
}

impl RefusalCause {
    pub const ALL: [RefusalCause; 4] = [
        RefusalCause::MemlockUser,
        RefusalCause::MemlockMm,
        RefusalCause::MmGone,
        RefusalCause::Other,
    ];

    /// The cause of a refused charge (a failed uncharge is not a refusal: `Pins::apply`).
    pub fn of(p: &Pin) -> RefusalCause {
        match (p.errno, p.mode) {
            (ENOMEM, PinMode::User) => RefusalCause::MemlockUser,
            (ENOMEM, PinMode::Mm) => RefusalCause::MemlockMm,
            (EINVAL, PinMode::Mm) => RefusalCause::MmGone,
            _ => RefusalCause::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RefusalCause::MemlockUser => "memlock_user",
            RefusalCause::MemlockMm => "memlock_mm",
            RefusalCause::MmGone => "mm_gone",
            RefusalCause::Other => "other",
        }
    }
}

/// An accounting target as the kernel last reported it, and what the traced mappings
/// charged to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetLedger {
    pub target: PinTarget,
    /// Pages charged to it by the traced mappings, per creator pid.
    pub charged_by_pid: BTreeMap<u32, u64>,
    /// Its locked total (`locked_vm`) after the last call, bytes: iommufd's charges and
    /// everything else the target locked (mlock, io_uring, VFIO type1).
    pub locked_bytes: u64,
    /// Each creator's own RLIMIT_MEMLOCK at its last call (`None`: unlimited): the kernel
    /// compares the creator's limit with the shared total (`incr_user_locked_vm`).
    pub limit_by_pid: BTreeMap<u32, Option<u64>>,
}

impl TargetLedger {
    /// (bytes left under `pid`'s limit, 0 when over it; that limit); `None` when unlimited
    /// or charged to nobody.
    pub fn headroom_for(&self, pid: u32) -> Option<(u64, u64)> {
        if self.target == PinTarget::Nobody {
            return None;
        }
        let limit = (*self.limit_by_pid.get(&pid)?)?;
        Some((limit.saturating_sub(self.locked_bytes), limit))
    }
}

/// `headroom / limit`; a limit of 0 refuses every charge: no headroom.
pub fn headroom_ratio(headroom: u64, limit: u64) -> f64 {
    if limit == 0 {
        0.0
    } else {
        headroom as f64 / limit as f64
    }
}

/// What one process's mappings hold pinned (the process that created them: whose limit
/// applies).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessPins {
    pub comm: String,
    pub cgroup_id: u64,
    /// Pages pinned and accounted (every mode), and of those charged to a target.
    pub pinned_pages: u64,
    pub charged_pages: u64,
    /// Changes of `pinned_pages` so far: a reading of the kernel's figures is compared only
    /// when none came between it and the one before.
    changes: u64,
    /// The ledger cannot be compared with this process's `VmPin` any more: an
    /// IOAS_CHANGE_PROCESS ran while it held mode-none pins, whose `source_mm` the kernel
    /// moves to the caller without moving their `pinned_vm` (7.x ioas.c `change_mm`, with
    /// no accounting event: docs/kernel-facts.md §8.2).
    incomparable: bool,
    /// The last reading of the kernel's own figures, while the process lives (live
    /// sessions: `Pins::reconcile`).
    kernel: Option<KernelReading>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KernelReading {
    held: MemoryHeld,
    /// `ProcessPins::changes` when read, and when (CLOCK_MONOTONIC).
    changes: u64,
    at_ns: u64,
    /// The reading before it, at least `SETTLE_NS` earlier, showed the same `VmPin`, with no
    /// pin change between: nothing was in flight.
    settled: bool,
}

/// Two readings of the kernel's figures this far apart, equal, with no pin event between,
/// make a comparison: the collector drains the ring buffer before each reading, so a
/// change made before the first one has reached the ledger by the second.
const SETTLE_NS: u64 = 900_000_000;

/// The ledger of a live process against the kernel's `VmPin` (`mm->pinned_vm`, which every
/// accounting mode moves: docs/kernel-facts.md §8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reconciliation {
    /// Not compared: no settled reading yet (two readings a second apart that agree, with
    /// no pin event between, are needed, or events in flight would count), not a live
    /// session, a process gone or not identified in this /proc, or one whose mode-none pins
    /// an IOAS_CHANGE_PROCESS moved.
    Unchecked,
    /// `VmPin` is what the ledger holds.
    Matches,
    /// The kernel pins this many bytes more: pins outside the traced iommufd mappings
    /// (io_uring fixed buffers and RDMA memory regions add to `pinned_vm` too) or made
    /// before tracing began.
    KernelPinsMore(u64),
    /// The ledger holds this many bytes more than the kernel pins: events were lost, or
    /// the ledger is wrong.
    LedgerExceeds(u64),
}

impl Reconciliation {
    /// The verdict's name: `iommu_trace_pin_reconciliation_processes{verdict}`.
    pub fn name(self) -> &'static str {
        match self {
            Reconciliation::Unchecked => "unchecked",
            Reconciliation::Matches => "matches",
            Reconciliation::KernelPinsMore(_) => "kernel_pins_more",
            Reconciliation::LedgerExceeds(_) => "ledger_exceeds",
        }
    }

    pub const NAMES: [&'static str; 4] =
        ["unchecked", "matches", "kernel_pins_more", "ledger_exceeds"];
}

impl ProcessPins {
    /// The kernel's `VmPin` and `VmLck` of this process, as last read.
    pub fn kernel(&self) -> Option<MemoryHeld> {
        self.kernel.map(|k| k.held)
    }

    /// How the ledger compares with the kernel's `VmPin` (`page` bytes a page).
    pub fn reconciliation(&self, page: u64) -> Reconciliation {
        let settled = self
            .kernel
            .filter(|k| k.settled && k.changes == self.changes);
        let Some(k) = settled.filter(|_| !self.incomparable) else {
            return Reconciliation::Unchecked;
        };
        let ledger = self.pinned_pages.saturating_mul(page);
        let kernel = k.held.pinned_bytes;
        match ledger.cmp(&kernel) {
            std::cmp::Ordering::Equal => Reconciliation::Matches,
            std::cmp::Ordering::Less => Reconciliation::KernelPinsMore(kernel - ledger),
            std::cmp::Ordering::Greater => Reconciliation::LedgerExceeds(ledger - kernel),
        }
    }
}

/// One `iopt_pages` holding pins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    /// Pages pinned and accounted (the kernel's `last_npinned`).
    pages: u64,
    target: PinTarget,
    pid: u32,
    /// The IOAS (its iommufd, its id) whose operation pinned them, when known.
    ioas: Option<(KernelPtr, u32)>,
}

/// Pins a thread made that no IOAS operation has claimed yet: at most this many per thread,
/// and this many threads (a thread that pins without ever making an IOAS operation, a
/// device attach's, would otherwise keep its entry).
const UNCLAIMED_PER_THREAD: usize = 64;
const UNCLAIMED_THREADS: usize = 1024;

/// Refusals kept explained, newest last.
const RECENT_REFUSALS: usize = 8;

/// The ledger of an event stream's `pin` events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pins {
    page_size: u64,
    held: FxHashMap<u64, Held>,
    processes: HashMap<u32, ProcessPins>,
    targets: HashMap<PinTarget, TargetLedger>,
    refusals: BTreeMap<RefusalCause, u64>,
    recent: VecDeque<String>,
    /// The target of the last CHANGE_PROCESS charge (a size-0 stack `iopt_pages`): the
    /// mappings whose charge moves next go to it.
    moving_to: Option<(PinTarget, u32)>,
    /// Per thread, the `iopt_pages` it pinned since its last IOAS operation, with the time
    /// of the pin: the next operation's event (IOAS_MAP, MAP_FILE, COPY, or a HWPT_ALLOC on
    /// an IOAS) names the IOAS of those pinned while it ran.
    unclaimed: HashMap<u32, Vec<(u64, u64)>>,
}

impl Pins {
    /// Adds one `pin` event (`ev` its envelope: the caller's pid, comm and cgroup).
    pub fn apply(&mut self, ev: &Event, p: &Pin) {
        if p.pages != 0 {
            self.page_size = p.page_size();
        }
        let target = PinTarget::of(p);
        let refused = p.errno != 0 && p.pages > 0;
        if refused {
            *self.refusals.entry(RefusalCause::of(p)).or_default() += 1;
            let why = self.explain(p).unwrap_or_default();
            if self.recent.len() == RECENT_REFUSALS {
                self.recent.pop_front();
            }
            self.recent.push_back(why);
        }
        if target != PinTarget::Nobody {
            let t = self.target_entry(target);
            t.locked_bytes = p.locked_bytes;
            t.limit_by_pid.insert(p.target_pid, p.limit_bytes);
        }
        if p.total_pages == 0 {
            // CHANGE_PROCESS's charge of the new target (ioas.c `charge_current`).
            if p.errno == 0 && p.pages > 0 {
                // Kept: the mappings' charges move to it next.
                self.moving_to = Some((target, ev.pid));
            } else {
                self.forget_idle_target(target);
            }
            return;
        }
        if refused {
            // Nothing changed: a refused charge leaves the pages charged before.
            self.forget_idle_target(target);
            return;
        }
        // A success, or a failed uncharge (per-mm, the creator's mm gone, e.g. an exit with
        // the iommufd open: kernel-facts §8.2): the pages are unpinned all the same, and
        // `pinned_pages` is what the `iopt_pages` holds now.
        let n = p.pages.unsigned_abs();
        let old = self.held.get(&p.iopt_pages.0).copied();
        let moved = match (old.map(|h| h.pages), self.moving_to) {
            // An uncharge of the whole charge with nothing unpinned: CHANGE_PROCESS.
            (held, Some(to))
                if p.errno == 0
                    && p.pages < 0
                    && n == p.pinned_pages
                    && held.is_none_or(|h| h == n) =>
            {
                Some(to)
            }
            _ => None,
        };
        let (target, pid) = moved.unwrap_or((target, p.target_pid));
        let now = Held {
            pages: p.pinned_pages,
            target,
            pid,
            ioas: old.and_then(|h| h.ioas),
        };
        match old {
            // The same creator and target: the difference, in place (the process keeps its
            // name and cgroup).
            Some(h) if h.pid == pid && h.target == target => self.account(h, h.pages, now.pages),
            _ => {
                if let Some(h) = old {
                    self.account(h, h.pages, 0);
                    self.forget_idle_target(h.target);
                }
                self.add_process(ev, pid);
                self.account(now, 0, now.pages);
            }
        }
        if now.pages == 0 {
            self.held.remove(&p.iopt_pages.0);
        } else {
            self.held.insert(p.iopt_pages.0, now);
        }
        if p.pages > 0 && now.ioas.is_none() {
            if self.unclaimed.len() >= UNCLAIMED_THREADS && !self.unclaimed.contains_key(&ev.tid) {
                // Forget the oldest claims rather than grow: those pins stay unattributed.
                self.unclaimed.clear();
            }
            let list = self.unclaimed.entry(ev.tid).or_default();
            if list.len() < UNCLAIMED_PER_THREAD {
                list.push((p.iopt_pages.0, ev.ts_ns));
            }
        }
        self.forget_idle_target(target);
    }

    /// The process entry of a mapping's creator; named after the caller only when the
    /// caller is the creator.
    fn add_process(&mut self, ev: &Event, pid: u32) {
        let proc = self.processes.entry(pid).or_default();
        if pid == ev.pid {
            (proc.comm, proc.cgroup_id) = (ev.comm.clone(), ev.cgroup_id);
        } else if proc.comm.is_empty() && proc.cgroup_id == 0 {
            proc.cgroup_id = ev.cgroup_id;
        }
    }

    /// An IOAS_CHANGE_PROCESS returned: the charges it moved are done. Mode-none pins moved
    /// with no event: their holders' `VmPin` no longer matches the ledger.
    pub fn change_process_done(&mut self) {
        self.moving_to = None;
        for p in self.processes.values_mut() {
            if p.pinned_pages > p.charged_pages {
                p.incomparable = true;
            }
        }
    }

    /// An IOAS operation of thread `tid` that started at `since_ns` returned: the pins the
    /// thread made while it ran were made for `ioas` (an IOAS_MAP's own, or a paging HWPT's
    /// first domain on an IOAS, whether HWPT_ALLOC's or a device attach's); earlier ones are
    /// dropped from the thread's list, unattributed.
    pub fn claim(&mut self, tid: u32, since_ns: u64, ioas: Option<(KernelPtr, u32)>) {
        let Some(list) = self.unclaimed.remove(&tid) else {
            return;
        };
        let Some(ioas) = ioas else {
            return;
        };
        for (p, _) in list.into_iter().filter(|(_, ts)| *ts >= since_ns) {
            if let Some(h) = self.held.get_mut(&p) {
                h.ioas.get_or_insert(ioas);
            }
        }
    }

    /// Pinned pages per IOAS (iommufd context, IOAS id), where an IOAS operation or a paging
    /// HWPT's publication claimed them.
    pub fn pinned_pages_by_ioas(&self) -> HashMap<(KernelPtr, u32), u64> {
        let mut out: HashMap<(KernelPtr, u32), u64> = HashMap::new();
        for h in self.held.values() {
            if let Some(ioas) = h.ioas {
                let n = out.entry(ioas).or_default();
                *n = n.saturating_add(h.pages);
            }
        }
        out
    }

    /// A target the traced mappings no longer charge is forgotten (bounded memory).
    fn forget_idle_target(&mut self, target: PinTarget) {
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        if t.charged_by_pid.is_empty() {
            self.targets.remove(&target);
        } else {
            // Only the limits of creators that hold charges matter for the headroom.
            let charged = &t.charged_by_pid;
            t.limit_by_pid.retain(|pid, _| charged.contains_key(pid));
        }
    }

    fn target_entry(&mut self, target: PinTarget) -> &mut TargetLedger {
        self.targets.entry(target).or_insert_with(|| TargetLedger {
            target,
            charged_by_pid: BTreeMap::new(),
            locked_bytes: 0,
            limit_by_pid: BTreeMap::new(),
        })
    }

    /// Moves the pages `h` holds in its process and target from `from` to `to`
    /// (saturating: a crafted capture's counts must not overflow); forgets what reaches
    /// zero.
    fn account(&mut self, h: Held, from: u64, to: u64) {
        let add = |v: &mut u64| *v = v.saturating_sub(from).saturating_add(to);
        if let Some(proc) = self.processes.get_mut(&h.pid) {
            proc.changes = proc.changes.wrapping_add(1);
            add(&mut proc.pinned_pages);
            if h.target != PinTarget::Nobody {
                add(&mut proc.charged_pages);
            }
            if proc.pinned_pages == 0 {
                self.processes.remove(&h.pid);
            }
        }
        if h.target == PinTarget::Nobody {
            return;
        }
        let t = self.target_entry(h.target);
        let by = t.charged_by_pid.entry(h.pid).or_default();
        add(by);
        if *by == 0 {
            t.charged_by_pid.remove(&h.pid);
            t.limit_by_pid.remove(&h.pid);
        }
    }

    /// A refusal in one line (`Pin::refusal`), with what the traced mappings hold of the
    /// target's total: this process's, other processes', and the rest.
    pub fn explain(&self, p: &Pin) -> Option<String> {
        let why = p.refusal()?;
        if !matches!(
            RefusalCause::of(p),
            RefusalCause::MemlockUser | RefusalCause::MemlockMm
        ) {
            return Some(why);
        }
        let page = self.page_size();
        let charged = self
            .targets
            .get(&PinTarget::of(p))
            .map(|t| &t.charged_by_pid);
        let mine = charged
            .and_then(|c| c.get(&p.target_pid))
            .map_or(0, |n| n.saturating_mul(page));
        let others: u64 = charged
            .iter()
            .flat_map(|c| c.iter())
            .filter(|(pid, _)| **pid != p.target_pid)
            .fold(0u64, |sum, (_, n)| {
                sum.saturating_add(n.saturating_mul(page))
            });
        let rest = p.locked_bytes.saturating_sub(mine.saturating_add(others));
        Some(format!(
            "{why} [of the {} locked: this process's iommufd mappings {}, other processes' \
             {}, the rest {} (mlock, io_uring, VFIO type1, or pins made before tracing \
             began)]",
            bytes_long(p.locked_bytes),
            bytes_long(mine),
            bytes_long(others),
            bytes_long(rest)
        ))
    }

    /// Bytes of one kernel page, as the events gave it (4096 until one says otherwise).
    pub fn page_size(&self) -> u64 {
        if self.page_size == 0 {
            4096
        } else {
            self.page_size
        }
    }

    /// Processes whose mappings hold pins now, by pid.
    pub fn processes(&self) -> &HashMap<u32, ProcessPins> {
        &self.processes
    }

    /// The ledger's processes with their names, to read the kernel's figures of.
    pub fn process_names(&self) -> Vec<(u32, String)> {
        self.processes
            .iter()
            .map(|(pid, p)| (*pid, p.comm.clone()))
            .collect()
    }

    /// The kernel's own figures of process `pid`, read now (`None`: it is gone), beside the
    /// ledger: see [`ProcessPins::reconciliation`].
    /// `now_ns`: CLOCK_MONOTONIC of the reading.
    pub fn reconcile(&mut self, pid: u32, held: Option<MemoryHeld>, now_ns: u64) {
        let Some(proc) = self.processes.get_mut(&pid) else {
            return;
        };
        let previous = proc.kernel;
        proc.kernel = held.map(|held| KernelReading {
            held,
            changes: proc.changes,
            at_ns: now_ns,
            settled: previous.is_some_and(|k| {
                k.held.pinned_bytes == held.pinned_bytes
                    && k.changes == proc.changes
                    && now_ns.saturating_sub(k.at_ns) >= SETTLE_NS
            }),
        });
    }

    /// Live processes of the ledger by verdict (every verdict present).
    pub fn reconciliations(&self) -> BTreeMap<&'static str, u64> {
        let mut out: BTreeMap<&'static str, u64> =
            Reconciliation::NAMES.iter().map(|n| (*n, 0)).collect();
        for p in self.processes.values() {
            *out.entry(p.reconciliation(self.page_size()).name())
                .or_default() += 1;
        }
        out
    }

    /// Accounting targets seen, with their last reported totals.
    pub fn targets(&self) -> impl Iterator<Item = &TargetLedger> {
        self.targets.values()
    }

    /// The target charged for a process's mappings with the least headroom under that
    /// process's own limit: (target, headroom bytes, limit bytes).
    pub fn tightest_target_of(&self, pid: u32) -> Option<(&TargetLedger, u64, u64)> {
        self.targets
            .values()
            .filter(|t| t.charged_by_pid.contains_key(&pid))
            .filter_map(|t| t.headroom_for(pid).map(|(h, l)| (t, h, l)))
            .min_by(|a, b| headroom_ratio(a.1, a.2).total_cmp(&headroom_ratio(b.1, b.2)))
    }

    pub fn refusals(&self) -> &BTreeMap<RefusalCause, u64> {
        &self.refusals
    }

    /// The last refusals, explained, newest last.
    pub fn recent_refusals(&self) -> impl Iterator<Item = &str> {
        self.recent.iter().map(String::as_str)
    }

    /// Pinned bytes per cgroup (of the mapping's creator), the `n` cgroups holding the
    /// most, and the rest summed.
    pub fn pinned_bytes_by_cgroup(&self, n: usize) -> (Vec<(u64, u64)>, u64) {
        let mut per: HashMap<u64, u64> = HashMap::new();
        for p in self.processes.values() {
            let bytes = per.entry(p.cgroup_id).or_default();
            *bytes = bytes.saturating_add(p.pinned_pages.saturating_mul(self.page_size()));
        }
        let mut all: Vec<(u64, u64)> = per.into_iter().collect();
        all.sort_by_key(|(id, b)| (std::cmp::Reverse(*b), *id));
        let other = all
            .iter()
            .skip(n)
            .fold(0u64, |sum, (_, b)| sum.saturating_add(*b));
        all.truncate(n);
        (all, other)
    }
}
