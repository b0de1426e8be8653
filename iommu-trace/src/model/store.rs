//! The table store the models share: where their page tables live.
//!
//! A table whose entries can be tables (an upper level) keeps one `u32` per entry (empty,
//! leaf, or the store slot of the lower table, as each model encodes it). A last-level
//! table, whose entries are only present or not (4K PTEs, LPAE pages), keeps one bit per
//! entry, so runs of entries are set or cleared a word at a time and the model's memory is
//! a small fraction of the kernel's.
//!
//! Tables are allocated in fixed-size chunks, so growing the store never copies or
//! re-zeroes live tables; slots of freed tables are reused (cleared when allocated again,
//! as the kernel's page allocator returns a zeroed page).

/// Upper tables per chunk.
const UPPER_PER_CHUNK: usize = 16;
/// Last-level bitmaps per chunk.
const BITMAPS_PER_CHUNK: usize = 256;

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
        }
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
            if (s as usize).is_multiple_of(BITMAPS_PER_CHUNK) {
                let n = self.words() * BITMAPS_PER_CHUNK;
                self.bitmaps.push(vec![0; n].into_boxed_slice());
            }
            self.bitmaps_len += 1;
            s
        } else {
            if let Some(s) = self.upper_free.pop() {
                self.upper_mut(s).fill(0);
                return s;
            }
            let s = self.upper_len;
            if (s as usize).is_multiple_of(UPPER_PER_CHUNK) {
                let n = self.ptes * UPPER_PER_CHUNK;
                self.upper.push(vec![0; n].into_boxed_slice());
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
        let (c, i) = (
            slot as usize / UPPER_PER_CHUNK,
            slot as usize % UPPER_PER_CHUNK,
        );
        &self.upper[c][i * self.ptes..(i + 1) * self.ptes]
    }
    #[inline]
    pub(super) fn upper_mut(&mut self, slot: u32) -> &mut [u32] {
        let (c, i) = (
            slot as usize / UPPER_PER_CHUNK,
            slot as usize % UPPER_PER_CHUNK,
        );
        &mut self.upper[c][i * self.ptes..(i + 1) * self.ptes]
    }
    #[inline]
    pub(super) fn bitmap(&self, slot: u32) -> &[u64] {
        let w = self.words();
        let (c, i) = (
            slot as usize / BITMAPS_PER_CHUNK,
            slot as usize % BITMAPS_PER_CHUNK,
        );
        &self.bitmaps[c][i * w..(i + 1) * w]
    }
    #[inline]
    pub(super) fn bitmap_mut(&mut self, slot: u32) -> &mut [u64] {
        let w = self.words();
        let (c, i) = (
            slot as usize / BITMAPS_PER_CHUNK,
            slot as usize % BITMAPS_PER_CHUNK,
        );
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
