#!/usr/bin/env bash
# Two plantd nodes share one store_dynamodb store (issue 7), on dynalite:
# both run the sensor plugin on that store (its registry and its
# idempotency claims), readings are published to each node through the
# admin API, and a reading whose id reaches both nodes at once is processed
# by one of them only (the claim is a PUT_IF_ABSENT: a condition
# expression), while every sensor is registered once. The aws command then
# reads from dynalite what plantd wrote: the item layout of the README.
#
# Then the TTL semantic, which dynalite (no TTL of its own) leaves to the
# store's read side: a claim written with a 3 s idempotency window still
# holds a duplicate back; once expired it reads as absent and is claimed
# again (version 1, a later expiry), although dynalite still has the item;
# and plantd's expiry pass (every 10 s, through the by_expiry index)
# finally deletes it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib_aws.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib_aws.sh"

command -v jq >/dev/null || fail "jq is needed"
need_aws_peers
start_dynalite

TABLE=plantd-it-registry
TOPIC=sensor.thermistor.raw

# node_site NODE WINDOW: the site of node NODE (its own directory, the
# shared store), with the sensor's idempotency window WINDOW.
node_site() {
  mkdir -p "$TEST_TMP/$1"
  cat >"$TEST_TMP/$1/site.conf" <<CONF
site = "it-ddb-$1";
data_dir = "data";
plugin_path = "$PLANTD_BUILD_ROOT/plugins";
aws = { region = "us-east-1"; access_key_id = "test"; secret_access_key = "test"; };
listeners = ( { name = "admin"; admin = true; address = "127.0.0.1"; port = 0; } );
stores = ( { name = "shared"; backend = "dynamodb"; table = "$TABLE"; endpoint = "$DYNALITE_URL"; } );
queues = (
  { name = "sensor.raw"; subscribe = [ "sensor.*.raw" ]; dead_letter = "sensor.raw.dlq"; },
  { name = "sensor.raw.dlq"; }
);
plugins = (
  { name = "out"; module = "log_sink"; subscribe = [ "sensor.*.processed" ]; path = "out.jsonl"; },
  { name = "sensor"; module = "sensor"; queue = "sensor.raw"; store = "shared";
    idempotency_window = "$2"; }
);
CONF
}

declare -A NODE_PID NODE_URL

# Every failure (lib.sh's fail, also from wait_until) shows both nodes'
# logs, not only $LOG.
eval "_lib_fail() $(declare -f fail | tail -n +2)"
fail() {
  local n
  for n in a b; do
    if [[ -s $TEST_TMP/$n/plantd.log && $TEST_TMP/$n/plantd.log != "$LOG" ]]; then
      echo "--- node $n ($TEST_TMP/$n/plantd.log):"
      tail -n 60 "$TEST_TMP/$n/plantd.log"
    fi
  done
  _lib_fail "$@"
}
node_fail() { aws_fail "$@"; }

# start_node NODE: start it and wait for its admin listener.
start_node() {
  LOG=$TEST_TMP/$1/plantd.log
  OUT=$TEST_TMP/$1/plantd.out
  rm -f "$TEST_TMP/$1/data/listeners.json"
  start_plantd -c "$TEST_TMP/$1/site.conf"
  NODE_PID[$1]=$PLANTD_PID
  wait_urls "$TEST_TMP/$1/data"
  NODE_URL[$1]=$(url_of "$TEST_TMP/$1/data" admin)
  [[ ${NODE_URL[$1]} == http://127.0.0.1:* ]] || node_fail "node $1: admin listener ${NODE_URL[$1]}"
}

# stop_node NODE: TERM, wait, expect a clean exit.
stop_node() {
  PLANTD_PID=${NODE_PID[$1]}
  LOG=$TEST_TMP/$1/plantd.log
  OUT=$TEST_TMP/$1/plantd.out
  stop_plantd TERM 30
  expect_exit 0
}

reading() { # reading ID SENSOR
  printf '{"id":"%s","sensor_id":"%s","location":"L01","type":"thermistor","ts":1,"resistance":10000}' \
    "$1" "$2"
}

# publish NODE BODY: POST it on $TOPIC through the node's admin API.
publish() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time $((10 * TIME_FACTOR)) \
    -X POST -H 'Content-Type: application/json' --data-binary "$2" \
    "${NODE_URL[$1]}/v1/topics/$TOPIC") || code=000
  [[ $code == 2* ]] || node_fail "publishing to node $1 answered $code: $2"
}

