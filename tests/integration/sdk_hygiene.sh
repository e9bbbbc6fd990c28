#!/usr/bin/env bash
# The SDK boundary: the SDK needs none of the host's libraries, every plugin
# exports exactly its descriptor, and the host exports none of its internals.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v nm >/dev/null || fail "nm (binutils) is needed"

say "the SDK includes no event2/, libconfig.h or curl/ header"
if hits=$(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](event2/|libconfig\.h|curl/)' \
  "$PLANTD_SOURCE_ROOT/sdk"); then
  fail "the SDK includes host-only headers:"$'\n'"$hits"
fi

# Symbols the toolchain adds, not the code's own: the linker's (in every
# shared object) and the sanitizers' (ASan's __odr_asan.NAME for each
# exported variable, in -Db_sanitize builds).
is_toolchain_symbol() {
  case $1 in
  _init | _fini | __bss_start | _edata | _end) return 0 ;;
  __odr_asan.* | __asan_* | __ubsan_* | __sanitizer_* | __lsan_*) return 0 ;;
  *) return 1 ;;
  esac
}

# exported_symbols FILE: the defined dynamic symbols of FILE, one a line, as
# "TYPE NAME", without the toolchain's own.
exported_symbols() {
  local addr type name
  nm -D --defined-only "$1" | while read -r addr type name; do
    # undefined-address lines have two fields
    if [[ -z $name ]]; then
      name=$type
      type=$addr
    fi
    is_toolchain_symbol "${name%%@*}" || echo "$type $name"
  done
}

say "every plugin exports exactly plant_plugin_v1"
mapfile -t plugins < <(find "$PLANTD_BUILD_ROOT/plugins" "$PLANTD_BUILD_ROOT/sdk/examples" \
  -name '*.so' -type f | sort)
((${#plugins[@]} > 0)) || fail "no plugin .so under $PLANTD_BUILD_ROOT/plugins or sdk/examples"
for so in "${plugins[@]}"; do
  syms=$(exported_symbols "$so" | awk '$1 ~ /^[TDRBWVGSiu]$/')
  [[ $syms == 'D plant_plugin_v1' || $syms == 'R plant_plugin_v1' ]] ||
    fail "$so exports more or less than plant_plugin_v1:"$'\n'"${syms:-(nothing)}"
done
say "checked ${#plugins[@]} plugins"

say "plantd exports no bus_, site_, loader_ or config_ symbol"
syms=$(exported_symbols "$PLANTD")
if leaks=$(grep -E ' (bus|site|loader|config)_' <<<"$syms"); then
  fail "$PLANTD exports host internals:"$'\n'"$leaks"
fi

say "two plugins with the same internal names run side by side, each with its own"
for t in a b; do
  nm "$PLANTD_FIXTURE_DIR/fx_twin_$t.so" | grep -q ' twin_id$' ||
    fail "fx_twin_$t.so does not define twin_id: the test proves nothing"
done
cat >"$TEST_TMP/twins.conf" <<CONF
site = "it-twins";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/plugins";
plugins = (
  { name = "a"; module = "fx_twin_a"; },
  { name = "b"; module = "fx_twin_b"; },
  { name = "sink"; module = "log_sink"; subscribe = [ "twins" ]; path = "twins.jsonl"; }
);
CONF
start_plantd -c "$TEST_TMP/twins.conf"
# both have ticked 5 times: each counts its own ticks (shared, one counter
# would reach 10)
twins_ticked() {
  [[ -f $TEST_TMP/data/twins.jsonl ]] &&
    (($(grep -c '"twin":"a"' "$TEST_TMP/data/twins.jsonl") >= 5)) &&
    (($(grep -c '"twin":"b"' "$TEST_TMP/data/twins.jsonl") >= 5))
}
wait_until 20 "5 messages of each twin" twins_ticked
stop_plantd TERM 20
expect_exit 0
for t in a b; do
  bad=$(jq -c --arg t "$t" 'select(.body.twin == $t and .body.id != "twin-" + $t)' \
    "$TEST_TMP/data/twins.jsonl")
  [[ -z $bad ]] || fail "twin $t called its twin's twin_id(): $bad"
  seq=$(jq -r --arg t "$t" 'select(.body.twin == $t) | .body.ticks' "$TEST_TMP/data/twins.jsonl" |
    head -5 | tr '\n' ' ')
  [[ $seq == "1 2 3 4 5 " ]] || fail "twin $t's own tick counter went: $seq"
done
say "ok"
