//! The selftest mock flow (IOMMU_TEST_CMD, `CONFIG_IOMMUFD_TEST` only): a mock device with
//! its auto domain, mock paging hwpts, a nested SELFTEST hwpt; ENOTTY when the kernel lacks it.

use libc::ENOTTY;
use serde_json::json;

use super::{step, HwptData, HwptTarget, Obj, Runner, StepExt, IOVA_PREMAP, PREMAP_PAGES};
use crate::exercise::report::{AllocKind, Availability, DeviceKind, StepGroup};
use crate::exercise::sys::{errno_name, ioctl, PAGE_4K};
use crate::exercise::uapi::*;
use crate::exercise::VfioSelect;

impl Runner<'_> {
    /// IOMMU_TEST_OP_MOCK_DOMAIN on `ioas`: a mock device bound and attached, with its auto
    /// domain. `(stdev_id, auto hwpt id, idev_id)`, or the errno.
    pub(super) fn mock_domain(&mut self, name: &str, ioas: u32) -> Result<(u32, u32, u32), i32> {
        let mut cmd = IommuTestCmd::mock_domain(ioas);
        let e = ioctl(self.iommufd, IOMMU_TEST_CMD, &mut cmd);
        let s = step(name, StepGroup::Mock, "IOMMU_TEST_CMD", Some(IOMMU_TEST_CMD))
            .params(json!({ "op": "IOMMU_TEST_OP_MOCK_DOMAIN", "op_nr": IOMMU_TEST_OP_MOCK_DOMAIN, "id": ioas }))
            .errno(e);
        if e != 0 {
            if e != ENOTTY {
                self.ledger
                    .alloc_attempt(AllocKind::Auto, DeviceKind::Mock, 0, 0, e);
            }
            self.record(s.note("the mock device could not be created"));
            return Err(e);
        }
        let (stdev, auto, idev) = (cmd.out_stdev_id(), cmd.out_hwpt_id(), cmd.out_idev_id());
        self.ledger
            .alloc_attempt(AllocKind::Auto, DeviceKind::Mock, 0, 0, 0);
        self.ledger
            .hwpt_created(auto, name, AllocKind::Auto, DeviceKind::Mock, 0, ioas);
        self.record(
            s.expect(0)
                .out("out_stdev_id", stdev.into())
                .out("out_hwpt_id", auto.into())
                .out("out_idev_id", idev.into())
                .note(
                    "mock device bound and attached to the IOAS: kernel allocated an auto domain",
                ),
        );
        Ok((stdev, auto, idev))
    }

    pub(super) fn mock_flow(&mut self) {
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

        let (stdev, auto, idev) = match self.mock_domain("mock_domain", ioas) {
            Ok(ids) => ids,
            Err(e) => {
                let reason = if e == ENOTTY {
                    "IOMMU_TEST_CMD not available: the kernel lacks CONFIG_IOMMUFD_TEST".to_string()
                } else {
                    format!("IOMMU_TEST_OP_MOCK_DOMAIN failed: {}", errno_name(e))
                };
                self.report.mock = Availability::no(e, reason);
                self.teardown_maps_end("mock_", ioas);
                self.destroy("mock_destroy_ioas", StepGroup::Setup, ioas, Obj::Ioas, 0);
                return;
            }
        };
        self.report.mock = Availability::yes();

        let req = |name, group, pt_id, flags, data, expected, note| {
            HwptTarget::mock(idev, pt_id).must(name, group, flags, data, expected, note)
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
        }
        if self.on(StepGroup::Negative) {
            self.mock_nested_alloc_failures(idev, mnp, mh0);
        }
        if let (Some(np), true) = (mnp, self.on(StepGroup::Alloc)) {
            self.viommu_flow(idev, ioas, np, mh0);
        }

        if self.on(StepGroup::Map) {
            self.patterns_4k("mock_", ioas);
            self.pin_sharing("mock_", ioas);
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
