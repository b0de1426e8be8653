//! Intel VT-d second/first-stage page tables (docs/kernel-facts.md §4.1), and the generic page
//! table's walker they share since 6.19 with other formats.
//!
//! Legacy flavour: `drivers/iommu/intel/iommu.c` of 6.12 (same through 6.18).
//! Generic-pt flavour: `drivers/iommu/generic_pt/iommu_pt.h` with `fmt/vtdss.h` (6.19+), with
//! the AMD driver's `fmt/amdv1.h` ([`PtFormat::Amdv1`]: 4K granule, leaves of any power of
//! two, a top that grows as IOVAs rise: docs/kernel-facts.md §4.4), or with the iommufd
//! selftest's AMDv1 "mock" variant ([`PtFormat::Amdv1Mock`]: 2K granule, fixed top, §4.3);
//! the generic-pt rules here follow docs/kernel-facts.md §4.1(c) (read from the 7.3 source).
//!
//! Tables are 4 KiB with 512 entries at every level; level 1 holds 4K PTEs, level 2 may
//! hold 2M superpages, level 3 1G superpages. The model keeps (in `store.rs`) one `u32`
//! per entry of an upper table (empty, leaf, or the store slot of the lower table: 2 KiB
//! per 4 KiB kernel table) and one bit per entry of a level-1 table (present or not: 64
//! bytes), so its memory is proportional to the live tables, and runs of 4K PTEs are set
//! or cleared a word at a time.

use super::store::Store;
use super::{chunk, errno, DomainOps, Gfp, PageLog};

pub const SZ_4K: u64 = 1 << 12;
pub const SZ_2M: u64 = 1 << 21;
pub const SZ_1G: u64 = 1 << 30;

const NPTE: usize = 512;
const EMPTY: u32 = 0;
/// A leaf: a 4K PTE at level 1, a superpage (DMA_PTE_LARGE_PAGE) above.
const LEAF: u32 = 1;

#[inline]
fn is_table(e: u32) -> bool {
    e >= 2
}
#[inline]
fn slot_of(e: u32) -> u32 {
    e - 2
}
#[inline]
fn entry_of(slot: u32) -> u32 {
    slot + 2
}
/// iommu.h:level_to_offset_bits()
#[inline]
fn offset_bits(level: u32) -> u32 {
    9 * (level - 1)
}
/// iommu.c:level_size(): pfns one entry at `level` spans.
#[inline]
fn level_size(level: u32) -> u64 {
    1u64 << offset_bits(level)
}
/// iommu.c:pfn_level_offset()
#[inline]
fn pfn_level_offset(pfn: u64, level: u32) -> usize {
    ((pfn >> offset_bits(level)) & 0x1ff) as usize
}

/// Which implementation of the VT-d allocator the model follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VtdFlavour {
    /// intel/iommu.c (≤6.18).
    Legacy,
    /// generic_pt (6.19+); `whole_range` is the 7.0+ core behaviour.
    GenericPt { whole_range: bool },
}

/// The page-table format a model walks. The generic page table's algorithm
/// (`generic_pt/iommu_pt.h`) is the same for every format; what differs is the granule and
/// which leaf sizes exist at which level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PtFormat {
    /// VT-d second stage (`fmt/vtdss.h`, and the legacy driver): 4K granule, leaves of
    /// 4K, 2M and 1G as `superpage` allows.
    Vtdss,
    /// The iommufd selftest's AMDv1 "mock" variant (`fmt/amdv1.h` with
    /// AMDV1_IOMMUFD_SELFTEST, `iommufd/selftest.c` `mock_domain_alloc_pgtable`, 7.x):
    /// 2K granule, 4K tables of 512 entries, a leaf of any power-of-two size the domain's
    /// `pgsize_bitmap` holds (written as contiguous entries) at any level below
    /// PT_MAX_TOP_LEVEL (4), which every level of its 3-level table is.
    Amdv1Mock { pgsize_bitmap: u64 },
    /// The AMD driver's AMDv1 tables (`fmt/amdv1.h`, `amd/iommu.c`
    /// `amd_iommu_domain_alloc_paging_v1`, 6.19+): 4K granule, 512-entry tables, a leaf of
    /// any power-of-two size the bitmap holds (contiguous entries) below PT_MAX_TOP_LEVEL,
    /// and PT_FEAT_DYNAMIC_TOP: the top starts where `starting_level` puts it and gains a
    /// level (`increase_top`) whenever a map reaches beyond it, up to 6 levels within the
    /// config's `gaw` (the table's `max_vasz_lg2`).
    Amdv1 { pgsize_bitmap: u64 },
}

impl PtFormat {
    /// log2 of the smallest page, the unit the walkers count in.
    pub fn granule_lg2(self) -> u32 {
        match self {
            PtFormat::Vtdss | PtFormat::Amdv1 { .. } => 12,
            PtFormat::Amdv1Mock { .. } => 11,
        }
    }

    /// A top that grows on map (PT_FEAT_DYNAMIC_TOP).
    pub fn dynamic_top(self) -> bool {
        matches!(self, PtFormat::Amdv1 { .. })
    }

    /// Leaves of any power of two the bitmap holds (AMDv1's contiguous entries), at the
    /// level the size belongs to; VT-d's are 4K, 2M and 1G as `superpage` allows.
    fn any_power_of_two(self) -> bool {
        !matches!(self, PtFormat::Vtdss)
    }
}

/// fmt/amdv1.h PT_MAX_TOP_LEVEL (5, 0-based): the most levels an AMDv1 table grows to.
const AMDV1_MAX_LEVELS: u32 = 6;

/// The parameters `paging_domain_alloc()` sets.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VtdConfig {
    /// agaw + 2: 3, 4 or 5.
    pub levels: u8,
    /// Guest address width (bits): the aperture, `DOMAIN_MAX_PFN(gaw)` at domain free.
    pub gaw: u8,
    /// `domain->iommu_superpage`: 0 none, 1 = 2M, 2 = 2M and 1G.
    pub superpage: u8,
    /// `domain->use_first_level` (first-stage tables are allocated the same way).
    pub first_stage: bool,
    pub flavour: VtdFlavour,
    pub format: PtFormat,
}

impl VtdConfig {
    /// `pgsize_bitmap` from iommu.c:paging_domain_alloc() / domain_super_pgsize_bitmap(),
    /// or the mock's own.
    pub fn pgsize_bitmap(&self) -> u64 {
        if let PtFormat::Amdv1Mock { pgsize_bitmap } | PtFormat::Amdv1 { pgsize_bitmap } =
            self.format
        {
            return pgsize_bitmap;
        }
        SZ_4K
            | if self.superpage >= 1 { SZ_2M } else { 0 }
            | if self.superpage >= 2 { SZ_1G } else { 0 }
    }

