#!/usr/bin/env bash
# Drop-in deployment (issue 8): `plantctl load FILE.so --as NAME --config
# JSON` starts a module on a running site, checked exactly as at start, and
# a refusal leaves the site as it was.
#
# - a module file loaded under a name publishes on the bus at once; plantctl
#   prints "loaded NAME (FILE VERSION)" and `plugins` lists it;
# - refused, each with plantd's reason and exit 1, the site untouched (same
#   instances, the sink still counting): a name in use, an unknown key and a
#   bad duration (naming the key), an SDK newer than the host (naming both
#   versions), another major, an init() that fails (its message), a missing
#   file, an unknown module name;
# - a reload (SIGHUP) leaves the loaded instance running, untouched;
# - a restart brings it back (DATA_DIR/loaded.json) with its settings;
# - unload of an instance from the site's files is refused naming FILE:LINE;
#   unload of the loaded one stops it: no more messages, not back after a
#   restart;
# - a damaged loaded.json stops plantd at start with exit 2 naming the file
#   and line.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v jq >/dev/null || fail "jq is needed"
PLANTCTL=$PLANTD_BUILD_ROOT/tools/plantctl
[[ -x $PLANTCTL ]] || fail "no plantctl at $PLANTCTL"
unset PLANTD_URL PLANTD_TOKEN

CONF=$TEST_TMP/site.conf
DATA=$TEST_TMP/data
OUTF=$DATA/out.jsonl
# a module file outside the plugin path, as a third party ships it
DROP=$TEST_TMP/dropped
mkdir -p "$DROP"
cp "$PLANTD_BUILD_ROOT/sdk/examples/example_counter.so" "$DROP/meter.so"

cat >"$CONF" <<CONF
site = "it-dropin";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/plugins";
listeners = ( { name = "admin"; admin = true; address = "127.0.0.1"; port = 0; } );
plugins = (
  { name = "sink"; module = "log_sink"; subscribe = [ "meter.*" ]; path = "out.jsonl"; }
);
CONF
SINK_LINE=$(line_of "$CONF" 'name = "sink"')

ctl() {
  RC=0
  "$PLANTCTL" "$@" >"$TEST_TMP/ctl.out" 2>"$TEST_TMP/ctl.err" </dev/null || RC=$?
  COUT=$(cat "$TEST_TMP/ctl.out")
  CERR=$(cat "$TEST_TMP/ctl.err")
}

# refused WHAT TEXT ARGS...: plantctl ARGS exits 1 and says TEXT (fixed).
refused() {
  local what=$1 text=$2
  shift 2
  ctl "$@"
  [[ $RC == 1 ]] || fail "$what: exit $RC, expected 1 (stdout: $COUT; stderr: $CERR)"
  grep -qF -- "$text" <<<"$CERR" || fail "$what: expected '$text' in: $CERR"
}

# instances: the running site's instance names and states, sorted.
instances() {
  ctl --json plugins
  [[ $RC == 0 ]] || fail "plantctl plugins: exit $RC: $CERR"
  jq -r '.plugins[] | "\(.name):\(.state)"' <<<"$COUT" | sort | tr '\n' ' '
}

sink_lines_of() { # instance name: how many of its messages the sink has
  [[ -f $OUTF ]] || {
    echo 0
    return
  }
  jq -c --arg n "$1" 'select(.body.instance == $n)' "$OUTF" | wc -l
}

more_from() { # NAME N: the sink has more than N messages of NAME
  (($(sink_lines_of "$1") > $2))
}

start_site() {
  start_plantd -c "$CONF"
  wait_urls "$DATA"
  PLANTD_URL=$(url_of "$DATA" admin)
  export PLANTD_URL
}

start_site

say "load a module file: it runs at once"
ctl load "$DROP/meter.so" --as meter1 --config '{"every": "100ms", "topic": "meter.a"}'
[[ $RC == 0 ]] || fail "load: exit $RC: $CERR"
[[ $COUT == "loaded meter1 ($DROP/meter.so 1.0.0)" ]] || fail "load printed: $COUT"
wait_until 10 "messages of meter1 in the sink" more_from meter1 2
[[ $(instances) == "meter1:running sink:running " ]] || fail "plugins: $(instances)"
ctl --json plugins
[[ $(jq -r '.plugins[] | select(.name == "meter1") | .source' <<<"$COUT") == "plantctl load" ]] ||
  fail "meter1's source: $COUT"

say "refusals name the reason and leave the site as it was"
IFS=. read -r major minor < <(host_abi)
refused "a name in use" 'an instance named "meter1" runs already' \
  load "$DROP/meter.so" --as meter1
