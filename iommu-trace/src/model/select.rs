//! A domain's model, decided from its `domain_alloc` event (driver, geometry, driver fields)
//! and the kernel behaviour: [`ModelConfig::from_alloc`] never guesses (a [`ConfigError`]
//! says what the capture lacks), and [`Model`] dispatches to the chosen one.

use super::amd_v1::{AmdV1Config, AmdV1Model, AMD_IOMMU_PGSIZES};
use super::behaviour::{KernelBehaviour, ModelSelect, SmmuBehaviour, VtdBehaviour};
use super::lpae::{self, LpaeConfig, LpaeModel, LpaeRules};
use super::vtd::{self, VtdConfig, VtdFlavour, VtdModel};
use super::{chunk, PageLog};
use crate::events::DomainAlloc;
use crate::uapi::IOMMU_HWPT_ALLOC_NEST_PARENT;

/// Why a domain's model could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no page-table model for driver {0:?}")]
    NoModel(String),
    #[error("{} domain: the capture lacks {what}, so its page-table format is unknown", crate::text::printable(.driver))]
    Missing { driver: String, what: String },
    #[error("{} domain: {}", crate::text::printable(.driver), crate::text::printable(.detail))]
    Invalid { driver: String, detail: String },
}

/// A model's configuration, decided from a `DomainAlloc` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelConfig {
    Vtd(VtdConfig),
    Lpae(LpaeConfig),
    AmdV1(AmdV1Config),
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

/// AMD's tables with the driver's default page sizes: 6.12's io-pgtable v1 and 7.x's AMDv1
/// (3 levels at allocation, growing within 64 bits, whole-range map and unmap).
fn amd_variants() -> Vec<ModelConfig> {
    let whole_range = KernelBehaviour {
        vtd: VtdBehaviour::GenericPtWholeRange,
        ..KernelBehaviour::default()
    };
    vec![
        ModelConfig::AmdV1(AmdV1Config {
            pgsize_bitmap: AMD_IOMMU_PGSIZES,
        }),
        amdv1_config(
            3,
            64,
            whole_range,
            vtd::PtFormat::Amdv1 {
                pgsize_bitmap: AMD_IOMMU_PGSIZES,
            },
        ),
    ]
}

/// A common Intel server's table: VT-d second stage, 4 levels, 48-bit, 4K+2M+1G.
fn vtd_4_level(flavour: VtdFlavour) -> ModelConfig {
    ModelConfig::Vtd(VtdConfig {
        levels: 4,
        gaw: 48,
        superpage: 2,
        first_stage: false,
        flavour,
        format: vtd::PtFormat::Vtdss,
    })
}

