//! AMD IOMMU io-pgtable v1, as 6.12 gives it to every iommufd domain
//! (`drivers/iommu/amd/io_pgtable.c`; UNMANAGED domains force v1, `protection_domain_alloc`).
//! docs/kernel-facts.md §4.4 (and §9 for QEMU's AMD IOMMU).
//!
//! What sets it apart from VT-d and SMMUv3 for page-table memory:
//! - the table starts with 3 levels (`v1_alloc_pgtable`: PAGE_MODE_3_LEVEL, 39 bits, the root
//!   allocated with GFP_KERNEL) and grows a level at a time on map (`increase_address_space`:
//!   a new root with the map's gfp, the old root at its index 0) while the IOVA is beyond
//!   the table or the page size needs a higher level, up to 6 levels;
//! - a map allocates every missing table down to the page size's level (`alloc_pte`), zaps a
//!   replicated large PTE met on the way (no page freed: it pointed at no table) and replaces
//!   a plain large PTE by a new table;
//! - page sizes that are not a power of 512 times 4K are written as 2..256 replicated PTEs
//!   one level down (`PAGE_SIZE_PTE_COUNT`: 8K = 2 level-0 PTEs, 4M = 2 level-1 PTEs);
//! - a map over a table frees that table's whole subtree after the flush (`free_clear_pte`,
//!   freed at the end of the `map_pages` call);
//! - unmap clears PTEs only and never frees a table (`iommu_v1_unmap_pages`): tables go on a
//!   map over them and at domain free.
//!
//! Tables are 4 KiB of 512 entries at every level; level 0 holds 4K PTEs, level L entries
//! span `1 << (12 + 9 L)` bytes.

use super::{errno, DomainOps, Gfp, PageLog};

const NPTE: usize = 512;
/// Levels of a new table (PAGE_MODE_3_LEVEL) and the most it grows to (PAGE_MODE_6_LEVEL).
pub const START_MODE: u32 = 3;
const MAX_MODE: u32 = 6;

/// An entry: empty, a leaf (the log2 of its replica count, + 1), or a table (slot + TABLE).
const EMPTY: u32 = 0;
const TABLE: u32 = 16;

#[inline]
fn leaf(count_lg2: u32) -> u32 {
    count_lg2 + 1
}
#[inline]
fn is_leaf(e: u32) -> bool {
    e != EMPTY && e < TABLE
}
#[inline]
fn count_of(e: u32) -> usize {
    1 << (e - 1)
}

/// amd_iommu_types.h PM_LEVEL_SHIFT.
#[inline]
fn level_shift(level: u32) -> u32 {
    12 + 9 * level
}
/// PM_LEVEL_SIZE: the last address a `mode`-level table covers.
#[inline]
fn level_size(mode: u32) -> u64 {
    if mode < 6 {
        (1u64 << level_shift(mode)) - 1
    } else {
        u64::MAX
    }
}
/// PM_LEVEL_INDEX.
#[inline]
fn index(level: u32, iova: u64) -> usize {
    ((iova >> level_shift(level)) & 0x1ff) as usize
}
/// PAGE_SIZE_LEVEL and log2 of PAGE_SIZE_PTE_COUNT.
#[inline]
fn size_level(pgsize: u64) -> (u32, u32) {
    let lg2 = pgsize.trailing_zeros() - 12;
    (lg2 / 9, lg2 % 9)
}

/// `AMD_IOMMU_PGSIZES` (amd_iommu_types.h, 6.12 and 7.3): every power of two from 4K to
/// 2^51 but 512G, the driver's page sizes unless the command line narrows them.
pub const AMD_IOMMU_PGSIZES: u64 = ((1 << 52) - 1) & !0xfff & !(1 << 39);

