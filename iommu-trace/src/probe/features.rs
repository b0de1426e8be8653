//! Which page-table behaviours the traced kernel has, from what it contains (BTF and
//! kallsyms, never the version number): docs/kernel-facts.md §4.1 (VT-d) and §4.2
//! (io-pgtable-arm; the walker that stands in for its 7.x rules is this tool's own choice,
//! see `detect_features`).

use super::plan::PlanInputs;
use crate::session::KernelFeatures;

/// - `vtd_generic_pt`: VT-d page tables come from the generic page table (6.19+), seen as
///   `pt_iommu_vtdss_init`;
/// - `generic_pt_whole_range_unmap`: the core hands the whole unmap range to the page
///   table (7.0+), seen as `struct pt_iommu_ops` having `unmap_range`;
/// - `io_pgtable_arm_concat_mandatory`: io-pgtable-arm's 7.x rules (stage-2 concatenation
///   only when mandatory, no split of a partially unmapped block), seen as its 7.x walker.
pub fn detect_features(inputs: &PlanInputs) -> KernelFeatures {
    let has = |s: &str| !inputs.kallsyms.get(s).is_empty();
    KernelFeatures {
        vtd_generic_pt: has("pt_iommu_vtdss_init"),
        generic_pt_whole_range_unmap: inputs
            .btf
            .is_some_and(|b| b.member("pt_iommu_ops", "unmap_range").is_some()),
        // arm_lpae_concat_mandatory() and the removal of arm_lpae_split_blk_unmap() leave no
        // symbol of their own (static inline; the 6.12 splitter is inlined too: System.map of
        // the test kernels). io-pgtable-arm's walker, `arm_lpae_pgtable_walk`, is in 7.3 and
        // not in 6.12, so it stands in; a kernel from between the two may be judged wrongly,
        // and `replay --smmu` overrides.
        io_pgtable_arm_concat_mandatory: has("arm_lpae_concat_mandatory")
            || has("arm_lpae_pgtable_walk"),
        unknown: Vec::new(),
    }
}
