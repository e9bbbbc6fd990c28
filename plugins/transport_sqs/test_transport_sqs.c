/* Unit tests of transport_sqs against a mock host whose HTTP client is
 * scripted by the test: each request the plugin sends waits in a list
 * until the test answers it, with any status, headers and body (a
 * throttling error, a 500, malformed JSON, an unrelated 200). The clock is
 * the test's. The plugin's source is included, so its statics are at hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "transport_sqs.c"
#include "jsonfields.h"

/* A delivery or a held handle. */
struct plant_msg {
	char id[32];
	char topic[64];
	char *text;
	json_t *body;  /* parsed on demand */
	json_t *attrs; /* object of strings, or NULL */
	uint64_t ts;
	bool handle;
	bool settled;
};

/* A request the plugin sent, waiting for the test's answer. */
struct call {
	char target[64];
	json_t *body;
	plant_http_done done;
	void *user;
	uint64_t timeout;
};

/* What the host hands the plugin as a result, plus headers. */
struct mres {
	struct plant_http_result r;
	const char *headers[8]; /* name, value pairs */
};

#define CALLS_MAX 64

static struct {
	uint64_t now;
	json_t *logs;
	json_t *counters, *gauges;
	json_t *acked, *nacked, *rejected; /* ids; rejected: id -> reason */
	int live_handles, released, unsubscribed, consumes;
	plant_msg_handler handler;
	plant_timer_fn tick;
	bool consuming;
	char err_key[64], err[512];
	struct call calls[CALLS_MAX];
	size_t n_calls;
	/* http_call_wait answers with these, in turn */
	struct mres sync_res[8];
	size_t n_sync, sync_used;
	json_t *sync_calls; /* the bodies it was sent */
	/* publish_all */
	int publish_rc;
	size_t publish_bad; /* with PLANT_E_INVALID: the failed index */
	json_t *published;  /* [{topic, text|body, attrs, dedup}] */
	int reject_rc;
	void *state;
} mock;

static void m_log(plant_instance *self, int level, const char *fmt, ...)
{
	char line[4096];
	va_list ap;
	(void)self;
	(void)level;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	json_array_append_new(mock.logs, json_string(line));
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "log: %s\n", line);
}

static void m_error(plant_instance *self, const char *key, const char *fmt, ...)
{
	va_list ap;
	(void)self;
	snprintf(mock.err_key, sizeof mock.err_key, "%s", key ? key : "");
	va_start(ap, fmt);
	vsnprintf(mock.err, sizeof mock.err, fmt, ap);
	va_end(ap);
}

static int m_counter_add(plant_instance *self, const char *name, uint64_t delta)
{
	(void)self;
	json_int_t v = json_integer_value(json_object_get(mock.counters, name));
	json_object_set_new(mock.counters, name, json_integer(v + (json_int_t)delta));
	return PLANT_OK;
}

static int m_gauge_set(plant_instance *self, const char *name, double value)
{
	(void)self;
	json_object_set_new(mock.gauges, name, json_real(value));
	return PLANT_OK;
}

static int m_timer_add(plant_instance *self, uint64_t every, uint64_t jit, plant_timer_fn fn,
		       void *user, uint64_t *out)
{
	(void)self;
	(void)every;
	(void)jit;
	(void)user;
	mock.tick = fn;
	if (out)
		*out = 1;
	return PLANT_OK;
}

static uint64_t m_now_ms(plant_instance *self)
{
	(void)self;
	return mock.now;
}

static const char *m_msg_id(const plant_msg *m)
{
	return m->id;
}

static const char *m_msg_topic(const plant_msg *m)
{
	return m->topic;
}

static uint64_t m_msg_ts(const plant_msg *m)
{
	return m->ts;
}

static const char *m_msg_body_text(const plant_msg *m, size_t *len)
{
	*len = strlen(m->text);
	return m->text;
}

static const json_t *m_msg_body(const plant_msg *m)
{
	plant_msg *w = (plant_msg *)m;
	if (!w->body)
		w->body = json_loads(w->text, JSON_DECODE_ANY, NULL);
	return w->body;
}

static const char *m_msg_attr(const plant_msg *m, const char *name)
{
	return json_string_value(json_object_get(m->attrs, name));
}

static int m_msg_fields(const plant_msg *m, const char *const *keys, size_t n,
			struct plant_field *out)
{
	return json_fields(m->text, strlen(m->text), keys, n, out);
}

static int m_consume(plant_instance *self, const char *queue, plant_msg_handler fn, void *user,
		     uint32_t max_batch, uint64_t *out)
{
	(void)self;
	(void)user;
	(void)max_batch;
	assert_string_equal(queue, "out.q");
	mock.handler = fn;
	mock.consuming = true;
	mock.consumes++;
	if (out)
		*out = 42;
	return PLANT_OK;
}

static int m_unsubscribe(plant_instance *self, uint64_t id)
{
	(void)self;
	assert_int_equal(id, 42);
	mock.consuming = false;
	mock.unsubscribed++;
	return PLANT_OK;
}

static void msg_free(plant_msg *m)
{
	free(m->text);
	json_decref(m->body);
	json_decref(m->attrs);
	free(m);
}

static void drop_handle(const plant_msg *m)
{
	if (m->handle) {
		mock.live_handles--;
		msg_free((plant_msg *)m);
	} else {
		((plant_msg *)m)->settled = true;
	}
}

static int m_ack(plant_instance *self, const plant_msg *m)
{
	(void)self;
	json_array_append_new(mock.acked, json_string(m->id));
	drop_handle(m);
	return PLANT_OK;
}

