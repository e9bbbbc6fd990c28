#!/usr/bin/env bash
# store_dynamodb facing bad answers (issue 7): a plantd whose sensor plugin
# keeps its registry and claims in a dynamodb store reached through a fault
# proxy (plugins/store_dynamodb/tests/fault_proxy.cjs) in front of dynalite.
# Throttling is retried with backoff, then reported with the service's code
# and message; a 5xx or a lost connection is retried for reads, reported at
# once for a conditional write (whose outcome would be unknown); an answer
# that is not JSON, or JSON that is not DynamoDB's, is an error and never
# read as "no item"; wrong credentials are reported as the service says.
# Throughout, plantd keeps running, every reading comes back after a
# failure and is processed exactly once, and the store is healthy again
# after it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib_aws.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib_aws.sh"

command -v jq >/dev/null || fail "jq is needed"
need_aws_peers
start_dynalite

node "$PLANTD_SOURCE_ROOT/plugins/store_dynamodb/tests/fault_proxy.cjs" "$DYNALITE_URL" \
  </dev/null >"$TEST_TMP/proxy.out" 2>"$TEST_TMP/proxy.log" &
PROXY_PID=$!
_BG_PIDS+=("$PROXY_PID")
proxy_ready() { grep -q '^ready [0-9]' "$TEST_TMP/proxy.out"; }
wait_until $((10 * TIME_FACTOR)) "the fault proxy" proxy_ready
PROXY=http://127.0.0.1:$(sed -n 's/^ready \([0-9]*\)$/\1/p' "$TEST_TMP/proxy.out")

TABLE=plantd-it-faults
CONF=$TEST_TMP/site.conf
DATA=$TEST_TMP/data
cat >"$CONF" <<CONF
site = "it-ddb-faults";
data_dir = "data";
plugin_path = "$PLANTD_BUILD_ROOT/plugins";
aws = { region = "us-east-1"; access_key_id = "test"; secret_access_key = "test"; };
listeners = ( { name = "admin"; admin = true; address = "127.0.0.1"; port = 0; } );
stores = ( { name = "reg"; backend = "dynamodb"; table = "$TABLE"; endpoint = "$PROXY";
             max_retries = 3; timeout = "5s"; } );
queues = (
  { name = "sensor.raw"; subscribe = [ "sensor.*.raw" ]; visibility_timeout = "3s";
    max_receive = 100; dead_letter = "sensor.raw.dlq"; },
  { name = "sensor.raw.dlq"; }
);
plugins = (
  { name = "out"; module = "log_sink"; subscribe = [ "sensor.*.processed" ]; path = "out.jsonl"; },
  { name = "sensor"; module = "sensor"; queue = "sensor.raw"; store = "reg"; }
);
CONF
start_plantd -c "$CONF"
wait_urls "$DATA"
ADMIN=$(url_of "$DATA" admin)

inject() { # inject OP MODE COUNT
  curl -s --max-time 5 -o /dev/null -X POST --data "{\"op\":\"$1\",\"mode\":\"$2\",\"count\":$3}" \
    "$PROXY/__faults" || fail "cannot reach the fault proxy"
}
served() { # served MODE: faults of MODE answered so far
  curl -s --max-time 5 "$PROXY/__faults" | jq -r --arg m "$1" '.served[$m] // 0'
}
no_pending() { [[ $(curl -s --max-time 5 "$PROXY/__faults" | jq '.pending | length') == 0 ]]; }
N=0
send() { # send SENSOR: one new reading (id rN) of SENSOR
  N=$((N + 1))
  local body code
  body=$(printf '{"id":"r%d","sensor_id":"%s","location":"L01","type":"thermistor","ts":1,"resistance":10000}' \
    "$N" "$1")
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST --data-binary "$body" \
    "$ADMIN/v1/topics/sensor.thermistor.raw") || code=000
  [[ $code == 2* ]] || fail "publishing reading r$N answered $code"
}
processed_is() { [[ -f $DATA/out.jsonl && $(wc -l <"$DATA/out.jsonl") == "$1" ]]; }
all_processed() { wait_until $((30 * TIME_FACTOR)) "$N readings processed" processed_is "$N"; }
stores() { curl -s --max-time 5 "$ADMIN/v1/stores" | jq -c '.stores[] | select(.name == "reg")'; }
healthy() { [[ $(stores | jq -r .healthy) == true ]]; }

