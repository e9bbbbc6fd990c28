#!/usr/bin/env bash
# A third-party developer's whole journey (issue 8), with nothing from the
# source tree but what `meson install` put under a prefix:
#
# 1. plantd is built from the sources and installed to a temporary prefix:
#    the programs (each answers --help), the bundled plugins, the SDK
#    headers, plantd-sdk.pc and the example site (which --check passes);
# 2. pkg-config finds the SDK there: its version is the ABI the installed
#    plantd reports, its plugindir holds the bundled plugins;
# 3. plantd-new-plugin writes a project; it builds with pkg-config and the
#    installed headers only (-Werror), its unit test passes, and its module
#    exports the descriptor alone;
# 4. the installed plantd runs a site; `plantctl load` drops the new module
#    in from the project's build directory, and its heartbeats are on the
#    bus; installed into the SDK's plugindir (meson install), it loads by
#    name as well;
# 5. the project's sample conf fragment, added to a site, passes --check.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for tool in meson ninja pkg-config cc nm jq; do
  command -v "$tool" >/dev/null || fail "$tool is needed"
done
unset PLANTD_URL PLANTD_TOKEN PKG_CONFIG_PATH CFLAGS CPPFLAGS LDFLAGS C_INCLUDE_PATH CPATH

PREFIX=$TEST_TMP/prefix
BUILD=$TEST_TMP/plantd-build
WORK=$TEST_TMP/work
mkdir -p "$WORK"

# quietly STEP CMD...: run CMD with its output in a file, shown on failure.
quietly() {
  local step=$1
  shift
  "$@" >"$TEST_TMP/step.log" 2>&1 ||
    fail "$step failed:"$'\n'"$(tail -n 40 "$TEST_TMP/step.log")"
}

say "build plantd and install it to a temporary prefix"
quietly "meson setup" meson setup "$BUILD" "$PLANTD_SOURCE_ROOT" --prefix "$PREFIX" \
  -Dtests=false -Db_sanitize=none
quietly "meson compile" meson compile -C "$BUILD"
quietly "meson install" meson install -C "$BUILD"

for prog in plantd plantctl plantd-loadgen plantd-new-plugin plantd-bundle; do
  [[ -x $PREFIX/bin/$prog ]] || fail "no $prog in $PREFIX/bin"
  "$PREFIX/bin/$prog" --help >"$TEST_TMP/help.out" 2>&1 || fail "$prog --help failed"
  grep -q "usage: $prog" "$TEST_TMP/help.out" || fail "$prog --help: $(head -3 "$TEST_TMP/help.out")"
done
for h in plantd.h testing.h; do
  [[ -f $PREFIX/include/plantd/$h ]] || fail "no include/plantd/$h installed"
done
pc=$(find "$PREFIX" -name plantd-sdk.pc)
[[ -n $pc ]] || fail "no plantd-sdk.pc installed"
[[ -f $PREFIX/etc/plantd/plantd.conf ]] || fail "no example site in $PREFIX/etc/plantd"
quietly "plantd --check of the example site" "$PREFIX/bin/plantd" -c "$PREFIX/etc/plantd" --check

