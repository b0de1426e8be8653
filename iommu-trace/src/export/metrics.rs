//! The metric families: one table of every metric (name, type, help, labels), and the
//! function that fills them from a [`State`] and [`ExporterInfo`] at scrape time.

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram as PHistogram, LabelPair, Metric, MetricFamily, MetricType,
};

use super::{ExportOptions, ExporterInfo};
use crate::events::{errno_name, hwpt_flag_names};
use crate::state::{bounded_flags, Histogram, State, FLAGS_KNOWN, FLAGS_OTHER};

/// One exported metric.
pub struct MetricDef {
    pub name: &'static str,
    pub kind: MetricType,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

const fn def(
    name: &'static str,
    kind: MetricType,
    help: &'static str,
    labels: &'static [&'static str],
) -> MetricDef {
    MetricDef {
        name,
        kind,
        help,
        labels,
    }
}

use MetricType::{COUNTER, GAUGE, HISTOGRAM};

/// Every metric the exporter can publish.
pub const METRICS: &[MetricDef] = &[
    def("iommu_trace_domain_allocations_total", COUNTER,
        "IOMMU domain allocations by the drivers' domain_alloc ops, by driver, domain kind, IOMMU_HWPT_ALLOC_* flags and result (OK or the errno name).",
        &["driver", "kind", "flags", "result"]),
    def("iommu_trace_domain_allocation_duration_seconds", HISTOGRAM,
        "Time spent in the driver's domain allocation op, successful or not.",
        &["driver", "kind"]),
    def("iommu_trace_domains", GAUGE,
        "IOMMU domains alive now (allocated and not yet freed), by driver and kind; driver \"unknown\" for domains allocated before tracing started.",
        &["driver", "kind"]),
    def("iommu_trace_domain_frees_total", COUNTER,
        "IOMMU domains freed (iommu_domain_free), by driver and kind.",
        &["driver", "kind"]),
    def("iommu_trace_page_table_top_growths_total", COUNTER,
        "Times a traced domain's page table grew its top level (AMD: a new top table, the device table updated), by driver.",
        &["driver"]),
    def("iommu_trace_domain_free_duration_seconds", HISTOGRAM,
        "Time spent in iommu_domain_free.",
        &["driver"]),
    def("iommu_trace_hwpt_allocations_total", COUNTER,
        "IOMMU_HWPT_ALLOC ioctls, by result (OK or the errno name).",
        &["result"]),
    def("iommu_trace_hwpt_allocation_duration_seconds", HISTOGRAM,
        "Time spent in the IOMMU_HWPT_ALLOC ioctl.",
        &[]),
    def("iommu_trace_map_operations_total", COUNTER,
        "iommu_map and iommu_unmap calls on traced domains, by driver, operation (map, unmap) and result.",
        &["driver", "op", "result"]),
    def("iommu_trace_map_bytes_total", COUNTER,
        "Bytes mapped or unmapped by iommu_map and iommu_unmap (what was done, not what was asked).",
        &["driver", "op"]),
    def("iommu_trace_map_duration_seconds", HISTOGRAM,
        "Time spent in iommu_map and iommu_unmap.",
        &["driver", "op"]),
    def("iommu_trace_mapped_bytes", GAUGE,
        "Bytes mapped now in live domains, by driver.",
        &["driver"]),
    def("iommu_trace_page_table_pages", GAUGE,
        "IOMMU page-table pages (4 KiB) held now by live domains, by driver and whether they are charged to a memory cgroup.",
        &["driver", "charged"]),
    def("iommu_trace_page_table_pages_allocated_total", COUNTER,
        "IOMMU page-table pages (4 KiB) allocated, by driver, the domain operation that allocated them (alloc, map, unmap, free) and charged.",
        &["driver", "cause", "charged"]),
    def("iommu_trace_page_table_pages_freed_total", COUNTER,
        "IOMMU page-table pages (4 KiB) freed, by driver, the domain operation that freed them and charged.",
        &["driver", "cause", "charged"]),
    def("iommu_trace_page_table_pages_orphaned_total", COUNTER,
        "Page-table pages still held by a domain when it was freed (never freed: a leak, or a free the probes missed).",
        &["driver"]),
    def("iommu_trace_cgroup_page_table_pages", GAUGE,
        "Page-table pages held now by live domains, by the cgroup of the task that allocated the domain (the top N cgroups; the rest in cgroup=\"other\") and charged.",
        &["cgroup", "charged"]),
    def("iommu_trace_cgroup_domains", GAUGE,
        "Live domains by the cgroup of the task that allocated them (the top N cgroups by page-table pages; the rest in cgroup=\"other\").",
        &["cgroup"]),
    def("iommu_trace_untracked_domains_total", COUNTER,
        "Domains first seen after their allocation (allocated before tracing started, or the allocation event was lost).",
        &[]),
    def("iommu_trace_iommufd_objects", GAUGE,
        "iommufd objects alive now, by type (ioas, hwpt_paging, hwpt_nested, device, access, fault, viommu, vdevice, veventq, hw_queue, selftest, unknown) and the cgroup of the task that created them (the top N cgroups by objects; the rest in cgroup=\"other\").",
        &["object", "cgroup"]),
    def("iommu_trace_iommufd_object_creations_total", COUNTER,
        "iommufd objects created (published under an id), by type and result: OK, or the errno name when the allocation itself failed.",
        &["object", "result"]),
    def("iommu_trace_iommufd_object_aborts_total", COUNTER,
        "iommufd objects allocated and never published (their create failed), by type and the errno of the ioctl (unknown outside an iommufd ioctl).",
        &["object", "result"]),
    def("iommu_trace_iommufd_object_destructions_total", COUNTER,
        "iommufd objects destroyed, by type and how: destroy (IOMMU_DESTROY), unbind (the device unbound), close (the iommufd closed with it alive), put (its last reference dropped elsewhere).",
        &["object", "how"]),
    def("iommu_trace_iommufd_object_lifetime_seconds", HISTOGRAM,
        "Time from an iommufd object's publication to its destruction, by type.",
        &["object"]),
    def("iommu_trace_pinned_bytes", GAUGE,
        "Guest memory pinned now by iommufd mappings (every accounting mode), by the cgroup of the mappings' creator (the top N cgroups by bytes; the rest in cgroup=\"other\").",
        &["cgroup"]),
    def("iommu_trace_vm_pin_bytes", GAUGE,
        "The kernel's own count beside iommu_trace_pinned_bytes (live only): VmPin (mm->pinned_vm) of /proc/PID/status, summed over the processes whose iommufd mappings pin memory, by the same cgroups; a cgroup only when every such process of it was read. Equal to iommu_trace_pinned_bytes when nothing else pins; more: pins outside iommufd (io_uring, RDMA) or made before tracing began.",
        &["cgroup"]),
    def("iommu_trace_pin_reconciliation_processes", GAUGE,
        "Processes whose iommufd mappings pin memory, by how the ledger compares with their VmPin once settled (two equal readings a second apart, no pin event between): matches, kernel_pins_more (pins outside iommufd or from before tracing), ledger_exceeds (events lost, or the ledger is wrong), unchecked (not settled yet, a capture, a process gone or not identified in this /proc, or mode-none pins moved by IOAS_CHANGE_PROCESS).",
        &["verdict"]),
    def("iommu_trace_memlock_locked_bytes", GAUGE,
        "Locked memory (locked_vm) of the accounting target with the least RLIMIT_MEMLOCK headroom among those the iommufd mappings of a cgroup's processes charge, by that cgroup: iommufd's pins and everything else the target locked (mlock, io_uring, VFIO type1).",
        &["cgroup"]),
    def("iommu_trace_memlock_limit_bytes", GAUGE,
        "RLIMIT_MEMLOCK of the mappings' creator for that same target (the kernel compares each creator's own limit with the shared total; absent when unlimited).",
        &["cgroup"]),
    def("iommu_trace_memlock_headroom_ratio", GAUGE,
        "(limit - locked) / limit for that same target: below 0.1, the next IOAS_MAP or device attach of a few percent of the limit fails with ENOMEM (the N cgroups with the least headroom; the rest in cgroup=\"other\", their minimum).",
        &["cgroup"]),
    def("iommu_trace_pin_refusals_total", COUNTER,
        "Pinned-page accounting calls the kernel refused, by cause: memlock_user / memlock_mm (ENOMEM, over the creator's RLIMIT_MEMLOCK, per-user or per-mm accounting), mm_gone (EINVAL: the creator's mm has exited), other.",
        &["cause"]),
    def("iommu_trace_replay_domains", GAUGE,
        "Domains of the capture by replay verdict against the reference page-table models (serve --from FILE --verify).",
        &["verdict"]),
    def("iommu_trace_replay_unexpected_uncharged_pages", GAUGE,
        "Page-table pages the replay found not charged to a memory cgroup where iommufd asked for GFP_KERNEL_ACCOUNT.",
        &[]),
    def("iommu_trace_events_total", COUNTER,
        "Events received, by event type.",
        &["event"]),
    def("iommu_trace_events_lost_total", COUNTER,
        "Events lost before user space saw them, by reason: ringbuf_full (dropped in the kernel) or context_full (an operation not attributed).",
        &["reason"]),
    def("iommu_trace_decode_errors_total", COUNTER,
        "Ring-buffer records or capture frames that could not be decoded.",
        &[]),
    def("iommu_trace_probe_attached", GAUGE,
        "1 when the probe's attachment is in place, 0 when it is missing, by logical probe point, kernel symbol and program type (symbol empty: nothing to attach on this kernel).",
        &["point", "symbol", "program_type"]),
    def("iommu_trace_bpf_program_run_seconds_total", COUNTER,
        "Time the kernel spent running each eBPF program (BPF_ENABLE_STATS).",
        &["program"]),
    def("iommu_trace_bpf_program_runs_total", COUNTER,
        "Times each eBPF program ran (BPF_ENABLE_STATS).",
        &["program"]),
    def("iommu_trace_build_info", GAUGE,
        "Always 1: the iommu-trace version, the traced kernel and where events come from (live or capture).",
        &["version", "kernel_release", "source"]),
    def("iommu_trace_exporter_connections_shed_total", COUNTER,
        "HTTP connections to the exporter closed to make room for new ones (the connection limit reached; clients that hold connections without finishing a request go first).",
        &[]),
    def("process_cpu_seconds_total", COUNTER,
        "User and system CPU time spent by the iommu-trace process.",
        &[]),
    def("process_resident_memory_bytes", GAUGE,
        "Resident memory of the iommu-trace process.",
        &[]),
];

