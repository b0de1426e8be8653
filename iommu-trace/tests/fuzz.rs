//! Fuzzing that stays: mutated captures through the capture reader, `inspect` (text, JSON
//! lines, summary) and `replay` (with and without `--what-if`), for a bounded time, in
//! `cargo test` / `cargo xtask test`.
//!
//! Random bytes rarely get past a frame's CRC, so half the inputs are mutated as bytes
//! (bit flips, interesting values, cuts, splices: the reader's paths) and half as structure:
//! a seed's events and header decoded, fields set to edge values (0, 1, 2^47, u64::MAX,
//! negative errnos, escape sequences in names), events dropped, repeated or swapped, and
//! written back with valid CRCs, so they reach replay and the text output.
//!
//! Seeds are the golden captures and the test fixtures. Every input fails the run if it
//! panics, if a capture that was not read whole (or reports loss) replays as verified, if
//! text meant for a terminal carries a control character, or (the watchdog) if one input
//! takes more than 20 s or the process grows past 2 GiB. A failing input is written under
//! the target directory; once fixed, keep it in `tests/fuzz-regressions/`, whose files run
//! first, every time.
//!
//! `IOMMU_TRACE_FUZZ_SECONDS` (default 5: `cargo test` runs it in a debug build; `cargo
//! xtask test` and `cargo xtask fuzz` run the optimized `fuzz` profile for 60 s) bounds the run; `IOMMU_TRACE_FUZZ_SEED` replays
//! a run's choices (it prints its seed).

use std::io::Cursor;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iommu_trace::capture::inspect::{dump, Format};
use iommu_trace::capture::{
    CaptureHeader, CaptureReader, CaptureSource, CaptureWriter, FinishInfo, LostTotals,
};
use iommu_trace::events::Event;
use iommu_trace::replay::{replay_reader, Choice, Outcome};
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};

/// Where the last panic happened (the hook's report).
static PANIC_AT: Mutex<String> = Mutex::new(String::new());

const HANG: Duration = Duration::from_secs(20);
const MEMORY_LIMIT: u64 = 2 << 30;

/// A seed: its bytes, and what they decode to (for structured mutations).
struct Seed {
    bytes: Vec<u8>,
    header: CaptureHeader,
    events: Vec<Event>,
}

fn main() {
    let seconds: u64 = env_number("IOMMU_TRACE_FUZZ_SECONDS").unwrap_or(5);
    let seed = env_number("IOMMU_TRACE_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    // Quiet: the default hook would print every caught panic; failures are reported below,
    // with where the panic happened.
    std::panic::set_hook(Box::new(|info| {
        if let Some(l) = info.location() {
            *PANIC_AT.lock().unwrap_or_else(|p| p.into_inner()) = format!(" at {l}");
        }
    }));

    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let regressions: Vec<PathBuf> = files_in(&manifest.join("tests/fuzz-regressions"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "itc"))
        .collect();
    // Kept reproducers are part of the run: a checkout without them (an ignore rule, a
    // sparse clone) must not pass as if they had been replayed.
    assert!(
        !regressions.is_empty(),
        "no kept reproducers in tests/fuzz-regressions/"
    );

    let current = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(AtomicU64::new(0));
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    watchdog(current.clone(), started.clone(), out_dir.clone());
    let t0 = Instant::now();
    // Under the watchdog too: a reproducer that hangs again must fail, not stall CI.
    let mut failures = Vec::new();
    for path in &regressions {
        let bytes = std::fs::read(path).expect("reading a kept reproducer");
        *current.lock().unwrap() = bytes.clone();
        started.store(t0.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        if let Err(why) = check(&bytes) {
            failures.push(format!("{}: {why}", path.display()));
        }
        started.store(0, Ordering::SeqCst);
    }

    // Kept reproducers seed too: they sit near the edges already found.
    let seeds: Vec<Seed> = files_in(&manifest.join("../tests/golden"))
        .into_iter()
        .chain(files_in(&manifest.join("tests/fixtures")))
        .filter(|p| p.extension().is_some_and(|e| e == "itc"))
        .chain(regressions.iter().cloned())
        .filter_map(|p| {
            let bytes = std::fs::read(&p).expect("reading a seed");
            let (header, events) = decode(&bytes)?;
            Some(Seed {
                bytes,
                header,
                events,
            })
        })
        .collect();
    assert!(!seeds.is_empty(), "no seed captures found");

    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes(seed));
    let deadline = t0 + Duration::from_secs(seconds);
    let (mut execs, mut structured) = (0u64, 0u64);
    while Instant::now() < deadline && failures.len() < 5 {
        let input = if rng.random_bool(0.5) {
            structured += 1;
            structure_mutation(&mut rng, &seeds)
        } else {
            byte_mutation(&mut rng, &seeds)
        };
        *current.lock().unwrap() = input.clone();
        started.store(t0.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        let result = check(&input);
        started.store(0, Ordering::SeqCst);
        execs += 1;
        if let Err(why) = result {
            let path = keep(&out_dir, &input);
            failures.push(format!("{why} (input kept: {})", path.display()));
        }
    }
    println!(
        "fuzz: {execs} executions in {:.1} s ({structured} structured, {} byte-level) from {} \
         seeds, {} kept reproducer(s) replayed; seed {seed}; {} failure(s)",
        t0.elapsed().as_secs_f64(),
        execs - structured,
        seeds.len(),
        regressions.len(),
        failures.len()
    );
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("fuzz failure: {f}");
        }
        std::process::exit(1);
    }
}

