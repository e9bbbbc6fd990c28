#!/usr/bin/env bash
# What the simulators publish, checked as a sensor processor would: every
# field of the raw reading format with its type, values in their ranges
# apart from the faults (counted as the log says), malformed readings that
# each fail a processor's checks, the iterator's exact readings per tick
# from `inputs` and from `inputs_file` (and a clear error for a missing or
# broken file), full speed up to max_readings, and backpressure from a full
# queue that loses and repeats nothing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONF=$TEST_TMP/site.conf
DATA=$TEST_TMP/data
OUTF=$DATA/readings.jsonl
STATS=$DATA/stats.json

# site PLUGINS...: a site with a sink of the raw readings ($SINK_SUB), a
# statistics writer and the given plugin entries.
SINK_SUB='sensor.*.raw'
site() {
  local entries
  entries=$(printf '  %s,\n' "$@")
  cat >"$CONF" <<CONF
site = "it-sim-models";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/plugins";
queues = (
  { name = "idle"; },
  { name = "bp"; subscribe = [ "sensor.bp.raw" ]; max_depth = 500; }
);
plugins = (
  { name = "sink"; module = "log_sink"; subscribe = [ "$SINK_SUB" ]; path = "readings.jsonl"; },
  { name = "stats"; module = "fx_consumer"; queue = "idle"; stats = "$STATS"; },
${entries%,}
);
CONF
}

# The body checks a sensor processor makes (plugins/sensor), as jq
# definitions: the identifying strings, a number as the value, and no
# negative resistance.
JQ_DEFS='
def primary: if .type == "thermistor" then .resistance else .value end;
def well_formed:
  (.id | type) == "string" and (.sensor_id | type) == "string"
  and (.location | type) == "string" and (.type | type) == "string"
  and (primary | type) == "number" and (.type != "thermistor" or primary >= 0);
'

# finished INST FIELD: a count from INST's "finished" log line.
finished() {
  grep "inst=$1 msg=\"finished" "$LOG" | sed -nE "s/.* $2=([0-9]+).*/\\1/p"
}

# bodies_of INST: the bodies INST published, in id order, one a line.
bodies_of() {
  jq -s -c --arg p "$1-" \
    'map(.body | select(.id | startswith($p))) | sort_by(.id | split("-") | last | tonumber) | .[]' \
    "$OUTF"
}

# expect_all WHAT FILTER: every line of stdin passes FILTER (jq, with
# JQ_DEFS); fails naming WHAT and the first line that does not.
expect_all() {
  local what=$1 filter=$2 bad
  bad=$(jq -c "$JQ_DEFS select(($filter) | not)" | head -n 1)
  [[ -z $bad ]] || fail "$what: a reading fails the check: $bad"
}

now_ms() { date +%s%3N; }

say "shapes and ranges of each type, with faults"
RUN='locations = 3; sensors = 4; min_delay = "5ms"; max_delay = "30ms"; max_readings = 200;
    fault_rate = 0.2; seed = 11;'
site "{ name = \"therm\"; module = \"sim_thermistor\"; $RUN min_r = 100.0; max_r = 200.0; }" \
  "{ name = \"vib\"; module = \"sim_vibration\"; $RUN samples = 16; }" \
  "{ name = \"pres\"; module = \"sim_pressure\"; $RUN }" \
  "{ name = \"power\"; module = \"sim_power\"; $RUN day_length = \"10s\"; }"
t0=$(now_ms)
start_plantd -c "$CONF"
for inst in therm vib pres power; do
  wait_for_log "inst=$inst msg=\"finished reason=max_readings " 30
done
wait_until 20 "the sink writing 800 readings" file_lines_at_least "$OUTF" 800
stop_plantd TERM 20
expect_exit 0
t1=$(now_ms)

