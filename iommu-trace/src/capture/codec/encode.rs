//! Writer side: the `Encoder` that interns tasks and pointers and writes event records,
//! user-data and the trailer record.

use rustc_hash::FxHashMap;

use super::varint::{put_delta, put_i, put_str, put_u};
use super::*;
use crate::capture::Trailer;
use crate::events::{
    AllocOp, DestroyHow, DomainKind, Event, EventBody, KernelPtr, PinMode, PtCause, UserData,
};

pub(crate) struct Encoder {
    shared: Tables,
    /// (tid, pid, cgroup_id) -> [(comm, index)].
    tasks: FxHashMap<(u32, u32, u64), Vec<(String, u32)>>,
    task_count: usize,
    ptrs: FxHashMap<u64, u32>,
    max_tasks: usize,
    max_ptrs: usize,
}

impl Encoder {
    pub(crate) fn new(base_ts: u64) -> Encoder {
        Encoder {
            shared: Tables::new(base_ts),
            tasks: FxHashMap::default(),
            task_count: 0,
            ptrs: FxHashMap::default(),
            max_tasks: MAX_TASKS,
            max_ptrs: MAX_PTRS,
        }
    }

    #[cfg(test)]
    pub(crate) fn set_limits(&mut self, max_tasks: usize, max_ptrs: usize) {
        self.max_tasks = max_tasks.clamp(1, MAX_TASKS);
        self.max_ptrs = max_ptrs.clamp(3, MAX_PTRS);
    }

    fn reset(&mut self, out: &mut Vec<u8>) {
        out.push(TAG_RESET);
        self.shared.reset();
        self.tasks.clear();
        self.task_count = 0;
        self.ptrs.clear();
    }

    fn task(&mut self, ev: &Event, out: &mut Vec<u8>) -> u32 {
        let entries = self
            .tasks
            .entry((ev.tid, ev.pid, ev.cgroup_id))
            .or_default();
        if let Some((_, idx)) = entries.iter().find(|(comm, _)| *comm == ev.comm) {
            return *idx;
        }
        let idx = self.task_count as u32;
        self.task_count += 1;
        entries.push((ev.comm.clone(), idx));
        out.push(TAG_TASK);
        put_u(out, ev.tid as u64);
        put_u(out, ev.pid as u64);
        put_str(out, &ev.comm);
        put_u(out, ev.cgroup_id);
        idx
    }

    fn ptr(&mut self, p: KernelPtr, out: &mut Vec<u8>) -> u32 {
        if let Some(&idx) = self.ptrs.get(&p.0) {
            return idx;
        }
        let idx = self.shared.ptrs.len() as u32;
        self.shared.ptrs.push(PtrState::default());
        self.ptrs.insert(p.0, idx);
        out.push(TAG_PTR);
        put_u(out, p.0);
        idx
    }

