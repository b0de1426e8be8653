//! Reference models of the kernel's IOMMU page-table allocators.
//!
//! Each model replays `iommu_map` / `iommu_unmap` / domain allocation and free exactly as
//! the kernel path it mirrors, and reports the page-table pages that path allocates and
//! frees, in order. Nothing here needs a kernel: the replay (`crate::replay`) runs these
//! models against a capture and compares, event by event.
//!
//! * [`chunk`]: the IOMMU core, `drivers/iommu/iommu.c` `iommu_pgsize()`, `__iommu_map()`,
//!   `__iommu_unmap()` (and the 7.0+ generic-pt whole-range unmap). docs/kernel-facts.md §4.0.
//! * [`vtd`]: Intel VT-d, `drivers/iommu/intel/iommu.c` (legacy, ≤6.18) and the generic
//!   page table (`drivers/iommu/generic_pt`, 6.19+), whose walker also serves the 7.x
//!   selftest mock's AMDv1 tables. docs/kernel-facts.md §4.1 (the mock: §4.3).
//! * [`lpae`]: Arm SMMUv3 through `drivers/iommu/io-pgtable-arm.c` (LPAE stage 1 and 2).
//!   docs/kernel-facts.md §4.2.
//!
//! Page counts are in 4 KiB pages (the unit of `NR_IOMMU_PAGES` on x86-64 and on Debian's
//! arm64 kernels, which use 4 KiB `PAGE_SIZE`).
//!
//! Which kernel behaviour a model follows is chosen by the caller through
//! [`KernelBehaviour`] (default: Debian 6.12), because the capture alone cannot always tell
//! (the capture header will record which symbols were attached; the CLI maps those to a
//! behaviour). A domain whose configuration cannot be determined from what the capture
//! recorded gets a [`ConfigError`], never a guess.

pub mod chunk;
pub mod lpae;
mod store;
pub mod vtd;

#[cfg(test)]
mod brute;

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

use crate::events::DomainAlloc;
use crate::uapi::IOMMU_HWPT_ALLOC_NEST_PARENT;

pub use lpae::{LpaeConfig, LpaeModel, LpaeRules};
pub use vtd::{VtdConfig, VtdFlavour, VtdModel};

/// Linux errno values the models return (positive, as in events).
pub use crate::uapi::errno;

/// Who chose the gfp flags of a page-table allocation (docs/kernel-facts.md §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gfp {
    /// `GFP_KERNEL` by design: the top-level table allocated with the domain
    /// (`paging_domain_alloc`, `arm_64_lpae_alloc_pgtable_s1/s2`, `pt_iommu_*_init`).
    /// Never charged to a memory cgroup.
    Kernel,
    /// The gfp passed to `iommu_map()`; iommufd passes `GFP_KERNEL_ACCOUNT`
    /// (`iommufd/pages.c` `batch_to_domain`, `batch_iommu_map_small`), so charged.
    Caller,
    /// `GFP_ATOMIC`: `arm_lpae_split_blk_unmap()` (6.12). Never charged.
    Atomic,
}

/// One step of page-table memory change, as the model predicts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageOp {
    Alloc { pages: u64, gfp: Gfp },
    Free { pages: u64 },
}

/// The sequence of page allocations and frees one operation caused, plus running totals.
///
/// Consecutive steps of the same kind (and gfp) are merged, so one `PageLog` entry may
/// stand for many single-page `iommu_alloc_page` calls: the replay compares runs, not the
/// number of helper calls, because the tracer may sum pages into one event.
#[derive(Clone, Debug, Default)]
pub struct PageLog {
    pub ops: Vec<PageOp>,
    /// Pages allocated minus pages freed over the log's life (not reset by `clear`).
    pub live: u64,
    /// Highest `live` seen.
    pub peak: u64,
    pub allocated: u64,
    pub freed: u64,
}

impl PageLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the ops of the previous operation; keep the totals.
    pub fn clear(&mut self) {
        self.ops.clear();
    }

    pub fn alloc(&mut self, pages: u64, gfp: Gfp) {
        if pages == 0 {
            return;
        }
        self.allocated += pages;
        self.live += pages;
        self.peak = self.peak.max(self.live);
        if let Some(PageOp::Alloc { pages: p, gfp: g }) = self.ops.last_mut() {
            if *g == gfp {
                *p += pages;
                return;
            }
        }
        self.ops.push(PageOp::Alloc { pages, gfp });
    }

    pub fn free(&mut self, pages: u64) {
        if pages == 0 {
            return;
        }
        self.freed += pages;
        self.live = self.live.saturating_sub(pages);
        if let Some(PageOp::Free { pages: p }) = self.ops.last_mut() {
            *p += pages;
            return;
        }
        self.ops.push(PageOp::Free { pages });
    }
}

