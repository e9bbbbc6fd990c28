#!/usr/bin/env bash
# transport_sqs (issue 7): bad answers from SQS are retried or reported with
# the service's own code and message, never a crash, never a silent drop.
#
# tests/aws/fake_sqs.js plays SQS (JSON protocol): scripted answers first,
# then a small healthy in-memory SQS that records every message it enqueued
# (its plantd.id attribute). One plantd forwards its durable queue "out"
# (dead-letter queue "out.dlq") to the fake and receives the same SQS queue
# back into a log_sink file through queue "got" (deduplicating on the
# plantd id).
#
# 1. One reading meets, in turn: 400 ThrottlingException, 500 InternalError,
#    503 with an HTML body, 200 with malformed JSON, 200 with an unrelated
#    JSON object (a QueueUrl), 200 accounting for no entry, 403
#    InvalidClientTokenId, an answer later than request_timeout (which the
#    fake did carry out: SQS gets it twice), a connection reset (twice:
#    libcurl retries a request by itself, once, when a reused connection
#    dies before answering, so one reset alone may never show). Each is
#    logged with the service's code and message and counted by kind; the
#    reading is then taken, reaches the file once, and the out queue is
#    empty.
# 2. An entry failed as the server's fault (InternalError, SenderFault
#    false) is sent again alone and taken.
# 3. An entry refused twice as the sender's fault (InvalidMessageContents;
#    max_attempts = 2) goes to out.dlq with SQS's code and message as its
#    dlq_reason; it is not in SQS.
# 4. ReceiveMessage answered 500, malformed, unrelated, throttled; then a
#    message whose body is not JSON (sent with the aws command) arrives as a
#    JSON string; its DeleteMessageBatch answered 500 is tried again and the
#    message is deleted once.
# 5. /healthz shows the last error (code and message); plantd stops cleanly.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib_aws.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib_aws.sh"
# shellcheck source-path=SCRIPTDIR source=lib_sqs.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib_sqs.sh"

command -v jq >/dev/null || fail "jq is needed"
command -v curl >/dev/null || fail "curl is needed"
need_aws_peers

FAKE_SQS_URL=
FAKE_SQS_PID=

start_fake_sqs() {
  : >"$TEST_TMP/fake_sqs.out"
  node "$AWS_PEERS_DIR/fake_sqs.js" 0 </dev/null >"$TEST_TMP/fake_sqs.out" 2>>"$TEST_TMP/fake_aws.log" &
  FAKE_SQS_PID=$!
  _BG_PIDS+=("$FAKE_SQS_PID")
  wait_until 15 "fake_sqs.js ready" grep -q '^ready [0-9]' "$TEST_TMP/fake_sqs.out"
  FAKE_SQS_URL=http://127.0.0.1:$(sed -n 's/^ready \([0-9]*\)$/\1/p' "$TEST_TMP/fake_sqs.out")
}

# script JSON_ARRAY: append steps to the fake's script.
script() {
  curl -sf --max-time "$CURL_MAX" -X POST --data-binary "$1" "$FAKE_SQS_URL/_fake/script" >/dev/null ||
    aws_fail "the fake refused the script $1"
}

script_used() {
  [[ $(curl -sf --max-time "$CURL_MAX" "$FAKE_SQS_URL/_fake/script") == "[]" ]]
}

# accepted_count ID: how many times the fake enqueued the message with
# plantd.id ID.
accepted_count() {
  curl -sf --max-time "$CURL_MAX" "$FAKE_SQS_URL/_fake/accepted" | jq --arg id "$1" '[.[] | select(. == $id)] | length'
}

# ingest_one NAME ID_NUMBER: one reading; its bus message id in MSG_ID.
ingest_one() {
  req POST "${NODE_INGEST[$1]}/v1/ingest/sensor.raw" -H 'Content-Type: application/json' \
    --data-binary "{\"id\":\"r-$(printf '%07d' "$2")\",\"value\":$2}"
  expect_code 202 "ingest r-$2"
  MSG_ID=$(jq -r '.ids[0]' <<<"$BODY")
}

healthz() {
  curl -s --max-time "$CURL_MAX" "${NODE_ADMIN[a]}/healthz"
}

