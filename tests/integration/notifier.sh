#!/usr/bin/env bash
# The notifier and the live view (issue 5).
#
# notifier: a producer (fx_producer) publishes a burst of notifications; the
# file gets every one (checked with jq), stderr at most stderr_max_per_s
# lines a second plus "N more notifications" lines that account for the
# rest. Notifications like the sensor plugin's (replayed from a file by
# fx_replay) give the expected human lines, whole, with min_severity
# filtering stderr but not the file. stderr = false, stderr_max_per_s = 0
# and a min_severity above every notification keep stderr quiet while the
# file still gets everything; a path whose directory cannot be created
# fails the instance at startup, naming the file; bad settings are refused
# by --check; a file that cannot be written (/dev/full) is logged once and
# counted, and plantd goes on.
#
# live_view (a section of its own below): processed readings and analytics
# reports replayed from a file give exact table rows and an exact summary
# (the "summary processed=N ..." line included); tables every 200ms, one
# after another (no screen clearing when stdout is not a terminal, clearing
# with clear = true); dead-letter queue depths, found by name, by use as a
# dead_letter, or listed in `dlq`; messages it cannot use are counted.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v jq >/dev/null || fail "jq is needed"

CONF=$TEST_TMP/site.conf
DATA=$TEST_TMP/data
PLUGINS="$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/plugins/notifier:$PLANTD_BUILD_ROOT/plugins/live_view"

# site INSTANCES...: a site "it-notify" with these plugin entries.
site() {
  local IFS=, entries
  entries="$*"
  cat >"$CONF" <<CONF
site = "it-notify";
data_dir = "data";
plugin_path = "$PLUGINS";
${QUEUES:-}
plugins = (
$entries
);
CONF
}

# The notifier's stderr lines for fx_producer's bodies, and its "more" lines.
HUMAN_RE='^it-notify INFO \{"seq":[0-9]+,"producer":"p"\}$'
MORE_RE='^[0-9]+ more notifications? in the last second \(see .*/notifications\.jsonl\)$'
count_re() { grep -Ec -- "$1" "$LOG" || true; }

# check_file FILE N: FILE has N lines, each a notification of producer p on
# notify.test, with seq 0..N-1 once each and distinct message ids.
check_file() {
  local file=$1 n=$2 got
  [[ -f $file ]] || fail "no file $file"
  got=$(wc -l <"$file")
  [[ $got == "$n" ]] || fail "$file has $got lines, expected $n"
  jq -e . "$file" >/dev/null || fail "$file has a line that is not JSON"
  got=$(jq -c 'select(.topic == "notify.test" and .body.producer == "p"
                      and (.id | type) == "string" and (.ts | type) == "number")' "$file" | wc -l)
  [[ $got == "$n" ]] || fail "$file: only $got of $n lines are notify.test notifications of p"
  got=$(jq -s -c '[.[].body.seq] | sort' "$file")
  [[ $got == "$(jq -n -c "[range($n)]")" ]] || fail "$file: seqs are $got, expected 0..$((n - 1)) once each"
  got=$(jq -r .id "$file" | sort -u | wc -l)
  [[ $got == "$n" ]] || fail "$file: $got distinct ids for $n lines"
}

# ---- notifier --------------------------------------------------------------------

say "notifier: a burst of 200 notifications, at most 5 stderr lines a second"
N=200
site '{ name = "p"; module = "fx_producer"; topic = "notify.test"; count = '$N'; batch = '$N'; }' \
  '{ name = "n"; module = "notifier"; }'
# --log-level warn: the host's own info lines would share stderr with ours
start_plantd -c "$CONF" --log-level warn
wait_until 20 "$N lines in the notification file" file_lines_at_least "$DATA/notifications.jsonl" $N
wait_for_log "$MORE_RE" 10
stop_plantd TERM 20
expect_exit 0
check_file "$DATA/notifications.jsonl" $N
printed=$(count_re "$HUMAN_RE")
more_lines=$(count_re "$MORE_RE")
more=$(grep -E -- "$MORE_RE" "$LOG" | awk '{ s += $1 } END { print s + 0 }')
# every line on stderr is one of ours (the host says nothing at warn)
others=$(grep -Evc -- "$HUMAN_RE|$MORE_RE" "$LOG" || true)
((others == 0)) || fail "$others unexpected lines on stderr"
((printed + more == N)) || fail "$printed lines printed + $more counted as more != $N notifications"
# The burst lands in one second (or straddles two): the first window prints
# 5; each window prints at most 5 and, having held lines back, says so.
((printed >= 5)) || fail "only $printed notifications printed, expected the first 5"
((printed <= 5 * (more_lines + 1))) || fail "$printed lines printed in at most $((more_lines + 1)) seconds"
grep -m1 -E -- "$HUMAN_RE" "$LOG" | grep -qF '{"seq":0,' || fail "the first line printed is not seq 0"
say "ok: $N in the file, $printed printed, $more counted in $more_lines line(s)"

