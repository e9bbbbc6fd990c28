#!/usr/bin/env bash
# Two nodes, one SQS queue, one DynamoDB registry (issue 7): node a takes
# readings over HTTP and sends them to SQS; nodes b and c consume that queue
# as competing consumers and run the sensor plugin on a shared
# store_dynamodb store. Some readings are sent twice (as SQS's at-least-once
# may deliver them): the sensor's claim on the shared store lets exactly one
# node process each reading id, once. Totals agree: processed on b and c add
# up to the distinct readings, duplicates to the repeats, and no reading
# appears on both nodes.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib_aws.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib_aws.sh"
# shellcheck source-path=SCRIPTDIR source=lib_sqs.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib_sqs.sh"

command -v jq >/dev/null || fail "jq is needed"
need_aws_peers
SQS_PLUGINS="$SQS_PLUGINS:$PLANTD_BUILD_ROOT/plugins/sensor:$PLANTD_BUILD_ROOT/plugins/store_dynamodb"

N=2000   # distinct readings
DUP=300  # of them sent a second time
start_fauxqs 0
start_dynalite
aws_cli sqs create-queue --queue-name readings >/dev/null || aws_fail "create-queue"
url=$(aws_cli sqs get-queue-url --queue-name readings | jq -r .QueueUrl)

sqs_node_conf a <<CONF
queues = ( { name = "out"; subscribe = [ "sensor.thermistor.raw" ]; durable = true;
             store = "site"; max_depth = 100000; } );
plugins = (
  { name = "ingest"; module = "ingest_http"; },
  { name = "sqs_out"; module = "transport_sqs"; queue = "out"; queue_url = "$url";
    endpoint = "$FAUXQS_URL"; retry_max = "1s"; }
);
CONF
for n in b c; do
  mkdir -p "$TEST_TMP/$n"
  cat >"$TEST_TMP/$n/site.conf" <<CONF
site = "node-$n";
data_dir = "$TEST_TMP/$n/data";
plugin_path = "$SQS_PLUGINS";
workers = 2;
listeners = (
  { name = "admin"; admin = true; address = "127.0.0.1"; port = 0; },
  { name = "ingest"; address = "127.0.0.1"; port = 0; }
);
stores = ( { name = "shared"; backend = "dynamodb"; table = "registry";
             endpoint = "$DYNALITE_URL"; } );
queues = ( { name = "sensor.raw"; subscribe = [ "sensor.*.raw" ]; max_depth = 100000; } );
plugins = (
  { name = "sqs_in"; module = "transport_sqs"; publish_topic = "sensor.thermistor.raw";
    queue_url = "$url"; endpoint = "$FAUXQS_URL"; wait_seconds = 1; pollers = 2;
    visibility_timeout = "60s"; retry_max = "1s"; },
  { name = "sensor"; module = "sensor"; queue = "sensor.raw"; store = "shared";
    idempotency_window = "1h"; },
  { name = "out"; module = "log_sink"; subscribe = [ "sensor.*.processed" ]; path = "out.jsonl"; }
);
CONF
done
OUT_B=$TEST_TMP/b/data/out.jsonl
OUT_C=$TEST_TMP/c/data/out.jsonl

start_node b
start_node c
start_node a

# readings FIRST COUNT: thermistor readings r-FIRST.. as NDJSON on node a
readings() {
  seq "$1" $(($1 + $2 - 1)) |
    awk '{printf "{\"id\":\"r-%07d\",\"sensor_id\":\"L%02d-S%04d\",\"location\":\"L%02d\",\"type\":\"thermistor\",\"ts\":1700000000000,\"resistance\":%d}\n",$1,$1%8+1,$1%50,$1%8+1,9000+$1%2000}' \
      >"$TEST_TMP/batch.ndjson"
  req POST "${NODE_INGEST[a]}/v1/ingest/sensor.thermistor.raw" \
    -H 'Content-Type: application/x-ndjson' --data-binary @"$TEST_TMP/batch.ndjson"
  expect_code 202 "ingest of r-$1..+$2 on a"
}
say "a sends $N readings, $DUP of them twice; b and c compete for them"
for ((i = 0; i < N; i += 500)); do
  readings "$i" 500
done
readings 0 "$DUP"

all_out() {
  (($(sink_lines "$OUT_B") + $(sink_lines "$OUT_C") >= N))
}
use_node a
wait_until 120 "$N processed readings on b and c together" all_out
deleted_all() {
  (($(counter b sqs_in deleted) + $(counter c sqs_in deleted) >= N + DUP))
}
wait_until 30 "b and c took all $((N + DUP)) messages off SQS" deleted_all
idle() {
  local n
  for n in b c; do
    req GET "${NODE_ADMIN[$n]}/v1/queues"
    jq -e '.queues[] | select(.name == "sensor.raw") | .depth == 0' <<<"$BODY" >/dev/null || return 1
  done
}
wait_until 30 "b and c idle" idle

stop_node a 10
stop_node b 20
stop_node c 20
nb=$(sink_lines "$OUT_B")
nc=$(sink_lines "$OUT_C")
say "b processed $nb, c processed $nc"
((nb > 0 && nc > 0)) || fail "one node processed nothing: b $nb, c $nc"
cat "$OUT_B" "$OUT_C" >"$TEST_TMP/all.jsonl"
sink_exactly "$TEST_TMP/all.jsonl" 0 "$N"
both=$(comm -12 <(jq -r .body.id "$OUT_B" | sort) <(jq -r .body.id "$OUT_C" | sort) | wc -l)
((both == 0)) || fail "$both readings were processed on both nodes"
stat_of() { # stat_of NODE FIELD: from the sensor's last line
  grep -o "sensor stopped: .*" "$TEST_TMP/$1/plantd.log" | tail -n 1 | sed -nE "s/.* $2=([0-9]+).*/\1/p"
}
pb=$(stat_of b processed) pc=$(stat_of c processed)
db=$(stat_of b duplicates) dc=$(stat_of c duplicates)
say "sensor: processed b $pb + c $pc, duplicates b $db + c $dc"
((pb + pc == N)) || fail "processed $pb + $pc, not $N"
((db + dc == DUP)) || fail "duplicates $db + $dc, not $DUP"
((pb == nb && pc == nc)) || fail "the sensors' counts (b $pb, c $pc) differ from their outputs (b $nb, c $nc)"
claims=$(aws_cli dynamodb scan --table-name registry --select COUNT | jq .Count)
((claims >= N)) || aws_fail "the shared registry holds $claims items, fewer than the $N claims"
say "ok"
