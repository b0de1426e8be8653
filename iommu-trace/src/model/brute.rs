//! Brute-force reference for the property tests: the VT-d legacy rules restated as set
//! operations over "which tables exist" and "which leaves exist", with no arena, no walk.
//! The fast model in `vtd.rs` must agree with it on every random map/unmap sequence.

use std::collections::{BTreeMap, BTreeSet};

use super::chunk::iommu_pgsize;

/// Tables as (table level t, first pfn covered); a table at level t spans 512^t pfns.
#[derive(Clone, Debug)]
pub struct BruteVtd {
    pub levels: u32,
    pub bitmap: u64,
    pub tables: BTreeSet<(u32, u64)>,
    /// first pfn -> level of the leaf (1 = 4K, 2 = 2M, 3 = 1G)
    pub leaves: BTreeMap<u64, u32>,
    pub unsupported: bool,
}

fn span(t: u32) -> u64 {
    1u64 << (9 * t)
}
fn leaf_pages(level: u32) -> u64 {
    1u64 << (9 * (level - 1))
}

impl BruteVtd {
    pub fn new(levels: u32, bitmap: u64) -> Self {
        let mut tables = BTreeSet::new();
        tables.insert((levels, 0));
        BruteVtd {
            levels,
            bitmap,
            tables,
            leaves: BTreeMap::new(),
            unsupported: false,
        }
    }

    /// Is any pfn of [s, e) mapped?
    pub fn overlaps(&self, s: u64, e: u64) -> bool {
        self.leaves
            .range(..e)
            .next_back()
            .is_some_and(|(&p, &l)| p + leaf_pages(l) > s)
    }

    /// Map: (allocated, freed).
    pub fn map(&mut self, iova: u64, paddr: u64, size: u64) -> (u64, u64) {
        let (mut alloc, mut free) = (0, 0);
        let (mut iova, mut paddr, mut size) = (iova, paddr, size);
        while size > 0 {
            let (pgsize, count) = iommu_pgsize(self.bitmap, iova, paddr, size).unwrap();
            let level = 1 + (pgsize.trailing_zeros() - 12) / 9;
            for k in 0..count {
                let pfn = (iova >> 12) + k * leaf_pages(level);
                // Tables holding the leaf: levels top..=level.
                for t in level..=self.levels {
                    let key = (t, pfn / span(t) * span(t));
                    if self.tables.insert(key) {
                        alloc += 1;
                    }
                }
                // A superpage replaces the lower table (and its subtree) under it.
                if level > 1 {
                    let before = self.tables.len();
                    let end = pfn + leaf_pages(level);
                    self.tables
                        .retain(|&(t, b)| !(t < level && b >= pfn && b < end));
                    free += (before - self.tables.len()) as u64;
                }
                self.leaves.insert(pfn, level);
            }
            iova += pgsize * count;
            paddr += pgsize * count;
            size -= pgsize * count;
        }
        (alloc, free)
    }

    /// Unmap: (bytes, freed).
    pub fn unmap(&mut self, iova: u64, size: u64) -> (u64, u64) {
        let mut freed = 0;
        let mut unmapped = 0;
        let mut iova = iova;
        while unmapped < size {
            let (pgsize, count) = iommu_pgsize(self.bitmap, iova, iova, size - unmapped).unwrap();
            let pfn = iova >> 12;
            // Level lookup (intel_iommu_unmap): a superpage holding pfn, else the deepest
            // table holding it.
            let level = match self.leaves.range(..=pfn).next_back() {
                Some((&p, &l)) if l > 1 && p + leaf_pages(l) > pfn => l,
                _ => (1..=self.levels)
                    .find(|&t| self.tables.contains(&(t, pfn / span(t) * span(t))))
                    .unwrap(),
            };
            let len = (pgsize * count).max(4096u64 << (9 * (level - 1)));
            let (s, l) = (pfn, pfn + (len >> 12) - 1);
            // Leaves partially inside the range: the kernel walks a data page.
            for (&p, &lv) in self.leaves.range(..=l) {
                let e = p + leaf_pages(lv) - 1;
                if e >= s && (p < s || e > l) && lv > 1 {
                    self.unsupported = true;
                }
            }
            self.leaves
                .retain(|&p, &mut lv| !(p >= s && p + leaf_pages(lv) - 1 <= l));
            let before = self.tables.len();
            let top = self.levels;
            self.tables
                .retain(|&(t, b)| t == top || !(b >= s && b + span(t) - 1 <= l));
            freed += (before - self.tables.len()) as u64;
            iova += len;
            unmapped += len;
        }
        (unmapped, freed)
    }
}

