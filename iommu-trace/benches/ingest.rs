//! `cargo bench -p iommu-trace --bench ingest`: what each live consumer spends per
//! ring-buffer record in user space, for the capture benchmark's loop (`cargo xtask bench
//! capture`: one-page IOAS_MAP / IOAS_UNMAP): `record` (decode, summary, capture encoding)
//! and `serve` (decode, the live state behind its lock), on the domain map/unmap records
//! alone, then with the IOAS operation and pin-accounting records the pinned-memory probes
//! add, measured side by side in one run. Under the capture benchmark the consumer must keep
//! up with the loop on one vCPU, or the ring buffer fills. Reported, not asserted.

use std::time::Instant;

use iommu_trace::capture::inspect::Summary;
use iommu_trace::capture::{CaptureHeader, CaptureWriter};
use iommu_trace::collect::Decoder;
use iommu_trace::session::Session;
use iommu_trace::state::State;
use iommu_trace_common::{ioas_op, kind, EventHeader, IoasOpEvent, MapEvent, PinEvent};

fn bytes<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: T is a plain-old-data ABI struct of `common`, with explicit padding.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

fn header(kind: u32, ts_ns: u64) -> EventHeader {
    let mut comm = [0u8; 16];
    comm[..8].copy_from_slice(b"iommu-tr");
    EventHeader {
        kind,
        cpu: 1,
        ts_ns,
        pid: 812,
        tid: 812,
        cgroup_id: 4242,
        comm,
    }
}

/// One loop iteration's ring records: map, then unmap, of one page; with `pins`, each with
/// its pin accounting and IOAS ioctl record, in the order the kernel emits them.
fn iteration(i: u64, pins: bool) -> Vec<Vec<u8>> {
    let ts = 1_000_000_000 + i * 20_000;
    let iova = 0x10_0000 + (i % 512) * 4096;
    let map = |k: u32, t: u64, paddr: u64, done: u64| {
        bytes(&MapEvent {
            hdr: header(k, t),
            domain: 0xffff_8880_1234_0000,
            iova,
            paddr,
            size: 4096,
            done,
            errno: 0,
            _pad: 0,
            latency_ns: 1500,
        })
    };
    let pin = |t: u64, inc: u32, npinned: u64| {
        bytes(&PinEvent {
            hdr: header(kind::PIN, t),
            pages: 0xffff_8880_5678_0000 + (i % 512) * 256,
            npages: 1,
            npinned,
            total_pages: 1,
            limit_bytes: 8 << 20,
            locked_pages: 3 + npinned,
            pinned_vm: 0,
            source_mm: 0xffff_8880_9abc_0000,
            inc,
            mode: 1,
            target_uid: 0,
            target_pid: 812,
            errno: 0,
            _pad: 0,
        })
    };
    let ioas = |t: u64, op: u32| {
        bytes(&IoasOpEvent {
            hdr: header(kind::IOAS_OP, t),
            ictx: 0xffff_8880_def0_0000,
            iova,
            length: 4096,
            source: 0x7f00_0000_0000,
            latency_ns: 8000,
            op,
            ioas_id: 1,
            aux: 0,
            flags: 7,
            errno: 0,
            _pad: 0,
        })
    };
    let mut out = Vec::new();
    if pins {
        out.push(pin(ts + 100, 1, 1));
    }
    out.push(map(kind::MAP, ts + 200, 0x1_0000_0000 + i * 4096, 4096));
    if pins {
        out.push(ioas(ts + 300, ioas_op::MAP));
    }
    out.push(map(kind::UNMAP, ts + 10_100, 0, 4096));
    if pins {
        out.push(pin(ts + 10_200, 0, 0));
        out.push(ioas(ts + 10_300, ioas_op::UNMAP));
    }
    out
}

/// The consumers compared.
#[derive(Clone, Copy)]
enum Consumer {
    /// `record`: decode, the summary it prints at exit, capture encoding (to a sink).
    Record,
    /// `serve`: decode, then the live state, locked per record as its sink does.
    Serve,
}

/// Nanoseconds per loop iteration for `consumer` to take in `records`.
fn ingest(consumer: Consumer, records: &[Vec<u8>], iterations: usize) -> f64 {
    let decoder = Decoder::new(Vec::new());
    let plan = serde_json::from_value(serde_json::json!({
        "kernel_release": "bench", "points": [], "drivers": [], "offsets": [], "blockers": [],
    }))
    .expect("a minimal plan");
    let session = Session {
        plan,
        refused: vec![],
        filter_pid: None,
    };
    let header = CaptureHeader::for_this_host(session, 1 << 22);
    let mut writer = CaptureWriter::new(std::io::sink(), &header).expect("capture header");
    let mut summary = Summary::new();
    let state = std::sync::Mutex::new(State::new());
    let t = Instant::now();
    for r in records {
        let e = decoder.decode(r).expect("a record this benchmark built");
        match consumer {
            Consumer::Record => {
                summary.add(&e);
                writer.write(&e).expect("writing to a sink");
            }
            Consumer::Serve => state.lock().expect("not poisoned").apply(&e),
        }
    }
    t.elapsed().as_nanos() as f64 / iterations as f64
}

fn main() {
    let n = 200_000usize;
    let build =
        |pins: bool| -> Vec<Vec<u8>> { (0..n as u64).flat_map(|i| iteration(i, pins)).collect() };
    let (base, traced) = (build(false), build(true));
    // Per round: record and serve on both record sets, interleaved.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        rounds.push([
            ingest(Consumer::Record, &base, n),
            ingest(Consumer::Record, &traced, n),
            ingest(Consumer::Serve, &base, n),
            ingest(Consumer::Serve, &traced, n),
        ]);
    }
    let median = |i: usize| {
        let mut v: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v[1]
    };
    let (rb, rt, sb, st) = (median(0), median(1), median(2), median(3));
    for (who, b, t) in [("record", rb, rt), ("serve", sb, st)] {
        println!(
            "{who}, per loop iteration (map + unmap of one page): {b:.0} ns with the domain \
             map/unmap records alone ({:.0} ns/record), {t:.0} ns with the IOAS and pin \
             records ({:.0} ns/record); ratio {:.2}",
            b / 2.0,
            t / 6.0,
            t / b
        );
    }
    println!(
        "serve / record, all records: {:.2} (medians of 3 interleaved rounds)",
        st / rt
    );
}
