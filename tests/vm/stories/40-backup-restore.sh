#!/bin/bash
# vm-disks: 2
# vm-disk-size: 2G
# vm-timeout: 2400
# vm-mem: 2048
#
# The whole backup journey with real rustic, real PostgreSQL and a real REST
# backend on loopback (rclone serve restic): set up, back up a photo-like
# library and a database, drill, then "lose" the drive and restore onto a
# new one with one command. The files come back byte for byte and every
# table has its row count; the ping reaches the monitor; backups go on from
# the new drive.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
. "$VM_LIB/backup.sh"
appliance_setup
quiet_uploads
MP=$(cfg drive.mount-point)
mkdir -p /etc/immich-appliance
cat >> /etc/immich-appliance/config.toml <<-EOF

	[backup]
	ping-url = "http://127.0.0.1:2283/__fake/ping/abc"
	drill-free-margin-mib = 256
EOF

check "init the first drive" appliance_init > /dev/null
check "start" appliance_start
check "a REST server for the repository on loopback" rest_server_start
check "a photo-like library (1200 photos with EXIF and their thumbnails, 3 videos)" gen_library 1200 80 3 8
check "a database with rows" fill_database

# What a real library holds besides plain files, with awkward names: the
# restore and the drill must count them as rustic's snapshot does.
odd_entries() {
	local d; d="$MP/$(cfg layout.media.path)/library/odd entries/ünï cødé"
	mkdir -p "$d" "$MP/$(cfg layout.media.path)/library/an empty folder" &&
		printf 'x%.0s' $(seq 1 5000) > "$d/-leading dash.jpg" && : > "$d/empty file.jpg" &&
		ln "$d/-leading dash.jpg" "$d/hard link.jpg" && ln -s -- "-leading dash.jpg" "$d/sym link.jpg" &&
		ln -s /nowhere "$d/dangling link" && chmod 0640 "$d/empty file.jpg" &&
		chown -R immich:immich "$MP/$(cfg layout.media.path)/library"
}
check "symlinks, a dangling one, a hard link, an empty file, an empty folder, spaces, unicode, a leading dash" odd_entries
# Type, mode, size and link target of every entry, for the comparison after.
entries() { (cd "$MP/$(cfg layout.media.path)" && find . -printf '%y %m %P -> %l\n' | LC_ALL=C sort); }

setup_prints_the_kit() {
	local out
	out=$(backup_setup 2>&1) || { echo "$out"; return 1; }
	echo "$out"
	contains "EMERGENCY KIT" "$out" && contains "$REST_URL" "$out" &&
		[ "$(stat -c %a "$MP/secrets/rustic.toml")" = 600 ] &&
		[ "$(stat -c %a "$MP/secrets/backup-password")" = 600 ] &&
		! grep -rq "repository password for tests" /etc /var/lib/immich-appliance 2> /dev/null
}
check "backup setup creates the repository and prints the emergency kit" setup_prints_the_kit

# The secrets a backup and a restore handle: none may show in a process's
# argv or environment while they run, nor in the journal or on the root disk.
{ cat "$REPO_PASS"; printf '%s\n' "$TEST_PASSPHRASE"; } > /run/needles
first_backup() {
	local t0 out
	t0=$(date +%s.%N)
	secret_watch_start /run/needles
	out=$("$BIN/immich-server" backup run --json) || { secret_watch_stop; echo "$out"; return 1; }
	secret_watch_stop || return 1
	echo "$out"
	figure "backup_run_secs $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')"
	figure "backup_files $(echo "$out" | jq .backup.files)"
	[ "$(echo "$out" | jq -r .backup.outcome)" = success ] &&
		[ "$(echo "$out" | jq -r .check.outcome)" = success ]
}
check "the first backup dumps, backs up, applies retention and checks (no secret in any argv or environment meanwhile)" first_backup

status_is_green() {
	local b
	b=$(backup_json); echo "$b" | jq -c '{h: .health, snap: .last_backup.snapshot}'
	[ "$(echo "$b" | jq -r .health.colour)" = green ] &&
		[ "$(echo "$b" | jq -r .last_check.outcome)" = success ]
}
check "status is green and shows the snapshot" status_is_green

pinged() {
	curl -s http://127.0.0.1:2283/__fake/state | jq -r '.requests[]' | grep -x "GET /__fake/ping/abc"
}
check "the monitor was pinged" pinged

