//! Arm SMMUv3 page tables through `drivers/iommu/io-pgtable-arm.c` (LPAE, stage 1 and
//! stage 2, 4K/16K/64K granules). docs/kernel-facts.md §4.2; 6.12 source unless noted.
//!
//! Levels are numbered as the kernel does: the walk starts at `start_level` and the last
//! level is 3 (`ARM_LPAE_MAX_LEVELS - 1`), where leaves are pages; leaves above are blocks.
//! The model keeps (in `store.rs`) one `u32` per entry of a table above the last level
//! (empty, leaf, or store slot of the lower table) and one bit per entry of a last-level
//! table (page present or not).

use super::store::Store;
use super::{errno, DomainOps, Gfp, PageLog};

pub const SZ_4K: u64 = 1 << 12;
pub const SZ_16K: u64 = 1 << 14;
pub const SZ_64K: u64 = 1 << 16;
const SZ_2M: u64 = 1 << 21;
const SZ_32M: u64 = 1 << 25;
const SZ_512M: u64 = 1 << 29;
const SZ_1G: u64 = 1 << 30;
const SZ_4T: u64 = 1 << 42;

/// ARM_LPAE_MAX_LEVELS
const MAX_LEVELS: u32 = 4;
/// ARM_LPAE_S2_MAX_CONCAT_PAGES
const S2_MAX_CONCAT_PAGES: u64 = 16;

const EMPTY: u32 = 0;
const LEAF: u32 = 1;
/// The pgd, which lives outside the store (its size differs from a granule).
const PGD: u32 = u32::MAX;
/// The last level, whose tables hold pages only: bitmaps in the store.
const LAST_LEVEL: u32 = MAX_LEVELS - 1;

#[inline]
fn is_table(e: u32) -> bool {
    e >= 2
}

/// Which io-pgtable-arm rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LpaeRules {
    V6_12,
    V7,
}

/// What `arm_smmu_domain_finalise()` hands io-pgtable-arm.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LpaeConfig {
    /// Translation granule in bytes: 4K, 16K or 64K.
    pub granule: u64,
    /// Input address size (bits), before `arm_lpae_restrict_pgsizes()` clamps it.
    pub ias: u32,
    /// Output address size (bits), when known.
    pub oas: Option<u32>,
    /// 1 (`ARM_64_LPAE_S1`) or 2 (`ARM_64_LPAE_S2`).
    pub stage: u8,
    pub rules: LpaeRules,
    /// The domain's `pgsize_bitmap` as captured; else the granule's full set.
    pub pgsize_bitmap: Option<u64>,
}

/// Derived geometry (io-pgtable-arm.c:arm_lpae_alloc_pgtable and the S2 concatenation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LpaeGeometry {
    pub bits_per_level: u32,
    pub start_level: u32,
    pub pgd_bits: u32,
    pub ias: u32,
    pub pgsize_bitmap: u64,
}

impl LpaeGeometry {
    /// ARM_LPAE_PGD_SIZE
    pub fn pgd_size(&self) -> u64 {
        8u64 << self.pgd_bits
    }
    /// ARM_LPAE_GRANULE
    pub fn granule(&self) -> u64 {
        8u64 << self.bits_per_level
    }
    /// Pages one allocation of `size` bytes costs: `1 << get_order(size)` (6.12:
    /// `iommu_alloc_pages_node(.., get_order(size))`; 7.x: `iommu_alloc_pages_node_sz`
    /// of `max(size, 64)` rounds the same way). A sub-page pgd still costs a page.
    fn pages(size: u64) -> u64 {
        size.div_ceil(4096).next_power_of_two().max(1)
    }
    pub fn pgd_pages(&self) -> u64 {
        Self::pages(self.pgd_size())
    }
    pub fn table_pages(&self) -> u64 {
        Self::pages(self.granule())
    }
}

impl LpaeConfig {
    pub fn validate(&self) -> Result<LpaeGeometry, String> {
        self.geometry()
    }

