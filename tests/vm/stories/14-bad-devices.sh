#!/bin/bash
# vm-timeout: 600
#
# Clear errors, exit 4 and nothing changed: a device that does not exist, a
# drive that is not LUKS, no drive given and none remembered, and an
# unencrypted drive without the appliance's layout.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
appliance_setup

start_out() { "$BIN/immich-server" --start --passphrase-file "$PASSFILE" "$@" 2>&1; }
missing_device() {
	local out rc
	out=$(start_out --immich-drive /dev/disk/by-id/usb-no-such-drive); rc=$?
	echo "$out"
	[ "$rc" = 4 ] && contains "does not exist. Plugged in?" "$out" && contains "/dev/vdb" "$out"
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

check "a missing device: exit 4, says so, lists the disks" missing_device
check "no drive given and none remembered: exit 4" none_remembered
check "a drive that is not LUKS: exit 4" not_luks
check "--no-decryption on a plain drive without the layout: exit 4, rolled back" plain_without_layout
check "nothing was changed" nothing_changed
check "not root: exit 5 with the sudo hint" not_root
finish
