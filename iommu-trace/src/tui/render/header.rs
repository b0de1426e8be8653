//! The two header lines (source, kernel, probes, uptime; loss, events, domains, page-table
//! pages) and the tab bar with the domains view's sort and filter.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{bold, dim, loud};
use crate::tui::app::{App, View};
use crate::tui::board::{Mode, Model};
use crate::tui::format::fmt_dur;

fn sep() -> Span<'static> {
    Span::styled(" │ ", dim())
}

pub(super) fn draw_header(f: &mut Frame, area: Rect, app: &App, model: &Model) {
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
    let lost_n = lost.ringbuf_full.saturating_add(lost.context_full);
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
    if let Some(c) = model.self_cost() {
        // What tracing costs here, from the kernel's BPF run-time statistics.
        l2.push(sep());
        let per_op = c
            .ns_per_op
            .map(|ns| format!("{}/op, ", fmt_dur(ns.round() as u64)))
            .unwrap_or_default();
        l2.push(Span::raw(format!(
            "eBPF {per_op}{:.2}% CPU",
            c.cpu_share * 100.0
        )));
    }
    if let Some(w) = &model.warning {
        l2.push(sep());
        l2.push(Span::styled(w.clone(), Style::default().fg(Color::Yellow)));
    }
    f.render_widget(Paragraph::new(vec![Line::from(l1), Line::from(l2)]), area);
}

pub(super) fn draw_tabs(f: &mut Frame, area: Rect, app: &App) {
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
                " sort: {} {}",
                app.sort.name(),
                if app.reverse { "▲" } else { "▼" }
            ),
            dim(),
        ));
        if !app.filter.is_empty() {
            spans.push(Span::styled(
                format!(" filter: {}", app.filter.text),
                Style::default().fg(Color::Yellow),
            ));
        }
        if app.all_freed {
            spans.push(Span::styled(" all freed", dim()));
        }
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}