    pub fn describe(&self) -> String {
        let sp = match self.superpage {
            0 => "4K only",
            1 => "4K+2M",
            _ => "4K+2M+1G",
        };
        let flavour = match self.flavour {
            VtdFlavour::Legacy => "legacy",
            VtdFlavour::GenericPt { whole_range: false } => "generic-pt",
            VtdFlavour::GenericPt { whole_range: true } => "generic-pt whole-range",
        };
        match self.format {
            PtFormat::Amdv1Mock { .. } => {
                return format!(
                    "AMDv1 mock (iommufd selftest) {} {}-level {}-bit, 2K granule",
                    flavour, self.levels, self.gaw
                )
            }
            PtFormat::Amdv1 { pgsize_bitmap } => {
                return format!(
                    "AMD AMDv1 {} {}-level at allocation growing to {}, {}-bit, page sizes {:#x}",
                    flavour, self.levels, AMDV1_MAX_LEVELS, self.gaw, pgsize_bitmap
                )
            }
            PtFormat::Vtdss => {}
        }
        format!(
            "VT-d {} {}-level gaw {} {} {}",
            flavour,
            self.levels,
            self.gaw,
            sp,
            if self.first_stage {
                "first stage"
            } else {
                "second stage"
            }
        )
    }
}

/// A VT-d domain's tables.
#[derive(Clone, Debug)]
pub struct VtdModel {
    cfg: VtdConfig,
    store: Store,
    /// `domain->pgd`, a slot.
    pgd: Option<u32>,
    /// Levels of the table now: the config's, more once a dynamic top grew.
    levels: u32,
    /// `gather->freelist`: (level, slot) of the tables to free at the IOTLB sync.
    freelist: Vec<(u32, u32)>,
    live_tables: u64,
    unsupported: Option<String>,
    /// Times the kernel would print "DMA PTE ... already set" and WARN.
    pub pte_already_set: u64,
}

impl VtdModel {
    pub fn new(cfg: VtdConfig) -> Self {
        VtdModel {
            levels: cfg.levels as u32,
            store: Store::new(NPTE),
            pgd: None,
            freelist: Vec::new(),
            live_tables: 0,
            unsupported: None,
            pte_already_set: 0,
            cfg,
        }
    }

    pub fn config(&self) -> &VtdConfig {
        &self.cfg
    }

    pub fn live_pages(&self) -> u64 {
        self.live_tables
    }

    /// Memory the model's tables take (not the kernel's: see `store.rs`).
    pub fn model_bytes(&self) -> u64 {
        self.store.bytes()
    }

    /// (bytes one last-level entry maps, entries per table): what the replay's budget
    /// bounds a map's tables by.
    pub fn table_geometry(&self) -> (u64, u64) {
        (1 << self.cfg.format.granule_lg2(), NPTE as u64)
    }

    pub fn unsupported(&self) -> Option<&str> {
        self.unsupported.as_deref()
    }

    fn set_unsupported(&mut self, why: &str) {
        if self.unsupported.is_none() {
            self.unsupported = Some(why.to_string());
        }
    }

    /// `iommu_alloc_page_node()`: a zeroed 4 KiB table, to hold entries of `level`.
    fn alloc_table(&mut self, level: u32, gfp: Gfp, log: &mut PageLog) -> u32 {
        self.live_tables += 1;
        log.alloc(1, gfp);
        self.store.alloc(level == 1)
    }

    fn release(&mut self, level: u32, slot: u32) {
        self.live_tables -= 1;
        self.store.release(level == 1, slot);
    }

    /// Entry `idx` of the table at `level` in `slot`.
    #[inline]
    fn get(&self, level: u32, slot: u32, idx: usize) -> u32 {
        if level == 1 {
            self.store.bit(slot, idx) as u32
        } else {
            self.store.upper(slot)[idx]
        }
    }
    #[inline]
    fn set(&mut self, level: u32, slot: u32, idx: usize, e: u32) {
        if level == 1 {
            debug_assert!(e == EMPTY || e == LEAF);
            self.store.set_bit(slot, idx, e == LEAF);
        } else {
            self.store.upper_mut(slot)[idx] = e;
        }
    }

    /// Levels of the table now (a dynamic top grows).
    pub fn levels(&self) -> u32 {
        self.levels
    }

    /// Pfn bits a table of `levels` levels translates: iommu.c:domain_pfn_supported()'s
    /// `agaw_to_width(agaw)`; generic pt's top range, capped by `max_vasz_lg2` (AMDv1).
    fn pfn_bits(&self, levels: u32) -> u32 {
        let g = self.cfg.format.granule_lg2();
        let cap = match self.cfg.format {
            PtFormat::Vtdss => 64,
            PtFormat::Amdv1Mock { .. } | PtFormat::Amdv1 { .. } => self.cfg.gaw as u32,
        };
        (9 * levels).min(cap.saturating_sub(g))
    }

    /// iommu.c:domain_pfn_supported() / generic pt's pt_check_range() for a table of
    /// `levels` levels.
    fn pfn_fits(&self, pfn: u64, levels: u32) -> bool {
        let width = self.pfn_bits(levels);
        width >= 64 || pfn >> width == 0
    }

    fn pfn_supported(&self, pfn: u64) -> bool {
        self.pfn_fits(pfn, self.levels)
    }

    /// iommu.c:DOMAIN_MAX_PFN(gaw)
    fn max_pfn(&self) -> u64 {
        (1u64 << (self.cfg.gaw as u32 - 12)) - 1
    }

    pub fn pgsize_bitmap(&self) -> u64 {
        self.cfg.pgsize_bitmap()
    }

    /// iommu.c:paging_domain_alloc(): "always allocate the top pgd", GFP_KERNEL.
    /// generic_pt: `pt_iommu_vtdss_init(..., GFP_KERNEL)` allocates the top table.
    pub fn domain_alloc(&mut self, log: &mut PageLog) {
        if self.pgd.is_none() {
            self.pgd = Some(self.alloc_table(self.levels, Gfp::Kernel, log));
        }
    }

    /// Legacy: iommu.c:domain_exit() = `domain_unmap(0, DOMAIN_MAX_PFN(gaw))` (which queues
    /// every fully covered table and the pgd) + `iommu_put_pages_list()`.
    /// Generic-pt: `NS(deinit)` collects every table and the top table.
    pub fn domain_free(&mut self, log: &mut PageLog) {
        let Some(pgd) = self.pgd else { return };
        match self.cfg.flavour {
            VtdFlavour::Legacy => {
                let last = self.max_pfn();
                self.domain_unmap(0, last);
            }
            VtdFlavour::GenericPt { .. } => {
                self.list_pagetables(pgd, self.levels);
                self.pgd = None;
            }
        }
        self.iotlb_sync(log);
    }

