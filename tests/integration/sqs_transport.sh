#!/usr/bin/env bash
# transport_sqs (issue 7): 10,000 readings leave one plantd through an SQS
# queue (fauxqs on loopback) and arrive in another plantd's internal topic,
# each once.
#
# Node a: readings POSTed as NDJSON to ingest_http land in the durable queue
# "out", which transport_sqs forwards (SendMessageBatch) to the SQS queue
# "readings" (resolved by name: GetQueueUrl, then CreateQueue). Node b:
# transport_sqs long-polls "readings" and publishes on "from.sqs"; queue
# "got" (deduplicating on the plantd id) feeds a log_sink file. Checked:
# - with the aws command, before b runs: the SQS message is the reading's
#   JSON text as ingested, with attributes plantd.topic, plantd.id (the bus
#   message id) and plantd.ts;
# - a FIFO queue (readings.fifo, created with FifoQueue): MessageGroupId is
#   the reading's "location", MessageDeduplicationId its plantd id;
# - the 10,000 readings reach b's file once each (jq: ids r-0000000 ..
#   r-0009999, no other line); counters agree: a sent 10,000, b received and
#   deleted 10,000; a's queue and the SQS queue end empty;
# - both nodes stop cleanly, b's long polls cancelled.
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

N=10000
start_fauxqs 0

sqs_node_conf a <<CONF
queues = (
  { name = "out"; subscribe = [ "sensor.raw" ]; durable = true; store = "site";
    max_depth = 200000; visibility_timeout = "60s"; },
  { name = "fifo.out"; subscribe = [ "sensor.fifo" ]; }
);
plugins = (
  { name = "ingest"; module = "ingest_http"; },
  { name = "sqs_out"; module = "transport_sqs"; queue = "out"; queue_name = "readings";
    endpoint = "$FAUXQS_URL"; retry_max = "1s"; request_timeout = "5s"; },
  { name = "sqs_fifo"; module = "transport_sqs"; queue = "fifo.out";
    queue_name = "readings.fifo"; endpoint = "$FAUXQS_URL"; group_id_field = "location"; }
);
CONF

sqs_node_conf b <<CONF
queues = ( { name = "got"; subscribe = [ "from.sqs" ]; max_depth = 200000; } );
plugins = (
  { name = "sqs_in"; module = "transport_sqs"; publish_topic = "from.sqs";
    queue_name = "readings"; endpoint = "$FAUXQS_URL"; wait_seconds = 2; pollers = 2;
    retry_max = "1s"; },
  { name = "sink"; module = "log_sink"; queue = "got"; path = "got.jsonl"; }
);
CONF
GOT=$TEST_TMP/b/data/got.jsonl

say "node a forwards to SQS: the message as the aws command sees it"
start_node a
wait_for_log 'inst=sqs_out msg="queue readings: http://[^ ]*/readings"' 15
ingest a 0 3
wait_until 15 "a sent 3" counter_at_least a sqs_out sent 3
url=$(aws_cli sqs get-queue-url --queue-name readings | jq -r .QueueUrl)
expect_in_log -F "queue readings: $url"
got=$(aws_cli sqs receive-message --queue-url "$url" --max-number-of-messages 10 \
  --message-attribute-names All --visibility-timeout 0)
[[ $(jq '.Messages | length' <<<"$got") -ge 1 ]] || aws_fail "no message in SQS: $got"
first=$(jq -c '.Messages | map(select(.Body | fromjson | .id == "r-0000000")) | .[0]' <<<"$got")
[[ $first != null ]] || aws_fail "r-0000000 not among the messages: $got"
want_body=$(seq 0 0 | awk '{printf "{\"id\":\"r-%07d\",\"sensor_id\":\"L%02d-S%04d\",\"location\":\"L%02d\",\"value\":%d.25,\"note\":\"q\\\"uote \\u00e9\"}",$1,$1%8,$1%1000,$1%8,$1%40}')
[[ $(jq -r .Body <<<"$first") == "$want_body" ]] ||
  aws_fail "SQS body $(jq .Body <<<"$first") is not the reading as ingested: $want_body"