/// The driver side of a domain, as `struct iommu_domain_ops` sees it. The core loops in
/// [`chunk`] drive these, the way `__iommu_map` / `__iommu_unmap` drive the driver.
pub trait DomainOps {
    /// `domain->pgsize_bitmap`.
    fn pgsize_bitmap(&self) -> u64;
    /// `ops->map_pages()`: returns the bytes mapped (even on error) and the error.
    fn map_pages(
        &mut self,
        iova: u64,
        paddr: u64,
        pgsize: u64,
        pgcount: u64,
        log: &mut PageLog,
    ) -> (u64, Result<(), i32>);
    /// `ops->unmap_pages()`: bytes unmapped, 0 stops the core loop. Frees the driver
    /// defers to the IOTLB sync are kept in the driver's gather until [`Self::iotlb_sync`].
    fn unmap_pages(&mut self, iova: u64, pgsize: u64, pgcount: u64, log: &mut PageLog) -> u64;
    /// Whole-range unmap (generic page table, 7.0+): `Some(bytes)` when the driver takes the
    /// whole `iommu_unmap` range in one call, `None` when it wants `iommu_pgsize` chunks.
    fn unmap_range(&mut self, _iova: u64, _size: u64, _log: &mut PageLog) -> Option<u64> {
        None
    }
    /// `ops->iotlb_sync()`: free what the gather holds.
    fn iotlb_sync(&mut self, log: &mut PageLog);
}

/// Which kernel a VT-d model follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct KernelBehaviour {
    pub vtd: VtdBehaviour,
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
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

/// Why a domain's model could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no page-table model for driver {0:?}")]
    NoModel(String),
    #[error("{driver} domain: the capture lacks {what}, so its page-table format is unknown")]
    Missing { driver: String, what: String },
    #[error("{driver} domain: {detail}")]
    Invalid { driver: String, detail: String },
}

/// A model's configuration, decided from a `DomainAlloc` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelConfig {
    Vtd(VtdConfig),
    Lpae(LpaeConfig),
    /// A domain without page-table pages (iommufd selftest mock: an xarray).
    NoTables {
        pgsize_bitmap: u64,
    },
}

fn field(a: &DomainAlloc, name: &str) -> Option<u64> {
    let raw = |n: &str| {
        a.geometry
            .driver_fields
            .iter()
            .find(|(f, _)| f == n)
            .map(|(_, v)| *v)
    };
    match (name, raw(name)) {
        // Generic page table (6.19+): the top level sits in the low PT_TOP_LEVEL_BITS (3)
        // bits of `pt_common.top_of_table` (include/linux/generic_pt/common.h).
        ("top_level", None) => raw("top_of_table").map(|t| t & 0x7),
        // SMMUv3: the probe records enum arm_smmu_domain_stage (ARM_SMMU_DOMAIN_S1 = 0,
        // ARM_SMMU_DOMAIN_S2 = 1, SVA = 2; arm-smmu-v3.h); the model speaks stage numbers.
        ("stage", None) => raw("domain_stage").map(|s| s + 1),
        (_, v) => v,
    }
}

