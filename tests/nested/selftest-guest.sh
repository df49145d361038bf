#!/bin/sh
# Boot the guest fixture under QEMU with KVM and print its VMDTEST lines.
# tests/nested/selftest.sh runs this inside L1 (run.sh --qemu).
#
# Usage: selftest-guest.sh ACTION CPUS
#
# The guest runs the cpus, rng and time checks, then ACTION (its
# vmdtest.then=). For ACTION "wait", this presses the ACPI power button
# through the QEMU monitor (system_powerdown) once the guest prints
# VMDTEST-END. Last line: "selftest-guest: QEMU exited with status N",
# where N is 137 if the guest was still running after 180 s and was killed.
set -eu

action=$1
cpus=$2
monitor=/tmp/monitor-$$
mkfifo "$monitor.in" "$monitor.out"
cat "$monitor.out" > /dev/null &

echo "selftest-guest: starting QEMU, vmdtest.then=$action"
{
    status=0
    timeout -s KILL 180 qemu-system-x86_64 -enable-kvm -cpu host -M pc -m 256 -smp "$cpus" \
        -nodefaults -no-user-config -display none -no-reboot \
        -serial stdio -chardev "pipe,id=monitor,path=$monitor" -mon chardev=monitor \
        -device virtio-rng-pci \
        -kernel "$GUEST_KERNEL" -initrd "$GUEST_INITRD" \
        -append "$GUEST_CMDLINE vmdtest.checks=cpus,rng,time vmdtest.then=$action" \
        < /dev/null || status=$?
    echo "selftest-guest: QEMU exited with status $status"
} | while IFS= read -r line; do
    line=$(printf '%s' "$line" | tr -d '\r')
    echo "$line"
    if [ "$line" = VMDTEST-END ] && [ "$action" = wait ]; then
        echo system_powerdown > "$monitor.in"
    fi
done
rm -f "$monitor.in" "$monitor.out"