/// Runs one input through the reader, inspect and replay; `Err` says what went wrong.
fn check(bytes: &[u8]) -> Result<(), String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| run(bytes))) {
        Ok(r) => r,
        Err(panic) => Err(format!(
            "panic: {}{}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)"),
            PANIC_AT.lock().unwrap_or_else(|p| p.into_inner())
        )),
    }
}

fn run(bytes: &[u8]) -> Result<(), String> {
    let reader = match CaptureReader::new(Cursor::new(bytes)) {
        Ok(r) => r,
        Err(e) => {
            let text = e.to_string();
            return if text.trim().is_empty() {
                Err("an error without a message".into())
            } else {
                terminal_safe("the reader's error", &text)
            };
        }
    };
    let mut reader = reader;
    let mut text = Vec::new();
    let summary = dump(&mut reader, Format::Text, &mut text).map_err(|e| e.to_string())?;
    terminal_safe("inspect", &String::from_utf8_lossy(&text))?;
    terminal_safe("inspect --summary", &summary.to_string())?;
    let complete = reader.ending().is_some_and(|e| e.is_finalized());
    let mut jsonl = Vec::new();
    let mut reader = CaptureReader::new(Cursor::new(bytes)).map_err(|e| e.to_string())?;
    dump(&mut reader, Format::Jsonl, &mut jsonl).map_err(|e| e.to_string())?;
    for line in String::from_utf8_lossy(&jsonl).lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .map_err(|e| format!("inspect --jsonl wrote a line that is not JSON ({e}): {line}"))?;
    }
    for what_if in [false, true] {
        let reader = CaptureReader::new(Cursor::new(bytes)).map_err(|e| e.to_string())?;
        let choice = Choice {
            what_if,
            ..Default::default()
        };
        let file = replay_reader(reader, &choice, |_| {});
        let report = &file.report;
        let text = report.to_string();
        terminal_safe("replay", &text)?;
        // One heading line per domain: a name from the capture cannot add lines.
        let headings = text.lines().filter(|l| l.starts_with("domain 0x")).count();
        if headings != report.domains.len() {
            return Err(format!(
                "replay printed {headings} domain headings for {} domains",
                report.domains.len()
            ));
        }
        serde_json::to_string(report).map_err(|e| format!("replay --json: {e}"))?;
        if report.outcome() == Outcome::Verified && (!complete || file.warning.is_some()) {
            return Err("a capture not read whole replays as verified".into());
        }
        if report.outcome() == Outcome::Verified && (report.lost_events + report.lost_contexts) > 0
        {
            return Err("a capture with lost events replays as verified".into());
        }
    }
    Ok(())
}

