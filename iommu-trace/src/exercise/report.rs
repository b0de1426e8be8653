//! The JSON report of `iommu-trace exercise`: every step with what the kernel answered, and
//! the totals a test compares against what the tracer saw.
//!
//! The totals come from the [`Ledger`] (see the `ledger` module for how they are derived).

use std::collections::BTreeMap;

use serde::Serialize;

use super::sys::errno_name;
use crate::uapi::HWPT_ALLOC_FLAGS;

pub use super::ledger::Ledger;

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

/// Derived page-table traffic of one hwpt (see the `ledger` module doc).
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
    /// vIOMMU objects on the mock (7.x): errno ENOTTY = the kernel has none.
    pub viommu: Availability,
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
    /// This process's pinned and locked memory (`VmPin`, `VmLck` of /proc/self/status: the
    /// kernel's `mm->pinned_vm` and `mm->locked_vm`) at named points, to reconcile the
    /// capture's `pin` events with the kernel's own counters.
    pub memory_samples: Vec<MemorySample>,
    /// The kernel's page size: `pin` events count kernel pages.
    pub page_size: u64,
}

/// One reading of /proc/self/status.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemorySample {
    pub label: String,
    /// CLOCK_MONOTONIC when read (the clock of the capture's `ts_ns`).
    pub ts_ns: u64,
    /// `VmPin` and `VmLck`, in bytes; None when the line could not be read.
    pub pinned_bytes: Option<u64>,
    pub locked_bytes: Option<u64>,
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
    for f in HWPT_ALLOC_FLAGS {
        if rest & f.bit != 0 {
            parts.push(f.name.to_string());
            rest &= !f.bit;
        }
    }
    if rest != 0 {
        parts.push(format!("{rest:#x}"));
    }
    parts.join("|")
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
        // IOMMU_HWPT_ALLOC_PASID = 1 << 3 (include/uapi/linux/iommufd.h); this used to be "0x8".
        assert_eq!(hwpt_flag_names(8), "PASID");
        assert_eq!(
            hwpt_flag_names(0x1f),
            "NEST_PARENT|DIRTY_TRACKING|FAULT_ID_VALID|PASID|0x10"
        );
    }

    /// The report names flags exactly as `inspect` and the exporter do (`|`-joined), so a
    /// test can match the report against a capture.
    #[test]
    fn flag_names_agree_with_the_event_names() {
        for flags in 1..=0xff {
            assert_eq!(
                hwpt_flag_names(flags),
                crate::events::hwpt_flag_names(flags).join("|"),
                "flags {flags:#x}"
            );
        }
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
