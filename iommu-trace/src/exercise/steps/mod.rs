//! The step sequence of `iommu-trace exercise`.
//!
//! What a Linux 6.12 kernel answers (from drivers/iommu/iommufd/{hw_pagetable,device,
//! io_pagetable,ioas,main,selftest}.c and drivers/iommu/intel/{iommu,nested}.c):
//!
//! VFIO part (`/dev/iommu` + `/dev/vfio/devices/vfioN`):
//! * `hwpt_alloc_paging` (flags 0): succeeds on every driver with `domain_alloc_user`
//!   or `domain_alloc_paging`; 1 domain allocation. On VT-d always a second-stage table.
//! * `hwpt_alloc_paging_nest_parent`: VT-d needs scalable mode + nesting
//!   (`nested_supported()`), else the driver returns EOPNOTSUPP (no domain allocated).
//!   SMMUv3/AMD 6.12: EOPNOTSUPP.
//! * `hwpt_alloc_paging_dirty_tracking`: needs IOMMU_CAP_DIRTY_TRACKING (VT-d: scalable
//!   mode + SSADS); otherwise the *iommufd core* returns EOPNOTSUPP before calling the driver.
//! * `hwpt_alloc_nested_vtd_s1`: on the NEST_PARENT hwpt if one exists (VT-d with nesting:
//!   succeeds, the nested domain has no page table), else on the flags-0 hwpt, where the
//!   core returns EINVAL (`!parent->nest_parent`), or EOPNOTSUPP before that where the
//!   driver has no nested allocation op (7.x AMD: `amd_without_nested_op`).
//! * negative HWPT_ALLOC variants, fixed by the core: unknown flag bit -> EOPNOTSUPP (paging
//!   and nested), `data_type == NONE && data_len` / `data_type != NONE && !data_len` -> EINVAL.
//! * `attach_ioas_auto_domain`: the kernel allocates an auto domain (no existing auto
//!   domain to reuse: explicitly allocated hwpts are never reused) and returns its id.
//! * `attach_hwpt`: replaces the auto domain with the flags-0 hwpt; the auto domain loses
//!   its only device and is destroyed (its remaining mappings are unmapped first).
//! * IOAS_MAP/UNMAP: every map reaches every paging hwpt of the IOAS (attached or not).
//!   Unmapping a range that cuts an area gives ENOENT; unmapping where nothing is mapped
//!   gives ENOENT; mapping over an existing area gives EEXIST.
//! * IOMMU_DESTROY of an attached hwpt, of a parent with a nested child, of an IOAS with
//!   hwpts: EBUSY.
//!
//! On QEMU's emulated VT-d without scalable mode (caching-mode=on): flags-0 paging and the
//! auto domain succeed; NEST_PARENT, DIRTY_TRACKING and NEST_PARENT|DIRTY_TRACKING give
//! EOPNOTSUPP; nested VTD_S1 gives EINVAL (parent is the flags-0 hwpt). Domain allocations:
//! vfio_paging 1, vfio_auto 1.
//!
//! Mock part (IOMMU_TEST_CMD; ENOTTY when the kernel lacks CONFIG_IOMMUFD_TEST): mock auto
//! domain 1, paging 0 / NEST_PARENT / DIRTY_TRACKING / both 4, nested SELFTEST 1, all must
//! succeed; nested VTD_S1 on the mock parent -> EOPNOTSUPP, nested on a non-parent -> EINVAL.
//!
//! Layout: this module has the [`Runner`] with its shared plumbing (step builder, recording,
//! user buffers) and the top-level order of the flows; `ioctls` the recorded iommufd calls;
//! `vfio` and `mock` the two flows, `viommu` the vIOMMU objects on the mock (7.x) and the
//! close of an iommufd with objects alive; `map_patterns` the IOAS map/unmap patterns; `failures`
//! the calls the kernel must refuse (negative HWPT_ALLOC variants, EBUSY destroys).

mod change_process;
mod failures;
mod ioctls;
mod map_patterns;
mod mock;
mod pin_limits;
mod pin_sharing;
#[cfg(test)]
mod tests;
mod vfio;
mod viommu;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::report::{Availability, DeviceKind, Ledger, Report, Step, StepGroup};
use super::sys::{errno_name, Mapping, HUGE_2M, PAGE_4K};
use super::uapi::*;
use super::{discover_vfio_device, ExerciseError, ExerciseOptions, Result, VfioSelect};

