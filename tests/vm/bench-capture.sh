# VM benchmark "capture": the exercise's map/unmap loop without and with a tracer,
# interleaved in one boot (untraced, then each traced mode, untraced, ...), so that drift in
# this emulated machine hits every side; xtask bench capture prints medians and ratios. The
# traced modes: `iommu-trace record`; record without the object probes and the pinned-memory
# probes (IOAS ioctls, pin accounting: one event each per op of the loop), which measures
# what those cost; the floor (`record --floor`: the same attach points, programs that return
# at once), what attaching at all costs, which every other mode's added cost is compared
# with; `iommu-trace serve`, the exporter as an operator leaves it running; `record` with the
# kernel's BPF run-time statistics on (what serve's self-metrics cost); and, where the guest
# has it (x86_64), bpftrace counting the calls of the same functions.
R=/results
export RUST_LOG=warn
# Sizes: `BENCH_LOOPS=N BENCH_ROUNDS=R BENCH_PAGES=1,16 cargo xtask bench capture` on the host
# (xtask passes them on the kernel command line).
N=${BENCH_LOOPS:-30000}
ROUNDS=${BENCH_ROUNDS:-5}
SIZES=$(echo "${BENCH_PAGES:-1,16}" | tr ',' ' ')
. /scenarios/vfio-bind.sh
NOOBJ=""
for f in iommufd_destroy iommufd_ioas_alloc_ioctl iommufd_hwpt_alloc iommufd_fault_alloc \
    iommufd_viommu_alloc_ioctl iommufd_vdevice_alloc_ioctl iommufd_veventq_alloc \
    iommufd_hw_queue_alloc_ioctl iommufd_test _iommufd_object_alloc iommufd_object_finalize iommufd_object_abort \
    iommufd_fops_release iommufd_device_unbind iommufd_device_destroy iommufd_hwpt_paging_destroy \
    iommufd_hwpt_nested_destroy iommufd_ioas_destroy iommufd_access_destroy_object \
    iommufd_fault_destroy iommufd_viommu_destroy iommufd_vdevice_destroy iommufd_veventq_destroy \
    iommufd_hw_queue_destroy iommufd_selftest_destroy iommufd_ioas_map iommufd_ioas_unmap \
    iommufd_ioas_copy iommufd_ioas_map_file iommufd_ioas_change_process iommufd_option \
    do_update_pinned iopt_pages_update_pinned; do
    NOOBJ="$NOOBJ --deny-symbol $f"
done
# The loop runs on CPU 1, the tracer on CPU 0 (traced.sh): pinned apart, a ratio measures
# what the probes cost the traced thread in the kernel.
loop() { busybox taskset -c 1 iommu-trace exercise --steps loop --loop $N --loop-pages $PAGES --no-hugepages -o "$1" > "$1.log" 2>&1; }
. /scenarios/traced.sh
traced_loop() { traced loop "$@"; }
# The loop into $1 while `iommu-trace serve` (or TRACER's) runs, its /metrics after the loop
# into $2, its log into $3; returns the exporter's exit status.
served_loop() {
    out=$1 metrics=$2 log=$3
    rm -f /tmp/serve-ready
    busybox taskset -c 0 ${TRACER:-iommu-trace} serve --listen 127.0.0.1:9464 --ready-file /tmp/serve-ready > "$log" 2>&1 &
    SRV=$!
    i=0
    while [ ! -e /tmp/serve-ready ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    loop "$out"
    # The collector drains the ring buffer on its tick: give it one before the scrape.
    sleep 2
    wget -q -O "$metrics" http://127.0.0.1:9464/metrics
    kill -TERM $SRV
    wait $SRV
}
# bpftrace counting the calls of every function `record` attaches to (`probes --json`, its
# choices and not their kprobe fallbacks), each with the same kind of probe (a trampoline
# where record has one, a kprobe elsewhere): what the tool people already run costs with
# the least work per call.
BPFTRACE_PROBES=""
if command -v bpftrace > /dev/null; then
    iommu-trace probes --json > /tmp/probes.json
    BPFTRACE_PROBES=$(awk -F'"' '
        /"fallback":/ { fallback = 1 }
        /"symbol":/ { s = $4 }
        /"program_type":/ { if (!fallback) print $4, s; fallback = 0 }' /tmp/probes.json |
        while read -r kind sym; do
            case $kind in f*) echo "kfunc:$sym" ;; *) echo "kprobe:$sym" ;; esac
        done | sort -u | tr '\n' ',' | sed 's/,$//')
    echo "$BPFTRACE_PROBES" > $R/bpftrace-probes.txt
