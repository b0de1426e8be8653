//! Drawing: one frame from the model and the view state. Pure (a `Frame` in, nothing else
//! out), so the tests render into ratatui's `TestBackend`.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use super::app::{App, View};
use super::board::{DomainRow, Mode, Model, OwnerRow, RATE_NAMES};
use crate::events::{errno_name, AllocOp, Event, EventBody};
use crate::state::{Histogram, LATENCY_BOUNDS_NS};

/// The keys, as the footer shows them.
pub const FOOTER: &str = " q quit  p pause  s sort  / filter  tab view  enter details  ? help";

const HELP: &[(&str, &str)] = &[
    ("q, Ctrl-C", "quit"),
    (
        "p, space",
        "pause / resume the display (a replay pauses too)",
    ),
    (
        "tab, 1-3",
        "switch view: domains, owners (processes, cgroups), activity",
    ),
    (
        "s / S",
        "next sort order (pt pages, mapped, age, driver, owner) / reverse",
    ),
    (
        "/",
        "filter: driver=intel kind=auto pid=N comm=qemu cgroup=N, or a word",
    ),
    ("esc", "close details, clear the filter"),
    ("up/down j/k", "select a domain; g/G first/last"),
    (
        "enter",
        "details: recent events, page-table growth, model verdict",
    ),
    ("f", "show every freed domain kept, not only recent ones"),
    ("?", "this help (any key closes it)"),
];

const MIN_W: u16 = 24;
const MIN_H: u16 = 6;

fn dim() -> Style {
    Style::default().fg(Color::DarkGray)
}

fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

fn loud() -> Style {
    Style::default()
        .fg(Color::White)
        .bg(Color::Red)
        .add_modifier(Modifier::BOLD)
}

/// Draws one frame.
pub fn draw(f: &mut Frame, app: &App, model: &Model) {
    let area = f.area();
    if area.width < MIN_W || area.height < MIN_H {
        let lost = model.state().lost();
        let mut lines = vec![Line::from("iommu-trace top: terminal too small; q quits")];
        if lost.ringbuf_full + lost.context_full > 0 {
            lines.insert(
                0,
                Line::styled(
                    format!("LOST {}", lost.ringbuf_full + lost.context_full),
                    loud(),
                ),
            );
        }
        f.render_widget(
            Paragraph::new(lines).wrap(ratatui::widgets::Wrap { trim: true }),
            area,
        );
        return;
    }
    let [header, tabs, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(f, header, app, model);
    draw_tabs(f, tabs, app);
    match (app.view, app.detail) {
        (View::Domains, Some(key)) => match model.find(key) {
            Some(row) => draw_detail(f, body, &row, model),
            None => f.render_widget(
                Paragraph::new("That domain is no longer kept (esc: back to the table)"),
                body,
            ),
        },
        (View::Domains, None) => draw_domains(f, body, app, model),
        (View::Owners, _) => draw_owners(f, body, app, model),
        (View::Activity, _) => draw_activity(f, body, model),
    }
    draw_footer(f, footer, app);
    if app.help {
        draw_help(f, area);
    }
}

// ---- header, tabs, footer ---------------------------------------------------------------

fn sep() -> Span<'static> {
    Span::styled(" │ ", dim())
}