    /// io-pgtable-arm.c:arm_lpae_restrict_pgsizes() + arm_lpae_alloc_pgtable() +
    /// arm_64_lpae_alloc_pgtable_s2() (concatenation).
    pub fn geometry(&self) -> Result<LpaeGeometry, String> {
        let (page_sizes, max_addr_bits) = match self.granule {
            SZ_4K => (SZ_4K | SZ_2M | SZ_1G, 48),
            SZ_16K => (SZ_16K | SZ_32M, 48),
            SZ_64K => (
                SZ_64K
                    | SZ_512M
                    | if self.oas.is_some_and(|o| o > 48) {
                        SZ_4T
                    } else {
                        0
                    },
                52,
            ),
            g => return Err(format!("granule {g:#x} is not 4K, 16K or 64K")),
        };
        let pgsize_bitmap = self.pgsize_bitmap.map_or(page_sizes, |b| b & page_sizes);
        if pgsize_bitmap & self.granule == 0 {
            return Err(format!(
                "page-size bitmap {:#x} lacks the {:#x} granule",
                self.pgsize_bitmap.unwrap_or(0),
                self.granule
            ));
        }
        if !(self.stage == 1 || self.stage == 2) {
            return Err(format!("stage {} is not 1 or 2", self.stage));
        }
        let ias = self.ias.min(max_addr_bits);
        let oas = self.oas.map(|o| o.min(max_addr_bits));
        let pg_shift = self.granule.trailing_zeros();
        let bits_per_level = pg_shift - 3;
        if ias <= pg_shift + 1 {
            return Err(format!("ias {} is too small", self.ias));
        }
        let va_bits = ias - pg_shift;
        let levels = va_bits.div_ceil(bits_per_level);
        if levels > MAX_LEVELS {
            return Err(format!("ias {ias} needs {levels} levels"));
        }
        let mut start_level = MAX_LEVELS - levels;
        let mut pgd_bits = va_bits - bits_per_level * (levels - 1);
        if self.stage == 2 {
            let concat = match self.rules {
                // 6.12: "if (data->start_level == 0) { pgd_pages = PGD_SIZE / 8;
                //        if (pgd_pages <= ARM_LPAE_S2_MAX_CONCAT_PAGES) ..."
                LpaeRules::V6_12 => start_level == 0 && (1u64 << pgd_bits) <= S2_MAX_CONCAT_PAGES,
                // 7.x: arm_lpae_concat_mandatory()
                LpaeRules::V7 => {
                    let oas = oas.unwrap_or(0);
                    match (self.granule, start_level) {
                        (SZ_16K, 0) => oas == 48 || ias == 48,
                        (SZ_4K, 0) => oas == 40 || oas == 42,
                        (SZ_16K, 1) => oas == 40,
                        _ => false,
                    }
                }
            };
            if concat {
                if (1u64 << pgd_bits) > S2_MAX_CONCAT_PAGES {
                    return Err("stage-2 concatenation over 16 tables (WARN)".into());
                }
                pgd_bits += bits_per_level;
                start_level += 1;
            }
        }
        Ok(LpaeGeometry {
            bits_per_level,
            start_level,
            pgd_bits,
            ias,
            pgsize_bitmap,
        })
    }

    pub fn describe(&self) -> String {
        let geo = self.geometry();
        let g = match self.granule {
            SZ_4K => "4K",
            SZ_16K => "16K",
            SZ_64K => "64K",
            _ => "?",
        };
        let rules = match self.rules {
            LpaeRules::V6_12 => "6.12",
            LpaeRules::V7 => "7.x",
        };
        match geo {
            Ok(geo) => format!(
                "SMMUv3 LPAE S{} {} granule ias {} (start level {}, pgd {} bytes) io-pgtable-arm {}",
                self.stage,
                g,
                geo.ias,
                geo.start_level,
                geo.pgd_size(),
                rules
            ),
            Err(e) => format!("SMMUv3 LPAE S{} {} granule: {}", self.stage, g, e),
        }
    }
}

