//! Book-keeping of the allocations and of the bytes each IOAS / hwpt has seen, from which the
//! report's [`Totals`] are derived.
//!
//! The per-hwpt byte totals are *derived* from the iommufd semantics (6.12, io_pagetable.c):
//! * IOAS_MAP of `len` bytes maps `len` bytes into every paging hwpt in the IOAS's domain
//!   list, attached to a device or not (HWPT_ALLOC adds the domain via
//!   `iopt_table_add_domain`);
//! * a new paging hwpt (explicit or auto) is filled with every area already in the IOAS;
//! * IOAS_UNMAP unmaps the kernel-reported length from every paging hwpt in the IOAS;
//! * destroying a paging hwpt (IOMMU_DESTROY, last detach of an auto domain, destroying
//!   the mock device) unmaps whatever is still mapped in it (`iopt_table_remove_domain`).
//!
//! Nested hwpts have no IOAS mappings of their own.

use std::collections::BTreeMap;

use super::report::{
    hwpt_flag_names, AllocKind, AllocTotal, DeviceKind, HwptTotals, IoasTotals, Totals,
};
use super::sys::errno_name;

fn kind_key(device: DeviceKind, kind: AllocKind) -> String {
    let d = match device {
        DeviceKind::Vfio => "vfio",
        DeviceKind::Mock => "mock",
    };
    let k = match kind {
        AllocKind::Paging => "paging",
        AllocKind::Nested => "nested",
        AllocKind::Auto => "auto",
    };
    format!("{d}_{k}")
}

/// Book-keeping of allocations and of the bytes each IOAS / hwpt has seen.
#[derive(Debug, Default)]
pub struct Ledger {
    allocs: BTreeMap<(AllocKind, DeviceKind, u32, u32), AllocTotal>,
    ioas: Vec<IoasTotals>,
    hwpts: Vec<HwptTotals>,
}

impl Ledger {
    pub fn ioas_created(&mut self, id: u32, label: &str) {
        self.ioas.push(IoasTotals {
            id,
            label: label.into(),
            map_calls: 0,
            maps_ok: 0,
            unmap_calls: 0,
            unmaps_ok: 0,
            bytes_mapped: 0,
            bytes_unmapped: 0,
            live_bytes: 0,
            destroyed: false,
        });
    }

    pub fn ioas_destroyed(&mut self, id: u32) {
        if let Some(i) = self.live_ioas_mut(id) {
            i.destroyed = true;
        }
    }

    fn live_ioas_mut(&mut self, id: u32) -> Option<&mut IoasTotals> {
        self.ioas
            .iter_mut()
            .rev()
            .find(|i| i.id == id && !i.destroyed)
    }

    pub fn ioas_live_bytes(&self, id: u32) -> u64 {
        self.ioas
            .iter()
            .rev()
            .find(|i| i.id == id && !i.destroyed)
            .map_or(0, |i| i.live_bytes)
    }

    /// Records an allocation attempt (errno 0 = success).
    pub fn alloc_attempt(
        &mut self,
        kind: AllocKind,
        device: DeviceKind,
        flags: u32,
        data_type: u32,
        errno: i32,
    ) {
        let t = self
            .allocs
            .entry((kind, device, flags, data_type))
            .or_insert_with(|| AllocTotal {
                kind,
                device,
                flags,
                flag_names: hwpt_flag_names(flags),
                data_type,
                attempts: 0,
                succeeded: 0,
                errnos: BTreeMap::new(),
            });
        t.attempts += 1;
        if errno == 0 {
            t.succeeded += 1;
        } else {
            *t.errnos.entry(errno_name(errno)).or_default() += 1;
        }
    }

    /// A hwpt now exists. Paging (and auto) hwpts get the IOAS's existing areas.
    pub fn hwpt_created(
        &mut self,
        id: u32,
        label: &str,
        kind: AllocKind,
        device: DeviceKind,
        flags: u32,
        parent_id: u32,
    ) {
        let fill = if kind == AllocKind::Nested {
            0
        } else {
            self.ioas_live_bytes(parent_id)
        };
        self.hwpts.push(HwptTotals {
            id,
            label: label.into(),
            kind,
            device,
            flags,
            parent_id,
            bytes_mapped: fill,
            bytes_filled_at_alloc: fill,
            bytes_unmapped: 0,
            freed: false,
        });
    }

    /// The hwpt was destroyed; paging ones lose what is still mapped in their IOAS.
    pub fn hwpt_freed(&mut self, id: u32) {
        let Some(idx) = self.hwpts.iter().rposition(|h| h.id == id && !h.freed) else {
            return;
        };
        let (kind, ioas) = (self.hwpts[idx].kind, self.hwpts[idx].parent_id);
        let live = if kind == AllocKind::Nested {
            0
        } else {
            self.ioas_live_bytes(ioas)
        };
        let h = &mut self.hwpts[idx];
        h.bytes_unmapped += live;
        h.freed = true;
    }

    pub fn hwpt(&self, id: u32) -> Option<&HwptTotals> {
        self.hwpts.iter().rev().find(|h| h.id == id && !h.freed)
    }

    /// Live paging domains in an IOAS.
    pub fn domains_in(&self, ioas: u32) -> u32 {
        self.hwpts
            .iter()
            .filter(|h| h.kind != AllocKind::Nested && h.parent_id == ioas && !h.freed)
            .count() as u32
    }

