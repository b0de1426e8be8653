//! Reader side: the `Decoder` that rebuilds the task and pointer tables and turns records
//! back into events or the trailer.

use super::varint::{DResult, Dec};
use super::*;
use crate::capture::Trailer;
use crate::events::{
    AllocOp, DestroyHow, DomainAlloc, DomainFree, DomainKind, Event, EventBody, Geometry,
    HwptAlloc, IoasOp, IommufdOption, KernelPtr, Lost, ObjectAbort, ObjectAlloc, ObjectDestroy,
    Pin, PinMode, PtCause, PtGrow, PtPages, UserData,
};

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
    shared: Tables,
    tasks: Vec<Task>,
    ptrs: Vec<u64>,
    /// The file's format version: object records exist from version 3.
    version: u32,
}

impl Decoder {
    pub(crate) fn new(base_ts: u64, version: u32) -> Decoder {
        Decoder {
            shared: Tables::new(base_ts),
            tasks: Vec::new(),
            ptrs: Vec::new(),
            version,
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
            TAG_OBJECT_ALLOC..=TAG_OBJECT_DESTROY if self.version < 3 => Err(format!(
                "object record (tag {tag}) in a format-{} capture: damaged",
                self.version
            )),
            TAG_IOAS_OP..=TAG_PIN if self.version < 4 => Err(format!(
                "pinned-memory record (tag {tag}) in a format-{} capture: damaged",
                self.version
            )),
            TAG_PT_GROW if self.version < 5 => Err(format!(
                "page-table growth record (tag {tag}) in a format-{} capture: damaged",
                self.version
            )),
            TAG_DOMAIN_ALLOC..=TAG_PT_GROW => self.event(tag, d).map(|e| Some(Decoded::Event(e))),
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
            TAG_PT_GROW => {
                let (_, domain) = self.ptr(d)?;
                EventBody::PtGrow(PtGrow {
                    domain,
                    levels: d.u32()?,
                })
            }
            TAG_OBJECT_ALLOC => {
                let object = d.string()?;
                let id = d.u32()?;
                let (_, obj) = self.ptr(d)?;
                let (_, ictx) = self.ptr(d)?;
                let errno = if flags & O_OK != 0 { 0 } else { d.i32()? };
                let size = d.u64()?;
                let latency_ns = d.u64()?;
                let n = d.u64()?;
                if n > MAX_OBJECT_REFS {
                    return Err(format!("an object with {n} references"));
                }
                let mut refs = std::collections::BTreeMap::new();
                for _ in 0..n {
                    let name = d.string()?;
                    refs.insert(name, d.u32()?);
                }
                let domain = if flags & O_DOMAIN != 0 {
                    Some(self.ptr(d)?.1)
                } else {
                    None
                };
                let virt_id = if flags & O_VIRT_ID != 0 {
                    Some(d.u64()?)
                } else {
                    None
                };
                EventBody::ObjectAlloc(ObjectAlloc {
                    object,
                    id,
                    obj,
                    ictx,
                    refs,
                    domain,
                    virt_id,
                    size,
                    errno,
                    latency_ns,
                })
            }
            TAG_OBJECT_ABORT => {
                let object = d.string()?;
                let id = d.u32()?;
                let (_, obj) = self.ptr(d)?;
                let (_, ictx) = self.ptr(d)?;
                EventBody::ObjectAbort(ObjectAbort {
                    object,
                    id,
                    obj,
                    ictx,
                    size: d.u64()?,
                    errno: if flags & O_ERRNO != 0 {
                        Some(d.i32()?)
                    } else {
                        None
                    },
                })
            }
            TAG_IOAS_OP => {
                let op = d.byte()?;
                let (_, ictx) = self.ptr(d)?;
                let mut o = IoasOp {
                    ictx,
                    ioas: d.u32()?,
                    iova: d.u64()?,
                    length: d.u64()?,
                    flags: d.u32()?,
                    errno: errno(flags, d)?,
                    latency_ns: d.u64()?,
                    ..IoasOp::default()
                };
                let mut opt = |bit: u8| -> DResult<Option<u64>> {
                    if flags & bit != 0 {
                        d.u64().map(Some)
                    } else {
                        Ok(None)
                    }
                };
                o.user_va = opt(I_USER_VA)?;
                o.fd = opt(I_FD)?.map(|f| f as u32 as i32);
                o.start = opt(I_START)?;
                o.src_ioas = opt(I_SRC_IOAS)?
                    .map(|v| u32::try_from(v).map_err(|_| format!("source IOAS id {v} > u32")))
                    .transpose()?;
                o.src_iova = opt(I_SRC_IOVA)?;
                match op {
                    0 => EventBody::IoasMap(o),
                    1 => EventBody::IoasMapFile(o),
                    2 => EventBody::IoasCopy(o),
                    3 => EventBody::IoasUnmap(o),
                    4 => EventBody::IoasChangeProcess(o),
                    n => return Err(format!("unknown IOAS operation {n}")),
                }
            }
            TAG_OPTION => {
                let (_, ictx) = self.ptr(d)?;
                EventBody::Option(IommufdOption {
                    ictx,
                    option: d.string()?,
                    op: d.string()?,
                    object_id: d.u32()?,
                    val64: d.u64()?,
                    errno: errno(flags, d)?,
                    latency_ns: d.u64()?,
                })
            }
            TAG_PIN => {
                let (_, iopt_pages) = self.ptr(d)?;
                let pages = d.i64()?;
                let bytes = d.i64()?;
                let charged = d.i64()?;
                let mode = match d.byte()? {
                    0 => PinMode::None,
                    1 => PinMode::User,
                    2 => PinMode::Mm,
                    n => return Err(format!("unknown accounting mode {n}")),
                };
                let target_pid = d.u32()?;
                let target_uid = if flags & PIN_UID != 0 {
                    Some(d.u32()?)
                } else {
                    None
                };
                let target_mm = if flags & PIN_MM != 0 {
                    Some(self.ptr(d)?.1)
                } else {
                    None
                };
                let limit_bytes = if flags & PIN_LIMIT != 0 {
                    Some(d.u64()?)
                } else {
                    None
                };
                EventBody::Pin(Pin {
                    iopt_pages,
                    pages,
                    bytes,
                    charged,
                    mode,
                    target_pid,
                    target_uid,
                    target_mm,
                    limit_bytes,
                    locked_bytes: d.u64()?,
                    pinned_pages: d.u64()?,
                    total_pages: d.u64()?,
                    pinned_vm_bytes: d.u64()?,
                    errno: errno(flags, d)?,
                    latency_ns: Some(d.u64()?).filter(|&ns| ns != 0),
                })
            }
            TAG_OBJECT_DESTROY => {
                let object = d.string()?;
                let id = d.u32()?;
                let (_, obj) = self.ptr(d)?;
                let how = match d.byte()? {
                    0 => DestroyHow::Destroy,
                    1 => DestroyHow::Unbind,
                    2 => DestroyHow::Close,
                    3 => DestroyHow::Put,
                    n => return Err(format!("unknown destroy path {n}")),
                };
                EventBody::ObjectDestroy(ObjectDestroy {
                    object,
                    id,
                    obj,
                    how,
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
                    3 => AllocOp::ViommuNested,
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
                let viommu_id = if flags & A_VIOMMU != 0 {
                    Some(d.u32()?)
                } else {
                    None
                };
                EventBody::DomainAlloc(DomainAlloc {
                    driver,
                    op,
                    kind,
                    flags: a_flags,
                    data_type,
                    data_len,
                    data,
                    parent,
                    viommu_id,
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

/// An errno written only when non-zero (`O_OK` set: it is 0).
fn errno(flags: u8, d: &mut Dec) -> DResult<i32> {
    if flags & O_OK != 0 {
        Ok(0)
    } else {
        d.i32()
    }
}
