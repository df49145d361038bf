# Shell functions shared by tests/guest/build.sh and tests/nested/run.sh for
# putting together initramfs images. Source this file from bash. The
# functions use only bash, coreutils, cpio and grep, and they need no root.

# Write to stdout a cpio newc archive that holds only /dev and the
# /dev/console character device (5:1). The kernel opens /dev/console for
# /init's stdin, stdout and stderr before it starts /init. Writing the entry
# by hand spares mknod, which needs root. The kernel unpacks concatenated
# archives one after the other, so this one can go first in the image.
initramfs_console_archive() {
    _newc_entry 1 040755 2 0 0 dev
    _newc_entry 2 020600 1 5 1 dev/console
    _newc_entry 0 0 1 0 0 'TRAILER!!!'
}

# _newc_entry INODE MODE NLINK RDEV_MAJOR RDEV_MINOR NAME: one header of the
# "new ASCII" cpio format with no file data, owned by root, mtime 0.
_newc_entry() {
    local name=$6
    local namesize=$((${#name} + 1))
    # Fields: magic, ino, mode, uid, gid, nlink, mtime, filesize,
    # devmajor, devminor, rdevmajor, rdevminor, namesize, check.
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        "$1" "$((8#$2))" 0 0 "$3" 0 0 0 0 "$4" "$5" "$namesize" 0
    printf '%s\0' "$name"
    # The 110-byte header plus the name is padded to a multiple of 4.
    head -c $(((4 - (110 + namesize) % 4) % 4)) /dev/zero
}

# initramfs_pack DIR: write DIR as a cpio newc archive to stdout, every
# file owned by root, in a stable order.
initramfs_pack() {
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet)
}

# initramfs_busybox ROOT BUSYBOX: install the static BUSYBOX as
# ROOT/bin/busybox with a symbolic link for every applet at the path busybox
# itself lists (bin/sh, sbin/insmod, usr/bin/env, ...).
initramfs_busybox() {
    local root=$1 busybox=$2 applet
    mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin"
    cp "$busybox" "$root/bin/busybox"
    for applet in $("$busybox" --list-full); do
        [ "$applet" = bin/busybox ] || ln -s /bin/busybox "$root/$applet"
    done
}

# initramfs_modules MODDIR DEST MODULE...: copy each MODULE and every module
# it depends on according to MODDIR/modules.dep into DEST, uncompressed.
# MODULE is a name as modprobe takes it, with "-" and "_" alike. Also write
# DEST/load-order: one file name per line, in an order insmod can follow.
# A module built into the kernel (in modules.builtin) is skipped. Fails with
# a message naming the module when it is in neither list.
initramfs_modules() {
    local moddir=$1 dest=$2 name pattern line file
    shift 2
    mkdir -p "$dest"
    : > "$dest/load-order"
    for name in "$@"; do
        pattern=${name//[-_]/[-_]}
        if grep -qE "(^|/)${pattern}\.ko(\.[a-z]+)?$" "$moddir/modules.builtin" 2>/dev/null; then
            continue
        fi
        line=$(grep -E "(^|/)${pattern}\.ko(\.[a-z]+)?:" "$moddir/modules.dep") || {
            echo "kernel module $name: not in $moddir/modules.dep or modules.builtin" >&2
            return 1
        }
        # modules.dep lists the whole dependency closure of a module, and
        # modprobe loads that list from its last entry to its first.
        local -a files=("${line%%:*}")
        for file in ${line#*:}; do
            files=("$file" "${files[@]}")
        done
        for file in "${files[@]}"; do
            _copy_module "$moddir/$file" "$dest" || return 1
        done
    done
}

# _copy_module FILE DEST: append FILE's module to DEST/load-order unless it
# is there already, decompressing .ko.xz, .ko.zst and .ko.gz files.
_copy_module() {
    local file=$1 dest=$2 base
    base=${file##*/}
    base=${base%.xz}
    base=${base%.zst}
    base=${base%.gz}
    grep -qxF "$base" "$dest/load-order" && return 0
    case $file in
    *.ko) cp "$file" "$dest/$base" ;;
    *.ko.xz) xz -dc "$file" > "$dest/$base" ;;
    *.ko.zst) zstd -qdc "$file" > "$dest/$base" ;;
    *.ko.gz) gzip -dc "$file" > "$dest/$base" ;;
    *) echo "kernel module $file: unknown compression" >&2; return 1 ;;
    esac
    echo "$base" >> "$dest/load-order"
}
