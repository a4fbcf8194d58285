#!/usr/bin/env bash
# Builds the throw-away Debian 12 guest image for the VM tests, or reuses the
# cached one with the same inputs. Called by `cargo xtask vm image`.
#
# Usage: build-image.sh CACHE_DIR [--force]
# Prints the image directory (vmlinuz, initrd.img, rootfs.raw, manifest.txt)
# as the last line on stdout. Needs root (debootstrap, chroot) and writes only
# below CACHE_DIR.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${1:?usage: build-image.sh CACHE_DIR [--force]}
force=${2:-}

die() { echo "build-image: error: $*" >&2; exit 1; }
say() { echo "build-image: $*" >&2; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot need it)"
for t in debootstrap mkfs.ext4 chroot flock timeout sha256sum; do
	command -v "$t" > /dev/null || die "missing '$t': apt-get install debootstrap e2fsprogs coreutils util-linux"
done

suite=bookworm
mirror=${VM_MIRROR:-}
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
	mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
	mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || die "no Debian mirror found in apt's sources; set VM_MIRROR"

# The guest is an appliance stand-in: systemd, D-Bus, udev, cryptsetup,
# e2fsprogs and a kernel, plus the services the appliance starts and the
# tools the backup stories use (rclone serves rustic's REST backend).
base_pkgs=systemd-sysv,dbus,udev,kmod,cryptsetup-bin,e2fsprogs,util-linux,procps,linux-image-amd64,initramfs-tools
# exim4: a real SMTP server for the e-mail alerts, delivering to local mailboxes.
extra_pkgs="postgresql redis-server rclone curl jq exim4-daemon-light smartmontools"

key=$(
	{
		echo "$suite $mirror"
		echo "$base_pkgs"
		echo "$extra_pkgs"
		cat "$here/build-image.sh" "$here/vmtest-boot" "$here/vmtest.service"
	} | sha256sum | cut -c1-16
)
img="$cache/images/$suite-$key"
if [ -z "$force" ] && [ -f "$img/ok" ]; then
	say "cached image $img"
	echo "$img"
	exit 0
fi

mkdir -p "$cache/images" "$cache/debs/partial" "$cache/tmp"
exec 9> "$cache/.build.lock"
flock -w 3600 9 || die "another build holds $cache/.build.lock"
if [ -z "$force" ] && [ -f "$img/ok" ]; then
	echo "$img"
	exit 0
fi

work=$(mktemp -d "$cache/tmp/build.XXXXXX")
root="$work/root"
out="$work/out"
mkdir -p "$root" "$out"

