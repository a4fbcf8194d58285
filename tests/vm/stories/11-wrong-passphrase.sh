#!/bin/bash
# vm-timeout: 600
#
# A wrong passphrase gets its own exit code (3), and nothing is unlocked,
# mounted or started; the right one then works.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
appliance_setup
MP=$(cfg drive.mount-point)
check "init" appliance_init > /dev/null

wrong() {
	printf 'not the passphrase\n' > /run/wrong.pass
	"$BIN/immich-server" --start --passphrase-file /run/wrong.pass
}
nothing_changed() {
	! mapper_open "$(mapper_name)" && ! is_mounted "$MP" && no_stack_unit_active && mount_point_sealed
}
message_says_wrong() {
	local out
	out=$(wrong 2>&1)
	contains "wrong passphrase" "$out"
}

expect_exit 3 "a wrong passphrase exits 3" wrong
check "nothing unlocked, mounted or started" nothing_changed
check "the message says so" message_says_wrong
check "the right passphrase then starts" appliance_start
check "and stops" appliance_stop
finish
