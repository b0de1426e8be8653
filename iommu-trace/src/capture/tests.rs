use proptest::prelude::*;

use super::inspect::{self, Summary, TextFormatter};
use super::*;
use crate::events::*;

const DOM_A: u64 = 0xffff_8881_0a2c_4000;
const DOM_B: u64 = 0xffff_8881_0a2c_8000;

fn ev(ts_ns: u64, cpu: u32, pid: u32, tid: u32, comm: &str, body: EventBody) -> Event {
    Event {
        ts_ns,
        cpu,
        pid,
        tid,
        comm: comm.into(),
        cgroup_id: 4242,
        body,
    }
}

fn map_op(domain: u64, iova: u64, size: u64, paddr: u64) -> MapOp {
    MapOp {
        domain: KernelPtr(domain),
        iova,
        size,
        done: size,
        paddr,
        errno: 0,
        latency_ns: 2_100,
    }
}

/// One event of each kind (and a few variants), in a plausible order.
fn samples() -> Vec<Event> {
    let t0 = 1_000_000_000_000;
    let q = "qemu-system-x86";
    vec![
        ev(
            t0,
            1,
            1234,
            1234,
            q,
            EventBody::HwptAlloc(HwptAlloc {
                flags: 1,
                dev_id: 1,
                pt_id: 2,
                data_type: 0,
                data_len: 0,
                hwpt_id: 3,
                errno: 0,
                latency_ns: 48_000,
            }),
        ),
        ev(
            t0 + 10_000,
            1,
            1234,
            1234,
            q,
            EventBody::DomainAlloc(DomainAlloc {
                driver: "intel".into(),
                op: AllocOp::AllocUser,
                kind: DomainKind::Paging,
                flags: 1,
                data_type: 0,
                data_len: 0,
                data: None,
                parent: KernelPtr(0),
                viommu_id: None,
                domain: KernelPtr(DOM_A),
                errno: 0,
                latency_ns: 31_000,
                geometry: Geometry {
                    pgsize_bitmap: 0x4020_1000,
                    aperture_start: 0,
                    aperture_end: (1 << 48) - 1,
                    domain_type: 3,
                    driver_fields: vec![("agaw".into(), 2)],
                },
            }),
        ),
        ev(
            t0 + 20_000,
            2,
            1234,
            1240,
            "CPU 0/KVM",
            EventBody::DomainAlloc(DomainAlloc {
                driver: "intel".into(),
                op: AllocOp::Nested,
                kind: DomainKind::Nested,
                flags: 0,
                data_type: 1,
                data_len: 24,
                data: Some(UserData::VtdS1 {
                    flags: 1,
                    pgtbl_addr: 0x1234_5000,
                    addr_width: 48,
                }),
                parent: KernelPtr(DOM_A),
                viommu_id: None,
                domain: KernelPtr(0),
                errno: 95,
                latency_ns: 900,
                geometry: Geometry::default(),
            }),
        ),
        ev(
            t0 + 30_000,
            1,
            1234,
            1234,
            q,
            EventBody::PtAlloc(PtPages {
                domain: KernelPtr(DOM_A),
                pages: 1,
                charged: false,
                memcg_id: 0,
                cause: PtCause::Alloc,
            }),
        ),
        ev(
            t0 + 40_000,
            1,
            1234,
            1234,
            q,
            EventBody::Map(map_op(DOM_A, 0x10_0000, 0x1000, 0x1_2345_6000)),
        ),
        ev(
            t0 + 41_000,
            1,
            1234,
            1234,
            q,
            EventBody::PtAlloc(PtPages {
                domain: KernelPtr(DOM_A),
                pages: 3,
                charged: true,
                memcg_id: 4242,
                cause: PtCause::Map,
            }),
        ),
        ev(
            t0 + 50_000,
            3,
            1234,
            1234,
            q,
            EventBody::Unmap(MapOp {
                domain: KernelPtr(DOM_A),
                iova: 0x10_0000,
                size: 0x2000,
                done: 0x1000,
                paddr: 0,
                errno: 0,
                latency_ns: 5_500,
            }),
        ),
        ev(
            t0 + 51_000,
            3,
            1234,
            1234,
            q,
            EventBody::PtFree(PtPages {
                domain: KernelPtr(DOM_A),
                pages: 2,
                charged: true,
                memcg_id: 777,
                cause: PtCause::Unmap,
            }),
        ),
        ev(
            t0 + 52_000,
            0,
            0,
            0,
            "swapper/0",
            EventBody::Lost(Lost {
                ringbuf_full: 17,
                context_full: 1,
            }),
        ),
        ev(
            t0 + 60_000,
            1,
            1234,
            1234,
            q,
            EventBody::DomainFree(DomainFree {
                domain: KernelPtr(DOM_A),
                latency_ns: 12_000,
            }),
        ),
        ev(
            t0 + 70_000,
            1,
            1234,
            1234,
            q,
            EventBody::Map(MapOp {
                domain: KernelPtr(DOM_B),
                iova: 0x20_0000,
                size: 0x1234,
                done: 0,
                paddr: 0x9000,
                errno: 22,
                latency_ns: 300,
            }),
        ),
        ev(
            t0 + 80_000,
            1,
            77,
            77,
            "iommufd_test",
            EventBody::DomainAlloc(DomainAlloc {
                driver: "mock".into(),
                op: AllocOp::PagingFlags,
                kind: DomainKind::Auto,
                flags: 2,
                data_type: 0xdead,
                data_len: 4,
                data: Some(UserData::Selftest { iotlb: 7 }),
                parent: KernelPtr(0),
                viommu_id: None,
                domain: KernelPtr(DOM_B),
                errno: 0,
                latency_ns: 4_000,
                geometry: Geometry {
                    pgsize_bitmap: 0x1000,
                    aperture_start: 0,
                    aperture_end: u64::MAX,
                    domain_type: 0x83,
                    driver_fields: vec![],
                },
            }),
        ),
        // Time going backwards (ring-buffer reordering across CPUs) must survive.
        ev(
            t0 + 75_000,
            0,
            77,
            77,
            "iommufd_test",
            EventBody::HwptAlloc(HwptAlloc {
                flags: 0xff,
                dev_id: 9,
                pt_id: 8,
                data_type: 0xdead,
                data_len: 3,
                hwpt_id: 0,
                errno: 22,
                latency_ns: 1,
            }),
        ),
        ev(
            t0 + 76_000,
            1,
            1234,
            1234,
            q,
            EventBody::ObjectAlloc(ObjectAlloc {
                object: "hwpt_paging".into(),
                id: 3,
                obj: KernelPtr(0xffff_8881_0b00_0000),
                ictx: KernelPtr(0xffff_8881_0c00_0000),
                refs: [("ioas".to_string(), 2), ("device".to_string(), 1)].into(),
                domain: Some(KernelPtr(DOM_A)),
                virt_id: None,
                size: 176,
                errno: 0,
                latency_ns: 90_000,
            }),
        ),
        ev(
            t0 + 77_000,
            1,
            1234,
            1234,
            q,
            EventBody::ObjectAlloc(ObjectAlloc {
                object: "vdevice".into(),
                id: 0,
                obj: KernelPtr(0),
                ictx: KernelPtr(0xffff_8881_0c00_0000),
                refs: Default::default(),
                domain: None,
                virt_id: Some(u64::MAX),
                size: 64,
                errno: 12,
                latency_ns: 2_000,
            }),
        ),
        ev(
            t0 + 78_000,
            1,
            1234,
            1234,
            q,
            EventBody::ObjectAbort(ObjectAbort {
                object: "viommu".into(),
                id: 7,
                obj: KernelPtr(0xffff_8881_0b00_1000),
                ictx: KernelPtr(0xffff_8881_0c00_0000),
                size: 256,
                errno: Some(95),
            }),
        ),
        ev(
            t0 + 78_500,
            1,
            1234,
            1234,
            q,
            EventBody::ObjectAbort(ObjectAbort {
                object: "device".into(),
                id: 8,
                obj: KernelPtr(0xffff_8881_0b00_2000),
                ictx: KernelPtr(0xffff_8881_0c00_0000),
                size: 0,
                errno: None,
            }),
        ),
        ev(
            t0 + 79_000,
            0,
            1234,
            1234,
            q,
            EventBody::ObjectDestroy(ObjectDestroy {
                object: "hwpt_paging".into(),
                id: 3,
                obj: KernelPtr(0xffff_8881_0b00_0000),
                how: DestroyHow::Close,
            }),
        ),
    ]
}

