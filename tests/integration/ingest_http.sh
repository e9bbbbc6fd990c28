#!/usr/bin/env bash
# ingest_http over real HTTP (issue 6): a site with an admin listener and two
# ingest listeners (port 0, URLs read from DATA/listeners.json), queues
# subscribed to the ingested topics, and the messages read back through the
# admin API (GET /v1/queues/NAME/messages?peek=N).
#
# - one object, an array of 100, NDJSON (\r\n, empty lines): 202 with one id
#   per object, and exactly those messages, bodies and ids, on the queue;
# - every refusal publishes nothing and says why: a JSON syntax error (line,
#   column), a bad NDJSON line (its line in the body), an array item that is
#   not an object (its index), invalid UTF-8, another Content-Type (415), more
#   than max_items (413), a body over the listener's max_body (413, the
#   listener's), no or a wrong token (401), a topic outside `topics` (403) or
#   not a topic (400);
# - a full queue: 429 with Retry-After, all or nothing (a batch that does
#   not fit publishes none of its objects);
# - Idempotency-Key: a retry is answered with the first ids and
#   Idempotency-Replayed: true, publishing once; the key for another body is
#   422; with idempotency_store (sqlite), a retry after a restart of plantd
#   is still a replay;
# - requests from 8 clients at once all land; counters reach /metrics;
# - plantd is still running after all of it and stops cleanly;
# - config errors: --check refuses max_items = 0 naming the line; an unknown
#   listener fails the instance at start.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v jq >/dev/null || fail "jq is needed"
command -v curl >/dev/null || fail "curl is needed"

CONF=$TEST_TMP/site.conf
DATA=$TEST_TMP/data
PLUGINS="$PLANTD_BUILD_ROOT/plugins/ingest_http:$PLANTD_BUILD_ROOT/plugins/store_sqlite"
TOKEN=it-ingest-token-1
AUTH="Authorization: Bearer $TOKEN"
JSON='Content-Type: application/json'
NDJSON='Content-Type: application/x-ndjson'
MAX_TIME=$((10 * TIME_FACTOR))

# site [INSTANCES]: the site, with the two ingest instances unless told
# otherwise. "in" (memory idempotency) serves listener "ingest" (a token,
# max_body 1 MiB); "in2" (idempotency in the sqlite store, topic_prefix
# "ext.", stamp) serves "ingest2" (no token).
site() {
  local plugins=${1:-'{ name = "in"; module = "ingest_http"; topics = [ "sensor.*", "ops.*" ];
    max_items = 1000; },
  { name = "in2"; module = "ingest_http"; listener = "ingest2"; topic_prefix = "ext.";
    stamp = true; idempotency_store = "idem"; }'}
  cat >"$CONF" <<CONF
site = "it-ingest";
data_dir = "data";
plugin_path = "$PLUGINS";
listeners = (
  { name = "admin"; admin = true; address = "127.0.0.1"; port = 0; },
  { name = "ingest"; address = "127.0.0.1"; port = 0; tokens = [ "$TOKEN" ]; threads = 2;
    max_body = 1048576; },
  { name = "ingest2"; address = "127.0.0.1"; port = 0; }
);
stores = ( { name = "idem"; backend = "sqlite"; path = "idem.db"; } );
queues = (
  { name = "readings"; subscribe = [ "sensor.*" ]; max_depth = 100000; },
  { name = "ops"; subscribe = [ "ops.*" ]; max_depth = 3; },
  { name = "ext"; subscribe = [ "ext.*" ]; durable = true; store = "idem"; }
);
plugins = (
  $plugins
);
CONF
}

listeners_written() {
  jq -e '.admin and .ingest and .ingest2' "$DATA/listeners.json" >/dev/null 2>&1
}

# up: start plantd and read the listeners' URLs.
up() {
  rm -f "$DATA/listeners.json"
  start_plantd -c "$CONF"
  wait_until 20 "listeners.json with every listener" listeners_written
  ADMIN=$(jq -r .admin "$DATA/listeners.json")
  IN=$(jq -r .ingest "$DATA/listeners.json")
  IN2=$(jq -r .ingest2 "$DATA/listeners.json")
}