fn draw_header(f: &mut Frame, area: Rect, app: &App, model: &Model) {
    let m = &model.meta;
    let st = model.state();
    let wide = area.width >= 100;
    let mut l1 = vec![Span::raw(" ")];
    if wide {
        l1.push(Span::styled("iommu-trace top", bold()));
        l1.push(sep());
    }
    match &m.mode {
        Mode::Live => l1.push(Span::styled("LIVE", bold().fg(Color::Green))),
        Mode::Replay { file, speed } => {
            let name = std::path::Path::new(file)
                .file_name()
                .map_or(file.clone(), |n| n.to_string_lossy().into_owned());
            let speed = if *speed > 0.0 {
                format!("x{speed}")
            } else if wide {
                "max speed".into()
            } else {
                "max".into()
            };
            let state = if model.finished { ", ended" } else { "" };
            l1.push(Span::styled("REPLAY ", bold().fg(Color::Cyan)));
            l1.push(Span::raw(format!("{name} ({speed}{state})")));
        }
    }
    l1.push(sep());
    l1.push(Span::raw(format!("kernel {}", m.kernel_release)));
    l1.push(sep());
    l1.push(Span::raw(if wide {
        format!("probes {} attached", m.probes_attached)
    } else {
        format!("probes {}", m.probes_attached)
    }));
    if !m.probes_missing.is_empty() {
        l1.push(Span::styled(
            format!(", {} missing", m.probes_missing.len()),
            Style::default().fg(Color::Yellow),
        ));
        if area.width >= 160 {
            l1.push(Span::styled(
                format!(" ({})", m.probes_missing.join(", ")),
                dim(),
            ));
        }
    }
    l1.push(sep());
    l1.push(Span::raw(format!("up {}", fmt_dur(model.uptime_ns()))));

    let lost = st.lost();
    let lost_n = lost.ringbuf_full + lost.context_full;
    let mut l2 = vec![Span::raw(if lost_n > 0 { "" } else { " " })];
    if app.paused {
        l2.push(Span::styled(
            " PAUSED ",
            loud().bg(Color::Yellow).fg(Color::Black),
        ));
        l2.push(Span::raw(" "));
    }
    if lost_n > 0 {
        let why = if area.width >= 120 {
            format!(
                "(ring buffer full {}, context table full {}) ",
                lost.ringbuf_full, lost.context_full
            )
        } else {
            String::new()
        };
        let s = if lost_n == 1 { "" } else { "s" };
        l2.push(Span::styled(
            format!(" LOST {lost_n} event{s} {why}"),
            loud(),
        ));
        l2.push(Span::raw(" "));
    } else {
        l2.push(Span::styled("lost 0", Style::default().fg(Color::Green)));
        l2.push(sep());
    }
    l2.push(Span::raw(format!(
        "events {} ({}/s)",
        st.events(),
        model.events_per_sec()
    )));
    l2.push(sep());
    let live = st.domains().count();
    let freed = model.domain_rows(false).len() - live;
    l2.push(Span::raw(format!("domains {live} live")));
    if freed > 0 {
        l2.push(Span::styled(format!(", {freed} freed"), dim()));
    }
    let (pc, pu) = st
        .per_driver()
        .values()
        .fold((0, 0), |(c, u), t| (c + t.pt_charged, u + t.pt_uncharged));
    l2.push(sep());
    let pt = if wide { "pt pages" } else { "pt" };
    l2.push(Span::raw(format!("{pt} {} ({pc} charged)", pc + pu)));
    if let Some(w) = &model.warning {
        l2.push(sep());
        l2.push(Span::styled(w.clone(), Style::default().fg(Color::Yellow)));
    }
    f.render_widget(Paragraph::new(vec![Line::from(l1), Line::from(l2)]), area);
}

fn draw_tabs(f: &mut Frame, area: Rect, app: &App) {
    let mut spans = Vec::new();
    for (i, v) in View::ALL.iter().enumerate() {
        let text = format!(" {} {} ", i + 1, v.title());
        if *v == app.view {
            spans.push(Span::styled(text, bold().add_modifier(Modifier::REVERSED)));
        } else {
            spans.push(Span::raw(text));
        }
    }
    if app.view == View::Domains {
        spans.push(Span::styled(
            format!(
                "  sort: {} {}",
                app.sort.name(),
                if app.reverse { "▲" } else { "▼" }
            ),
            dim(),
        ));
        if !app.filter.is_empty() {
            spans.push(Span::styled(
                format!("  filter: {}", app.filter.text),
                Style::default().fg(Color::Yellow),
            ));
        }
        if app.all_freed {
            spans.push(Span::styled("  all freed", dim()));
        }
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_footer(f: &mut Frame, area: Rect, app: &App) {
    let line = match &app.filter_input {
        Some(input) => Line::from(vec![
            Span::styled(" filter: ", bold()),
            Span::raw(input.clone()),
            Span::styled("▏", bold()),
            Span::styled(
                "  enter apply, esc cancel; driver= kind= pid= comm= cgroup=",
                dim(),
            ),
        ]),
        None => Line::styled(FOOTER, Style::default().add_modifier(Modifier::REVERSED)),
    };
    f.render_widget(Paragraph::new(line), area);
}

fn draw_help(f: &mut Frame, area: Rect) {
    let w = area.width.min(78);
    let h = area.height.min(HELP.len() as u16 + 2);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!(" {k:<12} "), bold()),
                Span::raw(*what),
            ])
        })
        .collect();
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" keys ")),
        r,
    );
}

