/* store_sqlite: the embedded default store backend, kind "sqlite".
 *
 * One SQLite database file per store, in WAL mode, with one table:
 *
 *   items(key BLOB PRIMARY KEY, value TEXT, version INTEGER, expires INTEGER)
 *
 * Writes go through one writer thread per store, which owns the writing
 * connection: callers of put/del/batch/expire queue a request and block;
 * the writer takes everything queued, runs it in one transaction and
 * commits once (group commit: one fsync for many writers), then wakes each
 * caller with its own result. A caller returns only after its write is
 * committed. Reads use a second connection under its own mutex; WAL lets it
 * read while the writer writes, and since a writer's caller only returns
 * after the commit, reads see every write that has returned.
 *
 * A second process (or a second open in this one) on the same path is
 * refused through flock() on PATH.lock. See README.md for the settings.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <sqlite3.h>

#include <plantd/plantd.h>

#define KEY_MAX		1024
#define N_READERS	4 /* reading connections per store */
/* Rows one expire step deletes in a transaction: small enough that writes
 * queued meanwhile wait a few ms at most. */
#define EXPIRE_CHUNK	512
/* The schema this code writes, in PRAGMA user_version: 1 kept items in a
 * WITHOUT ROWID table, whose B-tree carries whole rows even in its interior
 * pages, so a large value was copied on every seek that passed it; 2 keeps
 * the values in a rowid table, keys in an index of their own. */
#define SCHEMA_VERSION	2
/* Databases up to this size get PRAGMA quick_check at open. */
#define QUICK_CHECK_MAX (64LL << 20)
#define MSG_MAX		512

/* No instance keys: stores are configured in the site's `stores` list. */
static const struct plant_config_key config_keys[] = {
	{.name = NULL, .type = PLANT_CFG_END},
};

/* The plugin instance; also the backend state handed to open(). */
struct plugin {
	plant_instance *self;
	const struct plant_host_api *api;
};

/* A write (put, delete or batch: `n` ops) or an expire, queued for the
 * writer. Lives on the caller's stack while the caller waits. */
struct req {
	struct req *next;
	bool expire;
	const struct plant_store_op *ops;
	char *const *texts; /* each op's value as JSON text, NULL for deletes */
	size_t n;
	/* Non-zero: the ops are only checked, then undone, and the request
	 * fails with this status at index n (a batch with a malformed op n). */
	int undo_rc;
	uint64_t now;
	/* results, set by the writer */
	int rc;
	size_t failed;	  /* the failing op of a batch */
	uint64_t version; /* the new version, for a single put */
	size_t expired;	  /* rows an expire deleted so far */
	bool expire_done; /* no expired row was left at the last step */
	bool done;
	pthread_cond_t cond;
};

struct store {
	struct plugin *plugin;
	char *name;
	char *path;
	char *lock_path;
	int lock_fd;
	int synchronous_full;
	int busy_timeout_ms;

	/* Writing connection: only the writer thread uses it once it runs. */
	sqlite3 *wdb;
	sqlite3_stmt *w_begin, *w_commit, *w_rollback;
	sqlite3_stmt *w_savepoint, *w_release, *w_rollback_to;
	sqlite3_stmt *w_lookup, *w_upsert, *w_delete, *w_expire;
	sqlite3_stmt *w_insert_new; /* a put if absent, in one statement */

	/* Reading connections: WAL lets them read beside the writer and each
	 * other; a reader takes whichever is free. */
	struct reader {
		pthread_mutex_t lock;
		sqlite3 *db;
		sqlite3_stmt *get, *scan, *scan_to;
	} readers[N_READERS];
	atomic_uint next_reader;

	/* The writer's queue, under qlock. */
	pthread_mutex_t qlock;
	pthread_cond_t qcond; /* the writer waits here */
	struct req *head, **tail;
	bool stopping;
	pthread_t writer;
	bool writer_running;
	/* Expire requests being worked off, a chunk per round: writer only. */
	struct req *expiring;

	/* Statistics and health, under hlock. */
	pthread_mutex_t hlock;
	uint64_t commits, writes;
	bool failing;
	char error[2 * MSG_MAX + PATH_MAX];
};

/* ---- helpers -------------------------------------------------------------- */

