#!/usr/bin/env bash
# Shows whether each emulator answers, and whether start.sh owns it. Exit 1 if one is down.
set -uo pipefail
source "$(dirname "$0")/common.sh"

down=0
for entry in "bigtable:$BIGTABLE_PORT" "pubsub:$PUBSUB_PORT" "gcs:$GCS_PORT"; do
  name=${entry%%:*} port=${entry#*:}
  if port_open "$port"; then
    if pid="$(live_pid "$name")"; then owner="started by start.sh, pid $pid"; else owner="not ours"; fi
    printf '%-9s up    127.0.0.1:%-5s (%s)\n' "$name" "$port" "$owner"
  else
    printf '%-9s down  127.0.0.1:%-5s\n' "$name" "$port"
    down=1
  fi
done
exit $down
