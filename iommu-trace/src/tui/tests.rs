//! Rendering tests: fixed event streams -> model -> one frame in ratatui's TestBackend.
//! Golden screens live in `tests/fixtures/tui/` (regenerate with `UPDATE_GOLDEN=1`, then
//! review the diff); other tests assert the exact lines a user relies on.

use std::path::PathBuf;

use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::Color;
use ratatui::Terminal;

use super::app::{Action, App, View};
use super::board::{Mode, Model, SessionInfo, GROWTH_POINTS, HISTORY_TOTAL, MAX_FREED};
use super::render;
use crate::capture::{CaptureReader, CaptureSource};
use crate::events::{
    AllocOp, DomainAlloc, DomainFree, DomainKind, Event, EventBody, Geometry, HwptAlloc, KernelPtr,
    Lost, MapOp, PtCause, PtPages,
};

const MS: u64 = 1_000_000;
const T0: u64 = 100_000 * MS;

fn ev(ts_ns: u64, pid: u32, comm: &str, cgroup_id: u64, body: EventBody) -> Event {
    Event {
        ts_ns,
        cpu: 0,
        pid,
        tid: pid,
        comm: comm.into(),
        cgroup_id,
        body,
    }
}

fn alloc(
    driver: &str,
    kind: DomainKind,
    flags: u32,
    parent: u64,
    domain: u64,
    errno: i32,
) -> EventBody {
    EventBody::DomainAlloc(DomainAlloc {
        driver: driver.into(),
        op: AllocOp::AllocUser,
        kind,
        flags,
        data_type: 0,
        data_len: 0,
        data: None,
        parent: KernelPtr(parent),
        viommu_id: None,
        domain: KernelPtr(domain),
        errno,
        latency_ns: 40_000,
        geometry: Geometry::default(),
    })
}

fn map(domain: u64, iova: u64, size: u64, unmap: bool) -> EventBody {
    let m = MapOp {
        domain: KernelPtr(domain),
        iova,
        size,
        done: size,
        paddr: 0,
        errno: 0,
        latency_ns: 5_000,
    };
    if unmap {
        EventBody::Unmap(m)
    } else {
        EventBody::Map(m)
    }
}

fn pt(domain: u64, pages: u64, charged: bool, cause: PtCause, free: bool) -> EventBody {
    let p = PtPages {
        domain: KernelPtr(domain),
        pages,
        charged,
        memcg_id: if charged { 7 } else { 0 },
        cause,
    };
    if free {
        EventBody::PtFree(p)
    } else {
        EventBody::PtAlloc(p)
    }
}

const D1: u64 = 0xffff_8881_0000_1000;
const D2: u64 = 0xffff_8881_0000_2000;
const D3: u64 = 0xffff_8881_0000_3000;

/// A fixed stream: an intel NEST_PARENT paging domain (qemu, cgroup 7) with maps and
/// page-table pages, a mock nested domain on it, a failed DIRTY_TRACKING allocation, a
/// freed auto domain (vfio-test, cgroup 9), and one loss.
fn synthetic() -> Vec<Event> {
    let q = |t: u64, b| ev(T0 + t * MS, 4242, "qemu-system-x86", 7, b);
    let v = |t: u64, b| ev(T0 + t * MS, 777, "vfio-test", 9, b);
    vec![
        q(0, alloc("intel", DomainKind::Paging, 1, 0, D1, 0)),
        q(0, pt(D1, 1, false, PtCause::Alloc, false)),
        q(10, pt(D1, 3, true, PtCause::Map, false)),
        q(10, map(D1, 0x1000_0000, 2 << 20, false)),
        q(20, map(D1, 0x4000_0000, 1 << 30, false)),
        q(30, alloc("mock", DomainKind::Nested, 0, D1, D2, 0)),
        q(40, alloc("intel", DomainKind::Paging, 2, 0, 0, 95)),
        q(
            40,
            EventBody::HwptAlloc(HwptAlloc {
                flags: 2,
                dev_id: 1,
                pt_id: 2,
                data_type: 0,
                data_len: 0,
                hwpt_id: 0,
                errno: 95,
                latency_ns: 60_000,
            }),
        ),
        v(1000, alloc("intel", DomainKind::Auto, 0, 0, D3, 0)),
        v(1000, pt(D3, 1, false, PtCause::Alloc, false)),
        v(1100, pt(D3, 1, true, PtCause::Map, false)),
        v(1100, map(D3, 0x10_0000, 4096, false)),
        v(1200, map(D3, 0x10_0000, 4096, true)),
        v(1300, pt(D3, 1, false, PtCause::Free, true)),
        v(1300, pt(D3, 1, true, PtCause::Free, true)),
        v(
            1300,
            EventBody::DomainFree(DomainFree {
                domain: KernelPtr(D3),
                latency_ns: 9_000,
            }),
        ),
        q(2500, map(D1, 0x5000_0000, 64 << 10, false)),
        ev(
            T0 + 2600 * MS,
            0,
            "",
            0,
            EventBody::Lost(Lost {
                ringbuf_full: 3,
                context_full: 0,
            }),
        ),
    ]
}