PLANT_PRINTF(4, 5)
static int set_err(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

static int status_of(int src)
{
	switch (src & 0xff) {
	case SQLITE_OK:
		return PLANT_OK;
	case SQLITE_NOMEM:
		return PLANT_E_NOMEM;
	case SQLITE_TOOBIG:
		return PLANT_E_INVALID;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return PLANT_E_TIMEOUT;
	default:
		return PLANT_E_IO;
	}
}

static bool key_ok(const char *key, size_t len)
{
	return key && len >= 1 && len <= KEY_MAX;
}

/* SQLite wants int64; the host clock and TTLs are uint64. */
static sqlite3_int64 clamp64(uint64_t v)
{
	return v > (uint64_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)v;
}

static uint64_t expiry(uint64_t now, uint64_t ttl_ms)
{
	if (ttl_ms == 0)
		return 0;
	return ttl_ms > UINT64_MAX - now ? UINT64_MAX : now + ttl_ms;
}

/* Run a prepared statement that returns no rows, and reset it. */
static int step_done(sqlite3_stmt *st)
{
	int src = sqlite3_step(st);

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return src == SQLITE_DONE || src == SQLITE_ROW ? SQLITE_OK : src;
}

/* sqlite3_errmsg() plus errno where SQLite keeps only a generic text. */
static void db_message(sqlite3 *db, int src, char *out, size_t outlen)
{
	int sys = db ? sqlite3_system_errno(db) : 0;
	const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(src);

	if (sys && ((src & 0xff) == SQLITE_CANTOPEN || (src & 0xff) == SQLITE_IOERR ||
		    (src & 0xff) == SQLITE_FULL || (src & 0xff) == SQLITE_READONLY))
		snprintf(out, outlen, "%s (%s)", msg, strerror(sys));
	else
		snprintf(out, outlen, "%s", msg);
}

/* A run-time failure: the store turns unhealthy until the next commit, and
 * the first failure of a streak is logged. */
static void note_failure(struct store *s, sqlite3 *db, const char *what, int src)
{
	char msg[MSG_MAX], line[sizeof(s->error)];
	bool first;

	db_message(db, src, msg, sizeof(msg));
	snprintf(line, sizeof(line), "store %s (%s): %s failed: %s", s->name, s->path, what, msg);
	pthread_mutex_lock(&s->hlock);
	first = !s->failing;
	s->failing = true;
	memcpy(s->error, line, sizeof(line));
	pthread_mutex_unlock(&s->hlock);
	if (first)
		s->plugin->api->log(s->plugin->self, PLANT_LOG_ERROR, "%s", line);
}

static void note_commit(struct store *s, uint64_t writes)
{
	bool recovered;

	pthread_mutex_lock(&s->hlock);
	recovered = s->failing;
	s->failing = false;
	s->commits++;
	s->writes += writes;
	pthread_mutex_unlock(&s->hlock);
	if (recovered)
		s->plugin->api->log(s->plugin->self, PLANT_LOG_INFO, "store %s (%s): writing again",
				    s->name, s->path);
}

/* ---- the writer ----------------------------------------------------------- */

/* One op inside the open transaction. Returns an SQLite error for a fault
 * (the caller rolls back); otherwise *status is the op's answer. */
static int apply_op(struct store *s, const struct plant_store_op *op, const char *text,
		    uint64_t now, int *status, uint64_t *version_out)
{
	sqlite3_stmt *st = s->w_lookup;
	bool live = false;
	uint64_t cur = 0;
	int src;

	/* A put if absent of a new key (an idempotency claim, the common
	 * case) in one statement, without a lookup first. (An unconditional
	 * put the same way, with RETURNING for the version, is slower than
	 * lookup and upsert.) */
	if (!op->is_delete && op->cond == PLANT_PUT_IF_ABSENT) {
		st = s->w_insert_new;
		sqlite3_bind_blob(st, 1, op->key, (int)op->key_len, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, text, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, clamp64(expiry(now, op->ttl_ms)));
		src = step_done(st);
		if (src != SQLITE_OK)
			return src;
		if (sqlite3_changes(s->wdb) == 1) {
			*status = PLANT_OK;
			if (version_out)
				*version_out = 1;
			return SQLITE_OK;
		}
		st = s->w_lookup; /* there is one: live, or expired */
	}

	sqlite3_bind_blob(st, 1, op->key, (int)op->key_len, SQLITE_STATIC);
	src = sqlite3_step(st);
	if (src == SQLITE_ROW) {
		uint64_t exp = (uint64_t)sqlite3_column_int64(st, 1);

		live = exp == 0 || exp > now;
		cur = (uint64_t)sqlite3_column_int64(st, 0);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (src != SQLITE_ROW && src != SQLITE_DONE)
		return src;
	if (!live)
		cur = 0; /* an expired item is absent: a put starts it afresh */

	if (op->is_delete) {
		if (!live)
			*status = op->cond == PLANT_PUT_ANY ? PLANT_E_NOTFOUND : PLANT_E_CONDITION;
		else if (op->cond == PLANT_PUT_IF_VERSION && cur != op->version)
			*status = PLANT_E_CONDITION;
		else
			*status = PLANT_OK;
		if (*status != PLANT_OK)
			return SQLITE_OK;
		st = s->w_delete;
		sqlite3_bind_blob(st, 1, op->key, (int)op->key_len, SQLITE_STATIC);
		return step_done(st);
	}

	if ((op->cond == PLANT_PUT_IF_ABSENT && live) ||
	    (op->cond == PLANT_PUT_IF_VERSION && (!live || cur != op->version))) {
		*status = PLANT_E_CONDITION;
		return SQLITE_OK;
	}
	st = s->w_upsert;
	sqlite3_bind_blob(st, 1, op->key, (int)op->key_len, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, text, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, clamp64(cur + 1));
	sqlite3_bind_int64(st, 4, clamp64(expiry(now, op->ttl_ms)));
	src = step_done(st);
	if (src == SQLITE_OK) {
		*status = PLANT_OK;
		if (version_out)
			*version_out = cur + 1;
	}
	return src;
}

/* One write request inside the open transaction. A batch of several ops
 * runs under a savepoint so that a failed condition undoes only its own
 * ops, not the other requests sharing the transaction. */
static int apply_req(struct store *s, struct req *r)
{
	bool sp = r->n > 1 || r->undo_rc;
	int src;

	r->rc = PLANT_OK;
	if (sp && (src = step_done(s->w_savepoint)) != SQLITE_OK)
		return src;
	for (size_t i = 0; i < r->n; i++) {
		int status = PLANT_OK;

		src = apply_op(s, &r->ops[i], r->texts[i], r->now, &status, &r->version);
		if (src != SQLITE_OK)
			return src;
		if (status != PLANT_OK) {
			r->rc = status;
			r->failed = i;
			if (sp) {
				src = step_done(s->w_rollback_to);
				if (src != SQLITE_OK)
					return src;
			}
			break;
		}
	}
	if (r->rc == PLANT_OK && r->undo_rc) {
		r->rc = r->undo_rc;
		r->failed = r->n;
		if ((src = step_done(s->w_rollback_to)) != SQLITE_OK)
			return src;
	}
	return sp ? step_done(s->w_release) : SQLITE_OK;
}

static int expire_step(struct store *s, struct req *r, size_t *deleted)
{
	int src;

	sqlite3_bind_int64(s->w_expire, 1, clamp64(r->now));
	sqlite3_bind_int(s->w_expire, 2, EXPIRE_CHUNK);
	src = step_done(s->w_expire);
	*deleted = src == SQLITE_OK ? (size_t)sqlite3_changes(s->wdb) : 0;
	return src;
}

static void rollback(struct store *s)
{
	if (!sqlite3_get_autocommit(s->wdb))
		step_done(s->w_rollback);
}

static uint64_t ops_in(struct req *writes)
{
	uint64_t n = 0;

	for (struct req *r = writes; r; r = r->next)
		if (r->rc == PLANT_OK)
			n += r->n;
	return n;
}

/* Every queued write and one expire step in one transaction. On a fault
 * the whole transaction is rolled back and the caller retries each request
 * alone, so that one request's fault is not everyone's. */
static int run_group(struct store *s, struct req *writes, struct req *exp, const char **what)
{
	size_t deleted = 0;
	int src;

	*what = "begin";
	if ((src = step_done(s->w_begin)) != SQLITE_OK)
		return src;
	*what = "write";
	for (struct req *r = writes; r; r = r->next)
		if ((src = apply_req(s, r)) != SQLITE_OK)
			goto fail;
	*what = "expire";
	if (exp && (src = expire_step(s, exp, &deleted)) != SQLITE_OK)
		goto fail;
	*what = "commit";
	if ((src = step_done(s->w_commit)) != SQLITE_OK)
		goto fail;
	if (exp) {
		exp->expired += deleted;
		exp->expire_done = deleted < EXPIRE_CHUNK;
	}
	note_commit(s, ops_in(writes) + deleted);
	return SQLITE_OK;
fail:
	rollback(s);
	return src;
}

/* The fallback after a group failed: each request in its own transaction. */
static void run_each(struct store *s, struct req *writes, struct req *exp)
{
	int src;

	for (struct req *r = writes; r; r = r->next) {
		const char *what = "begin";

		r->version = 0;
		if ((src = step_done(s->w_begin)) == SQLITE_OK) {
			what = "write";
			if ((src = apply_req(s, r)) == SQLITE_OK) {
				what = "commit";
				src = step_done(s->w_commit);
			}
		}
		if (src == SQLITE_OK) {
			note_commit(s, r->rc == PLANT_OK ? r->n : 0);
			continue;
		}
		note_failure(s, s->wdb, what, src);
		rollback(s);
		r->rc = status_of(src);
		r->failed = 0;
	}
	if (exp) {
		const char *what;

		src = run_group(s, NULL, exp, &what);
		if (src != SQLITE_OK) {
			note_failure(s, s->wdb, what, src);
			exp->expire_done = true; /* give up; a later expire tries again */
		}
	}
}

static void *writer_main(void *arg)
{
	struct store *s = arg;

	for (;;) {
		struct req *group, *writes = NULL, **wtail = &writes, *exp, *next;
		struct req **etail = &s->expiring;
		const char *what;

		pthread_mutex_lock(&s->qlock);
		while (!s->head && !s->expiring && !s->stopping)
			pthread_cond_wait(&s->qcond, &s->qlock);
		group = s->head;
		s->head = NULL;
		s->tail = &s->head;
		if (!group && !s->expiring) { /* stopping, and all drained */
			pthread_mutex_unlock(&s->qlock);
			break;
		}
		pthread_mutex_unlock(&s->qlock);

		/* Writes stay in arrival order; expires join their own list. */
		while (*etail)
			etail = &(*etail)->next;
		for (struct req *r = group; r; r = next) {
			next = r->next;
			r->next = NULL;
			if (r->expire) {
				*etail = r;
				etail = &r->next;
			} else {
				*wtail = r;
				wtail = &r->next;
			}
		}
		exp = s->expiring;

		if (run_group(s, writes, exp, &what) != SQLITE_OK)
			run_each(s, writes, exp);

		pthread_mutex_lock(&s->qlock);
		for (struct req *r = writes; r; r = next) {
			next = r->next;
			r->done = true;
			pthread_cond_signal(&r->cond);
		}
		if (exp && exp->expire_done) {
			s->expiring = exp->next;
			exp->rc = PLANT_OK;
			exp->done = true;
			pthread_cond_signal(&exp->cond);
		}
		pthread_mutex_unlock(&s->qlock);
	}
	return NULL;
}

/* Queue `r` for the writer and wait until it is committed (or failed). */
static int submit(struct store *s, struct req *r)
{
	int rc;

	r->next = NULL;
	r->done = false;
	r->rc = PLANT_OK;
	if (pthread_cond_init(&r->cond, NULL) != 0)
		return PLANT_E_NOMEM;
	pthread_mutex_lock(&s->qlock);
	if (s->stopping) {
		pthread_mutex_unlock(&s->qlock);
		pthread_cond_destroy(&r->cond);
		return PLANT_E_STATE;
	}
	*s->tail = r;
	s->tail = &r->next;
	pthread_cond_signal(&s->qcond);
	while (!r->done)
		pthread_cond_wait(&r->cond, &s->qlock);
	rc = r->rc;
	pthread_mutex_unlock(&s->qlock);
	pthread_cond_destroy(&r->cond);
	return rc;
}

/* ---- backend callbacks: writes -------------------------------------------- */

/* IF_ABSENT means nothing for a delete: refused, as by every backend. */
static bool cond_ok(int is_delete, int cond)
{
	if (cond == PLANT_PUT_ANY || cond == PLANT_PUT_IF_VERSION)
		return true;
	return !is_delete && cond == PLANT_PUT_IF_ABSENT;
}

/* The value as stored: compact JSON text, made on the caller's thread so
 * that the writer only writes. */
static char *value_text(const json_t *value)
{
	return json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
}

static int sq_put(void *store, const char *key, size_t key_len, const json_t *value, int cond,
		  uint64_t version, uint64_t ttl_ms, uint64_t now, uint64_t *version_out)
{
	struct store *s = store;
	struct plant_store_op op = {
		.key = key,
		.key_len = key_len,
		.value = value,
		.cond = cond,
		.version = version,
		.ttl_ms = ttl_ms,
	};
	struct req r = {.ops = &op, .n = 1, .now = now};
	char *text;
	int rc;

	if (!key_ok(key, key_len) || !value || !cond_ok(0, cond))
		return PLANT_E_INVALID;
	text = value_text(value);
	if (!text)
		return PLANT_E_INVALID; /* cannot be encoded (or out of memory) */
	r.texts = &text;
	rc = submit(s, &r);
	free(text);
	if (rc == PLANT_OK && version_out)
		*version_out = r.version;
	return rc;
}

static int sq_del(void *store, const char *key, size_t key_len, int cond, uint64_t version,
		  uint64_t now)
{
	struct plant_store_op op = {
		.is_delete = 1,
		.key = key,
		.key_len = key_len,
		.cond = cond,
		.version = version,
	};
	char *text = NULL;
	struct req r = {.ops = &op, .texts = &text, .n = 1, .now = now};

	if (!key_ok(key, key_len) || !cond_ok(1, cond))
		return PLANT_E_INVALID;
	return submit(store, &r);
}

/* A malformed op (bad key, condition or value) fails the batch with
 * `invalid`, unless the condition of an op before it fails first: the ops
 * before it are checked in the writer and undone. Nothing is written. */
static int sq_batch(void *store, const struct plant_store_op *ops, size_t n, uint64_t now,
		    size_t *failed_out, int *atomic_out)
{
	struct req r = {.ops = ops, .now = now};
	char **texts;
	size_t bad;
	int rc;

	if (atomic_out)
		*atomic_out = 1;
	if (failed_out)
		*failed_out = 0;
	if (n == 0)
		return PLANT_OK;
	if (!ops)
		return PLANT_E_INVALID;
	texts = calloc(n, sizeof(*texts));
	if (!texts)
		return PLANT_E_NOMEM;
	for (bad = 0; bad < n; bad++) {
		const struct plant_store_op *op = &ops[bad];

		if (!key_ok(op->key, op->key_len) || !cond_ok(op->is_delete, op->cond) ||
		    (!op->is_delete && !op->value && !op->value_text))
			break;
		/* text given is stored as it is: no tree, no dump */
		if (!op->is_delete &&
		    !(texts[bad] = op->value ? value_text(op->value)
					     : strndup(op->value_text, op->value_text_len)))
			break;
	}
	if (bad == 0) {
		rc = PLANT_E_INVALID;
	} else {
		r.texts = texts;
		r.n = bad;
		r.undo_rc = bad < n ? PLANT_E_INVALID : PLANT_OK;
		rc = submit(store, &r);
		if (failed_out)
			*failed_out = rc == PLANT_OK ? n : r.failed; /* n: none failed */
	}
	for (size_t k = 0; k < n; k++)
		free(texts[k]);
	free(texts);
	return rc;
}

static size_t sq_expire(void *store, uint64_t now)
{
	struct req r = {.expire = true, .now = now};

	if (submit(store, &r) != PLANT_OK)
		return 0;
	return r.expired;
}

/* ---- backend callbacks: reads --------------------------------------------- */

static void read_failure(struct store *s, struct reader *r, int src)
{
	note_failure(s, r->db, "read", src);
}

/* A free reading connection, locked; when all are busy, wait for one. */
static struct reader *reader_take(struct store *s)
{
	unsigned start = atomic_fetch_add_explicit(&s->next_reader, 1, memory_order_relaxed);
	for (unsigned i = 0; i < N_READERS; i++) {
		struct reader *r = &s->readers[(start + i) % N_READERS];
		if (pthread_mutex_trylock(&r->lock) == 0)
			return r;
	}
	struct reader *r = &s->readers[start % N_READERS];
	pthread_mutex_lock(&r->lock);
	return r;
}

static int sq_get(void *store, const char *key, size_t key_len, uint64_t now, json_t **value_out,
		  uint64_t *version_out)
{
	struct store *s = store;
	int src, rc;

	if (!key_ok(key, key_len) || !value_out)
		return PLANT_E_INVALID;
	*value_out = NULL;
	struct reader *r = reader_take(s);
	sqlite3_stmt *st = r->get;
	sqlite3_bind_blob(st, 1, key, (int)key_len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, clamp64(now));
	src = sqlite3_step(st);
	if (src == SQLITE_ROW) {
		const char *text = (const char *)sqlite3_column_text(st, 0);
		size_t len = (size_t)sqlite3_column_bytes(st, 0);
		json_error_t jerr;

		*value_out = text ? json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr)
				  : NULL;
		if (*value_out) {
			if (version_out)
				*version_out = (uint64_t)sqlite3_column_int64(st, 1);
			rc = PLANT_OK;
		} else {
			s->plugin->api->log(s->plugin->self, PLANT_LOG_ERROR,
					    "store %s (%s): a stored value is not JSON: %s",
					    s->name, s->path, text ? jerr.text : "out of memory");
			rc = PLANT_E_IO;
		}
	} else if (src == SQLITE_DONE) {
		rc = PLANT_E_NOTFOUND;
	} else {
		read_failure(s, r, src);
		rc = status_of(src);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	pthread_mutex_unlock(&r->lock);
	return rc;
}

/* {"key": "text"} for a UTF-8 key without NUL bytes, else {"key_hex": ..}. */
static int set_key(json_t *item, const unsigned char *key, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	json_t *k = NULL;
	char *buf;

	if (!memchr(key, 0, len))
		k = json_stringn((const char *)key, len); /* NULL unless UTF-8 */
	if (k)
		return json_object_set_new(item, "key", k);
	buf = malloc(2 * len + 1);
	if (!buf)
		return -1;
	for (size_t i = 0; i < len; i++) {
		buf[2 * i] = hex[key[i] >> 4];
		buf[2 * i + 1] = hex[key[i] & 0xf];
	}
	buf[2 * len] = '\0';
	k = json_stringn(buf, 2 * len);
	free(buf);
	return json_object_set_new(item, "key_hex", k);
}

/* Keys in [lo, hi): lo is the larger of `prefix` and the smallest key
 * after `after` (after + "\0"); hi is the first key past the prefix (the
 * prefix with trailing 0xff bytes dropped and its last byte raised), or
 * none. One range, so that paging through a large prefix stays cheap. */
static int sq_scan(void *store, const char *prefix, size_t prefix_len, const char *after,
		   size_t after_len, size_t limit, uint64_t now, json_t **items_out)
{
	struct store *s = store;
	unsigned char lo[KEY_MAX + 1], hi[KEY_MAX];
	size_t lo_len, hi_len = prefix_len;
	sqlite3_stmt *st;
	json_t *items;
	int src, rc = PLANT_OK;

	if (!items_out || prefix_len > KEY_MAX || after_len > KEY_MAX || (prefix_len && !prefix) ||
	    (after_len && !after))
		return PLANT_E_INVALID;
	*items_out = NULL;

	if (prefix_len)
		memcpy(lo, prefix, prefix_len);
	lo_len = prefix_len;
	if (after_len) {
		size_t m = after_len < prefix_len ? after_len : prefix_len;
		int c = m ? memcmp(after, prefix, m) : 0;

		if (c > 0 || (c == 0 && after_len >= prefix_len)) {
			memcpy(lo, after, after_len);
			lo[after_len] = 0;
			lo_len = after_len + 1;
		}
	}
	if (prefix_len)
		memcpy(hi, prefix, prefix_len);
	while (hi_len > 0 && hi[hi_len - 1] == 0xff)
		hi_len--;
	if (hi_len > 0)
		hi[hi_len - 1]++;

	items = json_array();
	if (!items)
		return PLANT_E_NOMEM;

	struct reader *r = reader_take(s);
	st = hi_len ? r->scan_to : r->scan;
	if (lo_len)
		sqlite3_bind_blob(st, 1, lo, (int)lo_len, SQLITE_STATIC);
	else
		sqlite3_bind_zeroblob(st, 1, 0); /* x'': below every key */
	sqlite3_bind_int64(st, 2, clamp64(now));
	sqlite3_bind_int64(st, 3, limit ? clamp64(limit) : -1);
	if (hi_len)
		sqlite3_bind_blob(st, 4, hi, (int)hi_len, SQLITE_STATIC);
	while ((src = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *key = sqlite3_column_blob(st, 0);
		size_t key_len = (size_t)sqlite3_column_bytes(st, 0);
		const char *text = (const char *)sqlite3_column_text(st, 1);
		size_t len = (size_t)sqlite3_column_bytes(st, 1);
		json_t *value, *item;
		json_error_t jerr;

		value = text ? json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr)
			     : NULL;
		if (!value) {
			s->plugin->api->log(s->plugin->self, PLANT_LOG_ERROR,
					    "store %s (%s): a stored value is not JSON: %s",
					    s->name, s->path, text ? jerr.text : "out of memory");
			rc = PLANT_E_IO;
			break;
		}
		item = json_pack("{s:o, s:I}", "value", value, "version",
				 (json_int_t)sqlite3_column_int64(st, 2));
		if (!item || set_key(item, key ? key : (const unsigned char *)"", key_len) != 0 ||
		    json_array_append_new(items, item) != 0) {
			rc = PLANT_E_NOMEM;
			break;
		}
	}
	if (rc == PLANT_OK && src != SQLITE_DONE) {
		read_failure(s, r, src);
		rc = status_of(src);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	pthread_mutex_unlock(&r->lock);

	if (rc != PLANT_OK) {
		json_decref(items);
		return rc;
	}
	*items_out = items;
	return PLANT_OK;
}

static int sq_health(void *store, json_t **detail_out)
{
	struct store *s = store;
	json_t *d;
	bool failing;

	pthread_mutex_lock(&s->hlock);
	failing = s->failing;
	if (failing)
		d = json_pack("{s:s, s:s}", "error", s->error, "path", s->path);
	else
		d = json_pack("{s:s, s:I, s:I}", "path", s->path, "commits", (json_int_t)s->commits,
			      "writes", (json_int_t)s->writes);
	pthread_mutex_unlock(&s->hlock);
	if (detail_out)
		*detail_out = d;
	else
		json_decref(d);
	return failing ? PLANT_E_IO : PLANT_OK;
}

/* ---- open and close ------------------------------------------------------- */

static void store_free(struct store *s)
{
	sqlite3_stmt **stmts[] = {
		&s->w_begin,	  &s->w_commit,	     &s->w_rollback, &s->w_savepoint,
		&s->w_release,	  &s->w_rollback_to, &s->w_lookup,   &s->w_upsert,
		&s->w_insert_new, &s->w_delete,	     &s->w_expire,
	};

	if (s->writer_running) {
		pthread_mutex_lock(&s->qlock);
		s->stopping = true;
		pthread_cond_signal(&s->qcond);
		pthread_mutex_unlock(&s->qlock);
		pthread_join(s->writer, NULL);
	}
	for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++)
		sqlite3_finalize(*stmts[i]);
	/* The writing connection last: closing the last connection checkpoints
	 * the WAL into the database and removes it. */
	for (int i = 0; i < N_READERS; i++) {
		struct reader *r = &s->readers[i];
		sqlite3_finalize(r->get);
		sqlite3_finalize(r->scan);
		sqlite3_finalize(r->scan_to);
		sqlite3_close(r->db);
		pthread_mutex_destroy(&r->lock);
	}
	sqlite3_close(s->wdb);
	if (s->lock_fd >= 0)
		close(s->lock_fd); /* releases the flock */
	pthread_mutex_destroy(&s->qlock);
	pthread_cond_destroy(&s->qcond);
	pthread_mutex_destroy(&s->hlock);
	free(s->name);
	free(s->path);
	free(s->lock_path);
	free(s);
}

static void sq_close(void *store)
{
	if (store)
		store_free(store);
}

/* busy_timeout: integer ms, or a string "250ms", "5s", "1m". */
static bool parse_ms(const json_t *v, int *out)
{
	long long ms;

	if (json_is_integer(v)) {
		ms = json_integer_value(v);
	} else if (json_is_string(v)) {
		const char *str = json_string_value(v);
		char *end;
		long long mult;

		errno = 0;
		ms = strtoll(str, &end, 10);
		if (end == str || errno || ms < 0)
			return false;
		if (strcmp(end, "ms") == 0 || *end == '\0')
			mult = 1;
		else if (strcmp(end, "s") == 0)
			mult = 1000;
		else if (strcmp(end, "m") == 0)
			mult = 60000;
		else
			return false;
		if (ms > INT_MAX / mult)
			return false;
		ms *= mult;
	} else {
		return false;
	}
	if (ms < 0 || ms > INT_MAX)
		return false;
	*out = (int)ms;
	return true;
}

static int read_settings(struct store *s, const json_t *settings, const char **path_out, char *err,
			 size_t errlen)
{
	const char *key;
	const json_t *v;

	*path_out = NULL;
	if (!settings)
		return PLANT_OK;
	if (!json_is_object(settings))
		return set_err(err, errlen, PLANT_E_CONFIG, "store %s: settings are not an object",
			       s->name);
	json_object_foreach((json_t *)settings, key, v)
	{
		if (strcmp(key, "path") == 0) {
			if (!json_is_string(v) || json_string_length(v) == 0 ||
			    strlen(json_string_value(v)) != json_string_length(v))
				return set_err(
					err, errlen, PLANT_E_CONFIG,
					"store %s: setting 'path' must be a non-empty string",
					s->name);
			*path_out = json_string_value(v);
		} else if (strcmp(key, "synchronous") == 0) {
			const char *mode = json_string_value(v);

			if (mode && strcasecmp(mode, "normal") == 0)
				s->synchronous_full = 0;
			else if (mode && strcasecmp(mode, "full") == 0)
				s->synchronous_full = 1;
			else
				return set_err(err, errlen, PLANT_E_CONFIG,
					       "store %s: setting 'synchronous' must be \"normal\" "
					       "or \"full\"",
					       s->name);
		} else if (strcmp(key, "busy_timeout") == 0) {
			if (!parse_ms(v, &s->busy_timeout_ms))
				return set_err(err, errlen, PLANT_E_CONFIG,
					       "store %s: setting 'busy_timeout' must be ms "
					       "(an integer >= 0, or \"250ms\", \"5s\", \"1m\")",
					       s->name);
		} else if (strcmp(key, "name") != 0 && strcmp(key, "backend") != 0) {
			/* name and backend are the host's; it usually strips them. */
			return set_err(err, errlen, PLANT_E_CONFIG,
				       "store %s: unknown setting '%s'", s->name, key);
		}
	}
	return PLANT_OK;
}

/* mkdir -p of the directory part of `path`. */
static int make_parent_dirs(char *path, char *err, size_t errlen, const char *name)
{
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) != 0 && errno != EEXIST) {
			int e = errno;
			int rc = set_err(err, errlen, PLANT_E_IO,
					 "store %s: cannot create directory %s: %s", name, path,
					 strerror(e));

			*p = '/';
			return rc;
		}
		*p = '/';
	}
	return PLANT_OK;
}

