# Helpers for the backup stories: a photo-like library, a database with
# rows, a REST repository served by rclone on loopback, and comparisons.
# Source after appliance.sh.
# shellcheck shell=bash

REPO_PASS=/run/repo.pass
REST_DIR=/var/lib/rest-repo
REST_URL=rest:http://127.0.0.1:8000/

# No fake uploads while files are compared byte for byte.
quiet_uploads() {
	echo "FAKE_IMMICH_NO_WRITES=1" > /run/fake-immich.env
}

# A REST server for rustic: `rclone serve restic`, as a transient unit.
rest_server_start() {
	mkdir -p "$REST_DIR"
	systemd-run --unit=rest-repo --quiet \
		rclone serve restic --addr 127.0.0.1:8000 "$REST_DIR" &&
		wait_for 30 curl -s -o /dev/null http://127.0.0.1:8000/
}

repo_password() {
	printf '%s\n' "${1:-a long repository password for tests}" > "$REPO_PASS"
	chmod 600 "$REPO_PASS"
}

# backup_setup [REPOSITORY [SETUP_ARGS...]]: a new repository, on the REST
# server unless another is named, with the test password.
backup_setup() {
	local repo=${1:-$REST_URL}
	shift || true
	repo_password
	"$BIN/immich-server" backup setup --repository "$repo" --password-file "$REPO_PASS" "$@"
}

# gen_library PHOTOS [PHOTO_KIB VIDEOS VIDEO_MIB]: photo-like files in the
# media folder, owned by immich as Immich would write them.
gen_library() {
	local mp rel media
	mp=$(cfg drive.mount-point) && rel=$(cfg layout.media.path) || return 1
	media="$mp/$rel"
	# Only ever inside the mounted drive.
	[ -n "$mp" ] && [ -n "$rel" ] && findmnt -n "$mp" > /dev/null && [ -d "$media" ] || return 1
	"$BIN/fake-immich" --generate-library "$media" --photos "$1" \
		--photo-kib "${2:-100}" --videos "${3:-4}" --video-mib "${4:-8}" --seed 42 &&
		chown -R immich:immich "$media"
}

psql_immich() { runuser -u postgres -- "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d immich "$@"; }

# A database shaped a little like Immich's, with rows in several tables.
fill_database() {
	psql_immich <<-'SQL'
		CREATE TABLE IF NOT EXISTS "user" (id uuid PRIMARY KEY, email text NOT NULL, name text);
		CREATE TABLE IF NOT EXISTS asset (id uuid PRIMARY KEY, owner uuid REFERENCES "user"(id),
			original_path text NOT NULL, taken timestamptz, checksum bytea);
		CREATE TABLE IF NOT EXISTS album (id serial PRIMARY KEY, name text);
		CREATE TABLE IF NOT EXISTS album_asset (album int REFERENCES album(id), asset uuid REFERENCES asset(id));
		CREATE INDEX IF NOT EXISTS asset_taken ON asset (taken);
		INSERT INTO "user" VALUES ('0b1c2d3e-0000-4000-8000-00000000a11c', 'owner@example.org', 'Owner')
			ON CONFLICT DO NOTHING;
		INSERT INTO asset SELECT md5(g::text)::uuid, '0b1c2d3e-0000-4000-8000-00000000a11c',
			'upload/' || g || '.jpg', now() - g * interval '1 hour', sha256(g::text::bytea)
			FROM generate_series(1, 3000) g ON CONFLICT DO NOTHING;
		INSERT INTO album (name) SELECT 'Album ' || g FROM generate_series(1, 20) g;
		INSERT INTO album_asset SELECT 1 + (g % 20), md5(g::text)::uuid FROM generate_series(1, 3000) g;
	SQL
}

# Row counts of every table, one "table count" per line.
db_counts() {
	local tables
	tables=$(psql_immich -c "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
		WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1") || return 1
	# An empty answer would make two comparisons agree about nothing.
	[ -n "$tables" ] || { echo "no tables in the immich database" >&2; return 1; }
	for t in $tables; do echo "$t $(psql_immich -c "SELECT count(*) FROM $t")" || return 1; done
}

# sha256 of every regular file under the media and dumps folders, with
# paths relative to the mount point.
tree_sums() {
	local mp rel
	mp=$(cfg drive.mount-point) && rel=$(cfg layout.media.path) || return 1
	[ -n "$mp" ] && [ -d "$mp/$rel" ] || return 1
	(cd "$mp" && find "$rel" -type f -print0 | sort -z | xargs -0 -r sha256sum)
}

backup_json() { "$BIN/immich-server" backup status --json; }

# The repository, read with rustic itself and the profile on the drive.
rustic_drive() {
	local mp
	mp=$(cfg drive.mount-point)
	"$BIN/rustic" -P "$mp/$(cfg backup.rustic-profile)" --no-progress --cache-dir /run/rustic-cache "$@"
}

# FIGURE lines are collected by the harness into the story summary.
figure() { echo "FIGURE $*"; }
