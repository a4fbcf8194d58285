#!/bin/bash
# vm-timeout: 900
#
# Benchmark (not a test): the drive ciphers on this guest's CPU, as
# `immich-server ciphers` measures them (libcryptsetup's crypt_benchmark on
# a 1 MiB buffer) beside `cryptsetup benchmark` in the same run (the
# baseline), and the cipher `init` would choose here. `cargo xtask bench
# cipher` runs it with the CPU's AES instructions shown and hidden.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
appliance_setup

measure() {
	local j aes c bits ours base
	j=$("$BIN/immich-server" ciphers --json) || return 1
	aes=$(grep -qw aes /proc/cpuinfo && echo shown || echo hidden)
	echo "FIGURE the CPU's AES instructions: $aes"
	for c in aes-xts-plain64:512 xchacha12,aes-adiantum-plain64:256 xchacha20,aes-adiantum-plain64:256; do
		bits=${c##*:}
		c=${c%:*}
		ours=$(echo "$j" | jq -r --arg c "$c" '.measured[] | select(.cipher == $c) | "\(.encrypt_mib_s) \(.decrypt_mib_s)"')
		base=$(cryptsetup benchmark -c "$c" -s "$bits" 2> /dev/null | tail -1 | awk '{ print $(NF-3), $(NF-1) }')
		[ -n "$ours" ] && [ "$ours" != "null null" ] && [ -n "$base" ] || { echo "no figures for $c: ours '$ours', cryptsetup '$base'"; return 1; }
		awk -v c="$c" -v o="$ours" -v b="$base" 'BEGIN {
			split(o, x, " "); split(b, y, " ");
			printf "FIGURE %-32s ours %8.1f / %8.1f MiB/s (enc/dec), cryptsetup %8.1f / %8.1f MiB/s, ratio %.2f / %.2f\n",
				c, x[1], x[2], y[1], y[2], x[1] / y[1], x[2] / y[2] }'
	done
	echo "FIGURE init chooses: $(echo "$j" | jq -r '"\(.cipher.cipher)-\(.cipher.mode) (\(.reason))"')"
}
check "the ciphers, measured twice in the same run" measure
finish
