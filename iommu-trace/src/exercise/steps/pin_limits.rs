//! Pinned-memory limits, as an unprivileged user on the selftest mock (a run of its own,
//! `exercise --pin-limits-as UID`): the RLIMIT_MEMLOCK refusals iommufd makes and where
//! they come from (docs/kernel-facts.md §8).
//!
//! As root, a second iommufd is switched to per-mm accounting (IOMMU_OPTION_RLIMIT_MODE
//! needs CAP_SYS_RESOURCE and a context without objects). Then RLIMIT_MEMLOCK is set to
//! `memlock` bytes and the process becomes `uid` (no capability left, CAP_IPC_LOCK
//! included, so its mappings are charged). With `limit` = memlock in pages:
//! * per-user (the default): IOAS_MAP of limit/2 pages into an IOAS with a domain: OK; of
//!   `limit` more pages: ENOMEM (the uid's `locked_vm` would pass the limit);
//! * IOAS_MAP of `limit` pages into an IOAS without a domain: OK, nothing pinned (lazy);
//!   HWPT_ALLOC on that IOAS for the mock device: ENOMEM (filling the new domain pins);
//! * 7.x: IOAS_CHANGE_PROCESS refused, then MAP_FILE and the charge moved to a child and
//!   back (`change_process.rs`);
//! * per-mm, on the second iommufd: limit/2 pages OK (charged to this mm's `locked_vm`,
//!   `VmLck`), `limit` more: ENOMEM.

use std::os::fd::AsRawFd;

use libc::ENOMEM;
use serde_json::json;

use super::{open_dev, step, HwptData, HwptTarget, Runner, StepExt};
use crate::exercise::report::{Availability, StepGroup};
use crate::exercise::sys::{ioctl, PAGE_4K};
use crate::exercise::uapi::*;
use crate::exercise::PinLimits;