/// AMD io-pgtable v1 (6.12) restated over sets: tables as (table level t, first IOVA it
/// covers; a level-t table spans `1 << (12 + 9 (t + 1))` bytes, level 0 holds 4K PTEs),
/// leaves as first IOVA -> bytes. No replicas, no walk: `amd_v1.rs` must agree.
#[derive(Clone, Debug)]
pub struct BruteAmdV1 {
    pub mode: u32,
    pub bitmap: u64,
    pub tables: BTreeSet<(u32, u64)>,
    pub leaves: BTreeMap<u64, u64>,
}

fn amd_span(t: u32) -> u64 {
    1u64.checked_shl(12 + 9 * (t + 1)).unwrap_or(0)
}
fn amd_base(t: u32, iova: u64) -> u64 {
    match amd_span(t) {
        0 => 0,
        s => iova / s * s,
    }
}
/// The level whose table holds a leaf of `size` bytes (PAGE_SIZE_LEVEL).
fn amd_leaf_level(size: u64) -> u32 {
    (size.trailing_zeros() - 12) / 9
}

impl BruteAmdV1 {
    pub fn new(bitmap: u64) -> Self {
        BruteAmdV1 {
            mode: 3,
            bitmap,
            tables: BTreeSet::from([(2, 0)]),
            leaves: BTreeMap::new(),
        }
    }

    /// Is any byte of [s, e) mapped?
    pub fn overlaps(&self, s: u64, e: u64) -> bool {
        self.leaves
            .range(..e)
            .next_back()
            .is_some_and(|(&p, &n)| p + n > s)
    }

    /// The last IOVA a `mode`-level table covers.
    fn top(&self) -> u64 {
        amd_span(self.mode - 1).wrapping_sub(1)
    }

    /// Map (nothing mapped in the range before): (allocated, freed).
    pub fn map(&mut self, iova: u64, paddr: u64, size: u64) -> (u64, u64) {
        let (mut alloc, mut free) = (0, 0);
        let (mut iova, mut paddr, mut size) = (iova, paddr, size);
        while size > 0 {
            let (pgsize, count) = iommu_pgsize(self.bitmap, iova, paddr, size).unwrap();
            let level = amd_leaf_level(pgsize);
            for k in 0..count {
                let at = iova + k * pgsize;
                // The top grows until the leaf fits (a new root each).
                while (self.mode < 6 && at + pgsize - 1 > self.top()) || self.mode - 1 < level {
                    self.mode += 1;
                    self.tables.insert((self.mode - 1, 0));
                    alloc += 1;
                }
                // Every table from the leaf's level up to the root holds the path.
                for t in level..self.mode {
                    if self.tables.insert((t, amd_base(t, at))) {
                        alloc += 1;
                    }
                }
                // Tables under the leaf's slots (left by earlier maps) go with their
                // subtrees.
                let before = self.tables.len();
                self.tables
                    .retain(|&(t, b)| !(t < level && b >= at && b < at + pgsize));
                free += (before - self.tables.len()) as u64;
                self.leaves.insert(at, pgsize);
            }
            iova += pgsize * count;
            paddr += pgsize * count;
            size -= pgsize * count;
        }
        (alloc, free)
    }

    /// Unmap: the bytes the core reports; nothing is freed.
    pub fn unmap(&mut self, iova: u64, size: u64) -> u64 {
        let mut unmapped = 0u64;
        let mut iova = iova;
        while unmapped < size {
            let (pgsize, count) = iommu_pgsize(self.bitmap, iova, iova, size - unmapped).unwrap();
            let chunk = pgsize * count;
            // The driver clears whole leaves (a 4K hole in a level-0 table counts 4K) until
            // the chunk is done or it meets a hole above level 0.
            let mut done = 0u64;
            let mut at = iova;
            while done < chunk {
                if at > self.top() && self.mode < 6 {
                    break;
                }
                let hit = self
                    .leaves
                    .range(..=at)
                    .next_back()
                    .filter(|(&p, &n)| p + n > at)
                    .map(|(&p, &n)| (p, n));
                let n = match hit {
                    Some((p, n)) => {
                        self.leaves.remove(&p);
                        n
                    }
                    None if self.tables.contains(&(0, amd_base(0, at))) => 4096,
                    None => break,
                };
                at = (at & !(n - 1)).wrapping_add(n);
                done += n;
            }
            if done == 0 {
                break;
            }
            iova = iova.wrapping_add(done);
            unmapped += done;
        }
        unmapped
    }
}