pub(super) fn header() -> CaptureHeader {
    CaptureHeader {
        tool_version: "0.1.0".into(),
        kernel_release: "6.12.0-test".into(),
        hostname: "host".into(),
        command_line: vec!["iommu-trace".into(), "record".into()],
        clock: ClockBase {
            monotonic_ns: 999_999_000_000,
            realtime_ns: 1_700_000_000_000_000_000,
        },
        ringbuf_bytes: 1 << 22,
        session: Some(test_session()),
        session_problem: None,
        rotation: None,
        extra: Default::default(),
    }
}

fn test_session() -> crate::session::Session {
    let plan = serde_json::from_value(serde_json::json!({
        "kernel_release": "6.12.0-test",
        "points": [],
        "drivers": [{"name": "intel", "fields": []}],
        "offsets": [],
        "blockers": [],
        "features": ["vtd_generic_pt"],
    }))
    .expect("a minimal plan");
    crate::session::Session {
        plan,
        refused: vec![],
        filter_pid: None,
    }
}

/// A format-1 capture as the 0.1 recorder wrote it: magic, version 1, the header frame
/// holding `header` as JSON, no events.
fn v1_capture(header: &serde_json::Value) -> Vec<u8> {
    let json = serde_json::to_vec(header).unwrap();
    let mut buf = MAGIC.to_vec();
    buf.extend_from_slice(&1u32.to_le_bytes());
    buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
    buf.extend_from_slice(&frame_crc(json.len() as u32, &json).to_le_bytes());
    buf.extend_from_slice(&json);
    buf
}

/// Writes `events` into a capture, flushing after each event for which `flush_after` says so.
/// Returns the bytes, and the (offset, events before it) of every frame boundary.
fn write_capture(
    events: &[Event],
    flush_after: impl Fn(usize) -> bool,
    finish: bool,
) -> (Vec<u8>, Vec<(u64, u64)>) {
    let mut buf = Vec::new();
    let mut bounds = Vec::new();
    {
        let mut w = CaptureWriter::new(&mut buf, &header()).unwrap();
        w.set_flush_interval(None);
        bounds.push((w.stats().bytes, 0));
        for (i, e) in events.iter().enumerate() {
            w.write(e).unwrap();
            if flush_after(i) {
                w.flush().unwrap();
                bounds.push((w.stats().bytes, w.stats().events));
            }
        }
        if finish {
            let stats = w
                .finish(FinishInfo {
                    lost_reported: LostTotals {
                        ringbuf_full: 20,
                        context_full: 1,
                    },
                    end: None,
                })
                .unwrap();
            assert_eq!(stats.events, events.len() as u64);
        } else {
            w.flush().unwrap();
            bounds.push((w.stats().bytes, w.stats().events));
            std::mem::forget(w);
        }
    }
    (buf, bounds)
}

/// Reads everything; returns the events and the warning, if any.
fn read_back(bytes: &[u8]) -> (Vec<Event>, Option<CaptureWarning>, CaptureReader<&[u8]>) {
    let mut r = CaptureReader::new(bytes).unwrap();
    let mut events = Vec::new();
    let mut warning = None;
    for item in r.by_ref() {
        match item {
            Ok(e) => {
                assert!(warning.is_none(), "an event after the warning");
                events.push(e)
            }
            Err(w) => {
                assert!(warning.is_none(), "two warnings");
                warning = Some(w)
            }
        }
    }
    (events, warning, r)
}

#[test]
fn every_kind_round_trips() {
    let events = samples();
    let (bytes, _) = write_capture(&events, |i| i % 4 == 3, true);
    let (got, warning, r) = read_back(&bytes);
    assert_eq!(warning, None);
    assert_eq!(got, events);
    assert_eq!(r.header(), &header());
    assert_eq!(r.version(), FORMAT_VERSION);
    match r.ending() {
        Some(Ending::Finalized { trailer, file_len }) => {
            assert_eq!(trailer.events, events.len() as u64);
            assert_eq!(
                trailer.lost_in_stream,
                LostTotals {
                    ringbuf_full: 17,
                    context_full: 1
                }
            );
            assert_eq!(trailer.lost_reported.ringbuf_full, 20);
            assert_eq!(*file_len, bytes.len() as u64);
        }
        other => panic!("not finalized: {other:?}"),
    }
    let kinds: std::collections::BTreeSet<_> = events.iter().map(|e| e.body.name()).collect();
    assert_eq!(kinds.len(), 11, "samples cover every kind");
}

#[test]
fn file_api_and_unfinished_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.iotrace");
    let events = samples();
    {
        let mut w = CaptureWriter::create(&path, &header()).unwrap();
        for e in &events {
            w.write(e).unwrap();
        }
        w.flush().unwrap();
        // Dropped without finish: like a recorder killed after its last flush.
    }
    let (h, got, ending) = read_all(&path).unwrap();
    assert_eq!(h, header());
    assert_eq!(got, events);
    let w = ending.warning().expect("not finalized");
    assert_eq!(w.reason, StopReason::NoTrailer);
    assert_eq!(w.offset, std::fs::metadata(&path).unwrap().len());
    assert!(w.to_string().contains("without a trailer"), "{w}");

    let mut w = CaptureWriter::create(&path, &header()).unwrap();
    for e in &events {
        w.write(e).unwrap();
    }
    let stats = w.finish(FinishInfo::default()).unwrap();
    assert_eq!(stats.bytes, std::fs::metadata(&path).unwrap().len());
    let (_, got, ending) = read_all(&path).unwrap();
    assert_eq!(got, events);
    assert!(ending.is_finalized());
}

#[test]
fn interning_tables_reset_when_full() {
    let mut events = Vec::new();
    for i in 0..200u32 {
        events.push(ev(
            1_000_000 + i as u64 * 1000,
            i % 3,
            i / 2,
            i,
            &format!("t{}", i % 5),
            EventBody::Map(map_op(
                DOM_A + (i as u64 % 13) * 0x1000,
                i as u64 * 0x1000,
                0x1000,
                0,
            )),
        ));
    }
    let mut buf = Vec::new();
    let mut w = CaptureWriter::new(&mut buf, &header()).unwrap();
    w.set_table_limits(7, 5);
    for e in &events {
        w.write(e).unwrap();
    }
    w.finish(FinishInfo::default()).unwrap();
    let (got, warning, _) = read_back(&buf);
    assert_eq!(warning, None);
    assert_eq!(got, events);
}

