//! Ring buffer -> decoded events, asynchronously, with loss counted and turned into
//! `lost` events so that every consumer sees it.

mod decode;
mod live;

pub use decode::{domain_kind, DecodeError, Decoder};
pub use live::{stop_signal, Live, LiveOptions};

use std::future::Future;
use std::time::Duration;

use iommu_trace_common::lost;
use tokio::io::unix::AsyncFd;

use crate::events::{Event, EventBody, Lost};
use crate::probe::Tracer;

/// A consumer of the live event stream (the recorder, the live state, ...).
pub trait EventSink {
    fn event(&mut self, event: Event) -> anyhow::Result<()>;
    /// Called about once a second and at the end: flush, refresh.
    fn tick(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Ring-buffer records that could not be decoded (counted, never silent).
    fn decode_errors(&mut self, _n: u64) {}
}

/// What a collection run saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectStats {
    pub events: u64,
    pub decode_errors: u64,
    pub lost_ringbuf_full: u64,
    pub lost_context_full: u64,
}

use crate::events::clock::monotonic_ns;

/// Tracks the per-CPU loss counters and turns their growth into `lost` events.
#[derive(Default)]
struct LossWatch {
    seen: Vec<[u64; lost::COUNT as usize]>,
}

impl LossWatch {
    fn poll(
        &mut self,
        now: Vec<[u64; lost::COUNT as usize]>,
        stats: &mut CollectStats,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let ts = monotonic_ns();
        for (cpu, counters) in now.iter().enumerate() {
            let before = self.seen.get(cpu).copied().unwrap_or_default();
            let ring = counters[lost::RINGBUF_FULL as usize]
                .saturating_sub(before[lost::RINGBUF_FULL as usize]);
            let ctx = counters[lost::CONTEXT_FULL as usize]
                .saturating_sub(before[lost::CONTEXT_FULL as usize]);
            if ring > 0 || ctx > 0 {
                stats.lost_ringbuf_full += ring;
                stats.lost_context_full += ctx;
                out.push(Event {
                    ts_ns: ts,
                    cpu: cpu as u32,
                    pid: 0,
                    tid: 0,
                    comm: String::new(),
                    cgroup_id: 0,
                    body: EventBody::Lost(Lost {
                        ringbuf_full: ring,
                        context_full: ctx,
                    }),
                });
            }
        }
        self.seen = now;
        out
    }
}

/// Reads events until `stop` resolves, then drains what is left and reports the loss seen.
/// Every event goes to `sink`; `sink.tick()` runs about once a second.
async fn run(
    tracer: &mut Tracer,
    decoder: &Decoder,
    sink: &mut dyn EventSink,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<CollectStats> {
    let ring = tracer
        .take_ring()
        .ok_or_else(|| anyhow::anyhow!("the EVENTS ring buffer is missing or already taken"))?;
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd holds it, and the
    // fd is deregistered (AsyncFd drop) before the ring buffer closes it.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("registering the ring buffer with tokio: {e}"))?;
    let mut stats = CollectStats::default();
    let mut loss = LossWatch::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // A late tick is not made up for with a burst: a tick reads the kernel's own figures
    // (/proc) to compare with the ledger, and two readings must be a second apart.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The eBPF side wakes us only when the ring is a quarter full: drain it on a short
    // timer too, so live consumers see events within this delay.
    let mut drain_tick = tokio::time::interval(Duration::from_millis(50));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), decoder, sink, &mut stats)?;
                guard.clear_ready();
            }
            _ = drain_tick.tick() => {
                drain(ring.get_mut(), decoder, sink, &mut stats)?;
            }
            _ = tick.tick() => {
                // Everything the kernel did before the tick is in the sink before it reads
                // what the kernel says it holds.
                drain(ring.get_mut(), decoder, sink, &mut stats)?;
                for e in loss.poll(tracer.lost_per_cpu(), &mut stats) {
                    sink.event(e)?;
                }
                sink.tick()?;
            }
            _ = &mut stop => break,
        }
    }
    drain(ring.get_mut(), decoder, sink, &mut stats)?;
    for e in loss.poll(tracer.lost_per_cpu(), &mut stats) {
        sink.event(e)?;
    }
    sink.tick()?;
    Ok(stats)
}

fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    decoder: &Decoder,
    sink: &mut dyn EventSink,
    stats: &mut CollectStats,
) -> anyhow::Result<()> {
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        let decoded = decoder.decode_into(&item, &mut events);
        drop(item);
        match decoded {
            Ok(()) => {
                for e in events.drain(..) {
                    stats.events += 1;
                    sink.event(e)?;
                }
            }
            Err(err) => {
                stats.decode_errors += 1;
                sink.decode_errors(1);
                log::warn!("dropping an undecodable ring-buffer record: {err}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_growth_becomes_lost_events_per_cpu() {
        let mut w = LossWatch::default();
        let mut stats = CollectStats::default();
        assert!(w.poll(vec![[0, 0], [0, 0]], &mut stats).is_empty());
        let ev = w.poll(vec![[0, 0], [5, 1]], &mut stats);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].cpu, 1);
        assert_eq!(
            ev[0].body,
            EventBody::Lost(Lost {
                ringbuf_full: 5,
                context_full: 1
            })
        );
        let ev = w.poll(vec![[2, 0], [7, 1]], &mut stats);
        assert_eq!(ev.len(), 2);
        assert_eq!((stats.lost_ringbuf_full, stats.lost_context_full), (9, 1));
    }
}
