//! Replay over synthetic event streams.

use super::*;
use crate::events::{
    AllocOp, DomainAlloc, DomainFree, DomainKind, Geometry, KernelPtr, Lost, MapOp, PtGrow, PtPages,
};
use crate::model::{KernelBehaviour, SmmuBehaviour};

const D1: u64 = 0xffff_8880_0000_1000;
const D2: u64 = 0xffff_8880_0000_2000;
const M2: u64 = 2 << 20;

fn ev(tid: u32, body: EventBody) -> Event {
    Event {
        ts_ns: 0,
        cpu: 0,
        pid: tid,
        tid,
        comm: "t".into(),
        // A workload cgroup (not the root: root-cgroup tasks are never charged).
        cgroup_id: 42,
        body,
    }
}

fn alloc_ev(
    domain: u64,
    driver: &str,
    fields: &[(&str, u64)],
    pgsize: u64,
    aperture_end: u64,
) -> Event {
    ev(
        1,
        EventBody::DomainAlloc(DomainAlloc {
            driver: driver.into(),
            op: AllocOp::AllocUser,
            kind: DomainKind::Paging,
            flags: 0,
            data_type: 0,
            data_len: 0,
            data: None,
            parent: KernelPtr(0),
            viommu_id: None,
            domain: KernelPtr(domain),
            errno: 0,
            latency_ns: 0,
            geometry: Geometry {
                pgsize_bitmap: pgsize,
                aperture_start: 0,
                aperture_end,
                domain_type: 0,
                driver_fields: fields.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            },
        }),
    )
}

fn intel(domain: u64) -> Event {
    alloc_ev(
        domain,
        "intel",
        &[
            ("agaw", 2),
            ("gaw", 48),
            ("iommu_superpage", 2),
            ("use_first_level", 0),
        ],
        0x4000_1000 | 0x20_0000,
        (1 << 48) - 1,
    )
}

fn pt(domain: u64, tid: u32, alloc: bool, pages: u64, charged: bool, cause: PtCause) -> Event {
    let p = PtPages {
        domain: KernelPtr(domain),
        pages,
        charged,
        memcg_id: if charged { 7 } else { 0 },
        cause,
    };
    ev(
        tid,
        if alloc {
            EventBody::PtAlloc(p)
        } else {
            EventBody::PtFree(p)
        },
    )
}

fn op(domain: u64, tid: u32, map: bool, iova: u64, size: u64, done: u64) -> Event {
    let m = MapOp {
        domain: KernelPtr(domain),
        iova,
        size,
        done,
        paddr: if map { iova } else { 0 },
        errno: 0,
        latency_ns: 0,
    };
    ev(
        tid,
        if map {
            EventBody::Map(m)
        } else {
            EventBody::Unmap(m)
        },
    )
}

fn map_pa(domain: u64, iova: u64, paddr: u64, size: u64) -> Event {
    let mut e = op(domain, 1, true, iova, size, size);
    if let EventBody::Map(m) = &mut e.body {
        m.paddr = paddr;
    }
    e
}

fn free_ev(domain: u64) -> Event {
    ev(
        1,
        EventBody::DomainFree(DomainFree {
            domain: KernelPtr(domain),
            latency_ns: 0,
        }),
    )
}

/// A VT-d 4-level stream, page counts computed by hand from intel/iommu.c:
/// 0 alloc, 1 pgd (+1 GFP_KERNEL), 2-4 map 4K pages [0, 2M) (+3 tables), 5-6 map 2M block
/// at 2M (level-2 table exists: +0), 7-8 unmap [0, 2M) frees the level-1 table at the sync
/// (-1), 9-10 domain free (pgd, level 3, level 2: -3).
fn vtd_stream(d: u64) -> Vec<Event> {
    vec![
        intel(d),
        pt(d, 1, true, 1, false, PtCause::Alloc),
        pt(d, 1, true, 2, true, PtCause::Map),
        pt(d, 1, true, 1, true, PtCause::Map),
        // paddr 4K off the 2M alignment: iommu_pgsize picks 4K pages.
        map_pa(d, 0, 0x1000, M2),
        op(d, 1, true, M2, M2, M2),
        pt(d, 1, false, 1, false, PtCause::Unmap),
        op(d, 1, false, 0, M2, M2),
        pt(d, 1, false, 3, false, PtCause::Free),
        free_ev(d),
    ]
}