say "notifier: what a notification looks like on stderr, min_severity, the file's content"
# fx_replay publishes each {"topic", "body"} line as it is, in order
cat >"$TEST_TMP/notes.jsonl" <<'EOF'
{"topic":"notify.sensor","body":{"ts":1,"severity":"warning","sensor_id":"L01-S0042","location":"L01","type":"thermistor","status":"too_hot","reading_id":"r1","message":"L01-S0042 too hot: 153.2 C"}}
{"topic":"notify.sensor","body":{"ts":2,"severity":"critical","sensor_id":"L02-S0001","location":"L02","type":"thermistor","status":"broken","reading_id":"r2","message":"L02-S0001 broken"}}
{"topic":"notify.ops","body":{"severity":"info","message":"shift change"}}
{"topic":"other.ops","body":{"severity":"critical","message":"not a notification: another topic"}}
{"topic":"notify.ops","body":{"message":"two\nlines\tand a tab"}}
{"topic":"notify.ops","body":"pump 3 restarted"}
{"topic":"notify.ops","body":{"severity":"error","code":7}}
{"topic":"notify.ops","body":{"severity":"Warning","message":42}}
EOF
N=7 # those on notify.*
# notes_run MIN_SEVERITY LINES: a run that printed LINES lines on stderr
notes_run() {
  rm -rf "$DATA"
  site '{ name = "replay"; module = "fx_replay"; file = "'"$TEST_TMP/notes.jsonl"'"; }' \
    '{ name = "n"; module = "notifier"; min_severity = "'"$1"'"; stderr_max_per_s = 100; }'
  start_plantd -c "$CONF" --log-level warn
  wait_until 20 "$N notifications in the file" file_lines_at_least "$DATA/notifications.jsonl" $N
  wait_until 10 "$2 lines on stderr" file_lines_at_least "$LOG" "$2"
  stop_plantd TERM 20
  expect_exit 0
}
notes_run warning 4
diff -u - "$LOG" <<'EOF' || fail "stderr with min_severity = warning is not as expected"
it-notify WARNING L01-S0042 too hot: 153.2 C
it-notify CRITICAL L02-S0001 broken
it-notify ERROR {"severity":"error","code":7}
it-notify WARNING {"severity":"Warning","message":42}
EOF
# every notification in the file, as published, in order
diff -u <(jq -c 'select(.topic | startswith("notify.")) | [.topic, .body]' "$TEST_TMP/notes.jsonl") \
  <(jq -c '[.topic, .body]' "$DATA/notifications.jsonl") ||
  fail "the file does not hold every notification as published"
notes_run info 7
diff -u - "$LOG" <<'EOF' || fail "stderr with min_severity = info is not as expected"
it-notify WARNING L01-S0042 too hot: 153.2 C
it-notify CRITICAL L02-S0001 broken
it-notify INFO shift change
it-notify INFO two lines and a tab
it-notify INFO pump 3 restarted
it-notify ERROR {"severity":"error","code":7}
it-notify WARNING {"severity":"Warning","message":42}
EOF
say "ok"

say "notifier: stderr = false, or min_severity above the notifications': nothing printed"
N=40
site '{ name = "p"; module = "fx_producer"; topic = "notify.test"; count = '$N'; batch = 10; }' \
  '{ name = "quiet"; module = "notifier"; stderr = false; path = "quiet/n.jsonl"; }' \
  '{ name = "crit"; module = "notifier"; min_severity = "critical"; path = "crit.jsonl"; }' \
  '{ name = "zero"; module = "notifier"; stderr_max_per_s = 0; path = "zero.jsonl"; }'
start_plantd -c "$CONF"
three_files() {
  file_lines_at_least "$DATA/quiet/n.jsonl" $N && file_lines_at_least "$DATA/crit.jsonl" $N &&
    file_lines_at_least "$DATA/zero.jsonl" $N
}
wait_until 20 "the files of all three notifiers" three_files
stop_plantd TERM 20
expect_exit 0
for f in quiet/n.jsonl crit.jsonl zero.jsonl; do
  check_file "$DATA/$f" $N
done
expect_not_in_log -E '^it-notify '
expect_not_in_log -F 'more notification'
expect_in_log -E 'inst=quiet msg="stopped \('$N' handled, 0 errors\)"'
say "ok"

