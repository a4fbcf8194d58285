#!/bin/bash
# vm-disks: 2
# vm-disk-size: 8G
# vm-mem: 3072
# vm-timeout: 7200
#
# Benchmark (not a test): the wall time of `immich-server backup run`
# (dump, backup, retention, and on a first run the check) against bare
# `rustic backup` of the same folders into a fresh repository of its own,
# first runs and daily (incremental) runs, with the page cache dropped
# before each; then the restore throughput of rustic and of our drill.
# Repositories live on a second disk. Usage:
#   cargo xtask bench backup [PHOTOS PHOTO_KIB VIDEOS VIDEO_MIB]
# (default: about 10,000 files and 2 GB).
. "$VM_LIB/common.sh"
. "$VM_LIB/appliance.sh"
. "$VM_LIB/backup.sh"
PHOTOS=${1:-4950}
PHOTO_KIB=${2:-380}
VIDEOS=${3:-40}
VIDEO_MIB=${4:-4}
appliance_setup
quiet_uploads
MP=$(cfg drive.mount-point)
check "init" appliance_init > /dev/null
check "start" appliance_start > /dev/null
check "library" gen_library "$PHOTOS" "$PHOTO_KIB" "$VIDEOS" "$VIDEO_MIB"
check "database" fill_database
mkfs.ext4 -q -F "$VM_DISK2" && mkdir -p /backup && mount "$VM_DISK2" /backup || exit 1
repo_password
FILES=$(find "$MP" -type f | wc -l)
BYTES=$(du -sb "$MP/$(cfg layout.media.path)" | cut -f1)
echo "FIGURE tree: $FILES files, $((BYTES / 1024 / 1024)) MiB of media"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }

check "setup (our repository on /backup/ours)" backup_setup /backup/ours
cat > /run/bare.toml <<-EOF
	[repository]
	repository = "/backup/bare"
	password-file = "$REPO_PASS"
EOF
bare() { "$BIN/rustic" -P /run/bare --no-progress --cache-dir /backup/bare-cache "$@"; }
check "bare repository" bare init
SOURCES=("$MP/$(cfg layout.dumps.path)" "$MP/$(cfg layout.media.path)")

run_ours() {
	cold
	local t
	t=$(now)
	"$BIN/immich-server" backup run --json > /run/ours.json || return 1
	echo "$(since "$t") $(jq -r '[.dump_secs, .backup_secs, .forget_secs, .check_secs] | @tsv' /run/ours.json)"
}
run_bare() {
	cold
	local t
	t=$(now)
	bare backup "${SOURCES[@]}" > /dev/null 2>&1 || return 1
	since "$t"
}

read -r o1 d1 b1 f1 c1 <<< "$(run_ours)"
w1=$(run_bare)
echo "FIGURE first backup: ours ${o1} s (dump ${d1}, rustic backup ${b1}, retention ${f1}, check ${c1}); bare rustic backup ${w1} s"
echo "FIGURE first backup ratio ours/bare: $(awk -v a="$o1" -v b="$w1" 'BEGIN{printf "%.3f", a/b}') whole run; $(awk -v a="$o1" -v c="$c1" -v b="$w1" 'BEGIN{printf "%.3f", (a-c)/b}') without the check (weekly by default)"

# A day later: a few new photos, the same database.
"$BIN/fake-immich" --generate-library "$MP/$(cfg layout.media.path)/library/day2" --photos 50 \
	--photo-kib "$PHOTO_KIB" --videos 0 --seed 7 > /dev/null
read -r o2 d2 b2 f2 c2 <<< "$(run_ours)"
w2=$(run_bare)
echo "FIGURE daily backup: ours ${o2} s (dump ${d2}, rustic backup ${b2}, retention ${f2}, check ${c2}); bare rustic backup ${w2} s"
echo "FIGURE daily backup ratio ours/bare: $(awk -v a="$o2" -v b="$w2" 'BEGIN{printf "%.3f", a/b}') (target <= 1.05)"

cold
t=$(now)
bare restore latest:"$MP" /backup/restore > /dev/null 2>&1 || { echo "restore failed"; exit 1; }
rs=$(since "$t")
rb=$(du -sb /backup/restore | cut -f1)
echo "FIGURE rustic restore: $((rb / 1024 / 1024)) MiB in ${rs} s = $(awk -v b="$rb" -v s="$rs" 'BEGIN{printf "%.1f", b/1048576/s}') MiB/s"
rm -rf /backup/restore

cold
t=$(now)
check "drill" "$BIN/immich-server" backup drill
ds=$(since "$t")
echo "FIGURE drill (restore into scratch, count, load the dump into a scratch database): ${ds} s = $(awk -v b="$BYTES" -v s="$ds" 'BEGIN{printf "%.1f", b/1048576/s}') MiB/s of media"
check "stop" appliance_stop > /dev/null
finish
