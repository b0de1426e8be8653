//! Test-only model of the 6.12 iommufd ioctls (emulated VT-d without scalable mode, plus the
//! selftest mock), so the whole step sequence can run without a kernel. It implements the
//! core checks the steps rely on and keeps its own per-domain byte counts, which the test
//! compares with the report's derived totals.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use libc::{EBUSY, EEXIST, EINVAL, ENOENT, EOPNOTSUPP};

use super::sys::FAKE_KERNEL;
use super::uapi::*;

/// The fake domains' aperture: 48 bits, as a 4-level VT-d table's.
const FAKE_APERTURE_LAST: u64 = (1 << 48) - 1;

#[derive(Debug, Clone)]
enum Obj {
    Ioas,
    Paging {
        ioas: u32,
        nest_parent: bool,
        auto: bool,
        mock: bool,
    },
    Nested {
        parent: u32,
    },
    MockDev {
        hwpt: u32,
    },
}

#[derive(Debug, Default)]
pub struct FakeState {
    next_id: u32,
    objs: HashMap<u32, Obj>,
    areas: HashMap<u32, BTreeMap<u64, u64>>,
    pub mock_available: bool,
    vfio_dev: Option<u32>,
    vfio_attached: Option<u32>,
    mock_idevs: HashMap<u32, u32>,
    /// hwpt id -> (mapped, unmapped), kept across destruction (ids are not reused here).
    pub domain_bytes: BTreeMap<u32, (u64, u64)>,
    pub domains_allocated: u32,
    pub domains_freed: u32,
    /// The fd of the call in progress, and the fd each object was created through.
    fd: i32,
    owner: HashMap<u32, i32>,
}

impl FakeState {
    fn alloc_id(&mut self, o: Obj) -> u32 {
        self.next_id += 1;
        self.objs.insert(self.next_id, o);
        self.owner.insert(self.next_id, self.fd);
        self.next_id
    }

    /// The iommufd `fd` was closed: its objects are destroyed, users first (as
    /// `iommufd_fops_release` destroys whatever has no other user, until none is left).
    fn release(&mut self, fd: i32) {
        loop {
            let mut ids: Vec<u32> = self
                .owner
                .iter()
                .filter(|(id, f)| **f == fd && self.objs.contains_key(id))
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            let before = self.objs.len();
            for id in ids.into_iter().rev() {
                let _ = self.destroy(id);
            }
            if self.objs.len() == before {
                break;
            }
        }
        self.owner.retain(|_, f| *f != fd);
    }

    fn domains_of(&self, ioas: u32) -> Vec<u32> {
        self.objs
            .iter()
            .filter_map(|(id, o)| match o {
                Obj::Paging { ioas: i, .. } if *i == ioas => Some(*id),
                _ => None,
            })
            .collect()
    }

    fn live(&self, ioas: u32) -> u64 {
        self.areas.get(&ioas).map_or(0, |a| a.values().sum())
    }

    fn new_paging(&mut self, ioas: u32, nest_parent: bool, auto: bool, mock: bool) -> u32 {
        let id = self.alloc_id(Obj::Paging {
            ioas,
            nest_parent,
            auto,
            mock,
        });
        let fill = self.live(ioas);
        self.domain_bytes.insert(id, (fill, 0));
        self.domains_allocated += 1;
        id
    }

    fn free_hwpt(&mut self, id: u32) {
        if let Some(Obj::Paging { ioas, .. }) = self.objs.remove(&id) {
            let live = self.live(ioas);
            self.domain_bytes.get_mut(&id).unwrap().1 += live;
        }
        self.domains_freed += 1;
    }

    fn in_use(&self, id: u32) -> bool {
        let attached = self.vfio_attached == Some(id)
            || self
                .objs
                .values()
                .any(|o| matches!(o, Obj::MockDev { hwpt } if *hwpt == id));
        let child = self.objs.values().any(|o| match o {
            Obj::Nested { parent } => *parent == id,
            Obj::Paging { ioas, .. } => *ioas == id,
            _ => false,
        });
        attached || child
    }

    fn destroy(&mut self, id: u32) -> i32 {
        let Some(o) = self.objs.get(&id).cloned() else {
            return ENOENT;
        };
        if self.in_use(id) {
            return EBUSY;
        }
        match o {
            Obj::Ioas => {
                self.objs.remove(&id);
                self.areas.remove(&id);
            }
            Obj::Paging { .. } | Obj::Nested { .. } => self.free_hwpt(id),
            Obj::MockDev { hwpt } => {
                self.objs.remove(&id);
                self.mock_idevs.retain(|_, s| *s != id);
                self.maybe_free_auto(hwpt);
            }
        }
        0
    }