static int m_nack(plant_instance *self, const plant_msg *m, uint64_t delay, const char *reason)
{
	(void)self;
	(void)delay;
	(void)reason;
	json_array_append_new(mock.nacked, json_string(m->id));
	drop_handle(m);
	return PLANT_OK;
}

static int m_reject(plant_instance *self, const plant_msg *m, const char *reason)
{
	(void)self;
	if (mock.reject_rc)
		return mock.reject_rc;
	json_object_set_new(mock.rejected, m->id, json_string(reason));
	drop_handle(m);
	return PLANT_OK;
}

static const plant_msg *m_hold(plant_instance *self, const plant_msg *m)
{
	(void)self;
	plant_msg *h = calloc(1, sizeof *h);
	*h = *m;
	h->text = strdup(m->text);
	h->body = NULL;
	h->attrs = m->attrs ? json_deep_copy(m->attrs) : NULL;
	h->handle = true;
	((plant_msg *)m)->settled = true;
	mock.live_handles++;
	return h;
}

static void m_release(plant_instance *self, const plant_msg *m)
{
	(void)self;
	mock.released++;
	drop_handle(m);
}

static int m_publish_all(plant_instance *self, struct plant_publish *items, size_t n,
			 size_t *failed)
{
	(void)self;
	for (size_t i = 0; i < n; i++) {
		if (mock.publish_rc == PLANT_E_INVALID && i == mock.publish_bad && !items[i].body) {
			*failed = i;
			for (size_t k = 0; k < n; k++)
				json_decref(items[k].body);
			return PLANT_E_INVALID;
		}
	}
	if (mock.publish_rc && mock.publish_rc != PLANT_E_INVALID) {
		for (size_t k = 0; k < n; k++)
			json_decref(items[k].body);
		return mock.publish_rc;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *p = json_object();
		json_object_set_new(p, "topic", json_string(items[i].topic));
		if (items[i].body)
			json_object_set_new(p, "body", items[i].body);
		else
			json_object_set_new(p, "text",
					    json_stringn(items[i].text, items[i].text_len));
		json_object_set_new(p, "attrs", json_deep_copy(items[i].attributes));
		if (items[i].dedup_key)
			json_object_set_new(p, "dedup", json_string(items[i].dedup_key));
		json_array_append_new(mock.published, p);
	}
	return PLANT_OK;
}

static const char *header_of(const char *const *h, const char *name)
{
	for (size_t i = 0; h && h[i]; i += 2)
		if (strcasecmp(h[i], name) == 0)
			return h[i + 1];
	return NULL;
}

static int m_http_call(plant_instance *self, const struct plant_http_call *c, plant_http_done done,
		       void *user)
{
	(void)self;
	assert_true(mock.n_calls < CALLS_MAX);
	assert_string_equal(c->method, "POST");
	assert_string_equal(c->aws_service, "sqs");
	assert_string_equal(header_of(c->headers, "Content-Type"), "application/x-amz-json-1.0");
	assert_null(header_of(c->headers, "Expect"));
	struct call *k = &mock.calls[mock.n_calls++];
	snprintf(k->target, sizeof k->target, "%s", header_of(c->headers, "X-Amz-Target"));
	k->body = json_loadb(c->body, c->body_len, 0, NULL);
	assert_non_null(k->body);
	k->done = done;
	k->user = user;
	k->timeout = c->timeout_ms;
	return PLANT_OK;
}

static int m_http_call_wait(plant_instance *self, const struct plant_http_call *c,
			    struct plant_http_result **out)
{
	(void)self;
	assert_true(mock.sync_used < mock.n_sync);
	json_t *body = json_loadb(c->body, c->body_len, 0, NULL);
	json_object_set_new(body, "_target", json_string(header_of(c->headers, "X-Amz-Target")));
	json_array_append_new(mock.sync_calls, body);
	struct mres *r = malloc(sizeof *r);
	*r = mock.sync_res[mock.sync_used++];
	*out = &r->r;
	return r->r.status;
}

static void m_http_result_free(struct plant_http_result *r)
{
	free(r);
}

static const char *m_http_result_header(const struct plant_http_result *r, const char *name)
{
	const struct mres *m = (const struct mres *)(const void *)r;
	return header_of(m->headers, name);
}

static const struct plant_host_api api = {
	.struct_size = sizeof(struct plant_host_api),
	.abi_major = PLANT_ABI_MAJOR,
	.abi_minor = PLANT_ABI_MINOR,
	.log = m_log,
	.error = m_error,
	.timer_add = m_timer_add,
	.unsubscribe = m_unsubscribe,
	.counter_add = m_counter_add,
	.gauge_set = m_gauge_set,
	.now_ms = m_now_ms,
	.msg_id = m_msg_id,
	.msg_topic = m_msg_topic,
	.msg_ts = m_msg_ts,
	.msg_body_text = m_msg_body_text,
	.msg_body = m_msg_body,
	.msg_attr = m_msg_attr,
	.consume = m_consume,
	.ack = m_ack,
	.nack = m_nack,
	.hold = m_hold,
	.release = m_release,
	.reject = m_reject,
	.msg_fields = m_msg_fields,
	.publish_all = m_publish_all,
	.http_call = m_http_call,
	.http_call_wait = m_http_call_wait,
	.http_result_free = m_http_result_free,
	.http_result_header = m_http_result_header,
};

/* ---- helpers ------------------------------------------------------------------ */

