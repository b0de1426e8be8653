//! The benchmark scenarios: `bench-capture`, the tracer's overhead on the map/unmap loop;
//! `bench-system`, what it costs memory work with no IOMMU in it.

use std::path::Path;

use serde_json::Value;

use super::{ensure, rc, read, u, Outcome};
use crate::kernel::Arch;

/// The capture benchmark's numbers: loop rate without and with the tracer (medians over
/// interleaved rounds), events per second recorded, loss, bytes per event on disk; for the
/// one-page loop and, when it ran, the 16-page one. `detail` carries the measurement even
/// when the check passes.
pub fn bench_capture(dir: &Path, arch: Arch) -> Vec<Outcome> {
    let mut out = Vec::new();
    // The sizes the guest was asked for (`BENCH_PAGES`, written by bench-capture.sh): a size
    // asked for is measured, so one that failed to run fails its check. Without the file
    // (the scenario did not start), the one-page measure says what is missing.
    let asked = std::fs::read_to_string(dir.join("sizes.txt")).unwrap_or_else(|_| "1".into());
    let asked: Vec<&str> = asked.split_whitespace().collect();
    for (name, sfx, pages) in [("capture", "", "1"), ("capture-16-pages", "-16p", "16")] {
        if !asked.contains(&pages) {
            continue;
        }
        // A guest that carries bpftrace must have run it: a comparison that did not run is
        // a failure, not a shorter line.
        let bpftrace = format!("bpftrace1{sfx}.json");
        if bench_has_bpftrace(arch) && !dir.join(&bpftrace).exists() {
            out.push(Outcome::fail(
                &format!("{name}-bpftrace"),
                format!("bpftrace did not run in the guest (no {bpftrace}; see scenario.log)"),
            ));
        }
        out.push(outcome(name, measure(dir, sfx)));
    }
    out
}

/// Whether the capture benchmark's guest carries bpftrace: the harness copies the host's
/// (Debian's x86_64 package and its libraries), so an x86_64 guest on an x86_64 host.
pub fn bench_has_bpftrace(arch: Arch) -> bool {
    arch == Arch::X86_64 && arch == Arch::host()
}

/// The median of interleaved rounds' rates.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The number after `prefix` on its line of `inspect --summary`.
fn summary_count(summary: &str, prefix: &str) -> Result<u64, String> {
    summary
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no {prefix:?} in summary:\n{summary}"))
}

fn outcome(name: &str, r: Result<String, String>) -> Outcome {
    match r {
        Ok(detail) => Outcome {
            name: name.into(),
            ok: true,
            detail,
        },
        Err(e) => Outcome::fail(name, e),
    }
}