say "pkg-config finds the SDK under the prefix"
export PKG_CONFIG_PATH=${pc%/*}
abi=$("$PREFIX/bin/plantd" --version | sed -nE 's/.*SDK ABI ([0-9]+\.[0-9]+).*/\1/p')
[[ $(pkg-config --modversion plantd-sdk) == "$abi" ]] ||
  fail "plantd-sdk version $(pkg-config --modversion plantd-sdk), plantd says ABI $abi"
[[ $(pkg-config --variable=abi_major plantd-sdk).$(pkg-config --variable=abi_minor plantd-sdk) == "$abi" ]] ||
  fail "abi_major/abi_minor variables do not say $abi"
PLUGINDIR=$(pkg-config --variable=plugindir plantd-sdk)
[[ -f $PLUGINDIR/log_sink.so ]] || fail "plugindir $PLUGINDIR holds no bundled plugin"
[[ $(pkg-config --cflags plantd-sdk) == *"-I$PREFIX/include"* ]] ||
  fail "cflags: $(pkg-config --cflags plantd-sdk)"

say "scaffold a plugin, build it with pkg-config only, run its unit test"
export PATH=$PREFIX/bin:$PATH
(cd "$WORK" && quietly "plantd-new-plugin meter" plantd-new-plugin meter)
for f in meter.c meson.build README.md meter.conf tests/test_meter.c; do
  [[ -f $WORK/meter/$f ]] || fail "the scaffold wrote no $f"
done
quietly "meson setup (plugin)" meson setup "$WORK/meter/build" "$WORK/meter"
quietly "meson compile (plugin)" meson compile -C "$WORK/meter/build"
quietly "meson test (plugin)" meson test -C "$WORK/meter/build"
# nothing of the source tree: the SDK came from the prefix
if grep -q -- "$PLANTD_SOURCE_ROOT" "$WORK/meter/build/compile_commands.json"; then
  fail "the plugin's build used the source tree:"$'\n'"$(grep -- "$PLANTD_SOURCE_ROOT" "$WORK/meter/build/compile_commands.json")"
fi
grep -q -- "-I$PREFIX/include" "$WORK/meter/build/compile_commands.json" ||
  fail "the plugin was not compiled against $PREFIX/include"
grep -q -- "-Werror" "$WORK/meter/build/compile_commands.json" ||
  fail "the scaffold does not build with -Werror"
SO=$WORK/meter/build/meter.so
[[ -f $SO ]] || fail "no meter.so built"
exported=$(nm -D --defined-only "$SO" | awk '$2 ~ /^[TDRBW]$/ {print $3}' |
  grep -vE '^(_init|_fini|__bss_start|_edata|_end)$' | tr '\n' ' ')
[[ $exported == "plant_plugin_v1 " ]] || fail "meter.so exports: $exported"

say "drop it into a running plantd: its messages are on the bus"
cat >"$WORK/site.conf" <<CONF
site = "third-party";
data_dir = "data";
listeners = ( { name = "admin"; admin = true; address = "127.0.0.1"; port = 0; } );
plugins = (
  { name = "sink"; module = "log_sink"; subscribe = [ "meter.*" ]; path = "out.jsonl"; }
);
CONF
PLANTD_CMD=("$PREFIX/bin/plantd")
start_plantd -c "$WORK/site.conf"
wait_urls "$WORK/data"
PLANTD_URL=$(url_of "$WORK/data" admin)
export PLANTD_URL
quietly "plantctl load meter.so" plantctl load "$SO" --as meter1 \
  --config '{"every": "100ms", "topic": "meter.beat"}'
beats_of() { # INSTANCE N: the sink holds N heartbeats of INSTANCE or more
  [[ -f $WORK/data/out.jsonl ]] &&
    (($(jq -c --arg i "$1" 'select(.topic == "meter.beat" and .body.instance == $i)' \
      "$WORK/data/out.jsonl" | wc -l) >= $2))
}
wait_until 10 "heartbeats of meter1 on the bus" beats_of meter1 3

say "installed into the SDK's plugindir, it loads by name"
quietly "meson install (plugin)" meson install -C "$WORK/meter/build"
[[ -f $PLUGINDIR/meter.so ]] || fail "meson install put no meter.so in $PLUGINDIR"
quietly "plantctl load meter" plantctl load meter --as meter2 \
  --config '{"every": "100ms", "topic": "meter.beat"}'
wait_until 10 "heartbeats of meter2 on the bus" beats_of meter2 3
stop_plantd TERM 20
expect_exit 0

say "its sample conf fragment checks in a site"
mkdir -p "$WORK/site.d"
cp "$WORK/site.conf" "$WORK/site.d/plantd.conf"
cp "$WORK/meter/meter.conf" "$WORK/site.d/50-meter.conf"
"$PREFIX/bin/plantd" -c "$WORK/site.d" --check >"$TEST_TMP/check.out" 2>&1 ||
  fail "--check of a site with meter.conf:"$'\n'"$(cat "$TEST_TMP/check.out")"
say "ok"