fn meta() -> SessionInfo {
    SessionInfo {
        mode: Mode::Live,
        kernel_release: "6.12.0-test".into(),
        probes_attached: 9,
        probes_missing: vec!["hwpt_paging_alloc".into()],
        replay: Default::default(),
        verification_gaps: Vec::new(),
    }
}

fn model_of(events: Vec<Event>, meta: SessionInfo) -> Model {
    let mut m = Model::new(meta);
    for e in events {
        m.apply(e);
    }
    m
}

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn capture(rel: &str) -> (Vec<Event>, SessionInfo) {
    let path = repo_file(rel);
    let r = CaptureReader::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let meta = SessionInfo {
        mode: Mode::Replay {
            file: path.display().to_string(),
            speed: 0.0,
        },
        kernel_release: r.header().kernel_release.clone(),
        probes_attached: 9,
        probes_missing: Vec::new(),
        replay: Default::default(),
        verification_gaps: Vec::new(),
    };
    let events = r.map(|e| e.expect("capture reads cleanly")).collect();
    (events, meta)
}

fn render_with(app: &App, model: &Model, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    t.draw(|f| render::draw(f, app, model)).expect("draw");
    t
}

fn lines(t: &Terminal<TestBackend>) -> Vec<String> {
    let buf = t.backend().buffer();
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect()
}

fn screen(app: &App, model: &Model, w: u16, h: u16) -> Vec<String> {
    lines(&render_with(app, model, w, h))
}

/// Compares with a golden screen under tests/fixtures/tui (UPDATE_GOLDEN=1 rewrites it).
fn golden(name: &str, got: &[String]) {
    let path = repo_file(&format!("tests/fixtures/tui/{name}.txt"));
    let text = got.join("\n") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&path, &text).expect("write golden");
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(
        text,
        want,
        "screen differs from {} (UPDATE_GOLDEN=1 to accept, then review)",
        path.display()
    );
}

fn key(app: &mut App, model: &Model, code: KeyCode) -> Action {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE), model)
}

#[test]
fn golden_domains_80x24() {
    let m = model_of(synthetic(), meta());
    golden("domains-80x24", &screen(&App::default(), &m, 80, 24));
}

#[test]
fn golden_domains_160x48() {
    let m = model_of(synthetic(), meta());
    golden("domains-160x48", &screen(&App::default(), &m, 160, 48));
}

#[test]
fn golden_activity_80x24() {
    let m = model_of(synthetic(), meta());
    let app = App {
        view: View::Activity,
        ..App::default()
    };
    golden("activity-80x24", &screen(&app, &m, 80, 24));
}

#[test]
fn activity_view_explains_the_last_pin_refusal() {
    let mut events = synthetic();
    let refused = crate::state::tests::pin(0x1000, 4242, 8, 8, 12, 12);
    events.push(ev(9_000_000_000, 4242, "qemu-system-x86", 7, refused));
    let m = model_of(events, meta());
    let app = App {
        view: View::Activity,
        ..App::default()
    };
    let text = screen(&app, &m, 120, 40).join("\n");
    assert!(text.contains("pin refused: memlock_user x1"), "{text}");
    assert!(
        text.contains("last: ENOMEM: pinning 32.0 KiB more would take uid 107"),
        "{text}"
    );
}

