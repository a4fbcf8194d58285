#!/bin/bash
# vm-timeout: 1200
#
# The SSH session drops in the middle: `start` and `init` run on a terminal
# (script's pty, as sshd gives one), which is torn down at a given step, so
# the kernel hangs up the session and immich-server gets SIGHUP. Each time
# the run rolls back, nothing is left half-up, and the next run works.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
appliance_setup
MP=$(cfg drive.mount-point)
LOG=/run/interrupted-run.log

# run_and_hang_up STEP-TEXT COMMAND...: runs COMMAND on a pty and kills the
# pty's owner (as a dropped SSH connection does) once STEP-TEXT is printed.
run_and_hang_up() {
	local step=$1 cmd owner deadline
	shift
	cmd="$*"
	: > "$LOG"
	script -qefc "$cmd" /dev/null > "$LOG" 2>&1 &
	owner=$!
	deadline=$((SECONDS + 120))
	until grep -qF "$step" "$LOG"; do
		[ "$SECONDS" -lt "$deadline" ] && kill -0 "$owner" 2> /dev/null || { cat "$LOG"; echo "never reached: $step"; return 1; }
		sleep 0.05
	done
	kill -KILL "$owner"
	wait "$owner" 2> /dev/null
	# immich-server finishes its rollback on its own, with no terminal.
	wait_for 120 sh -c '! pgrep -x immich-server > /dev/null' || { echo "immich-server is still running"; return 1; }
	cat "$LOG"
}
interrupted_in_journal() {
	journalctl -b -o cat -t immich-server | grep -c "interrupted by SIGHUP" || true
}
nothing_half_up() {
	! mapper_open "$(mapper_name)" && mount_point_sealed && no_stack_unit_active
}
start_cut_at() {
	local before; before=$(interrupted_in_journal)
	run_and_hang_up "$1" "$BIN/immich-server --start --passphrase-file $PASSFILE" || return 1
	nothing_half_up || return 1
	[ "$(interrupted_in_journal)" -gt "$before" ] || { echo "no rollback for the interruption in the journal"; journalctl -b -o cat -t immich-server | tail -20; return 1; }
}
luks_mark() { cryptsetup luksDump "$VM_DISK" 2> /dev/null | awk -F: '/^Subsystem/ {gsub(/[ \t]/, "", $2); print $2}'; }
init_cut_at() {
	run_and_hang_up "$1" "$BIN/immich-server init --immich-drive $VM_DISK --yes --force --insecure-fast-kdf-for-tests --passphrase-file $PASSFILE" || return 1
	! mapper_open "$(mapper_name)" && ! is_mounted "$MP" && [ "$(luks_mark)" != immich-appliance ] &&
		[ ! -e "$(cfg drive.remembered-drive-file)" ]
}

check "init cut while encrypting: locked, not marked as an appliance drive" init_cut_at "Encrypting"
check "init cut while creating the filesystem" init_cut_at "Creating the ext4 filesystem"
check "init cut while creating the layout" init_cut_at "Creating the directory layout"
init_completes() { appliance_init > /dev/null && [ "$(luks_mark)" = immich-appliance ]; }
check "init then runs to the end, and marks the drive" init_completes
check "start cut while unlocking: rolled back" start_cut_at "Unlocking"
check "start cut while mounting: rolled back" start_cut_at "Mounting at"
check "start cut while starting the database: rolled back" start_cut_at "Starting redis"
check "start cut while starting Immich: rolled back" start_cut_at "Starting immich-server"
# kill -9 cannot be caught: whatever it leaves, the next start or stop repairs.
killed_at() {
	: > "$LOG"
	"$BIN/immich-server" --start --passphrase-file "$PASSFILE" > "$LOG" 2>&1 &
	local pid=$! deadline=$((SECONDS + 120))
	until grep -qF "$1" "$LOG"; do
		[ "$SECONDS" -lt "$deadline" ] && kill -0 "$pid" 2> /dev/null || { cat "$LOG"; return 1; }
		sleep 0.05
	done
	kill -KILL "$pid"
	wait "$pid" 2> /dev/null
	cat "$LOG"
}
kill9_then_start() { killed_at "Starting redis" && appliance_start && all_stack_active && appliance_stop && nothing_half_up; }
kill9_then_stop() { killed_at "Mounting at" && appliance_stop && nothing_half_up; }
check "the next start works" appliance_start
check "and stop" appliance_stop
check "killed (-9) while starting the database: the next start completes it" kill9_then_start
check "killed (-9) while mounting: the next stop cleans up" kill9_then_stop
check "and then start works" appliance_start
check "and stop" appliance_stop
finish
