//! Which kernel behaviour the models follow (legacy or generic-pt VT-d, io-pgtable-arm 6.12
//! or 7.x rules), detected from the session's features, and which model family a domain
//! gets: the replay's knobs, with their command-line names.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// Which kernel a VT-d model follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VtdBehaviour {
    /// `drivers/iommu/intel/iommu.c` as in 6.12 (to 6.18): chunked unmap, legacy walkers.
    #[default]
    Legacy,
    /// Generic page table (6.19): `pt_iommu_vtdss` with the core still chunking unmaps.
    GenericPt,
    /// Generic page table, 7.0+: the core hands the whole `iommu_unmap` range to the driver.
    GenericPtWholeRange,
}

/// Which io-pgtable-arm rules an SMMUv3 model follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SmmuBehaviour {
    /// 6.12: stage-2 concatenation whenever the level-0 pgd has ≤16 entries; partial unmap
    /// of a block splits it (`arm_lpae_split_blk_unmap`, GFP_ATOMIC table).
    #[default]
    V6_12,
    /// 7.x: concatenation only when `arm_lpae_concat_mandatory()`; partial block unmap is
    /// refused (WARN, 0 bytes).
    V7,
}

/// The kernel behaviour the replay's models follow. Default: Debian 6.12 for both drivers.
///
/// A caller picks it from what it knows about the captured kernel: e.g. the capture
/// header's attached symbols (a `pt_iommu_vtdss_*` symbol means the generic page table; a
/// 7.x kernel means whole-range unmap and the 7.x io-pgtable-arm rules). Both enums parse
/// from strings (`legacy`, `generic-pt`, `generic-pt-whole-range`; `6.12`, `7`) for a CLI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
pub struct KernelBehaviour {
    /// How the traced kernel's VT-d driver builds page tables.
    pub vtd: VtdBehaviour,
    /// How the traced kernel's io-pgtable-arm builds them.
    pub smmu: SmmuBehaviour,
}

impl KernelBehaviour {
    /// The page-table behaviour of the traced kernel, from the features its session
    /// detected (BTF and kallsyms, never the version number).
    pub fn detected(features: &crate::session::KernelFeatures) -> KernelBehaviour {
        KernelBehaviour {
            // Whole-range unmap exists only in the generic page table's API (7.0+), and VT-d
            // moved onto it before (6.19): it implies the generic-pt VT-d even on a kernel
            // without VT-d, whose generic-pt domains (the selftest mock) follow it too.
            vtd: match (
                features.vtd_generic_pt,
                features.generic_pt_whole_range_unmap,
            ) {
                (_, true) => VtdBehaviour::GenericPtWholeRange,
                (true, false) => VtdBehaviour::GenericPt,
                _ => VtdBehaviour::Legacy,
            },
            smmu: if features.io_pgtable_arm_concat_mandatory {
                SmmuBehaviour::V7
            } else {
                SmmuBehaviour::V6_12
            },
        }
    }
}

impl FromStr for VtdBehaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "legacy" | "6.12" | "6.18" => Ok(Self::Legacy),
            "generic-pt" | "6.19" => Ok(Self::GenericPt),
            "generic-pt-whole-range" | "7" | "7.0" => Ok(Self::GenericPtWholeRange),
            _ => Err(format!(
                "unknown VT-d behaviour {s:?}: expected legacy, generic-pt or generic-pt-whole-range"
            )),
        }
    }
}

impl FromStr for SmmuBehaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "6.12" | "v6.12" | "legacy" => Ok(Self::V6_12),
            "7" | "7.x" | "v7" => Ok(Self::V7),
            _ => Err(format!(
                "unknown SMMUv3 behaviour {s:?}: expected 6.12 or 7"
            )),
        }
    }
}

impl fmt::Display for VtdBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Legacy => "legacy (6.12-6.18)",
            Self::GenericPt => "generic page table (6.19)",
            Self::GenericPtWholeRange => "generic page table, whole-range unmap (7.0+)",
        })
    }
}

impl fmt::Display for SmmuBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V6_12 => "io-pgtable-arm 6.12",
            Self::V7 => "io-pgtable-arm 7.x",
        })
    }
}

/// Which model family to use for a domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelSelect {
    /// From the domain's driver name.
    #[default]
    Auto,
    Vtd,
    Smmuv3,
}

impl FromStr for ModelSelect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "vtd" | "intel" => Ok(Self::Vtd),
            "smmuv3" | "arm-smmu-v3" => Ok(Self::Smmuv3),
            _ => Err(format!("unknown model {s:?}: expected auto, vtd or smmuv3")),
        }
    }
}
