//! The IOMMU core between a caller and the driver: `drivers/iommu/iommu.c`
//! `iommu_pgsize()`, `__iommu_map()`, `__iommu_unmap()`, `iommu_unmap()` (6.12), and the
//! 7.0+ generic-pt whole-range unmap. docs/kernel-facts.md §4.0.

use super::{errno, DomainOps, PageLog};

/// `GENMASK(h, 0)` for `h` in 0..=63.
#[inline]
fn genmask(h: u32) -> u64 {
    if h >= 63 {
        u64::MAX
    } else {
        (1u64 << (h + 1)) - 1
    }
}

/// iommu.c:iommu_pgsize(): the page size and count of the next chunk of a map or unmap.
///
/// The biggest supported page size that fits `size` and the alignment of `iova | paddr`;
/// the count stops at the next bigger page-size boundary when the rest of the range could
/// use that bigger size. Returns `None` where the kernel would `BUG_ON(!pgsizes)`.
#[inline]
pub fn iommu_pgsize(pgsize_bitmap: u64, iova: u64, paddr: u64, size: u64) -> Option<(u64, u64)> {
    if size == 0 {
        return None;
    }
    let addr_merge = paddr | iova;
    // Page sizes supported by the hardware and small enough for @size
    let mut pgsizes = pgsize_bitmap & genmask(63 - size.leading_zeros());
    // Constrain the page sizes further based on the maximum alignment
    if addr_merge != 0 {
        pgsizes &= genmask(addr_merge.trailing_zeros());
    }
    if pgsizes == 0 {
        return None;
    }
    // Pick the biggest page size remaining
    let pgsize_idx = 63 - pgsizes.leading_zeros();
    let pgsize = 1u64 << pgsize_idx;
    let mut size = size;
    // Find the next biggest supported page size, if it exists
    let bigger = pgsize_bitmap & !genmask(pgsize_idx);
    if bigger != 0 {
        let pgsize_next = 1u64 << bigger.trailing_zeros();
        // No point trying a bigger page size unless iova and paddr are similarly offset
        if (iova ^ paddr) & (pgsize_next - 1) == 0 {
            let offset = pgsize_next - (addr_merge & (pgsize_next - 1));
            // If size is big enough to accommodate the larger page, reduce the count
            if let Some(offset_end) = offset.checked_add(pgsize_next) {
                if offset_end <= size {
                    size = offset;
                }
            }
        }
    }
    Some((pgsize, size >> pgsize_idx))
}

/// The alignment check at the top of iommu.c:__iommu_map(): iova, paddr and size must be
/// aligned to the smallest supported page size (else -EINVAL).
pub fn check_map_alignment(
    pgsize_bitmap: u64,
    iova: u64,
    paddr: u64,
    size: u64,
) -> Result<(), i32> {
    if pgsize_bitmap == 0 {
        return Err(errno::EINVAL);
    }
    let min_pagesz = 1u64 << pgsize_bitmap.trailing_zeros();
    if (iova | paddr | size) & (min_pagesz - 1) != 0 {
        return Err(errno::EINVAL);
    }
    Ok(())
}

/// iommu.c:__iommu_map(): chunk with `iommu_pgsize`, call `map_pages` until done (the
/// driver may map less than asked: io-pgtable-arm stops at the end of a table); on error,
/// unroll with `iommu_unmap(orig_iova, mapped)`. Returns the bytes mapped or the errno.
pub fn iommu_map<D: DomainOps>(
    d: &mut D,
    iova: u64,
    paddr: u64,
    size: u64,
    log: &mut PageLog,
) -> Result<u64, i32> {
    // 7.0+ generic page table: iommu_map_nosync() hands it the whole range.
    if let Some((mapped, r)) = d.map_range(iova, paddr, size, log) {
        return match r {
            Ok(()) => Ok(size),
            Err(e) => {
                if mapped != 0 {
                    iommu_unmap(d, iova, mapped, log);
                }
                Err(e)
            }
        };
    }
    let bitmap = d.pgsize_bitmap();
    check_map_alignment(bitmap, iova, paddr, size)?;
    let (orig_iova, orig_size) = (iova, size);
    let (mut iova, mut paddr, mut size) = (iova, paddr, size);
    let mut ret = Ok(());
    while size != 0 {
        let Some((pgsize, count)) = iommu_pgsize(bitmap, iova, paddr, size) else {
            ret = Err(errno::EINVAL);
            break;
        };
        let (mapped, r) = d.map_pages(iova, paddr, pgsize, count, log);
        // Some pages may have been mapped, even if an error occurred.
        size -= mapped.min(size);
        if r.is_err() {
            ret = r;
            break;
        }
        if mapped == 0 {
            // A driver that maps nothing without an error would loop forever in the kernel.
            ret = Err(errno::EINVAL);
            break;
        }
        // The last chunk may end the address space (AMD v1 takes IOVAs up to 2^64).
        iova = iova.wrapping_add(mapped);
        paddr = paddr.wrapping_add(mapped);
    }
    match ret {
        Ok(()) => Ok(orig_size),
        Err(e) => {
            // unroll mapping in case something went wrong
            if orig_size - size != 0 {
                iommu_unmap(d, orig_iova, orig_size - size, log);
            }
            Err(e)
        }
    }
}

