//! The vIOMMU flow on the selftest mock (7.x; 6.12 answers ENOTTY): a vIOMMU on the mock's
//! NEST_PARENT hwpt, a vDEVICE, a vEVENTQ, nested hwpts allocated through the vIOMMU (one
//! with a FAULT queue), a HW queue (and the EBUSY it puts on an IOAS_UNMAP of its pages),
//! destroys in the wrong order (EBUSY) and in the right one; then a second iommufd closed
//! with its objects alive.
//!
//! What 7.3 answers (drivers/iommu/iommufd/{viommu,eventq,hw_pagetable,io_pagetable,
//! selftest}.c; docs/kernel-facts.md §7.3):
//! * VIOMMU_ALLOC on a hwpt without NEST_PARENT: EINVAL; with an unknown type: EOPNOTSUPP;
//!   with driver data at an unmapped address: EFAULT from `mock_viommu_init`, after the
//!   core allocated the object (aborted by `iommufd_fops_ioctl`, main.c:560).
//! * a second VDEVICE_ALLOC for the same device: EEXIST; a second VEVENTQ of one type: EEXIST.
//! * HWPT_ALLOC through the vIOMMU without data: EOPNOTSUPP (`data_len` 0); with
//!   NEST_PARENT: EOPNOTSUPP (flags outside FAULT_ID_VALID | PASID).
//! * IOAS_UNMAP of a HW queue's pages: EBUSY (`area->num_locks`, io_pagetable.c:773).
//! * IOMMU_DESTROY of the vIOMMU while a vDEVICE or nested hwpt holds it, of the parent hwpt
//!   while the vIOMMU holds it: EBUSY. A FAULT or vEVENTQ whose fd is open: EBUSY.

use std::fs::File;
use std::os::fd::FromRawFd;

use libc::{EBUSY, EEXIST, EFAULT, EINVAL, ENOTTY, EOPNOTSUPP};
use serde_json::json;

use super::{step, HwptData, HwptTarget, Obj, Runner, StepExt};
use crate::exercise::report::{Availability, StepGroup};
use crate::exercise::sys::{ioctl, PAGE_4K};
use crate::exercise::uapi::*;

/// IOVA of the HW queue's page in the mock IOAS (below the other patterns' window end).
const IOVA_HW_QUEUE: u64 = 0x03c0_0000;
/// The vDEVICE's virtual id (the selftest's `vdevice_alloc` uses 0x99).
const VIRT_ID: u64 = 0x99;
/// `sizeof(struct iommu_viommu_selftest)` (iommufd_test.h, 7.x).
const VIOMMU_SELFTEST_DATA_LEN: u32 = 24;
/// A user address no process maps (below `vm.mmap_min_addr`): copying from it is EFAULT.
const UNMAPPED_USER_ADDR: u64 = 0x10;

