//! The aggregate of a small synthetic stream, value by value.

use super::*;
use crate::events::{DomainAlloc, DomainFree, Geometry, HwptAlloc, Lost};

pub(crate) const A: KernelPtr = KernelPtr(0xffff_8881_0000_a000);
pub(crate) const B: KernelPtr = KernelPtr(0xffff_8881_0000_b000);
pub(crate) const C: KernelPtr = KernelPtr(0xffff_8881_0000_c000);

pub(crate) fn ev(ts_ns: u64, pid: u32, cgroup_id: u64, body: EventBody) -> Event {
    Event {
        ts_ns,
        cpu: 0,
        pid,
        tid: pid,
        comm: format!("task{pid}"),
        cgroup_id,
        body,
    }
}

pub(crate) fn alloc(
    driver: &str,
    kind: DomainKind,
    flags: u32,
    domain: KernelPtr,
    errno: i32,
    latency_ns: u64,
) -> EventBody {
    EventBody::DomainAlloc(DomainAlloc {
        driver: driver.into(),
        op: AllocOp::AllocUser,
        kind,
        flags,
        data_type: 0,
        data_len: 0,
        data: None,
        parent: KernelPtr(0),
        viommu_id: None,
        domain,
        errno,
        latency_ns,
        geometry: Geometry::default(),
    })
}

fn pt(domain: KernelPtr, pages: u64, charged: bool, cause: PtCause) -> PtPages {
    PtPages {
        domain,
        pages,
        charged,
        memcg_id: if charged { 50 } else { 0 },
        cause,
    }
}

fn map(domain: KernelPtr, size: u64, done: u64, errno: i32, latency_ns: u64) -> MapOp {
    MapOp {
        domain,
        iova: 0,
        size,
        done,
        paddr: 0,
        errno,
        latency_ns,
    }
}

/// A VMM (pid 100, cgroup 50) allocates an intel domain A, maps 2 MiB + 4 KiB (two table
/// pages, charged), fails to allocate a NEST_PARENT|DIRTY_TRACKING domain (EOPNOTSUPP),
/// unmaps 4 KiB (one page freed); pid 200 (cgroup 60) allocates a mock nested domain B
/// with an unknown flag bit; 3 + 1 events are lost; pid 300 (cgroup 70) maps 8 KiB into a
/// domain C whose allocation was not seen; A is freed with its top-level page (uncharged)
/// never freed.
pub(crate) fn synthetic_stream() -> Vec<Event> {
    vec![
        ev(
            1_000,
            100,
            50,
            alloc("intel", DomainKind::Paging, 0, A, 0, 30_000),
        ),
        ev(
            1_100,
            100,
            50,
            EventBody::PtAlloc(pt(A, 1, false, PtCause::Alloc)),
        ),
        ev(
            1_200,
            100,
            50,
            EventBody::HwptAlloc(HwptAlloc {
                flags: 0,
                dev_id: 1,
                pt_id: 2,
                data_type: 0,
                data_len: 0,
                hwpt_id: 3,
                errno: 0,
                latency_ns: 40_000,
            }),
        ),
        ev(
            2_000,
            100,
            50,
            EventBody::PtAlloc(pt(A, 2, true, PtCause::Map)),
        ),
        ev(
            2_100,
            100,
            50,
            EventBody::Map(map(A, 2 << 20, 2 << 20, 0, 4_000)),
        ),
        ev(2_200, 100, 50, EventBody::Map(map(A, 4096, 4096, 0, 2_000))),
        ev(
            2_300,
            100,
            50,
            alloc("intel", DomainKind::Paging, 3, KernelPtr(0), 95, 2_000),
        ),
        ev(
            2_400,
            100,
            50,
            EventBody::HwptAlloc(HwptAlloc {
                flags: 3,
                dev_id: 1,
                pt_id: 2,
                data_type: 0,
                data_len: 0,
                hwpt_id: 0,
                errno: 95,
                latency_ns: 3_000,
            }),
        ),
        ev(
            3_000,
            200,
            60,
            alloc("mock", DomainKind::Nested, 0x100, B, 0, 800),
        ),
        ev(
            3_100,
            200,
            60,
            EventBody::PtAlloc(pt(B, 1, false, PtCause::Alloc)),
        ),
        ev(
            4_000,
            100,
            50,
            EventBody::PtFree(pt(A, 1, true, PtCause::Unmap)),
        ),
        ev(
            4_100,
            100,
            50,
            EventBody::Unmap(map(A, 4096, 4096, 0, 7_000)),
        ),
        ev(
            4_200,
            0,
            0,
            EventBody::Lost(Lost {
                ringbuf_full: 3,
                context_full: 1,
            }),
        ),
        ev(5_000, 300, 70, EventBody::Map(map(C, 8192, 8192, 0, 1_500))),
        ev(5_100, 300, 70, EventBody::Map(map(C, 4096, 0, 22, 900))),
        ev(
            6_000,
            100,
            50,
            EventBody::PtFree(pt(A, 1, true, PtCause::Free)),
        ),
        ev(
            6_100,
            100,
            50,
            EventBody::DomainFree(DomainFree {
                domain: A,
                latency_ns: 12_000,
            }),
        ),
    ]
}

