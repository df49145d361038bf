#!/bin/bash
# Run a command where /dev/kvm can boot real Linux guests.
#
# Usage: tests/nested/run.sh [options] -- COMMAND [ARGS...]
#
# By default the command runs nested. QEMU boots an outer Linux (L1, the
# guest fixture's Debian cloud kernel) on an emulated AMD CPU with SVM, and
# L1 loads kvm_amd. The command runs inside L1 as root, where /dev/kvm is
# hardware-style KVM: nested SVM with nested paging. That works on any
# x86-64 host, with or without KVM, but every instruction is emulated. On an
# idle 2-core host L1 takes about 5 s to boot and a guest inside it about
# 6 s, and twice as long when the host is busy.
#
# Options:
#   --bin FILE      copy the executable FILE to /payload, and every shared
#                   library ldd lists for it to the same path in L1
#   --file FILE     copy FILE (or a directory) to /payload
#   --qemu          also put qemu-system-x86_64, its libraries and its x86
#                   firmware into L1, at the host's paths
#   --timeout SECS  stop L1 after SECS seconds (default 600)
#   --log FILE      write L1's serial console to FILE
#   --mem SIZE      L1 memory, as QEMU's -m takes it (default 2G)
#   --smp N         L1 vCPUs (default 1; more is slower on a host with few
#                   cores, because each one is an emulation thread)
#   --cpu MODEL     L1 CPU model, as QEMU's -cpu takes it (default
#                   EPYC,+svm; QEMU emulates SVM but not VMX)
#   --auto          run directly on the host if tests/nested/kvm-kind
#                   prints "hardware", nested otherwise
#   --host          run directly on the host whatever KVM it has
#   -h, --help      print this text
#
# The command runs in /payload, with stdin from /dev/null. Its stdout and
# stderr arrive on this script's stdout as the command writes them, at
# about 100 KB/s. In L1 both are a serial port in raw mode, so isatty()
# is true for them. Also in L1:
#   PATH            starts with /payload
#   GUEST_KERNEL    /payload/guest/vmlinuz         (the guest fixture,
#   GUEST_INITRD    /payload/guest/initramfs.cpio   see tests/guest/build.sh)
#   GUEST_CMDLINE   the fixture's kernel command line for fast quiet boots,
#                   to which a test adds vmdtest.checks= and vmdtest.then=
#   /etc/passwd     root and the unprivileged user _vmd
#   mounted         /proc, /sys, devtmpfs /dev, /dev/pts, tmpfs /dev/shm,
#                   /tmp and /run
#   modules         kvm_amd, tun and bridge, with their dependencies
# On the host (--auto or --host) the command runs in a temporary directory
# holding the --bin and --file copies, which is also first in PATH, and
# GUEST_KERNEL and GUEST_INITRD name the files in the fixture directory.
#
# Exit status: the command's; 124 if L1 (or, on the host, the command)
# timed out; 125 if L1 ended without reporting a status or had no /dev/kvm,
# with one line on stderr saying which; 2 for a usage error.
#
# Environment: VMD_GUEST_DIR (the fixture, default build/guest),
# VMD_NESTED_CACHE (cached L1 image parts, default build/nested).
set -eu

usage() {
    sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p}' "$0"
}
die() {
    echo "run.sh: $*" >&2
    exit 125
}
usage_error() {
    echo "run.sh: $*" >&2
    echo "usage: tests/nested/run.sh [--bin FILE]... [--file FILE]... [--qemu] [--timeout SECS] [--log FILE] [--mem SIZE] [--smp N] [--cpu MODEL] [--auto | --host] -- COMMAND [ARGS...]" >&2
    exit 2
}