common="well_formed and primary >= 0 and (.id | test(\"^[a-z]+-(s[0-9]+|[0-9a-f]+)-[0-9]+\$\"))
  and (.sensor_id | test(\"^L0[1-3]-S000[1-4]\$\")) and .location == .sensor_id[0:3]
  and (.ts | . == floor and . >= $t0 and . <= $t1)"
for inst in therm vib pres power; do
  n=$(bodies_of "$inst" | wc -l)
  [[ $n == 200 ]] || fail "$inst published $n readings, expected 200"
  bodies_of "$inst" | expect_all "$inst" "$common"
  [[ $(finished "$inst" malformed) == 0 ]] || fail "$inst reported malformed readings"
done
jq -e -s 'all(.topic == "sensor.\(.body.type).raw")' "$OUTF" >/dev/null ||
  fail "a reading is not on sensor.<type>.raw"

# type by type: the fields, the ranges, and faults counted as logged
faults_of() { # faults_of INST FAULT_FILTER
  local seen logged
  seen=$(bodies_of "$1" | jq -c "select($2)" | wc -l)
  logged=$(finished "$1" faults)
  [[ $seen == "$logged" ]] || fail "$1: $seen fault readings published, the log counts $logged"
  ((seen > 10)) || fail "$1: only $seen faults at fault_rate 0.2"
}
bodies_of therm | expect_all therm \
  '.type == "thermistor" and ((.resistance >= 100 and .resistance <= 200)
   or .resistance == 0 or .resistance == 1e9)'
faults_of therm '.resistance == 0 or .resistance == 1e9'
bodies_of vib | expect_all vib \
  '.type == "vibration" and .unit == "g" and (.peak | type) == "number"
   and (.freq_hz >= 48.5 and .freq_hz <= 51.5)
   and (.samples | type == "array" and length == 16 and all(type == "number"))
   and .value <= .peak + 0.0001
   and ((.value - ((.samples | map(. * .) | add / length) | sqrt)) | fabs) < 0.001'
faults_of vib '.value == 1000'
bodies_of vib | expect_all vib '.value == 1000 or .value < 10'
bodies_of pres | expect_all pres \
  '.type == "pressure" and .unit == "bar" and (.setpoint | type) == "number"
   and (.value == 1000 or .value < 100)'
faults_of pres '.value == 1000'
bodies_of power | expect_all power \
  '.type == "power" and .unit == "kW" and (.energy_kwh | type) == "number"
   and (.voltage >= 200 and .voltage <= 260) and (.pf >= 0.3 and .pf <= 1)
   and (.value == 1e6 or .value < 1000)'
faults_of power '.value == 1e6'
# the energy register never goes back, sensor by sensor
bodies_of power | jq -s -e 'group_by(.sensor_id) | all(map(.energy_kwh) | . == sort)' \
  >/dev/null || fail "power: energy_kwh went back for a sensor"
say "ok"

say "malformed_rate = 1: every reading fails a processor's checks"
site '{ name = "badt"; module = "sim_thermistor"; full_speed = true; malformed_rate = 1.0;
    max_readings = 300; seed = 3; }' \
  '{ name = "badp"; module = "sim_power"; full_speed = true; malformed_rate = 1.0;
    max_readings = 300; seed = 3; }'
rm -rf "$DATA"
start_plantd -c "$CONF"
wait_for_log 'inst=badt msg="finished reason=max_readings ' 30
wait_for_log 'inst=badp msg="finished reason=max_readings ' 30
wait_until 20 "the sink writing 600 readings" file_lines_at_least "$OUTF" 600
stop_plantd TERM 20
expect_exit 0
declare -A want_kinds=([badt]="missing field,negative,no value,string"
  [badp]="missing field,no value,string")