say "notifier: a path whose directory cannot be created fails at startup"
rm -rf "$DATA"
mkdir -p "$DATA"
: >"$DATA/blocker" # a file where a directory should be
site '{ name = "n"; module = "notifier";
    path = "blocker/sub/n.jsonl"; }'
plantd_run -c "$CONF"
expect_exit 2
expect_in_log -E "site\\.conf:$(line_of "$CONF" 'path = "blocker'): instance \"n\" \\(module notifier\\): .*cannot create the directory of .*/blocker/sub/n\\.jsonl: Not a directory"
say "ok"

say "notifier: bad settings are refused by --check, naming the line"
site '{ name = "n"; module = "notifier";
    min_severity = "loud"; }'
plantd_run -c "$CONF" --check
expect_exit 2
expect_in_log -F "site.conf:$(line_of "$CONF" min_severity): instance \"n\" (module notifier): must be \"info\", \"warning\" or \"critical\", not \"loud\""
site '{ name = "n"; module = "notifier";
    stderr_max_per_s = -1; }'
plantd_run -c "$CONF" --check
expect_exit 2
expect_in_log -F "site.conf:$(line_of "$CONF" stderr_max_per_s): instance \"n\" (module notifier): must be 0 (never print) or more, not -1"
say "ok"

if [[ -w /dev/full ]]; then
  say "notifier: a file that cannot be written (/dev/full): logged once, counted, plantd goes on"
  N=30
  site '{ name = "p"; module = "fx_producer"; topic = "notify.test"; count = '$N'; batch = 3; }' \
    '{ name = "n"; module = "notifier"; path = "/dev/full"; stderr_max_per_s = 1000; }'
  start_plantd -c "$CONF"
  wait_for_log 'inst=p .*produced '$N 20
  # stderr still gets them, so the notifications themselves were handled
  # counted within lines: the host logs on the same stderr, in pieces, and
  # one of ours (a single write) may land inside one of its lines
  all_on_stderr() { (($(grep -Eo -- "${HUMAN_RE:1:-1}" "$LOG" | wc -l) == N)); }
  wait_until 10 "$N notifications on stderr" all_on_stderr
  stop_plantd TERM 20
  expect_exit 0
  errs=$(grep -c 'cannot write notifications to /dev/full: No space left on device' "$LOG" || true)
  [[ $errs == 1 ]] || fail "the write error was logged $errs times, expected once"
  expect_in_log -E 'inst=n msg="stopped \('$N' handled, [1-9][0-9]* errors\)"'
  expect_in_log -F 'stopped cleanly'
  say "ok"
else
  say "skipped the /dev/full case: no writable /dev/full here"
fi

# ---- live_view ---------------------------------------------------------------------

say "live_view: rows from processed readings and the latest analytics report"
QUEUES=
cat >"$TEST_TMP/view.jsonl" <<'EOF'
{"topic":"sensor.thermistor.processed","body":{"id":"t-1","sensor_id":"L01-S0001","location":"L01","type":"thermistor","status":"ok","temp_c":20.5}}
{"topic":"sensor.thermistor.processed","body":{"id":"t-2","sensor_id":"L01-S0001","location":"L01","type":"thermistor","status":"ok","temp_c":21.5}}
{"topic":"sensor.thermistor.processed","body":{"id":"t-3","sensor_id":"L01-S0001","location":"L01","type":"thermistor","status":"ok"}}
{"topic":"sensor.thermistor.processed","body":{"id":"t-4","sensor_id":"L01-S0002","location":"L01","type":"thermistor","status":"broken"}}
{"topic":"sensor.thermistor.processed","body":{"id":"t-5","sensor_id":"L01-S0002","location":"L01","type":"thermistor","status":"broken"}}
{"topic":"sensor.thermistor.processed","body":{"id":"t-6","sensor_id":"L01-S0003","location":"L01","type":"thermistor","status":"too_hot"}}
{"topic":"analytics.report","body":{"instance":"thermal","run":1,"total":5,"locations":{"L01":{"avg":20.0,"min":19,"max":21,"count":3,"rate":1}}}}
{"topic":"sensor.thermistor.processed","body":{"id":"t-7","sensor_id":"L02-S0001","location":"L02","type":"thermistor","status":"ok"}}
{"topic":"sensor.thermistor.processed","body":{"id":"t-8","sensor_id":"L02-S0001","location":"L02","type":"thermistor","status":"ok"}}
{"topic":"sensor.thermistor.processed","body":{"id":"t-9","sensor_id":"L02-S0002","location":"L02","type":"thermistor","status":"too_cold"}}
{"topic":"sensor.vibration.processed","body":{"id":"v-1","sensor_id":"L03-S0001","location":"L03","type":"vibration","status":"high"}}
{"topic":"sensor.vibration.processed","body":{"id":"v-2","sensor_id":"L03-S0002","location":"L03","type":"vibration","status":"broken"}}
{"topic":"sensor.vibration.processed","body":{"id":"v-3","sensor_id":"L03-S0003","location":"L03","type":"vibration","status":"low"}}
{"topic":"sensor.thermistor.processed","body":{"id":"b-1","sensor_id":"L01-S0009","type":"thermistor","status":"ok"}}
{"topic":"sensor.thermistor.processed","body":{"id":"b-2","sensor_id":"L01-S0009","location":"L01","type":"thermistor","status":7}}
{"topic":"sensor.thermistor.processed","body":[1,2]}
{"topic":"sensor.thermistor.processed","body":{"id":"b-4","sensor_id":"L01-S0009","location":"L 01","type":"thermistor","status":"ok"}}
{"topic":"analytics.report","body":{"instance":"thermal","run":2,"total":9,"locations":{"L01":{"avg":21.5,"min":20.25,"max":22.75},"L02":{"avg":-3.25,"min":-5,"max":-1.5},"L04":{"avg":10,"min":10,"max":10}}}}
{"topic":"analytics.report","body":{"instance":"thermal","run":3}}
EOF
site '{ name = "replay"; module = "fx_replay"; file = "'"$TEST_TMP/view.jsonl"'"; }' \
  '{ name = "lv"; module = "live_view"; every = "200ms"; }'