/// An AMDv1 table (the AMD driver's or the selftest mock's) on the generic page table's
/// walker: `levels` at allocation, `vasz` the table's `max_vasz_lg2`.
fn amdv1_config(
    levels: u64,
    vasz: u64,
    behaviour: KernelBehaviour,
    format: vtd::PtFormat,
) -> ModelConfig {
    ModelConfig::Vtd(VtdConfig {
        levels: levels as u8,
        gaw: vasz as u8,
        superpage: 0,
        first_stage: false,
        flavour: VtdFlavour::GenericPt {
            whole_range: behaviour.vtd == VtdBehaviour::GenericPtWholeRange,
        },
        format,
    })
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
                let levels = field(a, "top_level").unwrap_or(0).saturating_add(1);
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
                Ok(amdv1_config(
                    levels,
                    vasz,
                    behaviour,
                    vtd::PtFormat::Amdv1Mock {
                        pgsize_bitmap: g.pgsize_bitmap,
                    },
                ))
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
                    (_, _, Some(t)) if flavour != VtdFlavour::Legacy => t.saturating_add(1),
                    (Some(agaw), _, _) => agaw.saturating_add(2),
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
            // 6.19+: the generic page table's AMDv1 (`top_of_table` set), v1 domains only
            // (PD_MODE_V1 = 1; v2 is the x86-64 format, not modelled). The top starts at
            // `starting_level` (2: 3 levels) and grows on map up to `max_vasz_lg2`: the
            // format forces PT_FEAT_DYNAMIC_TOP (fmt/iommu_amdv1.c PT_FORCE_ENABLED_FEATURES),
            // so the table's `features` need not be recorded. docs/kernel-facts.md §4.4.
            "amd" if field(a, "top_of_table").is_some_and(|t| t != 0) => {
                match field(a, "pd_mode") {
                    Some(1) => {}
                    Some(p) => {
                        return Err(ConfigError::NoModel(format!(
                            "amd with page-table mode {p} (v2, or none)"
                        )))
                    }
                    None => return Err(missing("the `pd_mode` driver field")),
                }
                let levels = field(a, "top_level").unwrap_or(0).saturating_add(1);
                if !(1..=6).contains(&levels) {
                    return Err(invalid(format!(
                        "AMDv1 top level {} is not 0-5",
                        levels - 1
                    )));
                }
                let vasz = match field(a, "max_vasz_lg2") {
                    Some(v) => v,
                    None if g.aperture_end != 0 => 64 - g.aperture_end.leading_zeros() as u64,
                    None => return Err(missing("the `max_vasz_lg2` field and an aperture")),
                };
                if !(21..=64).contains(&vasz) {
                    return Err(invalid(format!("AMDv1 max_vasz_lg2 {vasz} is not 21-64")));
                }
                if g.pgsize_bitmap & 0xfff != 0 || g.pgsize_bitmap == 0 {
                    return Err(invalid(format!(
                        "page sizes {:#x} are not AMDv1's (4K and up)",
                        g.pgsize_bitmap
                    )));
                }
                Ok(amdv1_config(
                    levels,
                    vasz,
                    behaviour,
                    vtd::PtFormat::Amdv1 {
                        pgsize_bitmap: g.pgsize_bitmap,
                    },
                ))
            }
            "amd" => match (field(a, "pd_mode"), field(a, "mode")) {
                (Some(1), Some(3)) if g.pgsize_bitmap & 0xfff == 0 && g.pgsize_bitmap != 0 => {
                    Ok(ModelConfig::AmdV1(AmdV1Config {
                        pgsize_bitmap: g.pgsize_bitmap,
                    }))
                }
                (Some(1), Some(3)) => Err(invalid(format!(
                    "page sizes {:#x} are not io-pgtable v1's (4K and up)",
                    g.pgsize_bitmap
                ))),
                (Some(1), Some(m)) => Err(invalid(format!(
                    "a v1 table of {m} levels at allocation (v1_alloc_pgtable starts at 3)"
                ))),
                (Some(p), _) if p != 1 => Err(ConfigError::NoModel(format!(
                    "amd with page-table mode {p} (v2, or none)"
                ))),
                _ => Err(missing("the `pd_mode` and `mode` driver fields")),
            },
            other => Err(ConfigError::NoModel(other.to_string())),
        }
    }

    pub fn build(&self) -> Model {
        match self {
            ModelConfig::Vtd(c) => Model::Vtd(VtdModel::new(c.clone())),
            ModelConfig::Lpae(c) => Model::Lpae(LpaeModel::new(c.clone())),
            ModelConfig::AmdV1(c) => Model::AmdV1(AmdV1Model::new(c.clone())),
            ModelConfig::NoTables { pgsize_bitmap } => Model::NoTables(NoTables {
                pgsize_bitmap: *pgsize_bitmap,
            }),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ModelConfig::Vtd(c) => c.describe(),
            ModelConfig::Lpae(c) => c.describe(),
            ModelConfig::AmdV1(c) => format!(
                "AMD io-pgtable v1 (6.12): 3 levels growing to 6, page sizes {:#x}",
                c.pgsize_bitmap
            ),
            ModelConfig::NoTables { .. } => "no page tables (iommufd selftest mock)".into(),
        }
    }

    /// Other formats to replay the same map/unmap sequence under (`--what-if`): the
    /// domain's own family in its other shapes, and what an AMD host would take (6.12's
    /// io-pgtable v1, 7.x's AMDv1; an AMD domain gets a 4-level VT-d table instead of the
    /// one it has). The caller drops the domain's own configuration.
    pub fn what_if_variants(&self) -> Vec<ModelConfig> {
        match self {
            // The selftest's formats are no host's.
            ModelConfig::Vtd(c) if matches!(c.format, vtd::PtFormat::Amdv1Mock { .. }) => {
                Vec::new()
            }
            ModelConfig::Vtd(c) if c.format.dynamic_top() => {
                let mut v = amd_variants();
                v.push(vtd_4_level(c.flavour));
                v
            }
            ModelConfig::AmdV1(_) => {
                let mut v = amd_variants();
                v.push(vtd_4_level(VtdFlavour::Legacy));
                v
            }
            ModelConfig::Vtd(c) => {
                let mut v = amd_variants();
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
                let mut v = amd_variants();
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
    AmdV1(AmdV1Model),
    NoTables(NoTables),
}

impl Model {
    /// Pages the driver's domain-allocation op allocates (the top-level table).
    pub fn domain_alloc(&mut self, log: &mut PageLog) {
        match self {
            Model::Vtd(m) => m.domain_alloc(log),
            Model::Lpae(m) => m.domain_alloc(log),
            Model::AmdV1(m) => m.domain_alloc(log),
            Model::NoTables(_) => {}
        }
    }

    /// `iommu_map(domain, iova, paddr, size)`: bytes mapped, or the errno.
    pub fn map(&mut self, iova: u64, paddr: u64, size: u64, log: &mut PageLog) -> Result<u64, i32> {
        match self {
            Model::Vtd(m) => chunk::iommu_map(m, iova, paddr, size, log),
            Model::Lpae(m) => chunk::iommu_map(m, iova, paddr, size, log),
            Model::AmdV1(m) => chunk::iommu_map(m, iova, paddr, size, log),
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
            Model::AmdV1(m) => chunk::iommu_unmap(m, iova, size, log),
            Model::NoTables(_) => size,
        }
    }

    /// `iommu_domain_free`: every table, the top-level one included.
    pub fn domain_free(&mut self, log: &mut PageLog) {
        match self {
            Model::Vtd(m) => m.domain_free(log),
            Model::Lpae(m) => m.domain_free(log),
            Model::AmdV1(m) => m.domain_free(log),
            Model::NoTables(_) => {}
        }
    }

    /// Page-table pages the model holds now.
    pub fn live_pages(&self) -> u64 {
        match self {
            Model::Vtd(m) => m.live_pages(),
            Model::Lpae(m) => m.live_pages(),
            Model::AmdV1(m) => m.live_pages(),
            Model::NoTables(_) => 0,
        }
    }

    /// (bytes one last-level entry maps, entries per table); `None` for a domain without
    /// tables.
    pub fn table_geometry(&self) -> Option<(u64, u64)> {
        match self {
            Model::Vtd(m) => Some(m.table_geometry()),
            Model::Lpae(m) => Some(m.table_geometry()),
            // 4K leaves, 512 entries a table.
            Model::AmdV1(_) => Some((4096, 512)),
            Model::NoTables(_) => None,
        }
    }

    /// Memory the model's own tables take, for the replay's budget.
    pub fn model_bytes(&self) -> u64 {
        match self {
            Model::Vtd(m) => m.model_bytes(),
            Model::Lpae(m) => m.model_bytes(),
            Model::AmdV1(m) => m.model_bytes(),
            Model::NoTables(_) => 0,
        }
    }

    /// Set when the kernel path would hit behaviour the model does not reproduce (e.g. a
    /// walker dereferencing a data page as a table); the replay stops verifying the domain.
    pub fn unsupported(&self) -> Option<&str> {
        match self {
            Model::Vtd(m) => m.unsupported(),
            Model::Lpae(m) => m.unsupported(),
            Model::AmdV1(_) => None,
            Model::NoTables(_) => None,
        }
    }

    /// Levels of a table whose top grows on map (AMD), `None` for a fixed top.
    pub fn top_levels(&self) -> Option<u32> {
        match self {
            Model::Vtd(m) if m.config().format.dynamic_top() => Some(m.levels()),
            Model::AmdV1(m) => Some(m.mode()),
            Model::Vtd(_) | Model::Lpae(_) | Model::NoTables(_) => None,
        }
    }

    pub fn pgsize_bitmap(&self) -> u64 {
        match self {
            Model::Vtd(m) => m.pgsize_bitmap(),
            Model::Lpae(m) => m.pgsize_bitmap(),
            Model::AmdV1(m) => m.config().pgsize_bitmap,
            Model::NoTables(m) => m.pgsize_bitmap,
        }
    }
}
