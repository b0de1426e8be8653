# VM scenario "exercise": record the exercise workload on a real kernel, then the checks in
# xtask/src/checks.rs compare the capture with what the workload says it did and with the
# kernel's own counters (/proc/vmstat nr_iommu_pages, the cgroup's sec_pagetables).
R=/results
export RUST_LOG=warn
. /scenarios/object-truth.sh

. /scenarios/vfio-bind.sh
ls -l /dev/vfio/devices > $R/vfio-devices.txt 2>&1
echo 16 > /proc/sys/vm/nr_hugepages

iommu-trace probes > $R/probes.txt 2>&1
iommu-trace probes --json > $R/probes.json 2> $R/probes.err

# Not root: a clear error, and probes still reports.
su -s /bin/sh nobody -c "iommu-trace record -o /tmp/notroot.itc" > $R/notroot-record.txt 2>&1
echo $? > $R/notroot-record.rc
su -s /bin/sh nobody -c "iommu-trace probes" > $R/notroot-probes.txt 2>&1
echo $? > $R/notroot-probes.rc

# Least privilege: record as nobody holding exactly CAP_BPF, CAP_PERFMON and CAP_SYSLOG
# (ambient, as a systemd unit's AmbientCapabilities gives them) under the map/unmap loop.
# Every guest has util-linux's setpriv (x86_64: the host's; arm64: Debian's arm64 package).
if [ -x /usr/bin/setpriv ]; then
    mkdir -p /tmp/caps && chmod 777 /tmp/caps
    /usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups \
        --inh-caps=-all,+bpf,+perfmon,+syslog --ambient-caps=-all,+bpf,+perfmon,+syslog \
        --bounding-set=-all,+bpf,+perfmon,+syslog \
        iommu-trace record -o /tmp/caps/caps.itc --ready-file /tmp/caps/ready > $R/caps-record.log 2>&1 &
    REC=$!
    i=0
    while [ ! -e /tmp/caps/ready ] && kill -0 $REC 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    grep -E '^(Uid|Cap(Inh|Prm|Eff|Bnd|Amb))' /proc/$REC/status > $R/caps-status.txt
    sh -c 'echo $$ > /results/caps-exercise.pid;
           exec iommu-trace exercise --steps map,loop --loop 200 --no-hugepages -o /results/caps-exercise.json' > $R/caps-exercise.log 2>&1
    kill -INT $REC
    wait $REC
    echo $? > $R/caps-record.rc
    iommu-trace inspect /tmp/caps/caps.itc --format jsonl > $R/caps.jsonl 2> $R/caps-inspect.err
    iommu-trace replay /tmp/caps/caps.itc > $R/caps-replay.txt 2>&1
    echo $? > $R/caps-replay.rc
fi

# The workload runs in its own cgroup with the memory controller on.
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/exercise
stat -c %i /sys/fs/cgroup/exercise > $R/cgroup-id.txt

wait_ready() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
}

# The exporter traces live beside the recorder; its /metrics is compared with the capture.
iommu-trace serve --listen 127.0.0.1:9464 --ready-file /tmp/serve-ready > $R/serve.log 2>&1 &
SERVE=$!
wait_ready /tmp/serve-ready
grep -w nr_iommu_pages /proc/vmstat > $R/vmstat-before.txt
iommu-trace record -o $R/exercise.itc --ready-file /tmp/ready > $R/record.log 2>&1 &
REC=$!
wait_ready /tmp/ready
object_truth_start
sh -c 'echo $$ > /sys/fs/cgroup/exercise/cgroup.procs; echo $$ > /results/exercise.pid;
       exec iommu-trace exercise --sample-cgroup --hold-file /tmp/hold -o /results/exercise.json' > $R/exercise.log 2>&1 &
