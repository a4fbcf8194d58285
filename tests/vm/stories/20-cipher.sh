#!/bin/bash
# vm-cpu: max,-aes
# vm-timeout: 900
#
# The drive's cipher on a CPU without AES instructions, as on a Pi 4: init
# measures the ciphers with libcryptsetup on this CPU and applies the rule
# (Adiantum only when it measures faster), says so, and formats with it; a
# drive formatted with Adiantum unlocks, mounts, runs and locks like any
# other; status names the cipher; a cipher set by hand is taken as it is.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
appliance_setup

no_aes() { ! grep -qw aes /proc/cpuinfo; }
check "the guest's CPU has no AES instructions (qemu -cpu max,-aes)" no_aes

header_cipher() { cryptsetup luksDump "$VM_DISK" | awk '$1 == "cipher:" { print $2; exit }'; }

ciphers_measured() {
	local j; j=$("$BIN/immich-server" ciphers --json) || return 1
	echo "$j" | jq -c '.measured[]'
	echo "$j" | jq -e '.cpu_has_aes == false and (.measured | length == 3) and all(.measured[]; .encrypt_mib_s > 0 and .decrypt_mib_s > 0)'
}
check "immich-server ciphers measures all three here" ciphers_measured

# What the rule says for the figures init itself printed.
init_applies_the_rule() {
	local out aes adi want got
	out=$(appliance_init 2>&1) || { echo "$out"; return 1; }
	echo "$out"
	aes=$(echo "$out" | awk '$1 == "aes-xts-plain64" { print ($2 < $4 ? $2 : $4) }')
	adi=$(echo "$out" | awk '$1 == "xchacha12,aes-adiantum-plain64" { print ($2 < $4 ? $2 : $4) }')
	[ -n "$aes" ] && [ -n "$adi" ] || { echo "init printed no figures"; return 1; }
	want=$(awk -v a="$aes" -v d="$adi" 'BEGIN { print (d > a ? "xchacha12,aes-adiantum-plain64" : "aes-xts-plain64") }')
	got=$(header_cipher)
	echo "slower direction: AES-XTS $aes MiB/s, Adiantum $adi MiB/s; rule: $want; header: $got"
	[ "$got" = "$want" ] && contains "chosen: $want" "$out"
}
check "init measures, applies the rule and formats with the chosen cipher" init_applies_the_rule

adiantum_by_hand() {
	local out
	out=$("$BIN/immich-server" init --immich-drive "$VM_DISK" --yes --force --insecure-fast-kdf-for-tests \
		--passphrase-file "$PASSFILE" --cipher xchacha12,aes-adiantum-plain64 2>&1) || { echo "$out"; return 1; }
	contains "set by drive.cipher or --cipher" "$out" && ! contains "MiB/s" "$out" &&
		[ "$(header_cipher)" = "xchacha12,aes-adiantum-plain64" ]
}
check "--cipher takes Adiantum as it is, without measuring" adiantum_by_hand

check "start on the Adiantum drive" appliance_start > /dev/null
runs_on_adiantum() {
	local mp st; mp=$(cfg drive.mount-point)
	dd if=/dev/urandom of="$mp/probe" bs=1M count=8 2> /dev/null && sync &&
		st=$("$BIN/immich-server" status --json) &&
		[ "$(echo "$st" | jq -r .state)" = running ] &&
		[ "$(echo "$st" | jq -r .drive.cipher)" = "xchacha12,aes-adiantum-plain64" ] &&
		"$BIN/immich-server" --status | grep -q 'cipher xchacha12,aes-adiantum-plain64'
}
check "Immich runs, the drive takes writes, status names the cipher" runs_on_adiantum
check "stop locks it" appliance_stop > /dev/null
check "and it unlocks again" appliance_start > /dev/null
check "stop" appliance_stop > /dev/null

bad_cipher_is_refused_first() {
	local out rc
	out=$("$BIN/immich-server" init --immich-drive "$VM_DISK" --yes --force --cipher aes-cbc-essiv:sha256 2>&1); rc=$?
	echo "$out"
	[ "$rc" = 2 ] && contains "unknown cipher" "$out" && [ "$(header_cipher)" = "xchacha12,aes-adiantum-plain64" ]
}
check "an unknown --cipher is refused before anything is touched" bad_cipher_is_refused_first

finish
