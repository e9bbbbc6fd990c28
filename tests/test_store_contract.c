/* The store contract: one body of tests that every store backend passes.
 *
 * The program loads the backend plugin $PLANTD_STORE_PLUGIN (a .so), calls
 * its init() with a fake host table that captures store_register(), and runs
 * every test on a fresh store, opened with the settings $PLANTD_STORE_SETTINGS
 * (JSON object text, default "{}") in a fresh data_dir, closed afterwards.
 * meson runs it once per backend (store_contract_memory, _sqlite).
 *
 * $PLANTD_STORE_PERSISTENT=1 adds the tests for backends that keep a store
 * in a file (a `path` setting, default "<name>.db" in data_dir): items
 * survive a reopen, a path in use is refused, so is a file that is not a
 * store and a data_dir that cannot be written.
 *
 * For backends whose stores live outside data_dir (a remote table):
 * $PLANTD_STORE_UNIQUE_SETTING=KEY gives every data_dir a store of its own,
 * the setting KEY (a string) becoming "VALUE-<data_dir's last component>";
 * $PLANTD_STORE_DURABLE=1 adds the reopen test alone (items survive a
 * close and an open of the same data_dir).
 *
 * Built with PLANT_TEST_HTTP (test_store_contract_http), the fake host
 * also offers http_call_wait(), with libcurl easy handles (one per thread,
 * connections kept) and SigV4 signing through CURLOPT_AWS_SIGV4, with the
 * credentials of AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
 * AWS_SESSION_TOKEN and the region of AWS_REGION (else us-east-1).
 *
 * Every call passes `now` explicitly: nothing sleeps.
 */
#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#ifdef PLANT_TEST_HTTP
#include <stdbool.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#endif

#include <plantd/plantd.h>

#include "testutil.h"

#define STORE_NAME "contract"
#define NOW	   ((uint64_t)1000000)
#define KEY_MAX	   1024

/* A key given as a literal: its bytes and length, NULs included. */
#define K(lit) (lit), (sizeof(lit) - 1)

struct kb {
	const char *p;
	size_t n;
};
#define KB(lit)                        \
	{                              \
		(lit), sizeof(lit) - 1 \
	}

/* ---- the fake host ------------------------------------------------------- */

static struct {
	const char *plugin_file;
	int persistent;
	int durable;		    /* items survive a reopen */
	const char *unique_setting; /* a setting made unique per data_dir */
	json_t *settings;	    /* the store's settings */
	json_t *config;		    /* the instance's settings: {} */
	void *dl;
	const struct plant_plugin_desc *desc;
	void *plugin_state;
	int registered;
	char kind[64];
	const struct plant_store_backend *be;
	void *be_state;
	pthread_mutex_t error_lock;
	char last_error[1024];
} g = {.error_lock = PTHREAD_MUTEX_INITIALIZER};

static char fake_instance;
#define SELF ((plant_instance *)(void *)&fake_instance)

PLANT_PRINTF(3, 4)
static void fake_log(plant_instance *self, int level, const char *fmt, ...)
{
	static const char *const levels[] = {"error", "warn", "info", "debug"};
	va_list ap;

	(void)self;
	flockfile(stderr);
	fprintf(stderr, "[plugin %s] ", level >= 0 && level <= 3 ? levels[level] : "?");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	funlockfile(stderr);
}

PLANT_PRINTF(3, 4)
static void fake_error(plant_instance *self, const char *key, const char *fmt, ...)
{
	va_list ap;

	(void)self;
	pthread_mutex_lock(&g.error_lock);
	va_start(ap, fmt);
	vsnprintf(g.last_error, sizeof(g.last_error), fmt, ap);
	va_end(ap);
	fprintf(stderr, "[plugin error] %s%s%s\n", key ? key : "", key ? ": " : "", g.last_error);
	pthread_mutex_unlock(&g.error_lock);
}

static const json_t *fake_config(plant_instance *self)
{
	(void)self;
	return g.config;
}

static int fake_store_register(plant_instance *self, const char *kind,
			       const struct plant_store_backend *backend, void *backend_state)
{
	(void)self;
	if (!kind || !*kind || !backend)
		return PLANT_E_INVALID;
	if (g.registered)
		return PLANT_E_EXISTS;
	snprintf(g.kind, sizeof(g.kind), "%s", kind);
	g.be = backend;
	g.be_state = backend_state;
	g.registered = 1;
	return PLANT_OK;
}

#ifdef PLANT_TEST_HTTP
/* ---- the fake host's HTTP client: libcurl easy, one handle per thread ---- */

struct fake_res {
	struct plant_http_result pub; /* first: a result pointer is one */
	char *body;
	size_t len, cap;
	char *hdrs; /* "Name: value\r\n"... of the last response */
	size_t hlen, hcap;
	char err[CURL_ERROR_SIZE];
};

static bool buf_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
	if (*len + n + 1 > *cap) {
		size_t ncap = (*len + n + 1) * 2;
		char *nb = realloc(*buf, ncap);

		if (!nb)
			return false;
		*buf = nb;
		*cap = ncap;
	}
	memcpy(*buf + *len, p, n);
	*len += n;
	(*buf)[*len] = '\0';
	return true;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	struct fake_res *r = ud;

	return buf_append(&r->body, &r->len, &r->cap, p, size * n) ? size * n : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	struct fake_res *r = ud;

	if (size * n >= 5 && memcmp(p, "HTTP/", 5) == 0)
		r->hlen = 0; /* a new response (after a 100 Continue) */
	return buf_append(&r->hdrs, &r->hlen, &r->hcap, p, size * n) ? size * n : 0;
}

static pthread_key_t easy_key;
static pthread_once_t easy_once = PTHREAD_ONCE_INIT;

static void easy_free(void *easy)
{
	curl_easy_cleanup(easy);
}

static void easy_key_make(void)
{
	pthread_key_create(&easy_key, easy_free);
}

/* This thread's handle: reset, its connections kept for the next call. */
static CURL *thread_easy(void)
{
	CURL *c;

	pthread_once(&easy_once, easy_key_make);
	c = pthread_getspecific(easy_key);
	if (c) {
		curl_easy_reset(c);
		return c;
	}
	c = curl_easy_init();
	if (c)
		pthread_setspecific(easy_key, c);
	return c;
}

static void fake_http_result_free(struct plant_http_result *res)
{
	struct fake_res *r = (struct fake_res *)res;

	if (!r)
		return;
	free(r->body);
	free(r->hdrs);
	free(r);
}

static const char *fake_http_result_header(const struct plant_http_result *res, const char *name)
{
	const struct fake_res *r = (const struct fake_res *)res;
	static __thread char value[1024];
	const char *found = NULL;
	size_t nlen = strlen(name), flen = 0;

	for (const char *line = r->hdrs; line && *line;) {
		const char *end = strstr(line, "\r\n");
		size_t llen = end ? (size_t)(end - line) : strlen(line);

		if (llen > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
			found = line + nlen + 1;
			flen = llen - nlen - 1;
			while (flen && (*found == ' ' || *found == '\t')) {
				found++;
				flen--;
			}
		}
		line = end ? end + 2 : line + llen;
	}
	if (!found)
		return NULL;
	snprintf(value, sizeof value, "%.*s", (int)flen, found);
	return value;
}

static int fake_http_call_wait(plant_instance *self, const struct plant_http_call *call,
			       struct plant_http_result **out)
{
	const char *key = getenv("AWS_ACCESS_KEY_ID"), *secret = getenv("AWS_SECRET_ACCESS_KEY");
	const char *token = getenv("AWS_SESSION_TOKEN"), *region = getenv("AWS_REGION");
	struct curl_slist *hl = NULL;
	struct fake_res *r;
	char sigv4[256], *userpwd = NULL, line[2048];
	struct timespec t0, t1;
	CURL *c;
	CURLcode cc;

	(void)self;
	if (!out)
		return PLANT_E_INVALID;
	*out = NULL;
	if (!call || call->struct_size < sizeof(struct plant_http_call) || !call->url)
		return PLANT_E_INVALID;
	if (call->aws_service && (!key || !*key || !secret || !*secret))
		return PLANT_E_CONFIG;
	r = calloc(1, sizeof *r);
	c = thread_easy();
	if (!r || !c) {
		free(r);
		return PLANT_E_NOMEM;
	}
	for (const char *const *h = call->headers; h && h[0] && h[1]; h += 2) {
		snprintf(line, sizeof line, "%s: %s", h[0], h[1]);
		hl = curl_slist_append(hl, line);
	}
	if (call->aws_service && token && *token) {
		snprintf(line, sizeof line, "X-Amz-Security-Token: %s", token);
		hl = curl_slist_append(hl, line);
	}
	curl_easy_setopt(c, CURLOPT_URL, call->url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
			 (long)(call->timeout_ms ? call->timeout_ms : 30000));
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->err);
	if (call->body || (call->method && strcmp(call->method, "GET") != 0)) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, call->body ? call->body : "");
	}
	if (call->method && strcmp(call->method, "GET") != 0 && strcmp(call->method, "POST") != 0)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, call->method);
	/* No "Expect:" header of ours: libcurl 7.88 would sign it without
	 * sending it (curl issue 11664). */
	if (call->aws_service) {
		snprintf(sigv4, sizeof sigv4, "aws:amz:%s:%s",
			 call->aws_region    ? call->aws_region
			 : region && *region ? region
					     : "us-east-1",
			 call->aws_service);
		curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4);
		if (asprintf(&userpwd, "%s:%s", key, secret) < 0)
			userpwd = NULL;
		curl_easy_setopt(c, CURLOPT_USERPWD, userpwd);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cc = curl_easy_perform(c);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(hl);
	free(userpwd);
	if (!r->body && !buf_append(&r->body, &r->len, &r->cap, "", 0)) {
		fake_http_result_free(&r->pub);
		return PLANT_E_NOMEM;
	}
	r->pub.body = r->body;
	r->pub.body_len = r->len;
	r->pub.elapsed_us = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000u +
			    (uint64_t)((t1.tv_nsec - t0.tv_nsec) / 1000);
	if (cc == CURLE_OK) {
		r->pub.status = PLANT_OK;
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->pub.http_status);
		r->err[0] = '\0';
	} else {
		r->pub.status = cc == CURLE_OPERATION_TIMEDOUT ? PLANT_E_TIMEOUT : PLANT_E_IO;
		if (!r->err[0])
			snprintf(r->err, sizeof r->err, "%s", curl_easy_strerror(cc));
	}
	r->pub.error = r->err;
	*out = &r->pub;
	return r->pub.status;
}
#endif /* PLANT_TEST_HTTP */