/// What the driver gives the domain (`amd_iommu_domain_alloc_user` → `protection_domain_alloc`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AmdV1Config {
    /// `amd_iommu_pgsize_bitmap`: AMD_IOMMU_PGSIZES (every power of two from 4K to 2^51 but
    /// 512G) by default, 4K with `amd_iommu=nohugepages`.
    pub pgsize_bitmap: u64,
}

/// The page-table allocator of one AMD v1 domain.
#[derive(Clone, Debug)]
pub struct AmdV1Model {
    cfg: AmdV1Config,
    tables: Vec<Option<Box<[u32; NPTE]>>>,
    free_slots: Vec<u32>,
    root: Option<u32>,
    /// Levels (`pgtable->mode`).
    mode: u32,
    live: u64,
    /// Top-level growths so far (`increase_address_space`, each followed by a device-table
    /// update: `amd_iommu_update_and_flush_device_table`).
    pub growths: u64,
    /// Subtrees freed by a map over them, waiting for the end of the `map_pages` call.
    pending_free: u64,
}

impl AmdV1Model {
    pub fn new(cfg: AmdV1Config) -> AmdV1Model {
        AmdV1Model {
            cfg,
            tables: Vec::new(),
            free_slots: Vec::new(),
            root: None,
            mode: START_MODE,
            live: 0,
            growths: 0,
            pending_free: 0,
        }
    }

    pub fn config(&self) -> &AmdV1Config {
        &self.cfg
    }

    /// Levels of the table now.
    pub fn mode(&self) -> u32 {
        self.mode
    }

    pub fn live_pages(&self) -> u64 {
        self.live
    }

    /// The model's own memory: 2 KiB per live table.
    pub fn model_bytes(&self) -> u64 {
        self.live * (NPTE as u64 * 4)
    }

    fn alloc_table(&mut self, gfp: Gfp, log: &mut PageLog) -> u32 {
        log.alloc(1, gfp);
        self.live += 1;
        let t = Some(Box::new([EMPTY; NPTE]));
        match self.free_slots.pop() {
            Some(s) => {
                self.tables[s as usize] = t;
                s
            }
            None => {
                self.tables.push(t);
                (self.tables.len() - 1) as u32
            }
        }
    }

    fn table(&mut self, slot: u32) -> &mut [u32; NPTE] {
        self.tables[slot as usize]
            .as_mut()
            .expect("a live table slot")
    }

    /// Frees the subtree under a table entry (`free_sub_pt`): every table in it.
    fn drop_subtree(&mut self, slot: u32) -> u64 {
        let entries = *self.table(slot);
        let mut n = 1;
        for e in entries {
            if e >= TABLE {
                n += self.drop_subtree(e - TABLE);
            }
        }
        self.tables[slot as usize] = None;
        self.free_slots.push(slot);
        self.live -= 1;
        n
    }

    /// `v1_alloc_pgtable`: the 3-level root, GFP_KERNEL.
    pub fn domain_alloc(&mut self, log: &mut PageLog) {
        if self.root.is_none() {
            self.root = Some(self.alloc_table(Gfp::Kernel, log));
        }
    }

    /// `v1_free_pgtable` → `free_sub_pt(root, mode)`: every table.
    pub fn domain_free(&mut self, log: &mut PageLog) {
        if let Some(root) = self.root.take() {
            let n = self.drop_subtree(root);
            log.free(n);
        }
    }

    /// `increase_address_space`: a new root holding the old one at index 0.
    fn grow(&mut self, log: &mut PageLog) -> bool {
        if self.mode == MAX_MODE {
            return false;
        }
        let new = self.alloc_table(Gfp::Caller, log);
        if let Some(old) = self.root {
            self.table(new)[0] = old + TABLE;
        }
        self.root = Some(new);
        self.mode += 1;
        self.growths += 1;
        true
    }

