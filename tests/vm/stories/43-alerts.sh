#!/bin/bash
# vm-disk-size: 1G
# vm-timeout: 1200
#
# Alerts reach the owner, once, and say when it is fixed. With an ntfy topic
# (a stand-in that follows ntfy's publish API) and e-mail through a real
# exim4 on this machine:
# - locked after boot: one push, with no secret in it, and no e-mail (its
#   password lives on the drive); a second check sends nothing;
# - the unlock: one "resolved" push;
# - a backup that fails because the repository server is down: exactly one
#   e-mail (and one push); a restart of the timer in between sends nothing;
#   when the server is back and a backup succeeds, one "resolved" e-mail.
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
. "$VM_LIB/backup.sh"
appliance_setup
quiet_uploads
NTFY_LOG=/run/ntfy.jsonl
MAILBOX=/var/mail/owner

receivers_up() {
	getent passwd owner > /dev/null || useradd -m owner
	systemctl start exim4.service &&
		systemd-run --unit=fake-ntfy --quiet "$BIN/fake-immich" --listen 127.0.0.1:8090 --ntfy-log "$NTFY_LOG" &&
		wait_for 30 bash -c 'exec 3<> /dev/tcp/127.0.0.1/25' &&
		wait_for 30 curl -s -o /dev/null http://127.0.0.1:8090/
}
check "a real SMTP server (exim4) and the ntfy stand-in" receivers_up

# As services.immich-appliance.alerts would write them, with e-mail through
# the relay on this machine.
cat >> /etc/immich-appliance/config.toml <<-EOF

	[alerts]
	name = "vmtest"
	page-url = "http://vmtest.local/"
	ntfy-url = "http://127.0.0.1:8090/immich-vmtest-7f3k9q"
	smtp-host = "127.0.0.1"
	smtp-port = 25
	smtp-security = "plain"
	email-from = "Immich appliance <immich@vmtest>"
	email-to = ["owner@localhost"]
	EOF
check "the alert settings load" "$BIN/immich-server" show-config --get alerts.ntfy-url
status_names_the_channels() {
	"$BIN/immich-server" --status | grep -x 'Alerts: *ntfy, email' &&
		[ "$("$BIN/immich-server" status --json | jq -c .alerts)" = '["ntfy","email"]' ]
}
check "status names the alert channels" status_names_the_channels
# A virtual disk, like many USB bridges, passes no SMART data: status says
# so, and no SMART alert is raised or resolved on its account.
smart_not_available_is_said() {
	local st; st=$("$BIN/immich-server" status --json)
	echo "$st" | jq -c .drive.smart
	[ "$(echo "$st" | jq -r .drive.smart.verdict)" = unavailable ] &&
		"$BIN/immich-server" --status | grep -q 'SMART not available'
}

pushes() { if [ -f "$NTFY_LOG" ]; then wc -l < "$NTFY_LOG"; else echo 0; fi; }
mails() { if [ -f "$MAILBOX" ]; then grep -c '^From ' "$MAILBOX"; else echo 0; fi; }
push() { sed -n "${1}p" "$NTFY_LOG"; }
# The check the timer runs, through its unit.
alert_check() {
	systemctl start immich-alerts.service
	local rc=$?
	journalctl -u immich-alerts.service -o cat -n 6 --no-pager
	# Let exim deliver what it accepted.
	sleep 2
	return $rc
}

check "init" appliance_init > /dev/null
check "SMART not available on this disk: status says so" smart_not_available_is_said

