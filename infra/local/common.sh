# Shared settings for the infra/local scripts. Sourced, not run.
#
# Every name and port here can be overridden from the environment; the defaults are the
# ones docker-compose.yml and the tiersweep defaults use, so one set of names serves all.

TIERSWEEP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Where PIDs, logs and the fake-gcs-server venv live. Ignored by git.
STATE_DIR="${TIERSWEEP_LOCAL_DIR:-$TIERSWEEP_ROOT/.local}"
# fake-gcs-server's objects: on a tmpfs where there is one (/dev/shm), one directory per
# state directory so that two checkouts do not share it.
if [[ -d /dev/shm && -w /dev/shm ]]; then
  GCS_DATA="${TIERSWEEP_GCS_DATA:-/dev/shm/tiersweep-gcs-$(id -u)-$(printf %s "$STATE_DIR" | cksum | cut -d' ' -f1)}"
else
  GCS_DATA="${TIERSWEEP_GCS_DATA:-$STATE_DIR/gcs-data}"
fi

# Where provision.sh finds the emulators: loopback here, service names in docker-compose.
BIGTABLE_HOST="${TIERSWEEP_BIGTABLE_HOST:-127.0.0.1}"
PUBSUB_HOST="${TIERSWEEP_PUBSUB_HOST:-127.0.0.1}"
GCS_HOST="${TIERSWEEP_GCS_HOST:-127.0.0.1}"

BIGTABLE_PORT="${TIERSWEEP_BIGTABLE_PORT:-8086}"
PUBSUB_PORT="${TIERSWEEP_PUBSUB_PORT:-8085}"
GCS_PORT="${TIERSWEEP_GCS_PORT:-4443}"
# Where resumable uploads to fake-gcs-server land: the Rust GCS client drops a custom
# endpoint's port from the Host header the server builds upload URLs from (see
# upload-relay.py), so port 80 relays to GCS_PORT. Not configurable: the URL has no port.
GCS_UPLOAD_PORT=80

PROJECT="${TIERSWEEP_PROJECT:-tiersweep-local}"
INSTANCE="${TIERSWEEP_BIGTABLE_INSTANCE:-tiersweep}"
HV_TABLE="${TIERSWEEP_HV_TABLE:-objects}"
CHANGELOG_TABLE="${TIERSWEEP_CHANGELOG_TABLE:-changelog}"
TOPIC="${TIERSWEEP_TOPIC:-cleanup-jobs}"
DEAD_LETTER_TOPIC="${TIERSWEEP_DEAD_LETTER_TOPIC:-cleanup-jobs-dead-letter}"
SUBSCRIPTION="${TIERSWEEP_SUBSCRIPTION:-cleanup-workers}"
DEAD_LETTER_SUBSCRIPTION="${TIERSWEEP_DEAD_LETTER_SUBSCRIPTION:-cleanup-jobs-dead-letter-audit}"
AUDIT_TOPIC="${TIERSWEEP_AUDIT_TOPIC:-audit-jobs}"
AUDIT_SUBSCRIPTION="${TIERSWEEP_AUDIT_SUBSCRIPTION:-audit-workers}"
AUDIT_DEAD_LETTER_TOPIC="${TIERSWEEP_AUDIT_DEAD_LETTER_TOPIC:-audit-jobs-dead-letter}"
AUDIT_TRAIL_TOPIC="${TIERSWEEP_AUDIT_TRAIL_TOPIC:-audit-trail}"
AUDIT_TRAIL_SUBSCRIPTION="${TIERSWEEP_AUDIT_TRAIL_SUBSCRIPTION:-audit-trail-kept}"
AUDIT_DEAD_LETTER_SUBSCRIPTION="${TIERSWEEP_AUDIT_DEAD_LETTER_SUBSCRIPTION:-audit-jobs-dead-letter-kept}"
BUCKET="${TIERSWEEP_BUCKET:-tiersweep-lt}"
# Deliveries before Pub/Sub dead-letters a job (the service allows 5..100).
MAX_DELIVERY_ATTEMPTS="${TIERSWEEP_MAX_DELIVERY_ATTEMPTS:-5}"
ACK_DEADLINE_SECONDS="${TIERSWEEP_ACK_DEADLINE_SECONDS:-60}"

# The column families; src/bigtable/layout.rs names the same ones.
HV_FAMILIES="v:maxversions=1"
CHANGELOG_FAMILIES="c:maxversions=1"

log() { echo "infra/local: $*" >&2; }
die() { echo "infra/local: error: $*" >&2; exit 1; }

sdk_root() {
  if [[ -n "${CLOUDSDK_ROOT_DIR:-}" ]]; then echo "$CLOUDSDK_ROOT_DIR"; return; fi
  command -v gcloud >/dev/null 2>&1 || return 1
  gcloud info --format='value(installation.sdk_root)' 2>/dev/null
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for NAME PORT PIDFILE: waits until the port answers, or fails with the log's tail.
wait_for() {
  local name=$1 port=$2 pidfile=$3 i
  for i in $(seq 1 120); do
    if port_open "$port"; then return 0; fi
    if [[ -f $pidfile ]] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      tail -n 20 "$STATE_DIR/$name.log" >&2 || true
      die "$name exited during startup; its log is $STATE_DIR/$name.log"
    fi
    sleep 0.5
  done
  tail -n 20 "$STATE_DIR/$name.log" >&2 || true
  die "$name did not open 127.0.0.1:$port within 60 s; its log is $STATE_DIR/$name.log"
}

# The PID recorded for NAME when that process is still alive.
# proc_start PID: the process's start time (clock ticks since boot, /proc/PID/stat field
# 22; the fields after the parenthesised command name, which may hold spaces, are counted).
proc_start() {
  sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'
}

# live_pid NAME: prints the PID start.sh recorded for NAME if that process is still the one
# it started: alive, and with the start time recorded beside it, so a PID the kernel has
# since given to another process is never signalled.
live_pid() {
  local pidfile="$STATE_DIR/$1.pid" startfile="$STATE_DIR/$1.start" pid
  [[ -f $pidfile && -f $startfile ]] || return 1
  pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(proc_start "$pid")" == "$(cat "$startfile")" ]] || return 1
  echo "$pid"
}

print_env() {
  cat <<ENV
export BIGTABLE_EMULATOR_HOST=127.0.0.1:$BIGTABLE_PORT
export PUBSUB_EMULATOR_HOST=127.0.0.1:$PUBSUB_PORT
export STORAGE_EMULATOR_HOST=http://127.0.0.1:$GCS_PORT
export TIERSWEEP_PROJECT=$PROJECT
export TIERSWEEP_BIGTABLE_INSTANCE=$INSTANCE
ENV
}