/// A VMM's object graph (IOAS, paging and NEST_PARENT HWPTs, a vIOMMU with a vDEVICE and a
/// nested HWPT, its device), and a second process whose iommufd was closed while one of its
/// objects stayed alive (flagged).
fn object_events() -> Vec<Event> {
    use crate::events::{DestroyHow, ObjectAlloc, ObjectDestroy};
    let obj = |t: u64, pid: u32, ictx: u64, object: &str, id: u32, refs: &[(&str, u32)]| {
        let comm = if pid == 4242 {
            "qemu-system-x86"
        } else {
            "vfio-test"
        };
        ev(
            T0 + t * MS,
            pid,
            comm,
            7,
            EventBody::ObjectAlloc(ObjectAlloc {
                object: object.into(),
                id,
                obj: KernelPtr(
                    0xffff_8881_0000_0000 + (pid as u64) * 0x10_0000 + id as u64 * 0x100,
                ),
                ictx: KernelPtr(ictx),
                refs: refs.iter().map(|(r, i)| (r.to_string(), *i)).collect(),
                domain: object
                    .starts_with("hwpt")
                    .then_some(KernelPtr(0xffff_8881_0a2c_0000 + id as u64 * 0x1000)),
                virt_id: (object == "vdevice").then_some(0x99),
                size: 128,
                errno: 0,
                latency_ns: 1_000,
            }),
        )
    };
    let (a, b) = (0xffff_8881_4000_0000, 0xffff_8881_5000_0000);
    vec![
        obj(0, 4242, a, "ioas", 1, &[]),
        obj(1, 4242, a, "device", 2, &[]),
        obj(2, 4242, a, "hwpt_paging", 3, &[("ioas", 1), ("device", 2)]),
        obj(3, 4242, a, "hwpt_paging", 4, &[("ioas", 1), ("device", 2)]),
        obj(4, 4242, a, "viommu", 5, &[("hwpt", 4)]),
        obj(5, 4242, a, "vdevice", 6, &[("viommu", 5), ("device", 2)]),
        obj(
            6,
            4242,
            a,
            "hwpt_nested",
            7,
            &[("parent", 4), ("viommu", 5)],
        ),
        // qemu maps 4 pages into IOAS 1: the pin comes just before its IOAS_MAP.
        ev(
            T0 + 6 * MS,
            4242,
            "qemu-system-x86",
            7,
            crate::state::tests::pin(0x7000, 4242, 4, 4, 4, 0),
        ),
        ev(
            T0 + 6 * MS,
            4242,
            "qemu-system-x86",
            7,
            EventBody::IoasMap(crate::events::IoasOp {
                ictx: KernelPtr(a),
                ioas: 1,
                iova: 0x10_0000,
                length: 0x4000,
                ..Default::default()
            }),
        ),
        obj(7, 777, b, "ioas", 1, &[]),
        obj(8, 777, b, "ioas", 2, &[]),
        ev(
            T0 + 9 * MS,
            777,
            "vfio-test",
            9,
            EventBody::ObjectDestroy(ObjectDestroy {
                object: "ioas".into(),
                id: 1,
                obj: KernelPtr(0xffff_8881_0000_0000 + 777 * 0x10_0000 + 0x100),
                how: DestroyHow::Close,
            }),
        ),
    ]
}

#[test]
fn golden_objects_100x24() {
    let mut m = model_of(object_events(), meta());
    m.advance(T0 + 1_000 * MS);
    let app = App {
        view: View::Objects,
        ..App::default()
    };
    let got = screen(&app, &m, 100, 24);
    golden("objects-100x24", &got);
    // The nested HWPT made through the vIOMMU hangs under the vIOMMU, not its parent.
    let at = |what: &str| got.iter().position(|l| l.contains(what)).unwrap();
    assert!(at("viommu 5") < at("hwpt_nested 7"));
    assert!(got[at("ioas 2")].contains("OUTLIVED CLOSE"), "{got:#?}");
    // An empty graph says why it may be empty.
    let empty = screen(&app, &model_of(vec![], meta()), 100, 24);
    assert!(
        empty.iter().any(|l| l.contains("before format 3")),
        "{empty:#?}"
    );
}

