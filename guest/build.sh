#!/bin/bash
# Build hearth's guest kernel (vmlinux with a PVH note) and initramfs
# (uncompressed newc cpio: tiny static /init, /bin/hearth-vsock, /bin/hearth-io, /bin/hearth-net, busybox-static)
# from Debian packages only, and cache them under
#   ${HEARTH_CACHE:-$HOME/.cache/hearth}/guest/<key>/{vmlinux,initramfs.cpio}
# with ${HEARTH_CACHE:-$HOME/.cache/hearth}/guest/default -> <key>.
# The kernel and the initramfs are cached separately (guest/kernel/<kkey>/,
# guest/initramfs/<ikey>/), so changing a guest program does not rebuild the
# kernel. See docs/guest.md.
#
#   guest/build.sh               build if needed, print where the files are
#   guest/build.sh --print-dir   print the cache dir of the current key (exit 1 if not built)
#   guest/build.sh --force       rebuild even if the cache entry exists
#   guest/build.sh --regen-config
#                                regenerate guest/kernel.config from
#                                `make tinyconfig` + guest/kernel-fragment.config
set -euo pipefail

GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=${HEARTH_CACHE:-$HOME/.cache/hearth}/guest
LINUX_PKG=linux-source-6.1
LINUX_TARBALL=/usr/src/linux-source-6.1.tar.xz
BUSYBOX=/bin/busybox
CONFIG=$GUEST_DIR/kernel.config
FRAGMENT=$GUEST_DIR/kernel-fragment.config
INIT_SRC=$GUEST_DIR/init/init.c
# Static nolibc programs for the initramfs: source -> path in the initramfs.
TOOLS="tools/hearth-vsock.c:/bin/hearth-vsock tools/hearth-io.c:/bin/hearth-io tools/hearth-net.c:/bin/hearth-net"
# Bump when the kernel build steps below change (the kernel key does not hash this script).
KERNEL_RECIPE=1
JOBS=$(nproc 2>/dev/null || echo 2)
# Measured: ~11 CPU-minutes for the kernel on this kind of host (see docs/guest.md).
EST_MIN=$(( (11 + JOBS - 1) / JOBS ))

# busybox applets that get a symlink in the initramfs. Each cpio entry costs
# boot time on PVM hosts, so this is a short list; busybox's shell runs any
# other applet by name anyway (Debian's busybox-static prefers applets).
APPLETS_BIN="sh ash [ [[ awk basename cat chmod chown cp cut date dd df dirname dmesg du echo
env expr false find free grep head hexdump hostname id kill less ln ls md5sum mkdir mknod
mktemp more mount mv nc od printf ps pwd readlink rm rmdir sed seq sh sha256sum sleep sort
stat stty sync tail tee test timeout touch tr true tty umount uname uniq vi wc wget which
xargs"
APPLETS_SBIN="halt ifconfig ip mdev poweroff reboot route"

say() { echo "[guest] $*" >&2; }
die() { echo "[guest] error: $*" >&2; exit 1; }

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
}

MODE=build
FORCE=0
for arg in "$@"; do
	case $arg in
	--print-dir) MODE=print-dir ;;
	--regen-config) MODE=regen-config ;;
	--force) FORCE=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage; die "unknown argument: $arg" ;;
	esac
done

# --- prerequisites -----------------------------------------------------------
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