impl ModelConfig {
    /// Decide the model for a domain from its `DomainAlloc` event.
    ///
    /// Driver fields the tracer records (names are the interface with `probe/`):
    /// * `intel`: `agaw` (required; levels = agaw + 2), `gaw` (else from the aperture),
    ///   `iommu_superpage` (0/1/2; else from `pgsize_bitmap`, which `paging_domain_alloc`
    ///   derives from it), `use_first_level` (0/1; default 0: 6.12 iommufd domains are
    ///   always second stage, `intel_iommu_domain_alloc_user`). Generic page table: `levels`
    ///   (or `top_level`, 0-based) may replace `agaw`.
    /// * `arm-smmu-v3`: `stage` (1/2; or `domain_stage`, the driver's enum, S1 = 0; else 2
    ///   when NEST_PARENT was asked, else unknown),
    ///   `ias` (else from `aperture_end`, which `arm_smmu_domain_finalise` sets to
    ///   `(1 << ias) - 1`), `granule` (bytes; else the lowest bit of `pgsize_bitmap`),
    ///   `oas` (needed only for the 7.x stage-2 concatenation rule and the output-range check).
    /// * `mock`: no fields; no page tables.
    pub fn from_alloc(
        a: &DomainAlloc,
        select: ModelSelect,
        behaviour: KernelBehaviour,
    ) -> Result<ModelConfig, ConfigError> {
        let family = match select {
            ModelSelect::Vtd => "intel",
            ModelSelect::Smmuv3 => "arm-smmu-v3",
            ModelSelect::Auto => a.driver.as_str(),
        };
        let missing = |what: &str| ConfigError::Missing {
            driver: a.driver.clone(),
            what: what.to_string(),
        };
        let invalid = |detail: String| ConfigError::Invalid {
            driver: a.driver.clone(),
            detail,
        };
        let g = &a.geometry;
        match family {
            // A nested mock domain (struct mock_iommu_domain_nested) has no page table; the
            // paging-domain fields the probe read from it mean nothing.
            "mock" if a.kind == crate::events::DomainKind::Nested => Ok(ModelConfig::NoTables {
                pgsize_bitmap: g.pgsize_bitmap,
            }),
            // 6.19+: the selftest mock has real page tables in the generic page table's
            // AMDv1 "mock" format (iommufd/selftest.c mock_domain_alloc_pgtable:
            // starting_level 2, so 3 levels; the top level is in top_of_table's low bits).
            "mock" if field(a, "top_of_table").is_some_and(|t| t != 0) => {
                let levels = field(a, "top_level").unwrap_or(0) + 1;
                // Below PT_MAX_TOP_LEVEL (4) every level can hold a leaf, as the model
                // assumes; a level-4 top cannot (fmt/amdv1.h amdv1pt_can_have_leaf).
                if !(2..=4).contains(&levels) {
                    return Err(ConfigError::NoModel(format!(
                        "mock (AMDv1) with top level {}: only top levels 1-3 are modelled",
                        levels - 1
                    )));
                }
                if g.pgsize_bitmap & ((1 << 11) - 1) != 0 || g.pgsize_bitmap == 0 {
                    return Err(invalid(format!(
                        "page sizes {:#x} are not the AMDv1 mock's (2K granule)",
                        g.pgsize_bitmap
                    )));
                }
                let vasz = field(a, "max_vasz_lg2").unwrap_or(11 + 9 * levels);
                Ok(ModelConfig::Vtd(VtdConfig {
                    levels: levels as u8,
                    gaw: vasz as u8,
                    superpage: 0,
                    first_stage: false,
                    flavour: VtdFlavour::GenericPt {
                        whole_range: behaviour.vtd == VtdBehaviour::GenericPtWholeRange,
                    },
                    format: vtd::PtFormat::Amdv1Mock {
                        pgsize_bitmap: g.pgsize_bitmap,
                    },
                }))
            }
            "mock" => Ok(ModelConfig::NoTables {
                pgsize_bitmap: g.pgsize_bitmap,
            }),
            "intel" => {
                let first_stage = field(a, "use_first_level").unwrap_or(0) != 0;
                let flavour = match behaviour.vtd {
                    VtdBehaviour::Legacy => VtdFlavour::Legacy,
                    VtdBehaviour::GenericPt => VtdFlavour::GenericPt { whole_range: false },
                    VtdBehaviour::GenericPtWholeRange => {
                        VtdFlavour::GenericPt { whole_range: true }
                    }
                };
                let levels = match (field(a, "agaw"), field(a, "levels"), field(a, "top_level")) {
                    (_, Some(l), _) if flavour != VtdFlavour::Legacy => l,
                    (_, _, Some(t)) if flavour != VtdFlavour::Legacy => t + 1,
                    (Some(agaw), _, _) => agaw + 2,
                    _ => return Err(missing("the `agaw` driver field (page-table levels)")),
                };
                if !(3..=5).contains(&levels) {
                    return Err(invalid(format!(
                        "{levels} page-table levels is not 3, 4 or 5"
                    )));
                }
                let agaw_width = (30 + 9 * (levels as u32 - 2)).min(64);
                let gaw = match field(a, "gaw") {
                    Some(gaw) => gaw as u32,
                    None if g.aperture_end != 0 => {
                        // paging_domain_alloc: aperture_end = __DOMAIN_MAX_ADDR(gaw), or
                        // __DOMAIN_MAX_ADDR(gaw - 1) for first stage.
                        let bits = 64 - g.aperture_end.leading_zeros();
                        bits + first_stage as u32
                    }
                    None => return Err(missing("the `gaw` driver field and an aperture")),
                };
                if !(13..=agaw_width).contains(&gaw) {
                    return Err(invalid(format!(
                        "gaw {gaw} does not fit {levels} levels ({agaw_width} bits)"
                    )));
                }
                let superpage = match field(a, "iommu_superpage") {
                    Some(s) => s as u8,
                    None if g.pgsize_bitmap & vtd::SZ_1G != 0 => 2,
                    None if g.pgsize_bitmap & vtd::SZ_2M != 0 => 1,
                    None if g.pgsize_bitmap & vtd::SZ_4K != 0 => 0,
                    None => return Err(missing("`iommu_superpage` and a page-size bitmap")),
                };
                if superpage > 2 {
                    return Err(invalid(format!(
                        "iommu_superpage {superpage} is not 0, 1 or 2"
                    )));
                }
                Ok(ModelConfig::Vtd(VtdConfig {
                    levels: levels as u8,
                    gaw: gaw as u8,
                    superpage,
                    first_stage,
                    flavour,
                    format: vtd::PtFormat::Vtdss,
                }))
            }
            "arm-smmu-v3" => {
                let stage = match field(a, "stage") {
                    Some(s @ (1 | 2)) => s as u8,
                    Some(s) => {
                        return Err(invalid(format!(
                            "stage {s} is not 1 or 2 (an SVA domain has no io-pgtable)"
                        )))
                    }
                    None if a.flags & IOMMU_HWPT_ALLOC_NEST_PARENT != 0 => 2,
                    None => return Err(missing("the `stage` driver field")),
                };
                let ias = match field(a, "ias") {
                    Some(i) => i as u32,
                    None if g.aperture_end != 0 => 64 - g.aperture_end.leading_zeros(),
                    None => return Err(missing("the `ias` driver field and an aperture")),
                };
                let granule = match field(a, "granule") {
                    Some(gr) => gr,
                    None if g.pgsize_bitmap != 0 => 1 << g.pgsize_bitmap.trailing_zeros(),
                    None => return Err(missing("the `granule` field and a page-size bitmap")),
                };
                // arm_smmu_domain_finalise(): a stage-2 table's oas is the SMMU's own
                // (smmu->oas); stage 1's differs by version, and only stage 2 needs it.
                let oas = field(a, "oas")
                    .or_else(|| (stage == 2).then(|| field(a, "smmu_oas")).flatten())
                    .map(|o| o as u32);
                let rules = match behaviour.smmu {
                    SmmuBehaviour::V6_12 => LpaeRules::V6_12,
                    SmmuBehaviour::V7 => LpaeRules::V7,
                };
                if rules == LpaeRules::V7 && stage == 2 && oas.is_none() {
                    return Err(missing(
                        "the `oas` driver field (7.x stage-2 concatenation depends on it)",
                    ));
                }
                let cfg = LpaeConfig {
                    granule,
                    ias,
                    oas,
                    stage,
                    rules,
                    pgsize_bitmap: (g.pgsize_bitmap != 0).then_some(g.pgsize_bitmap),
                };
                cfg.validate().map_err(invalid)?;
                Ok(ModelConfig::Lpae(cfg))
            }
            other => Err(ConfigError::NoModel(other.to_string())),
        }
    }