/// An SMMUv3 domain's io-pgtable.
#[derive(Clone, Debug)]
pub struct LpaeModel {
    cfg: LpaeConfig,
    geo: LpaeGeometry,
    pgd: Vec<u32>,
    pgd_allocated: bool,
    store: Store,
    live_pages: u64,
    unsupported: Option<String>,
    /// Partial block unmaps refused (7.x WARN_ONCE).
    pub partial_block_refused: u64,
}

impl LpaeModel {
    /// Panics if the configuration is invalid: build it through [`LpaeConfig::validate`].
    pub fn new(cfg: LpaeConfig) -> Self {
        let geo = cfg.geometry().expect("validated LPAE configuration");
        LpaeModel {
            pgd: vec![EMPTY; 1 << geo.pgd_bits],
            cfg,
            geo,
            pgd_allocated: false,
            store: Store::new(1 << geo.bits_per_level),
            live_pages: 0,
            unsupported: None,
            partial_block_refused: 0,
        }
    }

    pub fn geometry(&self) -> LpaeGeometry {
        self.geo
    }

    pub fn config(&self) -> &LpaeConfig {
        &self.cfg
    }

    /// Memory the model's tables take (not the kernel's: see `store.rs`).
    pub fn model_bytes(&self) -> u64 {
        self.store.bytes() + self.pgd.len() as u64 * 4
    }

    /// (bytes one last-level entry maps, entries per table): what the replay's budget
    /// bounds a map's tables by.
    pub fn table_geometry(&self) -> (u64, u64) {
        let g = self.geo.granule();
        (g, g / 8)
    }

    pub fn live_pages(&self) -> u64 {
        self.live_pages
    }

    pub fn unsupported(&self) -> Option<&str> {
        self.unsupported.as_deref()
    }

    pub fn pgsize_bitmap(&self) -> u64 {
        self.geo.pgsize_bitmap
    }

    fn ptes_per_table(&self) -> usize {
        1 << self.geo.bits_per_level
    }

    /// ARM_LPAE_LVL_SHIFT
    #[inline]
    fn lvl_shift(&self, l: u32) -> u32 {
        (MAX_LEVELS - l) * self.geo.bits_per_level + 3
    }
    /// ARM_LPAE_BLOCK_SIZE
    #[inline]
    fn block_size(&self, l: u32) -> u64 {
        1u64 << self.lvl_shift(l)
    }
    /// ARM_LPAE_LVL_IDX (the start level indexes the possibly concatenated pgd)
    #[inline]
    fn lvl_idx(&self, iova: u64, l: u32) -> usize {
        // bits_per_level + ARM_LPAE_PGD_IDX(l) = pgd_bits at the start level
        let bits = if l == self.geo.start_level {
            self.geo.pgd_bits
        } else {
            self.geo.bits_per_level
        };
        ((iova >> self.lvl_shift(l)) & ((1u64 << bits) - 1)) as usize
    }
    /// io-pgtable-arm.c:arm_lpae_max_entries(): entries left in the same table page.
    #[inline]
    fn max_entries(&self, i: usize) -> usize {
        let p = self.ptes_per_table();
        p - (i & (p - 1))
    }

    /// Entry `i` of table `t` (an entry value, or PGD), whose entries are at level `lvl`.
    #[inline]
    fn get(&self, lvl: u32, t: u32, i: usize) -> u32 {
        if t == PGD {
            self.pgd[i]
        } else if lvl == LAST_LEVEL {
            self.store.bit(t - 2, i) as u32
        } else {
            self.store.upper(t - 2)[i]
        }
    }
    #[inline]
    fn set(&mut self, lvl: u32, t: u32, i: usize, e: u32) {
        if t == PGD {
            self.pgd[i] = e;
        } else if lvl == LAST_LEVEL {
            debug_assert!(e == EMPTY || e == LEAF);
            self.store.set_bit(t - 2, i, e == LEAF);
        } else {
            self.store.upper_mut(t - 2)[i] = e;
        }
    }

