#!/bin/bash
# vm-timeout: 900
#
# A service that fails mid-start: start exits 7, shows the journal tail of
# the failed unit, and rolls back everything it did, in reverse order.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
appliance_setup
MP=$(cfg drive.mount-point)
check "init" appliance_init > /dev/null

mkdir -p /etc/systemd/system/immich-server.service.d
cat > /etc/systemd/system/immich-server.service.d/break.conf <<-'CONF'
	[Service]
	ExecStart=
	ExecStart=/bin/sh -c 'echo "simulated failure: cannot open the media location" >&2; exit 1'
CONF
systemctl daemon-reload

fails_with_journal() {
	local out rc
	out=$(appliance_start 2>&1)
	rc=$?
	echo "$out"
	[ "$rc" = 7 ] && contains "immich-server.service failed" "$out" &&
		contains "simulated failure: cannot open the media location" "$out" &&
		contains "Rolled back: stopped immich-server.service, stopped redis-immich.service, stopped postgresql.target, unmounted $MP, locked the drive." "$out"
}
all_rolled_back() {
	no_stack_unit_active && ! mapper_open "$(mapper_name)" && mount_point_sealed
}
check "start exits 7 with the failed unit's journal and the rollback" fails_with_journal
check "nothing is left half-up" all_rolled_back
rm -r /etc/systemd/system/immich-server.service.d
systemctl daemon-reload
systemctl reset-failed
check "after the fix, start works" appliance_start
check "stop" appliance_stop
finish
