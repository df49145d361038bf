#!/bin/bash
# Build the guest fixture of the tests: Debian's cloud kernel and a small
# busybox initramfs. Its /init (tests/guest/init) loads the virtio and power
# button modules, runs the checks named on the kernel command line and
# reports them on the console as "VMDTEST ..." lines.
#
# Usage: tests/guest/build.sh [--update] [-h]
#
#   --update   resolve the newest linux-image-*-cloud-amd64 and
#              busybox-static again and rebuild if either changed
#              (without it, packages downloaded before are kept)
#
# Output directory: $VMD_GUEST_DIR, default build/guest in the repository:
#   vmlinuz          the kernel (bzImage)
#   initramfs.cpio   the initramfs (uncompressed cpio newc)
#   kernel/          the extracted kernel package, with modules.dep
#   busybox          the static busybox of the initramfs
#   packages         name and version of both Debian packages
#   cmdline          a kernel command line for fast quiet boots, without
#                    the vmdtest.* parameters (see tests/guest/init)
#
# The packages come from apt's configured sources through apt-get download;
# nothing is installed. A run that finds the output newer than its inputs
# does nothing.
set -eu

usage() {
    sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p}' "$0"
}
die() {
    echo "build.sh: $*" >&2
    exit 1
}

update=0
while [ $# -gt 0 ]; do
    case $1 in
    --update) update=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${VMD_GUEST_DIR:-$repo/build/guest}
. "$repo/tests/lib/initramfs.sh"

# Modules /init loads, with their dependencies: the virtio PCI transport
# (modern and legacy), the devices, and the ACPI power button with the evdev
# interface that busybox acpid reads.
GUEST_MODULES="virtio_pci virtio_rng virtio_blk virtio_net button evdev"

# The kernel command line for the cmdline file. Beyond a quiet serial
# console: no crypto self-tests, no i8042 mouse or multiplexer probing, one
# 8250 port, CPU entropy trusted, no TSC and timer checks. In the nested
# test environment these cut a guest boot from 12.2 s to 9.5 s on average
# over 5 boots each (QEMU -M pc with KVM in L1, on a busy host).
GUEST_CMDLINE="console=ttyS0 quiet panic=-1 mitigations=off cryptomgr.notests \
i8042.noaux i8042.nomux i8042.dumbkbd 8250.nr_uarts=1 random.trust_cpu=on \
tsc=reliable no_timer_check"

for tool in apt-get apt-cache dpkg-deb depmod cpio flock; do
    command -v "$tool" > /dev/null || die "missing tool: $tool (run scripts/install-deps.sh)"
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
exec 9> "$out/.lock"
flock 9

# Print "PACKAGE VERSION" of the kernel package that the candidate of
# linux-image-cloud-amd64 pulls in, then of busybox-static. Runs apt-get
# update once if apt does not know the packages.
resolve_packages() {
    local info
    if ! info=$(apt-cache show --no-all-versions linux-image-cloud-amd64 busybox-static 2> /dev/null); then
        echo "build.sh: apt does not know linux-image-cloud-amd64 or busybox-static, running apt-get update" >&2
        apt-get update -q >&2 || die "apt-get update failed"
        info=$(apt-cache show --no-all-versions linux-image-cloud-amd64 busybox-static) ||
            die "apt's sources have no linux-image-cloud-amd64 or no busybox-static"
    fi
    # The metapackage depends on exactly one version of the real package:
    # "Depends: linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)".
    sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*-cloud-amd64\) (= \([^)]*\)).*/\1 \2/p' <<< "$info" | head -n 1
    awk '/^Package: busybox-static$/ { p = 1 } p && /^Version:/ { print "busybox-static", $2; exit }' <<< "$info"
}