check "the restore drill restores the snapshot and loads the dump" "$BIN/immich-server" backup drill
drill_recorded() {
	local b
	b=$(backup_json)
	echo "$b" | jq -c .last_drill
	[ "$(echo "$b" | jq -r .last_drill.outcome)" = success ] && [ ! -e "$MP/drill-scratch" ] &&
		! runuser -u postgres -- "$PG_BIN/psql" -lqt | cut -d'|' -f1 | grep -qw immich_drill
}
check "the drill is recorded, and leaves no scratch files or database" drill_recorded
drill_without_room_reads_back() {
	local out rc
	sed -i 's/^drill-free-margin-mib = .*/drill-free-margin-mib = 100000/' /etc/immich-appliance/config.toml
	out=$("$BIN/immich-server" backup drill 2>&1); rc=$?
	sed -i 's/^drill-free-margin-mib = .*/drill-free-margin-mib = 256/' /etc/immich-appliance/config.toml
	echo "$out"
	[ "$rc" = 0 ] && contains "read back and verified all stored data" "$out"
}
check "without room for a full restore, the drill loads the dump and reads back every file" drill_without_room_reads_back

recorded() {
	tree_sums > /run/sums.before && db_counts > /run/counts.before && entries > /run/entries.before || return 1
	echo "files: $(wc -l < /run/sums.before)"
	cat /run/counts.before
	# The library is about 2400 files and the database has rows.
	[ "$(wc -l < /run/sums.before)" -gt 2000 ] && grep -q '^public.asset 3000$' /run/counts.before
}
check "checksums of every file and the row counts, before" recorded

check "stop: the drive is locked" appliance_stop
# The first drive "dies": the new one is prepared like any drive.
check "init a new drive" appliance_init "$VM_DISK2" > /dev/null

dry_run_changes_nothing() {
	local out
	out=$("$BIN/immich-server" restore --dry-run --immich-drive "$VM_DISK2" --repository "$REST_URL" \
		--password-file "$REPO_PASS" --passphrase-file "$PASSFILE" 2>&1) || { echo "$out"; return 1; }
	echo "$out"
	contains "Dry run: nothing was changed" "$out" && contains "files" "$out" &&
		no_stack_unit_active && ! is_mounted "$MP" && ! mapper_open "$(mapper_name)" &&
		[ ! -e /run/immich-appliance/restore-dry-run ] || return 1
	# A dry run that fails part-way (no such snapshot) leaves no copy of the
	# repository password behind either.
	out=$("$BIN/immich-server" restore --dry-run --snapshot 0000dead --immich-drive "$VM_DISK2" \
		--repository "$REST_URL" --password-file "$REPO_PASS" --passphrase-file "$PASSFILE" 2>&1) &&
		{ echo "a dry run of a missing snapshot succeeded: $out"; return 1; }
	echo "$out" | tail -2
	contains "0000dead" "$out" && [ ! -e /run/immich-appliance/restore-dry-run ] &&
		! is_mounted "$MP" && ! mapper_open "$(mapper_name)"
}
check "restore --dry-run shows the plan and leaves the drive locked and no temporary files, also when it fails" dry_run_changes_nothing

one_command_restore() {
	local t0
	t0=$(date +%s.%N)
	secret_watch_start /run/needles
	"$BIN/immich-server" restore --immich-drive "$VM_DISK2" --repository "$REST_URL" \
		--password-file "$REPO_PASS" --passphrase-file "$PASSFILE" || { secret_watch_stop; return 1; }
	secret_watch_stop || return 1
	figure "restore_secs $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')"
	all_stack_active
}
check "one command restores onto the new drive and starts Immich (no secret in any argv or environment meanwhile)" one_command_restore

byte_identical() {
	tree_sums > /run/sums.after || return 1
	[ "$(wc -l < /run/sums.after)" -gt 2000 ] || { echo "only $(wc -l < /run/sums.after) files"; return 1; }
	diff /run/sums.before /run/sums.after > /run/sums.diff || { head /run/sums.diff; return 1; }
}
check "every file is byte-identical" byte_identical
check "the passphrase and the repository password are not in the journal or on the root disk" secret_nowhere_at_rest /run/needles
same_entries() {
	entries > /run/entries.after && diff /run/entries.before /run/entries.after && grep -q "sym link.jpg -> -leading dash.jpg" /run/entries.after
}
check "every entry has its type, mode and link target back" same_entries
same_rows() {
	db_counts > /run/counts.after || return 1
	diff /run/counts.before /run/counts.after && grep -q '^public.asset 3000$' /run/counts.after
}
check "every table has the same row count" same_rows
owners_fixed() {
	[ -z "$(find "$MP/$(cfg layout.media.path)" ! -user immich -print -quit)" ]
}
check "the photos belong to immich" owners_fixed

backups_go_on() {
	local out
	out=$("$BIN/immich-server" backup run --json) || { echo "$out"; return 1; }
	[ "$(rustic_drive snapshots --json | jq '[.[].snapshots[]] | length')" = 2 ]
}
check "backups go on from the new drive (its profile came with the restore)" backups_go_on
# The second snapshot has a parent: rustic counts unchanged symlinks' sizes.
check "a drill of the second snapshot passes too" "$BIN/immich-server" backup drill
check "stop" appliance_stop
finish
