#!/bin/bash
# make demo: boots the guest fixture (Debian's cloud kernel and the test
# initramfs) under vmd and shows its console until the guest powers off.
# Run after `make build guest`.
set -eu
cd "$(dirname "$0")/.."

kind=$(tests/nested/kvm-kind)
if [ "$kind" != hardware ]; then
    echo "demo: this host's /dev/kvm has no VMX/SVM ($kind), so the demo runs in the nested environment (an outer Linux under QEMU emulation)" >&2
fi
exec tests/nested/run.sh --auto --timeout 900 \
    --bin target/release/vmd --bin target/release/vmctl --file scripts/demo-vm.sh -- \
    sh demo-vm.sh
