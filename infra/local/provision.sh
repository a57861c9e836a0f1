#!/usr/bin/env bash
# Creates tiersweep's tables, topics, subscriptions and bucket on running emulators.
# Idempotent. start.sh calls it; run it alone after the emulators lost their state.
set -euo pipefail
source "$(dirname "$0")/common.sh"

CBT="$(command -v cbt || echo "$(sdk_root)/bin/cbt")"
[[ -x $CBT ]] || die "cbt not found; install it: gcloud components install cbt, or apt-get install google-cloud-cli-cbt"
mkdir -p "$STATE_DIR"
# cbt prints a credentials notice on every call even against the emulator; drop just that.
cbt_() {
  BIGTABLE_EMULATOR_HOST="$BIGTABLE_HOST:$BIGTABLE_PORT" "$CBT" -project "$PROJECT" -instance "$INSTANCE" "$@" \
    2> >(grep -v 'creds flag unset' >&2)
}

TABLES="$(cbt_ ls)"
# ensure_table TABLE "FAMILY:POLICY ...": creates the table with its families and GC
# policies, or adds what an existing table lacks. cbt costs ~1 s a call, so call it little.
ensure_table() {
  local table=$1 spec family policy families
  if ! grep -qx "$table" <<<"$TABLES"; then
    cbt_ createtable "$table" "families=$(tr ' ' ',' <<<"$2")" >&2
  else
    families="$(cbt_ ls "$table" | awk 'NR>2 {print $1}')"
    for spec in $2; do
      family=${spec%%:*} policy=${spec#*:}
      grep -qx "$family" <<<"$families" && continue
      cbt_ createfamily "$table" "$family" >&2
      cbt_ setgcpolicy "$table" "$family" "$policy" >/dev/null
    done
  fi
  log "bigtable table $table ready (families: $2)"
}

ensure_table "$HV_TABLE" "$HV_FAMILIES"
ensure_table "$CHANGELOG_TABLE" "$CHANGELOG_FAMILIES"

# put_json URL BODY: PUT that treats 409 (already exists) as success.
put_json() {
  local code
  code="$(curl -sS -o "$STATE_DIR/last-response" -w '%{http_code}' -X PUT -H 'content-type: application/json' \
          --data "$2" "$1")"
  [[ $code == 200 || $code == 409 ]] || die "PUT $1 answered $code: $(cat "$STATE_DIR/last-response")"
}

PS="http://$PUBSUB_HOST:$PUBSUB_PORT/v1/projects/$PROJECT"
put_json "$PS/topics/$TOPIC" '{}'
put_json "$PS/topics/$DEAD_LETTER_TOPIC" '{}'
put_json "$PS/subscriptions/$SUBSCRIPTION" "$(cat <<JSON
{
  "topic": "projects/$PROJECT/topics/$TOPIC",
  "ackDeadlineSeconds": $ACK_DEADLINE_SECONDS,
  "retryPolicy": {"minimumBackoff": "1s", "maximumBackoff": "60s"},
  "deadLetterPolicy": {
    "deadLetterTopic": "projects/$PROJECT/topics/$DEAD_LETTER_TOPIC",
    "maxDeliveryAttempts": $MAX_DELIVERY_ATTEMPTS
  }
}
JSON
)"
put_json "$PS/subscriptions/$DEAD_LETTER_SUBSCRIPTION" \
  "{\"topic\": \"projects/$PROJECT/topics/$DEAD_LETTER_TOPIC\", \"ackDeadlineSeconds\": 60}"
log "pubsub topics $TOPIC, $DEAD_LETTER_TOPIC and subscriptions $SUBSCRIPTION, $DEAD_LETTER_SUBSCRIPTION ready"
# The fanned-out audit's range jobs (tiersweep audit --fan-out / --worker).
put_json "$PS/topics/$AUDIT_TOPIC" '{}'
put_json "$PS/topics/$AUDIT_DEAD_LETTER_TOPIC" '{}'
put_json "$PS/subscriptions/$AUDIT_SUBSCRIPTION" "$(cat <<JSON
{
  "topic": "projects/$PROJECT/topics/$AUDIT_TOPIC",
  "ackDeadlineSeconds": $ACK_DEADLINE_SECONDS,
  "retryPolicy": {"minimumBackoff": "10s", "maximumBackoff": "600s"},
  "deadLetterPolicy": {
    "deadLetterTopic": "projects/$PROJECT/topics/$AUDIT_DEAD_LETTER_TOPIC",
    "maxDeliveryAttempts": $MAX_DELIVERY_ATTEMPTS
  }
}
JSON
)"
put_json "$PS/subscriptions/$AUDIT_DEAD_LETTER_SUBSCRIPTION" \
  "{\"topic\": \"projects/$PROJECT/topics/$AUDIT_DEAD_LETTER_TOPIC\", \"ackDeadlineSeconds\": 60}"
put_json "$PS/topics/$AUDIT_TRAIL_TOPIC" '{}'
put_json "$PS/subscriptions/$AUDIT_TRAIL_SUBSCRIPTION" \
  "{\"topic\": \"projects/$PROJECT/topics/$AUDIT_TRAIL_TOPIC\", \"ackDeadlineSeconds\": 60}"
log "pubsub audit topics $AUDIT_TOPIC, $AUDIT_DEAD_LETTER_TOPIC, $AUDIT_TRAIL_TOPIC and subscriptions $AUDIT_SUBSCRIPTION, $AUDIT_DEAD_LETTER_SUBSCRIPTION, $AUDIT_TRAIL_SUBSCRIPTION ready"

code="$(curl -sS -o "$STATE_DIR/last-response" -w '%{http_code}' -X POST -H 'content-type: application/json' \
        --data "{\"name\": \"$BUCKET\"}" "http://$GCS_HOST:$GCS_PORT/storage/v1/b?project=$PROJECT")"
[[ $code == 200 || $code == 409 ]] || die "creating bucket $BUCKET answered $code: $(cat "$STATE_DIR/last-response")"
log "gcs bucket $BUCKET ready"
