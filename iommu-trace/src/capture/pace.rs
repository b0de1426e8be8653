//! Feeding a capture to a live consumer at a chosen pace: the one pacer that
//! `serve --from` (the exporter's state) and `top --from` (the TUI's board) share.

use std::time::{Duration, Instant};

use super::{CaptureSource, CaptureWarning};
use crate::events::{Event, EventBody};

/// How fast a capture is fed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as it is read.
    Unpaced,
    /// At most this many events per second (`serve --rate`).
    EventsPerSec(f64),
    /// The events' own times, at `speed` times real time (`top --speed`).
    RealTime(f64),
}

/// Where a paced feed delivers.
pub trait FeedTarget {
    /// Takes the batch (drains it). `clock` is the capture's time now when the pace follows
    /// the events' times and no event is due yet (consumers with a clock move it).
    fn apply(&mut self, batch: &mut Vec<Event>, clock: Option<u64>);
    /// The capture is damaged or truncated here: events after it are not read.
    fn damaged(&mut self, warning: &CaptureWarning);
    /// Held still by the user: a real-time feed stops its clock, others wait.
    fn paused(&self) -> bool {
        false
    }
    /// The consumer is going away: the feed ends.
    fn stopped(&self) -> bool {
        false
    }
}

/// Longest single sleep, so that a pause, a resume or a stop is seen promptly.
const STEP: Duration = Duration::from_millis(50);

/// The pace's clock, kept across passes over the same capture (`serve --repeat`).
pub struct Pacer {
    pace: Pace,
    batch: usize,
    started: Instant,
    fed: u64,
    /// Real time: the capture time elapsed (while not paused, times the speed).
    virt: Duration,
    last: Instant,
    first_ts: Option<u64>,
}

/// What one pass fed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fed {
    pub events: u64,
    /// The pass stopped at a damaged frame.
    pub damaged: bool,
}

impl Pacer {
    /// `batch`: events applied at once (one lock of the consumer per batch).
    pub fn new(pace: Pace, batch: usize) -> Pacer {
        let now = Instant::now();
        Pacer {
            pace,
            batch: batch.max(1),
            started: now,
            fed: 0,
            virt: Duration::ZERO,
            last: now,
            first_ts: None,
        }
    }

    /// Feeds what `reader` has left into `target`, paced, yielding to the runtime between
    /// batches so that signals and other tasks run.
    pub async fn feed(
        &mut self,
        reader: &mut impl CaptureSource,
        target: &mut impl FeedTarget,
    ) -> Fed {
        let mut fed = Fed::default();
        let mut batch: Vec<Event> = Vec::with_capacity(self.batch);
        loop {
            if target.stopped() {
                return fed;
            }
            let ev = match reader.next() {
                None => break,
                Some(Ok(ev)) => ev,
                Some(Err(w)) => {
                    target.damaged(&w);
                    fed.damaged = true;
                    continue;
                }
            };
            if !self.wait_until_due(&ev, &mut batch, target).await {
                return fed;
            }
            batch.push(ev);
            fed.events += 1;
            self.fed += 1;
            if batch.len() >= self.batch {
                target.apply(&mut batch, None);
                self.after_batch().await;
            }
        }
        target.apply(&mut batch, None);
        // Also after a last, partial batch: a pass over a small capture must still hold to the
        // rate and let the runtime run (signals), or `--repeat 0` would spin in one poll.
        self.after_batch().await;
        fed
    }

    /// Waits until `ev` may be delivered; false when the target stopped meanwhile.
    async fn wait_until_due(
        &mut self,
        ev: &Event,
        batch: &mut Vec<Event>,
        target: &mut impl FeedTarget,
    ) -> bool {
        match self.pace {
            // Loss markers carry the reader's time, not an event's: never wait for them.
            Pace::RealTime(speed) if speed > 0.0 && matches!(ev.body, EventBody::Lost(_)) => true,
            Pace::RealTime(speed) if speed > 0.0 => {
                let first = *self.first_ts.get_or_insert(ev.ts_ns);
                let due = Duration::from_nanos(ev.ts_ns.saturating_sub(first));
                loop {
                    let now = Instant::now();
                    if !target.paused() {
                        self.virt = self.virt.saturating_add(scaled(now - self.last, speed));
                    }
                    self.last = now;
                    if self.virt >= due {
                        return true;
                    }
                    if target.stopped() {
                        return false;
                    }
                    target.apply(batch, Some(first.saturating_add(nanos(self.virt))));
                    let wait = scaled(due - self.virt, 1.0 / speed).min(STEP);
                    tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                }
            }
            _ => {
                while target.paused() {
                    target.apply(batch, None);
                    if target.stopped() {
                        return false;
                    }
                    tokio::time::sleep(STEP).await;
                }
                true
            }
        }
    }

    /// After a batch: hold to the rate, or just let the runtime run.
    async fn after_batch(&mut self) {
        if let Pace::EventsPerSec(rate) = self.pace {
            if rate > 0.0 {
                let due =
                    Duration::try_from_secs_f64(self.fed as f64 / rate).unwrap_or(Duration::MAX);
                let now = self.started.elapsed();
                if due > now {
                    tokio::time::sleep(due - now).await;
                    return;
                }
            }
        }
        tokio::task::yield_now().await;
    }
}

