#!/usr/bin/env bash
# A sqlite store written with schema 1 (items in a WITHOUT ROWID table) is
# converted to schema 2 when plantd opens it, and nothing in it is lost: the
# durable queue it holds delivers every message.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONF=$TEST_TMP/site.conf
DB=$TEST_TMP/data/q.db
write_site() { # write_site PLUGINS
  cat >"$CONF" <<CONF
site = "it-migrate";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/plugins";
stores = ( { name = "q"; backend = "sqlite"; path = "q.db"; } );
queues = ( { name = "work"; subscribe = [ "w.*" ]; durable = true; store = "q"; } );
plugins = ( $1 );
CONF
}

say "queue 50 messages, nobody consuming"
write_site '{ name = "producer"; module = "fx_producer"; topic = "w.x"; count = 50; batch = 50; publish_batch = true; }'
start_plantd -c "$CONF"
wait_for_log 'produced 50' 20
stop_plantd TERM 20
expect_exit 0
[[ $(sqlite3 "$DB" 'PRAGMA user_version') == 2 ]] || fail "a new store should have schema 2"
[[ $(sqlite3 "$DB" "SELECT count(*) FROM items WHERE key >= CAST('q/work/' AS BLOB) AND key < CAST('q/work0' AS BLOB)") == 50 ]] ||
  fail "the queue's 50 records are not in the store"

say "turn the file into a schema 1 store, as earlier versions wrote it"
sqlite3 "$DB" <<'SQL'
BEGIN;
CREATE TABLE items_v1(key BLOB PRIMARY KEY, value TEXT NOT NULL, version INTEGER NOT NULL,
  expires INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
INSERT INTO items_v1 SELECT key, value, version, expires FROM items;
DROP TABLE items;
ALTER TABLE items_v1 RENAME TO items;
CREATE INDEX items_expires ON items(expires) WHERE expires > 0;
PRAGMA user_version = 1;
COMMIT;
SQL
[[ $(sqlite3 "$DB" "SELECT sql FROM sqlite_master WHERE name = 'items'") == *"WITHOUT ROWID"* ]] ||
  fail "the test did not make a schema 1 table"

say "open it: converted, and every message delivered"
write_site "{ name = \"sink\"; module = \"log_sink\"; queue = \"work\"; path = \"out.jsonl\"; }"
start_plantd -c "$CONF"
wait_until 20 "50 messages delivered" file_lines_at_least "$TEST_TMP/data/out.jsonl" 50
stop_plantd TERM 20
expect_exit 0
[[ $(jq -r '.body.seq' "$TEST_TMP/data/out.jsonl" | sort -n | uniq | wc -l) == 50 ]] ||
  fail "not the 50 messages: $(jq -c .body "$TEST_TMP/data/out.jsonl" | head -5)"
[[ $(sqlite3 "$DB" 'PRAGMA user_version') == 2 ]] || fail "the store was not converted to schema 2"
[[ $(sqlite3 "$DB" "SELECT sql FROM sqlite_master WHERE name = 'items'") != *"WITHOUT ROWID"* ]] ||
  fail "the items table is still WITHOUT ROWID"
[[ $(sqlite3 "$DB" "SELECT count(*) FROM sqlite_master WHERE name = 'items_expires'") == 1 ]] ||
  fail "the expiry index is gone"
say "ok: schema 1 converted to 2, 50 messages delivered"
