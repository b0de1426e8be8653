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
//!   core returns EINVAL (`!parent->nest_parent`).
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

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use libc::{EBUSY, EEXIST, EINVAL, ENOENT, ENOTTY, EOPNOTSUPP};
use serde_json::json;

use super::report::{
    hwpt_flag_names, AllocKind, Availability, DeviceKind, Ledger, LoopResult, Report, Step,
    StepGroup, VfioInfo,
};
use super::sys::{errno_name, ioctl, Mapping, HUGE_2M, PAGE_4K};
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
const INVALID_FLAG: u32 = 1 << 31;

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
            kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_string()),
            iommu_path: opts.iommu_path.display().to_string(),
            ..Default::default()
        },
        ledger: Ledger::default(),
        buf: None,
        buf_cursor: 0,
        huge: None,
        huge_tried: false,
        owned_hwpts: Vec::new(),
        vfio_attached: None,
    };
    r.record(
        step("open_iommufd", StepGroup::Setup, "open", None)
            .params(json!({ "path": r.report.iommu_path, "flags": "O_RDWR|O_CLOEXEC" }))
            .errno(0)
            .expect(0),
    );
    r.alloc_buffer();
    r.sample_cgroup("start");

    if let (Some(vfio), Some(path)) = (vfio, vfio_path) {
        r.vfio_flow(vfio, &path);
    }
    if opts.steps.mock {
        r.mock_flow();
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
    r.buf = None;
    r.huge = None;

    let mut report = r.report;
    report.totals = r.ledger.totals();
    Ok(report)
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
        let ts_ns = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
            .unwrap_or(0);
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

    // ---------------------------------------------------------------- ioctls

    fn ioas_alloc(&mut self, name: &str, label: &str) -> Option<u32> {
        let mut cmd = IommuIoasAlloc {
            size: size32::<IommuIoasAlloc>(),
            ..Default::default()
        };
        let e = ioctl(self.iommufd, IOMMU_IOAS_ALLOC, &mut cmd);
        let mut s = step(
            name,
            StepGroup::Setup,
            "IOMMU_IOAS_ALLOC",
            Some(IOMMU_IOAS_ALLOC),
        )
        .params(json!({ "flags": 0 }))
        .errno(e)
        .expect(0);
        if e == 0 {
            s = s.out("out_ioas_id", cmd.out_ioas_id.into());
            self.ledger.ioas_created(cmd.out_ioas_id, label);
        }
        self.record(s);
        (e == 0).then_some(cmd.out_ioas_id)
    }

    fn hwpt_alloc(&mut self, req: HwptReq<'_>) -> Option<u32> {
        let (data_type, data_len, data_uptr) = match &req.data {
            HwptData::None => (IOMMU_HWPT_DATA_NONE, 0, 0),
            HwptData::VtdS1(d) => (
                IOMMU_HWPT_DATA_VTD_S1,
                size32::<IommuHwptVtdS1>(),
                d as *const _ as u64,
            ),
            HwptData::Selftest(d) => (
                IOMMU_HWPT_DATA_SELFTEST,
                size32::<IommuHwptSelftest>(),
                d as *const _ as u64,
            ),
            HwptData::TypeWithoutLen(t) => (*t, 0, 0),
            HwptData::LenWithoutType(n) => (IOMMU_HWPT_DATA_NONE, *n, self.pages(1).unwrap_or(0)),
        };
        let mut cmd = IommuHwptAlloc {
            size: size32::<IommuHwptAlloc>(),
            flags: req.flags,
            dev_id: req.dev_id,
            pt_id: req.pt_id,
            data_type,
            data_len,
            data_uptr,
            ..Default::default()
        };
        let e = ioctl(self.iommufd, IOMMU_HWPT_ALLOC, &mut cmd);
        let nested = self.ledger.hwpt(req.pt_id).is_some();
        let kind = if nested {
            AllocKind::Nested
        } else {
            AllocKind::Paging
        };
        self.ledger
            .alloc_attempt(kind, req.device, req.flags, data_type, e);
        let mut s = step(
            req.name,
            req.group,
            "IOMMU_HWPT_ALLOC",
            Some(IOMMU_HWPT_ALLOC),
        )
        .params(json!({
            "kind": kind,
            "device": req.device,
            "dev_id": req.dev_id,
            "pt_id": req.pt_id,
            "flags": req.flags,
            "flag_names": hwpt_flag_names(req.flags),
            "data_type": data_type,
            "data_len": data_len,
        }))
        .errno(e)
        .expect_opt(req.expected);
        if let Some(n) = req.note {
            s = s.note(n);
        }
        if e == 0 {
            s = s.out("out_hwpt_id", cmd.out_hwpt_id.into());
            self.ledger.hwpt_created(
                cmd.out_hwpt_id,
                req.name,
                kind,
                req.device,
                req.flags,
                req.pt_id,
            );
            self.owned_hwpts.push(cmd.out_hwpt_id);
        }
        self.record(s);
        (e == 0).then_some(cmd.out_hwpt_id)
    }

    #[allow(clippy::too_many_arguments)]
    fn map(
        &mut self,
        name: &str,
        group: StepGroup,
        ioas: u32,
        user_va: Option<u64>,
        length: u64,
        iova: u64,
        expected: i32,
    ) -> bool {
        let Some(user_va) = user_va else {
            self.record(
                step(name, group, "IOMMU_IOAS_MAP", Some(IOMMU_IOAS_MAP))
                    .note("skipped: no user memory"),
            );
            return false;
        };
        let mut cmd = IommuIoasMap {
            size: size32::<IommuIoasMap>(),
            flags: IOMMU_IOAS_MAP_FIXED_IOVA | RW,
            ioas_id: ioas,
            user_va,
            length,
            iova,
            ..Default::default()
        };
        let e = ioctl(self.iommufd, IOMMU_IOAS_MAP, &mut cmd);
        self.ledger.map(ioas, length, e);
        let domains = self.ledger.domains_in(ioas);
        let mut s = step(name, group, "IOMMU_IOAS_MAP", Some(IOMMU_IOAS_MAP))
            .params(json!({
                "ioas_id": ioas,
                "flags": cmd.flags,
                "flag_names": "FIXED_IOVA|READABLE|WRITEABLE",
                "user_va": user_va,
                "length": length,
                "iova": iova,
                "pages_4k": length / PAGE_4K,
            }))
            .errno(e)
            .expect(expected);
        if e == 0 {
            s = s
                .out("iova", cmd.iova)
                .out("domains_reached", domains.into());
        }
        self.record(s);
        e == 0
    }

    /// IOAS_UNMAP; `expected_len` is what the kernel must report on success.
    #[allow(clippy::too_many_arguments)]
    fn unmap(
        &mut self,
        name: &str,
        group: StepGroup,
        ioas: u32,
        iova: u64,
        length: u64,
        expected: i32,
        expected_len: Option<u64>,
    ) -> Option<u64> {
        let mut cmd = IommuIoasUnmap {
            size: size32::<IommuIoasUnmap>(),
            ioas_id: ioas,
            iova,
            length,
        };
        let domains = self.ledger.domains_in(ioas);
        let e = ioctl(self.iommufd, IOMMU_IOAS_UNMAP, &mut cmd);
        let unmapped = if e == 0 { cmd.length } else { 0 };
        self.ledger.unmap(ioas, unmapped, e);
        let mut s = step(name, group, "IOMMU_IOAS_UNMAP", Some(IOMMU_IOAS_UNMAP))
            .params(json!({
                "ioas_id": ioas,
                "iova": iova,
                "length": length,
                "expected_unmapped": expected_len,
            }))
            .errno(e)
            .expect(expected);
        if e == 0 {
            s = s
                .out("unmapped", unmapped)
                .out("domains_reached", domains.into());
            if let Some(x) = expected_len {
                s.as_expected = Some(expected == 0 && unmapped == x);
                if unmapped != x {
                    s = s.note(format!("kernel unmapped {unmapped:#x}, expected {x:#x}"));
                }
            }
        }
        self.record(s);
        (e == 0).then_some(unmapped)
    }

    fn unmap_all(&mut self, name: &str, ioas: u32) {
        let live = self.ledger.ioas_live_bytes(ioas);
        self.unmap(name, StepGroup::Setup, ioas, 0, u64::MAX, 0, Some(live));
    }

    fn destroy(&mut self, name: &str, group: StepGroup, id: u32, obj: Obj, expected: i32) -> bool {
        let mut cmd = IommuDestroy {
            size: size32::<IommuDestroy>(),
            id,
        };
        let e = ioctl(self.iommufd, IOMMU_DESTROY, &mut cmd);
        let what = match obj {
            Obj::Hwpt => "hwpt",
            Obj::Ioas => "ioas",
            Obj::MockDevice { .. } => "mock_device",
        };
        self.record(
            step(name, group, "IOMMU_DESTROY", Some(IOMMU_DESTROY))
                .params(json!({ "id": id, "object": what }))
                .errno(e)
                .expect(expected),
        );
        if e == 0 {
            match obj {
                Obj::Hwpt => {
                    self.ledger.hwpt_freed(id);
                    self.owned_hwpts.retain(|&h| h != id);
                }
                Obj::Ioas => self.ledger.ioas_destroyed(id),
                Obj::MockDevice { auto_hwpt } => self.ledger.hwpt_freed(auto_hwpt),
            }
        }
        e == 0
    }

    /// Destroys every hwpt this flow allocated, newest first (nested before parents).
    fn destroy_owned_hwpts(&mut self, prefix: &str) {
        while let Some(id) = self.owned_hwpts.last().copied() {
            let label = self
                .ledger
                .hwpt(id)
                .map(|h| h.label.clone())
                .unwrap_or_else(|| id.to_string());
            let rest = label.strip_prefix(prefix).unwrap_or(&label);
            let rest = rest.strip_prefix("hwpt_alloc_").unwrap_or(rest);
            let name = format!("{prefix}destroy_hwpt_{rest}");
            if !self.destroy(&name, StepGroup::Setup, id, Obj::Hwpt, 0) {
                self.owned_hwpts.pop();
                self.warn(format!("could not destroy hwpt {id}; it goes with the fd"));
            }
        }
    }

    fn close(&mut self, name: &str, f: File) {
        let fd = f.into_raw_fd();
        // SAFETY: we own fd (taken out of the File).
        let rc = unsafe { libc::close(fd) };
        let e = if rc < 0 { super::sys::last_errno() } else { 0 };
        self.record(
            step(name, StepGroup::Setup, "close", None)
                .params(json!({ "fd": fd }))
                .errno(e)
                .expect(0),
        );
    }

    // ---------------------------------------------------------------- VFIO

    fn vfio_attach(&mut self, name: &str, vfio: RawFd, pt_id: u32, to_ioas: bool) -> Option<u32> {
        let mut cmd = VfioDeviceAttachIommufdPt {
            argsz: size32::<VfioDeviceAttachIommufdPt>(),
            flags: 0,
            pt_id,
        };
        let e = ioctl(vfio, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &mut cmd);
        let mut s = step(
            name,
            StepGroup::Setup,
            "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
            Some(VFIO_DEVICE_ATTACH_IOMMUFD_PT),
        )
        .params(json!({
            "pt_id": pt_id,
            "pt_kind": if to_ioas { "ioas" } else { "hwpt" },
            "replaces": self.vfio_attached.map(|(h, _)| h),
        }))
        .errno(e)
        .expect(0);
        if to_ioas {
            self.ledger
                .alloc_attempt(AllocKind::Auto, DeviceKind::Vfio, 0, 0, e);
        }
        if e != 0 {
            self.record(s);
            return None;
        }
        let new = cmd.pt_id;
        s = s.out("pt_id", new.into());
        // Replacing an auto domain as its only device destroys it (device.c).
        if let Some((old, true)) = self.vfio_attached {
            if old != new {
                self.ledger.hwpt_freed(old);
                s = s.out("freed_auto_hwpt_id", old.into());
            }
        }
        let is_auto = to_ioas && self.ledger.hwpt(new).is_none();
        if is_auto {
            self.ledger.hwpt_created(
                new,
                "auto_domain",
                AllocKind::Auto,
                DeviceKind::Vfio,
                0,
                pt_id,
            );
            s = s.note("kernel allocated an auto domain");
        }
        self.vfio_attached = Some((new, to_ioas));
        self.record(s);
        Some(new)
    }

    fn vfio_flow(&mut self, vfio: File, path: &Path) {
        let pci = path
            .file_name()
            .and_then(|n| {
                std::fs::read_link(Path::new("/sys/class/vfio-dev").join(n).join("device")).ok()
            })
            .and_then(|t| t.file_name().map(|s| s.to_string_lossy().into_owned()));
        self.report.vfio = Some(VfioInfo {
            path: path.display().to_string(),
            pci_device: pci,
            dev_id: None,
        });
        self.record(
            step("open_vfio_cdev", StepGroup::Setup, "open", None)
                .params(json!({ "path": path.display().to_string(), "flags": "O_RDWR|O_CLOEXEC" }))
                .errno(0)
                .expect(0),
        );
        let vfd = vfio.as_raw_fd();
        let Some(ioas) = self.ioas_alloc("ioas_alloc", "vfio") else {
            self.warn("IOMMU_IOAS_ALLOC failed; VFIO steps skipped".into());
            self.close("close_vfio_cdev", vfio);
            return;
        };

        // Bind.
        let mut bind = VfioDeviceBindIommufd {
            argsz: size32::<VfioDeviceBindIommufd>(),
            flags: 0,
            iommufd: self.iommufd,
            out_devid: 0,
        };
        let e = ioctl(vfd, VFIO_DEVICE_BIND_IOMMUFD, &mut bind);
        let mut s = step(
            "vfio_bind_iommufd",
            StepGroup::Setup,
            "VFIO_DEVICE_BIND_IOMMUFD",
            Some(VFIO_DEVICE_BIND_IOMMUFD),
        )
        .params(json!({ "iommufd": self.iommufd, "flags": 0 }))
        .errno(e)
        .expect(0);
        if e != 0 {
            let hint = match e {
                libc::EPERM => {
                    "no interrupt remapping: enable it (QEMU: -device intel-iommu,intremap=on \
                     with -machine kernel-irqchip=split) or set the iommufd \
                     module parameter allow_unsafe_interrupts=1 \
                     (iommufd.allow_unsafe_interrupts=1 on the kernel command line)"
                }
                libc::EBUSY => {
                    "the device's VFIO group is in use (legacy VFIO container/group open)"
                }
                _ => "see dmesg",
            };
            s = s.note(hint);
            self.record(s);
            self.warn(format!(
                "VFIO_DEVICE_BIND_IOMMUFD failed ({}): {hint}; VFIO steps skipped",
                errno_name(e)
            ));
            self.destroy("destroy_ioas", StepGroup::Setup, ioas, Obj::Ioas, 0);
            self.close("close_vfio_cdev", vfio);
            return;
        }
        let dev_id = bind.out_devid;
        self.record(s.out("out_devid", dev_id.into()));
        if let Some(v) = self.report.vfio.as_mut() {
            v.dev_id = Some(dev_id);
        }

        let base = self.base();
        // Areas that exist before any domain: every new domain is filled with them.
        if self.on(StepGroup::Map) {
            let va = self.pages(PREMAP_PAGES);
            self.map(
                "map_before_domains",
                StepGroup::Map,
                ioas,
                va,
                PREMAP_PAGES * PAGE_4K,
                base + IOVA_PREMAP,
                0,
            );
        }

        // Paging hwpts.
        let req = |name, group, flags, data, expected, note: Option<&str>| HwptReq {
            name,
            group,
            device: DeviceKind::Vfio,
            dev_id,
            pt_id: ioas,
            flags,
            data,
            expected,
            note: note.map(str::to_string),
        };
        let h0 = self.hwpt_alloc(req(
            "hwpt_alloc_paging",
            StepGroup::Setup,
            0,
            HwptData::None,
            Some(0),
            Some("every 6.12 IOMMU driver allocates a flags-0 paging domain"),
        ));
        let mut np = None;
        if self.on(StepGroup::Alloc) {
            np = self.hwpt_alloc(req(
                "hwpt_alloc_paging_nest_parent",
                StepGroup::Alloc,
                IOMMU_HWPT_ALLOC_NEST_PARENT,
                HwptData::None,
                None,
                Some(
                    "6.12: VT-d needs scalable mode with nesting, else EOPNOTSUPP from the \
                     driver; SMMUv3/AMD: EOPNOTSUPP",
                ),
            ));
            self.hwpt_alloc(req(
                "hwpt_alloc_paging_dirty_tracking",
                StepGroup::Alloc,
                IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
                HwptData::None,
                None,
                Some(
                    "needs IOMMU_CAP_DIRTY_TRACKING (VT-d: scalable mode + SSADS), else \
                     EOPNOTSUPP from the iommufd core without calling the driver",
                ),
            ));
            self.hwpt_alloc(req(
                "hwpt_alloc_paging_nest_parent_dirty_tracking",
                StepGroup::Alloc,
                IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
                HwptData::None,
                None,
                None,
            ));
        }
        if self.on(StepGroup::Negative) {
            self.hwpt_alloc(req(
                "hwpt_alloc_paging_invalid_flag",
                StepGroup::Negative,
                INVALID_FLAG,
                HwptData::None,
                Some(EOPNOTSUPP),
                Some("iommufd_hwpt_paging_alloc: flags & ~valid_flags"),
            ));
            self.hwpt_alloc(req(
                "hwpt_alloc_paging_data_len_without_type",
                StepGroup::Negative,
                0,
                HwptData::LenWithoutType(4),
                Some(EINVAL),
                Some("iommufd_hwpt_alloc: data_type NONE with data_len"),
            ));
        }

        // Nested hwpts.
        if let Some(parent) = np.or(h0) {
            let parent_note = if np.is_some() {
                "parent: the NEST_PARENT hwpt"
            } else {
                "parent: the flags-0 hwpt (no NEST_PARENT hwpt could be allocated)"
            };
            let nreq = |name, group, flags, data, expected, note: String| HwptReq {
                name,
                group,
                device: DeviceKind::Vfio,
                dev_id,
                pt_id: parent,
                flags,
                data,
                expected,
                note: Some(note),
            };
            let vtd = IommuHwptVtdS1 {
                flags: 0,
                pgtbl_addr: 0,
                addr_width: 48,
                reserved: 0,
            };
            if self.on(StepGroup::Alloc) {
                self.hwpt_alloc(nreq(
                    "hwpt_alloc_nested_vtd_s1",
                    StepGroup::Alloc,
                    0,
                    HwptData::VtdS1(vtd),
                    if np.is_some() { None } else { Some(EINVAL) },
                    format!(
                        "{parent_note}; non-parent: EINVAL from the core; VT-d with nesting: \
                         succeeds (no page table is allocated)"
                    ),
                ));
            }
            if self.on(StepGroup::Negative) {
                self.hwpt_alloc(nreq(
                    "hwpt_alloc_nested_wrong_data_type",
                    StepGroup::Negative,
                    0,
                    HwptData::Selftest(IommuHwptSelftest {
                        iotlb: IOMMU_TEST_IOTLB_DEFAULT,
                    }),
                    Some(if np.is_some() { EOPNOTSUPP } else { EINVAL }),
                    format!(
                        "{parent_note}; IOMMU_HWPT_DATA_SELFTEST on a real device: the driver \
                         rejects the type (EOPNOTSUPP), a non-parent is EINVAL first"
                    ),
                ));
                self.hwpt_alloc(nreq(
                    "hwpt_alloc_nested_invalid_flag",
                    StepGroup::Negative,
                    INVALID_FLAG,
                    HwptData::VtdS1(vtd),
                    Some(EOPNOTSUPP),
                    format!("{parent_note}; iommufd_hwpt_nested_alloc checks flags first"),
                ));
                self.hwpt_alloc(nreq(
                    "hwpt_alloc_nested_type_without_len",
                    StepGroup::Negative,
                    0,
                    HwptData::TypeWithoutLen(IOMMU_HWPT_DATA_VTD_S1),
                    Some(EINVAL),
                    format!("{parent_note}; iommufd_hwpt_alloc: data_type without data_len"),
                ));
            }
        }

        // Auto domain.
        self.vfio_attach("attach_ioas_auto_domain", vfd, ioas, true);

        if self.on(StepGroup::Map) {
            self.patterns_4k("", ioas);
        }
        if self.on(StepGroup::Huge) {
            self.patterns_huge("", ioas);
        }

        // Explicit hwpt: replaces (and so frees) the auto domain.
        if let Some(h0) = h0 {
            self.vfio_attach("attach_hwpt", vfd, h0, false);
        }

        if self.on(StepGroup::Negative) {
            self.busy_destroys("", ioas, np);
        }

        if self.on(StepGroup::Loop) && self.opts.loop_iterations > 0 {
            self.map_loop("", ioas);
        }

        self.sample_cgroup("peak");
        self.teardown_maps_start("", ioas);
        // Detach.
        let mut det = VfioDeviceDetachIommufdPt {
            argsz: size32::<VfioDeviceDetachIommufdPt>(),
            flags: 0,
        };
        let e = ioctl(vfd, VFIO_DEVICE_DETACH_IOMMUFD_PT, &mut det);
        self.record(
            step(
                "detach",
                StepGroup::Setup,
                "VFIO_DEVICE_DETACH_IOMMUFD_PT",
                Some(VFIO_DEVICE_DETACH_IOMMUFD_PT),
            )
            .params(json!({ "attached_hwpt": self.vfio_attached.map(|(h, _)| h) }))
            .errno(e)
            .expect(0),
        );
        if e == 0 {
            if let Some((old, true)) = self.vfio_attached {
                self.ledger.hwpt_freed(old);
            }
            self.vfio_attached = None;
        }
        self.destroy_owned_hwpts("");
        self.teardown_maps_end("", ioas);
        self.destroy("destroy_ioas", StepGroup::Setup, ioas, Obj::Ioas, 0);
        self.close("close_vfio_cdev", vfio);
    }

    /// IOMMU_DESTROY of objects that are still in use: EBUSY, whatever the driver.
    fn busy_destroys(&mut self, prefix: &str, ioas: u32, nest_parent: Option<u32>) {
        if let Some((h, false)) = self.vfio_attached.filter(|_| prefix.is_empty()) {
            self.destroy(
                "destroy_attached_hwpt_busy",
                StepGroup::Negative,
                h,
                Obj::Hwpt,
                EBUSY,
            );
        }
        if let Some(np) = nest_parent {
            let has_child = self.owned_hwpts.iter().any(|&h| {
                self.ledger
                    .hwpt(h)
                    .is_some_and(|t| t.kind == AllocKind::Nested && t.parent_id == np)
            });
            if has_child {
                self.destroy(
                    &format!("{prefix}destroy_nest_parent_with_child_busy"),
                    StepGroup::Negative,
                    np,
                    Obj::Hwpt,
                    EBUSY,
                );
            }
        }
        if self.ledger.domains_in(ioas) > 0 {
            self.destroy(
                &format!("{prefix}destroy_ioas_in_use_busy"),
                StepGroup::Negative,
                ioas,
                Obj::Ioas,
                EBUSY,
            );
        }
    }

    /// Unmap-all with the domains still there, then one more area that the domains will
    /// still hold when they are destroyed (exercising `iopt_table_remove_domain`).
    fn teardown_maps_start(&mut self, prefix: &str, ioas: u32) {
        self.unmap_all(&format!("{prefix}unmap_all"), ioas);
        if self.on(StepGroup::Map) {
            let va = self.pages(LEFTOVER_PAGES);
            let base = self.base();
            self.map(
                &format!("{prefix}map_left_for_destroy"),
                StepGroup::Map,
                ioas,
                va,
                LEFTOVER_PAGES * PAGE_4K,
                base + IOVA_LEFTOVER,
                0,
            );
        }
    }

    /// After the domains are gone: unmap what is left in the IOAS (no page tables touched).
    fn teardown_maps_end(&mut self, prefix: &str, ioas: u32) {
        if self.ledger.ioas_live_bytes(ioas) > 0 {
            self.unmap_all(&format!("{prefix}unmap_all_without_domains"), ioas);
        }
    }

    // ---------------------------------------------------------------- map patterns

    fn patterns_4k(&mut self, p: &str, ioas: u32) {
        let b = self.base();
        let g = StepGroup::Map;
        let neg = self.on(StepGroup::Negative);
        let n = |s: &str| format!("{p}{s}");

        // Single page: map, whole unmap.
        let va = self.pages(1);
        self.map(
            &n("map_4k_single"),
            g,
            ioas,
            va,
            PAGE_4K,
            b + IOVA_SINGLE,
            0,
        );
        self.unmap(
            &n("unmap_4k_single"),
            g,
            ioas,
            b + IOVA_SINGLE,
            PAGE_4K,
            0,
            Some(PAGE_4K),
        );

        // A run of 4K pages in one area.
        let run = RUN_PAGES * PAGE_4K;
        let va = self.pages(RUN_PAGES);
        self.map(&n("map_4k_run"), g, ioas, va, run, b + IOVA_RUN, 0);
        if neg {
            let va = self.pages(1);
            self.map(
                &n("map_overlapping_eexist"),
                StepGroup::Negative,
                ioas,
                va,
                PAGE_4K,
                b + IOVA_RUN + PAGE_4K,
                EEXIST,
            );
            self.unmap(
                &n("unmap_inside_area_enoent"),
                StepGroup::Negative,
                ioas,
                b + IOVA_RUN + PAGE_4K,
                PAGE_4K,
                ENOENT,
                None,
            );
        }

        // Adjacent areas: unmapping some of them is a partial unmap of the page table.
        let area = ADJ_PAGES * PAGE_4K;
        for i in 0..ADJ_AREAS {
            let va = self.pages(ADJ_PAGES);
            self.map(
                &n(&format!("map_adjacent_area_{i}")),
                g,
                ioas,
                va,
                area,
                b + IOVA_ADJ + i * area,
                0,
            );
        }
        self.unmap(
            &n("unmap_adjacent_areas_2_to_5"),
            g,
            ioas,
            b + IOVA_ADJ + 2 * area,
            4 * area,
            0,
            Some(4 * area),
        );
        if neg {
            // Starts inside area 0: the first area found straddles the start, so nothing
            // is unmapped (io_pagetable.c iopt_unmap_iova_range).
            self.unmap(
                &n("unmap_straddling_area_enoent"),
                StepGroup::Negative,
                ioas,
                b + IOVA_ADJ + PAGE_4K,
                area,
                ENOENT,
                None,
            );
        }
        self.unmap(
            &n("unmap_across_areas_with_hole"),
            g,
            ioas,
            b + IOVA_ADJ,
            ADJ_AREAS * area,
            0,
            Some(4 * area),
        );

        // 512 4K pages filling one 2M-aligned leaf table, unmapped whole.
        let full = FULL_PAGES * PAGE_4K;
        let va = self.pages(FULL_PAGES);
        self.map(&n("map_4k_full_table"), g, ioas, va, full, b + IOVA_FULL, 0);
        self.unmap(
            &n("unmap_4k_full_table"),
            g,
            ioas,
            b + IOVA_FULL,
            full,
            0,
            Some(full),
        );

        self.unmap(&n("unmap_4k_run"), g, ioas, b + IOVA_RUN, run, 0, Some(run));
        if neg {
            self.unmap(
                &n("unmap_nothing_enoent"),
                StepGroup::Negative,
                ioas,
                b + IOVA_RUN,
                run,
                ENOENT,
                None,
            );
        }
    }

    fn patterns_huge(&mut self, p: &str, ioas: u32) {
        let Some(hva) = self.huge_buffer() else {
            return;
        };
        let b = self.base() + IOVA_HUGE;
        let g = StepGroup::Huge;
        let n = |s: &str| format!("{p}{s}");
        // Two 2M-aligned, physically contiguous 2M areas (superpage candidates).
        self.map(&n("map_huge_2m_0"), g, ioas, Some(hva), HUGE_2M, b, 0);
        self.map(
            &n("map_huge_2m_1"),
            g,
            ioas,
            Some(hva + HUGE_2M),
            HUGE_2M,
            b + HUGE_2M,
            0,
        );
        self.unmap(
            &n("unmap_huge_2m_1"),
            g,
            ioas,
            b + HUGE_2M,
            HUGE_2M,
            0,
            Some(HUGE_2M),
        );
        // 4K pages where the second 2M page was.
        let va = self.pages(16);
        self.map(
            &n("map_4k_in_former_huge"),
            g,
            ioas,
            va,
            16 * PAGE_4K,
            b + HUGE_2M,
            0,
        );
        self.unmap(
            &n("unmap_across_huge_and_4k"),
            g,
            ioas,
            b,
            2 * HUGE_2M,
            0,
            Some(HUGE_2M + 16 * PAGE_4K),
        );
    }

    fn map_loop(&mut self, p: &str, ioas: u32) {
        let iterations = self.opts.loop_iterations;
        let len = u64::from(self.opts.loop_pages) * PAGE_4K;
        let iova = self.base() + IOVA_LOOP;
        let name = format!("{p}map_unmap_loop");
        let Some(va) = self.buf.as_ref().map(|b| b.addr(0)) else {
            self.record(
                step(
                    &name,
                    StepGroup::Loop,
                    "IOMMU_IOAS_MAP+IOMMU_IOAS_UNMAP",
                    None,
                )
                .note("skipped: no user memory"),
            );
            return;
        };
        let fd = self.iommufd;
        let (mut map_err, mut unmap_err, mut first) = (0u64, 0u64, None);
        let start = Instant::now();
        for _ in 0..iterations {
            let mut m = IommuIoasMap {
                size: size32::<IommuIoasMap>(),
                flags: IOMMU_IOAS_MAP_FIXED_IOVA | RW,
                ioas_id: ioas,
                user_va: va,
                length: len,
                iova,
                ..Default::default()
            };
            let e = ioctl(fd, IOMMU_IOAS_MAP, &mut m);
            if e != 0 {
                map_err += 1;
                first.get_or_insert(e);
            }
            let mut u = IommuIoasUnmap {
                size: size32::<IommuIoasUnmap>(),
                ioas_id: ioas,
                iova,
                length: len,
            };
            let e = ioctl(fd, IOMMU_IOAS_UNMAP, &mut u);
            if e != 0 || u.length != len {
                unmap_err += 1;
                first.get_or_insert(if e != 0 { e } else { libc::EIO });
            }
        }
        let elapsed = start.elapsed();
        let ops = 2 * iterations;
        let secs = elapsed.as_secs_f64();
        let domains = self.ledger.domains_in(ioas);
        self.ledger.map_n(ioas, len, iterations - map_err, map_err);
        self.ledger
            .unmap_n(ioas, len, iterations - unmap_err, unmap_err);
        let res = LoopResult {
            ioas_id: ioas,
            iterations,
            bytes_per_map: len,
            iova,
            ops,
            map_errors: map_err,
            unmap_errors: unmap_err,
            first_errno: first,
            elapsed_ns: elapsed.as_nanos() as u64,
            ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            domains_reached: domains,
        };
        let e = first.unwrap_or(0);
        self.record(
            step(
                &name,
                StepGroup::Loop,
                "IOMMU_IOAS_MAP+IOMMU_IOAS_UNMAP",
                None,
            )
            .params(json!({
                "ioas_id": ioas,
                "iterations": iterations,
                "length": len,
                "iova": iova,
                "user_va": va,
            }))
            .errno(e)
            .expect(0)
            .out("ops", ops)
            .out("map_errors", map_err)
            .out("unmap_errors", unmap_err)
            .out("elapsed_ns", res.elapsed_ns)
            .out("domains_reached", domains.into()),
        );
        log::info!(
            "exercise loop: {iterations} x map+unmap of {len} bytes into {domains} domain(s) in \
             {:.3} s = {:.0} ops/s",
            secs,
            res.ops_per_sec
        );
        self.report.loop_result = Some(res);
    }

    // ---------------------------------------------------------------- selftest mock

    fn mock_flow(&mut self) {
        let g = StepGroup::Mock;
        let Some(ioas) = self.ioas_alloc("mock_ioas_alloc", "mock") else {
            self.report.mock = Availability::no(libc::EIO, "IOMMU_IOAS_ALLOC failed");
            return;
        };
        self.owned_hwpts.clear();
        let base = self.base();
        if self.on(StepGroup::Map) {
            let va = self.pages(PREMAP_PAGES);
            self.map(
                "mock_map_before_domains",
                StepGroup::Map,
                ioas,
                va,
                PREMAP_PAGES * PAGE_4K,
                base + IOVA_PREMAP,
                0,
            );
        }

        let mut cmd = IommuTestCmd::mock_domain(ioas);
        let e = ioctl(self.iommufd, IOMMU_TEST_CMD, &mut cmd);
        let mut s = step("mock_domain", g, "IOMMU_TEST_CMD", Some(IOMMU_TEST_CMD))
            .params(json!({ "op": "IOMMU_TEST_OP_MOCK_DOMAIN", "op_nr": IOMMU_TEST_OP_MOCK_DOMAIN, "id": ioas }))
            .errno(e);
        if e != 0 {
            let reason = if e == ENOTTY {
                "IOMMU_TEST_CMD not available: the kernel lacks CONFIG_IOMMUFD_TEST".to_string()
            } else {
                format!("IOMMU_TEST_OP_MOCK_DOMAIN failed: {}", errno_name(e))
            };
            s = s.note(reason.clone());
            self.record(s);
            if e != ENOTTY {
                self.ledger
                    .alloc_attempt(AllocKind::Auto, DeviceKind::Mock, 0, 0, e);
            }
            self.report.mock = Availability::no(e, reason);
            self.teardown_maps_end("mock_", ioas);
            self.destroy("mock_destroy_ioas", StepGroup::Setup, ioas, Obj::Ioas, 0);
            return;
        }
        self.report.mock = Availability::yes();
        let (stdev, auto, idev) = (cmd.out_stdev_id(), cmd.out_hwpt_id(), cmd.out_idev_id());
        self.ledger
            .alloc_attempt(AllocKind::Auto, DeviceKind::Mock, 0, 0, 0);
        self.ledger.hwpt_created(
            auto,
            "mock_auto_domain",
            AllocKind::Auto,
            DeviceKind::Mock,
            0,
            ioas,
        );
        self.record(
            s.expect(0)
                .out("out_stdev_id", stdev.into())
                .out("out_hwpt_id", auto.into())
                .out("out_idev_id", idev.into())
                .note(
                    "mock device bound and attached to the IOAS: kernel allocated an auto domain",
                ),
        );

        let req = |name, group, pt_id, flags, data, expected: i32, note: &str| HwptReq {
            name,
            group,
            device: DeviceKind::Mock,
            dev_id: idev,
            pt_id,
            flags,
            data,
            expected: Some(expected),
            note: Some(note.to_string()),
        };
        let mh0 = self.hwpt_alloc(req(
            "mock_hwpt_alloc_paging",
            g,
            ioas,
            0,
            HwptData::None,
            0,
            "mock_domain_alloc_user",
        ));
        let mnp = self.hwpt_alloc(req(
            "mock_hwpt_alloc_paging_nest_parent",
            g,
            ioas,
            IOMMU_HWPT_ALLOC_NEST_PARENT,
            HwptData::None,
            0,
            "mock accepts NEST_PARENT",
        ));
        self.hwpt_alloc(req(
            "mock_hwpt_alloc_paging_dirty_tracking",
            g,
            ioas,
            IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
            HwptData::None,
            0,
            "mock device without MOCK_FLAGS_DEVICE_NO_DIRTY has IOMMU_CAP_DIRTY_TRACKING",
        ));
        self.hwpt_alloc(req(
            "mock_hwpt_alloc_paging_nest_parent_dirty_tracking",
            g,
            ioas,
            IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
            HwptData::None,
            0,
            "",
        ));
        if let Some(np) = mnp {
            self.hwpt_alloc(req(
                "mock_hwpt_alloc_nested_selftest",
                g,
                np,
                0,
                HwptData::Selftest(IommuHwptSelftest {
                    iotlb: IOMMU_TEST_IOTLB_DEFAULT,
                }),
                0,
                "IOMMU_HWPT_DATA_SELFTEST on the NEST_PARENT mock hwpt",
            ));
            if self.on(StepGroup::Negative) {
                self.hwpt_alloc(req(
                    "mock_hwpt_alloc_nested_wrong_data_type",
                    StepGroup::Negative,
                    np,
                    0,
                    HwptData::VtdS1(IommuHwptVtdS1 {
                        addr_width: 48,
                        ..Default::default()
                    }),
                    EOPNOTSUPP,
                    "mock_domain_alloc_user: data type is not SELFTEST",
                ));
            }
        }
        if let (Some(h0), true) = (mh0, self.on(StepGroup::Negative)) {
            self.hwpt_alloc(req(
                "mock_hwpt_alloc_nested_on_non_parent",
                StepGroup::Negative,
                h0,
                0,
                HwptData::Selftest(IommuHwptSelftest {
                    iotlb: IOMMU_TEST_IOTLB_DEFAULT,
                }),
                EINVAL,
                "iommufd_hwpt_nested_alloc: parent is not NEST_PARENT",
            ));
        }

        if self.on(StepGroup::Map) {
            self.patterns_4k("mock_", ioas);
        }
        if self.on(StepGroup::Huge) {
            self.patterns_huge("mock_", ioas);
        }
        if self.on(StepGroup::Negative) {
            self.busy_destroys("mock_", ioas, mnp);
        }
        if self.on(StepGroup::Loop)
            && self.opts.loop_iterations > 0
            && self.opts.vfio == VfioSelect::Disabled
        {
            self.map_loop("mock_", ioas);
        }

        self.teardown_maps_start("mock_", ioas);
        self.destroy_owned_hwpts("mock_");
        self.destroy(
            "mock_destroy_device",
            StepGroup::Setup,
            stdev,
            Obj::MockDevice { auto_hwpt: auto },
            0,
        );
        self.teardown_maps_end("mock_", ioas);
        self.destroy("mock_destroy_ioas", StepGroup::Setup, ioas, Obj::Ioas, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iova_layout_fits_window_and_is_disjoint() {
        let ranges = [
            (IOVA_SINGLE, PAGE_4K),
            (IOVA_RUN, RUN_PAGES * PAGE_4K),
            (IOVA_ADJ, ADJ_AREAS * ADJ_PAGES * PAGE_4K),
            (IOVA_FULL, FULL_PAGES * PAGE_4K),
            (IOVA_HUGE, 2 * HUGE_2M),
            (IOVA_LOOP, 4096 * PAGE_4K),
            (IOVA_PREMAP, PREMAP_PAGES * PAGE_4K),
            (IOVA_LEFTOVER, LEFTOVER_PAGES * PAGE_4K),
        ];
        for (i, &(a, al)) in ranges.iter().enumerate() {
            assert!(a + al <= super::super::IOVA_WINDOW);
            for &(b, bl) in &ranges[i + 1..] {
                assert!(a + al <= b || b + bl <= a, "{a:#x} overlaps {b:#x}");
            }
        }
        assert_eq!(IOVA_FULL % HUGE_2M, 0);
        assert_eq!(IOVA_HUGE % HUGE_2M, 0);
        // The default window lies inside the selftest mock aperture.
        let base = super::super::DEFAULT_IOVA_BASE;
        assert!(base >= MOCK_APERTURE_START);
        assert!(base + super::super::IOVA_WINDOW - 1 <= MOCK_APERTURE_LAST);
    }

    #[test]
    fn step_builder_and_record() {
        let opts = ExerciseOptions::default();
        let mut r = Runner {
            opts: &opts,
            iommufd: -1,
            report: Report::default(),
            ledger: Ledger::default(),
            buf: None,
            buf_cursor: 0,
            huge: None,
            huge_tried: false,
            owned_hwpts: Vec::new(),
            vfio_attached: None,
        };
        r.record(
            step(
                "a",
                StepGroup::Negative,
                "IOMMU_DESTROY",
                Some(IOMMU_DESTROY),
            )
            .errno(EBUSY)
            .expect(EBUSY),
        );
        r.record(
            step("b", StepGroup::Setup, "close", None)
                .errno(0)
                .expect(EINVAL),
        );
        // With fd -1 every ioctl fails with EBADF, and the failure is recorded, not fatal.
        assert_eq!(r.ioas_alloc("c", "x"), None);
        assert!(!r.map("d", StepGroup::Map, 1, None, PAGE_4K, 0, 0));
        let s = &r.report.steps;
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].as_expected, Some(true));
        assert_eq!(s[0].errno_name.as_deref(), Some("EBUSY"));
        assert_eq!(s[1].as_expected, Some(false));
        assert_eq!(s[2].errno, Some(libc::EBADF));
        assert_eq!(s[2].seq, 2);
        assert_eq!(s[3].errno, None);
    }

    #[test]
    fn pages_wrap_around() {
        let opts = ExerciseOptions::default();
        let mut r = Runner {
            opts: &opts,
            iommufd: -1,
            report: Report::default(),
            ledger: Ledger::default(),
            buf: Some(Mapping::anon_4k(8 * 4096).unwrap()),
            buf_cursor: 0,
            huge: None,
            huge_tried: false,
            owned_hwpts: Vec::new(),
            vfio_attached: None,
        };
        let a = r.pages(4).unwrap();
        let b = r.pages(4).unwrap();
        assert_eq!(b, a + 4 * 4096);
        assert_eq!(r.pages(2).unwrap(), a);
        assert_eq!(r.pages(9), None);
    }

    fn fake_opts(vfio: VfioSelect) -> ExerciseOptions {
        ExerciseOptions {
            iommu_path: "/dev/null".into(),
            vfio,
            hugepages: false,
            loop_iterations: 100,
            ..Default::default()
        }
    }

    #[test]
    fn full_run_against_fake_kernel() {
        let st = super::super::fake::install(true);
        let opts = fake_opts(VfioSelect::Path("/dev/null".into()));
        let report = super::super::run(&opts).unwrap();
        super::super::fake::uninstall();
        let st = st.borrow();
        if let Some(p) = std::env::var_os("EXERCISE_FAKE_REPORT") {
            std::fs::write(p, report.to_json_pretty()).unwrap();
        }

        let mut names = std::collections::HashSet::new();
        for s in &report.steps {
            assert!(names.insert(s.name.clone()), "duplicate step {}", s.name);
            if s.expected_errno.is_some() {
                assert_eq!(s.as_expected, Some(true), "{s:#?}");
            }
        }
        let errno = |n: &str| report.step(n).unwrap_or_else(|| panic!("{n}")).errno;
        assert_eq!(errno("hwpt_alloc_paging"), Some(0));
        assert_eq!(errno("hwpt_alloc_paging_nest_parent"), Some(EOPNOTSUPP));
        assert_eq!(errno("hwpt_alloc_paging_dirty_tracking"), Some(EOPNOTSUPP));
        assert_eq!(errno("hwpt_alloc_nested_vtd_s1"), Some(EINVAL));
        assert_eq!(errno("attach_ioas_auto_domain"), Some(0));
        assert_eq!(errno("mock_hwpt_alloc_nested_selftest"), Some(0));
        assert_eq!(errno("destroy_attached_hwpt_busy"), Some(EBUSY));
        assert_eq!(
            errno("mock_destroy_nest_parent_with_child_busy"),
            Some(EBUSY)
        );
        assert_eq!(report.mock.available, Some(true));
        assert_eq!(report.hugepages.available, Some(false));
        assert!(report.step("map_huge_2m_0").is_none());

        let t = &report.totals;
        let a = &t.expected_domain_allocations;
        assert_eq!(a["vfio_paging"], 1);
        assert_eq!(a["vfio_auto"], 1);
        assert_eq!(a.get("vfio_nested"), None);
        assert_eq!(a["mock_auto"], 1);
        assert_eq!(a["mock_paging"], 4);
        assert_eq!(a["mock_nested"], 1);
        assert_eq!(a["total"], 8);
        assert_eq!(&t.expected_domain_frees, a);
        assert_eq!(st.domains_allocated, 8);
        assert_eq!(st.domains_freed, 8);
        assert_eq!(st.live_objects(), 0);

        for h in &t.hwpts {
            let (m, u) = st.domain_bytes.get(&h.id).copied().unwrap_or((0, 0));
            assert_eq!((h.bytes_mapped, h.bytes_unmapped), (m, u), "{h:#?}");
            assert_eq!(h.bytes_mapped, h.bytes_unmapped);
            assert!(h.freed);
        }
        // The auto domain was filled with the area mapped before any domain existed.
        let auto = t.hwpts.iter().find(|h| h.label == "auto_domain").unwrap();
        assert_eq!(auto.bytes_filled_at_alloc, PREMAP_PAGES * PAGE_4K);
        for i in &t.ioas {
            assert_eq!(i.live_bytes, 0);
            assert!(i.destroyed);
            assert_eq!(i.bytes_mapped, i.bytes_unmapped);
        }
        let l = report.loop_result.as_ref().unwrap();
        assert_eq!((l.ops, l.map_errors, l.unmap_errors), (200, 0, 0));
        assert_eq!(l.domains_reached, 1);
        let paging = t
            .allocations
            .iter()
            .find(|x| x.kind == AllocKind::Paging && x.device == DeviceKind::Vfio && x.flags == 1)
            .unwrap();
        assert_eq!((paging.attempts, paging.succeeded), (1, 0));
        // The report serializes.
        assert!(report
            .to_json_pretty()
            .contains("\"expected_domain_allocations\""));
    }

    #[test]
    fn fake_run_with_hugepages_requested() {
        let _st = super::super::fake::install(true);
        let opts = ExerciseOptions {
            hugepages: true,
            ..fake_opts(VfioSelect::Path("/dev/null".into()))
        };
        let report = super::super::run(&opts).unwrap();
        super::super::fake::uninstall();
        let mmap = report.step("mmap_hugetlb_2m").unwrap();
        match report.hugepages.available {
            Some(true) => {
                assert!(mmap.ok());
                assert_eq!(
                    report.step("unmap_across_huge_and_4k").unwrap().outputs["unmapped"],
                    HUGE_2M + 16 * PAGE_4K
                );
                assert!(report.step("mock_map_huge_2m_1").unwrap().ok());
            }
            _ => {
                // No hugetlb pages reserved on this host: recorded, huge steps skipped.
                assert_ne!(mmap.errno, Some(0));
                assert!(report.step("map_huge_2m_0").is_none());
            }
        }
        for s in &report.steps {
            if s.expected_errno.is_some() {
                assert_eq!(s.as_expected, Some(true), "{s:#?}");
            }
        }
        assert!(report.totals.ioas.iter().all(|i| i.live_bytes == 0));
    }

    /// The huge patterns with a stand-in buffer (this host may have no hugetlb pages).
    #[test]
    fn huge_patterns_against_fake_kernel() {
        let st = super::super::fake::install(true);
        let opts = fake_opts(VfioSelect::Disabled);
        let mut r = Runner {
            opts: &opts,
            iommufd: -1,
            report: Report::default(),
            ledger: Ledger::default(),
            buf: Some(Mapping::anon_4k(64 * 4096).unwrap()),
            buf_cursor: 0,
            huge: Some(Mapping::anon_4k(2 * HUGE_2M as usize).unwrap()),
            huge_tried: true,
            owned_hwpts: Vec::new(),
            vfio_attached: None,
        };
        let ioas = r.ioas_alloc("ioas", "x").unwrap();
        r.patterns_huge("", ioas);
        super::super::fake::uninstall();
        let names: Vec<&str> = r.report.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ioas",
                "map_huge_2m_0",
                "map_huge_2m_1",
                "unmap_huge_2m_1",
                "map_4k_in_former_huge",
                "unmap_across_huge_and_4k"
            ]
        );
        assert!(r.report.steps.iter().all(|s| s.as_expected == Some(true)));
        assert_eq!(r.ledger.ioas_live_bytes(ioas), 0);
        assert_eq!(st.borrow().live_objects(), 1);
    }

    #[test]
    fn fake_kernel_without_selftest_mock() {
        let _st = super::super::fake::install(false);
        let report = super::super::run(&fake_opts(VfioSelect::Path("/dev/null".into()))).unwrap();
        assert_eq!(report.mock.available, Some(false));
        assert_eq!(report.mock.errno, Some(ENOTTY));
        assert_eq!(report.totals.expected_domain_allocations["total"], 2);
        let err = super::super::run(&fake_opts(VfioSelect::Disabled)).unwrap_err();
        super::super::fake::uninstall();
        assert!(
            matches!(err, ExerciseError::NothingToExercise { .. }),
            "{err}"
        );
    }

    #[test]
    fn mock_only_run_loops_on_the_mock_ioas() {
        let _st = super::super::fake::install(true);
        let report = super::super::run(&fake_opts(VfioSelect::Disabled)).unwrap();
        super::super::fake::uninstall();
        assert!(report.vfio.is_none());
        assert_eq!(report.loop_result.as_ref().unwrap().domains_reached, 5);
        assert!(report.step("mock_map_unmap_loop").unwrap().ok());
    }
}