jq -e '.MessageAttributes["plantd.topic"] == {"StringValue": "sensor.raw", "DataType": "String"}
    and (.MessageAttributes["plantd.id"].StringValue | test("^[0-9a-f]{24}$"))
    and .MessageAttributes["plantd.ts"].DataType == "Number"
    and (.MessageAttributes["plantd.ts"].StringValue | tonumber > 1600000000000)' \
  <<<"$first" >/dev/null || aws_fail "unexpected attributes: $first"

say "FIFO: group id from the reading's location, dedup id = plantd id"
ingest_fifo() {
  seq 0 2 | awk '{printf "{\"id\":\"f-%d\",\"location\":\"L%02d\"}\n",$1,$1+3}' >"$TEST_TMP/fifo.ndjson"
  req POST "${NODE_INGEST[a]}/v1/ingest/sensor.fifo" -H 'Content-Type: application/x-ndjson' \
    --data-binary @"$TEST_TMP/fifo.ndjson"
  expect_code 202 "ingest into sensor.fifo"
}
ingest_fifo
wait_until 15 "sqs_fifo sent 3" counter_at_least a sqs_fifo sent 3
furl=$(aws_cli sqs get-queue-url --queue-name readings.fifo | jq -r .QueueUrl)
[[ $(aws_cli sqs get-queue-attributes --queue-url "$furl" --attribute-names FifoQueue |
  jq -r .Attributes.FifoQueue) == true ]] || aws_fail "readings.fifo is not a FIFO queue"
fgot=$(aws_cli sqs receive-message --queue-url "$furl" --max-number-of-messages 10 \
  --attribute-names All --message-attribute-names All)
jq -e '.Messages | length == 3 and all(.[];
    (.Body | fromjson | .location) == .Attributes.MessageGroupId
    and .Attributes.MessageDeduplicationId == .MessageAttributes["plantd.id"].StringValue)' \
  <<<"$fgot" >/dev/null || aws_fail "FIFO attributes are not as configured: $fgot"

say "node b receives: $N readings, each once"
start_node b
wait_for_log 'inst=sqs_in msg="queue readings: ' 15
t0=$(date +%s%N)
ingest a 3 $((N - 3)) 500
use_node b
wait_until 90 "$N distinct readings in b's file" sink_distinct_at_least "$GOT" "$N"
t1=$(date +%s%N)
say "$N readings a -> SQS -> b in $(((t1 - t0) / 1000000)) ms"
wait_until 15 "b deleted $N" counter_at_least b sqs_in deleted "$N"
use_node a
wait_until 15 "a's queue out empty" queue_empty a out
sink_exactly "$GOT" 0 "$N"
[[ $(counter a sqs_out sent) == "$N" ]] || fail "a sent $(counter a sqs_out sent), not $N"
[[ $(counter b sqs_in received) == "$N" ]] || fail "b received $(counter b sqs_in received), not $N"
[[ $(counter b sqs_in deleted) == "$N" ]] || fail "b deleted $(counter b sqs_in deleted), not $N"
[[ $(counter a sqs_out send_failed) == 0 ]] || fail "a counted failed sends without a failure"
attrs=$(aws_cli sqs get-queue-attributes --queue-url "$url" --attribute-names All)
jq -e '.Attributes.ApproximateNumberOfMessages == "0" and .Attributes.ApproximateNumberOfMessagesNotVisible == "0"' \
  <<<"$attrs" >/dev/null || aws_fail "the SQS queue is not empty: $attrs"

say "both nodes stop cleanly"
stop_node b 10
stop_node a 10
expect_not_in_log -E 'level=(error|warn)' "$TEST_TMP/a/plantd.log"
expect_not_in_log -E 'level=(error|warn)' "$TEST_TMP/b/plantd.log"
say "ok"
