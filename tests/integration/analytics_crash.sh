#!/usr/bin/env bash
# The analytics plugin neither loses nor double-counts a reading across
# kill -9. Readings flow through a durable queue on sqlite into analytics
# (interval 300ms); plantd is killed five times and started again:
#   - in the middle of a producer's readings,
#   - right after a producer published its last reading (readings held,
#     not reported yet),
#   - three times right after a report appeared (stored, published, its
#     readings being acked: when the kill beats the acks to the queue's
#     store, those readings come back and must not be counted again; as
#     that is timing, more rounds follow until one kill did, up to 8).
# Each start has its own producer (p1, p2, ...; fx_producer: {"seq":
# 0..C-1, "producer": NAME}), so that what each published is known:
# analytics groups by "producer" and averages "seq". At the end, with the
# window covering everything, each producer's group must be exactly the
# readings it published, once each: count = max + 1 (0..max, no gap, no
# repeat), sum = max(max+1)/2, min = 0, and the count agrees with the ids
# the producer logged (a kill in the middle of a publish may leave one more
# in the queue than in the log). The total, published and stored, is the
# sum of the counts.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

C=${ANALYTICS_CRASH_COUNT:-300} # readings per producer
CONF=$TEST_TMP/site.conf
REPORTS=$TEST_TMP/reports.jsonl
DB=$TEST_TMP/data/site.db

# write_site PRODUCER: a site; PRODUCER names this start's producer, or is
# empty for none.
write_site() {
  local producer=
  if [[ -n $1 ]]; then
    producer="{ name = \"$1\"; module = \"fx_producer\"; topic = \"w.reading\"; count = $C;
    batch = 3; every = \"10ms\"; log = \"$TEST_TMP/published.$1\"; },"
  fi
  cat >"$CONF" <<CONF
site = "it-analytics-crash";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/plugins";
stores = ( { name = "site"; backend = "sqlite"; path = "site.db"; } );
queues = (
  { name = "readings"; subscribe = [ "w.reading" ]; durable = true; store = "site";
    visibility_timeout = "5s"; max_receive = 1000; }
);
plugins = (
  $producer
  { name = "reports"; module = "log_sink"; subscribe = [ "analytics.report" ];
    path = "$REPORTS"; },
  { name = "agg"; module = "analytics"; queue = "readings"; store = "site";
    interval = "300ms"; window = "1h"; group_by = "producer"; field = "seq"; }
);
CONF
}

published() { # published NAME: lines in NAME's log of published ids
  if [[ -f $TEST_TMP/published.$1 ]]; then wc -l <"$TEST_TMP/published.$1"; else echo 0; fi
}
published_at_least() { (($(published "$1") >= $2)); }
report_lines() { if [[ -f $REPORTS ]]; then wc -l <"$REPORTS"; else echo 0; fi; }

# kill_after_next_report: kill -9 plantd as soon as a new report line is
# in $REPORTS, reading it in a tight loop (no process per check) so the
# kill lands while the report's readings are being acked.
kill_after_next_report() {
  wait_until 20 "a first report" test -s "$REPORTS"
  _deadline 10
  exec 3<"$REPORTS"
  while read -r _ <&3; do :; done # skip what is there
  while ! read -r _ <&3; do
    _now_us
    ((_NOW_US < _DEADLINE_US)) || fail "no report within $(_secs 10)"
    plantd_running || fail "plantd ended while waiting for a report"
  done
  kill -KILL "$PLANTD_PID"
  exec 3<&-
}

killed() {
  wait_exit 10
  [[ $STATUS == 137 ]] || fail "plantd was not killed (status $STATUS)"
}

# start N PRODUCER: start N of plantd (its log in plantd.N.log), with
# PRODUCER or none; returns once analytics has read its state.
start() {
  LOG=$TEST_TMP/plantd.$1.log
  write_site "$2"
  start_plantd -c "$CONF"
  wait_for_log 'inst=agg msg="(no state under|state read back)' 20
}

n=0 # starts so far
PRODUCERS=()
mid_publish=() # producers killed while publishing

# kill_round HOW: start again with a new producer (p<start>), and kill -9
# plantd: in the middle of its readings (mid), right after a report
# (report) or right after it published its last reading (finished).
kill_round() {
  n=$((n + 1))
  local p=p$n
  PRODUCERS+=("$p")
  start "$n" "$p"
  case $1 in
  mid)
    wait_until 20 "$p published $((C / 2))" published_at_least "$p" $((C / 2))
    kill -KILL "$PLANTD_PID"
    mid_publish+=("$p")
    ;;
  report)
    wait_until 20 "$p published $((C / 3))" published_at_least "$p" $((C / 3))
    kill_after_next_report
    mid_publish+=("$p")
    ;;
  finished)
    wait_for_log "inst=$p msg=\"produced $C " 20
    kill -KILL "$PLANTD_PID"
    ;;
  esac
  killed
}