/* An error from SQLite during open, worded for the user. */
static int open_error(struct store *s, sqlite3 *db, int src, const char *what, char *err,
		      size_t errlen)
{
	char msg[MSG_MAX];
	int code = src & 0xff;

	db_message(db, src, msg, sizeof(msg));
	if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT)
		return set_err(err, errlen, PLANT_E_IO,
			       "store %s (%s): not a database / corrupt: %s", s->name, s->path,
			       msg);
	if (code == SQLITE_READONLY)
		return set_err(err, errlen, PLANT_E_IO,
			       "store %s (%s): %s: %s (the file and its directory must be "
			       "writable: WAL keeps %s-wal and %s-shm beside it)",
			       s->name, s->path, what, msg, s->path, s->path);
	return set_err(err, errlen, status_of(src), "store %s (%s): %s: %s", s->name, s->path, what,
		       msg);
}

/* Run `sql`; the first column of its first row (if any) goes to `out`. */
static int exec_first(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
	sqlite3_stmt *st = NULL;
	int src = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

	if (out && outlen)
		out[0] = '\0';
	if (src != SQLITE_OK)
		return src;
	src = sqlite3_step(st);
	if (src == SQLITE_ROW && out && outlen) {
		const char *t = (const char *)sqlite3_column_text(st, 0);

		snprintf(out, outlen, "%s", t ? t : "");
	}
	if (src == SQLITE_ROW || src == SQLITE_DONE)
		src = SQLITE_OK;
	sqlite3_finalize(st);
	return src;
}

