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
say "ok"