#[test]
fn vtd_stream_verifies() {
    let r = replay(vtd_stream(D1), &ReplayOptions::default());
    assert!(r.all_verified(), "{r}");
    let d = &r.domains[0];
    assert_eq!(d.verdict, Verdict::Verified);
    assert_eq!((d.maps, d.unmaps), (2, 1));
    assert_eq!(
        d.observed,
        PageTotals {
            allocated: 4,
            freed: 4,
            peak: 4
        }
    );
    assert_eq!(d.predicted.allocated, 4);
    assert_eq!(d.never_freed, 0);
    // The pgd is GFP_KERNEL by design (paging_domain_alloc).
    assert_eq!(
        d.uncharged,
        Uncharged {
            policy: 1,
            unexpected: 0,
            first_unexpected_index: None
        }
    );
    assert!(r.to_string().contains("every domain verified"));
}

// One PtFree dropped: the unmap (now event 6) must be reported as the divergence.
#[test]
fn dropped_pt_free_diverges_at_unmap() {
    let mut s = vtd_stream(D1);
    s.remove(6);
    let r = replay(&s, &ReplayOptions::default());
    assert!(!r.all_verified());
    let d = &r.domains[0];
    assert_eq!(d.verdict, Verdict::Diverged);
    let v = d.divergence.as_ref().expect("divergence");
    assert_eq!(v.event_index, 6);
    assert_eq!(v.predicted, vec![PageRun::Free { pages: 1 }]);
    assert_eq!(v.observed, vec![]);
    assert!(v.context.iter().any(|c| c.here && c.index == 6));
    assert!(r.to_string().contains("first divergence at event 6"), "{r}");
}

// The first map moved before its page events: divergence at the map's new index (2).
#[test]
fn moved_map_diverges_at_map() {
    let mut s = vtd_stream(D1);
    let m = s.remove(4);
    s.insert(2, m);
    let r = replay(&s, &ReplayOptions::default());
    let v = r.domains[0].divergence.as_ref().expect("divergence");
    assert_eq!(v.event_index, 2);
    assert_eq!(v.predicted, vec![PageRun::Alloc { pages: 3 }]);
    assert_eq!(r.first_divergence().map(|(_, v)| v.event_index), Some(2));
}

// An extra alloc-time page shows at once (observed must stay a prefix of predicted).
#[test]
fn extra_alloc_page_diverges_immediately() {
    let mut s = vtd_stream(D1);
    s.insert(2, pt(D1, 1, true, 1, false, PtCause::Alloc));
    let r = replay(&s, &ReplayOptions::default());
    assert_eq!(r.domains[0].divergence.as_ref().unwrap().event_index, 2);
}

// A map-time table not charged to the memcg is a defect (iommufd: GFP_KERNEL_ACCOUNT).
#[test]
fn uncharged_map_table_is_unexpected() {
    let mut s = vtd_stream(D1);
    s[3] = pt(D1, 1, true, 1, false, PtCause::Map);
    let r = replay(&s, &ReplayOptions::default());
    let d = &r.domains[0];
    assert_eq!(d.verdict, Verdict::Verified);
    assert_eq!(d.uncharged.policy, 1);
    assert_eq!(d.uncharged.unexpected, 1);
    assert_eq!(d.uncharged.first_unexpected_index, Some(3));
    assert!(r.to_string().contains("UNEXPECTED"));
}

// A task in the root cgroup is never charged: kernel policy, not a defect.
#[test]
fn uncharged_map_table_in_the_root_cgroup_is_policy() {
    let mut s = vtd_stream(D1);
    s[3] = pt(D1, 1, true, 1, false, PtCause::Map);
    s[3].cgroup_id = 1;
    let r = replay(&s, &ReplayOptions::default());
    let d = &r.domains[0];
    assert_eq!(d.uncharged.policy, 2);
    assert_eq!(d.uncharged.unexpected, 0);
}

// Two domains and two threads interleaved still verify.
#[test]
fn interleaved_domains_verify() {
    let a = vtd_stream(D1);
    let mut b = vtd_stream(D2);
    for e in b.iter_mut() {
        e.tid = 2;
    }
    let mut s = Vec::new();
    for (x, y) in a.into_iter().zip(b) {
        s.push(x);
        s.push(y);
    }
    let r = replay(&s, &ReplayOptions::default());
    assert!(r.all_verified(), "{r}");
    assert_eq!(r.domains.len(), 2);
}