static struct plant_host_api fake_api;

/* ---- helpers --------------------------------------------------------------- */

#define assert_status(expr, want)                                                                \
	do {                                                                                     \
		int rc_ = (expr);                                                                \
		int want_ = (want);                                                              \
		if (rc_ != want_)                                                                \
			fail_msg("%s: %s (%d), expected %s (%d)", #expr, plant_status_name(rc_), \
				 rc_, plant_status_name(want_), want_);                          \
	} while (0)

/* A key for messages: printable bytes as they are, others as \xNN. Not
 * thread-safe (a rotating set of static buffers). */
static const char *show_key(const char *key, size_t len)
{
	static char bufs[4][300];
	static unsigned next;
	char *out = bufs[next++ % 4];
	size_t o = 0;

	for (size_t i = 0; i < len && o < sizeof(bufs[0]) - 16; i++) {
		unsigned char c = (unsigned char)key[i];

		if (c >= 0x20 && c < 0x7f && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, 5, "\\x%02x", c);
	}
	if (o >= sizeof(bufs[0]) - 16)
		o += (size_t)snprintf(out + o, 16, "...(%zu)", len);
	out[o] = '\0';
	return out;
}

/* A value for messages, truncated (static buffer). */
static const char *show_json(const json_t *v)
{
	static char bufs[2][300];
	static unsigned next;
	char *out = bufs[next++ % 2];
	char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

	snprintf(out, sizeof(bufs[0]), "%s", text ? text : "(null)");
	free(text);
	return out;
}

/* JSON text to a value; fails the test on a typo. */
static json_t *jv(const char *text)
{
	json_error_t jerr;
	json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);

	if (!v)
		fail_msg("bad JSON in the test: %s: %s", text, jerr.text);
	return v;
}

/* put(), with `value` stolen. */
static int put_v(void *st, const char *key, size_t len, json_t *value, int cond, uint64_t version,
		 uint64_t ttl_ms, uint64_t now, uint64_t *version_out)
{
	uint64_t ignored = 0;
	int rc;

	if (!value)
		fail_msg("no value to put");
	rc = g.be->put(st, key, len, value, cond, version, ttl_ms, now,
		       version_out ? version_out : &ignored);
	json_decref(value);
	return rc;
}

/* An unconditional put of JSON text that must give `want_version`. */
static void put_ok(void *st, const char *key, size_t len, const char *text, uint64_t want_version)
{
	uint64_t v = 0;
	int rc = put_v(st, key, len, jv(text), PLANT_PUT_ANY, 0, 0, NOW, &v);

	if (rc != PLANT_OK)
		fail_msg("put %s: %s", show_key(key, len), plant_status_name(rc));
	if (v != want_version)
		fail_msg("put %s gave version %" PRIu64 ", expected %" PRIu64, show_key(key, len),
			 v, want_version);
}

static void expect_item_json(void *st, const char *key, size_t len, uint64_t now,
			     const json_t *want, uint64_t want_version)
{
	json_t *v = NULL;
	uint64_t ver = 0;
	int rc = g.be->get(st, key, len, now, &v, &ver);

	if (rc != PLANT_OK)
		fail_msg("get %s at %" PRIu64 ": %s, expected the item", show_key(key, len), now,
			 plant_status_name(rc));
	if (!v)
		fail_msg("get %s: OK without a value", show_key(key, len));
	if (!json_equal(v, want)) {
		const char *got = show_json(v);

		fail_msg("get %s: %s, expected %s", show_key(key, len), got, show_json(want));
	}
	if (ver != want_version)
		fail_msg("get %s: version %" PRIu64 ", expected %" PRIu64, show_key(key, len), ver,
			 want_version);
	json_decref(v);
}

static void expect_item(void *st, const char *key, size_t len, uint64_t now, const char *text,
			uint64_t want_version)
{
	json_t *want = jv(text);

	expect_item_json(st, key, len, now, want, want_version);
	json_decref(want);
}

static void expect_missing(void *st, const char *key, size_t len, uint64_t now)
{
	json_t *v = NULL;
	uint64_t ver = 0;
	int rc = g.be->get(st, key, len, now, &v, &ver);

	if (rc != PLANT_E_NOTFOUND)
		fail_msg("get %s at %" PRIu64 ": %s (%s), expected not found", show_key(key, len),
			 now, plant_status_name(rc), rc == PLANT_OK ? show_json(v) : "");
	if (v)
		fail_msg("get %s: not found, but *value_out was set", show_key(key, len));
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* upper case is refused too: the contract says lower case */
}

/* The key bytes of a scan item (from "key" or "key_hex") into `out`. */
static size_t item_key(const json_t *item, char *out, size_t cap)
{
	const json_t *k = json_object_get(item, "key");
	const json_t *hex = json_object_get(item, "key_hex");
	size_t len;

	if ((k != NULL) == (hex != NULL))
		fail_msg("scan item %s: wants exactly one of \"key\", \"key_hex\"",
			 show_json(item));
	if (k) {
		if (!json_is_string(k))
			fail_msg("scan item %s: \"key\" is not a string", show_json(item));
		len = json_string_length(k);
		if (len > cap)
			fail_msg("scan item: key of %zu bytes", len);
		memcpy(out, json_string_value(k), len);
		if (memchr(out, 0, len))
			fail_msg("scan item %s: a key with NUL must come as \"key_hex\"",
				 show_json(item));
		return len;
	}
	if (!json_is_string(hex) || json_string_length(hex) % 2 != 0)
		fail_msg("scan item %s: \"key_hex\" is not a string of hex pairs", show_json(item));
	len = json_string_length(hex) / 2;
	if (len > cap)
		fail_msg("scan item: key of %zu bytes", len);
	for (size_t i = 0; i < len; i++) {
		int hi = hexval(json_string_value(hex)[2 * i]);
		int lo = hexval(json_string_value(hex)[2 * i + 1]);

		if (hi < 0 || lo < 0)
			fail_msg("scan item %s: \"key_hex\" is not lower-case hex",
				 show_json(item));
		out[i] = (char)(hi << 4 | lo);
	}
	if (!memchr(out, 0, len)) {
		json_t *s = json_stringn(out, len); /* NULL unless UTF-8 */

		if (s) {
			json_decref(s);
			fail_msg("scan item %s: a UTF-8 key without NUL must come as \"key\"",
				 show_json(item));
		}
	}
	return len;
}

/* scan() that must succeed; each item is checked for its shape. */
static json_t *scan_ok(void *st, const char *prefix, size_t prefix_len, const char *after,
		       size_t after_len, size_t limit, uint64_t now)
{
	json_t *items = NULL;
	int rc = g.be->scan(st, prefix, prefix_len, after, after_len, limit, now, &items);
	size_t i;
	json_t *item;

	if (rc != PLANT_OK)
		fail_msg("scan prefix %s after %s: %s", show_key(prefix, prefix_len),
			 after ? show_key(after, after_len) : "(none)", plant_status_name(rc));
	if (!json_is_array(items))
		fail_msg("scan: not an array: %s", show_json(items));
	json_array_foreach(items, i, item)
	{
		char key[KEY_MAX];
		const json_t *ver = json_object_get(item, "version");

		if (!json_is_object(item) || !json_object_get(item, "value"))
			fail_msg("scan item %zu: %s has no \"value\"", i, show_json(item));
		if (!json_is_integer(ver) || json_integer_value(ver) < 1)
			fail_msg("scan item %zu: %s has no version >= 1", i, show_json(item));
		item_key(item, key, sizeof(key));
	}
	return items;
}

/* The items' keys are `want`, in that order. */
static void expect_keys(const json_t *items, const struct kb *want, size_t n)
{
	char key[KEY_MAX];

	if (json_array_size(items) != n)
		fail_msg("scan gave %zu items, expected %zu: %s", json_array_size(items), n,
			 show_json(items));
	for (size_t i = 0; i < n; i++) {
		size_t len = item_key(json_array_get(items, i), key, sizeof(key));

		if (len != want[i].n || memcmp(key, want[i].p, len) != 0)
			fail_msg("scan item %zu: key %s, expected %s", i, show_key(key, len),
				 show_key(want[i].p, want[i].n));
	}
}

static void scan_expect(void *st, struct kb prefix, struct kb after, size_t limit, uint64_t now,
			const struct kb *want, size_t n)
{
	json_t *items = scan_ok(st, prefix.p, prefix.n, after.p, after.n, limit, now);

	expect_keys(items, want, n);
	json_decref(items);
}