/// The `flags` label: known IOMMU_HWPT_ALLOC_* names joined with `|`, `OTHER` for unknown
/// bits, `none` for no flags.
pub(super) fn flags_label(flags: u32) -> String {
    let f = bounded_flags(flags);
    let mut names = hwpt_flag_names(f & FLAGS_KNOWN);
    if f & FLAGS_OTHER != 0 {
        names.push("OTHER".into());
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join("|")
    }
}

/// `OK`, a known errno's name, or `OTHER`: a bounded set whatever a capture holds.
fn result_label(errno: i32) -> String {
    if errno == 0 || crate::uapi::errno::NAMES.iter().any(|(n, _)| *n == errno) {
        errno_name(errno)
    } else {
        "OTHER".into()
    }
}

struct Builder {
    families: Vec<MetricFamily>,
}

impl Builder {
    fn family(&mut self, name: &str) -> (&mut MetricFamily, &'static [&'static str]) {
        let def = METRICS
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("metric {name} is not in METRICS"));
        let i = match self.families.iter().position(|f| f.name() == name) {
            Some(i) => i,
            None => {
                let mut mf = MetricFamily::default();
                mf.set_name(def.name.to_string());
                mf.set_help(def.help.to_string());
                mf.set_field_type(def.kind);
                self.families.push(mf);
                self.families.len() - 1
            }
        };
        (&mut self.families[i], def.labels)
    }

    fn metric(&mut self, name: &str, values: &[&str], fill: impl FnOnce(&mut Metric)) {
        let (mf, labels) = self.family(name);
        assert_eq!(labels.len(), values.len(), "label values of {name}");
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .zip(values)
                .map(|(n, v)| {
                    let mut l = LabelPair::default();
                    l.set_name(n.to_string());
                    l.set_value(v.to_string());
                    l
                })
                .collect(),
        );
        fill(&mut m);
        mf.mut_metric().push(m);
    }

    /// The series of `name` with these label values, if one was emitted already: bounded
    /// labels fold several keys (unknown flag bits, errnos, drivers) into one series, which
    /// must then be summed, never repeated.
    fn existing(&mut self, name: &str, values: &[&str]) -> Option<&mut Metric> {
        let (mf, _) = self.family(name);
        mf.mut_metric().iter_mut().find(|m| {
            m.get_label().len() == values.len()
                && m.get_label()
                    .iter()
                    .zip(values)
                    .all(|(l, v)| l.value() == *v)
        })
    }

    fn counter(&mut self, name: &str, values: &[&str], v: f64) {
        if let Some(m) = self.existing(name, values) {
            let mut c = Counter::default();
            c.set_value(m.get_counter().get_value() + v);
            m.set_counter(c);
            return;
        }
        self.metric(name, values, |m| {
            let mut c = Counter::default();
            c.set_value(v);
            m.set_counter(c);
        });
    }

    fn gauge(&mut self, name: &str, values: &[&str], v: f64) {
        if let Some(m) = self.existing(name, values) {
            let mut g = Gauge::default();
            g.set_value(m.get_gauge().get_value() + v);
            m.set_gauge(g);
            return;
        }
        self.metric(name, values, |m| {
            let mut g = Gauge::default();
            g.set_value(v);
            m.set_gauge(g);
        });
    }

    fn histogram(&mut self, name: &str, values: &[&str], h: &Histogram) {
        self.metric(name, values, |m| {
            let mut p = PHistogram::default();
            p.set_sample_count(h.count());
            p.set_sample_sum(h.sum_ns() as f64 / 1e9);
            p.set_bucket(
                h.cumulative()
                    .map(|(bound, n)| {
                        let mut b = Bucket::default();
                        b.set_upper_bound(bound as f64 / 1e9);
                        b.set_cumulative_count(n);
                        b
                    })
                    .collect(),
            );
            m.set_histogram(p);
        });
    }
}