    /// `alloc_pte`: the table and index where a `pgsize` leaf at `iova` goes, allocating
    /// what is missing on the way; `None`: -ENOMEM (the table cannot grow further).
    fn alloc_pte(&mut self, iova: u64, pgsize: u64, log: &mut PageLog) -> Option<(u32, usize)> {
        let (end_lvl, _) = size_level(pgsize);
        let last = iova + (pgsize - 1);
        while last > level_size(self.mode) || self.mode - 1 < end_lvl {
            if !self.grow(log) {
                return None;
            }
        }
        let mut table = self.root?;
        let mut level = self.mode - 1;
        let iova = iova & !(pgsize - 1);
        while level > end_lvl {
            let i = index(level, iova);
            let e = self.table(table)[i];
            if is_leaf(e) {
                // A replicated large PTE: all its replicas zapped (they point at no table);
                // a plain large PTE: replaced. Either way a new table takes the entry.
                let n = count_of(e);
                let first = i & !(n - 1);
                self.table(table)[first..first + n].fill(EMPTY);
            }
            let next = match self.table(table)[i] {
                EMPTY => {
                    let t = self.alloc_table(Gfp::Caller, log);
                    self.table(table)[i] = t + TABLE;
                    t
                }
                e => e - TABLE,
            };
            table = next;
            level -= 1;
        }
        Some((table, index(level, iova)))
    }

    /// `iommu_v1_map_pages`.
    fn map(
        &mut self,
        iova: u64,
        pgsize: u64,
        pgcount: u64,
        log: &mut PageLog,
    ) -> (u64, Result<(), i32>) {
        let (_, count_lg2) = size_level(pgsize);
        let count = 1usize << count_lg2;
        let mut mapped = 0;
        let mut result = Ok(());
        let mut iova = iova;
        for _ in 0..pgcount {
            let Some((table, i)) = self.alloc_pte(iova, pgsize, log) else {
                result = Err(errno::ENOMEM);
                break;
            };
            for k in i..i + count {
                let e = self.table(table)[k];
                if e >= TABLE {
                    // free_clear_pte: the subtree goes after the flush.
                    self.pending_free += self.drop_subtree(e - TABLE);
                }
            }
            self.table(table)[i..i + count].fill(leaf(count_lg2));
            // The last page may end the address space.
            iova = iova.wrapping_add(pgsize);
            mapped += pgsize;
        }
        // iommu_put_pages_list(&freelist), after the flush at the end of the call.
        log.free(std::mem::take(&mut self.pending_free));
        (mapped, result)
    }

    /// `fetch_pte`: the leaf (or level-0 slot) mapping `iova`: (table, first index of its
    /// replicas, replica count, bytes it maps); `None` at a hole above level 0.
    fn fetch_pte(&mut self, iova: u64) -> Option<(u32, usize, usize, u64)> {
        if iova > level_size(self.mode) {
            return None;
        }
        let mut table = self.root?;
        let mut level = self.mode - 1;
        loop {
            let i = index(level, iova);
            let e = self.table(table)[i];
            if level == 0 || is_leaf(e) {
                if is_leaf(e) {
                    let n = count_of(e);
                    let size = (n as u64) << level_shift(level);
                    return Some((table, i & !(n - 1), n, size));
                }
                // Level 0, present or not: one 4K PTE.
                return Some((table, i, 1, 1 << 12));
            }
            if e == EMPTY {
                return None;
            }
            table = e - TABLE;
            level -= 1;
        }
    }

    /// `iommu_v1_unmap_pages`: clears whole leaves, frees nothing.
    fn unmap(&mut self, iova: u64, pgsize: u64, pgcount: u64) -> u64 {
        let size = pgcount << pgsize.trailing_zeros();
        let (mut iova, mut unmapped) = (iova, 0u64);
        while unmapped < size {
            let Some((table, first, n, leaf_size)) = self.fetch_pte(iova) else {
                return unmapped;
            };
            self.table(table)[first..first + n].fill(EMPTY);
            iova = (iova & !(leaf_size - 1)).wrapping_add(leaf_size);
            unmapped += leaf_size;
        }
        unmapped
    }
}