/* SCAN_EXPECT(store, KL(prefix), KL(after) or NOAFTER, limit, now, KB(key)...) */
#define KL(lit)	 ((struct kb){(lit), sizeof(lit) - 1})
#define KN(p, n) ((struct kb){(p), (n)})
#define NOAFTER	 ((struct kb){NULL, 0})
#define SCAN_EXPECT(st, prefix, after, limit, now, ...)           \
	do {                                                      \
		const struct kb want_[] = {__VA_ARGS__};          \
		scan_expect(st, prefix, after, limit, now, want_, \
			    sizeof(want_) / sizeof(want_[0]));    \
	} while (0)
#define SCAN_EXPECT_NONE(st, prefix, after, limit, now) \
	scan_expect(st, prefix, after, limit, now, NULL, 0)

/* ---- fixture: a fresh store in a fresh data_dir per test ----------------- */

struct ctx {
	char *dir;
	void *store;
};

static int open_store(const char *dir, void **out, char *err, size_t errlen)
{
	json_t *settings = g.settings;
	int rc;

	err[0] = '\0';
	*out = NULL;
	if (g.unique_setting) {
		const char *base = strrchr(dir, '/');
		const char *value =
			json_string_value(json_object_get(g.settings, g.unique_setting));
		char unique[512];

		snprintf(unique, sizeof(unique), "%s-%s", value ? value : STORE_NAME,
			 base ? base + 1 : dir);
		settings = json_deep_copy(g.settings);
		json_object_set_new(settings, g.unique_setting, json_string(unique));
	}
	rc = g.be->open(g.be_state, STORE_NAME, settings, dir, out, err, errlen);
	if (settings != g.settings)
		json_decref(settings);
	return rc;
}

static void *must_open(const char *dir)
{
	char err[1024];
	void *st = NULL;
	int rc = open_store(dir, &st, err, sizeof(err));

	if (rc != PLANT_OK || !st)
		fail_msg("open store %s in %s: %s: %s", STORE_NAME, dir, plant_status_name(rc),
			 err);
	return st;
}

/* Where a persistent backend keeps the store, relative to its data_dir. */
static const char *db_rel(void)
{
	const char *p = json_string_value(json_object_get(g.settings, "path"));

	return p ? p : STORE_NAME ".db";
}

/* The same, in data_dir `dir`. */
static void db_path(const char *dir, char *out, size_t outlen)
{
	tu_join(out, outlen, dir, db_rel());
}

static int fx_setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->dir = tu_mkdtemp();
	c->store = must_open(c->dir);
	*state = c;
	return 0;
}

static int fx_teardown(void **state)
{
	struct ctx *c = *state;

	if (c->store)
		g.be->close(c->store);
	chmod(c->dir, 0755); /* after the read-only test */
	tu_rmtree(c->dir);
	free(c->dir);
	free(c);
	return 0;
}

static void *store_of(void **state)
{
	return ((struct ctx *)*state)->store;
}

/* ---- get, put, versions ------------------------------------------------------ */

static void test_get_missing(void **state)
{
	void *st = store_of(state);

	expect_missing(st, K("nope"), NOW);
	expect_missing(st, K("n\0pe"), NOW);
}

static void test_put_get_versions(void **state)
{
	void *st = store_of(state);
	uint64_t v = 0;

	assert_status(put_v(st, K("k"), jv("{\"a\": 1}"), PLANT_PUT_ANY, 0, 0, NOW, &v), PLANT_OK);
	assert_int_equal(v, 1);
	expect_item(st, K("k"), NOW, "{\"a\": 1}", 1);

	assert_status(put_v(st, K("k"), jv("[1, \"two\"]"), PLANT_PUT_ANY, 0, 0, NOW, &v),
		      PLANT_OK);
	assert_int_equal(v, 2);
	expect_item(st, K("k"), NOW, "[1, \"two\"]", 2);

	/* The version argument means nothing without IF_VERSION. */
	assert_status(put_v(st, K("k"), jv("3"), PLANT_PUT_ANY, 77, 0, NOW, &v), PLANT_OK);
	assert_int_equal(v, 3);
	expect_item(st, K("k"), NOW, "3", 3);

	/* Other keys keep their own versions. */
	put_ok(st, K("other"), "null", 1);
	expect_item(st, K("k"), NOW, "3", 3);
}

static void test_put_if_absent(void **state)
{
	void *st = store_of(state);
	uint64_t v = 0;

	assert_status(put_v(st, K("once"), jv("\"first\""), PLANT_PUT_IF_ABSENT, 0, 0, NOW, &v),
		      PLANT_OK);
	assert_int_equal(v, 1);
	expect_item(st, K("once"), NOW, "\"first\"", 1);

	assert_status(put_v(st, K("once"), jv("\"second\""), PLANT_PUT_IF_ABSENT, 0, 0, NOW, NULL),
		      PLANT_E_CONDITION);
	expect_item(st, K("once"), NOW, "\"first\"", 1);

	/* After a delete the key is absent again, and starts at version 1. */
	assert_status(g.be->del(st, K("once"), PLANT_PUT_ANY, 0, NOW), PLANT_OK);
	assert_status(put_v(st, K("once"), jv("\"third\""), PLANT_PUT_IF_ABSENT, 0, 0, NOW, &v),
		      PLANT_OK);
	assert_int_equal(v, 1);
	expect_item(st, K("once"), NOW, "\"third\"", 1);
}

static void test_put_if_version(void **state)
{
	void *st = store_of(state);
	uint64_t v = 0;

	put_ok(st, K("c"), "\"v1\"", 1);
	assert_status(put_v(st, K("c"), jv("\"v2\""), PLANT_PUT_IF_VERSION, 1, 0, NOW, &v),
		      PLANT_OK);
	assert_int_equal(v, 2);
	expect_item(st, K("c"), NOW, "\"v2\"", 2);

	/* A stale version, and one from the future. */
	assert_status(put_v(st, K("c"), jv("\"stale\""), PLANT_PUT_IF_VERSION, 1, 0, NOW, NULL),
		      PLANT_E_CONDITION);
	assert_status(put_v(st, K("c"), jv("\"future\""), PLANT_PUT_IF_VERSION, 3, 0, NOW, NULL),
		      PLANT_E_CONDITION);
	expect_item(st, K("c"), NOW, "\"v2\"", 2);

	/* A missing key has no version to match, not even 0. */
	assert_status(put_v(st, K("m"), jv("1"), PLANT_PUT_IF_VERSION, 1, 0, NOW, NULL),
		      PLANT_E_CONDITION);
	assert_status(put_v(st, K("m"), jv("1"), PLANT_PUT_IF_VERSION, 0, 0, NOW, NULL),
		      PLANT_E_CONDITION);
	expect_missing(st, K("m"), NOW);
}

static void test_delete(void **state)
{
	void *st = store_of(state);

	put_ok(st, K("d"), "1", 1);
	assert_status(g.be->del(st, K("d"), PLANT_PUT_ANY, 0, NOW), PLANT_OK);
	expect_missing(st, K("d"), NOW);
	assert_status(g.be->del(st, K("d"), PLANT_PUT_ANY, 0, NOW), PLANT_E_NOTFOUND);
	assert_status(g.be->del(st, K("never"), PLANT_PUT_ANY, 0, NOW), PLANT_E_NOTFOUND);

	put_ok(st, K("e"), "\"a\"", 1);
	put_ok(st, K("e"), "\"b\"", 2);
	assert_status(g.be->del(st, K("e"), PLANT_PUT_IF_VERSION, 1, NOW), PLANT_E_CONDITION);
	assert_status(g.be->del(st, K("e"), PLANT_PUT_IF_VERSION, 3, NOW), PLANT_E_CONDITION);
	expect_item(st, K("e"), NOW, "\"b\"", 2);
	assert_status(g.be->del(st, K("e"), PLANT_PUT_IF_VERSION, 2, NOW), PLANT_OK);
	expect_missing(st, K("e"), NOW);
	assert_status(g.be->del(st, K("e"), PLANT_PUT_IF_VERSION, 2, NOW), PLANT_E_CONDITION);

	/* Written again, the key starts over at version 1. */
	put_ok(st, K("e"), "\"c\"", 1);
}

/* ---- TTLs ------------------------------------------------------------------- */