pub(crate) fn synthetic_state() -> State {
    let mut s = State::new();
    for e in synthetic_stream() {
        s.apply(&e);
    }
    s
}

fn id(s: &State, name: &str) -> DriverId {
    s.drivers()
        .find(|(_, n)| *n == name)
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("driver {name} not seen"))
}

#[test]
fn live_domains_and_owners() {
    let s = synthetic_state();
    let mut live: Vec<_> = s
        .domains()
        .map(|d| {
            (
                d.domain,
                s.driver_name(d.driver).to_string(),
                d.kind,
                d.pid,
                d.cgroup_id,
                d.seen_alloc,
            )
        })
        .collect();
    live.sort_by_key(|l| l.0);
    assert_eq!(
        live,
        vec![
            (B, "mock".into(), DomainKind::Nested, 200, 60, true),
            (C, "unknown".into(), DomainKind::Other, 300, 70, false),
        ]
    );
    let b = s.domain(B).expect("B is live");
    assert_eq!(
        (b.flags, b.pt_uncharged, b.pt_charged, b.comm.as_str()),
        (0x100, 1, 0, "task200")
    );
    let c = s.domain(C).expect("C is live");
    assert_eq!((c.mapped_bytes, c.maps), (8192, 2));
    assert!(s.domain(A).is_none(), "A was freed");
    assert_eq!(s.untracked_domains(), 1);
}

#[test]
fn allocation_counts_failures_and_latency() {
    let s = synthetic_state();
    let (intel, mock) = (id(&s, "intel"), id(&s, "mock"));
    let get = |driver, kind, flags, errno| {
        s.allocs()
            .get(&AllocKey {
                driver,
                kind,
                flags,
                errno,
            })
            .copied()
    };
    assert_eq!(get(intel, DomainKind::Paging, 0, 0), Some(1));
    assert_eq!(get(intel, DomainKind::Paging, 3, 95), Some(1));
    assert_eq!(
        get(mock, DomainKind::Nested, FLAGS_OTHER, 0),
        Some(1),
        "unknown flag bits fold into OTHER"
    );
    assert_eq!(s.allocs().len(), 3);
    assert_eq!(s.alloc_failures_by_errno(), vec![(95, 1)]);
    let h = &s.alloc_latency()[&(intel, DomainKind::Paging)];
    assert_eq!((h.count(), h.sum_ns()), (2, 32_000));
    // 2 µs in the 2.5 µs bucket, 30 µs in the 50 µs bucket.
    let cum: Vec<_> = h
        .cumulative()
        .filter(|(b, _)| [1_000, 2_500, 25_000, 50_000].contains(b))
        .collect();
    assert_eq!(cum, vec![(1_000, 0), (2_500, 1), (25_000, 1), (50_000, 2)]);
    assert_eq!(h.quantile_upper_ns(0.5), Some(2_500));
    assert_eq!(h.quantile_upper_ns(0.99), Some(50_000));
    assert_eq!(s.hwpt_allocs().get(&0), Some(&1));
    assert_eq!(s.hwpt_allocs().get(&95), Some(&1));
    assert_eq!(s.frees().get(&(intel, DomainKind::Paging)), Some(&1));
    assert_eq!(s.free_latency()[&intel].sum_ns(), 12_000);
}