    /// io-pgtable-arm.c:__arm_lpae_alloc_pages(ARM_LPAE_GRANULE, gfp): a table for entries
    /// of level `lvl`; returns the entry value (store slot + 2).
    fn alloc_table(&mut self, lvl: u32, gfp: Gfp, log: &mut PageLog) -> u32 {
        let pages = self.geo.table_pages();
        self.live_pages += pages;
        log.alloc(pages, gfp);
        self.store.alloc(lvl == LAST_LEVEL) + 2
    }

    /// io-pgtable-arm.c:__arm_lpae_free_pgtable(lvl, table): the table and everything
    /// below it, freed now. Returns pages freed.
    fn free_pgtable(&mut self, t: u32, lvl: u32) -> u64 {
        let mut pages = 0;
        if lvl < MAX_LEVELS - 1 {
            let n = if t == PGD {
                self.pgd.len()
            } else {
                self.ptes_per_table()
            };
            for i in 0..n {
                let e = self.get(lvl, t, i);
                if is_table(e) {
                    pages += self.free_pgtable(e, lvl + 1);
                }
            }
        }
        if t == PGD {
            self.pgd.fill(EMPTY);
            self.pgd_allocated = false;
            pages += self.geo.pgd_pages();
        } else {
            self.store.release(lvl == LAST_LEVEL, t - 2);
            pages += self.geo.table_pages();
        }
        self.live_pages -= pages.min(self.live_pages);
        pages
    }

    /// arm_64_lpae_alloc_pgtable_s1/s2: the pgd, `__arm_lpae_alloc_pages(PGD_SIZE,
    /// GFP_KERNEL)`.
    pub fn domain_alloc(&mut self, log: &mut PageLog) {
        if !self.pgd_allocated {
            self.pgd_allocated = true;
            let pages = self.geo.pgd_pages();
            self.live_pages += pages;
            log.alloc(pages, Gfp::Kernel);
        }
    }

    /// arm_smmu_domain_free_paging -> free_io_pgtable_ops -> arm_lpae_free_pgtable ->
    /// `__arm_lpae_free_pgtable(data, start_level, pgd)`.
    pub fn domain_free(&mut self, log: &mut PageLog) {
        if self.pgd_allocated {
            // Each table is freed separately in the kernel; summed here (one run).
            let pages = self.free_pgtable(PGD, self.geo.start_level);
            log.free(pages);
        }
    }

