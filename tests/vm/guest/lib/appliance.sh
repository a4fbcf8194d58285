# Makes the Debian guest look like the NixOS appliance. Source after
# common.sh:  . "$VM_LIB/appliance.sh"; appliance_setup
# shellcheck shell=bash
#
# Unit names, the mount point and the layout come from the shared config
# (modules/defaults.toml through `immich-server show-config`), as on NixOS.
# The unit bodies mirror what modules/ generates on top of nixpkgs' units:
# every unit of the stack BindsTo= and is After= the drive's
# mount unit and RequiresMountsFor= its data, and nothing is enabled at boot.
# Immich itself is not in Debian: fake-immich stands in for the server and
# the machine-learning service.

PG_BIN=/usr/lib/postgresql/15/bin
TEST_PASSPHRASE=${TEST_PASSPHRASE:-correct horse battery staple}
PASSFILE=/run/appliance-test.pass

# The config a NixOS module would write, with Debian's paths.
appliance_config() {
	mkdir -p /etc/immich-appliance
	cat > /etc/immich-appliance/config.toml <<-EOF
		# Written by the VM story, mirroring the NixOS module's config.toml.
		[layout.postgres]
		path = "postgres/15"

		[immich]
		ping-timeout-secs = 60
		# No Tailscale in the test VM (as with remoteAccess.tailscale.enable = false).
		tailscale = false

		[throttle]
		sysfs-root = "/run/fake-sys"
		poll-secs = 0.5
		queue-loop-secs = 2.0
		config-write-interval-secs = 5

		[tools]
		pg-dump = "$PG_BIN/pg_dump"
		pg-restore = "$PG_BIN/pg_restore"
		psql = "$PG_BIN/psql"
		rustic = "$BIN/rustic"
		smartctl = "/usr/sbin/smartctl"
	EOF
	# Everything below reads names from this config: it must load.
	"$BIN/immich-server" show-config > /dev/null || fatal "the test config does not load"
}

appliance_users() {
	getent group immich > /dev/null || groupadd --system immich
	getent passwd immich > /dev/null ||
		useradd --system --gid immich --home-dir /var/empty --shell /usr/sbin/nologin immich
}

# Writes a unit; $1 = name, stdin = body.
unit() { cat > "/etc/systemd/system/$1"; }

appliance_units() {
	MOUNT=$(cfg drive.mount-point)
	MOUNT_UNIT=$(systemd-escape --path --suffix=mount "$MOUNT")
	PGDATA="$MOUNT/$(cfg layout.postgres.path)"
	MEDIA="$MOUNT/$(cfg layout.media.path)"
	local bound="BindsTo=$MOUNT_UNIT
After=$MOUNT_UNIT"

	unit postgresql.service <<-EOF
		[Unit]
		Description=PostgreSQL Server
		After=network.target
		$bound
		RequiresMountsFor=$PGDATA
		PartOf=postgresql.target
		Wants=postgresql.target
		[Service]
		Type=notify
		User=postgres
		Group=postgres
		Environment=PGDATA=$PGDATA
		ExecStartPre=/bin/sh -c 'test -e $PGDATA/PG_VERSION || $PG_BIN/initdb -U postgres --auth-local=peer --auth-host=scram-sha-256 $PGDATA'
		ExecStart=$PG_BIN/postgres -D $PGDATA -c unix_socket_directories=/run/postgresql -c listen_addresses=
		RuntimeDirectory=postgresql
		KillMode=mixed
		KillSignal=SIGINT
		TimeoutSec=120
	EOF
	unit postgresql-setup.service <<-EOF
		[Unit]
		Description=PostgreSQL Setup Scripts
		After=postgresql.service
		Requires=postgresql.service
		$bound
		[Service]
		Type=oneshot
		RemainAfterExit=yes
		User=postgres
		ExecStart=/bin/sh -c 'until $PG_BIN/psql -d postgres -c "select 1" > /dev/null 2>&1; do systemctl is-active -q postgresql.service || exit 1; sleep 0.1; done; $PG_BIN/psql -tAc "select 1 from pg_roles where rolname = '"'"'immich'"'"'" | grep -q 1 || $PG_BIN/psql -tAc "create user immich"; $PG_BIN/psql -tAc "select 1 from pg_database where datname = '"'"'immich'"'"'" | grep -q 1 || $PG_BIN/psql -tAc "create database immich owner immich"'
	EOF
	unit postgresql.target <<-EOF
		[Unit]
		Description=PostgreSQL
		Requires=postgresql.service postgresql-setup.service
	EOF
	# Redis keeps nothing on disk, but it holds Immich's job queue: it runs
	# only with the drive, like the rest of the stack.
	unit redis-immich.service <<-EOF
		[Unit]
		Description=Redis Server - immich
		After=network.target
		$bound
		[Service]
		Type=notify
		User=redis
		Group=redis
		ExecStart=/usr/bin/redis-server --port 0 --unixsocket /run/redis-immich/redis.sock --unixsocketperm 660 --save "" --appendonly no --daemonize no --supervised systemd
		RuntimeDirectory=redis-immich
	EOF
	unit system-immich.slice <<-EOF
		[Unit]
		Description=Immich slice
	EOF
	unit immich-server.service <<-EOF
		[Unit]
		Description=Immich backend server (fake-immich stands in)
		Requires=postgresql.target
		After=network.target postgresql.target
		$bound
		RequiresMountsFor=$MEDIA
		[Service]
		Type=simple
		User=immich
		Group=immich
		Slice=system-immich.slice
		ExecStart=$BIN/fake-immich --listen 127.0.0.1:2283 --media-location $MEDIA --write-to $MEDIA --write-every 0.5 \$FAKE_IMMICH_ARGS
		EnvironmentFile=-/run/fake-immich.env
		Restart=on-failure
		RestartSec=3
		UMask=0077
	EOF
	unit immich-machine-learning.service <<-EOF
		[Unit]
		Description=immich machine learning (fake-immich stands in)
		Requires=postgresql.target
		After=network.target postgresql.target
		$bound
		[Service]
		Type=simple
		User=immich
		Group=immich
		Slice=system-immich.slice
		ExecStart=$BIN/fake-immich --ml --listen 127.0.0.1:3003
		Restart=on-failure
	EOF
	appliance_throttle_unit
	unit immich-backup.service <<-EOF
		[Unit]
		Description=Immich appliance backup
		After=$MOUNT_UNIT
		[Service]
		Type=oneshot
		ExecStart=$BIN/immich-server backup run
		Nice=19
		IOSchedulingClass=idle
	EOF
	# As modules/alerts.nix declares them: not bound to the drive.
	unit immich-alerts.service <<-EOF
		[Unit]
		Description=Immich appliance alerts check
		Wants=network-online.target
		After=network-online.target
		[Service]
		Type=oneshot
		ExecStart=$BIN/immich-server alerts check
		StateDirectory=immich-appliance
		TimeoutStartSec=5min
		Nice=10
	EOF
	unit immich-alerts.timer <<-EOF
		[Unit]
		Description=Immich appliance alerts check, every 5min
		[Timer]
		OnBootSec=1min
		OnUnitActiveSec=5min
		Unit=immich-alerts.service
	EOF
	unit immich-backup.timer <<-EOF
		[Unit]
		Description=Daily Immich appliance backup
		[Timer]
		OnCalendar=*-*-* 03:30:00
		Persistent=true
		RandomizedDelaySec=20min
		Unit=immich-backup.service
	EOF
	unit immich-backup-after-unlock.timer <<-EOF
		[Unit]
		Description=Back up shortly after the drive is unlocked
		$bound
		[Timer]
		OnActiveSec=1h
		Unit=immich-backup.service
		RemainAfterElapse=no
	EOF
	systemctl daemon-reload
}