static void test_ttl(void **state)
{
	void *st = store_of(state);
	const uint64_t t0 = 10000;
	uint64_t v = 0;

	assert_status(put_v(st, K("ttl/a"), jv("\"a\""), PLANT_PUT_ANY, 0, 1000, t0, &v), PLANT_OK);
	assert_int_equal(v, 1);
	assert_status(put_v(st, K("ttl/b"), jv("\"b\""), PLANT_PUT_ANY, 0, 1000, t0, &v), PLANT_OK);
	assert_status(put_v(st, K("ttl/keep"), jv("\"k\""), PLANT_PUT_ANY, 0, 0, t0, &v), PLANT_OK);

	expect_item(st, K("ttl/a"), t0, "\"a\"", 1);
	expect_item(st, K("ttl/a"), 10999, "\"a\"", 1);
	SCAN_EXPECT(st, KL("ttl/"), NOAFTER, 100, 10999, KB("ttl/a"), KB("ttl/b"), KB("ttl/keep"));

	/* From now + ttl on, the item is gone for every call. */
	expect_missing(st, K("ttl/a"), 11000);
	expect_missing(st, K("ttl/b"), 11000);
	SCAN_EXPECT(st, KL("ttl/"), NOAFTER, 100, 11000, KB("ttl/keep"));
	SCAN_EXPECT(st, KL(""), NOAFTER, 100, 11000, KB("ttl/keep"));
	assert_status(put_v(st, K("ttl/a"), jv("1"), PLANT_PUT_IF_VERSION, 1, 0, 11000, NULL),
		      PLANT_E_CONDITION);

	/* Expired counts as absent: IF_ABSENT succeeds and starts at 1; the
	 * write has no TTL, so the item stays. */
	assert_status(put_v(st, K("ttl/b"), jv("\"b2\""), PLANT_PUT_IF_ABSENT, 0, 0, 11000, &v),
		      PLANT_OK);
	assert_int_equal(v, 1);
	expect_item(st, K("ttl/b"), 11000, "\"b2\"", 1);

	/* expire() removes what has expired (ttl/a) and nothing else. */
	size_t n = g.be->expire(st, 11000);
	if (n < 1)
		fail_msg("expire(11000) returned %zu, expected >= 1", n);
	/* Removed for good: not even a clock that went back finds it. */
	expect_missing(st, K("ttl/a"), 10500);
	assert_int_equal(g.be->expire(st, 11000), 0);
	expect_item(st, K("ttl/b"), 20000, "\"b2\"", 1);
	expect_item(st, K("ttl/keep"), 20000, "\"k\"", 1);
	SCAN_EXPECT(st, KL("ttl/"), NOAFTER, 100, 20000, KB("ttl/b"), KB("ttl/keep"));
}

static void test_ttl_rewrite(void **state)
{
	void *st = store_of(state);
	uint64_t v = 0;

	/* A write without a TTL clears an earlier one... */
	assert_status(put_v(st, K("r"), jv("1"), PLANT_PUT_ANY, 0, 1000, 10000, &v), PLANT_OK);
	assert_status(put_v(st, K("r"), jv("2"), PLANT_PUT_ANY, 0, 0, 10500, &v), PLANT_OK);
	assert_int_equal(v, 2);
	expect_item(st, K("r"), 50000, "2", 2);

	/* ...and a new TTL counts from the write's own now. */
	assert_status(put_v(st, K("s"), jv("1"), PLANT_PUT_ANY, 0, 1000, 10000, &v), PLANT_OK);
	assert_status(put_v(st, K("s"), jv("2"), PLANT_PUT_IF_VERSION, 1, 1000, 10800, &v),
		      PLANT_OK);
	expect_item(st, K("s"), 11500, "2", 2);
	expect_missing(st, K("s"), 11800);

	/* A huge TTL does not wrap around into the past. */
	assert_status(put_v(st, K("h"), jv("1"), PLANT_PUT_ANY, 0, UINT64_MAX, 10000, &v),
		      PLANT_OK);
	expect_item(st, K("h"), 10000000000000ull, "1", 1);
	assert_int_equal(g.be->expire(st, 10000000000000ull), 1); /* s */
	expect_item(st, K("h"), 10000, "1", 1);
	expect_item(st, K("r"), 10000, "2", 2);
}

/* ---- scan --------------------------------------------------------------------- */

static void test_scan_prefix_and_paging(void **state)
{
	void *st = store_of(state);

	/* Written out of order; a/1 twice. */
	put_ok(st, K("b/1"), "\"b1\"", 1);
	put_ok(st, K("a/3"), "\"a3\"", 1);
	put_ok(st, K("a/1"), "\"old\"", 1);
	put_ok(st, K("a/2"), "{\"n\": 2}", 1);
	put_ok(st, K("a/1"), "\"a1\"", 2);

	json_t *items = scan_ok(st, K("a/"), NULL, 0, 100, NOW);
	const struct kb want[] = {KB("a/1"), KB("a/2"), KB("a/3")};
	expect_keys(items, want, 3);
	json_t *want_items = jv("[{\"key\": \"a/1\", \"value\": \"a1\", \"version\": 2},"
				" {\"key\": \"a/2\", \"value\": {\"n\": 2}, \"version\": 1},"
				" {\"key\": \"a/3\", \"value\": \"a3\", \"version\": 1}]");
	if (!json_equal(items, want_items)) {
		const char *got = show_json(items);

		fail_msg("scan a/: %s, expected %s", got, show_json(want_items));
	}
	json_decref(want_items);
	json_decref(items);

	/* Pages: limit 2, then on after the last key. */
	SCAN_EXPECT(st, KL("a/"), NOAFTER, 2, NOW, KB("a/1"), KB("a/2"));
	SCAN_EXPECT(st, KL("a/"), KL("a/2"), 2, NOW, KB("a/3"));
	SCAN_EXPECT_NONE(st, KL("a/"), KL("a/3"), 2, NOW);

	/* No prefix: everything, in byte order. */
	SCAN_EXPECT(st, KL(""), NOAFTER, 100, NOW, KB("a/1"), KB("a/2"), KB("a/3"), KB("b/1"));
	SCAN_EXPECT(st, KL(""), KL("a/3"), 100, NOW, KB("b/1"));
	SCAN_EXPECT(st, KL("b"), NOAFTER, 100, NOW, KB("b/1"));
	SCAN_EXPECT(st, KL("b/1"), NOAFTER, 100, NOW, KB("b/1"));
	SCAN_EXPECT_NONE(st, KL("c"), NOAFTER, 100, NOW);
	SCAN_EXPECT_NONE(st, KL("a/1/"), NOAFTER, 100, NOW);
}

static void test_scan_byte_order(void **state)
{
	void *st = store_of(state);

	/* Byte order, not locale order: upper case first, a key before the
	 * longer keys it starts, bytes >= 0x80 last. */
	put_ok(st, K("\xc3\xa9"), "1", 1); /* é */
	put_ok(st, K("ab"), "1", 1);
	put_ok(st, K("\x7f"), "1", 1);
	put_ok(st, K("a"), "1", 1);
	put_ok(st, K("Z"), "1", 1);
	put_ok(st, K("a\x01"), "1", 1);
	put_ok(st, K("a b"), "1", 1);
	SCAN_EXPECT(st, KL(""), NOAFTER, 100, NOW, KB("Z"), KB("a"), KB("a\x01"), KB("a b"),
		    KB("ab"), KB("\x7f"), KB("\xc3\xa9"));
	SCAN_EXPECT(st, KL("a"), KL("a"), 100, NOW, KB("a\x01"), KB("a b"), KB("ab"));
}

static void test_scan_prefix_edges(void **state)
{
	void *st = store_of(state);
	static const char *const keys[] = {"a",	   "a\xff",    "a\xff\xff",   "b",
					   "\xff", "\xff\xff", "\xff\xff\x01"};

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		put_ok(st, keys[i], strlen(keys[i]), "true", 1);
	put_ok(st, K("a\xff\0"), "true", 1);

	/* Prefixes ending in 0xff bytes have no "next prefix" to stop at. */
	SCAN_EXPECT(st, KL("a\xff"), NOAFTER, 100, NOW, KB("a\xff"), KB("a\xff\0"),
		    KB("a\xff\xff"));
	SCAN_EXPECT(st, KL("\xff"), NOAFTER, 100, NOW, KB("\xff"), KB("\xff\xff"),
		    KB("\xff\xff\x01"));
	SCAN_EXPECT(st, KL("\xff\xff"), NOAFTER, 100, NOW, KB("\xff\xff"), KB("\xff\xff\x01"));

	/* `after` below the prefix, inside it, and past it. */
	SCAN_EXPECT(st, KL("a"), KL("0"), 100, NOW, KB("a"), KB("a\xff"), KB("a\xff\0"),
		    KB("a\xff\xff"));
	SCAN_EXPECT(st, KL("a"), KL("a\xff\0"), 100, NOW, KB("a\xff\xff"));
	SCAN_EXPECT(st, KL("a"), KL("a\x80"), 100, NOW, KB("a\xff"), KB("a\xff\0"),
		    KB("a\xff\xff"));
	SCAN_EXPECT_NONE(st, KL("a"), KL("c"), 100, NOW);
	SCAN_EXPECT(st, KL(""), KL("a\xff\xff"), 2, NOW, KB("b"), KB("\xff"));
	SCAN_EXPECT_NONE(st, KL("zz"), NOAFTER, 100, NOW);
}

/* ---- keys ------------------------------------------------------------------------ */

