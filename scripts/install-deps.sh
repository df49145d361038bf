#!/bin/sh
# Install the Debian packages that building, the demo and the tests need.
# Safe to run again: it only installs what is missing.
#
#   qemu-system-x86  QEMU 10 from bookworm-backports: runs the outer Linux of
#                    the nested test environment under TCG with emulated SVM,
#                    and is the peer in the benchmarks
#   seabios          firmware for QEMU's pc machine in the benchmarks
#   busybox-static   a static busybox on the host; tests/guest/build.sh
#                    downloads the package itself for its initramfs
#   cpio, kmod       packing initramfs images, depmod for the kernel modules
#   qemu-utils       qemu-img and qemu-io for the qcow2 interoperability tests
#   gcc, libc6-dev   the nested runner's self test compiles a small KVM API
#                    program, static and dynamic
set -eu

if [ "$(id -u)" != 0 ]; then
    echo "install-deps: must run as root to install packages" >&2
    exit 1
fi

need=""
for p in qemu-system-x86 seabios busybox-static cpio kmod qemu-utils gcc libc6-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need="$need $p"
done
[ -z "$need" ] && exit 0

# bookworm's own qemu-system-x86 (7.2) cannot sit beside qemu-utils 10, so
# take QEMU from bookworm-backports, using the same mirror and key as the
# main Debian source.
src=/etc/apt/sources.list.d/debian.sources
bpo=/etc/apt/sources.list.d/bookworm-backports.sources
if [ ! -e "$bpo" ] && [ -e "$src" ]; then
    uris=$(awk '/^URIs:/ {print; exit}' "$src")
    key=$(awk '/^Signed-By:/ {print; exit}' "$src")
    printf 'Types: deb\n%s\nSuites: bookworm-backports\nComponents: main\n%s\n' \
        "$uris" "$key" > "$bpo"
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q -t bookworm-backports qemu-system-x86 qemu-utils
apt-get install -y -q seabios busybox-static cpio kmod gcc libc6-dev
