#!/usr/bin/env bash
# transport_sns (issue 7): SNS fan-out between plantd nodes on fauxqs, and
# bad answers from a scripted fake endpoint.
#
# Fan-out (fauxqs, three plantd processes a, b and c, each with its own
# data dir and admin listener on port 0):
# - each node creates its SQS queue node-X-deploy and subscribes it to SNS
#   topic plantd-deploy (created by name) with raw delivery — checked with
#   the aws command: three sqs subscriptions, RawMessageDelivery true;
# - a deploy event published on node a's internal topic cicd.events (admin
#   API) reaches cicd.events.in on a, b and c, read back through each
#   node's admin API (peek of queue deploy.in): its body as published, its
#   origin in attributes plantd_topic and plantd_id;
# - 25 more at once (PublishBatch, 10 a call): every node has each of the
#   26 exactly once; counters sent on a and received on each node agree;
# - outage: fauxqs stopped, an event published on a waits in a's queue
#   sns.out while retries are counted and the error is logged; fauxqs back
#   on the same port (empty): a re-creates the topic and SNS takes the event
#   (sent = 27, sns.out empty), every node re-creates and re-subscribes its
#   queue, and a later event reaches every node (what SNS took before the
#   nodes re-subscribed reaches only the subscriptions that existed then:
#   SNS's semantics, not checked);
# - each node stops cleanly (status 0) and at once, its long poll cancelled.
#
# Bad answers (fake_aws.js, one plantd): 500 InternalFailure, 400 Throttling,
# 403 InvalidClientTokenId, 200 with malformed XML, 200 with a JSON body,
# 200 with XML of another action and an answer too late for `timeout` are
# each retried with the
# service's code and message in the log and counted, then the message is
# taken once; a PublishBatch answer failing one entry (not the sender's
# fault) retries that entry only; one failing as the sender's fault
# (InvalidParameter) dead-letters the message with the reason; plantd is
# healthy afterwards and stops cleanly. --check refuses a bad configuration.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib_aws.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib_aws.sh"

command -v jq >/dev/null || fail "jq is needed"
command -v curl >/dev/null || fail "curl is needed"
need_aws_peers

PLUGINS=$PLANTD_BUILD_ROOT/plugins/transport_sns
NODES=(a b c)
declare -A NODE_PID NODE_URL

# ---- nodes -------------------------------------------------------------------------

# node_conf NAME ENDPOINT: node NAME's site: the SNS transport out of
# cicd.events and into cicd.events.in, and queue deploy.in to read it back.
node_conf() {
  local n=$1 endpoint=$2
  mkdir -p "$TEST_TMP/$n"
  cat >"$TEST_TMP/$n/site.conf" <<CONF
site = "node-$n";
data_dir = "data";
plugin_path = "$PLUGINS";
listeners = ( { name = "admin"; admin = true; address = "127.0.0.1"; port = 0; } );
queues = ( { name = "deploy.in"; subscribe = [ "cicd.events.in" ]; } );
plugins = (
  { name = "sns"; module = "transport_sns"; endpoint = "$endpoint";
    topic_name = "plantd-deploy"; subscribe = [ "cicd.events" ];
    receive_queue = "node-$n-deploy"; publish_topic = "cicd.events.in";
    retry_base = "50ms"; retry_max = "1s"; timeout = "5s"; }
);
CONF
}

# use_node NAME: the lib.sh helpers (logs, waits) now look at node NAME.
use_node() {
  LOG=$TEST_TMP/$1/plantd.log
  OUT=$TEST_TMP/$1/plantd.out
  PLANTD_PID=${NODE_PID[$1]:-}
  STATUS=
}

start_node() {
  use_node "$1"
  rm -f "$TEST_TMP/$1/data/listeners.json"
  start_plantd -c "$TEST_TMP/$1/site.conf"
  NODE_PID[$1]=$PLANTD_PID
  wait_urls "$TEST_TMP/$1/data"
  NODE_URL[$1]=$(url_of "$TEST_TMP/$1/data" admin)
}

