//! The TUI's view state (which view, sort, filter, selection, overlays) and what each key
//! does. No drawing and no I/O: the keys are testable on their own.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::board::{DomainKey, DomainRow, Model};

/// The main views, switched with Tab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Domains,
    Owners,
    Activity,
    Objects,
}

impl View {
    pub const ALL: [View; 4] = [View::Domains, View::Owners, View::Activity, View::Objects];

    pub fn title(self) -> &'static str {
        match self {
            View::Domains => "Domains",
            View::Owners => "Owners",
            View::Activity => "Activity",
            View::Objects => "Objects",
        }
    }
}

/// Sort orders of the domains table, cycled with `s` (`S` reverses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    PtPages,
    Mapped,
    Age,
    Driver,
    Owner,
}

impl SortKey {
    pub fn name(self) -> &'static str {
        match self {
            SortKey::PtPages => "pt pages",
            SortKey::Mapped => "mapped",
            SortKey::Age => "age",
            SortKey::Driver => "driver",
            SortKey::Owner => "owner",
        }
    }

    fn next(self) -> SortKey {
        match self {
            SortKey::PtPages => SortKey::Mapped,
            SortKey::Mapped => SortKey::Age,
            SortKey::Age => SortKey::Driver,
            SortKey::Driver => SortKey::Owner,
            SortKey::Owner => SortKey::PtPages,
        }
    }
}

/// What `/` filters on: `driver=`, `kind=`, `pid=`, `comm=`, `cgroup=` (several, separated
/// by spaces, all must match), or a bare word matched against all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    terms: Vec<(Option<String>, String)>,
    pub text: String,
}

