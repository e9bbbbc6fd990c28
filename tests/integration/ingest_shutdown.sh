#!/usr/bin/env bash
# Nothing that got a 202 is lost (issue 6): clients post readings into a
# durable queue while plantd is stopped with SIGTERM; every request is
# answered 202 or refused (503 while stopping, or no connection once the
# listener is gone), and after a restart the queue holds every message whose
# id a 202 answer gave, and nothing else but what requests left unanswered
# may have published.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v jq >/dev/null || fail "jq is needed"
command -v curl >/dev/null || fail "curl is needed"
CONF=$TEST_TMP/site.conf
DATA=$TEST_TMP/data

cat >"$CONF" <<CONF
site = "it-ingest-stop";
data_dir = "data";
plugin_path = "$PLANTD_BUILD_ROOT/plugins/ingest_http:$PLANTD_BUILD_ROOT/plugins/store_sqlite";
listeners = (
  { name = "admin"; admin = true; port = 0; },
  { name = "ingest"; port = 0; threads = 2; }
);
stores = ( { name = "site"; backend = "sqlite"; path = "site.db"; } );
queues = ( { name = "raw"; subscribe = ["sensor.raw"]; durable = true; store = "site"; } );
plugins = ( { name = "ingest"; module = "ingest_http"; } );
CONF

start_plantd -c "$CONF"
wait_urls "$DATA"
I=$(url_of "$DATA" ingest)/v1/ingest/sensor.raw

# client N: posts readings N-1, N-2, ... until plantd stops answering; one
# line per request: the status, then the ids a 202 gave
client() {
  local n=$1 i=0 code
  while ((i < 2000)); do
    i=$((i + 1))
    code=$(curl -s -o "$TEST_TMP/c$n.body" -w '%{http_code}' --max-time 10 \
      -H 'Content-Type: application/json' \
      -d "[{\"id\":\"c$n-$i-a\",\"v\":$i},{\"id\":\"c$n-$i-b\",\"v\":$i}]" "$I") || code=000
    if [[ $code == 202 ]]; then
      echo "202 $(jq -r '.ids | join(" ")' "$TEST_TMP/c$n.body")"
    elif [[ ! -e $TEST_TMP/stopping ]]; then
      # before the stop every request must get in (a slow machine may
      # time one out: then it is not counted, and the next goes on)
      echo "early $code"
      [[ $code == 000 ]] || return 1
    else
      echo "$code"
      [[ $code == 503 || $code == 000 ]] || return 1
      [[ $code == 000 ]] && return 0
    fi
  done
}
for n in 1 2 3; do
  client "$n" >"$TEST_TMP/client$n" &
  pids[n]=$!
  _BG_PIDS+=("${pids[n]}")
done
enough() {
  (($(cat "$TEST_TMP"/client? | grep -c '^202') >= 150)) && return 0
  local n alive=0
  for n in 1 2 3; do
    kill -0 "${pids[n]}" 2>/dev/null && alive=1
  done
  ((alive)) || fail "every client stopped before the stop: $(tail -q -n 2 "$TEST_TMP"/client? | tr '\n' ' ')"
  return 1
}
wait_until 60 "150 accepted requests" enough
touch "$TEST_TMP/stopping"
stop_plantd TERM 30
expect_exit 0
for n in 1 2 3; do
  wait "${pids[n]}" || fail "client $n got an answer other than 202, 503 or none: $(tail -n 3 "$TEST_TMP/client$n")"
  _forget_pid "${pids[n]}"
done
cat "$TEST_TMP"/client? | awk '$1 == 202 { for (i = 2; i <= NF; i++) print $i }' | sort >"$TEST_TMP/accepted"
accepted=$(wc -l <"$TEST_TMP/accepted")
refused=$(cat "$TEST_TMP"/client? | grep -vc '^202\|^early' || true)
early=$(cat "$TEST_TMP"/client? | grep -c '^early' || true)
# a request that timed out before the stop may still have been published
((early == 0)) || say "$early requests timed out before the stop (not counted)"
say "$accepted messages accepted, $refused requests refused while stopping"
((accepted >= 300)) || fail "only $accepted messages accepted"

say "after a restart the durable queue holds every accepted message"
start_plantd -c "$CONF"
wait_urls "$DATA"
A=$(url_of "$DATA" admin)
req GET "$A/v1/queues"
depth=$(jq '.queues[] | select(.name == "raw") | .depth' <<<"$BODY")
# a request whose answer never came (timed out before the stop, or cut when
# the listener closed) may have been published: at most its 2 messages each
unanswered=$(cat "$TEST_TMP"/client? | grep -c '^early\|^000' || true)
((depth >= accepted && depth <= accepted + 2 * unanswered)) ||
  fail "the queue holds $depth messages; $accepted were accepted, $unanswered requests unanswered"
req GET "$A/v1/queues/raw/messages?peek=1000"
jq -r '.messages[].id' <<<"$BODY" | sort >"$TEST_TMP/stored"
if ((depth <= 1000)); then
  comm -23 "$TEST_TMP/accepted" "$TEST_TMP/stored" >"$TEST_TMP/lost"
  [[ ! -s $TEST_TMP/lost ]] || fail "accepted but not stored: $(head -n 5 "$TEST_TMP/lost")"
fi
stop_plantd
expect_exit 0
say "ok"