EXERCISE=$!
# While the workload holds its pins (the VFIO flow's peak), the live exporter reconciles
# its ledger with the kernel's VmPin: read it, and the exporter, after three ticks.
while [ ! -e /tmp/hold ] && kill -0 $EXERCISE 2>/dev/null; do sleep 0.1; done
if [ -e /tmp/hold ]; then
    # Until the exporter has compared every pinning process (two readings a second apart),
    # 30 s at most.
    i=0
    while [ $i -lt 30 ]; do
        wget -q -O $R/metrics-hold.txt http://127.0.0.1:9464/metrics
        grep -q 'iommu_trace_pin_reconciliation_processes{verdict="unchecked"} 0' \
            $R/metrics-hold.txt && break
        sleep 1; i=$((i + 1))
    done
    cat /proc/$(cat /tmp/hold)/status > $R/status-hold.txt
    rm -f /tmp/hold
fi
wait $EXERCISE
echo $? > $R/exercise.rc
sleep 1
object_truth_stop
kill -INT $REC
wait $REC
echo $? > $R/record.rc
grep -w nr_iommu_pages /proc/vmstat > $R/vmstat-after.txt
wget -q -O $R/metrics.txt http://127.0.0.1:9464/metrics
wget -q -O $R/healthz.txt http://127.0.0.1:9464/healthz
# A real Prometheus scrapes the live exporter; the checks query it through its HTTP API.
mkdir -p /tmp/prom
cat > /tmp/prom/prometheus.yml <<'YML'
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: iommu-trace
    static_configs:
      - targets: ['127.0.0.1:9464']
YML
prometheus --config.file=/tmp/prom/prometheus.yml --storage.tsdb.path=/tmp/prom/data \
    --web.listen-address=127.0.0.1:9090 > $R/prometheus.log 2>&1 &
PROM=$!
q() { wget -q -O "$2" "http://127.0.0.1:9090/api/v1/query?query=$1"; }
i=0
while [ $i -lt 60 ]; do
    q 'sum(iommu_trace_domain_allocations_total)' $R/prom-domain-allocs.json
    grep -q '"value"' $R/prom-domain-allocs.json 2>/dev/null && break
    sleep 1; i=$((i + 1))
done
q 'sum(iommu_trace_page_table_pages_allocated_total)' $R/prom-pt-allocated.json
q 'sum(iommu_trace_hwpt_allocations_total)' $R/prom-hwpt-allocs.json
q 'up' $R/prom-up.json
kill -TERM $PROM
wait $PROM
kill -TERM $SERVE
wait $SERVE
echo $? > $R/serve.rc

iommu-trace inspect $R/exercise.itc --summary > $R/summary.txt 2>&1
iommu-trace inspect $R/exercise.itc --format jsonl > $R/exercise.jsonl 2> $R/inspect.err
# Every capture is replayed through the reference page-table models.
iommu-trace replay $R/exercise.itc --json > $R/replay.json 2> $R/replay.err
echo $? > $R/replay.rc
iommu-trace replay $R/exercise.itc --what-if > $R/replay.txt 2>&1
echo $? > $R/inspect.rc

# A deliberately tiny ring buffer (one page) under the map/unmap loop: loss must show.
rm -f /tmp/ready
iommu-trace record -o $R/tiny.itc --ringbuf-size 4096 --ready-file /tmp/ready > $R/tiny-record.log 2>&1 &
REC=$!
wait_ready /tmp/ready
# A stalled consumer: the recorder is stopped while the loop runs, so the one-page ring must
# overflow, deterministically.
kill -STOP $REC
iommu-trace exercise --steps map,loop --loop 300 --no-hugepages -o /tmp/tiny-exercise.json > $R/tiny-exercise.log 2>&1
kill -CONT $REC
kill -TERM $REC
wait $REC
echo $? > $R/tiny-record.rc
iommu-trace inspect $R/tiny.itc --summary > $R/tiny-summary.txt 2>&1
iommu-trace inspect $R/tiny.itc --format jsonl > $R/tiny.jsonl 2>/dev/null
iommu-trace replay $R/tiny.itc > $R/tiny-replay.txt 2>&1
echo $? > $R/tiny-replay.rc

