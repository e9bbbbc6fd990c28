#!/usr/bin/env bash
# The simulators' seed: two runs of every simulator module with the same
# non-zero seed publish the same readings (ids, sensors, values, order; only
# "ts" differs), under the free-running schedule, at full speed and under
# the iterator; another seed gives other readings; a run without a seed
# logs the one it drew, and that seed repeats it. Every run stops at
# max_readings exactly, and its counts say so.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONF=$TEST_TMP/site.conf
DATA=$TEST_TMP/data
MAX=300
# faults, malformed readings and silent sensors too: they must repeat as well
COMMON="locations = 2; sensors = 5; min_delay = \"5ms\"; max_delay = \"40ms\";
    max_readings = $MAX; malformed_rate = 0.1; fault_rate = 0.1; silent_rate = 0.3;
    silent_after = \"1s\";"
SIMS=(therm vib pres power fast iter)

# write_site SEED [RANDOM_SEED]: every simulator with SEED; "rnd" with
# RANDOM_SEED (absent: no seed, a random one).
write_site() {
  local rnd_seed=${2:+seed = $2;}
  cat >"$CONF" <<CONF
site = "it-sim-seed";
data_dir = "data";
plugin_path = "$PLANTD_BUILD_ROOT/plugins";
plugins = (
  { name = "sink"; module = "log_sink"; subscribe = [ "sensor.*.raw" ];
    path = "readings.jsonl"; },
  { name = "therm"; module = "sim_thermistor"; seed = $1; $COMMON },
  { name = "vib"; module = "sim_vibration"; seed = $1; $COMMON },
  { name = "pres"; module = "sim_pressure"; seed = $1; $COMMON },
  { name = "power"; module = "sim_power"; seed = $1; $COMMON },
  { name = "fast"; module = "sim_thermistor"; seed = $1; $COMMON full_speed = true; },
  { name = "iter"; module = "sim_pressure"; seed = $1; $COMMON schedule = "iterator";
    tick = "20ms"; inputs = ( { readings = 2; }, { locations = 1; sensors = 3; } ); },
  { name = "rnd"; module = "sim_thermistor"; $rnd_seed $COMMON }
);
CONF
}