#[test]
fn maps_and_page_tables_per_driver() {
    let s = synthetic_state();
    let (intel, mock, unknown) = (id(&s, "intel"), id(&s, "mock"), id(&s, "unknown"));
    let m = s.map_ops()[&MapKey {
        driver: intel,
        dir: MapDir::Map,
        errno: 0,
    }];
    assert_eq!((m.ops, m.bytes_done), (2, (2 << 20) + 4096));
    let u = s.map_ops()[&MapKey {
        driver: intel,
        dir: MapDir::Unmap,
        errno: 0,
    }];
    assert_eq!((u.ops, u.bytes_done), (1, 4096));
    let failed = s.map_ops()[&MapKey {
        driver: unknown,
        dir: MapDir::Map,
        errno: 22,
    }];
    assert_eq!(
        (failed.ops, failed.bytes_requested, failed.bytes_done),
        (1, 4096, 0)
    );
    let pt = |driver, cause, charged| {
        s.pt()
            .get(&PtKey {
                driver,
                cause,
                charged,
            })
            .copied()
            .unwrap_or_default()
    };
    assert_eq!(
        pt(intel, PtCause::Alloc, false),
        PtTotals {
            allocated: 1,
            freed: 0
        }
    );
    assert_eq!(
        pt(intel, PtCause::Map, true),
        PtTotals {
            allocated: 2,
            freed: 0
        }
    );
    assert_eq!(
        pt(intel, PtCause::Unmap, true),
        PtTotals {
            allocated: 0,
            freed: 1
        }
    );
    assert_eq!(
        pt(intel, PtCause::Free, true),
        PtTotals {
            allocated: 0,
            freed: 1
        }
    );
    assert_eq!(
        pt(mock, PtCause::Alloc, false),
        PtTotals {
            allocated: 1,
            freed: 0
        }
    );
    assert_eq!(
        s.pt_orphaned().get(&intel),
        Some(&1),
        "A's top-level page was never freed"
    );
    assert_eq!(s.per_driver()[&intel], LiveTotals::default());
    assert_eq!(
        s.per_driver()[&mock],
        LiveTotals {
            domains: 1,
            mapped_bytes: 0,
            pt_charged: 0,
            pt_uncharged: 1
        }
    );
    assert_eq!(
        s.per_driver()[&unknown],
        LiveTotals {
            domains: 1,
            mapped_bytes: 8192,
            pt_charged: 0,
            pt_uncharged: 0
        }
    );
    let live = s.live_by_driver_kind();
    assert_eq!(live.get(&(mock, DomainKind::Nested)), Some(&1));
    assert_eq!(live.get(&(intel, DomainKind::Paging)), None);
}

#[test]
fn per_cgroup_top_n_and_other() {
    let s = synthetic_state();
    assert!(
        !s.per_cgroup().contains_key(&50),
        "cgroup 50 holds nothing once A is freed"
    );
    let (top, other) = s.top_cgroups(1);
    assert_eq!(
        top,
        vec![(
            60,
            LiveTotals {
                domains: 1,
                mapped_bytes: 0,
                pt_charged: 0,
                pt_uncharged: 1
            }
        )]
    );
    assert_eq!(
        other,
        LiveTotals {
            domains: 1,
            mapped_bytes: 8192,
            pt_charged: 0,
            pt_uncharged: 0
        }
    );
    let (top, other) = s.top_cgroups(10);
    assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![60, 70]);
    assert_eq!(other, LiveTotals::default());
}

#[test]
fn loss_and_event_counts() {
    let mut s = synthetic_state();
    assert_eq!(
        s.lost(),
        LostCounts {
            ringbuf_full: 3,
            context_full: 1
        }
    );
    let by: HashMap<_, _> = s.events_by_type().collect();
    assert_eq!(
        (
            by["map"],
            by["unmap"],
            by["pt_alloc"],
            by["pt_free"],
            by["lost"]
        ),
        (4, 1, 3, 2, 1)
    );
    assert_eq!(s.events(), 17);
    assert_eq!(s.time_span_ns(), Some((1_000, 6_100)));
    // Every kind of event is counted, the object ones included.
    s.apply(&ev(
        6_200,
        1,
        1,
        EventBody::ObjectDestroy(crate::events::ObjectDestroy {
            object: "ioas".into(),
            id: 1,
            obj: KernelPtr(1),
            how: crate::events::DestroyHow::Close,
        }),
    ));
    let by: HashMap<_, _> = s.events_by_type().collect();
    assert_eq!((by["object_destroy"], by["object_alloc"]), (1, 0));
    s.note_decode_errors(2);
    assert_eq!(s.decode_errors(), 2);
}