check_prereqs() {
	local missing=() c p
	[ -n "$(pkg_version "$LINUX_PKG")" ] && [ -f "$LINUX_TARBALL" ] || missing+=("$LINUX_PKG")
	[ -n "$(pkg_version busybox-static)" ] && [ -x "$BUSYBOX" ] || missing+=(busybox-static)
	for c in gcc:gcc make:make bc:bc bison:bison flex:flex xz:xz-utils cpio:cpio \
		readelf:binutils ld:binutils perl:perl-base; do
		command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}")
	done
	[ -f /usr/include/gelf.h ] || missing+=(libelf-dev)
	[ -f /usr/include/stdio.h ] || missing+=(libc6-dev)
	[ -f /usr/include/linux/reboot.h ] || missing+=(linux-libc-dev)
	if [ ${#missing[@]} -gt 0 ]; then
		# shellcheck disable=SC2207
		missing=($(printf '%s\n' "${missing[@]}" | sort -u))
		die "missing packages: ${missing[*]} (run: apt-get install ${missing[*]})"
	fi
}

# --- cache keys --------------------------------------------------------------
file_sums() {
	local f
	for f in "$@"; do
		echo "file: ${f#"$GUEST_DIR"/} $(sha256sum <"$f" | cut -d' ' -f1)"
	done
}

# The kernel: its source, config and patches (and how it is built).
kernel_key() {
	{
		echo "linux-source: $(pkg_version "$LINUX_PKG")"
		echo "recipe: $KERNEL_RECIPE"
		file_sums "$CONFIG" "$GUEST_DIR"/patches/*.patch
	} | sha256sum | cut -c1-16
}

# The initramfs: busybox, the programs (nolibc comes from the kernel source package), and
# this script (which lists the applets).
initramfs_key() {
	local t
	{
		echo "linux-source: $(pkg_version "$LINUX_PKG")"
		echo "busybox-static: $(pkg_version busybox-static)"
		file_sums "$INIT_SRC" "$GUEST_DIR/build.sh"
		for t in $TOOLS; do file_sums "$GUEST_DIR/${t%%:*}"; done
		file_sums "$GUEST_DIR/tools/hearth-tool.h"
	} | sha256sum | cut -c1-16
}

# Options the fragment sets must survive olddefconfig: check a .config against it.
check_config() {
	local cfg=$1 line sym bad=()
	while IFS= read -r line; do
		case $line in
		CONFIG_*=*) grep -qxF -- "$line" "$cfg" || bad+=("$line") ;;
		"# CONFIG_"*" is not set")
			sym=${line#\# }; sym=${sym%% *}
			! grep -q "^$sym=" "$cfg" || bad+=("$sym=n") ;;
		esac
	done <"$FRAGMENT"
	[ ${#bad[@]} -eq 0 ] || die "kernel config lost required options after olddefconfig: ${bad[*]}"
}

# extract_linux DEST [PATHS...]: the whole tree, or only PATHS inside it.
extract_linux() {
	local dest=$1
	shift
	say "extracting $LINUX_PKG $(pkg_version "$LINUX_PKG")${1:+ (${*})} ..."
	tar -C "$dest" -xJf "$LINUX_TARBALL" "${@/#/linux-source-6.1/}"
	[ -d "$dest/linux-source-6.1" ] || die "unexpected layout of $LINUX_TARBALL"
}

check_prereqs

if [ "$MODE" = regen-config ]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	extract_linux "$tmp"
	src=$tmp/linux-source-6.1
	say "make tinyconfig + kernel-fragment.config + olddefconfig ..."
	make -C "$src" -s tinyconfig >/dev/null
	"$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$FRAGMENT" >/dev/null
	make -C "$src" -s olddefconfig >/dev/null
	check_config "$src/.config"
	cp "$src/.config" "$CONFIG"
	say "wrote $CONFIG"
	exit 0
fi

[ -f "$CONFIG" ] || die "$CONFIG missing (run: $0 --regen-config)"
KKEY=$(kernel_key)
IKEY=$(initramfs_key)
KEY=$(echo "kernel $KKEY initramfs $IKEY" | sha256sum | cut -c1-16)
OUT=$CACHE_ROOT/$KEY
KDIR=$CACHE_ROOT/kernel/$KKEY
IDIR=$CACHE_ROOT/initramfs/$IKEY

if [ "$MODE" = print-dir ]; then
	[ -f "$OUT/vmlinux" ] && [ -f "$OUT/initramfs.cpio" ] || exit 1
	echo "$OUT"
	exit 0
fi

point_default() {
	local cur
	cur=$(readlink "$CACHE_ROOT/default" 2>/dev/null || true)
	if [ "$cur" != "$KEY" ]; then
		ln -sfn "$KEY" "$CACHE_ROOT/.default.$$"
		mv -T "$CACHE_ROOT/.default.$$" "$CACHE_ROOT/default"
	fi
}

report() {
	point_default
	echo "[guest] kernel:    $OUT/vmlinux"
	echo "[guest] initramfs: $OUT/initramfs.cpio"
	echo "[guest] default:   $CACHE_ROOT/default -> $KEY"
}

if [ "$FORCE" = 0 ] && [ -f "$OUT/vmlinux" ] && [ -f "$OUT/initramfs.cpio" ]; then
	say "cache hit ($KEY)"
	report
	exit 0
fi

mkdir -p "$CACHE_ROOT"
# One build at a time per cache; a second caller waits, then hits the cache.
exec 9>"$CACHE_ROOT/.lock"
if ! flock -n 9; then
	say "another build is running; waiting for it ..."
	flock 9
fi
if [ "$FORCE" = 0 ] && [ -f "$OUT/vmlinux" ] && [ -f "$OUT/initramfs.cpio" ]; then
	say "cache hit ($KEY)"
	report
	exit 0
fi
# Leftovers of interrupted builds (we hold the lock, so nobody is using them).
rm -rf "$CACHE_ROOT"/.build-* "$CACHE_ROOT"/.default.*

START=$(date +%s)
BUILD=$(mktemp -d "$CACHE_ROOT/.build-$KEY.XXXXXX")
LOG=$BUILD/build.log
trap 'rm -rf "$BUILD"' EXIT
trap 'exit 130' INT TERM HUP
fail() {
	local keep=$CACHE_ROOT/build-failed-$KEY.log
	cp "$LOG" "$keep" 2>/dev/null || true
	echo "[guest] error: $* — last lines of the log ($keep):" >&2
	tail -n 40 "$LOG" >&2 || true
	exit 1
}
: >"$LOG"

# publish DIR STAGE: the cache dir appears complete or not at all.
publish() {
	rm -rf "$1"
	mkdir -p "$(dirname "$1")"
	mv -T "$2" "$1"
}

SRC=$BUILD/linux-source-6.1
if [ "$FORCE" = 1 ] || ! [ -f "$KDIR/vmlinux" ]; then
	extract_linux "$BUILD"

	say "applying patches ..."
	for p in "$GUEST_DIR"/patches/*.patch; do
		patch -d "$SRC" -p1 --forward --quiet <"$p" >>"$LOG" 2>&1 || fail "patch $(basename "$p") does not apply"
	done

	say "configuring kernel (guest/kernel.config + olddefconfig) ..."
	cp "$CONFIG" "$SRC/.config"
	make -C "$SRC" olddefconfig >>"$LOG" 2>&1 || fail "make olddefconfig failed"
	check_config "$SRC/.config"
	if ! diff -q <(grep -v -E '^CONFIG_(CC_VERSION_TEXT|GCC_VERSION|CLANG_VERSION|AS_VERSION|LD_VERSION|LLD_VERSION|PAHOLE_VERSION)=' "$CONFIG") \
		<(grep -v -E '^CONFIG_(CC_VERSION_TEXT|GCC_VERSION|CLANG_VERSION|AS_VERSION|LD_VERSION|LLD_VERSION|PAHOLE_VERSION)=' "$SRC/.config") >/dev/null; then
		say "note: olddefconfig changed guest/kernel.config here (toolchain differences?); required options are intact"
	fi

	export KBUILD_BUILD_USER=hearth KBUILD_BUILD_HOST=hearth
	export KBUILD_BUILD_TIMESTAMP="$(date -u -d @0 '+%a %b %e %H:%M:%S UTC %Y' 2>/dev/null || echo 'Thu Jan  1 00:00:00 UTC 1970')"
	say "building kernel (make -j$JOBS, ~$EST_MIN min; log: $LOG) ..."
	KSTART=$(date +%s)
	make -C "$SRC" -j"$JOBS" vmlinux >>"$LOG" 2>&1 || fail "kernel build failed"
	say "kernel built in $(( $(date +%s) - KSTART )) s"
	notes=$(readelf -n "$SRC/vmlinux" 2>&1 || true)
	grep -q 'Xen.*0x00000012' <<<"$notes" || fail "vmlinux has no PVH (XEN_ELFNOTE_PHYS32_ENTRY) note"
	KSTAGE=$BUILD/kernel
	mkdir "$KSTAGE"
	cp "$SRC/vmlinux" "$SRC/System.map" "$KSTAGE/"
	cp "$SRC/.config" "$KSTAGE/kernel.config"
	cp "$LOG" "$KSTAGE/build.log"
	publish "$KDIR" "$KSTAGE"
else
	say "kernel: cache hit ($KKEY)"
fi

if [ "$FORCE" = 1 ] || ! [ -f "$IDIR/initramfs.cpio" ]; then
	# nolibc and gen_init_cpio come from the kernel source (only those files if the kernel
	# was cached).
	[ -d "$SRC" ] || extract_linux "$BUILD" tools/include/nolibc usr/gen_init_cpio.c
	say "building /init and the guest tools (nolibc) ..."
	ISTAGE=$BUILD/initramfs
	mkdir "$ISTAGE"
	NOLIBC=$SRC/tools/include/nolibc
	# nolibc_cc SRC OUT: a static program without libc, like /init.
	nolibc_cc() {
		gcc -Os -static -no-pie -nostdlib -fno-asynchronous-unwind-tables -fno-stack-protector \
			-fno-ident -Wall -Wextra -Wno-unused-parameter -Werror -s \
			-include "$NOLIBC/nolibc.h" -o "$2" "$1" -lgcc >>"$LOG" 2>&1 ||
			fail "building $(basename "$2") from ${1#"$GUEST_DIR"/} failed"
		touch -d @0 "$2"
	}
	nolibc_cc "$INIT_SRC" "$BUILD/init"
	for t in $TOOLS; do
		nolibc_cc "$GUEST_DIR/${t%%:*}" "$BUILD/$(basename "${t#*:}")"
	done

	say "building initramfs (newc, uncompressed) ..."
	gcc -O2 -o "$BUILD/gen_init_cpio" "$SRC/usr/gen_init_cpio.c" >>"$LOG" 2>&1 || fail "building gen_init_cpio failed"
	LIST=$BUILD/initramfs.list
	{
		echo "dir /dev 0755 0 0"
		echo "nod /dev/console 0600 0 0 c 5 1"
		echo "dir /proc 0555 0 0"
		echo "dir /sys 0555 0 0"
		echo "dir /tmp 01777 0 0"
		echo "dir /root 0700 0 0"
		echo "dir /etc 0755 0 0"
		echo "dir /bin 0755 0 0"
		echo "dir /sbin 0755 0 0"
		echo "file /init $BUILD/init 0755 0 0"
		echo "file /bin/busybox $BUSYBOX 0755 0 0"
		for t in $TOOLS; do
			echo "file ${t#*:} $BUILD/$(basename "${t#*:}") 0755 0 0"
		done
		avail=" $("$BUSYBOX" --list | tr '\n' ' ') "
		for a in $(printf '%s\n' $APPLETS_BIN | sort -u); do
			case $avail in *" $a "*) echo "slink /bin/$a busybox 0777 0 0" ;; esac
		done
		for a in $(printf '%s\n' $APPLETS_SBIN | sort -u); do
			case $avail in *" $a "*) echo "slink /sbin/$a ../bin/busybox 0777 0 0" ;; esac
		done
	} >"$LIST"
	"$BUILD/gen_init_cpio" -t 0 "$LIST" >"$ISTAGE/initramfs.cpio" 2>>"$LOG" || fail "gen_init_cpio failed"
	listing=$(cpio -t <"$ISTAGE/initramfs.cpio" 2>/dev/null || true)
	grep -qx init <<<"$listing" || fail "initramfs has no /init"
	cp "$LIST" "$ISTAGE/initramfs.list"
	cp "$LOG" "$ISTAGE/build.log"
	publish "$IDIR" "$ISTAGE"
else
	say "initramfs: cache hit ($IKEY)"
fi

STAGE=$BUILD/out
mkdir "$STAGE"
for f in "$KDIR"/{vmlinux,System.map,kernel.config} "$IDIR"/{initramfs.cpio,initramfs.list}; do
	ln "$f" "$STAGE/" 2>/dev/null || cp "$f" "$STAGE/"
done
cat "$KDIR/build.log" "$IDIR/build.log" >"$STAGE/build.log" 2>/dev/null || true

# Atomic publish: the key dir appears complete or not at all.
rm -rf "$OUT"
mv -T "$STAGE" "$OUT"
rm -f "$CACHE_ROOT/build-failed-$KEY.log"
say "done in $(( $(date +%s) - START )) s"
report
