#!/usr/bin/env bash
# Stops the emulators that start.sh started, by their recorded PIDs (each leads its own
# process group, so the Pub/Sub emulator's JVM goes with its launcher), and only while the
# PID is still the process start.sh started (its recorded start time matches). Emulators
# that start.sh found already running are someone else's and are left alone.
#
#   infra/local/stop.sh                 # all three (and the GCS upload relay)
#   infra/local/stop.sh pubsub gcs      # just these
set -euo pipefail
source "$(dirname "$0")/common.sh"

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(bigtable pubsub gcs gcs-upload)
for name in "${names[@]}"; do
  pidfile="$STATE_DIR/$name.pid"
  if pid="$(live_pid "$name")"; then
    log "stopping $name (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not exit on SIGTERM; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
    fi
  fi
  rm -f "$pidfile" "$STATE_DIR/$name.start"
  # The objects of a fake-gcs-server this script stopped go with it, as memory would.
  if [[ $name == gcs && -n ${pid:-} ]]; then rm -rf "$GCS_DATA"; fi
done