for inst in badt badp; do
  [[ $(finished "$inst" readings) == 0 && $(finished "$inst" malformed) == 300 ]] ||
    fail "$inst counts $(finished "$inst" readings) readings and $(finished "$inst" malformed) malformed, expected 0 and 300"
  [[ $(bodies_of "$inst" | wc -l) == 300 ]] || fail "$inst: expected 300 readings"
  bodies_of "$inst" | expect_all "$inst (malformed)" 'well_formed | not'
  # and not one way only: missing fields, strings, negative resistances;
  # the time is always there
  kinds=$(bodies_of "$inst" | jq -s -r "$JQ_DEFS"'map(if (.ts | type) != "number" then "no ts"
    elif (has("sensor_id") and has("location") and has("type") | not) then "missing field"
    elif (primary | type) == "string" then "string" elif primary == null then "no value"
    elif primary < 0 then "negative" else "?" end) | unique | join(",")')
  [[ $kinds == "${want_kinds[$inst]}" ]] ||
    fail "$inst: malformed kinds are '$kinds', expected '${want_kinds[$inst]}'"
done
say "ok"

# The expected sensors of one cycle of the inputs below: tick 1 has L01
# S0001..S0003 twice, tick 2 L01 and L02, S0001..S0002, once.
CYCLE='["L01-S0001","L01-S0002","L01-S0003","L01-S0001","L01-S0002","L01-S0003",
  "L01-S0001","L01-S0002","L02-S0001","L02-S0002"]'
check_iterator() { # check_iterator INST
  local inst=$1 started tick5
  [[ $(bodies_of "$inst" | wc -l) == 30 ]] || fail "$inst: expected 30 readings (3 cycles)"
  bodies_of "$inst" | jq -s -e --argjson c "$CYCLE" 'map(.sensor_id) == $c + $c + $c' \
    >/dev/null || fail "$inst: readings per tick are not as the inputs say: $(bodies_of "$inst" |
    jq -s -c 'map(.sensor_id)')"
  # tick 1's inputs override the range; tick 2 keeps the instance's
  bodies_of "$inst" | jq -s -e '[., ([range(0; 3)] | map(. * 10))] as [$r, $starts]
    | all($starts[]; . as $s | $r[$s:$s + 6] | all(.resistance >= 5 and .resistance <= 6))
    and all($starts[]; . as $s | $r[$s + 6:$s + 10] | all(.resistance >= 0.1 and .resistance <= 20500))' \
    >/dev/null || fail "$inst: resistances outside the inputs' ranges"
  # ticks come every 100ms, not back to back: the sixth (at 500ms) is not
  # published before then
  started=$(grep "inst=$inst msg=\"started type=" "$LOG" | sed -nE 's/^ts=([^ ]+) .*/\1/p')
  started=$(date -d "$started" +%s%3N)
  tick5=$(bodies_of "$inst" | jq -s '.[26].ts')
  ((tick5 - started >= 450)) || fail "$inst: the sixth tick came $((tick5 - started)) ms after the start"
}

say "iterator: readings x sensors per tick, from inputs and from inputs_file"
rm -rf "$DATA"
mkdir -p "$DATA"
cat >"$DATA/inputs.json" <<'EOF'
[ {"locations": 1, "sensors": 3, "readings": 2, "min_r": 5, "max_r": 6},
  {"locations": 2, "sensors": 2} ]
EOF
site '{ name = "it"; module = "sim_thermistor"; schedule = "iterator"; tick = "100ms";
    max_readings = 30; seed = 5;
    inputs = ( { locations = 1; sensors = 3; readings = 2; min_r = 5.0; max_r = 6.0; },
               { locations = 2; sensors = 2; } ); }' \
  '{ name = "itf"; module = "sim_thermistor"; schedule = "iterator"; tick = "100ms";
    max_readings = 30; seed = 5; inputs_file = "inputs.json"; }'
start_plantd -c "$CONF"
wait_for_log 'inst=it msg="finished reason=max_readings ' 30
wait_for_log 'inst=itf msg="finished reason=max_readings ' 30
wait_until 20 "the sink writing 60 readings" file_lines_at_least "$OUTF" 60
stop_plantd TERM 20
expect_exit 0
check_iterator it
check_iterator itf
# the same inputs and seed: the same readings
diff <(bodies_of it | jq -c 'del(.id, .ts)') <(bodies_of itf | jq -c 'del(.id, .ts)') >/dev/null ||
  fail "inputs and the same inputs_file gave other readings"
