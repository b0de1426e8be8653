# VM benchmark "capture": the exercise's map/unmap loop without and with `iommu-trace
# record`, interleaved in one boot (untraced, traced, traced without the object probes, the
# floor, untraced, ...), so that drift in this emulated machine hits every side; xtask bench
# capture prints medians and ratios. The third run measures what the iommufd object probes
# and the pinned-memory probes (IOAS ioctls, pin accounting: one event each per op of the
# loop) cost it; the fourth (`record --floor`: the same attach points, programs that return
# at once) what attaching at all costs, which our added cost is compared with.
R=/results
export RUST_LOG=warn
N=${BENCH_LOOPS:-30000}
PAGES=1
ROUNDS=5
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
# The loop runs on CPU 1, the recorder on CPU 0: left to the scheduler, the two sometimes
# shared a CPU and sometimes not, and traced runs of one configuration differed by 1.7x.
# Pinned apart, a ratio measures what the probes cost the traced thread in the kernel.
loop() { busybox taskset -c 1 iommu-trace exercise --steps loop --loop $N --loop-pages $PAGES --no-hugepages -o "$1" > "$1.log" 2>&1; }
# The loop into $1 while `iommu-trace record` (the rest of the arguments added) writes $2,
# logging to $3; returns the recorder's exit status.
traced_loop() {
    out=$1 itc=$2 log=$3
    shift 3
    rm -f /tmp/ready
    busybox taskset -c 0 iommu-trace record "$@" -o "$itc" --ready-file /tmp/ready > "$log" 2>&1 &
    REC=$!
    i=0
    while [ ! -e /tmp/ready ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    loop "$out"
    kill -INT $REC
    wait $REC
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
        r=$((r + 1))
    done
    loop $R/base$r$SFX.json
}
# One page per map: the worst case, one IOAS operation and one pin event per page. Then 16
# pages per map (64 KiB, the size of a small guest RAM slot's chunks): the same events per
# operation, spread over 16 pages (the loop's pages are never physically adjacent, so each
# is its own iommu_map, as in every run).
rounds 1 $N ""
rounds 16 $((N / 2)) "-16p"
exit 0