    /// Appends the records for `ev` (definitions it needs, then the event) to `out`.
    pub(crate) fn encode(&mut self, ev: &Event, out: &mut Vec<u8>) {
        if self.task_count >= self.max_tasks || self.shared.ptrs.len() + 3 > self.max_ptrs {
            self.reset(out);
        }
        let task = self.task(ev, out);
        // Pointers first, so that their definitions precede the event record.
        let (tag, p0, p1) = match &ev.body {
            EventBody::DomainAlloc(a) => (
                TAG_DOMAIN_ALLOC,
                Some(self.ptr(a.parent, out)),
                Some(self.ptr(a.domain, out)),
            ),
            EventBody::HwptAlloc(_) => (TAG_HWPT_ALLOC, None, None),
            EventBody::DomainFree(f) => (TAG_DOMAIN_FREE, Some(self.ptr(f.domain, out)), None),
            EventBody::Map(m) => (TAG_MAP, Some(self.ptr(m.domain, out)), None),
            EventBody::Unmap(m) => (TAG_UNMAP, Some(self.ptr(m.domain, out)), None),
            EventBody::PtAlloc(p) => (TAG_PT_ALLOC, Some(self.ptr(p.domain, out)), None),
            EventBody::PtFree(p) => (TAG_PT_FREE, Some(self.ptr(p.domain, out)), None),
            EventBody::PtGrow(g) => (TAG_PT_GROW, Some(self.ptr(g.domain, out)), None),
            EventBody::Lost(_) => (TAG_LOST, None, None),
            EventBody::ObjectAlloc(o) => (
                TAG_OBJECT_ALLOC,
                Some(self.ptr(o.obj, out)),
                Some(self.ptr(o.ictx, out)),
            ),
            EventBody::ObjectAbort(o) => (
                TAG_OBJECT_ABORT,
                Some(self.ptr(o.obj, out)),
                Some(self.ptr(o.ictx, out)),
            ),
            EventBody::ObjectDestroy(o) => (TAG_OBJECT_DESTROY, Some(self.ptr(o.obj, out)), None),
            EventBody::IoasMap(o)
            | EventBody::IoasMapFile(o)
            | EventBody::IoasCopy(o)
            | EventBody::IoasUnmap(o)
            | EventBody::IoasChangeProcess(o) => (TAG_IOAS_OP, Some(self.ptr(o.ictx, out)), None),
            EventBody::Option(o) => (TAG_OPTION, Some(self.ptr(o.ictx, out)), None),
            EventBody::Pin(p) => (
                TAG_PIN,
                Some(self.ptr(p.iopt_pages, out)),
                p.target_mm.map(|m| self.ptr(m, out)),
            ),
        };
        let has_p1 = p1.is_some();
        let p0 = p0.unwrap_or(0);
        let p1 = p1.unwrap_or(0);
        // A HWPT's domain: the third pointer an event can carry.
        let p2 = match &ev.body {
            EventBody::ObjectAlloc(o) => o.domain.map(|d| self.ptr(d, out)),
            _ => None,
        };

        out.push(tag);
        let flags_at = out.len();
        out.push(0);
        let mut flags = 0u8;
        put_delta(out, ev.ts_ns, self.shared.prev_ts);
        self.shared.prev_ts = ev.ts_ns;
        if self.shared.prev_cpu == Some(ev.cpu) {
            flags |= SAME_CPU;
        } else {
            put_u(out, ev.cpu as u64);
            self.shared.prev_cpu = Some(ev.cpu);
        }
        if self.shared.prev_task == Some(task) {
            flags |= SAME_TASK;
        } else {
            put_u(out, task as u64);
            self.shared.prev_task = Some(task);
        }

        match &ev.body {
            EventBody::Map(m) | EventBody::Unmap(m) => {
                let map = tag == TAG_MAP;
                put_u(out, p0 as u64);
                let st = &mut self.shared.ptrs[p0 as usize];
                let (iova, paddr) = st.predict(map);
                if m.iova == iova {
                    flags |= M_IOVA_PREDICTED;
                } else {
                    put_delta(out, m.iova, iova);
                }
                if m.size % PAGE == 0 {
                    flags |= M_SIZE_IN_PAGES;
                    put_u(out, m.size / PAGE);
                } else {
                    put_u(out, m.size);
                }
                if m.done == m.size {
                    flags |= M_DONE_IS_SIZE;
                } else {
                    put_u(out, m.done);
                }
                if m.paddr == paddr {
                    flags |= M_PADDR_PREDICTED;
                } else {
                    put_delta(out, m.paddr, paddr);
                }
                if m.errno == 0 {
                    flags |= M_OK;
                } else {
                    put_i(out, m.errno as i64);
                }
                put_u(out, m.latency_ns);
                st.advance(map, m);
            }
            EventBody::PtAlloc(p) | EventBody::PtFree(p) => {
                put_u(out, p0 as u64);
                if p.pages == 1 {
                    flags |= P_ONE_PAGE;
                } else {
                    put_u(out, p.pages);
                }
                if p.charged {
                    flags |= P_CHARGED;
                }
                if p.memcg_id == 0 {
                    flags |= P_MEMCG_ZERO;
                } else if p.memcg_id == ev.cgroup_id {
                    flags |= P_MEMCG_IS_CGROUP;
                } else {
                    put_u(out, p.memcg_id);
                }
                let cause = match p.cause {
                    PtCause::Alloc => 0u8,
                    PtCause::Map => 1,
                    PtCause::Unmap => 2,
                    PtCause::Free => 3,
                };
                flags |= cause << P_CAUSE_SHIFT;
            }
            EventBody::DomainFree(f) => {
                put_u(out, p0 as u64);
                put_u(out, f.latency_ns);
            }
            EventBody::PtGrow(g) => {
                put_u(out, p0 as u64);
                put_u(out, g.levels as u64);
            }
            EventBody::Lost(l) => {
                put_u(out, l.ringbuf_full);
                put_u(out, l.context_full);
            }
            EventBody::HwptAlloc(h) => {
                put_u(out, h.flags as u64);
                put_u(out, h.dev_id as u64);
                put_u(out, h.pt_id as u64);
                put_u(out, h.data_type as u64);
                put_u(out, h.data_len as u64);
                put_u(out, h.hwpt_id as u64);
                if h.errno == 0 {
                    flags |= A_OK;
                } else {
                    put_i(out, h.errno as i64);
                }
                put_u(out, h.latency_ns);
            }
            EventBody::ObjectAlloc(o) => {
                put_str(out, &o.object);
                put_u(out, o.id as u64);
                put_u(out, p0 as u64);
                put_u(out, p1 as u64);
                if o.errno == 0 {
                    flags |= O_OK;
                } else {
                    put_i(out, o.errno as i64);
                }
                put_u(out, o.size);
                put_u(out, o.latency_ns);
                put_u(out, o.refs.len() as u64);
                for (name, id) in &o.refs {
                    put_str(out, name);
                    put_u(out, *id as u64);
                }
                if let Some(d) = p2 {
                    flags |= O_DOMAIN;
                    put_u(out, d as u64);
                }
                if let Some(v) = o.virt_id {
                    flags |= O_VIRT_ID;
                    put_u(out, v);
                }
            }
            EventBody::ObjectAbort(o) => {
                put_str(out, &o.object);
                put_u(out, o.id as u64);
                put_u(out, p0 as u64);
                put_u(out, p1 as u64);
                put_u(out, o.size);
                if let Some(e) = o.errno {
                    flags |= O_ERRNO;
                    put_i(out, e as i64);
                }
            }
            EventBody::IoasMap(o)
            | EventBody::IoasMapFile(o)
            | EventBody::IoasCopy(o)
            | EventBody::IoasUnmap(o)
            | EventBody::IoasChangeProcess(o) => {
                out.push(match &ev.body {
                    EventBody::IoasMap(_) => 0,
                    EventBody::IoasMapFile(_) => 1,
                    EventBody::IoasCopy(_) => 2,
                    EventBody::IoasUnmap(_) => 3,
                    _ => 4,
                });
                put_u(out, p0 as u64);
                put_u(out, o.ioas as u64);
                put_u(out, o.iova);
                put_u(out, o.length);
                put_u(out, o.flags as u64);
                flags |= put_errno(out, o.errno);
                put_u(out, o.latency_ns);
                let optional = [
                    (I_USER_VA, o.user_va),
                    (I_FD, o.fd.map(|f| f as u32 as u64)),
                    (I_START, o.start),
                    (I_SRC_IOAS, o.src_ioas.map(u64::from)),
                    (I_SRC_IOVA, o.src_iova),
                ];
                for (bit, v) in optional {
                    if let Some(v) = v {
                        flags |= bit;
                        put_u(out, v);
                    }
                }
            }
            EventBody::Option(o) => {
                put_u(out, p0 as u64);
                put_str(out, &o.option);
                put_str(out, &o.op);
                put_u(out, o.object_id as u64);
                put_u(out, o.val64);
                flags |= put_errno(out, o.errno);
                put_u(out, o.latency_ns);
            }
            EventBody::Pin(p) => {
                put_u(out, p0 as u64);
                put_i(out, p.pages);
                put_i(out, p.bytes);
                put_i(out, p.charged);
                out.push(match p.mode {
                    PinMode::None => 0,
                    PinMode::User => 1,
                    PinMode::Mm => 2,
                });
                put_u(out, p.target_pid as u64);
                if let Some(uid) = p.target_uid {
                    flags |= PIN_UID;
                    put_u(out, uid as u64);
                }
                if has_p1 {
                    flags |= PIN_MM;
                    put_u(out, p1 as u64);
                }
                if let Some(l) = p.limit_bytes {
                    flags |= PIN_LIMIT;
                    put_u(out, l);
                }
                put_u(out, p.locked_bytes);
                put_u(out, p.pinned_pages);
                put_u(out, p.total_pages);
                put_u(out, p.pinned_vm_bytes);
                flags |= put_errno(out, p.errno);
                // 0: not measured (a real duration is never 0 ns).
                put_u(out, p.latency_ns.unwrap_or(0));
            }
            EventBody::ObjectDestroy(o) => {
                put_str(out, &o.object);
                put_u(out, o.id as u64);
                put_u(out, p0 as u64);
                out.push(match o.how {
                    DestroyHow::Destroy => 0,
                    DestroyHow::Unbind => 1,
                    DestroyHow::Close => 2,
                    DestroyHow::Put => 3,
                });
            }
            EventBody::DomainAlloc(a) => {
                put_str(out, &a.driver);
                out.push(match a.op {
                    AllocOp::AllocUser => 0,
                    AllocOp::PagingFlags => 1,
                    AllocOp::Nested => 2,
                    AllocOp::ViommuNested => 3,
                });
                out.push(match a.kind {
                    DomainKind::Paging => 0,
                    DomainKind::Nested => 1,
                    DomainKind::Auto => 2,
                    DomainKind::Other => 3,
                });
                put_u(out, a.flags as u64);
                put_u(out, a.data_type as u64);
                put_u(out, a.data_len as u64);
                if let Some(d) = &a.data {
                    flags |= A_DATA;
                    put_user_data(out, d);
                }
                put_u(out, p0 as u64);
                put_u(out, p1 as u64);
                if a.errno == 0 {
                    flags |= A_OK;
                } else {
                    put_i(out, a.errno as i64);
                }
                put_u(out, a.latency_ns);
                let g = &a.geometry;
                put_u(out, g.pgsize_bitmap);
                put_u(out, g.aperture_start);
                put_u(out, g.aperture_end);
                put_u(out, g.domain_type as u64);
                if !g.driver_fields.is_empty() {
                    flags |= A_DRIVER_FIELDS;
                    put_u(out, g.driver_fields.len() as u64);
                    for (name, v) in &g.driver_fields {
                        put_str(out, name);
                        put_u(out, *v);
                    }
                }
                if let Some(v) = a.viommu_id {
                    flags |= A_VIOMMU;
                    put_u(out, v as u64);
                }
            }
        }
        out[flags_at] = flags;
    }
}

