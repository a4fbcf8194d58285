#!/bin/bash
# vm-disk-size: 2G
# vm-timeout: 2400
#
# How backups fail, and that they say so: a run while the drive is locked is
# a recorded skip, not a failure; a run before setup says to run setup; a
# wrong repository password is a clear error that keeps the working setup;
# essential-only really leaves thumbnails out; a run killed midway is
# reported and the next run succeeds with a clean check; a photo that
# cannot be read makes the run fail and name it; and a corrupted
# pack file is caught by `check`, which turns the status red. A repository
# in a local folder works as well as the REST server. And --stop waits for
# a backup started from a shell before it locks the drive.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
. "$VM_LIB/backup.sh"
appliance_setup
quiet_uploads
MP=$(cfg drive.mount-point)

check "init" appliance_init > /dev/null

locked_run_is_a_skip() {
	local out st
	out=$("$BIN/immich-server" backup run 2>&1) || { echo "$out"; return 1; }
	echo "$out"
	st=$("$BIN/immich-server" status --json)
	[ "$(echo "$st" | jq -r .backup.last_skip.message)" = "skipped: drive locked" ] &&
		[ -z "$(ls -A "$MP")" ]
}
check "a backup while the drive is locked: exit 0, recorded as a skip, nothing written" locked_run_is_a_skip
timer_run_is_a_skip() {
	systemctl start immich-backup.service && ! systemctl is-failed -q immich-backup.service
}
check "the same through the systemd unit: it does not fail" timer_run_is_a_skip

check "start" appliance_start
check "REST server" rest_server_start
check "a library" gen_library 600 60 2 4
check "a database" fill_database

not_configured_is_clear() {
	local out rc
	out=$("$BIN/immich-server" backup run 2>&1); rc=$?
	echo "$out"
	[ "$rc" = 11 ] && contains "immich-server backup setup" "$out" &&
		[ "$(backup_json | jq -r .health.colour)" = red ]
}
check "before setup, a run fails and says to run setup; status is red" not_configured_is_clear

check "setup" backup_setup > /dev/null

wrong_password_is_clear() {
	local out rc
	printf 'not the password\n' > /run/wrong.pass
	out=$("$BIN/immich-server" backup setup --existing --force --repository "$REST_URL" \
		--password-file /run/wrong.pass 2>&1); rc=$?
	echo "$out"
	[ "$rc" = 11 ] && contains "repository password is wrong" "$out" &&
		grep -q 'a long repository password for tests' "$MP/secrets/backup-password"
}
check "a wrong repository password: a clear error, and the working setup is kept" wrong_password_is_clear

first_run_prunes_with_the_check() {
	local out; out=$("$BIN/immich-server" backup run 2>&1) || { echo "$out"; return 1; }
	echo "$out"
	contains "Pruning the repository" "$out" && contains "Checking the repository" "$out"
}
check "a full backup: the first run checks the repository, and prunes with it" first_run_prunes_with_the_check
# With a retention of one snapshot, a second run forgets the first, and
# leaves its data for the weekly prune (the check is not due again).
second_run_forgets_without_pruning() {
	local conf=/etc/immich-appliance/config.toml out rc n
	cp "$conf" /run/config.before
	printf '\n[backup]\nkeep-daily = 1\nkeep-weekly = 0\nkeep-monthly = 0\n' >> "$conf"
	out=$("$BIN/immich-server" backup run 2>&1); rc=$?
	cp /run/config.before "$conf"
	echo "$out"
	[ "$rc" = 0 ] || return 1
	n=$(rustic_drive snapshots --json 2> /dev/null | jq 'map(.snapshots | length) | add')
	echo "snapshots now: $n"
	contains "1 snapshot(s) forgotten; their data goes at the next weekly check" "$out" &&
		! contains "Pruning" "$out" && [ "$n" = 1 ]
}
check "a second run forgets the first snapshot (retention of one) without a prune" second_run_forgets_without_pruning
thumbs_in_full() { rustic_drive ls latest | grep -q '/thumbs/'; }
check "the default backup includes thumbnails" thumbs_in_full

essential_only() {
	local ls
	printf '\n[backup]\nessential-only = true\n' >> /etc/immich-appliance/config.toml
	"$BIN/immich-server" backup run > /dev/null || return 1
	ls=$(rustic_drive ls latest)
	# Of the regenerable folders only Immich's folder markers are kept.
	[ "$(echo "$ls" | grep -E '/(thumbs|encoded-video)/' | sort | paste -sd' ')" = \
		"$(echo "$ls" | grep -E '/(thumbs|encoded-video)/\.immich$' | sort | paste -sd' ')" ] &&
		echo "$ls" | grep -q '/thumbs/\.immich$' && echo "$ls" | grep -q '/encoded-video/\.immich$' &&
		echo "$ls" | grep -q '/upload/' && echo "$ls" | grep -q '/dumps/immich.pgdump'
}
check "essential-only leaves thumbnails and encoded videos out (but their .immich markers), keeps originals and the dump" essential_only

