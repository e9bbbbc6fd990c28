/* ingest_http: readings over HTTP, onto the bus.
 *
 * POST /v1/ingest/{topic} on one of the site's listeners takes one JSON
 * object, a JSON array of objects, or NDJSON (one object per line), checks
 * all of it, then publishes every object on the topic in one all-or-nothing
 * publish_all(): 202 {"ids": [...], "count": N}, or an error that says what
 * was wrong and where, with nothing of the request on the bus. An
 * Idempotency-Key makes a retry safe: the first answer comes back again and
 * nothing is published twice. See README.md.
 *
 * Speed: the work is jansson's parse of each object, done once. An object
 * on one line is then published as its text (checked by jansson already,
 * kept by the host as it is) rather than as the tree, which the host would
 * dump again; an array is parsed item by item, like NDJSON, so that each
 * tree is freed before the next is built.
 *
 * Threads: the route is PLANT_ROUTE_CONCURRENT, so the handler runs on the
 * listener's HTTP threads, several at once. Everything it reads is set in
 * init() and never changed; what it writes is atomic (counters), behind a
 * mutex (the scratch pool, the in-memory idempotency table), or the host's
 * to lock (publish, stores). Counters are summed in atomics and handed to
 * the host once a second by a timer: counter_add() takes the host's metrics
 * lock, which tens of thousands of requests a second would contend for.
 */
#include <fnmatch.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <plantd/plantd.h>

#define ROUTE	       "/v1/ingest/"
#define TOPIC_MAX      200 /* the bus's limit on a topic name */
#define KEY_MAX	       255 /* the longest Idempotency-Key taken */
#define IDEM_PREFIX    "idem/"
/* A claim in a store outlives a plantd that died while publishing by this
 * much at most (then a retry may go in); an answer lives idempotency_ttl. */
#define PENDING_TTL_MS 60000
/* Duplicate keys in an object are refused: a reading with "value" twice is
 * ambiguous, and keeping the last one would hide the client's bug. NUL in
 * strings (\u0000) is JSON, so it is taken. */
#define PARSE_FLAGS    (JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL)
#define FLUSH_EVERY_MS 1000

#define PRINTF_VA(f) __attribute__((format(printf, f, 0)))

static const struct plant_config_key config_keys[] = {
	{
		.name = "listener",
		.type = PLANT_CFG_STRING,
		.default_value = "\"ingest\"",
		.description = "the site's listener that serves POST /v1/ingest/{topic}",
	},
	{
		.name = "topics",
		.type = PLANT_CFG_ARRAY,
		.default_value = "[]",
		.description = "topic patterns a client may ingest to ([]: any valid topic)",
	},
	{
		.name = "topic_prefix",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "put in front of the path's topic to make the bus topic",
	},
	{
		.name = "max_items",
		.type = PLANT_CFG_INT,
		.default_value = "10000",
		.description = "most objects in one request (more: 413)",
	},
	{
		.name = "retry_after",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"1s\"",
		.description = "Retry-After of a 429 when the bus is full (whole seconds, "
			       "rounded up)",
	},
	{
		.name = "stamp",
		.type = PLANT_CFG_BOOL,
		.default_value = "false",
		.description = "add \"received_ms\" (the host clock) to every object",
	},
	{
		.name = "idempotency_ttl",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"24h\"",
		.description = "how long an Idempotency-Key's answer is kept",
	},
	{
		.name = "idempotency_max",
		.type = PLANT_CFG_INT,
		.default_value = "100000",
		.description = "most keys kept in memory (the oldest go first); not used "
			       "with idempotency_store",
	},
	{
		.name = "idempotency_store",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "keep Idempotency-Keys in this store of the site "
			       "(\"\": in memory, lost on restart)",
	},
	{.name = NULL, .type = PLANT_CFG_END},
};

/* ---- a growing buffer, with a sticky failure ------------------------------ */

struct buf {
	char *p;
	size_t len, cap;
	bool failed; /* out of memory once: the text is incomplete */
};

static bool buf_reserve(struct buf *b, size_t more)
{
	if (b->failed)
		return false;
	if (b->len + more <= b->cap)
		return true;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + more)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		b->failed = true;
		return false;
	}
	b->p = p;
	b->cap = cap;
	return true;
}

