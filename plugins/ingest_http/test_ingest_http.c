/* Unit tests of ingest_http against a mock host: every answer of the
 * handler (bodies, error positions, headers), that nothing of a refused
 * request is published, idempotency in memory and in a store (replays,
 * claims freed after a failed publish, expiry, eviction), and requests from
 * several threads at once. The plugin's source is included, so its static
 * functions are at hand. tests/integration/ingest_http.sh runs it in
 * plantd over HTTP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ingest_http.c"

/* One request: what the handler reads, and its answer. */
struct plant_http_req {
	const char *tail;
	const char *body;
	size_t body_len;
	const char *content_type;
	const char *key;
	int replies;
	int status;
	json_t *answer; /* the reply body, parsed */
	char header[64], value[64];
};

static struct {
	pthread_mutex_t lock;
	uint64_t now;
	uint64_t next_id;
	int publish_rc;	   /* PLANT_OK, or what publish_all answers */
	int store_rc;	   /* PLANT_OK, or what every store call answers */
	json_t *published; /* [{"topic", "body"}] */
	json_t *counters;
	json_t *store; /* key -> {"value", "version", "expires"} */
	char err_key[64], err[512];
	int logs;
	plant_http_handler handler;
	uint32_t route_flags;
	plant_timer_fn tick;
} mock;

static void m_log(plant_instance *self, int level, const char *fmt, ...)
{
	(void)self;
	(void)level;
	(void)fmt;
	mock.logs++;
}

static void m_error(plant_instance *self, const char *key, const char *fmt, ...)
{
	va_list ap;

	(void)self;
	snprintf(mock.err_key, sizeof(mock.err_key), "%s", key ? key : "");
	va_start(ap, fmt);
	vsnprintf(mock.err, sizeof(mock.err), fmt, ap);
	va_end(ap);
}

static int m_timer_add(plant_instance *self, uint64_t every_ms, uint64_t jitter_ms,
		       plant_timer_fn fn, void *user, uint64_t *timer_out)
{
	(void)self;
	(void)jitter_ms;
	(void)user;
	(void)timer_out;
	assert_int_equal(every_ms, FLUSH_EVERY_MS);
	mock.tick = fn;
	return PLANT_OK;
}

static int m_counter_add(plant_instance *self, const char *name, uint64_t delta)
{
	json_t *v = json_object_get(mock.counters, name);

	(void)self;
	json_object_set_new(mock.counters, name,
			    json_integer(json_integer_value(v) + (json_int_t)delta));
	return PLANT_OK;
}

static uint64_t m_now_ms(plant_instance *self)
{
	(void)self;
	return mock.now;
}

static int m_store_open(plant_instance *self, const char *name, uint32_t *store_out)
{
	(void)self;
	if (strcmp(name, "idem") != 0)
		return PLANT_E_NOTFOUND;
	*store_out = 3;
	return PLANT_OK;
}

/* The live item of `key`, or NULL (expired items are removed). */
static json_t *store_item(const char *key)
{
	json_t *it = json_object_get(mock.store, key);
	json_int_t expires = json_integer_value(json_object_get(it, "expires"));

	if (it && expires && (uint64_t)expires <= mock.now) {
		json_object_del(mock.store, key);
		return NULL;
	}
	return it;
}

static int m_store_get(plant_instance *self, uint32_t store, const char *key, size_t key_len,
		       json_t **value_out, uint64_t *version_out)
{
	char k[1100];
	json_t *it;

	(void)self;
	assert_int_equal(store, 3);
	if (mock.store_rc)
		return mock.store_rc;
	snprintf(k, sizeof(k), "%.*s", (int)key_len, key);
	pthread_mutex_lock(&mock.lock);
	it = store_item(k);
	if (it) {
		*value_out = json_deep_copy(json_object_get(it, "value"));
		if (version_out)
			*version_out = (uint64_t)json_integer_value(json_object_get(it, "version"));
	}
	pthread_mutex_unlock(&mock.lock);
	return it ? PLANT_OK : PLANT_E_NOTFOUND;
}

static int m_store_put(plant_instance *self, uint32_t store, const char *key, size_t key_len,
		       json_t *value, int cond, uint64_t version, uint64_t ttl_ms,
		       uint64_t *version_out)
{
	char k[1100];
	json_t *it;
	json_int_t v;
	int rc = PLANT_OK;

	(void)self;
	assert_int_equal(store, 3);
	assert_true(ttl_ms > 0);
	if (mock.store_rc) {
		json_decref(value);
		return mock.store_rc;
	}
	snprintf(k, sizeof(k), "%.*s", (int)key_len, key);
	pthread_mutex_lock(&mock.lock);
	it = store_item(k);
	v = json_integer_value(json_object_get(it, "version"));
	if ((cond == PLANT_PUT_IF_ABSENT && it) ||
	    (cond == PLANT_PUT_IF_VERSION && (!it || (uint64_t)v != version))) {
		rc = PLANT_E_CONDITION;
		json_decref(value);
	} else {
		json_object_set_new(mock.store, k,
				    json_pack("{s:o, s:I, s:I}", "value", value, "version", v + 1,
					      "expires", (json_int_t)(mock.now + ttl_ms)));
		if (version_out)
			*version_out = (uint64_t)v + 1;
	}
	pthread_mutex_unlock(&mock.lock);
	return rc;
}

