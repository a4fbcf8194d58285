#!/bin/bash
# vm-timeout: 900
#
# start twice and stop twice are no-ops that say so; two starts at the same
# time are serialised by the lock, and the second is told it waits; a start
# after a stop works while a loaded unit keeps the old mount unit around.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
appliance_setup
check "init" appliance_init > /dev/null
check "start" appliance_start

second_start_is_a_no_op() {
	local out
	out=$(appliance_start 2>&1) || { echo "$out"; return 1; }
	echo "$out"
	contains "running already; nothing to do" "$out" && all_stack_active
}
stop_twice() {
	appliance_stop > /dev/null || return 1
	local out
	out=$(appliance_stop 2>&1) || { echo "$out"; return 1; }
	echo "$out"
	contains "Already stopped" "$out" && no_stack_unit_active
}
concurrent_starts() {
	appliance_start > /run/a.out 2>&1 &
	local a=$!
	sleep 1
	appliance_start > /run/b.out 2>&1 &
	local b=$!
	wait "$a"; local ra=$?
	wait "$b"; local rb=$?
	echo "first: exit $ra"; cat /run/a.out
	echo "second: exit $rb"; cat /run/b.out
	[ "$ra" = 0 ] && [ "$rb" = 0 ] && all_stack_active &&
		grep -q "in progress; waiting" /run/b.out && grep -q "running already" /run/b.out
}

check "a second start is a no-op that reports the state" second_start_is_a_no_op
check "stop, then stop again: the second is a no-op" stop_twice
check "two starts at once: the second waits for the lock, then finds it running" concurrent_starts
check "stop" appliance_stop > /dev/null

# On the appliance the daily backup timer is always active, and its service
# is ordered after the drive's mount: so systemd keeps the mount unit of the
# first start loaded after a stop, and never collects it. A second start in
# the same boot must still mount (it failed with "still holds the mount").
again_with_the_backup_timer_active() {
	systemctl start "$(cfg units.backup-timer)" || return 1
	appliance_start > /dev/null && appliance_stop > /dev/null || return 1
	systemctl list-units --all --no-pager "$(systemd-escape --path --suffix=mount "$(cfg drive.mount-point)")"
	local out
	out=$(appliance_start 2>&1) || { echo "$out"; return 1; }
	all_stack_active
}
check "start, stop and start again while the backup timer holds the mount unit loaded" again_with_the_backup_timer_active
check "stop" appliance_stop
finish
