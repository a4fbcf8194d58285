#!/bin/bash
# vm-disk-bus: virtio
# vm-timeout: 600
#
# The harness itself: real systemd as PID 1, the clock and randomness of a
# guest restored from its saved boot, the system bus, LUKS2 through
# dm-crypt on the external drive, the read-only share, PostgreSQL and Redis
# installed but not running, and a drive that the host can unplug.
. "$VM_LIB/common.sh"

pid1_is_systemd() { case "$(readlink /proc/1/exe)" in */systemd) ;; *) return 1 ;; esac; }
bus_has_systemd() {
	busctl --system get-property org.freedesktop.systemd1 /org/freedesktop/systemd1 \
		org.freedesktop.systemd1.Manager Version
}
luks2_roundtrip() {
	local key=/run/harness.key
	head -c 32 /dev/urandom > "$key"
	cryptsetup luksFormat --type luks2 --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
		--key-file "$key" "$VM_DISK" &&
		cryptsetup open --key-file "$key" "$VM_DISK" harness &&
		[ -b /dev/mapper/harness ] &&
		cryptsetup luksDump "$VM_DISK" | grep -q '^Version:[[:space:]]*2' &&
		cryptsetup close harness
}
share_is_read_only() {
	[ -x "$BIN/immich-server" ] && ! touch "$BIN/write-test" 2> /dev/null
}
services_installed_not_running() {
	[ -x /usr/lib/postgresql/15/bin/postgres ] && [ -x /usr/bin/redis-server ] &&
		! pgrep -x postgres && ! pgrep -x redis-server
}
unplug_drive() {
	local dev
	dev=$(readlink -f "$VM_DISK")
	host_request unplug 0 && wait_for 20 test ! -e "$dev"
}

# A run usually starts from a saved booted guest: its clock must be the
# host's (the host copied story.sh just before), not the saved one, and
# Linux must have reseeded its random generator on the restore.
clock_is_the_hosts() {
	local now then
	now=$(date +%s) then=$(stat -c %Y "$VM_CTL/story.sh")
	echo "guest $now, story copied at $then"
	[ "$now" -ge $((then - 5)) ] && [ "$now" -lt $((then + 300)) ]
}
reseeded_after_a_restore() {
	local how
	how=$(cat "$VM_CTL/start")
	echo "this guest was $how"
	case "$how" in
	restored) journalctl -k -b | grep -q "crng reseeded due to virtual machine fork" ;;
	booted) true ;;
	*) return 1 ;;
	esac
}

check "systemd is PID 1" pid1_is_systemd
check "the guest's clock is the host's" clock_is_the_hosts
check "a restored guest reseeded its random generator" reseeded_after_a_restore
check "the system bus answers for org.freedesktop.systemd1" bus_has_systemd
check "LUKS2 format, open and close on $VM_DISK" luks2_roundtrip
check "the binaries are shared read-only" share_is_read_only
check "PostgreSQL and Redis are installed and not running" services_installed_not_running
check "the host unplugs the drive" unplug_drive
finish
