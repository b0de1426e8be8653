//! The recorded calls: one step per iommufd ioctl (IOAS_ALLOC, HWPT_ALLOC, IOAS_MAP/UNMAP,
//! DESTROY) or close, with the ledger updated from the kernel's answer.

use std::fs::File;
use std::os::fd::IntoRawFd;

use serde_json::json;

use super::{step, HwptData, HwptReq, Obj, Runner, StepExt, RW};
use crate::exercise::report::{hwpt_flag_names, AllocKind, StepGroup};
use crate::exercise::sys::{ioctl, PAGE_4K};
use crate::exercise::uapi::*;

impl Runner<'_> {
    pub(super) fn ioas_alloc(&mut self, name: &str, label: &str) -> Option<u32> {
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

    pub(super) fn hwpt_alloc(&mut self, req: HwptReq<'_>) -> Option<u32> {
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
            fault_id: req.fault_id,
            ..Default::default()
        };
        let e = ioctl(self.iommufd, IOMMU_HWPT_ALLOC, &mut cmd);
        let nested = self.ledger.hwpt(req.pt_id).is_some() || self.viommus.contains(&req.pt_id);
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

    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per field of the ioctl it records"
    )]
    pub(super) fn map(
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

    /// IOAS_COPY of `length` bytes at `src_iova` to `dst_iova` (fixed), within one IOAS:
    /// the copy shares the source's `iopt_pages` (docs/kernel-facts.md §8.1).
    pub(super) fn copy(
        &mut self,
        name: &str,
        ioas: u32,
        src_iova: u64,
        dst_iova: u64,
        length: u64,
    ) -> bool {
        let mut cmd = IommuIoasCopy {
            size: size32::<IommuIoasCopy>(),
            flags: IOMMU_IOAS_MAP_FIXED_IOVA | RW,
            dst_ioas_id: ioas,
            src_ioas_id: ioas,
            length,
            dst_iova,
            src_iova,
        };
        let e = ioctl(self.iommufd, IOMMU_IOAS_COPY, &mut cmd);
        self.ledger.map(ioas, length, e);
        let s = step(
            name,
            StepGroup::Map,
            "IOMMU_IOAS_COPY",
            Some(IOMMU_IOAS_COPY),
        )
        .params(json!({
            "ioas_id": ioas,
            "src_ioas": ioas,
            "src_iova": src_iova,
            "iova": dst_iova,
            "length": length,
        }))
        .errno(e)
        .expect(0);
        self.record(s);
        e == 0
    }

    /// IOAS_MAP_FILE of `length` bytes of a fresh memfd at `iova` (fixed), expected to
    /// answer `expected`. 7.x only: on a kernel without it the ioctl is refused before any
    /// handler (ENOTTY) and the step says so.
    pub(super) fn map_memfd(
        &mut self,
        name: &str,
        ioas: u32,
        length: u64,
        iova: u64,
        expected: i32,
    ) -> bool {
        let call = "IOMMU_IOAS_MAP_FILE";
        let fd = match crate::exercise::sys::memfd(name, length) {
            Ok(fd) => fd,
            Err(e) => {
                self.record(
                    step(name, StepGroup::Map, call, Some(IOMMU_IOAS_MAP_FILE))
                        .note(format!("skipped: memfd_create/ftruncate failed: {e}")),
                );
                return false;
            }
        };
        let mut cmd = IommuIoasMapFile {
            size: size32::<IommuIoasMapFile>(),
            flags: IOMMU_IOAS_MAP_FIXED_IOVA | RW,
            ioas_id: ioas,
            fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
            start: 0,
            length,
            iova,
        };
        let e = ioctl(self.iommufd, IOMMU_IOAS_MAP_FILE, &mut cmd);
        let absent = e == libc::ENOTTY;
        if !absent {
            self.ledger.map(ioas, length, e);
        }
        let mut s = step(name, StepGroup::Map, call, Some(IOMMU_IOAS_MAP_FILE))
            .params(json!({
                "ioas_id": ioas,
                "fd": cmd.fd,
                "start": 0,
                "length": length,
                "iova": iova,
            }))
            .errno(e)
            .expect(if absent { libc::ENOTTY } else { expected });
        if absent {
            s = s.note("this kernel has no IOMMU_IOAS_MAP_FILE (before 6.13)");
        }
        self.record(s);
        // The memfd may close now: the mapping holds its pages (and a file reference).
        drop(fd);
        e == 0
    }

    /// IOAS_UNMAP; `expected_len` is what the kernel must report on success.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per field of the ioctl it records"
    )]
    pub(super) fn unmap(
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

    pub(super) fn unmap_all(&mut self, name: &str, ioas: u32) {
        let live = self.ledger.ioas_live_bytes(ioas);
        self.unmap(name, StepGroup::Setup, ioas, 0, u64::MAX, 0, Some(live));
    }

    pub(super) fn destroy(
        &mut self,
        name: &str,
        group: StepGroup,
        id: u32,
        obj: Obj,
        expected: i32,
    ) -> bool {
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
    pub(super) fn destroy_owned_hwpts(&mut self, prefix: &str) {
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

    pub(super) fn close(&mut self, name: &str, f: File) {
        let fd = f.into_raw_fd();
        let e = crate::exercise::sys::close(fd);
        self.record(
            step(name, StepGroup::Setup, "close", None)
                .params(json!({ "fd": fd }))
                .errno(e)
                .expect(0),
        );
    }
}
