#!/usr/bin/env bash
# transport_sqs (issue 7): SQS goes away in the middle of a run and comes
# back; the sender's backlog drains, nothing is lost, nothing arrives twice,
# and the backoff shows on /metrics meanwhile.
#
# Node a forwards its durable queue "out" to SQS queue "readings" (fauxqs);
# node b receives it into a log_sink file through queue "got", which
# deduplicates on the plantd id (an SQS message sent twice, e.g. after a
# timeout the server had in fact processed, is kept once).
#
# 1. Restart: 5,000 readings go through; fauxqs is stopped; 2,500 more are
#    ingested into a and wait in its durable queue while a retries (the
#    `retries` counter and the `backoff_ms` gauge on a's /metrics are above
#    0, a pauses its consumer and says why, b's long polls fail and are
#    retried); after several seconds fauxqs comes back on the same port,
#    empty: both nodes find the queue gone (NonExistentQueue), a re-creates
#    it, 2,500 more are ingested while a catches up; b ends with the 10,000
#    readings once each, a's queue empty, the gauge back at 0.
# 2. Freeze: fauxqs is stopped with SIGSTOP while a sends (requests time
#    out: transport errors, retried) and resumed with SIGCONT after several
#    seconds: b ends with 15,000 readings once each.
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

# How long each outage lasts: the scenario itself, not a wait for something.
OUTAGE_S=4

start_fauxqs 0

sqs_node_conf a <<CONF
queues = (
  { name = "out"; subscribe = [ "sensor.raw" ]; durable = true; store = "site";
    max_depth = 200000; visibility_timeout = "60s"; }
);
plugins = (
  { name = "ingest"; module = "ingest_http"; },
  { name = "sqs_out"; module = "transport_sqs"; queue = "out"; queue_name = "readings";
    endpoint = "$FAUXQS_URL"; retry_base = "100ms"; retry_max = "1s"; hold_max = "3s";
    request_timeout = "2s"; log_interval = "1s"; }
);
CONF

sqs_node_conf b <<CONF
queues = ( { name = "got"; subscribe = [ "from.sqs" ]; max_depth = 200000; } );
plugins = (
  { name = "sqs_in"; module = "transport_sqs"; publish_topic = "from.sqs";
    queue_name = "readings"; endpoint = "$FAUXQS_URL"; wait_seconds = 1; pollers = 2;
    retry_base = "100ms"; retry_max = "1s"; request_timeout = "2s"; },
  { name = "sink"; module = "log_sink"; queue = "got"; path = "got.jsonl"; }
);
CONF
GOT=$TEST_TMP/b/data/got.jsonl

start_node a
start_node b
use_node a
wait_for_log 'inst=sqs_out msg="queue readings: ' 15

# settle N: b has N readings and deleted them all from SQS.
settle() {
  use_node b
  wait_until 60 "$1 distinct readings on b" sink_distinct_at_least "$GOT" "$1"
  wait_until 20 "b deleted what it received" b_deleted_all
}
b_deleted_all() {
  (($(counter b sqs_in deleted) >= $(counter b sqs_in received) - $(dups_dropped)))
}
# SQS duplicates b published and queue "got" dropped as such.
dups_dropped() {
  curl -sf --max-time "$CURL_MAX" "${NODE_ADMIN[b]}/v1/queues" |
    jq -r '.queues[] | select(.name == "got") | .deduplicated'
}

say "restart: 5,000 readings before the outage"
ingest a 0 5000 500
settle 5000

say "fauxqs stopped: 2,500 readings wait in a's durable queue"
stop_fauxqs
outage_start=$(date +%s%N)
ingest a 5000 2500 500
use_node a
wait_until 15 "retries counted on a" counter_at_least a sqs_out retries 1
wait_until 15 "backoff_ms above 0 on a's /metrics" gauge_above a sqs_out backoff_ms 0
wait_for_log 'inst=sqs_out msg="paused: ' 15
expect_in_log -E 'inst=sqs_out msg="SendMessageBatch \(retry in at most [0-9]+ ms\): NoAnswer: '
grep -q '^plantd_instance_gauge{instance="sqs_out",name="backoff_ms"} [1-9]' <<<"$(curl -sf "${NODE_ADMIN[a]}/metrics")" ||
  fail "no backoff_ms above 0 in a's /metrics"
left=$(queue_left a out)
((left > 0)) || fail "a's queue out is empty during the outage"
say "during the outage: a holds $left readings, retries=$(counter a sqs_out retries), backoff_ms=$(gauge a sqs_out backoff_ms)"
use_node b
wait_until 15 "b's receive failures" counter_at_least b sqs_in receive_failed 1
_now_us
rest_us=$((outage_start / 1000 + OUTAGE_S * 1000000 - _NOW_US))
if ((rest_us > 0)); then
  sleep "$((rest_us / 1000000)).$(printf '%06d' $((rest_us % 1000000)))"
fi

say "fauxqs back (empty): the queue is re-created and the backlog drains"
restart_fauxqs
ingest a 7500 2500 500
settle 10000
use_node a
wait_until 15 "a's queue out empty" queue_empty a out
wait_until 15 "backoff_ms back at 0" test "$(gauge a sqs_out backoff_ms)" = 0
expect_in_log -E 'inst=sqs_out msg="SQS answers again: consuming queue out"'
expect_in_log -E 'inst=sqs_out msg="SendMessageBatch works again after [0-9]+ failed attempts'
# whichever node asked first found the queue gone, with the service's words
# (grep on the files: `cat | grep -q` fails under pipefail when grep quits early)
grep -qF 'QueueDoesNotExist (AWS.SimpleQueueService.NonExistentQueue): The specified queue does not exist.' \
  "$TEST_TMP/a/plantd.log" "$TEST_TMP/b/plantd.log" ||
  fail "neither node logged the NonExistentQueue error"
use_node b
expect_in_log -E 'inst=sqs_in msg="ReceiveMessage works again after'
sink_exactly "$GOT" 0 10000
say "restart: 10,000 once each; a sent $(counter a sqs_out sent), retried $(counter a sqs_out retries)"

say "freeze: fauxqs stopped (SIGSTOP) while a sends"
ingest a 10000 2500 250
kill -STOP "$FAUXQS_PID"
outage_start=$(date +%s%N)
retries0=$(counter a sqs_out retries)
ingest a 12500 2500 250
use_node a
wait_until 15 "a retries timed-out sends" counter_at_least a sqs_out retries $((retries0 + 1))
wait_until 15 "backoff_ms above 0 on a" gauge_above a sqs_out backoff_ms 0
expect_in_log -E 'inst=sqs_out msg="SendMessageBatch \(retry in at most [0-9]+ ms\): Timeout: '
_now_us
rest_us=$((outage_start / 1000 + OUTAGE_S * 1000000 - _NOW_US))
if ((rest_us > 0)); then
  sleep "$((rest_us / 1000000)).$(printf '%06d' $((rest_us % 1000000)))"
fi
kill -CONT "$FAUXQS_PID"
settle 15000
use_node a
wait_until 15 "a's queue out empty" queue_empty a out
sink_exactly "$GOT" 0 15000
say "freeze: 15,000 once each; b received $(counter b sqs_in received) (SQS duplicates kept once: $(dups_dropped))"

stop_node b 10
stop_node a 10
say "ok"
