#!/usr/bin/env bash
# The bus end to end: two producers, a topic fanned out to two queues, one
# consumer that fails every third delivery. At the end every published
# message was acked exactly once or sits in the dead-letter queue. Then a
# reload removes a consumer that holds messages: they come back for the next
# one. And --check refuses bad queue settings with file and line.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONF=$TEST_TMP/site.conf
STATS=$TEST_TMP/stats.json
write_site() {
  cat >"$CONF" <<CONF
site = "it-bus";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR";
queues = (
  { name = "qa"; subscribe = [ "r.*" ]; max_receive = 2; dead_letter = "qa.dlq";
    visibility_timeout = "2s"; },
  { name = "qa.dlq"; },
  { name = "qb"; subscribe = [ "r.*" ]; max_depth = 5000; visibility_timeout = "30s"; }
);
plugins = (
  { name = "p1"; module = "fx_producer"; topic = "r.x"; count = 500; batch = 25; every = "5ms"; },
  { name = "p2"; module = "fx_producer"; topic = "r.y"; count = 500; batch = 25; every = "5ms"; },
  { name = "ca"; module = "fx_consumer"; queue = "qa"; fail_every = 3;
    acked = "$TEST_TMP/acked_a"; stats = "$STATS"; },
  $1
);
CONF
}

q() { # q QUEUE FIELD: a number from the last statistics
  jq -r ".queues[\"$1\"].$2" "$STATS"
}

drained() {
  [[ -f $STATS ]] || return 1
  [[ $(q qa depth) == 0 && $(q qb depth) == 0 && $(q qa.dlq depth) != 0 ]]
}

say "fan-out to two queues, a consumer failing every third delivery"
write_site '{ name = "cb"; module = "fx_consumer"; queue = "qb"; acked = "'"$TEST_TMP"'/acked_b"; }'
start_plantd -c "$CONF"
wait_for_log 'inst=p1 .*produced 500' 20
wait_for_log 'inst=p2 .*produced 500' 20
wait_until 30 "both queues drained" drained

published=$(jq -r '.topics["r.x"].published + .topics["r.y"].published' "$STATS")
[[ $published == 1000 ]] || fail "published $published messages, expected 1000"
acked_a=$(sort -u "$TEST_TMP/acked_a" | wc -l)
[[ $acked_a == $(wc -l <"$TEST_TMP/acked_a") ]] || fail "a message was acked twice on qa"
dlq=$(q qa.dlq depth)
((acked_a + dlq == 1000)) || fail "qa: $acked_a acked + $dlq dead-lettered != 1000 published"
[[ $(q qa acked) == "$acked_a" ]] || fail "qa counts $(q qa acked) acks, the consumer $acked_a"
[[ $(q qa dead_lettered) == "$dlq" ]] || fail "qa dead-lettered $(q qa dead_lettered), its DLQ holds $dlq"
((dlq > 0)) || fail "nothing reached the dead-letter queue"
acked_b=$(sort -u "$TEST_TMP/acked_b" | wc -l)
[[ $acked_b == 1000 ]] || fail "qb: $acked_b acked, expected 1000"
say "ok: qa $acked_a acked + $dlq dead-lettered, qb $acked_b acked"

say "reload: the consumer of qb goes while it holds messages; the next one gets them"
# "holder" receives from qb and never settles: 200 new messages sit in flight
# with a 30 s visibility timeout.
P3='{ name = "p3"; module = "fx_producer"; topic = "r.z"; count = 200; batch = 50; every = "5ms"; },'
write_site "$P3"'{ name = "holder"; module = "fx_consumer"; queue = "qb"; hold = true; }'
mark=$(log_lines)
send_signal HUP
wait_for_log 'reload applied' 10 "$mark"
held() { [[ $(q qb in_flight) == 200 ]]; }
wait_until 10 "200 messages held in flight on qb" held
# cb2 replaces it: the held messages must come back now, not in 30 s
write_site "$P3"'{ name = "cb2"; module = "fx_consumer"; queue = "qb"; acked = "'"$TEST_TMP"'/acked_b2"; }'
mark=$(log_lines)
send_signal HUP
wait_for_log 'reload applied' 10 "$mark"
wait_until 10 "the next consumer acking the 200 held messages" file_lines_at_least "$TEST_TMP/acked_b2" 200
[[ $(sort -u "$TEST_TMP/acked_b2" | wc -l) == 200 ]] || fail "cb2 acked other than 200 distinct messages"
stop_plantd TERM 20
expect_exit 0
expect_in_log -F 'stopped cleanly'
say "ok"

say "--check refuses bad queues with file and line"
bad_queue() { # bad_queue SETTINGS EXPECTED_RE
  cat >"$CONF" <<CONF
plugin_path = "$PLANTD_FIXTURE_DIR";
queues = (
  { name = "ok"; },
  $1
);
CONF
  plantd_run -c "$CONF" --check
  expect_exit 2
  grep -Eq -- "$2" "$LOG" || fail "expected /$2/ in the error"
}
bad_queue '{ name = "q1"; dead_letter = "nowhere"; }' "site.conf:4: queue \"q1\": dead_letter \"nowhere\" is not a queue"
bad_queue '{ name = "q1"; dead_letter = "q2"; }, { name = "q2"; dead_letter = "q1"; }' 'site.conf:4: queue "q1": its dead-letter queues form a cycle'
bad_queue '{ name = "q1";
    visibility_timeout = 0; }' "site.conf:5: queue \"q1\": 'visibility_timeout' must be a positive duration"
bad_queue '{ name = "q1"; max_receive = -1; }' "site.conf:4: queue \"q1\": 'max_receive' must be an integer of at least 1"
bad_queue '{ name = "q1"; retention = "-5s"; }' "site.conf:4: queue \"q1\": 'retention' must be a positive duration"
bad_queue '{ name = "q1"; colour = "red"; }' "site.conf:4: queue \"q1\": unknown queue setting 'colour'"
bad_queue '{ name = "ok"; }' 'duplicate queue name "ok"'
say "ok"
