//! iommu-trace: see, and verify, what the Linux IOMMU does for user space.
//!
//! The modules follow the data flow (docs/ARCHITECTURE.md):
//! `probe` (what to attach on this kernel, recorded as a `session`) -> `collect` (ring
//! buffer -> events) -> `events` (the one stream) -> `capture` (files) / `state` (live
//! aggregate) / `replay` (verification against the reference allocators in `model`) ->
//! `tui` / `export` (front ends). `exercise` is the workload generator the tests and the
//! demo drive the kernel with; `commands` wires the stages together per CLI command.

pub mod capture;
pub mod collect;
pub mod commands;
pub mod events;
pub mod exercise;
pub mod export;
pub mod files;
pub mod model;
pub mod probe;
pub mod procfs;
pub mod replay;
pub mod session;
pub mod state;
pub mod tested;
pub mod text;
pub mod tui;
pub mod uapi;
pub mod units;