    /// Every table present, as (table level, first pfn it covers), sorted. For tests.
    pub fn tables(&self) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        if let Some(pgd) = self.pgd {
            self.collect_tables(pgd, self.levels, 0, &mut out);
        }
        out.sort_unstable();
        out
    }

    fn collect_tables(&self, slot: u32, level: u32, base: u64, out: &mut Vec<(u32, u64)>) {
        out.push((level, base));
        if level == 1 {
            return;
        }
        for i in 0..NPTE {
            let e = self.get(level, slot, i);
            if is_table(e) {
                let b = base + i as u64 * level_size(level);
                self.collect_tables(slot_of(e), level - 1, b, out);
            }
        }
    }

    /// Every leaf, as (first pfn, level), sorted. For tests.
    pub fn leaves(&self) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        if let Some(pgd) = self.pgd {
            self.collect_leaves(pgd, self.levels, 0, &mut out);
        }
        out.sort_unstable();
        out
    }

    fn collect_leaves(&self, slot: u32, level: u32, base: u64, out: &mut Vec<(u64, u32)>) {
        for i in 0..NPTE {
            let e = self.get(level, slot, i);
            let b = base + i as u64 * level_size(level);
            if e == LEAF {
                out.push((b, level));
            } else if is_table(e) {
                self.collect_leaves(slot_of(e), level - 1, b, out);
            }
        }
    }

    // ---- legacy: intel/iommu.c -------------------------------------------------------

    /// iommu.c:pfn_to_dma_pte(): walk from the pgd to `target_level`, allocating a table
    /// for every non-present entry above it (with the iommu_map gfp). With
    /// `target_level == 0` it allocates nothing and stops at the first superpage or
    /// non-present entry. Returns (table slot, index, level), or the errno of the map that
    /// cannot go on: -ENOMEM (legacy: no pte), -EADDRINUSE (generic pt: a leaf where a
    /// table is needed).
    fn pfn_to_dma_pte(
        &mut self,
        pfn: u64,
        target_level: u32,
        log: &mut PageLog,
    ) -> Result<(u32, usize, u32), i32> {
        if !self.pfn_supported(pfn) {
            return Err(errno::ENOMEM);
        }
        let mut table = self.pgd.ok_or(errno::ENOMEM)?;
        let mut level = self.levels;
        loop {
            let idx = pfn_level_offset(pfn, level);
            let mut e = self.get(level, table, idx);
            if target_level == 0 && !is_table(e) && (e == LEAF && level > 1 || e == EMPTY) {
                break Ok((table, idx, level));
            }
            if level == target_level {
                break Ok((table, idx, level));
            }
            if e == EMPTY {
                let t = self.alloc_table(level - 1, Gfp::Caller, log);
                e = entry_of(t);
                self.set(level, table, idx, e);
            }
            if level == 1 {
                break Ok((table, idx, level));
            }
            if !is_table(e) {
                if self.cfg.flavour != VtdFlavour::Legacy {
                    // iommu_pt.h __map_range(): a leaf where a table is needed.
                    return Err(errno::EADDRINUSE);
                }
                // A superpage above the target level: the kernel would walk the data page
                // as if it were a table.
                self.set_unsupported("a map below an existing VT-d superpage");
                return Err(errno::ENOMEM);
            }
            table = slot_of(e);
            level -= 1;
        }
    }

    /// iommu.c:hardware_largepage_caps(): the largest level usable with both iova and
    /// phys pfns aligned and at least one whole large page left (VT-d; the AMDv1 formats
    /// take the level of the chunk's page size, `map_chunk`).
    fn hardware_largepage_caps(&self, iov_pfn: u64, phy_pfn: u64, pages: u64) -> u32 {
        let mut support = self.cfg.superpage;
        let mut level = 1;
        let mut pfnmerge = iov_pfn | phy_pfn;
        let mut pages = pages;
        while support != 0 && pfnmerge & 0x1ff == 0 {
            pages >>= 9;
            if pages == 0 {
                break;
            }
            pfnmerge >>= 9;
            level += 1;
            support -= 1;
        }
        level
    }

    /// iommu.c:__domain_mapping(): one PTE run per table page, superpages where the caps
    /// allow, `switch_to_super_page()` before installing superpages.
    /// `leaf_level`: the level of the leaves (generic pt: the level the chunk's page size
    /// belongs to), else what the hardware's superpage caps allow.
    fn domain_mapping(
        &mut self,
        mut iov_pfn: u64,
        mut phys_pfn: u64,
        mut nr_pages: u64,
        leaf_level: Option<u32>,
        log: &mut PageLog,
    ) -> Result<(), i32> {
        if nr_pages == 0 || !self.pfn_supported(iov_pfn + nr_pages - 1) {
            return Err(errno::EINVAL);
        }
        let legacy = self.cfg.flavour == VtdFlavour::Legacy;
        while nr_pages > 0 {
            let lvl = leaf_level
                .unwrap_or_else(|| self.hardware_largepage_caps(iov_pfn, phys_pfn, nr_pages));
            let (table, idx, lvl) = self.pfn_to_dma_pte(iov_pfn, lvl, log)?;
            let lvl_pages = level_size(lvl);
            if !legacy {
                // iommu_pt.h __map_range_leaf(): a present entry (or any entry of a
                // contiguous leaf) goes through clear_contig(): -EADDRINUSE over a leaf,
                // a lower table holding nothing is freed.
                let n = (nr_pages / lvl_pages).min((NPTE - idx) as u64);
                self.pt_clear_for_leaf(table, idx, n, lvl)?;
            } else if lvl > 1 {
                let pages_to_remove =
                    (nr_pages / lvl_pages * lvl_pages).min((NPTE - idx) as u64 * lvl_pages);
                let end_pfn = iov_pfn + pages_to_remove - 1;
                self.switch_to_super_page(table, idx, iov_pfn, end_pfn, lvl, log);
            }
            // The kernel sets PTEs one by one in this table page until the pages run out,
            // the table page ends, or (superpages) less than one superpage is left; then it
            // walks again. The caps guarantee nr_pages >= lvl_pages, so n >= 1.
            let n = ((nr_pages / lvl_pages) as usize).min(NPTE - idx);
            self.set_leaves(lvl, table, idx, n);
            nr_pages -= n as u64 * lvl_pages;
            iov_pfn += n as u64 * lvl_pages;
            phys_pfn += n as u64 * lvl_pages;
        }
        Ok(())
    }

    /// The PTE loop of iommu.c:__domain_mapping() over entries [idx, idx + n) of one table:
    /// try_cmpxchg64_local(&pte->val, 0, pteval), so an existing entry is kept (WARN).
    fn set_leaves(&mut self, level: u32, table: u32, idx: usize, n: usize) {
        let end = idx + n;
        if level == 1 {
            self.pte_already_set += self.store.set_bits(table, idx, end);
        } else {
            for e in &mut self.store.upper_mut(table)[idx..end] {
                if *e == EMPTY {
                    *e = LEAF;
                } else {
                    self.pte_already_set += 1;
                }
            }
        }
    }

    /// iommu.c:switch_to_super_page(): for each present entry where a superpage goes,
    /// `dma_pte_free_pagetable(start, start + lvl_pages - 1, level + 1)` clears the leaves
    /// and frees, immediately (`iommu_free_page`, not deferred), every lower table inside
    /// the superpage's span: the whole subtree under that entry.
    fn switch_to_super_page(
        &mut self,
        table: u32,
        idx: usize,
        start_pfn: u64,
        end_pfn: u64,
        level: u32,
        log: &mut PageLog,
    ) {
        let lvl_pages = level_size(level);
        let n = ((end_pfn + 1 - start_pfn) / lvl_pages) as usize;
        // The run never crosses a table page (pages_to_remove is capped by
        // nr_pte_to_next_page), so one table holds every entry.
        for i in idx..idx + n {
            let e = self.get(level, table, i);
            if e == EMPTY {
                continue;
            }
            if is_table(e) {
                let freed = self.free_subtree_now(slot_of(e), level - 1);
                log.free(freed);
            }
            self.set(level, table, i, EMPTY);
        }
    }

    /// Free a table and everything below it now; returns the pages freed.
    fn free_subtree_now(&mut self, slot: u32, level: u32) -> u64 {
        let mut n = 1;
        if level > 1 {
            for i in 0..NPTE {
                let e = self.get(level, slot, i);
                if is_table(e) {
                    n += self.free_subtree_now(slot_of(e), level - 1);
                }
            }
        }
        self.release(level, slot);
        n
    }

    /// iommu.c:dma_pte_list_pagetables(): queue a table and its whole subtree on the
    /// gather's freelist.
    fn list_pagetables(&mut self, slot: u32, level: u32) {
        self.freelist.push((level, slot));
        if level == 1 {
            return;
        }
        for i in 0..NPTE {
            let e = self.get(level, slot, i);
            if is_table(e) {
                self.list_pagetables(slot_of(e), level - 1);
            }
        }
    }

    /// iommu.c:dma_pte_clear_level(): clear the entries of [start, last]; an entry whose
    /// whole span lies inside the range is cleared and its subtree queued for freeing ("If
    /// range covers entire pagetable, free it"); a partially covered table is recursed into.
    fn dma_pte_clear_level(&mut self, level: u32, table: u32, pfn: u64, start: u64, last: u64) {
        let mut pfn = pfn.max(start);
        let mut idx = pfn_level_offset(pfn, level);
        if level == 1 {
            // Every 4K PTE from pfn to last (or the end of the table) is covered: clear
            // them all at once.
            let end = NPTE.min(idx + (last - pfn).min(NPTE as u64) as usize + 1);
            self.store.clear_bits(table, idx, end);
            return;
        }
        loop {
            let size = level_size(level);
            let level_pfn = pfn & !(size - 1);
            let e = self.get(level, table, idx);
            if e != EMPTY {
                if start <= level_pfn && last >= level_pfn + size - 1 {
                    if level > 1 && is_table(e) {
                        self.list_pagetables(slot_of(e), level - 1);
                    }
                    self.set(level, table, idx, EMPTY);
                } else if level > 1 {
                    if is_table(e) {
                        self.dma_pte_clear_level(level - 1, slot_of(e), level_pfn, start, last);
                    } else {
                        // The kernel recurses into the superpage's data page as if it were
                        // a table: a partial unmap of a superpage is not modelled.
                        self.set_unsupported("a partial unmap of a VT-d superpage");
                    }
                }
            }
            pfn = level_pfn + size;
            idx += 1;
            if idx == NPTE || pfn > last {
                break;
            }
        }
    }

    /// iommu.c:domain_unmap(): clear [start, last] from the pgd down; queue the pgd too
    /// when the range is the whole domain.
    fn domain_unmap(&mut self, start: u64, last: u64) {
        let Some(pgd) = self.pgd else { return };
        if !self.pfn_supported(last) || start > last {
            return; // WARN_ON
        }
        self.dma_pte_clear_level(self.levels, pgd, 0, start, last);
        if start == 0 && last == self.max_pfn() {
            self.freelist.push((self.levels, pgd));
            self.pgd = None;
        }
    }

    /// iommu.c:intel_iommu_unmap(): look up the mapping level at `iova`, round `size` up to
    /// that level's size ("Cope with horrid API..."), `domain_unmap()` onto the gather.
    /// Returns the (possibly rounded-up) size, even where nothing was mapped.
    fn intel_iommu_unmap(&mut self, iova: u64, size: u64, log: &mut PageLog) -> u64 {
        let Ok((_, _, level)) = self.pfn_to_dma_pte(iova >> 12, 0, log) else {
            return 0;
        };
        let mut size = size;
        let lsize = SZ_4K << offset_bits(level);
        if size < lsize {
            size = lsize;
        }
        let start_pfn = iova >> 12;
        let last_pfn = (iova + size - 1) >> 12;
        self.domain_unmap(start_pfn, last_pfn);
        size
    }

    // ---- generic page table: generic_pt/iommu_pt.h ----------------------------------

    /// The level (1 = the granule's) a leaf of `pgsize` bytes sits at.
    fn leaf_level(&self, pgsize: u64) -> u32 {
        let g = self.cfg.format.granule_lg2();
        1 + pgsize.trailing_zeros().saturating_sub(g) / 9
    }

    /// One `iommu_pgsize` chunk into the tables; tables a leaf replaces wait in the gather.
    fn map_chunk(
        &mut self,
        iova: u64,
        paddr: u64,
        pgsize: u64,
        pgcount: u64,
        log: &mut PageLog,
    ) -> (u64, Result<(), i32>) {
        let supported = match self.cfg.format {
            PtFormat::Vtdss => pgsize == SZ_4K || pgsize == SZ_2M || pgsize == SZ_1G,
            PtFormat::Amdv1Mock { pgsize_bitmap } | PtFormat::Amdv1 { pgsize_bitmap } => {
                pgsize.is_power_of_two() && pgsize & pgsize_bitmap != 0
            }
        };
        if !supported {
            return (0, Err(errno::EINVAL));
        }
        if (iova | paddr) & (pgsize - 1) != 0 {
            return (0, Err(errno::EINVAL));
        }
        let size = pgcount * pgsize;
        // intel_iommu_map(): "iommu width is not sufficient for the mapped address"; a
        // dynamic top was grown to the range before.
        let end = 1u64.checked_shl(self.cfg.gaw as u32).unwrap_or(0);
        if !self.cfg.format.dynamic_top() && end != 0 && iova + size > end {
            return (0, Err(errno::EFAULT));
        }
        let g = self.cfg.format.granule_lg2();
        let leaf_level = self
            .cfg
            .format
            .any_power_of_two()
            .then(|| self.leaf_level(pgsize));
        match self.domain_mapping(iova >> g, paddr >> g, size >> g, leaf_level, log) {
            Ok(()) => (size, Ok(())),
            Err(e) => (0, Err(e)),
        }
    }

    /// iommu_pt.h NS(map_range): check the range (a dynamic top grows first), then leaves
    /// of the best page size at each step, which `iommu_pgsize`'s chunks give; tables the
    /// leaves replaced are freed once, at the end (`iommu_iotlb_sync`).
    fn pt_map_range(
        &mut self,
        iova: u64,
        paddr: u64,
        size: u64,
        log: &mut PageLog,
    ) -> (u64, Result<(), i32>) {
        let bitmap = self.pgsize_bitmap();
        if size == 0 || bitmap == 0 {
            return (0, Err(errno::EINVAL));
        }
        let Some(last) = iova.checked_add(size - 1) else {
            return (0, Err(errno::EOVERFLOW));
        };
        // pt_compute_best_pgsize() finds no page size: -ENXIO.
        let min_page = 1u64 << bitmap.trailing_zeros();
        let first = chunk::iommu_pgsize(bitmap, iova, paddr, size);
        let Some((pgsize, _)) = first.filter(|_| (iova | paddr | size) & (min_page - 1) == 0)
        else {
            return (0, Err(errno::ENXIO));
        };
        let g = self.cfg.format.granule_lg2();
        if let Err(e) = self.check_map_range(last >> g, self.leaf_level(pgsize), log) {
            return (0, Err(e));
        }
        let (mut at, mut pa, mut left, mut mapped) = (iova, paddr, size, 0u64);
        let mut r = Ok(());
        while left != 0 {
            let Some((pgsize, count)) = chunk::iommu_pgsize(bitmap, at, pa, left) else {
                r = Err(errno::ENXIO);
                break;
            };
            let (n, res) = self.map_chunk(at, pa, pgsize, count, log);
            mapped += n;
            if res.is_err() {
                r = res;
                break;
            }
            left -= n;
            at = at.wrapping_add(n);
            pa = pa.wrapping_add(n);
        }
        if !self.freelist.is_empty() {
            self.iotlb_sync(log);
        }
        (mapped, r)
    }

    /// iommu_pt.h check_map_range() and increase_top(): the range's last pfn and a leaf at
    /// `leaf_level` must fit under the top (else -ERANGE). A dynamic top gains levels until
    /// they do: each new top is a table of the map's gfp whose entry 0 links the old top,
    /// then `change_top` (AMD: the device table) points the hardware at it. Past
    /// PT_MAX_TOP_LEVEL or `max_vasz_lg2` the map fails with -ERANGE and the tables
    /// allocated on the way are freed.
    fn check_map_range(
        &mut self,
        last_pfn: u64,
        leaf_level: u32,
        log: &mut PageLog,
    ) -> Result<(), i32> {
        let fits = |m: &Self, levels: u32| m.pfn_fits(last_pfn, levels) && leaf_level <= levels;
        if fits(self, self.levels) {
            return Ok(());
        }
        if !self.cfg.format.dynamic_top() {
            return Err(errno::ERANGE);
        }
        let g = self.cfg.format.granule_lg2();
        let mut levels = self.levels;
        while !fits(self, levels) {
            levels += 1;
            // pt_table_item_lg2sz() of the new top level against max_vasz_lg2.
            if levels > AMDV1_MAX_LEVELS || g + 9 * (levels - 1) >= self.cfg.gaw as u32 {
                let wasted = (levels - 1 - self.levels) as u64;
                log.alloc(wasted, Gfp::Caller);
                log.free(wasted);
                return Err(errno::ERANGE);
            }
        }
        for level in self.levels + 1..=levels {
            let t = self.alloc_table(level, Gfp::Caller, log);
            if let Some(old) = self.pgd {
                self.set(level, t, 0, entry_of(old));
            }
            self.pgd = Some(t);
        }
        self.levels = levels;
        Ok(())
    }

    /// generic_pt map: installing a leaf where a lower table exists frees that table if it
    /// holds no OA (`clear_contig()` -> gather), else the map fails with -EADDRINUSE; an
    /// existing leaf also fails with -EADDRINUSE.
    fn pt_clear_for_leaf(&mut self, table: u32, idx: usize, n: u64, level: u32) -> Result<(), i32> {
        for i in idx..idx + n as usize {
            let e = self.get(level, table, i);
            if e == LEAF {
                return Err(errno::EADDRINUSE);
            }
            if is_table(e) {
                if self.subtree_has_leaf(slot_of(e), level - 1) {
                    return Err(errno::EADDRINUSE);
                }
                self.list_pagetables(slot_of(e), level - 1);
                self.set(level, table, i, EMPTY);
            }
        }
        Ok(())
    }

    fn subtree_has_leaf(&self, slot: u32, level: u32) -> bool {
        (0..NPTE).any(|i| {
            let e = self.get(level, slot, i);
            e == LEAF || (is_table(e) && level > 1 && self.subtree_has_leaf(slot_of(e), level - 1))
        })
    }

    /// iommu_pt.h:__unmap_range() over [start, last] (pfns) in the table at `level`.
    /// A leaf at the start must be aligned (else -EINVAL); a leaf the range's end falls in
    /// is removed whole; an empty entry stops the walk (-EINVAL); a lower table fully
    /// covered by the range is queued for freeing after its own entries were cleared.
    /// Adds the pfns unmapped to `unmapped`.
    fn pt_unmap_level(
        &mut self,
        level: u32,
        table: u32,
        start: u64,
        last: u64,
        unmapped: &mut u64,
    ) -> Result<(), i32> {
        let size = level_size(level);
        let mut idx = pfn_level_offset(start, level);
        let mut entry_pfn = start & !(size - 1);
        let e = self.get(level, table, idx);
        if e == LEAF && start & (size - 1) != 0 {
            return Err(errno::EINVAL);
        }
        loop {
            let e = self.get(level, table, idx);
            if e == LEAF {
                self.set(level, table, idx, EMPTY);
                *unmapped += size;
            } else if e == EMPTY || level == 1 {
                return Err(errno::EINVAL);
            } else {
                let fully = start <= entry_pfn && entry_pfn + size - 1 <= last;
                let child = slot_of(e);
                self.pt_unmap_level(level - 1, child, start.max(entry_pfn), last, unmapped)?;
                if fully {
                    self.freelist.push((level - 1, child));
                    self.set(level, table, idx, EMPTY);
                }
            }
            idx += 1;
            entry_pfn += size;
            if idx == NPTE || entry_pfn > last {
                return Ok(());
            }
        }
    }

    fn pt_unmap_range(&mut self, iova: u64, len: u64) -> u64 {
        let Some(pgd) = self.pgd else { return 0 };
        if len == 0 {
            return 0;
        }
        let g = self.cfg.format.granule_lg2();
        let start = iova >> g;
        let last = (iova + len - 1) >> g;
        if !self.pfn_supported(last) {
            return 0;
        }
        let mut unmapped = 0;
        let _ = self.pt_unmap_level(self.levels, pgd, start, last, &mut unmapped);
        unmapped << g
    }
}