impl DomainOps for AmdV1Model {
    fn pgsize_bitmap(&self) -> u64 {
        self.cfg.pgsize_bitmap
    }

    fn map_pages(
        &mut self,
        iova: u64,
        _paddr: u64,
        pgsize: u64,
        pgcount: u64,
        log: &mut PageLog,
    ) -> (u64, Result<(), i32>) {
        self.map(iova, pgsize, pgcount, log)
    }

    fn unmap_pages(&mut self, iova: u64, pgsize: u64, pgcount: u64, _log: &mut PageLog) -> u64 {
        self.unmap(iova, pgsize, pgcount)
    }

    /// Nothing deferred: unmap frees no table.
    fn iotlb_sync(&mut self, _log: &mut PageLog) {}
}

#[cfg(test)]
mod tests {
    // pgsize_bitmap of a 6.12 AMD domain under QEMU (tests/golden/6.12-amd-exercise.itc).
    #[test]
    fn amd_pgsizes_are_the_captured_bitmap() {
        assert_eq!(AMD_IOMMU_PGSIZES, 0xfff7ffffff000);
    }
    use super::*;
    use crate::model::chunk::{iommu_map, iommu_unmap};
    use crate::model::PageOp;

    /// AMD_IOMMU_PGSIZES: GENMASK_ULL(51, 12) ^ SZ_512G (amd_iommu_types.h).
    const PGSIZES: u64 = AMD_IOMMU_PGSIZES;
    const K4: u64 = 1 << 12;
    const M2: u64 = 1 << 21;
    const G1: u64 = 1 << 30;

    fn model() -> (AmdV1Model, PageLog) {
        let mut m = AmdV1Model::new(AmdV1Config {
            pgsize_bitmap: PGSIZES,
        });
        let mut log = PageLog::new();
        m.domain_alloc(&mut log);
        (m, log)
    }

    // A 4K map in a fresh 3-level table allocates the two tables below the root, charged;
    // the root was GFP_KERNEL. Unmap frees nothing; domain free frees all three.
    #[test]
    fn a_4k_map_fills_the_path_and_unmap_frees_nothing() {
        let (mut m, mut log) = model();
        assert_eq!(
            log.ops,
            [PageOp::Alloc {
                pages: 1,
                gfp: Gfp::Kernel
            }]
        );
        log.clear();
        assert_eq!(iommu_map(&mut m, 0x1000, 0x1000, K4, &mut log), Ok(K4));
        assert_eq!(
            log.ops,
            [PageOp::Alloc {
                pages: 2,
                gfp: Gfp::Caller
            }]
        );
        log.clear();
        assert_eq!(iommu_unmap(&mut m, 0x1000, K4, &mut log), K4);
        assert!(log.ops.is_empty());
        m.domain_free(&mut log);
        assert_eq!(log.ops, [PageOp::Free { pages: 3 }]);
        assert_eq!(m.live_pages(), 0);
    }

    // An IOVA beyond 2^39 grows the table to 4 levels, beyond 2^48 to 5: a new root each,
    // charged (the map's gfp), plus the path below it.
    #[test]
    fn iovas_beyond_the_table_grow_its_top() {
        let (mut m, mut log) = model();
        log.clear();
        assert_eq!(iommu_map(&mut m, 1 << 39, 1 << 39, K4, &mut log), Ok(K4));
        assert_eq!((m.mode(), m.growths), (4, 1));
        // The new root, then the level-2, -1 and -0 tables of index 1 at level 3.
        assert_eq!(
            log.ops,
            [PageOp::Alloc {
                pages: 4,
                gfp: Gfp::Caller
            }]
        );
        log.clear();
        assert_eq!(iommu_map(&mut m, 1 << 48, 1 << 48, K4, &mut log), Ok(K4));
        assert_eq!((m.mode(), m.growths), (5, 2));
        assert_eq!(
            log.ops,
            [PageOp::Alloc {
                pages: 5,
                gfp: Gfp::Caller
            }]
        );
        // The first mapping is still found through the old root, now at index 0.
        log.clear();
        assert_eq!(iommu_unmap(&mut m, 1 << 39, K4, &mut log), K4);
        assert_eq!(m.live_pages(), 1 + 4 + 5);
    }

