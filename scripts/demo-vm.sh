#!/bin/sh
# Runs where KVM can boot Linux (started by scripts/demo.sh): starts vmd,
# boots the guest fixture with its console attached, shows the VM table,
# and stops vmd. vmd and vmctl are on PATH; the fixture is in
# $GUEST_KERNEL and $GUEST_INITRD.
set -eu
socket=/run/vmd-demo.sock

vmd -d -s "$socket" &
vmd_pid=$!
trap 'kill "$vmd_pid" 2>/dev/null; wait "$vmd_pid" 2>/dev/null || true' EXIT
tries=0
until [ -S "$socket" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ]; then
        echo "demo: vmd did not create $socket" >&2
        exit 1
    fi
    sleep 0.1
done

echo "demo: vmctl start demo -m 512M -p 2 (console follows; the guest powers off by itself)"
vmctl -s "$socket" start demo -b "$GUEST_KERNEL" --initrd "$GUEST_INITRD" -m 512M -p 2 \
    --cmdline "console=ttyS0 panic=-1 vmdtest.checks=cpus,rng,time vmdtest.then=poweroff" -c
echo "demo: vmctl status"
vmctl -s "$socket" status || true