/// Text for a terminal: no control character but newlines (the program's own line breaks;
/// replay's heading count checks that a capture's strings add none).
fn terminal_safe(what: &str, text: &str) -> Result<(), String> {
    match text.chars().find(|c| c.is_control() && *c != '\n') {
        Some(c) => Err(format!("{what} printed the control character {c:?}")),
        None => Ok(()),
    }
}

fn decode(bytes: &[u8]) -> Option<(CaptureHeader, Vec<Event>)> {
    let mut r = CaptureReader::new(Cursor::new(bytes)).ok()?;
    let events = r.by_ref().map_while(Result::ok).collect();
    Some((r.header().clone(), events))
}

// ---- mutations -------------------------------------------------------------------------

const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x1000,
    0xfff,
    1 << 21,
    1 << 30,
    1 << 39,
    1 << 47,
    1 << 48,
    1 << 63,
    u32::MAX as u64,
    i32::MAX as u64,
    u64::MAX,
    u64::MAX - 1,
];

fn interesting(rng: &mut TestRng) -> u64 {
    let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
    if rng.random_bool(0.2) {
        v.wrapping_add(rng.random_range(0..8)).wrapping_sub(4)
    } else {
        v
    }
}

fn byte_mutation(rng: &mut TestRng, seeds: &[Seed]) -> Vec<u8> {
    let mut b = seeds[rng.random_range(0..seeds.len())].bytes.clone();
    for _ in 0..rng.random_range(1..=4) {
        if b.is_empty() {
            break;
        }
        let at = rng.random_range(0..b.len());
        match rng.random_range(0..7) {
            0 => b[at] ^= 1 << rng.random_range(0..8),
            1 => b[at] = interesting(rng) as u8,
            2 => {
                let v = interesting(rng).to_le_bytes();
                let n = [2, 4, 8][rng.random_range(0..3)].min(b.len() - at);
                b[at..at + n].copy_from_slice(&v[..n]);
            }
            3 => b.truncate(at),
            4 => {
                let end = (at + rng.random_range(1..64)).min(b.len());
                b.drain(at..end);
            }
            5 => {
                let end = (at + rng.random_range(1..256)).min(b.len());
                let piece = b[at..end].to_vec();
                let to = rng.random_range(0..=b.len());
                b.splice(to..to, piece);
            }
            _ => {
                let other = &seeds[rng.random_range(0..seeds.len())].bytes;
                let from = rng.random_range(0..other.len());
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
            }
        }
    }
    b
}