    pub fn build(&self) -> Model {
        match self {
            ModelConfig::Vtd(c) => Model::Vtd(VtdModel::new(c.clone())),
            ModelConfig::Lpae(c) => Model::Lpae(LpaeModel::new(c.clone())),
            ModelConfig::NoTables { pgsize_bitmap } => Model::NoTables(NoTables {
                pgsize_bitmap: *pgsize_bitmap,
            }),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ModelConfig::Vtd(c) => c.describe(),
            ModelConfig::Lpae(c) => c.describe(),
            ModelConfig::NoTables { .. } => "no page tables (iommufd selftest mock)".into(),
        }
    }

    /// Other formats to replay the same map/unmap sequence under (`--what-if`).
    pub fn what_if_variants(&self) -> Vec<ModelConfig> {
        match self {
            ModelConfig::Vtd(c) if c.format != vtd::PtFormat::Vtdss => Vec::new(),
            ModelConfig::Vtd(c) => {
                let mut v = Vec::new();
                for levels in [4u8, 5] {
                    for superpage in [0u8, 1, 2] {
                        v.push(ModelConfig::Vtd(VtdConfig {
                            levels,
                            gaw: if levels == 5 { 57 } else { 48 },
                            superpage,
                            ..c.clone()
                        }));
                    }
                }
                v
            }
            ModelConfig::Lpae(c) => {
                let mut v = Vec::new();
                for stage in [1u8, 2] {
                    for granule in [lpae::SZ_4K, lpae::SZ_16K, lpae::SZ_64K] {
                        let cfg = LpaeConfig {
                            granule,
                            stage,
                            pgsize_bitmap: None,
                            oas: c.oas.or(Some(c.ias)),
                            ..c.clone()
                        };
                        if cfg.validate().is_ok() {
                            v.push(ModelConfig::Lpae(cfg));
                        }
                    }
                }
                v
            }
            ModelConfig::NoTables { .. } => Vec::new(),
        }
    }
}

