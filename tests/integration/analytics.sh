#!/usr/bin/env bash
# The analytics plugin against hand-made readings: a fixture publishes the
# lines of a file written here (three locations, two sensors each, excluded
# statuses, readings without a numeric value, invalid messages) and the
# expected window statistics are computed from that file with jq, then
# compared with the published reports (captured by log_sink) and the stored
# one. Then a clean restart with more readings: the run number and the
# cumulative total go on, and the window covers both inputs.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONF=$TEST_TMP/site.conf
REPORTS=$TEST_TMP/reports.jsonl
DB=$TEST_TMP/data/site.db

# write_site INPUT: a site whose feeder publishes the lines of INPUT.
write_site() {
  cat >"$CONF" <<CONF
site = "it-analytics";
data_dir = "data";
plugin_path = "$PLANTD_BUILD_ROOT/plugins:$PLANTD_BUILD_ROOT/plugins/analytics";
stores = ( { name = "site"; backend = "sqlite"; path = "site.db"; } );
queues = (
  { name = "analytics.in"; subscribe = [ "sensor.*.processed" ]; durable = true;
    store = "site"; visibility_timeout = "30s"; }
);
plugins = (
  { name = "reports"; module = "log_sink"; subscribe = [ "analytics.report" ];
    path = "$REPORTS"; },
  { name = "thermal"; module = "analytics"; queue = "analytics.in"; store = "site";
    interval = "100ms"; window = "1h"; per_sensor = true; },
  { name = "feed"; module = "analytics_feed"; path = "$1";
    topic = "sensor.thermistor.processed"; batch = 4; every = "40ms"; }
);
CONF
}

# Readings as the sensor plugin publishes them, plus what analytics must
# survive. L04 only has a broken sensor; L01-S0002 is broken once (with a
# value, which must not count) and once reads "too_hot" (which counts).
cat >"$TEST_TMP/input1.jsonl" <<'EOF'
{"id":"a-1","sensor_id":"L01-S0001","location":"L01","type":"thermistor","status":"ok","value":20.5,"unit":"C"}
{"id":"a-2","sensor_id":"L01-S0002","location":"L01","type":"thermistor","status":"ok","value":22.25,"unit":"C"}
{"id":"a-3","sensor_id":"L02-S0001","location":"L02","type":"thermistor","status":"ok","value":-3.5,"unit":"C"}
{"id":"a-4","sensor_id":"L03-S0001","location":"L03","type":"thermistor","status":"ok","value":101,"unit":"C"}
{"id":"a-5","sensor_id":"L01-S0002","location":"L01","type":"thermistor","status":"broken","value":999,"unit":"C"}
{"id":"a-6","sensor_id":"L01-S0001","location":"L01","type":"thermistor","status":"ok","value":21.75,"unit":"C"}
{"id":"a-7","sensor_id":"L02-S0002","location":"L02","type":"thermistor","status":"too_cold","value":-40.125,"unit":"C"}
{"id":"a-8","sensor_id":"L03-S0002","location":"L03","type":"thermistor","status":"too_hot","value":153.2,"unit":"C"}
{"id":"a-9","sensor_id":"L04-S0001","location":"L04","type":"thermistor","status":"broken"}
{"id":"a-10","sensor_id":"L02-S0001","location":"L02","type":"thermistor","status":"ok"}
{"id":"a-11","sensor_id":"L02-S0001","location":"L02","type":"thermistor","status":"ok","value":"7.5"}
{"sensor_id":"L09-S0001","type":"thermistor","status":"ok","value":1}
[1, 2, 3]
"not a reading"
{"id":"a-12","sensor_id":"L01-S0003","location":7,"status":"ok","value":5}
{"id":"a-13","sensor_id":"L03-S0001","location":"L03","type":"thermistor","status":"ok","value":99.5,"unit":"C"}
{"id":"a-14","sensor_id":"L01-S0002","location":"L01","type":"thermistor","status":"too_hot","value":80,"unit":"C"}
{"id":"a-15","sensor_id":"L02-S0002","location":"L02","type":"thermistor","status":"ok","value":0,"unit":"C"}
{"id":"a-16","location":"L03","type":"thermistor","status":"ok","value":100.25,"unit":"C"}
{"id":"a-17","sensor_id":"L03-S0002","location":"L03","type":"thermistor","status":"broken"}
{"id":"a-18","sensor_id":"L01-S0001","location":"L01","type":"thermistor","status":"ok","value":19,"unit":"C"}
EOF
cat >"$TEST_TMP/input2.jsonl" <<'EOF'
{"id":"b-1","sensor_id":"L01-S0001","location":"L01","type":"thermistor","status":"ok","value":30,"unit":"C"}
{"id":"b-2","sensor_id":"L02-S0001","location":"L02","type":"thermistor","status":"ok","value":-10,"unit":"C"}
{"id":"b-3","sensor_id":"L04-S0001","location":"L04","type":"thermistor","status":"ok","value":12.5,"unit":"C"}
{"id":"b-4","sensor_id":"L03-S0001","location":"L03","type":"thermistor","status":"broken","value":1e6,"unit":"C"}
{"location":"","value":3}
{"id":"b-5","sensor_id":"L03-S0001","location":"L03","type":"thermistor","status":"ok","value":97.5,"unit":"C"}
EOF

