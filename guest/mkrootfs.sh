#!/bin/bash
# Make an ext4 root file system image for hearth guests: the default guest's /init (from its
# initramfs, see guest/build.sh), busybox-static with every applet linked in /bin, and the
# usual mount points. Built with `mke2fs -d` (no root, no loop mount) and cached under
#   ${HEARTH_CACHE:-$HOME/.cache/hearth}/rootfs/<key>/rootfs.ext4
# with ${HEARTH_CACHE:-$HOME/.cache/hearth}/rootfs/default -> <key>. See docs/guest.md.
#
#   guest/mkrootfs.sh              build if needed, print the image's path (last line)
#   guest/mkrootfs.sh --force      rebuild even if the cache entry exists
#
# Boot it read-write as the root file system (hearth writes to the image: use a copy):
#   hearth run --kernel vmlinux --drive path=rootfs.ext4 \
#       --cmdline "console=ttyS0 reboot=k panic=-1 root=/dev/vda rw" -- /bin/sh
# ROOTFS_SIZE (default 64M) sets the image size.
set -euo pipefail

GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${HEARTH_CACHE:-$HOME/.cache/hearth}
CACHE_ROOT=$CACHE/rootfs
BUSYBOX=/bin/busybox
SIZE=${ROOTFS_SIZE:-64M}

say() { echo "[rootfs] $*" >&2; }
die() { echo "[rootfs] error: $*" >&2; exit 1; }

FORCE=0
for arg in "$@"; do
	case $arg in
	--force) FORCE=1 ;;
	-h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2; exit 0 ;;
	*) die "unknown argument: $arg (see --help)" ;;
	esac
done

pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }
command -v mke2fs >/dev/null && command -v debugfs >/dev/null || die "mke2fs/debugfs missing (apt-get install e2fsprogs)"
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (apt-get install busybox-static)"
command -v cpio >/dev/null || die "cpio missing (apt-get install cpio)"
GUEST=$("$GUEST_DIR/build.sh" --print-dir 2>/dev/null) || GUEST=$CACHE/guest/default
[ -f "$GUEST/initramfs.cpio" ] || die "the default guest is not built ($GUEST/initramfs.cpio missing): run guest/build.sh"

KEY=$({
	echo "script: $(sha256sum <"${BASH_SOURCE[0]}" | cut -d' ' -f1)"
	echo "initramfs: $(sha256sum <"$GUEST/initramfs.cpio" | cut -d' ' -f1)"
	echo "busybox: $(sha256sum <"$BUSYBOX" | cut -d' ' -f1)"
	echo "e2fsprogs: $(pkg_version e2fsprogs)"
	echo "size: $SIZE"
} | sha256sum | cut -c1-16)
OUT=$CACHE_ROOT/$KEY
IMG=$OUT/rootfs.ext4

publish() {
	ln -sfn "$KEY" "$CACHE_ROOT/.default.$$"
	mv -T "$CACHE_ROOT/.default.$$" "$CACHE_ROOT/default"
	say "default: $CACHE_ROOT/default -> $KEY"
	echo "$IMG"
}

if [ "$FORCE" = 0 ] && [ -f "$IMG" ]; then
	say "cache hit ($KEY)"
	publish
	exit 0
fi
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.lock"
flock 9
if [ "$FORCE" = 0 ] && [ -f "$IMG" ]; then
	say "cache hit ($KEY)"
	publish
	exit 0
fi

BUILD=$(mktemp -d "$CACHE_ROOT/.build-$KEY.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
STAGE=$BUILD/root
mkdir -p "$STAGE"/{bin,sbin,dev,proc,sys,tmp,root,etc,mnt}
chmod 1777 "$STAGE/tmp"
chmod 0700 "$STAGE/root"
(cd "$BUILD" && cpio -i --quiet --to-stdout init <"$GUEST/initramfs.cpio" >"$STAGE/init") ||
	die "cannot extract /init from $GUEST/initramfs.cpio"
[ -s "$STAGE/init" ] || die "$GUEST/initramfs.cpio has no /init"
chmod 0755 "$STAGE/init"
ln -s ../init "$STAGE/sbin/init" # the kernel's default init= path
cp "$BUSYBOX" "$STAGE/bin/busybox"
for a in $("$BUSYBOX" --list); do
	[ "$a" = busybox ] || ln -s busybox "$STAGE/bin/$a"
done
echo "hearth" >"$STAGE/etc/hostname"
printf '/dev/vda / ext4 rw 0 1\n' >"$STAGE/etc/fstab"

say "making $SIZE ext4 image ..."
mke2fs -q -t ext4 -b 4096 -F -L hearth-root -E root_owner=0:0 -d "$STAGE" "$BUILD/rootfs.ext4" "$SIZE" >&2 ||
	die "mke2fs failed"
# The kernel opens /dev/console before devtmpfs is mounted on some paths; give it a node.
printf 'cd /dev\nmknod console c 5 1\nsif console mode 020600\n' |
	debugfs -w -f - "$BUILD/rootfs.ext4" >/dev/null 2>&1 || die "debugfs mknod failed"

mkdir "$BUILD/out"
mv "$BUILD/rootfs.ext4" "$BUILD/out/rootfs.ext4"
rm -rf "$OUT"
mv -T "$BUILD/out" "$OUT"
say "built $IMG"
publish