// Pages still held at the end of the capture are reported as never freed.
#[test]
fn alive_domain_reports_held_pages() {
    let mut s = vtd_stream(D1);
    s.truncate(8);
    let r = replay(&s, &ReplayOptions::default());
    let d = &r.domains[0];
    assert!(d.alive_at_end);
    assert_eq!(d.never_freed, 3);
    assert!(r.all_verified());
}

// intel without agaw: unknown levels, reported, never guessed.
#[test]
fn unknown_config_is_unverifiable() {
    let s = vec![alloc_ev(D1, "intel", &[("gaw", 48)], 0x1000, (1 << 48) - 1)];
    let r = replay(&s, &ReplayOptions::default());
    match &r.domains[0].verdict {
        Verdict::Unverifiable(why) => assert!(why.contains("agaw"), "{why}"),
        v => panic!("{v:?}"),
    }
    assert!(!r.all_verified());
    let s = vec![alloc_ev(D1, "amd", &[], 0x1000, 0)];
    let r = replay(&s, &ReplayOptions::default());
    assert!(matches!(&r.domains[0].verdict, Verdict::Unverifiable(w) if w.contains("amd")));
}

// Events of a domain allocated before the capture: unverifiable, pages still counted.
#[test]
fn domain_from_before_capture() {
    let s = vec![
        pt(D1, 1, true, 1, true, PtCause::Map),
        op(D1, 1, true, 0, 4096, 4096),
    ];
    let r = replay(&s, &ReplayOptions::default());
    assert!(matches!(r.domains[0].verdict, Verdict::Unverifiable(_)));
    assert_eq!(r.domains[0].observed.allocated, 1);
}

// mock (iommufd selftest): no page tables, ever.
#[test]
fn mock_has_no_tables() {
    let s = vec![
        alloc_ev(D1, "mock", &[], 0x1000, u64::MAX),
        op(D1, 1, true, 0, M2, M2),
        op(D1, 1, false, 0, M2, M2),
        free_ev(D1),
    ];
    assert!(replay(&s, &ReplayOptions::default()).all_verified());
    let mut s = s;
    s.insert(1, pt(D1, 1, true, 1, true, PtCause::Map));
    let r = replay(&s, &ReplayOptions::default());
    assert_eq!(r.domains[0].divergence.as_ref().unwrap().event_index, 2);
}

// Lost events make the capture unverifiable as a whole.
#[test]
fn lost_events_fail_verification() {
    let mut s = vtd_stream(D1);
    s.push(ev(
        0,
        EventBody::Lost(Lost {
            ringbuf_full: 3,
            context_full: 0,
        }),
    ));
    let r = replay(&s, &ReplayOptions::default());
    assert!(!r.all_verified());
    assert_eq!(r.lost_events, 3);
}

fn smmu(domain: u64) -> Event {
    alloc_ev(
        domain,
        "arm-smmu-v3",
        &[("stage", 1), ("ias", 48), ("oas", 48), ("granule", 4096)],
        0x4000_1000 | 0x20_0000,
        (1 << 48) - 1,
    )
}

// io-pgtable-arm 6.12: a 4K unmap inside a 2M block splits it with a GFP_ATOMIC table
// (uncharged by policy); under the 7.x rules the same stream diverges (0 bytes unmapped).
#[test]
fn smmu_split_block_6_12_vs_7() {
    let s = vec![
        smmu(D1),
        pt(D1, 1, true, 1, false, PtCause::Alloc),
        pt(D1, 1, true, 2, true, PtCause::Map),
        op(D1, 1, true, M2, M2, M2),
        pt(D1, 1, true, 1, false, PtCause::Unmap),
        op(D1, 1, false, M2, 4096, 4096),
        pt(D1, 1, false, 4, false, PtCause::Free),
        free_ev(D1),
    ];
    let r = replay(&s, &ReplayOptions::default());
    assert!(r.all_verified(), "{r}");
    assert_eq!(r.domains[0].uncharged.policy, 2);
    assert_eq!(r.domains[0].uncharged.unexpected, 0);
    let opts = ReplayOptions {
        behaviour: KernelBehaviour {
            smmu: SmmuBehaviour::V7,
            ..Default::default()
        },
        ..Default::default()
    };
    let r = replay(&s, &opts);
    assert_eq!(r.domains[0].divergence.as_ref().unwrap().event_index, 5);
}