/// The iommufd object families. A type that had objects keeps its gauge at 0 once they are
/// all gone.
fn objects(b: &mut Builder, state: &State, opts: &ExportOptions) {
    let o = state.objects();
    for ((object, errno), n) in o.created() {
        b.counter(
            "iommu_trace_iommufd_object_creations_total",
            &[object, &result_label(*errno)],
            *n as f64,
        );
    }
    for ((object, errno), n) in o.aborted() {
        let result = errno.map_or_else(|| "unknown".to_string(), result_label);
        b.counter(
            "iommu_trace_iommufd_object_aborts_total",
            &[object, &result],
            *n as f64,
        );
    }
    for ((object, how), n) in o.destroyed() {
        b.counter(
            "iommu_trace_iommufd_object_destructions_total",
            &[object, how.name()],
            *n as f64,
        );
    }
    for (object, h) in o.lifetime() {
        b.histogram("iommu_trace_iommufd_object_lifetime_seconds", &[object], h);
    }
    let (top, other) = o.live_by_cgroup(opts.top_cgroups);
    for (cgroup, by_type) in &top {
        let name = opts.cgroups.name(*cgroup);
        for (object, n) in by_type {
            b.gauge("iommu_trace_iommufd_objects", &[object, &name], *n as f64);
        }
    }
    // `other` for every type created so far, at 0 when none is left outside the top N.
    let types: std::collections::BTreeSet<&str> = o
        .created()
        .keys()
        .filter(|(_, errno)| *errno == 0)
        .map(|(t, _)| *t)
        .chain(other.keys().copied())
        .collect();
    for object in types {
        let n = other.get(object).copied().unwrap_or(0);
        b.gauge("iommu_trace_iommufd_objects", &[object, "other"], n as f64);
    }
}

