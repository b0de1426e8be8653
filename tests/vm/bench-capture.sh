# VM benchmark "capture": the exercise's map/unmap loop without the tracer, with
# `iommu-trace record`, and without again, side by side in one boot (xtask bench capture
# prints the ratios).
R=/results
export RUST_LOG=warn
N=${BENCH_LOOPS:-3000}
for d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$d/vendor")" = 0x8086 ] && [ "$(cat "$d/device")" = 0x10d3 ]; then
        echo vfio-pci > "$d/driver_override"
        echo "${d##*/}" > /sys/bus/pci/drivers_probe
    fi
done
loop() { iommu-trace exercise --steps loop --loop $N --loop-pages 1 --no-hugepages -o "$1" > "$1.log" 2>&1; }
loop $R/base1.json
iommu-trace record -o $R/bench.itc --ready-file /tmp/ready > $R/record.log 2>&1 &
REC=$!
i=0
while [ ! -e /tmp/ready ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
loop $R/traced.json
kill -INT $REC
wait $REC
echo $? > $R/record.rc
loop $R/base2.json
iommu-trace inspect $R/bench.itc --summary > $R/summary.txt 2>&1
stat -c %s $R/bench.itc > $R/capture-bytes.txt
exit 0