impl Filter {
    pub fn parse(text: &str) -> Filter {
        let terms = text
            .split_whitespace()
            .map(|t| match t.split_once('=') {
                Some((k, v)) => (Some(k.to_ascii_lowercase()), v.to_ascii_lowercase()),
                None => (None, t.to_ascii_lowercase()),
            })
            .collect();
        Filter {
            terms,
            text: text.trim().to_string(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, row: &DomainRow, model: &Model) -> bool {
        let d = row.d;
        let driver = model.state().driver_name(d.driver).to_ascii_lowercase();
        let kind = d.kind.name();
        let comm = d.comm.to_ascii_lowercase();
        let pid = d.pid.to_string();
        let cg = d.cgroup_id.to_string();
        self.terms.iter().all(|(k, v)| match k.as_deref() {
            Some("driver") => driver.contains(v.as_str()),
            Some("kind") => kind == v,
            Some("pid") => pid == *v,
            Some("comm" | "process") => comm.contains(v.as_str()),
            Some("cgroup") => cg == *v,
            Some(_) => false,
            None => {
                driver.contains(v.as_str())
                    || kind == v
                    || comm.contains(v.as_str())
                    || pid == *v
                    || cg == *v
            }
        })
    }
}

/// What the event loop must do after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// Pause toggled (the new value is in [`App::paused`]).
    Pause,
}

#[derive(Clone, Debug)]
pub struct App {
    pub view: View,
    pub sort: SortKey,
    pub reverse: bool,
    pub filter: Filter,
    /// The filter being typed, while `/` is open.
    pub filter_input: Option<String>,
    /// Selected row in the domains table (index after sort and filter).
    pub selected: usize,
    /// The domain whose details are shown.
    pub detail: Option<DomainKey>,
    pub help: bool,
    pub paused: bool,
    /// Show every freed domain kept, not only those lingering.
    pub all_freed: bool,
    /// Scroll of the owners view.
    pub owners_scroll: usize,
    pub objects_scroll: usize,
}

impl Default for App {
    fn default() -> Self {
        App {
            view: View::Domains,
            sort: SortKey::PtPages,
            reverse: false,
            filter: Filter::default(),
            filter_input: None,
            selected: 0,
            detail: None,
            help: false,
            paused: false,
            all_freed: false,
            owners_scroll: 0,
            objects_scroll: 0,
        }
    }
}

impl App {
    /// The domains table's rows: filtered and sorted (live before freed within equal keys).
    pub fn rows<'m>(&self, model: &'m Model) -> Vec<DomainRow<'m>> {
        let mut rows: Vec<DomainRow> = model
            .domain_rows(self.all_freed)
            .into_iter()
            .filter(|r| self.filter.matches(r, model))
            .collect();
        let st = model.state();
        rows.sort_by(|a, b| {
            let (x, y) = (a.d, b.d);
            let ord = match self.sort {
                SortKey::PtPages => y
                    .pt_pages()
                    .cmp(&x.pt_pages())
                    .then(y.mapped_bytes.cmp(&x.mapped_bytes)),
                SortKey::Mapped => y
                    .mapped_bytes
                    .cmp(&x.mapped_bytes)
                    .then(y.pt_pages().cmp(&x.pt_pages())),
                // Oldest first.
                SortKey::Age => x.alloc_ts_ns.cmp(&y.alloc_ts_ns),
                SortKey::Driver => st
                    .driver_name(x.driver)
                    .cmp(st.driver_name(y.driver))
                    .then(x.kind.name().cmp(y.kind.name())),
                SortKey::Owner => x.pid.cmp(&y.pid).then(x.comm.cmp(&y.comm)),
            };
            let ord = if self.reverse { ord.reverse() } else { ord };
            a.freed_ts_ns
                .is_some()
                .cmp(&b.freed_ts_ns.is_some())
                .then(ord)
                .then(x.alloc_ts_ns.cmp(&y.alloc_ts_ns))
                .then(x.domain.cmp(&y.domain))
        });
        rows
    }

    /// Handles one key against the current model (for selection bounds and details).
    pub fn on_key(&mut self, key: KeyEvent, model: &Model) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d')) {
            return Action::Quit;
        }
        if let Some(input) = &mut self.filter_input {
            match key.code {
                KeyCode::Enter => {
                    self.filter = Filter::parse(input);
                    self.filter_input = None;
                    self.selected = 0;
                }
                KeyCode::Esc => self.filter_input = None,
                KeyCode::Backspace => {
                    input.pop();
                }
                KeyCode::Char(c) if !ctrl => input.push(c),
                _ => {}
            }
            return Action::None;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            return if key.code == KeyCode::Char('q') {
                Action::Quit
            } else {
                Action::None
            };
        }
        let n = self.rows(model).len();
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('p') | KeyCode::Char(' ') => {
                self.paused = !self.paused;
                return Action::Pause;
            }
            KeyCode::Char('?') | KeyCode::Char('h') | KeyCode::F(1) => self.help = true,
            KeyCode::Esc => {
                if self.detail.is_some() {
                    self.detail = None;
                } else if !self.filter.is_empty() {
                    self.filter = Filter::default();
                }
            }
            KeyCode::Tab | KeyCode::Right => {
                self.detail = None;
                self.view = next_view(self.view, 1);
            }
            KeyCode::BackTab | KeyCode::Left => {
                self.detail = None;
                self.view = next_view(self.view, View::ALL.len() - 1);
            }
            KeyCode::Char(c @ '1'..='4') => {
                self.detail = None;
                self.view = View::ALL[(c as u8 - b'1') as usize];
            }
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('S') | KeyCode::Char('r') => self.reverse = !self.reverse,
            KeyCode::Char('/') => {
                self.filter_input = Some(self.filter.text.clone());
            }
            KeyCode::Char('f') => self.all_freed = !self.all_freed,
            KeyCode::Down | KeyCode::Char('j') => self.move_sel(1, n),
            KeyCode::Up | KeyCode::Char('k') => self.move_sel(-1, n),
            KeyCode::PageDown => self.move_sel(10, n),
            KeyCode::PageUp => self.move_sel(-10, n),
            KeyCode::Home | KeyCode::Char('g') => self.move_sel(i64::MIN / 2, n),
            KeyCode::End | KeyCode::Char('G') => self.move_sel(i64::MAX / 2, n),
            KeyCode::Enter if self.view == View::Domains => {
                if self.detail.is_some() {
                    self.detail = None;
                } else {
                    self.detail = self.rows(model).get(self.selected).map(|r| r.key());
                }
            }
            _ => {}
        }
        Action::None
    }

    fn move_sel(&mut self, by: i64, n: usize) {
        match self.view {
            View::Domains => {
                if self.detail.is_some() {
                    return;
                }
                let max = n.saturating_sub(1) as i64;
                self.selected = (self.selected as i64 + by).clamp(0, max) as usize;
            }
            View::Owners => {
                self.owners_scroll = (self.owners_scroll as i64 + by).clamp(0, 100_000) as usize;
            }
            View::Activity => {}
            View::Objects => {
                self.objects_scroll = (self.objects_scroll as i64 + by).clamp(0, 100_000) as usize;
            }
        }
    }
}

fn next_view(v: View, by: usize) -> View {
    let i = View::ALL.iter().position(|x| *x == v).unwrap_or(0);
    View::ALL[(i + by) % View::ALL.len()]
}