processed() { # processed NODE: lines in its out.jsonl
  if [[ -f $TEST_TMP/$1/data/out.jsonl ]]; then wc -l <"$TEST_TMP/$1/data/out.jsonl"; else echo 0; fi
}
processed_total_is() { (($(processed a) + $(processed b) == $1)); }
times_processed() { # times_processed ID: on both nodes together
  cat "$TEST_TMP"/{a,b}/data/out.jsonl 2>/dev/null | jq -r --arg id "$1" 'select(.body.id == $id) | .body.id' |
    wc -l
}
# queue_idle NODE: sensor.raw holds nothing, waiting or in flight
queue_idle() {
  curl -s --max-time 5 "${NODE_URL[$1]}/v1/queues" |
    jq -e '.queues | map(select(.name == "sensor.raw"))[0] | .depth == 0 and .in_flight == 0' >/dev/null
}
both_idle() { queue_idle a && queue_idle b; }

say "two nodes on one dynamodb store (table $TABLE at $DYNALITE_URL)"
node_site a 1h
node_site b 1h
start_node a
start_node b
expect_in_log -F 'store \"shared\" open (backend dynamodb)' "$TEST_TMP/a/plantd.log"
expect_in_log -F 'store \"shared\" open (backend dynamodb)' "$TEST_TMP/b/plantd.log"
[[ $(aws_cli dynamodb describe-table --table-name "$TABLE" | jq -r .Table.TableStatus) == ACTIVE ]] ||
  node_fail "table $TABLE is not there"

# publish_all NODE FILE: POST every line of FILE, one request each, from
# one curl (its requests one after the other); the status codes to
# NODE.codes.
publish_all() {
  local line
  while IFS= read -r line; do
    printf 'url = "%s/v1/topics/%s"\nrequest = "POST"\ndata-binary = "%s"\n' \
      "${NODE_URL[$1]}" "$TOPIC" "${line//\"/\\\"}"
    printf 'output = "/dev/null"\nwrite-out = "%%{http_code}\\n"\nmax-time = %d\nnext\n' \
      $((10 * TIME_FACTOR))
  done <"$2" >"$TEST_TMP/$1.curlrc"
  curl -s --config "$TEST_TMP/$1.curlrc" >"$TEST_TMP/$1.codes" || true
}

say "30 readings sent to both nodes at once, 5 to each node alone, 4 sensors"
SHARED=30
for i in $(seq 1 $SHARED); do reading "dup-$i" "L01-S000$((i % 4 + 1))"; echo; done >"$TEST_TMP/dup.jsonl"
# both nodes at the same time, one from the first reading on, the other
# from the last: each has the first claims of its own, and where they meet
# they race for the same ids
tac "$TEST_TMP/dup.jsonl" >"$TEST_TMP/dup.rev.jsonl"
publish_all a "$TEST_TMP/dup.jsonl" &
pa=$!
publish_all b "$TEST_TMP/dup.rev.jsonl" &
pb=$!
# not a bare `wait`: it would wait for the plantd processes too
wait "$pa" "$pb"
for n in a b; do
  [[ $(grep -c '^2' "$TEST_TMP/$n.codes") == "$SHARED" ]] ||
    node_fail "publishing to node $n: $(tr '\n' ' ' <"$TEST_TMP/$n.codes")"
done
for i in 1 2 3 4 5; do
  publish a "$(reading "a-$i" L01-S0001)"
  publish b "$(reading "b-$i" L01-S0002)"
