#!/bin/bash
# vm-timeout: 900
#
# A passphrase with spaces and non-ASCII characters works from a file, from
# stdin and from the terminal; it never reaches argv or the appliance's logs.
. "$VM_LIB/common.sh"
export TEST_PASSPHRASE='  correct horse – bätterÿ 🐎 staple '
. "$VM_LIB/appliance.sh"
appliance_setup
# Only this script needs it: exported, every child's environment would hold it.
export -n TEST_PASSPHRASE
check "init with it (from a file)" appliance_init > /dev/null

# The passphrase is in no process's argv or environment while start runs.
printf '%s\n' "$TEST_PASSPHRASE" > /run/needles
from_file() {
	secret_watch_start /run/needles
	appliance_start > /dev/null || { secret_watch_stop; return 1; }
	secret_watch_stop && appliance_stop > /dev/null
}
from_stdin() {
	printf '%s\n' "$TEST_PASSPHRASE" | "$BIN/immich-server" --start --passphrase-file - > /dev/null &&
		appliance_stop > /dev/null
}
from_tty() {
	local out
	out=$(printf '%s\n' "$TEST_PASSPHRASE" | script -qec "$BIN/immich-server --start" /dev/null 2>&1) || { echo "$out"; return 1; }
	contains "Passphrase for" "$out" && contains "Immich is running" "$out" && appliance_stop > /dev/null
}
not_in_logs() {
	# The pattern comes from a file, so that grep's own argv does not hold it.
	printf '%s' "bätterÿ" > /run/needle
	[ "$(journalctl -b -o cat -t immich-server | wc -l)" -gt 0 ] &&
		! journalctl -b -o cat -t immich-server | grep -F -f /run/needle &&
		! grep -lsF -f /run/needle /proc/[0-9]*/cmdline
}
check "from a file, while nothing running holds it in argv or environment" from_file
check "from stdin" from_stdin
check "from the terminal" from_tty
check "it appears in no log line of immich-server and no process's argv" not_in_logs
check "nor in the journal or on the root disk" secret_nowhere_at_rest /run/needles
finish