// ---- domains table ----------------------------------------------------------------------

/// A column of the domains table: title, width, and the priority at which it is dropped
/// when the terminal is narrow (higher goes first).
struct Col {
    title: &'static str,
    width: u16,
    prio: u8,
    cell: fn(&DomainRow, &Model, bool) -> String,
}

fn short_ptr(p: u64, wide: bool) -> String {
    if p == 0 {
        "-".into()
    } else if wide {
        format!("{p:#x}")
    } else {
        format!("{:08x}", p & 0xffff_ffff)
    }
}

/// `IOMMU_HWPT_ALLOC_*` flags, short.
pub fn flag_names(flags: u32) -> String {
    if flags == 0 {
        return "-".into();
    }
    let mut out = Vec::new();
    for (bit, name) in [(1, "nest"), (2, "dirty"), (4, "fault"), (8, "pasid")] {
        if flags & bit != 0 {
            out.push(name.to_string());
        }
    }
    if flags & !0xf != 0 {
        out.push(format!("{:#x}", flags & !0xf));
    }
    out.join(",")
}

fn columns() -> Vec<Col> {
    vec![
        Col {
            title: "DOMAIN",
            width: 8,
            prio: 0,
            cell: |r, _, wide| short_ptr(r.d.domain.0, wide),
        },
        Col {
            title: "DRIVER",
            width: 7,
            prio: 0,
            cell: |r, m, _| m.state().driver_name(r.d.driver).to_string(),
        },
        Col {
            title: "KIND",
            width: 6,
            prio: 0,
            cell: |r, _, _| r.d.kind.name().to_string(),
        },
        Col {
            title: "FLAGS",
            width: 5,
            prio: 4,
            cell: |r, _, _| flag_names(r.d.flags),
        },
        Col {
            title: "PARENT",
            width: 8,
            prio: 7,
            cell: |r, _, wide| short_ptr(r.parent().0, wide),
        },
        Col {
            title: "OWNER",
            width: 12,
            prio: 2,
            cell: |r, _, _| format!("{} {}", r.d.pid, r.d.comm),
        },
        Col {
            title: "CGROUP",
            width: 6,
            prio: 5,
            cell: |r, _, _| r.d.cgroup_id.to_string(),
        },
        Col {
            title: "MAPPED",
            width: 7,
            prio: 1,
            cell: |r, _, _| fmt_bytes(r.d.mapped_bytes),
        },
        Col {
            title: "PT C/U",
            width: 7,
            prio: 1,
            cell: |r, _, _| format!("{}/{}", r.d.pt_charged, r.d.pt_uncharged),
        },
        Col {
            title: "MAPS",
            width: 6,
            prio: 5,
            cell: |r, _, _| r.d.maps.to_string(),
        },
        Col {
            title: "UNMAPS",
            width: 6,
            prio: 6,
            cell: |r, _, _| r.d.unmaps.to_string(),
        },
        Col {
            title: "PT+/-",
            width: 7,
            prio: 6,
            cell: |r, _, _| format!("{}/{}", r.d.pt_allocated, r.d.pt_freed),
        },
        Col {
            title: "AGE",
            width: 6,
            prio: 3,
            cell: |r, m, _| {
                let end = r.freed_ts_ns.unwrap_or(m.now_ns());
                fmt_dur(end.saturating_sub(r.d.alloc_ts_ns))
            },
        },
        Col {
            title: "STATE",
            width: 5,
            prio: 1,
            cell: |r, _, _| {
                if r.freed_ts_ns.is_some() {
                    "FREED".into()
                } else if !r.d.seen_alloc {
                    "old".into()
                } else {
                    "live".into()
                }
            },
        },
    ]
}

