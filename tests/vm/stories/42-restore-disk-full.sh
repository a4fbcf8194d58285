#!/bin/bash
# vm-disks: 2
# vm-disk-size: 1G
# vm-timeout: 1800
#
# The new drive fills up during a restore: the restore says so clearly,
# nothing is started, and the drive is locked again. The backup is
# essential-only (no thumbnails or transcodes): restored onto a drive with
# room, Immich starts, because the folders' .immich markers came back (the
# stand-in Immich refuses to start without them, as Immich does).
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
. "$VM_LIB/backup.sh"
appliance_setup
quiet_uploads
MP=$(cfg drive.mount-point)

mkdir -p /etc/immich-appliance
printf '\n[backup]\nessential-only = true\nprogress-every-secs = 2\n' >> /etc/immich-appliance/config.toml
check "init" appliance_init > /dev/null
check "start" appliance_start
check "REST server" rest_server_start
check "a library of about 150 MB" gen_library 600 200 2 16
check "a database" fill_database
check "setup" backup_setup > /dev/null
backup_shows_progress() {
	local out
	out=$("$BIN/immich-server" backup run 2>&1) || { echo "$out"; return 1; }
	echo "$out"
	grep -qE "read .* of .* \([0-9]+ %\) in " <<< "$out" && contains "Backup done" "$out"
}
check "backup, saying how far it is while it runs" backup_shows_progress
check "stop" appliance_stop
check "init the new drive" appliance_init "$VM_DISK2" > /dev/null

full_during_restore() {
	local pid free rc
	"$BIN/immich-server" restore --no-start --immich-drive "$VM_DISK2" --repository "$REST_URL" \
		--password-file "$REPO_PASS" --passphrase-file "$PASSFILE" > /run/restore.out 2>&1 &
	pid=$!
	# Once rustic writes, something else takes the rest of the space.
	wait_for 300 pgrep -f "rustic.* restore " || { cat /run/restore.out; return 1; }
	free=$(df --output=avail -B1 "$MP" | tail -1)
	fallocate -l $((free - 4096)) "$MP/filler" || dd if=/dev/zero of="$MP/filler" bs=1M status=none
	wait "$pid"
	rc=$?
	cat /run/restore.out
	[ "$rc" = 11 ] && grep -qi "disk is full\|no space" /run/restore.out
}
check "the drive fills during the restore: exit 11 with a clear error" full_during_restore
nothing_started() {
	no_stack_unit_active && ! is_mounted "$MP" && ! mapper_open "$(mapper_name)"
}
check "nothing is started, and the drive is locked again" nothing_started

essential_restore_starts_immich() {
	appliance_init "$VM_DISK2" > /dev/null || return 1
	local out
	out=$("$BIN/immich-server" restore --immich-drive "$VM_DISK2" --repository "$REST_URL" \
		--password-file "$REPO_PASS" --passphrase-file "$PASSFILE" 2>&1) || { echo "$out"; journalctl -b -u immich-server -n 20 --no-pager; return 1; }
	echo "$out"
	local media; media="$MP/$(cfg layout.media.path)"
	all_stack_active && [ -f "$media/thumbs/.immich" ] && [ -f "$media/encoded-video/.immich" ] &&
		[ -z "$(find "$media/thumbs" -type f ! -name .immich -print -quit)" ]
}
check "an essential-only backup restored onto a drive with room: Immich starts (its folder markers are back, no thumbnails)" essential_restore_starts_immich
check "stop" appliance_stop
finish