# The throttler's unit, as modules/throttle.nix declares it, pointed at a
# fake sysfs tree (a Pi's thermal zone and cpufreq policy).
appliance_throttle_unit() {
	mkdir -p /run/fake-sys
	"$BIN/immich-throttle" fake-sysfs /run/fake-sys --temp-mc 55000
	unit immich-throttle.service <<-EOF
		[Unit]
		Description=Immich thermal-aware job throttler
		After=immich-server.service
		$bound
		[Service]
		Type=notify
		NotifyAccess=main
		WatchdogSec=30
		ExecStart=$BIN/immich-throttle run
		ExecStopPost=$BIN/immich-throttle restore
		LoadCredential=$(cfg throttle.api-key-credential):$MOUNT/$(cfg layout.throttle-key.path)
		StateDirectory=immich-throttle
		RuntimeDirectory=immich-throttle
		RuntimeDirectoryPreserve=yes
		Restart=on-failure
		RestartSec=2
	EOF
}

appliance_setup() {
	appliance_users
	appliance_config
	appliance_units
	printf '%s\n' "$TEST_PASSPHRASE" > "$PASSFILE"
	chmod 600 "$PASSFILE"
}

# init the drive non-interactively, with the cheap KDF of the test VM.
appliance_init() {
	local dev=${1:-$VM_DISK}
	"$BIN/immich-server" init --immich-drive "$dev" --yes --force \
		--insecure-fast-kdf-for-tests --passphrase-file "$PASSFILE"
}

appliance_start() { "$BIN/immich-server" --start --passphrase-file "$PASSFILE" "$@"; }
appliance_stop() { "$BIN/immich-server" --stop "$@"; }

stack_units() { cfg units.stack; }

all_stack_active() {
	local u
	for u in $(stack_units); do unit_active "$u" || { echo "$u is not active"; return 1; }; done
}

no_stack_unit_active() {
	local u
	for u in $(stack_units); do
		if unit_active "$u"; then
			echo "$u is active"
			return 1
		fi
	done
}

mapper_name() { cfg drive.mapper-name; }

# The mount point on the root disk: empty and immutable when unmounted.
mount_point_sealed() {
	local mp
	mp=$(cfg drive.mount-point)
	! is_mounted "$mp" && [ -d "$mp" ] && [ -z "$(ls -A "$mp")" ] &&
		lsattr -d "$mp" | cut -d' ' -f1 | grep -q i
}