    /// Every table present, as (level of its entries, first iova it covers), sorted.
    pub fn tables(&self) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        if self.pgd_allocated {
            self.collect(PGD, self.geo.start_level, 0, &mut out, &mut Vec::new());
        }
        out.sort_unstable();
        out
    }

    /// Every leaf, as (iova, level), sorted.
    pub fn leaves(&self) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        if self.pgd_allocated {
            self.collect(PGD, self.geo.start_level, 0, &mut Vec::new(), &mut out);
        }
        out.sort_unstable();
        out
    }

    fn collect(
        &self,
        t: u32,
        lvl: u32,
        base: u64,
        tables: &mut Vec<(u32, u64)>,
        leaves: &mut Vec<(u64, u32)>,
    ) {
        tables.push((lvl, base));
        let n = if t == PGD {
            self.pgd.len()
        } else {
            self.ptes_per_table()
        };
        for i in 0..n {
            let e = self.get(lvl, t, i);
            let b = base + i as u64 * self.block_size(lvl);
            if e == LEAF {
                leaves.push((b, lvl));
            } else if is_table(e) {
                self.collect(e, lvl + 1, b, tables, leaves);
            }
        }
    }

    /// io-pgtable-arm.c:__arm_lpae_map(), iteratively: a leaf where `size ==
    /// block_size(lvl)` (at most the rest of this table: arm_lpae_max_entries), else a
    /// table allocated on demand with the iommu_map gfp, then the next level.
    fn arm_lpae_map(
        &mut self,
        iova: u64,
        size: u64,
        pgcount: u64,
        log: &mut PageLog,
    ) -> (u64, Result<(), i32>) {
        let mut lvl = self.geo.start_level;
        let mut t = PGD;
        loop {
            let idx = self.lvl_idx(iova, lvl);
            if size == self.block_size(lvl) {
                let n = (pgcount as usize).min(self.max_entries(idx));
                if lvl == LAST_LEVEL && t != PGD {
                    // A run of pages: no tables below, so only existing pages matter.
                    if self.store.any_bit(t - 2, idx, idx + n) {
                        return (0, Err(errno::EEXIST));
                    }
                    self.store.set_bits(t - 2, idx, idx + n);
                    return (n as u64 * size, Ok(()));
                }
                // arm_lpae_init_pte(): an existing leaf is -EEXIST; an existing table is
                // unmapped and freed first (__arm_lpae_unmap at this level frees it now).
                for i in 0..n {
                    let e = self.get(lvl, t, idx + i);
                    if e == LEAF {
                        return (0, Err(errno::EEXIST));
                    } else if is_table(e) {
                        self.set(lvl, t, idx + i, EMPTY);
                        let pages = self.free_pgtable(e, lvl + 1);
                        log.free(pages);
                    }
                }
                for i in 0..n {
                    self.set(lvl, t, idx + i, LEAF);
                }
                return (n as u64 * size, Ok(()));
            }
            // We can't allocate tables at the final level
            if lvl >= MAX_LEVELS - 1 {
                return (0, Err(errno::EINVAL));
            }
            let mut e = self.get(lvl, t, idx);
            if e == EMPTY {
                e = self.alloc_table(lvl + 1, Gfp::Caller, log);
                self.set(lvl, t, idx, e);
            } else if e == LEAF {
                // We require an unmap first
                return (0, Err(errno::EEXIST));
            }
            t = e;
            lvl += 1;
        }
    }

    /// io-pgtable-arm.c:__arm_lpae_unmap(): at the level whose block size equals the
    /// chunk's page size, clear up to `pgcount` entries (stopping at an empty one) and
    /// free, immediately, the subtree of each table entry among them. Above that level a
    /// leaf (block) is split (6.12) or refused (7.x); a table is walked into.
    fn arm_lpae_unmap(
        &mut self,
        iova: u64,
        size: u64,
        pgcount: u64,
        lvl: u32,
        t: u32,
        log: &mut PageLog,
    ) -> u64 {
        if lvl == MAX_LEVELS {
            return 0;
        }
        let idx = self.lvl_idx(iova, lvl);
        let e = self.get(lvl, t, idx);
        if e == EMPTY {
            return 0; // WARN_ON(!pte)
        }
        if size == self.block_size(lvl) {
            let n = (pgcount as usize).min(self.max_entries(idx));
            let mut i = 0;
            while i < n {
                let e = self.get(lvl, t, idx + i);
                if e == EMPTY {
                    break;
                }
                self.set(lvl, t, idx + i, EMPTY);
                if is_table(e) {
                    // io_pgtable_tlb_flush_walk, then __arm_lpae_free_pgtable: not
                    // deferred to the gather.
                    let pages = self.free_pgtable(e, lvl + 1);
                    log.free(pages);
                }
                i += 1;
            }
            i as u64 * size
        } else if e == LEAF {
            self.split_blk_unmap(iova, size, lvl + 1, t, idx, pgcount, log)
        } else {
            self.arm_lpae_unmap(iova, size, pgcount, lvl + 1, e, log)
        }
    }

    /// io-pgtable-arm.c:arm_lpae_split_blk_unmap() (6.12): replace the block by a table
    /// (GFP_ATOMIC) of smaller leaves minus the part unmapped; recurse when the unmap is
    /// smaller than the next level's blocks. 7.x: "Unmap of a partial large IOPTE is not
    /// allowed" (WARN_ONCE, 0 bytes).
    #[expect(
        clippy::too_many_arguments,
        reason = "mirrors the kernel function's arguments"
    )]
    fn split_blk_unmap(
        &mut self,
        iova: u64,
        size: u64,
        lvl: u32,
        parent: u32,
        pidx: usize,
        pgcount: u64,
        log: &mut PageLog,
    ) -> u64 {
        if self.cfg.rules == LpaeRules::V7 {
            self.partial_block_refused += 1;
            return 0;
        }
        if lvl == MAX_LEVELS {
            return 0;
        }
        let table = self.alloc_table(lvl, Gfp::Atomic, log);
        let split_sz = self.block_size(lvl);
        let (start, n) = if size == split_sz {
            let s = self.lvl_idx(iova, lvl);
            (s, (pgcount as usize).min(self.max_entries(s)))
        } else {
            (0, 0)
        };
        for i in 0..self.ptes_per_table() {
            if i >= start && i < start + n {
                continue;
            }
            self.set(lvl, table, i, LEAF);
        }
        self.set(lvl - 1, parent, pidx, table);
        if size == split_sz {
            n as u64 * size
        } else {
            self.arm_lpae_unmap(iova, size, pgcount, lvl, table, log)
        }
    }
}

