//! The exposition of a small synthetic stream, line by line; the HTTP server end to end.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http::{Server, ServerContext};
use super::*;

fn meta() -> ExporterInfo {
    ExporterInfo {
        source: "capture".into(),
        kernel_release: "6.12.0-test".into(),
        probes: vec![
            ProbeStatus {
                point: "map".into(),
                symbol: "iommu_map".into(),
                program_type: Some(crate::session::ProgramKind::FentryFexit),
                attached: true,
            },
            ProbeStatus {
                point: "pt_pages".into(),
                symbol: String::new(),
                program_type: None,
                attached: false,
            },
        ],
        bpf_programs: vec![BpfProgramStats {
            program: "iommu_map_exit".into(),
            run_time_ns: 1_500_000_000,
            run_count: 42,
        }],
        replay: Some(ReplaySummary {
            domains_by_verdict: vec![("verified".into(), 2), ("diverged".into(), 0)],
            unexpected_uncharged_pages: 0,
        }),
    }
}

fn exposition(top: usize) -> String {
    let s = crate::state::tests::synthetic_state();
    let opts = ExportOptions {
        top_cgroups: top,
        cgroups: Box::new(CgroupIds),
    };
    render(&s, &meta(), &opts, false)
}

/// Every series of the synthetic stream (histogram buckets aside), with its exact value.
const EXPECTED: &str = r#"
iommu_trace_build_info{version="0.1.0",kernel_release="6.12.0-test",source="capture"} 1
iommu_trace_domain_allocations_total{driver="intel",kind="paging",flags="NEST_PARENT|DIRTY_TRACKING",result="EOPNOTSUPP"} 1
iommu_trace_domain_allocations_total{driver="intel",kind="paging",flags="none",result="OK"} 1
iommu_trace_domain_allocations_total{driver="mock",kind="nested",flags="OTHER",result="OK"} 1
iommu_trace_domain_allocation_duration_seconds_sum{driver="intel",kind="paging"} 0.000032
iommu_trace_domain_allocation_duration_seconds_count{driver="intel",kind="paging"} 2
iommu_trace_domain_allocation_duration_seconds_bucket{driver="intel",kind="paging",le="0.0000025"} 1
iommu_trace_domain_allocation_duration_seconds_bucket{driver="intel",kind="paging",le="0.000025"} 1
iommu_trace_domain_allocation_duration_seconds_bucket{driver="intel",kind="paging",le="0.00005"} 2
iommu_trace_domain_allocation_duration_seconds_bucket{driver="intel",kind="paging",le="+Inf"} 2
iommu_trace_domain_allocation_duration_seconds_count{driver="mock",kind="nested"} 1
iommu_trace_domain_frees_total{driver="intel",kind="paging"} 1
iommu_trace_domain_free_duration_seconds_sum{driver="intel"} 0.000012
iommu_trace_domains{driver="intel",kind="paging"} 0
iommu_trace_domains{driver="mock",kind="nested"} 1
iommu_trace_domains{driver="unknown",kind="other"} 1
iommu_trace_hwpt_allocations_total{result="EOPNOTSUPP"} 1
iommu_trace_hwpt_allocations_total{result="OK"} 1
iommu_trace_hwpt_allocation_duration_seconds_count 2
iommu_trace_map_operations_total{driver="intel",op="map",result="OK"} 2
iommu_trace_map_operations_total{driver="intel",op="unmap",result="OK"} 1
iommu_trace_map_operations_total{driver="unknown",op="map",result="EINVAL"} 1
iommu_trace_map_operations_total{driver="unknown",op="map",result="OK"} 1
iommu_trace_map_bytes_total{driver="intel",op="map"} 2101248
iommu_trace_map_bytes_total{driver="intel",op="unmap"} 4096
iommu_trace_map_bytes_total{driver="unknown",op="map"} 8192
iommu_trace_map_duration_seconds_count{driver="intel",op="map"} 2
iommu_trace_mapped_bytes{driver="intel"} 0
iommu_trace_mapped_bytes{driver="mock"} 0
iommu_trace_mapped_bytes{driver="unknown"} 8192
iommu_trace_page_table_pages{driver="intel",charged="false"} 0
iommu_trace_page_table_pages{driver="intel",charged="true"} 0
iommu_trace_page_table_pages{driver="mock",charged="false"} 1
iommu_trace_page_table_pages{driver="mock",charged="true"} 0
iommu_trace_page_table_pages_allocated_total{driver="intel",cause="alloc",charged="false"} 1
iommu_trace_page_table_pages_allocated_total{driver="intel",cause="map",charged="true"} 2
iommu_trace_page_table_pages_allocated_total{driver="mock",cause="alloc",charged="false"} 1
iommu_trace_page_table_pages_freed_total{driver="intel",cause="unmap",charged="true"} 1
iommu_trace_page_table_pages_freed_total{driver="intel",cause="free",charged="true"} 1
iommu_trace_page_table_pages_orphaned_total{driver="intel"} 1
iommu_trace_page_table_pages_orphaned_total{driver="mock"} 0
iommu_trace_cgroup_page_table_pages{cgroup="60",charged="false"} 1
iommu_trace_cgroup_page_table_pages{cgroup="other",charged="false"} 0
iommu_trace_cgroup_domains{cgroup="60"} 1
iommu_trace_cgroup_domains{cgroup="other"} 1
iommu_trace_untracked_domains_total 1
iommu_trace_replay_domains{verdict="diverged"} 0
iommu_trace_replay_domains{verdict="verified"} 2
iommu_trace_replay_unexpected_uncharged_pages 0
iommu_trace_events_total{event="domain_alloc"} 3
iommu_trace_events_total{event="map"} 4
iommu_trace_events_total{event="pt_free"} 2
iommu_trace_events_lost_total{reason="context_full"} 1
iommu_trace_events_lost_total{reason="ringbuf_full"} 3
iommu_trace_decode_errors_total 0
iommu_trace_probe_attached{point="map",symbol="iommu_map",program_type="fentry+fexit"} 1
iommu_trace_probe_attached{point="pt_pages",symbol="",program_type=""} 0
iommu_trace_bpf_program_run_seconds_total{program="iommu_map_exit"} 1.5
iommu_trace_bpf_program_runs_total{program="iommu_map_exit"} 42
"#;

