#!/bin/bash
# End-to-end test of tests/nested/run.sh and the guest fixture.
#
# Usage: tests/nested/selftest.sh [-h]
#
# Boots L1 five times (about a minute on an idle 2-core host):
#   1. a static KVM API program, quoting of arguments, exit status and
#      the L1 environment
#   2. with --qemu, QEMU with KVM inside L1 boots the guest fixture twice:
#      vmdtest.then=poweroff, then vmdtest.then=wait with an ACPI power
#      button press from the QEMU monitor
#   3. a command that powers L1 off: exit status 125
#   4. a CPU model without SVM, so L1 has no /dev/kvm: exit status 125
#   5. a timeout: exit status 124, with --auto (nested unless kvm-kind
#      prints "hardware")
# and runs the same kind of command directly on the host (--host) and a few
# usage errors. Every check compares exact output; on a mismatch it prints
# a diff. The last line is "N passed, N failed"; the exit status is 1 if a
# check failed.
#
# Needs gcc with a static libc (libc6-dev) for the KVM API program. Prints
# the host wall time of each run and of the guest boot milestones to stderr.
set -eu

if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
    sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p}' "$0"
    exit 0
fi

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
run=$here/run.sh
guest=${VMD_GUEST_DIR:-$repo/build/guest}

command -v gcc > /dev/null || { echo "selftest.sh: missing tool: gcc (run scripts/install-deps.sh)" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vmd-selftest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0

# check NAME EXPECTED ACTUAL: compare two strings exactly.
check() {
    if [ "$2" = "$3" ]; then
        passed=$((passed + 1))
        echo "ok: $1"
    else
        failed=$((failed + 1))
        echo "FAILED: $1"
        diff -u <(printf '%s\n' "$2") <(printf '%s\n' "$3") | sed 's/^/    /' || true
    fi
}

# check_match NAME REGEX ACTUAL: match a whole string against an extended
# regular expression.
check_match() {
    if [[ $3 =~ ^$2$ ]]; then
        passed=$((passed + 1))
        echo "ok: $1"
    else
        failed=$((failed + 1))
        echo "FAILED: $1: \"$3\" does not match /^$2\$/"
    fi
}

# runner NAME ARGS...: run run.sh with ARGS. Its stdout goes to $tmp/NAME.out
# and, each line with the seconds since the start, to $tmp/NAME.times. Its
# stderr goes to $tmp/NAME.err and its exit status to $status.
runner() {
    local name=$1 start line
    shift
    start=$EPOCHREALTIME
    {
        status=0
        "$run" "$@" 2> "$tmp/$name.err" || status=$?
        echo "$status" > "$tmp/$name.status"
    } | while IFS= read -r line; do
        printf '%s\n' "$line" >> "$tmp/$name.out"
        printf '%s %s\n' "$(elapsed "$start")" "$line" >> "$tmp/$name.times"
    done
    status=$(cat "$tmp/$name.status")
    touch "$tmp/$name.out" "$tmp/$name.times"
    echo "selftest: run $name: $(elapsed "$start") s, exit status $status" >&2
}

# elapsed START: seconds since START (an $EPOCHREALTIME value), 0.1 s resolution.
elapsed() {
    awk -v start="$1" -v now="$EPOCHREALTIME" 'BEGIN { printf "%.1f", now - start }'
}

# seconds_at NAME LINE: seconds into run NAME at which LINE arrived.
seconds_at() {
    awk -v line="$2" '{ time = $1; sub(/^[^ ]* /, "") } $0 == line { print time; exit }' "$tmp/$1.times"
}

# Build the fixture first, so that the runs below print nothing about it.
"$repo/tests/guest/build.sh"
guest=$(cd "$guest" && pwd)
gcc -O2 -static -o "$tmp/kvm-smoke" "$here/kvm-smoke.c"
# The same program linked against the shared glibc, as the Rust binaries
# are, checks that --bin brings the libraries along.
gcc -O2 -o "$tmp/kvm-smoke-dynamic" "$here/kvm-smoke.c"
now=$(date +%s)

# 1. KVM API, quoting, environment, exit status.
cat > "$tmp/env-check" << 'EOF'
#!/bin/sh
kvm-kind
kvm-smoke | grep -v 'us per exit'
echo "to stderr" >&2
printf '[%s]\n' "$@"
pwd
echo "GUEST_KERNEL=$GUEST_KERNEL"
echo "GUEST_INITRD=$GUEST_INITRD"
echo "GUEST_CMDLINE=$GUEST_CMDLINE"
ls "$GUEST_KERNEL" "$GUEST_INITRD" > /dev/null && echo "fixture present"
kvm-smoke-dynamic | head -n 1
id _vmd
awk '{ print $2, $3 }' /proc/mounts
exec 3<> /dev/ptmx
ls -1 /dev/pts
exec 3>&-
ls -1d /dev/net/tun /sys/module/bridge
exit 3
EOF
chmod +x "$tmp/env-check"
runner l1 --bin "$tmp/kvm-smoke" --bin "$tmp/kvm-smoke-dynamic" --file "$here/kvm-kind" --bin "$tmp/env-check" -- \
    env-check 'two words' "it's" '$HOME' '"quoted"' '' 'back\slash' '*' 'first line
second line'
check "l1: exit status" 3 "$status"
check "l1: no stderr" "" "$(cat "$tmp/l1.err")"
check "l1: output" "hardware
kvm-smoke: guest wrote: KVM OK
kvm-smoke: guest halted after 1000 exits to port 0x80
to stderr
[two words]
[it's]
[\$HOME]
[\"quoted\"]
[]
[back\\slash]
[*]
[first line
second line]
/payload
GUEST_KERNEL=/payload/guest/vmlinuz
GUEST_INITRD=/payload/guest/initramfs.cpio
GUEST_CMDLINE=$(cat "$guest/cmdline")
fixture present
kvm-smoke: guest wrote: KVM OK
uid=999(_vmd) gid=999(_vmd) groups=999(_vmd)
/ rootfs
/proc proc
/sys sysfs
/dev devtmpfs
/dev/pts devpts
/dev/shm tmpfs
/tmp tmpfs
/run tmpfs
0
ptmx
/dev/net/tun
/sys/module/bridge" "$(cat "$tmp/l1.out")"
echo "selftest: L1 booted and ran its first command $(seconds_at l1 hardware) s after run.sh started" >&2

# 2. The guest fixture under QEMU with KVM, inside L1.
runner guest --qemu --file "$here/selftest-guest.sh" -- \
    sh -c './selftest-guest.sh poweroff 2 && ./selftest-guest.sh wait 1'
check "guest: exit status" 0 "$status"
vmdtest_lines=$(grep -E '^(VMDTEST|selftest-guest:)' "$tmp/guest.out" || true)
first=$(sed -n '1,/QEMU exited/p' <<< "$vmdtest_lines")
second=$(sed '1,/QEMU exited/d' <<< "$vmdtest_lines")
check "guest poweroff: lines" "selftest-guest: starting QEMU, vmdtest.then=poweroff
VMDTEST-BOOTED
VMDTEST cpus 2
VMDTEST rng-bytes 64
VMDTEST rng-current virtio_rng.0
VMDTEST time TIME
VMDTEST rtc-time TIME
VMDTEST-END
selftest-guest: QEMU exited with status 0" "$(sed -E 's/^(VMDTEST (rtc-)?time) [0-9]+$/\1 TIME/' <<< "$first")"
check "guest wait: lines" "selftest-guest: starting QEMU, vmdtest.then=wait
VMDTEST-BOOTED
VMDTEST cpus 1
VMDTEST rng-bytes 64
VMDTEST rng-current virtio_rng.0
VMDTEST time TIME
VMDTEST rtc-time TIME
VMDTEST-END
VMDTEST-POWER-BUTTON
selftest-guest: QEMU exited with status 0" "$(sed -E 's/^(VMDTEST (rtc-)?time) [0-9]+$/\1 TIME/' <<< "$second")"
# The guest clock comes from L1's, which comes from the host's.
while read -r _ key value; do
    check "guest: $key $value is within 10 min of the host clock" 1 \
        "$(((value - now) < 600 && (now - value) < 600 ? 1 : 0))"
done < <(grep -E '^VMDTEST (rtc-)?time ' "$tmp/guest.out")
starts=($(awk '/^[^ ]* selftest-guest: starting QEMU/ { print $1 }' "$tmp/guest.times"))
booted=($(awk '$2 == "VMDTEST-BOOTED" { print $1 }' "$tmp/guest.times"))
ends=($(awk '/^[^ ]* selftest-guest: QEMU exited/ { print $1 }' "$tmp/guest.times"))
for i in 0 1; do
    if [ -n "${starts[i]:-}" ] && [ -n "${booted[i]:-}" ] && [ -n "${ends[i]:-}" ]; then
        awk -v s="${starts[i]}" -v b="${booted[i]}" -v e="${ends[i]}" -v n=$((i + 1)) 'BEGIN {
            printf "selftest: guest boot %d: VMDTEST-BOOTED %.1f s, QEMU exit %.1f s after QEMU started\n", n, b - s, e - s }' >&2
    fi
done

# 3. L1 powering off without a status.
runner nostatus -- poweroff -f
check "no status: exit status" 125 "$status"
check "no status: stderr" "run.sh: L1 ended without reporting a status (QEMU exit status 0)" "$(cat "$tmp/nostatus.err")"

# 4. No /dev/kvm in L1.
runner nokvm --cpu EPYC,-svm -- true
check "no kvm: exit status" 125 "$status"
check "no kvm: stderr" "run.sh: L1 has no /dev/kvm: the CPU has no svm flag" "$(cat "$tmp/nokvm.err")"

# 5. Timeout, with --auto: nested unless the host has VMX or SVM KVM.
kind=$("$here/kvm-kind")
check_match "kvm-kind prints a known kind" "hardware|pvm|none|unknown" "$kind"
runner timeout --auto --timeout 5 -- sleep 1000
check "timeout: exit status" 124 "$status"
if [ "$kind" = hardware ]; then
    check "timeout: stderr" "run.sh: COMMAND timed out after 5 s" "$(cat "$tmp/timeout.err")"
else
    check "timeout: stderr" "run.sh: L1 timed out after 5 s" "$(cat "$tmp/timeout.err")"
fi

# 6. Directly on the host.
cat > "$tmp/host-check" << 'EOF'
#!/bin/sh
printf '[%s]\n' "$@"
[ "$(pwd)" = "$(dirname "$(command -v host-check)")" ] && echo "runs in the payload directory"
echo "GUEST_KERNEL=$GUEST_KERNEL"
echo "GUEST_INITRD=$GUEST_INITRD"
echo "GUEST_CMDLINE=$GUEST_CMDLINE"
echo "to stderr" >&2
exit 7
EOF
chmod +x "$tmp/host-check"
runner host --host --bin "$tmp/host-check" -- host-check 'two words' '$HOME' "it's"
check "host: exit status" 7 "$status"
check "host: output" "[two words]
[\$HOME]
[it's]
runs in the payload directory
GUEST_KERNEL=$guest/vmlinuz
GUEST_INITRD=$guest/initramfs.cpio
GUEST_CMDLINE=$(cat "$guest/cmdline")
to stderr" "$(cat "$tmp/host.out")"

# 7. Usage errors.
runner nocommand --timeout 5
check "no command: exit status" 2 "$status"
check "no command: first stderr line" "run.sh: missing COMMAND" "$(head -n 1 "$tmp/nocommand.err")"
runner badbin --bin "$tmp/missing" -- true
check "missing --bin: exit status" 2 "$status"
check "missing --bin: first stderr line" "run.sh: --bin $tmp/missing: not an executable file" "$(head -n 1 "$tmp/badbin.err")"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