/// The pinned-memory families (`state::Pins`). The refusal causes are always present.
fn pins(b: &mut Builder, state: &State, opts: &ExportOptions) {
    let pins = state.pins();
    let (top, other) = pins.pinned_bytes_by_cgroup(opts.top_cgroups);
    if !top.is_empty() {
        for (cgroup, bytes) in &top {
            b.gauge(
                "iommu_trace_pinned_bytes",
                &[&opts.cgroups.name(*cgroup)],
                *bytes as f64,
            );
        }
        b.gauge("iommu_trace_pinned_bytes", &["other"], other as f64);
        // The kernel's VmPin of the same processes (live only), under the same labels, for
        // the cgroups whose every pinning process was read: the two then compare.
        for (cgroup, _) in &top {
            let vm_pin = pins
                .processes()
                .values()
                .filter(|p| p.cgroup_id == *cgroup)
                .try_fold(0u64, |sum, p| {
                    p.kernel().map(|k| sum.saturating_add(k.pinned_bytes))
                });
            if let Some(bytes) = vm_pin {
                let name = opts.cgroups.name(*cgroup);
                b.gauge("iommu_trace_vm_pin_bytes", &[&name], bytes as f64);
            }
        }
    }
    for (verdict, n) in pins.reconciliations() {
        b.gauge(
            "iommu_trace_pin_reconciliation_processes",
            &[verdict],
            n as f64,
        );
    }
    // Per cgroup of a mapping creator, the least headroom under that creator's own limit
    // among the targets it charges; the N tightest cgroups by name, the rest as "other".
    let mut tightest: std::collections::HashMap<u64, (f64, u64, u64)> = Default::default();
    for (pid, proc) in pins.processes() {
        let Some((t, headroom, limit)) = pins.tightest_target_of(*pid) else {
            continue;
        };
        let ratio = crate::state::headroom_ratio(headroom, limit);
        let e = tightest
            .entry(proc.cgroup_id)
            .or_insert((ratio, t.locked_bytes, limit));
        if ratio < e.0 {
            *e = (ratio, t.locked_bytes, limit);
        }
    }
    let mut all: Vec<(u64, (f64, u64, u64))> = tightest.into_iter().collect();
    all.sort_by(|a, b| a.1 .0.total_cmp(&b.1 .0).then(a.0.cmp(&b.0)));
    let rest = all
        .iter()
        .skip(opts.top_cgroups)
        .map(|(_, v)| *v)
        .min_by(|a, b| a.0.total_cmp(&b.0));
    all.truncate(opts.top_cgroups);
    let named = all
        .into_iter()
        .map(|(id, v)| (opts.cgroups.name(id), v))
        .chain(rest.map(|v| ("other".to_string(), v)));
    for (name, (ratio, locked, limit)) in named {
        b.gauge("iommu_trace_memlock_headroom_ratio", &[&name], ratio);
        b.gauge("iommu_trace_memlock_locked_bytes", &[&name], locked as f64);
        b.gauge("iommu_trace_memlock_limit_bytes", &[&name], limit as f64);
    }
    for cause in crate::state::RefusalCause::ALL {
        let n = pins.refusals().get(&cause).copied().unwrap_or(0);
        b.counter("iommu_trace_pin_refusals_total", &[cause.name()], n as f64);
    }
}