impl DomainOps for LpaeModel {
    fn pgsize_bitmap(&self) -> u64 {
        self.geo.pgsize_bitmap
    }

    /// io-pgtable-arm.c:arm_lpae_map_pages()
    fn map_pages(
        &mut self,
        iova: u64,
        paddr: u64,
        pgsize: u64,
        pgcount: u64,
        log: &mut PageLog,
    ) -> (u64, Result<(), i32>) {
        if pgsize == 0 || pgsize & self.geo.pgsize_bitmap != pgsize {
            return (0, Err(errno::EINVAL));
        }
        if iova >> self.geo.ias != 0 {
            return (0, Err(errno::ERANGE));
        }
        if let Some(oas) = self.cfg.oas {
            let max = if self.cfg.granule == SZ_64K { 52 } else { 48 };
            if paddr >> oas.min(max) != 0 {
                return (0, Err(errno::ERANGE));
            }
        }
        if !self.pgd_allocated {
            return (0, Err(errno::EINVAL));
        }
        self.arm_lpae_map(iova, pgsize, pgcount, log)
    }

    /// io-pgtable-arm.c:arm_lpae_unmap_pages()
    fn unmap_pages(&mut self, iova: u64, pgsize: u64, pgcount: u64, log: &mut PageLog) -> u64 {
        if pgsize == 0 || pgsize & self.geo.pgsize_bitmap != pgsize || pgcount == 0 {
            return 0;
        }
        if iova >> self.geo.ias != 0 || !self.pgd_allocated {
            return 0;
        }
        let start = self.geo.start_level;
        self.arm_lpae_unmap(iova, pgsize, pgcount, start, PGD, log)
    }

    /// arm_smmu_iotlb_sync: invalidation only; io-pgtable-arm frees tables immediately.
    fn iotlb_sync(&mut self, _log: &mut PageLog) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{chunk, PageOp};

    fn cfg(granule: u64, ias: u32, stage: u8, rules: LpaeRules) -> LpaeConfig {
        LpaeConfig {
            granule,
            ias,
            oas: Some(ias),
            stage,
            rules,
            pgsize_bitmap: None,
        }
    }

    fn model(c: LpaeConfig) -> LpaeModel {
        let mut m = LpaeModel::new(c);
        m.domain_alloc(&mut PageLog::new());
        m
    }

    fn alloc(n: u64, gfp: Gfp) -> PageOp {
        PageOp::Alloc { pages: n, gfp }
    }
    fn free(n: u64) -> PageOp {
        PageOp::Free { pages: n }
    }

