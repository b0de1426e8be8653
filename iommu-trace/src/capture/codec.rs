//! Records inside frames: the compact event encoding, with the interning and prediction
//! state that the writer keeps and the reader rebuilds (see the layout in `mod.rs`).

use std::collections::HashMap;

use super::Trailer;
use crate::events::{
    AllocOp, DomainAlloc, DomainFree, DomainKind, Event, EventBody, Geometry, HwptAlloc, KernelPtr,
    Lost, MapOp, PtCause, PtPages, UserData,
};

pub(crate) const TAG_TASK: u8 = 0;
pub(crate) const TAG_PTR: u8 = 1;
pub(crate) const TAG_RESET: u8 = 2;
pub(crate) const TAG_TRAILER: u8 = 3;
const TAG_DOMAIN_ALLOC: u8 = 16;
const TAG_HWPT_ALLOC: u8 = 17;
const TAG_DOMAIN_FREE: u8 = 18;
const TAG_MAP: u8 = 19;
const TAG_UNMAP: u8 = 20;
const TAG_PT_ALLOC: u8 = 21;
const TAG_PT_FREE: u8 = 22;
const TAG_LOST: u8 = 23;

// Flags common to all events.
const SAME_CPU: u8 = 0x01;
const SAME_TASK: u8 = 0x02;
// map / unmap
const M_IOVA_PREDICTED: u8 = 0x04;
const M_DONE_IS_SIZE: u8 = 0x08;
const M_OK: u8 = 0x10;
const M_PADDR_PREDICTED: u8 = 0x20;
const M_SIZE_IN_PAGES: u8 = 0x40;
// pt_alloc / pt_free
const P_CHARGED: u8 = 0x04;
const P_MEMCG_ZERO: u8 = 0x08;
const P_MEMCG_IS_CGROUP: u8 = 0x10;
const P_CAUSE_SHIFT: u8 = 5;
const P_ONE_PAGE: u8 = 0x80;
// domain_alloc / hwpt_alloc
const A_OK: u8 = 0x04;
const A_DATA: u8 = 0x08;
const A_DRIVER_FIELDS: u8 = 0x10;

const PAGE: u64 = 4096;

/// Table sizes past which the writer emits a reset (the reader refuses bigger tables).
pub(crate) const MAX_TASKS: usize = 1 << 16;
pub(crate) const MAX_PTRS: usize = 1 << 20;

/// Per-pointer predictions: where the next map / unmap of this domain probably starts.
#[derive(Clone, Copy, Debug, Default)]
struct PtrState {
    map_iova: u64,
    map_paddr: u64,
    unmap_iova: u64,
}

impl PtrState {
    fn predict(&self, map: bool) -> (u64, u64) {
        if map {
            (self.map_iova, self.map_paddr)
        } else {
            (self.unmap_iova, 0)
        }
    }

    fn advance(&mut self, map: bool, m: &MapOp) {
        if map {
            self.map_iova = m.iova.wrapping_add(m.size);
            self.map_paddr = m.paddr.wrapping_add(m.size);
        } else {
            self.unmap_iova = m.iova.wrapping_add(m.size);
        }
    }
}

/// State the writer and the reader keep identically.
#[derive(Debug)]
struct Shared {
    prev_ts: u64,
    prev_cpu: Option<u32>,
    prev_task: Option<u32>,
    ptrs: Vec<PtrState>,
}

impl Shared {
    fn new(base_ts: u64) -> Shared {
        Shared {
            prev_ts: base_ts,
            prev_cpu: None,
            prev_task: None,
            ptrs: Vec::new(),
        }
    }

    fn reset(&mut self) {
        self.prev_cpu = None;
        self.prev_task = None;
        self.ptrs.clear();
    }
}

// ---------------------------------------------------------------------------------------
// Primitive encoding.