say "a healthy start"
send L01-S0001
all_processed
wait_until 10 "the store healthy" healthy

# (a batch of one claim is one PutItem; a new sensor's registry entry is
# read with a GetItem)
say "throttling for a while: retried with backoff, nothing to report"
inject PutItem throttle 2
send L01-S0001
all_processed
[[ $(served throttle) == 2 ]] || fail "expected 2 throttled requests, the proxy served $(served throttle)"
(($(stores | jq .detail.retries) >= 2)) || fail "no retries counted: $(stores)"
expect_not_in_log -F 'ThrottlingException'
healthy || fail "throttling that passed made the store unhealthy: $(stores)"

say "throttling that lasts: reported with the service's code and message; the reading comes back"
mark=$(log_lines)
inject PutItem provisioned 4
send L01-S0001
wait_for_log "store reg: PutItem on table $TABLE: ProvisionedThroughputExceededException: The level of configured provisioned throughput for the table was exceeded. \\(after 4 attempts\\)" 20 "$mark"
wait_for_log 'cannot claim readings: i/o error \(they come back later\)' 10 "$mark"
all_processed
healthy || fail "the store is still unhealthy after a write went through: $(stores)"

say "a 5xx on a conditional write: reported at once, not retried"
mark=$(log_lines)
inject PutItem 500 1
send L01-S0001
wait_for_log "store reg: PutItem on table $TABLE: InternalServerError: Internal server error\"" 20 "$mark"
all_processed
[[ $(served 500) == 1 ]] || fail "the write was retried after a 5xx"

say "5xx, a proxy's HTML page and a lost connection on a read: retried"
mark=$(log_lines)
inject GetItem 500 1
inject GetItem html502 1
inject GetItem drop 1
send L04-S0001 # a new sensor: its registry entry is read
all_processed
wait_until 10 "the faults served" no_pending
if log_since "$mark" | grep -E 'level=(warn|error)'; then
  fail "retried reads were reported"
fi

say "an answer that is not JSON: an error, the reading comes back"
mark=$(log_lines)
inject GetItem malformed 1
send L02-S0001 # a new sensor: its registry entry is read (GetItem)
wait_for_log "store reg: GetItem on table $TABLE: MalformedAnswer: HTTP 200 with a body that is not JSON: \\{" 20 "$mark"
all_processed

say "JSON that is not DynamoDB's: an error, never an empty answer (\"no item\")"
mark=$(log_lines)
inject GetItem unrelated 1
send L03-S0001
wait_for_log "store reg: GetItem on table $TABLE: MalformedAnswer: HTTP 200 with an answer not shaped as DynamoDB's: \\{\\\\\"QueueUrl" 20 "$mark"
all_processed

say "wrong credentials: the service's code and message"
mark=$(log_lines)
inject '*' creds 1
send L01-S0001
wait_for_log "store reg: [A-Za-z]+ on table $TABLE: UnrecognizedClientException: The security token included in the request is invalid." 20 "$mark"
all_processed
wait_until 10 "the store healthy again" healthy

say "every reading once, every sensor registered once, plantd unharmed"
for i in $(seq 1 "$N"); do
  n=$(jq -r --arg id "r$i" 'select(.body.id == $id) | .body.id' "$DATA/out.jsonl" | wc -l)
  [[ $n == 1 ]] || fail "reading r$i was processed $n times"
done
aws_cli dynamodb scan --table-name "$TABLE" --consistent-read >"$TEST_TMP/scan.json" || aws_fail "scan failed"
jq -e '[.Items[] | select(.sk.B | @base64d | startswith("sensor/"))] | length == 4' "$TEST_TMP/scan.json" >/dev/null ||
  fail "expected 4 sensors registered: $(jq -c '[.Items[] | .sk.B | @base64d]' "$TEST_TMP/scan.json")"
jq -e --argjson n "$N" '[.Items[] | select(.sk.B | @base64d | startswith("reading/"))] | length == $n' \
  "$TEST_TMP/scan.json" >/dev/null || fail "expected $N claims"
plantd_running || fail "plantd ended"
stop_plantd TERM 20
expect_exit 0
say "PASS"