done
TOTAL=$((SHARED + 10))
PLANTD_PID=${NODE_PID[a]}
wait_until $((60 * TIME_FACTOR)) "$TOTAL readings processed by the two nodes" processed_total_is $TOTAL
wait_until $((60 * TIME_FACTOR)) "both queues drained" both_idle
say "node a processed $(processed a), node b $(processed b), $SECONDS s into the test"

for i in $(seq 1 $SHARED); do
  n=$(times_processed "dup-$i")
  [[ $n == 1 ]] || node_fail "reading dup-$i was processed $n times"
done
for id in a-1 a-5 b-1 b-5; do
  [[ $(times_processed $id) == 1 ]] || node_fail "reading $id was processed $(times_processed $id) times"
done

say "the stores' health through the admin API"
curl -s --max-time 5 "${NODE_URL[a]}/v1/stores" >"$TEST_TMP/stores.json"
jq -e --arg t "$TABLE" '.stores[] | select(.name == "shared") |
  .backend == "dynamodb" and .healthy and .detail.table == $t and .detail.failures == 0' \
  "$TEST_TMP/stores.json" >/dev/null ||
  node_fail "GET /v1/stores does not show table $TABLE: $(cat "$TEST_TMP/stores.json")"

stop_node a
stop_node b
line_a=$(grep -o 'sensor stopped: processed=[0-9]* duplicates=[0-9]*' "$TEST_TMP/a/plantd.log")
line_b=$(grep -o 'sensor stopped: processed=[0-9]* duplicates=[0-9]*' "$TEST_TMP/b/plantd.log")
count() { sed -n "s/.*$1=\\([0-9]*\\).*/\\1/p" <<<"$2"; }
[[ $(($(count processed "$line_a") + $(count processed "$line_b"))) == "$TOTAL" ]] ||
  node_fail "processed: a says '$line_a', b says '$line_b'"
[[ $(($(count duplicates "$line_a") + $(count duplicates "$line_b"))) == "$SHARED" ]] ||
  node_fail "duplicates: a says '$line_a', b says '$line_b' (expected $SHARED in all)"
say "node a: $line_a; node b: $line_b"

say "what plantd wrote, read back with the aws command"
aws_cli dynamodb scan --table-name "$TABLE" --consistent-read >"$TEST_TMP/scan.json" ||
  node_fail "aws dynamodb scan failed"
# one item per key, in the store's partition; keys are bytes (B)
jq -e '[.Items[] | select(.pk.S == "shared")] | length == 44' "$TEST_TMP/scan.json" >/dev/null ||
  node_fail "expected 40 claims and 4 sensors in partition \"shared\": $(jq -c '[.Items[] | {pk: .pk.S, k: (.sk.B | @base64d)}]' "$TEST_TMP/scan.json")"
jq -e '[.Items[] | select(.pk.S != "shared")] | length == 0' "$TEST_TMP/scan.json" >/dev/null ||
  node_fail "items outside the store's partition (no value needed parts)"
claims() { jq -r '.Items[] | select(.pk.S == "shared") | (.sk.B | @base64d) | select(startswith("reading/"))' "$TEST_TMP/scan.json"; }
[[ $(claims | sort -u | wc -l) == "$TOTAL" ]] || node_fail "expected $TOTAL distinct claims, got: $(claims | tr '\n' ' ')"
[[ $(claims | grep -c '^reading/dup-') == "$SHARED" ]] || node_fail "claims: $(claims | tr '\n' ' ')"
now_ms=$(date +%s%3N)
# a claim: version 1, value {"m": MESSAGE_ID} as JSON text, an expiry in
# host ms (about an hour ahead) and in epoch seconds for DynamoDB's TTL
jq -e --argjson now "$now_ms" '[.Items[] | select(.pk.S == "shared") | select(.sk.B | @base64d | startswith("reading/"))] |
  all(.[]; .ver.N == "1" and (.val.S | fromjson | .m | type) == "string" and
    (.expires_ms.N | tonumber) > $now + 3500000 and (.expires_ms.N | tonumber) < $now + 3700000 and
    (.expires.N | tonumber) == ((.expires_ms.N | tonumber) / 1000 | ceil))' "$TEST_TMP/scan.json" >/dev/null ||
  node_fail "claims not as documented: $(jq -c '.Items[0]' "$TEST_TMP/scan.json")"
