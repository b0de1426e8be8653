//! What our own eBPF programs cost the host, from the kernel's run-time statistics
//! (BPF_ENABLE_STATS): over the last interval, the time per map/unmap traced and the share of
//! one CPU, so an operator sees the tracer's price without a benchmark.

/// One reading: the programs' total run time, the map and unmap events seen, and when.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Sample {
    run_ns: u64,
    ops: u64,
    at_ns: u64,
}

/// The cost over the interval between the last two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SelfCost {
    /// eBPF run time per map/unmap of the interval (every program's, divided by those ops:
    /// the per-operation price of tracing); `None` when no map or unmap ran.
    pub ns_per_op: Option<f64>,
    /// eBPF run time as a share of one CPU (1.0 = a whole CPU).
    pub cpu_share: f64,
}

#[derive(Clone, Debug, Default)]
pub struct SelfCostMeter {
    last: Option<Sample>,
    pub cost: Option<SelfCost>,
}

impl SelfCostMeter {
    /// A new reading at `at_ns` (monotonic): the programs' cumulative run time and the
    /// cumulative map + unmap events. A counter that went back (programs reloaded) restarts
    /// the interval.
    pub fn note(&mut self, run_ns: u64, ops: u64, at_ns: u64) {
        let now = Sample { run_ns, ops, at_ns };
        if let Some(prev) = self.last {
            if run_ns >= prev.run_ns && ops >= prev.ops && at_ns > prev.at_ns {
                let run = (run_ns - prev.run_ns) as f64;
                let ops = ops - prev.ops;
                self.cost = Some(SelfCost {
                    ns_per_op: (ops > 0).then(|| run / ops as f64),
                    cpu_share: run / (at_ns - prev.at_ns) as f64,
                });
            }
        }
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_per_interval() {
        let mut m = SelfCostMeter::default();
        m.note(1_000, 10, 1_000_000_000);
        assert_eq!(m.cost, None, "one reading is no interval");
        // 2 ms of eBPF time over 1 s for 1000 map/unmap events: 2 µs each, 0.2% of a CPU.
        m.note(2_001_000, 1_010, 2_000_000_000);
        let c = m.cost.unwrap();
        assert_eq!(c.ns_per_op, Some(2_000.0));
        assert!((c.cpu_share - 0.002).abs() < 1e-9);
        // No maps: the time is still a CPU share, with no per-op figure.
        m.note(2_501_000, 1_010, 3_000_000_000);
        assert_eq!(m.cost.unwrap().ns_per_op, None);
        // Counters that went back (a reload) start a new interval, keeping the last cost.
        m.note(0, 0, 4_000_000_000);
        assert_eq!(m.cost.unwrap().ns_per_op, None);
        m.note(1_000, 1, 5_000_000_000);
        assert_eq!(m.cost.unwrap().ns_per_op, Some(1_000.0));
    }
}
