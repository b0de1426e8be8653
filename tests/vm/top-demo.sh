# VM demo "top-demo" (`cargo xtask demo --top`): `iommu-trace top` live on the serial console,
# which QEMU connects to the user's terminal, over the exercise workload repeated in the
# background. Quitting top (q) ends the demo.
export RUST_LOG=off
. /scenarios/vfio-bind.sh
echo 16 > /proc/sys/vm/nr_hugepages
rows=$(sed -n 's/.* rows=\([0-9]*\).*/\1/p' /proc/cmdline)
cols=$(sed -n 's/.* cols=\([0-9]*\).*/\1/p' /proc/cmdline)
stty -F /dev/ttyS0 rows "${rows:-24}" cols "${cols:-80}"
(
    sleep 3
    while true; do
        iommu-trace exercise -o /tmp/exercise.json > /dev/null 2>&1
        sleep 2
    done
) &
LOOP=$!
# A session with the serial line as its controlling terminal, so that keys reach top.
setsid -c iommu-trace top < /dev/ttyS0 > /dev/ttyS0 2>/dev/null
kill $LOOP
exit 0