// IOVA layout, offsets from the base (all below IOVA_WINDOW = 64 MiB).
const IOVA_SINGLE: u64 = 0x0000_0000;
const IOVA_RUN: u64 = 0x0010_0000;
const RUN_PAGES: u64 = 64;
const IOVA_ADJ: u64 = 0x0020_0000;
const ADJ_AREAS: u64 = 8;
const ADJ_PAGES: u64 = 4;
const IOVA_FULL: u64 = 0x0040_0000;
const FULL_PAGES: u64 = 512;
const IOVA_HUGE: u64 = 0x0100_0000;
const IOVA_LOOP: u64 = 0x0200_0000;
const IOVA_PREMAP: u64 = 0x0300_0000;
const PREMAP_PAGES: u64 = 16;
const LEFTOVER_PAGES: u64 = 16;
const IOVA_LEFTOVER: u64 = 0x0380_0000;
/// Pages of the 4K buffer (more if the loop needs them).
const BUF_PAGES: u64 = 1024;

const RW: u32 = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

/// What an IOMMU_DESTROY targets (for the ledger).
#[derive(Clone, Copy)]
enum Obj {
    Hwpt,
    Ioas,
    /// A selftest mock device; destroying it detaches it and frees its auto domain.
    MockDevice {
        auto_hwpt: u32,
    },
}

enum HwptData {
    None,
    VtdS1(IommuHwptVtdS1),
    Selftest(IommuHwptSelftest),
    /// data_type set, data_len 0 (core: EINVAL).
    TypeWithoutLen(u32),
    /// data_type NONE with data_len = n and a valid pointer (core: EINVAL).
    LenWithoutType(u32),
}

struct HwptReq<'a> {
    name: &'a str,
    group: StepGroup,
    device: DeviceKind,
    dev_id: u32,
    pt_id: u32,
    flags: u32,
    data: HwptData,
    expected: Option<i32>,
    note: Option<String>,
    /// A FAULT queue's id, with `IOMMU_HWPT_FAULT_ID_VALID`.
    fault_id: u32,
}

/// Where a flow's HWPT_ALLOC requests go: its device, and the IOAS or parent hwpt.
#[derive(Clone, Copy)]
struct HwptTarget {
    device: DeviceKind,
    dev_id: u32,
    pt_id: u32,
}

impl HwptTarget {
    /// On the mock device.
    fn mock(dev_id: u32, pt_id: u32) -> HwptTarget {
        HwptTarget {
            device: DeviceKind::Mock,
            dev_id,
            pt_id,
        }
    }

    /// A request whose answer the kernel fixes (`expected`), for the reason in `note`.
    fn must<'a>(
        self,
        name: &'a str,
        group: StepGroup,
        flags: u32,
        data: HwptData,
        expected: i32,
        note: &str,
    ) -> HwptReq<'a> {
        self.req(
            name,
            group,
            flags,
            data,
            Some(expected),
            Some(note.to_string()),
        )
    }

    fn req<'a>(
        self,
        name: &'a str,
        group: StepGroup,
        flags: u32,
        data: HwptData,
        expected: Option<i32>,
        note: Option<String>,
    ) -> HwptReq<'a> {
        HwptReq {
            name,
            group,
            device: self.device,
            dev_id: self.dev_id,
            pt_id: self.pt_id,
            flags,
            data,
            expected,
            note,
            fault_id: 0,
        }
    }
}

struct Runner<'o> {
    opts: &'o ExerciseOptions,
    iommufd: RawFd,
    report: Report,
    ledger: Ledger,
    buf: Option<Mapping>,
    buf_cursor: u64,
    huge: Option<Mapping>,
    huge_tried: bool,
    /// hwpts allocated explicitly in the current flow, destroyed in reverse order.
    owned_hwpts: Vec<u32>,
    /// hwpt the VFIO device is attached to, and whether it is an auto domain.
    vfio_attached: Option<(u32, bool)>,
    /// Live vIOMMUs: HWPT_ALLOC on one of them allocates a nested domain.
    viommus: Vec<u32>,
}