    // 8K and 64K are replicated level-0 PTEs (2 and 16); 4M is two level-1 PTEs. A 4K map
    // inside a replicated 4M zaps it and allocates a level-0 table; unmapping 4K inside a
    // replicated 64K clears all 16 replicas (64K unmapped).
    #[test]
    fn non_power_of_512_sizes_are_replicated_ptes() {
        let (mut m, mut log) = model();
        let m4 = 4 << 20;
        assert_eq!(iommu_map(&mut m, m4, m4, m4, &mut log), Ok(m4));
        // Root, level-2 table: the 4M leaf sits at level 1.
        assert_eq!(m.live_pages(), 2);
        assert_eq!(m.fetch_pte(m4 + M2).map(|p| (p.2, p.3)), Some((2, m4)));
        log.clear();
        assert_eq!(iommu_map(&mut m, m4 + 0x5000, 0x5000, K4, &mut log), Ok(K4));
        assert_eq!(
            log.ops,
            [PageOp::Alloc {
                pages: 1,
                gfp: Gfp::Caller
            }]
        );
        // Both replicas are gone: the second 2M is unmapped now (a hole at level 1).
        assert_eq!(m.fetch_pte(m4 + M2), None);
        let k64 = 64 << 10;
        assert_eq!(iommu_map(&mut m, G1, G1, k64, &mut log), Ok(k64));
        log.clear();
        assert_eq!(iommu_unmap(&mut m, G1 + 0x3000, K4, &mut log), k64);
        // Every replica cleared: a level-0 hole, one 4K slot.
        assert_eq!(m.fetch_pte(G1 + 0x8000).map(|p| (p.2, p.3)), Some((1, K4)));
        assert!(log.ops.is_empty());
    }

    // A 2M map over a level-0 table (made by a 4K map) frees that table after the flush;
    // a 1G map over a level-1 table frees its subtree (the level-1 and level-0 tables).
    #[test]
    fn a_map_over_a_table_frees_its_subtree() {
        let (mut m, mut log) = model();
        assert_eq!(iommu_map(&mut m, M2, M2, K4, &mut log), Ok(K4));
        log.clear();
        assert_eq!(iommu_map(&mut m, M2, M2, M2, &mut log), Ok(M2));
        assert_eq!(log.ops, [PageOp::Free { pages: 1 }]);
        assert_eq!(iommu_map(&mut m, G1 + M2, G1 + M2, K4, &mut log), Ok(K4));
        log.clear();
        assert_eq!(iommu_map(&mut m, G1, G1, G1, &mut log), Ok(G1));
        assert_eq!(log.ops, [PageOp::Free { pages: 2 }]);
    }

    // Six levels is the most: an IOVA past them fails the map with ENOMEM after the growths
    // that fit (the new roots stay).
    #[test]
    fn the_table_grows_to_six_levels_at_most() {
        let (mut m, mut log) = model();
        assert_eq!(iommu_map(&mut m, 1 << 57, 1 << 57, K4, &mut log), Ok(K4));
        assert_eq!(m.mode(), 6);
        assert_eq!(level_size(6), u64::MAX);
        // Nothing is beyond a 6-level table: 2^63 maps too.
        assert_eq!(iommu_map(&mut m, 1 << 63, 1 << 63, K4, &mut log), Ok(K4));
        assert_eq!(m.mode(), 6);
        // Up to the last page of the address space.
        let top = u64::MAX - (K4 - 1);
        assert_eq!(iommu_map(&mut m, top, 0x1000, K4, &mut log), Ok(K4));
        assert_eq!(iommu_unmap(&mut m, top, K4, &mut log), K4);
    }
}