start_plantd -c "$CONF"
# last_table: the last table printed, without the uptime and the readings/s
# column (they depend on timing)
last_table() {
  awk '/^it-notify  up / { t = "" } { t = t $0 "\n" } END { printf "%s", t }' "$OUT" |
    awk 'NR == 1 { sub(/^it-notify  up [0-9]+:[0-9][0-9]:[0-9][0-9]  /, ""); print; next }
         NF == 6 { print $1, $3, $4, $5, $6; next }
         { print }'
}
expected_table='processed 12 (ok 5, too_hot 1, too_cold 1, high 1, low 1, broken 3)  ignored 4  dlq: none
location avg_C min_C max_C broken
L01 21.50 20.25 22.75 1
L02 -3.25 -5.00 -1.50 0
L03 - - - 1
L04 10.00 10.00 10.00 0'
# ... and once nothing new comes, a table showing 0 readings/s
table_done() {
  [[ $(last_table) == "$expected_table" ]] && grep -E '^L01 ' "$OUT" | tail -n 1 | grep -qE '^L01 +0\.0 '
}
wait_until 20 "a table with every reading and report, then none arriving" table_done
stop_plantd TERM 20
expect_exit 0
# an earlier table showed L01's readings arriving
awk '$1 == "L01" && NF == 6 && $2 > 0 { hit = 1 } END { exit !hit }' "$OUT" ||
  fail "no table showed readings/s above 0 for L01"
# the summary, whole
sed -n '/: live view summary, ran /,$p' "$OUT" >"$TEST_TMP/summary"
head -n 1 "$TEST_TMP/summary" | grep -qE '^it-notify: live view summary, ran [0-9]+:[0-9]{2}:[0-9]{2} \([0-9]+\.[0-9] s\)$' ||
  fail "no summary title line"
sed -e 1d -e 's/ run_s=[0-9]*\.[0-9]$/ run_s=X/' "$TEST_TMP/summary" | diff -u - <(cat <<'EOF'
readings processed: 12 (and 4 ignored: no location, sensor_id, type or status)
  type thermistor: ok=5 too_hot=1 too_cold=1 high=0 low=0 broken=2
  type vibration: ok=0 too_hot=0 too_cold=0 high=1 low=1 broken=1
  location L01: readings=6 avg_C=21.50 min_C=20.25 max_C=22.75 broken_sensors=1 L01-S0002
  location L02: readings=3 avg_C=-3.25 min_C=-5.00 max_C=-1.50 broken_sensors=0
  location L03: readings=3 avg_C=- min_C=- max_C=- broken_sensors=1 L03-S0002
  location L04: readings=0 avg_C=10.00 min_C=10.00 max_C=10.00 broken_sensors=0
analytics: total 9 in the latest of 2 reports
dead-letter queues: none
summary processed=12 broken_sensors=2 dead_lettered=0 analytics_total=9 ok=5 too_hot=1 too_cold=1 high=1 low=1 broken=3 other=0 ignored=4 reports=2 ignored_reports=1 locations=4 run_s=X
EOF
) || fail "the summary is not as expected"
say "ok"