# A degraded kernel, simulated by refusing the page-table hooks (the statistics hook under
# both its names, and 6.15+'s iommu-pages functions): the rest
# attaches, and probes, the capture header, inspect, replay and the exporter say what is
# missing instead of reporting zero page-table pages.
DENY="--deny-symbol __lruvec_stat_mod_folio --deny-symbol lruvec_stat_mod_folio
      --deny-symbol iommu_alloc_pages_node_sz --deny-symbol __iommu_free_desc"
iommu-trace probes $DENY > $R/degraded-probes.txt 2>&1
rm -f /tmp/ready
iommu-trace record $DENY -o $R/degraded.itc --ready-file /tmp/ready > $R/degraded-record.log 2>&1 &
REC=$!
wait_ready /tmp/ready
iommu-trace exercise --steps map --no-hugepages -o /tmp/degraded-exercise.json > $R/degraded-exercise.log 2>&1
kill -INT $REC
wait $REC
echo $? > $R/degraded-record.rc
iommu-trace inspect $R/degraded.itc --summary > $R/degraded-summary.txt 2>&1
iommu-trace replay $R/degraded.itc > $R/degraded-replay.txt 2>&1
echo $? > $R/degraded-replay.rc
iommu-trace serve --from $R/degraded.itc --verify --listen 127.0.0.1:9465 --ready-file /tmp/degraded-serve-ready > $R/degraded-serve.log 2>&1 &
SERVE=$!
wait_ready /tmp/degraded-serve-ready
wget -q -O $R/degraded-metrics.txt http://127.0.0.1:9465/metrics
kill -TERM $SERVE
wait $SERVE

# Crash safety: the recorder killed with SIGKILL in the middle of the map/unmap loop. Its
# capture must read up to the last frame it flushed, losing at most the last flush interval
# (about a second). CLOCK_MONOTONIC (= uptime: a VM does not suspend) read just before the
# kill and once the recorder is gone (its teardown, detaching the programs, takes a while
# under TCG) brackets the kill's time, to compare with the last event's.
rm -f /tmp/ready
iommu-trace record -o $R/killed.itc --ready-file /tmp/ready > $R/killed-record.log 2>&1 &
REC=$!
wait_ready /tmp/ready
iommu-trace exercise --steps map,loop --loop 1000000 --no-hugepages -o /tmp/killed-exercise.json > $R/killed-exercise.log 2>&1 &
EX=$!
sleep 5
cut -d' ' -f1 /proc/uptime > $R/killed-before.txt
kill -KILL $REC
wait $REC
echo $? > $R/killed-record.rc
cut -d' ' -f1 /proc/uptime > $R/killed-after.txt
kill -TERM $EX
wait $EX
iommu-trace inspect $R/killed.itc --summary > $R/killed-summary.txt 2> $R/killed-inspect.err
echo $? > $R/killed-inspect.rc
iommu-trace inspect $R/killed.itc --format jsonl > $R/killed.jsonl 2>/dev/null
iommu-trace replay $R/killed.itc > $R/killed-replay.txt 2>&1
echo $? > $R/killed-replay.rc

# Damaged captures: a truncated copy is read up to its last good frame, with a warning
# naming the byte offset; a file that is not a capture is refused.
size=$(stat -c %s $R/exercise.itc)
head -c $((size - 7)) $R/exercise.itc > /tmp/truncated.itc
iommu-trace inspect /tmp/truncated.itc --summary > $R/truncated-summary.txt 2> $R/truncated.err
echo $? > $R/truncated.rc
iommu-trace inspect /proc/version --summary > $R/notcapture.txt 2>&1
echo $? > $R/notcapture.rc

# 24/7 recording: a recorder rotating every 64 KiB (the smallest part) under the map/unmap
# loop. The parts, read as one stream, must hold what the workload did (the exercise's
# checks on rot/) and replay verified across the part boundaries.
mkdir -p $R/rot
rm -f /tmp/ready
iommu-trace record -o $R/rot/rec.itc --rotate-size 64K --ready-file /tmp/ready > $R/rot/record.log 2>&1 &
REC=$!
wait_ready /tmp/ready
sh -c 'echo $$ > /results/rot/exercise.pid;
       exec iommu-trace exercise --steps map,loop --loop 4000 --no-hugepages -o /results/rot/exercise.json' > $R/rot/exercise.log 2>&1
