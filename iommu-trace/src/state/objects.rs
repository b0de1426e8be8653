//! The iommufd objects alive now, with what they refer to and who made them, and the counts
//! of creations, aborts and destructions by type and outcome, and lifetimes by type.
//!
//! Memory grows with the live objects (a VMM holds tens) and with the bounded keys (type
//! names are the known ones or `unknown`; errnos fold into a bounded set at export).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::histogram::{Histogram, LIFETIME_BOUNDS_NS};
use crate::events::{DestroyHow, Event, EventBody, KernelPtr};
use crate::session::OBJECT_TYPES;

/// An object type's name: one of [`OBJECT_TYPES`] or `unknown`, whatever a capture holds.
pub fn bounded_object(name: &str) -> &'static str {
    OBJECT_TYPES
        .iter()
        .find(|t| **t == name)
        .copied()
        .unwrap_or("unknown")
}

/// Object counts by type.
pub type TypeCounts = BTreeMap<&'static str, u64>;

/// An object alive now.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveObject {
    pub object: &'static str,
    pub id: u32,
    pub obj: KernelPtr,
    /// Its iommufd context (one per open of /dev/iommu).
    pub ictx: KernelPtr,
    /// The task that created it.
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub created_ns: u64,
    /// Ids of the objects it refers to, by role (`ioas`, `parent`, `viommu`, ...).
    pub refs: BTreeMap<String, u32>,
    pub domain: Option<KernelPtr>,
    pub virt_id: Option<u64>,
    pub size: u64,
}

/// The object part of the live aggregate.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    live: HashMap<KernelPtr, LiveObject>,
    /// Creations by type and errno (0: published).
    created: HashMap<(&'static str, i32), u64>,
    /// Aborts by type and errno (`None`: not inside an iommufd ioctl).
    aborted: HashMap<(&'static str, Option<i32>), u64>,
    destroyed: HashMap<(&'static str, DestroyHow), u64>,
    lifetime: HashMap<&'static str, Histogram>,
    /// Destroyed objects whose creation was not seen.
    unseen: u64,
    /// iommufd contexts whose file was closed (a destroy with `how` close was seen). A
    /// context pointer is reused by a later open: the first object published in it again
    /// takes it off.
    closed: HashSet<KernelPtr>,
}

impl Objects {
    pub(super) fn apply(&mut self, ev: &Event) {
        match &ev.body {
            EventBody::ObjectAlloc(o) => {
                let object = bounded_object(&o.object);
                *self.created.entry((object, o.errno)).or_default() += 1;
                if o.errno != 0 {
                    return;
                }
                self.closed.remove(&o.ictx);
                self.live.insert(
                    o.obj,
                    LiveObject {
                        object,
                        id: o.id,
                        obj: o.obj,
                        ictx: o.ictx,
                        pid: ev.pid,
                        comm: ev.comm.clone(),
                        cgroup_id: ev.cgroup_id,
                        created_ns: ev.ts_ns,
                        refs: o.refs.clone(),
                        domain: o.domain,
                        virt_id: o.virt_id,
                        size: o.size,
                    },
                );
            }
            EventBody::ObjectAbort(o) => {
                *self
                    .aborted
                    .entry((bounded_object(&o.object), o.errno))
                    .or_default() += 1;
            }
            EventBody::ObjectDestroy(o) => {
                let object = bounded_object(&o.object);
                *self.destroyed.entry((object, o.how)).or_default() += 1;
                match self.live.remove(&o.obj) {
                    Some(l) => {
                        if o.how == DestroyHow::Close {
                            self.closed.insert(l.ictx);
                        }
                        self.lifetime
                            .entry(object)
                            .or_insert_with(|| Histogram::with_bounds(&LIFETIME_BOUNDS_NS))
                            .observe(ev.ts_ns.saturating_sub(l.created_ns))
                    }
                    None => self.unseen += 1,
                }
            }
            _ => {}
        }
    }

    /// Every object alive now.
    pub fn live(&self) -> impl Iterator<Item = &LiveObject> {
        self.live.values()
    }

    /// The object is alive although its iommufd was closed: the kernel should have
    /// destroyed it (or its destruction was not recorded).
    pub fn outlived_close(&self, o: &LiveObject) -> bool {
        self.closed.contains(&o.ictx)
    }

    pub fn created(&self) -> &HashMap<(&'static str, i32), u64> {
        &self.created
    }

    pub fn aborted(&self) -> &HashMap<(&'static str, Option<i32>), u64> {
        &self.aborted
    }

    pub fn destroyed(&self) -> &HashMap<(&'static str, DestroyHow), u64> {
        &self.destroyed
    }

    pub fn lifetime(&self) -> &HashMap<&'static str, Histogram> {
        &self.lifetime
    }

    /// Destroyed objects whose creation was not seen (made before tracing started).
    pub fn destroyed_unseen(&self) -> u64 {
        self.unseen
    }

    /// Live objects by type and creator cgroup: the `n` cgroups holding the most, and the
    /// rest summed per type.
    pub fn live_by_cgroup(&self, n: usize) -> (Vec<(u64, TypeCounts)>, TypeCounts) {
        let mut per: HashMap<u64, TypeCounts> = HashMap::new();
        for l in self.live.values() {
            *per.entry(l.cgroup_id)
                .or_default()
                .entry(l.object)
                .or_default() += 1;
        }
        let mut all: Vec<_> = per.into_iter().collect();
        all.sort_by_key(|(id, m)| (std::cmp::Reverse(m.values().sum::<u64>()), *id));
        let mut other = TypeCounts::new();
        for (_, m) in all.iter().skip(n) {
            for (t, c) in m {
                *other.entry(*t).or_default() += c;
            }
        }
        all.truncate(n);
        (all, other)
    }
}