#[test]
fn page_frees_never_underflow_and_reused_pointers_reset() {
    let mut s = State::new();
    // Pages freed that were allocated before tracing started.
    s.apply(&ev(
        1,
        1,
        9,
        EventBody::PtFree(pt(A, 5, false, PtCause::Unmap)),
    ));
    assert_eq!(s.domain(A).map(|d| d.pt_pages()), Some(0));
    // A lost free: the pointer comes back in a new allocation, which starts from zero.
    s.apply(&ev(
        2,
        1,
        9,
        EventBody::PtAlloc(pt(A, 2, true, PtCause::Map)),
    ));
    s.apply(&ev(3, 1, 9, alloc("intel", DomainKind::Paging, 0, A, 0, 1)));
    assert_eq!(
        s.domain(A).map(|d| (d.pt_pages(), d.seen_alloc)),
        Some((0, true))
    );
    assert_eq!(s.domains().count(), 1);
    assert_eq!(s.per_cgroup()[&9].domains, 1);
    assert_eq!(s.per_cgroup()[&9].pt_pages(), 0);
}

// ---- the pinned-memory ledger (pins.rs) ----------------------------------------------

/// An accounting call of `pid`'s mapping `pages` (per-user, uid 107, 16-page limit).
pub(crate) fn pin(
    pages_ptr: u64,
    pid: u32,
    pages: i64,
    pinned_after: u64,
    locked_after_pages: u64,
    errno: i32,
) -> EventBody {
    use crate::events::{Pin, PinMode};
    EventBody::Pin(Pin {
        iopt_pages: KernelPtr(pages_ptr),
        pages,
        bytes: pages * 4096,
        charged: if errno == 0 { pages } else { 0 },
        mode: PinMode::User,
        target_pid: pid,
        target_uid: Some(107),
        target_mm: None,
        limit_bytes: Some(16 * 4096),
        locked_bytes: locked_after_pages * 4096,
        pinned_pages: pinned_after,
        total_pages: 8,
        pinned_vm_bytes: 0,
        errno,
        latency_ns: None,
    })
}

#[test]
fn the_ledger_splits_a_targets_total_and_explains_a_refusal_with_it() {
    let mut s = State::new();
    // uid 107 had 6 pages locked elsewhere; pid 10 pins 4, pid 11 pins 2.
    s.apply(&ev(1, 10, 500, pin(0x1000, 10, 4, 4, 10, 0)));
    s.apply(&ev(2, 11, 600, pin(0x2000, 11, 2, 2, 12, 0)));
    let p = s.pins();
    assert_eq!(p.processes()[&10].pinned_pages, 4);
    assert_eq!(p.processes()[&11].charged_pages, 2);
    let (t, headroom, limit) = p.tightest_target_of(10).expect("uid 107");
    assert_eq!(t.target, PinTarget::User(107));
    assert_eq!((headroom, limit), (4 * 4096, 16 * 4096));
    assert_eq!(
        p.pinned_bytes_by_cgroup(1),
        (vec![(500, 4 * 4096)], 2 * 4096)
    );
    // pid 10 asks for 8 more: 12 + 8 > 16.
    s.apply(&ev(3, 10, 500, pin(0x1000, 10, 8, 12, 12, 12)));
    let p = s.pins();
    assert_eq!(p.refusals()[&RefusalCause::MemlockUser], 1);
    let why = p.recent_refusals().last().expect("explained");
    assert!(
        why.contains(
            "this process's iommufd mappings 16.0 KiB, other processes' 8.0 KiB, the rest 24.0 KiB"
        ),
        "{why}"
    );
    assert_eq!(
        p.processes()[&10].pinned_pages,
        4,
        "a refusal changes nothing"
    );
    // Everything unpinned: nothing left, targets forgotten.
    s.apply(&ev(4, 10, 500, pin(0x1000, 10, -4, 0, 8, 0)));
    s.apply(&ev(5, 11, 600, pin(0x2000, 11, -2, 0, 6, 0)));
    assert!(s.pins().processes().is_empty());
    assert_eq!(s.pins().targets().count(), 0);
}

#[test]
fn a_change_process_moves_the_charge_to_the_new_creator() {
    use crate::events::PinMode;
    let mut s = State::new();
    s.apply(&ev(1, 10, 500, pin(0x1000, 10, 4, 4, 4, 0)));
    // The new process charges its uid (1000) through a size-0 stack iopt_pages...
    let mut charge = pin(0xffff_c900_0000_0000, 20, 4, 0, 4, 0);
    if let EventBody::Pin(p) = &mut charge {
        (p.total_pages, p.target_uid, p.mode) = (0, Some(1000), PinMode::User);
    }
    s.apply(&ev(2, 20, 700, charge));
    // ... then the old charge goes, nothing unpinned.
    s.apply(&ev(3, 20, 700, pin(0x1000, 10, -4, 4, 0, 0)));
    let p = s.pins();
    assert!(!p.processes().contains_key(&10));
    assert_eq!(p.processes()[&20].pinned_pages, 4);
    assert_eq!(
        p.tightest_target_of(20).map(|t| t.0.target),
        Some(PinTarget::User(1000))
    );
}