static int open_db(struct store *s, sqlite3 **db, char *err, size_t errlen)
{
	int src = sqlite3_open_v2(s->path, db,
				  SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
				  NULL);

	if (src != SQLITE_OK)
		return open_error(s, *db, src, "cannot open", err, errlen);
	sqlite3_extended_result_codes(*db, 1);
	sqlite3_busy_timeout(*db, s->busy_timeout_ms);
	return PLANT_OK;
}

static int prepare(struct store *s, sqlite3 *db, const char *sql, sqlite3_stmt **st, char *err,
		   size_t errlen)
{
	int src = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);

	if (src != SQLITE_OK)
		return open_error(s, db, src, "cannot prepare statements (not a plantd store?)",
				  err, errlen);
	return PLANT_OK;
}

/* The writing connection: WAL, synchronous, an integrity check, the
 * schema. */
static int setup_writer(struct store *s, char *err, size_t errlen)
{
	char out[MSG_MAX];
	struct stat sb;
	int src, rc;

	if ((rc = open_db(s, &s->wdb, err, errlen)) != PLANT_OK)
		return rc;
	/* SQLite falls back to reading when the file is write-protected. */
	if (sqlite3_db_readonly(s->wdb, "main") == 1)
		return set_err(err, errlen, PLANT_E_IO,
			       "store %s (%s): cannot open: the database file is read-only",
			       s->name, s->path);
	/* The first statement reads the file header: garbage fails here. */
	src = exec_first(s->wdb, "PRAGMA journal_mode=WAL", out, sizeof(out));
	if (src != SQLITE_OK)
		return open_error(s, s->wdb, src, "cannot open", err, errlen);
	if (strcasecmp(out, "wal") != 0)
		return set_err(err, errlen, PLANT_E_IO,
			       "store %s (%s): cannot use WAL mode (journal mode is '%s'; is "
			       "the file system local?)",
			       s->name, s->path, out);
	src = exec_first(s->wdb,
			 s->synchronous_full ? "PRAGMA synchronous=FULL"
					     : "PRAGMA synchronous=NORMAL",
			 NULL, 0);
	if (src != SQLITE_OK)
		return open_error(s, s->wdb, src, "cannot open", err, errlen);

	/* quick_check reads every page: cheap for small stores, but seconds
	 * per 100 MB from a cold cache, so large stores skip it (the header and
	 * the schema are read below all the same; damage elsewhere shows up as
	 * failing calls and an unhealthy store). */
	if (stat(s->path, &sb) == 0 && sb.st_size > QUICK_CHECK_MAX) {
		s->plugin->api->log(s->plugin->self, PLANT_LOG_INFO,
				    "store %s (%s): %lld MB, no integrity check at open", s->name,
				    s->path, (long long)(sb.st_size >> 20));
	} else {
		src = exec_first(s->wdb, "PRAGMA quick_check(1)", out, sizeof(out));
		if (src != SQLITE_OK)
			return open_error(s, s->wdb, src, "cannot check", err, errlen);
		for (char *c = out; *c; c++)
			if (*c == '\n')
				*c = ' '; /* one line for the log */
		if (strcmp(out, "ok") != 0)
			return set_err(err, errlen, PLANT_E_IO,
				       "store %s (%s): not a database / corrupt: %s", s->name,
				       s->path, out);
	}

	src = exec_first(s->wdb, "PRAGMA user_version", out, sizeof(out));
	if (src != SQLITE_OK)
		return open_error(s, s->wdb, src, "cannot open", err, errlen);
	if (atoi(out) > SCHEMA_VERSION)
		return set_err(err, errlen, PLANT_E_IO,
			       "store %s (%s): written by a newer store_sqlite (schema %s, this "
			       "one knows %d)",
			       s->name, s->path, out, SCHEMA_VERSION);

		/* Small columns first: a lookup of the version reads no overflow page
		 * of a large value. */
#define ITEMS_V2                               \
	"CREATE TABLE items_v2("               \
	" key BLOB NOT NULL UNIQUE,"           \
	" version INTEGER NOT NULL,"           \
	" expires INTEGER NOT NULL DEFAULT 0," \
	" value TEXT NOT NULL);"
	if (atoi(out) == 1)
		src = sqlite3_exec(s->wdb,
				   "BEGIN IMMEDIATE;" ITEMS_V2
				   "INSERT INTO items_v2(key, version, expires, value)"
				   " SELECT key, version, expires, value FROM items ORDER BY key;"
				   "DROP TABLE items;"
				   "ALTER TABLE items_v2 RENAME TO items;"
				   "CREATE INDEX items_expires ON items(expires) WHERE expires > 0;"
				   "PRAGMA user_version=2;"
				   "COMMIT;",
				   NULL, NULL, NULL);
	else
		src = sqlite3_exec(s->wdb,
				   "BEGIN IMMEDIATE;"
				   "CREATE TABLE IF NOT EXISTS items("
				   " key BLOB NOT NULL UNIQUE,"
				   " version INTEGER NOT NULL,"
				   " expires INTEGER NOT NULL DEFAULT 0,"
				   " value TEXT NOT NULL);"
				   /* Only items with a TTL: expire() finds them without a
				    * full scan, and stores without TTLs pay nothing. */
				   "CREATE INDEX IF NOT EXISTS items_expires ON items(expires)"
				   " WHERE expires > 0;"
				   "PRAGMA user_version=2;"
				   "COMMIT;",
				   NULL, NULL, NULL);
#undef ITEMS_V2
	if (src != SQLITE_OK) {
		rc = open_error(s, s->wdb, src, "cannot create the schema (a plantd store?)", err,
				errlen);
		sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
		return rc;
	}
	/* Keep the WAL file from staying large after a burst. */
	exec_first(s->wdb, "PRAGMA journal_size_limit=67108864", NULL, 0);
	/* The writer reads too (conditions, the B-tree pages it changes): from
	 * the mapped file and a cache that holds a busy site's working set,
	 * not with a pread per page. */
	exec_first(s->wdb, "PRAGMA mmap_size=268435456", NULL, 0);
	exec_first(s->wdb, "PRAGMA cache_size=-65536", NULL, 0);

	if ((rc = prepare(s, s->wdb, "BEGIN IMMEDIATE", &s->w_begin, err, errlen)) ||
	    (rc = prepare(s, s->wdb, "COMMIT", &s->w_commit, err, errlen)) ||
	    (rc = prepare(s, s->wdb, "ROLLBACK", &s->w_rollback, err, errlen)) ||
	    (rc = prepare(s, s->wdb, "SAVEPOINT batch", &s->w_savepoint, err, errlen)) ||
	    (rc = prepare(s, s->wdb, "RELEASE batch", &s->w_release, err, errlen)) ||
	    (rc = prepare(s, s->wdb, "ROLLBACK TO batch", &s->w_rollback_to, err, errlen)) ||
	    (rc = prepare(s, s->wdb, "SELECT version, expires FROM items WHERE key = ?1",
			  &s->w_lookup, err, errlen)) ||
	    (rc = prepare(s, s->wdb,
			  "INSERT INTO items(key, value, version, expires) VALUES(?1, ?2, ?3, ?4)"
			  " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
			  " version = excluded.version, expires = excluded.expires",
			  &s->w_upsert, err, errlen)) ||
	    (rc = prepare(s, s->wdb,
			  "INSERT INTO items(key, value, version, expires) VALUES(?1, ?2, 1, ?3)"
			  " ON CONFLICT(key) DO NOTHING",
			  &s->w_insert_new, err, errlen)) ||
	    (rc = prepare(s, s->wdb, "DELETE FROM items WHERE key = ?1", &s->w_delete, err,
			  errlen)) ||
	    (rc = prepare(s, s->wdb,
			  "DELETE FROM items WHERE key IN (SELECT key FROM items"
			  " WHERE expires > 0 AND expires <= ?1 LIMIT ?2)",
			  &s->w_expire, err, errlen)))
		return rc;
	return PLANT_OK;
}

