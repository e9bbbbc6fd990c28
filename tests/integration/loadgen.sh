#!/usr/bin/env bash
# plantd-loadgen (issue 6) against a real plantd: as fast as possible, every
# request accepted and every reading on the bus in the sensor plugin's shape;
# in batches; with a queue that fills, the refusals (429) counted and the
# run still a success; without the listener's token, a failure (exit 1).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v jq >/dev/null || fail "jq is needed"
LOADGEN=$PLANTD_BUILD_ROOT/tools/plantd-loadgen
CONF=$TEST_TMP/site.conf
DATA=$TEST_TMP/data
TOKEN=loadgen-test-token

cat >"$CONF" <<CONF
site = "it-loadgen";
data_dir = "data";
plugin_path = "$PLANTD_BUILD_ROOT/plugins/ingest_http";
listeners = (
  { name = "admin"; admin = true; port = 0; },
  { name = "ingest"; port = 0; threads = 2; tokens = ["$TOKEN"]; }
);
queues = (
  { name = "raw"; subscribe = ["sensor.thermistor.raw"]; },
  { name = "small"; subscribe = ["small"]; max_depth = 50; }
);
plugins = ( { name = "ingest"; module = "ingest_http"; } );
CONF
start_plantd -c "$CONF"
wait_urls "$DATA"
A=$(url_of "$DATA" admin)
I=$(url_of "$DATA" ingest)/v1/ingest

depth() {
  req GET "$A/v1/queues"
  jq --arg q "$1" '.queues[] | select(.name == $q) | .depth' <<<"$BODY"
}

say "300 single readings and 20 batches of 10, as fast as possible"
"$LOADGEN" --rate 0 -n 300 -C 4 --seed 7 --json -q --token "$TOKEN" \
  "$I/sensor.thermistor.raw" >"$TEST_TMP/s1.json" || fail "loadgen failed: $(cat "$TEST_TMP/s1.json")"
[[ $(jq -r '"\(.sent) \(.accepted) \(.refused) \(.failed)"' "$TEST_TMP/s1.json") == "300 300 0 0" ]] ||
  fail "summary: $(cat "$TEST_TMP/s1.json")"
jq -e '.p50_ms > 0 and .p99_ms >= .p50_ms' "$TEST_TMP/s1.json" >/dev/null || fail "latencies: $(cat "$TEST_TMP/s1.json")"
"$LOADGEN" --rate 0 -n 20 -b 10 -C 2 --seed 8 --json -q --token "$TOKEN" \
  "$I/sensor.thermistor.raw" >"$TEST_TMP/s2.json" || fail "batched loadgen failed"
[[ $(jq -r '"\(.readings_sent) \(.readings_accepted)"' "$TEST_TMP/s2.json") == "200 200" ]] ||
  fail "batched summary: $(cat "$TEST_TMP/s2.json")"
[[ $(depth raw) == 500 ]] || fail "queue raw holds $(depth raw), expected 500"
req GET "$A/v1/queues/raw/messages?peek=1"
jq -e '.messages[0].body | (.id | type) == "string" and (.sensor_id | test("^L0[1-8]-S[0-9]{4}$"))
  and .type == "thermistor" and .resistance >= 0.1 and .resistance <= 20500' <<<"$BODY" >/dev/null ||
  fail "a reading's shape: $BODY"

say "a queue that fills: refusals are counted, not failures"
"$LOADGEN" --rate 0 -n 80 -C 1 --json -q --token "$TOKEN" "$I/small" >"$TEST_TMP/s3.json" ||
  fail "429s made the run fail: $(cat "$TEST_TMP/s3.json")"
[[ $(jq -r '"\(.accepted) \(.refused) \(.failed)"' "$TEST_TMP/s3.json") == "50 30 0" ]] ||
  fail "with a full queue: $(cat "$TEST_TMP/s3.json")"

say "without the token every request fails: exit 1"
status=0
"$LOADGEN" --rate 0 -n 5 --json -q "$I/sensor.thermistor.raw" >"$TEST_TMP/s4.json" || status=$?
[[ $status == 1 ]] || fail "loadgen without a token exited $status"
[[ $(jq -r .failed "$TEST_TMP/s4.json") == 5 ]] || fail "no-token summary: $(cat "$TEST_TMP/s4.json")"

stop_plantd
expect_exit 0
say "ok"
