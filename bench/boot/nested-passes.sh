#!/bin/sh
# The part of bench/run.sh that runs where a stock Linux guest boots: in
# the outer Linux of the nested environment, or on a host with VMX/SVM.
#
# Usage: nested-passes.sh RUNS [--shmem-advise]
#
# It measures vmd, QEMU microvm and QEMU pc with the kernel's settings as
# they are. With --shmem-advise, which bench/run.sh passes only in the
# nested environment, it then sets
# /sys/kernel/mm/transparent_hugepage/shmem_enabled to advise, so that
# vmd's guest RAM (a memfd) gets huge pages as QEMU's anonymous RAM does,
# and measures vmd and QEMU pc again.
set -eu

runs=$1
echo '## settings as they are'
./boot-bench --runs "$runs" --guest first-byte,linux --show-mappings
if [ "${2:-}" = --shmem-advise ]; then
    echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled
    echo
    echo '## shmem_enabled=advise'
    ./boot-bench --runs "$runs" --vmm vmd,qemu-pc --guest first-byte,linux --show-mappings
fi