killed_run_then_recovers() {
	local st
	# More data, so that the run is still going when it is killed.
	gen_library 800 100 2 16 > /dev/null
	systemd-run --unit=killme --quiet "$BIN/immich-server" backup run
	wait_for 120 pgrep -f "rustic.* backup " || return 1
	sleep 2
	systemctl kill -s KILL killme.service
	sleep 1
	st=$(backup_json)
	echo "$st" | jq -c .running
	echo "$st" | jq -r .running | grep -q interrupted || return 1
	"$BIN/immich-server" backup run > /dev/null && "$BIN/immich-server" backup check --read-all
}
check "a run killed midway is reported; the next run succeeds and a full check is clean" killed_run_then_recovers

# A folder of the library on a little filesystem of its own, on a
# device-mapper table whose blocks under one photo then turn into read
# errors: what a failing drive does to one part of the library.
FAILING_DIR="$MP/$(cfg layout.media.path)/upload/failing folder"
FAILING_IMG=/var/tmp/failing.img
failing_folder() {
	local loop sz
	truncate -s 32M "$FAILING_IMG" && loop=$(losetup -f --show "$FAILING_IMG") &&
		sz=$(blockdev --getsz "$loop") || return 1
	echo "0 $sz linear $loop 0" | dmsetup create failing &&
		mkfs.ext4 -q -b 4096 /dev/mapper/failing && mkdir -p "$FAILING_DIR" &&
		mount /dev/mapper/failing "$FAILING_DIR" || return 1
	# The small one first, so that its block comes before the photo's.
	head -c 2000 /dev/urandom > "$FAILING_DIR/fine.jpg"
	sync
	head -c 300000 /dev/urandom > "$FAILING_DIR/IMG_0001.jpg"
	sync
}
# $1: "error" puts an error target over the photo's 74 blocks of 4 KiB
# (300000 bytes; ext4 gives a new file on an empty filesystem one extent),
# and nothing else; "heal" gives the whole device back.
failing_table() {
	local loop sz blk st n=$((74 * 8))
	loop=$(losetup -j "$FAILING_IMG" | cut -d: -f1) && sz=$(blockdev --getsz "$loop") || return 1
	if [ "$1" = heal ]; then
		echo "0 $sz linear $loop 0"
	else
		blk=$(debugfs -R "bmap /IMG_0001.jpg 0" /dev/mapper/failing 2> /dev/null) &&
			[ "$blk" -gt 0 ] || return 1
		st=$((blk * 8))
		printf '0 %s linear %s 0\n%s %s error\n%s %s linear %s %s\n' \
			"$st" "$loop" "$st" "$n" "$((st + n))" "$((sz - st - n))" "$loop" "$((st + n))"
	fi | dmsetup reload failing && dmsetup resume failing &&
		echo 3 > /proc/sys/vm/drop_caches
}
snapshot_count() { rustic_drive snapshots --json 2> /dev/null | jq 'map(.snapshots | length) | add'; }
unreadable_files_fail_the_run() {
	local out rc before after ls
	failing_folder && failing_table error || return 1
	if cat "$FAILING_DIR/IMG_0001.jpg" > /dev/null 2>&1; then
		echo "the photo is still readable: the error target is not over it"
		return 1
	fi
	before=$(snapshot_count)
	out=$("$BIN/immich-server" backup run 2>&1); rc=$?
	echo "$out" | tail -4
	after=$(snapshot_count)
	ls=$(rustic_drive ls latest 2> /dev/null | grep 'failing folder')
	echo "exit $rc; snapshots $before -> $after; in the snapshot: $ls"
	[ "$rc" = 11 ] && contains "the backup is incomplete: 1 file(s) could not be read" "$out" &&
		contains "upload/failing folder (a file in this folder)" "$out" || return 1
	if grep -q "Backup done" <<< "$out"; then echo "it said Backup done"; return 1; fi
	[ "$(backup_json | jq -r .health.colour)" = red ] || { echo "status is not red"; return 1; }
	"$BIN/immich-server" --status > /run/status.txt 2>&1
	grep -q "could not be read" /run/status.txt || { cat /run/status.txt; return 1; }
	grep -q 'failing folder/fine.jpg$' <<< "$ls" || { echo "fine.jpg is not in the snapshot"; return 1; }
	if grep -q 'IMG_0001.jpg$' <<< "$ls"; then echo "the unreadable photo is in the snapshot"; return 1; fi
	[ "$after" = $((before + 1)) ] || { echo "retention removed a snapshot"; return 1; }
}
check "a photo that cannot be read (a device-mapper error under it): the run fails with exit 11, names its folder, keeps every older snapshot, status is red" unreadable_files_fail_the_run
healed_run_saves_them() {
	local out
	failing_table heal || return 1
	out=$("$BIN/immich-server" backup run 2>&1) || { echo "$out"; return 1; }
	echo "$out" | tail -2
	rustic_drive ls latest | grep -q 'failing folder/IMG_0001.jpg$' &&
		[ "$(backup_json | jq -r .health.colour)" = green ]
}
check "once the blocks read again, the next run saves the photo and status is green" healed_run_saves_them
failing_folder_away() {
	umount "$FAILING_DIR" && dmsetup remove failing &&
		losetup -d "$(losetup -j "$FAILING_IMG" | cut -d: -f1)" && rmdir "$FAILING_DIR" && rm -f "$FAILING_IMG"
}
check "the failing folder is taken away" failing_folder_away