/// The generic page table's AMDv1 format as the AMD driver uses it (6.19+, whole-range map
/// and unmap of 7.0+) restated over sets, for unmaps of exactly what one map mapped (as
/// iommufd does): tables as (level t, first pfn), 1 = the 4K PTE table, a level-t table
/// spanning `512^t` pfns; the top gains a level whenever a map reaches beyond it; a leaf of
/// any size frees the (empty) tables under it; an unmap frees every table inside its range.
#[derive(Clone, Debug)]
pub struct BruteAmdv1Pt {
    pub levels: u32,
    pub bitmap: u64,
    pub tables: BTreeSet<(u32, u64)>,
    /// first pfn -> pfns
    pub leaves: BTreeMap<u64, u64>,
}

impl BruteAmdv1Pt {
    pub fn new(levels: u32, bitmap: u64) -> Self {
        BruteAmdv1Pt {
            levels,
            bitmap,
            tables: BTreeSet::from([(levels, 0)]),
            leaves: BTreeMap::new(),
        }
    }

    pub fn overlaps(&self, s: u64, e: u64) -> bool {
        self.leaves
            .range(..e)
            .next_back()
            .is_some_and(|(&p, &n)| p + n > s)
    }

    /// Map (nothing mapped in the range before): (allocated, freed).
    pub fn map(&mut self, iova: u64, paddr: u64, size: u64) -> (u64, u64) {
        let (mut alloc, mut free) = (0, 0);
        let last = (iova + size - 1) >> 12;
        while self.levels < 6 && last >> (9 * self.levels) != 0 {
            self.levels += 1;
            self.tables.insert((self.levels, 0));
            alloc += 1;
        }
        let (mut iova, mut paddr, mut size) = (iova, paddr, size);
        while size > 0 {
            let (pgsize, count) = iommu_pgsize(self.bitmap, iova, paddr, size).unwrap();
            let pfns = pgsize >> 12;
            let level = 1 + (pgsize.trailing_zeros() - 12) / 9;
            for k in 0..count {
                let pfn = (iova >> 12) + k * pfns;
                for t in level..=self.levels {
                    if self.tables.insert((t, pfn / span(t) * span(t))) {
                        alloc += 1;
                    }
                }
                let before = self.tables.len();
                self.tables
                    .retain(|&(t, b)| !(t < level && b >= pfn && b < pfn + pfns));
                free += (before - self.tables.len()) as u64;
                self.leaves.insert(pfn, pfns);
            }
            iova += pgsize * count;
            paddr += pgsize * count;
            size -= pgsize * count;
        }
        (alloc, free)
    }