    fn map(m: &mut LpaeModel, iova: u64, size: u64) -> Vec<PageOp> {
        let mut log = PageLog::new();
        assert_eq!(chunk::iommu_map(m, iova, iova, size, &mut log), Ok(size));
        log.ops
    }
    fn unmap(m: &mut LpaeModel, iova: u64, size: u64) -> (u64, Vec<PageOp>) {
        let mut log = PageLog::new();
        let n = chunk::iommu_unmap(m, iova, size, &mut log);
        (n, log.ops)
    }

    // arm_lpae_alloc_pgtable: the examples of docs/kernel-facts.md §4.2.
    #[test]
    fn geometry_examples() {
        let g = cfg(SZ_4K, 48, 1, LpaeRules::V6_12).geometry().unwrap();
        assert_eq!((g.start_level, g.pgd_size(), g.pgd_pages()), (0, 4096, 1));
        let g = cfg(SZ_4K, 40, 1, LpaeRules::V6_12).geometry().unwrap();
        assert_eq!((g.start_level, g.pgd_size()), (0, 16));
        let g = cfg(SZ_64K, 48, 1, LpaeRules::V6_12).geometry().unwrap();
        assert_eq!((g.start_level, g.pgd_size(), g.pgd_pages()), (1, 512, 1));
        let g = cfg(SZ_16K, 48, 1, LpaeRules::V6_12).geometry().unwrap();
        assert_eq!((g.start_level, g.pgd_size()), (0, 16));
        // ias above 48 is clamped for 4K (arm_lpae_restrict_pgsizes).
        let g = cfg(SZ_4K, 52, 1, LpaeRules::V6_12).geometry().unwrap();
        assert_eq!(g.ias, 48);
    }

    // arm_64_lpae_alloc_pgtable_s2 (6.12): 4K ias 40 concatenates two level-1 tables
    // (8 KiB, order 1 = 2 pages). 7.x: only when arm_lpae_concat_mandatory (oas 40 yes).
    #[test]
    fn s2_concatenation() {
        let g = cfg(SZ_4K, 40, 2, LpaeRules::V6_12).geometry().unwrap();
        assert_eq!((g.start_level, g.pgd_size(), g.pgd_pages()), (1, 8192, 2));
        let g = cfg(SZ_4K, 48, 2, LpaeRules::V6_12).geometry().unwrap();
        assert_eq!((g.start_level, g.pgd_pages()), (0, 1)); // 512 entries: no concat
        let mut c = cfg(SZ_4K, 40, 2, LpaeRules::V7);
        c.oas = Some(44);
        assert_eq!(c.geometry().unwrap().start_level, 0); // not mandatory
        c.oas = Some(40);
        assert_eq!(c.geometry().unwrap().start_level, 1);
        // 16K ias 48 start level 0 (2 entries): mandatory in 7.x, done in 6.12 too.
        let g = cfg(SZ_16K, 48, 2, LpaeRules::V7).geometry().unwrap();
        assert_eq!((g.start_level, g.pgd_size(), g.pgd_pages()), (1, 32768, 8));
    }

    // __arm_lpae_map: 4K page at level 3 needs tables at levels 1, 2, 3 below the pgd.
    #[test]
    fn map_allocates_granule_tables() {
        let mut m = model(cfg(SZ_4K, 48, 1, LpaeRules::V6_12));
        assert_eq!(map(&mut m, 0x1000, 0x1000), vec![alloc(3, Gfp::Caller)]);
        // 2M block: tables at levels 1, 2 only (already there).
        assert_eq!(map(&mut m, SZ_2M, SZ_2M), vec![]);
        // 16K granule: each table is 4 pages.
        let mut m = model(cfg(SZ_16K, 48, 1, LpaeRules::V6_12));
        assert_eq!(map(&mut m, 0x4000, 0x4000), vec![alloc(12, Gfp::Caller)]);
        // 64K, ias 48: start level 1; tables at 2, 3 = 2 x 16 pages.
        let mut m = model(cfg(SZ_64K, 48, 1, LpaeRules::V6_12));
        assert_eq!(map(&mut m, 0x10000, 0x10000), vec![alloc(32, Gfp::Caller)]);
    }