/// `d` times `factor`, saturating (a speed of 1e300 or 1e-300 must not panic).
fn scaled(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{CaptureHeader, CaptureReader, CaptureWriter, FinishInfo};
    use crate::events::{DomainFree, KernelPtr};

    fn capture(times_ms: &[u64]) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = CaptureWriter::new(&mut buf, &CaptureHeader::default()).unwrap();
        for (i, t) in times_ms.iter().enumerate() {
            w.write(&Event {
                ts_ns: 1_000_000_000 + t * 1_000_000,
                cpu: 0,
                pid: 1,
                tid: 1,
                comm: "t".into(),
                cgroup_id: 1,
                body: EventBody::DomainFree(DomainFree {
                    domain: KernelPtr(0x1000 + i as u64),
                    latency_ns: 1,
                }),
            })
            .unwrap();
        }
        w.finish(FinishInfo::default()).unwrap();
        buf
    }

    #[derive(Default)]
    struct Sink {
        got: Vec<u64>,
        batches: usize,
        clocks: Vec<u64>,
        paused_checks: std::cell::Cell<u32>,
        pause_for: u32,
    }

    impl FeedTarget for Sink {
        fn apply(&mut self, batch: &mut Vec<Event>, clock: Option<u64>) {
            if !batch.is_empty() {
                self.batches += 1;
            }
            self.got.extend(batch.drain(..).map(|e| e.ts_ns));
            self.clocks.extend(clock);
        }
        fn damaged(&mut self, _: &CaptureWarning) {}
        fn paused(&self) -> bool {
            let n = self.paused_checks.get();
            self.paused_checks.set(n + 1);
            n < self.pause_for
        }
    }

    fn run(pace: Pace, batch: usize, times: &[u64], sink: &mut Sink) -> (Fed, Duration) {
        let buf = capture(times);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let started = Instant::now();
        let fed = rt.block_on(async {
            let mut reader = CaptureReader::new(&buf[..]).unwrap();
            Pacer::new(pace, batch).feed(&mut reader, sink).await
        });
        (fed, started.elapsed())
    }

    #[test]
    fn every_event_is_delivered_in_order_in_batches() {
        let times: Vec<u64> = (0..10).collect();
        let mut sink = Sink::default();
        let (fed, _) = run(Pace::Unpaced, 4, &times, &mut sink);
        assert_eq!(
            fed,
            Fed {
                events: 10,
                damaged: false
            }
        );
        let want: Vec<u64> = times
            .iter()
            .map(|t| 1_000_000_000 + t * 1_000_000)
            .collect();
        assert_eq!(sink.got, want);
        assert_eq!(sink.batches, 3); // 4 + 4 + the last 2
    }

    // Lower bounds only (a busy machine can only make it slower): the events' own times at
    // real speed, and a rate limit.
    #[test]
    fn real_time_and_rate_paces_hold_the_events_back() {
        let mut sink = Sink::default();
        let (_, took) = run(Pace::RealTime(1.0), 512, &[0, 60, 120], &mut sink);
        assert!(took >= Duration::from_millis(120), "{took:?}");
        assert_eq!(sink.got.len(), 3);
        // While waiting, the consumer's clock moved through the capture's time.
        assert!(
            sink.clocks.iter().any(|&c| c > 1_000_000_000),
            "{:?}",
            sink.clocks
        );

        let mut sink = Sink::default();
        let (_, took) = run(Pace::RealTime(4.0), 512, &[0, 60, 120], &mut sink);
        assert!(took >= Duration::from_millis(30), "{took:?}");

        let mut sink = Sink::default();
        let times: Vec<u64> = (0..20).collect();
        let (_, took) = run(Pace::EventsPerSec(100.0), 5, &times, &mut sink);
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert_eq!(sink.got.len(), 20);
    }

    // A pass smaller than a batch still holds to the rate (and yields).
    #[test]
    fn a_partial_batch_holds_to_the_rate_too() {
        let mut sink = Sink::default();
        let (_, took) = run(Pace::EventsPerSec(20.0), 256, &[0, 1, 2, 3], &mut sink);
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert_eq!(sink.got.len(), 4);
    }

    #[test]
    fn extreme_speeds_do_not_panic() {
        let mut sink = Sink::default();
        run(Pace::RealTime(1e300), 512, &[0, 60], &mut sink);
        assert_eq!(sink.got.len(), 2);
        let mut sink = Sink::default();
        let (_, took) = run(Pace::RealTime(1e-300), 512, &[0], &mut sink);
        assert_eq!(sink.got.len(), 1, "{took:?}");
    }

    #[test]
    fn a_paused_target_holds_the_feed() {
        let mut sink = Sink {
            pause_for: 3,
            ..Default::default()
        };
        let (_, took) = run(Pace::Unpaced, 512, &[0, 1], &mut sink);
        assert!(took >= 3 * STEP, "{took:?}");
        assert_eq!(sink.got.len(), 2);
    }
}
