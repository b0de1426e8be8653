//! Ring-buffer records (the `common` ABI) -> `Event`s.

use std::collections::BTreeMap;

use iommu_trace_common::{
    context, how, ioas_op, kind, object_flags, op, pt_op, DomainAllocEvent, DomainFreeEvent,
    EventHeader, HwptAllocEvent, IoasOpEvent, MapBatchEntry, MapBatchEvent, MapEvent, ObjectEvent,
    PinEvent, PtGrowEvent, PtPagesEvent,
};
use thiserror::Error;

use crate::events::{
    AllocOp, DestroyHow, DomainAlloc, DomainFree, DomainKind, Event, EventBody, Geometry,
    HwptAlloc, IoasOp, IommufdOption, KernelPtr, MapOp, ObjectAbort, ObjectAlloc, ObjectDestroy,
    Pin, PinMode, PtCause, PtGrow, PtPages, UserData,
};
use crate::session::{DriverInfo, Plan, RefKind};
use crate::uapi::{option_name, option_op_name};

#[derive(Debug, Error, PartialEq)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short for an event header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("event kind {kind} needs {want} bytes, the record has {got}")]
    Size { kind: u32, want: usize, got: usize },
    #[error("a batch of map calls says it holds {0} (1 to {max})", max = iommu_trace_common::MAP_BATCH_MAX)]
    BatchCount(u32),
}

/// Decodes records with the driver table, object types and object reference slots of the
/// plan the programs were loaded with.
pub struct Decoder {
    drivers: Vec<DriverInfo>,
    objects: Plan,
    /// This host's page size: the kernel counts pinned and locked memory in pages.
    page_size: u64,
}

fn read<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= std::mem::size_of::<T>());
    // SAFETY: length checked above; T is a plain-old-data ABI struct (common/), valid for
    // any bit pattern, and read_unaligned tolerates the ring buffer's 8-byte alignment.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// The `MapOp` of a map or unmap call, from either record shape that carries one
/// (`MapEvent`, `MapBatchEntry`: the same field names).
macro_rules! map_op {
    ($e:expr) => {
        MapOp {
            domain: KernelPtr($e.domain),
            iova: $e.iova,
            size: $e.size,
            done: $e.done,
            paddr: $e.paddr,
            errno: $e.errno,
            latency_ns: $e.latency_ns,
        }
    };
}

fn map_body(kind: u32, m: MapOp) -> EventBody {
    if kind == kind::MAP {
        EventBody::Map(m)
    } else {
        EventBody::Unmap(m)
    }
}

/// A `MapBatchEvent`: each entry becomes the `map` or `unmap` event a `MapEvent` record
/// would have, stamped with its own end time and CPU. Checked whole before any is pushed:
/// a bad batch yields nothing, and is counted as one undecodable record.
fn map_batch(h: &EventHeader, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), DecodeError> {
    let fixed = MapBatchEvent::record_len(0);
    if bytes.len() < fixed {
        return Err(DecodeError::Size {
            kind: h.kind,
            want: fixed,
            got: bytes.len(),
        });
    }
    let count: u32 = read(&bytes[std::mem::offset_of!(MapBatchEvent, count)..]);
    if count == 0 || count as usize > iommu_trace_common::MAP_BATCH_MAX {
        return Err(DecodeError::BatchCount(count));
    }
    let want = MapBatchEvent::record_len(count as usize);
    if bytes.len() < want {
        return Err(DecodeError::Size {
            kind: h.kind,
            want,
            got: bytes.len(),
        });
    }
    let entry_len = std::mem::size_of::<MapBatchEntry>();
    let entries: Vec<MapBatchEntry> = (0..count as usize)
        .map(|i| read(&bytes[fixed + i * entry_len..]))
        .collect();
    if let Some(bad) = entries
        .iter()
        .find(|e| !matches!(u32::from(e.kind), kind::MAP | kind::UNMAP))
    {
        return Err(DecodeError::UnknownKind(u32::from(bad.kind)));
    }
    for e in entries {
        let mut ev = event(h, map_body(u32::from(e.kind), map_op!(e)));
        (ev.ts_ns, ev.cpu) = (e.end_ns, u32::from(e.cpu));
        out.push(ev);
    }
    Ok(())
}