static int setup(void **state)
{
	(void)state;
	memset(&mock, 0, sizeof mock);
	mock.now = 1000000;
	mock.logs = json_array();
	mock.counters = json_object();
	mock.gauges = json_object();
	mock.acked = json_array();
	mock.nacked = json_array();
	mock.rejected = json_object();
	mock.published = json_array();
	mock.sync_calls = json_array();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < mock.n_calls; i++)
		json_decref(mock.calls[i].body);
	assert_int_equal(mock.live_handles, 0);
	json_decref(mock.logs);
	json_decref(mock.counters);
	json_decref(mock.gauges);
	json_decref(mock.acked);
	json_decref(mock.nacked);
	json_decref(mock.rejected);
	json_decref(mock.published);
	json_decref(mock.sync_calls);
	return 0;
}

static uint64_t duration(const char *text)
{
	char *end;
	double v = strtod(text, &end);
	if (strcmp(end, "ms") == 0)
		return (uint64_t)v;
	if (strcmp(end, "s") == 0 || !*end)
		return (uint64_t)(v * 1000);
	if (strcmp(end, "m") == 0)
		return (uint64_t)(v * 60000);
	fail_msg("bad duration %s", text);
	return 0;
}

/* The settings as the host hands them: `json` plus the defaults, with
 * durations in ms. */
static json_t *config(const char *json)
{
	json_t *c = json_loads(json, 0, NULL);
	assert_non_null(c);
	for (const struct plant_config_key *k = config_keys; k->name; k++) {
		json_t *v = json_object_get(c, k->name);
		if (!v && k->default_value) {
			v = json_loads(k->default_value, JSON_DECODE_ANY, NULL);
			json_object_set_new(c, k->name, v);
		}
		if (k->type == PLANT_CFG_DURATION && json_is_string(v))
			json_object_set_new(
				c, k->name,
				json_integer((json_int_t)duration(json_string_value(v))));
	}
	return c;
}

static json_t *cfg_now;

static int start(const char *json)
{
	void *st = NULL;
	cfg_now = config(json);
	int rc = PLANT_PLUGIN_DESC.init(NULL, &api, cfg_now, &st);
	if (rc != PLANT_OK) {
		json_decref(cfg_now);
		return rc;
	}
	mock.state = st;
	return PLANT_PLUGIN_DESC.start(st);
}

static void finish(void)
{
	PLANT_PLUGIN_DESC.stop(mock.state);
	/* what was in flight is answered "stopping", as the host does */
	for (size_t i = 0; i < mock.n_calls; i++) {
		if (mock.calls[i].done) {
			struct plant_http_result r = {.status = PLANT_E_STATE, .error = "stopping"};
			plant_http_done d = mock.calls[i].done;
			mock.calls[i].done = NULL;
			d(mock.state, &r, mock.calls[i].user);
		}
	}
	PLANT_PLUGIN_DESC.destroy(mock.state);
	json_decref(cfg_now);
}

/* Deliver a batch of `n` messages r-<first>..: ids "m<first+i>". */
static void deliver(size_t first, size_t n)
{
	plant_msg *v[256];
	assert_true(n <= 256);
	assert_true(mock.consuming);
	for (size_t i = 0; i < n; i++) {
		v[i] = calloc(1, sizeof *v[i]);
		snprintf(v[i]->id, sizeof v[i]->id, "m%zu", first + i);
		snprintf(v[i]->topic, sizeof v[i]->topic, "sensor.raw");
		char text[128];
		snprintf(text, sizeof text, "{\"id\":\"r-%zu\",\"v\":%zu,\"s\":\"a\\\"b\"}",
			 first + i, first + i);
		v[i]->text = strdup(text);
		v[i]->ts = 1700000000000 + first + i;
		v[i]->attrs = json_pack("{s:s}", "site", "north");
	}
	assert_int_equal(mock.handler(mock.state, (const plant_msg *const *)v, n, NULL), PLANT_OK);
	for (size_t i = 0; i < n; i++) {
		/* what the handler left unsettled is acked by the host */
		if (!v[i]->settled)
			json_array_append_new(mock.acked, json_string(v[i]->id));
		msg_free(v[i]);
	}
}

/* Index of the oldest unanswered call with `target` (AmazonSQS.X), or
 * fails. */
static size_t pending_call(const char *action)
{
	char target[64];
	snprintf(target, sizeof target, "AmazonSQS.%s", action);
	for (size_t i = 0; i < mock.n_calls; i++)
		if (mock.calls[i].done && strcmp(mock.calls[i].target, target) == 0)
			return i;
	fail_msg("no pending %s call", action);
	return 0;
}

static size_t n_pending_calls(const char *action)
{
	char target[64];
	size_t n = 0;
	snprintf(target, sizeof target, "AmazonSQS.%s", action);
	for (size_t i = 0; i < mock.n_calls; i++)
		n += mock.calls[i].done && strcmp(mock.calls[i].target, target) == 0;
	return n;
}

/* Answer call `i`. headers: NULL or name, value pairs. */
static void answer_h(size_t i, int status, long http, const char *body, const char *const *hdrs)
{
	struct mres r;
	memset(&r, 0, sizeof r);
	r.r.status = status;
	r.r.http_status = http;
	r.r.body = body ? body : "";
	r.r.body_len = body ? strlen(body) : 0;
	r.r.error = status ? "connection refused" : "";
	for (size_t k = 0; hdrs && hdrs[k] && k < 6; k++)
		r.headers[k] = hdrs[k];
	plant_http_done d = mock.calls[i].done;
	mock.calls[i].done = NULL;
	d(mock.state, &r.r, mock.calls[i].user);
}

static void answer(size_t i, long http, const char *body)
{
	answer_h(i, PLANT_OK, http, body, NULL);
}

/* A SendMessageBatch answer accepting every entry of call `i` but those
 * listed in `fail` (entry ids, -1 terminated) with `code`. */
