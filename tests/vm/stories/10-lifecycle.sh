#!/bin/bash
# vm-disk-bus: virtio usb
# vm-disk-size: 1G
#
# init -> start -> status -> stop on a fresh drive, the path every user
# takes: the drive is prepared with LUKS2 and ext4, remembered by UUID,
# unlocked and mounted with nodev,nosuid,noatime, the stack comes up in
# order, Immich answers, and stop brings everything down and locks it.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
appliance_setup
MP=$(cfg drive.mount-point)
MAPPER=$(mapper_name)

init_prepares_the_drive() {
	local out
	out=$(appliance_init) || { echo "$out"; return 1; }
	echo "$out" | tail -n 25
	contains "EMERGENCY KIT" "$out" && contains "Recovery key:" "$out" &&
		cryptsetup isLuks --type luks2 "$VM_DISK" &&
		cryptsetup luksDump "$VM_DISK" | grep -q 'PBKDF:.*argon2id' &&
		[ "$(cryptsetup luksDump "$VM_DISK" | grep -c 'luks2')" -ge 2 ] &&
		grep -q "luks-uuid = \"$(cryptsetup luksUUID "$VM_DISK")\"" "$(cfg drive.remembered-drive-file)" &&
		! mapper_open "$MAPPER" && ! is_mounted "$MP"
}

start_brings_everything_up() {
	local out
	out=$(appliance_start --timings) || { echo "$out"; return 1; }
	echo "$out"
	contains "Immich is running." "$out" && contains "http://" "$out" && all_stack_active &&
		[ "$(curl -fsS http://127.0.0.1:2283/api/server/ping)" = '{"res":"pong"}' ]
}

mounted_safely() {
	local opts
	opts=$(findmnt -n -o OPTIONS "$MP")
	echo "$opts"
	findmnt -n -o SOURCE "$MP" | grep -q "/dev/mapper/$MAPPER" &&
		contains nodev "$opts" && contains nosuid "$opts" && contains noatime "$opts" &&
		[ "$(systemctl show -p BindsTo --value "$(systemd-escape --path --suffix=mount "$MP")")" != "" ]
}

layout_has_owners_and_modes() {
	stat -c '%n %U:%G %a' "$MP"/postgres/15 "$MP"/immich "$MP"/secrets "$MP"/dumps "$MP"/state "$MP"/secrets/backup-password
	[ "$(stat -c '%U:%G %a' "$MP/postgres/15")" = "postgres:postgres 700" ] &&
		[ "$(stat -c '%U:%G %a' "$MP/immich")" = "immich:immich 700" ] &&
		[ "$(stat -c '%U:%G %a' "$MP/secrets")" = "root:root 700" ] &&
		[ "$(stat -c '%a' "$MP/secrets/backup-password")" = 600 ] &&
		[ -f "$MP/postgres/15/PG_VERSION" ] && [ -f "$MP/.immich-appliance" ]
}

database_on_the_drive() {
	runuser -u postgres -- "$PG_BIN/psql" -Atc "select current_setting('data_directory')" -d immich | grep -q "^$MP/postgres/15$"
}

status_reports_running() {
	local human json
	human=$("$BIN/immich-server" --status) || return 1
	echo "$human"
	json=$("$BIN/immich-server" status --json) || return 1
	contains "running" "$human" && contains "URL:" "$human" &&
		[ "$(echo "$json" | jq -r .state)" = running ] &&
		[ "$(echo "$json" | jq -r .drive.mounted)" = true ] &&
		[ "$(echo "$json" | jq -r .immich.answers)" = true ] &&
		[ "$(echo "$json" | jq -r '.units | map(select(.active)) | length')" -ge 5 ] &&
		[ "$(echo "$json" | jq -r .backup.health.colour)" = unknown ]
}

stop_brings_everything_down() {
	local out
	out=$(appliance_stop) || { echo "$out"; return 1; }
	echo "$out"
	contains "drive is locked" "$out" && no_stack_unit_active && ! mapper_open "$MAPPER" && mount_point_sealed
}

status_reports_stopped() {
	local json
	json=$("$BIN/immich-server" status --json) || return 1
	[ "$(echo "$json" | jq -r .state)" = stopped ] && [ "$(echo "$json" | jq -r .drive.unlocked)" = false ]
}

check "init prepares LUKS2 + ext4 and remembers the drive" init_prepares_the_drive
check "start (drive found by its remembered UUID) brings the stack up" start_brings_everything_up
check "mounted from the mapper with nodev,nosuid,noatime, bound to the disk" mounted_safely
check "the layout has the owners and modes the services expect" layout_has_owners_and_modes
check "PostgreSQL's data directory is on the drive" database_on_the_drive
check "status says running, as text and JSON" status_reports_running
check "stop stops the stack, unmounts and locks" stop_brings_everything_down
check "status says stopped" status_reports_stopped
finish