# run NAME SEED [RANDOM_SEED]: run the site until every simulator finished
# and the sink wrote every reading; keep the readings and the log as NAME.*
run() {
  local name=$1 inst
  shift
  write_site "$@"
  rm -rf "$DATA"
  start_plantd -c "$CONF"
  for inst in "${SIMS[@]}" rnd; do
    wait_for_log "inst=$inst msg=\"finished reason=max_readings " 30
  done
  wait_until 20 "the sink writing every reading" \
    file_lines_at_least "$DATA/readings.jsonl" $((MAX * (${#SIMS[@]} + 1)))
  stop_plantd TERM 20
  expect_exit 0
  cp "$DATA/readings.jsonl" "$TEST_TMP/$name.jsonl"
  cp "$LOG" "$TEST_TMP/$name.log"
}

# readings RUN INST: the readings of INST in RUN, without "ts", in id order,
# one compact JSON a line.
readings() {
  jq -s -c --arg p "$2-" \
    'map(.body | select(.id | startswith($p)) | del(.ts)) | sort_by(.id | split("-") | last | tonumber) | .[]' \
    "$TEST_TMP/$1.jsonl"
}

# check_counts RUN INST: MAX readings with ids INST-sSEED-1..INST-sSEED-MAX, published
# on the instance's topic, and its log line accounts for each one.
check_counts() {
  local run=$1 inst=$2 line n m
  n=$(readings "$run" "$inst" | jq -s --arg p "$inst-" \
    'if (map(.id | test("^\($p)s[0-9]+-[0-9]+$")) | all) and
        map(.id | split("-") | last | tonumber) == [range(1; length + 1)] then length else -1 end')
  [[ $n == "$MAX" ]] || fail "$run: $inst published $n readings numbered 1..N, expected $MAX"
  line=$(grep "inst=$inst msg=\"finished" "$TEST_TMP/$run.log")
  [[ $line =~ readings=([0-9]+)\ malformed=([0-9]+) ]] || fail "$run: no counts in: $line"
  n=${BASH_REMATCH[1]}
  m=${BASH_REMATCH[2]}
  ((n + m == MAX)) || fail "$run: $inst counts readings=$n + malformed=$m, not $MAX"
  ((m > 0 && n > 0)) || fail "$run: $inst published no malformed or no good readings ($m, $n)"
}

say "two runs with seed 4242, one with seed 777"
run a 4242
run b 4242
run c 777

for inst in "${SIMS[@]}"; do
  for r in a b c; do
    check_counts "$r" "$inst"
  done
  readings a "$inst" >"$TEST_TMP/a.$inst"
  readings b "$inst" >"$TEST_TMP/b.$inst"
  readings c "$inst" >"$TEST_TMP/c.$inst"
  if ! cmp -s "$TEST_TMP/a.$inst" "$TEST_TMP/b.$inst"; then
    fail "$inst: the same seed gave other readings:"$'\n'"$(diff "$TEST_TMP/a.$inst" "$TEST_TMP/b.$inst" | head -n 6)"
  fi
  # the other seed: other values (the ids are the same, so compare
  # without them); a few may meet by chance (a fault is always 0 or 1e9)
  same=$(jq -n --slurpfile x "$TEST_TMP/a.$inst" --slurpfile y "$TEST_TMP/c.$inst" \
    '[range(0; $x | length) | select(($x[.] | del(.id)) == ($y[.] | del(.id)))] | length')
  ((same < MAX / 10)) || fail "$inst: seeds 4242 and 777 gave $same identical readings of $MAX"
  # and "ts" was there, from the host clock: it is what may differ
  jq -e -s --arg p "$inst-" 'map(.body | select(.id | startswith($p))) | any(has("ts"))' \
    "$TEST_TMP/a.jsonl" >/dev/null || fail "$inst: no reading has a ts"
done
say "ok: ${SIMS[*]} repeat with their seed, differ with another"

say "no seed: a random one, logged, that repeats the run"
seed_re='inst=rnd msg="started type=thermistor .* seed=([0-9]+) \(random'
[[ $(grep -E "$seed_re" "$TEST_TMP/a.log") =~ seed=([0-9]+) ]] || fail "run a: rnd logged no seed"
seed_a=${BASH_REMATCH[1]}
[[ $(grep -E "$seed_re" "$TEST_TMP/c.log") =~ seed=([0-9]+) ]] || fail "run c: rnd logged no seed"
seed_c=${BASH_REMATCH[1]}
[[ $seed_a != "$seed_c" ]] || fail "two runs without a seed drew the same one: $seed_a"
# ids name the run (its start time without a seed, the seed with one), so
# they are compared apart from the rest
run_of() { jq -r '.id | split("-")[-2]' "$1" | sort -u; }
without_ids() { jq -c 'del(.id)' "$1"; }
readings a rnd >"$TEST_TMP/a.rnd"
readings c rnd >"$TEST_TMP/c.rnd"
cmp -s <(without_ids "$TEST_TMP/a.rnd") <(without_ids "$TEST_TMP/c.rnd") &&
  fail "two runs without a seed gave the same readings"
[[ $(run_of "$TEST_TMP/a.rnd" | wc -l) == 1 && $(run_of "$TEST_TMP/a.rnd") =~ ^[0-9a-f]+$ ]] ||
  fail "an unseeded run's ids should all name its start: $(run_of "$TEST_TMP/a.rnd" | head -3)"
[[ $(run_of "$TEST_TMP/a.rnd") != "$(run_of "$TEST_TMP/c.rnd")" ]] ||
  fail "two unseeded runs gave the same reading ids"
run d 4242 "$seed_c"
check_counts d rnd
readings d rnd >"$TEST_TMP/d.rnd"
cmp -s <(without_ids "$TEST_TMP/c.rnd") <(without_ids "$TEST_TMP/d.rnd") ||
  fail "seed = $seed_c did not repeat the run that drew it"
say "ok: drew $seed_a and $seed_c; seed = $seed_c repeated its run"
