#!/usr/bin/env bash
# A plugin built against the frozen SDK 1.0 header loads and works on this
# host; one built for a newer minor or another major is refused with both
# versions named.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IFS=. read -r major minor < <(host_abi)
CONF=$TEST_TMP/site.conf
cat >"$CONF" <<CONF
site = "it-abi";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/plugins";
plugins = (
  { name = "old"; module = "fx_abi10"; topic = "abi.old"; },
  { name = "sink"; module = "log_sink"; subscribe = [ "abi.*" ]; path = "out.jsonl"; }
);
CONF
say "a 1.0 plugin on a $major.$minor host"
start_plantd -c "$CONF"
wait_until 10 "messages of the 1.0 plugin in the sink" file_lines_at_least "$TEST_TMP/data/out.jsonl" 3
grep -q '"abi":"1.0"' "$TEST_TMP/data/out.jsonl" || fail "the sink got no message of the 1.0 plugin"
stop_plantd TERM 20
expect_exit 0

say "a newer minor and another major are refused"
for m in fx_newer_minor fx_major2; do
  cat >"$CONF" <<CONF
plugin_path = "$PLANTD_FIXTURE_DIR";
plugins = ( { name = "x"; module = "$m"; } );
CONF
  plantd_run -c "$CONF" --check
  expect_exit 2
  case $m in
  fx_newer_minor) want="built for SDK $major.$((minor + 1)), host provides $major.$minor" ;;
  *) want="built for SDK 2.0, host provides $major.$minor" ;;
  esac
  grep -qF -- "$want" "$LOG" || fail "$m: expected '$want'"
  grep -qF -- "$m.so" "$LOG" || fail "$m: the error does not name the file"
done
say "ok"
