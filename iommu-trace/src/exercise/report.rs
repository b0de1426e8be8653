//! The JSON report of `iommu-trace exercise`: every step with what the kernel answered, and
//! the totals a test compares against what the tracer saw.
//!
//! The per-hwpt byte totals are *derived* from the iommufd semantics (6.12, io_pagetable.c):
//! * IOAS_MAP of `len` bytes maps `len` bytes into every paging hwpt in the IOAS's domain
//!   list, attached to a device or not (HWPT_ALLOC adds the domain via
//!   `iopt_table_add_domain`);
//! * a new paging hwpt (explicit or auto) is filled with every area already in the IOAS;
//! * IOAS_UNMAP unmaps the kernel-reported length from every paging hwpt in the IOAS;
//! * destroying a paging hwpt (IOMMU_DESTROY, last detach of an auto domain, destroying
//!   the mock device) unmaps whatever is still mapped in it (`iopt_table_remove_domain`).
//!
//! Nested hwpts have no IOAS mappings of their own.

use std::collections::BTreeMap;

use serde::Serialize;

use super::sys::errno_name;
use super::uapi::{IOMMU_HWPT_ALLOC_DIRTY_TRACKING, IOMMU_HWPT_ALLOC_NEST_PARENT};

/// Step groups a run can select (`--steps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepGroup {
    /// open / IOAS_ALLOC / bind / attach / detach / destroy / close: always run.
    Setup,
    /// HWPT_ALLOC paging with NEST_PARENT / DIRTY_TRACKING, nested allocations.
    Alloc,
    /// Calls whose errno is fixed by the iommufd core (driver-agnostic).
    Negative,
    /// IOAS_MAP / IOAS_UNMAP patterns with 4K pages.
    Map,
    /// 2M hugetlb mappings.
    Huge,
    /// The selftest mock device (CONFIG_IOMMUFD_TEST).
    Mock,
    /// The map/unmap benchmark loop.
    Loop,
}

/// How a hwpt came to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocKind {
    /// IOMMU_HWPT_ALLOC with pt_id = IOAS.
    Paging,
    /// IOMMU_HWPT_ALLOC with pt_id = a paging hwpt.
    Nested,
    /// Created by the kernel on attach to an IOAS (VFIO_DEVICE_ATTACH_IOMMUFD_PT or
    /// IOMMU_TEST_OP_MOCK_DOMAIN): `iommufd_device_auto_get_domain`.
    Auto,
}

/// Which device the allocation was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Vfio,
    Mock,
}

/// One executed (or deliberately not executed) call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// 0-based position in the run.
    pub seq: u32,
    /// Unique name, e.g. `hwpt_alloc_paging_nest_parent`, `mock_map_4k_run`.
    pub name: String,
    pub group: StepGroup,
    /// `IOMMU_HWPT_ALLOC`, `VFIO_DEVICE_BIND_IOMMUFD`, `open`, `mmap`, ...
    pub call: String,
    /// The ioctl request number, for ioctls.
    pub request: Option<u32>,
    /// The input fields that matter.
    pub params: serde_json::Value,
    /// 0 on success, the errno on failure, `None` when not executed (see `note`).
    pub errno: Option<i32>,
    pub errno_name: Option<String>,
    /// For calls whose result the iommufd core fixes independently of the IOMMU driver:
    /// the errno it must give (0 = must succeed). `None` = hardware dependent.
    pub expected_errno: Option<i32>,
    /// `errno == expected_errno`, when both are known.
    pub as_expected: Option<bool>,
    /// Output fields (ids, lengths).
    pub outputs: BTreeMap<String, u64>,
    pub note: Option<String>,
}

impl Step {
    pub fn ok(&self) -> bool {
        self.errno == Some(0)
    }
}

/// Whether an optional facility could be used.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Availability {
    /// `None`: not tried (group not selected).
    pub available: Option<bool>,
    pub errno: Option<i32>,
    pub errno_name: Option<String>,
    pub reason: Option<String>,
}

impl Availability {
    pub fn yes() -> Self {
        Availability {
            available: Some(true),
            ..Default::default()
        }
    }
    pub fn disabled(reason: impl Into<String>) -> Self {
        Availability {
            available: Some(false),
            reason: Some(reason.into()),
            ..Default::default()
        }
    }
    pub fn no(errno: i32, reason: impl Into<String>) -> Self {
        Availability {
            available: Some(false),
            errno: Some(errno),
            errno_name: Some(errno_name(errno)),
            reason: Some(reason.into()),
        }
    }
}