static void buf_add(struct buf *b, const char *s, size_t n)
{
	if (!buf_reserve(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void buf_add_u64(struct buf *b, uint64_t v)
{
	char d[24];
	size_t i = sizeof(d);

	do {
		d[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	buf_add(b, d + i, sizeof(d) - i);
}

/* The length of the valid UTF-8 sequence at s[0..n), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

/* A JSON string of any bytes: what a client sent may end up in an error
 * message (a topic, jansson's "near '...'"), and the answer must stay JSON.
 * Bytes that are not UTF-8 become U+FFFD. */
static void buf_add_jstr(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;

	buf_add(b, "\"", 1);
	for (size_t i = 0; i < n;) {
		size_t run = i;

		while (run < n && u[run] >= 0x20 && u[run] < 0x80 && u[run] != '"' &&
		       u[run] != '\\')
			run++;
		buf_add(b, s + i, run - i);
		i = run;
		if (i == n)
			break;
		if (u[i] == '"' || u[i] == '\\') {
			char esc[2] = {'\\', s[i]};

			buf_add(b, esc, 2);
			i++;
		} else if (u[i] < 0x20) {
			char esc[6] = {'\\', 'u', '0', '0', hex[u[i] >> 4], hex[u[i] & 0xf]};

			buf_add(b, esc, 6);
			i++;
		} else {
			size_t len = utf8_len(u + i, n - i);

			if (len) {
				buf_add(b, s + i, len);
				i += len;
			} else {
				buf_adds(b, "\\ufffd");
				i++;
			}
		}
	}
	buf_add(b, "\"", 1);
}

/* ---- topics ------------------------------------------------------------------ */

/* The bus's rule: [A-Za-z0-9_.-], dot-separated (no empty segment), at most
 * TOPIC_MAX characters; patterns add '*' and '?'. */
static bool name_chars_ok(const char *s, size_t len, bool pattern)
{
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '_' || c == '-')
			continue;
		if (c == '.' && (i + 1 == len || s[i + 1] != '.'))
			continue;
		if (pattern && (c == '*' || c == '?'))
			continue;
		return false;
	}
	return true;
}

static bool name_valid(const char *s, size_t len, bool pattern)
{
	return len > 0 && len <= TOPIC_MAX && s[0] != '.' && s[len - 1] != '.' &&
	       name_chars_ok(s, len, pattern);
}

/* ---- counters ---------------------------------------------------------------- */

enum counter {
	C_REQUESTS,
	C_READINGS,
	C_REJECTED,
	C_REFUSED,
	C_REPLAYED,
	C_FAILED,
	C_IDEM_ERRORS,
	C_N,
};

static const char *const counter_names[C_N] = {
	"requests", "readings", "rejected", "refused", "replayed", "failed", "idempotency_errors",
};

/* ---- scratch: what a request needs, kept for the next one ------------------ */

/* A request takes one from the instance's pool and gives it back, so that
 * a steady stream of requests allocates nothing for its items or its
 * answer. There are as many as requests ever ran at once. */
struct scratch {
	struct scratch *next;
	struct plant_publish *items;
	size_t cap;
	struct buf out; /* the answer */
};

/* ---- the in-memory idempotency table ---------------------------------------- */

/* A key's entry: pending (answer == NULL) while its request publishes, then
 * the 202 body. Entries are listed oldest first; they all live the same
 * TTL from their claim, so the oldest is also the first to expire. */
struct idem_entry {
	struct idem_entry *chain; /* the next in its bucket */
	struct idem_entry *older, *newer;
	uint64_t hash;
	uint64_t expires;
	uint64_t token; /* tells this claim from a later one of the same key */
	uint64_t print; /* the request's fingerprint: its topic and body */
	char *answer;
	size_t answer_len;
	size_t key_len;
	char key[];
};

struct idem_table {
	pthread_mutex_t lock;
	struct idem_entry **buckets;
	size_t mask; /* buckets - 1, a power of two minus one */
	size_t count, max;
	struct idem_entry *oldest, *newest;
	uint64_t next_token;
	uint64_t seed;
};

enum claim {
	CLAIMED,     /* the request goes ahead; finish or abandon the claim */
	IN_PROGRESS, /* a request with the key is publishing now: 409 */
	ANSWERED,    /* done before: its answer is in the buffer */
	MISMATCH,    /* the key was used for another request: 422 */
	CLAIM_ERROR, /* out of memory, or the store failed */
};

static uint64_t key_hash(uint64_t seed, const char *key, size_t len)
{
	uint64_t h = 0xcbf29ce484222325u ^ seed;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)key[i];
		h *= 0x100000001b3u;
	}
	/* spread the high bits into the low ones used for buckets */
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdu;
	h ^= h >> 33;
	return h;
}

static int idem_init(struct idem_table *t, size_t max, uint64_t seed)
{
	memset(t, 0, sizeof(*t));
	t->buckets = calloc(256, sizeof(*t->buckets));
	if (!t->buckets)
		return PLANT_E_NOMEM;
	t->mask = 255;
	t->max = max;
	t->seed = seed;
	pthread_mutex_init(&t->lock, NULL);
	return PLANT_OK;
}

static void idem_free(struct idem_table *t)
{
	struct idem_entry *e = t->oldest;

	if (!t->buckets)
		return;
	while (e) {
		struct idem_entry *next = e->newer;

		free(e->answer);
		free(e);
		e = next;
	}
	free(t->buckets);
	t->buckets = NULL;
	pthread_mutex_destroy(&t->lock);
}

static struct idem_entry *idem_find(struct idem_table *t, uint64_t hash, const char *key,
				    size_t len)
{
	for (struct idem_entry *e = t->buckets[hash & t->mask]; e; e = e->chain)
		if (e->hash == hash && e->key_len == len && memcmp(e->key, key, len) == 0)
			return e;
	return NULL;
}

static void idem_remove(struct idem_table *t, struct idem_entry *e)
{
	struct idem_entry **pp = &t->buckets[e->hash & t->mask];

	while (*pp != e)
		pp = &(*pp)->chain;
	*pp = e->chain;
	if (e->older)
		e->older->newer = e->newer;
	else
		t->oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		t->newest = e->older;
	t->count--;
	free(e->answer);
	free(e);
}

/* One bucket per entry at most; a failed allocation only makes chains
 * longer. */
static void idem_grow(struct idem_table *t)
{
	size_t n = (t->mask + 1) * 2;
	struct idem_entry **b;

	if (t->count < t->mask + 1 || n > t->max * 2)
		return;
	b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (struct idem_entry *e = t->oldest; e; e = e->newer) {
		e->chain = b[e->hash & (n - 1)];
		b[e->hash & (n - 1)] = e;
	}
	free(t->buckets);
	t->buckets = b;
	t->mask = n - 1;
}

static enum claim idem_claim(struct idem_table *t, const char *key, size_t len, uint64_t print,
			     uint64_t now, uint64_t ttl, struct buf *answer, uint64_t *token_out)
{
	uint64_t hash = key_hash(t->seed, key, len);
	struct idem_entry *e;
	enum claim res = CLAIMED;

	pthread_mutex_lock(&t->lock);
	while (t->oldest && t->oldest->expires <= now)
		idem_remove(t, t->oldest);
	e = idem_find(t, hash, key, len);
	if (e) {
		if (e->print != print) {
			res = MISMATCH;
		} else if (!e->answer) {
			res = IN_PROGRESS;
		} else {
			buf_add(answer, e->answer, e->answer_len);
			res = answer->failed ? CLAIM_ERROR : ANSWERED;
		}
		goto out;
	}
	while (t->count >= t->max && t->oldest)
		idem_remove(t, t->oldest);
	e = malloc(sizeof(*e) + len);
	if (!e) {
		res = CLAIM_ERROR;
		goto out;
	}
	e->hash = hash;
	e->expires = now + ttl;
	e->token = ++t->next_token;
	e->print = print;
	e->answer = NULL;
	e->answer_len = 0;
	e->key_len = len;
	memcpy(e->key, key, len);
	idem_grow(t);
	e->chain = t->buckets[hash & t->mask];
	t->buckets[hash & t->mask] = e;
	e->older = t->newest;
	e->newer = NULL;
	if (t->newest)
		t->newest->newer = e;
	else
		t->oldest = e;
	t->newest = e;
	t->count++;
	*token_out = e->token;
out:
	pthread_mutex_unlock(&t->lock);
	return res;
}

/* The claim is answered. An entry evicted meanwhile (the table was full) is
 * not put back: a retry then publishes again, as without a key. */
static void idem_finish(struct idem_table *t, const char *key, size_t len, uint64_t token,
			const char *answer, size_t answer_len)
{
	uint64_t hash = key_hash(t->seed, key, len);
	char *copy = malloc(answer_len ? answer_len : 1);
	struct idem_entry *e;

	pthread_mutex_lock(&t->lock);
	e = idem_find(t, hash, key, len);
	if (e && e->token == token && !e->answer) {
		if (copy) {
			memcpy(copy, answer, answer_len);
			e->answer = copy;
			e->answer_len = answer_len;
			copy = NULL;
		} else {
			idem_remove(t, e); /* better than pending for a day */
		}
	}
	pthread_mutex_unlock(&t->lock);
	free(copy);
}

/* The request failed: its key is free for a retry. */
static void idem_abandon(struct idem_table *t, const char *key, size_t len, uint64_t token)
{
	uint64_t hash = key_hash(t->seed, key, len);
	struct idem_entry *e;

	pthread_mutex_lock(&t->lock);
	e = idem_find(t, hash, key, len);
	if (e && e->token == token && !e->answer)
		idem_remove(t, e);
	pthread_mutex_unlock(&t->lock);
}

/* ---- the instance ----------------------------------------------------------------- */

struct ingest {
	plant_instance *self;
	const struct plant_host_api *api;

	/* set in init(), read-only after */
	const char *listener;
	const char **topics; /* [borrowed] from the config */
	size_t n_topics;
	const char *prefix;
	size_t prefix_len;
	size_t max_items;
	char retry_after[24];
	bool stamp;
	uint64_t idem_ttl;
	bool use_store;
	uint32_t store;
	const char *store_name;

	struct idem_table table; /* without a store */

	pthread_mutex_t pool_lock;
	struct scratch *pool;

	_Atomic uint64_t counts[C_N];
	uint64_t flushed[C_N]; /* [instance]: what counter_add() has had */
	atomic_bool store_failing;
};

static void count(struct ingest *in, enum counter c, uint64_t n)
{
	atomic_fetch_add_explicit(&in->counts[c], n, memory_order_relaxed);
}

/* [instance]: the timer and stop(). */
static void counters_flush(struct ingest *in)
{
	for (int c = 0; c < C_N; c++) {
		uint64_t now = atomic_load_explicit(&in->counts[c], memory_order_relaxed);

		if (now != in->flushed[c])
			in->api->counter_add(in->self, counter_names[c], now - in->flushed[c]);
		in->flushed[c] = now;
	}
}

static void on_flush(void *state, void *user)
{
	(void)user;
	counters_flush(state);
}

static struct scratch *scratch_get(struct ingest *in)
{
	struct scratch *s;

	pthread_mutex_lock(&in->pool_lock);
	s = in->pool;
	if (s)
		in->pool = s->next;
	pthread_mutex_unlock(&in->pool_lock);
	if (!s)
		s = calloc(1, sizeof(*s));
	return s;
}

static void scratch_put(struct ingest *in, struct scratch *s)
{
	s->out.len = 0;
	s->out.failed = false;
	pthread_mutex_lock(&in->pool_lock);
	s->next = in->pool;
	in->pool = s;
	pthread_mutex_unlock(&in->pool_lock);
}

static void scratch_free(struct scratch *s)
{
	free(s->items);
	free(s->out.p);
	free(s);
}

/* ---- one request ------------------------------------------------------------------ */

enum body_kind {
	BODY_JSON,
	BODY_NDJSON,
	BODY_UNSUPPORTED,
};

struct request {
	struct ingest *in;
	plant_http_req *req;
	struct scratch *s;
	size_t n; /* items parsed; their bodies are ours until published */
	int status;
	const char *key; /* the Idempotency-Key, or NULL */
	size_t key_len;
	uint64_t claim; /* its token (memory) or version (store) */
	uint64_t print; /* the fingerprint of topic and body, with a key */
	char topic[TOPIC_MAX + 1];
	char skey[sizeof(IDEM_PREFIX) + KEY_MAX];
	size_t skey_len;
};

static const char *const json_type_names[] = {
	"an object", "an array", "a string", "an integer", "a real", "true", "false", "null",
};

static const char *type_name(const json_t *v)
{
	size_t t = (size_t)json_typeof(v);

	return t < sizeof(json_type_names) / sizeof(json_type_names[0]) ? json_type_names[t]
									: "a value";
}

/* Answers end in a newline, like the host's: a line for whoever reads them
 * with curl. An answer kept for replays is kept without it. */
static void reply(struct request *r, int status, const char *const *headers)
{
	static const char nomem[] = "{\"error\":\"out of memory\"}\n";
	struct buf *b = &r->s->out;

	buf_add(b, "\n", 1);
	if (b->failed) {
		status = 503;
		r->in->api->http_reply(r->req, status, "application/json", nomem, sizeof(nomem) - 1,
				       NULL);
	} else {
		r->in->api->http_reply(r->req, status, "application/json", b->p, b->len, headers);
	}
	r->status = status;
}

/* {"error": "..." (the caller adds more fields and the closing brace) */
PRINTF_VA(2)
static void error_start(struct request *r, const char *fmt, va_list ap)
{
	char msg[512];
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	struct buf *b = &r->s->out;

	if (n < 0)
		n = 0;
	b->len = 0;
	buf_adds(b, "{\"error\":");
	buf_add_jstr(b, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
}

PLANT_PRINTF(3, 4)
static void reply_error(struct request *r, int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	error_start(r, fmt, ap);
	va_end(ap);
	buf_add(&r->s->out, "}", 1);
	reply(r, status, NULL);
}

/* With headers: NULL-terminated name, value pairs. */
PLANT_PRINTF(4, 5)
static void reply_error_headers(struct request *r, int status, const char *const *headers,
				const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	error_start(r, fmt, ap);
	va_end(ap);
	buf_add(&r->s->out, "}", 1);
	reply(r, status, headers);
}

/* A syntax error: where it is, line and column from 1 (jansson's count:
 * the column in characters). */
PLANT_PRINTF(5, 6)
static void reply_error_at(struct request *r, int status, uint64_t line, uint64_t column,
			   const char *fmt, ...)
{
	va_list ap;
	struct buf *b = &r->s->out;

	va_start(ap, fmt);
	error_start(r, fmt, ap);
	va_end(ap);
	buf_adds(b, ",\"line\":");
	buf_add_u64(b, line);
	buf_adds(b, ",\"column\":");
	buf_add_u64(b, column);
	buf_add(b, "}", 1);
	reply(r, status, NULL);
}

/* An item of an array, counted from 0. */
PLANT_PRINTF(4, 5)
static void reply_error_index(struct request *r, int status, size_t index, const char *fmt, ...)
{
	va_list ap;
	struct buf *b = &r->s->out;

	va_start(ap, fmt);
	error_start(r, fmt, ap);
	va_end(ap);
	buf_adds(b, ",\"index\":");
	buf_add_u64(b, index);
	buf_add(b, "}", 1);
	reply(r, status, NULL);
}

static void drop_items(struct request *r)
{
	for (size_t i = 0; i < r->n; i++)
		json_decref(r->s->items[i].body);
	r->n = 0;
}

/* Take `body` as the next item ([stolen]), or when it is NULL the JSON
 * text `text` (checked already; [borrowed] from the request's body). */
static bool item_add(struct request *r, json_t *body, const char *text, size_t text_len)
{
	struct scratch *s = r->s;

	if (r->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		struct plant_publish *items = realloc(s->items, cap * sizeof(*items));

		if (!items) {
			json_decref(body);
			return false;
		}
		s->items = items;
		s->cap = cap;
	}
	s->items[r->n++] = (struct plant_publish){
		.struct_size = sizeof(struct plant_publish),
		.topic = r->topic,
		.body = body,
		.text = body ? NULL : text,
		.text_len = body ? 0 : text_len,
	};
	return true;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Take the object `v`, parsed from `text` (blanks around it allowed), as
 * the next item ([stolen]). It is published as its text when it can be:
 * the host checks the text and keeps it as it is, which spares the compact
 * dump of the tree, as costly as the parse (half as many readings a second
 * again, measured). Not when `stamp` needs the tree, nor when the text
 * holds a line break (pretty-printed JSON): a message stays one line
 * wherever it is written. */
static bool item_add_object(struct request *r, json_t *v, const char *text, size_t len)
{
	while (len > 0 && is_blank(text[0])) {
		text++;
		len--;
	}
	while (len > 0 && is_blank(text[len - 1]))
		len--;
	if (r->in->stamp || len < 2 || text[0] != '{' || text[len - 1] != '}' ||
	    memchr(text, '\n', len) || memchr(text, '\r', len))
		return item_add(r, v, NULL, 0);
	json_decref(v);
	return item_add(r, NULL, text, len);
}

/* The end of the array item that starts at `p`: the ',' or ']' after it
 * (or a stray '}'), or `end`. On text that is not JSON it finds some place;
 * jansson, parsing the item, says whether it was one. */
static const char *item_end(const char *p, const char *end)
{
	int depth = 0;

	for (; p < end; p++) {
		switch (*p) {
		case '"':
			for (p++; p < end && *p != '"'; p++)
				if (*p == '\\')
					p++;
			break;
		case '{':
		case '[':
			depth++;
			break;
		case '}':
		case ']':
			if (depth == 0)
				return p;
			depth--;
			break;
		case ',':
			if (depth == 0)
				return p;
			break;
		}
	}
	return end;
}

/* Media type and charset: JSON (also when there is no Content-Type),
 * NDJSON, or neither. */
static enum body_kind body_kind_of(const char *ct)
{
	/* clang-format off */
	static const char *const ndjson[] = {
		"application/x-ndjson", "application/ndjson", "application/jsonl",
		"application/x-jsonlines", "text/plain",
	};
	/* clang-format on */
	enum body_kind kind = BODY_UNSUPPORTED;
	size_t len;

	if (!ct)
		return BODY_JSON;
	ct += strspn(ct, " \t");
	len = strcspn(ct, "; \t");
	if (len == 0 && ct[0] != ';')
		return BODY_JSON;
	if (len == 16 && strncasecmp(ct, "application/json", len) == 0)
		kind = BODY_JSON;
	for (size_t i = 0; i < sizeof(ndjson) / sizeof(ndjson[0]); i++)
		if (len == strlen(ndjson[i]) && strncasecmp(ct, ndjson[i], len) == 0)
			kind = BODY_NDJSON;
	if (kind == BODY_UNSUPPORTED)
		return kind;
	/* parameters: only a charset of UTF-8 (or its subset ASCII) */
	for (const char *p = strchr(ct, ';'); p; p = strchr(p + 1, ';')) {
		const char *name = p + 1 + strspn(p + 1, " \t");
		const char *v;
		size_t vlen;

		if (strncasecmp(name, "charset", 7) != 0)
			continue;
		v = name + 7 + strspn(name + 7, " \t");
		if (*v != '=')
			continue;
		v++;
		v += strspn(v, " \t\"");
		vlen = strcspn(v, "\"; \t");
		if (!((vlen == 5 && strncasecmp(v, "utf-8", 5) == 0) ||
		      (vlen == 4 && strncasecmp(v, "utf8", 4) == 0) ||
		      (vlen == 8 && strncasecmp(v, "us-ascii", 8) == 0)))
			return BODY_UNSUPPORTED;
	}
	return kind;
}

/* A JSON array of objects, item by item: each parsed alone and let go at
 * once (published as its text), which keeps the allocator's per-thread
 * caches warm; a tree of the whole array allocates all of it before
 * freeing any, and costs a third more a reading (measured). Anything
 * unexpected, an error or more than max_items, returns false with nothing
 * taken: the caller parses the body whole, for jansson's message and
 * position, so that errors are the same either way. */
static bool parse_array_items(struct request *r, const char *body, size_t len)
{
	const char *p = body, *end = body + len;

	while (p < end && is_blank(*p))
		p++;
	if (p == end || *p != '[')
		return false;
	p++;
	while (p < end && is_blank(*p))
		p++;
	if (p < end && *p == ']') {
		p++;
	} else {
		for (;;) {
			const char *stop;
			json_t *v;

			if (p == end || *p != '{' || r->n == r->in->max_items)
				goto fail;
			stop = item_end(p, end);
			if (stop == end)
				goto fail;
			v = json_loadb(p, (size_t)(stop - p), PARSE_FLAGS, NULL);
			if (!v || !item_add_object(r, v, p, (size_t)(stop - p)))
				goto fail;
			p = stop + 1;
			if (*stop != ',')
				break;
			while (p < end && is_blank(*p))
				p++;
		}
		if (p[-1] != ']')
			goto fail;
	}
	while (p < end && is_blank(*p))
		p++;
	if (p == end)
		return true;
fail:
	drop_items(r);
	return false;
}

/* A JSON body: one object or an array of objects. */
static bool parse_json(struct request *r, const char *body, size_t len)
{
	json_error_t err;
	json_t *v;
	size_t n;

	if (body && parse_array_items(r, body, len))
		return true;
	v = json_loadb(body ? body : "", len, PARSE_FLAGS, &err);
	if (!v) {
		reply_error_at(r, 400, (uint64_t)(err.line > 0 ? err.line : 1),
			       (uint64_t)(err.column > 0 ? err.column : 0), "%s", err.text);
		return false;
	}
	if (json_is_object(v)) {
		if (!item_add_object(r, v, body, len)) {
			reply_error(r, 503, "out of memory");
			return false;
		}
		return true;
	}
	/* json_loadb() without JSON_DECODE_ANY gives an object or an array */
	n = json_array_size(v);
	if (n > r->in->max_items) {
		reply_error(r, 413, "%zu objects, more than max_items (%zu) in one request", n,
			    r->in->max_items);
		json_decref(v);
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		const json_t *item = json_array_get(v, i);

		if (!json_is_object(item)) {
			reply_error_index(r, 400, i, "item %zu of the array is %s, not an object",
					  i, type_name(item));
			json_decref(v);
			return false;
		}
	}
	/* an array that parse_array_items() did not take (out of memory?): as
	 * trees */
	for (size_t i = 0; i < n; i++) {
		if (!item_add(r, json_incref(json_array_get(v, i)), NULL, 0)) {
			json_decref(v);
			drop_items(r);
			reply_error(r, 503, "out of memory");
			return false;
		}
	}
	json_decref(v);
	return true;
}

/* NDJSON: an object per line; empty lines (and blank ones) are skipped, a
 * line may end in \r\n. Lines are counted from 1 in the body, columns
 * within the line. */
static bool parse_ndjson(struct request *r, const char *body, size_t len)
{
	const char *p = body, *end = body ? body + len : body;
	uint64_t line = 0;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eol = nl ? nl : end;
		const char *next = nl ? nl + 1 : end;
		size_t blank = 0;
		json_error_t err;
		json_t *v;

		line++;
		if (eol > p && eol[-1] == '\r')
			eol--;
		while (p + blank < eol && (p[blank] == ' ' || p[blank] == '\t'))
			blank++;
		if (p + blank == eol) {
			p = next;
			continue;
		}
		if (r->n == r->in->max_items) {
			drop_items(r);
			reply_error(r, 413, "more than max_items (%zu) objects in one request",
				    r->in->max_items);
			return false;
		}
		v = json_loadb(p, (size_t)(eol - p), PARSE_FLAGS, &err);
		if (!v) {
			drop_items(r);
			reply_error_at(r, 400, line, (uint64_t)(err.column > 0 ? err.column : 0),
				       "%s", err.text);
			return false;
		}
		if (!json_is_object(v)) {
			drop_items(r);
			reply_error_at(r, 400, line, blank + 1,
				       "line %" PRIu64 " is %s, not an object", line, type_name(v));
			json_decref(v);
			return false;
		}
		if (!item_add_object(r, v, p, (size_t)(eol - p))) {
			drop_items(r);
			reply_error(r, 503, "out of memory");
			return false;
		}
		p = next;
	}
	return true;
}

/* 1 to KEY_MAX visible ASCII characters. */
static bool idem_key_ok(const char *key, size_t *len_out)
{
	size_t len = 0;

	for (; key[len]; len++)
		if ((unsigned char)key[len] <= ' ' || (unsigned char)key[len] >= 0x7f ||
		    len == KEY_MAX)
			return false;
	*len_out = len;
	return len > 0;
}

/* A request's fingerprint: its topic and its body, byte for byte. A retry
 * sends the same bytes; the same key with other bytes is another request,
 * which gets 422 rather than the first one's answer. */
static uint64_t fingerprint(const char *topic, const char *body, size_t len)
{
	uint64_t h = key_hash(0, topic, strlen(topic) + 1);

	for (; len >= 8; body += 8, len -= 8) {
		uint64_t w;

		memcpy(&w, body, 8);
		h = (h ^ w) * 0x9e3779b97f4a7c15u;
		h ^= h >> 29;
	}
	return key_hash(h, body, len);
}

static void print_hex(uint64_t v, char out[17])
{
	static const char hex[] = "0123456789abcdef";

	for (int i = 15; i >= 0; i--, v >>= 4)
		out[i] = hex[v & 0xf];
	out[16] = '\0';
}

static void store_trouble(struct ingest *in, const char *what, int rc)
{
	count(in, C_IDEM_ERRORS, 1);
	if (!atomic_exchange(&in->store_failing, true))
		in->api->log(in->self, PLANT_LOG_ERROR,
			     "idempotency store \"%s\": cannot %s: %s (logged once until it "
			     "works again)",
			     in->store_name, what, plant_status_name(rc));
}

static void store_fine(struct ingest *in)
{
	if (atomic_load_explicit(&in->store_failing, memory_order_relaxed) &&
	    atomic_exchange(&in->store_failing, false))
		in->api->log(in->self, PLANT_LOG_INFO, "idempotency store \"%s\" works again",
			     in->store_name);
}

/* Claim idem/KEY in the store: {"state": "pending"} if absent. Found there:
 * a pending claim (409) or an answer, {"ids": [...], "count": N}. */
static enum claim store_claim(struct request *r)
{
	struct ingest *in = r->in;
	const struct plant_host_api *api = in->api;
	uint64_t ttl = in->idem_ttl < PENDING_TTL_MS ? in->idem_ttl : PENDING_TTL_MS;
	char print[17];

	print_hex(r->print, print);
	memcpy(r->skey, IDEM_PREFIX, sizeof(IDEM_PREFIX) - 1);
	memcpy(r->skey + sizeof(IDEM_PREFIX) - 1, r->key, r->key_len);
	r->skey_len = sizeof(IDEM_PREFIX) - 1 + r->key_len;
	/* a claim that goes while we look (expired, abandoned): try again */
	for (int attempt = 0; attempt < 3; attempt++) {
		json_t *v = json_pack("{s:s, s:s}", "state", "pending", "request", print);
		const char *was;
		int rc;

		if (!v)
			return CLAIM_ERROR;
		rc = api->store_put(in->self, in->store, r->skey, r->skey_len, v,
				    PLANT_PUT_IF_ABSENT, 0, ttl, &r->claim);
		if (rc == PLANT_OK) {
			store_fine(in);
			return CLAIMED;
		}
		if (rc != PLANT_E_CONDITION) {
			store_trouble(in, "claim a key", rc);
			return CLAIM_ERROR;
		}
		rc = api->store_get(in->self, in->store, r->skey, r->skey_len, &v, NULL);
		if (rc == PLANT_E_NOTFOUND)
			continue;
		if (rc != PLANT_OK) {
			store_trouble(in, "read a key", rc);
			return CLAIM_ERROR;
		}
		was = json_string_value(json_object_get(v, "request"));
		if (was && strcmp(was, print) != 0) {
			json_decref(v);
			return MISMATCH;
		}
		if (!json_is_array(json_object_get(v, "ids"))) {
			json_decref(v);
			return IN_PROGRESS;
		}
		json_object_del(v, "request"); /* the answer as it was given */
		char *text = json_dumps(v, JSON_COMPACT);

		json_decref(v);
		if (!text)
			return CLAIM_ERROR;
		buf_adds(&r->s->out, text);
		free(text);
		return r->s->out.failed ? CLAIM_ERROR : ANSWERED;
	}
	return IN_PROGRESS;
}

static enum claim claim(struct request *r)
{
	struct ingest *in = r->in;

	r->s->out.len = 0;
	if (in->use_store)
		return store_claim(r);
	return idem_claim(&in->table, r->key, r->key_len, r->print, in->api->now_ms(in->self),
			  in->idem_ttl, &r->s->out, &r->claim);
}

static void claim_abandon(struct request *r)
{
	struct ingest *in = r->in;
	int rc;

	if (!in->use_store) {
		idem_abandon(&in->table, r->key, r->key_len, r->claim);
		return;
	}
	rc = in->api->store_delete(in->self, in->store, r->skey, r->skey_len, PLANT_PUT_IF_VERSION,
				   r->claim);
	if (rc != PLANT_OK && rc != PLANT_E_CONDITION && rc != PLANT_E_NOTFOUND)
		store_trouble(in, "free a key after a failed publish", rc);
}

/* The answer in the buffer is the key's from now on. When the store cannot
 * take it, the claim stays pending until it expires (PENDING_TTL_MS): a
 * retry meanwhile gets 409, never a second publish. */
static void claim_finish(struct request *r)
{
	struct ingest *in = r->in;
	const struct buf *b = &r->s->out;
	char print[17];
	json_t *v;
	int rc;

	if (!in->use_store) {
		idem_finish(&in->table, r->key, r->key_len, r->claim, b->p, b->len);
		return;
	}
	v = json_loadb(b->p, b->len, 0, NULL);
	print_hex(r->print, print);
	if (!v || json_object_set_new(v, "request", json_string(print)) != 0) {
		json_decref(v);
		store_trouble(in, "keep an answer", PLANT_E_NOMEM);
		return;
	}
	rc = in->api->store_put(in->self, in->store, r->skey, r->skey_len, v, PLANT_PUT_IF_VERSION,
				r->claim, in->idem_ttl, NULL);
	if (rc != PLANT_OK && rc != PLANT_E_CONDITION)
		store_trouble(in, "keep an answer", rc);
}

/* {"ids":["...",...],"count":N} */
static void answer_ids(struct buf *b, const struct plant_publish *items, size_t n)
{
	b->len = 0;
	if (!buf_reserve(b, 32 + n * (sizeof(items->id_out) + 3)))
		return;
	buf_adds(b, "{\"ids\":[");
	for (size_t i = 0; i < n; i++) {
		size_t len = strnlen(items[i].id_out, sizeof(items[i].id_out));

		if (i)
			b->p[b->len++] = ',';
		b->p[b->len++] = '"';
		memcpy(b->p + b->len, items[i].id_out, len);
		b->len += len;
		b->p[b->len++] = '"';
	}
	buf_adds(b, "],\"count\":");
	buf_add_u64(b, n);
	buf_add(b, "}", 1);
}

/* Everything checked: publish all of it, or none. */
static void publish(struct request *r)
{
	struct ingest *in = r->in;
	const struct plant_host_api *api = in->api;
	size_t n = r->n, failed = 0;
	int rc = PLANT_OK;

	if (in->stamp) {
		json_int_t now = (json_int_t)api->now_ms(in->self);

		for (size_t i = 0; i < n; i++)
			json_object_set_new(r->s->items[i].body, "received_ms", json_integer(now));
	}
	if (n > 0)
		rc = api->publish_all(in->self, r->s->items, n, &failed);
	r->n = 0; /* the bodies are the host's now */
	if (rc != PLANT_OK) {
		const char *const retry[] = {"Retry-After", in->retry_after, NULL};

		if (r->key)
			claim_abandon(r);
		if (rc == PLANT_E_FULL)
			reply_error_headers(r, 429, retry,
					    "the bus is full (a queue of topic \"%s\" is at its "
					    "max_depth): nothing was published, retry later",
					    r->topic);
		else if (rc == PLANT_E_STATE)
			reply_error(r, 503, "plantd is not taking messages now (shutting down)");
		else if (rc == PLANT_E_INVALID && n == 1)
			reply_error(r, 400,
				    "the bus refused topic \"%s\" or its body: nothing was "
				    "published",
				    r->topic);
		else if (rc == PLANT_E_INVALID)
			reply_error_index(r, 400, failed,
					  "the bus refused topic \"%s\" or item %zu: nothing was "
					  "published",
					  r->topic, failed);
		else
			reply_error(r, 503, "cannot publish: %s; nothing was published",
				    plant_status_name(rc));
		return;
	}
	count(in, C_READINGS, n);
	answer_ids(&r->s->out, r->s->items, n);
	if (r->key && !r->s->out.failed)
		claim_finish(r);
	else if (r->key)
		claim_abandon(r);
	reply(r, 202, NULL);
}

static void handle(struct request *r)
{
	struct ingest *in = r->in;
	const struct plant_host_api *api = in->api;
	struct plant_http_info info = {.struct_size = sizeof(info)};
	const char *tail, *key;
	size_t tail_len;
	enum body_kind kind;
	bool ok;

	if (api->http_request(r->req, &info) != PLANT_OK) {
		reply_error(r, 500, "cannot read the request");
		return;
	}
	tail = info.tail ? info.tail : "";
	tail_len = strlen(tail);
	if (tail_len == 0) {
		reply_error(r, 400, "no topic: POST " ROUTE "TOPIC");
		return;
	}
	if (in->prefix_len + tail_len > TOPIC_MAX) {
		reply_error(r, 400, "topic \"%.*s%s\" is too long: at most %d characters",
			    (int)in->prefix_len, in->prefix, tail, TOPIC_MAX);
		return;
	}
	memcpy(r->topic, in->prefix, in->prefix_len);
	memcpy(r->topic + in->prefix_len, tail, tail_len + 1);
	if (!name_valid(r->topic, in->prefix_len + tail_len, false)) {
		reply_error(r, 400,
			    "\"%s\" is not a valid topic: [A-Za-z0-9_.-], dot-separated, no empty "
			    "segment",
			    r->topic);
		return;
	}
	if (in->n_topics > 0) {
		size_t i = 0;

		while (i < in->n_topics && fnmatch(in->topics[i], tail, 0) != 0)
			i++;
		if (i == in->n_topics) {
			reply_error(r, 403, "topic \"%s\" is not open for ingest here", tail);
			return;
		}
	}
	kind = body_kind_of(api->http_header(r->req, "Content-Type"));
	if (kind == BODY_UNSUPPORTED) {
		const char *ct = api->http_header(r->req, "Content-Type");
		/* what `curl -d` sends unless told otherwise */
		bool form = strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0;

		reply_error(r, 415,
			    "Content-Type \"%s\" is not taken: send application/json (an object "
			    "or an array of objects) or application/x-ndjson, in UTF-8%s",
			    ct, form ? " (with curl: -H 'Content-Type: application/json')" : "");
		return;
	}
	key = api->http_header(r->req, "Idempotency-Key");
	if (key && !idem_key_ok(key, &r->key_len)) {
		reply_error(r, 400, "Idempotency-Key must be 1 to %d visible ASCII characters",
			    KEY_MAX);
		return;
	}
	r->key = key;

	ok = kind == BODY_JSON ? parse_json(r, info.body, info.body_len)
			       : parse_ndjson(r, info.body, info.body_len);
	if (!ok)
		return;

	if (r->key) {
		static const char *const replayed[] = {"Idempotency-Replayed", "true", NULL};

		r->print = fingerprint(r->topic, info.body, info.body_len);
		switch (claim(r)) {
		case CLAIMED:
			break;
		case MISMATCH:
			drop_items(r);
			reply_error(r, 422,
				    "this Idempotency-Key was used for another request (another "
				    "topic or body): use a new key for a new request");
			return;
		case ANSWERED:
			drop_items(r);
			count(in, C_REPLAYED, 1);
			reply(r, 202, replayed);
			return;
		case IN_PROGRESS:
			drop_items(r);
			reply_error(r, 409, "a request with this Idempotency-Key is in progress");
			return;
		case CLAIM_ERROR:
			drop_items(r);
			if (in->use_store)
				reply_error(r, 503,
					    "the idempotency store \"%s\" failed: nothing was "
					    "published, retry later",
					    in->store_name);
			else
				reply_error(r, 503, "out of memory");
			return;
		}
	}
	publish(r);
}

/* [any-thread]: the route is PLANT_ROUTE_CONCURRENT. */
static int on_ingest(void *state, plant_http_req *req, void *user)
{
	static const char nomem[] = "{\"error\":\"out of memory\"}\n";
	struct ingest *in = state;
	struct request r;

	(void)user;
	count(in, C_REQUESTS, 1);
	r.in = in;
	r.req = req;
	r.s = scratch_get(in);
	if (!r.s) {
		count(in, C_FAILED, 1);
		return in->api->http_reply(req, 503, "application/json", nomem, sizeof(nomem) - 1,
					   NULL);
	}
	r.n = 0;
	r.status = 0;
	r.key = NULL;
	r.key_len = 0;
	r.claim = 0;
	r.skey_len = 0;
	handle(&r);
	drop_items(&r); /* none left but after a bug */
	if (r.status == 429)
		count(in, C_REFUSED, 1);
	else if (r.status >= 500)
		count(in, C_FAILED, 1);
	else if (r.status >= 400 && r.status != 409)
		count(in, C_REJECTED, 1);
	scratch_put(in, r.s);
	return PLANT_OK;
}

/* ---- configuration and lifecycle ----------------------------------------------- */

static int check_config(plant_instance *self, const struct plant_host_api *api,
			const json_t *config)
{
	const char *listener = json_string_value(json_object_get(config, "listener"));
	const json_t *topics = json_object_get(config, "topics");
	const char *prefix = json_string_value(json_object_get(config, "topic_prefix"));
	json_int_t max_items = json_integer_value(json_object_get(config, "max_items"));
	json_int_t retry = json_integer_value(json_object_get(config, "retry_after"));
	json_int_t ttl = json_integer_value(json_object_get(config, "idempotency_ttl"));
	json_int_t max_keys = json_integer_value(json_object_get(config, "idempotency_max"));
	size_t i, plen;
	const json_t *v;

	if (!listener || !*listener) {
		api->error(self, "listener", "must name a listener of the site");
		return PLANT_E_CONFIG;
	}
	json_array_foreach(topics, i, v)
	{
		const char *p = json_string_value(v);

		if (!p || !name_valid(p, strlen(p), true)) {
			api->error(self, "topics",
				   "entry %zu is not a topic pattern ([A-Za-z0-9_.-], '*' and '?', "
				   "dot-separated)",
				   i + 1);
			return PLANT_E_CONFIG;
		}
	}
	plen = prefix ? strlen(prefix) : 0;
	if (plen > 0 &&
	    (plen >= TOPIC_MAX || prefix[0] == '.' || !name_chars_ok(prefix, plen, false))) {
		api->error(self, "topic_prefix",
			   "\"%s\" cannot begin a topic: [A-Za-z0-9_.-], not starting with '.', "
			   "no empty segment",
			   prefix);
		return PLANT_E_CONFIG;
	}
	if (max_items < 1) {
		api->error(self, "max_items", "must be 1 or more, not %" JSON_INTEGER_FORMAT,
			   max_items);
		return PLANT_E_CONFIG;
	}
	if (retry < 0) {
		api->error(self, "retry_after", "must not be negative");
		return PLANT_E_CONFIG;
	}
	if (ttl < 1) {
		api->error(self, "idempotency_ttl", "must be more than 0");
		return PLANT_E_CONFIG;
	}
	if (max_keys < 1) {
		api->error(self, "idempotency_max", "must be 1 or more, not %" JSON_INTEGER_FORMAT,
			   max_keys);
		return PLANT_E_CONFIG;
	}
	return PLANT_OK;
}

static int ingest_validate(plant_instance *self, const struct plant_host_api *api,
			   const json_t *config)
{
	return check_config(self, api, config);
}

static void ingest_free(struct ingest *in)
{
	struct scratch *s = in->pool;

	while (s) {
		struct scratch *next = s->next;

		scratch_free(s);
		s = next;
	}
	idem_free(&in->table);
	pthread_mutex_destroy(&in->pool_lock);
	free(in->topics);
	free(in);
}

static int ingest_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		       void **state_out)
{
	const json_t *topics = json_object_get(config, "topics");
	const char *store = json_string_value(json_object_get(config, "idempotency_store"));
	json_int_t retry = json_integer_value(json_object_get(config, "retry_after"));
	struct ingest *in;
	size_t i;
	const json_t *v;
	int rc;

	if (!PLANT_API_HAS(api, http_route) || !PLANT_API_HAS(api, publish_all)) {
		api->error(self, NULL, "this host serves no HTTP routes (SDK 1.5 needed)");
		return PLANT_E_UNSUPPORTED;
	}
	rc = check_config(self, api, config);
	if (rc != PLANT_OK)
		return rc;
	in = calloc(1, sizeof(*in));
	if (!in) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	in->self = self;
	in->api = api;
	pthread_mutex_init(&in->pool_lock, NULL);
	in->listener = json_string_value(json_object_get(config, "listener"));
	in->prefix = json_string_value(json_object_get(config, "topic_prefix"));
	in->prefix_len = strlen(in->prefix);
	in->max_items = (size_t)json_integer_value(json_object_get(config, "max_items"));
	snprintf(in->retry_after, sizeof(in->retry_after), "%" JSON_INTEGER_FORMAT,
		 (retry + 999) / 1000);
	in->stamp = json_is_true(json_object_get(config, "stamp"));
	in->idem_ttl = (uint64_t)json_integer_value(json_object_get(config, "idempotency_ttl"));
	atomic_init(&in->store_failing, false);
	for (int c = 0; c < C_N; c++)
		atomic_init(&in->counts[c], 0);

	in->n_topics = json_array_size(topics);
	if (in->n_topics > 0) {
		in->topics = calloc(in->n_topics, sizeof(*in->topics));
		if (!in->topics) {
			api->error(self, NULL, "out of memory");
			ingest_free(in);
			return PLANT_E_NOMEM;
		}
		json_array_foreach(topics, i, v)
		{
			in->topics[i] = json_string_value(v);
		}
	}

	if (store && *store) {
		in->use_store = true;
		in->store_name = store;
		rc = api->store_open(self, store, &in->store);
		if (rc != PLANT_OK) {
			api->error(self, "idempotency_store", "no store \"%s\" in this site%s",
				   store, rc == PLANT_E_NOTFOUND ? "" : " that opens");
			ingest_free(in);
			return PLANT_E_CONFIG;
		}
	} else {
		json_int_t max = json_integer_value(json_object_get(config, "idempotency_max"));

		if (idem_init(&in->table, (size_t)max,
			      api->now_ms(self) ^ (uint64_t)(uintptr_t)in) != PLANT_OK) {
			api->error(self, NULL, "out of memory");
			ingest_free(in);
			return PLANT_E_NOMEM;
		}
	}

	rc = api->timer_add(self, FLUSH_EVERY_MS, 0, on_flush, NULL, NULL);
	if (rc != PLANT_OK) {
		api->error(self, NULL, "cannot add a timer: %s", plant_status_name(rc));
		ingest_free(in);
		return rc;
	}
	/* The route last: the host removes it (and the timer) if init() fails
	 * after all, and requests wait for start. */
	rc = api->http_route(self, in->listener, "POST", ROUTE,
			     PLANT_ROUTE_PREFIX | PLANT_ROUTE_CONCURRENT, on_ingest, NULL);
	if (rc != PLANT_OK) {
		if (rc == PLANT_E_NOTFOUND)
			api->error(self, "listener", "no listener \"%s\" in this site",
				   in->listener);
		else if (rc == PLANT_E_EXISTS)
			api->error(self, "listener",
				   "listener \"%s\" already has a route for POST " ROUTE
				   " (another ingest_http instance?)",
				   in->listener);
		else
			api->error(self, "listener", "cannot serve POST " ROUTE " on \"%s\": %s",
				   in->listener, plant_status_name(rc));
		ingest_free(in);
		return rc == PLANT_E_NOTFOUND || rc == PLANT_E_EXISTS ? PLANT_E_CONFIG : rc;
	}
	*state_out = in;
	return PLANT_OK;
}

static void ingest_stop(void *state)
{
	counters_flush(state);
}

static void ingest_destroy(void *state)
{
	ingest_free(state);
}

static int ingest_health(void *state, json_t **detail_out)
{
	struct ingest *in = state;
	json_t *d = json_object();

	for (int c = 0; c < C_N && d; c++)
		json_object_set_new(d, counter_names[c],
				    json_integer((json_int_t)atomic_load_explicit(
					    &in->counts[c], memory_order_relaxed)));
	*detail_out = d;
	return atomic_load(&in->store_failing) ? PLANT_E_IO : PLANT_OK;
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "ingest_http",
	.version = "1.0.0",
	.description = "POST /v1/ingest/{topic}: JSON, arrays and NDJSON onto the bus, all or "
		       "nothing",
	.config_keys = config_keys,
	.validate = ingest_validate,
	.init = ingest_init,
	.stop = ingest_stop,
	.destroy = ingest_destroy,
	.health = ingest_health,
};
