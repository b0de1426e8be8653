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
//!   page table (`drivers/iommu/generic_pt`, 6.19+), whose walker also serves the AMD
//!   driver's AMDv1 tables (dynamic top) and the 7.x selftest mock's. docs/kernel-facts.md
//!   §4.1 (AMDv1: §4.4, the mock: §4.3).
//! * [`lpae`]: Arm SMMUv3 through `drivers/iommu/io-pgtable-arm.c` (LPAE stage 1 and 2).
//!   docs/kernel-facts.md §4.2.
//! * [`amd_v1`]: AMD io-pgtable v1 (6.12 `drivers/iommu/amd/io_pgtable.c`): growing top,
//!   replicated PTEs, no free on unmap. docs/kernel-facts.md §4.4.
//!
//! Page counts are in 4 KiB pages (the unit of `NR_IOMMU_PAGES` on x86-64 and on Debian's
//! arm64 kernels, which use 4 KiB `PAGE_SIZE`).
//!
//! Which kernel behaviour a model follows is chosen by the caller through
//! [`KernelBehaviour`] (default: Debian 6.12), because the events alone cannot always tell:
//! the capture's session records the kernel's features, and [`KernelBehaviour::detected`]
//! maps them (`behaviour.rs`). A domain whose configuration cannot be determined from what
//! the capture recorded gets a [`ConfigError`], never a guess (`select.rs`).

pub mod amd_v1;
mod behaviour;
pub mod chunk;
pub mod lpae;
mod select;
mod store;
pub mod vtd;

#[cfg(test)]
mod brute;

use serde::Serialize;

pub use behaviour::{KernelBehaviour, ModelSelect, SmmuBehaviour, VtdBehaviour};
pub use lpae::{LpaeConfig, LpaeModel, LpaeRules};
pub use select::{ConfigError, Model, ModelConfig, NoTables};
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
    /// Whole-range map (generic page table, 7.0+): `Some((bytes mapped, result))` when the
    /// driver takes the whole `iommu_map` range in one call, `None` when it wants
    /// `iommu_pgsize` chunks through [`Self::map_pages`].
    fn map_range(
        &mut self,
        _iova: u64,
        _paddr: u64,
        _size: u64,
        _log: &mut PageLog,
    ) -> Option<(u64, Result<(), i32>)> {
        None
    }
    /// Whole-range unmap (generic page table, 7.0+): `Some(bytes)` when the driver takes the
    /// whole `iommu_unmap` range in one call, `None` when it wants `iommu_pgsize` chunks.
    fn unmap_range(&mut self, _iova: u64, _size: u64, _log: &mut PageLog) -> Option<u64> {
        None
    }
    /// `ops->iotlb_sync()`: free what the gather holds.
    fn iotlb_sync(&mut self, log: &mut PageLog);
}