# expected FILES...: the statistics over every reading in FILES, from the
# definition: a reading is an object with a non-empty string "location";
# it is used when "value" is a number and "status" is not "broken".
expected() {
  cat "$@" | jq -s '
    [.[] | select(type == "object" and (.location | type) == "string" and .location != "")]
      as $r
    | ($r | map(select((.value | type) == "number" and .status != "broken"))) as $u
    | {readings: ($r | length), used: ($u | length), invalid: (length - ($r | length)),
       locations: (($r | map({key: .location, value: {count: 0}}) | from_entries) +
         ($u | group_by(.location) | map({key: .[0].location, value: {count: length,
           avg: (map(.value) | add / length), min: (map(.value) | min),
           max: (map(.value) | max)}}) | from_entries)),
       readings_by_location: ($r | group_by(.location)
         | map({key: .[0].location, value: length}) | from_entries),
       sensors: ($u | map(select((.sensor_id | type) == "string")) | group_by(.sensor_id)
         | map({key: .[0].sensor_id, value: {count: length,
           avg: (map(.value) | add / length)}}) | from_entries)}'
}

# reports: the published reports so far, one JSON object a line.
reports() {
  jq -c '.body' "$REPORTS"
}

# stopped INSTANCE: "TOTAL RUNS" from its stop line in $LOG. The last run
# may be stored but its report not written by log_sink, which stops after
# it: the stop line and the store are what count for the run number.
stopped() {
  sed -nE "s/.*inst=$1 msg=\"analytics stopped total=([0-9]+) runs=([0-9]+)\".*/\1 \2/p" "$LOG" |
    tail -n 1
}

report_total_is() {
  [[ -s $REPORTS ]] && [[ $(reports | tail -n 1 | jq '.total') == "$1" ]]
}