fn put_u(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_i(out: &mut Vec<u8>, v: i64) {
    put_u(out, zigzag(v));
}

/// A signed difference, exact for any two u64 values.
fn put_delta(out: &mut Vec<u8>, v: u64, from: u64) {
    put_i(out, v.wrapping_sub(from) as i64);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Reads a record payload; every error is a message for the reader's warning.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    pub(crate) pos: usize,
}

type DResult<T> = Result<T, String>;

impl<'a> Dec<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Dec<'a> {
        Dec { buf, pos: 0 }
    }

    fn byte(&mut self) -> DResult<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| "record ends early".to_string())?;
        self.pos += 1;
        Ok(b)
    }

    fn u64(&mut self) -> DResult<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            let bits = (b & 0x7f) as u64;
            if i == 9 && bits > 1 {
                return Err("varint overflows 64 bits".into());
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn u32(&mut self) -> DResult<u32> {
        let v = self.u64()?;
        u32::try_from(v).map_err(|_| format!("value {v} does not fit 32 bits"))
    }

    fn i64(&mut self) -> DResult<i64> {
        self.u64().map(unzigzag)
    }

    fn i32(&mut self) -> DResult<i32> {
        let v = self.i64()?;
        i32::try_from(v).map_err(|_| format!("value {v} does not fit 32 bits"))
    }

    fn delta(&mut self, from: u64) -> DResult<u64> {
        Ok(from.wrapping_add(self.i64()? as u64))
    }

    fn bytes(&mut self, n: usize) -> DResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("a {n}-byte field runs past the end of its frame"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn string(&mut self) -> DResult<String> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| "string length overflows".to_string())?;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
}

// ---------------------------------------------------------------------------------------
// Writer side.

pub(crate) struct Encoder {
    shared: Shared,
    /// (tid, pid, cgroup_id) -> [(comm, index)].
    tasks: HashMap<(u32, u32, u64), Vec<(String, u32)>>,
    task_count: usize,
    ptrs: HashMap<u64, u32>,
    max_tasks: usize,
    max_ptrs: usize,
}

impl Encoder {
    pub(crate) fn new(base_ts: u64) -> Encoder {
        Encoder {
            shared: Shared::new(base_ts),
            tasks: HashMap::new(),
            task_count: 0,
            ptrs: HashMap::new(),
            max_tasks: MAX_TASKS,
            max_ptrs: MAX_PTRS,
        }
    }