impl DomainOps for VtdModel {
    fn pgsize_bitmap(&self) -> u64 {
        self.cfg.pgsize_bitmap()
    }

    /// Legacy: iommu.c:intel_iommu_map_pages() -> intel_iommu_map() -> __domain_mapping().
    /// Generic pt, 6.19 (`map_pages` -> `map_range` of one chunk): a dynamic top grows to
    /// hold the chunk first; tables a leaf replaced are freed when the chunk returns.
    fn map_pages(
        &mut self,
        iova: u64,
        paddr: u64,
        pgsize: u64,
        pgcount: u64,
        log: &mut PageLog,
    ) -> (u64, Result<(), i32>) {
        if self.cfg.format.dynamic_top() && pgsize.is_power_of_two() && pgcount != 0 {
            let g = self.cfg.format.granule_lg2();
            let Some(last) = (pgcount << pgsize.trailing_zeros())
                .checked_sub(1)
                .and_then(|n| iova.checked_add(n))
            else {
                return (0, Err(errno::EOVERFLOW));
            };
            if let Err(e) = self.check_map_range(last >> g, self.leaf_level(pgsize), log) {
                return (0, Err(e));
            }
        }
        let r = self.map_chunk(iova, paddr, pgsize, pgcount, log);
        if !self.freelist.is_empty() {
            self.iotlb_sync(log);
        }
        r
    }