stop_node() {
  use_node "$1"
  stop_plantd TERM "${2:-10}"
  expect_exit 0
}

# publish NODE TOPIC JSON: through NODE's admin API; the message id in MSG_ID.
publish() {
  req POST "${NODE_URL[$1]}/v1/topics/$2" -H 'Content-Type: application/json' --data-binary "$3"
  expect_code 202 "publish on $1 $2"
  MSG_ID=$(jq -r .id <<<"$BODY")
}

# deploy_ids NODE: the "id" of every message waiting in NODE's deploy.in,
# one a line.
deploy_ids() {
  curl -sf --max-time $((10 * TIME_FACTOR)) "${NODE_URL[$1]}/v1/queues/deploy.in/messages?peek=1000" |
    jq -r '.messages[].body.id'
}

deploy_count_is() {
  [[ $(deploy_ids "$1" | wc -l) -eq $2 ]]
}

has_deploy() {
  deploy_ids "$1" | grep -qx -- "$2"
}

# counter NODE_URL INSTANCE NAME: a plugin counter from /metrics (0 when
# absent).
counter() {
  local v
  v=$(curl -sf --max-time $((10 * TIME_FACTOR)) "$1/metrics" |
    sed -n "s/^plantd_instance_counter{instance=\"$2\",name=\"$3\"} \\([0-9]*\\)\$/\\1/p")
  echo "${v:-0}"
}

counter_at_least() {
  (($(counter "$1" "$2" "$3") >= $4))
}

queue_depth() {
  curl -sf --max-time $((10 * TIME_FACTOR)) "$1/v1/queues" |
    jq -r --arg q "$2" '.queues[] | select(.name == $q) | .depth + .in_flight'
}

queue_empty() {
  [[ $(queue_depth "$1" "$2") == 0 ]]
}

# ---- fan-out on fauxqs -----------------------------------------------------------------

say "fan-out: fauxqs and three nodes"
start_fauxqs 0
for n in "${NODES[@]}"; do
  node_conf "$n" "$FAUXQS_URL"
  start_node "$n"
done
for n in "${NODES[@]}"; do
  use_node "$n"
  wait_for_log 'receiving SNS topic arn:[^ ]*:plantd-deploy through SQS queue [^ ]*node-'"$n"'-deploy' 15
  wait_for_log 'forwarding queue sns.out to SNS topic' 15
done

topic_arn=$(aws_cli sns list-topics | jq -r '.Topics[].TopicArn' | grep ':plantd-deploy$') ||
  aws_fail "no SNS topic plantd-deploy"
subs=$(aws_cli sns list-subscriptions-by-topic --topic-arn "$topic_arn")
[[ $(jq '[.Subscriptions[] | select(.Protocol == "sqs")] | length' <<<"$subs") == 3 ]] ||
  aws_fail "expected 3 sqs subscriptions: $subs"
for n in "${NODES[@]}"; do
  sub=$(jq -r --arg q "node-$n-deploy" '.Subscriptions[] | select(.Endpoint | endswith(":" + $q)) | .SubscriptionArn' <<<"$subs")
  [[ -n $sub ]] || aws_fail "no subscription for node-$n-deploy: $subs"
  raw=$(aws_cli sns get-subscription-attributes --subscription-arn "$sub" | jq -r .Attributes.RawMessageDelivery)
  [[ $raw == true ]] || aws_fail "node-$n-deploy: RawMessageDelivery is '$raw'"
done

say "one deploy event from a reaches a, b and c"
publish a cicd.events '{"event":"deploy","service":"plant-api","version":"1.4.2","id":"dep-1"}'
first_id=$MSG_ID
for n in "${NODES[@]}"; do
  use_node "$n"
  wait_until 15 "dep-1 on node $n" has_deploy "$n" dep-1
  got=$(curl -sf "${NODE_URL[$n]}/v1/queues/deploy.in/messages?peek=1")
  jq -e --arg id "$first_id" '.messages[0] | .topic == "cicd.events.in"
      and .body == {"event":"deploy","service":"plant-api","version":"1.4.2","id":"dep-1"}
      and .attributes.plantd_topic == "cicd.events" and .attributes.plantd_id == $id
      and (.attributes.sqs_message_id | length > 0)' <<<"$got" >/dev/null ||
    fail "node $n: unexpected message: $got"