/// A deterministic xorshift generator, so the synthetic stream is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A map/unmap-heavy stream like a VMM's: a few domains, vCPU and I/O threads on 4 CPUs,
/// mostly 4 KiB maps with some 2 MiB ones, physical pages in short contiguous runs, page-table
/// pages as new tables are needed, batches of unmaps with their page-table frees.
pub(super) fn realistic_stream(n: usize) -> Vec<Event> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let tasks = [
        (4100, 4100, "qemu-system-x86"),
        (4100, 4107, "CPU 0/KVM"),
        (4100, 4108, "CPU 1/KVM"),
        (4100, 4112, "iou-wrk-4100"),
        (5200, 5200, "dpdk-testpmd"),
    ];
    let domains = [DOM_A, DOM_B, 0xffff_8881_3c00_0000];
    let mut ts = 5_000_000_000u64;
    let mut out: Vec<Event> = Vec::with_capacity(n + 64);
    let mut next_iova = [0x1_0000_0000u64; 3];
    let mut mapped: Vec<Vec<(u64, u64)>> = vec![Vec::new(); 3];
    let mut paddr = 0x1_0000_0000u64;
    let mut cpu = 0;
    let mut task = tasks[0];
    let push = |out: &mut Vec<Event>, ts: u64, cpu: u32, task: (u32, u32, &str), body| {
        out.push(Event {
            ts_ns: ts,
            cpu,
            pid: task.0,
            tid: task.1,
            comm: task.2.into(),
            cgroup_id: if task.0 == 5200 { 9001 } else { 8123 },
            body,
        })
    };
    for (i, d) in domains.iter().enumerate() {
        ts += 100_000;
        push(
            &mut out,
            ts,
            0,
            tasks[0],
            EventBody::DomainAlloc(DomainAlloc {
                driver: "intel".into(),
                op: AllocOp::PagingFlags,
                kind: if i == 2 {
                    DomainKind::Auto
                } else {
                    DomainKind::Paging
                },
                flags: 0,
                data_type: 0,
                data_len: 0,
                data: None,
                parent: KernelPtr(0),
                viommu_id: None,
                domain: KernelPtr(*d),
                errno: 0,
                latency_ns: 20_000 + rng.below(20_000),
                geometry: Geometry {
                    pgsize_bitmap: 0x4020_1000,
                    aperture_start: 0,
                    aperture_end: (1 << 48) - 1,
                    domain_type: 3,
                    driver_fields: vec![("agaw".into(), 2)],
                },
            }),
        );
        push(
            &mut out,
            ts + 500,
            0,
            tasks[0],
            EventBody::PtAlloc(PtPages {
                domain: KernelPtr(*d),
                pages: 1,
                charged: false,
                memcg_id: 0,
                cause: PtCause::Alloc,
            }),
        );
    }
    let mut maps_since_table = [0u32; 3];
    while out.len() < n {
        // The thread changes now and then; the CPU a little more often.
        if rng.below(16) == 0 {
            task = tasks[rng.below(tasks.len() as u64) as usize];
        }
        if rng.below(8) == 0 {
            cpu = rng.below(4) as u32;
        }
        ts += 1_000 + rng.below(40_000);
        let d = (task.0 == 5200) as usize * 2 + (rng.below(4) == 0) as usize;
        let d = d.min(2);
        let unmap = mapped[d].len() > 64 && rng.below(3) == 0;
        if unmap {
            // Unmap a batch, in the order it was mapped.
            let batch = 1 + rng.below(16) as usize;
            for _ in 0..batch.min(mapped[d].len()) {
                let (iova, size) = mapped[d].remove(0);
                ts += 500 + rng.below(5_000);
                push(
                    &mut out,
                    ts,
                    cpu,
                    task,
                    EventBody::Unmap(MapOp {
                        domain: KernelPtr(domains[d]),
                        iova,
                        size,
                        done: size,
                        paddr: 0,
                        errno: 0,
                        latency_ns: 1_500 + rng.below(8_000),
                    }),
                );
                if rng.below(64) == 0 {
                    push(
                        &mut out,
                        ts + 200,
                        cpu,
                        task,
                        EventBody::PtFree(PtPages {
                            domain: KernelPtr(domains[d]),
                            pages: 1,
                            charged: true,
                            memcg_id: if task.0 == 5200 { 9001 } else { 8123 },
                            cause: PtCause::Unmap,
                        }),
                    );
                }
            }
            continue;
        }
        let size = match rng.below(100) {
            0..=74 => 0x1000,
            75..=98 => 0x20_0000,
            _ => 0x4000_0000,
        };
        let iova = next_iova[d].next_multiple_of(size);
        next_iova[d] = iova + size;
        // Physical memory comes in short contiguous runs.
        if rng.below(4) == 0 {
            paddr = (rng.below(1 << 24) << 12).next_multiple_of(size);
        } else {
            paddr = paddr.next_multiple_of(size);
        }
        let errno = if rng.below(500) == 0 { 12 } else { 0 };
        push(
            &mut out,
            ts,
            cpu,
            task,
            EventBody::Map(MapOp {
                domain: KernelPtr(domains[d]),
                iova,
                size,
                done: if errno == 0 { size } else { 0 },
                paddr,
                errno,
                latency_ns: 1_000 + rng.below(15_000),
            }),
        );
        paddr += size;
        if errno == 0 {
            mapped[d].push((iova, size));
            maps_since_table[d] += 1;
            if maps_since_table[d] >= 64 + rng.below(512) as u32 {
                maps_since_table[d] = 0;
                push(
                    &mut out,
                    ts + 300,
                    cpu,
                    task,
                    EventBody::PtAlloc(PtPages {
                        domain: KernelPtr(domains[d]),
                        pages: 1 + rng.below(2),
                        charged: true,
                        memcg_id: if task.0 == 5200 { 9001 } else { 8123 },
                        cause: PtCause::Map,
                    }),
                );
            }
        }
        if rng.below(20_000) == 0 {
            push(
                &mut out,
                ts + 10,
                rng.below(4) as u32,
                task,
                EventBody::Lost(Lost {
                    ringbuf_full: 1 + rng.below(100),
                    context_full: 0,
                }),
            );
        }
    }
    out
}

#[test]
fn realistic_stream_is_compact() {
    let events = realistic_stream(100_000);
    let maps = events
        .iter()
        .filter(|e| matches!(e.body, EventBody::Map(_) | EventBody::Unmap(_)))
        .count();
    assert!(maps * 10 > events.len() * 9, "map/unmap-heavy");
    // Flushed once per (simulated) second, as the recorder does.
    let mut buf = Vec::new();
    let mut w = CaptureWriter::new(&mut buf, &header()).unwrap();
    w.set_flush_interval(None);
    let mut last_flush = events[0].ts_ns;
    for e in &events {
        w.write(e).unwrap();
        if e.ts_ns >= last_flush + 1_000_000_000 {
            w.flush().unwrap();
            last_flush = e.ts_ns;
        }
    }
    let stats = w.finish(FinishInfo::default()).unwrap();
    let per_event = stats.bytes_per_event();
    println!(
        "realistic stream: {} events ({} map/unmap), {} bytes in {} frames: {:.2} bytes/event \
         (JSON lines would be {:.0})",
        stats.events,
        maps,
        stats.bytes,
        stats.frames,
        per_event,
        events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap().len() + 1)
            .sum::<usize>() as f64
            / events.len() as f64
    );
    assert!(per_event <= 32.0, "{per_event:.2} bytes/event");
    assert_eq!(stats.bytes, buf.len() as u64);
    let (got, warning, _) = read_back(&buf);
    assert_eq!(warning, None);
    assert!(got == events, "round trip");
}

/// Index of the last frame boundary at or before `at`.
fn boundary_before(bounds: &[(u64, u64)], at: u64) -> (u64, u64) {
    *bounds.iter().rev().find(|(b, _)| *b <= at).unwrap()
}

#[test]
fn truncated_at_every_offset() {
    let events = samples();
    let (bytes, mut bounds) = write_capture(&events, |i| i % 3 == 2, true);
    let header_end = bounds[0].0;
    // The trailer frame is the last one.
    bounds.push((bytes.len() as u64, events.len() as u64));
    for cut in 0..bytes.len() {
        let part = &bytes[..cut];
        if (cut as u64) < header_end {
            let err = CaptureReader::new(part)
                .err()
                .expect("a cut header is refused");
            if cut == 0 {
                assert!(matches!(err, CaptureError::NotACapture { .. }), "{err}");
            } else {
                assert!(
                    matches!(err, CaptureError::BadHeader { .. }),
                    "{cut}: {err}"
                );
            }
            continue;
        }
        let (got, warning, r) = read_back(part);
        let (good_end, good_events) = boundary_before(&bounds, cut as u64);
        assert_eq!(got.len() as u64, good_events, "cut at {cut}");
        assert_eq!(got[..], events[..got.len()], "cut at {cut}");
        let w = warning.unwrap_or_else(|| panic!("cut at {cut}: no warning"));
        assert_eq!(w.offset, good_end, "cut at {cut}: {w}");
        assert_eq!(w.events, good_events);
        if good_end == cut as u64 {
            assert_eq!(w.reason, StopReason::NoTrailer, "cut at {cut}");
        } else {
            assert!(
                matches!(w.reason, StopReason::Truncated(_)),
                "cut at {cut}: {w}"
            );
        }
        assert!(w.to_string().contains(&format!("byte offset {good_end}")));
        assert!(!r.ending().unwrap().is_finalized());
    }
}

