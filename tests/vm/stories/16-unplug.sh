#!/bin/bash
# vm-disk-bus: usb
# vm-timeout: 900
#
# The USB drive is pulled out while everything runs: the services stop
# because they are bound to the mount, nothing is written under the mount
# point on the root disk, status says what happened, and stop cleans up.
# Plugged in again without a reboot, the drive starts as before: start
# clears the failed units and the stale mount unit the pull left behind.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
appliance_setup
MP=$(cfg drive.mount-point)
MEDIA="$MP/$(cfg layout.media.path)"
check "init" appliance_init > /dev/null
check "start" appliance_start

uploads_are_landing() { wait_for 20 sh -c "ls $MEDIA/upload-* > /dev/null 2>&1"; }
unplug() { host_request unplug 0; }
services_stop() {
	wait_for 60 no_stack_unit_active || { systemctl --no-pager list-units 'immich*' 'postgres*'; return 1; }
	systemctl --no-pager --lines=0 status srv-immich.mount 2>&1 | head -3
	! is_mounted "$MP"
}
nothing_written_on_the_root_disk() {
	sleep 3
	ls -la "$MP"
	[ -z "$(ls -A "$MP")" ] && mount_point_sealed && ! touch "$MP/probe" 2> /dev/null && [ ! -e "$MP/probe" ]
}
status_says_unplugged() {
	local out json
	local rc
	out=$("$BIN/immich-server" --status); rc=$?; echo "$out"
	json=$("$BIN/immich-server" status --json)
	[ "$rc" = 13 ] && [ "$(echo "$json" | jq -r .state)" = unplugged ] &&
		[ "$(echo "$json" | jq -r '.schema_version, .needs_owner' | paste -sd,)" = 1,true ] &&
		contains "immich-server --stop" "$out"
}
stop_cleans_up() {
	local out
	out=$(appliance_stop 2>&1) || { echo "$out"; return 1; }
	echo "$out"
	! mapper_open "$(mapper_name)" && [ "$("$BIN/immich-server" status --json | jq -r .state)" = stopped ]
}
check "Immich writes uploads onto the drive" uploads_are_landing
check "the host pulls the USB drive out" unplug
check "the services stop on their own (bound to the mount) and it is unmounted" services_stop
check "nothing is written under the mount point on the root disk" nothing_written_on_the_root_disk
check "status says the drive was unplugged and what to do" status_says_unplugged
plug_back_and_start() {
	host_request plug 0 || return 1
	wait_for 30 test -b "$VM_DISK" || return 1
	local out
	out=$(appliance_start 2>&1) || { echo "$out"; systemctl --no-pager list-units --all 'srv-*' 'immich*'; return 1; }
	echo "$out"
	all_stack_active && is_mounted "$MP"
}
check "stop closes the stale mapping" stop_cleans_up
check "plugged in again, start works without a reboot or reset-failed" plug_back_and_start
check "and stops" appliance_stop
finish