static int setup_reader(struct store *s, struct reader *r, char *err, size_t errlen)
{
	int src, rc;

	if ((rc = open_db(s, &r->db, err, errlen)) != PLANT_OK)
		return rc;
	src = exec_first(r->db, "PRAGMA query_only=1", NULL, 0);
	if (src != SQLITE_OK)
		return open_error(s, r->db, src, "cannot open", err, errlen);
	/* reads from the mapped file, not a pread per page; a larger cache */
	exec_first(r->db, "PRAGMA mmap_size=268435456", NULL, 0);
	exec_first(r->db, "PRAGMA cache_size=-16384", NULL, 0);
	if ((rc = prepare(s, r->db,
			  "SELECT value, version FROM items WHERE key = ?1"
			  " AND (expires = 0 OR expires > ?2)",
			  &r->get, err, errlen)) ||
	    (rc = prepare(s, r->db,
			  "SELECT key, value, version FROM items WHERE key >= ?1"
			  " AND (expires = 0 OR expires > ?2) ORDER BY key LIMIT ?3",
			  &r->scan, err, errlen)) ||
	    (rc = prepare(s, r->db,
			  "SELECT key, value, version FROM items WHERE key >= ?1 AND key < ?4"
			  " AND (expires = 0 OR expires > ?2) ORDER BY key LIMIT ?3",
			  &r->scan_to, err, errlen)))
		return rc;
	return PLANT_OK;
}

