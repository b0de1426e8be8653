//! The command line as a user meets it: errors that say what is wrong and what to do,
//! damaged captures read up to the last good frame, never a panic.

use std::path::Path;
use std::process::{Command, Output};

use iommu_trace::capture::{CaptureHeader, CaptureWriter, FinishInfo};
use iommu_trace::events::{Event, EventBody, KernelPtr, MapOp};
use iommu_trace::session::Session;

fn iommu_trace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iommu-trace"))
        .args(args)
        .output()
        .expect("running iommu-trace")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A header with an empty plan, as `record --pid` writes it when `filter_pid` is set.
fn minimal_header(filter_pid: Option<u32>) -> CaptureHeader {
    let plan = serde_json::from_value(serde_json::json!({
        "kernel_release": "test", "points": [], "drivers": [], "offsets": [], "blockers": [],
    }))
    .expect("a minimal plan");
    CaptureHeader::for_this_host(
        Session {
            plan,
            refused: vec![],
            filter_pid,
        },
        4096,
    )
}

fn write_capture(path: &Path, n: u64) {
    let header = minimal_header(None);
    let mut w = CaptureWriter::create(path, &header).expect("create");
    for i in 0..n {
        w.write(&Event {
            ts_ns: 1_000 + i * 10,
            cpu: 0,
            pid: 7,
            tid: 7,
            comm: "vmm".into(),
            cgroup_id: 1,
            body: EventBody::Map(MapOp {
                domain: KernelPtr(0xffff_8881_0000_0000),
                iova: 0x1000 * i,
                size: 0x1000,
                done: 0x1000,
                paddr: 0x20_0000 + 0x1000 * i,
                errno: 0,
                latency_ns: 100,
            }),
        })
        .expect("write");
        if i % 100 == 99 {
            w.flush().expect("flush");
        }
    }
    w.finish(FinishInfo::default()).expect("finish");
}