#[test]
fn exposition_has_the_exact_values_of_the_stream() {
    let text = exposition(1);
    let lines: Vec<&str> = text.lines().collect();
    for want in EXPECTED.lines().filter(|l| !l.is_empty()) {
        assert!(lines.contains(&want), "missing line\n  {want}\nin\n{text}");
    }
    // With one cgroup slot, cgroup 70 goes to "other"; with ten it has its own series.
    assert!(!text.contains("cgroup=\"70\""), "{text}");
    assert!(exposition(10).contains("iommu_trace_cgroup_domains{cgroup=\"70\"} 1"));
}

#[test]
fn labels_are_bounded() {
    let text = exposition(10);
    for forbidden in ["pid", "tid", "comm", "domain=", "0xffff"] {
        assert!(
            !text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .any(|l| l.contains(forbidden)),
            "{forbidden} appears in a series:\n{text}"
        );
    }
    // Every flag value a user can pass maps to at most 32 label values.
    let mut values: Vec<String> = (0..4096u32)
        .chain([u32::MAX, 1 << 31, 0x8000_0001])
        .map(super::metrics::flags_label)
        .collect();
    values.sort();
    values.dedup();
    assert!(values.len() <= 32, "{values:?}");
}

#[test]
fn every_metric_definition_is_valid_and_used_once() {
    let mut names: Vec<&str> = METRICS.iter().map(|d| d.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), METRICS.len(), "duplicate metric names");
    for d in METRICS {
        prometheus::core::Desc::new(
            d.name.to_string(),
            d.help.to_string(),
            d.labels.iter().map(|l| l.to_string()).collect(),
            Default::default(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", d.name));
        let counter = d.kind == prometheus::proto::MetricType::COUNTER;
        assert_eq!(
            counter,
            d.name.ends_with("_total"),
            "{}: counters end in _total",
            d.name
        );
    }
}

fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let (head, body) = resp.split_once("\r\n\r\n").expect("a full response");
    (head.to_string(), body.to_string())
}