// Pins belong to the IOAS whose operation made them: an IOAS_MAP's own (the decoder puts
// them just before it), or, for areas mapped before any domain, the HWPT_ALLOC that gave
// the IOAS its first domain (lazy pinning).
#[test]
fn pins_are_attributed_to_the_ioas_that_made_them() {
    use crate::events::{IoasOp, ObjectAlloc};
    let ictx = KernelPtr(0xffff_8881_4000_0000);
    let mut s = State::new();
    s.apply(&ev(
        1,
        10,
        500,
        EventBody::ObjectAlloc(ObjectAlloc {
            object: "ioas".into(),
            id: 3,
            obj: KernelPtr(0xffff_8881_0000_3000),
            ictx,
            refs: Default::default(),
            domain: None,
            virt_id: None,
            size: 64,
            errno: 0,
            latency_ns: 0,
        }),
    ));
    // A map with a domain: pinned, then its IOAS_MAP.
    s.apply(&ev(2, 10, 500, pin(0x1000, 10, 4, 4, 4, 0)));
    s.apply(&ev(
        3,
        10,
        500,
        EventBody::IoasMap(IoasOp {
            ictx,
            ioas: 3,
            latency_ns: 2,
            ..Default::default()
        }),
    ));
    // An area mapped before any domain, pinned by the HWPT_ALLOC on IOAS 3.
    s.apply(&ev(4, 10, 500, pin(0x2000, 10, 2, 2, 6, 0)));
    s.apply(&ev(
        5,
        10,
        500,
        EventBody::HwptAlloc(HwptAlloc {
            flags: 0,
            dev_id: 1,
            pt_id: 3,
            data_type: 0,
            data_len: 0,
            hwpt_id: 4,
            errno: 0,
            latency_ns: 2,
        }),
    ));
    // A pin nothing claims stays unattributed.
    s.apply(&ev(6, 10, 500, pin(0x3000, 10, 1, 1, 7, 0)));
    let by = s.pins().pinned_pages_by_ioas();
    assert_eq!(by.get(&(ictx, 3)), Some(&6), "{by:?}");
    assert_eq!(by.len(), 1);
    assert_eq!(s.pins().processes()[&10].pinned_pages, 7);
    // A device attach on IOAS 5: its auto domain's HWPT, published at the attach's end,
    // claims the pins the attach made (and the one before it on the thread).
    s.apply(&ev(7, 10, 500, pin(0x4000, 10, 8, 8, 15, 0)));
    s.apply(&ev(
        8,
        10,
        500,
        EventBody::ObjectAlloc(ObjectAlloc {
            object: "hwpt_paging".into(),
            id: 6,
            obj: KernelPtr(0xffff_8881_5000_0000),
            ictx,
            refs: [("ioas".to_string(), 5)].into_iter().collect(),
            domain: None,
            virt_id: None,
            size: 80,
            errno: 0,
            latency_ns: 0,
        }),
    ));
    let by = s.pins().pinned_pages_by_ioas();
    assert_eq!(by.get(&(ictx, 5)), Some(&9), "{by:?}");
    assert_eq!(by.get(&(ictx, 3)), Some(&6), "{by:?}");
}

// A per-mm uncharge that fails (the creator's mm gone: an exit with the iommufd open)
// unpins all the same: nothing stays pinned, and it is not a refusal.
#[test]
fn a_failed_uncharge_unpins_and_is_not_a_refusal() {
    let mut s = State::new();
    s.apply(&ev(1, 10, 500, pin(0x1000, 10, 4, 4, 4, 0)));
    s.apply(&ev(2, 10, 500, pin(0x1000, 10, -4, 0, 4, 22)));
    assert!(s.pins().processes().is_empty());
    assert!(s.pins().refusals().is_empty());
    assert_eq!(s.pins().targets().count(), 0);
}