/// Attempts of one (kind, device, flags, data_type) allocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AllocTotal {
    pub kind: AllocKind,
    pub device: DeviceKind,
    pub flags: u32,
    /// `NEST_PARENT|DIRTY_TRACKING`, `0`, or hex for unknown bits.
    pub flag_names: String,
    pub data_type: u32,
    pub attempts: u32,
    pub succeeded: u32,
    /// errno name -> count, failures only.
    pub errnos: BTreeMap<String, u32>,
}

/// Map/unmap totals of one IOAS.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IoasTotals {
    pub id: u32,
    pub label: String,
    pub map_calls: u64,
    pub maps_ok: u64,
    pub unmap_calls: u64,
    pub unmaps_ok: u64,
    pub bytes_mapped: u64,
    /// As reported back by the kernel in `iommu_ioas_unmap.length`.
    pub bytes_unmapped: u64,
    /// Still mapped at the end (should be 0).
    pub live_bytes: u64,
    pub destroyed: bool,
}

/// Derived page-table traffic of one hwpt (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HwptTotals {
    pub id: u32,
    pub label: String,
    pub kind: AllocKind,
    pub device: DeviceKind,
    pub flags: u32,
    /// IOAS for paging hwpts, parent hwpt for nested ones.
    pub parent_id: u32,
    /// Bytes mapped into the domain: fill at allocation + every later IOAS_MAP.
    pub bytes_mapped: u64,
    /// Part of `bytes_mapped` that came from areas existing at allocation.
    pub bytes_filled_at_alloc: u64,
    /// Bytes unmapped from the domain: IOAS_UNMAPs + what remained at destruction.
    pub bytes_unmapped: u64,
    pub freed: bool,
}

/// Result of the map/unmap benchmark loop.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoopResult {
    pub ioas_id: u32,
    pub iterations: u64,
    pub bytes_per_map: u64,
    pub iova: u64,
    /// IOMMU_IOAS_MAP + IOMMU_IOAS_UNMAP calls issued.
    pub ops: u64,
    pub map_errors: u64,
    pub unmap_errors: u64,
    /// First error seen, if any.
    pub first_errno: Option<i32>,
    pub elapsed_ns: u64,
    pub ops_per_sec: f64,
    /// Paging domains every map reached.
    pub domains_reached: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub allocations: Vec<AllocTotal>,
    /// Successful domain allocations by `<device>_<kind>` (`vfio_paging`, `vfio_auto`,
    /// `vfio_nested`, `mock_paging`, ...), plus `total`. This is what a tracer hooking the
    /// driver's domain-allocation op must count.
    pub expected_domain_allocations: BTreeMap<String, u64>,
    /// Domains the run freed again, same keys.
    pub expected_domain_frees: BTreeMap<String, u64>,
    pub ioas: Vec<IoasTotals>,
    pub hwpts: Vec<HwptTotals>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VfioInfo {
    pub path: String,
    /// `/sys/class/vfio-dev/vfioN/device` target basename (PCI BDF) if readable.
    pub pci_device: Option<String>,
    pub dev_id: Option<u32>,
}

/// The whole report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub tool: String,
    pub kernel_release: Option<String>,
    pub iommu_path: String,
    pub vfio: Option<VfioInfo>,
    /// The selftest mock (IOMMU_TEST_CMD): errno ENOTTY = no CONFIG_IOMMUFD_TEST.
    pub mock: Availability,
    /// 2M hugetlb memory for the contiguous run.
    pub hugepages: Availability,
    pub steps: Vec<Step>,
    pub totals: Totals,
    pub loop_result: Option<LoopResult>,
    pub warnings: Vec<String>,
    /// The workload's memory cgroup `sec_pagetables`, sampled at named points
    /// (`--sample-cgroup`), to reconcile charged page-table pages with the kernel's count.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cgroup_samples: Vec<CgroupSample>,
}