# Download the packages named in the file $1 ("PACKAGE VERSION" lines:
# kernel, then busybox) and extract them into $out, replacing what is there,
# and run depmod on the kernel tree.
fetch_packages() {
    local kernel_pkg kernel_version busybox_version tmp release
    read -r kernel_pkg kernel_version < "$1"
    busybox_version=$(sed -n 's/^busybox-static //p' "$1")
    tmp=$(mktemp -d "$out/fetch.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT

    echo "build.sh: downloading $kernel_pkg $kernel_version and busybox-static $busybox_version" >&2
    # apt's _apt user cannot write to a directory owned by another user;
    # the download then runs as the caller, which apt reports with a warning.
    (cd "$tmp" && apt-get download -q "$kernel_pkg=$kernel_version" "busybox-static=$busybox_version" 2>&1 |
        grep -v -e 'Download is performed unsandboxed' -e '^Get:' -e '^Fetched' >&2) || true
    ls "$tmp/${kernel_pkg}_"*.deb > /dev/null 2>&1 || die "apt-get download $kernel_pkg failed"
    ls "$tmp/busybox-static_"*.deb > /dev/null 2>&1 || die "apt-get download busybox-static failed"

    dpkg-deb -x "$tmp/${kernel_pkg}_"*.deb "$tmp/kernel"
    dpkg-deb -x "$tmp/busybox-static_"*.deb "$tmp/busybox-static"
    release=$(ls "$tmp/kernel/lib/modules")
    [ -f "$tmp/kernel/boot/vmlinuz-$release" ] || die "$kernel_pkg has no boot/vmlinuz-$release"
    # The Debian package ships no modules.dep, because its postinst runs depmod.
    depmod -b "$tmp/kernel" "$release"

    rm -rf "$out/kernel"
    mv "$tmp/kernel" "$out/kernel"
    mv "$tmp/busybox-static/bin/busybox" "$out/busybox"
    cp "$out/kernel/boot/vmlinuz-$release" "$out/vmlinuz"
    cp "$1" "$out/packages"
    rm -rf "$tmp"
    trap - EXIT
}

# Build initramfs.cpio from busybox, /init and the modules.
build_initramfs() {
    local release tmp root
    release=$(ls "$out/kernel/lib/modules")
    tmp=$(mktemp -d "$out/initramfs.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    root=$tmp/root

    mkdir -p "$root/proc" "$root/sys" "$root/tmp" "$root/etc/acpi/PWRF"
    initramfs_busybox "$root" "$out/busybox"
    # shellcheck disable=SC2086 # one word per module
    initramfs_modules "$out/kernel/lib/modules/$release" "$root/lib/modules" $GUEST_MODULES
    install -m 755 "$here/init" "$root/init"
    # busybox acpid runs /etc/acpi/PWRF/00000080 when the power button is
    # pressed. SIGUSR2 to PID 1 is a power-off request, as for busybox init.
    printf '#!/bin/sh\nexec kill -USR2 1\n' > "$root/etc/acpi/PWRF/00000080"
    chmod 755 "$root/etc/acpi/PWRF/00000080"

    # Uncompressed, because it is not slower. In the nested test environment
    # (QEMU -M pc with KVM in L1) a boot took 6.1 s of wall time with either
    # this or a gzip -9 archive, on average over 7 boots each. The guest
    # kernel reached power-off 0.1 s sooner with the uncompressed one.
    { initramfs_console_archive; initramfs_pack "$root"; } > "$tmp/initramfs.cpio"
    mv "$tmp/initramfs.cpio" "$out/initramfs.cpio"
    rm -rf "$tmp"
    trap - EXIT
    echo "build.sh: built $out/initramfs.cpio" >&2
}

if [ "$update" = 1 ] || [ ! -f "$out/packages" ]; then
    resolve_packages > "$out/packages.new"
    [ "$(wc -l < "$out/packages.new")" = 2 ] || die "cannot resolve linux-image-cloud-amd64 to a kernel package"
    if cmp -s "$out/packages.new" "$out/packages" && [ -f "$out/vmlinuz" ]; then
        rm "$out/packages.new"
    else
        fetch_packages "$out/packages.new"
        rm "$out/packages.new"
    fi
fi

# The initramfs depends on the packages, this script, /init and the shared
# initramfs functions.
for input in "$out/packages" "$here/build.sh" "$here/init" "$repo/tests/lib/initramfs.sh"; do
    if [ ! "$out/initramfs.cpio" -nt "$input" ]; then
        build_initramfs
        break
    fi
done
if [ ! "$out/cmdline" -nt "$here/build.sh" ]; then
    echo "$GUEST_CMDLINE" > "$out/cmdline"
fi
