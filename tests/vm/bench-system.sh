# VM benchmark "system": what tracing costs the rest of the host, memory work with no IOMMU
# in it. Where the iommu-pages helpers are inline (6.11-6.14, our 6.12) the page-table hook
# is the memory-cgroup statistics function every page-cache and anonymous page passes
# (docs/kernel-facts.md); memchurn (tests/vm/memchurn.c) drives it, untraced, under
# `iommu-trace record`, and under the floor (`record --floor`: the same attach points,
# programs that return at once), interleaved in one boot. xtask bench system prints medians
# and ratios.
R=/results
export RUST_LOG=warn
N=${BENCH_ITERATIONS:-4000}
ROUNDS=${BENCH_ROUNDS:-5}
# In its own memory cgroup, as the exercise's workload runs: charged pages, per-cgroup stats.
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/churn
# memchurn into $1, on CPU 1 (the tracer on CPU 0, as in bench-capture).
churn() {
    sh -c "echo \$\$ > /sys/fs/cgroup/churn/cgroup.procs; exec busybox taskset -c 1 memchurn $N /tmp/churn" > "$1" 2>&1
}
. /scenarios/traced.sh
traced_churn() { traced churn "$@"; }
# A warm-up, untraced and traced, not counted.
churn /tmp/warm.json
traced_churn /tmp/warm.json /tmp/warm.itc /tmp/warm.log
rm -f /tmp/warm.itc
r=1
while [ $r -le $ROUNDS ]; do
    churn $R/base$r.json
    traced_churn $R/traced$r.json $R/system$r.itc $R/record$r.log
    echo $? > $R/record$r.rc
    iommu-trace inspect $R/system$r.itc --summary > $R/summary$r.txt 2>&1
    traced_churn $R/floor$r.json /tmp/floor.itc $R/floor-record$r.log --floor
    rm -f /tmp/floor.itc
    r=$((r + 1))
done
churn $R/base$r.json
iommu-trace probes > $R/probes.txt 2>&1
exit 0