/// iommu.c:iommu_unmap() = `__iommu_unmap()` + `iommu_iotlb_sync()`: chunk with
/// `iommu_pgsize(iova, iova, ...)`, stop when the driver unmaps 0 bytes, then sync (which
/// is where VT-d frees the tables it queued on the gather's freelist).
///
/// A driver with a whole-range unmap (generic page table, 7.0+) gets the whole range in
/// one call instead (docs/kernel-facts.md §4.1(c)).
pub fn iommu_unmap<D: DomainOps>(d: &mut D, iova: u64, size: u64, log: &mut PageLog) -> u64 {
    let bitmap = d.pgsize_bitmap();
    if bitmap == 0 {
        return 0;
    }
    let min_pagesz = 1u64 << bitmap.trailing_zeros();
    if (iova | size) & (min_pagesz - 1) != 0 {
        return 0;
    }
    let unmapped = if let Some(n) = d.unmap_range(iova, size, log) {
        n
    } else {
        let mut unmapped = 0u64;
        let mut iova = iova;
        // Keep iterating until we either unmap 'size' bytes (or more) or we hit an area
        // that isn't mapped.
        while unmapped < size {
            let Some((pgsize, count)) = iommu_pgsize(bitmap, iova, iova, size - unmapped) else {
                break;
            };
            let n = d.unmap_pages(iova, pgsize, count, log);
            if n == 0 {
                break;
            }
            iova = iova.wrapping_add(n);
            unmapped += n;
        }
        unmapped
    };
    d.iotlb_sync(log);
    unmapped
}

#[cfg(test)]
mod tests {
    use super::*;

    const K4: u64 = 4096;
    const M2: u64 = 2 << 20;
    const G1: u64 = 1 << 30;
    const VTD: u64 = K4 | M2 | G1;

    // iommu.c:iommu_pgsize(): 4K-aligned start runs 4K pages up to the 2M boundary
    // (the rest can use 2M pages), then 2M pages.
    #[test]
    fn pgsize_stops_at_next_boundary() {
        assert_eq!(iommu_pgsize(VTD, 0x1000, 0x1000, 4 * M2), Some((K4, 511)));
        assert_eq!(iommu_pgsize(VTD, M2, M2, 4 * M2 - M2), Some((M2, 3)));
        // Not enough left for a 2M page after the boundary: all 4K.
        assert_eq!(iommu_pgsize(VTD, 0x1000, 0x1000, M2), Some((K4, 512)));
    }

    // iova and paddr offset differently inside 2M: never a bigger page, count = all.
    #[test]
    fn pgsize_misaligned_pa() {
        assert_eq!(
            iommu_pgsize(VTD, 0x20_0000, 0x1000, 4 * M2),
            Some((K4, 2048))
        );
    }

    #[test]
    fn pgsize_zero_address_uses_size_only() {
        assert_eq!(iommu_pgsize(VTD, 0, 0, 3 * G1), Some((G1, 3)));
        assert_eq!(iommu_pgsize(VTD, 0, 0, G1 + M2), Some((G1, 1)));
    }

    // 1G chunk stop: 2M-aligned start below a 1G boundary with > 1G after it.
    #[test]
    fn pgsize_2m_then_1g() {
        assert_eq!(iommu_pgsize(VTD, G1 - M2, G1 - M2, 2 * G1), Some((M2, 1)));
    }

    #[test]
    fn pgsize_no_fit_is_none() {
        assert_eq!(iommu_pgsize(M2, 0x1000, 0x1000, M2), None);
        assert_eq!(iommu_pgsize(VTD, 0, 0, 0), None);
    }
}