done

say "25 more at once: each node has each of the 26 exactly once"
for i in $(seq 2 26); do
  publish a cicd.events "{\"event\":\"deploy\",\"service\":\"plant-api\",\"version\":\"1.4.$i\",\"id\":\"dep-$i\"}"
done
for n in "${NODES[@]}"; do
  use_node "$n"
  wait_until 20 "26 events on node $n" deploy_count_is "$n" 26
  want=$(seq 1 26 | sed 's/^/dep-/' | sort)
  got=$(deploy_ids "$n" | sort)
  [[ $got == "$want" ]] || fail "node $n: events are not dep-1..dep-26 once each: $(tr '\n' ' ' <<<"$got")"
done
use_node a
wait_until 10 "sent = 26 on a" counter_at_least "${NODE_URL[a]}" sns sent 26
[[ $(counter "${NODE_URL[a]}" sns sent) == 26 ]] || fail "a sent $(counter "${NODE_URL[a]}" sns sent), not 26"
for n in "${NODES[@]}"; do
  wait_until 10 "received = 26 on $n" counter_at_least "${NODE_URL[$n]}" sns received 26
  [[ $(counter "${NODE_URL[$n]}" sns received) == 26 ]] ||
    fail "node $n received $(counter "${NODE_URL[$n]}" sns received), not 26"
done
[[ $(counter "${NODE_URL[a]}" sns failed) == 0 ]] || fail "a counted failures without an outage"

say "outage: fauxqs stopped, an event waits on a, retried"
stop_fauxqs
use_node a
mark=$(log_lines)
retries0=$(counter "${NODE_URL[a]}" sns retries)
publish a cicd.events '{"event":"deploy","service":"plant-api","version":"1.5.0","id":"dep-27"}'
wait_for_log 'SNS PublishBatch to arn:[^ ]*plantd-deploy failed: no answer' 15 "$mark"
wait_until 15 "retries counted on a" counter_at_least "${NODE_URL[a]}" sns retries $((retries0 + 2))
[[ $(queue_depth "${NODE_URL[a]}" sns.out) == 1 ]] || fail "dep-27 is not waiting in a's sns.out"
[[ $(counter "${NODE_URL[a]}" sns sent) == 26 ]] || fail "a counted a send during the outage"

say "fauxqs back (empty): topic, queues and subscriptions made again; dep-27 taken"
marks=()
for n in "${NODES[@]}"; do
  use_node "$n"
  marks+=("$(log_lines)")
done
restart_fauxqs
use_node a
wait_until 20 "sent = 27 on a" counter_at_least "${NODE_URL[a]}" sns sent 27
wait_until 10 "sns.out empty on a" queue_empty "${NODE_URL[a]}" sns.out
i=0
for n in "${NODES[@]}"; do
  use_node "$n"
  wait_for_log "receiving SNS topic arn:[^ ]*:plantd-deploy through SQS queue [^ ]*node-$n-deploy" 20 "${marks[$i]}"
  i=$((i + 1))
done
publish a cicd.events '{"event":"deploy","service":"plant-api","version":"1.5.1","id":"dep-28"}'
for n in "${NODES[@]}"; do
  use_node "$n"
  wait_until 15 "dep-28 on node $n" has_deploy "$n" dep-28
done

say "the nodes stop cleanly, long polls cancelled"
for n in "${NODES[@]}"; do
  stop_node "$n" 10
done
stop_fauxqs

# ---- bad answers -------------------------------------------------------------------------

