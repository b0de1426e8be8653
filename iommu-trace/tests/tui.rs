//! `iommu-trace top` in a real terminal: the binary runs inside tmux over committed
//! captures, keys are sent, and the pane is read back the way a person would see it.
//! tmux is required (Debian: `apt-get install tmux`); these tests fail without it.
//!
//! Also: the refresh-overhead benchmark (`cargo test --release --test tui -- --ignored
//! --nocapture bench`), which feeds 100,000 events/s through the TUI's model and draws it,
//! against a headless `state::State` over the same feed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use iommu_trace::capture::{CaptureReader, CaptureSource};
use iommu_trace::events::{DomainKind, Event, EventBody};

const BIN: &str = env!("CARGO_BIN_EXE_iommu-trace");

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn vtd_capture() -> PathBuf {
    repo("../tests/golden/6.12-vtd-exercise.itc")
}

fn lossy_capture() -> PathBuf {
    repo("tests/fixtures/6.12-vtd-lossy.itc")
}

fn events(path: &Path) -> Vec<Event> {
    CaptureReader::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|e| e.expect("the capture reads cleanly"))
        .collect()
}

/// A private tmux server (its own socket, no user config), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(name: &str) -> Tmux {
        let ok = Command::new("tmux").arg("-V").output();
        assert!(
            ok.as_ref().is_ok_and(|o| o.status.success()),
            "tmux is required for the real-terminal tests (apt-get install tmux): {ok:?}"
        );
        let t = Tmux {
            socket: format!("iommu-trace-test-{name}-{}", std::process::id()),
        };
        t.kill();
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-f", "/dev/null", "-L", &self.socket])
            .args(args)
            .output()
            .expect("running tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `script` in a `w`x`h` pane; the pane stays after it ends.
    fn start(&self, w: u16, h: u16, script: &str) {
        self.tmux(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            &w.to_string(),
            "-y",
            &h.to_string(),
            script,
        ]);
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    fn pane(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t"])
    }

    /// Waits until the pane shows `what`; panics with the pane if it never does.
    fn wait_for(&self, what: &str) -> String {
        let start = Instant::now();
        loop {
            let p = self.pane();
            if p.contains(what) {
                return p;
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("the pane never showed {what:?}; it shows:\n{p}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `top` with `args`, then what the terminal looks like after it exits.
fn script(args: &str) -> String {
    format!(
        "'{BIN}' top {args}; echo EXITED:$?; stty -a | tr ' ;' '\\n\\n' | grep -x -e '-\\?icanon' -e '-\\?echo'; echo TTY-CHECKED; sleep 600"
    )
}

/// After quitting: exit status 0, the screen given back (no TUI left on it), and the tty
/// back in canonical mode with echo.
fn assert_restored(t: &Tmux) {
    let p = t.wait_for("TTY-CHECKED");
    assert!(p.contains("EXITED:0"), "{p}");
    assert!(!p.contains("q quit"), "the TUI is still on screen:\n{p}");
    let lines: Vec<&str> = p.lines().map(str::trim).collect();
    assert!(
        lines.contains(&"icanon") && lines.contains(&"echo"),
        "tty not restored:\n{p}"
    );
}

struct Expected {
    events: usize,
    /// (domain, kind, maps, page-table pages allocated)
    domains: Vec<(u64, DomainKind, u64, u64)>,
    lost: u64,
}

fn expected(events: &[Event]) -> Expected {
    let mut maps: HashMap<u64, u64> = HashMap::new();
    let mut pt: HashMap<u64, u64> = HashMap::new();
    let mut allocs = Vec::new();
    let mut lost = 0;
    for e in events {
        match &e.body {
            EventBody::DomainAlloc(a) if a.errno == 0 => allocs.push((a.domain.0, a.kind)),
            EventBody::Map(m) => *maps.entry(m.domain.0).or_default() += 1,
            EventBody::PtAlloc(p) => *pt.entry(p.domain.0).or_default() += p.pages,
            EventBody::Lost(l) => lost += l.ringbuf_full + l.context_full,
            _ => {}
        }
    }
    Expected {
        events: events.len(),
        domains: allocs
            .into_iter()
            .map(|(d, k)| (d, k, maps[&d], pt[&d]))
            .collect(),
        lost,
    }
}

#[test]
fn replay_in_tmux_shows_the_capture_and_restores_the_terminal() {
    let cap = vtd_capture();
    let want = expected(&events(&cap));
    assert_eq!(want.domains.len(), 2, "the capture holds two intel domains");
    let t = Tmux::new("replay");
    t.start(
        120,
        40,
        &script(&format!("--from '{}' --speed 0", cap.display())),
    );
    let p = t.wait_for("ended)");
    assert!(p.contains(&format!("events {} ", want.events)), "{p}");
    assert!(p.contains("lost 0"), "{p}");
    assert!(p.contains("kernel 6.12"), "{p}");
    for (d, kind, maps, pt) in &want.domains {
        let id = format!("{:08x}", d & 0xffff_ffff);
        let row = p
            .lines()
            .find(|l| l.starts_with(&id))
            .unwrap_or_else(|| panic!("no row for domain {d:#x}:\n{p}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1], "intel", "{row}");
        assert_eq!(cells[2], kind.name(), "{row}");
        assert!(
            cells.contains(&maps.to_string().as_str()),
            "maps {maps}: {row}"
        );
        assert!(
            cells.contains(&format!("{pt}/{pt}").as_str()),
            "pt {pt}: {row}"
        );
        assert_eq!(cells.last(), Some(&"FREED"), "{row}");
    }
    // Sort: next order shown in the tabs line.
    t.keys(&["s"]);
    t.wait_for("sort: mapped");
    // Details of the selected domain, with the reference model's verdict.
    t.keys(&["Enter"]);
    t.wait_for("reference model: verified");
    t.keys(&["Escape"]);
    t.wait_for("PT C/U");
    // Owners view: the workload process, its allocations.
    t.keys(&["Tab"]);
    let p = t.wait_for("COMM");
    let row = p
        .lines()
        .find(|l| l.contains("iommu-trace") && l.split_whitespace().count() == 10)
        .unwrap_or_else(|| panic!("no process row:\n{p}"));
    // pid, comm, domains, mapped, pt c/u, pinned, vmpin (a capture: not read), memlock,
    // allocs, failed.
    assert_eq!(row.split_whitespace().nth(6), Some("-"), "no VmPin: {row}");
    assert_eq!(
        row.split_whitespace().nth(8),
        Some("3"),
        "3 allocations: {row}"
    );
    // Activity: the failed NEST_PARENT allocation with its errno.
    t.keys(&["Tab"]);
    let p = t.wait_for("failures (errno");
    assert!(
        p.lines()
            .any(|l| l.contains("intel") && l.contains("nest") && l.contains("EOPNOTSUPP")),
        "{p}"
    );
    t.keys(&["?"]);
    t.wait_for("this help");
    t.keys(&["Escape"]);
    t.wait_for("rates per second");
    t.keys(&["q"]);
    assert_restored(&t);
}

#[test]
fn lossy_capture_shows_the_lost_events() {
    let cap = lossy_capture();
    let want = expected(&events(&cap));
    assert!(want.lost > 0);
    let t = Tmux::new("lossy");
    t.start(
        120,
        40,
        &script(&format!("--from '{}' --speed 0", cap.display())),
    );
    let p = t.wait_for("ended)");
    let plural = if want.lost == 1 { "" } else { "s" };
    assert!(
        p.contains(&format!("LOST {} event{plural} ", want.lost)),
        "{p}"
    );
    t.keys(&["C-c"]);
    assert_restored(&t);
}

#[test]
fn sigterm_restores_the_terminal() {
    let t = Tmux::new("sigterm");
    let pidfile = std::env::temp_dir().join(format!("top-pid-{}", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    t.start(
        100,
        30,
        &format!(
            "sh -c 'echo $$ > {}; exec {BIN} top --from {} --speed 1'; echo EXITED:$?; stty -a | tr ' ;' '\\n\\n' | grep -x -e '-\\?icanon' -e '-\\?echo'; echo TTY-CHECKED; sleep 600",
            pidfile.display(),
            vtd_capture().display()
        ),
    );
    t.wait_for("q quit");
    let pid = std::fs::read_to_string(&pidfile).expect("pid file");
    let st = Command::new("kill")
        .args(["-TERM", pid.trim()])
        .status()
        .expect("kill");
    assert!(st.success());
    assert_restored(&t);
    let _ = std::fs::remove_file(&pidfile);
}

#[test]
fn panic_restores_the_terminal_and_reports() {
    let t = Tmux::new("panic");
    t.start(
        100,
        30,
        &script(&format!("--from '{}' --speed 0", vtd_capture().display())).replacen(
            "'",
            "IOMMU_TRACE_TUI_TEST_PANIC=1 '",
            1,
        ),
    );
    let p = t.wait_for("TTY-CHECKED");
    assert!(p.contains("EXITED:2"), "{p}");
    assert!(p.contains("panicked"), "the panic message is shown: {p}");
    assert!(!p.contains("q quit"), "the TUI is still on screen:\n{p}");
    let lines: Vec<&str> = p.lines().map(str::trim).collect();
    assert!(
        lines.contains(&"icanon") && lines.contains(&"echo"),
        "tty not restored:\n{p}"
    );
}

#[test]
fn not_a_terminal_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["top", "--from"])
        .arg(vtd_capture())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a terminal on stdout"), "{err}");
    assert!(out.stdout.is_empty(), "nothing may be drawn on a pipe");
}

// ---- benchmark ----------------------------------------------------------------------------

// The object view over a real 7.3 capture (the VM's exercise with the selftest mock's
// vIOMMU), cut just before the close of the second iommufd: its objects are alive, and
// the view shows them as a tree (IOAS -> HWPT -> vIOMMU -> vDEVICE and nested HWPT).
#[test]
fn object_view_in_tmux_shows_the_tree_of_a_7_3_capture() {
    use iommu_trace::capture::{CaptureReader, CaptureWriter, FinishInfo, LostTotals};
    use iommu_trace::events::DestroyHow;
    let golden = repo("../tests/golden/7.3-vtd-mock-objects.itc");
    let header = CaptureReader::open(&golden).unwrap().header().clone();
    let all = events(&golden);
    let cut = all
        .iter()
        .position(|e| matches!(&e.body, EventBody::ObjectDestroy(o) if o.how == DestroyHow::Close))
        .expect("the close of the second iommufd");
    let dir = std::env::temp_dir().join(format!("iommu-trace-objects-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cap = dir.join("before-close.itc");
    let mut w = CaptureWriter::create(&cap, &header).expect("create");
    for e in &all[..cut] {
        w.write(e).expect("write");
    }
    w.finish(FinishInfo {
        lost_reported: LostTotals::default(),
        end: None,
    })
    .expect("finish");

    let t = Tmux::new("objects");
    t.start(
        140,
        40,
        &script(&format!("--from '{}' --speed 0", cap.display())),
    );
    t.wait_for("ended)");
    t.keys(&["4"]);
    t.wait_for("iommufd objects alive");
    // The deepest line last: the whole tree is on screen.
    let p = t.wait_for("virt_id 0x99");
    let indent_of = |what: &str| {
        let line = p
            .lines()
            .find(|l| l.trim_start().starts_with(what))
            .unwrap_or_else(|| panic!("no {what:?} line:\n{p}"));
        line.len() - line.trim_start().len()
    };
    assert!(p.contains("object(s)"), "{p}");
    let (ioas, viommu, vdevice) = (
        indent_of("ioas "),
        indent_of("viommu "),
        indent_of("vdevice "),
    );
    assert!(ioas < indent_of("hwpt_paging "), "{p}");
    assert!(indent_of("hwpt_paging ") < viommu, "{p}");
    assert!(
        viommu < vdevice && viommu < indent_of("hwpt_nested "),
        "{p}"
    );
    assert!(p.contains("virt_id 0x99"), "{p}");
    assert!(!p.contains("OUTLIVED CLOSE"), "{p}");
    // The capture ends before the close: none of them was destroyed in it.
    assert!(
        p.lines()
            .filter(|l| l.contains(" age "))
            .all(|l| l.contains("never destroyed")),
        "{p}"
    );
    t.keys(&["q"]);
    assert_restored(&t);
    let _ = std::fs::remove_dir_all(&dir);
}