static int m_store_delete(plant_instance *self, uint32_t store, const char *key, size_t key_len,
			  int cond, uint64_t version)
{
	char k[1100];
	json_t *it;
	int rc = PLANT_OK;

	(void)self;
	assert_int_equal(store, 3);
	assert_int_equal(cond, PLANT_PUT_IF_VERSION);
	if (mock.store_rc)
		return mock.store_rc;
	snprintf(k, sizeof(k), "%.*s", (int)key_len, key);
	pthread_mutex_lock(&mock.lock);
	it = store_item(k);
	if (!it)
		rc = PLANT_E_NOTFOUND;
	else if ((uint64_t)json_integer_value(json_object_get(it, "version")) != version)
		rc = PLANT_E_CONDITION;
	else
		json_object_del(mock.store, k);
	pthread_mutex_unlock(&mock.lock);
	return rc;
}

static int m_http_route(plant_instance *self, const char *listener, const char *method,
			const char *path, uint32_t flags, plant_http_handler fn, void *user)
{
	(void)self;
	(void)user;
	if (strcmp(listener, "ingest") != 0 && strcmp(listener, "other") != 0)
		return PLANT_E_NOTFOUND;
	assert_string_equal(method, "POST");
	assert_string_equal(path, "/v1/ingest/");
	mock.handler = fn;
	mock.route_flags = flags;
	return PLANT_OK;
}

static int m_http_request(const plant_http_req *req, struct plant_http_info *out)
{
	assert_int_equal(out->struct_size, sizeof(*out));
	out->method = "POST";
	out->path = "/v1/ingest/...";
	out->tail = req->tail;
	out->query = "";
	out->body = req->body_len ? req->body : NULL;
	out->body_len = req->body_len;
	out->remote = "127.0.0.1";
	out->listener = "ingest";
	return PLANT_OK;
}

static const char *m_http_header(const plant_http_req *req, const char *name)
{
	if (strcasecmp(name, "content-type") == 0)
		return req->content_type;
	if (strcasecmp(name, "idempotency-key") == 0)
		return req->key;
	return NULL;
}

static int m_http_reply(plant_http_req *req, int status, const char *content_type, const char *body,
			size_t len, const char *const *headers)
{
	json_error_t err;

	req->replies++;
	req->status = status;
	assert_string_equal(content_type, "application/json");
	req->answer = json_loadb(body, len, 0, &err);
	if (!req->answer)
		fail_msg("the answer is not JSON: %.*s (%s)", (int)len, body, err.text);
	if (headers && headers[0]) {
		snprintf(req->header, sizeof(req->header), "%s", headers[0]);
		snprintf(req->value, sizeof(req->value), "%s", headers[1]);
		assert_null(headers[2]);
	}
	return PLANT_OK;
}

/* All or nothing, like the host: a bad topic or a full bus publishes none. */
static int m_publish_all(plant_instance *self, struct plant_publish *items, size_t n,
			 size_t *failed_out)
{
	int rc = mock.publish_rc;
	json_t *bodies[64];

	(void)self;
	assert_true(n > 0 && n <= 64);
	/* a body, or text: the text as it is kept (no blanks around, no newline) */
	for (size_t i = 0; i < n; i++) {
		bodies[i] = items[i].body;
		if (!bodies[i]) {
			const char *t = items[i].text;
			size_t len = items[i].text_len;

			assert_non_null(t);
			assert_true(len > 0 && t[0] != ' ' && t[0] != '\t');
			assert_true(t[len - 1] != ' ' && t[len - 1] != '\t' && t[len - 1] != '\r');
			assert_null(memchr(t, '\n', len));
			bodies[i] = json_loadb(t, len, JSON_ALLOW_NUL, NULL);
		}
	}
	for (size_t i = 0; i < n && rc == PLANT_OK; i++) {
		assert_int_equal(items[i].struct_size, sizeof(struct plant_publish));
		if (!json_is_object(bodies[i]) || !items[i].topic) {
			*failed_out = i;
			rc = PLANT_E_INVALID;
		}
	}
	pthread_mutex_lock(&mock.lock);
	for (size_t i = 0; i < n; i++) {
		if (rc == PLANT_OK) {
			snprintf(items[i].id_out, sizeof(items[i].id_out), "%024" PRIx64,
				 ++mock.next_id);
			json_array_append_new(
				mock.published,
				json_pack("{s:s, s:O, s:s, s:b, s:o}", "topic", items[i].topic,
					  "body", bodies[i], "id", items[i].id_out, "text",
					  items[i].body == NULL, "raw",
					  items[i].body ? json_null()
							: json_stringn(items[i].text,
								       items[i].text_len)));
		}
		json_decref(bodies[i]);
		items[i].body = NULL;
	}
	pthread_mutex_unlock(&mock.lock);
	return rc;
}