static char *send_answer(size_t i, const int *fail, const char *code, bool sender)
{
	json_t *entries = json_object_get(mock.calls[i].body, "Entries");
	json_t *ok = json_array(), *bad = json_array();
	size_t k;
	json_t *e;
	json_array_foreach(entries, k, e)
	{
		const char *id = json_string_value(json_object_get(e, "Id"));
		bool f = false;
		for (size_t x = 0; fail && fail[x] >= 0; x++)
			f = f || atoi(id) == fail[x];
		if (f)
			json_array_append_new(bad, json_pack("{s:s, s:b, s:s, s:s}", "Id", id,
							     "SenderFault", sender, "Code", code,
							     "Message", "it went wrong"));
		else
			json_array_append_new(ok,
					      json_pack("{s:s, s:s, s:s}", "Id", id, "MessageId",
							"mid", "MD5OfMessageBody", "x"));
	}
	json_t *j = json_pack("{s:o, s:o}", "Successful", ok, "Failed", bad);
	char *text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	return text;
}

static void answer_send(size_t i, const int *fail, const char *code, bool sender)
{
	char *t = send_answer(i, fail, code, sender);
	answer(i, 200, t);
	free(t);
}

static json_int_t counter(const char *name)
{
	return json_integer_value(json_object_get(mock.counters, name));
}

static double gauge(const char *name)
{
	return json_real_value(json_object_get(mock.gauges, name));
}

static bool logged(const char *needle)
{
	size_t i;
	json_t *l;
	json_array_foreach(mock.logs, i, l)
	{
		if (strstr(json_string_value(l), needle))
			return true;
	}
	return false;
}

static bool id_in(const json_t *arr, const char *id)
{
	size_t i;
	json_t *x;
	json_array_foreach(arr, i, x)
	{
		if (strcmp(json_string_value(x), id) == 0)
			return true;
	}
	return false;
}

static void tick_after(uint64_t ms)
{
	mock.now += ms;
	mock.tick(mock.state, NULL);
}

#define OUT_CFG "{\"queue\": \"out.q\", \"queue_url\": \"http://127.0.0.1:1/000000000000/q\""

/* ---- out ------------------------------------------------------------------------ */

static void test_out_sends_and_acks(void **state)
{
	(void)state;
	assert_int_equal(start(OUT_CFG ", \"attributes\": [\"site\"]}"), PLANT_OK);
	assert_true(mock.consuming);
	deliver(0, 25);
	/* 10 + 10 + 5, at once (max_inflight 4) */
	assert_int_equal(n_pending_calls("SendMessageBatch"), 3);
	assert_int_equal(json_array_size(mock.acked), 0); /* held, not acked */
	size_t c = pending_call("SendMessageBatch");
	json_t *b = mock.calls[c].body;
	assert_string_equal(json_string_value(json_object_get(b, "QueueUrl")),
			    "http://127.0.0.1:1/000000000000/q");
	json_t *e0 = json_array_get(json_object_get(b, "Entries"), 0);
	assert_string_equal(json_string_value(json_object_get(e0, "MessageBody")),
			    "{\"id\":\"r-0\",\"v\":0,\"s\":\"a\\\"b\"}");
	json_t *ma = json_object_get(e0, "MessageAttributes");
	assert_string_equal(json_string_value(json_object_get(json_object_get(ma, "plantd.topic"),
							      "StringValue")),
			    "sensor.raw");
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(ma, "plantd.id"), "StringValue")),
		"m0");
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(ma, "site"), "StringValue")),
		"north");
	assert_null(json_object_get(e0, "MessageGroupId"));
	answer_send(c, NULL, NULL, false);
	assert_int_equal(json_array_size(mock.acked), 10);
	answer_send(pending_call("SendMessageBatch"), NULL, NULL, false);
	answer_send(pending_call("SendMessageBatch"), NULL, NULL, false);
	assert_int_equal(json_array_size(mock.acked), 25);
	assert_int_equal(counter("sent"), 25);
	assert_int_equal(gauge("pending"), 0);
	finish();
}

static void test_out_failed_entries_retried(void **state)
{
	(void)state;
	assert_int_equal(start(OUT_CFG "}"), PLANT_OK);
	deliver(0, 10);
	const int fail[] = {3, 7, -1};
	answer_send(pending_call("SendMessageBatch"), fail, "InternalError", false);
	assert_int_equal(json_array_size(mock.acked), 8);
	assert_false(id_in(mock.acked, "m3"));
	assert_int_equal(counter("send_failed"), 2);
	assert_int_equal(counter("retries"), 2);
	assert_true(logged("InternalError"));
	/* after their backoff (at most retry_base * 2), the two go again */
	tick_after(500);
	size_t c = pending_call("SendMessageBatch");
	json_t *entries = json_object_get(mock.calls[c].body, "Entries");
	assert_int_equal(json_array_size(entries), 2);
	answer_send(c, NULL, NULL, false);
	assert_true(id_in(mock.acked, "m3"));
	assert_true(id_in(mock.acked, "m7"));
	assert_int_equal(counter("sent"), 10);
	finish();
}

/* Answers that are not what SendMessageBatch returns: nothing is taken
 * for sent, the service's code and message are logged and counted, the
 * messages go again after a backoff the gauge shows. */