# the registry: each sensor once, version 1, working, no expiry
jq -e '[.Items[] | select(.pk.S == "shared") | select(.sk.B | @base64d | startswith("sensor/"))] |
  length == 4 and all(.[]; .ver.N == "1" and (.val.S | fromjson | .broken == false) and (has("expires_ms") | not))' \
  "$TEST_TMP/scan.json" >/dev/null ||
  node_fail "the registry: $(jq -c '[.Items[] | select(.sk.B | @base64d | startswith("sensor/"))]' "$TEST_TMP/scan.json")"

say "TTL on dynalite (which has none): an expired claim reads as absent"
ttl=$(aws_cli dynamodb describe-time-to-live --table-name "$TABLE" | jq -r .TimeToLiveDescription.TimeToLiveStatus)
say "dynalite's TimeToLiveStatus: $ttl"
node_site a 3s
start_node a
PLANTD_PID=${NODE_PID[a]}
: >"$TEST_TMP/b/data/out.jsonl"
: >"$TEST_TMP/a/data/out.jsonl"
claim() { # claim: the claim item of ttl-1, read strongly consistent, as JSON ({} when none)
  # (awscli 1 takes a B value as the bytes themselves, shows base64, and
  # prints nothing at all when there is no item)
  local ans
  ans=$(aws_cli dynamodb get-item --table-name "$TABLE" --consistent-read \
    --key '{"pk": {"S": "shared"}, "sk": {"B": "reading/ttl-1"}}') ||
    node_fail "aws dynamodb get-item failed"
  jq -c '.Item // {}' <<<"${ans:-{\}}"
}
# twice in a row: the second within the window, a duplicate
publish a "$(reading ttl-1 L01-S0001)"
publish a "$(reading ttl-1 L01-S0001)"
wait_until $((20 * TIME_FACTOR)) "ttl-1 processed" processed_total_is 1
wait_until $((20 * TIME_FACTOR)) "node a idle" queue_idle a
first=$(claim)
exp1=$(jq -r '.expires_ms.N' <<<"$first")
[[ $exp1 =~ ^[0-9]+$ ]] || node_fail "the claim of ttl-1 has no expiry: $first"
[[ $(processed a) == 1 ]] || node_fail "ttl-1 again within the window was processed again"
expired() { (($(date +%s%3N) > exp1)); }
wait_until $((10 * TIME_FACTOR)) "the claim's expiry ($exp1)" expired
still=$(claim)
if [[ $(jq -r '.expires_ms.N // empty' <<<"$still") == "$exp1" ]]; then
  say "expired and still in dynalite: the store's own read check decides"
fi
publish a "$(reading ttl-1 L01-S0001)"
wait_until $((20 * TIME_FACTOR)) "ttl-1 processed again once its claim expired" processed_total_is 2
again=$(claim)
jq -e --argjson e1 "$exp1" '.ver.N == "1" and (.expires_ms.N | tonumber) > $e1' <<<"$again" >/dev/null ||
  node_fail "the new claim should start over at version 1 with a later expiry: before $first, after $again"

say "plantd's expiry pass deletes the claim once it has expired"
exp2=$(jq -r '.expires_ms.N' <<<"$again")
claim_gone() { [[ $(claim) == "{}" ]]; }
wait_until $((40 * TIME_FACTOR)) "the expired claim deleted (expired at $exp2)" claim_gone
(($(date +%s%3N) >= exp2)) || node_fail "the claim was deleted before it expired"
stop_node a
say "PASS"