say "bad answers: a scripted fake endpoint"
start_fake_aws
FAKE_ARN=arn:aws:sns:us-east-1:000000000000:fake
mkdir -p "$TEST_TMP/d"
cat >"$TEST_TMP/d/site.conf" <<CONF
site = "node-d";
data_dir = "data";
plugin_path = "$PLUGINS";
listeners = ( { name = "admin"; admin = true; address = "127.0.0.1"; port = 0; } );
queues = (
  { name = "outq"; subscribe = [ "ops.strict" ]; dead_letter = "outq.dlq"; },
  { name = "outq.dlq"; }
);
plugins = (
  { name = "sns"; module = "transport_sns"; endpoint = "$FAKE_AWS_URL"; topic_arn = "$FAKE_ARN";
    subscribe = [ "ops.out" ]; attributes = [ "origin" ];
    retry_base = "50ms"; retry_max = "400ms"; timeout = "1s"; },
  { name = "snsq"; module = "transport_sns"; endpoint = "$FAKE_AWS_URL"; topic_arn = "$FAKE_ARN";
    queue = "outq"; retry_base = "50ms"; retry_max = "400ms"; timeout = "1s"; }
);
CONF
start_node d
use_node d
D=${NODE_URL[d]}
wait_for_log 'inst=sns msg="forwarding queue sns.out' 10

accepted_count() {
  fake_aws_get accepted | jq --arg id "$1" '[.[] | select(. == $id)] | length'
}

accepted_once() {
  [[ $(accepted_count "$1") == 1 ]]
}

fake_aws_script '[
  {"status": 500, "body": "<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code><Message>We encountered an internal error. Please try again.</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"},
  {"status": 400, "body": "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>r-2</RequestId></ErrorResponse>"},
  {"status": 403, "body": "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error></ErrorResponse>"},
  {"status": 200, "body": "<PublishBatchResponse><PublishBatchResult><Successful><member><Id>e0</Id>"},
  {"status": 200, "body": "{\"QueueUrls\": []}", "headers": {"content-type": "application/x-amz-json-1.0"}},
  {"status": 200, "body": "<?xml version=\"1.0\"?><ListQueuesResponse><ListQueuesResult/></ListQueuesResponse>"},
  {"status": 200, "delay_ms": 3000, "body": "<late/>"}
]'
mark=$(log_lines)
publish d ops.out '{"check":"bad answers","n":1}'
id1=$MSG_ID
req POST "$D/v1/topics/ops.out" -H 'Content-Type: application/json' -d '{"n":2}'
wait_until 30 "the fake took $id1 after seven bad answers" accepted_once "$id1"
log_since "$mark" >"$TEST_TMP/d/bad.log" # logfmt: quotes in msg="..." come as \"
for text in 'HTTP 500 InternalFailure: We encountered an internal error. Please try again. (request id' \
  'HTTP 400 Throttling: Rate exceeded' \
  'HTTP 403 InvalidClientTokenId: The security token included in the request is invalid.' \
  'unexpected answer MalformedXML: not well-formed XML: <PublishBatchResponse><PublishBatchResult>' \
  'unexpected answer MalformedXML: not well-formed XML: {\"QueueUrls\": []}' \
  'unexpected answer UnexpectedAnswer: not a PublishBatchResponse with a PublishBatchResult: <?xml' \
  'no answer: '; do
  expect_in_log -F "$text" "$TEST_TMP/d/bad.log"
done
grep -F 'InvalidClientTokenId' "$TEST_TMP/d/bad.log" | grep -q 'level=error' ||
  fail "bad credentials are not logged as an error"
grep -F 'Throttling' "$TEST_TMP/d/bad.log" | grep -q 'level=warn' ||
  fail "throttling is not logged as a warning"