static void test_out_bad_answers(void **state)
{
	(void)state;
	static const char *const qerr[] = {"x-amzn-query-error",
					   "AWS.SimpleQueueService.NonExistentQueue;Sender", NULL};
	static const char *const bodies[][2] = {
		{"200", "{\"QueueUrl\":\"http://x/1/q\"}"},  /* unrelated */
		{"200", "{\"Successful\":[]}"},		     /* entries missing */
		{"200", "{\"Successful\":[{\"Id\":\"0\"}]"}, /* not JSON */
		{"200", "<html>ok</html>"},		     /* not JSON */
		{"400", "{\"__type\":\"com.amazonaws.sqs#ThrottlingException\","
			"\"message\":\"Rate exceeded\"}"},
		{"503", "<html>Service Unavailable</html>"},
		{"500", "{\"__type\":\"InternalFailure\"}"},
	};
	assert_int_equal(
		start(OUT_CFG
		      ", \"retry_max\": \"2s\", \"hold_max\": \"60s\", \"log_interval\": \"1s\"}"),
		PLANT_OK);
	deliver(0, 3);
	for (size_t k = 0; k < sizeof bodies / sizeof bodies[0]; k++) {
		size_t c = pending_call("SendMessageBatch");
		answer(c, atol(bodies[k][0]), bodies[k][1]);
		assert_int_equal(json_array_size(mock.acked), 0);
		assert_true(gauge("backoff_ms") > 0);
		/* sent again within the backoff (full jitter: maybe at once) */
		tick_after(2100);
		assert_int_equal(n_pending_calls("SendMessageBatch"), 1);
	}
	assert_true(logged("MalformedAnswer"));
	assert_true(logged("ThrottlingException: Rate exceeded"));
	assert_true(logged("HTTP 503"));
	assert_true(logged("InternalFailure"));
	assert_int_equal(counter("errors_malformed"), 4);
	assert_int_equal(counter("errors_throttling"), 1);
	assert_int_equal(counter("errors_server"), 2);
	assert_int_equal(counter("retries"), 21);
	/* the queue is gone: the URL was configured, so it is kept */
	size_t c = pending_call("SendMessageBatch");
	answer_h(c, PLANT_OK, 400,
		 "{\"__type\":\"com.amazonaws.sqs#QueueDoesNotExist\","
		 "\"message\":\"The specified queue does not exist.\"}",
		 (const char *const *)qerr);
	assert_true(logged("QueueDoesNotExist (AWS.SimpleQueueService.NonExistentQueue)"));
	assert_int_equal(counter("errors_no_queue"), 1);
	tick_after(2100);
	answer_send(pending_call("SendMessageBatch"), NULL, NULL, false);
	assert_int_equal(json_array_size(mock.acked), 3);
	assert_true(logged("works again"));
	assert_true(gauge("backoff_ms") == 0);
	finish();
}

/* SQS unreachable: the window fills, the consumer pauses and gives back
 * what it held; a probe finds SQS again and consuming resumes. */
static void test_out_pause_and_resume(void **state)
{
	(void)state;
	assert_int_equal(start(OUT_CFG ", \"max_pending\": 30, \"max_inflight\": 1}"), PLANT_OK);
	deliver(0, 10);
	answer_h(pending_call("SendMessageBatch"), PLANT_E_IO, 0, NULL, NULL);
	assert_int_equal(json_array_size(mock.acked), 0);
	assert_true(mock.consuming);
	/* the retry may go at once (full jitter can wait 0 ms): when the
	 * window fills before the backoff ends, a synchronous send fails too */
	for (size_t i = 0; i < 4; i++)
		mock.sync_res[i] = (struct mres){
			.r = {.status = PLANT_E_IO, .body = "", .error = "connection refused"}};
	mock.n_sync = 4;
	deliver(10, 10);
	deliver(20, 10); /* 30 held: full, and failing: pause */
	assert_false(mock.consuming);
	assert_int_equal(mock.unsubscribed, 1);
	assert_int_equal(mock.live_handles, 0); /* all given back */
	assert_true(logged("paused"));
	assert_int_equal(gauge("paused"), 1);
	/* the probe after the backoff */
	tick_after(500);
	size_t p = pending_call("GetQueueAttributes");
	answer_h(p, PLANT_E_IO, 0, NULL, NULL);
	assert_false(mock.consuming);
	tick_after(1000);
	p = pending_call("GetQueueAttributes");
	answer(p, 200, "{\"Attributes\":{\"QueueArn\":\"arn:aws:sqs:us-east-1:0:q\"}}");
	assert_true(mock.consuming);
	assert_int_equal(gauge("paused"), 0);
	deliver(0, 10);
	answer_send(pending_call("SendMessageBatch"), NULL, NULL, false);
	assert_int_equal(json_array_size(mock.acked), 10);
	finish();
}

/* With the window full and SQS answering, the handler sends synchronously
 * until there is room: the queue keeps the rest. */
static void test_out_window_full_sends_synchronously(void **state)
{
	(void)state;
	assert_int_equal(start(OUT_CFG ", \"max_pending\": 20, \"max_inflight\": 1}"), PLANT_OK);
	deliver(0, 10); /* one async request */
	assert_int_equal(n_pending_calls("SendMessageBatch"), 1);
	char *ok = strdup("{\"Successful\":["
			  "{\"Id\":\"0\",\"MessageId\":\"a\"},{\"Id\":\"1\",\"MessageId\":\"a\"},"
			  "{\"Id\":\"2\",\"MessageId\":\"a\"},{\"Id\":\"3\",\"MessageId\":\"a\"},"
			  "{\"Id\":\"4\",\"MessageId\":\"a\"},{\"Id\":\"5\",\"MessageId\":\"a\"},"
			  "{\"Id\":\"6\",\"MessageId\":\"a\"},{\"Id\":\"7\",\"MessageId\":\"a\"},"
			  "{\"Id\":\"8\",\"MessageId\":\"a\"},{\"Id\":\"9\",\"MessageId\":\"a\"}],"
			  "\"Failed\":[]}");
	mock.sync_res[0] = (struct mres){.r = {.status = PLANT_OK,
					       .http_status = 200,
					       .body = ok,
					       .body_len = strlen(ok),
					       .error = ""}};
	mock.n_sync = 1;
	deliver(10, 10); /* 20 held: one batch synchronously */
	assert_int_equal(mock.sync_used, 1);
	json_t *sc = json_array_get(mock.sync_calls, 0);
	assert_string_equal(json_string_value(json_object_get(sc, "_target")),
			    "AmazonSQS.SendMessageBatch");
	assert_string_equal(
		json_string_value(json_object_get(json_array_get(json_object_get(sc, "Entries"), 0),
						  "MessageBody")),
		"{\"id\":\"r-10\",\"v\":10,\"s\":\"a\\\"b\"}");
	assert_int_equal(json_array_size(mock.acked), 10);
	assert_true(mock.consuming);
	answer_send(pending_call("SendMessageBatch"), NULL, NULL, false);
	assert_int_equal(json_array_size(mock.acked), 20);
	free(ok);
	finish();
}

