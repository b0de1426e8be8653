# Sourced by the scenarios that trace a real device: the emulated e1000e (8086:10d3) has no
# driver in the test kernel, so vfio-pci takes it (its cdev appears under /dev/vfio/devices).
for d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$d/vendor")" = 0x8086 ] && [ "$(cat "$d/device")" = 0x10d3 ]; then
        echo vfio-pci > "$d/driver_override"
        echo "${d##*/}" > /sys/bus/pci/drivers_probe
    fi
done
