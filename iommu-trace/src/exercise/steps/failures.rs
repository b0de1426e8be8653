//! The calls the kernel must refuse, whatever the IOMMU driver: negative HWPT_ALLOC variants
//! (errno fixed by the iommufd core or the mock driver) and IOMMU_DESTROY of objects in use.

use libc::{EBUSY, EINVAL, EOPNOTSUPP};

use super::{HwptData, HwptTarget, Obj, Runner};
use crate::exercise::report::{AllocKind, DeviceKind, StepGroup};
use crate::exercise::uapi::*;

const INVALID_FLAG: u32 = 1 << 31;

impl Runner<'_> {
    /// Paging HWPT_ALLOC on the VFIO device's IOAS with an unknown flag or a data length
    /// without a data type.
    pub(super) fn vfio_paging_alloc_failures(&mut self, dev_id: u32, ioas: u32) {
        let on_ioas = HwptTarget {
            device: DeviceKind::Vfio,
            dev_id,
            pt_id: ioas,
        };
        let req = |name, group, flags, data, expected, note: Option<&str>| {
            on_ioas.req(name, group, flags, data, expected, note.map(str::to_string))
        };
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

    /// Nested HWPT_ALLOC on the VFIO flow's parent (`np` if there is a NEST_PARENT hwpt, else
    /// the flags-0 hwpt): wrong data type, unknown flag, data type without length.
    pub(super) fn vfio_nested_alloc_failures(
        &mut self,
        dev_id: u32,
        parent: u32,
        np: Option<u32>,
        parent_note: &str,
        vtd: IommuHwptVtdS1,
        non_parent: i32,
    ) {
        let on_parent = HwptTarget {
            device: DeviceKind::Vfio,
            dev_id,
            pt_id: parent,
        };
        let nreq = |name, group, flags, data, expected, note: String| {
            on_parent.req(name, group, flags, data, expected, Some(note))
        };
        self.hwpt_alloc(nreq(
            "hwpt_alloc_nested_wrong_data_type",
            StepGroup::Negative,
            0,
            HwptData::Selftest(IommuHwptSelftest {
                iotlb: IOMMU_TEST_IOTLB_DEFAULT,
            }),
            Some(if np.is_some() { EOPNOTSUPP } else { non_parent }),
            format!(
                "{parent_note}; IOMMU_HWPT_DATA_SELFTEST on a real device: the driver \
                 rejects the type (EOPNOTSUPP), a non-parent is EINVAL first (EOPNOTSUPP \
                 where the driver cannot nest)"
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

    /// Nested HWPT_ALLOC on the mock: VTD_S1 data on the NEST_PARENT mock hwpt `mnp`, and a
    /// nested hwpt on the flags-0 mock hwpt `mh0`.
    pub(super) fn mock_nested_alloc_failures(
        &mut self,
        idev: u32,
        mnp: Option<u32>,
        mh0: Option<u32>,
    ) {
        let req = |name, group, pt_id, flags, data, expected, note| {
            HwptTarget::mock(idev, pt_id).must(name, group, flags, data, expected, note)
        };
        if let Some(np) = mnp {
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
        if let Some(h0) = mh0 {
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
    }

    /// IOMMU_DESTROY of objects that are still in use: EBUSY, whatever the driver.
    pub(super) fn busy_destroys(&mut self, prefix: &str, ioas: u32, nest_parent: Option<u32>) {
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
}
