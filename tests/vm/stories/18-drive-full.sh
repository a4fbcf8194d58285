#!/bin/bash
# vm-timeout: 900
#
# A full drive is named, not hidden: status warns from 90 % and says what to
# do; --start on a full drive fails with exit 4, says the drive is full and
# rolls back. Once space is freed by hand (as docs/after-a-reboot.md says),
# --start works at once: no reset-failed, no reboot.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
appliance_setup
MP=$(cfg drive.mount-point)
check "init" appliance_init > /dev/null
check "start" appliance_start > /dev/null

nearly_full_warns() {
	# Leave 5 % of what an unprivileged user may still use.
	local avail; avail=$(df --output=avail -B1 "$MP" | tail -1)
	fallocate -l $((avail * 95 / 100)) "$MP/filler-1" || return 1
	local out rc; out=$("$BIN/immich-server" --status); rc=$?; echo "$out"
	[ "$rc" = 13 ] && contains "% full" "$out" && contains "empty its trash" "$out" &&
		"$BIN/immich-server" status --json | jq -e '.drive.used_percent >= 90 and .needs_owner'
}
full_start_names_it() {
	appliance_stop > /dev/null || return 1
	# Full for PostgreSQL: nothing left outside root's reserve. Filled with
	# the drive unlocked by hand, as a person following the docs would.
	open_by_hand || return 1
	fallocate -l "$(df --output=avail -B1 /mnt | tail -1)" /mnt/filler-2
	dd if=/dev/zero of=/mnt/filler-3 bs=1M 2> /dev/null
	close_by_hand || return 1
	local out rc
	out=$(appliance_start 2>&1); rc=$?
	echo "$out"
	[ "$rc" = 4 ] && contains "the drive is full" "$out" && contains "Rolled back" "$out" &&
		! mapper_open "$(mapper_name)" && no_stack_unit_active
}
open_by_hand() {
	printf '%s' "$TEST_PASSPHRASE" | cryptsetup open --key-file - "$VM_DISK" immich-full &&
		mount /dev/mapper/immich-full /mnt
}
close_by_hand() { umount /mnt && cryptsetup close immich-full; }
freed_then_starts() {
	open_by_hand && rm -f /mnt/filler-* && close_by_hand || return 1
	local out
	out=$(appliance_start 2>&1) || { echo "$out"; systemctl --no-pager list-units --all --failed; return 1; }
	echo "$out"
	all_stack_active
}
check "nearly full: status warns and says what to do" nearly_full_warns
check "full: --start exits 4, names the full drive, rolls back" full_start_names_it
check "space freed by hand: --start works at once" freed_then_starts
check "stop" appliance_stop
finish