say "ok"

say "a missing or broken inputs_file is a config error naming the file"
check_error() { # check_error FILE_SETTING EXPECTED_ERE
  site "{ name = \"itf\"; module = \"sim_thermistor\"; schedule = \"iterator\";
    $1 }"
  plantd_run -c "$CONF" --check
  expect_exit 2
  grep -Eq -- "$2" "$LOG" || fail "expected /$2/ in: $(cat "$LOG")"
}
check_error 'inputs_file = "nothere.json";' \
  'site.conf:1[0-9]: instance "itf" \(module sim_thermistor\): cannot read inputs file: .*data/nothere.json'
printf '[{"sensors": 2},\n {"sensors" 3}]\n' >"$DATA/broken.json"
check_error 'inputs_file = "broken.json";' \
  'instance "itf" \(module sim_thermistor\): inputs file .*data/broken.json: line 2: '
printf '[{"sensors": 2, "colour": "red"}]\n' >"$DATA/odd.json"
check_error 'inputs_file = "odd.json";' \
  "inputs file odd.json: input 1: unknown key 'colour'"
check_error 'inputs = ( { sensors = 0; } );' "inputs\\[1\\]: 'sensors' must be from 1 to 9999"
check_error 'min_delay = "15s";' "'min_delay' \\(15000 ms\\) is longer than 'max_delay' \\(10000 ms\\)"
check_error 'fault_rate = 1.5;' "'fault_rate' must be a fraction from 0 to 1"
check_error 'locations = 0;' "'locations' must be from 1 to 99"
say "ok"

say "full speed reaches max_readings; a full queue slows it, loses and repeats nothing"
SINK_SUB=none # not 220000 lines
site '{ name = "fast"; module = "sim_thermistor"; topic = "sensor.fast.raw"; full_speed = true;
    max_readings = 200000; seed = 1; }' \
  '{ name = "bp"; module = "sim_thermistor"; topic = "sensor.bp.raw"; full_speed = true;
    max_readings = 20000; batch = 256; seed = 2; }' \
  '{ name = "bpsink"; module = "log_sink"; queue = "bp"; path = "bp.jsonl"; }'
rm -rf "$DATA"
start_plantd -c "$CONF"
wait_for_log 'inst=fast msg="finished reason=max_readings ' 30
wait_for_log 'inst=bp msg="finished reason=max_readings ' 30
[[ $(finished fast readings) == 200000 ]] || fail "fast counts $(finished fast readings) readings"
[[ $(finished bp readings) == 20000 ]] || fail "bp counts $(finished bp readings) readings"
wait_until 20 "the queue's consumer writing 20000 readings" file_lines_at_least "$DATA/bp.jsonl" 20000
stop_plantd TERM 20
expect_exit 0
[[ $(jq '.topics["sensor.fast.raw"].published' "$STATS") == 200000 ]] ||
  fail "the bus counts $(jq '.topics["sensor.fast.raw"].published' "$STATS") on sensor.fast.raw"
jq -s -e 'map(.body.id | split("-") | last | tonumber) | sort == [range(1; 20001)]' \
  "$DATA/bp.jsonl" >/dev/null || fail "the queue did not deliver bp-1..bp-20000 once each"
refused=$(jq '.queues.bp.refused' "$STATS")
((refused > 0)) || fail "the queue never refused: backpressure was not exercised"
started=$(grep 'inst=fast msg="started type=' "$LOG" | sed -nE 's/^ts=([^ ]+) .*/\1/p')
ended=$(grep 'inst=fast msg="finished' "$LOG" | sed -nE 's/^ts=([^ ]+) .*/\1/p')
ms=$(($(date -d "$ended" +%s%3N) - $(date -d "$started" +%s%3N)))
say "ok: 200000 readings in $ms ms at full speed; the bp queue refused $refused publishes"