/// One loop size's numbers, from the files of results suffix `sfx`.
fn measure(dir: &Path, sfx: &str) -> Result<String, String> {
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
    let mut base = Vec::new();
    let mut traced = Vec::new();
    let mut noobj = Vec::new();
    let mut floor = Vec::new();
    let mut serve = Vec::new();
    let mut stats = Vec::new();
    let mut bpftrace = Vec::new();
    let mut against = Vec::new();
    let mut programs = ProgramTimes::default();
    let mut against_programs = ProgramTimes::default();
    let (mut events, mut bytes, mut traced_ns, mut lost, mut ops) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for r in 1.. {
        if !dir.join(format!("base{r}{sfx}.json")).exists() {
            break;
        }
        base.push(rate(&format!("base{r}{sfx}.json"))?.0);
        if !dir.join(format!("traced{r}{sfx}.json")).exists() {
            continue;
        }
        if dir.join(format!("noobj{r}{sfx}.json")).exists() {
            noobj.push(rate(&format!("noobj{r}{sfx}.json"))?.0);
        }
        if dir.join(format!("floor{r}{sfx}.json")).exists() {
            floor.push(rate(&format!("floor{r}{sfx}.json"))?.0);
        }
        if dir.join(format!("serve{r}{sfx}.json")).exists() {
            let (rate, ops, _) = rate(&format!("serve{r}{sfx}.json"))?;
            served_every_op(dir, &format!("{r}{sfx}"), ops)?;
            programs.add(&read(dir, &format!("serve-metrics{r}{sfx}.txt"))?, ops);
            serve.push(rate);
        }
        if dir.join(format!("stats{r}{sfx}.json")).exists() {
            stats.push(rate(&format!("stats{r}{sfx}.json"))?.0);
        }
        if dir.join(format!("against{r}{sfx}.json")).exists() {
            ensure(rc(dir, &format!("against-record{r}{sfx}.rc"))? == 0, || {
                format!("the --against build's recorder failed in round {r}")
            })?;
            against.push(rate(&format!("against{r}{sfx}.json"))?.0);
            let served = format!("against-serve{r}{sfx}.json");
            if dir.join(&served).exists() {
                ensure(rc(dir, &format!("against-serve{r}{sfx}.rc"))? == 0, || {
                    format!("the --against build's serve failed in round {r}")
                })?;
                let (_, ops, _) = rate(&served)?;
                let metrics = format!("against-serve-metrics{r}{sfx}.txt");
                against_programs.add(&read(dir, &metrics)?, ops);
            }
        }
        if dir.join(format!("bpftrace{r}{sfx}.json")).exists() {
            let (rate, ops, _) = rate(&format!("bpftrace{r}{sfx}.json"))?;
            bpftrace_counted_every_op(dir, &format!("bpftrace{r}{sfx}.log"), ops)?;
            bpftrace.push(rate);
        }
        let (t, o, ns) = rate(&format!("traced{r}{sfx}.json"))?;
        traced.push(t);
        ops = o;
        traced_ns += ns;
        ensure(rc(dir, &format!("record{r}{sfx}.rc"))? == 0, || {
            "the recorder failed".into()
        })?;
        let summary = read(dir, &format!("summary{r}{sfx}.txt"))?;
        events += summary_count(&summary, "events: ")?;
        lost += summary_count(&summary, "lost: ")?;
        bytes += read(dir, &format!("capture-bytes{r}{sfx}.txt"))?
            .trim()
            .parse::<u64>()
            .map_err(|e| e.to_string())?;
    }
    ensure(!traced.is_empty(), || "no traced round ran".into())?;
    let (b, t) = (median(base.clone()), median(traced.clone()));
    ensure(lost == 0, || {
        format!("{lost} events lost at the loop's full rate")
    })?;
    // The object and pinned-memory probes' share: traced with them vs traced without
    // them, same boot.
    let objects = if noobj.is_empty() {
        String::new()
    } else {
        let n = median(noobj.clone());
        format!(
            "; without the object and pinned-memory probes {n:.0} ops/s {noobj:.0?}: they cost {:.1}% \
             (time ratio {:.3})",
            (n / t - 1.0) * 100.0,
            n / t
        )
    };
    // The floor (same attach points, programs returning at once): time added per operation,
    // ours against it (median rates, so per-op times are their inverses).
    let floor_text = if floor.is_empty() {
        String::new()
    } else {
        let f = median(floor.clone());
        let added = |rate: f64| 1e9 / rate - 1e9 / b;
        let floor_ns = added(f);
        let ours = |rate: f64| {
            if floor_ns > 0.0 {
                format!(
                    "{:.0} ns, {:.2}x the floor's",
                    added(rate),
                    added(rate) / floor_ns
                )
            } else {
                format!("{:.0} ns (the floor added nothing measurable)", added(rate))
            }
        };
        let base_part = if noobj.is_empty() {
            String::new()
        } else {
            format!(
                "; without the object and pin probes {}",
                ours(median(noobj.clone()))
            )
        };
        let mode = |name: &str, rates: &[f64]| {
            if rates.is_empty() {
                String::new()
            } else {
                let m = median(rates.to_vec());
                format!("; {name} {m:.0} ops/s {rates:.0?}, adding {}", ours(m))
            }
        };
        // What the kernel's BPF statistics (serve's self-metrics) add to record.
        let stats_part = if stats.is_empty() {
            String::new()
        } else {
            let m = median(stats.clone());
            format!(
                "{}: the statistics add {:.0} ns per op",
                mode(
                    "record with the kernel's BPF run-time statistics on",
                    &stats
                ),
                added(m) - added(t)
            )
        };
        // record's added cost per operation against another tracer's: the tool people run
        // today, and another build of ours (--against).
        let versus = |rates: &[f64], what: &str| {
            if rates.is_empty() {
                String::new()
            } else {
                let other = added(median(rates.to_vec()));
                format!(
                    "; record's added cost is {:.2}x {what}",
                    added(t) / other.max(1.0)
                )
            }
        };
        let versus_bpftrace = versus(&bpftrace, "bpftrace's");
        let versus_against = if against.is_empty() {
            String::new()
        } else {
            format!(
                "{}{}",
                mode("record of the --against build", &against),
                versus(&against, "the --against build's")
            )
        };
        format!(
            "; floor (same attach points, programs that return at once) {f:.0} ops/s {floor:.0?}, \
             adding {floor_ns:.0} ns per op; added per op traced {}{base_part}{}{stats_part}{}{versus_bpftrace}{versus_against}",
            ours(t),
            mode("serve", &serve),
            mode("bpftrace counting the same functions' calls", &bpftrace),
        )
    };
    let pages = if sfx.is_empty() { 1 } else { 16 };
    Ok(format!(
        "map/unmap loop of {pages} page(s) per map, {ops} ops per run, {} rounds: median {b:.0} ops/s untraced {base:.0?}, \
         {t:.0} ops/s traced {traced:.0?}; slowdown {:.1}% (time ratio {:.3}); \
         {events} events recorded at {:.0} events/s, 0 lost; {:.1} bytes/event on disk{objects}{floor_text}{}{}",
        traced.len(),
        (b / t - 1.0) * 100.0,
        b / t,
        events as f64 / (traced_ns as f64 / 1e9),
        bytes as f64 / events.max(1) as f64,
        programs.report("serve's programs"),
        against_programs.report("the --against build's serve's programs"),
    ))
}

