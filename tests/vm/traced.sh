# Sourced by the benchmark scenarios. traced WORKLOAD OUT ITC LOG [RECORD ARGUMENTS...]: runs
# the shell function WORKLOAD with OUT while `iommu-trace record` (on CPU 0, the arguments
# added) writes ITC, logging to LOG; returns the recorder's exit status. The workloads run on
# CPU 1: left to the scheduler, the two sometimes shared a CPU and sometimes not, and traced
# runs of one configuration differed by 1.7x. TRACER: the iommu-trace program to run
# (bench capture --against: another build's).
traced() {
    work=$1 out=$2 itc=$3 log=$4
    shift 4
    rm -f /tmp/ready
    busybox taskset -c 0 ${TRACER:-iommu-trace} record "$@" -o "$itc" --ready-file /tmp/ready > "$log" 2>&1 &
    REC=$!
    i=0
    while [ ! -e /tmp/ready ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    $work "$out"
    kill -INT $REC
    wait $REC
}