# req URL CURL_ARGS...: CODE, and the answer in $BODY and its headers in
# $HDRS (CR removed). CODE is 000 when curl got no answer.
BODY=$TEST_TMP/answer
HDRS=$TEST_TMP/headers
req() {
  local url=$1
  shift
  : >"$BODY"
  : >"$HDRS"
  CODE=$(curl -sS --max-time "$MAX_TIME" -o "$BODY" -D "$HDRS.raw" -w '%{http_code}' "$@" \
    "$url" 2>"$TEST_TMP/curl.err") || true
  CODE=${CODE:-000}
  tr -d '\r' <"$HDRS.raw" >"$HDRS" 2>/dev/null || true
}

# post TOPIC CURL_ARGS...: POST to listener "ingest" with the token.
post() {
  local topic=$1
  shift
  req "$IN/v1/ingest/$topic" -H "$AUTH" "$@"
}

# expect_code N WHAT: the last answer had status N (and a JSON body).
expect_code() {
  [[ $CODE == "$1" ]] || fail "$2: status $CODE, expected $1: $(cat "$BODY") $(cat "$TEST_TMP/curl.err")"
  jq -e . "$BODY" >/dev/null 2>&1 || fail "$2: the answer is not JSON: $(cat "$BODY")"
}

# expect_error N WHAT JQ_FILTER: status N, an "error" string, and the filter
# true of the answer.
expect_error() {
  expect_code "$1" "$2"
  jq -e '.error | type == "string"' "$BODY" >/dev/null || fail "$2: no \"error\" in $(cat "$BODY")"
  jq -e "$3" "$BODY" >/dev/null || fail "$2: the answer does not satisfy $3: $(cat "$BODY")"
}

expect_header() {
  grep -qiE "^$1: $2\$" "$HDRS" || fail "no header '$1: $2' in: $(cat "$HDRS")"
}

expect_no_header() {
  if grep -qi "^$1:" "$HDRS"; then fail "unexpected header $1 in: $(cat "$HDRS")"; fi
}

# peek QUEUE: its messages (up to 1000) as JSON lines {id, topic, body}.
peek() {
  curl -sS --max-time "$MAX_TIME" "$ADMIN/v1/queues/$1/messages?peek=1000" |
    jq -c '.messages[] | {id, topic, body}'
}

depth() {
  curl -sS --max-time "$MAX_TIME" "$ADMIN/v1/queues" |
    jq -r --arg q "$1" '.queues[] | select(.name == $q) | .depth'
}

expect_depth() {
  local got
  got=$(depth "$1")
  [[ $got == "$2" ]] || fail "queue $1 holds $got messages, expected $2 ($3)"
}

# the ids of the last 202, one per line
answer_ids() { jq -r '.ids[]' "$BODY"; }

# check_published QUEUE BODIES_JSON: the ids of the last 202 are messages of
# QUEUE with these bodies (a JSON array), in order, on topic $TOPIC.
check_published() {
  local queue=$1 want=$2 got
  got=$(peek "$queue" | jq -s -c --argjson ids "$(jq -c .ids "$BODY")" \
    '[.[] | select(.id as $i | $ids | index($i))] | sort_by(.id as $i | $ids | index($i))')
  [[ $(jq length <<<"$got") == "$(jq length <<<"$want")" ]] ||
    fail "queue $queue has $(jq length <<<"$got") of the $(jq length <<<"$want") ids answered: $(cat "$BODY")"
  [[ $(jq -c '[.[].body]' <<<"$got") == "$(jq -c . <<<"$want")" ]] ||
    fail "queue $queue: bodies $(jq -c '[.[].body]' <<<"$got"), expected $want"
  [[ $(jq -c '[.[].topic] | unique' <<<"$got") == "[\"$TOPIC\"]" ]] ||
    fail "queue $queue: topics $(jq -c '[.[].topic] | unique' <<<"$got"), expected $TOPIC"
}

# ---- accepted -------------------------------------------------------------------

site
up
PUBLISHED=0

say "one object, an array of 100, NDJSON: 202 with an id per object, the messages on the queue"
TOPIC=sensor.a
post $TOPIC -H "$JSON" -d '{"sensor_id":"L01-S0042","r":10234.5}'
expect_code 202 "one object"
jq -e '.count == 1 and (.ids | length) == 1' "$BODY" >/dev/null || fail "one object: $(cat "$BODY")"
check_published readings '[{"sensor_id":"L01-S0042","r":10234.5}]'
PUBLISHED=$((PUBLISHED + 1))

