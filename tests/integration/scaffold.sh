#!/usr/bin/env bash
# The scaffold, as a third-party developer uses it: plantd-new-plugin writes
# a project, which builds with pkg-config alone (against this build tree's
# plantd-sdk), passes its own unit test, exports only its descriptor, and
# loads unmodified in plantd from its sample conf fragment, publishing on
# the bus. Also the scaffold's refusals: bad names, existing directories.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCAFFOLD=$PLANTD_SOURCE_ROOT/tools/plantd-new-plugin
NAME=it_beacon
command -v meson >/dev/null || fail "meson is needed to build the generated project"
command -v pkg-config >/dev/null || fail "pkg-config is needed"
command -v nm >/dev/null || fail "nm (binutils) is needed"

# scaffold ARGS...: run it; its stdout+stderr in SOUT, exit status in SRC.
scaffold() {
  SRC=0
  SOUT=$(bash "$SCAFFOLD" "$@" 2>&1) || SRC=$?
}

# expect_refused WANT_TEXT ARGS...: exit status 2 and WANT_TEXT said.
expect_refused() {
  local want=$1
  shift
  scaffold "$@"
  [[ $SRC == 2 ]] || fail "plantd-new-plugin $*: exit $SRC, expected 2; said: $SOUT"
  grep -qF -- "$want" <<<"$SOUT" || fail "plantd-new-plugin $*: expected '$want' in: $SOUT"
}

# ---- the command line ------------------------------------------------------------

say "--help, and the refusals"
scaffold --help
[[ $SRC == 0 ]] || fail "--help: exit $SRC"
grep -qF "usage: plantd-new-plugin [-d DIR] NAME" <<<"$SOUT" || fail "--help says: $SOUT"

SRCDIR=$TEST_TMP/src
mkdir -p "$SRCDIR"
expect_refused "usage:" -d "$SRCDIR"
for bad in Beacon 1beacon be-acon "be acon" _beacon "beacon.so" "b\$x" ""; do
  expect_refused "bad NAME" -d "$SRCDIR" "$bad"
done
expect_refused "at most 64" -d "$SRCDIR" "$(printf 'a%.0s' {1..65})"
expect_refused "unknown option '--frobnicate'" --frobnicate "$NAME"
expect_refused "one NAME only" -d "$SRCDIR" one two
expect_refused "no such directory" -d "$TEST_TMP/nowhere" "$NAME"
[[ ! -e $TEST_TMP/nowhere ]] || fail "a refused -d DIR was created"

mkdir "$SRCDIR/taken"
echo keep >"$SRCDIR/taken/marker"
expect_refused "exists already" -d "$SRCDIR" taken
[[ $(cat "$SRCDIR/taken/marker") == keep && $(find "$SRCDIR/taken" | wc -l) == 2 ]] ||
  fail "a refused existing directory was touched"
: >"$SRCDIR/afile"
expect_refused "exists already" -d "$SRCDIR" afile
leftovers=$(find "$SRCDIR" -mindepth 1 -maxdepth 1 -name '.*')
[[ -z $leftovers ]] || fail "refusals left temporary files: $leftovers"

say "without -d, the project goes into the current directory"
mkdir "$TEST_TMP/cwd"
(cd "$TEST_TMP/cwd" && bash "$SCAFFOLD" here >/dev/null) || fail "plantd-new-plugin here failed"
[[ -f $TEST_TMP/cwd/here/here.c ]] || fail "no ./here/here.c"

# ---- the generated project --------------------------------------------------------

say "generate $NAME"
scaffold -d "$SRCDIR" "$NAME"
[[ $SRC == 0 ]] || fail "plantd-new-plugin $NAME: exit $SRC: $SOUT"
PROJ=$SRCDIR/$NAME
for f in "$NAME.c" meson.build meson_options.txt README.md "$NAME.conf" "tests/test_$NAME.c"; do
  [[ -s $PROJ/$f ]] || fail "the project has no $f"
done
# the README documents every key of the table, with its default
for key in topic every listen; do
  grep -qE "^\| \`$key\` +\|" "$PROJ/README.md" || fail "README.md does not document '$key'"
  grep -qF ".name = \"$key\"" "$PROJ/$NAME.c" || fail "$NAME.c has no key '$key'"