/// The families of one scrape. Counters whose label sets are known in advance (loss
/// reasons, event types) are always present, at 0 until something happens, so `rate()`
/// and `increase()` see the first increment.
pub fn families(state: &State, meta: &ExporterInfo, opts: &ExportOptions) -> Vec<MetricFamily> {
    let mut b = Builder {
        families: Vec::new(),
    };
    let drv = |id| state.driver_name(id);

    for (k, n) in state.allocs() {
        let flags = flags_label(k.flags);
        let result = result_label(k.errno);
        b.counter(
            "iommu_trace_domain_allocations_total",
            &[drv(k.driver), k.kind.name(), &flags, &result],
            *n as f64,
        );
    }
    for ((d, kind), h) in state.alloc_latency() {
        b.histogram(
            "iommu_trace_domain_allocation_duration_seconds",
            &[drv(*d), kind.name()],
            h,
        );
    }
    let live = state.live_by_driver_kind();
    // A driver/kind that had domains keeps its series at 0 once they are all freed.
    let mut kinds: Vec<_> = state
        .allocs()
        .keys()
        .filter(|k| k.errno == 0)
        .map(|k| (k.driver, k.kind))
        .chain(live.keys().copied())
        .collect();
    kinds.sort_by_key(|(d, k)| (*d, k.name()));
    kinds.dedup();
    for (d, kind) in kinds {
        let n = live.get(&(d, kind)).copied().unwrap_or(0);
        b.gauge("iommu_trace_domains", &[drv(d), kind.name()], n as f64);
    }
    for ((d, kind), n) in state.frees() {
        b.counter(
            "iommu_trace_domain_frees_total",
            &[drv(*d), kind.name()],
            *n as f64,
        );
    }
    for (d, h) in state.free_latency() {
        b.histogram("iommu_trace_domain_free_duration_seconds", &[drv(*d)], h);
    }
    for (errno, n) in state.hwpt_allocs() {
        b.counter(
            "iommu_trace_hwpt_allocations_total",
            &[&result_label(*errno)],
            *n as f64,
        );
    }
    if state.hwpt_latency().count() > 0 {
        b.histogram(
            "iommu_trace_hwpt_allocation_duration_seconds",
            &[],
            state.hwpt_latency(),
        );
    }

    let mut bytes: std::collections::HashMap<(u16, &str), u64> = Default::default();
    for (k, t) in state.map_ops() {
        b.counter(
            "iommu_trace_map_operations_total",
            &[drv(k.driver), k.dir.name(), &result_label(k.errno)],
            t.ops as f64,
        );
        *bytes.entry((k.driver, k.dir.name())).or_default() += t.bytes_done;
    }
    for ((d, op), n) in bytes {
        b.counter("iommu_trace_map_bytes_total", &[drv(d), op], n as f64);
    }
    for ((d, dir), h) in state.map_latency() {
        b.histogram(
            "iommu_trace_map_duration_seconds",
            &[drv(*d), dir.name()],
            h,
        );
    }
    for (d, t) in state.per_driver() {
        b.gauge(
            "iommu_trace_mapped_bytes",
            &[drv(*d)],
            t.mapped_bytes as f64,
        );
        b.gauge(
            "iommu_trace_page_table_pages",
            &[drv(*d), "true"],
            t.pt_charged as f64,
        );
        b.gauge(
            "iommu_trace_page_table_pages",
            &[drv(*d), "false"],
            t.pt_uncharged as f64,
        );
    }
    for (k, t) in state.pt() {
        let cause = crate::events::PtCause::name(k.cause);
        let charged = if k.charged { "true" } else { "false" };
        b.counter(
            "iommu_trace_page_table_pages_allocated_total",
            &[drv(k.driver), cause, charged],
            t.allocated as f64,
        );
        b.counter(
            "iommu_trace_page_table_pages_freed_total",
            &[drv(k.driver), cause, charged],
            t.freed as f64,
        );
    }
    for (d, _) in state.drivers() {
        let n = state.pt_orphaned().get(&d).copied().unwrap_or(0);
        b.counter(
            "iommu_trace_page_table_pages_orphaned_total",
            &[drv(d)],
            n as f64,
        );
        let n = state.top_growths().get(&d).copied().unwrap_or(0);
        b.counter(
            "iommu_trace_page_table_top_growths_total",
            &[drv(d)],
            n as f64,
        );
    }
    let (top, other) = state.top_cgroups(opts.top_cgroups);
    let named: Vec<(String, crate::state::LiveTotals)> = top
        .into_iter()
        .map(|(id, t)| (opts.cgroups.name(id), t))
        .chain(std::iter::once(("other".to_string(), other)))
        .collect();
    for (name, t) in &named {
        b.gauge(
            "iommu_trace_cgroup_page_table_pages",
            &[name, "true"],
            t.pt_charged as f64,
        );
        b.gauge(
            "iommu_trace_cgroup_page_table_pages",
            &[name, "false"],
            t.pt_uncharged as f64,
        );
        b.gauge("iommu_trace_cgroup_domains", &[name], t.domains as f64);
    }
    b.counter(
        "iommu_trace_untracked_domains_total",
        &[],
        state.untracked_domains() as f64,
    );

    objects(&mut b, state, opts);
    pins(&mut b, state, opts);

    if let Some(r) = &meta.replay {
        for (verdict, n) in &r.domains_by_verdict {
            b.gauge("iommu_trace_replay_domains", &[verdict], *n as f64);
        }
        b.gauge(
            "iommu_trace_replay_unexpected_uncharged_pages",
            &[],
            r.unexpected_uncharged_pages as f64,
        );
    }

    for (event, n) in state.events_by_type() {
        b.counter("iommu_trace_events_total", &[event], n as f64);
    }
    let lost = state.lost();
    b.counter(
        "iommu_trace_events_lost_total",
        &["ringbuf_full"],
        lost.ringbuf_full as f64,
    );
    b.counter(
        "iommu_trace_events_lost_total",
        &["context_full"],
        lost.context_full as f64,
    );
    b.counter(
        "iommu_trace_decode_errors_total",
        &[],
        state.decode_errors() as f64,
    );
    for p in &meta.probes {
        b.gauge(
            "iommu_trace_probe_attached",
            &[&p.point, &p.symbol, p.program_type.map_or("", |k| k.name())],
            if p.attached { 1.0 } else { 0.0 },
        );
    }
    for p in &meta.bpf_programs {
        b.counter(
            "iommu_trace_bpf_program_run_seconds_total",
            &[&p.program],
            p.run_time_ns as f64 / 1e9,
        );
        b.counter(
            "iommu_trace_bpf_program_runs_total",
            &[&p.program],
            p.run_count as f64,
        );
    }
    b.gauge(
        "iommu_trace_build_info",
        &[
            env!("CARGO_PKG_VERSION"),
            &meta.kernel_release,
            &meta.source,
        ],
        1.0,
    );
    b.families
}