fn event(h: &EventHeader, body: EventBody) -> Event {
    Event {
        ts_ns: h.ts_ns,
        cpu: h.cpu,
        pid: h.pid,
        tid: h.tid,
        comm: comm(&h.comm),
        cgroup_id: h.cgroup_id,
        body,
    }
}

/// Which kind of domain the op produced, from where in iommufd it was called
/// (docs/kernel-facts.md §1.3: auto domains come from iommufd_hwpt_paging_alloc outside the
/// IOMMU_HWPT_ALLOC ioctl, i.e. from a device attach).
pub fn domain_kind(op_value: u32, parent: u64, context_bits: u32) -> DomainKind {
    if op_value == op::NESTED || op_value == op::VIOMMU_NESTED || parent != 0 {
        DomainKind::Nested
    } else if context_bits & context::HWPT_ALLOC_IOCTL != 0 {
        DomainKind::Paging
    } else if context_bits & context::HWPT_PAGING_ALLOC != 0 {
        DomainKind::Auto
    } else {
        DomainKind::Other
    }
}

impl Decoder {
    pub fn new(drivers: Vec<DriverInfo>) -> Decoder {
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Decoder {
            drivers,
            objects: Plan::default(),
            page_size: u64::try_from(page_size).unwrap_or(4096),
        }
    }

    /// The plan's object types and reference slots, to name what object events carry.
    pub fn with_objects(mut self, plan: &Plan) -> Decoder {
        self.objects.object_types = plan.object_types.clone();
        self.objects.object_refs = plan.object_refs.clone();
        self
    }

    fn object(&self, k: u32, e: &ObjectEvent) -> EventBody {
        let object = self.objects.object_type_name(e.obj_type).to_string();
        match k {
            kind::OBJECT_ALLOC => {
                let mut refs = BTreeMap::new();
                let (mut domain, mut virt_id) = (None, None);
                // The eBPF side reads references only for types below MAX_OBJECT_TYPES.
                let slots = if (e.obj_type as usize) < iommu_trace_common::MAX_OBJECT_TYPES {
                    self.objects.object_refs_of(&object)
                } else {
                    &[]
                };
                for (r, &raw) in slots.iter().zip(&e.refs) {
                    match r.kind {
                        RefKind::Object if raw != 0 => {
                            refs.insert(r.name.clone(), raw as u32);
                        }
                        RefKind::Domain if raw != 0 => domain = Some(KernelPtr(raw)),
                        RefKind::Value => virt_id = Some(raw),
                        _ => {}
                    }
                }
                if e.flags & object_flags::HWPT_ALLOC_DEV != 0 && object.starts_with("hwpt") {
                    refs.insert("device".into(), e.dev_id);
                }
                EventBody::ObjectAlloc(ObjectAlloc {
                    object,
                    id: e.id,
                    obj: KernelPtr(e.obj),
                    ictx: KernelPtr(e.ictx),
                    refs,
                    domain,
                    virt_id,
                    size: e.size,
                    errno: e.errno,
                    latency_ns: e.latency_ns,
                })
            }
            kind::OBJECT_ABORT => EventBody::ObjectAbort(ObjectAbort {
                object,
                id: e.id,
                obj: KernelPtr(e.obj),
                ictx: KernelPtr(e.ictx),
                size: e.size,
                errno: (e.flags & object_flags::ERRNO_KNOWN != 0).then_some(e.errno),
            }),
            _ => EventBody::ObjectDestroy(ObjectDestroy {
                object,
                id: e.id,
                obj: KernelPtr(e.obj),
                how: match e.how {
                    how::DESTROY => DestroyHow::Destroy,
                    how::UNBIND => DestroyHow::Unbind,
                    how::CLOSE => DestroyHow::Close,
                    _ => DestroyHow::Put,
                },
            }),
        }
    }