#[test]
fn http_serves_metrics_and_health_and_survives_bad_clients() {
    let shared = Exported::new(meta());
    {
        let mut st = shared.state.lock().unwrap();
        for e in crate::state::tests::synthetic_stream() {
            st.apply(&e);
        }
    }
    let ctx = Arc::new(ServerContext::new(
        shared.clone(),
        ExportOptions::default(),
        Arc::new(AtomicBool::new(true)),
    ));
    let server = Server::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let handle = server.spawn(ctx.clone()).expect("spawn");
    let addr = handle.addr;

    // A client that connects and never finishes its request, and one that goes away.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    drop(TcpStream::connect(addr).unwrap());

    let (head, body) = get(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        body.contains("iommu_trace_domains{driver=\"mock\",kind=\"nested\"} 1"),
        "{body}"
    );
    assert!(body.contains("process_resident_memory_bytes"), "{body}");

    // Ingestion goes on while a scrape's client is slow: the state lock is free.
    shared.state.lock().unwrap().note_decode_errors(1);
    let (_, body) = get(addr, "/metrics");
    assert!(body.contains("iommu_trace_decode_errors_total 1"), "{body}");

    let (head, body) = get(addr, "/healthz");
    assert!(
        head.starts_with("HTTP/1.1 200") && body == "ok\n",
        "{head}{body}"
    );
    ctx.healthy
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let (head, _) = get(addr, "/healthz");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    let (head, _) = get(addr, "/nope");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert_eq!(ctx.scrapes.load(std::sync::atomic::Ordering::Relaxed), 2);

    // Shutdown does not wait for the stalled client beyond the grace period.
    let t = Instant::now();
    handle.shutdown();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t.elapsed()
    );
    stalled.write_all(b"\r\n").ok();
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after shutdown"
    );
}

// The object families over a small stream: live objects per type and cgroup (top N, the
// rest in `other`, kept at 0 for a type whose objects are gone), creations and aborts by
// result, destructions by path, lifetimes; a type a capture invents is `unknown`.
#[test]
fn object_families_have_the_exact_values() {
    use crate::events::{
        DestroyHow, EventBody, KernelPtr, ObjectAbort, ObjectAlloc, ObjectDestroy,
    };
    use crate::state::tests::ev;
    let alloc = |object: &str, id: u32, errno: i32| {
        EventBody::ObjectAlloc(ObjectAlloc {
            object: object.into(),
            id,
            obj: KernelPtr(0x1000 * id as u64),
            ictx: KernelPtr(1),
            refs: Default::default(),
            domain: None,
            virt_id: None,
            size: 64,
            errno,
            latency_ns: 10,
        })
    };
    let mut s = crate::state::State::new();
    s.apply(&ev(1_000, 7, 60, alloc("ioas", 1, 0)));
    s.apply(&ev(2_000, 7, 60, alloc("viommu", 2, 0)));
    s.apply(&ev(3_000, 8, 70, alloc("viommu", 3, 0)));
    s.apply(&ev(4_000, 8, 70, alloc("hwpt_paging", 0, 12)));
    s.apply(&ev(5_000, 8, 70, alloc("made-up", 4, 0)));
    s.apply(&ev(
        6_000,
        8,
        70,
        EventBody::ObjectAbort(ObjectAbort {
            object: "hwpt_nested".into(),
            id: 5,
            obj: KernelPtr(0x5000),
            ictx: KernelPtr(1),
            size: 64,
            errno: None,
        }),
    ));
    s.apply(&ev(
        2_001_000_000,
        7,
        60,
        EventBody::ObjectDestroy(ObjectDestroy {
            object: "ioas".into(),
            id: 1,
            obj: KernelPtr(0x1000),
            how: DestroyHow::Close,
        }),
    ));
    let opts = ExportOptions {
        top_cgroups: 1,
        cgroups: Box::new(CgroupIds),
    };
    let text = render(&s, &meta(), &opts, false);
    for want in [
        r#"iommu_trace_iommufd_objects{object="unknown",cgroup="70"} 1"#,
        r#"iommu_trace_iommufd_objects{object="viommu",cgroup="70"} 1"#,
        r#"iommu_trace_iommufd_objects{object="viommu",cgroup="other"} 1"#,
        r#"iommu_trace_iommufd_objects{object="ioas",cgroup="other"} 0"#,
        r#"iommu_trace_iommufd_object_creations_total{object="viommu",result="OK"} 2"#,
        r#"iommu_trace_iommufd_object_creations_total{object="hwpt_paging",result="ENOMEM"} 1"#,
        r#"iommu_trace_iommufd_object_aborts_total{object="hwpt_nested",result="unknown"} 1"#,
        r#"iommu_trace_iommufd_object_destructions_total{object="ioas",how="close"} 1"#,
        r#"iommu_trace_iommufd_object_lifetime_seconds_count{object="ioas"} 1"#,
        r#"iommu_trace_iommufd_object_lifetime_seconds_bucket{object="ioas",le="1"} 0"#,
        r#"iommu_trace_iommufd_object_lifetime_seconds_bucket{object="ioas",le="10"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing\n  {want}\nin\n{text}"
        );
    }
    assert!(!text.contains("made-up"), "{text}");
}