start_fake_sqs
url=$(AWS_CLI_ENDPOINT=$FAKE_SQS_URL aws_cli sqs create-queue --queue-name q1 | jq -r .QueueUrl)
[[ $url == http://* ]] || aws_fail "create-queue on the fake: $url"

sqs_node_conf a <<CONF
queues = (
  { name = "out"; subscribe = [ "sensor.raw" ]; durable = true; store = "site";
    visibility_timeout = "60s"; max_receive = 100; dead_letter = "out.dlq"; },
  { name = "out.dlq"; durable = true; store = "site"; },
  { name = "got"; subscribe = [ "from.sqs" ]; }
);
plugins = (
  { name = "ingest"; module = "ingest_http"; },
  { name = "sqs"; module = "transport_sqs"; queue = "out"; publish_topic = "from.sqs";
    queue_url = "$url"; endpoint = "$FAKE_SQS_URL"; retry_base = "50ms"; retry_max = "300ms";
    request_timeout = "1s"; hold_max = "60s"; max_attempts = 2; log_interval = "1ms";
    wait_seconds = 1; },
  { name = "sink"; module = "log_sink"; queue = "got"; path = "got.jsonl"; }
);
CONF
GOT=$TEST_TMP/a/data/got.jsonl

# every SendMessageBatch answer below goes to the one reading of step 1
script '[
 {"action": "SendMessageBatch", "status": 400,
  "body": "{\"__type\":\"com.amazonaws.sqs#ThrottlingException\",\"message\":\"Rate exceeded\"}"},
 {"action": "SendMessageBatch", "status": 500,
  "body": "{\"__type\":\"com.amazonaws.sqs#InternalError\",\"message\":\"We encountered an internal error. Please try again.\"}"},
 {"action": "SendMessageBatch", "status": 503, "headers": {"content-type": "text/html"},
  "body": "<html><body>Service Unavailable</body></html>"},
 {"action": "SendMessageBatch", "status": 200, "body": "{\"Successful\": [{\"Id\""},
 {"action": "SendMessageBatch", "status": 200, "body": "{\"QueueUrl\":\"http://127.0.0.1/000000000000/other\"}"},
 {"action": "SendMessageBatch", "status": 200, "body": "{\"Successful\":[],\"Failed\":[]}"},
 {"action": "SendMessageBatch", "status": 403,
  "body": "{\"__type\":\"com.amazon.coral.service#InvalidClientTokenId\",\"message\":\"The security token included in the request is invalid.\"}"},
 {"action": "SendMessageBatch", "delay_ms": 1500, "healthy": true},
 {"action": "SendMessageBatch", "kind": "reset"},
 {"action": "SendMessageBatch", "kind": "reset"}
]'

start_node a

say "1. one reading through ten bad answers"
ingest_one a 0
id0=$MSG_ID
wait_until 30 "the script used up" script_used
wait_until 15 "r-0 in the file" sink_distinct_at_least "$GOT" 1
wait_until 15 "a's queue out empty" queue_empty a out
expect_in_log -F 'ThrottlingException: Rate exceeded'
expect_in_log -F 'HTTP 500 InternalError: We encountered an internal error. Please try again.'
expect_in_log -F 'HTTP 503 HTTP503: an answer that is not JSON: <html><body>Service Unavailable</body></html>'
expect_in_log -F 'MalformedAnswer: not a JSON object: \"{\"Successful\": [{\"Id\"'
expect_in_log -F 'MalformedAnswer: SendMessageBatch answered 2xx with an answer that does not account for its entries'
expect_in_log -E 'level=error inst=sqs msg="SendMessageBatch \(retry in at most [0-9]+ ms\): HTTP 403 InvalidClientTokenId: The security token included in the request is invalid.'
expect_in_log -E 'SendMessageBatch \(retry in at most [0-9]+ ms\): Timeout: '
expect_in_log -E 'SendMessageBatch \(retry in at most [0-9]+ ms\): NoAnswer: '
[[ $(counter a sqs errors_throttling) == 1 ]] || fail "errors_throttling = $(counter a sqs errors_throttling)"
[[ $(counter a sqs errors_server) == 2 ]] || fail "errors_server = $(counter a sqs errors_server)"
[[ $(counter a sqs errors_malformed) == 3 ]] || fail "errors_malformed = $(counter a sqs errors_malformed)"
[[ $(counter a sqs errors_auth) == 1 ]] || fail "errors_auth = $(counter a sqs errors_auth)"
# (a slow machine may time out once more than scripted: at least)
(($(counter a sqs errors_transport) >= 2)) || fail "errors_transport = $(counter a sqs errors_transport)"
(($(counter a sqs retries) >= 9)) || fail "retries = $(counter a sqs retries), not 9"
n=$(accepted_count "$id0")
# the late answer was carried out by the server, then the retry: twice
((n >= 2)) || fail "SQS has r-0 $n times, expected 2 (the timed-out send and its retry)"
[[ $(counter a sqs sent) == 1 ]] || fail "sent = $(counter a sqs sent)"
sink_exactly "$GOT" 0 1
healthz >"$TEST_TMP/healthz.json"
jq -e '.. | objects | select(.last_error?) | .last_error | .code == "NoAnswer"' \
  "$TEST_TMP/healthz.json" >/dev/null || fail "/healthz shows no last_error: $(cat "$TEST_TMP/healthz.json")"

say "2. an entry failed as the server's fault is sent again"
script '[{"action": "SendMessageBatch", "kind": "partial", "code": "InternalError",
  "message": "Please try again", "sender_fault": false}]'