static int setup_readers(struct store *s, char *err, size_t errlen)
{
	for (int i = 0; i < N_READERS; i++) {
		int rc = setup_reader(s, &s->readers[i], err, errlen);
		if (rc != PLANT_OK)
			return rc;
	}
	return PLANT_OK;
}

static int take_lock(struct store *s, char *err, size_t errlen)
{
	s->lock_fd = open(s->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (s->lock_fd < 0) {
		int e = errno;

		return set_err(err, errlen, PLANT_E_IO,
			       "store %s (%s): cannot open lock file %s: %s", s->name, s->path,
			       s->lock_path, strerror(e));
	}
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno;

		if (e == EWOULDBLOCK)
			return set_err(err, errlen, PLANT_E_STATE,
				       "store %s (%s): in use by another process (lock %s)",
				       s->name, s->path, s->lock_path);
		return set_err(err, errlen, PLANT_E_IO, "store %s (%s): cannot lock %s: %s",
			       s->name, s->path, s->lock_path, strerror(e));
	}
	return PLANT_OK;
}

static int start_writer(struct store *s, char *err, size_t errlen)
{
	sigset_t all, old;
	char tname[16];
	int e;

	/* Signals stay with the host's threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	e = pthread_create(&s->writer, NULL, writer_main, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e != 0)
		return set_err(err, errlen, PLANT_E_NOMEM,
			       "store %s (%s): cannot start the writer thread: %s", s->name,
			       s->path, strerror(e));
	s->writer_running = true;
	snprintf(tname, sizeof(tname), "sqlite:%s", s->name);
	pthread_setname_np(s->writer, tname);
	return PLANT_OK;
}

static int sq_open(void *backend_state, const char *name, const json_t *settings,
		   const char *data_dir, void **store_out, char *err, size_t errlen)
{
	struct store *s;
	const char *path = NULL;
	char *def = NULL;
	size_t n;
	int rc;

	if (!name || !*name || !store_out)
		return set_err(err, errlen, PLANT_E_INVALID, "store: no name");
	*store_out = NULL;
	if (!sqlite3_threadsafe())
		return set_err(err, errlen, PLANT_E_UNSUPPORTED,
			       "store %s: libsqlite3 is built without thread support", name);
	s = calloc(1, sizeof(*s));
	if (!s)
		return set_err(err, errlen, PLANT_E_NOMEM, "store %s: out of memory", name);
	s->plugin = backend_state;
	s->lock_fd = -1;
	s->busy_timeout_ms = 5000;
	s->tail = &s->head;
	for (int i = 0; i < N_READERS; i++)
		pthread_mutex_init(&s->readers[i].lock, NULL);
	pthread_mutex_init(&s->qlock, NULL);
	pthread_cond_init(&s->qcond, NULL);
	pthread_mutex_init(&s->hlock, NULL);
	s->name = strdup(name);
	if (!s->name) {
		rc = set_err(err, errlen, PLANT_E_NOMEM, "store %s: out of memory", name);
		goto fail;
	}

	rc = read_settings(s, settings, &path, err, errlen);
	if (rc != PLANT_OK)
		goto fail;
	if (!path) {
		n = strlen(name) + 4;
		def = malloc(n);
		if (def)
			snprintf(def, n, "%s.db", name);
		path = def;
	}
	if (path && path[0] != '/' && data_dir && *data_dir) {
		n = strlen(data_dir) + 1 + strlen(path) + 1;
		s->path = malloc(n);
		if (s->path)
			snprintf(s->path, n, "%s/%s", data_dir, path);
	} else if (path) {
		s->path = strdup(path);
	}
	free(def);
	if (s->path) {
		n = strlen(s->path) + 6;
		s->lock_path = malloc(n);
		if (s->lock_path)
			snprintf(s->lock_path, n, "%s.lock", s->path);
	}
	if (!s->path || !s->lock_path) {
		rc = set_err(err, errlen, PLANT_E_NOMEM, "store %s: out of memory", name);
		goto fail;
	}

	if ((rc = make_parent_dirs(s->path, err, errlen, name)) != PLANT_OK ||
	    (rc = take_lock(s, err, errlen)) != PLANT_OK ||
	    (rc = setup_writer(s, err, errlen)) != PLANT_OK ||
	    (rc = setup_readers(s, err, errlen)) != PLANT_OK ||
	    (rc = start_writer(s, err, errlen)) != PLANT_OK)
		goto fail;
	*store_out = s;
	return PLANT_OK;
fail:
	store_free(s);
	return rc;
}

static const struct plant_store_backend sqlite_backend = {
	.struct_size = (uint32_t)sizeof(struct plant_store_backend),
	.open = sq_open,
	.close = sq_close,
	.get = sq_get,
	.put = sq_put,
	.del = sq_del,
	.scan = sq_scan,
	.batch = sq_batch,
	.expire = sq_expire,
	.health = sq_health,
};

/* ---- the plugin ----------------------------------------------------------- */

static int plugin_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		       void **state_out)
{
	struct plugin *p;
	int rc;

	(void)config;
	if (!PLANT_API_HAS(api, store_register)) {
		api->error(self, NULL, "the host offers no stores (needs SDK 1.2, host has %u.%u)",
			   (unsigned)api->abi_major, (unsigned)api->abi_minor);
		return PLANT_E_UNSUPPORTED;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	p->self = self;
	p->api = api;
	rc = api->store_register(self, "sqlite", &sqlite_backend, p);
	if (rc != PLANT_OK) {
		api->error(self, NULL, "cannot register store kind \"sqlite\": %s",
			   plant_status_name(rc));
		free(p);
		return rc;
	}
	*state_out = p;
	return PLANT_OK;
}

/* The host destroys the instance only after every sqlite store is closed. */
static void plugin_destroy(void *state)
{
	free(state);
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "store_sqlite",
	.version = "1.0.0",
	.description = "the embedded default store (SQLite, WAL, group commit)",
	.config_keys = config_keys,
	.init = plugin_init,
	.destroy = plugin_destroy,
};