#[test]
fn corrupted_byte_is_caught() {
    let events = samples();
    let (bytes, mut bounds) = write_capture(&events, |i| i % 3 == 2, true);
    let header_end = bounds[0].0;
    bounds.push((bytes.len() as u64, events.len() as u64));
    for at in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[at] ^= flip;
            if (at as u64) < header_end {
                let err = CaptureReader::new(&bad[..]).err().expect("refused");
                match at {
                    0..8 => assert!(matches!(err, CaptureError::NotACapture { .. })),
                    // Another readable version is caught by the header's own copy of it.
                    8..12 => assert!(
                        matches!(err, CaptureError::UnsupportedVersion { .. })
                            || err.to_string().contains("the header says format version"),
                        "{err}"
                    ),
                    _ => assert!(matches!(err, CaptureError::BadHeader { .. }), "{err}"),
                }
                continue;
            }
            let (got, warning, _) = read_back(&bad);
            let (frame_start, good_events) = boundary_before(&bounds, at as u64);
            let w = warning.unwrap_or_else(|| panic!("byte {at} ^ {flip:#x}: not detected"));
            assert_eq!(w.offset, frame_start, "byte {at} ^ {flip:#x}: {w}");
            assert_eq!(got.len() as u64, good_events, "byte {at} ^ {flip:#x}");
            assert_eq!(got[..], events[..got.len()]);
            // Within a frame's length field the damage may read as a length past the end.
            let in_len = (at as u64) < frame_start + 4;
            assert!(
                matches!(w.reason, StopReason::CrcMismatch { .. })
                    || (in_len
                        && matches!(
                            w.reason,
                            StopReason::Truncated(_) | StopReason::BadFrameLength(_)
                        )),
                "byte {at} ^ {flip:#x}: {w}"
            );
        }
    }
}

#[test]
fn not_a_capture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[u8], &str); 4] = [
        (b"", "empty"),
        (b"hello, world\n", "\"hello, w\""),
        (b"{\"ts_ns\":1,\"event\":\"map\"}\n", "JSON"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", "gzip"),
    ];
    for (i, (content, hint)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("f{i}"));
        std::fs::write(&path, content).unwrap();
        let err = CaptureReader::open(&path).err().expect("refused");
        let msg = err.to_string();
        assert!(matches!(err, CaptureError::NotACapture { .. }), "{msg}");
        assert!(msg.contains("is not an iommu-trace capture"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("iommu-trace record -o FILE"), "{msg}");
        assert!(msg.contains(hint), "{msg}");
    }
    let err = CaptureReader::open(dir.path().join("missing"))
        .err()
        .unwrap();
    assert!(matches!(err, CaptureError::Io { .. }), "{err}");
}

#[test]
fn future_version_is_refused() {
    let (mut bytes, _) = write_capture(&samples(), |_| false, true);
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let err = CaptureReader::new(&bytes[..]).err().expect("refused");
    let msg = err.to_string();
    assert!(
        matches!(err, CaptureError::UnsupportedVersion { found, .. } if found == FORMAT_VERSION + 1),
        "{msg}"
    );
    assert!(msg.contains("newer iommu-trace"), "{msg}");
    assert!(msg.contains("upgrade"), "{msg}");
}

#[test]
fn header_keeps_unknown_fields() {
    let mut h = header();
    h.extra
        .insert("future_field".into(), serde_json::json!({"x": 1}));
    let mut buf = Vec::new();
    CaptureWriter::new(&mut buf, &h)
        .unwrap()
        .finish(FinishInfo::default())
        .unwrap();
    let r = CaptureReader::new(&buf[..]).unwrap();
    assert_eq!(r.header(), &h);
    let built = CaptureHeader::for_this_host(test_session(), 4096);
    assert_eq!(built.tool_version, env!("CARGO_PKG_VERSION"));
    assert!(built.clock.monotonic_ns > 0 && built.clock.realtime_ns > 0);
}

/// The JSON-lines form is a documented interface: these are its exact bytes.
#[test]
fn jsonl_form_is_pinned() {
    let want = [
        r#"{"ts_ns":1000000000000,"cpu":1,"pid":1234,"tid":1234,"comm":"qemu-system-x86","cgroup_id":4242,"event":"hwpt_alloc","flags":1,"dev_id":1,"pt_id":2,"data_type":0,"data_len":0,"hwpt_id":3,"errno":0,"latency_ns":48000}"#,
        r#"{"ts_ns":1000000010000,"cpu":1,"pid":1234,"tid":1234,"comm":"qemu-system-x86","cgroup_id":4242,"event":"domain_alloc","driver":"intel","op":"alloc_user","kind":"paging","flags":1,"data_type":0,"data_len":0,"parent":"0x0","domain":"0xffff88810a2c4000","errno":0,"latency_ns":31000,"geometry":{"pgsize_bitmap":1075843072,"aperture_start":0,"aperture_end":281474976710655,"domain_type":3,"driver_fields":[["agaw",2]]}}"#,
        r#"{"ts_ns":1000000020000,"cpu":2,"pid":1234,"tid":1240,"comm":"CPU 0/KVM","cgroup_id":4242,"event":"domain_alloc","driver":"intel","op":"nested","kind":"nested","flags":0,"data_type":1,"data_len":24,"data":{"type":"vtd_s1","flags":1,"pgtbl_addr":305418240,"addr_width":48},"parent":"0xffff88810a2c4000","domain":"0x0","errno":95,"latency_ns":900,"geometry":{"pgsize_bitmap":0,"aperture_start":0,"aperture_end":0,"domain_type":0}}"#,
        r#"{"ts_ns":1000000030000,"cpu":1,"pid":1234,"tid":1234,"comm":"qemu-system-x86","cgroup_id":4242,"event":"pt_alloc","domain":"0xffff88810a2c4000","pages":1,"charged":false,"memcg_id":0,"cause":"alloc"}"#,
        r#"{"ts_ns":1000000040000,"cpu":1,"pid":1234,"tid":1234,"comm":"qemu-system-x86","cgroup_id":4242,"event":"map","domain":"0xffff88810a2c4000","iova":1048576,"size":4096,"done":4096,"paddr":4886716416,"errno":0,"latency_ns":2100}"#,
        r#"{"ts_ns":1000000041000,"cpu":1,"pid":1234,"tid":1234,"comm":"qemu-system-x86","cgroup_id":4242,"event":"pt_alloc","domain":"0xffff88810a2c4000","pages":3,"charged":true,"memcg_id":4242,"cause":"map"}"#,
        r#"{"ts_ns":1000000050000,"cpu":3,"pid":1234,"tid":1234,"comm":"qemu-system-x86","cgroup_id":4242,"event":"unmap","domain":"0xffff88810a2c4000","iova":1048576,"size":8192,"done":4096,"paddr":0,"errno":0,"latency_ns":5500}"#,
        r#"{"ts_ns":1000000051000,"cpu":3,"pid":1234,"tid":1234,"comm":"qemu-system-x86","cgroup_id":4242,"event":"pt_free","domain":"0xffff88810a2c4000","pages":2,"charged":true,"memcg_id":777,"cause":"unmap"}"#,
        r#"{"ts_ns":1000000052000,"cpu":0,"pid":0,"tid":0,"comm":"swapper/0","cgroup_id":4242,"event":"lost","ringbuf_full":17,"context_full":1}"#,
        r#"{"ts_ns":1000000060000,"cpu":1,"pid":1234,"tid":1234,"comm":"qemu-system-x86","cgroup_id":4242,"event":"domain_free","domain":"0xffff88810a2c4000","latency_ns":12000}"#,
    ];
    let events = samples();
    for (e, want) in events.iter().zip(want) {
        let got = inspect::json_line(e).unwrap();
        assert_eq!(got, want);
        assert_eq!(got, serde_json::to_string(e).unwrap());
        let back: Event = serde_json::from_str(&got).unwrap();
        assert_eq!(&back, e);
    }
}

