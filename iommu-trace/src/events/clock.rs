//! The clocks event times are in: CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns` uses, and
//! CLOCK_REALTIME for the capture header's wall-clock base.

fn read(clock: nix::time::ClockId) -> u64 {
    nix::time::clock_gettime(clock)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1_000_000_000) + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn monotonic_ns() -> u64 {
    read(nix::time::ClockId::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME now, in nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    read(nix::time::ClockId::CLOCK_REALTIME)
}