#[test]
fn domains_table_rows_and_header_counts() {
    let m = model_of(synthetic(), meta());
    let s = screen(&App::default(), &m, 80, 24);
    assert_eq!(
        s[0],
        " LIVE │ kernel 6.12.0-test │ probes 9, 1 missing │ up 2.5s"
    );
    assert_eq!(
        s[1],
        " LOST 3 events  events 18 (8/s) │ domains 2 live, 1 freed │ pt 4 (3 charged)"
    );
    let wide = screen(&App::default(), &m, 160, 48);
    assert!(
        wide[1].contains("LOST 3 events (ring buffer full 3, context table full 0)"),
        "{}",
        wide[1]
    );
    // Sorted by page-table pages: the intel domain (4 pages: 3 charged, 1 not) first, the
    // mock nested one, then the freed auto domain, marked.
    let rows: Vec<&String> = s[4..].iter().filter(|l| l.starts_with("0000")).collect();
    assert_eq!(rows.len(), 3, "{s:#?}");
    assert_eq!(
        rows[0],
        "00001000 intel   paging nest  4242 qemu-sy 1.0G    3/1     2.5s   live"
    );
    assert_eq!(
        rows[1],
        "00002000 mock    nested -     4242 qemu-sy 0B      0/0     2.5s   live"
    );
    assert_eq!(
        rows[2],
        "00003000 intel   auto   -     777 vfio-tes 0B      0/0     300ms  FREED"
    );
    assert_eq!(s[23], render::FOOTER);
}

#[test]
fn lost_indicator_is_loud() {
    let m = model_of(synthetic(), meta());
    let t = render_with(&App::default(), &m, 80, 24);
    let l = lines(&t);
    let x = l[1].find("LOST").expect("lost shown") as u16;
    let cell = &t.backend().buffer()[(x, 1)];
    assert_eq!(cell.bg, Color::Red);
}

