#!/bin/bash
# Boot and memory benchmark: vmd side by side with QEMU -M microvm and
# -M pc (target/release/boot-bench, source in bench/boot). The other
# benchmarks in docs/BENCHMARKS.md have their own commands.
#
# Usage: bench/run.sh [--runs N] [--host-runs N] [--skip-nested] [--skip-host]
#
#   --runs N        measured boots per VMM and guest where real Linux boots
#                   (default 8)
#   --host-runs N   measured boots per VMM of the first-byte guest on this
#                   host's KVM (default 10)
#   --skip-nested   leave out part 1
#   --skip-host     leave out part 2
#
# Part 1 runs where a stock Linux guest boots: in the nested environment
# (tests/nested/run.sh --qemu), or on this host if its KVM has VMX/SVM.
# It boots the first-byte guest and the guest fixture (Debian's kernel and
# the test initramfs, timed to VMDTEST-BOOTED) under each VMM.
# Nested, a second pass boots both guests again under vmd and QEMU pc
# with /sys/kernel/mm/transparent_hugepage/shmem_enabled set to advise in
# the outer Linux (bench/boot/nested-passes.sh).
# Part 2 boots the first-byte guest directly on this host's KVM; it is
# left out when part 1 already ran on this host.
# Every VM has 512 MiB and 1 vCPU. Each part prints the machine, every
# sample and a Markdown table, and saves that output in
# build/bench/boot-memory-nested.txt and boot-memory-host.txt.
set -eu -o pipefail

usage() {
    sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p}' "$0"
}
usage_error() {
    echo "run.sh: $*" >&2
    echo "usage: bench/run.sh [--runs N] [--host-runs N] [--skip-nested] [--skip-host]" >&2
    exit 2
}

runs=8
host_runs=10
nested=1
host=1
while [ $# -gt 0 ]; do
    case $1 in
    --runs | --host-runs)
        [ $# -ge 2 ] || usage_error "option $1 needs a value"
        [[ $2 =~ ^[1-9][0-9]*$ ]] || usage_error "$1 $2: expected a positive whole number"
        if [ "$1" = --runs ]; then runs=$2; else host_runs=$2; fi
        shift 2
        ;;
    --skip-nested) nested=0; shift ;;
    --skip-host) host=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown argument: $1" ;;
    esac
done

cd "$(dirname "$0")/.."
cargo build --workspace --bins --release
tests/guest/build.sh
mkdir -p build/bench
kvm_kind=$(tests/nested/kvm-kind)

if [ "$nested" = 1 ]; then
    # A nested Linux boot takes 5-30 s, so allow 60 s for each of the five
    # Linux boots of a round (three in the first pass, two in the second),
    # warm-up round included, on top of the outer boot.
    timeout=$((300 + (runs + 1) * 5 * 60))
    where=nested
    [ "$kvm_kind" != hardware ] || where="on this host"
    echo "run.sh: part 1, first-byte and Linux guests, $runs runs ($where)" >&2
    # The second pass changes a kernel setting, so it runs only in the
    # outer Linux of the nested environment, never on this host.
    shmem_pass=
    [ "$kvm_kind" = hardware ] || shmem_pass=--shmem-advise
    tests/nested/run.sh --auto --qemu --timeout "$timeout" \
        --bin target/release/vmd --bin target/release/vmctl --bin target/release/boot-bench \
        --file bench/boot/nested-passes.sh -- sh ./nested-passes.sh "$runs" $shmem_pass |
        tee build/bench/boot-memory-nested.txt
fi

if [ "$host" = 1 ] && { [ "$nested" = 0 ] || [ "$kvm_kind" != hardware ]; }; then
    # QEMU 10.0 with -cpu host aborts on kvm_pvm: KVM rejects its write of
    # MSR 0x10a (IA32_ARCH_CAPABILITIES). The CPU model without that MSR
    # boots.
    qemu_cpu=host
    [ "$kvm_kind" != pvm ] || qemu_cpu=host,-arch-capabilities
    echo "run.sh: part 2, first-byte guest on this host's KVM ($kvm_kind), $host_runs runs" >&2
    target/release/boot-bench --runs "$host_runs" --guest first-byte --qemu-cpu "$qemu_cpu" --show-mappings 2>&1 |
        tee build/bench/boot-memory-host.txt
fi
