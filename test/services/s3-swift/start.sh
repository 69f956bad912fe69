#!/usr/bin/env bash
# The S3 server of the test suites (test/support/s3.ts): OpenStack Swift with its s3api middleware
# on loopback, from Debian bookworm's packages (swift 2.30.1), the S3 gateway production Swift
# clusters run. It checks SigV4 signatures and supports multipart uploads, range GETs and
# ListObjectsV2 with path-style addressing. tempauth, 1 replica, a plain directory (needs user
# xattrs, as ext4 and tmpfs have). The project's own script; nothing outside the repository is read.
#
#   S3 credentials: accessKeyId "test:tester", secretAccessKey "testing", region "us-east-1"
#   Endpoint: http://127.0.0.1:$PORT (forcePathStyle: true), PORT as in BASE_DIR/ports
#   With @aws-sdk/client-s3, checksums "WHEN_REQUIRED": Swift answers the SDK's default aws-chunked
#   uploads with 501 (the store's `checksums: 'when_required'` option).
#
# Usage: start.sh [BASE_DIR]   (default $TMPDIR/s3-swift); idempotent: returns at once when the
#        daemons recorded in BASE_DIR run. stop.sh [BASE_DIR] stops exactly those.
# Ports: picked free on the first start in a BASE_DIR and kept in BASE_DIR/ports (shell variables),
#        so a restart comes back on the same ones; SWIFT_PORT, MEMCACHED_PORT, ACCOUNT_PORT,
#        CONTAINER_PORT, OBJECT_PORT choose them instead. Fixed well-known ports (9000, 11211,
#        6200-6202) met other servers on shared machines, and a container shares the host's ports.
# The packages come from test/services/setup.sh; missing ones are an error, not a reason to skip.
set -euo pipefail

BASE=${1:-${TMPDIR:-/tmp}/s3-swift}
# Suites call this side by side (vitest runs files in parallel): one start at a time per BASE, so
# that a second finds the daemons of the first instead of starting its own beside them. The
# daemons must not inherit the lock (fd 9), or it would be held for as long as they run.
mkdir -p "$BASE"
exec 9>"$BASE/start.lock"
flock 9
PROXY_WORKERS=${SWIFT_PROXY_WORKERS:-2}
PY=/usr/bin/python3            # Debian's python3 (a pyenv python on PATH would not find the swift module)

for pkg in swift swift-proxy swift-object swift-container swift-account python3-swift memcached curl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
    { echo "s3-swift: Debian package $pkg is not installed; run test/services/setup.sh (as root)" >&2; exit 1; }
done
# swift.conf is always read from /etc/swift/swift.conf; the package ships one (hash prefix/suffix "changeme", policy 0).
[ -f /etc/swift/swift.conf ] || { echo "s3-swift: missing /etc/swift/swift.conf (package swift)" >&2; exit 1; }

CONF=$BASE/etc; DATA=$BASE/srv; LOG=$BASE/log; PIDS=$BASE/pids
mkdir -p "$CONF" "$DATA/d1" "$LOG" "$PIDS" "$BASE/cache"