    fn maybe_free_auto(&mut self, hwpt: u32) {
        if let Some(Obj::Paging { auto: true, .. }) = self.objs.get(&hwpt) {
            if !self.in_use(hwpt) {
                self.free_hwpt(hwpt);
            }
        }
    }

    fn hwpt_alloc(&mut self, c: &mut IommuHwptAlloc) -> i32 {
        if c.reserved != 0 {
            return EOPNOTSUPP;
        }
        if (c.data_type == IOMMU_HWPT_DATA_NONE) != (c.data_len == 0) {
            return EINVAL;
        }
        let mock = if self.vfio_dev == Some(c.dev_id) {
            false
        } else if self.mock_idevs.contains_key(&c.dev_id) {
            true
        } else {
            return ENOENT;
        };
        match self.objs.get(&c.pt_id).cloned() {
            Some(Obj::Ioas) => {
                if c.flags & !(IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING) != 0
                {
                    return EOPNOTSUPP;
                }
                if c.data_len != 0 {
                    return EOPNOTSUPP;
                }
                // VT-d without scalable mode: no dirty tracking, no nesting.
                if !mock && c.flags != 0 {
                    return EOPNOTSUPP;
                }
                let np = c.flags & IOMMU_HWPT_ALLOC_NEST_PARENT != 0;
                c.out_hwpt_id = self.new_paging(c.pt_id, np, false, mock);
                0
            }
            Some(Obj::Paging {
                nest_parent,
                auto,
                mock: pmock,
                ..
            }) => {
                if c.flags & !IOMMU_HWPT_FAULT_ID_VALID != 0 || c.data_len == 0 {
                    return EOPNOTSUPP;
                }
                if auto || !nest_parent || pmock != mock {
                    return EINVAL;
                }
                if !mock || c.data_type != IOMMU_HWPT_DATA_SELFTEST {
                    return EOPNOTSUPP;
                }
                c.out_hwpt_id = self.alloc_id(Obj::Nested { parent: c.pt_id });
                self.domains_allocated += 1;
                0
            }
            _ => EINVAL,
        }
    }

    fn map(&mut self, c: &mut IommuIoasMap) -> i32 {
        if !matches!(self.objs.get(&c.ioas_id), Some(Obj::Ioas)) {
            return ENOENT;
        }
        let areas = self.areas.entry(c.ioas_id).or_default();
        let last = c.iova + c.length - 1;
        // Beyond the aperture: a reserved range (io_pagetable.c iopt_check_iova).
        if last > FAKE_APERTURE_LAST {
            return EINVAL;
        }
        if areas.iter().any(|(&a, &l)| a <= last && a + l > c.iova) {
            return EEXIST;
        }
        areas.insert(c.iova, c.length);
        for d in self.domains_of(c.ioas_id) {
            self.domain_bytes.get_mut(&d).unwrap().0 += c.length;
        }
        0
    }

    fn unmap(&mut self, c: &mut IommuIoasUnmap) -> i32 {
        if !matches!(self.objs.get(&c.ioas_id), Some(Obj::Ioas)) {
            return ENOENT;
        }
        let all = c.iova == 0 && c.length == u64::MAX;
        let (start, last) = if all {
            (0, u64::MAX)
        } else {
            (c.iova, c.iova + c.length - 1)
        };
        let areas = self.areas.entry(c.ioas_id).or_default();
        let hit: Vec<(u64, u64)> = areas
            .iter()
            .filter(|(&a, &l)| a <= last && a + l > start)
            .map(|(&a, &l)| (a, l))
            .collect();
        let mut unmapped = 0;
        let mut rc = 0;
        for (a, l) in hit {
            if a < start || a + l - 1 > last {
                rc = ENOENT;
                break;
            }
            areas.remove(&a);
            unmapped += l;
        }
        for d in self.domains_of(c.ioas_id) {
            self.domain_bytes.get_mut(&d).unwrap().1 += unmapped;
        }
        if rc != 0 {
            return rc;
        }
        if !all && unmapped == 0 {
            return ENOENT;
        }
        c.length = unmapped;
        0
    }

    fn attach(&mut self, c: &mut VfioDeviceAttachIommufdPt) -> i32 {
        let Some(o) = self.objs.get(&c.pt_id).cloned() else {
            return ENOENT;
        };
        let old = self.vfio_attached;
        let new = match o {
            Obj::Ioas => self.new_paging(c.pt_id, false, true, false),
            Obj::Paging { .. } => c.pt_id,
            _ => return EINVAL,
        };
        self.vfio_attached = Some(new);
        if let Some(old) = old.filter(|&o| o != new) {
            self.maybe_free_auto(old);
        }
        c.pt_id = new;
        0
    }