fi
# The loop into $1 under bpftrace, its output (the counts, printed at exit) into $2.
bpftrace_loop() {
    out=$1 log=$2
    # BEGIN runs once every probe is attached.
    busybox taskset -c 0 bpftrace -e "BEGIN { printf(\"ready\\n\"); } $BPFTRACE_PROBES { @[probe] = count(); }" > "$log" 2>&1 &
    BT=$!
    i=0
    while ! grep -q '^ready' "$log" 2>/dev/null && kill -0 $BT 2>/dev/null && [ $i -lt 1200 ]; do
        sleep 0.1; i=$((i + 1))
    done
    loop "$out"
    kill -INT $BT
    wait $BT
}
# $1 pages per map, $2 iterations, $3 the results' suffix.
rounds() {
    PAGES=$1 N=$2 SFX=$3
    # A warm-up, untraced and traced, not counted: the first runs of a boot were up to 30%
    # slower than the rest on every side.
    loop /tmp/warm.json
    traced_loop /tmp/warm.json /tmp/warm.itc /tmp/warm.log
    rm -f /tmp/warm.itc
    r=1
    while [ $r -le $ROUNDS ]; do
        loop $R/base$r$SFX.json
        traced_loop $R/traced$r$SFX.json $R/bench$r$SFX.itc $R/record$r$SFX.log
        echo $? > $R/record$r$SFX.rc
        iommu-trace inspect $R/bench$r$SFX.itc --summary > $R/summary$r$SFX.txt 2>&1
        stat -c %s $R/bench$r$SFX.itc > $R/capture-bytes$r$SFX.txt
        traced_loop $R/noobj$r$SFX.json /tmp/noobj.itc $R/noobj-record$r$SFX.log $NOOBJ
        rm -f /tmp/noobj.itc
        # The floor: every program attached the same way, each returning at once.
        traced_loop $R/floor$r$SFX.json /tmp/floor.itc $R/floor-record$r$SFX.log --floor
        rm -f /tmp/floor.itc
        # Another build's record (xtask bench capture --against), the change's baseline.
        if command -v iommu-trace-against > /dev/null; then
            TRACER=iommu-trace-against
            traced_loop $R/against$r$SFX.json /tmp/against.itc $R/against-record$r$SFX.log
            echo $? > $R/against-record$r$SFX.rc
            rm -f /tmp/against.itc
            # Its serve too: the kernel's run time of each of its programs (BPF stats).
            served_loop $R/against-serve$r$SFX.json $R/against-serve-metrics$r$SFX.txt \
                $R/against-serve$r$SFX.log
            echo $? > $R/against-serve$r$SFX.rc
            TRACER=iommu-trace
        fi
        served_loop $R/serve$r$SFX.json $R/serve-metrics$r$SFX.txt $R/serve$r$SFX.log
        echo $? > $R/serve$r$SFX.rc
        # record with the kernel's BPF run-time statistics on, as serve keeps them for its
        # self-metrics: what those statistics cost, apart from serve's own work.
        if [ -w /proc/sys/kernel/bpf_stats_enabled ]; then
            echo 1 > /proc/sys/kernel/bpf_stats_enabled
            traced_loop $R/stats$r$SFX.json /tmp/stats.itc $R/stats-record$r$SFX.log
            echo 0 > /proc/sys/kernel/bpf_stats_enabled
            rm -f /tmp/stats.itc
        fi
        if [ -n "$BPFTRACE_PROBES" ]; then
            bpftrace_loop $R/bpftrace$r$SFX.json $R/bpftrace$r$SFX.log
        fi
        r=$((r + 1))
    done
    loop $R/base$r$SFX.json
}
# One page per map: the worst case, one IOAS operation and one pin event per page. Then 16
# pages per map (64 KiB, the size of a small guest RAM slot's chunks): the same events per
# operation, spread over 16 pages (the loop's pages are never physically adjacent, so each
# is its own iommu_map, as in every run).
# The sizes asked for, so that the check can tell a size left out from one that failed.
echo "$SIZES" > $R/sizes.txt
for pages in $SIZES; do
    case $pages in
    1) rounds 1 $N "" ;;
    16) rounds 16 $((N / 2)) "-16p" ;;
    *) echo "BENCH_PAGES: 1 or 16, not $pages" >&2; exit 2 ;;
    esac
done
exit 0
