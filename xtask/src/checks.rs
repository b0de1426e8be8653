//! What each VM scenario must show. The checks read the scenario's results folder: the
//! workload's own JSON report, the capture as JSON lines (the documented interface), the
//! summaries, and the kernel's counters sampled in the guest.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::kernel::Arch;

pub struct Outcome {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Outcome {
    pub fn pass(name: &str) -> Outcome {
        Outcome {
            name: name.into(),
            ok: true,
            detail: String::new(),
        }
    }
    pub fn fail(name: &str, detail: impl Into<String>) -> Outcome {
        Outcome {
            name: name.into(),
            ok: false,
            detail: detail.into(),
        }
    }
    fn from(name: &str, r: Result<(), String>) -> Outcome {
        match r {
            Ok(()) => Outcome::pass(name),
            Err(e) => Outcome::fail(name, e),
        }
    }
}

fn read(dir: &Path, name: &str) -> Result<String, String> {
    std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"))
}

fn rc(dir: &Path, name: &str) -> Result<i32, String> {
    read(dir, name)?
        .trim()
        .parse()
        .map_err(|e| format!("{name}: {e}"))
}

fn jsonl(dir: &Path, name: &str) -> Result<Vec<Value>, String> {
    read(dir, name)?
        .lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("{name}:{}: {e}", i + 1)))
        .collect()
}