mounts_below() { awk -v p="$work/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r; }
# Daemons a maintainer script may have started inside the chroot.
kill_chroot_procs() {
	local p r pids=()
	for p in /proc/[0-9]*; do
		r=$(readlink "$p/root" 2> /dev/null) || continue
		case "$r" in "$root" | "$root"/*) pids+=("${p#/proc/}") ;; esac
	done
	[ ${#pids[@]} -eq 0 ] && return 0
	kill -TERM "${pids[@]}" 2> /dev/null || true
	sleep 1
	kill -KILL "${pids[@]}" 2> /dev/null || true
}
cleanup() {
	set +e
	kill_chroot_procs
	for m in $(mounts_below); do umount "$m" 2> /dev/null || umount -l "$m"; done
	if [ -z "$(mounts_below)" ]; then rm -rf --one-file-system "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

log="$work/build.log"
t0=$(date +%s)
step() { say "[$(($(date +%s) - t0))s] $*"; echo "=== $*" >> "$log"; }
fail() {
	say "error: $*; last lines of $log:"
	tail -n 30 "$log" >&2
	exit 1
}
chrooted() {
	local secs=$1
	shift
	timeout "$secs" chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 HOME=/root "$@" >> "$log" 2>&1
}

step "debootstrap $suite from $mirror"
timeout 2400 debootstrap --variant=minbase --include="$base_pkgs" --cache-dir="$cache/debs" \
	"$suite" "$root" "$mirror" >> "$log" 2>&1 || fail "debootstrap failed"

mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --bind /dev "$root/dev"
mount --bind "$cache/debs" "$root/var/cache/apt/archives"

step "apt-get install $extra_pkgs"
# Keep maintainer scripts from starting daemons in the chroot.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
chrooted 600 apt-get -o Acquire::Retries=3 update || fail "apt-get update failed"
# shellcheck disable=SC2086
chrooted 1800 apt-get -o Acquire::Retries=3 install -y --no-install-recommends $extra_pkgs ||
	fail "apt-get install failed"
rm -f "$root/usr/sbin/policy-rc.d"
kill_chroot_procs

step "configure the guest"
echo vmtest > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tvmtest\n' > "$root/etc/hosts"
printf '/dev/vda\t/\text4\tdefaults\t0\t1\n' > "$root/etc/fstab"
: > "$root/etc/resolv.conf"
# A fixed machine id: no first-boot setup in a throw-away VM.
od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$root/etc/machine-id"
echo >> "$root/etc/machine-id"
chrooted 60 passwd -d root || fail "passwd -d root failed"
install -m 755 "$here/vmtest-boot" "$root/usr/local/sbin/vmtest-boot"
install -m 644 "$here/vmtest.service" "$root/etc/systemd/system/vmtest.service"
chrooted 60 systemctl enable vmtest.service || fail "enabling vmtest.service failed"
# The appliance starts its services itself; Debian's copies stay off. Its
# default cluster would also be pulled in by Debian's postgresql generator
# and take the socket, so it goes, and the per-cluster template is masked.
for u in postgresql.service redis-server.service exim4.service exim4-base.timer smartmontools.service; do
	chrooted 60 systemctl disable "$u" || true
done
chrooted 120 pg_dropcluster 15 main || fail "pg_dropcluster failed"
chrooted 60 systemctl mask postgresql@.service || fail "masking postgresql@.service failed"
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
	dpkg-db-backup.timer serial-getty@ttyS0.service getty@tty1.service; do
	chrooted 60 systemctl mask "$u" || true
done
# The persistent journal lives on the throw-away root disk anyway; keep it
# in memory so the test runs write less.
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$root/etc/systemd/journald.conf.d/vmtest.conf"

step "kernel modules and initrd"
kver=$(ls "$root/lib/modules")
[ "$(echo "$kver" | wc -l)" = 1 ] || fail "expected one kernel, found: $kver"
for d in drivers/gpu drivers/media drivers/net/wireless drivers/infiniband drivers/staging \
	drivers/bluetooth drivers/iio drivers/isdn sound net/wireless net/mac80211 net/bluetooth; do
	rm -rf "${root:?}/lib/modules/$kver/kernel/$d"
done
chrooted 300 depmod "$kver" || fail "depmod failed"
echo 'MODULES=list' > "$root/etc/initramfs-tools/conf.d/vmtest"
printf 'virtio_pci\nvirtio_blk\next4\n' >> "$root/etc/initramfs-tools/modules"
chrooted 900 update-initramfs -u -k "$kver" || fail "update-initramfs failed"
cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$out/initrd.img"

{
	echo "suite: $suite"
	echo "mirror: $mirror"
	echo "kernel: $kver"
	echo "key: $key"
	echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "packages:"
	# shellcheck disable=SC2016
	timeout 60 chroot "$root" dpkg-query -W -f '  ${Package} ${Version}\n'
} > "$out/manifest.txt"

for m in $(mounts_below); do umount "$m" || fail "cannot unmount $m"; done
rm -rf "${root:?}"/var/cache/apt/archives/*.deb "${root:?}"/var/lib/apt/lists/* \
	"${root:?}"/usr/share/doc/* "${root:?}"/usr/share/man/* "${root:?}"/usr/share/info/*

step "ext4 image"
used_mb=$(du -sm --one-file-system "$root" | cut -f1)
size_mb=$((used_mb * 13 / 10 + 1024))
truncate -s "${size_mb}M" "$out/rootfs.raw"
timeout 900 mkfs.ext4 -q -F -L vmroot -d "$root" "$out/rootfs.raw" >> "$log" 2>&1 || fail "mkfs.ext4 -d failed"
echo "seconds: $(($(date +%s) - t0))" >> "$out/manifest.txt"
cp "$log" "$out/build.log"
touch "$out/ok"
rm -rf "$img"
mv "$out" "$img"
step "image ready: $img (${used_mb} MB of files)"
echo "$img"
