#!/bin/bash
# vm-timeout: 600
#
# Clear errors, exit 4 and nothing changed: a device that does not exist, a
# drive that is not LUKS, no drive given and none remembered, and an
# unencrypted drive without the appliance's layout. Each error is printed
# once. Then a new SD card with the old drive: the drive is recognised by
# its LUKS mark, status and --start say how to unlock it, init warns before
# erasing it, and a damaged remembered-drive file says how to repair it.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
appliance_setup

start_out() { "$BIN/immich-server" --start --passphrase-file "$PASSFILE" "$@" 2>&1; }
missing_device() {
	local out rc
	out=$(start_out --immich-drive /dev/disk/by-id/usb-no-such-drive); rc=$?
	echo "$out"
	[ "$rc" = 4 ] && contains "does not exist. Plugged in?" "$out" && contains "/dev/vdb" "$out" &&
		[ "$(grep -c 'immich-server: error' <<< "$out")" = 1 ] || return 1
	# A script that asked for JSON gets JSON on an error too.
	out=$("$BIN/immich-server" --start --json --passphrase-file "$PASSFILE" --immich-drive /dev/disk/by-id/usb-no-such-drive 2> /dev/null)
	echo "$out"
	[ "$(jq -r '.schema_version, .error.exit' <<< "$out" | paste -sd,)" = 1,4 ] && contains "does not exist" "$(jq -r .error.message <<< "$out")"
}
none_remembered() {
	local out rc
	out=$(start_out); rc=$?
	echo "$out"
	[ "$rc" = 4 ] && contains "none remembered" "$out"
}
not_luks() {
	mkfs.ext4 -q -F "$VM_DISK" || return 1
	local out rc
	out=$(start_out --immich-drive "$VM_DISK"); rc=$?
	echo "$out"
	[ "$rc" = 4 ] && contains "is not a LUKS drive" "$out"
}
plain_without_layout() {
	local out rc
	out=$("$BIN/immich-server" --start --no-decryption --immich-drive "$VM_DISK" 2>&1); rc=$?
	echo "$out"
	[ "$rc" = 4 ] && contains "not a drive prepared by" "$out" && contains "Rolled back" "$out"
}
nothing_changed() { no_stack_unit_active && ! mapper_open "$(mapper_name)" && mount_point_sealed; }
not_root() {
	local out rc
	out=$(runuser -u nobody -- "$BIN/immich-server" --start 2>&1); rc=$?
	echo "$out"
	[ "$rc" = 5 ] && contains "sudo immich-server --start" "$out"
}

# A new SD card with the old drive: nothing remembered, the drive marked.
new_sd_card() {
	appliance_init > /dev/null || return 1
	rm -f "$(cfg drive.remembered-drive-file)"
	local dev; dev=$(readlink -f "$VM_DISK")
	local out rc json
	out=$("$BIN/immich-server" --status); echo "$out"
	json=$("$BIN/immich-server" status --json)
	contains "looks like your appliance drive" "$out" && contains "--immich-drive $dev" "$out" &&
		[ "$(jq -r .drive.unremembered_appliance_drive <<< "$json")" = "$dev" ] || return 1
	out=$(start_out); rc=$?
	echo "$out"
	[ "$rc" = 4 ] && contains "sudo immich-server --start --immich-drive $dev" "$out" && ! mapper_open "$(mapper_name)"
}
init_warns_before_erasing() {
	local out rc
	out=$(printf 'no\n' | script -qec "$BIN/immich-server init --immich-drive $VM_DISK --passphrase-file $PASSFILE" /dev/null 2>&1); rc=$?
	echo "$out"
	[ "$rc" = 10 ] && contains "already an appliance drive" "$out" && cryptsetup isLuks "$VM_DISK"
}
damaged_file() {
	local f out rc; f=$(cfg drive.remembered-drive-file)
	printf 'luks-uuid = \n' > "$f"
	out=$(start_out); rc=$?
	echo "$out"
	[ "$rc" = 4 ] && contains "is damaged" "$out" && contains "sudo rm $f" "$out" &&
		contains "is damaged" "$("$BIN/immich-server" --status)" && rm -f "$f"
}
unlock_as_told() {
	appliance_start --immich-drive "$VM_DISK" > /dev/null && appliance_stop > /dev/null &&
		[ -s "$(cfg drive.remembered-drive-file)" ]
}

check "a missing device: exit 4, says so once, lists the disks" missing_device
check "no drive given and none remembered: exit 4" none_remembered
check "a drive that is not LUKS: exit 4" not_luks
check "--no-decryption on a plain drive without the layout: exit 4, rolled back" plain_without_layout
check "nothing was changed" nothing_changed
check "not root: exit 5 with the sudo hint" not_root
check "a new SD card with the old drive: status and --start name it and say how to unlock it" new_sd_card
check "init warns before erasing an appliance drive" init_warns_before_erasing
check "a damaged remembered-drive file: exit 4, says how to repair it" damaged_file
check "unlocking it as told works and remembers it" unlock_as_told
finish