#[test]
fn vtd_capture_rows_match_the_capture() {
    let (events, meta) = capture("../tests/golden/6.12-vtd-exercise.itc");
    // Expected numbers, from the capture itself.
    let mut maps: std::collections::HashMap<u64, u64> = Default::default();
    let mut pt_alloc: std::collections::HashMap<u64, u64> = Default::default();
    let mut ok_allocs = Vec::new();
    for e in &events {
        match &e.body {
            EventBody::Map(m) => *maps.entry(m.domain.0).or_default() += 1,
            EventBody::PtAlloc(p) => *pt_alloc.entry(p.domain.0).or_default() += p.pages,
            EventBody::DomainAlloc(a) if a.errno == 0 => ok_allocs.push((a.domain.0, a.kind)),
            _ => {}
        }
    }
    assert_eq!(ok_allocs.len(), 2);
    let n = events.len();
    let m = model_of(events, meta);
    let s = screen(&App::default(), &m, 160, 48);
    assert!(s[1].contains(&format!("events {n} ")), "{}", s[1]);
    assert!(s[1].contains("lost 0"), "{}", s[1]);
    for (d, kind) in ok_allocs {
        let row = s
            .iter()
            .find(|l| l.starts_with(&format!("{d:#x}")))
            .unwrap_or_else(|| panic!("no row for {d:#x}: {s:#?}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1], "intel", "{row}");
        assert_eq!(cells[2], kind.name(), "{row}");
        assert!(cells.contains(&maps[&d].to_string().as_str()), "{row}");
        let pt = pt_alloc[&d];
        assert!(cells.contains(&format!("{pt}/{pt}").as_str()), "{row}");
        assert_eq!(cells.last(), Some(&"FREED"), "{row}");
    }
}

#[test]
fn detail_view_shows_events_growth_and_verdict() {
    let (events, meta) = capture("../tests/golden/6.12-vtd-exercise.itc");
    let m = model_of(events, meta);
    let mut app = App::default();
    assert_eq!(key(&mut app, &m, KeyCode::Enter), Action::None);
    assert!(app.detail.is_some());
    let s = screen(&app, &m, 120, 40);
    let text = s.join("\n");
    assert!(text.contains("reference model: verified"), "{text}");
    assert!(text.contains("page-table growth"), "{text}");
    assert!(text.contains("recent events"), "{text}");
    assert!(text.contains("FREED at +"), "{text}");
    key(&mut app, &m, KeyCode::Esc);
    assert!(app.detail.is_none());
}

#[test]
fn lossy_capture_shows_loss() {
    let (events, meta) = capture("tests/fixtures/6.12-vtd-lossy.itc");
    let lost: u64 = events
        .iter()
        .map(|e| match &e.body {
            EventBody::Lost(l) => l.ringbuf_full + l.context_full,
            _ => 0,
        })
        .sum();
    assert!(lost > 0);
    let m = model_of(events, meta);
    let s = screen(&App::default(), &m, 80, 24);
    let plural = if lost == 1 { "" } else { "s" };
    assert!(
        s[1].contains(&format!("LOST {lost} event{plural} ")),
        "{}",
        s[1]
    );
}

#[test]
fn owners_view_counts() {
    let mut events = synthetic();
    // qemu's mapping pins 4 pages under uid 107's 16-page limit, 15 pages locked in all.
    let pin = crate::state::tests::pin(0x1000, 4242, 4, 4, 15, 0);
    events.push(ev(9_000_000_000, 4242, "qemu-system-x86", 7, pin));
    let mut m = model_of(events, meta());
    // Live: the kernel's VmPin read twice, equal, no pin between: settled, and it matches.
    let vm_pin = crate::procfs::MemoryHeld {
        pinned_bytes: 16384,
        locked_bytes: 0,
    };
    m.reconcile_pins(&[(4242, Some(vm_pin))], 1_000_000_000);
    m.reconcile_pins(&[(4242, Some(vm_pin))], 2_000_000_000);
    let app = App {
        view: View::Owners,
        ..App::default()
    };
    let s = screen(&app, &m, 80, 24);
    let row = |p: &str| {
        s.iter()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no {p}: {s:#?}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    // pid, comm, domains, mapped, pt c/u, pinned, the kernel's VmPin (matching), memlock
    // headroom (1 of 16 pages), allocs, failed (one domain op + one ioctl).
    assert_eq!(
        row("4242 "),
        [
            "4242",
            "qemu-system-",
            "2",
            "1.0G",
            "3/1",
            "16.0K",
            "=16.0K",
            "6%",
            "3",
            "2"
        ]
    );
    assert_eq!(
        row("777 "),
        [
            "777",
            "vfio-test",
            "0",
            "0B",
            "0/0",
            "0B",
            "-",
            "-",
            "1",
            "0"
        ]
    );
    assert_eq!(row("7 "), ["7", "2", "1.0G", "3/1", "16.0K", "-", "3", "2"]);
    // Under 10% headroom the row is red.
    let t = render_with(&app, &m, 80, 24);
    let y = s
        .iter()
        .position(|l| l.starts_with("4242 "))
        .expect("qemu's row") as u16;
    assert_eq!(t.backend().buffer()[(0, y)].fg, ratatui::style::Color::Red);
}

#[test]
fn keys_sort_filter_pause_help_quit() {
    let m = model_of(synthetic(), meta());
    let mut app = App::default();
    key(&mut app, &m, KeyCode::Char('s'));
    assert_eq!(app.sort.name(), "mapped");
    key(&mut app, &m, KeyCode::Char('/'));
    for c in "driver=mock".chars() {
        key(&mut app, &m, KeyCode::Char(c));
    }
    key(&mut app, &m, KeyCode::Enter);
    let rows = app.rows(&m);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].d.domain.0, D2);
    let s = screen(&app, &m, 80, 24);
    assert!(s[2].contains("filter: driver=mock"), "{}", s[2]);
    key(&mut app, &m, KeyCode::Esc);
    assert_eq!(app.rows(&m).len(), 3);
    app.filter = super::app::Filter::parse("kind=auto");
    assert_eq!(app.rows(&m).len(), 1);
    app.filter = super::app::Filter::parse("qemu");
    assert_eq!(app.rows(&m).len(), 2);
    app.filter = super::app::Filter::default();
    assert_eq!(key(&mut app, &m, KeyCode::Char('p')), Action::Pause);
    assert!(app.paused);
    assert!(screen(&app, &m, 80, 24)[1].contains("PAUSED"));
    key(&mut app, &m, KeyCode::Char('?'));
    assert!(screen(&app, &m, 80, 24)
        .iter()
        .any(|l| l.contains("this help")));
    key(&mut app, &m, KeyCode::Char('x'));
    assert!(!app.help);
    key(&mut app, &m, KeyCode::Tab);
    assert_eq!(app.view, View::Owners);
    assert_eq!(
        app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), &m),
        Action::Quit
    );
    assert_eq!(key(&mut app, &m, KeyCode::Char('q')), Action::Quit);
}