corrupted_pack_is_caught() {
	local pack out rc
	pack=$(find "$REST_DIR/data" -type f -size +100k | head -1)
	[ -n "$pack" ] || return 1
	printf 'corrupted' | dd of="$pack" bs=1 seek=4096 conv=notrunc status=none
	out=$("$BIN/immich-server" backup check --read-all 2>&1); rc=$?
	echo "$out" | tail -5
	[ "$rc" = 11 ] && [ "$(backup_json | jq -r .health.colour)" = red ] &&
		"$BIN/immich-server" --status | grep -q "repository check failed"
}
check "a corrupted pack file is caught by check, and status turns red" corrupted_pack_is_caught

# The same orchestration on the other kind of backend: a repository in a
# local folder (a second disk, a NAS mount) instead of a server.
local_folder_repository() {
	local dir=/var/lib/local-repo
	backup_setup "$dir" --force > /dev/null &&
		"$BIN/immich-server" backup run > /dev/null &&
		"$BIN/immich-server" backup check --read-all > /dev/null || return 1
	[ -f "$dir/config" ] && [ -n "$(find "$dir/data" -type f | head -1)" ] &&
		[ "$(backup_json | jq -r .health.colour)" = green ]
}
check "a repository in a local folder: setup, backup and a full check; status is green again" local_folder_repository
# A backup started from a shell is in no unit that --stop stops: --stop
# must wait for it (rustic is held with SIGSTOP until --stop says so, so
# the order is certain), keep the drive mounted meanwhile, and lock it only
# once the run has ended and written its record.
stop_waits_for_a_shell_backup() {
	local bpid spid rpid brc src snap
	"$BIN/immich-server" backup run --json > /run/shell-backup.json 2> /run/shell-backup.err &
	bpid=$!
	wait_for 120 pgrep -f "rustic.* backup " || return 1
	rpid=$(pgrep -f "rustic.* backup " | head -1)
	kill -STOP "$rpid"
	appliance_stop > /run/stop.out 2>&1 &
	spid=$!
	wait_for 60 grep -q "is running; waiting for it to finish" /run/stop.out || { kill -CONT "$rpid"; cat /run/stop.out; return 1; }
	is_mounted "$MP" && mapper_open "$(mapper_name)" || { kill -CONT "$rpid"; echo "the drive went away under the backup"; return 1; }
	kill -CONT "$rpid"
	wait "$bpid"; brc=$?
	wait "$spid"; src=$?
	cat /run/stop.out
	echo "backup exit $brc, stop exit $src"
	snap=$(jq -r .backup.snapshot /run/shell-backup.json)
	echo "snapshot $snap"
	[ "$brc" = 0 ] && [ "$src" = 0 ] && [ -n "$snap" ] && [ "$snap" != null ] &&
		! is_mounted "$MP" && ! mapper_open "$(mapper_name)" || return 1
	# The run's record reached the drive before it was locked.
	appliance_start > /dev/null || return 1
	[ "$(backup_json | jq -r .last_backup.snapshot)" = "$snap" ] &&
		[ "$(backup_json | jq -r .last_backup.outcome)" = success ]
}
check "--stop during a backup run from a shell waits for it, then locks; the run's record is on the drive" stop_waits_for_a_shell_backup
check "stop" appliance_stop
finish