say "live_view: tables every 200ms, dead-letter depths, unusable messages counted"
rm -rf "$DATA"
# x.dlq is a dead-letter queue by its name, "parking" because a queue uses
# it as its dead_letter: "work" fails every delivery once (max_receive 1).
QUEUES='queues = (
  { name = "x.dlq"; subscribe = [ "junk.*" ]; },
  { name = "work"; subscribe = [ "job.*" ]; max_receive = 1; dead_letter = "parking"; },
  { name = "parking"; },
  { name = "other"; subscribe = [ "junk.*" ]; }
);'
LV_PRODUCERS='{ name = "j"; module = "fx_producer"; topic = "junk.a"; count = 7; },
  { name = "jobs"; module = "fx_producer"; topic = "job.a"; count = 4; },
  { name = "c"; module = "fx_consumer"; queue = "work"; fail_every = 1; },
  { name = "r"; module = "fx_producer"; topic = "sensor.thermistor.processed"; count = 5; },
  { name = "a"; module = "fx_producer"; topic = "analytics.report"; count = 3; }'
site "$LV_PRODUCERS" '{ name = "lv"; module = "live_view"; every = "200ms"; }'
start_plantd -c "$CONF"
header_re='^it-notify  up [0-9]+:[0-9]{2}:[0-9]{2}  processed 0 \(ok 0, too_hot 0, too_cold 0, high 0, low 0, broken 0\)  ignored 5  dlq: parking 4, x\.dlq 7$'
tables() { grep -Ec -- "$header_re" "$OUT" || true; }
tables_at_least() { (($(tables) >= $1)); }
wait_until 20 "two tables showing every message" tables_at_least 2
stop_plantd TERM 20
expect_exit 0
expect_in_log -F 'stopped cleanly'
grep -q $'\033' "$OUT" && fail "the screen was cleared although stdout is a file"
rows=$(grep -c '^location   readings/s    avg_C    min_C    max_C  broken$' "$OUT" || true)
nodata=$(grep -c '^(no readings yet)$' "$OUT" || true)
((rows >= 2 && rows == nodata)) || fail "expected a column line and '(no readings yet)' per table ($rows, $nodata)"
summary=$(grep -E '^summary ' "$OUT" || true)
[[ $(grep -c . <<<"$summary") == 1 ]] || fail "expected one summary line, got: $summary"
for kv in processed=0 broken_sensors=0 dead_lettered=11 analytics_total=0 ok=0 broken=0 \
  ignored=5 reports=0 ignored_reports=3 locations=0; do
  grep -qE "(^| )$kv( |$)" <<<"$summary" || fail "no $kv in: $summary"
done
[[ $summary == "summary processed=0 broken_sensors=0 dead_lettered=11 analytics_total=0 "* ]] ||
  fail "the summary does not start with the four documented fields: $summary"
expect_in_log -F 'dead-letter queues: parking 4, x.dlq 7' "$OUT"
expect_in_log -F 'analytics: no report received' "$OUT"
say "ok: $(tables) tables; $summary"

say "live_view: dlq named in the config, clear = true"
site "$LV_PRODUCERS" '{ name = "lv"; module = "live_view"; every = "200ms"; clear = true;
    dlq = [ "parking", "nowhere" ]; }'
start_plantd -c "$CONF"
header_re='  ignored 5  dlq: nowhere \?, parking 4$'
wait_until 20 "a table showing every message" tables_at_least 1
stop_plantd TERM 20
expect_exit 0
grep -q $'\033\\[H\033\\[2J' "$OUT" || fail "clear = true did not clear the screen"
expect_in_log -E '^summary processed=0 broken_sensors=0 dead_lettered=4 analytics_total=0 ' "$OUT"
say "ok"

say "live_view: bad settings are refused by --check"
QUEUES=
site '{ name = "lv"; module = "live_view";
    every = "1ms"; }'
plantd_run -c "$CONF" --check
expect_exit 2
expect_in_log -F "site.conf:$(line_of "$CONF" 'every ='): instance \"lv\" (module live_view): must be at least 10ms"
site '{ name = "lv"; module = "live_view";
    readings = [ ]; }'
plantd_run -c "$CONF" --check
expect_exit 2
expect_in_log -F "site.conf:$(line_of "$CONF" 'readings ='): instance \"lv\" (module live_view): needs at least one topic pattern"
say "ok"
