#!/usr/bin/env bash
# A site's whole life with the real binary: start, messages reaching a sink
# file, a SIGHUP reload (one instance unchanged, one changed, one removed,
# one added), a refused reload, and a clean SIGTERM stop in reverse order.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONF=$TEST_TMP/site.conf
DATA=$TEST_TMP/data
SINK=$DATA/out.jsonl
export FX_TRACE=$TEST_TMP/trace # fx_good records NAME:init/start/stop/destroy

# The config header shared by every version of the site.
header() {
  cat <<EOF
site = "it-lifecycle";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/plugins/log_sink:$PLANTD_BUILD_ROOT/sdk/examples";
shutdown_timeout = "5s";
EOF
}

# lifecycle_of NAME: the "started"/"stopped" lines of instance NAME on stdin.
lifecycle_of() {
  grep -E "inst=$1 .*msg=\"(started|stopped) \(" || true
}

# sink_has_topic TOPIC: a line of the sink file carries TOPIC.
sink_has_topic() {
  [[ -f $SINK ]] && grep -qF "\"topic\":\"$1\"" "$SINK"
}

trace_count() {
  grep -cxF "$1" "$FX_TRACE" || true
}

# ---- 1. start ------------------------------------------------------------------

{
  header
  cat <<'EOF'
plugins = (
  { name = "keep"; module = "fx_good"; label = "same"; },
  { name = "sink"; module = "log_sink"; subscribe = [ "t.*" ]; path = "out.jsonl"; },
  { name = "counter"; module = "example_counter"; topic = "t.count"; every = "50ms"; },
  { name = "gone"; module = "fx_good"; label = "bye"; }
);
EOF
} >"$CONF"

say "start the site"
start_plantd -c "$CONF"
wait_for_log 'site .* up' 10
for i in keep sink counter gone; do
  expect_in_log -E "inst=$i .*msg=\"started \("
done
wait_until 10 "3 lines in $SINK" file_lines_at_least "$SINK" 3
expect_in_log -F '"topic":"t.count"' "$SINK"

# ---- 2. reload ----------------------------------------------------------------------

{
  header
  cat <<'EOF'
plugins = (
  { name = "keep"; module = "fx_good"; label = "same"; },
  { name = "sink"; module = "log_sink"; subscribe = [ "t.*" ]; path = "out.jsonl"; },
  { name = "counter"; module = "example_counter"; topic = "t.count2"; every = "50ms"; },
  { name = "fresh"; module = "fx_good"; label = "new"; publish = "t.fresh"; every = "50ms"; }
);
EOF
} >"$CONF"

say "reload: keep and sink unchanged, counter changed, gone removed, fresh added"
mark=$(log_lines)
send_signal HUP
wait_for_log 'reload applied' 10 "$mark"
seg=$TEST_TMP/reload.log
log_since "$mark" >"$seg"
expect_in_log -F 'reload applied: 2 stopped, 2 started, 2 untouched' "$seg"

for i in keep sink; do
  [[ -z $(lifecycle_of "$i" <"$seg") ]] ||
    fail "unchanged instance $i was stopped or started by the reload: $(lifecycle_of "$i" <"$seg")"
done
events=$(lifecycle_of counter <"$seg" | sed -E 's/.*msg="(started|stopped) .*/\1/' | paste -sd, -)
[[ $events == stopped,started ]] ||
  fail "changed instance counter: expected stopped then started, got '$events'"
events=$(lifecycle_of gone <"$seg" | sed -E 's/.*msg="(started|stopped) .*/\1/' | paste -sd, -)
[[ $events == stopped ]] || fail "removed instance gone: expected stopped, got '$events'"
events=$(lifecycle_of fresh <"$seg" | sed -E 's/.*msg="(started|stopped) .*/\1/' | paste -sd, -)
[[ $events == started ]] || fail "added instance fresh: expected started, got '$events'"

# fx_good's own record: keep was created once, gone torn down once.
[[ $(trace_count keep:init) == 1 && $(trace_count keep:stop) == 0 ]] ||
  fail "keep was re-created by the reload; trace: $(paste -sd' ' "$FX_TRACE")"
[[ $(trace_count gone:stop) == 1 && $(trace_count gone:destroy) == 1 ]] ||
  fail "gone was not torn down once; trace: $(paste -sd' ' "$FX_TRACE")"

# The new settings are live: the changed and the added instance publish.
wait_until 10 "t.count2 in the sink" sink_has_topic t.count2
wait_until 10 "t.fresh in the sink" sink_has_topic t.fresh

# ---- 3. a refused reload -----------------------------------------------------------

{
  header
  cat <<'EOF'
plugins = (
  { name = "keep"; module = "fx_good"; label = "same"; },
  { name = "sink"; module = "log_sink"; subscribe = [ "t.*" ]; path = "out.jsonl"; },
  { name = "counter"; module = "example_counter"; topic = "t.count2"; every = "50ms"; },
  { name = "fresh"; module = "fx_good"; label = "new"; publish = "t.fresh"; every = "50ms"; },
  { name = "bogus"; module = "no_such_module"; }
);
EOF
} >"$CONF"
bad_line=$(line_of "$CONF" '"bogus"')

say "reload with an unknown module: refused, the site runs on"
mark=$(log_lines)
send_signal HUP
wait_for_log 'reload refused' 10 "$mark"
have=$(wc -l <"$SINK")
wait_until 10 "3 more lines in $SINK after the refused reload" \
  file_lines_at_least "$SINK" $((have + 3))
seg=$TEST_TMP/refused.log
log_since "$mark" >"$seg"
expect_in_log -F "$CONF:$bad_line: " "$seg"
expect_in_log -F 'unknown module' "$seg"
expect_in_log -F 'bogus' "$seg"
expect_not_in_log -E 'msg="(started|stopped) \(' "$seg"

# ---- 4. stop ---------------------------------------------------------------------------

say "SIGTERM: clean stop, last instance first"
mark=$(log_lines)
stop_plantd TERM 20
expect_exit 0
seg=$TEST_TMP/stop.log
log_since "$mark" >"$seg"
expect_in_log -F 'stopped cleanly' "$seg"
order=$(grep -E 'msg="stopped \(' "$seg" | sed -E 's/.* inst=([^ ]+) .*/\1/' | paste -sd' ' -)
[[ $order == "fresh counter sink keep" ]] ||
  fail "stop order '$order', expected the reverse of the config: 'fresh counter sink keep'"
[[ $(trace_count keep:stop) == 1 && $(trace_count keep:destroy) == 1 ]] ||
  fail "keep was not torn down once at the stop; trace: $(paste -sd' ' "$FX_TRACE")"
say "ok"
