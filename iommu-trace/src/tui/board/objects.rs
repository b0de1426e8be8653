//! The object view's content: the live iommufd objects of each process and iommufd context
//! as a tree of what refers to what (IOAS -> HWPT -> nested HWPT; HWPT -> vIOMMU ->
//! vDEVICE / vEVENTQ / HW queue / nested HWPT), with the objects that outlived their
//! iommufd's close flagged, and, once a capture has ended, those it never saw destroyed.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Model;
use crate::events::KernelPtr;
use crate::session::OBJECT_TYPES;
use crate::state::LiveObject;
use crate::tui::format::{fmt_bytes, fmt_dur, short_ptr};

/// One line of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectLine {
    /// 0: a process and context heading; 1 and more: objects, by nesting.
    pub depth: usize,
    pub text: String,
    /// Why the object deserves a look (it outlived its iommufd's close, or the capture
    /// ended without destroying it), if it does.
    pub flag: Option<&'static str>,
}

/// The roles that make an object a child of another, strongest first: a nested HWPT made
/// through a vIOMMU hangs under the vIOMMU, not its parent HWPT.
const PARENT_ROLES: [&str; 4] = ["viommu", "parent", "hwpt", "ioas"];

fn type_rank(object: &str) -> usize {
    OBJECT_TYPES
        .iter()
        .position(|t| *t == object)
        .unwrap_or(OBJECT_TYPES.len())
}

/// One object's line; `pinned_bytes`: what its IOAS operations pinned (IOAS only).
fn describe(o: &LiveObject, now_ns: u64, pinned_bytes: Option<u64>) -> String {
    let mut s = format!("{} {}", o.object, o.id);
    if let Some(b) = pinned_bytes {
        s.push_str(&format!(" pinned {}", fmt_bytes(b)));
    }
    for (role, id) in &o.refs {
        if role == "device" || role == "fault" || role == "access" {
            s.push_str(&format!(" {role} {id}"));
        }
    }
    if let Some(v) = o.virt_id {
        s.push_str(&format!(" virt_id {v:#x}"));
    }
    if let Some(d) = o.domain {
        s.push_str(&format!(" domain {}", short_ptr(d.0, false)));
    }
    s.push_str(&format!(
        "  age {}",
        fmt_dur(now_ns.saturating_sub(o.created_ns))
    ));
    s
}

impl Model {
    /// The tree, heading by heading (processes by pid, contexts by pointer).
    pub fn object_tree(&self) -> Vec<ObjectLine> {
        let objects = self.state().objects();
        let pins = self.state().pins();
        let pinned = pins.pinned_pages_by_ioas();
        let pinned_bytes = |o: &LiveObject| {
            (o.object == "ioas").then(|| {
                pinned
                    .get(&(o.ictx, o.id))
                    .copied()
                    .unwrap_or(0)
                    .saturating_mul(pins.page_size())
            })
        };
        let mut groups: BTreeMap<(u32, KernelPtr), Vec<&LiveObject>> = BTreeMap::new();
        for o in objects.live() {
            groups.entry((o.pid, o.ictx)).or_default().push(o);
        }
        let mut out = Vec::new();
        for ((pid, ictx), mut objs) in groups {
            objs.sort_by_key(|o| (type_rank(o.object), o.id));
            out.push(ObjectLine {
                depth: 0,
                text: format!(
                    "{} (pid {pid})  iommufd {}  {} object(s)",
                    objs[0].comm,
                    short_ptr(ictx.0, false),
                    objs.len()
                ),
                flag: None,
            });
            let ids: HashSet<u32> = objs.iter().map(|o| o.id).collect();
            // Each object's parent, once: children by parent id, in display order.
            let mut children: HashMap<u32, Vec<&LiveObject>> = HashMap::new();
            let mut roots = Vec::new();
            for o in &objs {
                let parent = PARENT_ROLES
                    .iter()
                    .filter_map(|r| o.refs.get(*r))
                    .find(|id| ids.contains(id) && **id != o.id);
                match parent {
                    Some(p) => children.entry(*p).or_default().push(o),
                    None => roots.push(*o),
                }
            }
            let mut shown = HashSet::new();
            let mut stack: Vec<(&LiveObject, usize)> =
                roots.iter().rev().map(|o| (*o, 1)).collect();
            // Objects in a cycle of references (not from a real kernel) are shown as roots.
            let mut orphans = objs.iter().rev();
            while let Some((o, depth)) = stack
                .pop()
                .or_else(|| orphans.find(|o| !shown.contains(&o.id)).map(|o| (*o, 1)))
            {
                if !shown.insert(o.id) {
                    continue;
                }
                out.push(ObjectLine {
                    depth,
                    text: describe(o, self.now_ns(), pinned_bytes(o)),
                    flag: if objects.outlived_close(o) {
                        Some("OUTLIVED CLOSE")
                    } else if self.finished {
                        // The capture ended: this object was never destroyed in it.
                        Some("never destroyed")
                    } else {
                        None
                    },
                });
                for child in children.get(&o.id).into_iter().flatten().rev() {
                    if !shown.contains(&child.id) {
                        stack.push((child, depth + 1));
                    }
                }
            }
        }
        out
    }
}
