#!/usr/bin/env bash
# Shows whether each emulator answers, and whether start.sh owns it. Exit 1 if one is down.
set -uo pipefail
source "$(dirname "$0")/common.sh"

down=0
for entry in "bigtable:$BIGTABLE_PORT" "pubsub:$PUBSUB_PORT" "gcs:$GCS_PORT" "gcs-upload:$GCS_UPLOAD_PORT"; do
  name=${entry%%:*} port=${entry#*:}
  if port_open "$port"; then
    if pid="$(live_pid "$name")"; then owner="started by start.sh, pid $pid"; else owner="not ours"; fi
    printf '%-10s up    127.0.0.1:%-5s (%s)\n' "$name" "$port" "$owner"
  else
    printf '%-10s down  127.0.0.1:%-5s\n' "$name" "$port"
    down=1
  fi
done
exit $down
