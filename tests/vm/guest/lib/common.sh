# Helpers for VM stories. Source with:  . "$VM_LIB/common.sh"
# shellcheck shell=bash
#
# A story is a plain bash script run as root in the guest. It reports checks
# with `check NAME COMMAND...` / `expect_fail NAME COMMAND...` and ends with
# `finish`, which prints the tally and exits non-zero if any check failed.

set -u
VM_PASSED=0
VM_FAILED=0
BIN=${VM_SHARE:-/mnt/share}

_now() { date +%s.%N; }
_took() { awk -v a="$1" -v b="$(_now)" 'BEGIN { printf "%.2f", b - a }'; }

# check NAME COMMAND... : passes when COMMAND exits 0.
check() {
	local name=$1 t0 rc
	shift
	t0=$(_now)
	echo "--- $name"
	"$@"
	rc=$?
	if [ "$rc" = 0 ]; then
		VM_PASSED=$((VM_PASSED + 1))
		echo "PASS $name ($(_took "$t0") s)"
	else
		VM_FAILED=$((VM_FAILED + 1))
		echo "FAIL $name (exit $rc)"
	fi
	return 0
}

# expect_exit CODE NAME COMMAND... : passes when COMMAND exits with CODE.
expect_exit() {
	local want=$1 name=$2 rc t0
	shift 2
	t0=$(_now)
	echo "--- $name"
	"$@"
	rc=$?
	if [ "$rc" = "$want" ]; then
		VM_PASSED=$((VM_PASSED + 1))
		echo "PASS $name (exit $rc as expected, $(_took "$t0") s)"
	else
		VM_FAILED=$((VM_FAILED + 1))
		echo "FAIL $name (exit $rc, expected $want)"
	fi
	return 0
}

# fatal MESSAGE : the story cannot go on; ends it as failed.
fatal() {
	echo "FAIL $*"
	VM_FAILED=$((VM_FAILED + 1))
	finish
}

finish() {
	echo "story: $VM_PASSED passed, $VM_FAILED failed" | tee "$VM_OUT/summary.txt"
	[ "$VM_FAILED" = 0 ] && [ "$VM_PASSED" -gt 0 ]
	exit $?
}

# Asks the host to act on the VM (e.g. "unplug 0") and waits for its answer.
host_request() {
	local id req
	id=$(date +%s%N)
	req="$VM_CTL/requests/$id"
	printf '%s\n' "$*" > "$req.tmp" && mv "$req.tmp" "$req.req"
	for _ in $(seq 1 600); do
		if [ -f "$req.done" ]; then
			local answer
			answer=$(cat "$req.done")
			echo "host: $answer"
			[ "$answer" = ok ]
			return
		fi
		sleep 0.1
	done
	echo "host did not answer '$*' within 60 s"
	return 1
}

# The value of KEY in the effective config, e.g. cfg drive.mount-point.
cfg() { "$BIN/immich-server" show-config --get "$1"; }

unit_active() { [ "$(systemctl is-active "$1" 2> /dev/null)" = active ]; }
unit_inactive() {
	local s
	s=$(systemctl is-active "$1" 2> /dev/null)
	[ "$s" = inactive ] || [ "$s" = failed ] || [ "$s" = unknown ]
}
is_mounted() { findmnt -n "$1" > /dev/null 2>&1; }
mapper_open() { [ -e "/dev/mapper/$1" ]; }

# wait_for SECONDS COMMAND... : polls COMMAND until it succeeds.
wait_for() {
	# By the clock, not by a count of tries: under emulation one try of a
	# check can take seconds.
	local deadline=$((SECONDS + $1))
	shift
	while [ "$SECONDS" -lt "$deadline" ]; do
		"$@" > /dev/null 2>&1 && return 0
		sleep 0.2
	done
	"$@"
}

# grep_in NEEDLE TEXT : NEEDLE occurs in TEXT (prints TEXT when it does not).
contains() {
	case "$2" in *"$1"*) return 0 ;; esac
	echo "expected to find '$1' in:"
	echo "$2"
	return 1
}

# Watching for secrets while something runs. The needles (one secret a line)
# are read from a file, so that no grep's own argv holds them.
#   secret_watch_start NEEDLES   samples every process's argv and environment (4 times a second)
#   secret_watch_stop            stops; prints what held a needle; fails if any did
secret_watch_start() {
	SECRET_NEEDLES=$1
	SECRET_HITS=$(mktemp)
	(
		while :; do
			grep -laF -f "$SECRET_NEEDLES" /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2> /dev/null |
				while read -r f; do
					echo "$f: $(tr '\0' ' ' < "$f" 2> /dev/null | cut -c1-80)"
				done >> "$SECRET_HITS"
			# Often enough to see every child of a run (rustic, pg_dump,
			# psql live for seconds), seldom enough not to slow them.
			sleep 0.25
		done
	) &
	SECRET_WATCHER=$!
	SECRET_SAMPLES_FROM=$(_now)
}
secret_watch_stop() {
	kill "$SECRET_WATCHER" 2> /dev/null
	wait "$SECRET_WATCHER" 2> /dev/null
	echo "watched argv and environment of every process for $(_took "$SECRET_SAMPLES_FROM") s"
	if [ -s "$SECRET_HITS" ]; then
		echo "a secret was in a process's argv or environment:"
		sort -u "$SECRET_HITS" | head -20
		return 1
	fi
}
# secret_nowhere_at_rest NEEDLES: not in the journal, nor on the root disk
# outside the test's own files in /run.
secret_nowhere_at_rest() {
	if journalctl -b -o cat | grep -qaF -f "$1"; then
		echo "a secret is in the journal"
		return 1
	fi
	local hits
	hits=$(grep -rlaF -f "$1" /etc /var /root /home /tmp /opt 2> /dev/null | grep -v "^$1\$")
	[ -z "$hits" ] || { echo "a secret is on the root disk: $hits"; return 1; }
}