static const struct plant_host_api api = {
	.struct_size = sizeof(struct plant_host_api),
	.abi_major = PLANT_ABI_MAJOR,
	.abi_minor = PLANT_ABI_MINOR,
	.log = m_log,
	.error = m_error,
	.timer_add = m_timer_add,
	.counter_add = m_counter_add,
	.now_ms = m_now_ms,
	.store_open = m_store_open,
	.store_get = m_store_get,
	.store_put = m_store_put,
	.store_delete = m_store_delete,
	.http_route = m_http_route,
	.http_request = m_http_request,
	.http_header = m_http_header,
	.http_reply = m_http_reply,
	.publish_all = m_publish_all,
};

/* ---- helpers ------------------------------------------------------------------ */

static int setup(void **state)
{
	(void)state;
	memset(&mock, 0, sizeof(mock));
	pthread_mutex_init(&mock.lock, NULL);
	mock.now = 1700000000000;
	mock.published = json_array();
	mock.counters = json_object();
	mock.store = json_object();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	json_decref(mock.published);
	json_decref(mock.counters);
	json_decref(mock.store);
	pthread_mutex_destroy(&mock.lock);
	return 0;
}

/* The settings as the host hands them: `json` plus the defaults, with
 * durations in ms. */
static json_t *config(const char *json)
{
	json_t *c = json_loads(json, 0, NULL);

	assert_non_null(c);
	for (const struct plant_config_key *k = config_keys; k->name; k++) {
		if (json_object_get(c, k->name))
			continue;
		if (k->type == PLANT_CFG_DURATION)
			json_object_set_new(c, k->name,
					    json_integer(strcmp(k->name, "retry_after") == 0
								 ? 1000
								 : 86400000));
		else
			json_object_set_new(c, k->name,
					    json_loads(k->default_value, JSON_DECODE_ANY, NULL));
	}
	return c;
}

struct inst {
	json_t *cfg;
	struct ingest *in;
};

static int start(struct inst *i, const char *json)
{
	void *st = NULL;
	int rc;

	i->cfg = config(json);
	rc = PLANT_PLUGIN_DESC.validate(NULL, &api, i->cfg);
	if (rc == PLANT_OK)
		rc = PLANT_PLUGIN_DESC.init(NULL, &api, i->cfg, &st);
	i->in = st;
	if (rc != PLANT_OK)
		json_decref(i->cfg);
	return rc;
}

static void finish(struct inst *i)
{
	PLANT_PLUGIN_DESC.stop(i->in);
	PLANT_PLUGIN_DESC.destroy(i->in);
	json_decref(i->cfg);
}

/* POST `body` to /v1/ingest/`tail`; the answer is in the returned request
 * (free it with done()). */
static struct plant_http_req *post(struct inst *i, const char *tail, const char *content_type,
				   const char *key, const char *body, size_t len)
{
	struct plant_http_req *req = calloc(1, sizeof(*req));

	assert_non_null(req);
	req->tail = tail;
	req->content_type = content_type;
	req->key = key;
	req->body = body;
	req->body_len = len;
	assert_int_equal(mock.handler(i->in, req, NULL), PLANT_OK);
	assert_int_equal(req->replies, 1);
	return req;
}

static struct plant_http_req *posts(struct inst *i, const char *tail, const char *content_type,
				    const char *key, const char *body)
{
	return post(i, tail, content_type, key, body, strlen(body));
}

static void done(struct plant_http_req *req)
{
	json_decref(req->answer);
	free(req);
}

static json_int_t field_int(const struct plant_http_req *req, const char *name)
{
	const json_t *v = json_object_get(req->answer, name);

	if (!json_is_integer(v))
		fail_msg("no integer \"%s\" in the answer", name);
	return json_integer_value(v);
}

static const char *error_of(const struct plant_http_req *req)
{
	const char *e = json_string_value(json_object_get(req->answer, "error"));

	assert_non_null(e);
	return e;
}

/* An error `status`, nothing published. */
static void expect_error(struct plant_http_req *req, int status)
{
	if (req->status != status)
		fail_msg("status %d, expected %d: %s", req->status, status,
			 json_dumps(req->answer, JSON_COMPACT));
	(void)error_of(req);
	assert_int_equal(json_array_size(mock.published), 0);
}

/* 202 with `n` ids that are the ids of the last `n` messages published. */
static void expect_202(struct plant_http_req *req, size_t n)
{
	const json_t *ids = json_object_get(req->answer, "ids");
	size_t total = json_array_size(mock.published);

	if (req->status != 202)
		fail_msg("status %d: %s", req->status, json_dumps(req->answer, JSON_COMPACT));
	assert_int_equal(field_int(req, "count"), n);
	assert_int_equal(json_array_size(ids), n);
	assert_true(total >= n);
	for (size_t k = 0; k < n; k++)
		assert_string_equal(json_string_value(json_array_get(ids, k)),
				    json_string_value(json_object_get(
					    json_array_get(mock.published, total - n + k), "id")));
}

static const char *published_topic(size_t k)
{
	return json_string_value(json_object_get(json_array_get(mock.published, k), "topic"));
}

static const json_t *published_body(size_t k)
{
	return json_object_get(json_array_get(mock.published, k), "body");
}

