#!/usr/bin/env bash
# transport_sqs (issue 7): two plantd nodes consume one SQS queue as
# competing consumers; each reading is processed by exactly one of them.
#
# Node a forwards 10,000 readings to SQS queue "work" (fauxqs); nodes b and
# c both long-poll it (two pollers each) into their own log_sink files. SQS
# hands each message to one receiver and hides it for the visibility
# timeout, deleted by that node once published internally. Checked: both
# nodes got a share; the two files together hold r-0000000 .. r-0009999
# once each (no reading on both nodes, none twice on one); the counters
# agree: a sent 10,000 = b received + c received = b deleted + c deleted;
# the SQS queue ends empty. (The application-level registry on a shared
# store_dynamodb is store_dynamodb's test; this is the SQS side.)
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
aws_cli sqs create-queue --queue-name work >/dev/null || aws_fail "create-queue work"
url=$(aws_cli sqs get-queue-url --queue-name work | jq -r .QueueUrl)

sqs_node_conf a <<CONF
queues = (
  { name = "out"; subscribe = [ "sensor.raw" ]; durable = true; store = "site";
    max_depth = 200000; visibility_timeout = "60s"; }
);
plugins = (
  { name = "ingest"; module = "ingest_http"; },
  { name = "sqs_out"; module = "transport_sqs"; queue = "out"; queue_url = "$url";
    endpoint = "$FAUXQS_URL"; retry_max = "1s"; }
);
CONF
for n in b c; do
  sqs_node_conf "$n" <<CONF
queues = ( { name = "got"; subscribe = [ "from.sqs" ]; max_depth = 200000; } );
plugins = (
  { name = "sqs_in"; module = "transport_sqs"; publish_topic = "from.sqs";
    queue_url = "$url"; endpoint = "$FAUXQS_URL"; wait_seconds = 1; pollers = 2;
    max_messages = 10; visibility_timeout = "30s"; retry_max = "1s"; },
  { name = "sink"; module = "log_sink"; queue = "got"; path = "got.jsonl"; }
);
CONF
done
GOT_B=$TEST_TMP/b/data/got.jsonl
GOT_C=$TEST_TMP/c/data/got.jsonl

start_node b
start_node c
start_node a

say "a sends $N readings; b and c compete for them"
ingest a 0 "$N" 500

both_total() {
  (($(sink_lines "$GOT_B") + $(sink_lines "$GOT_C") >= N))
}
use_node a
wait_until 90 "$N readings on b and c together" both_total
wait_until 15 "a's queue out empty" queue_empty a out
deleted_all() {
  (($(counter b sqs_in deleted) + $(counter c sqs_in deleted) >= N))
}
wait_until 15 "b and c deleted $N" deleted_all

nb=$(sink_lines "$GOT_B")
nc=$(sink_lines "$GOT_C")
say "b processed $nb, c processed $nc"
((nb > 0 && nc > 0)) || fail "one node got nothing: b $nb, c $nc"
cat "$GOT_B" "$GOT_C" >"$TEST_TMP/all.jsonl"
sink_exactly "$TEST_TMP/all.jsonl" 0 "$N"
both=$(comm -12 <(jq -r .body.id "$GOT_B" | sort) <(jq -r .body.id "$GOT_C" | sort) | wc -l)
((both == 0)) || fail "$both readings were processed on both nodes"

sent=$(counter a sqs_out sent)
rb=$(counter b sqs_in received)
rc=$(counter c sqs_in received)
db=$(counter b sqs_in deleted)
dc=$(counter c sqs_in deleted)
((sent == N)) || fail "a sent $sent, not $N"
((rb + rc == N)) || fail "b received $rb and c $rc: not $N together"
((db == rb && dc == rc)) || fail "deleted (b $db, c $dc) differ from received (b $rb, c $rc)"
((rb == nb && rc == nc)) || fail "received (b $rb, c $rc) differ from the files (b $nb, c $nc)"
attrs=$(aws_cli sqs get-queue-attributes --queue-url "$url" --attribute-names All)
jq -e '.Attributes.ApproximateNumberOfMessages == "0" and .Attributes.ApproximateNumberOfMessagesNotVisible == "0"' \
  <<<"$attrs" >/dev/null || aws_fail "the SQS queue is not empty: $attrs"

stop_node a 10
stop_node b 10
stop_node c 10
say "ok"