/* An entry SQS refuses as the sender's fault is dead-lettered after
 * max_attempts, with SQS's code and message as the reason. */
static void test_out_sender_fault_dead_letter(void **state)
{
	(void)state;
	assert_int_equal(start(OUT_CFG ", \"max_attempts\": 2}"), PLANT_OK);
	deliver(0, 2);
	const int fail[] = {1, -1};
	answer_send(pending_call("SendMessageBatch"), fail, "InvalidMessageContents", true);
	assert_int_equal(json_array_size(mock.acked), 1);
	tick_after(1000);
	answer_send(pending_call("SendMessageBatch"), (const int[]){0, -1},
		    "InvalidMessageContents", true);
	const char *why = json_string_value(json_object_get(mock.rejected, "m1"));
	assert_non_null(why);
	assert_non_null(strstr(why, "InvalidMessageContents: it went wrong"));
	assert_int_equal(counter("rejected"), 1);
	finish();
}

/* A request-level client error: the batch is split, each message goes
 * alone; the one refused alone max_attempts times is dead-lettered. */
static void test_out_client_error_splits(void **state)
{
	(void)state;
	assert_int_equal(start(OUT_CFG ", \"max_attempts\": 1}"), PLANT_OK);
	deliver(0, 3);
	answer(pending_call("SendMessageBatch"), 400,
	       "{\"__type\":\"com.amazonaws.sqs#InvalidParameterValue\",\"message\":\"bad\"}");
	tick_after(100);
	/* three requests of one */
	assert_int_equal(n_pending_calls("SendMessageBatch"), 3);
	answer_send(pending_call("SendMessageBatch"), NULL, NULL, false);
	answer(pending_call("SendMessageBatch"), 400,
	       "{\"__type\":\"com.amazonaws.sqs#InvalidParameterValue\",\"message\":\"bad\"}");
	answer_send(pending_call("SendMessageBatch"), NULL, NULL, false);
	assert_int_equal(json_array_size(mock.acked), 2);
	assert_non_null(json_object_get(mock.rejected, "m1"));
	finish();
}

static void test_out_too_large(void **state)
{
	(void)state;
	assert_int_equal(start(OUT_CFG ", \"max_batch_bytes\": 1024}"), PLANT_OK);
	plant_msg *m = calloc(1, sizeof *m);
	snprintf(m->id, sizeof m->id, "big");
	snprintf(m->topic, sizeof m->topic, "t");
	m->text = malloc(2000);
	memset(m->text, 'x', 1999);
	m->text[0] = '"';
	m->text[1997] = '"';
	m->text[1998] = '\0';
	const plant_msg *v[1] = {m};
	mock.handler(mock.state, v, 1, NULL);
	assert_non_null(json_object_get(mock.rejected, "big"));
	assert_int_equal(n_pending_calls("SendMessageBatch"), 0);
	msg_free(m);
	finish();
}

/* queue_name: GetQueueUrl, then CreateQueue for a missing queue (FIFO
 * attributes for a .fifo name), then the URL as returned. FIFO entries
 * carry a group id from the field and the plantd id as dedup id. */
static void test_resolve_and_fifo(void **state)
{
	(void)state;
	assert_int_equal(start("{\"queue\": \"out.q\", \"queue_name\": \"readings.fifo\","
			       " \"endpoint\": \"http://127.0.0.1:9\", \"group_id_field\": \"s\"}"),
			 PLANT_OK);
	assert_false(mock.consuming);
	size_t c = pending_call("GetQueueUrl");
	assert_string_equal(json_string_value(json_object_get(mock.calls[c].body, "QueueName")),
			    "readings.fifo");
	answer(c, 400,
	       "{\"__type\":\"com.amazonaws.sqs#QueueDoesNotExist\",\"message\":\"no queue\"}");
	c = pending_call("CreateQueue");
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(mock.calls[c].body, "Attributes"),
						  "FifoQueue")),
		"true");
	answer(c, 200, "{\"QueueUrl\":\"http://sqs.local:9/000000000000/readings.fifo\"}");
	assert_true(mock.consuming);
	/* FIFO: one request at a time, synchronously, in order */
	static const char ok[] = "{\"Successful\":[{\"Id\":\"0\",\"MessageId\":\"a\"},"
				 "{\"Id\":\"1\",\"MessageId\":\"b\"}]}";
	mock.sync_res[0] = (struct mres){.r = {.status = PLANT_OK,
					       .http_status = 200,
					       .body = ok,
					       .body_len = strlen(ok),
					       .error = ""}};
	mock.n_sync = 1;
	deliver(0, 2);
	assert_int_equal(n_pending_calls("SendMessageBatch"), 0);
	json_t *b = json_array_get(mock.sync_calls, 0);
	assert_string_equal(json_string_value(json_object_get(b, "QueueUrl")),
			    "http://sqs.local:9/000000000000/readings.fifo");
	json_t *e = json_array_get(json_object_get(b, "Entries"), 1);
	/* "a\"b" is escaped in the body: decoded through the tree */
	assert_string_equal(json_string_value(json_object_get(e, "MessageGroupId")), "a\"b");
	assert_string_equal(json_string_value(json_object_get(e, "MessageDeduplicationId")), "m1");
	assert_int_equal(json_array_size(mock.acked), 2);
	finish();
}

