#!/usr/bin/env bash
# The sensor plugin, from raw readings to processed ones: temperatures by
# Steinhart–Hart (checked here with jq's own arithmetic), the registry rules
# (first seen -> registered, out of range -> broken, never back, also after
# a restart), idempotency (the same reading twice is processed once, also
# across a restart), notifications for every unexpected status, and bad
# readings in the dead-letter queue with their reasons.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONF=$TEST_TMP/site.conf
DATA=$TEST_TMP/data
STATS=$DATA/stats.json
write_site() { # write_site READINGS_FILE
  cat >"$CONF" <<CONF
site = "it-sensor";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/plugins";
stores = ( { name = "site"; backend = "sqlite"; path = "site.db"; } );
queues = (
  { name = "sensor.raw"; subscribe = [ "sensor.*.raw" ]; durable = true; store = "site";
    max_receive = 5; dead_letter = "sensor.raw.dlq"; },
  { name = "sensor.raw.dlq"; durable = true; store = "site"; },
  { name = "idle"; }
);
plugins = (
  { name = "out"; module = "log_sink"; subscribe = [ "sensor.*.processed" ]; path = "out.jsonl"; },
  { name = "notes"; module = "log_sink"; subscribe = [ "notify.sensor" ]; path = "notes.jsonl"; },
  { name = "stats"; module = "fx_consumer"; queue = "idle"; stats = "$STATS"; },
  { name = "sensor"; module = "sensor"; queue = "sensor.raw"; store = "site"; },
  { name = "replay"; module = "fx_replay"; file = "$1"; topic = "sensor.thermistor.raw";
    every = "100ms"; }
);
CONF
}

r() { # r ID SENSOR RESISTANCE
  local loc=${2%%-*}
  printf '{"id":"%s","sensor_id":"%s","location":"%s","type":"thermistor","ts":1,"resistance":%s}\n' \
    "$1" "$2" "$loc" "$3"
}

{
  r r1 L01-S0001 10000
  r r2 L01-S0001 1e9    # open circuit: out of range, broken
  r r3 L01-S0001 5000   # in range, but broken for good
  r r4 L02-S0001 100    # about 127 C: too hot
  r r5 L02-S0002 20400  # about -13.4 C: too cold
  r r1 L01-S0001 10000  # the same reading again
  r r9 L03-S0001 0.1    # the bottom of the range
  echo '[1,2]'
  echo '{"id":"b1","location":"L01","type":"thermistor","ts":1,"resistance":5}'
  echo '{"id":"b2","sensor_id":"L01-S0003","location":"L01","type":"thermistor","ts":1,"resistance":"100"}'
  echo '{"id":"b3","sensor_id":"L01-S0004","location":"L01","type":"thermistor","ts":1,"resistance":-5}'
  echo '{"id":"b4","sensor_id":"L01-S0005","location":"L01","type":"flux","ts":1,"value":5}'
} >"$TEST_TMP/run1.jsonl"

dlq_depth() { jq -r '.queues["sensor.raw.dlq"].depth' "$STATS" 2>/dev/null || echo -1; }
raw_depth() { jq -r '.queues["sensor.raw"].depth' "$STATS" 2>/dev/null || echo -1; }
dlq_is() { [[ $(dlq_depth) == "$1" ]]; }
raw_empty() { [[ $(raw_depth) == 0 ]]; }

say "run 1: seven readings (one a duplicate) and five bad ones"
write_site "$TEST_TMP/run1.jsonl"
start_plantd -c "$CONF"
wait_for_log 'replayed 12' 20
wait_until 20 "the bad readings are dead-lettered" dlq_is 5
wait_until 20 "the raw queue is drained" raw_empty
wait_until 20 "six processed readings" file_lines_at_least "$DATA/out.jsonl" 6
stop_plantd TERM 20
expect_exit 0

PROC=$DATA/out.jsonl
NOTES=$DATA/notes.jsonl
[[ $(wc -l <"$PROC") == 6 ]] || fail "expected 6 processed readings, got $(wc -l <"$PROC")"
status_of() { jq -r --arg id "$1" 'select(.body.id == $id) | .body.status' "$PROC"; }
for want in r1:ok r2:broken r3:broken r4:too_hot r5:too_cold r9:too_hot; do
  got=$(status_of "${want%%:*}")
  [[ $got == "${want#*:}" ]] || fail "reading ${want%%:*}: status '$got', expected '${want#*:}'"
done
[[ $(jq -r 'select(.body.id == "r1") | .body.id' "$PROC" | wc -l) == 1 ]] ||
  fail "reading r1 was processed more than once"

say "temperatures agree with Steinhart–Hart worked out by jq"
jq -e -s '
  def sh(r): (r | log) as $x | 1 / (1.40e-3 + 2.37e-4 * $x + 9.90e-8 * $x * $x * $x);
  map(.body | select(.status != "broken")) | length == 4 and all(.[];
    (.temp_k - sh(.resistance) | fabs) < 1e-9 and
    (.temp_c - (sh(.resistance) - 273.15) | fabs) < 1e-9 and
    .value == .temp_c and .unit == "C" and (.processed_at | type) == "number")' "$PROC" >/dev/null ||
  fail "temperatures differ from Steinhart–Hart: $(jq -c '.body' "$PROC")"