fn draw_domains(f: &mut Frame, area: Rect, app: &App, model: &Model) {
    let rows = app.rows(model);
    let wide = area.width >= 150;
    let mut cols = columns();
    if area.width >= 110 {
        cols[1].width = 11;
        cols[5].width = 18;
    }
    if wide {
        cols[0].width = 18;
        cols[4].width = 18;
        cols[5].width = 20;
        cols[3].width = 11;
    }
    // Drop the least important columns until the rest fit (1 space between columns).
    let mut keep: Vec<bool> = vec![true; cols.len()];
    let fits = |keep: &[bool]| -> bool {
        let w: u16 = cols
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(c, _)| c.width + 1)
            .sum();
        w <= area.width
    };
    for prio in (1..=7).rev() {
        if fits(&keep) {
            break;
        }
        for (i, c) in cols.iter().enumerate() {
            if c.prio == prio {
                keep[i] = false;
            }
        }
    }
    let cols: Vec<&Col> = cols
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(c, _)| c)
        .collect();
    // The last column takes what is left.
    let widths: Vec<Constraint> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i + 1 == cols.len() {
                Constraint::Min(c.width)
            } else {
                Constraint::Length(c.width)
            }
        })
        .collect();
    let header = Row::new(cols.iter().map(|c| Cell::from(c.title))).style(bold());
    if rows.is_empty() {
        let msg = if app.filter.is_empty() {
            "No IOMMU domains yet: they appear when user space allocates one through iommufd."
        } else {
            "No domain matches the filter (esc clears it)."
        };
        let table = Table::new(Vec::<Row>::new(), widths).header(header);
        let [t, m] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
        f.render_widget(table, t);
        f.render_widget(Paragraph::new(Span::styled(msg, dim())), m);
        return;
    }
    let trows: Vec<Row> = rows
        .iter()
        .map(|r| {
            let cells: Vec<Cell> = cols
                .iter()
                .map(|c| Cell::from((c.cell)(r, model, wide)))
                .collect();
            let row = Row::new(cells);
            if r.freed_ts_ns.is_some() {
                row.style(dim())
            } else {
                row
            }
        })
        .collect();
    let selected = app.selected.min(rows.len() - 1);
    let table = Table::new(trows, widths)
        .header(header)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut ts = TableState::default().with_selected(Some(selected));
    f.render_stateful_widget(table, area, &mut ts);
}

// ---- detail -----------------------------------------------------------------------------