    /// Decodes one ring-buffer record into the events it carries: one, or each call of a
    /// batch of map calls (`MapBatchEvent`), in the order they returned.
    pub fn decode_into(&self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), DecodeError> {
        if bytes.len() >= std::mem::size_of::<EventHeader>() {
            let h: EventHeader = read(bytes);
            if h.kind == kind::MAP_BATCH {
                return map_batch(&h, bytes, out);
            }
        }
        out.push(self.decode(bytes)?);
        Ok(())
    }

    /// Decodes a record that carries one event (every kind but `MAP_BATCH`).
    pub fn decode(&self, bytes: &[u8]) -> Result<Event, DecodeError> {
        if bytes.len() < std::mem::size_of::<EventHeader>() {
            return Err(DecodeError::Short(bytes.len()));
        }
        let h: EventHeader = read(bytes);
        let want = iommu_trace_common::event_size(h.kind);
        if want == 0 {
            return Err(DecodeError::UnknownKind(h.kind));
        }
        if bytes.len() < want {
            return Err(DecodeError::Size {
                kind: h.kind,
                want,
                got: bytes.len(),
            });
        }
        let body = match h.kind {
            kind::DOMAIN_ALLOC => EventBody::DomainAlloc(self.domain_alloc(&read(bytes))),
            kind::HWPT_ALLOC => {
                let e: HwptAllocEvent = read(bytes);
                EventBody::HwptAlloc(HwptAlloc {
                    flags: e.flags,
                    dev_id: e.dev_id,
                    pt_id: e.pt_id,
                    data_type: e.data_type,
                    data_len: e.data_len,
                    hwpt_id: e.out_hwpt_id,
                    errno: e.errno,
                    latency_ns: e.latency_ns,
                })
            }
            kind::DOMAIN_FREE => {
                let e: DomainFreeEvent = read(bytes);
                EventBody::DomainFree(DomainFree {
                    domain: KernelPtr(e.domain),
                    latency_ns: e.latency_ns,
                })
            }
            kind::PT_GROW => {
                let e: PtGrowEvent = read(bytes);
                EventBody::PtGrow(PtGrow {
                    domain: KernelPtr(e.domain),
                    levels: e.levels,
                })
            }
            kind::MAP | kind::UNMAP => {
                let e: MapEvent = read(bytes);
                map_body(h.kind, map_op!(e))
            }
            kind::PT_PAGES => {
                let e: PtPagesEvent = read(bytes);
                let p = PtPages {
                    domain: KernelPtr(e.domain),
                    pages: e.delta.unsigned_abs(),
                    charged: e.charged != 0,
                    memcg_id: e.memcg_id,
                    cause: match e.op {
                        pt_op::ALLOC => PtCause::Alloc,
                        pt_op::MAP => PtCause::Map,
                        pt_op::UNMAP => PtCause::Unmap,
                        _ => PtCause::Free,
                    },
                };
                if e.delta >= 0 {
                    EventBody::PtAlloc(p)
                } else {
                    EventBody::PtFree(p)
                }
            }
            kind::OBJECT_ALLOC | kind::OBJECT_ABORT | kind::OBJECT_DESTROY => {
                self.object(h.kind, &read(bytes))
            }
            kind::IOAS_OP => self.ioas_op(&read(bytes)),
            kind::PIN => self.pin(&read(bytes)),
            other => return Err(DecodeError::UnknownKind(other)),
        };
        Ok(event(&h, body))
    }