    fn paging_in(&mut self, ioas: u32) -> impl Iterator<Item = &mut HwptTotals> {
        self.hwpts
            .iter_mut()
            .filter(move |h| h.kind != AllocKind::Nested && h.parent_id == ioas && !h.freed)
    }

    /// An IOAS_MAP call; `errno` 0 = `len` bytes mapped.
    pub fn map(&mut self, ioas: u32, len: u64, errno: i32) {
        if let Some(i) = self.live_ioas_mut(ioas) {
            i.map_calls += 1;
            if errno == 0 {
                i.maps_ok += 1;
                i.bytes_mapped += len;
                i.live_bytes += len;
            }
        }
        if errno == 0 {
            for h in self.paging_in(ioas) {
                h.bytes_mapped += len;
            }
        }
    }

    /// `ok + failed` IOAS_MAP calls of `len` bytes each (the benchmark loop).
    pub fn map_n(&mut self, ioas: u32, len: u64, ok: u64, failed: u64) {
        if let Some(i) = self.live_ioas_mut(ioas) {
            i.map_calls += ok + failed;
            i.maps_ok += ok;
            i.bytes_mapped += ok * len;
            i.live_bytes += ok * len;
        }
        for h in self.paging_in(ioas) {
            h.bytes_mapped += ok * len;
        }
    }

    /// `ok + failed` IOAS_UNMAP calls that each unmapped `len` bytes when they succeeded.
    pub fn unmap_n(&mut self, ioas: u32, len: u64, ok: u64, failed: u64) {
        if let Some(i) = self.live_ioas_mut(ioas) {
            i.unmap_calls += ok + failed;
            i.unmaps_ok += ok;
            i.bytes_unmapped += ok * len;
            i.live_bytes = i.live_bytes.saturating_sub(ok * len);
        }
        for h in self.paging_in(ioas) {
            h.bytes_unmapped += ok * len;
        }
    }

    /// An IOAS_UNMAP call; `unmapped` = the length the kernel reported (0 on error).
    pub fn unmap(&mut self, ioas: u32, unmapped: u64, errno: i32) {
        if let Some(i) = self.live_ioas_mut(ioas) {
            i.unmap_calls += 1;
            if errno == 0 {
                i.unmaps_ok += 1;
                i.bytes_unmapped += unmapped;
                i.live_bytes = i.live_bytes.saturating_sub(unmapped);
            }
        }
        if errno == 0 {
            for h in self.paging_in(ioas) {
                h.bytes_unmapped += unmapped;
            }
        }
    }

    pub fn totals(&self) -> Totals {
        let mut allocated: BTreeMap<String, u64> = BTreeMap::new();
        let mut freed: BTreeMap<String, u64> = BTreeMap::new();
        for h in &self.hwpts {
            *allocated.entry(kind_key(h.device, h.kind)).or_default() += 1;
            if h.freed {
                *freed.entry(kind_key(h.device, h.kind)).or_default() += 1;
            }
        }
        let total: u64 = allocated.values().sum();
        allocated.insert("total".into(), total);
        let total: u64 = freed.values().sum();
        freed.insert("total".into(), total);
        Totals {
            allocations: self.allocs.values().cloned().collect(),
            expected_domain_allocations: allocated,
            expected_domain_frees: freed,
            ioas: self.ioas.clone(),
            hwpts: self.hwpts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_follows_iommufd_semantics() {
        let mut l = Ledger::default();
        l.ioas_created(1, "vfio");
        // A map before any domain exists reaches nobody yet.
        l.map(1, 0x10000, 0);
        l.alloc_attempt(AllocKind::Paging, DeviceKind::Vfio, 0, 0, 0);
        l.hwpt_created(2, "h0", AllocKind::Paging, DeviceKind::Vfio, 0, 1);
        l.alloc_attempt(AllocKind::Paging, DeviceKind::Vfio, 1, 0, libc::EOPNOTSUPP);
        l.hwpt_created(3, "auto", AllocKind::Auto, DeviceKind::Vfio, 0, 1);
        l.map(1, 0x1000, 0);
        l.map(1, 0x1000, libc::EEXIST);
        l.unmap(1, 0x1000, 0);
        l.hwpt_freed(3);
        l.unmap(1, 0x10000, 0);
        l.hwpt_freed(2);
        l.ioas_destroyed(1);

        let t = l.totals();
        let h0 = &t.hwpts[0];
        assert_eq!(h0.bytes_filled_at_alloc, 0x10000);
        assert_eq!(h0.bytes_mapped, 0x11000);
        assert_eq!(h0.bytes_unmapped, 0x11000);
        let auto = &t.hwpts[1];
        assert_eq!(auto.bytes_mapped, 0x11000);
        // 0x1000 by the unmap, 0x10000 still mapped when it was freed
        assert_eq!(auto.bytes_unmapped, 0x11000);
        assert_eq!(t.ioas[0].map_calls, 3);
        assert_eq!(t.ioas[0].maps_ok, 2);
        assert_eq!(t.ioas[0].live_bytes, 0);
        assert_eq!(t.expected_domain_allocations["vfio_paging"], 1);
        assert_eq!(t.expected_domain_allocations["vfio_auto"], 1);
        assert_eq!(t.expected_domain_allocations["total"], 2);
        assert_eq!(t.expected_domain_frees["total"], 2);
        let np = t.allocations.iter().find(|a| a.flags == 1).unwrap();
        assert_eq!((np.attempts, np.succeeded), (1, 0));
        assert_eq!(np.errnos["EOPNOTSUPP"], 1);
    }
}
