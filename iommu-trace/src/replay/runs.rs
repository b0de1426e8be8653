//! Page runs: consecutive allocations or frees summed into one entry, built from the
//! model's page log or the observed page events, compared and printed.

use std::fmt;

use serde::Serialize;

use crate::model::PageOp;

/// A run of consecutive page allocations or frees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PageRun {
    Alloc { pages: u64 },
    Free { pages: u64 },
}

impl fmt::Display for PageRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageRun::Alloc { pages } => write!(f, "+{pages}"),
            PageRun::Free { pages } => write!(f, "-{pages}"),
        }
    }
}

pub(super) fn push_run(runs: &mut Vec<PageRun>, alloc: bool, pages: u64) {
    if pages == 0 {
        return;
    }
    match (runs.last_mut(), alloc) {
        (Some(PageRun::Alloc { pages: p }), true) | (Some(PageRun::Free { pages: p }), false) => {
            *p = p.saturating_add(pages)
        }
        _ => runs.push(if alloc {
            PageRun::Alloc { pages }
        } else {
            PageRun::Free { pages }
        }),
    }
}

pub(super) fn runs_of(ops: &[PageOp]) -> Vec<PageRun> {
    let mut runs = Vec::new();
    runs_into(ops, &mut runs);
    runs
}

/// [`runs_of`] into a buffer the caller reuses.
pub(super) fn runs_into(ops: &[PageOp], runs: &mut Vec<PageRun>) {
    runs.clear();
    for op in ops {
        match *op {
            PageOp::Alloc { pages, .. } => push_run(runs, true, pages),
            PageOp::Free { pages } => push_run(runs, false, pages),
        }
    }
}

pub(super) fn fmt_runs(runs: &[PageRun]) -> String {
    if runs.is_empty() {
        return "nothing".into();
    }
    runs.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn is_prefix(observed: &[PageRun], predicted: &[PageRun]) -> bool {
    if observed.len() > predicted.len() {
        return false;
    }
    let n = observed.len();
    if n == 0 {
        return true;
    }
    observed[..n - 1] == predicted[..n - 1]
        && match (observed[n - 1], predicted[n - 1]) {
            (PageRun::Alloc { pages: a }, PageRun::Alloc { pages: b })
            | (PageRun::Free { pages: a }, PageRun::Free { pages: b }) => a <= b,
            _ => false,
        }
}
