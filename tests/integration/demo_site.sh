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
[[ $processed == "$sum_readings" ]] ||
  fail "the simulators sent $sum_readings well-formed readings, the sensor processed $processed"
[[ $rejected == "$sum_malformed" ]] ||
  fail "the simulators sent $sum_malformed malformed readings, the sensor rejected $rejected"

summary=$(grep -E '^summary ' "$OUT" | tail -n 1)
[[ -n $summary ]] || fail "the live view printed no summary line"
say "$summary"
sfield() { sed -nE "s/.*[ ]$1=([0-9]+).*/\1/p" <<<"$summary"; }
[[ $(sfield analytics_total) == "$therm" ]] ||
  fail "analytics counted $(sfield analytics_total) readings, the thermistors sent $therm"
[[ $(sfield dead_lettered) == "$sum_malformed" ]] ||
  fail "the dead-letter queue holds $(sfield dead_lettered), expected the $sum_malformed malformed"
[[ $(sfield processed) == "$sum_readings" ]] ||
  fail "the live view saw $(sfield processed) processed readings, expected $sum_readings"

say "the live view showed every location with an average temperature"
for l in 1 2 3 4 5 6 7 8; do
  grep -qE "^ *L0$l .*[0-9]+\.[0-9]" "$OUT" || fail "no row for location L0$l with numbers"
done
[[ -s $TEST_TMP/data/notifications.jsonl ]] || fail "no notifications were written"
say "ok: $sum_readings readings simulated and processed, $therm counted by analytics, $sum_malformed dead-lettered"
