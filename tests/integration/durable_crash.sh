#!/usr/bin/env bash
# A durable queue survives kill -9: 100,000 messages are published into a
# queue on the sqlite store while a slow consumer acks; the host is killed at
# a random point and started again; after the drain every message whose
# publish reported success was acked, at most twice (twice only when it was
# in flight at the crash), none is missing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${DURABLE_CRASH_N:-100000}
CONF=$TEST_TMP/site.conf
STATS=$TEST_TMP/stats.json
write_site() { # write_site PRODUCER_ENTRY
  cat >"$CONF" <<CONF
site = "it-durable";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/plugins";
stores = ( { name = "queues"; backend = "sqlite"; path = "queues.db"; } );
queues = (
  { name = "work"; subscribe = [ "w.*" ]; durable = true; store = "queues";
    max_depth = 200000; visibility_timeout = "60s"; max_receive = 50; }
);
plugins = (
  $1
  { name = "consumer"; module = "fx_consumer"; queue = "work"; pause = "$2";
    acked = "$TEST_TMP/acked"; stats = "$STATS"; }
);
CONF
}

# a random point, between 10% and 60% of the run
kill_at=$((N / 10 + RANDOM % (N / 2)))
say "publishing $N into a durable queue; kill -9 after $kill_at published"
write_site '{ name = "producer"; module = "fx_producer"; topic = "w.reading"; count = '"$N"';
    batch = 200; every = "1ms"; log = "'"$TEST_TMP"'/published"; },' "3ms"
start_plantd -c "$CONF"
wait_until 120 "$kill_at messages published" file_lines_at_least "$TEST_TMP/published" "$kill_at"
kill -KILL "$PLANTD_PID"
wait_exit 10
[[ $STATUS == 137 ]] || fail "plantd was not killed (status $STATUS)"
published=$(wc -l <"$TEST_TMP/published")
acked_before=$(wc -l <"$TEST_TMP/acked")
say "killed: $published published, $acked_before acked so far"
((acked_before < published)) || fail "the consumer kept up; the crash proves nothing (make it slower)"

say "restart without the producer; drain"
rm -f "$STATS"
write_site "" "0"
start_plantd -c "$CONF"
wait_for_log 'queue .+work.+: durable on store .+queues.+, [0-9]+ messages read back' 20
drained() { [[ -f $STATS && $(jq -r '.queues.work.depth' "$STATS") == 0 ]]; }
wait_until 120 "the durable queue drained" drained
stop_plantd TERM 30
expect_exit 0

say "checking: every published message acked, at most twice"
sort "$TEST_TMP/published" >"$TEST_TMP/published.sorted"
sort "$TEST_TMP/acked" | uniq -c | awk '{print $2, $1}' >"$TEST_TMP/acked.counts"
missing=$(cut -d' ' -f1 "$TEST_TMP/acked.counts" | comm -23 "$TEST_TMP/published.sorted" - | wc -l)
((missing == 0)) || fail "$missing published messages were never acked"
thrice=$(awk '$2 > 2' "$TEST_TMP/acked.counts" | wc -l)
((thrice == 0)) || fail "$thrice messages were acked more than twice"
twice=$(awk '$2 == 2' "$TEST_TMP/acked.counts" | wc -l)
# twice only for what was in flight (a batch of 64 and its pending deletes)
((twice <= 256)) || fail "$twice messages acked twice: more than were in flight at the crash"
say "ok: $published published, $(wc -l <"$TEST_TMP/acked.counts") acked, $twice twice (in flight at the crash)"