    // __arm_lpae_unmap: a table is freed only when an unmap chunk's pgsize equals its
    // parent's block size; piecemeal 4K unmaps never free it.
    #[test]
    fn table_freed_only_by_block_sized_chunk() {
        let mut m = model(cfg(SZ_4K, 48, 1, LpaeRules::V6_12));
        let mut log = PageLog::new();
        chunk::iommu_map(&mut m, SZ_2M, 0x1000, SZ_2M, &mut log).unwrap(); // 4K pages
        for i in 0..511 {
            assert_eq!(unmap(&mut m, SZ_2M + i * 0x1000, 0x1000), (0x1000, vec![]));
        }
        // Aligned 2M unmap: chunk pgsize 2M at level 2 finds the table, frees it now.
        assert_eq!(unmap(&mut m, SZ_2M, SZ_2M), (SZ_2M, vec![free(1)]));
        assert_eq!(m.live_pages(), 3);
    }

    // Unmap stops at the first empty entry (WARN_ON(!pte)).
    #[test]
    fn unmap_stops_at_hole() {
        let mut m = model(cfg(SZ_4K, 48, 1, LpaeRules::V6_12));
        map(&mut m, 0, 0x2000);
        map(&mut m, 0x3000, 0x1000);
        assert_eq!(unmap(&mut m, 0, 0x4000).0, 0x2000);
    }

    // arm_lpae_split_blk_unmap (6.12): 4K out of a 2M block: one GFP_ATOMIC table;
    // out of a 1G block: two (1G -> 2M blocks -> 4K pages). 7.x refuses (0 bytes).
    #[test]
    fn split_block() {
        let mut m = model(cfg(SZ_4K, 48, 1, LpaeRules::V6_12));
        map(&mut m, SZ_2M, SZ_2M);
        assert_eq!(
            unmap(&mut m, SZ_2M + 0x1000, 0x1000),
            (0x1000, vec![alloc(1, Gfp::Atomic)])
        );
        assert_eq!(m.leaves().len(), 511);
        let mut m = model(cfg(SZ_4K, 48, 1, LpaeRules::V6_12));
        map(&mut m, SZ_1G, SZ_1G);
        assert_eq!(
            unmap(&mut m, SZ_1G, 0x1000),
            (0x1000, vec![alloc(2, Gfp::Atomic)])
        );
        let mut m = model(cfg(SZ_4K, 48, 1, LpaeRules::V7));
        map(&mut m, SZ_2M, SZ_2M);
        assert_eq!(unmap(&mut m, SZ_2M, 0x1000), (0, vec![]));
    }

    // arm_lpae_init_pte: a block over an existing (emptied) table frees it during the map.
    #[test]
    fn block_over_table() {
        let mut m = model(cfg(SZ_4K, 48, 1, LpaeRules::V6_12));
        let mut log = PageLog::new();
        chunk::iommu_map(&mut m, SZ_2M, 0x1000, 0x1000, &mut log).unwrap();
        unmap(&mut m, SZ_2M, 0x1000);
        assert_eq!(map(&mut m, SZ_2M, SZ_2M), vec![free(1)]);
    }

    // __arm_lpae_free_pgtable: every table plus the pgd (S2 4K ias 40: 2-page pgd).
    #[test]
    fn domain_free_all() {
        let mut m = LpaeModel::new(cfg(SZ_4K, 40, 2, LpaeRules::V6_12));
        let mut log = PageLog::new();
        m.domain_alloc(&mut log);
        assert_eq!(log.ops, vec![alloc(2, Gfp::Kernel)]);
        map(&mut m, 0, 0x1000);
        map(&mut m, SZ_1G * 600, 0x1000);
        assert_eq!(m.live_pages(), 2 + 2 + 2);
        let mut log = PageLog::new();
        m.domain_free(&mut log);
        assert_eq!(log.ops, vec![free(6)]);
        assert_eq!(m.live_pages(), 0);
    }
}
