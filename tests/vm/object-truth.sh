# Ground truth for the iommufd object events, counted by ftrace kprobe events on the same
# kernel functions, independently of iommu-trace's own probes (docs/kernel-facts.md §7.2):
# allocations, publications, aborts (and iommufd_object_abort_and_destroy, whose return is
# the abort where the compiler inlined it), every destroy op, and the ioctl, file release and
# device unbind around them (how an object was destroyed, an abort's errno); and the page-table
# top growths (xtask/src/checks/capture.rs).
# Sourced by the scenarios: object_truth_start before the workload, object_truth_stop after;
# xtask/src/checks/objects.rs compares $R/object-truth.txt with the capture.
T=/sys/kernel/tracing

object_truth_start() {
    [ -d $T/events ] || mount -t tracefs nodev $T 2>/dev/null
    if [ ! -w $T/kprobe_events ]; then
        echo "no writable $T/kprobe_events (CONFIG_KPROBE_EVENTS?)" > $R/object-truth.err
        return
    fi
    echo > $T/trace
    # The map/unmap loops go through the ioctl probes too: room for them.
    echo 8192 > $T/buffer_size_kb
    echo 'r:itruth/alloc _iommufd_object_alloc obj=$retval:x64' >> $T/kprobe_events
    # The contexts that say how an object was destroyed and an abort's errno.
    echo 'p:itruth/ioctl iommufd_fops_ioctl cmd=$arg2:x32' >> $T/kprobe_events
    echo 'r:itruth/ioctl_ret iommufd_fops_ioctl ret=$retval:s32' >> $T/kprobe_events
    for f in iommufd_fops_release iommufd_device_unbind; do
        echo "p:itruth/${f#iommufd_} $f" >> $T/kprobe_events
        echo "r:itruth/${f#iommufd_}_ret $f" >> $T/kprobe_events
    done
    for f in iommufd_object_finalize iommufd_object_abort; do
        echo "p:itruth/${f#iommufd_object_} $f obj=\$arg2:x64 id=+12(\$arg2):u32 type=+8(\$arg2):u32" >> $T/kprobe_events
    done
    # Where the compiler inlined iommufd_object_abort into its caller, the caller's return
    # is the abort (docs/kernel-facts.md §6.3).
    echo 'p:itruth/abort_destroy iommufd_object_abort_and_destroy obj=$arg2:x64 id=+12($arg2):u32' >> $T/kprobe_events
    echo 'r:itruth/abort_destroy_ret iommufd_object_abort_and_destroy' >> $T/kprobe_events
    # Every destroy op the kernel has (types it lacks have none).
    for f in iommufd_device_destroy iommufd_hwpt_paging_destroy iommufd_hwpt_nested_destroy \
        iommufd_ioas_destroy iommufd_access_destroy_object iommufd_fault_destroy \
        iommufd_viommu_destroy iommufd_vdevice_destroy iommufd_veventq_destroy \
        iommufd_hw_queue_destroy iommufd_selftest_destroy; do
        grep -q " $f\$" /proc/kallsyms || continue
        echo "p:itruth/destroy_${f#iommufd_} $f obj=\$arg1:x64 id=+12(\$arg1):u32 type=+8(\$arg1):u32" >> $T/kprobe_events
    done 2> $R/object-truth.err
    # Page-table top growth (AMD, docs/kernel-facts.md §4.4): 6.12 calls this once per level
    # added, 7.x this once per growth with the new 0-based top level.
    if grep -q ' amd_iommu_update_and_flush_device_table$' /proc/kallsyms; then
        echo 'p:itruth/grow amd_iommu_update_and_flush_device_table' >> $T/kprobe_events
    fi 2>> $R/object-truth.err
    if grep -q ' amd_iommu_change_top$' /proc/kallsyms; then
        echo 'p:itruth/grow amd_iommu_change_top top_level=$arg3:u32' >> $T/kprobe_events
    fi 2>> $R/object-truth.err
    cat $T/kprobe_events > $R/object-truth-probes.txt
    echo 1 > $T/events/itruth/enable
}

object_truth_stop() {
    [ -e $T/events/itruth/enable ] || return
    echo 0 > $T/events/itruth/enable
    grep -v '^#' $T/trace > $R/object-truth.txt
    cat $T/per_cpu/cpu*/stats | grep -i overrun > $R/object-truth-overrun.txt
    echo > $T/kprobe_events
}