fn structure_mutation(rng: &mut TestRng, seeds: &[Seed]) -> Vec<u8> {
    let seed = &seeds[rng.random_range(0..seeds.len())];
    let mut header = seed.header.clone();
    let mut events = seed.events.clone();
    for _ in 0..rng.random_range(1..=3) {
        match rng.random_range(0..8) {
            0..=3 if !events.is_empty() => {
                let i = rng.random_range(0..events.len());
                if let Some(e) = mutate_json(rng, &events[i]) {
                    events[i] = e;
                }
            }
            4 if !events.is_empty() => {
                let i = rng.random_range(0..events.len());
                match rng.random_range(0..3) {
                    0 => {
                        events.remove(i);
                    }
                    1 => {
                        let e = events[i].clone();
                        events.insert(rng.random_range(0..=events.len()), e);
                    }
                    _ => {
                        let j = rng.random_range(0..events.len());
                        events.swap(i, j);
                    }
                }
            }
            5 => {
                if let Some(session) = header.session.as_ref().and_then(|s| mutate_json(rng, s)) {
                    header.session = Some(session);
                }
            }
            6 => header.kernel_release = weird_string(rng),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let Ok(mut w) = CaptureWriter::new(&mut out, &header) else {
        return seed.bytes.clone();
    };
    for e in &events {
        if w.write(e).is_err() {
            return seed.bytes.clone();
        }
    }
    let lost_reported = if rng.random_bool(0.1) {
        LostTotals {
            ringbuf_full: interesting(rng),
            context_full: interesting(rng),
        }
    } else {
        LostTotals::default()
    };
    let finished = w.finish(FinishInfo {
        lost_reported,
        end: None,
    });
    if finished.is_err() {
        return seed.bytes.clone();
    }
    out
}

/// `value` with one of its JSON leaves changed to an edge value of its kind; `None` when the
/// result no longer has the type's shape.
fn mutate_json<T: serde::Serialize + serde::de::DeserializeOwned>(
    rng: &mut TestRng,
    value: &T,
) -> Option<T> {
    let mut v = serde_json::to_value(value).ok()?;
    let mut leaves = Vec::new();
    collect_leaves(&mut v, &mut leaves);
    if leaves.is_empty() {
        return None;
    }
    let n = leaves.len();
    let leaf = leaves.swap_remove(rng.random_range(0..n));
    *leaf = match leaf {
        serde_json::Value::Number(n)
            if n.is_i64() && n.as_i64() < Some(0) || rng.random_bool(0.1) =>
        {
            serde_json::json!(-(rng.random_range(0..200) as i64))
        }
        serde_json::Value::Number(_) => serde_json::json!(interesting(rng)),
        serde_json::Value::String(_) => serde_json::json!(weird_string(rng)),
        serde_json::Value::Bool(b) => serde_json::json!(!*b),
        _ => serde_json::Value::Null,
    };
    serde_json::from_value(v).ok()
}

fn collect_leaves<'a>(v: &'a mut serde_json::Value, out: &mut Vec<&'a mut serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => m.values_mut().for_each(|x| collect_leaves(x, out)),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| collect_leaves(x, out)),
        leaf => out.push(leaf),
    }
}

fn weird_string(rng: &mut TestRng) -> String {
    const PIECES: &[&str] = &[
        "intel",
        "arm-smmu-v3",
        "amd",
        "mock",
        "\x1b]0;owned\x07",
        "\x1b[2J",
        "\r\n",
        "\u{202e}",
        "\0",
        "é",
        "%s",
        "\t",
        "a\x7f",
    ];
    (0..rng.random_range(0..4))
        .map(|_| PIECES[rng.random_range(0..PIECES.len())])
        .collect()
}

// ---- the run's plumbing --------------------------------------------------------------

/// Aborts the run, keeping the input, when one input hangs or memory grows past the limit
/// (neither can be caught in-process).
fn watchdog(current: Arc<Mutex<Vec<u8>>>, started: Arc<AtomicU64>, out_dir: PathBuf) {
    let t0 = Instant::now();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        let since = started.load(Ordering::SeqCst);
        let hung =
            since != 0 && t0.elapsed().as_millis() as u64 > since - 1 + HANG.as_millis() as u64;
        let rss = resident_bytes();
        if hung || rss > MEMORY_LIMIT {
            let input = current.lock().map(|i| i.clone()).unwrap_or_default();
            let path = keep(&out_dir, &input);
            eprintln!(
                "fuzz failure: {} (input kept: {})",
                if hung {
                    format!("one input ran longer than {HANG:?}")
                } else {
                    format!("resident memory reached {} MiB", rss >> 20)
                },
                path.display()
            );
            std::process::exit(1);
        }
    });
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn keep(dir: &Path, input: &[u8]) -> PathBuf {
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("{:08x}.itc", crc32fast::hash(input)));
    let _ = std::fs::write(&path, input);
    path
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, chunk) in b.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&seed.wrapping_mul(i as u64 * 2 + 1).to_le_bytes());
    }
    b
}
