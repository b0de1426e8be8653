//! The table store the models share: where their page tables live.
//!
//! A table whose entries can be tables (an upper level) keeps one `u32` per entry (empty,
//! leaf, or the store slot of the lower table, as each model encodes it). A last-level
//! table, whose entries are only present or not (4K PTEs, LPAE pages), keeps one bit per
//! entry, so runs of entries are set or cleared a word at a time and the model's memory is
//! a small fraction of the kernel's.
//!
//! Tables are allocated in chunks, so growing the store never copies or re-zeroes live
//! tables; slots of freed tables are reused (cleared when allocated again, as the kernel's
//! page allocator returns a zeroed page). Chunks double from one table up to a fixed size,
//! so a domain with a single table costs one table, not a whole chunk: the replay's memory
//! budget (`replay/budget.rs`) counts [`Store::bytes`].

/// Upper tables in a full chunk.
const UPPER_PER_CHUNK: usize = 16;
/// Last-level bitmaps in a full chunk.
const BITMAPS_PER_CHUNK: usize = 256;

/// Where slot `slot` lives when chunks hold 1, 2, 4, … tables up to `full` (a power of
/// two), then `full` each: (chunk, index in the chunk).
#[inline]
fn locate(slot: u32, full: usize) -> (usize, usize) {
    let s = slot as usize;
    // The doubling chunks hold 1 + 2 + … + full/2 = full - 1 tables.
    if s < full - 1 {
        let c = (s + 1).ilog2() as usize;
        (c, s + 1 - (1 << c))
    } else {
        let k = s - (full - 1);
        (full.ilog2() as usize + k / full, k % full)
    }
}

/// Tables in chunk `c` (see [`locate`]).
fn chunk_len(c: usize, full: usize) -> usize {
    (1usize << c.min(full.ilog2() as usize)).min(full)
}

#[derive(Clone, Debug)]
pub(super) struct Store {
    /// Entries per table.
    ptes: usize,
    upper: Vec<Box<[u32]>>,
    upper_len: u32,
    upper_free: Vec<u32>,
    bitmaps: Vec<Box<[u64]>>,
    bitmaps_len: u32,
    bitmaps_free: Vec<u32>,
    /// Bytes of the chunks allocated.
    bytes: u64,
}

impl Store {
    /// A store of tables of `ptes` entries (a multiple of 64).
    pub(super) fn new(ptes: usize) -> Self {
        debug_assert!(ptes.is_multiple_of(64));
        Store {
            ptes,
            upper: Vec::new(),
            upper_len: 0,
            upper_free: Vec::new(),
            bitmaps: Vec::new(),
            bitmaps_len: 0,
            bitmaps_free: Vec::new(),
            bytes: 0,
        }
    }

    /// Memory the tables take, freed slots included (chunks are kept for reuse).
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    fn words(&self) -> usize {
        self.ptes / 64
    }

    /// A cleared table: a bitmap when `last_level`, else an upper table of empty (0)
    /// entries. Returns its slot (bitmaps and upper tables are numbered separately).
    pub(super) fn alloc(&mut self, last_level: bool) -> u32 {
        if last_level {
            if let Some(s) = self.bitmaps_free.pop() {
                self.bitmap_mut(s).fill(0);
                return s;
            }
            let s = self.bitmaps_len;
            if locate(s, BITMAPS_PER_CHUNK).1 == 0 {
                let n = self.words() * chunk_len(self.bitmaps.len(), BITMAPS_PER_CHUNK);
                self.bitmaps.push(vec![0; n].into_boxed_slice());
                self.bytes += n as u64 * 8;
            }
            self.bitmaps_len += 1;
            s
        } else {
            if let Some(s) = self.upper_free.pop() {
                self.upper_mut(s).fill(0);
                return s;
            }
            let s = self.upper_len;
            if locate(s, UPPER_PER_CHUNK).1 == 0 {
                let n = self.ptes * chunk_len(self.upper.len(), UPPER_PER_CHUNK);
                self.upper.push(vec![0; n].into_boxed_slice());
                self.bytes += n as u64 * 4;
            }
            self.upper_len += 1;
            s
        }
    }

    pub(super) fn release(&mut self, last_level: bool, slot: u32) {
        if last_level {
            self.bitmaps_free.push(slot);
        } else {
            self.upper_free.push(slot);
        }
    }