fn vmstat(dir: &Path, name: &str) -> Result<i64, String> {
    let s = read(dir, name)?;
    s.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{name}: no nr_iommu_pages value in {s:?}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// Inputs shared by the exercise checks.
struct Exercise {
    report: Value,
    pid: u64,
    events: Vec<Value>,
}

impl Exercise {
    fn load(dir: &Path) -> Result<Exercise, String> {
        let report: Value = serde_json::from_str(&read(dir, "exercise.json")?)
            .map_err(|e| format!("exercise.json: {e}"))?;
        let pid = read(dir, "exercise.pid")?
            .trim()
            .parse()
            .map_err(|e| format!("exercise.pid: {e}"))?;
        Ok(Exercise {
            report,
            pid,
            events: jsonl(dir, "exercise.jsonl")?,
        })
    }

    /// Events the workload caused, in order.
    fn ours<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events
            .iter()
            .filter(move |e| s(e, "event") == kind && u(e, "pid") == self.pid)
    }

    fn steps(&self) -> &[Value] {
        self.report["steps"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// The scenario script, the workload and the recorder all finished cleanly, and the capture
/// was finalized.
fn scenario_ran(dir: &Path) -> Result<(), String> {
    ensure(rc(dir, "scenario.rc")? == 0, || {
        "scenario script failed".into()
    })?;
    ensure(rc(dir, "exercise.rc")? == 0, || {
        format!(
            "exercise failed: {}",
            read(dir, "exercise.log").unwrap_or_default()
        )
    })?;
    ensure(rc(dir, "record.rc")? == 0, || {
        format!(
            "record failed: {}",
            read(dir, "record.log").unwrap_or_default()
        )
    })?;
    let summary = read(dir, "summary.txt")?;
    ensure(summary.contains("file: finalized"), || {
        format!("the capture was not finalized cleanly:\n{summary}")
    })
}

/// The capture replays through the reference models with zero divergence: every domain of
/// the workload verified, page for page.
fn replay_verifies(dir: &Path, x: &Exercise) -> Result<(), String> {
    let report: Value = serde_json::from_str(&read(dir, "replay.json")?)
        .map_err(|e| format!("replay.json: {e}"))?;
    let text = read(dir, "replay.txt").unwrap_or_default();
    ensure(rc(dir, "replay.rc")? == 0, || {
        format!("replay did not verify:\n{text}")
    })?;
    let domains = report["domains"].as_array().cloned().unwrap_or_default();
    for d in our_domains(x) {
        let r = domains
            .iter()
            .find(|r| s(r, "domain") == d)
            .ok_or_else(|| format!("domain {d} is not in the replay report"))?;
        ensure(r["verdict"] == "verified", || {
            format!("domain {d}: {}", r["verdict"])
        })?;
    }
    Ok(())
}

/// The checks of the capture against the workload's report, shared by the scenarios.
/// `hw_iommu`: the VM had the architecture's emulated IOMMU (real page tables, charged).
fn capture_checks(dir: &Path, out: &mut Vec<Outcome>, hw_iommu: bool) {
    match Exercise::load(dir) {
        Ok(x) => {
            out.push(Outcome::from("no_loss", no_loss(&x)));
            out.push(Outcome::from("hwpt_alloc_ioctls_match", hwpt_ioctls(&x)));
            out.push(Outcome::from("domain_allocs_match", domain_allocs(&x)));
            out.push(Outcome::from("map_unmap_bytes_per_domain", map_bytes(&x)));
            out.push(Outcome::from(
                "pt_pages_balance_per_domain",
                pt_balance(&x, hw_iommu),
            ));
            out.push(Outcome::from("pt_pages_match_vmstat", pt_vmstat(&x, dir)));
            out.push(Outcome::from(
                "replay_verifies_page_for_page",
                replay_verifies(dir, &x),
            ));
            if hw_iommu {
                out.push(Outcome::from(
                    "pt_pages_charged_to_cgroup",
                    pt_charged(&x, dir),
                ));
            }
        }
        Err(e) => out.push(Outcome::fail("exercise_results", e)),
    }
}

/// The selftest mock driver alone (no VT-d): its domains of every kind.
pub fn mock(dir: &Path, _arch: Arch) -> Vec<Outcome> {
    let mut out = vec![
        Outcome::from("scenario_ran", scenario_ran(dir)),
        Outcome::from(
            "mock_domains_allocated",
            (|| {
                let p = read(dir, "probes.txt")?;
                ensure(p.contains("+ mock_domain_alloc"), || {
                    format!("the mock op is not in the plan:\n{p}")
                })?;
                let r: Value = serde_json::from_str(&read(dir, "exercise.json")?)
                    .map_err(|e| format!("exercise.json: {e}"))?;
                ensure(r["mock"]["available"].as_bool() == Some(true), || {
                    format!("the mock driver was not usable: {}", r["mock"])
                })?;
                let allocs = &r["totals"]["expected_domain_allocations"];
                for k in ["mock_auto", "mock_paging", "mock_nested"] {
                    ensure(allocs[k].as_u64().unwrap_or(0) > 0, || {
                        format!("no {k} domain: {allocs}")
                    })?;
                }
                Ok(())
            })(),
        ),
    ];
    capture_checks(dir, &mut out, false);
    out
}

pub fn exercise(dir: &Path, arch: Arch) -> Vec<Outcome> {
    let mut out = vec![
        Outcome::from("scenario_ran", scenario_ran(dir)),
        Outcome::from(
            "probes_report",
            (|| {
                let p = read(dir, "probes.txt")?;
                for point in [
                    "hwpt_alloc_ioctl",
                    "driver_alloc",
                    "domain_free",
                    "map",
                    "unmap",
                    "pt_pages",
                ] {
                    let line = p
                        .lines()
                        .find(|l| l.starts_with(point))
                        .ok_or_else(|| format!("probes lists no {point}:\n{p}"))?;
                    ensure(line.split_whitespace().nth(1) == Some("ok"), || {
                        format!("probe point not ok: {line}\n{p}")
                    })?;
                }
                let driver_op = match arch {
                    Arch::X86_64 => "+ intel_iommu_domain_alloc",
                    Arch::Arm64 => "+ arm_smmu_domain_alloc",
                };
                ensure(
                    p.contains(driver_op) && p.contains("+ mock_domain_alloc"),
                    || {
                        format!("the {arch} IOMMU's and the mock's driver ops are not in the plan:\n{p}")
                    },
                )
            })(),
        ),
        Outcome::from(
            "not_root_is_a_clear_error",
            (|| {
                ensure(rc(dir, "notroot-record.rc")? != 0, || {
                    "record as nobody succeeded".into()
                })?;
                let msg = read(dir, "notroot-record.txt")?;
                ensure(msg.contains("needs root") && msg.contains("probes"), || {
                    format!("unclear not-root error: {msg}")
                })?;
                ensure(rc(dir, "notroot-probes.rc")? == 0, || {
                    "probes as nobody failed".into()
                })?;
                let p = read(dir, "notroot-probes.txt")?;
                ensure(p.contains("not root") && p.contains("driver_alloc"), || {
                    format!("probes as nobody did not report: {p}")
                })
            })(),
        ),
        Outcome::from(
            "damaged_captures",
            (|| {
                ensure(rc(dir, "truncated.rc")? == 0, || {
                    "inspect of a truncated capture failed".into()
                })?;
                let warn = read(dir, "truncated.err")?;
                ensure(warn.contains("warning") && warn.contains("offset"), || {
                    format!("no offset warning for a truncated capture: {warn}")
                })?;
                let summary = read(dir, "truncated-summary.txt")?;
                ensure(summary.contains("NOT finalized"), || {
                    format!("truncated summary: {summary}")
                })?;
                ensure(rc(dir, "notcapture.rc")? != 0, || {
                    "a non-capture was accepted".into()
                })?;
                let msg = read(dir, "notcapture.txt")?;
                ensure(msg.contains("not an iommu-trace capture"), || {
                    format!("unclear refusal: {msg}")
                })
            })(),
        ),
        Outcome::from(
            "tiny_ring_counts_loss",
            (|| {
                ensure(rc(dir, "tiny-record.rc")? == 0, || {
                    format!(
                        "tiny record failed: {}",
                        read(dir, "tiny-record.log").unwrap_or_default()
                    )
                })?;
                let events = jsonl(dir, "tiny.jsonl")?;
                let lost: u64 = events
                    .iter()
                    .filter(|e| s(e, "event") == "lost")
                    .map(|e| u(e, "ringbuf_full"))
                    .sum();
                ensure(lost > 0, || {
                    "a one-page ring buffer under the loop lost nothing".into()
                })?;
                // Loss is never silent: a capture with lost events does not verify.
                ensure(rc(dir, "tiny-replay.rc")? == 1, || {
                    format!(
                        "replay of a lossy capture: {}",
                        read(dir, "tiny-replay.txt").unwrap_or_default()
                    )
                })?;
                let summary = read(dir, "tiny-summary.txt")?;
                ensure(summary.contains(&format!("lost: {lost} ")), || {
                    format!("summary does not show the {lost} lost events:\n{summary}")
                })
            })(),
        ),
    ];
    capture_checks(dir, &mut out, true);
    out.push(Outcome::from(
        "live_exporter_matches_capture",
        live_exporter(dir),
    ));
    out.push(Outcome::from(
        "degraded_kernel_reports_the_gap",
        degraded_kernel(dir),
    ));
    out
}

/// The page-table hook refused (`--deny-symbol`, as on a kernel that lacks it): the other
/// points attach and record, and every consumer names the gap instead of showing zero
/// page-table pages as if measured.
fn degraded_kernel(dir: &Path) -> Result<(), String> {
    let probes = read(dir, "degraded-probes.txt")?;
    let line = |point: &str| {
        probes
            .lines()
            .find(|l| l.starts_with(point))
            .unwrap_or("")
            .to_string()
    };
    ensure(
        line("pt_pages").split_whitespace().nth(1) == Some("missing"),
        || format!("probes does not show pt_pages missing:\n{probes}"),
    )?;
    ensure(probes.contains("refused by --deny-symbol"), || {
        format!("probes does not say why:\n{probes}")
    })?;
    for point in ["driver_alloc", "map", "unmap", "domain_free"] {
        ensure(line(point).split_whitespace().nth(1) == Some("ok"), || {
            format!("{point} did not stay attached:\n{probes}")
        })?;
    }
    ensure(rc(dir, "degraded-record.rc")? == 0, || {
        format!(
            "record with a refused symbol failed: {}",
            read(dir, "degraded-record.log").unwrap_or_default()
        )
    })?;
    let summary = read(dir, "degraded-summary.txt")?;
    ensure(
        summary.contains("MISSING probe point (nothing recorded): pt_pages"),
        || format!("inspect --summary does not name the gap:\n{summary}"),
    )?;
    let maps = summary
        .lines()
        .find_map(|l| l.strip_prefix("map "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    ensure(maps > 0, || {
        format!("the other points recorded nothing:\n{summary}")
    })?;
    let replay = read(dir, "degraded-replay.txt")?;
    ensure(
        rc(dir, "degraded-replay.rc")? == 1
            && replay.contains("pt_pages")
            && replay.contains("recorded nothing"),
        || format!("replay verified a capture without page-table events:\n{replay}"),
    )?;
    let metrics = read(dir, "degraded-metrics.txt")?;
    let attached = metrics
        .lines()
        .find(|l| l.starts_with("iommu_trace_probe_attached{") && l.contains("point=\"pt_pages\""))
        .unwrap_or("");
    ensure(attached.ends_with(" 0"), || {
        format!("the exporter does not show pt_pages unattached: {attached:?}")
    })?;
    ensure(
        metric_sum(
            &metrics,
            "iommu_trace_replay_domains",
            "verdict=\"verified\"",
        ) == 0.0
            && metric_sum(
                &metrics,
                "iommu_trace_replay_domains",
                "verdict=\"unverifiable\"",
            ) > 0.0,
        || {
            "the exporter's --verify counts domains of a capture without page-table events as verified".into()
        },
    )
}

/// Sum of a metric's samples in a Prometheus text exposition, optionally only the samples
/// whose labels contain `filter`.
fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `iommu-trace serve`, tracing live beside the recorder, exposes the counts the capture
/// holds: allocations, page-table pages, no loss, every probe point attached.
fn live_exporter(dir: &Path) -> Result<(), String> {
    ensure(rc(dir, "serve.rc")? == 0, || {
        format!(
            "serve failed: {}",
            read(dir, "serve.log").unwrap_or_default()
        )
    })?;
    let m = read(dir, "metrics.txt")?;
    let events = jsonl(dir, "exercise.jsonl")?;
    let count = |kind: &str| events.iter().filter(|e| s(e, "event") == kind).count() as f64;
    let pages = |kind: &str| -> f64 {
        events
            .iter()
            .filter(|e| s(e, "event") == kind)
            .map(|e| u(e, "pages") as f64)
            .sum()
    };
    let mut problems = Vec::new();
    let mut expect = |what: &str, got: f64, want: f64| {
        if got != want {
            problems.push(format!("{what}: /metrics says {got}, the capture {want}"));
        }
    };
    expect(
        "domain allocations",
        metric_sum(&m, "iommu_trace_domain_allocations_total", ""),
        count("domain_alloc"),
    );
    expect(
        "domain frees",
        metric_sum(&m, "iommu_trace_domain_frees_total", ""),
        count("domain_free"),
    );
    expect(
        "hwpt allocations",
        metric_sum(&m, "iommu_trace_hwpt_allocations_total", ""),
        count("hwpt_alloc"),
    );
    expect(
        "page-table pages allocated",
        metric_sum(&m, "iommu_trace_page_table_pages_allocated_total", ""),
        pages("pt_alloc"),
    );
    expect(
        "page-table pages freed",
        metric_sum(&m, "iommu_trace_page_table_pages_freed_total", ""),
        pages("pt_free"),
    );
    expect(
        "events lost",
        metric_sum(&m, "iommu_trace_events_lost_total", ""),
        0.0,
    );
    // The same counts through a real Prometheus that scraped the live exporter in the VM.
    let prom = |file: &str| -> Result<f64, String> {
        let v: Value =
            serde_json::from_str(&read(dir, file)?).map_err(|e| format!("{file}: {e}"))?;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|x| x.parse().ok())
            .ok_or_else(|| format!("{file}: no sample in {v}"))
    };
    expect(
        "Prometheus: domain allocations",
        prom("prom-domain-allocs.json")?,
        count("domain_alloc"),
    );
    expect(
        "Prometheus: page-table pages allocated",
        prom("prom-pt-allocated.json")?,
        pages("pt_alloc"),
    );
    expect(
        "Prometheus: hwpt allocations",
        prom("prom-hwpt-allocs.json")?,
        count("hwpt_alloc"),
    );
    expect("Prometheus: target up", prom("prom-up.json")?, 1.0);
    for point in [
        "hwpt_alloc_ioctl",
        "driver_alloc",
        "domain_free",
        "map",
        "unmap",
        "pt_pages",
    ] {
        let filter = format!("point=\"{point}\"");
        if metric_sum(&m, "iommu_trace_probe_attached", &filter) < 1.0 {
            problems.push(format!("probe point {point} not reported attached"));
        }
    }
    ensure(problems.is_empty(), || problems.join("\n"))
}

fn no_loss(x: &Exercise) -> Result<(), String> {
    let lost: Vec<_> = x
        .events
        .iter()
        .filter(|e| s(e, "event") == "lost")
        .collect();
    ensure(lost.is_empty(), || format!("events were lost: {lost:?}"))
}

/// Every IOMMU_HWPT_ALLOC the workload made is in the capture, in order, with its flags,
/// data type and the kernel's errno.
fn hwpt_ioctls(x: &Exercise) -> Result<(), String> {
    let want: Vec<(u64, u64, i64)> = x
        .steps()
        .iter()
        .filter(|st| s(st, "call") == "IOMMU_HWPT_ALLOC")
        .map(|st| {
            (
                u(&st["params"], "flags"),
                u(&st["params"], "data_type"),
                st["errno"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let got: Vec<(u64, u64, i64)> = x
        .ours("hwpt_alloc")
        .map(|e| {
            (
                u(e, "flags"),
                u(e, "data_type"),
                e["errno"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    ensure(!want.is_empty(), || {
        "the workload made no IOMMU_HWPT_ALLOC".into()
    })?;
    ensure(want == got, || {
        format!("IOMMU_HWPT_ALLOC (flags, data_type, errno):\n  workload: {want:?}\n  capture:  {got:?}")
    })
}

fn device_of(driver: &str) -> &str {
    match driver {
        "mock" => "mock",
        _ => "vfio",
    }
}

/// Successful domain allocations per device kind and domain kind equal what the workload
/// created; each has the workload's pid and comm and a latency; each failure at a driver
/// matches a failed ioctl with the same errno.
fn domain_allocs(x: &Exercise) -> Result<(), String> {
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures: Vec<i64> = Vec::new();
    for e in x.ours("domain_alloc") {
        ensure(u(e, "latency_ns") > 0, || format!("no latency: {e}"))?;
        ensure(s(e, "comm") == "iommu-trace", || {
            format!("comm is not the workload's: {e}")
        })?;
        let errno = e["errno"].as_i64().unwrap_or(-1);
        if errno == 0 {
            *got.entry(format!("{}_{}", device_of(s(e, "driver")), s(e, "kind")))
                .or_default() += 1;
        } else {
            failures.push(errno);
        }
    }
    let total: u64 = got.values().sum();
    got.insert("total".into(), total);
    let want: BTreeMap<String, u64> = x.report["totals"]["expected_domain_allocations"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    ensure(got == want, || {
        format!("successful domain allocations by kind:\n  workload: {want:?}\n  capture:  {got:?}")
    })?;
    let failed_ioctls: Vec<i64> = x
        .steps()
        .iter()
        .filter(|st| s(st, "call") == "IOMMU_HWPT_ALLOC")
        .filter_map(|st| st["errno"].as_i64())
        .filter(|&e| e != 0)
        .collect();
    for f in &failures {
        ensure(failed_ioctls.contains(f), || {
            format!("a driver failed with errno {f}, but no HWPT_ALLOC of the workload did: {failed_ioctls:?}")
        })?;
    }
    Ok(())
}

/// The workload's domains, in allocation order.
fn our_domains(x: &Exercise) -> Vec<String> {
    x.ours("domain_alloc")
        .filter(|e| e["errno"].as_i64() == Some(0))
        .map(|e| s(e, "domain").to_string())
        .collect()
}

/// Map and unmap events carry the domain and add up, per domain, to the bytes the
/// workload's ledger says each hwpt received (matched in creation order).
fn map_bytes(x: &Exercise) -> Result<(), String> {
    let domains = our_domains(x);
    let hwpts = x.report["totals"]["hwpts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure(domains.len() == hwpts.len(), || {
        format!(
            "{} domains captured, {} hwpts in the workload's ledger",
            domains.len(),
            hwpts.len()
        )
    })?;
    let mut mapped: BTreeMap<&str, u64> = BTreeMap::new();
    let mut unmapped: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &x.events {
        let d = s(e, "domain");
        match s(e, "event") {
            "map" => *mapped.entry(d).or_default() += u(e, "done"),
            "unmap" => *unmapped.entry(d).or_default() += u(e, "done"),
            _ => {}
        }
    }
    let mut problems = Vec::new();
    for (d, h) in domains.iter().zip(&hwpts) {
        // The ledger's bytes_mapped includes what the IOAS held when the hwpt was made
        // (bytes_filled_at_alloc), which iopt_table_add_domain maps into it.
        let want_map = u(h, "bytes_mapped");
        let want_unmap = u(h, "bytes_unmapped");
        let (m, un) = (
            mapped.get(d.as_str()).copied().unwrap_or(0),
            unmapped.get(d.as_str()).copied().unwrap_or(0),
        );
        if (m, un) != (want_map, want_unmap) {
            problems.push(format!(
                "hwpt {} ({}) = domain {d}: mapped {m} unmapped {un}, workload says {want_map} / {want_unmap}",
                u(h, "id"),
                s(h, "label")
            ));
        }
    }
    ensure(mapped.values().sum::<u64>() > 0, || {
        "no bytes mapped at all".into()
    })?;
    ensure(problems.is_empty(), || problems.join("\n"))
}

/// Page-table pages allocated minus freed, per domain, never goes negative and is zero once
/// the domain is freed; every domain of the workload is freed.
/// `require_pages`: the driver has real page tables (VT-d; the 6.12 mock keeps an xarray).
fn pt_balance(x: &Exercise, require_pages: bool) -> Result<(), String> {
    let domains = our_domains(x);
    let mut live: BTreeMap<&str, i64> = BTreeMap::new();
    let mut freed: Vec<&str> = Vec::new();
    for e in &x.events {
        let d = s(e, "domain");
        match s(e, "event") {
            "pt_alloc" => *live.entry(d).or_default() += u(e, "pages") as i64,
            "pt_free" => {
                let v = live.entry(d).or_default();
                *v -= u(e, "pages") as i64;
                ensure(*v >= 0, || {
                    format!("domain {d} freed more page-table pages than it had, at {e}")
                })?;
            }
            "domain_free" => {
                ensure(live.get(d).copied().unwrap_or(0) == 0, || {
                    format!(
                        "domain {d} freed with {} page-table pages outstanding",
                        live[d]
                    )
                })?;
                freed.push(d);
            }
            _ => {}
        }
    }
    for d in &domains {
        ensure(freed.contains(&d.as_str()), || {
            format!("domain {d} was never freed")
        })?;
    }
    ensure(live.get("0x0").copied().unwrap_or(0) == 0, || {
        format!(
            "{} page-table pages allocated by failed allocations were not freed",
            live["0x0"]
        )
    })?;
    let allocated: u64 = x
        .events
        .iter()
        .filter(|e| s(e, "event") == "pt_alloc")
        .map(|e| u(e, "pages"))
        .sum();
    ensure(allocated > 0 || !require_pages, || {
        "no page-table page was seen at all".into()
    })
}

/// The total of all page-table page changes equals the change of nr_iommu_pages.
fn pt_vmstat(x: &Exercise, dir: &Path) -> Result<(), String> {
    let delta = vmstat(dir, "vmstat-after.txt")? - vmstat(dir, "vmstat-before.txt")?;
    let captured: i64 = x
        .events
        .iter()
        .map(|e| match s(e, "event") {
            "pt_alloc" => u(e, "pages") as i64,
            "pt_free" => -(u(e, "pages") as i64),
            _ => 0,
        })
        .sum();
    ensure(captured == delta, || {
        format!("captured page-table pages net {captured}, /proc/vmstat nr_iommu_pages changed by {delta}")
    })
}

/// Pages charged to a memory cgroup are charged to the workload's cgroup, and the charged
/// pages the capture holds at each point the workload sampled its cgroup equal the change of
/// that cgroup's `sec_pagetables` (memory.stat) since the start.
fn pt_charged(x: &Exercise, dir: &Path) -> Result<(), String> {
    let cg: u64 = read(dir, "cgroup-id.txt")?
        .trim()
        .parse()
        .map_err(|e| format!("cgroup-id.txt: {e}"))?;
    let mut charged = 0;
    for e in x.ours("pt_alloc") {
        if e["charged"].as_bool() == Some(true) {
            charged += u(e, "pages");
            ensure(u(e, "memcg_id") == cg, || {
                format!(
                    "page charged to memcg {} instead of the workload's cgroup {cg}: {e}",
                    u(e, "memcg_id")
                )
            })?;
            ensure(u(e, "cgroup_id") == cg, || {
                format!("event not from the workload's cgroup: {e}")
            })?;
        }
    }
    ensure(charged > 0, || {
        "no page-table page was charged to the workload's cgroup".into()
    })?;
    let samples = x.report["cgroup_samples"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let sample = |label: &str| -> Result<(u64, i64), String> {
        let smp = samples
            .iter()
            .find(|smp| s(smp, "label") == label)
            .ok_or_else(|| format!("the workload took no {label:?} cgroup sample: {samples:?}"))?;
        let bytes = smp["sec_pagetables"]
            .as_i64()
            .ok_or_else(|| format!("cgroup sample {label:?} has no value: {smp}"))?;
        Ok((u(smp, "ts_ns"), bytes))
    };
    let (_, start) = sample("start")?;
    let mut problems = Vec::new();
    for label in ["peak", "end"] {
        let (ts, bytes) = sample(label)?;
        let captured: i64 = x
            .events
            .iter()
            .filter(|e| {
                u(e, "ts_ns") < ts && e["charged"].as_bool() == Some(true) && u(e, "memcg_id") == cg
            })
            .map(|e| match s(e, "event") {
                "pt_alloc" => u(e, "pages") as i64,
                "pt_free" => -(u(e, "pages") as i64),
                _ => 0,
            })
            .sum();
        let kernel = (bytes - start) / 4096;
        if captured != kernel {
            problems.push(format!(
                "at {label}: capture holds {captured} charged pages, sec_pagetables grew by {kernel} pages"
            ));
        }
        if label == "peak" && captured == 0 {
            problems.push("no charged page-table page was live at the peak".into());
        }
    }
    ensure(problems.is_empty(), || problems.join("\n"))
}

/// The capture benchmark's numbers: loop rate without and with the tracer (medians over
/// interleaved rounds), events per second recorded, loss, bytes per event on disk.
/// `detail` carries the measurement even when the check passes.
pub fn bench_capture(dir: &Path, _arch: Arch) -> Vec<Outcome> {
    let run = || -> Result<String, String> {
        let rate = |name: &str| -> Result<(f64, u64, u64), String> {
            let r: Value =
                serde_json::from_str(&read(dir, name)?).map_err(|e| format!("{name}: {e}"))?;
            let l = &r["loop_result"];
            ensure(u(l, "map_errors") + u(l, "unmap_errors") == 0, || {
                format!("{name}: loop errors: {l}")
            })?;
            Ok((
                l["ops_per_sec"].as_f64().unwrap_or(0.0),
                u(l, "ops"),
                u(l, "elapsed_ns"),
            ))
        };
        let median = |mut v: Vec<f64>| -> f64 {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let mut base = Vec::new();
        let mut traced = Vec::new();
        let (mut events, mut bytes, mut traced_ns, mut lost, mut ops) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        for r in 1.. {
            if !dir.join(format!("base{r}.json")).exists() {
                break;
            }
            base.push(rate(&format!("base{r}.json"))?.0);
            if !dir.join(format!("traced{r}.json")).exists() {
                continue;
            }
            let (t, o, ns) = rate(&format!("traced{r}.json"))?;
            traced.push(t);
            ops = o;
            traced_ns += ns;
            ensure(rc(dir, &format!("record{r}.rc"))? == 0, || {
                "the recorder failed".into()
            })?;
            let summary = read(dir, &format!("summary{r}.txt"))?;
            let count = |prefix: &str| -> Result<u64, String> {
                summary
                    .lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .and_then(|l| l.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("no {prefix:?} in summary:\n{summary}"))
            };
            events += count("events: ")?;
            lost += count("lost: ")?;
            bytes += read(dir, &format!("capture-bytes{r}.txt"))?
                .trim()
                .parse::<u64>()
                .map_err(|e| e.to_string())?;
        }
        ensure(!traced.is_empty(), || "no traced round ran".into())?;
        let (b, t) = (median(base.clone()), median(traced.clone()));
        ensure(lost == 0, || {
            format!("{lost} events lost at the loop's full rate")
        })?;
        Ok(format!(
            "map/unmap loop, {ops} ops per run, {} rounds: median {b:.0} ops/s untraced {base:.0?}, \
             {t:.0} ops/s traced {traced:.0?}; slowdown {:.1}% (time ratio {:.3}); \
             {events} events recorded at {:.0} events/s, 0 lost; {:.1} bytes/event on disk",
            traced.len(),
            (b / t - 1.0) * 100.0,
            b / t,
            events as f64 / (traced_ns as f64 / 1e9),
            bytes as f64 / events.max(1) as f64
        ))
    };
    vec![match run() {
        Ok(detail) => Outcome {
            name: "capture".into(),
            ok: true,
            detail,
        },
        Err(e) => Outcome::fail("capture", e),
    }]
}