jq -n -c '[range(100) | {n: ., sensor_id: "L01-S\(.)"}]' >"$TEST_TMP/hundred.json"
post $TOPIC -H "$JSON" --data-binary @"$TEST_TMP/hundred.json"
expect_code 202 "an array of 100"
jq -e '.count == 100 and (.ids | length) == 100 and (.ids | unique | length) == 100' "$BODY" \
  >/dev/null || fail "an array of 100: $(cat "$BODY")"
check_published readings "$(cat "$TEST_TMP/hundred.json")"
PUBLISHED=$((PUBLISHED + 100))

TOPIC=sensor.b
printf '{"n":0}\r\n\r\n{"n":1}\n\n   \n{"n":2,"s":"\\u00e9t\xc3\xa9"}\r\n{"n":3}' >"$TEST_TMP/lines.ndjson"
post $TOPIC -H "$NDJSON" --data-binary @"$TEST_TMP/lines.ndjson"
expect_code 202 "NDJSON"
check_published readings '[{"n":0},{"n":1},{"n":2,"s":"été"},{"n":3}]'
PUBLISHED=$((PUBLISHED + 4))
# no Content-Type (curl's -H 'Content-Type:' drops the one it adds): JSON
post $TOPIC -H 'Content-Type:' --data-binary '[{"n":4},{"n":5}]'
expect_code 202 "no Content-Type"
check_published readings '[{"n":4},{"n":5}]'
PUBLISHED=$((PUBLISHED + 2))
# pretty-printed (objects over several lines), with strings that hold
# brackets, commas and escaped quotes
jq -n '[{"s": "a,b]}\"{[", "n": [1, {"x": []}]}, {"t": "\u00e9"}]' >"$TEST_TMP/pretty.json"
post $TOPIC -H "$JSON" --data-binary @"$TEST_TMP/pretty.json"
expect_code 202 "a pretty-printed array"
check_published readings "$(jq -c . "$TEST_TMP/pretty.json")"
PUBLISHED=$((PUBLISHED + 2))
expect_depth readings $PUBLISHED "everything accepted so far"
say "ok: $PUBLISHED messages, each where its 202 said"

# ---- refused: nothing published ----------------------------------------------------

say "refusals: each says why and where, and publishes nothing"
post sensor.a -H "$JSON" --data-binary $'[{"a":1},\n {"b":2,}]'
expect_error 400 "a JSON syntax error" '.line == 2 and .column == 9'
post sensor.a -H "$NDJSON" --data-binary $'{"a":1}\r\n\n{"a": tru}\n{"a":3}\n'
expect_error 400 "a bad NDJSON line" '.line == 3 and .column == 9'
post sensor.a -H "$NDJSON" --data-binary $'{"a":1}\n  [1,2]\n'
expect_error 400 "an NDJSON line that is an array" '.line == 2 and .column == 3'
post sensor.a -H "$JSON" --data-binary '[{"a":1},{"a":2},"x",{}]'
expect_error 400 "an array item that is not an object" '.index == 2 and (.error | test("item 2"))'
post sensor.a -H "$JSON" --data-binary '{"v":1,"v":2}'
expect_error 400 "a duplicate key" '.line == 1'
printf '{"name":"caf\xc3"}' >"$TEST_TMP/bad-utf8.json"
post sensor.a -H "$JSON" --data-binary @"$TEST_TMP/bad-utf8.json"
expect_error 400 "invalid UTF-8" '.line == 1'
printf '{"a":1}\n{"name":"\xff"}\n' >"$TEST_TMP/bad-utf8.ndjson"
post sensor.a -H "$NDJSON" --data-binary @"$TEST_TMP/bad-utf8.ndjson"
expect_error 400 "invalid UTF-8 on an NDJSON line" '.line == 2'
post sensor.a -H 'Content-Type: text/csv' --data-binary 'a,b'
expect_error 415 "text/csv" '.error | test("text/csv")'
post sensor.a -d '{"a":1}' # curl -d: application/x-www-form-urlencoded
expect_error 415 "curl -d without a Content-Type" '.error | test("-H .Content-Type: application/json")'
post sensor.a -H 'Content-Type: application/json; charset=latin1' --data-binary '{"a":1}'
expect_error 415 "a charset other than UTF-8" 'true'
jq -n -c '[range(1001) | {n: .}]' >"$TEST_TMP/too-many.json"
post sensor.a -H "$JSON" --data-binary @"$TEST_TMP/too-many.json"
expect_error 413 "1001 objects, max_items 1000" '.error | test("max_items")'
head -c 10485760 /dev/zero | tr '\0' ' ' >"$TEST_TMP/ten-mb.json"
post sensor.a -H "$JSON" --data-binary @"$TEST_TMP/ten-mb.json"
[[ $CODE == 413 ]] || fail "a 10 MB body on a listener with max_body 1 MiB: status $CODE: $(cat "$BODY")"
post other.a -H "$JSON" --data-binary '{"a":1}'
expect_error 403 "a topic outside topics" '.error | test("\"other.a\"")'
post 'sensor..a' -H "$JSON" --data-binary '{"a":1}'
expect_error 400 "not a topic" '.error | test("sensor..a")'
post 'sensor.a%2Fb' -H "$JSON" --data-binary '{"a":1}'
expect_error 400 "a topic with a slash" '.error | test("sensor.a/b")'
post '' -H "$JSON" --data-binary '{"a":1}'
expect_error 400 "no topic" '.error | test("no topic")'
req "$IN/v1/ingest/sensor.a" -H "$JSON" --data-binary '{"a":1}'
expect_error 401 "no token" 'true'
expect_header WWW-Authenticate Bearer
req "$IN/v1/ingest/sensor.a" -H 'Authorization: Bearer not-the-token' -H "$JSON" --data-binary '{"a":1}'
expect_error 401 "a wrong token" 'true'
expect_depth readings $PUBLISHED "after the refusals"
say "ok"