// --what-if: the same maps under 4/5 levels and superpages on/off.
#[test]
fn what_if_rows() {
    let opts = ReplayOptions {
        what_if: true,
        ..Default::default()
    };
    let r = replay(vtd_stream(D1), &opts);
    let w = &r.what_if[0];
    assert_eq!(w.rows.iter().filter(|x| x.actual).count(), 1);
    let actual = w.rows.iter().find(|x| x.actual).unwrap();
    assert_eq!(actual.peak_pages, 4);
    // 5 levels, 4K only: [0, 4M) of 4K pages needs pgd + 3 + 2 level-1 tables.
    let five_4k = w
        .rows
        .iter()
        .find(|x| x.format.contains("5-level") && x.format.contains("4K only"))
        .unwrap();
    assert_eq!(five_4k.peak_pages, 6);
    assert!(r.to_string().contains("what if"));
}

#[test]
fn report_serializes() {
    let mut s = vtd_stream(D1);
    s.remove(6);
    let r = replay(&s, &ReplayOptions::default());
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["domains"][0]["verdict"], "diverged");
    assert_eq!(j["domains"][0]["divergence"]["event_index"], 6);
}

#[test]
fn progress_is_reported() {
    let mut calls = Vec::new();
    replay_with_progress(vtd_stream(D1), &ReplayOptions::default(), |n| calls.push(n));
    assert_eq!(calls.last(), Some(&10));
}

// What the probe records on a real SMMUv3 (6.12, QEMU virt): the raw enum
// arm_smmu_domain_stage (S1 = 0, S2 = 1), ias from the aperture, the granule from the
// page-size bitmap. Stage 1 and stage 2 get different models; SVA (2) is refused.
#[test]
fn smmu_stage_from_the_drivers_enum() {
    use crate::model::{ModelConfig, ModelSelect};
    let cfg = |raw: u64| {
        let EventBody::DomainAlloc(a) = alloc_ev(
            D1,
            "arm-smmu-v3",
            &[("domain_stage", raw)],
            0x4000_1000 | 0x20_0000,
            (1 << 48) - 1,
        )
        .body
        else {
            unreachable!()
        };
        ModelConfig::from_alloc(&a, ModelSelect::Auto, KernelBehaviour::default())
    };
    match (cfg(0), cfg(1)) {
        (Ok(ModelConfig::Lpae(s1)), Ok(ModelConfig::Lpae(s2))) => {
            assert_eq!((s1.stage, s1.ias, s1.granule), (1, 48, 4096));
            assert_eq!(s2.stage, 2);
        }
        other => panic!("{other:?}"),
    }
    assert!(cfg(2).is_err());
}

// An AMD domain of 6.12 (io-pgtable v1: pd_mode 1, a 3-level table at allocation), page
// counts by hand from amd/io_pgtable.c: the root (GFP_KERNEL), a 4K map at 2^39 grows the
// top (a charged root) and fills the path (3 tables), the unmap frees nothing, the free
// frees all 5. 7.x's generic-page-table AMDv1 (top level 2 in `top_of_table`) counts the
// same for this stream (increase_top, then the path); its v2 domains are not modelled.
#[test]
fn amd_v1_and_7x_amdv1_domains_verify() {
    const PGSIZES: u64 = crate::model::amd_v1::AMD_IOMMU_PGSIZES;
    let amd = |fields: &[(&str, u64)]| alloc_ev(D1, "amd", fields, PGSIZES, u64::MAX);
    let stream = |fields: &[(&str, u64)]| {
        vec![
            amd(fields),
            pt(D1, 1, true, 1, false, PtCause::Alloc),
            pt(D1, 1, true, 4, true, PtCause::Map),
            op(D1, 1, true, 1 << 39, 0x1000, 0x1000),
            op(D1, 1, false, 1 << 39, 0x1000, 0x1000),
            pt(D1, 1, false, 5, false, PtCause::Free),
            free_ev(D1),
        ]
    };
    let v1: &[(&str, u64)] = &[("pd_mode", 1), ("mode", 3)];
    let amdv1: &[(&str, u64)] = &[
        ("pd_mode", 1),
        ("top_of_table", 0xffff_8880_0000_0002),
        ("max_vasz_lg2", 64),
    ];
    for fields in [v1, amdv1] {
        let r = replay(stream(fields), &ReplayOptions::default());
        assert!(r.all_verified(), "{r}");
        // Had the unmap freed a table (its 4K range covers none), the model says otherwise.
        let mut freed = stream(fields);
        freed.insert(5, pt(D1, 1, false, 1, false, PtCause::Unmap));
        let r = replay(freed, &ReplayOptions::default());
        assert_eq!(r.domains[0].verdict, Verdict::Diverged, "{r}");
    }
    let r = replay(
        vec![amd(&[
            ("pd_mode", 2),
            ("top_of_table", 0xffff_8880_0000_0003),
        ])],
        &ReplayOptions::default(),
    );
    assert!(r.to_string().contains("amd with page-table mode 2"), "{r}");
}