fn draw_detail(f: &mut Frame, area: Rect, row: &DomainRow, model: &Model) {
    let d = row.d;
    let st = model.state();
    let start = model.now_ns().saturating_sub(model.uptime_ns());
    let block = Block::default()
        .borders(Borders::TOP)
        .title(format!(" domain {:#x} (esc: back) ", d.domain.0));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let op = d.op.map_or("not seen", op_name);
    let state = match row.freed_ts_ns {
        Some(t) => Span::styled(
            format!("FREED at +{}", fmt_secs(t.saturating_sub(start))),
            Style::default().fg(Color::Yellow),
        ),
        None => Span::styled("live", Style::default().fg(Color::Green)),
    };
    let extra = row.extra;
    let verdict = model.verdict(row);
    let vstyle = if verdict.verdict.starts_with("verified") {
        Style::default()
            .fg(Color::Green)
            .add_modifier(Modifier::BOLD)
    } else if verdict.verdict.starts_with("DIVERGED") {
        loud()
    } else {
        Style::default().fg(Color::Yellow)
    };
    let mut lines = vec![
        Line::from(vec![
            Span::raw(format!(
                "driver {}  op {}  kind {}  flags {}  parent {}  ",
                st.driver_name(d.driver),
                op,
                d.kind.name(),
                flag_names(d.flags),
                short_ptr(row.parent().0, true)
            )),
            state,
        ]),
        Line::raw(format!(
            "owner pid {} ({})  cgroup {}  allocated at +{} in {}  age {}",
            d.pid,
            d.comm,
            d.cgroup_id,
            fmt_secs(d.alloc_ts_ns.saturating_sub(start)),
            fmt_dur(d.alloc_latency_ns),
            fmt_dur(
                row.freed_ts_ns
                    .unwrap_or(model.now_ns())
                    .saturating_sub(d.alloc_ts_ns)
            ),
        )),
        Line::raw(format!(
            "mapped {} now  maps {}  unmaps {}",
            fmt_bytes(d.mapped_bytes),
            d.maps,
            d.unmaps
        )),
        Line::raw(format!(
            "page-table pages held {} ({} charged, {} uncharged)  allocated {}  freed {}  peak {}",
            d.pt_pages(),
            d.pt_charged,
            d.pt_uncharged,
            d.pt_allocated,
            d.pt_freed,
            extra.map_or(0, |e| e.pt_peak)
        )),
        Line::from(vec![
            Span::raw("reference model: "),
            Span::styled(verdict.verdict.clone(), vstyle),
        ]),
    ];
    for l in &verdict.detail {
        lines.push(Line::styled(format!("  {l}"), dim()));
    }
    let info_h = lines.len() as u16;
    let [info, glabel, graph, rlabel, recent] = Layout::vertical([
        Constraint::Length(info_h),
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(inner);
    f.render_widget(Paragraph::new(lines), info);
    let growth: Vec<u64> = extra.map_or(Vec::new(), |e| {
        let skip = e.growth.len().saturating_sub(graph.width as usize);
        e.growth.iter().skip(skip).copied().collect()
    });
    f.render_widget(
        Paragraph::new(Line::styled(
            format!(
                "page-table growth: pages held after each of the last {} page-table events",
                growth.len()
            ),
            bold(),
        )),
        glabel,
    );
    f.render_widget(
        Sparkline::default()
            .data(&growth)
            .style(Style::default().fg(Color::Cyan)),
        graph,
    );
    f.render_widget(
        Paragraph::new(Line::styled("recent events", bold())),
        rlabel,
    );
    let evs = extra.map_or(Vec::new(), |e| e.recent(recent.height as usize));
    let lines: Vec<Line> = evs.iter().map(|e| Line::raw(describe(e, start))).collect();
    f.render_widget(Paragraph::new(lines), recent);
}

fn op_name(op: AllocOp) -> &'static str {
    match op {
        AllocOp::AllocUser => "alloc_user",
        AllocOp::PagingFlags => "paging_flags",
        AllocOp::Nested => "nested",
    }
}

/// One event, in one line, for the detail view.
pub fn describe(e: &Event, start_ns: u64) -> String {
    let t = format!("+{}", fmt_secs(e.ts_ns.saturating_sub(start_ns)));
    let what = match &e.body {
        EventBody::DomainAlloc(a) => format!(
            "domain_alloc {} {} {} flags {} -> {} in {}",
            a.driver,
            op_name(a.op),
            a.kind.name(),
            flag_names(a.flags),
            if a.errno == 0 {
                "ok".to_string()
            } else {
                errno_name(a.errno)
            },
            fmt_dur(a.latency_ns)
        ),
        EventBody::HwptAlloc(h) => format!("hwpt_alloc -> {}", errno_name(h.errno)),
        EventBody::DomainFree(d) => format!("domain_free in {}", fmt_dur(d.latency_ns)),
        EventBody::Map(m) | EventBody::Unmap(m) => format!(
            "{:<5} iova {:#x} size {} done {}{} in {}",
            e.body.name(),
            m.iova,
            fmt_bytes(m.size),
            fmt_bytes(m.done),
            if m.errno != 0 {
                format!(" {}", errno_name(m.errno))
            } else {
                String::new()
            },
            fmt_dur(m.latency_ns)
        ),
        EventBody::PtAlloc(p) | EventBody::PtFree(p) => format!(
            "{} {} page{} ({}, {})",
            e.body.name(),
            p.pages,
            if p.pages == 1 { "" } else { "s" },
            format!("{:?}", p.cause).to_lowercase(),
            if p.charged {
                format!("charged to memcg {}", p.memcg_id)
            } else {
                "not charged".into()
            }
        ),
        EventBody::Lost(l) => format!("lost {} {}", l.ringbuf_full, l.context_full),
    };
    format!("{t:>10} {:>6} {what}", e.tid)
}

// ---- owners -----------------------------------------------------------------------------

fn owner_table(
    title: &str,
    first: &str,
    rows: &[OwnerRow],
    skip: usize,
    with_name: bool,
) -> Table<'static> {
    let mut head = vec![first.to_string()];
    if with_name {
        head.push("COMM".into());
    }
    head.extend(
        ["DOMAINS", "MAPPED", "PT C/U", "ALLOCS", "FAILED"]
            .iter()
            .map(|s| s.to_string()),
    );
    let trows: Vec<Row> = rows
        .iter()
        .skip(skip)
        .map(|r| {
            let mut c = vec![r.id.to_string()];
            if with_name {
                c.push(r.name.clone());
            }
            c.push(r.domains.to_string());
            c.push(fmt_bytes(r.mapped_bytes));
            c.push(format!("{}/{}", r.pt_charged, r.pt_uncharged));
            c.push(r.allocs.to_string());
            c.push(r.failures.to_string());
            let row = Row::new(c);
            if r.failures > 0 {
                row.style(Style::default().fg(Color::Yellow))
            } else {
                row
            }
        })
        .collect();
    let mut widths = vec![Constraint::Length(8)];
    if with_name {
        widths.push(Constraint::Length(16));
    }
    widths.extend([
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Min(6),
    ]);
    Table::new(trows, widths)
        .header(Row::new(head).style(bold()))
        .block(Block::default().title(Span::styled(title.to_string(), bold())))
}