    /// 7.0+: the core hands the generic page table the whole range (iommu.c
    /// `iommu_map_nosync` -> `pt->ops->map_range`).
    fn map_range(
        &mut self,
        iova: u64,
        paddr: u64,
        size: u64,
        log: &mut PageLog,
    ) -> Option<(u64, Result<(), i32>)> {
        match self.cfg.flavour {
            VtdFlavour::GenericPt { whole_range: true } => {
                Some(self.pt_map_range(iova, paddr, size, log))
            }
            _ => None,
        }
    }

    /// Legacy: iommu.c:intel_iommu_unmap_pages() -> intel_iommu_unmap().
    /// Generic-pt 6.19: `unmap_pages` -> `unmap_range(iova, pgsize * pgcount)`.
    fn unmap_pages(&mut self, iova: u64, pgsize: u64, pgcount: u64, log: &mut PageLog) -> u64 {
        let size = pgcount << pgsize.trailing_zeros();
        match self.cfg.flavour {
            VtdFlavour::Legacy => self.intel_iommu_unmap(iova, size, log),
            VtdFlavour::GenericPt { .. } => self.pt_unmap_range(iova, size),
        }
    }

    /// 7.0+: the core passes the whole `iommu_unmap` range to the generic page table.
    fn unmap_range(&mut self, iova: u64, size: u64, _log: &mut PageLog) -> Option<u64> {
        match self.cfg.flavour {
            VtdFlavour::GenericPt { whole_range: true } => Some(self.pt_unmap_range(iova, size)),
            _ => None,
        }
    }