static void test_binary_keys(void **state)
{
	void *st = store_of(state);

	put_ok(st, K("x\0y"), "\"xy\"", 1);
	put_ok(st, K("x\0z"), "\"xz\"", 1);
	put_ok(st, K("x"), "\"x\"", 1);
	put_ok(st, K("x\0y"), "\"xy2\"", 2);
	expect_item(st, K("x\0y"), NOW, "\"xy2\"", 2);
	expect_item(st, K("x\0z"), NOW, "\"xz\"", 1);
	expect_item(st, K("x"), NOW, "\"x\"", 1);
	expect_missing(st, K("x\0"), NOW);

	json_t *items = scan_ok(st, K("x"), NULL, 0, 100, NOW);
	json_t *want = jv("[{\"key\": \"x\", \"value\": \"x\", \"version\": 1},"
			  " {\"key_hex\": \"780079\", \"value\": \"xy2\", \"version\": 2},"
			  " {\"key_hex\": \"78007a\", \"value\": \"xz\", \"version\": 1}]");
	if (!json_equal(items, want)) {
		const char *got = show_json(items);

		fail_msg("scan x: %s, expected %s", got, show_json(want));
	}
	json_decref(want);
	json_decref(items);
	SCAN_EXPECT(st, KL("x\0"), NOAFTER, 100, NOW, KB("x\0y"), KB("x\0z"));
	SCAN_EXPECT(st, KL("x"), KL("x\0y"), 100, NOW, KB("x\0z"));

	/* Not UTF-8. */
	put_ok(st, K("\xff\xfe"), "\"ff\"", 1);
	put_ok(st, K("\xc3("), "\"bad\"", 1); /* a lead byte without its continuation */
	expect_item(st, K("\xff\xfe"), NOW, "\"ff\"", 1);
	expect_item(st, K("\xc3("), NOW, "\"bad\"", 1);
	expect_missing(st, K("\xff"), NOW);
	items = scan_ok(st, K("\xff"), NULL, 0, 100, NOW);
	want = jv("[{\"key_hex\": \"fffe\", \"value\": \"ff\", \"version\": 1}]");
	if (!json_equal(items, want))
		fail_msg("scan \\xff: %s", show_json(items));
	json_decref(want);
	json_decref(items);
	items = scan_ok(st, K("\xc3"), NULL, 0, 100, NOW);
	want = jv("[{\"key_hex\": \"c328\", \"value\": \"bad\", \"version\": 1}]");
	if (!json_equal(items, want))
		fail_msg("scan \\xc3: %s", show_json(items));
	json_decref(want);
	json_decref(items);

	/* UTF-8 keys come as text. */
	put_ok(st, K("caf\xc3\xa9/\xe2\x82\xac"), "1", 1);
	items = scan_ok(st, K("caf"), NULL, 0, 100, NOW);
	want = jv("[{\"key\": \"caf\\u00e9/\\u20ac\", \"value\": 1, \"version\": 1}]");
	if (!json_equal(items, want))
		fail_msg("scan caf: %s", show_json(items));
	json_decref(want);
	json_decref(items);
}

static void test_key_lengths(void **state)
{
	void *st = store_of(state);
	char big[KEY_MAX + 1], big2[KEY_MAX];
	uint64_t v = 0;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + i % 26);
	memcpy(big2, big, KEY_MAX);
	big2[KEY_MAX - 1] = '#'; /* differs in the last byte only */
	put_ok(st, big, KEY_MAX, "\"longest\"", 1);
	put_ok(st, big2, KEY_MAX, "\"other\"", 1);
	expect_item(st, big2, KEY_MAX, NOW, "\"other\"", 1);
	expect_item(st, big, KEY_MAX, NOW, "\"longest\"", 1);
	expect_missing(st, big, KEY_MAX - 1, NOW);

	json_t *items = scan_ok(st, big, 10, NULL, 0, 100, NOW);
	assert_int_equal(json_array_size(items), 2);
	const json_t *k = json_object_get(json_array_get(items, 1), "key");
	assert_int_equal(json_string_length(k), KEY_MAX);
	assert_memory_equal(json_string_value(k), big, KEY_MAX);
	json_decref(items);

	put_ok(st, K("1"), "1", 1); /* the shortest */
	expect_item(st, K("1"), NOW, "1", 1);

	/* 0 and 1025 bytes are not keys. */
	assert_status(put_v(st, big, KEY_MAX + 1, jv("1"), PLANT_PUT_ANY, 0, 0, NOW, &v),
		      PLANT_E_INVALID);
	assert_status(put_v(st, big, 0, jv("1"), PLANT_PUT_ANY, 0, 0, NOW, &v), PLANT_E_INVALID);
	json_t *out = NULL;
	assert_status(g.be->get(st, big, KEY_MAX + 1, NOW, &out, &v), PLANT_E_INVALID);
	assert_null(out);
	assert_status(g.be->del(st, big, KEY_MAX + 1, PLANT_PUT_ANY, 0, NOW), PLANT_E_INVALID);
	SCAN_EXPECT(st, KN(big, 10), NOAFTER, 100, NOW, {big2, KEY_MAX}, {big, KEY_MAX});
}

/* ---- values --------------------------------------------------------------------- */

static void roundtrip(void *st, const char *key, size_t len, json_t *value, uint64_t want_version)
{
	uint64_t v = 0;

	assert_status(g.be->put(st, key, len, value, PLANT_PUT_ANY, 0, 0, NOW, &v), PLANT_OK);
	assert_int_equal(v, want_version);
	expect_item_json(st, key, len, NOW, value, want_version);
	json_t *items = scan_ok(st, key, len, NULL, 0, 1, NOW);
	assert_int_equal(json_array_size(items), 1);
	if (!json_equal(json_object_get(json_array_get(items, 0), "value"), value))
		fail_msg("scan %s: the value differs", show_key(key, len));
	json_decref(items);
	json_decref(value);
}

static void test_values(void **state)
{
	void *st = store_of(state);
	const size_t mb = 1 << 20;
	char *text = malloc(mb);

	assert_non_null(text);
	for (size_t i = 0; i < mb; i++)
		text[i] = (char)('a' + i % 26);
	roundtrip(st, K("big"), json_stringn(text, mb), 1);
	free(text);

	roundtrip(st, K("nested"),
		  jv("{\"a\": [1, 2.5, -0.125, null, true, false, {\"b\": {\"c\": []}}],"
		     " \"empty\": {}, \"s\": \"caf\\u00e9 \\\"q\\\" \\\\ \\n\\t\\u0001\","
		     " \"deep\": [[[[[[[[[[\"x\"]]]]]]]]]]}"),
		  1);
	roundtrip(st, K("reals"),
		  json_pack("[f, f, f, f, f]", 0.1, 1e300, -2.5e-300, 1.0 / 3, -0.0), 1);
	roundtrip(st, K("ints"),
		  json_pack("[I, I, i]", (json_int_t)INT64_MAX, (json_int_t)INT64_MIN, 0), 1);
	roundtrip(st, K("nul"), json_stringn("a\0b", 3), 1);
	roundtrip(st, K("nul"), json_pack("{s:o}", "k", json_stringn("\0", 1)), 2);

	/* Any JSON value, not only containers. */
	roundtrip(st, K("scalar"), json_null(), 1);
	roundtrip(st, K("scalar"), json_true(), 2);
	roundtrip(st, K("scalar"), json_integer(42), 3);
	roundtrip(st, K("scalar"), json_string(""), 4);
	roundtrip(st, K("scalar"), json_array(), 5);
}

static void test_value_isolation(void **state)
{
	void *st = store_of(state);
	json_t *value = jv("{\"n\": 1, \"list\": [1]}");
	json_t *got = NULL;
	uint64_t v = 0;

	/* The value is borrowed: changing it after the put changes nothing. */
	assert_status(g.be->put(st, K("iso"), value, PLANT_PUT_ANY, 0, 0, NOW, &v), PLANT_OK);
	json_object_set_new(value, "n", json_integer(2));
	json_array_append_new(json_object_get(value, "list"), json_integer(2));
	json_decref(value);
	expect_item(st, K("iso"), NOW, "{\"n\": 1, \"list\": [1]}", 1);

	/* Nor does changing what get() handed out. */
	assert_status(g.be->get(st, K("iso"), NOW, &got, &v), PLANT_OK);
	json_object_set_new(got, "n", json_integer(3));
	json_object_clear(got);
	json_decref(got);
	expect_item(st, K("iso"), NOW, "{\"n\": 1, \"list\": [1]}", 1);

	/* Nor what scan() handed out. */
	json_t *items = scan_ok(st, K("iso"), NULL, 0, 10, NOW);
	json_object_set_new(json_object_get(json_array_get(items, 0), "value"), "n",
			    json_integer(4));
	json_decref(items);
	expect_item(st, K("iso"), NOW, "{\"n\": 1, \"list\": [1]}", 1);
}

/* ---- batches --------------------------------------------------------------------- */

static struct plant_store_op put_op(const char *key, size_t len, const json_t *value, int cond,
				    uint64_t version)
{
	return (struct plant_store_op){
		.key = key, .key_len = len, .value = value, .cond = cond, .version = version};
}

static struct plant_store_op del_op(const char *key, size_t len, int cond, uint64_t version)
{
	return (struct plant_store_op){
		.is_delete = 1, .key = key, .key_len = len, .cond = cond, .version = version};
}

static void test_batch_applies(void **state)
{
	void *st = store_of(state);
	json_t *v1 = jv("{\"i\": 1}"), *v2 = jv("{\"i\": 2}"), *v3 = jv("{\"i\": 3}");
	size_t failed = 99;
	int atomic = -1;

	put_ok(st, K("gone"), "0", 1);
	put_ok(st, K("b/2"), "0", 1);
	struct plant_store_op ops[] = {
		put_op(K("b/1"), v1, PLANT_PUT_ANY, 0),
		put_op(K("b/2"), v2, PLANT_PUT_IF_VERSION, 1),
		put_op(K("b/3"), v3, PLANT_PUT_IF_ABSENT, 0),
		del_op(K("gone"), PLANT_PUT_ANY, 0),
	};
	assert_status(g.be->batch(st, ops, 4, NOW, &failed, &atomic), PLANT_OK);
	if (atomic != 0 && atomic != 1)
		fail_msg("batch did not report atomic_out (%d)", atomic);
	print_message("%s batches are %satomic\n", g.kind, atomic ? "" : "not ");
	json_decref(v1);
	json_decref(v2);
	json_decref(v3);

	expect_item(st, K("b/1"), NOW, "{\"i\": 1}", 1);
	expect_item(st, K("b/2"), NOW, "{\"i\": 2}", 2);
	expect_item(st, K("b/3"), NOW, "{\"i\": 3}", 1);
	expect_missing(st, K("gone"), NOW);

	/* TTLs in a batch. */
	json_t *t = jv("\"t\"");
	struct plant_store_op ttl_ops[] = {put_op(K("b/ttl"), t, PLANT_PUT_ANY, 0)};
	ttl_ops[0].ttl_ms = 1000;
	assert_status(g.be->batch(st, ttl_ops, 1, 10000, &failed, &atomic), PLANT_OK);
	json_decref(t);
	expect_item(st, K("b/ttl"), 10999, "\"t\"", 1);
	expect_missing(st, K("b/ttl"), 11000);
}