    fn ioas_op(&self, e: &IoasOpEvent) -> EventBody {
        let ictx = KernelPtr(e.ictx);
        if e.op == ioas_op::OPTION {
            return EventBody::Option(IommufdOption {
                ictx,
                option: option_name(e.aux),
                op: option_op_name(e.flags),
                object_id: e.ioas_id,
                val64: e.source,
                errno: e.errno,
                latency_ns: e.latency_ns,
            });
        }
        let mut o = IoasOp {
            ictx,
            ioas: e.ioas_id,
            iova: e.iova,
            length: e.length,
            flags: e.flags,
            errno: e.errno,
            latency_ns: e.latency_ns,
            ..IoasOp::default()
        };
        match e.op {
            ioas_op::MAP => {
                o.user_va = Some(e.source);
                EventBody::IoasMap(o)
            }
            ioas_op::MAP_FILE => {
                o.fd = Some(e.aux as i32);
                o.start = Some(e.source);
                EventBody::IoasMapFile(o)
            }
            ioas_op::COPY => {
                o.src_ioas = Some(e.aux);
                o.src_iova = Some(e.source);
                EventBody::IoasCopy(o)
            }
            ioas_op::UNMAP => EventBody::IoasUnmap(o),
            _ => {
                // CHANGE_PROCESS has no IOAS, address or length.
                o.ioas = 0;
                EventBody::IoasChangeProcess(o)
            }
        }
    }

    fn pin(&self, e: &PinEvent) -> EventBody {
        let mode = match e.mode {
            1 => PinMode::User,
            2 => PinMode::Mm,
            _ => PinMode::None,
        };
        let pages = i64::try_from(e.npages).unwrap_or(i64::MAX);
        let pages = if e.inc != 0 { pages } else { -pages };
        EventBody::Pin(Pin {
            iopt_pages: KernelPtr(e.pages),
            pages,
            bytes: pages.saturating_mul(self.page_size as i64),
            charged: if mode == PinMode::None || e.errno != 0 {
                0
            } else {
                pages
            },
            mode,
            target_pid: e.target_pid,
            target_uid: (mode == PinMode::User).then_some(e.target_uid),
            target_mm: (mode == PinMode::Mm).then_some(KernelPtr(e.source_mm)),
            // RLIM_INFINITY is all ones.
            limit_bytes: (e.limit_bytes != u64::MAX).then_some(e.limit_bytes),
            locked_bytes: e.locked_pages.saturating_mul(self.page_size),
            pinned_pages: e.npinned,
            total_pages: e.total_pages,
            pinned_vm_bytes: e.pinned_vm.saturating_mul(self.page_size),
            errno: e.errno,
            latency_ns: None,
        })
    }

    fn domain_alloc(&self, e: &DomainAllocEvent) -> DomainAlloc {
        let driver = self.drivers.get(e.driver as usize);
        let mut geometry = Geometry {
            pgsize_bitmap: e.geometry.pgsize_bitmap,
            aperture_start: e.geometry.aperture_start,
            aperture_end: e.geometry.aperture_end,
            domain_type: e.geometry.domain_type,
            driver_fields: vec![],
        };
        if let (Some(d), true) = (driver, e.errno == 0) {
            for (f, raw) in d.fields.iter().zip(e.geometry.driver_words) {
                let v = if f.bit_width > 0 {
                    (raw >> f.bit_shift) & ((1u64 << f.bit_width) - 1)
                } else {
                    raw
                };
                geometry.driver_fields.push((f.name.clone(), v));
            }
        }
        let copied = (e.data_copied as usize).min(e.data.len());
        DomainAlloc {
            driver: driver.map_or_else(|| "unknown".to_string(), |d| d.name.clone()),
            op: match e.op {
                op::PAGING_FLAGS => AllocOp::PagingFlags,
                op::NESTED => AllocOp::Nested,
                op::VIOMMU_NESTED => AllocOp::ViommuNested,
                _ => AllocOp::AllocUser,
            },
            kind: domain_kind(e.op, e.parent, e.context),
            flags: e.flags,
            data_type: e.data_type,
            data_len: e.data_len,
            data: if copied > 0 {
                UserData::decode(e.data_type, &e.data[..copied])
            } else {
                None
            },
            parent: KernelPtr(e.parent),
            viommu_id: (e.op == op::VIOMMU_NESTED).then_some(e.viommu_id),
            domain: KernelPtr(e.domain),
            errno: e.errno,
            latency_ns: e.latency_ns,
            geometry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::DriverField;
    use iommu_trace_common::{DomainGeometry, USER_DATA_MAX};

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a repr(C) POD value for the test.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    fn hdr(kind: u32) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..8].copy_from_slice(b"exercise");
        EventHeader {
            kind,
            cpu: 1,
            ts_ns: 1000,
            pid: 42,
            tid: 43,
            cgroup_id: 7,
            comm,
        }
    }