// A 7.x AMD domain whose recorded fields make no AMDv1 table is unverifiable, saying why:
// a top level past 5, a VA width out of range, page sizes below 4K, no `max_vasz_lg2` and
// no aperture, no `pd_mode`.
#[test]
fn impossible_amdv1_fields_are_named() {
    const PGSIZES: u64 = crate::model::amd_v1::AMD_IOMMU_PGSIZES;
    let top = |level: u64| ("top_of_table", 0xffff_8880_0000_0000 | level);
    for (fields, pgsizes, aperture_end, want) in [
        (
            vec![("pd_mode", 1), top(6), ("max_vasz_lg2", 64)],
            PGSIZES,
            u64::MAX,
            "top level 6",
        ),
        (
            vec![("pd_mode", 1), top(2), ("max_vasz_lg2", 12)],
            PGSIZES,
            u64::MAX,
            "max_vasz_lg2 12",
        ),
        (
            vec![("pd_mode", 1), top(2), ("max_vasz_lg2", 64)],
            0x800,
            u64::MAX,
            "page sizes 0x800",
        ),
        (vec![("pd_mode", 1), top(2)], PGSIZES, 0, "max_vasz_lg2"),
        (
            vec![top(2), ("max_vasz_lg2", 64)],
            PGSIZES,
            u64::MAX,
            "pd_mode",
        ),
    ] {
        let r = replay(
            vec![alloc_ev(D1, "amd", &fields, pgsizes, aperture_end)],
            &ReplayOptions::default(),
        );
        let text = r.to_string();
        assert!(
            matches!(r.domains[0].verdict, Verdict::Unverifiable(_)) && text.contains(want),
            "{want}: {text}"
        );
    }
}

// Where the capture records page-table growth (`pt_grow`), a growing model must grow at the
// same map to the same levels: 6.12's v1 grows one level per event (3 -> 4 for a map at
// 2^39), 7.x's AMDv1 once per map to its final level (3 -> 5 for a map at 2^48). A missing,
// extra or different pt_grow diverges at that map; a capture without the point is not
// checked for it.
#[test]
fn growth_events_are_checked_against_the_model() {
    const PGSIZES: u64 = crate::model::amd_v1::AMD_IOMMU_PGSIZES;
    let grow = |levels| {
        ev(
            1,
            EventBody::PtGrow(PtGrow {
                domain: KernelPtr(D1),
                levels,
            }),
        )
    };
    type Fields = &'static [(&'static str, u64)];
    let v1: Fields = &[("pd_mode", 1), ("mode", 3)];
    let amdv1: Fields = &[
        ("pd_mode", 1),
        ("top_of_table", 0xffff_8880_0000_0002),
        ("max_vasz_lg2", 64),
    ];
    // (fields, map iova, pages its map allocates, the pt_grow events before it)
    let cases: [(Fields, u64, u64, Vec<u32>); 3] = [
        (v1, 1 << 39, 4, vec![4]),
        (v1, 1 << 48, 6, vec![4, 5]),
        (amdv1, 1 << 48, 6, vec![5]),
    ];
    let checked = ReplayOptions {
        top_growth: true,
        ..ReplayOptions::default()
    };
    for (fields, iova, pages, grows) in cases {
        let stream = |grows: &[u32]| {
            let mut s = vec![
                alloc_ev(D1, "amd", fields, PGSIZES, u64::MAX),
                pt(D1, 1, true, 1, false, PtCause::Alloc),
                pt(D1, 1, true, pages, true, PtCause::Map),
            ];
            s.extend(grows.iter().map(|&l| grow(l)));
            s.push(op(D1, 1, true, iova, 0x1000, 0x1000));
            s
        };
        let r = replay(stream(&grows), &checked);
        assert!(r.all_verified(), "{grows:?}: {r}");
        assert_eq!(r.domains[0].top_levels, grows.last().copied());
        for wrong in [&[][..], &[6][..], &[4, 5, 6][..]] {
            let r = replay(stream(wrong), &checked);
            assert_eq!(r.domains[0].verdict, Verdict::Diverged, "{wrong:?}: {r}");
            assert!(r.to_string().contains("pt_grow"), "{r}");
        }
        // Not recorded: not compared.
        let r = replay(stream(&[]), &ReplayOptions::default());
        assert!(r.all_verified(), "{r}");
    }
}