# ---- a full queue -------------------------------------------------------------------

say "a full queue: 429 with Retry-After, all or nothing"
TOPIC=ops.pump
post $TOPIC -H "$JSON" --data-binary '[{"p":1},{"p":2}]'
expect_code 202 "two into a queue of three"
post $TOPIC -H "$JSON" --data-binary '[{"p":3},{"p":4}]'
expect_error 429 "two more into a queue of three" '.error | test("nothing was published")'
expect_header Retry-After 1
expect_depth ops 2 "a batch that does not fit publishes none of its objects"
post $TOPIC -H "$JSON" --data-binary '{"p":3}'
expect_code 202 "the third"
post $TOPIC -H "$JSON" --data-binary '{"p":4}'
expect_error 429 "a fourth" 'true'
expect_header Retry-After 1
got=$(peek ops | jq -s -c '[.[].body.p]')
[[ $got == '[1,2,3]' ]] || fail "queue ops holds $got, expected [1,2,3]"
say "ok"

# ---- Idempotency-Key ------------------------------------------------------------------

say "Idempotency-Key: a retry is a replay of the first answer, published once"
TOPIC=sensor.k
post $TOPIC -H "$JSON" -H 'Idempotency-Key: retry-1' --data-binary '[{"k":1},{"k":2}]'
expect_code 202 "the first request with a key"
expect_no_header Idempotency-Replayed
first=$(cat "$BODY")
PUBLISHED=$((PUBLISHED + 2))
for try in 1 2; do
  post $TOPIC -H "$JSON" -H 'Idempotency-Key: retry-1' --data-binary '[{"k":1},{"k":2}]'
  expect_code 202 "retry $try"
  expect_header Idempotency-Replayed true
  [[ $(cat "$BODY") == "$first" ]] || fail "retry $try answered $(cat "$BODY"), not $first"
done
post $TOPIC -H "$JSON" -H 'Idempotency-Key: retry-1' --data-binary '[{"k":1},{"k":3}]'
expect_error 422 "the key for another body" '.error | test("another request")'
got=$(peek readings | jq -s -c '[.[] | select(.topic == "sensor.k") | .body.k]')
[[ $got == '[1,2]' ]] || fail "the retried request was published as $got, expected [1,2] once"
# a refused request leaves the key free
post ops.pump -H "$JSON" -H 'Idempotency-Key: retry-2' --data-binary '{"p":9}'
expect_error 429 "a key on a full queue" 'true'
post $TOPIC -H "$JSON" -H 'Idempotency-Key: bad key' --data-binary '{"k":0}'
expect_error 400 "a key with a space" '.error | test("Idempotency-Key")'
expect_depth readings $PUBLISHED "after the retries"
say "ok"

# ---- several clients at once ---------------------------------------------------------

say "8 clients at once, 25 requests each"
one_client() {
  local c=$1 k code
  for ((k = 0; k < 25; k++)); do
    code=$(curl -sS --max-time "$MAX_TIME" -o /dev/null -w '%{http_code}' -H "$AUTH" -H "$JSON" \
      --data-binary "[{\"c\":$c,\"k\":$k},{\"c\":$c,\"k\":$k,\"second\":true}]" \
      "$IN/v1/ingest/sensor.par") || true
    echo "$code"
  done
}
clients=()
for c in 1 2 3 4 5 6 7 8; do
  one_client "$c" >"$TEST_TMP/client.$c" &
  clients+=("$!")
  _BG_PIDS+=("$!") # killed on exit, should this script end early