    #[test]
    fn decodes_an_auto_domain_with_driver_fields() {
        let d = Decoder::new(vec![DriverInfo {
            name: "intel".into(),
            fields: vec![
                DriverField {
                    name: "agaw".into(),
                    offset: -8,
                    deref: None,
                    size: 4,
                    bit_shift: 0,
                    bit_width: 0,
                },
                DriverField {
                    name: "use_first_level".into(),
                    offset: -31,
                    deref: None,
                    size: 1,
                    bit_shift: 3,
                    bit_width: 1,
                },
            ],
        }]);
        let geometry = DomainGeometry {
            pgsize_bitmap: 0x4020_1000,
            driver_words: [2, 0b1000, 0, 0],
            ..Default::default()
        };
        let raw = DomainAllocEvent {
            hdr: hdr(kind::DOMAIN_ALLOC),
            op: op::ALLOC_USER,
            driver: 0,
            flags: 0,
            context: context::HWPT_PAGING_ALLOC,
            parent: 0,
            domain: 0xffff_8881_0000_1000,
            errno: 0,
            data_type: 0,
            data_len: 0,
            data_copied: 0,
            viommu_id: 0,
            _pad: 0,
            latency_ns: 5000,
            data: [0; USER_DATA_MAX],
            geometry,
        };
        let e = d.decode(&bytes_of(&raw)).unwrap();
        assert_eq!(
            (e.pid, e.tid, e.comm.as_str(), e.cgroup_id),
            (42, 43, "exercise", 7)
        );
        let EventBody::DomainAlloc(a) = e.body else {
            panic!("{e:?}")
        };
        assert_eq!(a.kind, DomainKind::Auto);
        assert_eq!(a.driver, "intel");
        assert_eq!(
            a.geometry.driver_fields,
            vec![("agaw".into(), 2), ("use_first_level".into(), 1)]
        );
        assert_eq!(a.domain, KernelPtr(0xffff_8881_0000_1000));
    }

    #[test]
    fn decodes_pt_frees_and_rejects_bad_records() {
        let d = Decoder::new(vec![]);
        let raw = PtPagesEvent {
            hdr: hdr(kind::PT_PAGES),
            domain: 0x1000,
            delta: -3,
            charged: 1,
            op: pt_op::UNMAP,
            memcg_id: 99,
        };
        let e = d.decode(&bytes_of(&raw)).unwrap();
        assert_eq!(
            e.body,
            EventBody::PtFree(PtPages {
                domain: KernelPtr(0x1000),
                pages: 3,
                charged: true,
                memcg_id: 99,
                cause: PtCause::Unmap
            })
        );
        let bytes = bytes_of(&raw);
        assert_eq!(d.decode(&bytes[..10]), Err(DecodeError::Short(10)));
        assert!(matches!(
            d.decode(&bytes[..60]),
            Err(DecodeError::Size { .. })
        ));
        let mut bad = bytes.clone();
        bad[0] = 77;
        assert_eq!(d.decode(&bad), Err(DecodeError::UnknownKind(77)));
    }

