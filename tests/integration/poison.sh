#!/usr/bin/env bash
# A message that kills plantd while it is handled does not crash the site
# forever: its receive count is written before each delivery after a
# restart, and once it reaches max_receive the restart moves it to the
# dead-letter queue. The other messages are all delivered.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ulimit -c 0

CONF=$TEST_TMP/site.conf
STATS=$TEST_TMP/stats.json
write_site() { # write_site PRODUCER_ENTRY
  cat >"$CONF" <<CONF
site = "it-poison";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/plugins";
stores = ( { name = "q"; backend = "sqlite"; path = "q.db"; } );
queues = (
  { name = "work"; subscribe = [ "w.*" ]; durable = true; store = "q"; max_receive = 3;
    dead_letter = "work.dlq"; },
  { name = "work.dlq"; durable = true; store = "q"; }
);
plugins = (
  $1
  { name = "consumer"; module = "fx_consumer"; queue = "work"; crash_on = "\"seq\":5,";
    acked = "$TEST_TMP/acked"; stats = "$STATS"; }
);
CONF
}

say "publish 10 messages; the consumer dies on the 6th"
write_site '{ name = "producer"; module = "fx_producer"; topic = "w.x"; count = 10; batch = 10; every = "50ms"; publish_batch = true; },'
start_plantd -c "$CONF"
wait_exit 20
[[ $STATUS == 134 ]] || fail "expected plantd to die of the poison message (status 134), got $STATUS"
crashes=1

say "restart until the site drains its queue"
write_site ""
drained_or_dead() {
  ! plantd_running ||
    { [[ -f $STATS ]] && [[ $(jq -r '.queues.work.depth' "$STATS") == 0 ]]; }
}
survived=0
for attempt in 1 2 3 4 5 6; do
  rm -f "$STATS"
  start_plantd -c "$CONF"
  _deadline 30
  while ! drained_or_dead; do
    _now_us
    ((_NOW_US < _DEADLINE_US)) || fail "restart $attempt: neither drained nor dead after 30 s"
    sleep 0.05
  done
  if plantd_running; then
    stop_plantd TERM 20
    expect_exit 0
    survived=1
    break
  fi
  wait_exit 5
  [[ $STATUS == 134 ]] || fail "restart $attempt: unexpected status $STATUS"
  crashes=$((crashes + 1))
done
((survived)) || fail "still crashing after $crashes restarts: the poison message was never dead-lettered"
((crashes <= 4)) || fail "$crashes crashes for max_receive = 3"
[[ $(jq -r '.queues["work.dlq"].depth' "$STATS") == 1 ]] || fail "the dead-letter queue does not hold the poison message"
[[ $(jq -r '.queues.work.depth' "$STATS") == 0 ]] || fail "work is not empty"
acked=$(sort -u "$TEST_TMP/acked" | wc -l)
[[ $acked == 9 ]] || fail "$acked other messages acked, expected 9"
say "ok: $crashes crashes, then the poison message went to the dead-letter queue; 9 others acked"