done
grep -qF "plantctl load build/$NAME.so --as $NAME --config" "$PROJ/README.md" ||
  fail "README.md does not show plantctl load"

# Only pkg-config and the SDK headers: the build tree's plantd-sdk, found
# through PKG_CONFIG_PATH like an installed one.
export PKG_CONFIG_PATH=$PLANTD_BUILD_ROOT
pkg-config --exists plantd-sdk || fail "pkg-config finds no plantd-sdk in $PLANTD_BUILD_ROOT"
[[ $(pkg-config --variable=abi_major plantd-sdk).$(pkg-config --variable=abi_minor plantd-sdk) == "$(host_abi)" ]] ||
  fail "plantd-sdk's ABI is not the host's $(host_abi)"

say "build it with meson (-Werror), run its unit test"
BUILD_LOG=$TEST_TMP/build.log
(cd "$PROJ" && meson setup build && meson compile -C build) >"$BUILD_LOG" 2>&1 ||
  fail "the generated project does not build:"$'\n'"$(tail -n 40 "$BUILD_LOG")"
grep -q -- '-Werror' "$PROJ/build/compile_commands.json" || fail "the project does not build with -Werror"
(cd "$PROJ" && meson test -C build --print-errorlogs) >>"$BUILD_LOG" 2>&1 ||
  fail "the generated unit test fails:"$'\n'"$(tail -n 40 "$BUILD_LOG")"
SO=$PROJ/build/$NAME.so
[[ -f $SO ]] || fail "no $SO"

say "$NAME.so exports only plant_plugin_v1"
syms=$(nm -D --defined-only "$SO" | awk '{ n = $NF; sub(/@.*/, "", n) }
  n !~ /^(_init|_fini|__bss_start|_edata|_end|__odr_asan\..*|__asan_.*|__ubsan_.*|__sanitizer_.*|__lsan_.*)$/ { print $(NF-1), n }')
[[ $syms == 'D plant_plugin_v1' || $syms == 'R plant_plugin_v1' ]] ||
  fail "$SO exports more or less than plant_plugin_v1:"$'\n'"${syms:-(nothing)}"

# ---- in plantd -------------------------------------------------------------------

# A conf.d site: plantd.conf, and the project's sample fragment as it is.
SITE=$TEST_TMP/site
SINK=$SITE/data/out.jsonl
mkdir "$SITE"
cat >"$SITE/plantd.conf" <<EOF
site = "it-scaffold";
data_dir = "data";
plugin_path = "$PROJ/build:$PLANTD_BUILD_ROOT/plugins:$PLANTD_BUILD_ROOT/sdk/examples";
shutdown_timeout = "5s";
plugins = (
  { name = "sink"; module = "log_sink"; subscribe = [ "$NAME.*" ]; path = "out.jsonl"; },
  { name = "feed"; module = "example_counter"; topic = "$NAME.in.feed"; every = "50ms"; }
);
EOF
cp "$PROJ/$NAME.conf" "$SITE/50-$NAME.conf"

say "plantd --check accepts the sample fragment"
plantd_run -c "$SITE" --check
expect_exit 0

# heartbeats_at_least N: the sink has N heartbeats of the plugin.
heartbeats_at_least() {
  [[ -f $SINK ]] && (($(grep -cF "\"topic\":\"$NAME.heartbeat\"" "$SINK") >= $1))
}

# heartbeat_seeing: a heartbeat that counted messages of the feed.
heartbeat_seeing() {
  [[ -f $SINK ]] && grep -qE "\"topic\":\"$NAME\.heartbeat\".*\"seen\":[1-9]" "$SINK"
}

say "plantd runs it: heartbeats on the bus, counting the messages it hears"
start_plantd -c "$SITE"
wait_for_log "inst=$NAME .*started" 10
wait_until 15 "2 heartbeats of $NAME in the sink" heartbeats_at_least 2
wait_until 10 "a heartbeat that saw the feed's messages" heartbeat_seeing
grep -qE "\"topic\":\"$NAME\.heartbeat\".*\"instance\":\"$NAME\"" "$SINK" ||
  fail "the heartbeat does not name the instance"
expect_in_log -F "beating on $NAME.heartbeat"
stop_plantd TERM 20
expect_exit 0
expect_in_log -E "stopping after [0-9]+ heartbeats, [1-9][0-9]* messages seen"
say "ok"