pub(super) fn run(opts: &ExerciseOptions) -> Result<Report> {
    let iommufd = open_dev(&opts.iommu_path, true)?;
    let vfio_path: Option<PathBuf> = match &opts.vfio {
        VfioSelect::Auto => Some(
            discover_vfio_device(Path::new(super::VFIO_DEVICES_DIR)).ok_or(
                ExerciseError::NoVfioDevice {
                    dir: super::VFIO_DEVICES_DIR.into(),
                },
            )?,
        ),
        VfioSelect::Path(p) => Some(p.clone()),
        VfioSelect::Disabled => None,
    };
    let vfio = match &vfio_path {
        Some(p) => Some(open_dev(p, false)?),
        None => None,
    };

    let mut r = Runner {
        opts,
        iommufd: iommufd.as_raw_fd(),
        report: Report {
            tool: format!("iommu-trace {}", env!("CARGO_PKG_VERSION")),
            kernel_release: Some(crate::session::running_kernel_release()),
            iommu_path: opts.iommu_path.display().to_string(),
            // SAFETY: sysconf has no preconditions.
            page_size: u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0),
            ..Default::default()
        },
        ledger: Ledger::default(),
        buf: None,
        buf_cursor: 0,
        huge: None,
        huge_tried: false,
        owned_hwpts: Vec::new(),
        vfio_attached: None,
        viommus: Vec::new(),
    };
    r.record(
        step("open_iommufd", StepGroup::Setup, "open", None)
            .params(json!({ "path": r.report.iommu_path, "flags": "O_RDWR|O_CLOEXEC" }))
            .errno(0)
            .expect(0),
    );
    r.alloc_buffer();
    r.sample_cgroup("start");
    r.sample_memory("start");

    if let Some(limits) = opts.pin_limits {
        r.pin_limits_flow(limits);
        r.close("close_iommufd", iommufd);
        r.sample_memory("end");
        r.buf = None;
        let mut report = r.report;
        report.totals = r.ledger.totals();
        return Ok(report);
    }
    if let (Some(vfio), Some(path)) = (vfio, vfio_path) {
        r.vfio_flow(vfio, &path);
        r.sample_memory("after_vfio");
    }
    if opts.steps.mock {
        r.mock_flow();
        r.sample_memory("after_mock");
        if r.report.mock.available == Some(true) {
            r.close_with_objects_alive();
        }
    } else {
        r.report.mock = Availability::default();
    }
    if opts.vfio == VfioSelect::Disabled && r.report.mock.available != Some(true) {
        return Err(ExerciseError::NothingToExercise {
            errno_name: r
                .report
                .mock
                .errno_name
                .clone()
                .unwrap_or_else(|| "not tried".into()),
        });
    }
    r.close("close_iommufd", iommufd);
    r.sample_cgroup("end");
    r.sample_memory("end");
    r.buf = None;
    r.huge = None;

    let mut report = r.report;
    report.totals = r.ledger.totals();
    Ok(report)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the capture's `ts_ns`.
fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

fn open_dev(path: &Path, is_iommufd: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV) if is_iommufd => {
                ExerciseError::NoIommufd { path: path.into() }
            }
            Some(libc::EACCES) | Some(libc::EPERM) => {
                ExerciseError::NoPermission { path: path.into() }
            }
            _ => ExerciseError::Open {
                path: path.into(),
                source: e,
            },
        })
}

/// Step builder.
fn step(name: &str, group: StepGroup, call: &str, request: Option<u32>) -> Step {
    Step {
        seq: 0,
        name: name.to_string(),
        group,
        call: call.to_string(),
        request,
        params: json!({}),
        errno: None,
        errno_name: None,
        expected_errno: None,
        as_expected: None,
        outputs: BTreeMap::new(),
        note: None,
    }
}

trait StepExt {
    fn params(self, p: serde_json::Value) -> Self;
    fn errno(self, e: i32) -> Self;
    fn expect(self, e: i32) -> Self;
    fn expect_opt(self, e: Option<i32>) -> Self;
    fn out(self, k: &str, v: u64) -> Self;
    fn note(self, n: impl Into<String>) -> Self;
}

impl StepExt for Step {
    fn params(mut self, p: serde_json::Value) -> Self {
        self.params = p;
        self
    }
    fn errno(mut self, e: i32) -> Self {
        self.errno = Some(e);
        self
    }
    fn expect(mut self, e: i32) -> Self {
        self.expected_errno = Some(e);
        self
    }
    fn expect_opt(mut self, e: Option<i32>) -> Self {
        self.expected_errno = e;
        self
    }
    fn out(mut self, k: &str, v: u64) -> Self {
        self.outputs.insert(k.to_string(), v);
        self
    }
    fn note(mut self, n: impl Into<String>) -> Self {
        self.note = Some(match self.note.take() {
            Some(old) => format!("{old}; {}", n.into()),
            None => n.into(),
        });
        self
    }
}

