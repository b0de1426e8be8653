//! Drawing: one frame from the model and the view state. Pure (a `Frame` in, nothing else
//! out), so the tests render into ratatui's `TestBackend`.
//!
//! Here: [`draw`] (the layout), the styles, the footer and the help overlay; one file per
//! view beside it (`domains`, `detail`, `owners`, `activity`, `objects`) and the `header`
//! with the tabs.
//! Units and text formatting are in `tui::format`.

mod activity;
mod detail;
mod domains;
mod header;
mod objects;
mod owners;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::app::{App, View};
use super::board::Model;
use activity::draw_activity;
use detail::draw_detail;
use domains::draw_domains;
use header::{draw_header, draw_tabs};
use objects::draw_objects;
use owners::draw_owners;

/// The keys, as the footer shows them.
pub const FOOTER: &str = " q quit  p pause  s sort  / filter  tab view  enter details  ? help";

const HELP: &[(&str, &str)] = &[
    ("q, Ctrl-C", "quit"),
    (
        "p, space",
        "pause / resume the display (a replay pauses too)",
    ),
    (
        "tab, 1-4",
        "switch view: domains, owners (processes, cgroups), activity, objects",
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
        if lost.ringbuf_full != 0 || lost.context_full != 0 {
            lines.insert(
                0,
                Line::styled(
                    format!(
                        "LOST {}",
                        lost.ringbuf_full.saturating_add(lost.context_full)
                    ),
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
        (View::Objects, _) => draw_objects(f, body, app, model),
    }
    draw_footer(f, footer, app);
    if app.help {
        draw_help(f, area);
    }
}

// ---- footer, help -----------------------------------------------------------------------

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