/* Ops see the state the ops before them leave. */
static void test_batch_in_order(void **state)
{
	void *st = store_of(state);
	json_t *a = jv("\"a\""), *b = jv("\"b\""), *c = jv("\"c\"");
	size_t failed = 99;
	int atomic = -1;

	put_ok(st, K("t"), "\"old\"", 1);
	struct plant_store_op ops[] = {
		put_op(K("s"), a, PLANT_PUT_IF_ABSENT, 0),
		put_op(K("s"), b, PLANT_PUT_IF_VERSION, 1),
		del_op(K("t"), PLANT_PUT_IF_VERSION, 1),
		put_op(K("t"), c, PLANT_PUT_IF_ABSENT, 0),
	};
	assert_status(g.be->batch(st, ops, 4, NOW, &failed, &atomic), PLANT_OK);
	expect_item(st, K("s"), NOW, "\"b\"", 2);
	expect_item(st, K("t"), NOW, "\"c\"", 1);

	/* An empty batch is no error. */
	assert_status(g.be->batch(st, ops, 0, NOW, &failed, &atomic), PLANT_OK);
	json_decref(a);
	json_decref(b);
	json_decref(c);
}

/* A put given as checked JSON text (`value` NULL), as the host's durable
 * queues write: not NUL-terminated, spaced as the writer chose. */
static void test_batch_value_text(void **state)
{
	void *st = store_of(state);
	static const char buf[] = "{ \"a\" : [1, 2.5, null], \"s\": \"x\\u0000y\" }trailing";
	size_t failed = 99;
	int atomic = -1;

	put_ok(st, K("vt/2"), "\"old\"", 1);
	struct plant_store_op ops[] = {
		put_op(K("vt/1"), NULL, PLANT_PUT_IF_ABSENT, 0),
		put_op(K("vt/2"), NULL, PLANT_PUT_IF_VERSION, 1),
	};
	ops[0].value_text = buf;
	ops[0].value_text_len = strlen(buf) - strlen("trailing");
	ops[1].value_text = "7";
	ops[1].value_text_len = 1;
	assert_status(g.be->batch(st, ops, 2, NOW, &failed, &atomic), PLANT_OK);

	json_t *want = json_pack("{s:[i, f, n], s:s%}", "a", 1, 2.5, "s", "x\0y", (size_t)3);
	expect_item_json(st, K("vt/1"), NOW, want, 1);
	expect_item(st, K("vt/2"), NOW, "7", 2);
	json_t *items = scan_ok(st, K("vt/"), NULL, 0, 10, NOW);
	if (!json_equal(json_object_get(json_array_get(items, 0), "value"), want))
		fail_msg("scan vt/: %s", show_json(items));
	json_decref(items);
	json_decref(want);

	/* Conditions hold for text as for trees. */
	failed = 99;
	assert_status(g.be->batch(st, ops, 2, NOW, &failed, &atomic), PLANT_E_CONDITION);
	assert_int_equal(failed, 0);
	expect_item(st, K("vt/2"), NOW, "7", 2);
}

static void test_batch_condition_fails(void **state)
{
	void *st = store_of(state);
	json_t *n1 = jv("\"n1\""), *nv = jv("{\"new\": true}"), *up = jv("\"updated\"");
	size_t failed = 99;
	int atomic = -1;

	put_ok(st, K("exists"), "{\"old\": true}", 1);
	put_ok(st, K("upd"), "\"before\"", 1);
	put_ok(st, K("victim"), "\"alive\"", 1);
	struct plant_store_op ops[] = {
		put_op(K("n/1"), n1, PLANT_PUT_ANY, 0),
		put_op(K("exists"), nv, PLANT_PUT_IF_ABSENT, 0),
		put_op(K("upd"), up, PLANT_PUT_ANY, 0),
		del_op(K("victim"), PLANT_PUT_ANY, 0),
	};
	assert_status(g.be->batch(st, ops, 4, NOW, &failed, &atomic), PLANT_E_CONDITION);
	assert_int_equal(failed, 1);
	if (atomic != 0 && atomic != 1)
		fail_msg("batch did not report atomic_out (%d)", atomic);
	expect_item(st, K("exists"), NOW, "{\"old\": true}", 1);
	if (atomic) {
		expect_missing(st, K("n/1"), NOW);
		expect_item(st, K("upd"), NOW, "\"before\"", 1);
		expect_item(st, K("victim"), NOW, "\"alive\"", 1);
	}

	/* A wrong version further on, then a wrong version first. */
	struct plant_store_op ops2[] = {
		put_op(K("n/1"), n1, PLANT_PUT_ANY, 0),
		del_op(K("victim"), PLANT_PUT_ANY, 0),
		put_op(K("upd"), up, PLANT_PUT_IF_VERSION, 7),
	};
	failed = 99;
	atomic = -1;
	assert_status(g.be->batch(st, ops2, 3, NOW, &failed, &atomic), PLANT_E_CONDITION);
	assert_int_equal(failed, 2);
	struct plant_store_op ops3[] = {
		del_op(K("victim"), PLANT_PUT_IF_VERSION, 2),
		put_op(K("n/1"), n1, PLANT_PUT_ANY, 0),
	};
	failed = 99;
	assert_status(g.be->batch(st, ops3, 2, NOW, &failed, &atomic), PLANT_E_CONDITION);
	assert_int_equal(failed, 0);
	if (atomic) {
		expect_missing(st, K("n/1"), NOW);
		expect_item(st, K("upd"), NOW, "\"before\"", 1);
		expect_item(st, K("victim"), NOW, "\"alive\"", 1);
	}
	json_decref(n1);
	json_decref(nv);
	json_decref(up);

	/* The store still works. */
	put_ok(st, K("upd"), "\"after\"", 2);
}

/* Bad arguments are PLANT_E_INVALID; in a batch, the first failing op
 * counts, be it malformed or a failed condition, and nothing is applied. */
static void test_bad_arguments(void **state)
{
	void *st = store_of(state);
	json_t *one = jv("1");
	size_t failed = 99;
	int atomic = -1;

	assert_status(g.be->put(st, K("k"), one, 99, 0, 0, NOW, NULL), PLANT_E_INVALID);
	assert_status(g.be->put(st, K("k"), NULL, PLANT_PUT_ANY, 0, 0, NOW, NULL), PLANT_E_INVALID);
	assert_status(g.be->del(st, K("k"), 99, 0, NOW), PLANT_E_INVALID);
	expect_missing(st, K("k"), NOW);

	put_ok(st, K("exists"), "0", 1);
	struct plant_store_op ops[] = {
		put_op(K("ba/1"), one, PLANT_PUT_ANY, 0),
		put_op("", 0, one, PLANT_PUT_ANY, 0),
	};
	assert_status(g.be->batch(st, ops, 2, NOW, &failed, &atomic), PLANT_E_INVALID);
	assert_int_equal(failed, 1);
	if (atomic)
		expect_missing(st, K("ba/1"), NOW);

	struct plant_store_op ops2[] = {
		put_op(K("ba/1"), one, PLANT_PUT_ANY, 0),
		put_op(K("ba/2"), NULL, PLANT_PUT_ANY, 0), /* neither value nor text */
	};
	failed = 99;
	assert_status(g.be->batch(st, ops2, 2, NOW, &failed, &atomic), PLANT_E_INVALID);
	assert_int_equal(failed, 1);

	struct plant_store_op ops3[] = {
		put_op(K("exists"), one, PLANT_PUT_IF_ABSENT, 0),
		put_op(K("ba/2"), one, 99, 0),
	};
	failed = 99;
	assert_status(g.be->batch(st, ops3, 2, NOW, &failed, &atomic), PLANT_E_CONDITION);
	assert_int_equal(failed, 0);

	struct plant_store_op ops4[] = {put_op("", 0, one, PLANT_PUT_ANY, 0)};
	failed = 99;
	assert_status(g.be->batch(st, ops4, 1, NOW, &failed, &atomic), PLANT_E_INVALID);
	assert_int_equal(failed, 0);
	if (atomic) {
		expect_missing(st, K("ba/1"), NOW);
		expect_missing(st, K("ba/2"), NOW);
	}
	expect_item(st, K("exists"), NOW, "0", 1);
	json_decref(one);
}

/* ---- threads ------------------------------------------------------------------------ */

#define THREADS	    4
#define PUTS_EACH   2000
#define INCS_EACH   500
#define RETRIES_MAX 10000000

struct worker {
	pthread_t thread;
	void *store;
	int id;
	atomic_int *stop;	  /* for the reader */
	pthread_barrier_t *start; /* every thread begins at once */
	int failures;
	uint64_t retries;
	uint64_t rounds;
	char error[256];
};

PLANT_PRINTF(2, 3)
static void worker_fail(struct worker *w, const char *fmt, ...)
{
	va_list ap;

	if (w->failures++ > 0)
		return;
	va_start(ap, fmt);
	vsnprintf(w->error, sizeof(w->error), fmt, ap);
	va_end(ap);
}

