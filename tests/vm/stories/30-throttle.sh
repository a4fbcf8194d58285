#!/bin/bash
# vm-timeout: 1500
#
# The throttler under real systemd and D-Bus, with a Pi's sysfs tree faked
# (the one part a VM cannot have) and fake-immich for Immich: it lowers the
# clock, sets the CPU quota on the Immich slice (visible in `systemctl
# show`) and pauses heavy queues when the SoC is hot, never the protected
# ones and never a queue the user paused; after kill -9 it restores and
# reconciles; when cool it resumes what it paused; a clean stop restores
# everything.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
appliance_setup
MP=$(cfg drive.mount-point)
KEY=vm-story-api-key-0123456789abcdef
SYS=/run/fake-sys
POLICY=$SYS/devices/system/cpu/cpufreq/policy0
SLICE=$(cfg units.immich-slice)
cat > /run/fake-immich.env <<-EOF
	FAKE_IMMICH_NO_WRITES=1
	FAKE_IMMICH_ARGS=--api-key $KEY --backlog thumbnailGeneration=400 --backlog videoConversion=40 --backlog smartSearch=100
EOF

api() { curl -s -H "x-api-key: $KEY" -H 'content-type: application/json' "$@"; }
fake_state() { curl -s http://127.0.0.1:2283/__fake/state; }
paused() { fake_state | jq -r '.paused[]?' | sort | tr '\n' ' '; }
tstatus() { "$BIN/immich-throttle" status --json; }
quota() { systemctl show -p CPUQuotaPerSecUSec --value "$SLICE"; }
temp() { echo "$1" > "$SYS/class/thermal/thermal_zone0/temp"; }

check "init" appliance_init > /dev/null
check "start" appliance_start
key_onto_the_drive() {
	install -m 0600 /dev/null "$MP/$(cfg layout.throttle-key.path)/api-key" &&
		printf '%s\n' "$KEY" > "$MP/$(cfg layout.throttle-key.path)/api-key" &&
		systemctl restart immich-throttle.service &&
		wait_for 60 sh -c "[ \"\$($BIN/immich-throttle status --json | jq -r .immich)\" = ok ]"
}
check "with the API key on the drive, the throttler talks to Immich" key_onto_the_drive
check "the user pauses smartSearch by hand" api -o /dev/null -X PUT -d '{"isPaused": true}' http://127.0.0.1:2283/api/queues/smartSearch

hot() {
	temp 79500
	wait_for 90 sh -c "[ \"\$(cat $POLICY/scaling_max_freq)\" = 600000 ]" || return 1
	wait_for 90 sh -c "fake_paused=\$(curl -s http://127.0.0.1:2283/__fake/state | jq -r '.paused[]?'); echo \"\$fake_paused\" | grep -qx thumbnailGeneration && echo \"\$fake_paused\" | grep -qx videoConversion" || return 1
	echo "quota: $(quota); paused: $(paused)"
	[ "$(quota)" != infinity ] && ! paused | grep -qw backgroundTask && ! paused | grep -qw backupDatabase &&
		! paused | grep -qw notifications
}
check "hot: lowest clock, a CPU quota on the slice (systemctl show), heavy queues paused, protected ones not" hot
status_says_why() {
	local s
	s=$(tstatus); echo "$s" | jq -c '{mode, reason, quota_percent, paused_queues, paused_by_others}'
	echo "$s" | jq -e '.paused_by_others | index("smartSearch")' > /dev/null &&
		echo "$s" | jq -e '.paused_queues | index("thumbnailGeneration")' > /dev/null &&
		[ -n "$(echo "$s" | jq -r .reason)" ]
}
check "status shows the temperature, the quota, the pauses and why" status_says_why

killed() {
	local pid
	pid=$(systemctl show -p MainPID --value immich-throttle.service)
	systemctl kill -s KILL immich-throttle.service
	wait_for 60 sh -c "p=\$(systemctl show -p MainPID --value immich-throttle.service); [ \"\$p\" != 0 ] && [ \"\$p\" != $pid ] && systemctl is-active -q immich-throttle.service" || return 1
	journalctl -u immich-throttle.service --no-pager -o cat | grep -E "restored the clock limit|undone" | tail -3
	journalctl -u immich-throttle.service --no-pager -o cat | grep -q "restored the clock limit"
}
check "kill -9: ExecStopPost restores, systemd restarts the daemon" killed
reconciled() {
	# Still hot: the new daemon holds the same state, and knows the user's pause is not its own.
	wait_for 90 sh -c "[ \"\$(cat $POLICY/scaling_max_freq)\" = 600000 ]" || return 1
	wait_for 90 sh -c "$BIN/immich-throttle status --json | jq -e '.paused_queues | index(\"thumbnailGeneration\")' > /dev/null" || return 1
	tstatus | jq -e '.paused_by_others | index("smartSearch")' > /dev/null && [ "$(quota)" != infinity ]
}
check "after the restart it reconciles: same limits, the user's pause still not its own" reconciled

cool() {
	temp 45000
	wait_for 240 sh -c "! curl -s http://127.0.0.1:2283/__fake/state | jq -r '.paused[]?' | grep -qx thumbnailGeneration" || return 1
	echo "paused now: $(paused)"
	paused | grep -qw smartSearch
}
check "cool: it resumes what it paused, and the user's pause stays" cool

# Immich hangs, each answer held back 45 s (longer than WatchdogSec=30),
# while the SoC heats up again: the temperature loop must still bring the
# clock down and keep telling systemd it is alive, so it is not restarted.
hang() { curl -s -o /dev/null -w '%{http_code}' -X PUT -d "{\"secs\": $1}" http://127.0.0.1:2283/__fake/hang | grep -qx 200; }
hung_immich() {
	local pid restarts t0 now_pid now_restarts
	pid=$(systemctl show -p MainPID --value immich-throttle.service)
	restarts=$(systemctl show -p NRestarts --value immich-throttle.service)
	# From full speed, so that coming down is the loop's doing now.
	wait_for 120 sh -c "[ \"\$(cat $POLICY/scaling_max_freq)\" = 1500000 ]" || { echo "not back at full speed"; return 1; }
	hang 45 || return 1
	t0=$SECONDS
	temp 79500
	wait_for 90 sh -c "[ \"\$(cat $POLICY/scaling_max_freq)\" = 600000 ]" || { hang 0; echo "the clock did not come down"; return 1; }
	echo "the clock came down $((SECONDS - t0)) s into the hang"
	while [ $((SECONDS - t0)) -lt 40 ]; do sleep 1; done
	now_pid=$(systemctl show -p MainPID --value immich-throttle.service)
	now_restarts=$(systemctl show -p NRestarts --value immich-throttle.service)
	echo "after $((SECONDS - t0)) s: pid $pid -> $now_pid, restarts $restarts -> $now_restarts; $(tstatus | jq -c '{mode, immich}')"
	hang 0 && temp 45000 || return 1
	[ "$now_pid" = "$pid" ] && [ "$now_restarts" = "$restarts" ] && systemctl is-active -q immich-throttle.service &&
		! journalctl -u immich-throttle.service -o cat | grep -qi "watchdog timeout"
}
check "Immich hung for longer than the watchdog while hot: the clock still comes down, no watchdog restart" hung_immich
back_to_normal() {
	wait_for 240 sh -c "! curl -s http://127.0.0.1:2283/__fake/state | jq -r '.paused[]?' | grep -qx thumbnailGeneration" &&
		wait_for 60 sh -c "[ \"\$(cat $POLICY/scaling_max_freq)\" = 1500000 ]"
}
check "once Immich answers and it is cool, the throttler resumes what it paused" back_to_normal

clean_stop() {
	systemctl stop immich-throttle.service || return 1
	echo "clock: $(cat "$POLICY/scaling_max_freq"); quota: $(quota); paused: $(paused)"
	[ "$(cat "$POLICY/scaling_max_freq")" = 1500000 ] && [ "$(quota)" = infinity ] &&
		[ "$(paused)" = "smartSearch " ]
}
check "a clean stop restores the clock and the quota, and leaves only the user's pause" clean_stop
check "stop" appliance_stop
finish