# compare EXPECTED REPORT: the window statistics of REPORT match EXPECTED
# (numbers within 1e-9); prints the differences, fails when there are any.
compare() {
  local diffs
  diffs=$(jq -n --argjson e "$1" --argjson r "$2" '
    def close(a; b): (a != null and b != null and ((a - b) | fabs) <= 1e-9 * (1 + (b | fabs)));
    [ ($e.locations | to_entries[]) as $x
      | ($r.locations[$x.key]) as $g
      | if $g == null then "location \($x.key) missing"
        elif $g.count != $x.value.count then "\($x.key): count \($g.count), expected \($x.value.count)"
        elif $x.value.count == 0 then
          (if ($g | has("avg")) then "\($x.key): avg without a count" else empty end)
        else (["avg", "min", "max"][] as $k
          | select(close($g[$k]; $x.value[$k]) | not)
          | "\($x.key).\($k) = \($g[$k]), expected \($x.value[$k])")
        end ]
    + [ ($r.locations | keys[]) | select($e.locations[.] == null) | "unexpected location \(.)" ]
    + [ ($e.sensors | to_entries[]) as $x
      | ($r.sensors[$x.key]) as $s
      | if $s == null then "sensor \($x.key) missing"
        elif $s.count != $x.value.count or (close($s.avg; $x.value.avg) | not) then
          "sensor \($x.key): count \($s.count) avg \($s.avg), expected \($x.value.count) \($x.value.avg)"
        else empty end ]
    + [ ($r.sensors | keys[]) | select($e.sensors[.] == null) | "unexpected sensor \(.)" ]
    | .[]')
  if [[ -n $diffs ]]; then
    echo "$diffs" >&2
    return 1
  fi
}

# check_runs FROM_RUN: the reports from run FROM_RUN on are consecutive,
# each total is the previous one plus its readings, and the rates add up
# to the readings of each location. Prints "readings invalid" over them.
check_runs() {
  reports | jq -s --argjson from "$1" '
    map(select(.run >= $from)) as $rs
    | if ($rs | length) == 0 then error("no report from run \($from)") else . end
    | [range(1; $rs | length) | select($rs[.].run != $rs[. - 1].run + 1
        or $rs[.].total != $rs[. - 1].total + $rs[.].readings)] as $bad
    | if ($bad | length) > 0 then error("runs not consecutive or totals not cumulative at \($rs[$bad[0]].run)") else . end
    | {readings: ($rs | map(.readings) | add), invalid: ($rs | map(.invalid) | add),
       first_total: ($rs[0].total - $rs[0].readings), last_total: $rs[-1].total,
       by_rate: ([$rs[] | .elapsed_ms as $ms | .locations | to_entries[]
         | {key, n: (.value.rate * $ms / 1000)}] | group_by(.key)
         | map({key: .[0].key, value: (map(.n) | add | . * 1000 | round / 1000)})
         | from_entries)}'
}

say "run 1: feeding input1"
write_site "$TEST_TMP/input1.jsonl"
exp1=$(expected "$TEST_TMP/input1.jsonl")
n1=$(jq '.readings' <<<"$exp1")
say "input1: $n1 readings, $(jq '.used' <<<"$exp1") used, $(jq '.invalid' <<<"$exp1") invalid"
start_plantd -c "$CONF"
wait_for_log 'inst=feed msg="fed [0-9]+ messages"' 20
wait_until 20 "a report with total $n1" report_total_is "$n1"
say "stop cleanly; the state and the last report are stored"
stop_plantd TERM 20
expect_exit 0
last=$(reports | tail -n 1)
compare "$exp1" "$last" || fail "the last report of run 1 does not match input1: $last"
read -r stop_total runs1 <<<"$(stopped thermal)" || true
[[ $stop_total == "$n1" ]] || fail "no stop line with total=$n1 (got '$stop_total')"
(($(jq '.run' <<<"$last") >= 2)) || fail "input1 was counted in one run: the test should span several"
(($(jq '.run' <<<"$last") <= runs1)) || fail "a report of run $(jq '.run' <<<"$last") after the last run $runs1"
sum1=$(check_runs 1) || fail "bad sequence of reports: $(reports)"
[[ $(jq '.readings' <<<"$sum1") == "$n1" && $(jq '.first_total' <<<"$sum1") == 0 ]] ||
  fail "the readings of the reports do not add up to $n1: $sum1"
[[ $(jq '.invalid' <<<"$sum1") == $(jq '.invalid' <<<"$exp1") ]] ||
  fail "invalid messages: $(jq '.invalid' <<<"$sum1"), expected $(jq '.invalid' <<<"$exp1")"
[[ $(jq -c '.by_rate' <<<"$sum1") == $(jq -c '.readings_by_location' <<<"$exp1") ]] ||
  fail "rates x elapsed do not add up to the readings per location: $(jq -c '.by_rate' <<<"$sum1") vs $(jq -c '.readings_by_location' <<<"$exp1")"
jq -e '.locations.L04 == {"count": 0, "rate": 0}' <<<"$last" >/dev/null ||
  fail "L04 (only a broken sensor) should be reported with count 0 and no average: $(jq -c .locations.L04 <<<"$last")"
expect_in_log -E 'inst=thermal msg="[0-9]+ invalid messages in run [0-9]+'
say "run 1: $runs1 runs, total $n1, window statistics match"
if command -v sqlite3 >/dev/null; then
  stored() { sqlite3 "$DB" "SELECT value FROM items WHERE key = CAST('$1' AS BLOB)"; }
  key=$(printf 'analytics/thermal/report/%012d' "$(jq '.run' <<<"$last")")
  [[ $(stored "$key" | jq -cS .) == $(jq -cS . <<<"$last") ]] ||
    fail "stored $key differs from the published report: $(stored "$key")"
  state=$(stored analytics/thermal/state)
  [[ $(jq '.run' <<<"$state") == "$runs1" && $(jq '.total' <<<"$state") == "$n1" ]] ||
    fail "stored state: $(jq -c '{run, total}' <<<"$state"), expected run $runs1 total $n1"
else
  say "no sqlite3: the stored report is not read back"
fi

say "run 2: restart with input2 (input1 is not fed again)"
write_site "$TEST_TMP/input2.jsonl"
exp2=$(expected "$TEST_TMP/input1.jsonl" "$TEST_TMP/input2.jsonl")
n12=$(jq '.readings' <<<"$exp2")
start_plantd -c "$CONF"
wait_for_log "inst=thermal msg=\"state read back: run $runs1, total $n1," 20
wait_for_log 'inst=feed msg="fed [0-9]+ messages"' 20
wait_until 20 "a report with total $n12" report_total_is "$n12"
stop_plantd TERM 20
expect_exit 0
last=$(reports | tail -n 1)
compare "$exp2" "$last" || fail "the last report of run 2 does not match input1 + input2: $last"
sum2=$(check_runs $((runs1 + 1))) || fail "bad sequence of reports after the restart: $(reports)"
[[ $(jq '.first_total' <<<"$sum2") == "$n1" && $(jq '.last_total' <<<"$sum2") == "$n12" ]] ||
  fail "the total did not go on from $n1 to $n12: $sum2"
read -r stop_total runs2 <<<"$(stopped thermal)" || true
[[ $stop_total == "$n12" ]] || fail "no stop line with total=$n12 (got '$stop_total')"
say "ok: $n12 readings over $runs2 runs, two starts"