/// One reading of the workload's cgroup `memory.stat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CgroupSample {
    pub label: String,
    /// CLOCK_MONOTONIC when read (the clock of the capture's `ts_ns`).
    pub ts_ns: u64,
    /// The cgroup v2 path, from /proc/self/cgroup.
    pub cgroup: String,
    /// `sec_pagetables` in bytes; None when memory.stat could not be read.
    pub sec_pagetables: Option<u64>,
    pub error: Option<String>,
}

impl Report {
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }
}

/// `NEST_PARENT|DIRTY_TRACKING` style names.
pub fn hwpt_flag_names(flags: u32) -> String {
    if flags == 0 {
        return "0".into();
    }
    let mut parts = Vec::new();
    let mut rest = flags;
    for (bit, name) in [
        (IOMMU_HWPT_ALLOC_NEST_PARENT, "NEST_PARENT"),
        (IOMMU_HWPT_ALLOC_DIRTY_TRACKING, "DIRTY_TRACKING"),
        (super::uapi::IOMMU_HWPT_FAULT_ID_VALID, "FAULT_ID_VALID"),
    ] {
        if rest & bit != 0 {
            parts.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        parts.push(format!("{rest:#x}"));
    }
    parts.join("|")
}

fn kind_key(device: DeviceKind, kind: AllocKind) -> String {
    let d = match device {
        DeviceKind::Vfio => "vfio",
        DeviceKind::Mock => "mock",
    };
    let k = match kind {
        AllocKind::Paging => "paging",
        AllocKind::Nested => "nested",
        AllocKind::Auto => "auto",
    };
    format!("{d}_{k}")
}

/// Book-keeping of allocations and of the bytes each IOAS / hwpt has seen.
#[derive(Debug, Default)]
pub struct Ledger {
    allocs: BTreeMap<(AllocKind, DeviceKind, u32, u32), AllocTotal>,
    ioas: Vec<IoasTotals>,
    hwpts: Vec<HwptTotals>,
}

impl Ledger {
    pub fn ioas_created(&mut self, id: u32, label: &str) {
        self.ioas.push(IoasTotals {
            id,
            label: label.into(),
            map_calls: 0,
            maps_ok: 0,
            unmap_calls: 0,
            unmaps_ok: 0,
            bytes_mapped: 0,
            bytes_unmapped: 0,
            live_bytes: 0,
            destroyed: false,
        });
    }

    pub fn ioas_destroyed(&mut self, id: u32) {
        if let Some(i) = self.live_ioas_mut(id) {
            i.destroyed = true;
        }
    }

    fn live_ioas_mut(&mut self, id: u32) -> Option<&mut IoasTotals> {
        self.ioas
            .iter_mut()
            .rev()
            .find(|i| i.id == id && !i.destroyed)
    }

    pub fn ioas_live_bytes(&self, id: u32) -> u64 {
        self.ioas
            .iter()
            .rev()
            .find(|i| i.id == id && !i.destroyed)
            .map_or(0, |i| i.live_bytes)
    }

    /// Records an allocation attempt (errno 0 = success).
    pub fn alloc_attempt(
        &mut self,
        kind: AllocKind,
        device: DeviceKind,
        flags: u32,
        data_type: u32,
        errno: i32,
    ) {
        let t = self
            .allocs
            .entry((kind, device, flags, data_type))
            .or_insert_with(|| AllocTotal {
                kind,
                device,
                flags,
                flag_names: hwpt_flag_names(flags),
                data_type,
                attempts: 0,
                succeeded: 0,
                errnos: BTreeMap::new(),
            });
        t.attempts += 1;
        if errno == 0 {
            t.succeeded += 1;
        } else {
            *t.errnos.entry(errno_name(errno)).or_default() += 1;
        }
    }

    /// A hwpt now exists. Paging (and auto) hwpts get the IOAS's existing areas.
    #[allow(clippy::too_many_arguments)]
    pub fn hwpt_created(
        &mut self,
        id: u32,
        label: &str,
        kind: AllocKind,
        device: DeviceKind,
        flags: u32,
        parent_id: u32,
    ) {
        let fill = if kind == AllocKind::Nested {
            0
        } else {
            self.ioas_live_bytes(parent_id)
        };
        self.hwpts.push(HwptTotals {
            id,
            label: label.into(),
            kind,
            device,
            flags,
            parent_id,
            bytes_mapped: fill,
            bytes_filled_at_alloc: fill,
            bytes_unmapped: 0,
            freed: false,
        });
    }

    /// The hwpt was destroyed; paging ones lose what is still mapped in their IOAS.
    pub fn hwpt_freed(&mut self, id: u32) {
        let Some(idx) = self.hwpts.iter().rposition(|h| h.id == id && !h.freed) else {
            return;
        };
        let (kind, ioas) = (self.hwpts[idx].kind, self.hwpts[idx].parent_id);
        let live = if kind == AllocKind::Nested {
            0
        } else {
            self.ioas_live_bytes(ioas)
        };
        let h = &mut self.hwpts[idx];
        h.bytes_unmapped += live;
        h.freed = true;
    }

    pub fn hwpt(&self, id: u32) -> Option<&HwptTotals> {
        self.hwpts.iter().rev().find(|h| h.id == id && !h.freed)
    }

    /// Live paging domains in an IOAS.
    pub fn domains_in(&self, ioas: u32) -> u32 {
        self.hwpts
            .iter()
            .filter(|h| h.kind != AllocKind::Nested && h.parent_id == ioas && !h.freed)
            .count() as u32
    }

    fn paging_in(&mut self, ioas: u32) -> impl Iterator<Item = &mut HwptTotals> {
        self.hwpts
            .iter_mut()
            .filter(move |h| h.kind != AllocKind::Nested && h.parent_id == ioas && !h.freed)
    }

    /// An IOAS_MAP call; `errno` 0 = `len` bytes mapped.
    pub fn map(&mut self, ioas: u32, len: u64, errno: i32) {
        if let Some(i) = self.live_ioas_mut(ioas) {
            i.map_calls += 1;
            if errno == 0 {
                i.maps_ok += 1;
                i.bytes_mapped += len;
                i.live_bytes += len;
            }
        }
        if errno == 0 {
            for h in self.paging_in(ioas) {
                h.bytes_mapped += len;
            }
        }
    }

    /// `ok + failed` IOAS_MAP calls of `len` bytes each (the benchmark loop).
    pub fn map_n(&mut self, ioas: u32, len: u64, ok: u64, failed: u64) {
        if let Some(i) = self.live_ioas_mut(ioas) {
            i.map_calls += ok + failed;
            i.maps_ok += ok;
            i.bytes_mapped += ok * len;
            i.live_bytes += ok * len;
        }
        for h in self.paging_in(ioas) {
            h.bytes_mapped += ok * len;
        }
    }

    /// `ok + failed` IOAS_UNMAP calls that each unmapped `len` bytes when they succeeded.
    pub fn unmap_n(&mut self, ioas: u32, len: u64, ok: u64, failed: u64) {
        if let Some(i) = self.live_ioas_mut(ioas) {
            i.unmap_calls += ok + failed;
            i.unmaps_ok += ok;
            i.bytes_unmapped += ok * len;
            i.live_bytes = i.live_bytes.saturating_sub(ok * len);
        }
        for h in self.paging_in(ioas) {
            h.bytes_unmapped += ok * len;
        }
    }

    /// An IOAS_UNMAP call; `unmapped` = the length the kernel reported (0 on error).
    pub fn unmap(&mut self, ioas: u32, unmapped: u64, errno: i32) {
        if let Some(i) = self.live_ioas_mut(ioas) {
            i.unmap_calls += 1;
            if errno == 0 {
                i.unmaps_ok += 1;
                i.bytes_unmapped += unmapped;
                i.live_bytes = i.live_bytes.saturating_sub(unmapped);
            }
        }
        if errno == 0 {
            for h in self.paging_in(ioas) {
                h.bytes_unmapped += unmapped;
            }
        }
    }

    pub fn totals(&self) -> Totals {
        let mut allocated: BTreeMap<String, u64> = BTreeMap::new();
        let mut freed: BTreeMap<String, u64> = BTreeMap::new();
        for h in &self.hwpts {
            *allocated.entry(kind_key(h.device, h.kind)).or_default() += 1;
            if h.freed {
                *freed.entry(kind_key(h.device, h.kind)).or_default() += 1;
            }
        }
        let total: u64 = allocated.values().sum();
        allocated.insert("total".into(), total);
        let total: u64 = freed.values().sum();
        freed.insert("total".into(), total);
        Totals {
            allocations: self.allocs.values().cloned().collect(),
            expected_domain_allocations: allocated,
            expected_domain_frees: freed,
            ioas: self.ioas.clone(),
            hwpts: self.hwpts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names() {
        assert_eq!(hwpt_flag_names(0), "0");
        assert_eq!(hwpt_flag_names(1), "NEST_PARENT");
        assert_eq!(hwpt_flag_names(3), "NEST_PARENT|DIRTY_TRACKING");
        assert_eq!(hwpt_flag_names(1 << 31), "0x80000000");
    }

    #[test]
    fn ledger_follows_iommufd_semantics() {
        let mut l = Ledger::default();
        l.ioas_created(1, "vfio");
        // A map before any domain exists reaches nobody yet.
        l.map(1, 0x10000, 0);
        l.alloc_attempt(AllocKind::Paging, DeviceKind::Vfio, 0, 0, 0);
        l.hwpt_created(2, "h0", AllocKind::Paging, DeviceKind::Vfio, 0, 1);
        l.alloc_attempt(AllocKind::Paging, DeviceKind::Vfio, 1, 0, libc::EOPNOTSUPP);
        l.hwpt_created(3, "auto", AllocKind::Auto, DeviceKind::Vfio, 0, 1);
        l.map(1, 0x1000, 0);
        l.map(1, 0x1000, libc::EEXIST);
        l.unmap(1, 0x1000, 0);
        l.hwpt_freed(3);
        l.unmap(1, 0x10000, 0);
        l.hwpt_freed(2);
        l.ioas_destroyed(1);

        let t = l.totals();
        let h0 = &t.hwpts[0];
        assert_eq!(h0.bytes_filled_at_alloc, 0x10000);
        assert_eq!(h0.bytes_mapped, 0x11000);
        assert_eq!(h0.bytes_unmapped, 0x11000);
        let auto = &t.hwpts[1];
        assert_eq!(auto.bytes_mapped, 0x11000);
        // 0x1000 by the unmap, 0x10000 still mapped when it was freed
        assert_eq!(auto.bytes_unmapped, 0x11000);
        assert_eq!(t.ioas[0].map_calls, 3);
        assert_eq!(t.ioas[0].maps_ok, 2);
        assert_eq!(t.ioas[0].live_bytes, 0);
        assert_eq!(t.expected_domain_allocations["vfio_paging"], 1);
        assert_eq!(t.expected_domain_allocations["vfio_auto"], 1);
        assert_eq!(t.expected_domain_allocations["total"], 2);
        assert_eq!(t.expected_domain_frees["total"], 2);
        let np = t.allocations.iter().find(|a| a.flags == 1).unwrap();
        assert_eq!((np.attempts, np.succeeded), (1, 0));
        assert_eq!(np.errnos["EOPNOTSUPP"], 1);
    }

    #[test]
    fn report_serializes() {
        let mut r = Report {
            tool: "iommu-trace".into(),
            mock: Availability::no(libc::ENOTTY, "no CONFIG_IOMMUFD_TEST"),
            hugepages: Availability::yes(),
            ..Default::default()
        };
        r.steps.push(Step {
            seq: 0,
            name: "ioas_alloc".into(),
            group: StepGroup::Setup,
            call: "IOMMU_IOAS_ALLOC".into(),
            request: Some(0x3b81),
            params: serde_json::json!({"flags": 0}),
            errno: Some(0),
            errno_name: Some("OK".into()),
            expected_errno: Some(0),
            as_expected: Some(true),
            outputs: [("out_ioas_id".to_string(), 1u64)].into_iter().collect(),
            note: None,
        });
        let v: serde_json::Value = serde_json::from_str(&r.to_json_pretty()).unwrap();
        assert_eq!(v["steps"][0]["name"], "ioas_alloc");
        assert_eq!(v["steps"][0]["group"], "setup");
        assert_eq!(v["steps"][0]["outputs"]["out_ioas_id"], 1);
        assert_eq!(v["mock"]["available"], false);
        assert_eq!(v["mock"]["errno_name"], "ENOTTY");
        assert_eq!(v["hugepages"]["available"], true);
        assert!(v["loop_result"].is_null());
        assert!(r.step("ioas_alloc").unwrap().ok());
    }
}