// Loss counts come from the capture: ones that sum past 2^64 still say "lost", and neither
// the replay nor its text overflows (a panic with overflow checks, a silent 0 without).
#[test]
fn loss_counts_at_the_edge_neither_wrap_nor_panic() {
    let mut events = vtd_stream(0xd);
    events.insert(
        1,
        ev(
            1,
            EventBody::Lost(crate::events::Lost {
                ringbuf_full: u64::MAX,
                context_full: 1,
            }),
        ),
    );
    let r = replay(&events, &ReplayOptions::default());
    assert_eq!((r.lost_events, r.lost_contexts), (u64::MAX, 1));
    assert_eq!(r.outcome(), Outcome::Incomplete);
    let text = r.to_string();
    assert!(text.contains("lost"), "{text}");
}

// ---- the iommufd object graph --------------------------------------------------------

const ICTX: u64 = 0xffff_8880_1000_0000;

fn object(object: &str, id: u32, obj: u64, domain: Option<u64>) -> Event {
    ev(
        1,
        EventBody::ObjectAlloc(crate::events::ObjectAlloc {
            object: object.into(),
            id,
            obj: KernelPtr(obj),
            ictx: KernelPtr(ICTX),
            refs: Default::default(),
            domain: domain.map(KernelPtr),
            virt_id: None,
            size: 64,
            errno: 0,
            latency_ns: 0,
        }),
    )
}

fn destroyed(object: &str, id: u32, obj: u64, how: crate::events::DestroyHow) -> Event {
    ev(
        1,
        EventBody::ObjectDestroy(crate::events::ObjectDestroy {
            object: object.into(),
            id,
            obj: KernelPtr(obj),
            how,
        }),
    )
}

fn graph(events: &[Event]) -> (Report, ObjectsReport) {
    let r = replay(events, &ReplayOptions::default());
    let o = r
        .objects
        .clone()
        .expect("object events give an object report");
    (r, o)
}

#[test]
fn a_consistent_object_graph_verifies_and_names_the_hwpt_of_a_domain() {
    use crate::events::DestroyHow::*;
    let events = [
        object("ioas", 1, 0xa000, None),
        intel(D1),
        pt(D1, 1, true, 1, false, PtCause::Alloc),
        object("hwpt_paging", 2, 0xb000, Some(D1)),
        destroyed("hwpt_paging", 2, 0xb000, Destroy),
        pt(D1, 1, false, 1, false, PtCause::Free),
        free_ev(D1),
        // The id is free again: reusing it is fine.
        object("hwpt_paging", 2, 0xc000, None),
        destroyed("hwpt_paging", 2, 0xc000, Close),
        destroyed("ioas", 1, 0xa000, Close),
    ];
    let (r, o) = graph(&events);
    assert!(o.findings.is_empty(), "{r}");
    assert!(r.all_verified(), "{r}");
    assert_eq!(r.domains[0].hwpt, Some(2));
    assert_eq!(o.created["hwpt_paging"], 2);
    assert!(o.alive_at_end.is_empty());
    let text = r.to_string();
    assert!(text.contains("(intel, paging, hwpt 2)"), "{text}");
    assert!(text.contains("iommufd objects: consistent"), "{text}");
    // No object events: no object report, as for captures older than format 3.
    assert!(replay(&[intel(D1)], &ReplayOptions::default())
        .objects
        .is_none());
}

