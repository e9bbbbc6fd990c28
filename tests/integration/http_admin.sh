#!/usr/bin/env bash
# The admin API (issue 6), with curl as the client: /healthz follows the
# instances' health callbacks (503 while a required one fails, 200 again
# after); /v1/plugins, /v1/topics, /v1/queues and /v1/stores describe the
# site; publish, peek (which consumes nothing), a dead-letter queue
# redriven to its source after a reload through POST /v1/reload fixed the
# consumer; tail streams live messages; /metrics passes the strict
# text-format check (promcheck) and counts what happened; unknown paths and
# methods get 404 and 405; plugin routes answer from the instance's worker,
# from a timer on another thread, and with 500 when the handler fails.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v jq >/dev/null || fail "jq is needed"
command -v curl >/dev/null || fail "curl is needed"

CONF=$TEST_TMP/site.conf
DATA=$TEST_TMP/data
HEALTHY=$TEST_TMP/healthy
ACKED=$TEST_TMP/acked

# site FAIL_EVERY: a consumer that nacks every FAIL_EVERY-th delivery (1:
# all of them, so that everything ends in the dead-letter queue).
site() {
  cat >"$CONF" <<CONF
site = "it-admin";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/plugins/store_sqlite";
listeners = (
  { name = "admin"; admin = true; port = 0; timeout = "1s"; },
  { name = "ingest"; port = 0; threads = 2; }
);
stores = ( { name = "main"; backend = "sqlite"; path = "main.db"; } );
queues = (
  { name = "work"; subscribe = ["work.*"]; max_receive = 1; dead_letter = "work.dlq";
    visibility_timeout = "200ms"; },
  { name = "work.dlq"; },
  { name = "small"; subscribe = ["small"]; max_depth = 2; }
);
plugins = (
  { name = "web"; module = "fx_http"; healthy_file = "$HEALTHY"; slow = "300ms"; },
  { name = "worker"; module = "fx_consumer"; queue = "work"; fail_every = $1;
    acked = "$ACKED"; }
);
CONF
}