static void *put_worker(void *arg)
{
	struct worker *w = arg;

	pthread_barrier_wait(w->start);
	for (int i = 0; i < PUTS_EACH && !w->failures; i++) {
		char key[32];
		int len = snprintf(key, sizeof(key), "t%d/%05d", w->id, i);
		json_t *v = json_pack("{s:i, s:i}", "t", w->id, "i", i);
		uint64_t ver = 0;
		int rc = g.be->put(w->store, key, (size_t)len, v, PLANT_PUT_ANY, 0, 0, NOW, &ver);

		json_decref(v);
		if (rc != PLANT_OK || ver != 1)
			worker_fail(w, "put %s: %s, version %" PRIu64, key, plant_status_name(rc),
				    ver);
	}
	return NULL;
}

/* While thread 0 writes t0/00000, t0/00001, ... one after the other, every
 * scan must see exactly the first m of them, m never shrinking. */
static void *scan_worker(void *arg)
{
	struct worker *w = arg;
	size_t seen = 0;

	pthread_barrier_wait(w->start);
	do {
		json_t *items = NULL, *item;
		size_t i;
		int rc = g.be->scan(w->store, K("t0/"), NULL, 0, PUTS_EACH + 1, NOW, &items);

		if (rc != PLANT_OK) {
			worker_fail(w, "scan: %s", plant_status_name(rc));
			break;
		}
		if (json_array_size(items) < seen)
			worker_fail(w, "scan saw %zu items after %zu", json_array_size(items),
				    seen);
		seen = json_array_size(items);
		json_array_foreach(items, i, item)
		{
			char want[32];

			snprintf(want, sizeof(want), "t0/%05zu", i);
			if (!json_is_string(json_object_get(item, "key")) ||
			    strcmp(json_string_value(json_object_get(item, "key")), want) != 0) {
				const char *got = json_string_value(json_object_get(item, "key"));

				worker_fail(w, "scan item %zu is %s, expected %s", i,
					    got ? got : "(not a key string)", want);
				break;
			}
		}
		json_decref(items);
		w->rounds++;
	} while (!atomic_load(w->stop) && !w->failures);
	return NULL;
}

static void join_all(struct worker *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		pthread_join(w[i].thread, NULL);
	for (size_t i = 0; i < n; i++)
		if (w[i].failures)
			fail_msg("thread %zu: %d failures, the first: %s", i, w[i].failures,
				 w[i].error);
}

static void test_concurrent_puts(void **state)
{
	void *st = store_of(state);
	struct worker w[THREADS + 1];
	pthread_barrier_t start;
	atomic_int stop;

	atomic_init(&stop, 0);
	assert_int_equal(pthread_barrier_init(&start, NULL, THREADS + 1), 0);
	memset(w, 0, sizeof(w));
	for (int i = 0; i <= THREADS; i++) {
		w[i].store = st;
		w[i].id = i;
		w[i].stop = &stop;
		w[i].start = &start;
	}
	assert_int_equal(pthread_create(&w[THREADS].thread, NULL, scan_worker, &w[THREADS]), 0);
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&w[i].thread, NULL, put_worker, &w[i]), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(w[i].thread, NULL);
	atomic_store(&stop, 1);
	pthread_join(w[THREADS].thread, NULL);
	pthread_barrier_destroy(&start);
	for (int i = 0; i <= THREADS; i++)
		if (w[i].failures)
			fail_msg("thread %d: %d failures, the first: %s", i, w[i].failures,
				 w[i].error);
	print_message("%s: %" PRIu64 " scans ran during the puts\n", g.kind, w[THREADS].rounds);

	for (int t = 0; t < THREADS; t++) {
		for (int i = 0; i < PUTS_EACH; i++) {
			char key[32];
			int len = snprintf(key, sizeof(key), "t%d/%05d", t, i);
			json_t *want = json_pack("{s:i, s:i}", "t", t, "i", i);

			expect_item_json(st, key, (size_t)len, NOW, want, 1);
			json_decref(want);
		}
	}
	json_t *items = scan_ok(st, K("t"), NULL, 0, 2 * THREADS * PUTS_EACH, NOW);
	assert_int_equal(json_array_size(items), THREADS * PUTS_EACH);
	json_decref(items);
}

/* A version-checked read-modify-write, retried on a lost race. */
static void *inc_worker(void *arg)
{
	struct worker *w = arg;

	pthread_barrier_wait(w->start);
	for (int done = 0; done < INCS_EACH && !w->failures;) {
		json_t *v = NULL, *next;
		uint64_t ver = 0, nver = 0;
		int rc = g.be->get(w->store, K("counter"), NOW, &v, &ver);

		if (rc != PLANT_OK || !json_is_integer(v)) {
			worker_fail(w, "get counter: %s", plant_status_name(rc));
			json_decref(v);
			break;
		}
		next = json_integer(json_integer_value(v) + 1);
		json_decref(v);
		rc = g.be->put(w->store, K("counter"), next, PLANT_PUT_IF_VERSION, ver, 0, NOW,
			       &nver);
		json_decref(next);
		if (rc == PLANT_OK) {
			if (nver != ver + 1)
				worker_fail(w, "put at version %" PRIu64 " gave %" PRIu64, ver,
					    nver);
			done++;
		} else if (rc != PLANT_E_CONDITION) {
			worker_fail(w, "put counter: %s", plant_status_name(rc));
		} else if (++w->retries > RETRIES_MAX) {
			worker_fail(w, "no progress after %d retries", RETRIES_MAX);
		}
	}
	return NULL;
}

static void test_concurrent_counter(void **state)
{
	void *st = store_of(state);
	struct worker w[THREADS];
	pthread_barrier_t start;
	uint64_t retries = 0;

	memset(w, 0, sizeof(w));
	assert_int_equal(pthread_barrier_init(&start, NULL, THREADS), 0);
	put_ok(st, K("counter"), "0", 1);
	for (int i = 0; i < THREADS; i++) {
		w[i].store = st;
		w[i].id = i;
		w[i].start = &start;
		assert_int_equal(pthread_create(&w[i].thread, NULL, inc_worker, &w[i]), 0);
	}
	join_all(w, THREADS);
	pthread_barrier_destroy(&start);
	for (int i = 0; i < THREADS; i++)
		retries += w[i].retries;
	print_message("%s: %d increments, %" PRIu64 " retries\n", g.kind, THREADS * INCS_EACH,
		      retries);

	char want[32];
	snprintf(want, sizeof(want), "%d", THREADS * INCS_EACH);
	expect_item(st, K("counter"), NOW, want, 1 + THREADS * INCS_EACH);
}

/* ---- stores --------------------------------------------------------------------------- */

static void test_stores_independent(void **state)
{
	void *st = store_of(state);
	char *dir2 = tu_mkdtemp();
	void *st2 = must_open(dir2);

	put_ok(st, K("k"), "\"one\"", 1);
	expect_missing(st2, K("k"), NOW);
	put_ok(st2, K("k"), "\"two\"", 1);
	put_ok(st2, K("only2"), "2", 1);
	expect_item(st, K("k"), NOW, "\"one\"", 1);
	SCAN_EXPECT(st, KL(""), NOAFTER, 10, NOW, KB("k"));
	g.be->close(st2);
	expect_item(st, K("k"), NOW, "\"one\"", 1);
	tu_rmtree(dir2);
	free(dir2);
}

static void test_health(void **state)
{
	void *st = store_of(state);
	json_t *detail = NULL;

	if (!g.be->health)
		skip();
	put_ok(st, K("h"), "1", 1);
	assert_status(g.be->health(st, &detail), PLANT_OK);
	if (detail)
		print_message("%s health: %s\n", g.kind, show_json(detail));
	json_decref(detail);
}

/* ---- persistent backends ----------------------------------------------------------- */

static void test_reopen_keeps_items(void **state)
{
	struct ctx *c = *state;
	uint64_t v = 0;

	if (!g.durable)
		skip();
	put_ok(c->store, K("p/a"), "{\"a\": [1, 2.5, null]}", 1);
	put_ok(c->store, K("p/a"), "{\"a\": [1, 2.5, \"x\"]}", 2);
	put_ok(c->store, K("p/a"), "{\"a\": [1, 2.5, \"y\"]}", 3);
	put_ok(c->store, K("p/\0bin"), "\"bin\"", 1);
	put_ok(c->store, K("p/gone"), "1", 1);
	assert_status(g.be->del(c->store, K("p/gone"), PLANT_PUT_ANY, 0, NOW), PLANT_OK);
	assert_status(put_v(c->store, K("p/ttl"), jv("\"t\""), PLANT_PUT_ANY, 0, 1000, 10000, &v),
		      PLANT_OK);

	g.be->close(c->store);
	c->store = NULL;
	c->store = must_open(c->dir);

	expect_item(c->store, K("p/a"), NOW, "{\"a\": [1, 2.5, \"y\"]}", 3);
	expect_item(c->store, K("p/\0bin"), NOW, "\"bin\"", 1);
	expect_missing(c->store, K("p/gone"), NOW);
	expect_item(c->store, K("p/ttl"), 10999, "\"t\"", 1); /* the expiry is kept too */
	expect_missing(c->store, K("p/ttl"), 11000);
	SCAN_EXPECT(c->store, KL("p/"), NOAFTER, 10, NOW, KB("p/\0bin"), KB("p/a"));

	/* Versions go on from where they were. */
	assert_status(put_v(c->store, K("p/a"), jv("4"), PLANT_PUT_IF_VERSION, 3, 0, NOW, &v),
		      PLANT_OK);
	assert_int_equal(v, 4);

	/* And a second time, after writes and an expire on the reopened store. */
	assert_int_equal(g.be->expire(c->store, 11000), 1);
	g.be->close(c->store);
	c->store = NULL;
	c->store = must_open(c->dir);
	expect_item(c->store, K("p/a"), NOW, "4", 4);
	expect_missing(c->store, K("p/ttl"), 10000);
}

