#!/bin/bash
# Runs inside the guest, started by vmtest-boot from the control share, which
# the host refreshes on every run (so this file can change without an image
# rebuild).
#
# 1. mounts the host's read-only share (9p tag "share") at /mnt/share;
# 2. finds the second disk, the "external drive", by its serial;
# 3. runs the story as root with its arguments, output to the console and
#    to out/test.log;
# 4. saves the journal, writes out/exit-code, prints the exit marker and
#    powers the machine off.
set -u
ctl=/run/vmtest
log() { echo "vmtest-agent: $*"; }
finish() {
	journalctl -b --no-pager -o short-monotonic > "$ctl/out/journal.log" 2>&1 || true
	echo "$1" > "$ctl/out/exit-code"
	sync
	echo "VMTEST-EXIT-CODE: $1"
	umount /mnt/share 2> /dev/null
	umount "$ctl" 2> /dev/null
	systemctl poweroff --no-block || echo o > /proc/sysrq-trigger
	exit 0
}

mkdir -p /mnt/share "$ctl/out" "$ctl/requests"
for m in 9pnet_virtio 9p; do modprobe "$m" 2> /dev/null || true; done
# The share does not change while the guest runs, so the guest may cache it
# (cache=loose): each binary crosses 9p once, not on every run of it.
if grep -qw share /sys/bus/virtio/drivers/9pnet_virtio/*/mount_tag 2> /dev/null; then
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro share /mnt/share ||
		log "warning: cannot mount the host share"
fi

export VM_CTL=$ctl
export VM_OUT=$ctl/out
export VM_LIB=$ctl/lib
export VM_SHARE=/mnt/share
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8

# The external drives have serials extdrive, extdrive2, ...; udev names
# them by id (virtio-SERIAL, or usb-QEMU_QEMU_HARDDISK_SERIAL-0:0).
find_disk() {
	local serial=$1 d
	for d in "/dev/disk/by-id/virtio-$serial" /dev/disk/by-id/usb-*_"$serial"-0:0; do
		[ -e "$d" ] && { echo "$d"; return 0; }
	done
	return 1
}
wait_disk() {
	local d
	for _ in $(seq 1 300); do
		d=$(find_disk "$1") && { echo "$d"; return 0; }
		sleep 0.1
	done
	log "warning: the drive with serial $1 did not appear"
}
ndisks=$(cat "$ctl/disks" 2> /dev/null || echo 1)
VM_DISK=
VM_DISK2=
[ "$ndisks" -ge 1 ] && VM_DISK=$(wait_disk extdrive)
[ "$ndisks" -ge 2 ] && VM_DISK2=$(wait_disk extdrive2)
export VM_DISK VM_DISK2
log "external drive: ${VM_DISK:-none} -> $(readlink -f "${VM_DISK:-/nonexistent}")${VM_DISK2:+; second: $VM_DISK2}"

args=()
[ -s "$ctl/args" ] && mapfile -t args < "$ctl/args"
log "system: $(timeout 300 systemctl is-system-running --wait 2>&1)"
log "running story ${args[*]:-}"
start=$(date +%s)
cd "$VM_OUT" || finish 125
set -o pipefail
bash "$ctl/story.sh" "${args[@]}" 2>&1 | tee "$VM_OUT/test.log"
rc=$?
set +o pipefail
log "story finished after $(($(date +%s) - start))s with status $rc"
finish "$rc"