/// (CPU seconds, resident bytes) of this process, from /proc/self.
fn process_usage() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command (which may hold spaces), from field 3 on.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let (tick, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let rss: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        (utime + stime) / tick.max(1) as f64,
        rss * page.max(1) as f64,
    ))
}

/// The HTTP server's own families.
pub(super) fn server_families(connections_shed: u64) -> Vec<MetricFamily> {
    let mut b = Builder {
        families: Vec::new(),
    };
    b.counter(
        "iommu_trace_exporter_connections_shed_total",
        &[],
        connections_shed as f64,
    );
    b.families
}

/// The text exposition of one scrape: families sorted by name, series by label values.
/// `process_*` self-metrics are added when `with_process` (left out for exact tests).
pub fn encode(mut fams: Vec<MetricFamily>, with_process: bool) -> String {
    if with_process {
        if let Some((cpu, rss)) = process_usage() {
            let mut b = Builder {
                families: Vec::new(),
            };
            b.counter("process_cpu_seconds_total", &[], cpu);
            b.gauge("process_resident_memory_bytes", &[], rss);
            fams.extend(b.families);
        }
    }
    fams.retain(|f| !f.get_metric().is_empty());
    fams.sort_by(|a, b| a.name().cmp(b.name()));
    for f in &mut fams {
        f.mut_metric().sort_by(|a, b| {
            let values = |m: &Metric| -> Vec<String> {
                m.get_label()
                    .iter()
                    .map(|l| l.value().to_string())
                    .collect()
            };
            values(a).cmp(&values(b))
        });
    }
    let mut out = String::new();
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&fams, &mut out) {
        log::error!("encoding metrics failed: {e}");
    }
    out
}

/// [`families`] then [`encode`]: one scrape's text.
pub fn render(
    state: &State,
    meta: &ExporterInfo,
    opts: &ExportOptions,
    with_process: bool,
) -> String {
    encode(families(state, meta, opts), with_process)
}
