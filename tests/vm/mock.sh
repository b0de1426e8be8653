# VM scenario "mock": no emulated VT-d, so the iommufd selftest's mock driver is the only
# IOMMU and its domains (paging, NEST_PARENT, DIRTY_TRACKING, nested with selftest data,
# auto) can be allocated; the checks in xtask/src/checks.rs compare them with the capture.
R=/results
export RUST_LOG=warn
. /scenarios/object-truth.sh
iommu-trace probes > $R/probes.txt 2>&1
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/exercise
stat -c %i /sys/fs/cgroup/exercise > $R/cgroup-id.txt
i=0
grep -w nr_iommu_pages /proc/vmstat > $R/vmstat-before.txt
iommu-trace record -o $R/exercise.itc --ready-file /tmp/ready > $R/record.log 2>&1 &
REC=$!
while [ ! -e /tmp/ready ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
object_truth_start
sh -c 'echo $$ > /sys/fs/cgroup/exercise/cgroup.procs; echo $$ > /results/exercise.pid;
       exec iommu-trace exercise --no-vfio --no-hugepages -o /results/exercise.json' > $R/exercise.log 2>&1
echo $? > $R/exercise.rc
# The pinned-memory limits: the same mock as an unprivileged user under a 64 KiB
# RLIMIT_MEMLOCK (it drops root itself; its report goes through this root shell).
# Whether this kernel has IOAS_CHANGE_PROCESS (7.x), for the check: from kallsyms, not us.
grep -qw iommufd_ioas_change_process /proc/kallsyms && echo yes > $R/change-process.txt \
    || echo no > $R/change-process.txt
sh -c 'echo $$ > /results/limits.pid; exec iommu-trace exercise --no-vfio --no-hugepages \
       --pin-limits-as 65534 --memlock 65536' > $R/limits.json 2> $R/limits.log
echo $? > $R/limits.rc
sleep 1
object_truth_stop
kill -INT $REC
wait $REC
echo $? > $R/record.rc
grep -w nr_iommu_pages /proc/vmstat > $R/vmstat-after.txt
iommu-trace inspect $R/exercise.itc --summary > $R/summary.txt 2>&1
iommu-trace inspect $R/exercise.itc --format jsonl > $R/exercise.jsonl 2> $R/inspect.err
# Every capture is replayed through the reference page-table models.
iommu-trace replay $R/exercise.itc --json > $R/replay.json 2> $R/replay.err
echo $? > $R/replay.rc
iommu-trace replay $R/exercise.itc --what-if > $R/replay.txt 2>&1
exit 0