#[test]
fn each_broken_object_invariant_is_reported_at_its_event() {
    use crate::events::DestroyHow::*;
    // An id published again while its object lives.
    let (r, o) = graph(&[
        object("ioas", 1, 0xa000, None),
        object("ioas", 1, 0xa100, None),
    ]);
    assert_eq!(o.findings[0].event_index, 1, "{r}");
    assert!(o.findings[0].what.contains("still names the ioas"), "{r}");
    assert_eq!(r.outcome(), Outcome::Diverged);
    assert!(r.to_string().contains("object graph broken"), "{r}");

    // A HWPT's domain freed while the HWPT lives.
    let (r, o) = graph(&[
        intel(D1),
        object("hwpt_paging", 2, 0xb000, Some(D1)),
        free_ev(D1),
    ]);
    assert_eq!(o.findings[0].event_index, 2, "{r}");
    assert!(o.findings[0].what.contains("still holds it"), "{r}");

    // A HWPT destroyed, its domain never freed.
    let (r, o) = graph(&[
        intel(D1),
        object("hwpt_paging", 2, 0xb000, Some(D1)),
        destroyed("hwpt_paging", 2, 0xb000, Destroy),
    ]);
    assert_eq!(o.findings[0].event_index, 2, "{r}");
    assert!(o.findings[0].what.contains("never freed"), "{r}");

    // An object that outlives the close of its iommufd; one created before the capture
    // is only counted.
    let (r, o) = graph(&[
        object("ioas", 1, 0xa000, None),
        object("ioas", 2, 0xa100, None),
        destroyed("ioas", 1, 0xa000, Close),
        destroyed("device", 7, 0xd000, Unbind),
    ]);
    assert_eq!(o.findings.len(), 1, "{r}");
    assert!(o.findings[0].what.contains("outlived the close"), "{r}");
    assert_eq!(o.created_before_capture, 1);
    assert_eq!(o.alive_at_end["ioas"], 1);

    // An object probe point that recorded nothing: not checked, not failed.
    let mut o = o;
    o.set_unchecked("probe point object_destroy recorded nothing".into());
    assert!(o.findings.is_empty() && o.unchecked.is_some());
}

// Real kernels reuse pointers: a context after a close, a domain after its free. And a
// domain whose allocation was not traced has no traced free to wait for.
#[test]
fn reused_pointers_and_untraced_domains_are_no_findings() {
    use crate::events::DestroyHow::*;
    let (r, o) = graph(&[
        object("ioas", 1, 0xa000, None),
        destroyed("ioas", 1, 0xa000, Close),
        // The next open gets the same context pointer and starts at id 1 again.
        object("ioas", 1, 0xa000, None),
        // A nested HWPT whose domain came from an op the tracer does not see.
        object("hwpt_nested", 2, 0xb000, Some(D2)),
        destroyed("hwpt_nested", 2, 0xb000, Destroy),
    ]);
    assert!(o.findings.is_empty(), "{r}");
    assert_eq!(o.alive_at_end["ioas"], 1);

    // A second destroy of the same object is a finding; the HWPT id follows the domain's
    // lifetime, not its pointer.
    let (r, o) = graph(&[
        intel(D1),
        pt(D1, 1, true, 1, false, PtCause::Alloc),
        object("hwpt_paging", 2, 0xb000, Some(D1)),
        destroyed("hwpt_paging", 2, 0xb000, Destroy),
        pt(D1, 1, false, 1, false, PtCause::Free),
        free_ev(D1),
        destroyed("hwpt_paging", 2, 0xb000, Destroy),
        intel(D1),
        pt(D1, 1, true, 1, false, PtCause::Alloc),
    ]);
    assert_eq!(o.findings.len(), 1, "{r}");
    assert_eq!(o.findings[0].event_index, 6, "{r}");
    assert!(o.findings[0].what.contains("a second time"), "{r}");
    assert_eq!(r.domains[0].hwpt, Some(2));
    assert_eq!(r.domains[1].hwpt, None, "{r}");
}

// ---- pinned-page accounting (pins.rs) ----------------------------------------------

const P1: u64 = 0xffff_8880_0010_0000;

/// An accounting call on `P1` (4 KiB pages, per-user, uid 107, a 16-page limit).
fn pin_ev(pages: i64, pinned_after: u64, locked_after_pages: u64, errno: i32) -> Event {
    ev(
        1,
        crate::state::tests::pin(P1, 1, pages, pinned_after, locked_after_pages, errno),
    )
}

fn pins_of(events: &[Event]) -> PinsReport {
    replay(events, &ReplayOptions::default())
        .pins
        .expect("pin events")
}

#[test]
fn pins_follow_charges_refusals_and_unpins() {
    let r = pins_of(&[
        pin_ev(4, 4, 10, 0),
        // Refused: 10 locked + 8 > 16; the 8 just pinned show, the charge stays at 4.
        pin_ev(4, 8, 14, 12),
        // The caller unpinned them without a call; 2 more pinned and charged: 4 + 2.
        pin_ev(2, 6, 16, 0),
        pin_ev(-6, 0, 10, 0),
    ]);
    assert!(r.findings.is_empty(), "{r:?}");
    assert_eq!((r.calls, r.iopt_pages, r.adopted), (4, 1, 0));
    assert_eq!((r.refused, r.refusals_predicted), (1, 1));
    assert_eq!(r.pinned_at_end.get("user"), None);
}

