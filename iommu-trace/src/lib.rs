//! iommu-trace: see, and verify, what the Linux IOMMU does for user space.
//!
//! The modules follow the data flow:
//! `probe` (what to attach on this kernel) -> `collect` (ring buffer -> events) ->
//! `events` (the one stream) -> `capture` (files) / `state` (live aggregate) /
//! `replay` (verification against the reference allocators in `model`).
//! `exercise` is the workload generator the tests and the demo drive the kernel with.

pub mod capture;
pub mod collect;
pub mod commands;
pub mod events;
pub mod exercise;
pub mod export;
pub mod model;
pub mod probe;
pub mod replay;
pub mod state;
pub mod tui;