jq -e -s 'map(.body | select(.status == "broken")) | all(.[]; has("temp_c") | not)' "$PROC" >/dev/null ||
  fail "a broken sensor's reading carries a temperature"
# the raw fields travel on untouched
jq -e -s 'map(.body) | all(.[]; . as $b | .ts == 1 and ($b.sensor_id | startswith($b.location)))' "$PROC" >/dev/null ||
  fail "raw fields changed on the way"
[[ $(jq -r 'select(.body.id == "r4") | .topic' "$PROC") == sensor.thermistor.processed ]] ||
  fail "processed readings should go to sensor.thermistor.processed"

say "a notification for every unexpected status"
[[ $(wc -l <"$NOTES") == 5 ]] || fail "expected 5 notifications, got $(wc -l <"$NOTES")"
jq -e -s 'map(.body) | (map(select(.severity == "critical")) | length) == 2 and
  (map(.reading_id) | sort) == ["r2","r3","r4","r5","r9"] and
  (map(select(.reading_id == "r4"))[0].message | test("^L02-S0001 too hot: 12[0-9]\\.[0-9] C$"))' \
  "$NOTES" >/dev/null || fail "unexpected notifications: $(jq -c .body "$NOTES")"

say "the registry: three sensors registered, one broken, with its reason"
reg() { sqlite3 "$DATA/site.db" "SELECT value FROM items WHERE key = CAST('sensor/$1' AS BLOB)"; }
[[ $(reg L01-S0001 | jq -r .broken) == true ]] || fail "L01-S0001 should be broken: $(reg L01-S0001)"
[[ $(reg L01-S0001 | jq -r .reason) == *"outside 0.1..20500"* ]] ||
  fail "the registry should say why: $(reg L01-S0001)"
for id in L02-S0001 L02-S0002 L03-S0001; do
  [[ $(reg $id | jq -r .broken) == false ]] || fail "$id should be registered and working: $(reg $id)"
done
[[ -z $(reg L01-S0003) ]] || fail "a bad reading registered its sensor"

say "bad readings are kept with their reasons"
for reason in 'not a JSON object' 'missing \\"sensor_id\\"' '\\"resistance\\" must be a number' \
  'negative resistance -5 ohm' 'unknown sensor type \\"flux\\"'; do
  expect_in_log -E "bad reading [0-9a-f]+: $reason"
done
expect_in_log -F 'sensor stopped: processed=6 duplicates=1 rejected=5 broken=1 notifications=5'

say "run 2, a new process: the duplicate is still known, the broken sensor still broken"
{
  r r1 L01-S0001 10000
  r r7 L01-S0001 5000
  r r8 L04-S0001 10000
  # strings with escapes take the tree's way: the same result
  echo '{"id":"r\u0031\u0030","sensor_id":"L04-S\u00302","location":"L04","type":"thermistor","ts":1,"resistance":10000}'
} >"$TEST_TMP/run2.jsonl"
: >"$PROC"
write_site "$TEST_TMP/run2.jsonl"
LOG=$TEST_TMP/plantd2.log
start_plantd -c "$CONF"
wait_for_log 'replayed 4' 20
wait_until 20 "three processed readings" file_lines_at_least "$PROC" 3
wait_until 20 "the raw queue is drained" raw_empty
stop_plantd TERM 20
expect_exit 0
[[ $(wc -l <"$PROC") == 3 ]] || fail "expected 3 processed readings, got: $(cat "$PROC")"
[[ $(status_of r7) == broken ]] || fail "r7 of the broken sensor: status '$(status_of r7)'"
[[ $(status_of r8) == ok ]] || fail "r8: status '$(status_of r8)'"
[[ $(status_of r10) == ok ]] || fail "r10 (escaped strings): status '$(status_of r10)'"
[[ $(reg L04-S02 | jq -r .broken) == false ]] || fail "L04-S02 (escaped) should be registered: $(reg L04-S02)"
expect_in_log -F 'sensor stopped: processed=3 duplicates=1 rejected=0'
[[ $(dlq_depth) == 5 ]] || fail "the dead-letter queue should still hold 5, not $(dlq_depth)"

say "bad models are config errors naming the key"
cat >"$TEST_TMP/bad.conf" <<CONF
site = "it-sensor";
data_dir = "data";
plugin_path = "$PLANTD_BUILD_ROOT/plugins";
stores = ( { name = "site"; backend = "memory"; } );
queues = ( { name = "q"; } );
plugins = (
  { name = "sensor"; module = "sensor"; queue = "q"; store = "site";
    models = { thermistor = { min = 10.0; max = 5.0; }; }; }
);
CONF
LOG=$TEST_TMP/check.log
plantd_run --check -c "$TEST_TMP/bad.conf"
expect_exit 2
expect_in_log -E 'bad.conf:[0-9]+.*models.*min \(10\) must be below max \(5\)'

say "ok: temperatures, registry, idempotency, notifications and dead letters as expected"