# drain: start again without a producer, until everything published was
# counted, then stop cleanly.
drain() {
  local from low=0 p
  n=$((n + 1))
  from=$(report_lines)
  start "$n" ""
  for p in "${PRODUCERS[@]}"; do low=$((low + $(published "$p"))); done
  # since this start, the total reached what was logged and three reports
  # in a row counted nothing (everything read back came and went)
  drained() {
    jq -s -e --argjson low "$low" --argjson from "$from" \
      '.[$from:] | length >= 3 and .[-1].body.total >= $low and (.[-3:] | all(.body.readings == 0))' \
      "$REPORTS" >/dev/null
  }
  wait_until 30 "the queue drained into analytics" drained
  stop_plantd TERM 20
  expect_exit 0
}

# came_back: the readings that came back after their report was stored
# (their acks lost in a kill), acked without being counted, over all starts.
came_back() {
  cat "$TEST_TMP"/plantd.*.log |
    sed -nE 's/.*inst=agg msg="([0-9]+) messages counted before a restart came back.*/\1/p' |
    awk '{ n += $1 } END { print n + 0 }'
}

say "kill -9 in the middle of a producer's readings"
kill_round mid
say "kill -9 right after a report, while a producer publishes"
kill_round report
say "kill -9 right after a producer's last reading, before it is reported"
kill_round finished
say "kill -9 right after a report, twice more"
kill_round report
kill_round report
say "drain"
drain
# Whether a kill lands before the acks reach the queue's store is timing:
# more rounds until one did, so that the test proves that case too.
extra=0
while (($(came_back) == 0 && extra < 8)); do
  extra=$((extra + 1))
  say "no kill caught a report's acks in flight yet: round $extra more"
  kill_round report
  drain
done
((extra == 0)) || say "$extra rounds more"

last=$(jq -c '.body' "$REPORTS" | tail -n 1)
total=$(jq '.total' <<<"$last")
# the stop line (the last run may be stored, its report not written: log_sink
# stops after analytics)
stop_total=$(sed -nE 's/.*inst=agg msg="analytics stopped total=([0-9]+) runs=[0-9]+".*/\1/p' "$LOG")
[[ $stop_total == "$total" ]] || fail "analytics stopped with total '$stop_total', the last report says $total"

say "checking each producer's readings were counted exactly once"
sum=0
for p in "${PRODUCERS[@]}"; do
  g=$(jq -c --arg p "$p" '.locations[$p]' <<<"$last")
  [[ $g != null ]] || fail "no group $p in the last report: $last"
  count=$(jq '.count' <<<"$g")
  logged=$(published "$p")
  jq -e '.min == 0 and .count == .max + 1 and ((.avg * .count - .max * (.max + 1) / 2) | fabs) < 1e-6' \
    <<<"$g" >/dev/null ||
    fail "$p: not each of seq 0..max once: $g"
  slack=0
  [[ " ${mid_publish[*]} " == *" $p "* ]] && slack=1
  ((count >= logged && count <= logged + slack)) ||
    fail "$p: $count counted, $logged published (logged ids; up to $slack more when killed mid-publish)"
  say "$p: $logged published (logged), $count counted, seq 0..$((count - 1)) once each"
  sum=$((sum + count))
done
((sum == total)) || fail "the total is $total, the groups hold $sum"
window_sum=$(jq '[.locations[].count] | add' <<<"$last")
((window_sum == total)) || fail "the window counts add up to $window_sum, the total is $total"

if command -v sqlite3 >/dev/null; then
  state=$(sqlite3 "$DB" "SELECT value FROM items WHERE key = CAST('analytics/agg/state' AS BLOB)")
  [[ $(jq '.total' <<<"$state") == "$total" ]] ||
    fail "the stored state's total is $(jq '.total' <<<"$state"), the last report's $total"
  left=$(sqlite3 "$DB" "SELECT count(*) FROM items WHERE substr(CAST(key AS TEXT), 1, 11) = 'q/readings/'")
  ((left == 0)) || fail "$left readings are still in the durable queue"
fi

dups=$(came_back)
((dups > 0)) || fail "no kill right after a report caught its acks in flight, in $((3 + extra)) tries"
say "$dups readings came back after their report was stored: acked, not counted again"
say "ok: total $total = the readings published, each counted once over $((n - 1 - extra)) kills"