site 1
touch "$HEALTHY" "$ACKED"
start_plantd -c "$CONF"
wait_urls "$DATA"
A=$(url_of "$DATA" admin)
I=$(url_of "$DATA" ingest)
[[ $A == http://127.0.0.1:* && $I == http://127.0.0.1:* && $A != "$I" ]] ||
  fail "listeners.json: admin $A, ingest $I"
expect_in_log -F "listener \\\"admin\\\" on $A (admin API)"

say "healthz: 200, then 503 while a required instance is unhealthy, then 200"
req GET "$A/healthz"
expect_code 200 "healthz"
[[ $(jq -r .status <<<"$BODY") == ok ]] || fail "healthz status: $BODY"
[[ $(jq -r '.instances[] | select(.name == "web") | .healthy' <<<"$BODY") == true ]] ||
  fail "web not healthy: $BODY"
[[ $(jq -r '.stores[0].name + " " + (.stores[0].healthy | tostring)' <<<"$BODY") == "main true" ]] ||
  fail "stores in healthz: $BODY"
rm "$HEALTHY"
req GET "$A/healthz"
expect_code 503 "healthz with web unhealthy"
[[ $(jq -r .status <<<"$BODY") == failing ]] || fail "healthz status: $BODY"
[[ $(jq -r '.instances[] | select(.name == "web") | .detail.file' <<<"$BODY") == "$HEALTHY" ]] ||
  fail "the health callback's detail is missing: $BODY"
[[ $(jq -r '.instances[] | select(.name == "worker") | .healthy' <<<"$BODY") == true ]] ||
  fail "worker (no health callback, running) should be healthy: $BODY"
touch "$HEALTHY"
req GET "$A/healthz"
expect_code 200 "healthz after recovery"

say "plugins, stores"
abi=$(host_abi) # the plugins here are built with the host's SDK
req GET "$A/v1/plugins"
expect_code 200 "plugins"
[[ $(jq -r '[.plugins[] | .name + ":" + .module + ":" + .state + ":" + .abi] | join(" ")' <<<"$BODY") == \
  "store_sqlite:store_sqlite:running:$abi web:fx_http:running:$abi worker:fx_consumer:running:$abi" ]] ||
  fail "plugins: $BODY"
req GET "$A/v1/stores"
expect_code 200 "stores"
[[ $(jq -r '.stores[0] | .name + " " + .backend + " " + (.healthy | tostring)' <<<"$BODY") == "main sqlite true" ]] ||
  fail "stores: $BODY"

say "publish: 202 with the id, bad bodies and topics 400, a full queue 429"
for i in 1 2 3; do
  req POST "$A/v1/topics/work.job" -d "{\"job\":$i}"
  expect_code 202 "publish $i"
  ids[i]=$(jq -r .id <<<"$BODY")
done
req POST "$A/v1/topics/work.job" -d '{"job":'
expect_code 400 "publish with a truncated body"
[[ $(jq -r .error <<<"$BODY") == *"JSON"* ]] || fail "bad body message: $BODY"
req POST "$A/v1/topics/bad%20topic" -d '{}'
expect_code 400 "publish on a bad topic name"
req POST "$A/v1/topics/small" -d 1
expect_code 202 "small 1"
req POST "$A/v1/topics/small" -d 2
expect_code 202 "small 2"
req POST "$A/v1/topics/small" -d 3
expect_code 429 "publish into a full queue"
[[ $(header_of Retry-After) == 1 ]] || fail "429 without Retry-After: $(cat "$HDR_FILE")"

say "peek shows the messages and consumes nothing"
req GET "$A/v1/queues/small/messages?peek=5"
expect_code 200 "peek"
[[ $(jq -c '[.messages[].body]' <<<"$BODY") == "[1,2]" ]] || fail "peek: $BODY"
req GET "$A/v1/queues/small/messages?peek=5"
[[ $(jq '.messages | length' <<<"$BODY") == 2 ]] || fail "peek consumed: $BODY"
req GET "$A/v1/queues/small/messages?peek=0"
expect_code 400 "peek=0"
req GET "$A/v1/queues/nope/messages"
expect_code 404 "peek of an unknown queue"

say "every job fails once: all three in the dead-letter queue"
dlq_depth() {
  req GET "$A/v1/queues"
  [[ $(jq '.queues[] | select(.name == "work.dlq") | .depth' <<<"$BODY") == "$1" ]]
}
wait_until 10 "3 messages in work.dlq" dlq_depth 3
[[ $(jq '.queues[] | select(.name == "work") | .dead_lettered' <<<"$BODY") == 3 ]] ||
  fail "work.dead_lettered: $BODY"
[[ ! -s $ACKED ]] || fail "nothing should have been acked yet"

say "reload through the API with a consumer that acks, then redrive"
site 0
req POST "$A/v1/reload"
expect_code 200 "reload"
[[ $(jq -r .reloaded <<<"$BODY") == true ]] || fail "reload: $BODY"
req POST "$A/v1/queues/work.dlq/redrive"
expect_code 200 "redrive"
[[ $(jq -r .redriven <<<"$BODY") == 3 ]] || fail "redrive: $BODY"
wait_until 10 "3 jobs acked" file_lines_at_least "$ACKED" 3
for i in 1 2 3; do
  grep -qx "${ids[i]}" "$ACKED" || fail "job $i (${ids[i]}) was not acked after the redrive"
done
req POST "$A/v1/queues/nope/redrive"
expect_code 404 "redrive of an unknown queue"
printf 'plugins = ( { name = "x"; module = "fx_http"; nonsense = 1; } );\n' >>"$CONF"
req POST "$A/v1/reload"
expect_code 400 "reload of a bad config"
[[ $(jq -r .error <<<"$BODY") == *"site.conf:"* ]] || fail "reload error without file:line: $BODY"
site 0

say "tail streams what is published while it runs"
curl -sN --max-time $((3 * TIME_FACTOR)) "$A/v1/topics/tail.*/tail" >"$TEST_TMP/tail" &
tail_pid=$!
_BG_PIDS+=("$tail_pid")
# probes until one comes through: then the tail is subscribed
tail_subscribed() {
  req POST "$A/v1/topics/tail.probe" -d '"probe"'
  file_lines_at_least "$TEST_TMP/tail" 1
}
wait_until 5 "the tail to be subscribed" tail_subscribed
for i in 1 2 3; do
  req POST "$A/v1/topics/tail.t$i" -d "{\"n\":$i}"
  expect_code 202 "publish for tail"
done
req POST "$A/v1/topics/other" -d '{"n":0}'
tailed() {
  (($(grep -vc probe "$TEST_TMP/tail") >= 3))
}
wait_until 5 "3 tailed lines" tailed
[[ $(grep -v probe "$TEST_TMP/tail" | jq -c '[.topic, .body.n]' | tr '\n' ' ') == \
  '["tail.t1",1] ["tail.t2",2] ["tail.t3",3] ' ]] || fail "tail: $(cat "$TEST_TMP/tail")"
wait "$tail_pid" || true
_forget_pid "$tail_pid"

say "a tail on a quiet topic outlives the listener's 1 s idle timeout"
curl -sN --max-time $((6 * TIME_FACTOR)) "$A/v1/topics/quiet/tail" >"$TEST_TMP/quiet" &
quiet_pid=$!
_BG_PIDS+=("$quiet_pid")
sleep 2.5
req POST "$A/v1/topics/quiet" -d '{"late":true}'
expect_code 202 "publish on the quiet topic"
wait_until 5 "the late message on the quiet tail" file_lines_at_least "$TEST_TMP/quiet" 1
[[ $(jq -c .body "$TEST_TMP/quiet") == '{"late":true}' ]] || fail "quiet tail: $(cat "$TEST_TMP/quiet")"
kill "$quiet_pid" 2>/dev/null || true
wait "$quiet_pid" 2>/dev/null || true
_forget_pid "$quiet_pid"

say "web pages cannot use the admin API (Origin, a foreign Host)"
req GET "$A/healthz" -H 'Origin: https://evil.example'
expect_code 403 "a request with an Origin"
req POST "$A/v1/reload" -H 'Host: evil.example' -H 'Content-Type: text/plain' -d x
expect_code 403 "a request for a foreign Host"
[[ $(jq -r .error <<<"$BODY") == *"refuses requests from web pages"* ]] || fail "403: $BODY"
req GET "$A/nope%FF"
expect_code 404 "a path that is not UTF-8"
[[ $(jq -r .error <<<"$BODY") == "no route for GET /nope?" ]] || fail "404 body: $BODY"

say "plugin routes: worker, another thread, failure, prefix, thread-safe"
req GET "$I/fx/echo?a=1" -H 'X-Test: hello'
expect_code 200 "echo"
[[ $(jq -r '.instance + " " + .query + " " + .x_test' <<<"$BODY") == "web a=1 hello" ]] ||
  fail "echo: $BODY"
req POST "$I/fx/echo/some/thing" -d 'raw body'
expect_code 200 "echo prefix"
[[ $(jq -r '.tail + "|" + .body' <<<"$BODY") == "some/thing|raw body" ]] || fail "echo prefix: $BODY"
req GET "$I/fx/later"
expect_code 200 "an answer from a timer"
req GET "$I/fx/fail"
expect_code 500 "a failing handler"
[[ $(jq -r .error <<<"$BODY") == *"fixture fails on purpose"* ]] || fail "500 body: $BODY"
req POST "$I/fx/pub/work.via-route" -d '{"job":4}'
expect_code 202 "publish through a thread-safe route"
wait_until 10 "the 4th job acked" grep -qx "$(jq -r .id <<<"$BODY")" "$ACKED"
req GET "$I/nothing/here"
expect_code 404 "unknown path"
[[ $(jq -r .error <<<"$BODY") == "no route for GET /nothing/here" ]] || fail "404: $BODY"
req DELETE "$I/fx/echo"
expect_code 405 "wrong method"
req GET "$A/fx/echo"
expect_code 404 "plugin routes are on their own listener only"

say "metrics: a valid exposition that counts what happened"
req GET "$A/metrics"
expect_code 200 "metrics"
[[ $(header_of Content-Type) == "text/plain; version=0.0.4"* ]] || fail "metrics type"
printf '%s\n' "$BODY" >"$TEST_TMP/metrics"
"$PLANTD_BUILD_ROOT/tests/promcheck" <"$TEST_TMP/metrics" || fail "metrics do not parse"
metric() {
  awk -v k="$1" '$1 == k { print $2 }' "$TEST_TMP/metrics"
}
[[ $(metric 'plantd_queue_dead_lettered_total{queue="work"}') == 3 ]] || fail "dead_lettered metric"
[[ $(metric 'plantd_queue_depth{queue="small"}') == 2 ]] || fail "depth metric"
[[ $(metric 'plantd_topic_published_total{topic="small"}') == 2 ]] || fail "published metric"
[[ $(metric 'plantd_instance_handled_total{instance="worker",module="fx_consumer"}') -ge 4 ]] ||
  fail "handled metric: $(grep handled_total "$TEST_TMP/metrics")"
[[ $(metric 'plantd_instance_handler_seconds_count{instance="worker"}') -ge 1 ]] ||
  fail "histogram count"
[[ $(metric 'plantd_http_requests_total{listener="ingest",code="404"}') == 1 ]] ||
  fail "requests metric: $(grep http_requests "$TEST_TMP/metrics")"
grep -qF "abi=\"$abi\"} 1" "$TEST_TMP/metrics" || fail "build_info"
grep -q '^plantd_process_resident_memory_bytes [1-9][0-9]*$' "$TEST_TMP/metrics" || fail "rss"

stop_plantd
expect_exit 0
expect_in_log -F "stopped cleanly"
say "ok"
