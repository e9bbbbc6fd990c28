#!/usr/bin/env bash
# The demo site as the README runs it: conf.d/ for 60 s. Only the data
# directory changes, and the simulators stop at 45 s so that what they sent
# has drained through the pipeline by the end. Then every reading the
# simulators counted was processed, the analytics' total equals the
# thermistor readings, and the dead-letter queue holds exactly the malformed
# readings. The live view printed its table and its summary.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cp -r "$PLANTD_SOURCE_ROOT/conf.d" "$TEST_TMP/conf.d"
cat >"$TEST_TMP/conf.d/env/ci.conf" <<CONF
data_dir = "$TEST_TMP/data";
plugins = (
  { name = "thermistors"; total_runtime = "45s"; },
  { name = "vibration"; total_runtime = "45s"; },
  { name = "pressure"; total_runtime = "45s"; },
  { name = "power"; total_runtime = "45s"; }
);
listeners = (
  { name = "admin"; port = 0; },
  { name = "ingest"; port = 0; }
);
CONF

say "check the demo configuration as shipped"
plantd_run --check -c "$PLANTD_SOURCE_ROOT/conf.d"
expect_exit 0
for env in dev prod; do
  plantd_run --check -c "$PLANTD_SOURCE_ROOT/conf.d" --env "$env"
  expect_exit 0
done

say "run the demo for 60 s"
start_plantd -c "$TEST_TMP/conf.d" --env ci --run-for 60

say "while it runs: healthy, and two readings from a gateway over HTTP go the same way"
wait_urls "$TEST_TMP/data"
A=$(url_of "$TEST_TMP/data" admin)
I=$(url_of "$TEST_TMP/data" ingest)
healthy() {
  req GET "$A/healthz"
  [[ $CODE == 200 ]]
}
wait_until 10 "/healthz to answer 200" healthy
timeout $((20 * TIME_FACTOR)) curl -sN "$A/v1/topics/sensor.thermistor.processed/tail" |
  grep --line-buffered -E '"id":"gw-(1|2)"' | head -n 2 >"$TEST_TMP/gw.processed" &
tail_pid=$!
_BG_PIDS+=("$tail_pid")
sleep 0.5 # the tail subscribes
gw='[{"id":"gw-1","sensor_id":"L01-S9001","location":"L01","type":"thermistor","ts":1700000000000,"resistance":10000},
     {"id":"gw-2","sensor_id":"L02-S9002","location":"L02","type":"thermistor","ts":1700000000001,"resistance":12000}]'
req POST "$I/v1/ingest/sensor.thermistor.raw" -H 'Content-Type: application/json' \
  -H 'Idempotency-Key: gw-batch-1' -d "$gw"
expect_code 202 "ingest of two readings"
ids=$(jq -c .ids <<<"$BODY")
req POST "$I/v1/ingest/sensor.thermistor.raw" -H 'Content-Type: application/json' \
  -H 'Idempotency-Key: gw-batch-1' -d "$gw"
expect_code 202 "the retried ingest"
[[ $(jq -c .ids <<<"$BODY") == "$ids" && $(header_of Idempotency-Replayed) == true ]] ||
  fail "the retry was not a replay: $BODY"
wait "$tail_pid" || true
_forget_pid "$tail_pid"
[[ $(wc -l <"$TEST_TMP/gw.processed") == 2 ]] ||
  fail "the ingested readings were not processed: $(cat "$TEST_TMP/gw.processed")"
jq -se 'map(select(.body.id == "gw-1"))[0].body.temp_c | . > -1 and . < 1' \
  "$TEST_TMP/gw.processed" >/dev/null || fail "gw-1's temperature: $(cat "$TEST_TMP/gw.processed")"
wait_exit 90
expect_exit 0

# the last line of an instance that has a KEY=N field: N
field() { # field INSTANCE KEY
  grep -E "inst=$1 .*[ \"]$2=[0-9]+" "$LOG" | tail -n 1 | sed -nE "s/.*[ \"]$2=([0-9]+).*/\1/p"
}
sum_readings=0
sum_malformed=0
for sim in thermistors vibration pressure power; do
  n=$(field $sim readings)
  m=$(field $sim malformed)
  [[ -n $n && -n $m ]] || fail "simulator $sim did not report its counts"
  ((n > 0)) || fail "simulator $sim published nothing"
  say "$sim: $n readings, $m malformed"
  sum_readings=$((sum_readings + n))
  sum_malformed=$((sum_malformed + m))
done
therm=$(field thermistors readings)
# seed 004's trigger at 8 x 1000 sensors, 1..10 s apart: ~1450 readings/s
((therm > 30000)) || fail "only $therm thermistor readings in 45 s"
((sum_malformed > 0)) || fail "the demo should send a few malformed readings"

processed=$(field sensor processed)
rejected=$(field sensor rejected)
duplicates=$(field sensor duplicates)
say "sensor: processed $processed, rejected $rejected, duplicates $duplicates"
# plus the gateway's two, once each
[[ $processed == "$((sum_readings + 2))" ]] ||
  fail "the simulators sent $sum_readings well-formed readings and the gateway 2, the sensor processed $processed"
[[ $rejected == "$sum_malformed" ]] ||
  fail "the simulators sent $sum_malformed malformed readings, the sensor rejected $rejected"

summary=$(grep -E '^summary ' "$OUT" | tail -n 1)
[[ -n $summary ]] || fail "the live view printed no summary line"
say "$summary"
sfield() { sed -nE "s/.*[ ]$1=([0-9]+).*/\1/p" <<<"$summary"; }
[[ $(sfield analytics_total) == "$((therm + 2))" ]] ||
  fail "analytics counted $(sfield analytics_total) readings, the thermistors and the gateway sent $((therm + 2))"
[[ $(sfield dead_lettered) == "$sum_malformed" ]] ||
  fail "the dead-letter queue holds $(sfield dead_lettered), expected the $sum_malformed malformed"
[[ $(sfield processed) == "$((sum_readings + 2))" ]] ||
  fail "the live view saw $(sfield processed) processed readings, expected $((sum_readings + 2))"

say "the live view showed every location with an average temperature"
for l in 1 2 3 4 5 6 7 8; do
  grep -qE "^ *L0$l .*[0-9]+\.[0-9]" "$OUT" || fail "no row for location L0$l with numbers"
done
[[ -s $TEST_TMP/data/notifications.jsonl ]] || fail "no notifications were written"
say "ok: $sum_readings readings simulated and processed, $therm counted by analytics, $sum_malformed dead-lettered"