/// A domain without page tables (mock): maps and unmaps succeed, no pages ever change.
#[derive(Clone, Debug)]
pub struct NoTables {
    pgsize_bitmap: u64,
}

/// Any model, dispatched by enum (no trait objects on the hot path).
#[derive(Clone, Debug)]
pub enum Model {
    Vtd(VtdModel),
    Lpae(LpaeModel),
    NoTables(NoTables),
}

impl Model {
    /// Pages the driver's domain-allocation op allocates (the top-level table).
    pub fn domain_alloc(&mut self, log: &mut PageLog) {
        match self {
            Model::Vtd(m) => m.domain_alloc(log),
            Model::Lpae(m) => m.domain_alloc(log),
            Model::NoTables(_) => {}
        }
    }

    /// `iommu_map(domain, iova, paddr, size)`: bytes mapped, or the errno.
    pub fn map(&mut self, iova: u64, paddr: u64, size: u64, log: &mut PageLog) -> Result<u64, i32> {
        match self {
            Model::Vtd(m) => chunk::iommu_map(m, iova, paddr, size, log),
            Model::Lpae(m) => chunk::iommu_map(m, iova, paddr, size, log),
            Model::NoTables(m) => {
                chunk::check_map_alignment(m.pgsize_bitmap, iova, paddr, size).map(|_| size)
            }
        }
    }

    /// `iommu_unmap(domain, iova, size)`: bytes unmapped.
    pub fn unmap(&mut self, iova: u64, size: u64, log: &mut PageLog) -> u64 {
        match self {
            Model::Vtd(m) => chunk::iommu_unmap(m, iova, size, log),
            Model::Lpae(m) => chunk::iommu_unmap(m, iova, size, log),
            Model::NoTables(_) => size,
        }
    }

    /// `iommu_domain_free`: every table, the top-level one included.
    pub fn domain_free(&mut self, log: &mut PageLog) {
        match self {
            Model::Vtd(m) => m.domain_free(log),
            Model::Lpae(m) => m.domain_free(log),
            Model::NoTables(_) => {}
        }
    }

    /// Page-table pages the model holds now.
    pub fn live_pages(&self) -> u64 {
        match self {
            Model::Vtd(m) => m.live_pages(),
            Model::Lpae(m) => m.live_pages(),
            Model::NoTables(_) => 0,
        }
    }

    /// Set when the kernel path would hit behaviour the model does not reproduce (e.g. a
    /// walker dereferencing a data page as a table); the replay stops verifying the domain.
    pub fn unsupported(&self) -> Option<&str> {
        match self {
            Model::Vtd(m) => m.unsupported(),
            Model::Lpae(m) => m.unsupported(),
            Model::NoTables(_) => None,
        }
    }

    pub fn pgsize_bitmap(&self) -> u64 {
        match self {
            Model::Vtd(m) => m.pgsize_bitmap(),
            Model::Lpae(m) => m.pgsize_bitmap(),
            Model::NoTables(m) => m.pgsize_bitmap,
        }
    }
}
