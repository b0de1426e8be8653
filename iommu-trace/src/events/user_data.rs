//! The driver-specific uAPI struct user space passed with `IOMMU_HWPT_ALLOC`
//! (`struct iommu_user_data`), decoded into named fields.
//!
//! Layouts are uAPI (include/uapi/linux/iommufd.h, and iommufd_test.h for the selftest):
//! stable by contract, so fixed offsets are right here, unlike kernel-internal structs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::uapi::{
    IOMMU_HWPT_DATA_AMD_GUEST as DATA_AMD_GUEST, IOMMU_HWPT_DATA_ARM_SMMUV3 as DATA_ARM_SMMUV3,
    IOMMU_HWPT_DATA_NONE as DATA_NONE, IOMMU_HWPT_DATA_SELFTEST as DATA_SELFTEST,
    IOMMU_HWPT_DATA_VTD_S1 as DATA_VTD_S1,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UserData {
    /// `struct iommu_hwpt_vtd_s1`.
    VtdS1 {
        flags: u64,
        pgtbl_addr: u64,
        addr_width: u32,
    },
    /// `struct iommu_hwpt_arm_smmuv3`.
    ArmSmmuv3 { ste: [u64; 2] },
    /// `struct iommu_hwpt_amd_guest`.
    AmdGuest { dte: [u64; 4] },
    /// `struct iommu_hwpt_selftest`.
    Selftest { iotlb: u32 },
    /// A type this build does not know, or a length too short for its struct: the bytes.
    Raw { data_type: u32, hex: String },
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

impl UserData {
    /// Decodes `bytes` (what was copied from user memory) as `data_type`.
    /// Returns `None` when there is nothing to decode.
    pub fn decode(data_type: u32, bytes: &[u8]) -> Option<UserData> {
        if data_type == DATA_NONE && bytes.is_empty() {
            return None;
        }
        let known = match data_type {
            DATA_VTD_S1 => (|| {
                Some(UserData::VtdS1 {
                    flags: u64_at(bytes, 0)?,
                    pgtbl_addr: u64_at(bytes, 8)?,
                    addr_width: u32_at(bytes, 16)?,
                })
            })(),
            DATA_ARM_SMMUV3 => (|| {
                Some(UserData::ArmSmmuv3 {
                    ste: [u64_at(bytes, 0)?, u64_at(bytes, 8)?],
                })
            })(),
            DATA_AMD_GUEST => (|| {
                Some(UserData::AmdGuest {
                    dte: [
                        u64_at(bytes, 0)?,
                        u64_at(bytes, 8)?,
                        u64_at(bytes, 16)?,
                        u64_at(bytes, 24)?,
                    ],
                })
            })(),
            DATA_SELFTEST => u32_at(bytes, 0).map(|iotlb| UserData::Selftest { iotlb }),
            _ => None,
        };
        Some(known.unwrap_or_else(|| UserData::Raw {
            data_type,
            hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_vtd_s1() {
        let mut b = [0u8; 24];
        b[0] = 1; // IOMMU_VTD_S1_SRE
        b[8..16].copy_from_slice(&0x1234_5000u64.to_le_bytes());
        b[16..20].copy_from_slice(&48u32.to_le_bytes());
        assert_eq!(
            UserData::decode(DATA_VTD_S1, &b),
            Some(UserData::VtdS1 {
                flags: 1,
                pgtbl_addr: 0x1234_5000,
                addr_width: 48
            })
        );
    }

    #[test]
    fn short_or_unknown_data_stays_raw() {
        assert_eq!(
            UserData::decode(DATA_VTD_S1, &[1, 2]),
            Some(UserData::Raw {
                data_type: 1,
                hex: "0102".into()
            })
        );
        assert_eq!(
            UserData::decode(DATA_SELFTEST, &7u32.to_le_bytes()),
            Some(UserData::Selftest { iotlb: 7 })
        );
        assert_eq!(UserData::decode(DATA_NONE, &[]), None);
    }
}