static void test_open_twice_refused(void **state)
{
	struct ctx *c = *state;
	char err[1024];
	void *second = NULL;

	if (!g.persistent)
		skip();
	put_ok(c->store, K("k"), "1", 1);
	int rc = open_store(c->dir, &second, err, sizeof(err));
	if (rc == PLANT_OK) {
		g.be->close(second);
		fail_msg("a second open of the same path succeeded");
	}
	assert_null(second);
	print_message("second open: %s: %s\n", plant_status_name(rc), err);
	if (!strstr(err, "in use") && !strstr(err, "lock"))
		fail_msg("\"%s\" says neither \"in use\" nor \"lock\"", err);

	/* The first store is unharmed, and once closed the path is free. */
	expect_item(c->store, K("k"), NOW, "1", 1);
	put_ok(c->store, K("k"), "2", 2);
	g.be->close(c->store);
	c->store = NULL;
	c->store = must_open(c->dir);
	expect_item(c->store, K("k"), NOW, "2", 2);
}

static void test_open_garbage_refused(void **state)
{
	char *dir = tu_mkdtemp();
	char path[PATH_MAX], err[1024], *garbage = malloc(8192 + 1);
	void *st = NULL;

	(void)state;
	if (!g.persistent) {
		tu_rmtree(dir);
		free(dir);
		free(garbage);
		skip();
	}
	assert_non_null(garbage);
	for (size_t i = 0; i < 8192; i++)
		garbage[i] = (char)('!' + (i * 7) % 90);
	garbage[8192] = '\0';
	db_path(dir, path, sizeof(path));
	tu_write(dir, db_rel(), garbage, NULL, 0);

	int rc = open_store(dir, &st, err, sizeof(err));
	if (rc == PLANT_OK) {
		g.be->close(st);
		fail_msg("opening a file of garbage succeeded");
	}
	print_message("garbage: %s: %s\n", plant_status_name(rc), err);
	assert_contains(err, path);

	/* The file is left as it was. */
	char *after = tu_read(path);
	assert_non_null(after);
	if (strcmp(after, garbage) != 0)
		fail_msg("a failed open changed %s", path);
	free(after);
	free(garbage);
	tu_rmtree(dir);
	free(dir);
}

static void expect_readonly_error(const char *dir)
{
	char path[PATH_MAX], err[1024];
	void *st = NULL;
	int rc = open_store(dir, &st, err, sizeof(err));

	if (rc == PLANT_OK) {
		g.be->close(st);
		fail_msg("opening a store in the read-only %s succeeded", dir);
	}
	print_message("read-only: %s: %s\n", plant_status_name(rc), err);
	db_path(dir, path, sizeof(path));
	assert_contains(err, path);
	if (!strstr(err, "ermission") && !strstr(err, "ead-only") && !strstr(err, "eadonly") &&
	    !strstr(err, "ead only"))
		fail_msg("\"%s\" does not say the directory cannot be written", err);
}

static void test_open_readonly_dir(void **state)
{
	struct ctx *c = *state;

	if (!g.persistent)
		skip();
	if (geteuid() == 0)
		skip(); /* root writes anywhere */

	/* An empty data_dir. */
	char *dir = tu_mkdtemp();
	assert_int_equal(chmod(dir, 0555), 0);
	expect_readonly_error(dir);
	chmod(dir, 0755);
	tu_rmtree(dir);
	free(dir);

	/* One that holds a store already. */
	put_ok(c->store, K("k"), "1", 1);
	g.be->close(c->store);
	c->store = NULL;
	assert_int_equal(chmod(c->dir, 0555), 0);
	expect_readonly_error(c->dir);
}

/* ---- loading the plugin ------------------------------------------------------------- */

static int load_backend(void)
{
	const char *settings = getenv("PLANTD_STORE_SETTINGS");
	const char *persistent = getenv("PLANTD_STORE_PERSISTENT");
	json_error_t jerr;
	int rc;

	g.plugin_file = getenv("PLANTD_STORE_PLUGIN");
	if (!g.plugin_file || !*g.plugin_file) {
		fprintf(stderr, "PLANTD_STORE_PLUGIN must name a store backend plugin (.so)\n");
		return -1;
	}
	g.persistent = persistent && strcmp(persistent, "1") == 0;
	g.durable = g.persistent || (getenv("PLANTD_STORE_DURABLE") &&
				     strcmp(getenv("PLANTD_STORE_DURABLE"), "1") == 0);
	g.unique_setting = getenv("PLANTD_STORE_UNIQUE_SETTING");
	if (g.unique_setting && !*g.unique_setting)
		g.unique_setting = NULL;
	g.settings = json_loads(settings && *settings ? settings : "{}", 0, &jerr);
	if (!json_is_object(g.settings)) {
		fprintf(stderr, "PLANTD_STORE_SETTINGS is not a JSON object: %s\n",
			g.settings ? "another value" : jerr.text);
		return -1;
	}
	const char *path = json_string_value(json_object_get(g.settings, "path"));
	if (path && path[0] == '/') {
		fprintf(stderr, "PLANTD_STORE_SETTINGS: give a relative path, so that each test "
				"has its own store in its own data_dir\n");
		return -1;
	}
	g.config = json_object();

	g.dl = dlopen(g.plugin_file, RTLD_NOW | RTLD_LOCAL);
	if (!g.dl) {
		fprintf(stderr, "dlopen %s: %s\n", g.plugin_file, dlerror());
		return -1;
	}
	g.desc = dlsym(g.dl, PLANT_PLUGIN_DESC_NAME);
	if (!g.desc) {
		fprintf(stderr, "%s: no %s\n", g.plugin_file, PLANT_PLUGIN_DESC_NAME);
		return -1;
	}
	if (g.desc->abi_major != PLANT_ABI_MAJOR || g.desc->abi_minor > PLANT_ABI_MINOR ||
	    g.desc->abi_minor < 2 || g.desc->struct_size < sizeof(struct plant_plugin_desc) ||
	    !g.desc->init) {
		fprintf(stderr, "%s: built for SDK %u.%u (struct %u), or without init()\n",
			g.plugin_file, g.desc->abi_major, g.desc->abi_minor, g.desc->struct_size);
		return -1;
	}

	fake_api.struct_size = sizeof(fake_api);
	fake_api.abi_major = PLANT_ABI_MAJOR;
	fake_api.abi_minor = PLANT_ABI_MINOR;
	fake_api.log = fake_log;
	fake_api.error = fake_error;
	fake_api.config = fake_config;
	fake_api.store_register = fake_store_register;
#ifdef PLANT_TEST_HTTP
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "curl_global_init failed\n");
		return -1;
	}
	fake_api.http_call_wait = fake_http_call_wait;
	fake_api.http_result_free = fake_http_result_free;
	fake_api.http_result_header = fake_http_result_header;
#endif

	rc = g.desc->init(SELF, &fake_api, g.config, &g.plugin_state);
	if (rc != PLANT_OK) {
		fprintf(stderr, "%s: init: %s: %s\n", g.plugin_file, plant_status_name(rc),
			g.last_error);
		return -1;
	}
	if (!g.registered) {
		fprintf(stderr, "%s: init() registered no store kind\n", g.plugin_file);
		return -1;
	}
	const struct plant_store_backend *be = g.be;
	if (be->struct_size < offsetof(struct plant_store_backend, expire) + sizeof(be->expire) ||
	    !be->open || !be->close || !be->get || !be->put || !be->del || !be->scan ||
	    !be->batch || !be->expire) {
		fprintf(stderr, "%s: the backend table of kind \"%s\" is incomplete\n",
			g.plugin_file, g.kind);
		return -1;
	}
	return 0;
}

static void unload_backend(void)
{
	if (g.plugin_state && g.desc->destroy)
		g.desc->destroy(g.plugin_state);
	g.plugin_state = NULL;
	if (g.dl)
		dlclose(g.dl);
	json_decref(g.settings);
	json_decref(g.config);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
	char group[128];

	if (load_backend() != 0) {
		unload_backend();
		return 1;
	}
	snprintf(group, sizeof(group), "store contract: %s (%s)", g.kind, g.plugin_file);

	const struct CMUnitTest tests[] = {
		T(test_get_missing),
		T(test_put_get_versions),
		T(test_put_if_absent),
		T(test_put_if_version),
		T(test_delete),
		T(test_ttl),
		T(test_ttl_rewrite),
		T(test_scan_prefix_and_paging),
		T(test_scan_byte_order),
		T(test_scan_prefix_edges),
		T(test_binary_keys),
		T(test_key_lengths),
		T(test_values),
		T(test_value_isolation),
		T(test_batch_applies),
		T(test_batch_in_order),
		T(test_batch_condition_fails),
		T(test_batch_value_text),
		T(test_bad_arguments),
		T(test_concurrent_puts),
		T(test_concurrent_counter),
		T(test_stores_independent),
		T(test_health),
		T(test_reopen_keeps_items),
		T(test_open_twice_refused),
		T(test_open_garbage_refused),
		T(test_open_readonly_dir),
	};
	int failed = cmocka_run_group_tests_name(group, tests, NULL, NULL);
	unload_backend();
	return failed;
}