# As at boot: the timer's first run (OnBootSec=1min has passed) sends it,
# nobody starts the check by hand.
locked_is_pushed_once() {
	systemctl start immich-alerts.timer || return 1
	wait_for 120 test -s "$NTFY_LOG" || { echo "no push within 120 s of the timer"; return 1; }
	sleep 2
	journalctl -u immich-alerts.service -o cat -n 6 --no-pager
	local p; p=$(push 1); echo "$p"
	[ "$(pushes)" = 1 ] && [ "$(mails)" = 0 ] &&
		[ "$(echo "$p" | jq -r .title)" = "vmtest: the drive is locked and Immich is stopped" ] &&
		[ "$(echo "$p" | jq -r .priority)" = 4 ] &&
		[ "$(echo "$p" | jq -c .tags)" = '["warning","locked"]' ] &&
		[ "$(echo "$p" | jq -r .click)" = "http://vmtest.local/" ] &&
		echo "$p" | jq -r .message | grep -q 'sudo immich-server --start'
}
check "locked after boot: the timer's first check pushes once (title, priority, tags, the page), no e-mail" locked_is_pushed_once
again_nothing() { alert_check && [ "$(pushes)" = 1 ] && [ "$(mails)" = 0 ]; }
check "a second check sends nothing" again_nothing

check "start" appliance_start > /dev/null
unlock_is_resolved() {
	alert_check || return 1
	local p; p=$(push 2); echo "$p"
	[ "$(pushes)" = 2 ] && [ "$(mails)" = 0 ] &&
		[ "$(echo "$p" | jq -r .title)" = "vmtest: resolved: the drive is unlocked and Immich runs again" ] &&
		[ "$(echo "$p" | jq -r .priority)" = 3 ]
}
check "the unlock: one resolved push" unlock_is_resolved

check "REST server" rest_server_start
check "a library" gen_library 50 20 1 1
check "setup" backup_setup > /dev/null
check "a backup" "$BIN/immich-server" backup run > /dev/null

failed_backup_mails_once() {
	local rc
	systemctl stop rest-repo.service
	"$BIN/immich-server" backup run > /dev/null 2>&1; rc=$?
	[ "$rc" = 11 ] || { echo "backup run: exit $rc, expected 11"; return 1; }
	alert_check || return 1
	cat "$MAILBOX"
	[ "$(mails)" = 1 ] && [ "$(pushes)" = 3 ] &&
		grep -q '^Subject: vmtest: the last backup failed' "$MAILBOX" &&
		grep -q '^To: owner@localhost' "$MAILBOX" &&
		grep -q 'backup status' "$MAILBOX" &&
		[ "$(push 3 | jq -r .title)" = "vmtest: the last backup failed" ]
}
check "the repository server is down: one e-mail and one push" failed_backup_mails_once

timer_restart_sends_nothing() {
	systemctl restart immich-alerts.timer || return 1
	alert_check || return 1
	[ "$(mails)" = 1 ] && [ "$(pushes)" = 3 ]
}
check "a restart of the timer, then a check: nothing more" timer_restart_sends_nothing

back_is_resolved() {
	systemctl reset-failed rest-repo.service 2> /dev/null
	rest_server_start || return 1
	"$BIN/immich-server" backup run > /dev/null || return 1
	alert_check || return 1
	cat "$MAILBOX"
	[ "$(mails)" = 2 ] && [ "$(pushes)" = 4 ] &&
		grep -q '^Subject: vmtest: resolved: backups work again' "$MAILBOX"
}
check "the server is back and a backup succeeds: one resolved e-mail and push" back_is_resolved

no_secret_in_alerts() {
	local needles; needles=$(mktemp)
	# The drive passphrase, the repository password.
	{ cat "$PASSFILE"; echo; cat "$REPO_PASS"; } | grep -v '^$' > "$needles"
	echo "$(wc -l < "$needles") needles"
	! grep -aF -f "$needles" "$NTFY_LOG" "$MAILBOX" /var/lib/immich-appliance/alerts.json
}
check "no secret in any push, e-mail or the alert state" no_secret_in_alerts

state_holds_names_and_times() {
	cat /var/lib/immich-appliance/alerts.json
	jq -e '.conditions | keys == ["backup-failed", "locked"]' /var/lib/immich-appliance/alerts.json
}
check "the state file on the SD card holds condition names and times" state_holds_names_and_times

finish
