//! The objects view: the live iommufd objects per process and iommufd, as a tree of what
//! refers to what, flagged when they outlived their iommufd's close.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use super::{bold, dim};
use crate::tui::app::App;
use crate::tui::board::Model;

pub(super) fn draw_objects(f: &mut Frame, area: Rect, app: &App, model: &Model) {
    let tree = model.object_tree();
    let title = Span::styled(
        " iommufd objects alive, per process and iommufd (indented: refers to the line above)",
        bold(),
    );
    let lines: Vec<Line> = if tree.is_empty() {
        vec![Line::styled(
            " no object alive (captures before format 3 and kernels without the object probes \
             have none)",
            dim(),
        )]
    } else {
        let skip = app.objects_scroll.min(tree.len().saturating_sub(1));
        tree.iter()
            .skip(skip)
            .map(|l| {
                let indent = "  ".repeat(l.depth);
                let mut spans = vec![if l.depth == 0 {
                    Span::styled(format!(" {}", l.text), bold())
                } else {
                    Span::raw(format!(" {indent}{}", l.text))
                }];
                if let Some(flag) = l.flag {
                    spans.push(Span::styled(
                        format!("  {flag}"),
                        Style::default().fg(Color::Yellow),
                    ));
                }
                Line::from(spans)
            })
            .collect()
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::default().title(title)),
        area,
    );
}