bins=()
files=()
with_qemu=0
timeout=600
log=
mem=2G
smp=1
cpu=EPYC,+svm
mode=nested
while [ $# -gt 0 ]; do
    case $1 in
    --bin | --file | --timeout | --log | --mem | --smp | --cpu)
        [ $# -ge 2 ] || usage_error "option $1 needs a value"
        case $1 in
        --bin) bins+=("$2") ;;
        --file) files+=("$2") ;;
        --timeout) timeout=$2 ;;
        --log) log=$2 ;;
        --mem) mem=$2 ;;
        --smp) smp=$2 ;;
        --cpu) cpu=$2 ;;
        esac
        shift 2
        ;;
    --qemu) with_qemu=1; shift ;;
    --auto) mode=auto; shift ;;
    --host) mode=host; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    -*) usage_error "unknown option: $1" ;;
    *) break ;;
    esac
done
[ $# -gt 0 ] || usage_error "missing COMMAND"
[[ $timeout =~ ^[1-9][0-9]*$ ]] || usage_error "--timeout $timeout: expected a whole number of seconds"
[[ $smp =~ ^[1-9][0-9]*$ ]] || usage_error "--smp $smp: expected a number of vCPUs"
for file in ${bins[@]+"${bins[@]}"}; do
    [ -f "$file" ] && [ -x "$file" ] || usage_error "--bin $file: not an executable file"
done
for file in ${files[@]+"${files[@]}"}; do
    [ -e "$file" ] || usage_error "--file $file: no such file"
done

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
guest=${VMD_GUEST_DIR:-$repo/build/guest}
cache=${VMD_NESTED_CACHE:-$repo/build/nested}
. "$repo/tests/lib/initramfs.sh"

# Modules L1 loads: KVM for AMD SVM, and tun and bridge for the network
# tests, each with the dependencies modules.dep lists.
L1_MODULES="kvm-amd tun bridge"
# L1's kernel command line. A quiet console, no crypto self-tests, no i8042
# aux or mux probing and no timer check shorten the boot: "run.sh -- true"
# took 4.3 s in place of 4.8 s on average over 5 runs each, on a busy host.
# With panic=-1 and QEMU's -no-reboot, a panic ends QEMU.
L1_CMDLINE="console=ttyS0 quiet panic=-1 mitigations=off cryptomgr.notests \
i8042.noaux i8042.nomux i8042.dumbkbd random.trust_cpu=on no_timer_check"

for tool in qemu-system-x86_64 cpio flock ldd timeout; do
    command -v "$tool" > /dev/null || die "missing tool: $tool (run scripts/install-deps.sh)"
done

if [ "$mode" = auto ]; then
    if [ "$("$here/kvm-kind")" = hardware ]; then mode=host; else mode=nested; fi
fi

VMD_GUEST_DIR=$guest "$repo/tests/guest/build.sh" || die "building the guest fixture failed"
guest=$(cd "$guest" && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vmd-nested.XXXXXX")
child_pid=
cleanup() {
    [ -z "$child_pid" ] || kill "$child_pid" 2> /dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# copy_payload DIR: copy the --bin and --file arguments into DIR.
copy_payload() {
    local dir=$1 file
    mkdir -p "$dir"
    for file in ${bins[@]+"${bins[@]}"} ${files[@]+"${files[@]}"}; do
        [ ! -e "$dir/${file##*/}" ] || usage_error "two payload files are named ${file##*/}"
        cp -RL "$file" "$dir/"
    done
}

# run_on_host COMMAND...: run the command here, as L1 would.
run_on_host() {
    copy_payload "$tmp/payload"
    [ -z "$log" ] || : > "$log"
    export GUEST_KERNEL=$guest/vmlinuz
    export GUEST_INITRD=$guest/initramfs.cpio
    GUEST_CMDLINE=$(cat "$guest/cmdline")
    export GUEST_CMDLINE
    export PATH=$tmp/payload:$PATH
    local status=0
    (cd "$tmp/payload" && exec timeout "$timeout" "$@" < /dev/null 2>&1) &
    child_pid=$!
    wait "$child_pid" || status=$?
    child_pid=
    [ "$status" != 124 ] || echo "run.sh: COMMAND timed out after $timeout s" >&2
    exit "$status"
}

# copy_with_libraries FILE ROOT PATH: copy the executable FILE to ROOT/PATH
# and each shared library ldd lists for it to the same path under ROOT.
copy_with_libraries() {
    local file=$1 root=$2 path=$3 library
    mkdir -p "$root/${path%/*}"
    cp -L "$file" "$root/$path"
    # ldd fails for a static executable, which needs nothing more.
    for library in $(ldd "$file" 2> /dev/null | grep -o '/[^ ]*' || true); do
        [ -e "$root$library" ] && continue
        mkdir -p "$root${library%/*}"
        cp -L "$library" "$root$library"
    done
}

# is_stale TARGET INPUT...: succeed if TARGET is missing or older than an input.
is_stale() {
    local target=$1 input
    shift
    for input in "$@"; do
        [ "$target" -nt "$input" ] || return 0
    done
    return 1
}

# Build $cache/base.cpio: busybox, L1's /init, modules, users, and the
# guest fixture in /payload/guest.
build_base_image() {
    local root=$tmp/base release
    release=$(ls "$guest/kernel/lib/modules")
    mkdir -p "$root"/{proc,sys,dev,tmp,run,root,var/empty,etc/nested,payload/guest}
    initramfs_busybox "$root" "$guest/busybox"
    # shellcheck disable=SC2086 # one word per module
    initramfs_modules "$guest/kernel/lib/modules/$release" "$root/lib/modules" $L1_MODULES
    install -m 755 "$here/l1-init" "$root/init"
    cat > "$root/etc/passwd" << 'EOF'
root:x:0:0:root:/root:/bin/sh
_vmd:x:999:999:vmd unprivileged user:/var/empty:/bin/false
EOF
    cat > "$root/etc/group" << 'EOF'
root:x:0:
tty:x:5:
_vmd:x:999:
EOF
    printf 'passwd: files\ngroup: files\nhosts: files\n' > "$root/etc/nsswitch.conf"
    printf '127.0.0.1 localhost\n::1 localhost\n' > "$root/etc/hosts"
    cp "$guest/vmlinuz" "$guest/initramfs.cpio" "$guest/cmdline" "$root/payload/guest/"
    { initramfs_console_archive; initramfs_pack "$root"; } > "$cache/base.cpio.new"
    mv "$cache/base.cpio.new" "$cache/base.cpio"
    rm -rf "$root"
}

# Build $cache/qemu.cpio: the host's QEMU with its libraries and the x86
# firmware it loads, in the directories of its firmware search path.
build_qemu_image() {
    local root=$tmp/qemu qemu dir file
    qemu=$(command -v qemu-system-x86_64)
    copy_with_libraries "$qemu" "$root" "$qemu"
    for dir in $(qemu-system-x86_64 -L help); do
        for file in "$dir"/bios*.bin "$dir"/kvmvapic.bin "$dir"/linuxboot*.bin \
            "$dir"/multiboot*.bin "$dir"/pvh.bin "$dir"/qboot.rom "$dir"/vgabios*.bin \
            "$dir"/efi-*.rom "$dir"/pxe-*.rom; do
            [ -e "$file" ] || continue
            mkdir -p "$root$dir"
            cp -L "$file" "$root$dir/"
        done
    done
    initramfs_pack "$root" > "$cache/qemu.cpio.new"
    mv "$cache/qemu.cpio.new" "$cache/qemu.cpio"
    rm -rf "$root"
}

# Build the per-run part of the image: the payload and the command.
build_payload_image() {
    local root=$tmp/payload file word
    mkdir -p "$root/payload" "$root/etc/nested"
    for file in ${bins[@]+"${bins[@]}"} ${files[@]+"${files[@]}"}; do
        case ${file##*/} in
        guest) usage_error "$file: the name guest is taken by the guest fixture in /payload" ;;
        esac
    done
    for file in ${bins[@]+"${bins[@]}"}; do
        [ ! -e "$root/payload/${file##*/}" ] || usage_error "two payload files are named ${file##*/}"
        copy_with_libraries "$file" "$root" "payload/${file##*/}"
    done
    for file in ${files[@]+"${files[@]}"}; do
        [ ! -e "$root/payload/${file##*/}" ] || usage_error "two payload files are named ${file##*/}"
        cp -RL "$file" "$root/payload/"
    done
    # Single-quote each word, writing a single quote as '\''.
    for word in "$@"; do
        printf "'%s' " "${word//\'/\'\\\'\'}"
    done > "$root/etc/nested/command"
    initramfs_pack "$root" > "$tmp/payload.cpio"
}

# boot_l1: boot L1 with $tmp/l1.cpio and set qemu_status.
boot_l1() {
    local console=${log:-$tmp/console.log}
    qemu_status=0
    timeout "$timeout" qemu-system-x86_64 \
        -accel tcg -cpu "$cpu" -M pc -smp "$smp" -m "$mem" \
        -nodefaults -no-user-config -display none -no-reboot \
        -kernel "$guest/vmlinuz" -initrd "$tmp/l1.cpio" -append "$L1_CMDLINE" \
        -chardev "file,id=console,path=${console//,/,,}" -serial chardev:console \
        -chardev stdio,id=output -serial chardev:output \
        -chardev "file,id=status,path=${tmp//,/,,}/status" -serial chardev:status \
        < /dev/null 2> "$tmp/qemu.err" &
    child_pid=$!
    wait "$child_pid" || qemu_status=$?
    child_pid=
    # TCG lacks some features of the EPYC model and warns about each, and
    # QEMU reports the signal that timeout(1) sends.
    grep -v -e "TCG doesn't support requested feature" \
        -e "terminating on signal 15 from pid [0-9]* (timeout)" "$tmp/qemu.err" >&2 || true
}

run_nested() {
    mkdir -p "$cache"
    exec 9> "$cache/.lock"
    flock 9
    if is_stale "$cache/base.cpio" "$guest/vmlinuz" "$guest/initramfs.cpio" "$guest/cmdline" "$guest/busybox" \
        "$here/run.sh" "$here/l1-init" "$repo/tests/lib/initramfs.sh"; then
        build_base_image
    fi
    # qemu.cpio.source names the QEMU binary that qemu.cpio holds.
    local qemu
    qemu=$(command -v qemu-system-x86_64)
    if [ "$with_qemu" = 1 ] &&
        { [ "$(cat "$cache/qemu.cpio.source" 2> /dev/null)" != "$qemu" ] ||
            is_stale "$cache/qemu.cpio" "$qemu" "$here/run.sh"; }; then
        build_qemu_image
        echo "$qemu" > "$cache/qemu.cpio.source"
    fi
    local parts=("$cache/base.cpio")
    [ "$with_qemu" = 0 ] || parts+=("$cache/qemu.cpio")
    cat "${parts[@]}" > "$tmp/l1.cpio"
    flock -u 9
    exec 9>&-
    build_payload_image "$@"
    cat "$tmp/payload.cpio" >> "$tmp/l1.cpio"

    boot_l1

    local word= value=
    [ ! -f "$tmp/status" ] || read -r word value < "$tmp/status" || true
    case $word in
    exit) exit "$value" ;;
    no-kvm) die "L1 has no /dev/kvm: $value" ;;
    esac
    if [ "$qemu_status" = 124 ]; then
        echo "run.sh: L1 timed out after $timeout s" >&2
        exit 124
    fi
    die "L1 ended without reporting a status (QEMU exit status $qemu_status)${log:+, console in $log}"
}

case $mode in
host) run_on_host "$@" ;;
nested) run_nested "$@" ;;
esac