/// Where `serve`'s time goes: each program's run time per loop operation, as the kernel
/// accounted it (BPF_ENABLE_STATS, the exporter's `iommu_trace_bpf_program_*` counters),
/// summed over the serve rounds. The programs' own time, without the trampolines' (the
/// floor's); the stats themselves add two clock reads per run.
#[derive(Default)]
struct ProgramTimes {
    /// Program -> (seconds, runs).
    by_program: std::collections::BTreeMap<String, (f64, f64)>,
    ops: u64,
}

impl ProgramTimes {
    fn add(&mut self, metrics: &str, ops: u64) {
        self.ops += ops;
        for line in metrics.lines() {
            let (slot, rest) = if let Some(r) =
                line.strip_prefix("iommu_trace_bpf_program_run_seconds_total{program=\"")
            {
                (0, r)
            } else if let Some(r) =
                line.strip_prefix("iommu_trace_bpf_program_runs_total{program=\"")
            {
                (1, r)
            } else {
                continue;
            };
            let Some((name, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let Ok(v) = value.trim().parse::<f64>() else {
                continue;
            };
            let e = self.by_program.entry(name.to_string()).or_default();
            if slot == 0 {
                e.0 += v;
            } else {
                e.1 += v;
            }
        }
    }

    fn report(&self, whose: &str) -> String {
        if self.ops == 0 || self.by_program.is_empty() {
            return String::new();
        }
        let ops = self.ops as f64;
        let mut rows: Vec<_> = self
            .by_program
            .iter()
            .filter(|(_, (_, runs))| *runs > 0.0)
            .map(|(name, (secs, runs))| (name, secs * 1e9 / ops, runs / ops, secs * 1e9 / runs))
            .collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = rows.iter().map(|r| r.1).sum();
        let each = rows
            .iter()
            .map(|(name, per_op, runs, per_run)| {
                format!("{name} {per_op:.0} ns ({runs:.2} runs x {per_run:.0} ns)")
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!("; {whose} ran {total:.0} ns per op (BPF stats): {each}")
    }
}

/// The exporter of round `round` ran cleanly, lost nothing and counted at least one
/// iommu_map or iommu_unmap per operation of the loop (each IOAS_MAP / UNMAP makes one or
/// more): a mode that traced nothing would look free.
fn served_every_op(dir: &Path, round: &str, ops: u64) -> Result<(), String> {
    ensure(rc(dir, &format!("serve{round}.rc"))? == 0, || {
        format!("serve exited non-zero in round {round}")
    })?;
    let metrics = read(dir, &format!("serve-metrics{round}.txt"))?;
    let sum = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let counted = sum("iommu_trace_map_operations_total");
    ensure(counted >= ops as f64, || {
        format!("serve counted {counted} map/unmap calls in round {round}, the loop made {ops} operations")
    })?;
    let lost = sum("iommu_trace_events_lost_total");
    ensure(lost == 0.0, || {
        format!("serve lost {lost} events in round {round}")
    })
}

/// bpftrace's counts (`@[kfunc:iommu_map]: N` lines, printed at its exit) hold at least one
/// iommu_map or iommu_unmap call per operation of the loop.
fn bpftrace_counted_every_op(dir: &Path, log: &str, ops: u64) -> Result<(), String> {
    let text = read(dir, log)?;
    let counted: u64 = text
        .lines()
        .filter(|l| {
            [":iommu_map]", ":iommu_unmap]", ":iommu_unmap_fast]"]
                .iter()
                .any(|f| l.contains(f))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    ensure(counted >= ops, || {
        format!("bpftrace counted {counted} map/unmap calls, the loop made {ops} operations ({log}):\n{text}")
    })
}

/// The system benchmark's numbers: memchurn's pages per second untraced, under `record` and
/// under the floor (medians over interleaved rounds), and the slowdowns. The recorder must
/// have run cleanly with the page-table hook attached (else the figure would measure
/// nothing), and lost nothing.
pub fn bench_system(dir: &Path, _arch: Arch) -> Vec<Outcome> {
    vec![outcome("system", measure_system(dir))]
}

fn measure_system(dir: &Path) -> Result<String, String> {
    let rate = |name: &str| -> Result<f64, String> {
        let r: Value =
            serde_json::from_str(&read(dir, name)?).map_err(|e| format!("{name}: {e}"))?;
        r["pages_per_sec"]
            .as_f64()
            .filter(|r| *r > 0.0)
            .ok_or_else(|| format!("{name}: no pages_per_sec: {r}"))
    };
    let probes = read(dir, "probes.txt")?;
    // The point's header, then its attachments ("    + SYMBOL  PROGRAM_TYPE").
    let hook = probes
        .lines()
        .skip_while(|l| !l.starts_with("pt_pages "))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .find_map(|l| l.strip_prefix("    + "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .ok_or_else(|| format!("`probes` shows no pt_pages hook attached:\n{probes}"))?;
    let (mut base, mut traced, mut floor, mut lost) = (Vec::new(), Vec::new(), Vec::new(), 0u64);
    for r in 1.. {
        if !dir.join(format!("base{r}.json")).exists() {
            break;
        }
        base.push(rate(&format!("base{r}.json"))?);
        if !dir.join(format!("traced{r}.json")).exists() {
            continue;
        }
        traced.push(rate(&format!("traced{r}.json"))?);
        floor.push(rate(&format!("floor{r}.json"))?);
        ensure(rc(dir, &format!("record{r}.rc"))? == 0, || {
            format!("the recorder failed in round {r}")
        })?;
        lost += summary_count(&read(dir, &format!("summary{r}.txt"))?, "lost: ")?;
    }
    ensure(!traced.is_empty(), || "no traced round ran".into())?;
    ensure(lost == 0, || format!("{lost} events lost"))?;
    let (b, t, f) = (
        median(base.clone()),
        median(traced.clone()),
        median(floor.clone()),
    );
    Ok(format!(
        "memchurn (tmpfs page-cache churn and anonymous faults, no IOMMU), {} rounds: median \
         {b:.0} pages/s untraced {base:.0?}, {t:.0} under record {traced:.0?} (slowdown \
         {:.2}%), {f:.0} under the floor {floor:.0?} (slowdown {:.2}%); page-table hook: {hook}",
        traced.len(),
        (b / t - 1.0) * 100.0,
        (b / f - 1.0) * 100.0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // With only the 16-page loop asked for (`BENCH_PAGES=16`), bpftrace's run is looked for
    // under that size's name, not the one-page one's.
    #[test]
    fn bpftrace_is_looked_for_under_the_size_that_ran() {
        let dir = std::env::temp_dir().join(format!("bench-sizes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sizes.txt"), "16\n").unwrap();
        std::fs::write(dir.join("base1-16p.json"), "{}").unwrap();
        let names = |dir: &Path| -> Vec<(String, bool)> {
            bench_capture(dir, Arch::X86_64)
                .into_iter()
                .map(|o| (o.name, o.ok))
                .collect()
        };
        let got = names(&dir);
        assert!(
            got.iter().all(|(n, _)| n.starts_with("capture-16-pages")),
            "{got:?}"
        );
        if bench_has_bpftrace(Arch::X86_64) {
            assert!(
                got.contains(&("capture-16-pages-bpftrace".into(), false)),
                "{got:?}"
            );
            std::fs::write(dir.join("bpftrace1-16p.json"), "{}").unwrap();
            let got = names(&dir);
            assert!(!got.iter().any(|(n, _)| n.ends_with("bpftrace")), "{got:?}");
        }
        // Both sizes asked for, the one-page run missing: its check runs, and fails.
        std::fs::write(dir.join("sizes.txt"), "1 16\n").unwrap();
        let got = names(&dir);
        assert!(got.contains(&("capture".into(), false)), "{got:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn program_times_per_op_from_the_exporters_counters() {
        let metrics = "# HELP iommu_trace_bpf_program_runs_total Times each eBPF program ran.\n\
            iommu_trace_bpf_program_run_seconds_total{program=\"map_fexit\"} 0.002\n\
            iommu_trace_bpf_program_runs_total{program=\"map_fexit\"} 1000\n\
            iommu_trace_bpf_program_run_seconds_total{program=\"pin_fexit\"} 0.006\n\
            iommu_trace_bpf_program_runs_total{program=\"pin_fexit\"} 2000\n\
            iommu_trace_bpf_program_run_seconds_total{program=\"idle\"} 0\n\
            iommu_trace_bpf_program_runs_total{program=\"idle\"} 0\n\
            iommu_trace_map_operations_total{op=\"map\"} 1000\n";
        let mut t = ProgramTimes::default();
        t.add(metrics, 1000);
        t.add(metrics, 1000);
        // Per op: pin 6 us / 2 runs, map 2 us / 1 run; the idle program is left out.
        assert_eq!(
            t.report("serve's programs"),
            "; serve's programs ran 8000 ns per op (BPF stats): \
             pin_fexit 6000 ns (2.00 runs x 3000 ns), map_fexit 2000 ns (1.00 runs x 2000 ns)"
        );
        assert_eq!(ProgramTimes::default().report("serve's programs"), "");
    }
}