// A crafted capture can name any driver and any errno, and set any flag bit: the label
// sets stay the known names plus one catch-all, and keys that fold into one label set are
// summed into one series, never repeated (Prometheus rejects duplicates).
#[test]
fn labels_stay_bounded_whatever_the_capture_names() {
    use crate::events::{DomainKind, KernelPtr};
    use crate::state::tests::{alloc, ev};
    let mut s = crate::state::State::new();
    for i in 0..2000u32 {
        let body = alloc(
            &format!("driver{i}"),
            DomainKind::Paging,
            1 << (8 + i % 20),
            KernelPtr(0),
            1000 + i as i32,
            10,
        );
        s.apply(&ev(1_000 + i as u64, 7, 1, body));
    }
    let text = render(&s, &meta(), &ExportOptions::default(), false);
    let mut series = std::collections::HashSet::new();
    let (mut drivers, mut results) = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let key = line.rsplit_once(' ').map_or(line, |(k, _)| k);
        assert!(series.insert(key.to_string()), "repeated series {key}");
        for (name, set) in [("driver=\"", &mut drivers), ("result=\"", &mut results)] {
            if let Some(rest) = key.split(name).nth(1) {
                set.insert(rest.split('"').next().unwrap().to_string());
            }
        }
    }
    assert!(
        drivers
            .iter()
            .all(|d| d == "other" || crate::events::KNOWN_DRIVERS.contains(&d.as_str())),
        "{drivers:?}"
    );
    assert!(drivers.contains("other"), "{drivers:?}");
    assert!(results.len() <= 3, "{results:?}");
    assert!(results.contains("OTHER"), "{results:?}");
    let line = text
        .lines()
        .find(|l| l.starts_with("iommu_trace_domain_allocations_total{driver=\"other\""))
        .expect("the folded series");
    assert!(line.ends_with(" 2000"), "{line}");
    assert!(text.len() < 64 << 10, "{} bytes", text.len());
}