fn draw_owners(f: &mut Frame, area: Rect, app: &App, model: &Model) {
    let procs = model.process_rows();
    let cgroups = model.cgroup_rows();
    let [p, c] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area);
    let skip_p = app.owners_scroll.min(procs.len().saturating_sub(1));
    f.render_widget(
        owner_table(
            "processes (FAILED: domain allocations + IOMMU_HWPT_ALLOC ioctls)",
            "PID",
            &procs,
            skip_p,
            true,
        ),
        p,
    );
    f.render_widget(
        owner_table("owner cgroups", "CGROUP", &cgroups, 0, false),
        c,
    );
}

// ---- activity ---------------------------------------------------------------------------

/// Histogram buckets as block characters, one per bucket.
fn bucket_bar(h: &Histogram) -> String {
    const BLOCKS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let mut prev = 0;
    let mut counts: Vec<u64> = Vec::with_capacity(LATENCY_BOUNDS_NS.len() + 1);
    for (_, c) in h.cumulative() {
        counts.push(c - prev);
        prev = c;
    }
    counts.push(h.count() - prev);
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    counts
        .iter()
        .map(|n| {
            if *n == 0 {
                '·'
            } else {
                BLOCKS[((n * 8).div_ceil(max)).clamp(1, 8) as usize]
            }
        })
        .collect()
}

