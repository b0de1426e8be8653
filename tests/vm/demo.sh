# VM scenario "demo" (`cargo xtask demo`): record the exercise workload on the test kernel,
# then summarize and replay the capture. The test scenario "exercise" begins the same way
# and goes on with its checks; the demo stops here, so its result comes sooner.
R=/results
export RUST_LOG=warn
. /scenarios/vfio-bind.sh
echo 16 > /proc/sys/vm/nr_hugepages
# The workload runs in its own cgroup with the memory controller on, as in "exercise".
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/exercise
iommu-trace record -o $R/exercise.itc --ready-file /tmp/ready > $R/record.log 2>&1 &
REC=$!
i=0
while [ ! -e /tmp/ready ] && kill -0 $REC 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
sh -c 'echo $$ > /sys/fs/cgroup/exercise/cgroup.procs;
       exec iommu-trace exercise -o /results/exercise.json' > $R/exercise.log 2>&1
kill -INT $REC
wait $REC
iommu-trace inspect $R/exercise.itc --summary > $R/summary.txt 2>&1
iommu-trace inspect $R/exercise.itc --format jsonl > $R/exercise.jsonl 2> $R/inspect.err
iommu-trace replay $R/exercise.itc > $R/replay.txt 2>&1