impl Runner<'_> {
    /// One recorded ioctl of the vIOMMU family; returns its errno. `expected` `None`: the
    /// kernel may lack the call (the first vIOMMU allocation).
    #[expect(
        clippy::too_many_arguments,
        reason = "the ioctl, its argument and what to record of it"
    )]
    fn viommu_call<T>(
        &mut self,
        name: &str,
        group: StepGroup,
        (call, request): (&str, u32),
        cmd: &mut T,
        params: serde_json::Value,
        expected: Option<i32>,
        outs: impl FnOnce(&T) -> Vec<(&'static str, u64)>,
    ) -> i32 {
        let e = ioctl(self.iommufd, request, cmd);
        let mut s = step(name, group, call, Some(request))
            .params(params)
            .errno(e)
            .expect_opt(expected);
        if e == 0 {
            for (k, v) in outs(cmd) {
                s = s.out(k, v);
            }
        }
        self.record(s);
        e
    }

    fn destroy_id(&mut self, name: &str, id: u32, expected: i32) -> bool {
        let mut cmd = IommuDestroy {
            size: size32::<IommuDestroy>(),
            id,
        };
        self.viommu_call(
            name,
            StepGroup::Setup,
            ("IOMMU_DESTROY", IOMMU_DESTROY),
            &mut cmd,
            json!({ "id": id }),
            Some(expected),
            |_| vec![],
        ) == 0
    }

    fn viommu_alloc(
        &mut self,
        name: &str,
        idev: u32,
        hwpt: u32,
        ty: u32,
        expected: Option<i32>,
    ) -> (i32, u32) {
        self.viommu_alloc_with_data(name, (idev, hwpt), ty, (0, 0), expected)
    }

    /// VIOMMU_ALLOC with driver data `(data_len, data_uptr)`.
    fn viommu_alloc_with_data(
        &mut self,
        name: &str,
        (idev, hwpt): (u32, u32),
        ty: u32,
        (data_len, data_uptr): (u32, u64),
        expected: Option<i32>,
    ) -> (i32, u32) {
        let mut cmd = IommuViommuAlloc {
            size: size32::<IommuViommuAlloc>(),
            type_: ty,
            dev_id: idev,
            hwpt_id: hwpt,
            data_len,
            data_uptr,
            ..Default::default()
        };
        let e = self.viommu_call(
            name,
            StepGroup::Mock,
            ("IOMMU_VIOMMU_ALLOC", IOMMU_VIOMMU_ALLOC),
            &mut cmd,
            json!({ "dev_id": idev, "hwpt_id": hwpt, "type": ty, "data_len": data_len,
                    "data_uptr": data_uptr }),
            expected,
            |c| vec![("out_viommu_id", c.out_viommu_id.into())],
        );
        (e, cmd.out_viommu_id)
    }

    fn vdevice_alloc(&mut self, name: &str, viommu: u32, idev: u32, expected: i32) -> Option<u32> {
        let mut cmd = IommuVdeviceAlloc {
            size: size32::<IommuVdeviceAlloc>(),
            viommu_id: viommu,
            dev_id: idev,
            virt_id: VIRT_ID,
            ..Default::default()
        };
        let e = self.viommu_call(
            name,
            StepGroup::Mock,
            ("IOMMU_VDEVICE_ALLOC", IOMMU_VDEVICE_ALLOC),
            &mut cmd,
            json!({ "viommu_id": viommu, "dev_id": idev, "virt_id": VIRT_ID }),
            Some(expected),
            |c| vec![("out_vdevice_id", c.out_vdevice_id.into())],
        );
        (e == 0).then_some(cmd.out_vdevice_id)
    }

    /// A vEVENTQ, with its fd (closed when the `File` drops).
    fn veventq_alloc(&mut self, name: &str, viommu: u32, expected: i32) -> Option<(u32, File)> {
        let mut cmd = IommuVeventqAlloc {
            size: size32::<IommuVeventqAlloc>(),
            viommu_id: viommu,
            type_: IOMMU_VEVENTQ_TYPE_SELFTEST,
            veventq_depth: 2,
            ..Default::default()
        };
        let e = self.viommu_call(
            name,
            StepGroup::Mock,
            ("IOMMU_VEVENTQ_ALLOC", IOMMU_VEVENTQ_ALLOC),
            &mut cmd,
            json!({ "viommu_id": viommu, "type": IOMMU_VEVENTQ_TYPE_SELFTEST, "depth": 2 }),
            Some(expected),
            |c| vec![("out_veventq_id", c.out_veventq_id.into())],
        );
        // SAFETY: the kernel just returned this fd to us; the File owns it from here.
        (e == 0).then(|| {
            (cmd.out_veventq_id, unsafe {
                File::from_raw_fd(cmd.out_veventq_fd as i32)
            })
        })
    }

    /// A FAULT queue, with its fd.
    fn fault_alloc(&mut self, name: &str) -> Option<(u32, File)> {
        let mut cmd = IommuFaultAlloc {
            size: size32::<IommuFaultAlloc>(),
            ..Default::default()
        };
        let e = self.viommu_call(
            name,
            StepGroup::Mock,
            ("IOMMU_FAULT_QUEUE_ALLOC", IOMMU_FAULT_QUEUE_ALLOC),
            &mut cmd,
            json!({ "flags": 0 }),
            Some(0),
            |c| vec![("out_fault_id", c.out_fault_id.into())],
        );
        // SAFETY: as for the vEVENTQ.
        (e == 0).then(|| {
            (cmd.out_fault_id, unsafe {
                File::from_raw_fd(cmd.out_fault_fd as i32)
            })
        })
    }

    fn hw_queue_alloc(&mut self, name: &str, viommu: u32, iova: u64, expected: i32) -> Option<u32> {
        let mut cmd = IommuHwQueueAlloc {
            size: size32::<IommuHwQueueAlloc>(),
            viommu_id: viommu,
            type_: IOMMU_HW_QUEUE_TYPE_SELFTEST,
            index: 0,
            nesting_parent_iova: iova,
            length: PAGE_4K,
            ..Default::default()
        };
        let e = self.viommu_call(
            name,
            StepGroup::Mock,
            ("IOMMU_HW_QUEUE_ALLOC", IOMMU_HW_QUEUE_ALLOC),
            &mut cmd,
            json!({ "viommu_id": viommu, "type": IOMMU_HW_QUEUE_TYPE_SELFTEST, "index": 0,
                    "nesting_parent_iova": iova, "length": PAGE_4K }),
            Some(expected),
            |c| vec![("out_hw_queue_id", c.out_hw_queue_id.into())],
        );
        (e == 0).then_some(cmd.out_hw_queue_id)
    }

    /// VIOMMU_ALLOC for the VFIO device, as a guest's SMMUv3 would ask (7.3
    /// viommu.c:17). QEMU's emulated IOMMUs refuse it with EOPNOTSUPP: VT-d has no
    /// `get_viommu_size`, and QEMU's SMMUv3 has neither FWB nor CANWBS
    /// (docs/kernel-facts.md §7.3); 6.12 answers ENOTTY. Real hardware may accept it, so
    /// no answer is expected here: the VM check knows it runs on QEMU.
    pub(super) fn vfio_viommu_alloc(&mut self, dev_id: u32, hwpt: u32) {
        let mut cmd = IommuViommuAlloc {
            size: size32::<IommuViommuAlloc>(),
            type_: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
            dev_id,
            hwpt_id: hwpt,
            ..Default::default()
        };
        let e = self.viommu_call(
            "vfio_viommu_alloc",
            StepGroup::Alloc,
            ("IOMMU_VIOMMU_ALLOC", IOMMU_VIOMMU_ALLOC),
            &mut cmd,
            json!({ "dev_id": dev_id, "hwpt_id": hwpt, "type": IOMMU_VIOMMU_TYPE_ARM_SMMUV3 }),
            None,
            |c| vec![("out_viommu_id", c.out_viommu_id.into())],
        );
        if e == 0 {
            self.destroy_id("vfio_destroy_viommu", cmd.out_viommu_id, 0);
        }
    }

    /// The flow on the mock device `idev`, its IOAS and its NEST_PARENT hwpt `parent`
    /// (`plain`: a paging hwpt without NEST_PARENT).
    pub(super) fn viommu_flow(&mut self, idev: u32, ioas: u32, parent: u32, plain: Option<u32>) {
        let g = StepGroup::Mock;
        let (e, viommu) = self.viommu_alloc(
            "viommu_alloc",
            idev,
            parent,
            IOMMU_VIOMMU_TYPE_SELFTEST,
            None,
        );
        if e != 0 {
            let reason = if e == ENOTTY {
                "IOMMU_VIOMMU_ALLOC not in this kernel (6.13+)".to_string()
            } else {
                format!(
                    "IOMMU_VIOMMU_ALLOC failed: {}",
                    crate::exercise::sys::errno_name(e)
                )
            };
            self.report.viommu = Availability::no(e, reason);
            return;
        }
        self.report.viommu = Availability::yes();
        self.viommus.push(viommu);
        if self.on(StepGroup::Negative) {
            if let Some(plain) = plain {
                self.viommu_alloc(
                    "viommu_alloc_on_non_parent",
                    idev,
                    plain,
                    IOMMU_VIOMMU_TYPE_SELFTEST,
                    Some(EINVAL),
                );
            }
            self.viommu_alloc(
                "viommu_alloc_unknown_type",
                idev,
                parent,
                0xfeed,
                Some(EOPNOTSUPP),
            );
            // Fails in the driver's viommu_init, after the core allocated the object: the
            // core aborts it once the handler has returned (a `_ucmd` object).
            self.viommu_alloc_with_data(
                "viommu_alloc_unreadable_data",
                (idev, parent),
                IOMMU_VIOMMU_TYPE_SELFTEST,
                (VIOMMU_SELFTEST_DATA_LEN, UNMAPPED_USER_ADDR),
                Some(EFAULT),
            );
        }
        let vdev = self.vdevice_alloc("vdevice_alloc", viommu, idev, 0);
        if self.on(StepGroup::Negative) {
            self.vdevice_alloc("vdevice_alloc_again", viommu, idev, EEXIST);
        }
        let veventq = self.veventq_alloc("veventq_alloc", viommu, 0);
        if self.on(StepGroup::Negative) {
            self.veventq_alloc("veventq_alloc_same_type", viommu, EEXIST);
        }

        let on_viommu = HwptTarget::mock(idev, viommu);
        let data = || {
            HwptData::Selftest(IommuHwptSelftest {
                iotlb: IOMMU_TEST_IOTLB_DEFAULT,
            })
        };
        self.hwpt_alloc(on_viommu.must(
            "hwpt_alloc_nested_through_viommu",
            g,
            0,
            data(),
            0,
            "pt_id = vIOMMU: mock_viommu_alloc_domain_nested",
        ));
        if self.on(StepGroup::Negative) {
            self.hwpt_alloc(on_viommu.must(
                "hwpt_alloc_through_viommu_without_data",
                StepGroup::Negative,
                0,
                HwptData::None,
                EOPNOTSUPP,
                "iommufd_viommu_alloc_hwpt_nested: data_len 0",
            ));
            self.hwpt_alloc(on_viommu.must(
                "hwpt_alloc_through_viommu_nest_parent",
                StepGroup::Negative,
                IOMMU_HWPT_ALLOC_NEST_PARENT,
                data(),
                EOPNOTSUPP,
                "iommufd_viommu_alloc_hwpt_nested: flags outside FAULT_ID_VALID | PASID",
            ));
        }
        // An IOPF-capable nested hwpt: its faults go to a FAULT queue.
        let fault = self.fault_alloc("fault_queue_alloc");
        if let Some((fault_id, _)) = &fault {
            let mut req = on_viommu.must(
                "hwpt_alloc_nested_through_viommu_iopf",
                g,
                IOMMU_HWPT_FAULT_ID_VALID,
                data(),
                0,
                "FAULT_ID_VALID with the FAULT queue",
            );
            req.fault_id = *fault_id;
            self.hwpt_alloc(req);
        }

        // A HW queue on one page of the parent's IOAS pins it: unmapping it is EBUSY.
        let va = self.pages(1);
        let queue = if self.map(
            "hw_queue_map_page",
            g,
            ioas,
            va,
            PAGE_4K,
            self.base() + IOVA_HW_QUEUE,
            0,
        ) {
            let q = self.hw_queue_alloc("hw_queue_alloc", viommu, self.base() + IOVA_HW_QUEUE, 0);
            if q.is_some() && self.on(StepGroup::Negative) {
                self.unmap(
                    "hw_queue_unmap_busy",
                    StepGroup::Negative,
                    ioas,
                    self.base() + IOVA_HW_QUEUE,
                    PAGE_4K,
                    EBUSY,
                    None,
                );
            }
            q
        } else {
            None
        };

        // The wrong order first.
        if self.on(StepGroup::Negative) {
            self.destroy_id("destroy_viommu_while_used", viommu, EBUSY);
            self.destroy(
                "destroy_nest_parent_under_viommu",
                StepGroup::Negative,
                parent,
                Obj::Hwpt,
                EBUSY,
            );
            if let Some((id, _)) = &veventq {
                let id = *id;
                self.destroy_id("destroy_veventq_with_open_fd", id, EBUSY);
            }
        }
        // Then the right one.
        if let Some(q) = queue {
            self.destroy_id("destroy_hw_queue", q, 0);
        }
        self.unmap(
            "hw_queue_unmap_page",
            g,
            ioas,
            self.base() + IOVA_HW_QUEUE,
            PAGE_4K,
            0,
            Some(PAGE_4K),
        );
        if let Some(v) = vdev {
            self.destroy_id("destroy_vdevice", v, 0);
        }
        if let Some((id, fd)) = veventq {
            drop(fd);
            self.destroy_id("destroy_veventq", id, 0);
        }
        // The nested hwpts (newest first), then the FAULT queue they used.
        while let Some(&h) = self.owned_hwpts.last() {
            let Some(label) = self
                .ledger
                .hwpt(h)
                .filter(|x| x.parent_id == viommu)
                .map(|x| x.label.clone())
            else {
                break;
            };
            let name = format!("destroy_{}", label.trim_start_matches("hwpt_alloc_"));
            if !self.destroy(&name, StepGroup::Setup, h, Obj::Hwpt, 0) {
                break;
            }
        }
        if let Some((id, fd)) = fault {
            drop(fd);
            self.destroy_id("destroy_fault_queue", id, 0);
        }
        self.destroy_id("destroy_viommu", viommu, 0);
        self.viommus.retain(|&v| v != viommu);
    }

    /// A second iommufd with a mock device, a NEST_PARENT hwpt, a vIOMMU, a vDEVICE and a
    /// nested hwpt, closed with all of them alive: the kernel destroys them on release.
    pub(super) fn close_with_objects_alive(&mut self) {
        let g = StepGroup::Mock;
        let path = self.opts.iommu_path.clone();
        let Ok(second) = super::open_dev(&path, true) else {
            self.warn("could not open a second iommufd".into());
            return;
        };
        let main = std::mem::replace(&mut self.iommufd, std::os::fd::AsRawFd::as_raw_fd(&second));
        self.record(
            step("open_second_iommufd", StepGroup::Setup, "open", None)
                .params(json!({ "path": path.display().to_string() }))
                .errno(0)
                .expect(0),
        );
        // What this context holds, for the ledger: the close destroys all of it.
        let mut hwpts = Vec::new();
        let ioas = self.ioas_alloc("second_ioas_alloc", "second");
        if let Some(ioas) = ioas {
            if let Ok((_, auto, idev)) = self.mock_domain("second_mock_domain", ioas) {
                hwpts.push(auto);
                let target = HwptTarget::mock(idev, ioas);
                let parent = self.hwpt_alloc(target.must(
                    "second_hwpt_alloc_nest_parent",
                    g,
                    IOMMU_HWPT_ALLOC_NEST_PARENT,
                    HwptData::None,
                    0,
                    "left alive for the close",
                ));
                hwpts.extend(parent);
                if let (Some(parent), Some(true)) = (parent, self.report.viommu.available) {
                    let (e, viommu) = self.viommu_alloc(
                        "second_viommu_alloc",
                        idev,
                        parent,
                        IOMMU_VIOMMU_TYPE_SELFTEST,
                        Some(0),
                    );
                    if e == 0 {
                        self.viommus.push(viommu);
                        self.vdevice_alloc("second_vdevice_alloc", viommu, idev, 0);
                        let nested = self.hwpt_alloc(HwptTarget::mock(idev, viommu).must(
                            "second_hwpt_alloc_nested_through_viommu",
                            g,
                            0,
                            HwptData::Selftest(IommuHwptSelftest {
                                iotlb: IOMMU_TEST_IOTLB_DEFAULT,
                            }),
                            0,
                            "left alive for the close",
                        ));
                        hwpts.extend(nested);
                        self.viommus.retain(|&v| v != viommu);
                    }
                }
            }
        }
        // Nothing of this context is destroyed by hand: the close does it.
        self.owned_hwpts.clear();
        self.iommufd = main;
        self.close("close_second_iommufd_with_objects_alive", second);
        for h in hwpts.into_iter().rev() {
            self.ledger.hwpt_freed(h);
        }
        if let Some(ioas) = ioas {
            self.ledger.ioas_destroyed(ioas);
        }
    }
}
