#!/usr/bin/env bash
# A handler that fails every delivery: plantd logs it, keeps running and
# stops cleanly.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONF=$TEST_TMP/site.conf
cat >"$CONF" <<EOF
site = "it-handler-errors";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/sdk/examples";
plugins = (
  { name = "ticker"; module = "example_counter"; topic = "t.x"; every = "20ms"; },
  { name = "failing"; module = "fx_handler_errors"; listen = "t.x"; }
);
EOF

say "run for 2 s with a handler that always fails"
plantd_run -c "$CONF" --run-for 2
expect_exit 0
expect_in_log -E 'site .* up'
# logfmt escapes the quotes inside msg="..."
expect_in_log -E 'level=warn inst=failing .*handler for \\?"t\.x\\?" failed'
expect_in_log -F 'run-for time reached'
expect_in_log -F 'stopped cleanly'
# ~100 messages went by: the warnings are rate-limited (1st, 2nd, 4th...)
# and the failures are counted
warnings=$(grep -c 'handler for' "$LOG" || true)
((warnings >= 3 && warnings <= 20)) || fail "expected 3 to 20 handler warnings, got $warnings"
errors=$(sed -nE 's/.*inst=failing .*msg="stopped \([0-9]+ handled, ([0-9]+) errors\)".*/\1/p' "$LOG")
[[ -n $errors ]] || fail "no stop line for the failing instance"
((errors >= 5)) || fail "the failing instance counted $errors errors, expected many"
say "ok ($errors failed deliveries, $warnings warnings)"
