//! The `bench-capture` scenario: the tracer's overhead on the map/unmap loop.

use std::path::Path;

use serde_json::Value;

use super::{ensure, rc, read, u, Outcome};
use crate::kernel::Arch;

/// The capture benchmark's numbers: loop rate without and with the tracer (medians over
/// interleaved rounds), events per second recorded, loss, bytes per event on disk; for the
/// one-page loop and, when it ran, the 16-page one. `detail` carries the measurement even
/// when the check passes.
pub fn bench_capture(dir: &Path, _arch: Arch) -> Vec<Outcome> {
    let mut out = vec![outcome("capture", measure(dir, ""))];
    if dir.join("base1-16p.json").exists() {
        out.push(outcome("capture-16-pages", measure(dir, "-16p")));
    }
    out
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
    let median = |mut v: Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut base = Vec::new();
    let mut traced = Vec::new();
    let mut noobj = Vec::new();
    let mut floor = Vec::new();
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
        let (t, o, ns) = rate(&format!("traced{r}{sfx}.json"))?;
        traced.push(t);
        ops = o;
        traced_ns += ns;
        ensure(rc(dir, &format!("record{r}{sfx}.rc"))? == 0, || {
            "the recorder failed".into()
        })?;
        let summary = read(dir, &format!("summary{r}{sfx}.txt"))?;
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
        format!(
            "; floor (same attach points, programs that return at once) {f:.0} ops/s {floor:.0?},              adding {floor_ns:.0} ns per op; added per op traced {}{base_part}",
            ours(t)
        )
    };
    let pages = if sfx.is_empty() { 1 } else { 16 };
    Ok(format!(
        "map/unmap loop of {pages} page(s) per map, {ops} ops per run, {} rounds: median {b:.0} ops/s untraced {base:.0?}, \
         {t:.0} ops/s traced {traced:.0?}; slowdown {:.1}% (time ratio {:.3}); \
         {events} events recorded at {:.0} events/s, 0 lost; {:.1} bytes/event on disk{objects}{floor_text}",
        traced.len(),
        (b / t - 1.0) * 100.0,
        b / t,
        events as f64 / (traced_ns as f64 / 1e9),
        bytes as f64 / events.max(1) as f64
    ))
}