wait_until 10 "call_errors = 7" counter_at_least "$D" sns call_errors 7
[[ $(counter "$D" sns call_errors) == 7 ]] || fail "call_errors $(counter "$D" sns call_errors), not 7"
counter_at_least "$D" sns failed 7 || fail "failed $(counter "$D" sns failed), expected >= 7"
counter_at_least "$D" sns retries 7 || fail "retries $(counter "$D" sns retries), expected >= 7"
wait_until 10 "sent = 2" counter_at_least "$D" sns sent 2
[[ $(accepted_count "$id1") == 1 ]] || fail "$id1 was taken $(accepted_count "$id1") times"
wait_until 10 "sns.out empty" queue_empty "$D" sns.out
# the carried attribute
req POST "$D/v1/topics/ops.out" -H 'Content-Type: application/json' -d '{"n":3}'
plantd_id=$(jq -r .id <<<"$BODY")
wait_until 10 "n=3 taken" accepted_once "$plantd_id"
fake_aws_get requests | jq -e --arg id "$plantd_id" \
  '[.[] | .entries[] | select(.attributes.plantd_id == $id and .attributes.plantd_topic == "ops.out"
     and .message == "{\"n\":3}")] | length == 1' >/dev/null ||
  fail "the entry for $plantd_id lacks its message or attributes: $(fake_aws_get requests | jq -c '.[-1]')"

say "one entry failed (not the sender's fault): that entry alone is retried"
fake_aws_script '[{"kind": "partial", "code": "InternalError", "message": "try that one again", "sender_fault": false}]'
mark=$(log_lines)
publish d ops.out '{"n":4}'
id4=$MSG_ID
wait_until 10 "n=4 taken" accepted_once "$id4"
wait_for_log 'SNS refused 1 of 1 entries \(first: InternalError: try that one again\)' 5 "$mark"

say "one entry failed as the sender's fault: dead-lettered with the reason"
fake_aws_script '[{"kind": "partial", "code": "InvalidParameter", "message": "Invalid parameter: MessageAttributes", "sender_fault": true}]'
mark=$(log_lines)
publish d ops.strict '{"n":5}'
id5=$MSG_ID
dlq_has_it() {
  curl -sf "$D/v1/queues/outq.dlq/messages?peek=10" |
    jq -e --arg id "$id5" '.messages[] | select(.body == {"n":5})
      | .attributes.dlq_reason | contains("InvalidParameter: Invalid parameter: MessageAttributes")' >/dev/null
}
wait_until 10 "n=5 in outq.dlq" dlq_has_it
wait_for_log "message $id5 \\(topic ops.strict\\) dead-lettered: SNS refused it: InvalidParameter" 5 "$mark"
[[ $(counter "$D" snsq rejected) == 1 ]] || fail "snsq rejected $(counter "$D" snsq rejected), not 1"
[[ $(accepted_count "$id5") == 0 ]] || fail "the fake counted $id5 as taken"

say "healthy after all that, and a clean stop"
req GET "$D/healthz"
expect_code 200 "healthz after bad answers"
plantd_running || fail "plantd d is not running"
stop_node d 10

say "--check refuses bad settings"
cat >"$TEST_TMP/d/bad.conf" <<CONF
plugin_path = "$PLUGINS";
plugins = (
  { name = "sns"; module = "transport_sns"; endpoint = "http://127.0.0.1:9";
    topic_arn = "$FAKE_ARN"; topic_name = "both";
    subscribe = [ "x.*" ]; }
);
CONF
line=$(line_of "$TEST_TMP/d/bad.conf" 'topic_name')
LOG=$TEST_TMP/d/check.log
OUT=$TEST_TMP/d/check.out
PLANTD_PID=
plantd_run -c "$TEST_TMP/d/bad.conf" --check
expect_exit 2
expect_in_log -F "$TEST_TMP/d/bad.conf:$line: "
expect_in_log -F "set exactly one of topic_arn and topic_name"
cat >"$TEST_TMP/d/bad.conf" <<CONF
plugin_path = "$PLUGINS";
plugins = (
  { name = "sns"; module = "transport_sns"; endpoint = "http://127.0.0.1:9"; topic_name = "t";
    subscribe = [ "cicd.*" ]; receive_queue = "q"; publish_topic = "cicd.in"; }
);
CONF
plantd_run -c "$TEST_TMP/d/bad.conf" --check
expect_exit 2
expect_in_log -F 'matches subscribe pattern "cicd.*"'

say "ok"
