//! The exporter against the real thing: promtool on the rules and the exposition, a real
//! Prometheus (Debian's `prometheus` package) scraping `iommu-trace serve --from CAPTURE`,
//! every expression of the dashboard and the rules evaluated through its HTTP API, and the
//! key series compared with what the capture holds. Also a bounded `wrk` load test of
//! `/metrics` while events flow.
//!
//! Only std, anyhow and serde_json: HTTP goes through `curl`, as the VM harness does.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// One check: (name, passed, detail).
pub type Check = (String, bool, String);

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .join("dashboards")
}

/// A child process killed (and reaped) when dropped.
struct Proc(Child, &'static str);

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first: `serve` shuts down gracefully on it.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.1);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn curl(url: &str, form: &[(&str, &str)]) -> Result<String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail-with-body", "--max-time", "10"]);
    if !form.is_empty() {
        cmd.arg("--get");
        for (k, v) in form {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
    }
    let out = cmd
        .arg(url)
        .output()
        .context("running curl (apt-get install curl)")?;
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "GET {url} failed: {}{}",
            body,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(body)
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// Starts `iommu-trace serve --from capture` on a free loopback port; returns it and the
/// address once it serves.
fn start_serve(bin: &Path, capture: &Path, extra: &[&str], dir: &Path) -> Result<(Proc, String)> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let ready = dir.join(format!("serve-ready-{port}"));
    let child = Command::new(bin)
        .arg("serve")
        .arg("--from")
        .arg(capture)
        .args(["--listen", &addr, "--ready-file"])
        .arg(&ready)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let p = Proc(child, "iommu-trace serve");
    wait_for(
        "iommu-trace serve to be ready",
        Duration::from_secs(30),
        || ready.exists(),
    )?;
    Ok((p, addr))
}