sleep 1
kill -INT $REC
wait $REC
echo $? > $R/rot/record.rc
ls -l $R/rot/ > $R/rot/parts.txt
iommu-trace inspect $R/rot/rec.*.itc --format jsonl > $R/rot/exercise.jsonl 2> $R/rot/inspect.err
iommu-trace replay $R/rot/rec.*.itc --json > $R/rot/replay.json 2> $R/rot/replay.err
echo $? > $R/rot/replay.rc
iommu-trace replay $R/rot/rec.*.itc > $R/rot/replay.txt 2>&1

# A full disk: a recorder on a 512 KiB tmpfs under the loop must stop with an error saying
# so, and its capture read up to the last complete frame.
mkdir -p /tmp/full
mount -t tmpfs -o size=512k tmpfs /tmp/full
rm -f /tmp/ready
iommu-trace record -o /tmp/full/full.itc --ready-file /tmp/ready > $R/full-record.log 2>&1 &
REC=$!
wait_ready /tmp/ready
iommu-trace exercise --steps map,loop --loop 1000000 --no-hugepages -o /tmp/full-exercise.json > $R/full-exercise.log 2>&1 &
EX=$!
i=0
while kill -0 $REC 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
kill -INT $REC 2>/dev/null
wait $REC
echo $? > $R/full-record.rc
kill -TERM $EX
wait $EX
iommu-trace inspect /tmp/full/full.itc --summary > $R/full-summary.txt 2> $R/full-inspect.err
echo $? > $R/full-inspect.rc
iommu-trace replay /tmp/full/full.itc > $R/full-replay.txt 2>&1
echo $? > $R/full-replay.rc
umount /tmp/full

# The DMA API's domains are not iommufd's: while a recorder runs, the VFIO device's group is
# switched to identity and then to a new DMA default domain, which 7.x allocates with the same
# domain_alloc_paging_flags op iommufd uses (docs/kernel-facts.md §1.4). ftrace counts the
# op's calls; the capture must hold no domain_alloc. Last: the device leaves vfio-pci.
rm -f /tmp/ready
iommu-trace record -o $R/dma.itc --ready-file /tmp/ready > $R/dma-record.log 2>&1 &
REC=$!
wait_ready /tmp/ready
: > $T/kprobe_events
for f in intel_iommu_domain_alloc_paging_flags amd_iommu_domain_alloc_paging_flags \
    arm_smmu_domain_alloc_paging_flags; do
    grep -q " $f\$" /proc/kallsyms && echo "p:dtruth/paging_flags $f" >> $T/kprobe_events
done 2> $R/dma-truth.err
[ -e $T/events/dtruth/enable ] && echo 1 > $T/events/dtruth/enable
echo > $T/trace
for v in /sys/class/vfio-dev/vfio*; do DEV=$(readlink -f $v/device); break; done
echo "${DEV##*/}" > $DEV/driver/unbind
# From identity: a group already on a DMA domain keeps it (iommu.c
# __iommu_group_alloc_default_domain), so the switch would allocate nothing.
echo identity > $DEV/iommu_group/type 2> $R/dma-type.err
echo DMA > $DEV/iommu_group/type 2>> $R/dma-type.err
echo $? > $R/dma-type.rc
cat $DEV/iommu_group/type > $R/dma-type.txt
sleep 1
[ -e $T/events/dtruth/enable ] && echo 0 > $T/events/dtruth/enable
grep -v '^#' $T/trace > $R/dma-truth.txt
: > $T/kprobe_events
kill -INT $REC
wait $REC
echo $? > $R/dma-record.rc
iommu-trace inspect $R/dma.itc --format jsonl > $R/dma.jsonl 2> $R/dma-inspect.err
exit 0
