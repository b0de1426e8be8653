//! IOMMU_IOAS_CHANGE_PROCESS (7.x), in the unprivileged limits run: per-user accounting, so
//! the charge of every mapping really moves (docs/kernel-facts.md §8.2, "IOAS_CHANGE_PROCESS").
//!
//! The call moves the pins of every `iopt_pages` of the iommufd to the caller's mm and
//! user: it charges the caller first (a temporary `iopt_pages` on the stack, checked
//! against the caller's RLIMIT_MEMLOCK), then uncharges the old creator. Every area must
//! be a file's (MAP_FILE): one of user memory (IOAS_MAP) makes it EINVAL. So:
//! * while the IOAS still holds IOAS_MAP memory: EINVAL, nothing moves;
//! * MAP_FILE of half the limit: charged to this process; of the whole limit more: ENOMEM;
//! * a forked child calls it: the child's `VmPin` (read from its /proc while it lives) gains
//!   the pages, this process's loses them;
//! * this process calls it again: the pages come back (from the child's mm, gone by then);
//! * one page more mapped, the child's call is refused (ENOMEM) and nothing moves: the caller
//!   is charged before the old creator is uncharged, and parent and child are one uid, so
//!   for a moment that uid holds the pages twice: more than half the limit cannot move.

use std::os::fd::RawFd;

use libc::{EINVAL, ENOMEM};
use serde_json::json;

use super::{step, Runner, StepExt};
use crate::exercise::report::{Step, StepGroup};
use crate::exercise::sys::{errno_name, in_child, ioctl, PAGE_4K};
use crate::exercise::uapi::*;

const CALL: &str = "IOMMU_IOAS_CHANGE_PROCESS";

impl Runner<'_> {
    /// IOAS_CHANGE_PROCESS while `ioas` holds user memory mapped with IOAS_MAP: EINVAL
    /// (ENOTTY: a kernel without the ioctl, which the step says). Returns whether the
    /// kernel has the ioctl.
    pub(super) fn change_process_refused(&mut self, name: &str) -> bool {
        let e = self.change_process(name, EINVAL, "an area of the iommufd is user memory");
        e != libc::ENOTTY
    }

    /// The moves, on `ioas` (with a domain, nothing mapped): `half` pages charged to this
    /// process by MAP_FILE, handed to a child and taken back; `limit` pages refused.
    pub(super) fn change_process_flow(&mut self, ioas: u32, half: u64, limit: u64) {
        let base = self.base();
        if !self.map_memfd("limits_map_file_half", ioas, half * PAGE_4K, base, 0) {
            return;
        }
        let (over, at) = (limit * PAGE_4K, base + (1 << 20));
        self.map_memfd("limits_map_file_over_user", ioas, over, at, ENOMEM);
        self.sample_memory("change_process_before");
        self.change_process_in_child("limits_change_process_child", 0);
        self.sample_memory("change_process_moved_out");
        self.change_process(
            "limits_change_process_back",
            0,
            "the pages come back from the child's mm",
        );
        self.sample_memory("change_process_moved_back");
        // The moves above fit because `half` is at most half the limit (charged twice at
        // once); one page more cannot move.
        let more = base + (2 << 20);
        if self.map_memfd("limits_map_file_one_more", ioas, PAGE_4K, more, 0) {
            self.change_process_in_child("limits_change_process_child_over_half", ENOMEM);
            self.sample_memory("change_process_refused");
        }
        self.unmap_all("limits_file_unmap_all", ioas);
        self.sample_memory("change_process_unmapped");
    }

    /// One IOAS_CHANGE_PROCESS by this process; returns the errno.
    fn change_process(&mut self, name: &str, expected: i32, why: &str) -> i32 {
        let e = change_process_ioctl(self.iommufd);
        self.record_change_process(
            step(name, StepGroup::Mock, CALL, Some(IOMMU_IOAS_CHANGE_PROCESS)),
            e,
            expected,
            why,
        );
        e
    }

    /// IOAS_CHANGE_PROCESS by a child sharing the iommufd, expected to answer `expected`:
    /// the step's outputs are the child's pid and its `VmPin` after the call, read while it
    /// lives.
    fn change_process_in_child(&mut self, name: &str, expected: i32) {
        let fd = self.iommufd;
        // SAFETY: the exercise runs on one thread; the child makes one ioctl.
        let answer = unsafe {
            in_child(
                || change_process_ioctl(fd),
                |pid| crate::procfs::memory_held(&pid.to_string()),
            )
        };
        let s = step(name, StepGroup::Mock, CALL, Some(IOMMU_IOAS_CHANGE_PROCESS))
            .params(json!({ "caller": "child" }));
        match answer {
            Ok((pid, e, held)) => {
                let mut s = s.out("child_pid", pid as u64);
                if let Some(h) = held {
                    s = s.out("child_pinned_bytes", h.pinned_bytes);
                }
                let why = if expected == 0 {
                    "the pages move to the child's mm"
                } else {
                    "the child would be charged before the parent is uncharged: over the limit"
                };
                self.record_change_process(s, e, expected, why);
            }
            Err(e) => {
                self.record(s.note(format!(
                    "skipped: the child could not run ({})",
                    errno_name(e)
                )));
            }
        }
    }

    fn record_change_process(&mut self, s: Step, e: i32, expected: i32, why: &str) {
        let absent = e == libc::ENOTTY;
        let s = s
            .errno(e)
            .expect(if absent { libc::ENOTTY } else { expected });
        self.record(if absent {
            s.note("this kernel has no IOMMU_IOAS_CHANGE_PROCESS (a 7.x ioctl)")
        } else {
            s.note(why)
        });
    }
}

/// The ioctl itself, by whichever process calls it; the errno.
fn change_process_ioctl(iommufd: RawFd) -> i32 {
    let mut cmd = IommuIoasChangeProcess {
        size: size32::<IommuIoasChangeProcess>(),
        reserved: 0,
    };
    ioctl(iommufd, IOMMU_IOAS_CHANGE_PROCESS, &mut cmd)
}