static json_int_t counter(const char *name)
{
	return json_integer_value(json_object_get(mock.counters, name));
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_one_object(void **state)
{
	struct inst i;
	struct plant_http_req *r;

	(void)state;
	assert_int_equal(start(&i, "{}"), PLANT_OK);
	assert_int_equal(mock.route_flags, PLANT_ROUTE_PREFIX | PLANT_ROUTE_CONCURRENT);
	r = posts(&i, "sensor.raw", NULL, NULL, "{\"id\":\"t-1\",\"r\":10.5}");
	expect_202(r, 1);
	assert_string_equal(published_topic(0), "sensor.raw");
	assert_int_equal(json_real_value(json_object_get(published_body(0), "r")) * 10, 105);
	assert_null(json_object_get(published_body(0), "received_ms"));
	done(r);
	r = posts(&i, "sensor.raw", "application/json; charset=UTF-8", NULL, "  {\"a\":1}\n");
	expect_202(r, 1);
	done(r);
	mock.tick(i.in, NULL);
	assert_int_equal(counter("requests"), 2);
	assert_int_equal(counter("readings"), 2);
	finish(&i);
}

static void test_array(void **state)
{
	struct inst i;
	struct plant_http_req *r;

	(void)state;
	assert_int_equal(start(&i, "{}"), PLANT_OK);
	r = posts(&i, "s", "application/json", NULL, "[{\"n\":0},{\"n\":1},{\"n\":2}]");
	expect_202(r, 3);
	for (size_t k = 0; k < 3; k++)
		assert_int_equal(json_integer_value(json_object_get(published_body(k), "n")), k);
	done(r);
	/* an empty array publishes nothing, and says so */
	r = posts(&i, "s", NULL, NULL, "[]");
	assert_int_equal(r->status, 202);
	assert_int_equal(field_int(r, "count"), 0);
	assert_int_equal(json_array_size(mock.published), 3);
	done(r);
	finish(&i);
}

/* Objects go as their text unless it spans lines; the text is found in
 * the array whatever its strings hold. */
static void test_array_texts(void **state)
{
	static const char body[] =
		" [ {\"s\":\"a,b]}\\\"{[\\\\\"} , {\"n\":[1,{\"x\":[]}],\"e\":{}},\n"
		"{\n \"p\": 1\n},\t{\"q\":\"\\u00e9\"}\r\n]\n";
	static const char *const raw[] = {
		"{\"s\":\"a,b]}\\\"{[\\\\\"}",
		"{\"n\":[1,{\"x\":[]}],\"e\":{}}",
		NULL,
		"{\"q\":\"\\u00e9\"}",
	};
	struct inst i;
	struct plant_http_req *r;

	(void)state;
	assert_int_equal(start(&i, "{}"), PLANT_OK);
	r = posts(&i, "s", NULL, NULL, body);
	expect_202(r, 4);
	for (size_t k = 0; k < 4; k++) {
		const json_t *got = json_object_get(json_array_get(mock.published, k), "raw");

		if (raw[k])
			assert_string_equal(json_string_value(got), raw[k]);
		else
			assert_true(json_is_null(got)); /* pretty-printed: the tree */
	}
	assert_string_equal(json_string_value(json_object_get(published_body(0), "s")),
			    "a,b]}\"{[\\");
	assert_int_equal(json_integer_value(json_object_get(published_body(2), "p")), 1);
	done(r);
	/* one object: its text without the blanks around it, or its tree */
	r = posts(&i, "s", NULL, NULL, "\r\n {\"a\": 1} \n");
	expect_202(r, 1);
	assert_string_equal(
		json_string_value(json_object_get(json_array_get(mock.published, 4), "raw")),
		"{\"a\": 1}");
	done(r);
	r = posts(&i, "s", NULL, NULL, "{\"a\":\n1}");
	expect_202(r, 1);
	assert_true(json_is_null(json_object_get(json_array_get(mock.published, 5), "raw")));
	done(r);
	finish(&i);
}

static void test_ndjson(void **state)
{
	static const char body[] =
		"{\"n\":0}\r\n\r\n  \n{\"n\":1} \t\n\t{\"n\":2}\t\r\n{\"n\" : 3}";
	struct inst i;
	struct plant_http_req *r;

	(void)state;
	assert_int_equal(start(&i, "{}"), PLANT_OK);
	r = posts(&i, "s", "application/x-ndjson", NULL, body);
	expect_202(r, 4);
	for (size_t k = 0; k < 4; k++) {
		assert_int_equal(json_integer_value(json_object_get(published_body(k), "n")), k);
		assert_true(
			json_is_true(json_object_get(json_array_get(mock.published, k), "text")));
	}
	done(r);
	r = posts(&i, "s", "text/plain; charset=utf-8", NULL, "{\"n\":4}\n");
	expect_202(r, 1);
	done(r);
	/* an empty NDJSON body is no objects */
	r = post(&i, "s", "application/x-ndjson", NULL, NULL, 0);
	assert_int_equal(r->status, 202);
	assert_int_equal(field_int(r, "count"), 0);
	done(r);
	finish(&i);
}

static void test_syntax_errors(void **state)
{
	struct inst i;
	struct plant_http_req *r;

	(void)state;
	assert_int_equal(start(&i, "{}"), PLANT_OK);
	/* a JSON body: jansson's line and column */
	r = posts(&i, "s", NULL, NULL, "[{\"a\":1},\n {\"b\":2,}]");
	expect_error(r, 400);
	assert_int_equal(field_int(r, "line"), 2);
	assert_int_equal(field_int(r, "column"), 9);
	done(r);
	/* NDJSON: the line in the body, the column in the line */
	r = posts(&i, "s", "application/x-ndjson", NULL,
		  "{\"a\":1}\r\n\n{\"a\":2}\n{\"a\": tru}\n{\"a\":3}\n");
	expect_error(r, 400);
	assert_int_equal(field_int(r, "line"), 4);
	assert_int_equal(field_int(r, "column"), 9);
	done(r);
	r = posts(&i, "s", "application/x-ndjson", NULL, "{\"a\":1}\n  [1,2]\n");
	expect_error(r, 400);
	assert_int_equal(field_int(r, "line"), 2);
	assert_int_equal(field_int(r, "column"), 3);
	assert_non_null(strstr(error_of(r), "an array, not an object"));
	done(r);
	r = posts(&i, "s", "application/x-ndjson", NULL, "{\"a\":1}\n42\n");
	expect_error(r, 400);
	assert_int_equal(field_int(r, "line"), 2);
	done(r);
	/* an array item that is not an object: its index */
	r = posts(&i, "s", NULL, NULL, "[{\"a\":1},{\"a\":2},\"x\",{}]");
	expect_error(r, 400);
	assert_int_equal(field_int(r, "index"), 2);
	assert_string_equal(error_of(r), "item 2 of the array is a string, not an object");
	done(r);
	/* scalars, two documents, an empty body, duplicate keys */
	r = posts(&i, "s", NULL, NULL, "42");
	expect_error(r, 400);
	done(r);
	r = posts(&i, "s", NULL, NULL, "{\"a\":1}\n{\"a\":2}\n");
	expect_error(r, 400);
	assert_int_equal(field_int(r, "line"), 2);
	done(r);
	r = post(&i, "s", NULL, NULL, NULL, 0);
	expect_error(r, 400);
	done(r);
	r = posts(&i, "s", NULL, NULL, "{\"v\":1,\"v\":2}");
	expect_error(r, 400);
	assert_non_null(strstr(error_of(r), "duplicate"));
	done(r);
	mock.tick(i.in, NULL);
	assert_int_equal(counter("rejected"), 9);
	assert_int_equal(counter("readings"), 0);
	finish(&i);
}

static void test_utf8(void **state)
{
	struct inst i;
	struct plant_http_req *r;

	(void)state;
	assert_int_equal(start(&i, "{}"), PLANT_OK);
	r = posts(&i, "s", NULL, NULL, "{\"name\":\"caf\xc3\"}");
	expect_error(r, 400); /* and the answer is JSON, although jansson quotes the byte */
	done(r);
	r = posts(&i, "s", "application/x-ndjson", NULL,
		  "{\"a\":\"\xc3\xa9t\xc3\xa9\"}\n{\"a\":\"\xff\"}");
	expect_error(r, 400);
	assert_int_equal(field_int(r, "line"), 2);
	done(r);
	r = posts(&i, "s", NULL, NULL, "{\"a\":\"\xc3\xa9t\xc3\xa9\\u0000\"}");
	expect_202(r, 1);
	assert_int_equal(json_string_length(json_object_get(published_body(0), "a")), 6);
	done(r);
	finish(&i);
}

static void test_content_types(void **state)
{
	static const char *const refused[] = {
		"text/csv",
		"application/xml",
		"application/json; charset=latin1",
		"application/jsonx",
		"multipart/form-data; boundary=x",
	};
	struct inst i;
	struct plant_http_req *r;

	(void)state;
	assert_int_equal(start(&i, "{}"), PLANT_OK);
	for (size_t k = 0; k < sizeof(refused) / sizeof(refused[0]); k++) {
		r = posts(&i, "s", refused[k], NULL, "{\"a\":1}");
		expect_error(r, 415);
		done(r);
	}
	r = posts(&i, "s", "Application/JSON", NULL, "{\"a\":1}");
	expect_202(r, 1);
	done(r);
	r = posts(&i, "s", "application/x-ndjson;charset=\"utf-8\"", NULL, "{\"a\":1}");
	expect_202(r, 1);
	done(r);
	finish(&i);
}

static void test_max_items(void **state)
{
	struct inst i;
	struct plant_http_req *r;

	(void)state;
	assert_int_equal(start(&i, "{\"max_items\": 3}"), PLANT_OK);
	r = posts(&i, "s", NULL, NULL, "[{},{},{},{}]");
	expect_error(r, 413);
	done(r);
	r = posts(&i, "s", "application/x-ndjson", NULL, "{}\n{}\n{}\n{}\n");
	expect_error(r, 413);
	done(r);
	r = posts(&i, "s", "application/x-ndjson", NULL, "{}\n{}\n\n{}\n\n");
	expect_202(r, 3);
	done(r);
	finish(&i);
}

static void test_topics(void **state)
{
	static const char *const invalid[] = {"", "a..b", ".a", "a.", "a/b", "a b", "a*", "é"};
	struct inst i;
	struct plant_http_req *r;
	char tail[256];

	(void)state;
	assert_int_equal(start(&i, "{\"topics\": [\"sensor.*\", \"ops\"], \"topic_prefix\": "
				   "\"ext.\"}"),
			 PLANT_OK);
	for (size_t k = 0; k < sizeof(invalid) / sizeof(invalid[0]); k++) {
		r = posts(&i, invalid[k], NULL, NULL, "{}");
		expect_error(r, 400);
		done(r);
	}
	r = posts(&i, "other", NULL, NULL, "{}");
	expect_error(r, 403);
	assert_string_equal(error_of(r), "topic \"other\" is not open for ingest here");
	done(r);
	r = posts(&i, "ops.x", NULL, NULL, "{}");
	expect_error(r, 403);
	done(r);
	memset(tail, 'a', 197);
	tail[197] = '\0';
	r = posts(&i, tail, NULL, NULL, "{}");
	expect_error(r, 400);
	assert_non_null(strstr(error_of(r), "too long"));
	done(r);
	r = posts(&i, "sensor.a.raw", NULL, NULL, "{}");
	expect_202(r, 1);
	assert_string_equal(published_topic(0), "ext.sensor.a.raw");
	done(r);
	r = posts(&i, "ops", NULL, NULL, "{}");
	expect_202(r, 1);
	assert_string_equal(published_topic(1), "ext.ops");
	done(r);
	finish(&i);
}

static void test_bus_refusals(void **state)
{
	struct inst i;
	struct plant_http_req *r;

	(void)state;
	assert_int_equal(start(&i, "{\"retry_after\": 2500}"), PLANT_OK);
	mock.publish_rc = PLANT_E_FULL;
	r = posts(&i, "s", NULL, NULL, "[{},{}]");
	expect_error(r, 429);
	assert_string_equal(r->header, "Retry-After");
	assert_string_equal(r->value, "3");
	done(r);
	mock.publish_rc = PLANT_E_STATE;
	r = posts(&i, "s", NULL, NULL, "{}");
	expect_error(r, 503);
	done(r);
	mock.publish_rc = PLANT_E_INVALID;
	r = posts(&i, "s", NULL, NULL, "{}");
	expect_error(r, 400);
	assert_non_null(strstr(error_of(r), "\"s\""));
	done(r);
	mock.publish_rc = PLANT_OK;
	mock.tick(i.in, NULL);
	assert_int_equal(counter("refused"), 1);
	assert_int_equal(counter("failed"), 1);
	assert_int_equal(counter("rejected"), 1);
	finish(&i);
}

static void test_stamp(void **state)
{
	struct inst i;
	struct plant_http_req *r;

	(void)state;
	assert_int_equal(start(&i, "{\"stamp\": true}"), PLANT_OK);
	r = posts(&i, "s", NULL, NULL, "[{\"a\":1},{\"received_ms\":5}]");
	expect_202(r, 2);
	done(r);
	r = posts(&i, "s", "application/x-ndjson", NULL, "{\"b\":1}\n");
	expect_202(r, 1);
	done(r);
	for (size_t k = 0; k < 3; k++)
		assert_int_equal(
			json_integer_value(json_object_get(published_body(k), "received_ms")),
			(json_int_t)mock.now);
	finish(&i);
}

/* The idempotency cases, for a memory table and a store alike. */
static void idempotency_cases(const char *settings)
{
	struct inst i;
	struct plant_http_req *r, *again;

	assert_int_equal(start(&i, settings), PLANT_OK);
	r = posts(&i, "s", NULL, "k-1", "[{\"n\":1},{\"n\":2}]");
	expect_202(r, 2);
	assert_string_equal(r->header, "");
	again = posts(&i, "s", NULL, "k-1", "[{\"n\":1},{\"n\":2}]");
	assert_int_equal(again->status, 202);
	assert_string_equal(again->header, "Idempotency-Replayed");
	assert_string_equal(again->value, "true");
	assert_true(json_equal(r->answer, again->answer));
	assert_int_equal(json_array_size(mock.published), 2);
	done(again);
	done(r);

	/* a failed publish frees the key: the retry goes in */
	mock.publish_rc = PLANT_E_FULL;
	r = posts(&i, "s", NULL, "k-2", "{}");
	assert_int_equal(r->status, 429);
	done(r);
	mock.publish_rc = PLANT_OK;
	r = posts(&i, "s", NULL, "k-2", "{}");
	expect_202(r, 1);
	assert_string_equal(r->header, "");
	done(r);
	assert_int_equal(json_array_size(mock.published), 3);

	/* a bad request claims nothing */
	r = posts(&i, "s", NULL, "k-3", "{");
	assert_int_equal(r->status, 400);
	done(r);
	r = posts(&i, "s", NULL, "k-3", "{}");
	expect_202(r, 1);
	assert_string_equal(r->header, "");
	done(r);

	/* a request in progress: 409 */
	if (i.in->use_store) {
		json_t *p = json_pack("{s:s}", "state", "pending");

		assert_int_equal(
			m_store_put(NULL, 3, "idem/k-4", 8, p, PLANT_PUT_IF_ABSENT, 0, 1000, NULL),
			PLANT_OK);
	} else {
		struct buf b = {0};
		uint64_t token;

		assert_int_equal(idem_claim(&i.in->table, "k-4", 3, fingerprint("s", "{}", 2),
					    mock.now, 1000, &b, &token),
				 CLAIMED);
	}
	r = posts(&i, "s", NULL, "k-4", "{}");
	assert_int_equal(r->status, 409);
	assert_string_equal(error_of(r), "a request with this Idempotency-Key is in progress");
	done(r);

	/* the same key for another request: 422, nothing published */
	r = posts(&i, "s", NULL, "k-1", "[{\"n\":1},{\"n\":3}]");
	assert_int_equal(r->status, 422);
	assert_non_null(strstr(error_of(r), "another request"));
	done(r);
	r = posts(&i, "t", NULL, "k-1", "[{\"n\":1},{\"n\":2}]");
	assert_int_equal(r->status, 422);
	done(r);
	assert_int_equal(json_array_size(mock.published), 4);

	/* keys that are not keys */
	r = posts(&i, "s", NULL, "", "{}");
	assert_int_equal(r->status, 400);
	done(r);
	r = posts(&i, "s", NULL, "a b", "{}");
	assert_int_equal(r->status, 400);
	done(r);

	/* after the TTL the key is new again, for any request */
	mock.now += 86400000;
	r = posts(&i, "s", NULL, "k-1", "[{\"n\":1},{\"n\":2}]");
	expect_202(r, 2);
	assert_string_equal(r->header, "");
	done(r);
	assert_int_equal(json_array_size(mock.published), 6);
	mock.tick(i.in, NULL);
	assert_int_equal(counter("replayed"), 1);
	finish(&i);
}

static void test_idempotency_memory(void **state)
{
	(void)state;
	idempotency_cases("{}");
}

static void test_idempotency_store(void **state)
{
	(void)state;
	idempotency_cases("{\"idempotency_store\": \"idem\"}");
	/* answers kept under idem/KEY, with ids and count */
	assert_non_null(json_object_get(mock.store, "idem/k-2"));
	assert_int_equal(json_integer_value(json_object_get(
				 json_object_get(json_object_get(mock.store, "idem/k-1"), "value"),
				 "count")),
			 2);
}

static void test_idempotency_store_fails(void **state)
{
	struct inst i;
	struct plant_http_req *r;

	(void)state;
	assert_int_equal(start(&i, "{\"idempotency_store\": \"idem\"}"), PLANT_OK);
	mock.store_rc = PLANT_E_IO;
	r = posts(&i, "s", NULL, "k", "{}");
	expect_error(r, 503);
	done(r);
	r = posts(&i, "s", NULL, "k", "{}");
	expect_error(r, 503);
	done(r);
	assert_int_equal(mock.logs, 1); /* once until it works again */
	r = posts(&i, "s", NULL, NULL, "{}");
	expect_202(r, 1); /* without a key, the store is not needed */
	done(r);
	mock.store_rc = PLANT_OK;
	r = posts(&i, "s", NULL, "k", "{}");
	expect_202(r, 1);
	done(r);
	assert_int_equal(mock.logs, 2);
	mock.tick(i.in, NULL);
	assert_int_equal(counter("idempotency_errors"), 2);
	finish(&i);
}

static void test_idempotency_eviction(void **state)
{
	struct inst i;
	struct plant_http_req *r;
	char key[16];

	(void)state;
	assert_int_equal(start(&i, "{\"idempotency_max\": 2}"), PLANT_OK);
	for (int k = 0; k < 3; k++) {
		snprintf(key, sizeof(key), "k%d", k);
		r = posts(&i, "s", NULL, key, "{}");
		expect_202(r, 1);
		done(r);
	}
	assert_int_equal(i.in->table.count, 2);
	r = posts(&i, "s", NULL, "k2", "{}"); /* kept */
	assert_string_equal(r->header, "Idempotency-Replayed");
	done(r);
	r = posts(&i, "s", NULL, "k0", "{}"); /* evicted: published again */
	assert_string_equal(r->header, "");
	done(r);
	assert_int_equal(json_array_size(mock.published), 4);
	finish(&i);
}

/* Many keys through a growing table, found again after growth. */
static void test_idempotency_table(void **state)
{
	struct idem_table t;
	struct buf b = {0};
	char key[32];
	uint64_t token;

	(void)state;
	assert_int_equal(idem_init(&t, 5000, 42), PLANT_OK);
	for (int k = 0; k < 6000; k++) {
		int len = snprintf(key, sizeof(key), "key-%d", k);

		assert_int_equal(idem_claim(&t, key, (size_t)len, 7, 10, 100, &b, &token), CLAIMED);
		idem_finish(&t, key, (size_t)len, token, key, (size_t)len);
	}
	assert_int_equal(t.count, 5000);
	assert_true(t.mask + 1 >= 4096);
	for (int k = 0; k < 6000; k++) {
		int len = snprintf(key, sizeof(key), "key-%d", k);

		b.len = 0;
		if (k < 1000) {
			assert_null(idem_find(&t, key_hash(t.seed, key, (size_t)len), key,
					      (size_t)len));
			continue;
		}
		assert_int_equal(idem_claim(&t, key, (size_t)len, 7, 10, 100, &b, &token),
				 ANSWERED);
		assert_int_equal(b.len, (size_t)len);
		assert_memory_equal(b.p, key, (size_t)len);
	}
	/* all expire */
	assert_int_equal(idem_claim(&t, "x", 1, 7, 110, 100, &b, &token), CLAIMED);
	assert_int_equal(t.count, 1);
	free(b.p);
	idem_free(&t);
}

static void test_config(void **state)
{
	static const char *const bad[][2] = {
		{"{\"listener\": \"\"}", "listener"},
		{"{\"topics\": [\"a..b\"]}", "topics"},
		{"{\"topics\": [3]}", "topics"},
		{"{\"topic_prefix\": \".x\"}", "topic_prefix"},
		{"{\"topic_prefix\": \"a b\"}", "topic_prefix"},
		{"{\"max_items\": 0}", "max_items"},
		{"{\"idempotency_max\": 0}", "idempotency_max"},
		{"{\"idempotency_ttl\": 0}", "idempotency_ttl"},
		{"{\"listener\": \"nowhere\"}", "listener"},
		{"{\"idempotency_store\": \"nowhere\"}", "idempotency_store"},
	};
	struct inst i;

	(void)state;
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		mock.err_key[0] = '\0';
		assert_int_equal(start(&i, bad[k][0]), PLANT_E_CONFIG);
		assert_string_equal(mock.err_key, bad[k][1]);
	}
	assert_int_equal(start(&i, "{\"listener\": \"other\", \"retry_after\": 0}"), PLANT_OK);
	assert_string_equal(i.in->retry_after, "0");
	finish(&i);
}

