#!/bin/bash
# vm-timeout: 2400
#
# Benchmark (not a test): `immich-server --start` against the same work done
# by a bare shell script (cryptsetup open, mount, systemctl start, curl until
# Immich answers), alternating, in the same VM. Prints the medians, the ratio
# and our own overhead; the KDF cost is the same for both (the test KDF).
# Usage: cargo xtask bench start [ROUNDS]
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
ROUNDS=${1:-5}
appliance_setup
quiet() { "$@" > /dev/null 2>&1; }
MP=$(cfg drive.mount-point)
MAPPER=$(mapper_name)
UNITS=$(stack_units | tr '\n' ' ')
check "init" appliance_init > /dev/null
printf 'FAKE_IMMICH_NO_WRITES=1\n' > /run/fake-immich.env

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

baseline_start() {
	printf '%s' "$TEST_PASSPHRASE" | cryptsetup open --key-file=- "$VM_DISK" "$MAPPER" &&
		mount -o nodev,nosuid,noatime "/dev/mapper/$MAPPER" "$MP" &&
		# shellcheck disable=SC2086
		systemctl start $UNITS &&
		until curl -sf http://127.0.0.1:2283/api/server/ping > /dev/null; do sleep 0.05; done
}
baseline_stop() {
	# shellcheck disable=SC2086
	systemctl stop $(stack_units | tac | tr '\n' ' ') && umount "$MP" && cryptsetup close "$MAPPER"
}

ours=()
base=()
for i in $(seq 1 "$ROUNDS"); do
	t=$(now); quiet appliance_start --timings || { echo "start failed"; exit 1; }; ours+=("$(since "$t")")
	quiet appliance_stop || exit 1
	t=$(now); baseline_start > /dev/null 2>&1 || { echo "baseline failed"; exit 1; }; base+=("$(since "$t")")
	baseline_stop > /dev/null 2>&1 || exit 1
	echo "round $i: ours ${ours[-1]} s, baseline ${base[-1]} s"
done
# One more start for the step timings.
appliance_start --timings > /run/timings.txt 2>&1
cat /run/timings.txt
appliance_stop > /dev/null

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
mo=$(median "${ours[@]}")
mb=$(median "${base[@]}")
echo "FIGURE start median: immich-server ${mo} s, shell baseline ${mb} s over $ROUNDS rounds each"
echo "FIGURE ratio ours/baseline: $(awk -v a="$mo" -v b="$mb" 'BEGIN { printf "%.3f", a / b }')"
echo "FIGURE overhead: $(awk -v a="$mo" -v b="$mb" 'BEGIN { printf "%.2f", a - b }') s (ours minus baseline, medians)"
grep -E "overhead|KDF|units|ping|total" /run/timings.txt | sed 's/^/FIGURE step /'
check "benchmark ran" true
finish