done
for pid in "${clients[@]}"; do
  wait "$pid" || true
  _forget_pid "$pid"
done
codes=$(cat "$TEST_TMP"/client.* | sort | uniq -c | awk '{ print $2 "x" $1 }' | tr '\n' ' ')
[[ $codes == '202x200 ' ]] || fail "the clients got $codes, expected 200 times 202"
PUBLISHED=$((PUBLISHED + 400))
expect_depth readings $PUBLISHED "after 8 clients"
say "ok"

# ---- the idempotency store, across a restart ---------------------------------------------

say "idempotency_store: a retry after a restart is still a replay; topic_prefix, stamp"
req "$IN2/v1/ingest/line.7" -H "$JSON" -H 'Idempotency-Key: 3f1c2a9e-restart' \
  --data-binary '[{"x":1},{"x":2},{"x":3}]'
expect_code 202 "a request with a key kept in the store"
stored=$(cat "$BODY")
# on ext.line.7 (the prefix), each with "received_ms" (stamp), with the ids answered
got=$(peek ext | jq -s -c '[.[] | {id, topic, x: .body.x, stamped: (.body.received_ms | type == "number")}]')
want=$(jq -c '[.ids as $ids | range(3) | {id: $ids[.], topic: "ext.line.7", x: (. + 1), stamped: true}]' "$BODY")
[[ $got == "$want" ]] || fail "queue ext holds $got, expected $want"
stop_plantd TERM 20
expect_exit 0
up
req "$IN2/v1/ingest/line.7" -H "$JSON" -H 'Idempotency-Key: 3f1c2a9e-restart' \
  --data-binary '[{"x":1},{"x":2},{"x":3}]'
expect_code 202 "the retry after a restart"
expect_header Idempotency-Replayed true
[[ $(cat "$BODY") == "$stored" ]] || fail "the retry after a restart answered $(cat "$BODY"), not $stored"
expect_depth ext 3 "the durable queue after the restart and the retry"
say "ok"

# ---- counters, still running, a clean stop ------------------------------------------------

say "counters on /metrics; plantd still running after everything, stops cleanly"
metric() {
  curl -sS --max-time "$MAX_TIME" "$ADMIN/metrics" |
    sed -nE "s/^plantd_instance_counter\\{instance=\"$1\",name=\"$2\"\\} ([0-9]+)\$/\\1/p"
}
post sensor.m -H "$JSON" --data-binary '[{"m":1},{"m":2}]'
expect_code 202 "after the restart"
post sensor.m -H "$JSON" --data-binary '{'
expect_code 400 "after the restart"
counters_flushed() { [[ $(metric in readings) == 2 && $(metric in rejected) == 1 ]]; }
wait_until 10 "the counters of instance in on /metrics" counters_flushed
[[ $(metric in requests) == 2 ]] || fail "requests = $(metric in requests), expected 2"
[[ $(metric in2 replayed) == 1 ]] || fail "in2 replayed = $(metric in2 replayed), expected 1"
plantd_running || fail "plantd is not running"
curl -sS --max-time "$MAX_TIME" "$ADMIN/healthz" | jq -e '.status == "ok"' >/dev/null ||
  fail "healthz is not ok"
stop_plantd TERM 20
expect_exit 0
expect_in_log -F 'stopped cleanly'
expect_not_in_log -E 'level=(error|warn)'
say "ok"

# ---- configuration ------------------------------------------------------------------------

say "bad settings: --check names the line; an unknown listener fails at start"
site '{ name = "in"; module = "ingest_http";
    max_items = 0; }'
plantd_run -c "$CONF" --check
expect_exit 2
expect_in_log -F "site.conf:$(line_of "$CONF" 'max_items = 0'): instance \"in\" (module ingest_http): must be 1 or more, not 0"
site '{ name = "in"; module = "ingest_http";
    listener = "nope"; }'
plantd_run -c "$CONF"
expect_exit 2
expect_in_log -F "site.conf:$(line_of "$CONF" 'listener = "nope"'): instance \"in\" (module ingest_http): init failed: no listener \"nope\" in this site"
say "ok"