#[test]
fn a_missing_unpin_shows_at_the_next_call() {
    let r = pins_of(&[pin_ev(4, 4, 4, 0), pin_ev(2, 2, 6, 0), pin_ev(-2, 0, 4, 0)]);
    assert_eq!(r.findings.len(), 1, "{r:?}");
    assert_eq!(r.findings[0].event_index, 1);
    assert!(
        r.findings[0].what.contains("expected 6 (4 charged before"),
        "{}",
        r.findings[0].what
    );
    // The model takes the kernel's figure and goes on: the unpin after it is consistent.
}

#[test]
fn change_process_moves_a_charge_without_unpinning() {
    use crate::events::PinMode;
    let mut tmp = pin_ev(4, 0, 8, 0);
    if let EventBody::Pin(p) = &mut tmp.body {
        // charge_current's stack iopt_pages: size 0, another address.
        p.iopt_pages = KernelPtr(0xffff_c900_0001_0000);
        p.total_pages = 0;
        p.mode = PinMode::User;
    }
    let r = pins_of(&[
        pin_ev(4, 4, 4, 0),
        tmp,
        pin_ev(-4, 4, 4, 0),
        pin_ev(-4, 0, 0, 0),
    ]);
    assert!(r.findings.is_empty(), "{r:?}");
    assert_eq!(r.iopt_pages, 1, "the stack temporary is not a mapping's");
}

#[test]
fn a_limit_decision_the_totals_contradict_is_a_finding() {
    // Refused though 4 locked + 4 <= 16; accepted though 20 locked after it (16 + 4 > 16).
    let r = pins_of(&[pin_ev(4, 4, 4, 12), pin_ev(4, 4, 20, 0)]);
    let what: Vec<&str> = r.findings.iter().map(|f| f.what.as_str()).collect();
    assert_eq!(r.findings.len(), 2, "{what:?}");
    assert!(
        what[0].contains("refused, but 4 locked + 4 is within"),
        "{what:?}"
    );
    assert!(
        what[1].contains("accepted, but 16 locked + 4 exceeds"),
        "{what:?}"
    );
    assert_eq!((r.refused, r.refusals_predicted), (1, 0));
}

#[test]
fn pins_made_before_the_capture_are_adopted_and_loss_starts_over() {
    let r = pins_of(&[
        // 3 pinned before the capture: a charge of 2 leaves 5.
        pin_ev(2, 5, 5, 0),
        ev(
            0,
            EventBody::Lost(Lost {
                ringbuf_full: 1,
                context_full: 0,
            }),
        ),
        // After the loss the model does not know what was missed: this is adopted anew.
        pin_ev(1, 7, 7, 0),
    ]);
    assert!(r.findings.is_empty(), "{r:?}");
    assert_eq!(r.adopted, 2);
    assert_eq!(r.pinned_at_end.get("user"), Some(&7));
}

// A per-mm uncharge that fails (the creator's mm gone) unpins but leaves the charge; the
// freed `iopt_pages`' address then holds a new one starting from 0: no finding.
#[test]
fn a_failed_uncharge_to_nothing_forgets_the_pages() {
    let r = pins_of(&[pin_ev(4, 4, 4, 0), pin_ev(-4, 0, 4, 22), pin_ev(2, 2, 6, 0)]);
    assert!(r.findings.is_empty(), "{r:?}");
    assert_eq!(r.iopt_pages, 2, "the address held two iopt_pages");
}

// A limit decision the totals contradict on a target two creators charge is a note: the
// total is read after the call, and the other's calls can move it in between.
#[test]
fn a_contradicted_limit_on_a_shared_target_is_a_note() {
    let mut other = pin_ev(2, 2, 6, 0);
    if let EventBody::Pin(p) = &mut other.body {
        (p.target_pid, p.iopt_pages) = (2, KernelPtr(P1 + 0x1000));
    }
    let r = pins_of(&[other, pin_ev(4, 4, 4, 12)]);
    assert!(r.findings.is_empty(), "{r:?}");
    assert_eq!(r.notes.len(), 1, "{r:?}");
    assert!(r.notes[0]
        .what
        .contains("refused, but 4 locked + 4 is within"));
}