impl Runner<'_> {
    pub(super) fn pin_limits_flow(&mut self, limits: PinLimits) {
        let g = StepGroup::Mock;
        // The buffer and the mappings are in 4 KiB pages; the kernel charges PAGE_SIZE ones.
        if self.report.page_size != PAGE_4K {
            self.report.warnings.push(format!(
                "pin limits: the kernel's page size is {} bytes, this flow counts 4 KiB pages",
                self.report.page_size
            ));
            return;
        }
        let limit_pages = limits.memlock / PAGE_4K;
        let half = limit_pages / 2;
        let mm_file = match open_dev(&self.opts.iommu_path, true) {
            Ok(f) => f,
            Err(e) => {
                self.report.warnings.push(format!("second iommufd: {e}"));
                return;
            }
        };
        let mut opt = IommuOption {
            size: size32::<IommuOption>(),
            option_id: IOMMU_OPTION_RLIMIT_MODE,
            op: IOMMU_OPTION_OP_SET,
            val64: 1,
            ..Default::default()
        };
        let e = ioctl(mm_file.as_raw_fd(), IOMMU_OPTION, &mut opt);
        self.record(
            step("rlimit_mode_per_mm", g, "IOMMU_OPTION", Some(IOMMU_OPTION))
                .params(json!({ "option": "rlimit_mode", "op": "set", "val64": 1 }))
                .errno(e)
                .expect(0)
                .note("on a second iommufd, before it holds an object"),
        );
        let e = drop_privileges(limits);
        self.record(
            step("drop_privileges", StepGroup::Setup, "setuid", None)
                .params(json!({ "uid": limits.uid, "rlimit_memlock": limits.memlock }))
                .errno(e)
                .expect(0),
        );
        if e != 0 {
            return;
        }

        let Some(ioas) = self.ioas_alloc("limits_ioas_alloc", "limits") else {
            return;
        };
        let Ok((_, _, idev)) = self.mock_domain("limits_mock_domain", ioas) else {
            self.report.mock = Availability::no(libc::ENOTTY, "no selftest mock");
            return;
        };
        self.report.mock = Availability::yes();
        let base = self.base();
        let va = self.pages(half);
        self.map("limits_map_half", g, ioas, va, half * PAGE_4K, base, 0);
        let va = self.pages(limit_pages);
        let at = base + (1 << 20);
        self.map(
            "limits_map_over_user",
            g,
            ioas,
            va,
            limit_pages * PAGE_4K,
            at,
            ENOMEM,
        );

        let Some(lazy) = self.ioas_alloc("limits_lazy_ioas_alloc", "limits_lazy") else {
            return;
        };
        let va = self.pages(limit_pages);
        self.map(
            "limits_map_no_domain",
            g,
            lazy,
            va,
            limit_pages * PAGE_4K,
            base,
            0,
        );
        self.sample_memory("user_charged");
        self.hwpt_alloc(HwptTarget::mock(idev, lazy).must(
            "limits_hwpt_alloc_over_user",
            g,
            0,
            HwptData::None,
            ENOMEM,
            "filling the new domain pins the IOAS's pages: over RLIMIT_MEMLOCK",
        ));
        let has_change_process = self.change_process_refused("limits_change_process_user_memory");
        self.unmap_all("limits_unmap_all", ioas);
        self.unmap_all("limits_lazy_unmap_all", lazy);
        if has_change_process {
            self.change_process_flow(ioas, half, limit_pages);
        }

        // Per-mm accounting, on the second iommufd.
        let user_fd = self.iommufd;
        self.iommufd = mm_file.as_raw_fd();
        if let Some(mm_ioas) = self.ioas_alloc("limits_mm_ioas_alloc", "limits_mm") {
            if self.mock_domain("limits_mm_mock_domain", mm_ioas).is_ok() {
                let va = self.pages(half);
                self.map(
                    "limits_mm_map_half",
                    g,
                    mm_ioas,
                    va,
                    half * PAGE_4K,
                    base,
                    0,
                );
                self.sample_memory("mm_charged");
                let va = self.pages(limit_pages);
                let len = limit_pages * PAGE_4K;
                self.map("limits_mm_map_over", g, mm_ioas, va, len, at, ENOMEM);
                self.unmap_all("limits_mm_unmap_all", mm_ioas);
                // Pins left for the exit: the fd is released after exit_mm(), so the
                // kernel's per-mm uncharge fails with EINVAL (the creator's mm is gone) and
                // unpins all the same (docs/kernel-facts.md §8.4).
                let va = self.pages(half);
                let kept = self.map(
                    "limits_mm_map_kept_at_exit",
                    g,
                    mm_ioas,
                    va,
                    half * PAGE_4K,
                    base,
                    0,
                );
                if kept {
                    self.iommufd = user_fd;
                    self.record(
                        step(
                            "limits_exit_with_mm_iommufd_open",
                            StepGroup::Setup,
                            "exit",
                            None,
                        )
                        .note("the per-mm iommufd stays open, with pins, until the process exits"),
                    );
                    // Closed by the exit, not here.
                    std::mem::forget(mm_file);
                    return;
                }
            }
        }
        self.iommufd = user_fd;
        self.close("limits_close_mm_iommufd", mm_file);
    }
}

/// RLIMIT_MEMLOCK to `memlock` bytes (soft and hard), then `uid` (gid the same): a non-root
/// uid without keep-caps has no capability left, which `CapEff` must confirm (an inherited
/// securebit or ambient capability would keep CAP_IPC_LOCK, and nothing would be charged).
/// Returns the errno.
fn drop_privileges(limits: PinLimits) -> i32 {
    let e = set_ids(limits);
    if e != 0 {
        return e;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status.lines().find_map(|l| l.strip_prefix("CapEff:"));
    match cap_eff.map(|v| u64::from_str_radix(v.trim(), 16)) {
        Some(Ok(0)) => 0,
        _ => libc::EPERM,
    }
}

fn set_ids(limits: PinLimits) -> i32 {
    let rl = libc::rlimit {
        rlim_cur: limits.memlock,
        rlim_max: limits.memlock,
    };
    // SAFETY: plain syscalls on this process with valid arguments.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) != 0
            || libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(limits.uid) != 0
            || libc::setuid(limits.uid) != 0
        {
            return std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
        }
    }
    0
}