#[test]
fn text_lines() {
    let events = samples();
    let mut f = TextFormatter::new();
    let lines: Vec<String> = events.iter().map(|e| f.line(e)).collect();
    let want = [
        "+0.000000000 cpu 1 1234/qemu-system-x86 hwpt_alloc dev_id=1 pt_id=2 flags=NEST_PARENT data_type=0x0 data_len=0 hwpt_id=3 OK latency=48.0us",
        "+0.000010000 cpu 1 1234/qemu-system-x86 domain_alloc driver=intel op=alloc_user kind=paging flags=NEST_PARENT data_type=0x0 data_len=0 parent=0x0 domain=0xffff88810a2c4000 OK latency=31.0us pgsize_bitmap=0x40201000 aperture=0x0..=0xffffffffffff type=0x3 agaw=2",
        "+0.000020000 cpu 2 1234/CPU 0/KVM tid 1240 domain_alloc driver=intel op=nested kind=nested flags=0 data_type=0x1 data_len=24 data=vtd_s1(flags=0x1,pgtbl_addr=0x12345000,addr_width=48) parent=0xffff88810a2c4000 EOPNOTSUPP latency=900ns pgsize_bitmap=0x0 aperture=0x0..=0x0 type=0x0",
        "+0.000030000 cpu 1 1234/qemu-system-x86 pt_alloc domain=0xffff88810a2c4000 pages=1 cause=alloc uncharged",
        "+0.000040000 cpu 1 1234/qemu-system-x86 map domain=0xffff88810a2c4000 iova=0x100000 size=0x1000 paddr=0x123456000 done=0x1000 OK latency=2.1us",
        "+0.000041000 cpu 1 1234/qemu-system-x86 pt_alloc domain=0xffff88810a2c4000 pages=3 cause=map charged memcg=4242",
        "+0.000050000 cpu 3 1234/qemu-system-x86 unmap domain=0xffff88810a2c4000 iova=0x100000 size=0x2000 done=0x1000 OK latency=5.5us",
        "+0.000051000 cpu 3 1234/qemu-system-x86 pt_free domain=0xffff88810a2c4000 pages=2 cause=unmap charged memcg=777",
        "+0.000052000 cpu 0 0/swapper/0 lost ringbuf_full=17 context_full=1",
        "+0.000060000 cpu 1 1234/qemu-system-x86 domain_free domain=0xffff88810a2c4000 latency=12.0us",
        "+0.000070000 cpu 1 1234/qemu-system-x86 map domain=0xffff88810a2c8000 iova=0x200000 size=0x1234 paddr=0x9000 done=0x0 EINVAL latency=300ns",
        "+0.000080000 cpu 1 77/iommufd_test domain_alloc driver=mock op=paging_flags kind=auto flags=DIRTY_TRACKING data_type=0xdead data_len=4 data=selftest(iotlb=7) parent=0x0 domain=0xffff88810a2c8000 OK latency=4.0us pgsize_bitmap=0x1000 aperture=0x0..=0xffffffffffffffff type=0x83",
        "+0.000075000 cpu 0 77/iommufd_test hwpt_alloc dev_id=9 pt_id=8 flags=NEST_PARENT|DIRTY_TRACKING|FAULT_ID_VALID|PASID|0xf0 data_type=0xdead data_len=3 EINVAL latency=1ns",
        "+0.000076000 cpu 1 1234/qemu-system-x86 object_alloc hwpt_paging id=3 device=1 ioas=2 domain=0xffff88810a2c4000 obj=0xffff88810b000000 ictx=0xffff88810c000000 size=176 OK latency=90.0us",
        "+0.000077000 cpu 1 1234/qemu-system-x86 object_alloc vdevice id=0 virt_id=0xffffffffffffffff obj=0x0 ictx=0xffff88810c000000 size=64 ENOMEM latency=2.0us",
        "+0.000078000 cpu 1 1234/qemu-system-x86 object_abort viommu id=7 obj=0xffff88810b001000 ictx=0xffff88810c000000 size=256 EOPNOTSUPP",
        "+0.000078500 cpu 1 1234/qemu-system-x86 object_abort device id=8 obj=0xffff88810b002000 ictx=0xffff88810c000000 size=0 errno=unknown",
        "+0.000079000 cpu 0 1234/qemu-system-x86 object_destroy hwpt_paging id=3 obj=0xffff88810b000000 how=close",
    ];
    for (got, want) in lines.iter().zip(want) {
        assert_eq!(got, want);
    }
    assert_eq!(lines.len(), want.len());
    let early = inspect::text_line(&events[0], events[0].ts_ns + 1_500_000_000);
    assert!(early.starts_with("-1.500000000 cpu 1"), "{early}");
}

#[test]
fn summary_and_dump() {
    let events = samples();
    let (bytes, _) = write_capture(&events, |_| false, true);
    let mut r = CaptureReader::new(&bytes[..]).unwrap();
    let mut out = Vec::new();
    let s = inspect::dump(&mut r, inspect::Format::Jsonl, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.lines().count(), events.len());
    assert_eq!(
        out.lines().next().unwrap(),
        serde_json::to_string(&events[0]).unwrap()
    );
    assert_eq!(s.events, events.len() as u64);
    assert_eq!(s.per_kind["domain_alloc"], 3);
    assert_eq!(s.per_kind["map"], 2);
    assert_eq!(
        s.domain_allocs[&inspect::AllocKey {
            driver: "intel".into(),
            kind: "nested",
            errno: 95
        }],
        1
    );
    assert_eq!(s.map.done, 0x1000);
    assert_eq!(s.map.failed, 1);
    assert_eq!(s.unmap.requested, 0x2000);
    assert_eq!(s.pt.allocated, 4);
    assert_eq!(s.pt.charged, 3);
    assert_eq!(s.pt.uncharged, 1);
    assert_eq!(s.pt.freed, 2);
    assert_eq!(s.lost.ringbuf_full, 17);
    assert!(s.ending.as_ref().unwrap().is_finalized());
    let text = s.to_string();
    println!("{text}");
    for needle in [
        "events: 18 over 80.0us",
        "  hwpt_paging  created 1, destroyed 1 (close 1)\n",
        "  vdevice      created 0, allocation failed ENOMEM 1\n",
        "  viommu       created 0, aborted EOPNOTSUPP 1\n",
        "  device       created 0, aborted (errno unknown) 1\n",
        "intel        nested  EOPNOTSUPP   1",
        "hwpt allocations: OK 1, EINVAL 1",
        "page-table pages: 4 allocated (3 charged, 1 uncharged), 2 freed, 2 outstanding",
        "lost: 18 (ring buffer full 17, context table full 1)",
        "file: finalized",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }

    // A truncated file: the summary says where it stopped.
    let cut = &bytes[..bytes.len() - 3];
    let mut r = CaptureReader::new(cut).unwrap();
    let s = inspect::dump(&mut r, inspect::Format::Text, &mut Vec::new()).unwrap();
    let text = s.to_string();
    assert!(
        text.contains("file: NOT finalized, stopped at byte offset"),
        "{text}"
    );
    assert_eq!(s.events, 0, "the single frame was cut");
    assert_eq!(
        "jsonl".parse::<inspect::Format>(),
        Ok(inspect::Format::Jsonl)
    );
    assert!("xml".parse::<inspect::Format>().is_err());
    let _ = Summary::new();
}

// ---------------------------------------------------------------------------------------
// Property: any event sequence round-trips exactly, whatever the flush points.

fn arb_ptr() -> BoxedStrategy<KernelPtr> {
    prop_oneof![
        (0u64..4).prop_map(|i| KernelPtr(DOM_A + i * 0x4000)),
        Just(KernelPtr(0)),
        any::<u64>().prop_map(KernelPtr),
    ]
    .boxed()
}

fn arb_u64() -> BoxedStrategy<u64> {
    prop_oneof![
        0u64..5000,
        (0u64..1 << 20).prop_map(|p| p << 12),
        any::<u64>()
    ]
    .boxed()
}

fn arb_i32() -> BoxedStrategy<i32> {
    prop_oneof![Just(0), 1i32..200, any::<i32>()].boxed()
}

fn arb_string() -> BoxedStrategy<String> {
    prop_oneof![
        Just("intel".to_string()),
        Just("CPU 1/KVM".to_string()),
        ".{0,20}"
    ]
    .boxed()
}

fn arb_user_data() -> BoxedStrategy<UserData> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(flags, pgtbl_addr, addr_width)| {
            UserData::VtdS1 {
                flags,
                pgtbl_addr,
                addr_width,
            }
        }),
        any::<[u64; 2]>().prop_map(|ste| UserData::ArmSmmuv3 { ste }),
        any::<[u64; 4]>().prop_map(|dte| UserData::AmdGuest { dte }),
        any::<u32>().prop_map(|iotlb| UserData::Selftest { iotlb }),
        (any::<u32>(), "[0-9a-f]{0,16}|.{0,4}")
            .prop_map(|(data_type, hex)| UserData::Raw { data_type, hex }),
    ]
    .boxed()
}

fn arb_op() -> BoxedStrategy<AllocOp> {
    prop_oneof![
        Just(AllocOp::AllocUser),
        Just(AllocOp::PagingFlags),
        Just(AllocOp::Nested),
        Just(AllocOp::ViommuNested)
    ]
    .boxed()
}

