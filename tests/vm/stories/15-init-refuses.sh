#!/bin/bash
# vm-timeout: 600
#
# init is destructive, so it is guarded: it refuses the system disk and a
# mounted drive, wants the device name typed back on the terminal (or
# --yes --force), and a wrong answer changes nothing.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
appliance_setup

init_out() { "$BIN/immich-server" init --insecure-fast-kdf-for-tests --passphrase-file "$PASSFILE" "$@" 2>&1; }
root_disk() {
	local out rc
	out=$(init_out --immich-drive /dev/vda --yes --force); rc=$?
	echo "$out"
	[ "$rc" = 4 ] && contains "holds the running system" "$out"
}
mounted() {
	mkfs.ext4 -q -F -L other "$VM_DISK" && mkdir -p /mnt/other && mount "$VM_DISK" /mnt/other || return 1
	local out rc
	out=$(init_out --immich-drive "$VM_DISK" --yes --force); rc=$?
	umount /mnt/other
	echo "$out"
	[ "$rc" = 4 ] && contains "is mounted at /mnt/other" "$out"
}
half_forced() {
	local out rc
	out=$(init_out --immich-drive "$VM_DISK" --yes); rc=$?
	echo "$out"
	[ "$rc" = 2 ] && contains "--yes and --force go together" "$out"
}
no_terminal() {
	local out rc
	out=$(setsid -w "$BIN/immich-server" init --immich-drive "$VM_DISK" --passphrase-file "$PASSFILE" < /dev/null 2>&1); rc=$?
	echo "$out"
	[ "$rc" != 0 ] && contains "no terminal to confirm on" "$out"
}
wrong_name_typed() {
	local out rc
	out=$(printf 'sdz\n' | script -qec "$BIN/immich-server init --immich-drive $VM_DISK --passphrase-file $PASSFILE" /dev/null 2>&1); rc=$?
	echo "$out"
	[ "$rc" = 10 ] && contains "ALL DATA ON" "$out" && contains "not confirmed" "$out" &&
		blkid -p "$VM_DISK" | grep -q 'LABEL="other"'
}
right_name_typed() {
	local dev out
	dev=$(readlink -f "$VM_DISK")
	# Everything on the terminal: the name, then a passphrase whose second
	# typing differs (init asks again), then the real one twice.
	out=$(printf '%s\n%s\n%s\n%s\n%s\n' "$dev" "first try, long enough" "first try, lnog enough" \
		"$TEST_PASSPHRASE" "$TEST_PASSPHRASE" |
		script -qec "$BIN/immich-server init --immich-drive $VM_DISK --insecure-fast-kdf-for-tests" /dev/null 2>&1) || { echo "$out"; return 1; }
	echo "$out" | grep -v "Recovery key\|Backup password"
	contains "EMERGENCY KIT" "$out" && contains "differ; try again" "$out" && cryptsetup isLuks "$VM_DISK" &&
		printf "%s" "$TEST_PASSPHRASE" | cryptsetup open --test-passphrase --key-file - "$VM_DISK"
}

check "refuses the system disk" root_disk
check "refuses a mounted drive" mounted
check "--yes without --force is a usage error" half_forced
check "without a terminal and without --yes --force it refuses" no_terminal
check "a wrong device name typed back: exit 10, the drive untouched" wrong_name_typed
check "the device name typed back, a mistyped passphrase asked again: the drive is prepared with the second" right_name_typed
finish