fn draw_activity(f: &mut Frame, area: Rect, model: &Model) {
    let st = model.state();
    let rates = model.rates();
    let shown = [1usize, 2, 3, 4, 5, 6, 0, 7];
    let n_rates = shown.len() as u16;
    let mut drivers: Vec<(String, Histogram)> = Vec::new();
    for ((drv, _kind), h) in st.alloc_latency() {
        let name = st.driver_name(*drv).to_string();
        match drivers.iter_mut().find(|(n, _)| *n == name) {
            Some((_, acc)) => merge(acc, h),
            None => {
                let mut acc = Histogram::default();
                merge(&mut acc, h);
                drivers.push((name, acc));
            }
        }
    }
    drivers.sort_by(|a, b| a.0.cmp(&b.0));
    let [rl, ra, ll, la, fl, fa] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(n_rates),
        Constraint::Length(1),
        Constraint::Length(drivers.len().max(1) as u16 + 1),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(area);
    f.render_widget(
        Paragraph::new(Line::styled("rates per second (oldest left)", bold())),
        rl,
    );
    for (i, idx) in shown.iter().enumerate() {
        let r = Rect {
            y: ra.y + i as u16,
            height: 1,
            ..ra
        };
        if r.y >= ra.y + ra.height {
            break;
        }
        let [label, spark, value] = Layout::horizontal([
            Constraint::Length(8),
            Constraint::Min(1),
            Constraint::Length(20),
        ])
        .areas(r);
        f.render_widget(Paragraph::new(format!(" {:<7}", RATE_NAMES[*idx])), label);
        // Newest at the right edge.
        let mut data = rates.series(*idx, spark.width as usize);
        let pad = (spark.width as usize).saturating_sub(data.len());
        data.splice(0..0, std::iter::repeat_n(0, pad));
        let style = if *idx == 7 && rates.peak(7) > 0 {
            Style::default().fg(Color::Red)
        } else {
            Style::default().fg(Color::Cyan)
        };
        f.render_widget(Sparkline::default().data(&data).style(style), spark);
        f.render_widget(
            Paragraph::new(format!(
                " {:>6}/s pk {:>6}",
                rates.last(*idx),
                rates.peak(*idx)
            )),
            value,
        );
    }
    f.render_widget(
        Paragraph::new(Line::styled(
            format!(
                "allocation latency per driver (buckets {}..{} and above)",
                fmt_dur(LATENCY_BOUNDS_NS[0]),
                fmt_dur(LATENCY_BOUNDS_NS[LATENCY_BOUNDS_NS.len() - 1])
            ),
            bold(),
        )),
        ll,
    );
    let mut lat: Vec<Line> = drivers
        .iter()
        .map(|(name, h)| {
            let q = |q| {
                h.quantile_upper_ns(q)
                    .map_or(">1s".to_string(), |n| format!("≤{}", fmt_dur(n)))
            };
            Line::raw(format!(
                " {:<11} n {:<6} p50 {:<8} p99 {:<8} |{}|",
                name,
                h.count(),
                q(0.5),
                q(0.99),
                bucket_bar(h)
            ))
        })
        .collect();
    if lat.is_empty() {
        lat.push(Line::styled(" no allocations yet", dim()));
    }
    f.render_widget(Paragraph::new(lat), la);
    f.render_widget(
        Paragraph::new(Line::styled(
            "failures (errno, with the flags that caused them)",
            bold(),
        )),
        fl,
    );
    let mut fails: Vec<(String, String, String, i32, u64)> = st
        .allocs()
        .iter()
        .filter(|(k, _)| k.errno != 0)
        .map(|(k, n)| {
            (
                st.driver_name(k.driver).to_string(),
                k.kind.name().to_string(),
                flag_names(k.flags),
                k.errno,
                *n,
            )
        })
        .collect();
    fails.sort();
    let mut lines: Vec<Line> = fails
        .iter()
        .map(|(d, k, fl, e, n)| {
            Line::styled(
                format!(
                    " domain_alloc {d:<11} {k:<7} flags {fl:<11} {:<11} x{n}",
                    errno_name(*e)
                ),
                Style::default().fg(Color::Yellow),
            )
        })
        .collect();
    let mut hw: Vec<(i32, u64)> = st
        .hwpt_allocs()
        .iter()
        .filter(|(e, _)| **e != 0)
        .map(|(e, n)| (*e, *n))
        .collect();
    hw.sort();
    if !hw.is_empty() {
        lines.push(Line::styled(
            format!(
                " IOMMU_HWPT_ALLOC ioctl: {}",
                hw.iter()
                    .map(|(e, n)| format!("{} x{n}", errno_name(*e)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Style::default().fg(Color::Yellow),
        ));
    }
    let map_fail: u64 = st
        .map_ops()
        .iter()
        .filter(|(k, _)| k.errno != 0)
        .map(|(_, t)| t.ops)
        .sum();
    if map_fail > 0 {
        lines.push(Line::styled(
            format!(" map/unmap failures: {map_fail}"),
            Style::default().fg(Color::Yellow),
        ));
    }
    if lines.is_empty() {
        lines.push(Line::styled(" none", dim()));
    }
    f.render_widget(Paragraph::new(lines), fa);
}

fn merge(acc: &mut Histogram, h: &Histogram) {
    // Histogram has no merge: re-observe each bucket's upper bound (same bucket).
    let mut prev = 0;
    for (b, c) in h.cumulative() {
        for _ in prev..c {
            acc.observe(b);
        }
        prev = c;
    }
    for _ in prev..h.count() {
        acc.observe(u64::MAX);
    }
}

// ---- formatting -------------------------------------------------------------------------

/// Bytes, short: 512B, 4.0K, 13.1M, 2.0G.
pub fn fmt_bytes(b: u64) -> String {
    const U: [&str; 5] = ["K", "M", "G", "T", "P"];
    if b < 1024 {
        return format!("{b}B");
    }
    let mut v = b as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if v >= 100.0 {
        format!("{v:.0}{}", U[i])
    } else {
        format!("{v:.1}{}", U[i])
    }
}

/// A duration, short: 850ns, 12.3µs, 1.04ms, 4.6s, 3m12s, 2h03m.
pub fn fmt_dur(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        short(ns as f64 / 1e3, "µs")
    } else if ns < 1_000_000_000 {
        short(ns as f64 / 1e6, "ms")
    } else if ns < 60_000_000_000 {
        format!("{:.1}s", ns as f64 / 1e9)
    } else if ns < 3_600_000_000_000 {
        let s = ns / 1_000_000_000;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = ns / 60_000_000_000;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// One decimal below 100, none above: 12.3ms, 250ms.
fn short(v: f64, unit: &str) -> String {
    if v >= 99.95 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.1}{unit}")
    }
}

/// Seconds with milliseconds: 4.601s.
fn fmt_secs(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}