// 500 clients that open a connection and send half a request (slowloris) do not keep a
// scraper out: every scrape, made while they all hold their sockets, is answered within a
// second, and the connections shed to make room are counted.
#[test]
fn slow_clients_do_not_delay_a_scrape() {
    const SLOW_CLIENTS: usize = 500;
    let ctx = Arc::new(ServerContext::new(
        Exported::new(meta()),
        ExportOptions::default(),
        Arc::new(AtomicBool::new(true)),
    ));
    let handle = Server::bind("127.0.0.1:0".parse().unwrap())
        .expect("bind")
        .spawn(ctx.clone())
        .expect("spawn");
    let addr = handle.addr;

    let scrape_time = || {
        let t = Instant::now();
        let (head, body) = get(addr, "/metrics");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.contains("iommu_trace_build_info"), "{body}");
        t.elapsed()
    };
    let mut slow = Vec::with_capacity(SLOW_CLIENTS);
    let mut worst = Duration::ZERO;
    for i in 0..SLOW_CLIENTS {
        let mut s = TcpStream::connect(addr).expect("connect a slow client");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        slow.push(s);
        if i % 50 == 49 {
            worst = worst.max(scrape_time());
        }
    }
    // Then scrapes for two seconds while all of them hold on.
    let until = Instant::now() + Duration::from_secs(2);
    let mut scrapes = 0;
    while Instant::now() < until {
        worst = worst.max(scrape_time());
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        worst < Duration::from_secs(1),
        "a scrape took {worst:?} with {SLOW_CLIENTS} slow clients"
    );
    assert!(scrapes > 5, "only {scrapes} scrapes in two seconds");
    let shed = ctx
        .connections_shed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(shed > 0, "no connection was shed");
    let (_, body) = get(addr, "/metrics");
    let exported: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("iommu_trace_exporter_connections_shed_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no shed counter in\n{body}"));
    // The last scrape's own connection may have shed one more.
    assert!(
        exported == shed || exported == shed + 1,
        "exported {exported}, counted {shed}"
    );
    eprintln!("{SLOW_CLIENTS} slow clients: {scrapes} scrapes, slowest {worst:?}, {shed} shed");
    drop(slow);
    handle.shutdown();
}

// The pinned-memory families: pinned bytes by the creators' cgroups, the tightest
// target's headroom per cgroup, refusals by cause (every cause present).
#[test]
fn pin_families_have_the_exact_values() {
    use crate::state::tests::{ev, pin};
    let mut s = crate::state::State::new();
    // uid 107 (16-page limit): pid 10 in cgroup 60 pins 4 pages, 6 more locked elsewhere;
    // pid 11 in cgroup 70 pins 2 and is refused 8 more.
    s.apply(&ev(1, 10, 60, pin(0x1000, 10, 4, 4, 10, 0)));
    s.apply(&ev(2, 11, 70, pin(0x2000, 11, 2, 2, 12, 0)));
    s.apply(&ev(3, 11, 70, pin(0x2000, 11, 8, 10, 12, 12)));
    let opts = ExportOptions {
        top_cgroups: 1,
        cgroups: Box::new(CgroupIds),
    };
    let text = render(&s, &meta(), &opts, false);
    for want in [
        r#"iommu_trace_pinned_bytes{cgroup="60"} 16384"#,
        r#"iommu_trace_pinned_bytes{cgroup="other"} 8192"#,
        // Both creators charge uid 107 (12 of pid 10's and pid 11's 16-page limits locked):
        // a quarter left for each cgroup; the tie goes to the lower id, 70 is "other".
        r#"iommu_trace_memlock_headroom_ratio{cgroup="60"} 0.25"#,
        r#"iommu_trace_memlock_locked_bytes{cgroup="60"} 49152"#,
        r#"iommu_trace_memlock_limit_bytes{cgroup="60"} 65536"#,
        r#"iommu_trace_memlock_headroom_ratio{cgroup="other"} 0.25"#,
        r#"iommu_trace_pin_refusals_total{cause="memlock_user"} 1"#,
        r#"iommu_trace_pin_refusals_total{cause="memlock_mm"} 0"#,
        r#"iommu_trace_pin_refusals_total{cause="mm_gone"} 0"#,
        r#"iommu_trace_pin_refusals_total{cause="other"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing\n  {want}\nin\n{text}"
        );
    }
}