fn arb_kind() -> BoxedStrategy<DomainKind> {
    prop_oneof![
        Just(DomainKind::Paging),
        Just(DomainKind::Nested),
        Just(DomainKind::Auto),
        Just(DomainKind::Other)
    ]
    .boxed()
}

fn arb_cause() -> BoxedStrategy<PtCause> {
    prop_oneof![
        Just(PtCause::Alloc),
        Just(PtCause::Map),
        Just(PtCause::Unmap),
        Just(PtCause::Free)
    ]
    .boxed()
}

fn arb_map() -> BoxedStrategy<MapOp> {
    (
        arb_ptr(),
        arb_u64(),
        arb_u64(),
        prop::option::of(arb_u64()),
        arb_u64(),
        arb_i32(),
        arb_u64(),
    )
        .prop_map(
            |(domain, iova, size, done, paddr, errno, latency_ns)| MapOp {
                domain,
                iova,
                size,
                done: done.unwrap_or(size),
                paddr,
                errno,
                latency_ns,
            },
        )
        .boxed()
}

fn arb_pt() -> BoxedStrategy<PtPages> {
    (arb_ptr(), arb_u64(), any::<bool>(), arb_u64(), arb_cause())
        .prop_map(|(domain, pages, charged, memcg_id, cause)| PtPages {
            domain,
            pages,
            charged,
            memcg_id,
            cause,
        })
        .boxed()
}