static void test_resolve_retries(void **state)
{
	(void)state;
	assert_int_equal(start("{\"queue\": \"out.q\", \"queue_name\": \"q1\","
			       " \"endpoint\": \"http://127.0.0.1:9\"}"),
			 PLANT_OK);
	answer_h(pending_call("GetQueueUrl"), PLANT_E_IO, 0, NULL, NULL);
	assert_true(gauge("backoff_ms") > 0);
	tick_after(300);
	answer(pending_call("GetQueueUrl"), 200, "{\"Wrong\":1}");
	assert_true(logged("MalformedAnswer"));
	tick_after(500);
	answer(pending_call("GetQueueUrl"), 200, "{\"QueueUrl\":\"http://h:1/0/q1\"}");
	assert_true(mock.consuming);
	finish();
}

/* ---- in ------------------------------------------------------------------------- */

#define IN_CFG                                                                                    \
	"{\"publish_topic\": \"from.sqs\", \"queue_url\": \"http://127.0.0.1:1/000000000000/q\"," \
	" \"wait_seconds\": 5"

static const char *const RECEIVED =
	"{\"Messages\":["
	"{\"MessageId\":\"s1\",\"ReceiptHandle\":\"rh1\",\"MD5OfBody\":\"x\","
	"\"Body\":\"{\\\"id\\\":\\\"r-1\\\"}\",\"MessageAttributes\":{"
	"\"plantd.id\":{\"DataType\":\"String\",\"StringValue\":\"m1\"},"
	"\"plantd.topic\":{\"DataType\":\"String\",\"StringValue\":\"sensor.raw\"},"
	"\"bin\":{\"DataType\":\"Binary\",\"BinaryValue\":\"AAE=\"}}},"
	"{\"MessageId\":\"s2\",\"ReceiptHandle\":\"rh2\",\"Body\":\"not json\"}]}";

static void test_in_publish_then_delete(void **state)
{
	(void)state;
	assert_int_equal(start(IN_CFG "}"), PLANT_OK);
	size_t c = pending_call("ReceiveMessage");
	json_t *b = mock.calls[c].body;
	assert_int_equal(json_integer_value(json_object_get(b, "WaitTimeSeconds")), 5);
	assert_int_equal(json_integer_value(json_object_get(b, "MaxNumberOfMessages")), 10);
	assert_int_equal(json_integer_value(json_object_get(b, "VisibilityTimeout")), 30);
	assert_true(mock.calls[c].timeout > 5000);
	mock.publish_rc = PLANT_E_INVALID; /* "not json" is refused as text */
	mock.publish_bad = 1;
	answer(c, 200, RECEIVED);
	assert_int_equal(json_array_size(mock.published), 2);
	json_t *p0 = json_array_get(mock.published, 0), *p1 = json_array_get(mock.published, 1);
	assert_string_equal(json_string_value(json_object_get(p0, "topic")), "from.sqs");
	assert_string_equal(json_string_value(json_object_get(p0, "text")), "{\"id\":\"r-1\"}");
	assert_string_equal(json_string_value(json_object_get(p0, "dedup")), "m1");
	json_t *a0 = json_object_get(p0, "attrs");
	assert_string_equal(json_string_value(json_object_get(a0, "source_topic")), "sensor.raw");
	assert_string_equal(json_string_value(json_object_get(a0, "sqs_message_id")), "s1");
	assert_null(json_object_get(a0, "bin"));
	assert_string_equal(json_string_value(json_object_get(p1, "body")), "not json");
	assert_string_equal(json_string_value(json_object_get(p1, "dedup")), "s2");
	/* deleted only now, and polling goes on */
	c = pending_call("DeleteMessageBatch");
	json_t *entries = json_object_get(mock.calls[c].body, "Entries");
	assert_int_equal(json_array_size(entries), 2);
	assert_string_equal(
		json_string_value(json_object_get(json_array_get(entries, 1), "ReceiptHandle")),
		"rh2");
	assert_int_equal(n_pending_calls("ReceiveMessage"), 1);
	answer(c, 200, "{\"Successful\":[{\"Id\":\"0\"},{\"Id\":\"1\"}]}");
	assert_int_equal(counter("received"), 2);
	assert_int_equal(counter("deleted"), 2);
	finish();
}