// A pin made before an IOAS operation started (a device attach on the same thread) is not
// that operation's.
#[test]
fn only_pins_made_during_an_operation_are_claimed_for_its_ioas() {
    use crate::events::IoasOp;
    let ictx = KernelPtr(0xffff_8881_4000_0000);
    let mut s = State::new();
    s.apply(&ev(1_000, 10, 500, pin(0x1000, 10, 2, 2, 2, 0)));
    s.apply(&ev(5_000, 10, 500, pin(0x2000, 10, 4, 4, 6, 0)));
    s.apply(&ev(
        6_000,
        10,
        500,
        EventBody::IoasMap(IoasOp {
            ictx,
            ioas: 3,
            latency_ns: 2_000,
            ..Default::default()
        }),
    ));
    let by = s.pins().pinned_pages_by_ioas();
    assert_eq!(by.get(&(ictx, 3)), Some(&4), "{by:?}");
}

// The kernel's VmPin is compared with the ledger only once settled: two equal readings at
// least 0.9 s apart with no pin event between (one in flight would otherwise count).
#[test]
fn the_ledger_is_reconciled_with_the_kernels_vm_pin_once_settled() {
    use crate::procfs::MemoryHeld;
    use crate::state::Reconciliation;
    let held = |kib: u64| {
        Some(MemoryHeld {
            pinned_bytes: kib * 1024,
            locked_bytes: 0,
        })
    };
    let verdict = |s: &State| s.pins().processes()[&10].reconciliation(s.pins().page_size());
    let sec = 1_000_000_000u64;
    let mut s = State::new();
    s.apply(&ev(1, 10, 500, pin(0x1000, 10, 4, 4, 4, 0)));
    s.reconcile_pins(&[(10, held(16))], sec);
    assert_eq!(verdict(&s), Reconciliation::Unchecked);
    // Two readings a tenth of a second apart (ticks in a burst) settle nothing.
    s.reconcile_pins(&[(10, held(16))], sec + sec / 10);
    assert_eq!(verdict(&s), Reconciliation::Unchecked);
    s.reconcile_pins(&[(10, held(16))], 2 * sec + sec / 10);
    assert_eq!(verdict(&s), Reconciliation::Matches);
    // A pin after the reading: unsettled until read twice again.
    s.apply(&ev(2, 10, 500, pin(0x2000, 10, 2, 2, 6, 0)));
    assert_eq!(verdict(&s), Reconciliation::Unchecked);
    s.reconcile_pins(&[(10, held(40))], 4 * sec);
    s.reconcile_pins(&[(10, held(40))], 5 * sec);
    assert_eq!(verdict(&s), Reconciliation::KernelPinsMore(16 * 1024));
    // Two readings that differ (the process pins outside iommufd meanwhile): unsettled.
    s.reconcile_pins(&[(10, held(8))], 6 * sec);
    assert_eq!(verdict(&s), Reconciliation::Unchecked);
    s.reconcile_pins(&[(10, held(8))], 7 * sec);
    assert_eq!(verdict(&s), Reconciliation::LedgerExceeds(16 * 1024));
    let by = s.pins().reconciliations();
    assert_eq!((by["ledger_exceeds"], by["matches"], by.len()), (1, 0, 4));
    // The process is gone: no reading, nothing compared; unknown pids are ignored.
    s.reconcile_pins(&[(10, None), (99, held(4))], 8 * sec);
    assert_eq!(verdict(&s), Reconciliation::Unchecked);
    assert!(s.pins().processes()[&10].kernel().is_none());
    assert!(!s.pins().processes().contains_key(&99));
}

// IOAS_CHANGE_PROCESS moves mode-none pins' source_mm without moving their pinned_vm and
// without an accounting event: a process holding such pins is not compared any more.
#[test]
fn mode_none_pins_moved_by_change_process_are_not_compared() {
    use crate::events::{EventBody, PinMode};
    use crate::procfs::MemoryHeld;
    use crate::state::Reconciliation;
    let mut none = pin(0x1000, 10, 4, 4, 0, 0);
    if let EventBody::Pin(p) = &mut none {
        (p.mode, p.target_uid, p.charged) = (PinMode::None, None, 0);
    }
    let mut s = State::new();
    s.apply(&ev(1, 10, 500, none));
    let held = Some(MemoryHeld {
        pinned_bytes: 16 * 1024,
        locked_bytes: 0,
    });
    s.reconcile_pins(&[(10, held)], 1_000_000_000);
    s.reconcile_pins(&[(10, held)], 2_000_000_000);
    let verdict = |s: &State| s.pins().processes()[&10].reconciliation(s.pins().page_size());
    assert_eq!(verdict(&s), Reconciliation::Matches);
    let change = EventBody::IoasChangeProcess(crate::events::IoasOp::default());
    s.apply(&ev(3, 11, 600, change));
    assert_eq!(verdict(&s), Reconciliation::Unchecked);
}