impl Runner<'_> {
    /// Reads this process's cgroup `sec_pagetables` after the periodic memcg stat flush.
    fn sample_cgroup(&mut self, label: &str) {
        if !self.opts.sample_cgroup {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(4500));
        let cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("0::").map(str::to_string))
            })
            .unwrap_or_default();
        let path = format!("/sys/fs/cgroup{cgroup}/memory.stat");
        let (sec_pagetables, error) = match std::fs::read_to_string(&path) {
            Ok(stat) => match stat
                .lines()
                .find_map(|l| l.strip_prefix("sec_pagetables "))
                .and_then(|v| v.trim().parse().ok())
            {
                Some(v) => (Some(v), None),
                None => (None, Some(format!("{path} has no sec_pagetables"))),
            },
            Err(e) => (None, Some(format!("{path}: {e}"))),
        };
        let ts_ns = monotonic_ns();
        self.report
            .cgroup_samples
            .push(super::report::CgroupSample {
                label: label.into(),
                ts_ns,
                cgroup,
                sec_pagetables,
                error,
            });
    }

    /// `--hold-file`: create it, then wait until it is gone (a minute at most).
    fn hold(&mut self) {
        let Some(path) = self.opts.hold_file.clone() else {
            return;
        };
        if let Err(e) = std::fs::write(&path, format!("{}\n", std::process::id())) {
            self.warn(format!(
                "cannot create the hold file {}: {e}",
                path.display()
            ));
            return;
        }
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while path.exists() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if path.exists() {
            self.warn(format!("nobody removed the hold file {}", path.display()));
        }
    }

    /// Reads this process's `VmPin` and `VmLck`: exact at once (no periodic flush).
    fn sample_memory(&mut self, label: &str) {
        let held = crate::procfs::memory_held("self");
        let sample = super::report::MemorySample {
            label: label.into(),
            ts_ns: monotonic_ns(),
            pinned_bytes: held.map(|h| h.pinned_bytes),
            locked_bytes: held.map(|h| h.locked_bytes),
        };
        self.report.memory_samples.push(sample);
    }

    fn on(&self, g: StepGroup) -> bool {
        self.opts.steps.contains(g)
    }

    fn base(&self) -> u64 {
        self.opts.iova_base
    }

    fn record(&mut self, mut s: Step) -> i32 {
        s.seq = self.report.steps.len() as u32;
        s.errno_name = s.errno.map(errno_name);
        if s.as_expected.is_none() {
            if let (Some(e), Some(x)) = (s.errno, s.expected_errno) {
                s.as_expected = Some(e == x);
            }
        }
        log::debug!(
            "exercise step {} {}: {}",
            s.seq,
            s.name,
            s.errno_name.as_deref().unwrap_or("skipped")
        );
        if s.as_expected == Some(false) {
            log::warn!(
                "exercise step {}: got {}, expected {}",
                s.name,
                s.errno_name.as_deref().unwrap_or("-"),
                errno_name(s.expected_errno.unwrap_or(0))
            );
        }
        let e = s.errno.unwrap_or(-1);
        self.report.steps.push(s);
        e
    }

    fn warn(&mut self, w: String) {
        log::warn!("exercise: {w}");
        self.report.warnings.push(w);
    }

    // ---------------------------------------------------------------- memory

    fn alloc_buffer(&mut self) {
        let pages = BUF_PAGES.max(u64::from(self.opts.loop_pages));
        let len = pages * PAGE_4K;
        let s = step("mmap_anon_4k", StepGroup::Setup, "mmap", None).params(json!({
            "length": len,
            "flags": "MAP_PRIVATE|MAP_ANONYMOUS",
            "madvise": "MADV_NOHUGEPAGE",
        }));
        match Mapping::anon_4k(len as usize) {
            Ok(m) => {
                let s = s.errno(0).expect(0).out("addr", m.addr(0));
                self.buf = Some(m);
                self.record(s);
            }
            Err(e) => {
                self.record(s.errno(e).expect(0));
                self.warn(format!(
                    "cannot allocate the {len}-byte 4K buffer ({}); no maps will be done",
                    errno_name(e)
                ));
            }
        }
    }

    /// User VA of `n` fresh 4K pages of the buffer (wraps around; reusing pages is legal).
    fn pages(&mut self, n: u64) -> Option<u64> {
        let buf = self.buf.as_ref()?;
        let total = buf.len() / PAGE_4K;
        if n > total {
            return None;
        }
        if self.buf_cursor + n > total {
            self.buf_cursor = 0;
        }
        let va = buf.addr(self.buf_cursor * PAGE_4K);
        self.buf_cursor += n;
        Some(va)
    }

    fn huge_buffer(&mut self) -> Option<u64> {
        if !self.huge_tried {
            self.huge_tried = true;
            if !self.opts.hugepages {
                self.report.hugepages = Availability::disabled("disabled by --no-hugepages");
                return None;
            }
            let len = 2 * HUGE_2M;
            let s = step("mmap_hugetlb_2m", StepGroup::Huge, "mmap", None).params(json!({
                "length": len,
                "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB|MAP_HUGE_2MB",
            }));
            match Mapping::hugetlb_2m(len as usize) {
                Ok(m) => {
                    let s = s.errno(0).out("addr", m.addr(0));
                    self.huge = Some(m);
                    self.record(s);
                    self.report.hugepages = Availability::yes();
                }
                Err(e) => {
                    self.record(s.errno(e).note(
                        "no 2M hugetlb pages: reserve some with `sysctl vm.nr_hugepages=4` \
                         (or hugepages=N on the kernel command line); huge steps skipped",
                    ));
                    self.report.hugepages = Availability::no(
                        e,
                        "mmap(MAP_HUGETLB|MAP_HUGE_2MB) failed; reserve vm.nr_hugepages",
                    );
                }
            }
        }
        self.huge.as_ref().map(|m| m.addr(0))
    }
}