// A kernel without iommufd (this host's BTF, if it has one; a kernel without BTF is the
// unit test `a_kernel_without_btf_or_iommufd_is_refused_with_what_is_missing`).
#[test]
fn probes_reports_a_kernel_without_iommufd() {
    let dir = tempfile::tempdir().unwrap();
    let kallsyms = dir.path().join("kallsyms");
    std::fs::write(
        &kallsyms,
        "ffffffff81000000 T iommu_map\nffffffff81000010 T iommu_unmap\n",
    )
    .unwrap();
    let o = iommu_trace(&["probes", "--kallsyms", kallsyms.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("BLOCKED") && t.contains("CONFIG_IOMMUFD"), "{t}");
    assert!(
        t.contains("iommu_map") && t.contains("kprobe+kretprobe"),
        "{t}"
    );
    assert!(
        t.contains("hwpt_alloc_ioctl") && t.contains("missing"),
        "{t}"
    );
}

// A kernel description given as a file that is missing or not what it should be: the
// error names the file and what is wrong with it, not the running kernel's files.
#[test]
fn probes_names_a_bad_btf_or_kallsyms_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-btf");
    let o = iommu_trace(&["probes", "--btf", missing.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("--btf") && t.contains("missing-btf"), "{t}");
    assert!(!t.contains("/sys/kernel/btf/vmlinux is missing"), "{t}");

    let garbage = dir.path().join("not-btf");
    std::fs::write(&garbage, b"this is not BTF").unwrap();
    let o = iommu_trace(&["probes", "--btf", garbage.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("not-btf") && t.contains("malformed BTF"), "{t}");

    let kallsyms = dir.path().join("kallsyms");
    std::fs::write(&kallsyms, "hello\nworld\n").unwrap();
    let o = iommu_trace(&["probes", "--kallsyms", kallsyms.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("--kallsyms") && t.contains("no function symbols"),
        "{t}"
    );
    let o = iommu_trace(&["probes", "--kallsyms", missing.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("missing-btf") && t.contains("cannot read"),
        "{t}"
    );
}

#[test]
fn inspect_reads_a_truncated_capture_up_to_the_last_good_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cap.itc");
    write_capture(&path, 1000);
    let whole = iommu_trace(&["inspect", path.to_str().unwrap(), "--summary"]);
    assert!(whole.status.success(), "{}", text(&whole));
    assert!(text(&whole).contains("events: 1000"), "{}", text(&whole));
    assert!(text(&whole).contains("file: finalized"), "{}", text(&whole));

    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.itc");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let o = iommu_trace(&["inspect", cut.to_str().unwrap(), "--format", "jsonl"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let lines = String::from_utf8_lossy(&o.stdout).lines().count();
    assert!(lines > 0 && lines < 1000, "{lines} events from a cut file");
    assert!(t.contains("warning") && t.contains("offset"), "{t}");
}

#[test]
fn inspect_refuses_a_file_that_is_not_a_capture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "just some notes, not a capture at all\n").unwrap();
    let o = iommu_trace(&["inspect", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("not an iommu-trace capture"),
        "{}",
        text(&o)
    );
    let missing = iommu_trace(&["inspect", dir.path().join("nope.itc").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(!text(&missing).contains("panicked"), "{}", text(&missing));
}

#[test]
fn record_rejects_bad_flags_before_touching_the_kernel() {
    let o = iommu_trace(&["record", "-o", "/tmp/x.itc", "--duration=0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--duration"), "{}", text(&o));
    let o = iommu_trace(&["inspect", "x.itc", "--format", "xml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("xml"), "{}", text(&o));
    let o = iommu_trace(&["record", "-o", "/tmp/x.itc", "--rotate-keep", "3"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--rotate-size or --rotate-every"),
        "{}",
        text(&o)
    );
    for (size, says) in [
        ("1K", "too small"),
        ("12Q", "suffix"),
        ("12,5M", "not a size"),
    ] {
        let o = iommu_trace(&["record", "-o", "/tmp/x.itc", "--rotate-size", size]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(says), "{size}: {}", text(&o));
    }
}

#[test]
fn inspect_reads_files_that_are_not_one_recording_only_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.itc"), dir.path().join("b.itc"));
    write_capture(&a, 10);
    write_capture(&b, 10);
    let o = iommu_trace(&[
        "inspect",
        "--summary",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is a whole recording"), "{}", text(&o));
    let o = iommu_trace(&["replay", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn output_cut_short_by_a_pager_is_not_a_panic() {
    use std::io::Read;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cap.itc");
    write_capture(&path, 20_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_iommu-trace"))
        .args(["inspect", path.to_str().unwrap(), "--format", "jsonl"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line's worth, then close the pipe, as `| head -1` does.
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
}

// A capture whose header records no session this version can read: which probe points
// recorded is unknown, so nothing may pass; every reader says so.
#[test]
fn a_capture_without_a_readable_session_never_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-session.itc");
    let header = CaptureHeader {
        session: None,
        ..CaptureHeader::default()
    };
    CaptureWriter::create(&path, &header)
        .expect("create")
        .finish(FinishInfo::default())
        .expect("finish");
    let o = iommu_trace(&["replay", path.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(t.contains("no tracing session"), "{t}");
    assert!(!t.contains("every domain verified"), "{t}");
    let o = iommu_trace(&["inspect", path.to_str().unwrap(), "--summary"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("which probe points recorded is unknown"), "{t}");
}

#[test]
fn serve_rejects_a_rate_that_is_not_positive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cap.itc");
    write_capture(&path, 10);
    for rate in ["0", "-5", "NaN", "inf"] {
        let flag = format!("--rate={rate}");
        let o = iommu_trace(&["serve", "--from", path.to_str().unwrap(), &flag]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{rate}: {t}");
        assert!(
            t.contains("--rate") && t.contains("out of range"),
            "{rate}: {t}"
        );
    }
}

// A capture smaller than one feed batch, repeated until stopped: the feed must still give
// way to the stop signal (it once spun inside one poll and ignored SIGTERM).
#[test]
fn serve_repeating_a_small_capture_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.itc");
    write_capture(&path, 10);
    let ready = dir.path().join("ready");
    let mut child = Command::new(env!("CARGO_BIN_EXE_iommu-trace"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--repeat",
            "0",
            "--from",
        ])
        .arg(&path)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let start = std::time::Instant::now();
    while !ready.exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "serve never became ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Let it repeat for a while, then ask it to stop.
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stopped = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        if stopped.elapsed() > std::time::Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("serve --repeat 0 ignored SIGTERM for 10 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn golden(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(name)
}

/// Writes `events` under `header` to `path`, finishing with `lost_reported` at close.
fn rewrite(
    path: &Path,
    header: &CaptureHeader,
    events: &[Event],
    lost_reported: iommu_trace::capture::LostTotals,
) {
    let mut w = CaptureWriter::create(path, header).expect("create");
    for e in events {
        w.write(e).expect("write");
    }
    w.finish(FinishInfo {
        lost_reported,
        end: None,
    })
    .expect("finish");
}

// A verdict is only as strong as what was read: 0 verified, 1 diverged, 3 could not verify
// everything (damaged, truncated, loss anywhere). Before, all of these but the divergence
// exited 0 or 1 alike, and a damaged first frame "verified" 0 events with exit 0.
#[test]
fn replay_exit_status_tells_diverged_from_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let (header, events, _) = iommu_trace::capture::read_all(golden("6.12-vtd-exercise.itc"))
        .expect("the golden capture");
    let run = |p: &Path| {
        let o = iommu_trace(&["replay", p.to_str().unwrap()]);
        (o.status.code(), text(&o))
    };

    let (code, t) = run(&golden("6.12-vtd-exercise.itc"));
    assert_eq!(code, Some(0), "{t}");

    // A page free dropped: the model diverges.
    let mut edited = events.clone();
    let i = edited
        .iter()
        .position(|e| matches!(e.body, EventBody::PtFree(_)))
        .expect("a pt_free");
    edited.remove(i);
    let diverging = dir.path().join("diverging.itc");
    rewrite(&diverging, &header, &edited, Default::default());
    let (code, t) = run(&diverging);
    assert_eq!(code, Some(1), "{t}");

    // Loss reported only at close, in the trailer.
    let lossy = dir.path().join("lossy-at-close.itc");
    rewrite(
        &lossy,
        &header,
        &events,
        iommu_trace::capture::LostTotals {
            ringbuf_full: 3,
            context_full: 0,
        },
    );
    let (code, t) = run(&lossy);
    assert_eq!(code, Some(3), "{t}");
    assert!(t.contains("reported 3 event(s) lost at close"), "{t}");

    // Cut short, and damaged in its first event frame.
    let whole = std::fs::read(golden("6.12-vtd-exercise.itc")).unwrap();
    let cut = dir.path().join("cut.itc");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let (code, t) = run(&cut);
    assert_eq!(code, Some(3), "{t}");
    assert!(t.contains("incomplete"), "{t}");
    let header_len = 20 + u32::from_le_bytes(whole[12..16].try_into().unwrap()) as usize;
    let mut damaged = whole.clone();
    damaged[header_len + 8 + 3] ^= 0xff;
    let damaged_path = dir.path().join("damaged.itc");
    std::fs::write(&damaged_path, &damaged).unwrap();
    let (code, t) = run(&damaged_path);
    assert_eq!(code, Some(3), "{t}");
    assert!(!t.contains("every domain verified"), "{t}");

    // Losses in the stream (the lossy fixture recorded with a one-page ring).
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/6.12-vtd-lossy.itc");
    let (code, t) = run(&fixture);
    assert_eq!(code, Some(3), "{t}");
}

// A traced process can name itself with escape sequences (15 bytes of comm), and a file can
// hold any bytes: what inspect and probes print must not reach the terminal raw.
#[test]
fn text_output_escapes_control_characters() {
    use iommu_trace::events::{AllocOp, DomainAlloc, DomainKind, Geometry};
    let dir = tempfile::tempdir().unwrap();
    let (header, _, _) =
        iommu_trace::capture::read_all(golden("6.12-vtd-exercise.itc")).expect("golden");
    let evil = Event {
        ts_ns: 1_000,
        cpu: 0,
        pid: 7,
        tid: 7,
        comm: "\x1b]0;pwned\x07\n".into(),
        cgroup_id: 1,
        body: EventBody::DomainAlloc(DomainAlloc {
            driver: "intel\x1b[2J".into(),
            op: AllocOp::AllocUser,
            kind: DomainKind::Paging,
            flags: 0,
            data_type: 0,
            data_len: 0,
            data: None,
            parent: KernelPtr(0),
            viommu_id: None,
            domain: KernelPtr(0),
            errno: 95,
            latency_ns: 1,
            geometry: Geometry::default(),
        }),
    };
    let path = dir.path().join("evil.itc");
    rewrite(&path, &header, &[evil], Default::default());
    for args in [vec!["inspect"], vec!["inspect", "--summary"]] {
        let mut a = args.clone();
        a.push(path.to_str().unwrap());
        let o = iommu_trace(&a);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(
            !t.contains('\x1b') && !t.contains('\x07'),
            "{args:?}: {t:?}"
        );
        assert!(t.contains("\\u{1b}"), "{args:?}: {t:?}");
    }
    let kallsyms = dir.path().join("kallsyms");
    std::fs::write(
        &kallsyms,
        "ffffffff81000000 T iommu_unmap\nffffffff81000010 t iommu_map.isra.0\x1b[2J\n",
    )
    .unwrap();
    let o = iommu_trace(&["probes", "--kallsyms", kallsyms.to_str().unwrap()]);
    let t = text(&o);
    assert!(t.contains("iommu_map.isra.0\\u{1b}[2J"), "{t:?}");
    assert!(!t.contains('\x1b'), "{t:?}");
}

// Numbers a user can type that once panicked (exit 101): each is refused by clap with a
// message, exit 2.
#[test]
fn extreme_numbers_are_refused_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cap.itc");
    write_capture(&path, 10);
    let p = path.to_str().unwrap();
    for args in [
        vec!["record", "-o", "/tmp/never.itc", "--duration", "1e300"],
        vec!["record", "-o", "/tmp/never.itc", "--duration=-1"],
        vec!["serve", "--from", p, "--rate", "1e-20"],
        vec!["top", "--from", p, "--speed", "1e300"],
        vec!["top", "--from", p, "--speed", "1e-300"],
    ] {
        let o = iommu_trace(&args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {t}");
        assert!(t.contains("out of range"), "{args:?}: {t}");
    }
}

// Standard output that cannot be written (a full disk) is an error with a message, exit 2.
#[test]
fn unwritable_output_is_an_error_not_a_panic() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cap.itc");
    write_capture(&path, 10);
    let p = path.to_str().unwrap();
    for args in [
        vec!["inspect", "--summary", p],
        vec!["replay", "--json", p],
        vec!["probes", "--json"],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let o = Command::new(env!("CARGO_BIN_EXE_iommu-trace"))
            .args(&args)
            .stdout(Stdio::from(full))
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("writing to standard output"),
            "{args:?}: {err}"
        );
    }
}

// Where a regular file is expected, anything else is refused at once, before it is opened
// (opening a FIFO blocks; /dev/zero never ends), and an OS error is said once.
#[test]
fn files_that_are_not_regular_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let f = fifo.to_str().unwrap();
    for args in [
        vec!["inspect", f],
        vec!["replay", f],
        vec!["probes", "--btf", f],
        vec!["probes", "--kallsyms", f],
        vec!["probes", "--btf", "/dev/zero"],
        vec!["probes", "--kallsyms", "/dev/zero"],
    ] {
        let started = std::time::Instant::now();
        let o = iommu_trace(&args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {t}");
        assert!(t.contains("not a regular file"), "{args:?}: {t}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{args:?}"
        );
    }
    let o = iommu_trace(&["inspect", "/nonexistent/cap.itc"]);
    let t = text(&o);
    assert_eq!(t.matches("os error 2").count(), 1, "{t}");
}

// A port in use: the error says so (and not, for other causes, that it is in use).
#[test]
fn serve_explains_a_port_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cap.itc");
    write_capture(&path, 10);
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let o = iommu_trace(&["serve", "--listen", &addr, "--from", path.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("holds that port"), "{t}");

    // An address this host does not have (TEST-NET-1, RFC 5737): said so, not "port taken".
    let o = iommu_trace(&[
        "serve",
        "--listen",
        "192.0.2.1:9464",
        "--from",
        path.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("no such address") && !t.contains("holds that port"),
        "{t}"
    );
}

// One map of 128 TiB at a 4 KiB-aligned physical address would make a model build 2^35
// PTEs (past 4 GB in 13 s before); the replay refuses it against its page budget instead,
// names the event and the size, and says the domain could not be verified (exit 3). Run
// under a 1 GiB address-space limit, so growing past it fails the test.
#[test]
fn a_map_beyond_the_models_budget_is_unverifiable_not_unbounded() {
    let dir = tempfile::tempdir().unwrap();
    let (header, mut events, _) = iommu_trace::capture::read_all(golden("6.12-vtd-exercise.itc"))
        .expect("the golden capture");
    let i = events
        .iter()
        .position(|e| matches!(e.body, EventBody::Map(_)))
        .expect("a map");
    let mut huge = events[i].clone();
    let EventBody::Map(m) = &mut huge.body else {
        unreachable!()
    };
    (m.iova, m.size, m.done, m.paddr, m.errno) = (1 << 47, 1 << 47, 1 << 47, 0x1000, 0);
    events.insert(i + 1, huge);
    let path = dir.path().join("huge-map.itc");
    rewrite(&path, &header, &events, Default::default());

    for extra in [None, Some("--what-if")] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iommu-trace"));
        cmd.arg("replay").arg(&path).args(extra);
        limit_address_space(&mut cmd, 1 << 30);
        let t = std::time::Instant::now();
        let o = cmd.output().expect("running iommu-trace");
        let out = text(&o);
        assert_eq!(o.status.code(), Some(3), "{extra:?}: {out}");
        assert!(out.contains("beyond the replay's budget"), "{out}");
        assert!(out.contains(&format!("event {}", i + 1)), "{out}");
        assert!(out.contains("0x800000000000"), "{out}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "{:?}",
            t.elapsed()
        );
    }
}

fn limit_address_space(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

// A capture recorded with `--pid` lacks what other processes did to its objects: its object
// graph is not checked (and so cannot fail), where the same events unfiltered break it.
#[test]
fn a_pid_filtered_capture_does_not_check_the_object_graph() {
    use iommu_trace::events::{DestroyHow, ObjectAlloc, ObjectDestroy};
    let dir = std::env::temp_dir().join(format!("iommu-trace-cli-pid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ev = |ts_ns: u64, body: EventBody| Event {
        ts_ns,
        cpu: 0,
        pid: 7,
        tid: 7,
        comm: "vmm".into(),
        cgroup_id: 1,
        body,
    };
    let alloc = |id: u32| {
        EventBody::ObjectAlloc(ObjectAlloc {
            object: "ioas".into(),
            id,
            obj: KernelPtr(0xffff_8881_0000_0000 + id as u64 * 0x100),
            ictx: KernelPtr(0xffff_8881_1000_0000),
            refs: Default::default(),
            domain: None,
            virt_id: None,
            size: 224,
            errno: 0,
            latency_ns: 10,
        })
    };
    // Two IOAS; the close destroys one and the other stays: a broken graph, unless the
    // capture was filtered.
    let events = [
        ev(1_000, alloc(1)),
        ev(2_000, alloc(2)),
        ev(
            3_000,
            EventBody::ObjectDestroy(ObjectDestroy {
                object: "ioas".into(),
                id: 1,
                obj: KernelPtr(0xffff_8881_0000_0100),
                how: DestroyHow::Close,
            }),
        ),
    ];
    for (name, filter_pid, want_rc, want) in [
        ("all.itc", None, 1, "outlived the close"),
        ("pid.itc", Some(7), 0, "not checked: recorded with --pid 7"),
    ] {
        let path = dir.join(name);
        rewrite(
            &path,
            &minimal_header(filter_pid),
            &events,
            Default::default(),
        );
        let o = iommu_trace(&["replay", path.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(want_rc), "{name}: {text}");
        assert!(text.contains(want), "{name}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn version_names_the_capture_format_and_the_tested_kernels() {
    let o = iommu_trace(&["--version"]);
    assert!(o.status.success());
    let t = text(&o);
    let format = iommu_trace::capture::FORMAT_VERSION;
    assert!(t.contains(&format!("capture format {format}")), "{t}");
    for k in iommu_trace::tested::TESTED_KERNELS {
        assert!(
            t.contains(&format!("Linux {} {}", k.version, k.arch)),
            "{t}"
        );
    }
}

#[test]
fn completions_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let o = iommu_trace(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", text(&o));
        let script = String::from_utf8(o.stdout).unwrap();
        for sub in ["record", "inspect", "replay", "serve", "top", "probes"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
        assert!(
            script.contains("ringbuf-size"),
            "{shell} completion lacks record's flags"
        );
    }
    let o = iommu_trace(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("possible values"), "{}", text(&o));
}

#[test]
fn man_pages_are_written_one_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let o = iommu_trace(&["man", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for page in [
        "iommu-trace.1",
        "iommu-trace-record.1",
        "iommu-trace-replay.1",
    ] {
        let roff = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(
            roff.starts_with(".ie") || roff.contains(".TH"),
            "{page}: {roff:.200}"
        );
    }
    let record = std::fs::read_to_string(dir.path().join("iommu-trace-record.1")).unwrap();
    assert!(
        record.contains("ringbuf"),
        "the record page lacks its flags"
    );
    // A hidden command gets no page.
    assert!(!dir.path().join("iommu-trace-man.1").exists());
}