    fn call(&mut self, fd: i32, req: u32, arg: *mut u8) -> i32 {
        self.fd = fd;
        // SAFETY (all casts): the caller passes the struct that matches `req` (uapi.rs).
        unsafe {
            match req {
                super::sys::FAKE_CLOSE => {
                    self.release(fd);
                    0
                }
                IOMMU_IOAS_ALLOC => {
                    let c = &mut *(arg as *mut IommuIoasAlloc);
                    c.out_ioas_id = self.alloc_id(Obj::Ioas);
                    0
                }
                IOMMU_DESTROY => self.destroy((*(arg as *mut IommuDestroy)).id),
                IOMMU_HWPT_ALLOC => self.hwpt_alloc(&mut *(arg as *mut IommuHwptAlloc)),
                IOMMU_IOAS_MAP => self.map(&mut *(arg as *mut IommuIoasMap)),
                // A copy and a file mapping occupy their IOVA range like a map.
                IOMMU_IOAS_COPY => {
                    let c = &*(arg as *mut IommuIoasCopy);
                    self.map(&mut IommuIoasMap {
                        ioas_id: c.dst_ioas_id,
                        iova: c.dst_iova,
                        length: c.length,
                        ..Default::default()
                    })
                }
                IOMMU_IOAS_MAP_FILE => {
                    let c = &*(arg as *mut IommuIoasMapFile);
                    self.map(&mut IommuIoasMap {
                        ioas_id: c.ioas_id,
                        iova: c.iova,
                        length: c.length,
                        ..Default::default()
                    })
                }
                IOMMU_IOAS_UNMAP => self.unmap(&mut *(arg as *mut IommuIoasUnmap)),
                IOMMU_GET_HW_INFO => {
                    // A driver without `hw_info` (AMD on 6.12).
                    let c = &mut *(arg as *mut IommuHwInfo);
                    c.out_data_type = 0;
                    c.data_len = 0;
                    0
                }
                IOMMU_IOAS_IOVA_RANGES => {
                    let c = &mut *(arg as *mut IommuIoasIovaRanges);
                    if !matches!(self.objs.get(&c.ioas_id), Some(Obj::Ioas)) {
                        return ENOENT;
                    }
                    if c.num_iovas >= 1 {
                        *(c.allowed_iovas as *mut [u64; 2]) = [0, FAKE_APERTURE_LAST];
                    }
                    c.num_iovas = 1;
                    c.out_iova_alignment = 4096;
                    0
                }
                IOMMU_TEST_CMD => {
                    let c = &mut *(arg as *mut IommuTestCmd);
                    if !self.mock_available {
                        return libc::ENOTTY;
                    }
                    if !matches!(self.objs.get(&c.id), Some(Obj::Ioas)) {
                        return ENOENT;
                    }
                    let hwpt = self.new_paging(c.id, false, true, true);
                    let stdev = self.alloc_id(Obj::MockDev { hwpt });
                    self.next_id += 1;
                    let idev = self.next_id;
                    self.mock_idevs.insert(idev, stdev);
                    c.payload[0] = stdev;
                    c.payload[1] = hwpt;
                    c.payload[2] = idev;
                    0
                }
                VFIO_DEVICE_BIND_IOMMUFD => {
                    let c = &mut *(arg as *mut VfioDeviceBindIommufd);
                    self.next_id += 1;
                    c.out_devid = self.next_id;
                    self.vfio_dev = Some(c.out_devid);
                    0
                }
                VFIO_DEVICE_ATTACH_IOMMUFD_PT => {
                    self.attach(&mut *(arg as *mut VfioDeviceAttachIommufdPt))
                }
                VFIO_DEVICE_DETACH_IOMMUFD_PT => {
                    if let Some(old) = self.vfio_attached.take() {
                        self.maybe_free_auto(old);
                    }
                    0
                }
                _ => libc::ENOTTY,
            }
        }
    }

    /// Objects still alive.
    pub fn live_objects(&self) -> usize {
        self.objs.len()
    }
}

/// Installs the fake for this thread; the returned state can be inspected afterwards.
pub fn install(mock_available: bool) -> Rc<RefCell<FakeState>> {
    let st = Rc::new(RefCell::new(FakeState {
        mock_available,
        ..Default::default()
    }));
    let s2 = st.clone();
    FAKE_KERNEL.with(|f| {
        *f.borrow_mut() = Some(Box::new(move |fd, req, arg| {
            s2.borrow_mut().call(fd, req, arg)
        }));
    });
    st
}

pub fn uninstall() {
    FAKE_KERNEL.with(|f| *f.borrow_mut() = None);
}