/* ---- several threads at once ---------------------------------------------------- */

#define THREADS	   4
#define PER_THREAD 3000
#define KEYS	   500

static struct inst shared;
static _Atomic int answers[600]; /* by status */

static void *hammer(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	char key[16];

	for (int k = 0; k < PER_THREAD; k++) {
		struct plant_http_req req = {.tail = "s", .content_type = NULL};
		int pick = rand_r(&seed) % 4;

		snprintf(key, sizeof(key), "k%d", rand_r(&seed) % KEYS);
		if (pick == 0) {
			req.body = "[{\"a\":1},{\"a\":2},{\"a\":3}]";
		} else if (pick == 1) {
			req.body = "{\"a\":1}\n{\"a\":2}\n";
			req.content_type = "application/x-ndjson";
		} else if (pick == 2) {
			req.body = "{\"a\":";
		} else {
			req.body = "{\"a\":1}";
			req.key = key;
		}
		req.body_len = strlen(req.body);
		mock.handler(shared.in, &req, NULL);
		if (req.replies != 1)
			abort();
		answers[req.status]++;
		json_decref(req.answer);
	}
	return NULL;
}

static void test_threads(void **state)
{
	pthread_t th[THREADS];
	size_t keyed = 0;
	json_t *seen = json_object();

	(void)state;
	assert_int_equal(start(&shared, "{\"idempotency_max\": 100}"), PLANT_OK);
	for (uintptr_t k = 0; k < THREADS; k++)
		assert_int_equal(pthread_create(&th[k], NULL, hammer, (void *)(k + 1)), 0);
	for (int k = 0; k < THREADS; k++)
		pthread_join(th[k], NULL);
	mock.tick(shared.in, NULL);
	assert_int_equal(counter("requests"), THREADS * PER_THREAD);
	assert_int_equal(answers[202] + answers[400] + answers[409], THREADS * PER_THREAD);
	assert_int_equal(counter("rejected"), answers[400]);
	assert_int_equal(counter("readings"), json_array_size(mock.published));
	/* every id once */
	for (size_t k = 0; k < json_array_size(mock.published); k++) {
		const char *id =
			json_string_value(json_object_get(json_array_get(mock.published, k), "id"));

		assert_null(json_object_get(seen, id));
		json_object_set_new(seen, id, json_true());
		if (json_integer_value(json_object_get(published_body(k), "a")) == 1 &&
		    json_object_size(published_body(k)) == 1)
			keyed++;
	}
	assert_true(keyed > 0);
	json_decref(seen);
	finish(&shared);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_one_object, setup, teardown),
		cmocka_unit_test_setup_teardown(test_array, setup, teardown),
		cmocka_unit_test_setup_teardown(test_array_texts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ndjson, setup, teardown),
		cmocka_unit_test_setup_teardown(test_syntax_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_utf8, setup, teardown),
		cmocka_unit_test_setup_teardown(test_content_types, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_items, setup, teardown),
		cmocka_unit_test_setup_teardown(test_topics, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bus_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stamp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idempotency_memory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idempotency_store, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idempotency_store_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idempotency_eviction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idempotency_table, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