ingest_one a 1
id1=$MSG_ID
wait_until 15 "r-1 in the file" sink_distinct_at_least "$GOT" 2
expect_in_log -F 'SendMessageBatch entry: InternalError: Please try again'
[[ $(accepted_count "$id1") == 1 ]] || fail "SQS has r-1 $(accepted_count "$id1") times"
[[ $(counter a sqs errors_entries) == 1 ]] || fail "errors_entries = $(counter a sqs errors_entries)"

say "3. refused twice as the sender's fault: dead-lettered with SQS's reason"
script '[
 {"action": "SendMessageBatch", "kind": "partial", "code": "InvalidMessageContents",
  "message": "Invalid characters found.", "sender_fault": true},
 {"action": "SendMessageBatch", "kind": "partial", "code": "InvalidMessageContents",
  "message": "Invalid characters found.", "sender_fault": true}]'
ingest_one a 2
id2=$MSG_ID
dlq_has_one() {
  [[ $(queue_left a out.dlq) == 1 ]]
}
wait_until 15 "r-2 in out.dlq" dlq_has_one
dl=$(curl -sf "${NODE_ADMIN[a]}/v1/queues/out.dlq/messages?peek=1")
jq -e --arg id "$id2" '.messages[0] | .body.id == "r-0000002"
    and (.attributes.dlq_reason | contains("InvalidMessageContents: Invalid characters found."))' \
  <<<"$dl" >/dev/null || fail "out.dlq: $dl"
[[ $(accepted_count "$id2") == 0 ]] || fail "SQS has the refused r-2"
[[ $(counter a sqs rejected) == 1 ]] || fail "rejected = $(counter a sqs rejected)"
expect_in_log -F "message $id2 dead-lettered: SQS refused it (sender's fault): InvalidMessageContents: Invalid characters found."
queue_empty a out || fail "out is not empty"

say "4. ReceiveMessage and DeleteMessageBatch answered badly"
failed0=$(counter a sqs receive_failed)
script '[
 {"action": "ReceiveMessage", "status": 500,
  "body": "{\"__type\":\"com.amazonaws.sqs#InternalError\",\"message\":\"receive broke\"}"},
 {"action": "ReceiveMessage", "status": 200, "body": "{\"Messages\": [{\"MessageId\": 5"},
 {"action": "ReceiveMessage", "status": 200, "body": "{\"QueueUrl\":\"http://127.0.0.1/000000000000/q1\"}"},
 {"action": "ReceiveMessage", "status": 400, "headers": {"x-amzn-query-error": "AWS.SimpleQueueService.RequestThrottled;Sender"},
  "body": "{\"__type\":\"com.amazonaws.sqs#RequestThrottled\",\"message\":\"slow down\"}"},
 {"action": "DeleteMessageBatch", "status": 500,
  "body": "{\"__type\":\"com.amazonaws.sqs#InternalError\",\"message\":\"delete broke\"}"}
]'
AWS_CLI_ENDPOINT=$FAKE_SQS_URL aws_cli sqs send-message --queue-url "$url" \
  --message-body 'plain text, not JSON' >/dev/null || aws_fail "send-message to the fake"
plain_arrived() {
  jq -e 'select(.body == "plain text, not JSON")' "$GOT" 2>/dev/null | grep -q .
}
wait_until 20 "the plain message in the file" plain_arrived
wait_until 15 "the script used up" script_used
expect_in_log -F 'HTTP 500 InternalError: receive broke'
expect_in_log -F 'HTTP 400 RequestThrottled (AWS.SimpleQueueService.RequestThrottled): slow down'
[[ $(counter a sqs errors_throttling) == 2 ]] || fail "errors_throttling = $(counter a sqs errors_throttling), not 2"
expect_in_log -F 'MalformedAnswer: ReceiveMessage answered 2xx with an answer that is not a list of messages'
expect_in_log -F 'DeleteMessageBatch: HTTP 500 InternalError: delete broke'
(($(counter a sqs receive_failed) >= failed0 + 4)) || fail "receive_failed did not count 4 failures"
fake_queue_empty() {
  [[ $(AWS_CLI_ENDPOINT=$FAKE_SQS_URL aws_cli sqs get-queue-attributes --queue-url "$url" \
    --attribute-names All | jq -r .Attributes.ApproximateNumberOfMessages) == 0 ]]
}
wait_until 15 "the fake's queue empty (the delete tried again)" fake_queue_empty
[[ $(jq -c 'select(.body == "plain text, not JSON")' "$GOT" | wc -l) == 1 ]] ||
  fail "the plain message is not in the file once"

say "5. plantd healthy and running; stops cleanly"
sqs_healthy() {
  healthz | jq -e '.instances[] | select(.name == "sqs") | .healthy == true' >/dev/null
}
wait_until 15 "healthy again" sqs_healthy
stop_node a 10
say "ok"