# 2) ports, then the rings that name them: 1 replica, 1 device each (part_power 10)
if [ ! -f "$BASE/ports" ]; then
  rm -f "$CONF"/*.ring.gz "$CONF"/*.builder
  # The kernel's choice of five free ports, held open together so that they differ.
  read -r p1 p2 p3 p4 p5 < <($PY -c '
import socket
s = [socket.socket() for _ in range(5)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
  [ -n "${p5:-}" ] || { echo "s3-swift: could not pick free ports" >&2; exit 1; }
  printf 'PORT=%s\nMEMCACHED_PORT=%s\nACCOUNT_PORT=%s\nCONTAINER_PORT=%s\nOBJECT_PORT=%s\n' \
    "${SWIFT_PORT:-$p1}" "${MEMCACHED_PORT:-$p2}" "${ACCOUNT_PORT:-$p3}" "${CONTAINER_PORT:-$p4}" "${OBJECT_PORT:-$p5}" >"$BASE/ports.tmp"
  mv "$BASE/ports.tmp" "$BASE/ports"
fi
# shellcheck source=/dev/null
. "$BASE/ports"
if [ ! -f "$CONF/object.ring.gz" ]; then
  ( cd "$CONF"
    for svc in account:$ACCOUNT_PORT container:$CONTAINER_PORT object:$OBJECT_PORT; do
      name=${svc%%:*}; p=${svc##*:}
      swift-ring-builder $name.builder create 10 1 1 >/dev/null
      swift-ring-builder $name.builder add r1z1-127.0.0.1:$p/d1 1 >/dev/null
      swift-ring-builder $name.builder rebalance >/dev/null
    done )
fi

# 3) server configs
common="[DEFAULT]
swift_dir = $CONF
devices = $DATA
mount_check = false
bind_ip = 127.0.0.1
workers = 1
user = root
log_level = WARNING
log_facility = LOG_LOCAL0
"
cat > "$CONF/account-server.conf" <<EOF
${common}bind_port = $ACCOUNT_PORT
[pipeline:main]
pipeline = account-server
[app:account-server]
use = egg:swift#account
EOF
cat > "$CONF/container-server.conf" <<EOF
${common}bind_port = $CONTAINER_PORT
[pipeline:main]
pipeline = container-server
[app:container-server]
use = egg:swift#container
EOF
cat > "$CONF/object-server.conf" <<EOF
${common}bind_port = $OBJECT_PORT
[pipeline:main]
pipeline = object-server
[app:object-server]
use = egg:swift#object
EOF
cat > "$CONF/proxy-server.conf" <<EOF
[DEFAULT]
swift_dir = $CONF
bind_ip = 127.0.0.1
bind_port = $PORT
workers = $PROXY_WORKERS
user = root
log_level = WARNING

[pipeline:main]
# s3api must sit before tempauth; tempauth validates the S3 (SigV2/SigV4) signature via s3api
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:s3api]
use = egg:swift#s3api
location = us-east-1
# path-style only (no storage_domain => no virtual-host bucket parsing)
s3_acl = false
allow_multipart_uploads = true
max_upload_part_num = 10000
# min part size for non-final multipart parts (AWS uses 5 MiB)
min_segment_size = 5242880
force_swift_request_proxy_log = false

[filter:tempauth]
use = egg:swift#tempauth
# S3 access key = "<account>:<user>", secret = password
user_test_tester = testing .admin
user_admin_admin = admin .admin .reseller_admin

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MEMCACHED_PORT
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
# S3 multipart is stored as an SLO; allow large manifests
max_manifest_segments = 10000
[filter:dlo]
use = egg:swift#dlo
EOF

# 4) start memcached (loopback only) + servers, in the background, pid files in $PIDS
running() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }
# A port that answers while our daemon for it is not running belongs to someone else (another
# Swift, a system memcached): the tests would talk to it, and stopping "the server" would stop
# nothing. Say so instead, after a grace of 10 s for daemons of ours still exiting (stop.sh kills
# the proxy, its workers go a moment later).
for svc in memcached:$MEMCACHED_PORT account:$ACCOUNT_PORT container:$CONTAINER_PORT object:$OBJECT_PORT proxy:$PORT; do
  name=${svc%%:*}; p=${svc##*:}
  running "$name" && continue
  for i in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || continue 2
    sleep 0.1
  done
  echo "s3-swift: 127.0.0.1:$p ($name) is in use by a process this script did not start from $BASE" >&2
  exit 1
done
start() { # name cmd...
  local name=$1; shift
  if running "$name"; then return; fi
  nohup "$@" >"$LOG/$name.log" 2>&1 9>&- &
  echo $! > "$PIDS/$name.pid"
}
start memcached /usr/bin/memcached -u root -l 127.0.0.1 -p "$MEMCACHED_PORT" -U 0 -m 64
# -v: also log to stderr (there is no /dev/log in containers)
start account   $PY /usr/bin/swift-account-server   "$CONF/account-server.conf"   -v
start container $PY /usr/bin/swift-container-server "$CONF/container-server.conf" -v
start object    $PY /usr/bin/swift-object-server    "$CONF/object-server.conf"    -v
start proxy     $PY /usr/bin/swift-proxy-server     "$CONF/proxy-server.conf"     -v

# 5) wait for every daemon to listen, then for the proxy's health check: a proxy that answers
#    before its account, container and object servers listen fails requests with 503 ("Please
#    reduce your request rate" through s3api). Python daemons can take a while on a loaded machine.
for i in $(seq 1 600); do
  up=1
  for p in "$MEMCACHED_PORT" "$ACCOUNT_PORT" "$CONTAINER_PORT" "$OBJECT_PORT"; do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { up=0; break; }
  done
  if [ $up = 1 ] && curl -sf "http://127.0.0.1:$PORT/healthcheck" >/dev/null; then
    echo "swift+s3api up on http://127.0.0.1:$PORT (key test:tester / secret testing) after ~$((i/10)).$((i%10))s"
    exit 0
  fi
  sleep 0.1
done
echo "s3-swift: not up after 60 s; logs in $LOG" >&2; tail -n 30 "$LOG"/*.log >&2; exit 1