static void test_in_full_releases(void **state)
{
	(void)state;
	assert_int_equal(start(IN_CFG "}"), PLANT_OK);
	mock.publish_rc = PLANT_E_FULL;
	answer(pending_call("ReceiveMessage"), 200, RECEIVED);
	assert_int_equal(n_pending_calls("DeleteMessageBatch"), 0);
	size_t c = pending_call("ChangeMessageVisibilityBatch");
	json_t *e = json_array_get(json_object_get(mock.calls[c].body, "Entries"), 0);
	assert_string_equal(json_string_value(json_object_get(e, "ReceiptHandle")), "rh1");
	assert_true(json_integer_value(json_object_get(e, "VisibilityTimeout")) <= 1);
	answer(c, 200, "{\"Successful\":[{\"Id\":\"0\"},{\"Id\":\"1\"}],\"Failed\":[]}");
	assert_int_equal(counter("publish_refused"), 2);
	assert_int_equal(counter("visibility_changed"), 2);
	/* no poll before the backoff's end */
	struct sqs *s = mock.state;
	assert_true(n_pending_calls("ReceiveMessage") == 0 || s->in.blocked_until <= mock.now);
	mock.publish_rc = PLANT_OK;
	tick_after(300);
	assert_int_equal(n_pending_calls("ReceiveMessage"), 1);
	finish();
}

static void test_in_full_holds_and_extends(void **state)
{
	(void)state;
	assert_int_equal(
		start(IN_CFG
		      ", \"on_full\": \"hold\", \"visibility_timeout\": \"4s\", \"retry_max\": \"1s\"}"),
		PLANT_OK);
	mock.publish_rc = PLANT_E_FULL;
	answer(pending_call("ReceiveMessage"), 200, RECEIVED);
	assert_int_equal(n_pending_calls("ReceiveMessage"), 0);
	for (int i = 0; i < 10; i++)
		tick_after(250); /* 2.5 s: more than half the visibility timeout */
	size_t c = pending_call("ChangeMessageVisibilityBatch");
	json_t *e = json_array_get(json_object_get(mock.calls[c].body, "Entries"), 1);
	assert_int_equal(json_integer_value(json_object_get(e, "VisibilityTimeout")), 4);
	answer(c, 200, "{\"Successful\":[{\"Id\":\"0\"},{\"Id\":\"1\"}]}");
	assert_int_equal(n_pending_calls("DeleteMessageBatch"), 0);
	mock.publish_rc = PLANT_OK;
	for (int i = 0; i < 40 && !n_pending_calls("DeleteMessageBatch"); i++)
		tick_after(250); /* the next try is within retry_max */
	c = pending_call("DeleteMessageBatch");
	answer(c, 200, "{\"Successful\":[{\"Id\":\"0\"},{\"Id\":\"1\"}]}");
	assert_int_equal(counter("received"), 2);
	assert_int_equal(n_pending_calls("ReceiveMessage"), 1);
	finish();
}

static void test_in_bad_answers(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"{\"QueueUrl\":\"http://x\"}",
		"{\"Messages\":[{\"MessageId\":\"s1\"}]}",
		"[1,2",
		"",
	};
	assert_int_equal(start(IN_CFG ", \"retry_max\": \"1s\"}"), PLANT_OK);
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		answer(pending_call("ReceiveMessage"), 200, bad[k]);
		assert_int_equal(json_array_size(mock.published), 0);
		struct sqs *s = mock.state;
		assert_true(s->in.streak > 0);
		tick_after(1100);
	}
	answer(pending_call("ReceiveMessage"), 500,
	       "{\"__type\":\"com.amazonaws.sqs#InternalError\",\"message\":\"boom\"}");
	assert_true(logged("InternalError: boom"));
	tick_after(1100);
	/* a delete that fails is tried again while the receipt is valid */
	answer(pending_call("ReceiveMessage"), 200, RECEIVED);
	answer_h(pending_call("DeleteMessageBatch"), PLANT_E_TIMEOUT, 0, NULL, NULL);
	tick_after(1100);
	answer(pending_call("DeleteMessageBatch"), 200,
	       "{\"Successful\":[{\"Id\":\"0\"}],\"Failed\":[{\"Id\":\"1\",\"SenderFault\":true,"
	       "\"Code\":\"ReceiptHandleIsInvalid\",\"Message\":\"gone\"}]}");
	assert_int_equal(counter("deleted"), 1);
	assert_int_equal(counter("delete_failed"), 1);
	assert_true(logged("ReceiptHandleIsInvalid"));
	assert_int_equal(counter("receive_failed"), 5);
	finish();
}

/* ---- config --------------------------------------------------------------------- */

static void test_config_errors(void **state)
{
	(void)state;
	static const char *const cases[][2] = {
		{"{}", ""},
		{"{\"queue\": \"q\"}", ""},
		{"{\"queue\": \"q\", \"queue_url\": \"http://a/b\", \"queue_name\": \"b\"}",
		 "queue_url"},
		{"{\"queue\": \"q\", \"queue_name\": \"bad name\"}", "queue_name"},
		{"{\"publish_topic\": \"a..b\", \"queue_name\": \"x\"}", "publish_topic"},
		{"{\"queue\": \"q\", \"queue_name\": \"x\", \"wait_seconds\": 21}", "wait_seconds"},
		{"{\"queue\": \"q\", \"queue_name\": \"x\", \"on_full\": \"drop\"}", "on_full"},
		{"{\"queue\": \"q\", \"queue_name\": \"x\", \"attributes\": [\"AWS.x\"]}",
		 "attributes"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		json_t *c = config(cases[i][0]);
		void *st = NULL;
		mock.err_key[0] = '\0';
		assert_int_equal(PLANT_PLUGIN_DESC.init(NULL, &api, c, &st), PLANT_E_CONFIG);
		assert_string_equal(mock.err_key, cases[i][1]);
		json_decref(c);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_out_sends_and_acks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_failed_entries_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_bad_answers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_pause_and_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_window_full_sends_synchronously, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_out_sender_fault_dead_letter, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_client_error_splits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_too_large, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_and_fifo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_retries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_in_publish_then_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_in_full_releases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_in_full_holds_and_extends, setup, teardown),
		cmocka_unit_test_setup_teardown(test_in_bad_answers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