    /// iommu.c:intel_iommu_tlb_sync(): `iommu_put_pages_list(&gather->freelist)`.
    fn iotlb_sync(&mut self, log: &mut PageLog) {
        let n = self.freelist.len() as u64;
        while let Some((level, s)) = self.freelist.pop() {
            self.release(level, s);
        }
        log.free(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{chunk, PageOp};

    fn vtd(levels: u8, superpage: u8) -> VtdModel {
        let mut m = VtdModel::new(VtdConfig {
            levels,
            gaw: if levels == 5 { 57 } else { 48 },
            superpage,
            first_stage: false,
            flavour: VtdFlavour::Legacy,
            format: PtFormat::Vtdss,
        });
        m.domain_alloc(&mut PageLog::new());
        m
    }

    fn map(m: &mut VtdModel, iova: u64, size: u64) -> Vec<PageOp> {
        let mut log = PageLog::new();
        assert_eq!(chunk::iommu_map(m, iova, iova, size, &mut log), Ok(size));
        log.ops
    }

    fn unmap(m: &mut VtdModel, iova: u64, size: u64) -> (u64, Vec<PageOp>) {
        let mut log = PageLog::new();
        let n = chunk::iommu_unmap(m, iova, size, &mut log);
        (n, log.ops)
    }

    fn alloc(n: u64) -> PageOp {
        PageOp::Alloc {
            pages: n,
            gfp: Gfp::Caller,
        }
    }
    fn free(n: u64) -> PageOp {
        PageOp::Free { pages: n }
    }

    // paging_domain_alloc: one GFP_KERNEL pgd.
    #[test]
    fn pgd_at_alloc() {
        let mut m = VtdModel::new(VtdConfig {
            levels: 4,
            gaw: 48,
            superpage: 2,
            first_stage: false,
            flavour: VtdFlavour::Legacy,
            format: PtFormat::Vtdss,
        });
        let mut log = PageLog::new();
        m.domain_alloc(&mut log);
        assert_eq!(
            log.ops,
            vec![PageOp::Alloc {
                pages: 1,
                gfp: Gfp::Kernel
            }]
        );
    }

    // pfn_to_dma_pte: a first 4K map in a 4-level table allocates levels 3, 2, 1.
    #[test]
    fn first_4k_map_allocates_three_tables() {
        let mut m = vtd(4, 2);
        assert_eq!(map(&mut m, 0x1000, 0x1000), vec![alloc(3)]);
        // Same 2M region: nothing new.
        assert_eq!(map(&mut m, 0x2000, 0x1000), vec![]);
        // Next 2M region: one new level-1 table.
        assert_eq!(map(&mut m, SZ_2M, 0x1000), vec![alloc(1)]);
        assert_eq!(m.live_pages(), 5);
    }

    // 5 levels: one more table on the way down.
    #[test]
    fn five_levels() {
        let mut m = vtd(5, 2);
        assert_eq!(map(&mut m, 0, 0x1000), vec![alloc(4)]);
    }

    // hardware_largepage_caps: an aligned 2M map is a superpage in the level-2 table
    // (tables at levels 4->3, 3->2 only); 1G likewise stops at level 3.
    #[test]
    fn superpages_need_fewer_tables() {
        let mut m = vtd(4, 2);
        assert_eq!(map(&mut m, SZ_2M, SZ_2M), vec![alloc(2)]);
        let mut m = vtd(4, 2);
        assert_eq!(map(&mut m, SZ_1G, SZ_1G), vec![alloc(1)]);
        // superpages off: 2M of 4K pages needs one level-1 table.
        let mut m = vtd(4, 0);
        assert_eq!(map(&mut m, SZ_2M, SZ_2M), vec![alloc(3)]);
    }

    // dma_pte_clear_level "If range covers entire pagetable, free it", deferred to
    // intel_iommu_tlb_sync: unmapping a whole 2M of 4K pages frees the level-1 table.
    #[test]
    fn fully_covered_table_freed_at_sync() {
        let mut m = vtd(4, 0);
        map(&mut m, SZ_2M, SZ_2M);
        let (n, ops) = unmap(&mut m, SZ_2M, SZ_2M);
        assert_eq!(n, SZ_2M);
        assert_eq!(ops, vec![free(1)]);
        assert_eq!(m.live_pages(), 3);
    }

    // Piecemeal unmaps never free the emptied table (each call covers only part of it).
    #[test]
    fn piecemeal_unmap_keeps_table() {
        let mut m = vtd(4, 0);
        map(&mut m, 0, SZ_2M);
        for i in 0..512 {
            let (_, ops) = unmap(&mut m, i * 0x1000, 0x1000);
            assert_eq!(ops, vec![]);
        }
        assert_eq!(m.live_pages(), 4);
        // And a later covering unmap frees it (entries are not present, but the table is).
        let (_, ops) = unmap(&mut m, 0, SZ_2M);
        assert_eq!(ops, vec![free(1)]);
    }

    // iommu_pgsize chunks a 4K-aligned unmap: the first chunk (4K pages up to 2M) covers
    // only part of the first table, so only tables wholly inside one chunk go.
    #[test]
    fn chunking_limits_fully_covered() {
        let mut m = vtd(4, 2);
        // 4K .. 4M+4K as 4K pages (phys misaligned to stop superpages).
        let mut log = PageLog::new();
        chunk::iommu_map(&mut m, 0x1000, 0x10_1000, 2 * SZ_2M, &mut log).unwrap();
        assert_eq!(m.live_pages(), 1 + 2 + 3);
        let (n, ops) = unmap(&mut m, 0x1000, 2 * SZ_2M);
        assert_eq!(n, 2 * SZ_2M);
        // chunks: 4K x 511 [4K, 2M), 2M x 1 [2M, 4M) (level lookup: 4K PTE, size kept),
        // 4K x 1 [4M, 4M+4K). Only the table of [2M, 4M) is covered by one chunk.
        assert_eq!(ops, vec![free(1)]);
    }

    // switch_to_super_page: a superpage over an existing (empty) level-1 table frees the
    // table immediately, during the map.
    #[test]
    fn superpage_over_table_frees_it() {
        let mut m = vtd(4, 1);
        map(&mut m, SZ_2M, 0x1000);
        unmap(&mut m, SZ_2M, 0x1000);
        assert_eq!(m.live_pages(), 4);
        assert_eq!(map(&mut m, SZ_2M, SZ_2M), vec![free(1)]);
        assert_eq!(m.live_pages(), 3);
    }

    // intel_iommu_unmap rounds a 4K unmap of a 2M superpage up to 2M and returns 2M.
    #[test]
    fn unmap_rounds_up_to_superpage() {
        let mut m = vtd(4, 1);
        map(&mut m, SZ_2M, SZ_2M);
        let (n, ops) = unmap(&mut m, SZ_2M, 0x1000);
        assert_eq!(n, SZ_2M);
        assert_eq!(ops, vec![]);
        assert!(m.leaves().is_empty());
    }

    // intel_iommu_unmap of an unmapped 4K where even the level-3 entry is absent rounds up
    // to 512G (level 4 entry size) and reports it as unmapped.
    #[test]
    fn unmap_of_nothing_reports_level_size() {
        let mut m = vtd(4, 2);
        let (n, ops) = unmap(&mut m, 0, 0x1000);
        assert_eq!(n, 512 * SZ_1G);
        assert_eq!(ops, vec![]);
    }

    // domain_exit: everything, pgd included, freed at once.
    #[test]
    fn domain_free_frees_all() {
        let mut m = vtd(4, 2);
        map(&mut m, 0, 0x1000);
        map(&mut m, 512 * SZ_1G, 0x1000);
        assert_eq!(m.live_pages(), 1 + 3 + 3);
        let mut log = PageLog::new();
        m.domain_free(&mut log);
        assert_eq!(log.ops, vec![free(7)]);
        assert_eq!(m.live_pages(), 0);
    }

    fn generic(whole_range: bool) -> VtdModel {
        let mut m = VtdModel::new(VtdConfig {
            levels: 4,
            gaw: 48,
            superpage: 2,
            first_stage: false,
            flavour: VtdFlavour::GenericPt { whole_range },
            format: PtFormat::Vtdss,
        });
        m.domain_alloc(&mut PageLog::new());
        m
    }

    // iommu_pt.h:__unmap_range: a fully covered lower table is freed (at the IOTLB sync).
    #[test]
    fn generic_pt_fully_covered() {
        for whole in [false, true] {
            let mut m = generic(whole);
            let mut log = PageLog::new();
            chunk::iommu_map(&mut m, 0, 0x1000, SZ_2M, &mut log).unwrap();
            assert_eq!(log.ops, vec![alloc(3)]);
            let (n, ops) = unmap(&mut m, 0, SZ_2M);
            assert_eq!((n, ops), (SZ_2M, vec![free(1)]), "whole_range={whole}");
        }
    }

    // __unmap_range: an empty entry stops the walk; the bytes before it are reported.
    #[test]
    fn generic_pt_hole_stops_unmap() {
        for whole in [false, true] {
            let mut m = generic(whole);
            map(&mut m, 0, 0x2000);
            map(&mut m, 0x4000, 0x1000);
            let (n, ops) = unmap(&mut m, 0, 0x5000);
            assert_eq!((n, ops), (0x2000, vec![]), "whole_range={whole}");
        }
    }

    // generic_pt map: a leaf over an empty lower table frees it; over a table that still
    // maps something the map fails with -EADDRINUSE.
    #[test]
    fn generic_pt_leaf_over_table() {
        let mut m = generic(false);
        map(&mut m, SZ_2M, 0x1000);
        unmap(&mut m, SZ_2M, 0x1000);
        assert_eq!(map(&mut m, SZ_2M, SZ_2M), vec![free(1)]);
        let mut m = generic(false);
        map(&mut m, SZ_2M, 0x1000);
        let mut log = PageLog::new();
        assert_eq!(
            chunk::iommu_map(&mut m, SZ_2M, 0, SZ_2M, &mut log),
            Err(errno::EADDRINUSE)
        );
    }

    // The iommufd selftest's AMDv1 mock format (7.x): 2K granule, 512-entry 4K tables,
    // 3 levels (items of 2K, 1M and 512M), a leaf of any power of two. Numbers from a 7.3
    // capture (tests/golden/7.3-mock-exercise.itc): the top table at allocation, then a
    // 64K map needs a level-1 and a level-0 table.
    #[test]
    fn amdv1_mock_tables() {
        let mut m = VtdModel::new(VtdConfig {
            levels: 3,
            gaw: 38,
            superpage: 0,
            first_stage: false,
            flavour: VtdFlavour::GenericPt { whole_range: true },
            format: PtFormat::Amdv1Mock {
                pgsize_bitmap: 0x1F_FFFF_F800,
            },
        });
        let mut log = PageLog::new();
        m.domain_alloc(&mut log);
        assert_eq!(
            log.ops,
            vec![PageOp::Alloc {
                pages: 1,
                gfp: Gfp::Kernel
            }]
        );
        assert_eq!(map(&mut m, 0x4300_0000, 0x1_0000), vec![alloc(2)]);
        // 2M in the same 512M: two contiguous 1M leaves in the existing level-1 table.
        assert_eq!(map(&mut m, 0x4320_0000, SZ_2M), vec![]);
        assert_eq!(m.leaves().iter().filter(|(_, l)| *l == 2).count(), 2);
        // A 4K map in another 1M: one more level-0 table.
        assert_eq!(map(&mut m, 0x4400_0000, SZ_4K), vec![alloc(1)]);
        // The level-0 table of 0x44000000 spans 1M: a 4K unmap does not cover it.
        assert_eq!(unmap(&mut m, 0x4400_0000, SZ_4K), (SZ_4K, vec![]));
        // The 2M leaf goes whole; no table under it.
        assert_eq!(unmap(&mut m, 0x4320_0000, SZ_2M), (SZ_2M, vec![]));
        let mut log = PageLog::new();
        m.domain_free(&mut log);
        assert_eq!(log.ops, vec![free(4)]);
        assert_eq!(m.live_pages(), 0);
    }

    fn amdv1(gaw: u8, pgsize_bitmap: u64) -> VtdModel {
        let mut m = VtdModel::new(VtdConfig {
            levels: 3,
            gaw,
            superpage: 0,
            first_stage: false,
            flavour: VtdFlavour::GenericPt { whole_range: true },
            format: PtFormat::Amdv1 { pgsize_bitmap },
        });
        m.domain_alloc(&mut PageLog::new());
        m
    }
    /// AMD_IOMMU_PGSIZES (amd_iommu_types.h): every power of two from 4K to 2^51 but 512G.
    const AMD_PGSIZES: u64 = crate::model::amd_v1::AMD_IOMMU_PGSIZES;

    // increase_top (iommu_pt.h): the 3-level table of amd_iommu_domain_alloc_paging_v1
    // (starting_level 2) gains a level, of the map's gfp, for a map beyond 2^39 and another
    // beyond 2^48; the path below each new top is built as usual. Numbers as in
    // tests/golden/7.3-amd-mock-exercise.itc (4 and 5 pages).
    #[test]
    fn amdv1_top_grows_on_map() {
        let mut m = amdv1(64, AMD_PGSIZES);
        assert_eq!(map(&mut m, 0x4000_0000, SZ_4K), vec![alloc(2)]);
        assert_eq!(map(&mut m, (1 << 39) + 0x4000_0000, SZ_4K), vec![alloc(4)]);
        assert_eq!(m.levels(), 4);
        assert_eq!(map(&mut m, (1 << 48) + 0x4000_0000, SZ_4K), vec![alloc(5)]);
        assert_eq!(m.levels(), 5);
        // Unmapping the high page frees nothing: its 4K range covers no table.
        assert_eq!(
            unmap(&mut m, (1 << 48) + 0x4000_0000, SZ_4K),
            (SZ_4K, vec![])
        );
        let mut log = PageLog::new();
        m.domain_free(&mut log);
        assert_eq!(log.ops, vec![free(12)]);
    }

    // increase_top: past max_vasz_lg2 (48 here) the map fails with -ERANGE, and the level
    // it allocated on the way is freed.
    #[test]
    fn amdv1_growth_stops_at_max_vasz() {
        let mut m = amdv1(48, AMD_PGSIZES);
        let mut log = PageLog::new();
        assert_eq!(
            chunk::iommu_map(&mut m, 1 << 48, 1 << 48, SZ_4K, &mut log),
            Err(errno::ERANGE)
        );
        assert_eq!(log.ops, vec![alloc(1), free(1)]);
        assert_eq!(m.levels(), 3);
    }

    // NS(map_range) on 7.x: a range no page size fits (misaligned to 4K) is -ENXIO; one
    // that wraps past the end of the address space is -EOVERFLOW; neither touches a table.
    #[test]
    fn generic_pt_bad_ranges() {
        let mut m = amdv1(64, AMD_PGSIZES);
        for (iova, paddr, size, want) in [
            (0x800, 0x800, SZ_4K, errno::ENXIO),
            (0, 0, 0x1800, errno::ENXIO),
            (u64::MAX - 0xfff, 0, 2 * SZ_4K, errno::EOVERFLOW),
        ] {
            let mut log = PageLog::new();
            assert_eq!(
                chunk::iommu_map(&mut m, iova, paddr, size, &mut log),
                Err(want)
            );
            assert_eq!(log.ops, vec![], "{iova:#x}+{size:#x}");
        }
        assert_eq!(m.live_pages(), 1);
    }

    // fmt/amdv1.h: a 64K leaf is 16 contiguous 4K entries and a 4M leaf 2 contiguous 2M
    // entries; the whole-range unmap removes them and frees the tables it covers.
    #[test]
    fn amdv1_contiguous_leaves() {
        let mut m = amdv1(64, AMD_PGSIZES);
        assert_eq!(map(&mut m, 0x1_0000, 0x1_0000), vec![alloc(2)]);
        assert_eq!(m.leaves().len(), 16);
        assert_eq!(map(&mut m, 4 * SZ_2M, 2 * SZ_2M), vec![]);
        assert_eq!(m.leaves().iter().filter(|(_, l)| *l == 2).count(), 2);
        assert_eq!(unmap(&mut m, 4 * SZ_2M, 2 * SZ_2M), (2 * SZ_2M, vec![]));
        assert_eq!(
            unmap(&mut m, 0, SZ_2M),
            (0, vec![]),
            "a hole at 0 stops the walk"
        );
        assert_eq!(unmap(&mut m, 0x1_0000, 0x1_0000), (0x1_0000, vec![]));
    }

    // __map_range_leaf / __do_map_single_page: a 4K PTE over a present one fails with
    // -EADDRINUSE (legacy VT-d keeps the old PTE and WARNs).
    #[test]
    fn generic_pt_4k_over_4k_is_in_use() {
        let mut m = amdv1(64, AMD_PGSIZES);
        map(&mut m, 0, SZ_4K);
        let mut log = PageLog::new();
        assert_eq!(
            chunk::iommu_map(&mut m, 0, 0, SZ_4K, &mut log),
            Err(errno::EADDRINUSE)
        );
        assert_eq!(m.pte_already_set, 0);
    }
}