/// An errno field present only when non-zero: returns the flag that says it is 0.
fn put_errno(out: &mut Vec<u8>, errno: i32) -> u8 {
    if errno == 0 {
        O_OK
    } else {
        put_i(out, errno as i64);
        0
    }
}

fn put_user_data(out: &mut Vec<u8>, d: &UserData) {
    match d {
        UserData::VtdS1 {
            flags,
            pgtbl_addr,
            addr_width,
        } => {
            out.push(0);
            put_u(out, *flags);
            put_u(out, *pgtbl_addr);
            put_u(out, *addr_width as u64);
        }
        UserData::ArmSmmuv3 { ste } => {
            out.push(1);
            ste.iter().for_each(|v| put_u(out, *v));
        }
        UserData::AmdGuest { dte } => {
            out.push(2);
            dte.iter().for_each(|v| put_u(out, *v));
        }
        UserData::Selftest { iotlb } => {
            out.push(3);
            put_u(out, *iotlb as u64);
        }
        UserData::Raw { data_type, hex } => {
            out.push(4);
            put_u(out, *data_type as u64);
            put_str(out, hex);
        }
    }
}

/// The trailer record.
pub(crate) fn encode_trailer(t: &Trailer, out: &mut Vec<u8>) {
    let json = serde_json::to_vec(t).expect("a Trailer always serializes");
    out.push(TAG_TRAILER);
    put_u(out, json.len() as u64);
    out.extend_from_slice(&json);
}