#[test]
fn small_sizes_never_panic_or_overlap() {
    let m = model_of(synthetic(), meta());
    let mut apps = Vec::new();
    for view in View::ALL {
        apps.push(App {
            view,
            ..App::default()
        });
    }
    let mut detail = App::default();
    detail.detail = detail.rows(&m).first().map(|r| r.key());
    apps.push(detail);
    apps.push(App {
        help: true,
        ..App::default()
    });
    apps.push(App {
        filter_input: Some("driver=int".into()),
        ..App::default()
    });
    for app in &apps {
        for w in (10..=26u16).chain((30..=80).step_by(10)) {
            for h in (5..=12u16).chain([16, 20, 24]) {
                let s = screen(app, &m, w, h);
                assert_eq!(s.len(), h as usize);
                if w >= 24 && h >= 6 && !app.help {
                    // Header, tabs and footer each keep their own line.
                    assert!(s[0].starts_with(" LIVE"), "{w}x{h}: {s:#?}");
                    assert!(s[2].starts_with(" 1 Domains"), "{w}x{h}: {s:#?}");
                    let footer = &s[h as usize - 1];
                    assert!(
                        footer.starts_with(" q quit") || footer.starts_with(" filter:"),
                        "{w}x{h}: {s:#?}"
                    );
                } else if w < 24 || h < 6 {
                    assert!(s.join(" ").contains("LOST 3"), "{w}x{h}: {s:#?}");
                }
            }
        }
    }
}

#[test]
fn memory_stays_bounded() {
    let mut m = Model::new(meta());
    let mut t = T0;
    // One long-lived domain with many maps, and many short-lived ones.
    m.apply(ev(
        t,
        1,
        "a",
        1,
        alloc("intel", DomainKind::Paging, 0, 0, D1, 0),
    ));
    for i in 0..300_000u64 {
        t += 10_000;
        m.apply(ev(t, 1, "a", 1, pt(D1, 1, true, PtCause::Map, i % 2 == 1)));
        m.apply(ev(t, 1, "a", 1, map(D1, i << 12, 4096, false)));
        if i % 100 == 0 {
            let d = 0xffff_0000_0000_0000 | (i << 8);
            m.apply(ev(
                t,
                2,
                "b",
                2,
                alloc("mock", DomainKind::Auto, 0, 0, d, 0),
            ));
            m.apply(ev(
                t,
                2,
                "b",
                2,
                EventBody::DomainFree(DomainFree {
                    domain: KernelPtr(d),
                    latency_ns: 1,
                }),
            ));
        }
    }
    m.advance(t + 60_000_000_000);
    assert!(m.history_len() <= HISTORY_TOTAL, "{}", m.history_len());
    assert!(m.freed_len() <= MAX_FREED);
    let row = m
        .domain_rows(false)
        .into_iter()
        .find(|r| r.d.domain.0 == D1)
        .expect("live");
    let extra = row.extra.expect("extra");
    assert!(extra.growth.len() <= GROWTH_POINTS);
    assert!(extra.truncated);
    assert_eq!(row.d.maps, 300_000);
    assert!(
        m.verdict(&row).verdict.contains("(first 10000 events)"),
        "{:?}",
        m.verdict(&row)
    );
}

#[test]
fn rates_count_every_event() {
    let m = model_of(synthetic(), meta());
    let r = m.rates();
    let total: u64 = r.series(0, 1000).iter().sum::<u64>();
    // The current (incomplete) second is not in the series: the last map and the loss.
    assert_eq!(total + 2, m.state().events());
    assert_eq!(r.series(3, 1000).iter().sum::<u64>(), 3);
}

// The header shows what our eBPF programs cost over the last interval (BPF run-time
// statistics): time per map/unmap and the share of a CPU; nothing before two readings.
#[test]
fn header_shows_the_tracers_own_cost() {
    let mut m = model_of(synthetic(), meta());
    let maps: u64 = m
        .state()
        .events_by_type()
        .filter(|(n, _)| matches!(*n, "map" | "unmap"))
        .map(|(_, n)| n)
        .sum();
    assert!(maps > 0);
    let header = |m: &Model| screen(&App::default(), m, 160, 48)[1].clone();
    m.note_bpf_run_time(1_000_000, 1_000_000_000);
    assert!(!header(&m).contains("eBPF"), "{}", header(&m));
    // The same maps again: 3 µs of eBPF time each, over one second.
    for e in synthetic()
        .into_iter()
        .filter(|e| matches!(e.body, EventBody::Map(_) | EventBody::Unmap(_)))
    {
        m.apply(e);
    }
    m.note_bpf_run_time(1_000_000 + 3_000 * maps, 2_000_000_000);
    let h = header(&m);
    assert!(h.contains("eBPF 3.0µs/op"), "{h}");
    assert!(h.contains("% CPU"), "{h}");
}