fn arb_domain_alloc() -> BoxedStrategy<DomainAlloc> {
    (
        (
            arb_string(),
            arb_op(),
            arb_kind(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
        (
            prop::option::of(arb_user_data()),
            prop::option::of(any::<u32>()),
        ),
        (arb_ptr(), arb_ptr(), arb_i32(), arb_u64()),
        (
            arb_u64(),
            arb_u64(),
            arb_u64(),
            any::<u32>(),
            prop::collection::vec((arb_string(), arb_u64()), 0..3),
        ),
    )
        .prop_map(
            |(
                (driver, op, kind, flags, data_type, data_len),
                (data, viommu_id),
                (parent, domain, errno, latency_ns),
                (pgsize_bitmap, aperture_start, aperture_end, domain_type, driver_fields),
            )| DomainAlloc {
                driver,
                op,
                kind,
                flags,
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
            },
        )
        .boxed()
}

fn arb_body() -> BoxedStrategy<EventBody> {
    prop_oneof![
        arb_domain_alloc().prop_map(EventBody::DomainAlloc),
        (any::<[u32; 6]>(), arb_i32(), arb_u64()).prop_map(|(v, errno, latency_ns)| {
            EventBody::HwptAlloc(HwptAlloc {
                flags: v[0],
                dev_id: v[1],
                pt_id: v[2],
                data_type: v[3],
                data_len: v[4],
                hwpt_id: v[5],
                errno,
                latency_ns,
            })
        }),
        (arb_ptr(), arb_u64()).prop_map(|(domain, latency_ns)| EventBody::DomainFree(DomainFree {
            domain,
            latency_ns
        })),
        (arb_ptr(), any::<u32>())
            .prop_map(|(domain, levels)| EventBody::PtGrow(PtGrow { domain, levels })),
        arb_map().prop_map(EventBody::Map),
        arb_map().prop_map(EventBody::Unmap),
        arb_pt().prop_map(EventBody::PtAlloc),
        arb_pt().prop_map(EventBody::PtFree),
        (arb_u64(), arb_u64()).prop_map(|(ringbuf_full, context_full)| EventBody::Lost(Lost {
            ringbuf_full,
            context_full
        })),
        arb_object_event(),
        arb_pinned_memory_event(),
    ]
    .boxed()
}

fn arb_pinned_memory_event() -> BoxedStrategy<EventBody> {
    let op = (
        arb_ptr(),
        any::<u32>(),
        (arb_u64(), arb_u64(), any::<u32>()),
        (arb_i32(), arb_u64()),
        (
            proptest::option::of(arb_u64()),
            proptest::option::of(any::<i32>()),
            proptest::option::of(arb_u64()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(arb_u64()),
        ),
        0usize..5,
    )
        .prop_map(
            |(ictx, ioas, (iova, length, flags), (errno, latency_ns), opt, which)| {
                let o = IoasOp {
                    ictx,
                    ioas,
                    iova,
                    length,
                    flags,
                    user_va: opt.0,
                    fd: opt.1,
                    start: opt.2,
                    src_ioas: opt.3,
                    src_iova: opt.4,
                    errno,
                    latency_ns,
                };
                [
                    EventBody::IoasMap,
                    EventBody::IoasMapFile,
                    EventBody::IoasCopy,
                    EventBody::IoasUnmap,
                    EventBody::IoasChangeProcess,
                ][which](o)
            },
        );
    let option = (
        arb_ptr(),
        (arb_string(), arb_string()),
        any::<u32>(),
        arb_u64(),
        arb_i32(),
        arb_u64(),
    )
        .prop_map(
            |(ictx, (option, op), object_id, val64, errno, latency_ns)| {
                EventBody::Option(IommufdOption {
                    ictx,
                    option,
                    op,
                    object_id,
                    val64,
                    errno,
                    latency_ns,
                })
            },
        );
    let pin = (
        (arb_ptr(), any::<i64>(), any::<i64>(), 0usize..3),
        (
            any::<u32>(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(arb_ptr()),
            proptest::option::of(arb_u64()),
        ),
        (arb_u64(), arb_u64(), arb_u64(), arb_u64()),
        // Pin latencies are recorded by earlier versions only; never 0 when there.
        (arb_i32(), proptest::option::of(1..=u64::MAX)),
    )
        .prop_map(
            |(
                (iopt_pages, pages, charged, mode),
                (target_pid, target_uid, target_mm, limit_bytes),
                (locked_bytes, pinned_pages, total_pages, pinned_vm_bytes),
                (errno, latency_ns),
            )| {
                EventBody::Pin(Pin {
                    iopt_pages,
                    pages,
                    bytes: pages.wrapping_mul(3),
                    charged,
                    mode: [PinMode::None, PinMode::User, PinMode::Mm][mode],
                    target_pid,
                    target_uid,
                    target_mm,
                    limit_bytes,
                    locked_bytes,
                    pinned_pages,
                    total_pages,
                    pinned_vm_bytes,
                    errno,
                    latency_ns,
                })
            },
        );
    prop_oneof![op, option, pin].boxed()
}

fn arb_object_event() -> BoxedStrategy<EventBody> {
    let ids = prop::collection::btree_map(arb_string(), any::<u32>(), 0..4);
    let head = (arb_string(), any::<u32>(), arb_ptr(), arb_ptr());
    prop_oneof![
        (
            head.clone(),
            ids,
            proptest::option::of(arb_ptr()),
            proptest::option::of(arb_u64()),
            (arb_u64(), arb_i32(), arb_u64())
        )
            .prop_map(
                |((object, id, obj, ictx), refs, domain, virt_id, (size, errno, latency_ns))| {
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
            ),
        (head.clone(), arb_u64(), proptest::option::of(arb_i32())).prop_map(
            |((object, id, obj, ictx), size, errno)| EventBody::ObjectAbort(ObjectAbort {
                object,
                id,
                obj,
                ictx,
                size,
                errno,
            })
        ),
        (head, 0usize..4).prop_map(|((object, id, obj, _), how)| {
            EventBody::ObjectDestroy(ObjectDestroy {
                object,
                id,
                obj,
                how: DestroyHow::ALL[how],
            })
        }),
    ]
    .boxed()
}

fn arb_task() -> BoxedStrategy<(u32, u32, String, u64)> {
    prop_oneof![
        (0u32..3).prop_map(|i| (100 + i, 100, format!("w{i}"), 5)),
        (any::<u32>(), any::<u32>(), arb_string(), arb_u64()),
    ]
    .boxed()
}

fn arb_event() -> BoxedStrategy<Event> {
    (
        prop_oneof![0u64..100_000, any::<u64>()],
        prop_oneof![0u32..4, any::<u32>()],
        arb_task(),
        arb_body(),
    )
        .prop_map(|(ts_ns, cpu, (tid, pid, comm, cgroup_id), body)| Event {
            ts_ns,
            cpu,
            pid,
            tid,
            comm,
            cgroup_id,
            body,
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_sequences_round_trip(
        seq in prop::collection::vec((arb_event(), any::<bool>()), 0..40),
        (max_tasks, max_ptrs) in (1usize..6, 2usize..8),
        small_tables in any::<bool>(),
    ) {
        let events: Vec<Event> = seq.iter().map(|(e, _)| e.clone()).collect();
        let mut buf = Vec::new();
        let mut w = CaptureWriter::new(&mut buf, &header()).unwrap();
        w.set_flush_interval(None);
        if small_tables {
            w.set_table_limits(max_tasks, max_ptrs);
        }
        for (e, flush) in &seq {
            w.write(e).unwrap();
            if *flush {
                w.flush().unwrap();
            }
        }
        w.finish(FinishInfo::default()).unwrap();
        let (got, warning, r) = read_back(&buf);
        prop_assert_eq!(warning, None);
        prop_assert_eq!(got, events);
        prop_assert!(r.ending().unwrap().is_finalized());
    }
}

// A capture recorded on a degraded kernel says which probe points recorded nothing, for
// the consumers (inspect --summary, replay, serve, top): points with no symbol left, and
// points whose every attachment the kernel refused; a kprobe fallback still records.
#[test]
fn the_header_names_the_probe_points_that_recorded_nothing() {
    let point = |name: &str, attach: serde_json::Value, gaps: serde_json::Value| serde_json::json!({"point": name, "what": "", "attach": attach, "gaps": gaps});
    let attachment = |symbol: &str| serde_json::json!([{"symbol": symbol, "program_type": "fentry+fexit", "entry_program": "p"}]);
    // As the 0.1 recorder wrote it (format 1): the plan untyped, the refusals as text.
    let mut v1 = serde_json::json!({
        "tool_version": "0.1.0",
        "kernel_release": "x",
        "probe_plan": {
            "kernel_release": "x",
            "points": [
                point("pt_pages", serde_json::json!([]),
                      serde_json::json!([{"symbol": "__lruvec_stat_mod_folio", "reason": "refused by --deny-symbol"}])),
                point("map", attachment("iommu_map"), serde_json::json!([])),
                point("unmap", attachment("iommu_unmap"), serde_json::json!([])),
            ],
            "drivers": [], "offsets": [], "blockers": [],
        },
        "attach_failed": [
            {"symbol": "iommu_map", "reason": "fentry+fexit refused (EINVAL); using kprobe+kretprobe"},
            {"symbol": "iommu_unmap", "reason": "kprobe+kretprobe refused: EBUSY"},
        ],
    });
    let v1_with_plan = v1.clone();
    let buf = v1_capture(&v1);
    let r = CaptureReader::new(&buf[..]).unwrap();
    assert_eq!(r.version(), 1);
    let h = r.header().clone();
    assert_eq!(h.session_problem, None);
    let missing: Vec<String> = h
        .missing_points()
        .into_iter()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(
        missing,
        vec![
            "pt_pages (__lruvec_stat_mod_folio: refused by --deny-symbol)".to_string(),
            "unmap (iommu_unmap: kprobe+kretprobe refused: EBUSY)".to_string(),
        ]
    );
    let mut summary = Summary::new();
    summary.missing_points = h.missing_points();
    let text = summary.to_string();
    assert!(
        text.contains("MISSING probe point (nothing recorded): pt_pages"),
        "{text}"
    );

    // The same session, written by this version (format 2), reads back the same.
    let mut buf = Vec::new();
    CaptureWriter::new(&mut buf, &h)
        .unwrap()
        .finish(FinishInfo::default())
        .unwrap();
    let r = CaptureReader::new(&buf[..]).unwrap();
    assert_eq!(r.version(), FORMAT_VERSION);
    assert_eq!(r.header().session, h.session);
    assert_eq!(r.header().missing_points(), h.missing_points());

    // A header without a plan (another tool's, or damaged) claims nothing, and says so.
    v1["probe_plan"] = serde_json::Value::Null;
    let buf = v1_capture(&v1);
    let r = CaptureReader::new(&buf[..]).unwrap();
    assert!(r.header().missing_points().is_empty());
    assert!(r.header().session.is_none());
    assert!(r
        .header()
        .session_problem
        .as_deref()
        .unwrap()
        .contains("no probe plan"));
    // A plan that no longer parses is never swallowed.
    v1["probe_plan"] = serde_json::json!({"points": 3});
    let buf = v1_capture(&v1);
    let r = CaptureReader::new(&buf[..]).unwrap();
    let problem = r.header().session_problem.clone().unwrap();
    assert!(problem.contains("probe plan does not parse"), "{problem}");

    // Nor is a list of refusals that does not parse: the plan alone would claim every
    // point recorded, and the unreadable list stays in the header as read.
    let mut v1 = v1_with_plan;
    v1["attach_failed"] = serde_json::json!([{"symbol": 7}]);
    let buf = v1_capture(&v1);
    let r = CaptureReader::new(&buf[..]).unwrap();
    assert!(r.header().session.is_none());
    let problem = r.header().session_problem.clone().unwrap();
    assert!(
        problem.contains("refused attachments does not parse"),
        "{problem}"
    );
    assert_eq!(r.header().extra["attach_failed"], v1["attach_failed"]);
}

// Object records exist from format 3: in an older file they are damage, not events.
#[test]
fn object_records_are_refused_in_older_formats() {
    use super::codec::{Dec, Decoder};
    let record = [24u8, 0, 0];
    let err = Decoder::new(0, 2)
        .decode(&mut Dec::new(&record))
        .err()
        .expect("refused");
    assert!(err.contains("format-2 capture"), "{err}");
    // In format 3 the same bytes are read as an object record (here cut short).
    let err = Decoder::new(0, 3)
        .decode(&mut Dec::new(&record))
        .err()
        .expect("too short");
    assert!(!err.contains("format-"), "{err}");
}

// Pinned-memory records (tags 27 to 29) exist from format 4: in an older file they are
// damage, not events.
#[test]
fn pinned_memory_records_are_refused_in_older_formats() {
    use super::codec::{Dec, Decoder};
    for tag in [27u8, 28, 29] {
        let record = [tag, 0, 0];
        let err = Decoder::new(0, 3)
            .decode(&mut Dec::new(&record))
            .err()
            .expect("refused");
        assert!(err.contains("format-3 capture"), "{err}");
    }
}

// The page-table growth record (tag 30) exists from format 5: in an older file it is damage.
#[test]
fn growth_records_are_refused_in_older_formats() {
    use super::codec::{Dec, Decoder};
    let record = [30u8, 0, 0];
    let err = Decoder::new(0, 4)
        .decode(&mut Dec::new(&record))
        .err()
        .expect("refused");
    assert!(err.contains("format-4 capture"), "{err}");
}

// A `pt_grow` record reads back as written, and the file says format 5.
#[test]
fn growth_records_round_trip() {
    let grow = |ts, levels| {
        ev(
            ts,
            1,
            1234,
            1234,
            "qemu",
            EventBody::PtGrow(PtGrow {
                domain: KernelPtr(0xffff_8881_0c00_0000),
                levels,
            }),
        )
    };
    let events = vec![grow(1_000, 4), grow(2_000, 5)];
    let (bytes, _) = write_capture(&events, |_| false, true);
    let (got, warning, r) = read_back(&bytes);
    assert_eq!((got, warning), (events, None));
    assert_eq!(r.version(), 5);
}

// The JSONL form of `pt_grow`, as the README documents it.
#[test]
fn growth_jsonl_is_pinned() {
    let e = ev(
        5_000,
        0,
        812,
        812,
        "qemu",
        EventBody::PtGrow(PtGrow {
            domain: KernelPtr(0xffff_8881_0c00_0000),
            levels: 5,
        }),
    );
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"ts_ns":5000,"cpu":0,"pid":812,"tid":812,"comm":"qemu","cgroup_id":4242,"event":"pt_grow","domain":"0xffff88810c000000","levels":5}"#
    );
}

// The JSONL form of the pinned-memory events, as the README documents it: an ENOMEM
// carries the limit and the total it was compared with; unlimited is an absent limit.
#[test]
fn pinned_memory_jsonl_is_pinned() {
    let body = |b| ev(5_000, 0, 812, 812, "qemu", b);
    let map = body(EventBody::IoasMap(IoasOp {
        ictx: KernelPtr(0xffff_8881_0c00_0000),
        ioas: 2,
        iova: 0x10_0000,
        length: 1 << 30,
        flags: 7,
        user_va: Some(0x7f00_0000_0000),
        errno: 12,
        latency_ns: 900,
        ..IoasOp::default()
    }));
    let pin = body(EventBody::Pin(Pin {
        iopt_pages: KernelPtr(0xffff_8881_0d00_0000),
        pages: 16,
        bytes: 65536,
        charged: 0,
        mode: PinMode::User,
        target_pid: 812,
        target_uid: Some(107),
        target_mm: None,
        limit_bytes: Some(65536),
        locked_bytes: 32768,
        pinned_pages: 16,
        total_pages: 16,
        pinned_vm_bytes: 0,
        errno: 12,
        latency_ns: None,
    }));
    let option = body(EventBody::Option(IommufdOption {
        ictx: KernelPtr(0xffff_8881_0c00_0000),
        option: "rlimit_mode".into(),
        op: "set".into(),
        object_id: 0,
        val64: 1,
        errno: 0,
        latency_ns: 100,
    }));
    let head = r#"{"ts_ns":5000,"cpu":0,"pid":812,"tid":812,"comm":"qemu","cgroup_id":4242,"#;
    let want = [
        r#""event":"ioas_map","ictx":"0xffff88810c000000","ioas":2,"iova":1048576,"length":1073741824,"flags":7,"user_va":139637976727552,"errno":12,"latency_ns":900}"#,
        r#""event":"pin","iopt_pages":"0xffff88810d000000","pages":16,"bytes":65536,"charged":0,"mode":"user","target_pid":812,"target_uid":107,"limit_bytes":65536,"locked_bytes":32768,"pinned_pages":16,"total_pages":16,"pinned_vm_bytes":0,"errno":12}"#,
        r#""event":"option","ictx":"0xffff88810c000000","option":"rlimit_mode","op":"set","object_id":0,"val64":1,"errno":0,"latency_ns":100}"#,
    ];
    let events = [map, pin, option];
    for (e, want) in events.iter().zip(want) {
        let got = inspect::json_line(e).unwrap();
        assert_eq!(got, format!("{head}{want}"));
        let back: Event = serde_json::from_str(&got).unwrap();
        assert_eq!(&back, e);
    }
    // The refusal explained, from the fields the kernel compared.
    let EventBody::Pin(p) = &events[1].body else {
        unreachable!()
    };
    assert_eq!(
        p.refusal().unwrap(),
        "ENOMEM: pinning 64.0 KiB more would take uid 107 (per-user accounting: every \
         process of that user, io_uring included, shares it) from 32.0 KiB to 96.0 KiB \
         locked, over RLIMIT_MEMLOCK of the mapping's creator (pid 812) of 64.0 KiB: raise \
         that limit by at least 32.0 KiB; or, if other processes of that user hold the locked \
         memory, map through a new iommufd set to per-mm accounting (IOMMU_OPTION_RLIMIT_MODE, \
         with CAP_SYS_RESOURCE, before it holds objects); or create the mapping from a process \
         with CAP_IPC_LOCK"
    );
    let (bytes, _) = write_capture(&events, |_| false, true);
    let (back, warning, _) = read_back(&bytes);
    assert!(warning.is_none(), "{warning:?}");
    assert_eq!(back, events);
}

/// Decodes the records of one frame body under format `version`, up to its end or the first
/// error.
fn decode_records(bytes: &[u8], version: u32) -> Result<(), String> {
    use super::codec::{Dec, Decoder};
    let mut d = Decoder::new(0, version);
    let mut dec = Dec::new(bytes);
    loop {
        match d.decode(&mut dec) {
            Ok(_) if dec.pos < bytes.len() => continue,
            other => return other.map(|_| ()),
        }
    }
}

// The object records' own bounds: more references than any kernel slot table holds, and a
// destroy path byte no writer emits, are damage.
#[test]
fn object_records_with_impossible_fields_are_refused() {
    use super::codec::Encoder;
    let ev = |body| Event {
        ts_ns: 10,
        cpu: 0,
        pid: 1,
        tid: 1,
        comm: "t".into(),
        cgroup_id: 1,
        body,
    };
    let decode_last = |bytes: &[u8]| decode_records(bytes, 3);
    // 17 references (the bound is 16).
    let mut out = Vec::new();
    let refs = (0..17).map(|i| (format!("r{i}"), i)).collect();
    Encoder::new(0).encode(
        &ev(EventBody::ObjectAlloc(ObjectAlloc {
            object: "ioas".into(),
            id: 1,
            obj: KernelPtr(0x1000),
            ictx: KernelPtr(0x2000),
            refs,
            domain: None,
            virt_id: None,
            size: 0,
            errno: 0,
            latency_ns: 0,
        })),
        &mut out,
    );
    let err = decode_last(&out).expect_err("refused");
    assert!(err.contains("17 references"), "{err}");
    // A destroy path byte past `put`.
    let mut out = Vec::new();
    Encoder::new(0).encode(
        &ev(EventBody::ObjectDestroy(ObjectDestroy {
            object: "ioas".into(),
            id: 1,
            obj: KernelPtr(0x1000),
            how: DestroyHow::Put,
        })),
        &mut out,
    );
    *out.last_mut().unwrap() = 9;
    let err = decode_last(&out).expect_err("refused");
    assert!(err.contains("unknown destroy path 9"), "{err}");
}

// The pinned-memory records' own bounds: an IOAS operation or an accounting mode byte no
// writer emits is damage. The byte is found as the only one two records differing in it
// differ in.
#[test]
fn pinned_memory_records_with_impossible_fields_are_refused() {
    use super::codec::Encoder;
    let encode = |body| {
        let mut out = Vec::new();
        let e = Event {
            ts_ns: 0,
            cpu: 0,
            pid: 1,
            tid: 1,
            comm: "t".into(),
            cgroup_id: 1,
            body,
        };
        Encoder::new(0).encode(&e, &mut out);
        out
    };
    let decode_all = |bytes: &[u8]| decode_records(bytes, 4);
    // `a` with the one byte it differs from `b` in set to `value`.
    let damaged = |a: Vec<u8>, b: Vec<u8>, value: u8| {
        assert_eq!(a.len(), b.len());
        let at: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        assert_eq!(at.len(), 1, "{a:?} {b:?}");
        decode_all(&a).expect("the undamaged record reads");
        let mut a = a;
        a[at[0]] = value;
        decode_all(&a)
    };
    let op = IoasOp {
        ictx: KernelPtr(0x2000),
        ioas: 1,
        ..IoasOp::default()
    };
    let err = damaged(
        encode(EventBody::IoasMap(op.clone())),
        encode(EventBody::IoasUnmap(op)),
        9,
    )
    .expect_err("refused");
    assert!(err.contains("unknown IOAS operation 9"), "{err}");
    let pin = |mode| {
        encode(EventBody::Pin(Pin {
            iopt_pages: KernelPtr(0x3000),
            pages: 1,
            bytes: 4096,
            charged: 0,
            mode,
            target_pid: 1,
            target_uid: None,
            target_mm: None,
            limit_bytes: None,
            locked_bytes: 0,
            pinned_pages: 1,
            total_pages: 1,
            pinned_vm_bytes: 0,
            errno: 0,
            latency_ns: None,
        }))
    };
    let err = damaged(pin(PinMode::None), pin(PinMode::User), 7).expect_err("refused");
    assert!(err.contains("unknown accounting mode 7"), "{err}");
}

// A failed uncharge (per-mm, the creator's mm gone) is not a refusal: the summary lists it
// apart.
#[test]
fn summary_tells_refused_charges_from_failed_uncharges() {
    use crate::capture::inspect::Summary;
    use crate::state::tests::{ev, pin};
    let mut s = Summary::new();
    s.add(&ev(1, 10, 500, pin(0x1000, 10, 4, 4, 4, 0)));
    s.add(&ev(2, 10, 500, pin(0x2000, 10, 16, 16, 4, 12)));
    s.add(&ev(3, 10, 500, pin(0x1000, 10, -4, 0, 4, 22)));
    assert_eq!((s.refusals_total, s.failed_uncharges_total), (1, 1));
    let text = s.to_string();
    assert!(text.contains("pinned-memory refusals (1;"), "{text}");
    assert!(text.contains("uncharges that failed (1;"), "{text}");
}