    fn batch_entry(kind: u32, iova: u64) -> MapBatchEntry {
        MapBatchEntry {
            domain: 0x2000,
            iova,
            paddr: if kind == kind::MAP { 0x9000 } else { 0 },
            size: 4096,
            done: 4096,
            end_ns: 5000 + iova,
            latency_ns: 300,
            errno: 0,
            kind: kind as u16,
            cpu: 1,
        }
    }

    #[test]
    fn a_batch_becomes_its_calls_in_order_and_a_bad_one_nothing() {
        let d = Decoder::new(vec![]);
        let mut raw = MapBatchEvent {
            hdr: hdr(kind::MAP_BATCH),
            count: 3,
            _pad: [0; 3],
            entries: [MapBatchEntry::default(); iommu_trace_common::MAP_BATCH_MAX],
        };
        raw.entries[0] = batch_entry(kind::MAP, 0x1000);
        raw.entries[1] = batch_entry(kind::UNMAP, 0x2000);
        raw.entries[2] = MapBatchEntry {
            errno: 12,
            done: 0,
            cpu: 0,
            ..batch_entry(kind::MAP, 0x3000)
        };
        // The ring carries only the entries in use.
        let bytes = bytes_of(&raw)[..MapBatchEvent::record_len(3)].to_vec();
        let mut out = vec![];
        d.decode_into(&bytes, &mut out).unwrap();
        let seen: Vec<_> = out
            .iter()
            .map(|e| match &e.body {
                EventBody::Map(m) => ("map", m.iova, m.paddr, m.errno, e.ts_ns, e.cpu),
                EventBody::Unmap(m) => ("unmap", m.iova, m.paddr, m.errno, e.ts_ns, e.cpu),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("map", 0x1000, 0x9000, 0, 0x1000 + 5000, 1),
                ("unmap", 0x2000, 0, 0, 0x2000 + 5000, 1),
                ("map", 0x3000, 0x9000, 12, 0x3000 + 5000, 0),
            ]
        );
        assert!(out
            .iter()
            .all(|e| (e.pid, e.tid, e.comm.as_str()) == (42, 43, "exercise")));

        // Truncated, a count out of range, an entry of another kind: nothing comes out.
        let mut out = vec![];
        assert!(matches!(
            d.decode_into(&bytes[..bytes.len() - 1], &mut out),
            Err(DecodeError::Size { want, .. }) if want == bytes.len()
        ));
        for count in [0, iommu_trace_common::MAP_BATCH_MAX as u32 + 1] {
            let mut bad = bytes.clone();
            bad[48..52].copy_from_slice(&count.to_le_bytes());
            assert_eq!(
                d.decode_into(&bad, &mut out),
                Err(DecodeError::BatchCount(count))
            );
        }
        let mut bad = raw;
        bad.entries[1].kind = kind::PIN as u16;
        let bad = bytes_of(&bad)[..MapBatchEvent::record_len(3)].to_vec();
        assert_eq!(
            d.decode_into(&bad, &mut out),
            Err(DecodeError::UnknownKind(kind::PIN))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn kind_follows_the_calling_context() {
        use context::*;
        assert_eq!(
            domain_kind(op::ALLOC_USER, 0, HWPT_ALLOC_IOCTL | HWPT_PAGING_ALLOC),
            DomainKind::Paging
        );
        assert_eq!(
            domain_kind(op::ALLOC_USER, 0x10, HWPT_ALLOC_IOCTL),
            DomainKind::Nested
        );
        assert_eq!(domain_kind(op::NESTED, 0, 0), DomainKind::Nested);
        assert_eq!(
            domain_kind(op::PAGING_FLAGS, 0, HWPT_PAGING_ALLOC),
            DomainKind::Auto
        );
        assert_eq!(domain_kind(op::PAGING_FLAGS, 0, 0), DomainKind::Other);
    }
}