/// Every `expr` in the Grafana dashboard, with its panel title, and Grafana's variables
/// replaced by what they mean with "All" selected.
pub fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                let title = m.get("title").and_then(Value::as_str).unwrap_or(title);
                if let Some(e) = m.get("expr").and_then(Value::as_str) {
                    out.push((title.to_string(), e.to_string()));
                }
                for (k, x) in m {
                    if k != "templating" {
                        walk(x, title, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, title, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, "", &mut out);
    out.into_iter()
        .map(|(t, e)| {
            let e = e
                .replace("$__rate_interval", "1m")
                .replace("$job", ".*")
                .replace("$instance", ".*");
            (t, e)
        })
        .collect()
}

/// One instant query; the result vector as (labels, value).
fn query(prom: &str, expr: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>> {
    let body = curl(&format!("http://{prom}/api/v1/query"), &[("query", expr)])?;
    let v: Value = serde_json::from_str(&body).with_context(|| format!("parsing {body}"))?;
    if v["status"] != "success" {
        bail!("{}: {}", v["errorType"], v["error"]);
    }
    let mut out = Vec::new();
    if let Some(rs) = v["data"]["result"].as_array() {
        for r in rs {
            let labels = r["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let val = r["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN);
            out.push((labels, val));
        }
    } else if let Some(s) = v["data"]["result"][1].as_str() {
        out.push((BTreeMap::new(), s.parse().unwrap_or(f64::NAN)));
    }
    Ok(out)
}

/// What the capture implies, computed from `inspect --format jsonl` (not from the exporter).
#[derive(Default, Debug)]
struct Expected {
    /// (driver, kind, ok) -> allocations
    allocs: BTreeMap<(String, String, bool), u64>,
    events: BTreeMap<String, u64>,
    map_bytes: BTreeMap<String, u64>,
    pt_alloc_pages: BTreeMap<bool, u64>,
    hwpt: u64,
    /// Pin refusals by the exporter's cause label (ENOMEM per user / per mm).
    pin_refusals: BTreeMap<String, u64>,
}

fn expected(bin: &Path, capture: &Path) -> Result<Expected> {
    let out = Command::new(bin)
        .arg("inspect")
        .arg(capture)
        .args(["--format", "jsonl"])
        .output()
        .context("running iommu-trace inspect")?;
    if !out.status.success() {
        bail!("inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut e = Expected::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line)?;
        let ev = v["event"].as_str().unwrap_or("").to_string();
        *e.events.entry(ev.clone()).or_default() += 1;
        match ev.as_str() {
            "domain_alloc" => {
                let key = (
                    v["driver"].as_str().unwrap_or("").to_string(),
                    v["kind"].as_str().unwrap_or("").to_string(),
                    v["errno"].as_i64() == Some(0),
                );
                *e.allocs.entry(key).or_default() += 1;
            }
            "map" | "unmap" => {
                *e.map_bytes.entry(ev.clone()).or_default() += v["done"].as_u64().unwrap_or(0)
            }
            "pt_alloc" => {
                *e.pt_alloc_pages
                    .entry(v["charged"].as_bool().unwrap_or(false))
                    .or_default() += v["pages"].as_u64().unwrap_or(0)
            }
            "hwpt_alloc" => e.hwpt += 1,
            "pin" if v["errno"].as_i64() == Some(12) && v["pages"].as_i64() > Some(0) => {
                let mode = v["mode"].as_str().unwrap_or("");
                if mode == "user" || mode == "mm" {
                    *e.pin_refusals.entry(format!("memlock_{mode}")).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    Ok(e)
}

fn promtool(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dashboards().join("prometheus"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (apt-get install prometheus)")?;
    if let Some(s) = stdin {
        use std::io::Write;
        child.stdin.take().expect("piped").write_all(s.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("promtool {} failed:\n{text}", args.join(" "));
    }
    Ok(text)
}

fn check(out: &mut Vec<Check>, name: impl Into<String>, r: Result<String>) {
    let name = name.into();
    match r {
        Ok(d) => out.push((name, true, d)),
        Err(e) => out.push((name, false, format!("{e:#}"))),
    }
}

/// The whole end-to-end: `bin` is the iommu-trace binary, `capture` the capture to serve.
pub fn test(bin: &Path, capture: &Path) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    let dir = std::env::temp_dir().join(format!("iommu-trace-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rules = dashboards().join("prometheus/iommu-trace.rules.yml");

    check(
        &mut checks,
        "promtool check rules",
        promtool(&["check", "rules", "iommu-trace.rules.yml"], None),
    );
    check(
        &mut checks,
        "promtool test rules",
        promtool(&["test", "rules", "iommu-trace.rules.test.yml"], None),
    );

    let (_serve, addr) = start_serve(bin, capture, &["--verify"], &dir)?;
    let exposition = curl(&format!("http://{addr}/metrics"), &[])?;
    check(
        &mut checks,
        "promtool check metrics",
        promtool(&["check", "metrics"], Some(&exposition))
            .map(|t| format!("{} lines; {}", exposition.lines().count(), t.trim())),
    );
    check(
        &mut checks,
        "/healthz",
        curl(&format!("http://{addr}/healthz"), &[]).and_then(|b| {
            if b == "ok\n" {
                Ok(b.trim().into())
            } else {
                Err(anyhow!("answered {b:?}"))
            }
        }),
    );

    // A real Prometheus scraping it every second, evaluating the rules every second.
    let prom_port = free_port()?;
    let prom = format!("127.0.0.1:{prom_port}");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: iommu-trace\n    static_configs:\n      - targets: ['{addr}']\n",
            rules.display()
        ),
    )?;
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prom}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log"))?)
        .spawn()
        .context("starting prometheus (apt-get install prometheus)")?;
    let _prom = Proc(child, "prometheus");
    wait_for("Prometheus to be ready", Duration::from_secs(60), || {
        curl(&format!("http://{prom}/-/ready"), &[]).is_ok()
    })?;
    wait_for("a first scrape", Duration::from_secs(30), || {
        query(&prom, "up{job=\"iommu-trace\"} == 1").is_ok_and(|r| !r.is_empty())
    })?;
    // rate() needs two samples in its window; the rules need one evaluation after that.
    std::thread::sleep(Duration::from_secs(4));
    wait_for("every rule evaluated", Duration::from_secs(30), || {
        rules_status(&prom).is_ok_and(|r| r.iter().all(|(_, _, evaluated, _)| *evaluated))
    })?;

    // Every expression of the dashboard evaluates.
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(
        dashboards().join("grafana/iommu-trace.json"),
    )?)?;
    for (title, expr) in dashboard_exprs(&dash) {
        check(
            &mut checks,
            format!("dashboard: {title}: {expr}"),
            query(&prom, &expr).map(|r| format!("{} series", r.len())),
        );
    }
    // Every rule is healthy in Prometheus, and its expression evaluates on its own.
    for (name, expr, _, health) in rules_status(&prom)? {
        check(
            &mut checks,
            format!("rule {name}: {expr}"),
            if health == "ok" {
                query(&prom, &expr).map(|r| format!("health ok, {} series", r.len()))
            } else {
                Err(anyhow!("health {health}"))
            },
        );
    }

    // The key series hold what the capture implies.
    let want = expected(bin, capture)?;
    let sum = |expr: &str| -> Result<f64> {
        let r = query(&prom, expr)?;
        Ok(r.iter().map(|(_, v)| v).sum())
    };
    let expect = |name: String, expr: String, want: f64, checks: &mut Vec<Check>| {
        let r = sum(&expr).and_then(|got| {
            if (got - want).abs() < 1e-9 {
                Ok(format!("{got}"))
            } else {
                Err(anyhow!("{expr} = {got}, the capture implies {want}"))
            }
        });
        check(checks, name, r);
    };
    for ((driver, kind, ok), n) in &want.allocs {
        let result = if *ok {
            "result=\"OK\""
        } else {
            "result!=\"OK\""
        };
        expect(
            format!("allocations {driver}/{kind}/{}", if *ok { "ok" } else { "failed" }),
            format!(
                "iommu_trace_domain_allocations_total{{driver=\"{driver}\",kind=\"{kind}\",{result}}}"
            ),
            *n as f64,
            &mut checks,
        );
    }
    for (ev, n) in &want.events {
        expect(
            format!("events {ev}"),
            format!("iommu_trace_events_total{{event=\"{ev}\"}}"),
            *n as f64,
            &mut checks,
        );
    }
    for (op, n) in &want.map_bytes {
        expect(
            format!("{op} bytes"),
            format!("iommu_trace_map_bytes_total{{op=\"{op}\"}}"),
            *n as f64,
            &mut checks,
        );
    }
    for (charged, n) in &want.pt_alloc_pages {
        expect(
            format!("page-table pages allocated, charged={charged}"),
            format!("iommu_trace_page_table_pages_allocated_total{{charged=\"{charged}\"}}"),
            *n as f64,
            &mut checks,
        );
    }
    for (cause, n) in &want.pin_refusals {
        expect(
            format!("pin refusals {cause}"),
            format!("iommu_trace_pin_refusals_total{{cause=\"{cause}\"}}"),
            *n as f64,
            &mut checks,
        );
    }
    expect(
        "hwpt allocations".into(),
        "iommu_trace_hwpt_allocations_total".into(),
        want.hwpt as f64,
        &mut checks,
    );
    expect(
        "build_info from a capture".into(),
        "iommu_trace_build_info{source=\"capture\"}".into(),
        1.0,
        &mut checks,
    );
    check(
        &mut checks,
        "replay verdicts exported (--verify)",
        query(&prom, "iommu_trace_replay_domains").and_then(|r| {
            if r.is_empty() {
                Err(anyhow!("no iommu_trace_replay_domains series"))
            } else {
                Ok(r.iter()
                    .map(|(l, v)| format!("{}={v}", l.get("verdict").map_or("", |s| s)))
                    .collect::<Vec<_>>()
                    .join(" "))
            }
        }),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(checks)
}

/// (rule name, expression, evaluated at least once, health) of every rule Prometheus loaded.
fn rules_status(prom: &str) -> Result<Vec<(String, String, bool, String)>> {
    let v: Value = serde_json::from_str(&curl(&format!("http://{prom}/api/v1/rules"), &[])?)?;
    let mut out = Vec::new();
    for g in v["data"]["groups"].as_array().into_iter().flatten() {
        for r in g["rules"].as_array().into_iter().flatten() {
            let evaluated = r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001-"));
            out.push((
                r["name"].as_str().unwrap_or("").to_string(),
                r["query"].as_str().unwrap_or("").to_string(),
                evaluated,
                r["health"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    if out.is_empty() {
        bail!("Prometheus loaded no rules");
    }
    Ok(out)
}

/// What the load test measured.
#[derive(Debug)]
pub struct LoadReport {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50: String,
    pub p99: String,
    /// Socket errors and non-2xx responses: must be 0.
    pub errors: u64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// Events ingested while wrk ran: must be > 0 (ingestion never stalls).
    pub events_during: u64,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} scrapes ({:.0}/s), latency p50 {} p99 {}, {} errors; {} events ingested meanwhile; \
             RSS {} KiB -> {} KiB",
            self.requests,
            self.requests_per_sec,
            self.p50,
            self.p99,
            self.errors,
            self.events_during,
            self.rss_before_kib,
            self.rss_after_kib
        )
    }
}

fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))
}

fn events_total(addr: &str) -> Result<u64> {
    let text = curl(&format!("http://{addr}/metrics"), &[])?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("iommu_trace_events_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// `wrk` against `/metrics` for `seconds` while the capture is fed in a loop at `rate`
/// events/s. Fails when a scrape fails, ingestion stalls, or memory grows by more than
/// 16 MiB.
pub fn load(bin: &Path, capture: &Path, seconds: u32, rate: u32) -> Result<LoadReport> {
    let dir = std::env::temp_dir().join(format!("iommu-trace-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rate_s = rate.to_string();
    let (serve, addr) = start_serve(bin, capture, &["--repeat", "0", "--rate", &rate_s], &dir)?;
    let pid = serve.0.id();
    // Warm up: the state reaches its steady size after a pass or two of the capture.
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..20 {
        curl(&format!("http://{addr}/metrics"), &[])?;
    }
    let rss_before_kib = rss_kib(pid)?;
    let events_before = events_total(&addr)?;
    let out = Command::new("wrk")
        .args(["-t2", "-c8", &format!("-d{seconds}s"), "--latency"])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let events_during = events_total(&addr)?.saturating_sub(events_before);
    let rss_after_kib = rss_kib(pid)?;
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);

    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_string())
    };
    let errors = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + field("Socket errors:")
            .map(|v| {
                v.split(',')
                    .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let report = LoadReport {
        requests,
        requests_per_sec: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        p50: field("50%").unwrap_or_default(),
        p99: field("99%").unwrap_or_default(),
        errors,
        rss_before_kib,
        rss_after_kib,
        events_during,
    };
    if report.requests == 0 || report.errors > 0 {
        bail!("scrapes failed under load: {report:?}\n{text}");
    }
    if report.events_during == 0 {
        bail!("no events were ingested while /metrics was under load: {report:?}");
    }
    if report.rss_after_kib > report.rss_before_kib + 16 * 1024 {
        bail!("memory grew under load: {report:?}");
    }
    Ok(report)
}
