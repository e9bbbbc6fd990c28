/* store_dynamodb: the store kind "dynamodb", a store in a DynamoDB table.
 *
 * Every store call is one request or a few in DynamoDB's JSON protocol
 * (X-Amz-Target: DynamoDB_20120810.*), sent through the host's HTTP client
 * (api->http_call_wait, signed with SigV4) from whichever thread calls the
 * store; nothing is cached, so several plantd processes can share a store.
 *
 * Key design (README.md, "Keys and items"): a store is one partition of the
 * table, pk = the store's name (S); the item key is the sort key, sk (B), so
 * DynamoDB keeps a store's items in byte-wise key order and a prefix scan is
 * a Query. The value is its JSON text in `val` (S); one too large for an
 * item goes to "part" items in the partition "NAME#parts". `ver` (N) is the
 * version; `expires_ms` (N) the expiry in host milliseconds, checked by
 * every read and write condition, and `expires` (N, epoch seconds) the same
 * for DynamoDB's own TTL, which deletes whenever it likes.
 *
 * Versions and conditions are condition expressions, so concurrent writers
 * (threads or processes) never lose an update. A batch is checked against
 * the items read first, then written in one TransactWriteItems when the
 * server has it (atomic), else op by op.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <plantd/plantd.h>

#define KEY_MAX	      1024
/* DynamoDB items hold 400 KB. Value text up to INLINE_MAX bytes stays in
 * the item (with a 1 KB key and the other attributes, well below); longer
 * text is cut into parts of at most PART_MAX bytes. */
#define INLINE_MAX    350000
#define PART_MAX      350000
#define PID_LEN	      16 /* a part set's random id */
/* Request bodies stay below 1 MB: libcurl adds "Expect: 100-continue"
 * above that, which SigV4 signing does not expect. */
#define BODY_SOFT_MAX 900000
#define TX_ITEMS_MAX  100 /* TransactWriteItems: actions per call */
#define GET_KEYS_MAX  100 /* BatchGetItem: keys per call */
#define WRITE_REQ_MAX 25  /* BatchWriteItem: requests per call */
#define PAGE_MAX      1000
#define INDEX_NAME    "by_expiry"
#define ROUNDS_MAX    16	   /* conditional rounds lost to concurrent writers */
#define TABLE_WAIT_MS (120 * 1000) /* a new table becoming ACTIVE */
#define MSG_MAX	      512

/* Only the keys of the store kind's module instance: none (stores are set
 * up in the site's `stores` list). */
static const struct plant_config_key config_keys[] = {
	{.name = NULL, .type = PLANT_CFG_END},
};

struct plugin {
	plant_instance *self;
	const struct plant_host_api *api;
	atomic_size_t open_stores;
};

struct dstore {
	struct plugin *p;
	char *name;
	char *table;
	char *url;	/* the endpoint */
	char *region;	/* NULL: the site's */
	char *pk;	/* the items' partition: the store's name */
	char *parts_pk; /* the parts' partition: NAME#parts */
	uint64_t timeout_ms;
	int max_retries;
	bool create_table;
	bool use_tx;	   /* the `transactions` setting */
	atomic_int tx;	   /* 0: untried, 1: the server has them, -1: it has not */
	bool expiry_index; /* the table has INDEX_NAME */
	atomic_ullong requests, retries, failures, tx_batches, op_batches;
	pthread_mutex_t lock; /* error, and changes of failing */
	atomic_bool failing;
	char error[MSG_MAX];
};

/* What went wrong with a request. */
struct ddb_err {
	char code[96];	   /* the service's error code, e.g. "ThrottlingException" */
	char message[400]; /* the service's message */
	json_t *body;	   /* [new] the error answer when it was JSON, or NULL */
};

static void err_clear(struct ddb_err *e)
{
	json_decref(e->body);
	e->body = NULL;
	e->code[0] = '\0';
	e->message[0] = '\0';
}

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

/* ---- bytes, time, randomness --------------------------------------------- */

static bool key_ok(const char *key, size_t len)
{
	return key && len >= 1 && len <= KEY_MAX;
}

static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static bool starts_with(const void *s, size_t len, const void *prefix, size_t plen)
{
	return len >= plen && (plen == 0 || memcmp(s, prefix, plen) == 0);
}