refused "a name from the files" "an instance named \"sink\" runs already ($CONF:$SINK_LINE)" \
  load "$DROP/meter.so" --as sink
refused "an unknown key" "'colour'" \
  load "$DROP/meter.so" --as m2 --config '{"colour": "red"}'
refused "a bad duration" "'every' must be a duration" \
  load "$DROP/meter.so" --as m2 --config '{"every": "soon"}'
refused "a newer minor" "built for SDK $major.$((minor + 1)), host provides $major.$minor" \
  load "$PLANTD_FIXTURE_DIR/fx_newer_minor.so"
refused "another major" "host provides $major.$minor" \
  load "$PLANTD_FIXTURE_DIR/fx_major2.so"
refused "init() fails" "init failed: cannot open device /dev/fx0" \
  load "$PLANTD_FIXTURE_DIR/fx_init_fails.so"
refused "a missing file" "cannot open module file $DROP/none.so" \
  load "$DROP/none.so"
refused "an unknown module" 'unknown module "no_such_module"' \
  load no_such_module
[[ $(instances) == "meter1:running sink:running " ]] || fail "after refusals: $(instances)"
n=$(sink_lines_of meter1)
wait_until 10 "meter1 still publishing" more_from meter1 "$n"
plantd_running || fail "plantd died"
ctl load "$DROP/meter.so" --config 'not json'
[[ $RC == 2 ]] || fail "--config that is not JSON: exit $RC, expected 2"

say "a reload leaves the loaded instance alone"
mark=$(log_lines)
send_signal HUP
wait_for_log 'reload applied' 10 "$mark"
log_since "$mark" | grep -q 'reload applied: 0 stopped, 0 started' ||
  fail "the reload restarted something:"$'\n'"$(log_since "$mark")"
[[ $(instances) == "meter1:running sink:running " ]] || fail "after reload: $(instances)"

say "a restart brings it back with its settings"
stop_plantd TERM 20
expect_exit 0
jq -e '.plugins[0] | .name == "meter1" and .config.topic == "meter.a"' "$DATA/loaded.json" >/dev/null ||
  fail "loaded.json: $(cat "$DATA/loaded.json")"
n=$(sink_lines_of meter1)
start_site
wait_until 10 "meter1 back after the restart" more_from meter1 "$((n + 2))"

say "unload: refused for the files' instances, done for a loaded one"
refused "unload sink" "instance \"sink\" comes from $CONF:$SINK_LINE" unload sink
refused "unload unknown" 'no loaded instance named "nope"' unload nope
# a deployment in its grace period ends with the instance: no rollback
# brings it back
"$PLANTD_BUILD_ROOT/tools/plantd-bundle" pack "$DROP/meter.so" -o "$TEST_TMP/meter.bundle" >/dev/null
ctl deploy "$TEST_TMP/meter.bundle" --as meter1 --grace 30s
[[ $RC == 0 ]] || fail "deploy to meter1: $RC $CERR"
ctl unload meter1
[[ $RC == 0 && $COUT == "unloaded meter1" ]] || fail "unload: exit $RC: $COUT $CERR"
[[ $(instances) == "sink:running " ]] || fail "after unload: $(instances)"
sleep 0.6
[[ $(instances) == "sink:running " ]] || fail "a while after unload: $(instances)"
ctl --json deployments
[[ $(jq -r '.deployments[-1].state' <<<"$COUT") == abandoned ]] || fail "deployment: $COUT"
[[ $(jq -r '.instances | length' "$DATA/deployed.json") == 0 ]] ||
  fail "deployed.json keeps meter1: $(cat "$DATA/deployed.json")"
n=$(sink_lines_of meter1)
sleep 0.5
(($(sink_lines_of meter1) == n)) || fail "meter1 publishes after unload"
stop_plantd TERM 20
expect_exit 0
start_site
[[ $(instances) == "sink:running " ]] || fail "after unload and restart: $(instances)"
stop_plantd TERM 20
expect_exit 0

say "a damaged loaded.json is a clear error at start"
printf '{"plugins": [\n  {"name": "x",\n' >"$DATA/loaded.json"
plantd_run -c "$CONF"
expect_exit 2
expect_in_log -F "$DATA/loaded.json:3"
printf '{"plugins": [ {"name": "x", "module": "m", "colour": 1} ]}\n' >"$DATA/loaded.json"
plantd_run -c "$CONF"
expect_exit 2
expect_in_log -F "$DATA/loaded.json: unknown key \"colour\""
say "ok"
