//! The VFIO flow: `/dev/iommu` + a VFIO device cdev. Bind, paging hwpts (flags 0,
//! NEST_PARENT, DIRTY_TRACKING), nested VTD_S1, the auto domain, attach/replace, detach.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use libc::EINVAL;
use serde_json::json;

use super::{step, HwptData, HwptTarget, Obj, Runner, StepExt, IOVA_PREMAP, PREMAP_PAGES};
use crate::exercise::report::{AllocKind, DeviceKind, StepGroup, VfioInfo};
use crate::exercise::sys::{errno_name, ioctl, PAGE_4K};
use crate::exercise::uapi::*;

impl Runner<'_> {
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

    pub(super) fn vfio_flow(&mut self, vfio: File, path: &Path) {
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
        self.hw_info(dev_id);
        let no_nested_op = amd_without_nested_op(path);

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
        let on_ioas = HwptTarget {
            device: DeviceKind::Vfio,
            dev_id,
            pt_id: ioas,
        };
        let req = |name, group, flags, data, expected, note: Option<&str>| {
            on_ioas.req(name, group, flags, data, expected, note.map(str::to_string))
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
            self.vfio_paging_alloc_failures(dev_id, ioas);
        }

        // Nested hwpts.
        if let Some(parent) = np.or(h0) {
            let parent_note = if np.is_some() {
                "parent: the NEST_PARENT hwpt"
            } else {
                "parent: the flags-0 hwpt (no NEST_PARENT hwpt could be allocated)"
            };
            let on_parent = HwptTarget {
                device: DeviceKind::Vfio,
                dev_id,
                pt_id: parent,
            };
            let nreq = |name, group, flags, data, expected, note: String| {
                on_parent.req(name, group, flags, data, expected, Some(note))
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
                    if np.is_some() {
                        None
                    } else {
                        Some(non_parent_nested_errno(no_nested_op.as_deref()))
                    },
                    format!(
                        "{parent_note}; non-parent: EINVAL from the core, EOPNOTSUPP first \
                         where the driver has no nested op ({}); VT-d with nesting: succeeds \
                         (no page table is allocated)",
                        no_nested_op.as_deref().unwrap_or("not this one")
                    ),
                ));
            }
            if self.on(StepGroup::Negative) {
                let non_parent = non_parent_nested_errno(no_nested_op.as_deref());
                self.vfio_nested_alloc_failures(dev_id, parent, np, parent_note, vtd, non_parent);
            }
            if self.on(StepGroup::Alloc) {
                self.vfio_viommu_alloc(dev_id, parent);
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
        if self.on(StepGroup::Map) {
            self.patterns_beyond_the_table("", ioas);
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
        self.sample_memory("peak");
        self.hold();
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
}

/// What HWPT_ALLOC of a nested hwpt on a non-parent answers: EINVAL from the core
/// (`!parent->nest_parent`), unless the driver lacks the op the core checks first, with
/// EOPNOTSUPP (6.12 hw_pagetable.c:230 `domain_alloc_user`, 7.3 :248 `domain_alloc_nested`).
fn non_parent_nested_errno(no_nested_op: Option<&str>) -> i32 {
    match no_nested_op {
        Some(_) => libc::EOPNOTSUPP,
        None => EINVAL,
    }
}

/// Among the drivers this runs on, only AMD on 7.x lacks that op (its nested domains come
/// through a vIOMMU, amd/nested.c); 6.12's AMD has `amd_iommu_domain_alloc_user`. Told at
/// run time: the device's IOMMU is an AMD one (`ivhdN` in sysfs) and kallsyms has no
/// `amd_iommu_domain_alloc_user`. Returns why, for the step's note; `None` when the device
/// is not behind an AMD IOMMU (or sysfs does not say).
fn amd_without_nested_op(vfio_cdev: &Path) -> Option<String> {
    let name = vfio_cdev.file_name()?;
    let iommu = std::fs::read_link(
        Path::new("/sys/class/vfio-dev")
            .join(name)
            .join("device/iommu"),
    )
    .ok()?;
    let iommu = iommu.file_name()?.to_string_lossy().into_owned();
    if !iommu.starts_with("ivhd") {
        return None;
    }
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").ok()?;
    let has_alloc_user = kallsyms
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("amd_iommu_domain_alloc_user"));
    (!has_alloc_user).then(|| format!("AMD IOMMU {iommu} without amd_iommu_domain_alloc_user"))
}

impl Runner<'_> {
    /// IOMMU_GET_HW_INFO of the bound device: the driver's info type (none, intel_vtd,
    /// arm_smmuv3, amd; 7.3's AMD reports one only with CONFIG_AMD_IOMMU_IOMMUFD), recorded.
    fn hw_info(&mut self, dev_id: u32) {
        let mut cmd = IommuHwInfo {
            size: size32::<IommuHwInfo>(),
            dev_id,
            ..Default::default()
        };
        let e = ioctl(self.iommufd, IOMMU_GET_HW_INFO, &mut cmd);
        let mut s = step(
            "get_hw_info",
            StepGroup::Setup,
            "IOMMU_GET_HW_INFO",
            Some(IOMMU_GET_HW_INFO),
        )
        .params(json!({ "dev_id": dev_id, "data_len": 0 }))
        .errno(e)
        .expect(0);
        if e == 0 {
            s = s
                .out("out_data_type", cmd.out_data_type.into())
                .out("out_capabilities", cmd.out_capabilities)
                .note(hw_info_type_name(cmd.out_data_type));
        }
        self.record(s);
    }
}