    /// Unmap of exactly what one earlier map mapped: (bytes, freed).
    pub fn unmap(&mut self, iova: u64, size: u64) -> (u64, u64) {
        let (s, l) = (iova >> 12, (iova + size - 1) >> 12);
        self.leaves.retain(|&p, _| !(p >= s && p <= l));
        let before = self.tables.len();
        let top = self.levels;
        self.tables
            .retain(|&(t, b)| t == top || !(b >= s && b + span(t) - 1 <= l));
        (size, (before - self.tables.len()) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::vtd::{VtdConfig, VtdFlavour, VtdModel};
    use crate::model::{chunk, PageLog, PageOp};
    use proptest::prelude::*;

    const M2: u64 = 2 << 20;

    #[derive(Clone, Debug)]
    struct Op {
        map: bool,
        iova: u64,
        size: u64,
        /// paddr offset from iova (0 allows superpages)
        pa_off: u64,
    }

    fn op() -> impl Strategy<Value = Op> {
        (
            any::<bool>(),
            0u64..1024,
            prop_oneof![Just(0u64), 0u64..512],
            prop_oneof![0u64..3, Just(512u64)],
            prop_oneof![Just(0u64), 1u64..512],
            prop_oneof![Just(0u64), Just(0x1000u64)],
        )
            .prop_map(|(map, a, b, c, d, pa_off)| {
                let size = (c * M2 + d * 4096).max(4096);
                Op {
                    map,
                    iova: a * M2 + b * 4096,
                    size,
                    pa_off,
                }
            })
    }

    fn totals(ops: &[PageOp]) -> (u64, u64) {
        ops.iter().fold((0, 0), |(a, f), o| match *o {
            PageOp::Alloc { pages, .. } => (a + pages, f),
            PageOp::Free { pages } => (a, f + pages),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// amd_v1.rs against the set-based restatement, with AMD_IOMMU_PGSIZES (every power
        /// of two but 512G: replicated PTEs) or 4K only, and IOVAs up to 2^49 (the top grows
        /// twice): same pages allocated and freed by every map (unmap frees none), same
        /// bytes unmapped, same levels, and domain free returns every page.
        #[test]
        fn amd_v1_matches_brute(
            all_sizes in any::<bool>(),
            high in prop_oneof![Just(0u64), Just(1u64 << 39), Just(1u64 << 48)],
            ops in proptest::collection::vec(op(), 1..40),
        ) {
            use crate::model::amd_v1::{AmdV1Config, AmdV1Model};
            let bitmap = if all_sizes {
                crate::model::amd_v1::AMD_IOMMU_PGSIZES
            } else {
                4096
            };
            let mut m = AmdV1Model::new(AmdV1Config { pgsize_bitmap: bitmap });
            m.domain_alloc(&mut PageLog::new());
            let mut b = BruteAmdV1::new(bitmap);
            for (k, o) in ops.iter().enumerate() {
                // Every third operation far up, where the table must grow.
                let iova = if k % 3 == 0 { o.iova + high } else { o.iova };
                let mut log = PageLog::new();
                if o.map {
                    if b.overlaps(iova, iova + o.size) {
                        continue;
                    }
                    let (a, f) = b.map(iova, iova + o.pa_off, o.size);
                    let r = chunk::iommu_map(&mut m, iova, iova + o.pa_off, o.size, &mut log);
                    prop_assert_eq!(r, Ok(o.size));
                    prop_assert_eq!(totals(&log.ops), (a, f), "map {:?} at {:#x}", o, iova);
                } else {
                    let n = b.unmap(iova, o.size);
                    let got = chunk::iommu_unmap(&mut m, iova, o.size, &mut log);
                    prop_assert_eq!(got, n, "unmap {:?} at {:#x}", o, iova);
                    prop_assert_eq!(totals(&log.ops), (0, 0), "unmap {:?}", o);
                }
                prop_assert_eq!(m.mode(), b.mode);
                prop_assert_eq!(m.live_pages(), b.tables.len() as u64);
            }
            let mut log = PageLog::new();
            let live = m.live_pages();
            m.domain_free(&mut log);
            prop_assert_eq!(totals(&log.ops), (0, live));
            prop_assert_eq!(m.live_pages(), 0);
        }

        /// vtd.rs's generic page table in the AMD driver's AMDv1 format (7.x: whole-range
        /// map and unmap, dynamic top from 3 levels) against the set-based restatement, for
        /// maps of any page size the bitmap holds (contiguous entries) and unmaps of one
        /// earlier map each: same pages allocated and freed by every operation, same levels,
        /// and domain free returns every page.
        #[test]
        fn amdv1_generic_pt_matches_brute(
            all_sizes in any::<bool>(),
            high in prop_oneof![Just(0u64), Just(1u64 << 39), Just(1u64 << 48)],
            ops in proptest::collection::vec((op(), any::<prop::sample::Index>()), 1..40),
        ) {
            use crate::model::vtd::PtFormat;
            let bitmap = if all_sizes {
                crate::model::amd_v1::AMD_IOMMU_PGSIZES
            } else {
                (1 << 12) | (1 << 21) | (1 << 30)
            };
            let mut m = VtdModel::new(VtdConfig {
                levels: 3,
                gaw: 64,
                superpage: 0,
                first_stage: false,
                flavour: VtdFlavour::GenericPt { whole_range: true },
                format: PtFormat::Amdv1 { pgsize_bitmap: bitmap },
            });
            m.domain_alloc(&mut PageLog::new());
            let mut b = BruteAmdv1Pt::new(3, bitmap);
            let mut mapped: Vec<(u64, u64)> = Vec::new();
            for (k, (o, pick)) in ops.iter().enumerate() {
                let mut log = PageLog::new();
                if o.map || mapped.is_empty() {
                    // Every third map far up, where the table must grow.
                    let iova = if k % 3 == 0 { o.iova + high } else { o.iova };
                    if b.overlaps(iova >> 12, (iova + o.size) >> 12) {
                        continue;
                    }
                    let (a, f) = b.map(iova, iova + o.pa_off, o.size);
                    let r = chunk::iommu_map(&mut m, iova, iova + o.pa_off, o.size, &mut log);
                    prop_assert_eq!(r, Ok(o.size));
                    prop_assert_eq!(totals(&log.ops), (a, f), "map {:?} at {:#x}", o, iova);
                    mapped.push((iova, o.size));
                } else {
                    let (iova, size) = mapped.swap_remove(pick.index(mapped.len()));
                    let (n, f) = b.unmap(iova, size);
                    let got = chunk::iommu_unmap(&mut m, iova, size, &mut log);
                    prop_assert_eq!(got, n, "unmap {:#x}+{:#x}", iova, size);
                    prop_assert_eq!(totals(&log.ops), (0, f), "unmap {:#x}+{:#x}", iova, size);
                }
                prop_assert_eq!(m.levels(), b.levels);
                prop_assert_eq!(m.live_pages(), b.tables.len() as u64);
                let tables: Vec<_> = b.tables.iter().copied().collect();
                prop_assert_eq!(m.tables(), tables);
            }
            let mut log = PageLog::new();
            let live = m.live_pages();
            m.domain_free(&mut log);
            prop_assert_eq!(totals(&log.ops), (0, live));
            prop_assert_eq!(m.live_pages(), 0);
        }

        /// vtd.rs (legacy) against the set-based restatement: same tables, same leaves,
        /// same pages allocated and freed by every map and unmap, same bytes unmapped,
        /// and domain free returns every page.
        #[test]
        fn vtd_legacy_matches_brute(
            levels in 4u8..=5,
            superpage in 0u8..=2,
            ops in proptest::collection::vec(op(), 1..40),
        ) {
            let cfg = VtdConfig {
                levels,
                gaw: if levels == 5 { 57 } else { 48 },
                superpage,
                first_stage: false,
                flavour: VtdFlavour::Legacy,
                format: crate::model::vtd::PtFormat::Vtdss,
            };
            let mut m = VtdModel::new(cfg.clone());
            m.domain_alloc(&mut PageLog::new());
            let mut b = BruteVtd::new(levels as u32, cfg.pgsize_bitmap());
            for o in &ops {
                let mut log = PageLog::new();
                if o.map {
                    if b.overlaps(o.iova >> 12, (o.iova + o.size) >> 12) {
                        continue;
                    }
                    let (a, f) = b.map(o.iova, o.iova + o.pa_off, o.size);
                    let r = chunk::iommu_map(&mut m, o.iova, o.iova + o.pa_off, o.size, &mut log);
                    prop_assert_eq!(r, Ok(o.size));
                    prop_assert_eq!(totals(&log.ops), (a, f), "map {:?}", o);
                } else {
                    let mut trial = b.clone();
                    let (n, f) = trial.unmap(o.iova, o.size);
                    if trial.unsupported {
                        continue;
                    }
                    b = trial;
                    let got = chunk::iommu_unmap(&mut m, o.iova, o.size, &mut log);
                    prop_assert!(m.unsupported().is_none());
                    prop_assert_eq!(got, n, "unmap {:?}", o);
                    prop_assert_eq!(totals(&log.ops), (0, f), "unmap {:?}", o);
                }
                let tables: Vec<_> = b.tables.iter().copied().collect();
                prop_assert_eq!(m.tables(), tables);
                let leaves: Vec<_> = b.leaves.iter().map(|(&p, &l)| (p, l)).collect();
                prop_assert_eq!(m.leaves(), leaves);
                prop_assert_eq!(m.live_pages(), b.tables.len() as u64);
            }
            let mut log = PageLog::new();
            let live = m.live_pages();
            m.domain_free(&mut log);
            prop_assert_eq!(totals(&log.ops), (0, live));
            prop_assert_eq!(m.live_pages(), 0);
        }
    }
}