    #[cfg(test)]
    pub(crate) fn set_limits(&mut self, max_tasks: usize, max_ptrs: usize) {
        self.max_tasks = max_tasks.clamp(1, MAX_TASKS);
        self.max_ptrs = max_ptrs.clamp(2, MAX_PTRS);
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
        if self.task_count >= self.max_tasks || self.shared.ptrs.len() + 2 > self.max_ptrs {
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
            EventBody::Lost(_) => (TAG_LOST, None, None),
        };
        let p0 = p0.unwrap_or(0);
        let p1 = p1.unwrap_or(0);

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
            EventBody::DomainAlloc(a) => {
                put_str(out, &a.driver);
                out.push(match a.op {
                    AllocOp::AllocUser => 0,
                    AllocOp::PagingFlags => 1,
                    AllocOp::Nested => 2,
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
            }
        }
        out[flags_at] = flags;
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

// ---------------------------------------------------------------------------------------
// Reader side.

struct Task {
    tid: u32,
    pid: u32,
    comm: String,
    cgroup_id: u64,
}

pub(crate) enum Decoded {
    Event(Event),
    Trailer(Trailer),
}

pub(crate) struct Decoder {
    shared: Shared,
    tasks: Vec<Task>,
    ptrs: Vec<u64>,
}

impl Decoder {
    pub(crate) fn new(base_ts: u64) -> Decoder {
        Decoder {
            shared: Shared::new(base_ts),
            tasks: Vec::new(),
            ptrs: Vec::new(),
        }
    }

    fn ptr(&self, d: &mut Dec) -> DResult<(usize, KernelPtr)> {
        let idx = d.u64()?;
        match self.ptrs.get(idx as usize) {
            Some(&p) => Ok((idx as usize, KernelPtr(p))),
            None => Err(format!(
                "pointer index {idx} used before it was defined ({} defined)",
                self.ptrs.len()
            )),
        }
    }

    /// Decodes one record. Definitions and resets update the tables and give `None`.
    pub(crate) fn decode(&mut self, d: &mut Dec) -> DResult<Option<Decoded>> {
        let tag = d.byte()?;
        match tag {
            TAG_TASK => {
                if self.tasks.len() >= MAX_TASKS {
                    return Err(format!("more than {MAX_TASKS} task definitions"));
                }
                let tid = d.u32()?;
                let pid = d.u32()?;
                let comm = d.string()?;
                let cgroup_id = d.u64()?;
                self.tasks.push(Task {
                    tid,
                    pid,
                    comm,
                    cgroup_id,
                });
                Ok(None)
            }
            TAG_PTR => {
                if self.ptrs.len() >= MAX_PTRS {
                    return Err(format!("more than {MAX_PTRS} pointer definitions"));
                }
                self.ptrs.push(d.u64()?);
                self.shared.ptrs.push(PtrState::default());
                Ok(None)
            }
            TAG_RESET => {
                self.shared.reset();
                self.tasks.clear();
                self.ptrs.clear();
                Ok(None)
            }
            TAG_TRAILER => {
                let n = usize::try_from(d.u64()?).map_err(|_| "trailer too long".to_string())?;
                let json = d.bytes(n)?;
                serde_json::from_slice(json)
                    .map(|t| Some(Decoded::Trailer(t)))
                    .map_err(|e| format!("trailer is not valid JSON: {e}"))
            }
            TAG_DOMAIN_ALLOC..=TAG_LOST => self.event(tag, d).map(|e| Some(Decoded::Event(e))),
            _ => Err(format!(
                "unknown record tag {tag} (written by a newer iommu-trace, or damaged)"
            )),
        }
    }

    fn event(&mut self, tag: u8, d: &mut Dec) -> DResult<Event> {
        let flags = d.byte()?;
        let ts_ns = d.delta(self.shared.prev_ts)?;
        let cpu = if flags & SAME_CPU != 0 {
            self.shared
                .prev_cpu
                .ok_or("'same CPU' on the first event after a reset")?
        } else {
            d.u32()?
        };
        let task = if flags & SAME_TASK != 0 {
            self.shared
                .prev_task
                .ok_or("'same task' on the first event after a reset")?
        } else {
            d.u32()?
        };
        let t = self.tasks.get(task as usize).ok_or_else(|| {
            format!(
                "task index {task} used before it was defined ({} defined)",
                self.tasks.len()
            )
        })?;
        let (tid, pid, comm, cgroup_id) = (t.tid, t.pid, t.comm.clone(), t.cgroup_id);

        let body = match tag {
            TAG_MAP | TAG_UNMAP => {
                let map = tag == TAG_MAP;
                let (idx, domain) = self.ptr(d)?;
                let st = &mut self.shared.ptrs[idx];
                let (piova, ppaddr) = st.predict(map);
                let iova = if flags & M_IOVA_PREDICTED != 0 {
                    piova
                } else {
                    d.delta(piova)?
                };
                let size = if flags & M_SIZE_IN_PAGES != 0 {
                    d.u64()?
                        .checked_mul(PAGE)
                        .ok_or("size in pages overflows")?
                } else {
                    d.u64()?
                };
                let done = if flags & M_DONE_IS_SIZE != 0 {
                    size
                } else {
                    d.u64()?
                };
                let paddr = if flags & M_PADDR_PREDICTED != 0 {
                    ppaddr
                } else {
                    d.delta(ppaddr)?
                };
                let errno = if flags & M_OK != 0 { 0 } else { d.i32()? };
                let latency_ns = d.u64()?;
                let m = MapOp {
                    domain,
                    iova,
                    size,
                    done,
                    paddr,
                    errno,
                    latency_ns,
                };
                st.advance(map, &m);
                if map {
                    EventBody::Map(m)
                } else {
                    EventBody::Unmap(m)
                }
            }
            TAG_PT_ALLOC | TAG_PT_FREE => {
                let (_, domain) = self.ptr(d)?;
                let pages = if flags & P_ONE_PAGE != 0 { 1 } else { d.u64()? };
                let memcg_id = if flags & P_MEMCG_ZERO != 0 {
                    0
                } else if flags & P_MEMCG_IS_CGROUP != 0 {
                    cgroup_id
                } else {
                    d.u64()?
                };
                let cause = match (flags >> P_CAUSE_SHIFT) & 3 {
                    0 => PtCause::Alloc,
                    1 => PtCause::Map,
                    2 => PtCause::Unmap,
                    _ => PtCause::Free,
                };
                let p = PtPages {
                    domain,
                    pages,
                    charged: flags & P_CHARGED != 0,
                    memcg_id,
                    cause,
                };
                if tag == TAG_PT_ALLOC {
                    EventBody::PtAlloc(p)
                } else {
                    EventBody::PtFree(p)
                }
            }
            TAG_DOMAIN_FREE => {
                let (_, domain) = self.ptr(d)?;
                EventBody::DomainFree(DomainFree {
                    domain,
                    latency_ns: d.u64()?,
                })
            }
            TAG_LOST => EventBody::Lost(Lost {
                ringbuf_full: d.u64()?,
                context_full: d.u64()?,
            }),
            TAG_HWPT_ALLOC => EventBody::HwptAlloc(HwptAlloc {
                flags: d.u32()?,
                dev_id: d.u32()?,
                pt_id: d.u32()?,
                data_type: d.u32()?,
                data_len: d.u32()?,
                hwpt_id: d.u32()?,
                errno: if flags & A_OK != 0 { 0 } else { d.i32()? },
                latency_ns: d.u64()?,
            }),
            _ => {
                // TAG_DOMAIN_ALLOC
                let driver = d.string()?;
                let op = match d.byte()? {
                    0 => AllocOp::AllocUser,
                    1 => AllocOp::PagingFlags,
                    2 => AllocOp::Nested,
                    n => return Err(format!("unknown allocation op {n}")),
                };
                let kind = match d.byte()? {
                    0 => DomainKind::Paging,
                    1 => DomainKind::Nested,
                    2 => DomainKind::Auto,
                    3 => DomainKind::Other,
                    n => return Err(format!("unknown domain kind {n}")),
                };
                let a_flags = d.u32()?;
                let data_type = d.u32()?;
                let data_len = d.u32()?;
                let data = if flags & A_DATA != 0 {
                    Some(user_data(d)?)
                } else {
                    None
                };
                let (_, parent) = self.ptr(d)?;
                let (_, domain) = self.ptr(d)?;
                let errno = if flags & A_OK != 0 { 0 } else { d.i32()? };
                let latency_ns = d.u64()?;
                let pgsize_bitmap = d.u64()?;
                let aperture_start = d.u64()?;
                let aperture_end = d.u64()?;
                let domain_type = d.u32()?;
                let mut driver_fields = Vec::new();
                if flags & A_DRIVER_FIELDS != 0 {
                    let n = d.u64()?;
                    for _ in 0..n {
                        let name = d.string()?;
                        driver_fields.push((name, d.u64()?));
                    }
                }
                EventBody::DomainAlloc(DomainAlloc {
                    driver,
                    op,
                    kind,
                    flags: a_flags,
                    data_type,
                    data_len,
                    data,
                    parent,
                    domain,
                    errno,
                    latency_ns,
                    geometry: Geometry {
                        pgsize_bitmap,
                        aperture_start,
                        aperture_end,
                        domain_type,
                        driver_fields,
                    },
                })
            }
        };
        // Commit the shared state only once the whole record decoded.
        self.shared.prev_ts = ts_ns;
        self.shared.prev_cpu = Some(cpu);
        self.shared.prev_task = Some(task);
        Ok(Event {
            ts_ns,
            cpu,
            pid,
            tid,
            comm,
            cgroup_id,
            body,
        })
    }
}

fn user_data(d: &mut Dec) -> DResult<UserData> {
    Ok(match d.byte()? {
        0 => UserData::VtdS1 {
            flags: d.u64()?,
            pgtbl_addr: d.u64()?,
            addr_width: d.u32()?,
        },
        1 => UserData::ArmSmmuv3 {
            ste: [d.u64()?, d.u64()?],
        },
        2 => UserData::AmdGuest {
            dte: [d.u64()?, d.u64()?, d.u64()?, d.u64()?],
        },
        3 => UserData::Selftest { iotlb: d.u32()? },
        4 => UserData::Raw {
            data_type: d.u32()?,
            hex: d.string()?,
        },
        n => return Err(format!("unknown user-data variant {n}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_u(&mut out, v);
            assert_eq!(Dec::new(&out).u64().unwrap(), v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            put_i(&mut out, v);
            assert_eq!(Dec::new(&out).i64().unwrap(), v);
        }
        assert!(Dec::new(&[0xff; 11]).u64().is_err());
        assert!(
            Dec::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .u64()
                .is_err()
        );
    }
}