/* Valid UTF-8 (NUL allowed), as DynamoDB wants for strings. */
static bool utf8_ok(const char *str, size_t len, bool nul_ok)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i];
		size_t n;
		uint32_t cp, min;

		if (c == 0 && !nul_ok)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 2;
			cp = c & 0x1f;
			min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 3;
			cp = c & 0x0f;
			min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 4;
			cp = c & 0x07;
			min = 0x10000;
		} else {
			return false;
		}
		if (len - i < n)
			return false;
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n;
	}
	return true;
}

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 of `len` bytes into `out` (room for 4 * ((len + 2) / 3) + 1). */
static size_t b64_encode(const unsigned char *in, size_t len, char *out)
{
	size_t o = 0, i = 0;

	for (; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[o++] = b64_chars[v >> 18];
		out[o++] = b64_chars[(v >> 12) & 63];
		out[o++] = b64_chars[(v >> 6) & 63];
		out[o++] = b64_chars[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);

		out[o++] = b64_chars[v >> 18];
		out[o++] = b64_chars[(v >> 12) & 63];
		out[o++] = i + 1 < len ? b64_chars[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Strict base64 (padded) into at most `cap` bytes. */
static bool b64_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *outlen)
{
	size_t o = 0;

	if (len % 4 != 0)
		return false;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		size_t pad = 0;

		for (int k = 0; k < 4; k++) {
			if (in[i + k] == '=' && i + 4 == len && k >= 2) {
				v[k] = 0;
				pad++;
			} else if (pad) {
				return false;
			} else if ((v[k] = b64_value(in[i + k])) < 0) {
				return false;
			}
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
			     (uint32_t)v[3];
		size_t n = 3 - pad;

		if (o + n > cap)
			return false;
		out[o++] = (unsigned char)(w >> 16);
		if (n > 1)
			out[o++] = (unsigned char)(w >> 8);
		if (n > 2)
			out[o++] = (unsigned char)w;
	}
	*outlen = o;
	return true;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
			      .tv_nsec = (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void random_bytes(void *buf, size_t n)
{
	unsigned char *p = buf;
	size_t got = 0;

	while (got < n) {
		ssize_t r = getrandom(p + got, n - got, 0);

		if (r > 0) {
			got += (size_t)r;
		} else if (r < 0 && errno != EINTR) {
			/* no getrandom(): ids need only be unique, not secret */
			static _Atomic uint64_t counter;
			struct timespec ts;
			uint64_t x;

			clock_gettime(CLOCK_REALTIME, &ts);
			x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
			    (atomic_fetch_add(&counter, 1) * 0x9e3779b97f4a7c15u);
			for (; got < n; got++) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				p[got] = (unsigned char)x;
			}
		}
	}
}

/* Exponential backoff with jitter: 25 ms, 50 ms, ... up to 2 s, each
 * between half and all of it. */
static void backoff(int attempt)
{
	uint64_t d = 25u << (attempt < 7 ? attempt : 7);
	uint32_t r;

	if (d > 2000)
		d = 2000;
	random_bytes(&r, sizeof r);
	sleep_ms(d / 2 + r % (d / 2 + 1));
}

static uint64_t expiry(uint64_t now, uint64_t ttl_ms)
{
	if (ttl_ms == 0)
		return 0;
	return ttl_ms > UINT64_MAX - now ? UINT64_MAX : now + ttl_ms;
}

/* ---- attribute values ---------------------------------------------------- */

static json_t *av_s(const char *s, size_t len)
{
	json_t *v = json_stringn(s, len);

	return v ? json_pack("{s:o}", "S", v) : NULL;
}

static json_t *av_b(const void *bytes, size_t len)
{
	char *buf = malloc(4 * ((len + 2) / 3) + 1);
	json_t *v;

	if (!buf)
		return NULL;
	size_t n = b64_encode(bytes, len, buf);
	v = json_pack("{s:s%}", "B", buf, n);
	free(buf);
	return v;
}

static json_t *av_n(uint64_t n)
{
	char buf[32];

	snprintf(buf, sizeof buf, "%" PRIu64, n);
	return json_pack("{s:s}", "N", buf);
}

/* Attribute readers: 1 found, 0 absent, -1 of the wrong shape. */
static int attr_u64(const json_t *item, const char *name, uint64_t *out)
{
	const json_t *a = json_object_get(item, name);
	const char *s;
	char *end;

	if (!a)
		return 0;
	s = json_string_value(json_object_get(a, "N"));
	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 1;
}

static int attr_str(const json_t *item, const char *name, const char **out, size_t *len)
{
	const json_t *a = json_object_get(item, name);
	const json_t *s;

	if (!a)
		return 0;
	s = json_object_get(a, "S");
	if (!json_is_string(s))
		return -1;
	*out = json_string_value(s);
	*len = json_string_length(s);
	return 1;
}

static int attr_bytes(const json_t *item, const char *name, void *buf, size_t cap, size_t *len)
{
	const json_t *a = json_object_get(item, name);
	const json_t *b;

	if (!a)
		return 0;
	b = json_object_get(a, "B");
	if (!json_is_string(b) ||
	    !b64_decode(json_string_value(b), json_string_length(b), buf, cap, len))
		return -1;
	return 1;
}

/* ---- requests ------------------------------------------------------------------ */

/* Expression attribute names: every "#x" in an expression is one of these
 * (DynamoDB refuses names an expression does not use, and reserves words
 * such as "data"). */
static const char *const attr_names[][2] = {
	{"#pk", "pk"},	     {"#sk", "sk"},	   {"#val", "val"},
	{"#ver", "ver"},     {"#exp", "expires"},  {"#xms", "expires_ms"},
	{"#parts", "parts"}, {"#pid", "parts_id"}, {"#data", "data"},
};

static const char *const expr_fields[] = {
	"KeyConditionExpression", "ConditionExpression",  "UpdateExpression",
	"FilterExpression",	  "ProjectionExpression",
};

/* Add ExpressionAttributeNames for the "#x" the expressions of `req` use. */
static int add_names(json_t *req)
{
	json_t *names = json_object();

	if (!names)
		return PLANT_E_NOMEM;
	for (size_t f = 0; f < sizeof expr_fields / sizeof expr_fields[0]; f++) {
		const char *e = json_string_value(json_object_get(req, expr_fields[f]));

		for (const char *h = e ? strchr(e, '#') : NULL; h; h = strchr(h + 1, '#')) {
			size_t n = 1;

			while ((h[n] >= 'a' && h[n] <= 'z') || h[n] == '_')
				n++;
			for (size_t i = 0; i < sizeof attr_names / sizeof attr_names[0]; i++) {
				if (strlen(attr_names[i][0]) == n &&
				    memcmp(attr_names[i][0], h, n) == 0)
					json_object_set_new(names, attr_names[i][0],
							    json_string(attr_names[i][1]));
			}
		}
	}
	if (json_object_size(names) == 0) {
		json_decref(names);
		return PLANT_OK;
	}
	return json_object_set_new(req, "ExpressionAttributeNames", names) ? PLANT_E_NOMEM
									   : PLANT_OK;
}

static bool code_in(const char *code, const char *const *list)
{
	for (; list && *list; list++)
		if (strcmp(code, *list) == 0)
			return true;
	return false;
}

/* Always retried: the request was not carried out. */
static const char *const retry_codes[] = {
	"ProvisionedThroughputExceededException",
	"ThrottlingException",
	"RequestLimitExceeded",
	"LimitExceededException",
	"TransactionInProgressException",
	NULL,
};

static void health_ok(struct dstore *s)
{
	if (!atomic_load(&s->failing))
		return;
	pthread_mutex_lock(&s->lock);
	if (atomic_exchange(&s->failing, false))
		s->p->api->log(s->p->self, PLANT_LOG_INFO, "store %s: table %s answers again",
			       s->name, s->table);
	pthread_mutex_unlock(&s->lock);
}

/* A failure for the user: logged, and the store is unhealthy until a
 * request succeeds again. */
PLANT_PRINTF(2, 3)
static void fault(struct dstore *s, const char *fmt, ...)
{
	char msg[MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	atomic_fetch_add(&s->failures, 1);
	pthread_mutex_lock(&s->lock);
	snprintf(s->error, sizeof s->error, "%s", msg);
	atomic_store(&s->failing, true);
	pthread_mutex_unlock(&s->lock);
	s->p->api->log(s->p->self, PLANT_LOG_WARN, "%s", msg);
}

/* Printable, one line, at most 200 bytes of an answer. */
static void excerpt(const char *body, size_t len, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < len && o + 4 < cap && i < 200; i++) {
		unsigned char c = (unsigned char)body[i];

		out[o++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	if (len > 200 && o + 4 < cap) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

/* An error answer's code and message: {"__type": "ns#Code", "message": M}. */
static void parse_error(const struct plant_http_result *res, struct ddb_err *e)
{
	json_t *b = json_loadb(res->body ? res->body : "", res->body_len, 0, NULL);
	const char *type = json_string_value(json_object_get(b, "__type"));
	const char *msg = json_string_value(json_object_get(b, "message"));

	if (!msg)
		msg = json_string_value(json_object_get(b, "Message"));
	if (type && *type) {
		const char *hash = strrchr(type, '#');

		snprintf(e->code, sizeof e->code, "%s", hash ? hash + 1 : type);
		snprintf(e->message, sizeof e->message, "%s", msg ? msg : "");
		e->body = b;
		return;
	}
	json_decref(b);
	snprintf(e->code, sizeof e->code, "HTTP %ld", res->http_status);
	excerpt(res->body ? res->body : "", res->body_len, e->message, sizeof e->message);
}

/* What a 200 answer to each operation looks like: a member it always has
 * (or NULL), and the members it may have. An answer with members, none of
 * them known, is someone else's (a proxy, a server that answers a request
 * it does not understand with 200): not an empty GetItem. */
struct shape {
	const char *op;
	const char *required;
	const char *known[5];
};

static const struct shape shapes[] = {
	{"GetItem", NULL, {"Item", "ConsumedCapacity"}},
	{"PutItem", NULL, {"Attributes", "ConsumedCapacity", "ItemCollectionMetrics"}},
	{"UpdateItem", NULL, {"Attributes", "ConsumedCapacity", "ItemCollectionMetrics"}},
	{"DeleteItem", NULL, {"Attributes", "ConsumedCapacity", "ItemCollectionMetrics"}},
	{"Query", "Items", {"Items", "Count", "ScannedCount", "LastEvaluatedKey"}},
	{"BatchGetItem", "Responses", {"Responses", "UnprocessedKeys", "ConsumedCapacity"}},
	{"BatchWriteItem", NULL, {"UnprocessedItems", "ItemCollectionMetrics", "ConsumedCapacity"}},
	{"TransactWriteItems", NULL, {"ConsumedCapacity", "ItemCollectionMetrics"}},
	{"DescribeTable", "Table", {"Table"}},
	{"CreateTable", "TableDescription", {"TableDescription"}},
	{"UpdateTimeToLive", NULL, {"TimeToLiveSpecification"}},
};

/* Members that must be objects (or, for Items, an array) when present. */
static bool shape_ok(const char *op, const json_t *ans)
{
	static const char *const objects[] = {"Item",	   "Attributes",      "LastEvaluatedKey",
					      "Responses", "UnprocessedKeys", "UnprocessedItems",
					      "Table",	   "TableDescription"};
	const struct shape *sh = NULL;
	const char *key;
	const json_t *v;
	bool known = false;

	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
		if (strcmp(shapes[i].op, op) == 0)
			sh = &shapes[i];
	if (!sh)
		return true;
	if (sh->required && !json_object_get(ans, sh->required))
		return false;
	json_object_foreach((json_t *)ans, key, v)
	{
		for (size_t i = 0; i < sizeof sh->known / sizeof sh->known[0] && sh->known[i]; i++)
			known |= strcmp(key, sh->known[i]) == 0;
		for (size_t i = 0; i < sizeof objects / sizeof objects[0]; i++)
			if (strcmp(key, objects[i]) == 0 && !json_is_object(v))
				return false;
		if (strcmp(key, "Items") == 0 && !json_is_array(v))
			return false;
	}
	return known || json_object_size(ans) == 0;
}

#define CALL_IDEMPOTENT 0x1u /* retrying after a 5xx or a lost answer is safe */

/* Send `op` with the JSON request `req` ([stolen]) and wait for the answer.
 * PLANT_OK with *out ([new]) the answer, a JSON object; PLANT_E_CONDITION
 * for ConditionalCheckFailedException; otherwise PLANT_E_IO (an error
 * answer, a malformed one), PLANT_E_TIMEOUT, PLANT_E_CONFIG (no
 * credentials), PLANT_E_STATE (the host is stopping) or PLANT_E_NOMEM, with
 * *e telling why. Throttling is retried with backoff; 5xx answers and lost
 * connections too, when CALL_IDEMPOTENT. A failure is logged unless its
 * code is in `expected`. */
static int ddb_call(struct dstore *s, const char *op, json_t *req, unsigned flags,
		    const char *const *expected, json_t **out, struct ddb_err *e)
{
	const struct plant_host_api *api = s->p->api;
	char target[64];
	const char *headers[] = {"Content-Type", "application/x-amz-json-1.0", "X-Amz-Target",
				 target, NULL};
	char *body;
	int rc = PLANT_E_IO, attempt;

	err_clear(e);
	*out = NULL;
	if (!req || add_names(req) != PLANT_OK) {
		json_decref(req);
		snprintf(e->code, sizeof e->code, "NoMemory");
		return PLANT_E_NOMEM;
	}
	body = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!body) {
		snprintf(e->code, sizeof e->code, "NoMemory");
		return PLANT_E_NOMEM;
	}
	snprintf(target, sizeof target, "DynamoDB_20120810.%s", op);
	struct plant_http_call call = {
		.struct_size = sizeof call,
		.method = "POST",
		.url = s->url,
		.headers = headers,
		.body = body,
		.body_len = strlen(body),
		.timeout_ms = s->timeout_ms,
		.aws_service = "dynamodb",
		.aws_region = s->region,
	};
	for (attempt = 0;; attempt++) {
		struct plant_http_result *res = NULL;
		int hrc = api->http_call_wait(s->p->self, &call, &res);
		bool retry = false;

		err_clear(e);
		atomic_fetch_add(&s->requests, 1);
		if (!res) {
			snprintf(e->code, sizeof e->code, "HttpClient");
			snprintf(e->message, sizeof e->message, "the host's HTTP client: %s%s",
				 plant_status_name(hrc),
				 hrc == PLANT_E_CONFIG ? " (no AWS credentials: the site's `aws` "
							 "settings or AWS_ACCESS_KEY_ID and "
							 "AWS_SECRET_ACCESS_KEY)"
						       : "");
			rc = hrc == PLANT_OK ? PLANT_E_IO : hrc;
		} else if (res->status != PLANT_OK) {
			snprintf(e->code, sizeof e->code, "%s",
				 res->status == PLANT_E_TIMEOUT ? "Timeout" : "Connection");
			snprintf(e->message, sizeof e->message, "%s",
				 res->error && *res->error ? res->error
							   : plant_status_name(res->status));
			rc = res->status;
			retry = (flags & CALL_IDEMPOTENT) && rc != PLANT_E_STATE;
		} else if (res->http_status == 200) {
			json_t *ans =
				json_loadb(res->body ? res->body : "", res->body_len, 0, NULL);

			if (json_is_object(ans) && shape_ok(op, ans)) {
				*out = ans;
				rc = PLANT_OK;
			} else {
				bool json = ans != NULL;
				char ex[256];

				json_decref(ans);
				excerpt(res->body ? res->body : "", res->body_len, ex, sizeof ex);
				snprintf(e->code, sizeof e->code, "MalformedAnswer");
				snprintf(e->message, sizeof e->message, "HTTP 200 with %s: %s",
					 json ? "an answer not shaped as DynamoDB's"
					      : "a body that is not JSON",
					 ex);
				rc = PLANT_E_IO;
			}
		} else {
			parse_error(res, e);
			if (strcmp(e->code, "ConditionalCheckFailedException") == 0) {
				rc = PLANT_E_CONDITION;
			} else {
				rc = PLANT_E_IO;
				retry = code_in(e->code, retry_codes) ||
					(res->http_status >= 500 && (flags & CALL_IDEMPOTENT));
			}
		}
		if (res)
			api->http_result_free(res);
		if (!retry || attempt >= s->max_retries)
			break;
		atomic_fetch_add(&s->retries, 1);
		api->log(s->p->self, PLANT_LOG_DEBUG, "store %s: %s: %s: %s (retrying)", s->name,
			 op, e->code, e->message);
		backoff(attempt);
	}
	free(body);
	if (rc == PLANT_OK || rc == PLANT_E_CONDITION)
		health_ok(s);
	else if (!code_in(e->code, expected) && attempt > 0)
		fault(s, "store %s: %s on table %s: %s: %s (after %d attempts)", s->name, op,
		      s->table, e->code, e->message, attempt + 1);
	else if (!code_in(e->code, expected))
		fault(s, "store %s: %s on table %s: %s: %s", s->name, op, s->table, e->code,
		      e->message);
	return rc;
}

/* A 200 answer without the shape it should have: an I/O error. */
static int bad_answer(struct dstore *s, const char *op, const char *what, const json_t *ans)
{
	char *text = json_dumps(ans, JSON_COMPACT);
	char ex[256];

	excerpt(text ? text : "", text ? strlen(text) : 0, ex, sizeof ex);
	fault(s, "store %s: %s on table %s: malformed answer (%s): %s", s->name, op, s->table, what,
	      ex);
	free(text);
	return PLANT_E_IO;
}

static json_t *item_key(const char *pk, const void *sk, size_t sk_len)
{
	return json_pack("{s:o, s:o}", "pk", av_s(pk, strlen(pk)), "sk", av_b(sk, sk_len));
}

static json_t *request(struct dstore *s)
{
	return json_pack("{s:s}", "TableName", s->table);
}

/* ---- stored items ------------------------------------------------------------- */

/* An item as read: strings are borrowed from the answer. */
struct stored {
	uint64_t version;
	uint64_t xms;	 /* expiry in host ms; 0: none */
	const char *val; /* the value's text, or NULL when in parts */
	size_t val_len;
	unsigned char pid[PID_LEN];
	uint64_t nparts; /* 0: no parts */
};

static bool stored_live(const struct stored *st, uint64_t now)
{
	return st->xms == 0 || st->xms > now;
}

/* Read an item's attributes. PLANT_E_NOTFOUND for an item without a
 * version, which every condition here takes for absent (a write another
 * node has not finished, on servers that show one); PLANT_E_IO when they
 * are not what this module writes. */
static int stored_read(const json_t *item, struct stored *st)
{
	size_t len = 0;
	int a, b;

	memset(st, 0, sizeof *st);
	if (!json_is_object(item))
		return PLANT_E_IO;
	a = attr_u64(item, "ver", &st->version);
	if (a == 0)
		return PLANT_E_NOTFOUND;
	if (a < 0 || st->version == 0)
		return PLANT_E_IO;
	if (attr_u64(item, "expires_ms", &st->xms) < 0)
		return PLANT_E_IO;
	a = attr_str(item, "val", &st->val, &st->val_len);
	b = attr_u64(item, "parts", &st->nparts);
	if (a < 0 || b < 0 || (a == 1) == (b == 1) || (b == 1 && st->nparts == 0))
		return PLANT_E_IO;
	if (b == 1 &&
	    (attr_bytes(item, "parts_id", st->pid, sizeof st->pid, &len) != 1 || len != PID_LEN))
		return PLANT_E_IO;
	return PLANT_OK;
}

/* The old item an answer returned (ReturnValues ALL_OLD or UPDATED_OLD):
 * the id and count of its parts, to delete them. */
static bool old_parts(const json_t *ans, unsigned char pid[PID_LEN], uint64_t *nparts)
{
	const json_t *old = json_object_get(ans, "Attributes");
	size_t len = 0;

	*nparts = 0;
	if (!json_is_object(old) || attr_u64(old, "parts", nparts) != 1 || *nparts == 0 ||
	    attr_bytes(old, "parts_id", pid, PID_LEN, &len) != 1 || len != PID_LEN) {
		*nparts = 0;
		return false;
	}
	return true;
}

/* The sort key of part `i` of set `pid`. */
static void part_key(const unsigned char pid[PID_LEN], uint32_t i, unsigned char out[PID_LEN + 4])
{
	memcpy(out, pid, PID_LEN);
	out[PID_LEN] = (unsigned char)(i >> 24);
	out[PID_LEN + 1] = (unsigned char)(i >> 16);
	out[PID_LEN + 2] = (unsigned char)(i >> 8);
	out[PID_LEN + 3] = (unsigned char)i;
}

/* Send BatchWriteItem requests (`reqs`, [stolen], an array), again and
 * again for what comes back unprocessed. */
static int batch_write(struct dstore *s, json_t *reqs)
{
	struct ddb_err e = {0};
	int rc = PLANT_OK;

	for (int round = 0; json_array_size(reqs) > 0; round++) {
		json_t *ans = NULL, *req, *un;

		if (round > s->max_retries + 2) {
			fault(s,
			      "store %s: BatchWriteItem on table %s: %zu writes still unprocessed",
			      s->name, s->table, json_array_size(reqs));
			rc = PLANT_E_IO;
			break;
		}
		if (round > 0)
			backoff(round - 1);
		req = json_pack("{s:{s:O}}", "RequestItems", s->table, reqs);
		rc = ddb_call(s, "BatchWriteItem", req, CALL_IDEMPOTENT, NULL, &ans, &e);
		if (rc != PLANT_OK)
			break;
		un = json_object_get(json_object_get(ans, "UnprocessedItems"), s->table);
		json_decref(reqs);
		reqs = json_is_array(un) ? json_incref(un) : json_array();
		json_decref(ans);
	}
	json_decref(reqs);
	err_clear(&e);
	return rc;
}

/* Delete part set `pid` (best effort: a failure leaves unused items). */
static void parts_delete(struct dstore *s, const unsigned char pid[PID_LEN], uint64_t nparts)
{
	for (uint64_t first = 0; first < nparts; first += WRITE_REQ_MAX) {
		json_t *reqs = json_array();

		for (uint64_t i = first; reqs && i < nparts && i < first + WRITE_REQ_MAX; i++) {
			unsigned char k[PID_LEN + 4];

			part_key(pid, (uint32_t)i, k);
			json_array_append_new(reqs, json_pack("{s:{s:o}}", "DeleteRequest", "Key",
							      item_key(s->parts_pk, k, sizeof k)));
		}
		if (!reqs || batch_write(s, reqs) != PLANT_OK) {
			s->p->api->log(s->p->self, PLANT_LOG_WARN,
				       "store %s: parts of an old value left in table %s", s->name,
				       s->table);
			return;
		}
	}
}

/* Write `text` as a new part set: its id into `pid`, its count into
 * *nparts. Parts carry the value's expiry, so that DynamoDB's TTL and
 * expire() remove them with it. Cuts fall on UTF-8 character boundaries. */
static int parts_write(struct dstore *s, const char *text, size_t len, uint64_t xms,
		       unsigned char pid[PID_LEN], uint64_t *nparts)
{
	json_t *reqs = NULL;
	size_t off = 0, batch_bytes = 0;
	uint32_t i = 0;
	int rc = PLANT_OK;

	random_bytes(pid, PID_LEN);
	while (off < len && rc == PLANT_OK) {
		size_t n = len - off;
		unsigned char k[PID_LEN + 4];
		json_t *item;

		if (n > PART_MAX) {
			n = PART_MAX;
			while (n > 0 && ((unsigned char)text[off + n] & 0xc0) == 0x80)
				n--;
		}
		part_key(pid, i, k);
		item = json_pack("{s:o, s:o, s:o}", "pk", av_s(s->parts_pk, strlen(s->parts_pk)),
				 "sk", av_b(k, sizeof k), "data", av_s(text + off, n));
		if (item && xms) {
			json_object_set_new(item, "expires", av_n(xms / 1000 + (xms % 1000 != 0)));
			json_object_set_new(item, "expires_ms", av_n(xms));
		}
		if (!reqs)
			reqs = json_array();
		if (!item || !reqs ||
		    json_array_append_new(
			    reqs, json_pack("{s:{s:o}}", "PutRequest", "Item", item)) != 0) {
			rc = PLANT_E_NOMEM;
			break;
		}
		off += n;
		i++;
		batch_bytes += n;
		if (batch_bytes + PART_MAX > BODY_SOFT_MAX ||
		    json_array_size(reqs) == WRITE_REQ_MAX || off == len) {
			rc = batch_write(s, reqs);
			reqs = NULL;
			batch_bytes = 0;
		}
	}
	json_decref(reqs);
	*nparts = i;
	if (rc != PLANT_OK && i > 0)
		parts_delete(s, pid, i);
	return rc;
}

/* Read part set `pid` back into *text_out ([new], malloc). PLANT_E_NOTFOUND
 * when it is not all there (replaced after its item was read). */
static int parts_read(struct dstore *s, const unsigned char pid[PID_LEN], uint64_t nparts,
		      char **text_out, size_t *len_out)
{
	json_t *start = NULL;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	uint64_t next = 0;
	struct ddb_err e = {0};
	int rc = PLANT_OK;

	do {
		json_t *req = request(s), *ans = NULL, *items, *it;
		size_t i;

		json_object_set_new(req, "KeyConditionExpression",
				    json_string("#pk = :pk AND begins_with(#sk, :pid)"));
		json_object_set_new(req, "ExpressionAttributeValues",
				    json_pack("{s:o, s:o}", ":pk",
					      av_s(s->parts_pk, strlen(s->parts_pk)), ":pid",
					      av_b(pid, PID_LEN)));
		json_object_set_new(req, "ConsistentRead", json_true());
		if (start)
			json_object_set_new(req, "ExclusiveStartKey", start);
		start = NULL;
		rc = ddb_call(s, "Query", req, CALL_IDEMPOTENT, NULL, &ans, &e);
		if (rc != PLANT_OK)
			break;
		items = json_object_get(ans, "Items");
		if (!json_is_array(items)) {
			rc = bad_answer(s, "Query", "no Items", ans);
			json_decref(ans);
			break;
		}
		json_array_foreach(items, i, it)
		{
			unsigned char k[PID_LEN + 4], want[PID_LEN + 4];
			size_t klen = 0, dlen = 0;
			const char *data = NULL;

			part_key(pid, (uint32_t)next, want);
			if (attr_bytes(it, "sk", k, sizeof k, &klen) != 1 || klen != sizeof k ||
			    attr_str(it, "data", &data, &dlen) != 1) {
				rc = bad_answer(s, "Query", "a part", it);
				break;
			}
			if (memcmp(k, want, sizeof k) != 0 || next >= nparts) {
				rc = PLANT_E_NOTFOUND;
				break;
			}
			if (len + dlen + 1 > cap) {
				size_t ncap = (len + dlen + 1) * 2;
				char *nb = realloc(buf, ncap);

				if (!nb) {
					rc = PLANT_E_NOMEM;
					break;
				}
				buf = nb;
				cap = ncap;
			}
			memcpy(buf + len, data, dlen);
			len += dlen;
			next++;
		}
		if (rc == PLANT_OK) {
			json_t *lek = json_object_get(ans, "LastEvaluatedKey");

			if (json_is_object(lek))
				start = json_incref(lek);
		}
		json_decref(ans);
	} while (rc == PLANT_OK && start);
	json_decref(start);
	err_clear(&e);
	if (rc == PLANT_OK && next != nparts)
		rc = PLANT_E_NOTFOUND;
	if (rc != PLANT_OK) {
		free(buf);
		return rc;
	}
	if (!buf && !(buf = malloc(1)))
		return PLANT_E_NOMEM;
	buf[len] = '\0';
	*text_out = buf;
	*len_out = len;
	return PLANT_OK;
}

/* The value of a stored item, [new]. PLANT_E_NOTFOUND when its parts were
 * replaced meanwhile (read the item again). */
static int stored_value(struct dstore *s, const struct stored *st, json_t **out)
{
	char *text = NULL;
	size_t len;
	json_error_t jerr;
	int rc;

	if (st->val) {
		*out = json_loadb(st->val, st->val_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	} else {
		rc = parts_read(s, st->pid, st->nparts, &text, &len);
		if (rc != PLANT_OK)
			return rc;
		*out = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
		free(text);
	}
	if (!*out) {
		fault(s, "store %s: table %s holds a value that is not JSON: %s", s->name, s->table,
		      jerr.text);
		return PLANT_E_IO;
	}
	return PLANT_OK;
}

/* ---- get ------------------------------------------------------------------------ */

/* GetItem, strongly consistent: *ans_out [new] and *st borrowing from it,
 * or PLANT_E_NOTFOUND when there is no item (live or not). */
static int get_item(struct dstore *s, const char *key, size_t key_len, json_t **ans_out,
		    struct stored *st)
{
	json_t *req = request(s), *ans = NULL, *item;
	struct ddb_err e = {0};
	int rc;

	json_object_set_new(req, "Key", item_key(s->pk, key, key_len));
	json_object_set_new(req, "ConsistentRead", json_true());
	rc = ddb_call(s, "GetItem", req, CALL_IDEMPOTENT, NULL, &ans, &e);
	err_clear(&e);
	if (rc != PLANT_OK)
		return rc == PLANT_E_CONDITION ? PLANT_E_IO : rc;
	item = json_object_get(ans, "Item");
	if (!item) {
		json_decref(ans);
		return PLANT_E_NOTFOUND;
	}
	rc = stored_read(item, st);
	if (rc == PLANT_E_IO)
		rc = bad_answer(s, "GetItem", "an item this store did not write", ans);
	if (rc != PLANT_OK) {
		json_decref(ans);
		return rc;
	}
	*ans_out = ans;
	return PLANT_OK;
}

static int ds_get(void *store, const char *key, size_t key_len, uint64_t now, json_t **value_out,
		  uint64_t *version_out)
{
	struct dstore *s = store;

	if (!key_ok(key, key_len))
		return PLANT_E_INVALID;
	for (int round = 0; round < ROUNDS_MAX; round++) {
		json_t *ans = NULL, *v = NULL;
		struct stored st;
		int rc = get_item(s, key, key_len, &ans, &st);

		if (rc != PLANT_OK)
			return rc;
		if (!stored_live(&st, now)) {
			json_decref(ans);
			return PLANT_E_NOTFOUND;
		}
		rc = value_out ? stored_value(s, &st, &v) : PLANT_OK;
		json_decref(ans);
		if (rc == PLANT_E_NOTFOUND)
			continue; /* its parts went: the item was rewritten */
		if (rc != PLANT_OK)
			return rc;
		if (value_out)
			*value_out = v;
		if (version_out)
			*version_out = st.version;
		return PLANT_OK;
	}
	fault(s, "store %s: a value in table %s kept changing while it was read", s->name,
	      s->table);
	return PLANT_E_IO;
}

/* ---- single writes ------------------------------------------------------------------ */

/* Conditions, with :now. */
#define LIVE	"(attribute_not_exists(#xms) OR #xms > :now)"
#define EXISTS	"attribute_exists(#ver) AND " LIVE
#define ABSENT	"(attribute_not_exists(#ver) OR #xms <= :now)"
#define EXPIRED "#xms <= :now"

/* A value to write: its JSON text, and where it goes. */
struct wval {
	const char *text;
	size_t len;
	char *owned; /* what `text` points into when dumped here */
	uint64_t xms;
	unsigned char pid[PID_LEN];
	uint64_t nparts; /* 0: inline */
};

static void wval_free(struct wval *w)
{
	free(w->owned);
	w->owned = NULL;
}

/* The op's value as text: `value_text` as given, or `value` dumped. */
static int wval_text(const struct plant_store_op *op, struct wval *w)
{
	memset(w, 0, sizeof *w);
	if (op->value) {
		w->owned = json_dumps(op->value, JSON_COMPACT | JSON_ENCODE_ANY);
		if (!w->owned)
			return PLANT_E_NOMEM;
		w->text = w->owned;
		w->len = strlen(w->owned);
		return PLANT_OK;
	}
	w->text = op->value_text;
	w->len = op->value_text_len;
	return PLANT_OK;
}

/* Parts for a long value, before its item is written. */
static int wval_place(struct dstore *s, struct wval *w)
{
	if (w->len <= INLINE_MAX)
		return PLANT_OK;
	return parts_write(s, w->text, w->len, w->xms, w->pid, &w->nparts);
}

/* After the item's write failed: its parts go. */
static void wval_unplace(struct dstore *s, struct wval *w)
{
	if (w->nparts)
		parts_delete(s, w->pid, w->nparts);
	w->nparts = 0;
}

/* The whole item, for PutItem and a transaction's Put. */
static json_t *full_item(struct dstore *s, const char *key, size_t key_len, uint64_t version,
			 const struct wval *w)
{
	json_t *item = json_pack("{s:o, s:o, s:o}", "pk", av_s(s->pk, strlen(s->pk)), "sk",
				 av_b(key, key_len), "ver", av_n(version));

	if (!item)
		return NULL;
	if (w->nparts) {
		json_object_set_new(item, "parts", av_n(w->nparts));
		json_object_set_new(item, "parts_id", av_b(w->pid, PID_LEN));
	} else {
		json_t *v = av_s(w->text, w->len);

		if (!v) {
			json_decref(item);
			return NULL;
		}
		json_object_set_new(item, "val", v);
	}
	if (w->xms) {
		json_object_set_new(item, "expires", av_n(w->xms / 1000 + (w->xms % 1000 != 0)));
		json_object_set_new(item, "expires_ms", av_n(w->xms));
	}
	return item;
}

/* PutItem of the whole item at `version` if `cond` holds; the replaced
 * item's parts go. */
static int put_item(struct dstore *s, const char *key, size_t key_len, uint64_t version,
		    const struct wval *w, const char *cond, json_t *values /* stolen */)
{
	json_t *req = request(s), *ans = NULL, *item = full_item(s, key, key_len, version, w);
	struct ddb_err e = {0};
	unsigned char pid[PID_LEN];
	uint64_t n;
	int rc;

	if (!item) {
		json_decref(req);
		json_decref(values);
		return PLANT_E_INVALID; /* text that is not UTF-8 */
	}
	json_object_set_new(req, "Item", item);
	json_object_set_new(req, "ConditionExpression", json_string(cond));
	json_object_set_new(req, "ExpressionAttributeValues", values);
	json_object_set_new(req, "ReturnValues", json_string("ALL_OLD"));
	rc = ddb_call(s, "PutItem", req, 0, NULL, &ans, &e);
	err_clear(&e);
	if (rc == PLANT_OK && old_parts(ans, pid, &n) && memcmp(pid, w->pid, PID_LEN) != 0)
		parts_delete(s, pid, n);
	json_decref(ans);
	return rc;
}

/* UpdateItem for a put without condition on a key that is absent or live:
 * the version goes up by one on the server. PLANT_E_CONDITION when the
 * key holds an expired item. */
static int update_any(struct dstore *s, const char *key, size_t key_len, const struct wval *w,
		      uint64_t now, uint64_t *version_out)
{
	json_t *req = request(s), *ans = NULL, *values;
	struct ddb_err e = {0};
	char expr[256];
	unsigned char pid[PID_LEN];
	uint64_t n, old = 0;
	int rc;

	values = json_pack("{s:o, s:o, s:o}", ":now", av_n(now), ":zero", av_n(0), ":one", av_n(1));
	if (w->nparts) {
		json_object_set_new(values, ":parts", av_n(w->nparts));
		json_object_set_new(values, ":pid", av_b(w->pid, PID_LEN));
	} else {
		json_t *v = av_s(w->text, w->len);

		if (!v) {
			json_decref(req);
			json_decref(values);
			return PLANT_E_INVALID;
		}
		json_object_set_new(values, ":val", v);
	}
	if (w->xms) {
		json_object_set_new(values, ":exp", av_n(w->xms / 1000 + (w->xms % 1000 != 0)));
		json_object_set_new(values, ":xms", av_n(w->xms));
	}
	snprintf(expr, sizeof expr,
		 "SET #ver = if_not_exists(#ver, :zero) + :one, %s%s REMOVE %s%s",
		 w->nparts ? "#parts = :parts, #pid = :pid" : "#val = :val",
		 w->xms ? ", #exp = :exp, #xms = :xms" : "", w->nparts ? "#val" : "#parts, #pid",
		 w->xms ? "" : ", #exp, #xms");
	json_object_set_new(req, "Key", item_key(s->pk, key, key_len));
	json_object_set_new(req, "UpdateExpression", json_string(expr));
	json_object_set_new(req, "ConditionExpression",
			    json_string("attribute_not_exists(#ver) OR " LIVE));
	json_object_set_new(req, "ExpressionAttributeValues", values);
	json_object_set_new(req, "ReturnValues", json_string("UPDATED_OLD"));
	rc = ddb_call(s, "UpdateItem", req, 0, NULL, &ans, &e);
	err_clear(&e);
	if (rc != PLANT_OK)
		return rc;
	if (json_object_get(ans, "Attributes") &&
	    attr_u64(json_object_get(ans, "Attributes"), "ver", &old) < 0) {
		rc = bad_answer(s, "UpdateItem", "the old version", ans);
		json_decref(ans);
		return rc;
	}
	if (old_parts(ans, pid, &n) && memcmp(pid, w->pid, PID_LEN) != 0)
		parts_delete(s, pid, n);
	json_decref(ans);
	*version_out = old + 1;
	return PLANT_OK;
}

/* Write the value `w` (placed) under `key` with `cond`. */
static int put_placed(struct dstore *s, const char *key, size_t key_len, const struct wval *w,
		      int cond, uint64_t version, uint64_t now, uint64_t *version_out)
{
	int rc;

	switch (cond) {
	case PLANT_PUT_ANY:
		/* Absent or live: the server adds one. Expired: version 1, if
		 * it is still expired. Each can lose to another writer. */
		for (int round = 0; round < ROUNDS_MAX; round++) {
			rc = update_any(s, key, key_len, w, now, version_out);
			if (rc != PLANT_E_CONDITION)
				return rc;
			rc = put_item(s, key, key_len, 1, w, EXPIRED,
				      json_pack("{s:o}", ":now", av_n(now)));
			if (rc == PLANT_OK)
				*version_out = 1;
			if (rc != PLANT_E_CONDITION)
				return rc;
		}
		fault(s, "store %s: a put on table %s lost %d rounds to other writers", s->name,
		      s->table, ROUNDS_MAX);
		return PLANT_E_IO;
	case PLANT_PUT_IF_ABSENT:
		rc = put_item(s, key, key_len, 1, w, ABSENT, json_pack("{s:o}", ":now", av_n(now)));
		if (rc == PLANT_OK)
			*version_out = 1;
		return rc;
	case PLANT_PUT_IF_VERSION:
		if (version == 0 || version == UINT64_MAX)
			return PLANT_E_CONDITION; /* no item has it */
		rc = put_item(s, key, key_len, version + 1, w, "#ver = :v AND " LIVE,
			      json_pack("{s:o, s:o}", ":now", av_n(now), ":v", av_n(version)));
		if (rc == PLANT_OK)
			*version_out = version + 1;
		return rc;
	default:
		return PLANT_E_INVALID;
	}
}

static int put_op(struct dstore *s, const struct plant_store_op *op, uint64_t now,
		  uint64_t *version_out)
{
	struct wval w;
	uint64_t ignored;
	int rc = wval_text(op, &w);

	if (rc != PLANT_OK)
		return rc;
	w.xms = expiry(now, op->ttl_ms);
	rc = wval_place(s, &w);
	if (rc == PLANT_OK) {
		rc = put_placed(s, op->key, op->key_len, &w, op->cond, op->version, now,
				version_out ? version_out : &ignored);
		if (rc != PLANT_OK)
			wval_unplace(s, &w);
	}
	wval_free(&w);
	return rc;
}

static int del_op(struct dstore *s, const char *key, size_t key_len, int cond, uint64_t version,
		  uint64_t now)
{
	json_t *req, *ans = NULL, *values;
	struct ddb_err e = {0};
	unsigned char pid[PID_LEN];
	uint64_t n;
	int rc;

	if (cond == PLANT_PUT_IF_VERSION && (version == 0 || version == UINT64_MAX))
		return PLANT_E_CONDITION;
	req = request(s);
	values = json_pack("{s:o}", ":now", av_n(now));
	if (cond == PLANT_PUT_IF_VERSION)
		json_object_set_new(values, ":v", av_n(version));
	json_object_set_new(req, "Key", item_key(s->pk, key, key_len));
	json_object_set_new(
		req, "ConditionExpression",
		json_string(cond == PLANT_PUT_IF_VERSION ? EXISTS " AND #ver = :v" : EXISTS));
	json_object_set_new(req, "ExpressionAttributeValues", values);
	json_object_set_new(req, "ReturnValues", json_string("ALL_OLD"));
	rc = ddb_call(s, "DeleteItem", req, 0, NULL, &ans, &e);
	err_clear(&e);
	if (rc == PLANT_E_CONDITION)
		return cond == PLANT_PUT_ANY ? PLANT_E_NOTFOUND : PLANT_E_CONDITION;
	if (rc == PLANT_OK && old_parts(ans, pid, &n))
		parts_delete(s, pid, n);
	json_decref(ans);
	return rc;
}

static bool cond_ok(int is_delete, int cond)
{
	if (cond == PLANT_PUT_ANY || cond == PLANT_PUT_IF_VERSION)
		return true;
	return !is_delete && cond == PLANT_PUT_IF_ABSENT;
}

static int ds_put(void *store, const char *key, size_t key_len, const json_t *value, int cond,
		  uint64_t version, uint64_t ttl_ms, uint64_t now, uint64_t *version_out)
{
	struct plant_store_op op = {
		.key = key,
		.key_len = key_len,
		.value = value,
		.cond = cond,
		.version = version,
		.ttl_ms = ttl_ms,
	};

	if (!key_ok(key, key_len) || !value || !cond_ok(0, cond))
		return PLANT_E_INVALID;
	return put_op(store, &op, now, version_out);
}

static int ds_del(void *store, const char *key, size_t key_len, int cond, uint64_t version,
		  uint64_t now)
{
	if (!key_ok(key, key_len) || !cond_ok(1, cond))
		return PLANT_E_INVALID;
	return del_op(store, key, key_len, cond, version, now);
}

/* ---- scan ------------------------------------------------------------------------- */

static json_t *key_json(const unsigned char *key, size_t len, const char **field)
{
	static const char hex[] = "0123456789abcdef";
	char buf[2 * KEY_MAX + 1];

	if (utf8_ok((const char *)key, len, false)) {
		*field = "key";
		return json_stringn((const char *)key, len);
	}
	for (size_t i = 0; i < len; i++) {
		buf[2 * i] = hex[key[i] >> 4];
		buf[2 * i + 1] = hex[key[i] & 0xf];
	}
	*field = "key_hex";
	return json_stringn(buf, 2 * len);
}

/* One scan entry for a live item: {"key": K, "value": V, "version": N}.
 * An item in parts replaced meanwhile is read again (*skip when it is gone
 * by now). */
static int scan_entry(struct dstore *s, const unsigned char *key, size_t len,
		      const struct stored *st, uint64_t now, json_t **out)
{
	const char *field;
	json_t *v = NULL;
	uint64_t version = st->version;
	int rc = stored_value(s, st, &v);

	*out = NULL;
	if (rc == PLANT_E_NOTFOUND) {
		rc = ds_get(s, (const char *)key, len, now, &v, &version);
		if (rc == PLANT_E_NOTFOUND)
			return PLANT_OK; /* deleted meanwhile: a scan is no snapshot */
	}
	if (rc != PLANT_OK)
		return rc;
	*out = json_pack("{s:o, s:I}", "value", v, "version", (json_int_t)version);
	json_t *k = key_json(key, len, &field);
	if (!*out || !k || json_object_set_new(*out, field, k) != 0) {
		json_decref(*out);
		*out = NULL;
		return PLANT_E_NOMEM;
	}
	return PLANT_OK;
}

static int ds_scan(void *store, const char *prefix, size_t prefix_len, const char *after,
		   size_t after_len, size_t limit, uint64_t now, json_t **items_out)
{
	struct dstore *s = store;
	json_t *out, *start = NULL;
	struct ddb_err e = {0};
	bool by_after = false, done = false;
	int rc = PLANT_OK;

	if ((!prefix && prefix_len > 0) || !items_out || prefix_len > KEY_MAX ||
	    (after && after_len > KEY_MAX))
		return PLANT_E_INVALID;
	if (after && after_len == 0)
		after = NULL;
	/* Where the range starts: after `after` when it lies inside the
	 * prefix; at the prefix when `after` sorts before it; nowhere when
	 * `after` is past every key with the prefix. */
	if (after) {
		if (prefix_len == 0 || starts_with(after, after_len, prefix, prefix_len))
			by_after = true;
		else if (key_cmp(after, after_len, prefix, prefix_len) > 0)
			done = true;
	}
	out = json_array();
	if (!out)
		return PLANT_E_NOMEM;
	while (!done && rc == PLANT_OK) {
		json_t *req = request(s), *ans = NULL, *items, *it;
		json_t *values = json_pack("{s:o, s:o}", ":pk", av_s(s->pk, strlen(s->pk)), ":now",
					   av_n(now));
		size_t i;

		if (by_after) {
			json_object_set_new(req, "KeyConditionExpression",
					    json_string("#pk = :pk AND #sk > :after"));
			json_object_set_new(values, ":after", av_b(after, after_len));
		} else if (prefix_len > 0) {
			json_object_set_new(req, "KeyConditionExpression",
					    json_string("#pk = :pk AND begins_with(#sk, :prefix)"));
			json_object_set_new(values, ":prefix", av_b(prefix, prefix_len));
		} else {
			json_object_set_new(req, "KeyConditionExpression",
					    json_string("#pk = :pk"));
		}
		json_object_set_new(req, "FilterExpression", json_string(LIVE));
		json_object_set_new(req, "ExpressionAttributeValues", values);
		json_object_set_new(req, "ConsistentRead", json_true());
		if (limit) {
			size_t want = limit - json_array_size(out) + (by_after ? 1 : 0);

			json_object_set_new(
				req, "Limit",
				json_integer(want > PAGE_MAX ? PAGE_MAX : (json_int_t)want));
		}
		if (start)
			json_object_set_new(req, "ExclusiveStartKey", start);
		start = NULL;
		rc = ddb_call(s, "Query", req, CALL_IDEMPOTENT, NULL, &ans, &e);
		if (rc != PLANT_OK) {
			rc = rc == PLANT_E_CONDITION ? PLANT_E_IO : rc;
			break;
		}
		items = json_object_get(ans, "Items");
		if (!json_is_array(items)) {
			rc = bad_answer(s, "Query", "no Items", ans);
			json_decref(ans);
			break;
		}
		json_array_foreach(items, i, it)
		{
			unsigned char key[KEY_MAX];
			size_t klen = 0;
			struct stored st;
			json_t *entry = NULL;

			if (attr_bytes(it, "sk", key, sizeof key, &klen) != 1 || klen == 0) {
				rc = bad_answer(s, "Query", "an item without a key", it);
				break;
			}
			if (!starts_with(key, klen, prefix, prefix_len)) {
				done = true; /* past the prefix, in key order */
				break;
			}
			rc = stored_read(it, &st);
			if (rc == PLANT_E_NOTFOUND) {
				rc = PLANT_OK;
				continue;
			}
			if (rc != PLANT_OK) {
				rc = bad_answer(s, "Query", "an item this store did not write", it);
				break;
			}
			if ((after && key_cmp(key, klen, after, after_len) <= 0) ||
			    !stored_live(&st, now))
				continue;
			rc = scan_entry(s, key, klen, &st, now, &entry);
			if (rc != PLANT_OK)
				break;
			if (entry && json_array_append_new(out, entry) != 0) {
				rc = PLANT_E_NOMEM;
				break;
			}
			if (limit && json_array_size(out) >= limit) {
				done = true;
				break;
			}
		}
		if (rc == PLANT_OK && !done) {
			json_t *lek = json_object_get(ans, "LastEvaluatedKey");

			if (json_is_object(lek))
				start = json_incref(lek);
			else
				done = true;
		}
		json_decref(ans);
	}
	json_decref(start);
	err_clear(&e);
	if (rc != PLANT_OK) {
		json_decref(out);
		return rc;
	}
	*items_out = out;
	return PLANT_OK;
}

/* ---- batches -----------------------------------------------------------------
 *
 * First the batch's keys are read (BatchGetItem, strongly consistent) and
 * its ops checked, in order, against what they read and what the ops
 * before them would leave: a condition that fails there fails the batch
 * with nothing written. Then, when the server has transactions and the
 * batch fits in one, every key's final state goes in one TransactWriteItems
 * whose conditions pin what was read (a change meanwhile cancels it, and
 * the batch is read and checked again): atomic. Otherwise the ops are
 * written one by one with their own conditions: a write that fails then
 * (another writer came between) leaves the ops before it written.
 */

/* One distinct key of a batch. */
struct bkey {
	const char *key;
	size_t len;
	bool found;	/* the table has an item under the key, live or not */
	bool live;	/* ...a live one */
	uint64_t ver;	/* its version, when live */
	bool has_parts; /* its parts, when live */
	unsigned char pid[PID_LEN];
	uint64_t nparts;
	uint64_t cur;	 /* the version after the ops checked so far (0: none) */
	size_t last_put; /* the last put on the key, when cur > 0 */
	bool written;	 /* some op writes it */
};

struct bref {
	const char *key;
	size_t len, i;
};

static int bref_order(const void *a, const void *b)
{
	const struct bref *x = a, *y = b;
	int c = key_cmp(x->key, x->len, y->key, y->len);

	return c ? c : x->i < y->i ? -1 : x->i > y->i;
}

/* The distinct keys of ops[0..n) into *keys (sorted), each op's into kidx. */
static int batch_keys(const struct plant_store_op *ops, size_t n, struct bkey **keys, size_t *nkeys,
		      size_t *kidx)
{
	struct bref *refs = malloc((n ? n : 1) * sizeof *refs);
	struct bkey *k = calloc(n ? n : 1, sizeof *k);
	size_t m = 0;

	if (!refs || !k) {
		free(refs);
		free(k);
		return PLANT_E_NOMEM;
	}
	for (size_t i = 0; i < n; i++)
		refs[i] = (struct bref){ops[i].key, ops[i].key_len, i};
	qsort(refs, n, sizeof *refs, bref_order);
	for (size_t j = 0; j < n; j++) {
		if (m == 0 || key_cmp(refs[j].key, refs[j].len, k[m - 1].key, k[m - 1].len) != 0)
			k[m++] = (struct bkey){.key = refs[j].key, .len = refs[j].len};
		kidx[refs[j].i] = m - 1;
	}
	free(refs);
	*keys = k;
	*nkeys = m;
	return PLANT_OK;
}

static struct bkey *bkey_find(struct bkey *keys, size_t n, const void *key, size_t len)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = key_cmp(keys[mid].key, keys[mid].len, key, len);

		if (c == 0)
			return &keys[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* What the table holds under every key (BatchGetItem, consistent). */
static int batch_read(struct dstore *s, struct bkey *keys, size_t n, uint64_t now)
{
	struct ddb_err e = {0};
	int rc = PLANT_OK;

	for (size_t i = 0; i < n; i++) {
		keys[i].found = keys[i].live = keys[i].has_parts = false;
		keys[i].ver = keys[i].nparts = 0;
	}
	for (size_t first = 0; first < n && rc == PLANT_OK; first += GET_KEYS_MAX) {
		json_t *want = json_array();

		for (size_t i = first; want && i < n && i < first + GET_KEYS_MAX; i++)
			json_array_append_new(want, item_key(s->pk, keys[i].key, keys[i].len));
		for (int round = 0; rc == PLANT_OK && json_array_size(want) > 0; round++) {
			json_t *ans = NULL, *got, *it, *un, *req;
			size_t j;

			if (round > s->max_retries + 2) {
				fault(s,
				      "store %s: BatchGetItem on table %s: keys still unprocessed",
				      s->name, s->table);
				rc = PLANT_E_IO;
				break;
			}
			if (round > 0)
				backoff(round - 1);
			req = json_pack("{s:{s:{s:O, s:b, s:s}}}", "RequestItems", s->table, "Keys",
					want, "ConsistentRead", 1, "ProjectionExpression",
					"#sk, #ver, #xms, #parts, #pid");
			/* names for a projection inside RequestItems */
			json_object_set_new(
				json_object_get(json_object_get(req, "RequestItems"), s->table),
				"ExpressionAttributeNames",
				json_pack("{s:s, s:s, s:s, s:s, s:s}", "#sk", "sk", "#ver", "ver",
					  "#xms", "expires_ms", "#parts", "parts", "#pid",
					  "parts_id"));
			rc = ddb_call(s, "BatchGetItem", req, CALL_IDEMPOTENT, NULL, &ans, &e);
			if (rc != PLANT_OK) {
				rc = rc == PLANT_E_CONDITION ? PLANT_E_IO : rc;
				break;
			}
			got = json_object_get(json_object_get(ans, "Responses"), s->table);
			if (got && !json_is_array(got)) {
				rc = bad_answer(s, "BatchGetItem", "Responses", ans);
				json_decref(ans);
				break;
			}
			json_array_foreach(got, j, it)
			{
				unsigned char key[KEY_MAX];
				size_t klen = 0, plen = 0;
				uint64_t ver = 0, xms = 0;
				struct bkey *k;

				if (attr_bytes(it, "sk", key, sizeof key, &klen) != 1 ||
				    !(k = bkey_find(keys, n, key, klen)) ||
				    attr_u64(it, "ver", &ver) < 0 ||
				    (json_object_get(it, "ver") && ver == 0) ||
				    attr_u64(it, "expires_ms", &xms) < 0) {
					rc = bad_answer(s, "BatchGetItem", "an item", it);
					break;
				}
				if (ver == 0)
					continue; /* no version: absent, as for the conditions */
				k->found = true;
				k->live = xms == 0 || xms > now;
				k->ver = ver;
				if (attr_u64(it, "parts", &k->nparts) == 1 && k->nparts > 0 &&
				    attr_bytes(it, "parts_id", k->pid, PID_LEN, &plen) == 1 &&
				    plen == PID_LEN)
					k->has_parts = true;
				else
					k->nparts = 0;
			}
			un = json_object_get(
				json_object_get(json_object_get(ans, "UnprocessedKeys"), s->table),
				"Keys");
			json_decref(want);
			want = json_is_array(un) ? json_incref(un) : json_array();
			json_decref(ans);
		}
		json_decref(want);
	}
	err_clear(&e);
	return rc;
}

static int put_check(int cond, uint64_t version, uint64_t cur)
{
	switch (cond) {
	case PLANT_PUT_ANY:
		return PLANT_OK;
	case PLANT_PUT_IF_ABSENT:
		return cur == 0 ? PLANT_OK : PLANT_E_CONDITION;
	case PLANT_PUT_IF_VERSION:
		return cur != 0 && cur == version ? PLANT_OK : PLANT_E_CONDITION;
	default:
		return PLANT_E_INVALID;
	}
}

static int del_check(int cond, uint64_t version, uint64_t cur)
{
	switch (cond) {
	case PLANT_PUT_ANY:
		return cur != 0 ? PLANT_OK : PLANT_E_NOTFOUND;
	case PLANT_PUT_IF_VERSION:
		return cur != 0 && cur == version ? PLANT_OK : PLANT_E_CONDITION;
	default:
		return PLANT_E_INVALID;
	}
}

/* Check ops[0..n) in order against what was read; the first failure's
 * index into *failed. */
static int batch_check(const struct plant_store_op *ops, size_t n, struct bkey *keys, size_t nkeys,
		       const size_t *kidx, size_t *failed)
{
	for (size_t i = 0; i < nkeys; i++) {
		keys[i].cur = keys[i].live ? keys[i].ver : 0;
		keys[i].written = false;
	}
	for (size_t i = 0; i < n; i++) {
		struct bkey *k = &keys[kidx[i]];
		int rc;

		if (ops[i].is_delete) {
			rc = del_check(ops[i].cond, ops[i].version, k->cur);
			k->cur = 0;
		} else {
			rc = put_check(ops[i].cond, ops[i].version, k->cur);
			k->cur++;
			k->last_put = i;
		}
		k->written = true;
		if (rc != PLANT_OK) {
			*failed = i;
			return rc;
		}
	}
	return PLANT_OK;
}

/* The condition that pins what was read under a key, with its values. */
static void pin(const struct bkey *k, uint64_t now, json_t *action)
{
	json_t *values = json_pack("{s:o}", ":now", av_n(now));

	if (k->live) {
		json_object_set_new(values, ":rv", av_n(k->ver));
		if (k->has_parts)
			json_object_set_new(values, ":rpid", av_b(k->pid, PID_LEN));
		json_object_set_new(action, "ConditionExpression",
				    json_string(k->has_parts
							? "#ver = :rv AND #pid = :rpid AND " LIVE
							: "#ver = :rv AND " LIVE
							  " AND attribute_not_exists(#pid)"));
	} else {
		json_object_set_new(action, "ConditionExpression", json_string(ABSENT));
	}
	json_object_set_new(action, "ExpressionAttributeValues", values);
}

/* One TransactWriteItems with every key's final state. PLANT_E_CONDITION
 * when something changed since the read (read again), PLANT_E_UNSUPPORTED
 * when the server has no transactions. */
static int batch_tx(struct dstore *s, const struct plant_store_op *ops, struct bkey *keys,
		    size_t nkeys, struct wval *w, uint64_t now)
{
	static const char *const expected[] = {"UnknownOperationException",
					       "TransactionCanceledException", NULL};
	json_t *actions = json_array(), *req, *ans = NULL;
	struct ddb_err e = {0};
	unsigned char token[16];
	char token_hex[33];
	int rc = PLANT_OK;

	for (size_t i = 0; i < nkeys && rc == PLANT_OK; i++) {
		struct bkey *k = &keys[i];
		json_t *action;
		const char *kind;

		if (!k->written)
			continue;
		if (k->cur > 0) {
			kind = "Put";
			action = json_pack("{s:s, s:o}", "TableName", s->table, "Item",
					   full_item(s, k->key, k->len, k->cur, &w[k->last_put]));
		} else {
			kind = k->live ? "Delete" : "ConditionCheck";
			action = json_pack("{s:s, s:o}", "TableName", s->table, "Key",
					   item_key(s->pk, k->key, k->len));
		}
		if (!action) {
			rc = PLANT_E_NOMEM;
			break;
		}
		pin(k, now, action);
		add_names(action);
		if (json_array_append_new(actions, json_pack("{s:o}", kind, action)) != 0)
			rc = PLANT_E_NOMEM;
	}
	if (rc != PLANT_OK || !actions) {
		json_decref(actions);
		return PLANT_E_NOMEM;
	}
	/* The token makes a retry after a lost answer harmless. */
	random_bytes(token, sizeof token);
	for (size_t i = 0; i < sizeof token; i++)
		snprintf(token_hex + 2 * i, 3, "%02x", token[i]);
	req = json_pack("{s:o, s:s}", "TransactItems", actions, "ClientRequestToken", token_hex);
	rc = ddb_call(s, "TransactWriteItems", req, CALL_IDEMPOTENT, expected, &ans, &e);
	json_decref(ans);
	if (rc == PLANT_OK) {
		atomic_store(&s->tx, 1);
	} else if (strcmp(e.code, "UnknownOperationException") == 0) {
		if (atomic_exchange(&s->tx, -1) != -1)
			s->p->api->log(s->p->self, PLANT_LOG_INFO,
				       "store %s: the server at %s has no transactions: batches "
				       "are written op by op (not atomic)",
				       s->name, s->url);
		rc = PLANT_E_UNSUPPORTED;
	} else if (strcmp(e.code, "TransactionCanceledException") == 0) {
		const json_t *reasons = json_object_get(e.body, "CancellationReasons");
		const json_t *r;
		size_t i;
		bool changed = false, conflict = false;

		json_array_foreach(reasons, i, r)
		{
			const char *c = json_string_value(json_object_get(r, "Code"));

			changed |= c && strcmp(c, "ConditionalCheckFailed") == 0;
			conflict |= c && (strcmp(c, "TransactionConflict") == 0 ||
					  strcmp(c, "ThrottlingError") == 0 ||
					  strcmp(c, "ProvisionedThroughputExceeded") == 0);
		}
		/* without reasons (some servers): read and check again */
		if (changed || conflict || !json_is_array(reasons)) {
			rc = PLANT_E_CONDITION;
		} else {
			fault(s, "store %s: TransactWriteItems on table %s: %s", s->name, s->table,
			      e.message);
			rc = PLANT_E_IO;
		}
	}
	err_clear(&e);
	return rc;
}

/* The ops one by one, each with its own condition. */
static int batch_each(struct dstore *s, const struct plant_store_op *ops, size_t n, struct wval *w,
		      uint64_t now, size_t *failed)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t v;
		int rc;

		if (ops[i].is_delete) {
			rc = del_op(s, ops[i].key, ops[i].key_len, ops[i].cond, ops[i].version,
				    now);
		} else {
			rc = wval_place(s, &w[i]);
			if (rc == PLANT_OK) {
				rc = put_placed(s, ops[i].key, ops[i].key_len, &w[i], ops[i].cond,
						ops[i].version, now, &v);
				if (rc != PLANT_OK)
					wval_unplace(s, &w[i]);
			}
		}
		if (rc != PLANT_OK) {
			*failed = i;
			return rc;
		}
	}
	return PLANT_OK;
}

static bool op_malformed(const struct plant_store_op *op)
{
	if (!key_ok(op->key, op->key_len) || !cond_ok(op->is_delete, op->cond))
		return true;
	if (op->is_delete || op->value)
		return false;
	return !op->value_text || op->value_text_len == 0 ||
	       !utf8_ok(op->value_text, op->value_text_len, false);
}

static int ds_batch(void *store, const struct plant_store_op *ops, size_t n, uint64_t now,
		    size_t *failed_out, int *atomic_out)
{
	struct dstore *s = store;
	struct bkey *keys = NULL;
	struct wval *w = NULL;
	size_t *kidx = NULL, nkeys = 0, bad = n, failed = n;
	int rc = PLANT_OK;

	if (atomic_out)
		*atomic_out = 0;
	if (!ops && n > 0) {
		if (failed_out)
			*failed_out = 0;
		return PLANT_E_INVALID;
	}
	for (size_t i = 0; i < n; i++) {
		if (op_malformed(&ops[i])) {
			bad = i;
			break;
		}
	}
	if (bad == 0 && n > 0) {
		failed = 0;
		rc = PLANT_E_INVALID;
		goto out;
	}
	if (n == 0)
		goto out;
	if (n == 1 && bad == 1) {
		/* one conditional write: atomic by itself, and no read first */
		rc = ops[0].is_delete ? del_op(s, ops[0].key, ops[0].key_len, ops[0].cond,
					       ops[0].version, now)
				      : put_op(s, &ops[0], now, NULL);
		failed = rc == PLANT_OK ? n : 0;
		if (atomic_out)
			*atomic_out = 1;
		goto out;
	}
	kidx = calloc(bad, sizeof *kidx);
	w = calloc(bad, sizeof *w);
	if (!kidx || !w || batch_keys(ops, bad, &keys, &nkeys, kidx) != PLANT_OK) {
		failed = 0;
		rc = PLANT_E_NOMEM;
		goto out;
	}
	size_t tx_bytes = 0;
	for (size_t i = 0; i < bad; i++) {
		if (ops[i].is_delete)
			continue;
		rc = wval_text(&ops[i], &w[i]);
		if (rc != PLANT_OK) {
			failed = i;
			goto out;
		}
		w[i].xms = expiry(now, ops[i].ttl_ms);
		tx_bytes += (w[i].len > INLINE_MAX ? 64 : w[i].len) + ops[i].key_len * 2 + 256;
	}
	for (int round = 0;; round++) {
		rc = batch_read(s, keys, nkeys, now);
		if (rc != PLANT_OK) {
			failed = 0;
			goto out;
		}
		rc = batch_check(ops, bad, keys, nkeys, kidx, &failed);
		if (rc != PLANT_OK)
			goto out;
		if (bad < n) {
			/* a malformed op, and no condition failed before it */
			failed = bad;
			rc = PLANT_E_INVALID;
			goto out;
		}
		if (!s->use_tx || atomic_load(&s->tx) < 0 || nkeys > TX_ITEMS_MAX ||
		    tx_bytes > BODY_SOFT_MAX)
			break;
		/* parts of long values first; the transaction names them */
		for (size_t i = 0; i < nkeys && rc == PLANT_OK; i++)
			if (keys[i].written && keys[i].cur > 0)
				rc = wval_place(s, &w[keys[i].last_put]);
		if (rc == PLANT_OK)
			rc = batch_tx(s, ops, keys, nkeys, w, now);
		if (rc == PLANT_OK) {
			atomic_fetch_add(&s->tx_batches, 1);
			if (atomic_out)
				*atomic_out = 1;
			for (size_t i = 0; i < nkeys; i++)
				if (keys[i].written && keys[i].has_parts)
					parts_delete(s, keys[i].pid, keys[i].nparts);
			failed = n;
			goto out;
		}
		for (size_t i = 0; i < bad; i++)
			wval_unplace(s, &w[i]);
		if (rc == PLANT_E_UNSUPPORTED)
			break;
		if (rc != PLANT_E_CONDITION) {
			failed = 0;
			goto out;
		}
		if (round + 1 >= ROUNDS_MAX) {
			fault(s, "store %s: a batch on table %s lost %d rounds to other writers",
			      s->name, s->table, ROUNDS_MAX);
			failed = 0;
			rc = PLANT_E_IO;
			goto out;
		}
		backoff(round);
	}
	atomic_fetch_add(&s->op_batches, 1);
	rc = batch_each(s, ops, n, w, now, &failed);
	if (rc == PLANT_OK)
		failed = n;
out:
	for (size_t i = 0; w && i < bad; i++)
		wval_free(&w[i]);
	free(w);
	free(kidx);
	free(keys);
	if (failed_out)
		*failed_out = failed;
	return rc;
}

/* ---- expiry -------------------------------------------------------------------- */

/* Keys of expired items in partition `pk` (a page at a time), through the
 * index when there is one, else a filtered Query of the partition. */
static int expired_page(struct dstore *s, const char *pk, uint64_t now, json_t **start,
			json_t **items_out)
{
	json_t *req = request(s), *ans = NULL, *items;
	struct ddb_err e = {0};
	int rc;

	if (s->expiry_index) {
		json_object_set_new(req, "IndexName", json_string(INDEX_NAME));
		json_object_set_new(req, "KeyConditionExpression",
				    json_string("#pk = :pk AND #xms <= :now"));
	} else {
		json_object_set_new(req, "KeyConditionExpression", json_string("#pk = :pk"));
		json_object_set_new(req, "FilterExpression", json_string(EXPIRED));
		json_object_set_new(req, "ProjectionExpression", json_string("#pk, #sk, #xms"));
		json_object_set_new(req, "ConsistentRead", json_true());
	}
	json_object_set_new(
		req, "ExpressionAttributeValues",
		json_pack("{s:o, s:o}", ":pk", av_s(pk, strlen(pk)), ":now", av_n(now)));
	json_object_set_new(req, "Limit", json_integer(PAGE_MAX));
	if (*start)
		json_object_set_new(req, "ExclusiveStartKey", *start);
	*start = NULL;
	rc = ddb_call(s, "Query", req, CALL_IDEMPOTENT, NULL, &ans, &e);
	err_clear(&e);
	if (rc != PLANT_OK)
		return rc == PLANT_E_CONDITION ? PLANT_E_IO : rc;
	items = json_object_get(ans, "Items");
	if (!json_is_array(items)) {
		rc = bad_answer(s, "Query", "no Items", ans);
		json_decref(ans);
		return rc;
	}
	if (json_is_object(json_object_get(ans, "LastEvaluatedKey")))
		*start = json_incref(json_object_get(ans, "LastEvaluatedKey"));
	*items_out = json_incref(items);
	json_decref(ans);
	return PLANT_OK;
}

/* Delete the item under `key` if it is still expired. */
static bool expire_one(struct dstore *s, const void *key, size_t len, uint64_t now)
{
	json_t *req = request(s), *ans = NULL;
	struct ddb_err e = {0};
	unsigned char pid[PID_LEN];
	uint64_t n;
	int rc;

	json_object_set_new(req, "Key", item_key(s->pk, key, len));
	json_object_set_new(req, "ConditionExpression", json_string(EXPIRED));
	json_object_set_new(req, "ExpressionAttributeValues",
			    json_pack("{s:o}", ":now", av_n(now)));
	json_object_set_new(req, "ReturnValues", json_string("ALL_OLD"));
	rc = ddb_call(s, "DeleteItem", req, 0, NULL, &ans, &e);
	err_clear(&e);
	if (rc == PLANT_OK && old_parts(ans, pid, &n))
		parts_delete(s, pid, n);
	json_decref(ans);
	return rc == PLANT_OK;
}

static size_t ds_expire(void *store, uint64_t now)
{
	struct dstore *s = store;
	size_t removed = 0;
	json_t *start = NULL, *items = NULL;

	/* items, each if still expired */
	do {
		size_t i;
		json_t *it;

		if (expired_page(s, s->pk, now, &start, &items) != PLANT_OK)
			break;
		json_array_foreach(items, i, it)
		{
			unsigned char key[KEY_MAX];
			size_t klen = 0;

			if (attr_bytes(it, "sk", key, sizeof key, &klen) == 1 && klen > 0 &&
			    expire_one(s, key, klen, now))
				removed++;
		}
		json_decref(items);
		items = NULL;
	} while (start);
	json_decref(start);
	start = NULL;

	/* parts that expired with their items: nothing refers to them */
	do {
		size_t i;
		json_t *it, *reqs = json_array();

		if (!reqs || expired_page(s, s->parts_pk, now, &start, &items) != PLANT_OK) {
			json_decref(reqs);
			break;
		}
		json_array_foreach(items, i, it)
		{
			unsigned char key[PID_LEN + 4];
			size_t klen = 0;

			if (attr_bytes(it, "sk", key, sizeof key, &klen) == 1 && klen == sizeof key)
				json_array_append_new(reqs,
						      json_pack("{s:{s:o}}", "DeleteRequest", "Key",
								item_key(s->parts_pk, key, klen)));
			if (json_array_size(reqs) == WRITE_REQ_MAX) {
				batch_write(s, reqs);
				reqs = json_array();
			}
		}
		if (json_array_size(reqs) > 0)
			batch_write(s, reqs);
		else
			json_decref(reqs);
		json_decref(items);
		items = NULL;
	} while (start);
	json_decref(start);
	return removed;
}

/* ---- open, close, health ------------------------------------------------------- */

static bool table_name_ok(const char *t)
{
	size_t n = strlen(t);

	if (n < 3 || n > 255)
		return false;
	for (; *t; t++)
		if (!((*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z') ||
		      (*t >= '0' && *t <= '9') || *t == '_' || *t == '-' || *t == '.'))
			return false;
	return true;
}

/* timeout: integer ms, or a string "250ms", "5s", "1m". */
static bool parse_ms(const json_t *v, uint64_t *out)
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
		if (ms > INT64_MAX / mult)
			return false;
		ms *= mult;
	} else {
		return false;
	}
	if (ms <= 0)
		return false;
	*out = (uint64_t)ms;
	return true;
}

static void store_free(struct dstore *s)
{
	if (!s)
		return;
	free(s->name);
	free(s->table);
	free(s->url);
	free(s->region);
	free(s->pk);
	free(s->parts_pk);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static int read_settings(struct dstore *s, const json_t *settings, char *err, size_t errlen)
{
	const char *key, *table = "plantd", *endpoint = NULL, *region = NULL;
	const json_t *v;

	if (settings && !json_is_object(settings))
		return set_err(err, errlen, PLANT_E_CONFIG, "store %s: settings are not an object",
			       s->name);
	json_object_foreach((json_t *)settings, key, v)
	{
		if (strcmp(key, "table") == 0) {
			table = json_string_value(v);
			if (!table || !table_name_ok(table))
				return set_err(err, errlen, PLANT_E_CONFIG,
					       "store %s: setting 'table' must be a DynamoDB table "
					       "name (3 to 255 of a-z A-Z 0-9 _ - .)",
					       s->name);
		} else if (strcmp(key, "endpoint") == 0) {
			endpoint = json_string_value(v);
			if (!endpoint || (strncmp(endpoint, "http://", 7) != 0 &&
					  strncmp(endpoint, "https://", 8) != 0))
				return set_err(err, errlen, PLANT_E_CONFIG,
					       "store %s: setting 'endpoint' must be a URL "
					       "(http://HOST:PORT or https://HOST)",
					       s->name);
		} else if (strcmp(key, "region") == 0) {
			region = json_string_value(v);
			if (!region || !*region || strpbrk(region, " /:"))
				return set_err(err, errlen, PLANT_E_CONFIG,
					       "store %s: setting 'region' must be a region name "
					       "such as \"eu-west-1\"",
					       s->name);
		} else if (strcmp(key, "create_table") == 0) {
			if (!json_is_boolean(v))
				return set_err(err, errlen, PLANT_E_CONFIG,
					       "store %s: setting 'create_table' must be true or "
					       "false",
					       s->name);
			s->create_table = json_is_true(v);
		} else if (strcmp(key, "transactions") == 0) {
			if (!json_is_boolean(v))
				return set_err(err, errlen, PLANT_E_CONFIG,
					       "store %s: setting 'transactions' must be true or "
					       "false",
					       s->name);
			s->use_tx = json_is_true(v);
		} else if (strcmp(key, "timeout") == 0) {
			if (!parse_ms(v, &s->timeout_ms))
				return set_err(err, errlen, PLANT_E_CONFIG,
					       "store %s: setting 'timeout' must be ms (an integer "
					       "> 0, or \"250ms\", \"5s\", \"1m\")",
					       s->name);
		} else if (strcmp(key, "max_retries") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > 20)
				return set_err(err, errlen, PLANT_E_CONFIG,
					       "store %s: setting 'max_retries' must be an integer "
					       "0..20",
					       s->name);
			s->max_retries = (int)json_integer_value(v);
		} else if (strcmp(key, "name") != 0 && strcmp(key, "backend") != 0) {
			/* name and backend are the host's; it usually strips them. */
			return set_err(err, errlen, PLANT_E_CONFIG,
				       "store %s: unknown setting '%s'", s->name, key);
		}
	}
	/* The region names the default endpoint; signing takes the site's
	 * when this store has none. */
	const char *url_region = region;
	if (!url_region)
		url_region = getenv("AWS_REGION");
	if (!url_region || !*url_region)
		url_region = getenv("AWS_DEFAULT_REGION");
	if (!endpoint && (!url_region || !*url_region))
		return set_err(err, errlen, PLANT_E_CONFIG,
			       "store %s: set 'region' (or 'endpoint'): no region for the "
			       "DynamoDB endpoint (nor AWS_REGION in the environment)",
			       s->name);
	char url[512];
	if (endpoint)
		snprintf(url, sizeof url, "%s", endpoint);
	else
		snprintf(url, sizeof url, "https://dynamodb.%s.amazonaws.com/", url_region);
	s->table = strdup(table);
	s->url = strdup(url);
	s->region = region ? strdup(region) : NULL;
	if (!s->table || !s->url || (region && !s->region))
		return set_err(err, errlen, PLANT_E_NOMEM, "out of memory");
	return PLANT_OK;
}

/* KeySchema and AttributeDefinitions say HASH pk (S), RANGE sk (B). */
static bool schema_ok(const json_t *table)
{
	const json_t *ks = json_object_get(table, "KeySchema");
	const json_t *ad = json_object_get(table, "AttributeDefinitions");
	const json_t *x;
	size_t i;
	int found = 0;

	if (!json_is_array(ks) || json_array_size(ks) != 2 || !json_is_array(ad))
		return false;
	json_array_foreach(ks, i, x)
	{
		const char *n = json_string_value(json_object_get(x, "AttributeName"));
		const char *t = json_string_value(json_object_get(x, "KeyType"));

		if (n && t && strcmp(n, "pk") == 0 && strcmp(t, "HASH") == 0)
			found |= 1;
		if (n && t && strcmp(n, "sk") == 0 && strcmp(t, "RANGE") == 0)
			found |= 2;
	}
	json_array_foreach(ad, i, x)
	{
		const char *n = json_string_value(json_object_get(x, "AttributeName"));
		const char *t = json_string_value(json_object_get(x, "AttributeType"));

		if (n && t && strcmp(n, "pk") == 0 && strcmp(t, "S") == 0)
			found |= 4;
		if (n && t && strcmp(n, "sk") == 0 && strcmp(t, "B") == 0)
			found |= 8;
	}
	return found == 15;
}

/* The expiry index: 1 there and ACTIVE, 0 absent, -1 there but not
 * ACTIVE yet. */
static int index_state(const json_t *table)
{
	const json_t *gsis = json_object_get(table, "GlobalSecondaryIndexes");
	const json_t *g;
	size_t i;

	json_array_foreach(gsis, i, g)
	{
		const char *n = json_string_value(json_object_get(g, "IndexName"));
		const char *st = json_string_value(json_object_get(g, "IndexStatus"));

		if (n && strcmp(n, INDEX_NAME) == 0)
			return st && strcmp(st, "ACTIVE") == 0 ? 1 : -1;
	}
	return 0;
}

/* DescribeTable: *table_out [new] the "Table" object. */
static int describe(struct dstore *s, json_t **table_out, struct ddb_err *e)
{
	static const char *const expected[] = {"ResourceNotFoundException", NULL};
	json_t *req = request(s), *ans = NULL;
	int rc = ddb_call(s, "DescribeTable", req, CALL_IDEMPOTENT, expected, &ans, e);

	if (rc != PLANT_OK)
		return rc == PLANT_E_CONDITION ? PLANT_E_IO : rc;
	*table_out = json_incref(json_object_get(ans, "Table"));
	json_decref(ans);
	if (!json_is_object(*table_out) ||
	    !json_is_string(json_object_get(*table_out, "TableStatus"))) {
		json_decref(*table_out);
		*table_out = NULL;
		snprintf(e->code, sizeof e->code, "MalformedAnswer");
		snprintf(e->message, sizeof e->message, "DescribeTable without Table.TableStatus");
		return PLANT_E_IO;
	}
	return PLANT_OK;
}

static int create(struct dstore *s, struct ddb_err *e)
{
	static const char *const expected[] = {"ResourceInUseException", NULL};
	json_t *req = json_pack(
		"{s:s, s:[{s:s, s:s}, {s:s, s:s}, {s:s, s:s}], s:[{s:s, s:s}, {s:s, s:s}], s:s,"
		" s:[{s:s, s:[{s:s, s:s}, {s:s, s:s}], s:{s:s}}]}",
		"TableName", s->table, "AttributeDefinitions", "AttributeName", "pk",
		"AttributeType", "S", "AttributeName", "sk", "AttributeType", "B", "AttributeName",
		"expires_ms", "AttributeType", "N", "KeySchema", "AttributeName", "pk", "KeyType",
		"HASH", "AttributeName", "sk", "KeyType", "RANGE", "BillingMode", "PAY_PER_REQUEST",
		"GlobalSecondaryIndexes", "IndexName", INDEX_NAME, "KeySchema", "AttributeName",
		"pk", "KeyType", "HASH", "AttributeName", "expires_ms", "KeyType", "RANGE",
		"Projection", "ProjectionType", "KEYS_ONLY");
	json_t *ans = NULL;
	int rc = ddb_call(s, "CreateTable", req, 0, expected, &ans, e);

	json_decref(ans);
	if (rc != PLANT_OK && strcmp(e->code, "ResourceInUseException") == 0)
		return PLANT_OK; /* another node creates it: wait for it too */
	if (rc == PLANT_OK)
		s->p->api->log(s->p->self, PLANT_LOG_INFO,
			       "store %s: created table %s at %s (on demand, key pk + sk)", s->name,
			       s->table, s->url);
	return rc == PLANT_E_CONDITION ? PLANT_E_IO : rc;
}

/* DynamoDB's TTL on `expires`, for a table this store created. */
static void enable_ttl(struct dstore *s)
{
	static const char *const expected[] = {"UnknownOperationException", "ValidationException",
					       NULL};
	json_t *req =
		json_pack("{s:s, s:{s:b, s:s}}", "TableName", s->table, "TimeToLiveSpecification",
			  "Enabled", 1, "AttributeName", "expires");
	json_t *ans = NULL;
	struct ddb_err e = {0};
	int rc = ddb_call(s, "UpdateTimeToLive", req, CALL_IDEMPOTENT, expected, &ans, &e);

	json_decref(ans);
	if (rc != PLANT_OK)
		s->p->api->log(s->p->self, PLANT_LOG_INFO,
			       "store %s: no DynamoDB TTL on table %s (%s%s%s): expired items "
			       "are deleted by plantd's expiry pass only",
			       s->name, s->table, e.code, e.message[0] ? ": " : "", e.message);
	err_clear(&e);
}

/* Find or create the table and wait until it can be used. */
static int table_ready(struct dstore *s, char *err, size_t errlen)
{
	struct ddb_err e = {0};
	json_t *t = NULL;
	uint64_t deadline = mono_ms() + TABLE_WAIT_MS, wait = 100;
	bool created = false;
	int rc;

	for (;;) {
		rc = describe(s, &t, &e);
		if (rc != PLANT_OK && strcmp(e.code, "ResourceNotFoundException") == 0) {
			if (!s->create_table) {
				rc = set_err(err, errlen, PLANT_E_NOTFOUND,
					     "store %s: no table %s at %s (create_table = false)",
					     s->name, s->table, s->url);
				break;
			}
			if (created) {
				rc = set_err(err, errlen, PLANT_E_IO,
					     "store %s: table %s at %s is still not there after "
					     "CreateTable",
					     s->name, s->table, s->url);
				break;
			}
			rc = create(s, &e);
			if (rc != PLANT_OK) {
				rc = set_err(err, errlen, rc,
					     "store %s: cannot create table %s at %s: %s: %s",
					     s->name, s->table, s->url, e.code, e.message);
				break;
			}
			created = true;
			continue;
		}
		if (rc != PLANT_OK) {
			rc = set_err(err, errlen, rc, "store %s: table %s at %s: %s: %s", s->name,
				     s->table, s->url, e.code, e.message);
			break;
		}
		const char *status = json_string_value(json_object_get(t, "TableStatus"));
		if (!schema_ok(t)) {
			rc = set_err(err, errlen, PLANT_E_CONFIG,
				     "store %s: table %s at %s is not a plantd store table: its "
				     "key must be pk (S, HASH) and sk (B, RANGE)",
				     s->name, s->table, s->url);
			break;
		}
		int index = index_state(t);
		if ((strcmp(status, "ACTIVE") == 0 || strcmp(status, "UPDATING") == 0) &&
		    index >= 0) {
			s->expiry_index = index == 1;
			rc = PLANT_OK;
			break;
		}
		if (strcmp(status, "DELETING") == 0 || strcmp(status, "ARCHIVED") == 0 ||
		    strcmp(status, "INACCESSIBLE_ENCRYPTION_CREDENTIALS") == 0) {
			rc = set_err(err, errlen, PLANT_E_IO, "store %s: table %s at %s is %s",
				     s->name, s->table, s->url, status);
			break;
		}
		if (mono_ms() >= deadline) {
			rc = set_err(err, errlen, PLANT_E_TIMEOUT,
				     "store %s: table %s at %s still %s after %d s", s->name,
				     s->table, s->url, status, TABLE_WAIT_MS / 1000);
			break;
		}
		json_decref(t);
		t = NULL;
		sleep_ms(wait);
		wait = wait * 2 > 2000 ? 2000 : wait * 2;
	}
	json_decref(t);
	err_clear(&e);
	if (rc == PLANT_OK && created)
		enable_ttl(s);
	if (rc == PLANT_OK && !s->expiry_index)
		s->p->api->log(s->p->self, PLANT_LOG_INFO,
			       "store %s: table %s has no index %s: the expiry pass reads the "
			       "whole store",
			       s->name, s->table, INDEX_NAME);
	return rc;
}

static int ds_open(void *backend_state, const char *name, const json_t *settings,
		   const char *data_dir, void **store_out, char *err, size_t errlen)
{
	struct plugin *p = backend_state;
	struct dstore *s = calloc(1, sizeof *s);
	int rc;

	(void)data_dir; /* the store lives in the table */
	if (!s || pthread_mutex_init(&s->lock, NULL) != 0) {
		free(s);
		return set_err(err, errlen, PLANT_E_NOMEM, "out of memory");
	}
	s->p = p;
	s->name = strdup(name ? name : "");
	s->pk = strdup(name ? name : "");
	s->create_table = true;
	s->use_tx = true;
	s->timeout_ms = 10000;
	s->max_retries = 5;
	atomic_init(&s->tx, 0);
	atomic_init(&s->failing, false);
	if (!s->name || !s->pk || asprintf(&s->parts_pk, "%s#parts", s->name) < 0) {
		s->parts_pk = NULL;
		store_free(s);
		return set_err(err, errlen, PLANT_E_NOMEM, "out of memory");
	}
	rc = read_settings(s, settings, err, errlen);
	if (rc == PLANT_OK)
		rc = table_ready(s, err, errlen);
	if (rc != PLANT_OK) {
		store_free(s);
		return rc;
	}
	atomic_fetch_add(&p->open_stores, 1);
	p->api->log(p->self, PLANT_LOG_DEBUG, "store %s: table %s at %s, partition \"%s\"", s->name,
		    s->table, s->url, s->pk);
	*store_out = s;
	return PLANT_OK;
}

static void ds_close(void *store)
{
	struct dstore *s = store;

	if (!s)
		return;
	atomic_fetch_sub(&s->p->open_stores, 1);
	store_free(s);
}

static int ds_health(void *store, json_t **detail_out)
{
	struct dstore *s = store;
	int tx = atomic_load(&s->tx);
	json_t *d;
	bool failing;

	pthread_mutex_lock(&s->lock);
	failing = atomic_load(&s->failing);
	d = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:s}", "table", s->table, "endpoint",
		      s->url, "requests", (json_int_t)atomic_load(&s->requests), "retries",
		      (json_int_t)atomic_load(&s->retries), "failures",
		      (json_int_t)atomic_load(&s->failures), "atomic_batches",
		      (json_int_t)atomic_load(&s->tx_batches), "op_by_op_batches",
		      (json_int_t)atomic_load(&s->op_batches), "transactions",
		      !s->use_tx ? "off"
		      : tx > 0	 ? "yes"
		      : tx < 0	 ? "unsupported"
				 : "untried");
	if (d && failing)
		json_object_set_new(d, "error", json_string(s->error));
	pthread_mutex_unlock(&s->lock);
	if (detail_out)
		*detail_out = d;
	else
		json_decref(d);
	return failing ? PLANT_E_IO : PLANT_OK;
}

static const struct plant_store_backend backend = {
	.struct_size = sizeof(struct plant_store_backend),
	.open = ds_open,
	.close = ds_close,
	.get = ds_get,
	.put = ds_put,
	.del = ds_del,
	.scan = ds_scan,
	.batch = ds_batch,
	.expire = ds_expire,
	.health = ds_health,
};

/* ---- the plugin ------------------------------------------------------------ */

static int ddb_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		    void **state_out)
{
	struct plugin *p;
	int rc;

	(void)config;
	if (!PLANT_API_HAS(api, store_register) || !PLANT_API_HAS(api, http_call_wait) ||
	    !PLANT_API_HAS(api, http_result_free)) {
		api->error(self, NULL,
			   "this host has no HTTP client for store backends (plantd SDK 1.6)");
		return PLANT_E_UNSUPPORTED;
	}
	p = calloc(1, sizeof *p);
	if (!p) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	p->self = self;
	p->api = api;
	atomic_init(&p->open_stores, 0);
	rc = api->store_register(self, "dynamodb", &backend, p);
	if (rc != PLANT_OK) {
		api->error(self, NULL, "cannot offer the store kind \"dynamodb\": %s",
			   plant_status_name(rc));
		free(p);
		return rc;
	}
	*state_out = p;
	return PLANT_OK;
}

static void ddb_destroy(void *state)
{
	free(state);
}

static int ddb_health(void *state, json_t **detail_out)
{
	struct plugin *p = state;

	*detail_out = json_pack("{s:I}", "stores", (json_int_t)atomic_load(&p->open_stores));
	return PLANT_OK;
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "store_dynamodb",
	.version = "1.0.0",
	.description = "the store kind \"dynamodb\": stores in DynamoDB tables, shared by nodes",
	.config_keys = config_keys,
	.init = ddb_init,
	.destroy = ddb_destroy,
	.health = ddb_health,
};