    #[inline]
    pub(super) fn upper(&self, slot: u32) -> &[u32] {
        let (c, i) = locate(slot, UPPER_PER_CHUNK);
        &self.upper[c][i * self.ptes..(i + 1) * self.ptes]
    }
    #[inline]
    pub(super) fn upper_mut(&mut self, slot: u32) -> &mut [u32] {
        let (c, i) = locate(slot, UPPER_PER_CHUNK);
        &mut self.upper[c][i * self.ptes..(i + 1) * self.ptes]
    }
    #[inline]
    pub(super) fn bitmap(&self, slot: u32) -> &[u64] {
        let w = self.words();
        let (c, i) = locate(slot, BITMAPS_PER_CHUNK);
        &self.bitmaps[c][i * w..(i + 1) * w]
    }
    #[inline]
    pub(super) fn bitmap_mut(&mut self, slot: u32) -> &mut [u64] {
        let w = self.words();
        let (c, i) = locate(slot, BITMAPS_PER_CHUNK);
        &mut self.bitmaps[c][i * w..(i + 1) * w]
    }

    /// Bit `idx` of a bitmap.
    #[inline]
    pub(super) fn bit(&self, slot: u32, idx: usize) -> bool {
        (self.bitmap(slot)[idx / 64] >> (idx % 64)) & 1 != 0
    }
    #[inline]
    pub(super) fn set_bit(&mut self, slot: u32, idx: usize, on: bool) {
        let w = &mut self.bitmap_mut(slot)[idx / 64];
        *w = (*w & !(1 << (idx % 64))) | (on as u64) << (idx % 64);
    }

    /// Set bits [lo, hi) of a bitmap; returns how many were already set.
    pub(super) fn set_bits(&mut self, slot: u32, lo: usize, hi: usize) -> u64 {
        let bits = self.bitmap_mut(slot);
        let mut already = 0;
        for (w, word) in bits
            .iter_mut()
            .enumerate()
            .take(hi.div_ceil(64))
            .skip(lo / 64)
        {
            let mask = word_mask(w, lo, hi);
            already += (*word & mask).count_ones() as u64;
            *word |= mask;
        }
        already
    }

    /// Is any bit of [lo, hi) of a bitmap set?
    pub(super) fn any_bit(&self, slot: u32, lo: usize, hi: usize) -> bool {
        let bits = self.bitmap(slot);
        (lo / 64..hi.div_ceil(64)).any(|w| bits[w] & word_mask(w, lo, hi) != 0)
    }

    /// Clear bits [lo, hi) of a bitmap.
    pub(super) fn clear_bits(&mut self, slot: u32, lo: usize, hi: usize) {
        let bits = self.bitmap_mut(slot);
        for (w, word) in bits
            .iter_mut()
            .enumerate()
            .take(hi.div_ceil(64))
            .skip(lo / 64)
        {
            *word &= !word_mask(w, lo, hi);
        }
    }
}

/// The bits of [lo, hi) within word `w` of a bitmap.
#[inline]
fn word_mask(w: usize, lo: usize, hi: usize) -> u64 {
    let (base, end) = (w * 64, w * 64 + 64);
    let a = lo.max(base) - base;
    let b = hi.min(end).max(base) - base;
    if a >= b {
        0
    } else if b - a == 64 {
        u64::MAX
    } else {
        ((1u64 << (b - a)) - 1) << a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_double_then_stay_full() {
        let full = 16;
        let mut seen = std::collections::HashSet::new();
        let mut per_chunk = std::collections::HashMap::<usize, usize>::new();
        for slot in 0..200u32 {
            let (c, i) = locate(slot, full);
            assert!(i < chunk_len(c, full), "slot {slot}: ({c}, {i})");
            assert!(seen.insert((c, i)), "slot {slot} shares ({c}, {i})");
            *per_chunk.entry(c).or_default() += 1;
        }
        assert_eq!(locate(0, full), (0, 0));
        assert_eq!(locate(1, full), (1, 0));
        assert_eq!(locate(14, full), (3, 7));
        assert_eq!(locate(15, full), (4, 0));
        assert_eq!(locate(31, full), (5, 0));
        for c in 0..12 {
            assert_eq!(per_chunk[&c], chunk_len(c, full), "chunk {c}");
        }
        // One table costs one table.
        let mut s = Store::new(512);
        s.alloc(false);
        assert_eq!(s.bytes(), 512 * 4);
        s.alloc(true);
        assert_eq!(s.bytes(), 512 * 4 + 64);
    }

    #[test]
    fn bit_runs() {
        let mut s = Store::new(512);
        let t = s.alloc(true);
        assert_eq!(s.set_bits(t, 3, 130), 0);
        assert!(s.any_bit(t, 129, 200) && !s.any_bit(t, 130, 512));
        assert_eq!(s.set_bits(t, 0, 512), 127);
        s.clear_bits(t, 1, 511);
        assert!(s.bit(t, 0) && s.bit(t, 511) && !s.bit(t, 1) && !s.bit(t, 510));
        s.set_bit(t, 64, true);
        assert!(s.bit(t, 64));
        s.release(true, t);
        let t2 = s.alloc(true);
        assert_eq!(t2, t);
        assert!(s.bitmap(t2).iter().all(|&w| w == 0));
    }
}
