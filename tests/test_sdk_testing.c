/* The SDK's fake host (sdk/include/plantd/testing.h), run against the example
 * plugin and against a fixture that uses the rest of the table: queues,
 * stores, HTTP routes, publish options, message fields, lifecycle failures.
 * Plain checks, exit status 1 on the first failure. */
#include <plantd/testing.h>

/* The example plugin, compiled into this test: its descriptor becomes
 * PLANT_PLUGIN_DESC here. */
#include "../sdk/examples/example_counter.c"

#define CHECK PLANT_TEST_CHECK

static int streq(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

/* ---- the fixture ------------------------------------------------------------- */

static const struct plant_config_key fx_keys[] = {
	{.name = "topic", .type = PLANT_CFG_STRING, .required = 1, .description = "out"},
	{.name = "period", .type = PLANT_CFG_DURATION, .default_value = "\"2s\""},
	{.name = "ratio", .type = PLANT_CFG_DOUBLE, .default_value = "1"},
	{.name = "tags", .type = PLANT_CFG_ARRAY, .default_value = "[]"},
	{.name = "fail", .type = PLANT_CFG_STRING, .description = "init or start"},
	{.name = NULL, .type = PLANT_CFG_END},
};

struct fx {
	plant_instance *self;
	const struct plant_host_api *api;
	const char *topic;
	uint32_t store;
	int has_store;
	const plant_msg *held;
	uint64_t seen;
};

/* How often destroy() ran, across instances. */
static int fx_destroyed;

static int fx_validate(plant_instance *self, const struct plant_host_api *api, const json_t *config)
{
	/* nothing may start here */
	if (api->publish(self, "x.y", json_object()) != PLANT_E_STATE ||
	    api->timer_add(self, 10, 0, NULL, NULL, NULL) != PLANT_E_INVALID)
		return PLANT_E_PLUGIN;
	if (json_real_value(json_object_get(config, "ratio")) > 1) {
		api->error(self, "ratio", "must be at most 1");
		return PLANT_E_CONFIG;
	}
	return PLANT_OK;
}

static int fx_on_msg(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	static const char *const keys[] = {"v", "name", "obj", "missing"};
	struct fx *f = state;

	(void)user;
	for (size_t i = 0; i < n; i++) {
		struct plant_field fl[4];
		struct plant_publish p = {.struct_size = sizeof(p)};
		const char *src = f->api->msg_attr(msgs[i], "source");
		char text[64];
		int len;

		if (f->api->msg_fields(msgs[i], keys, 4, fl) != PLANT_OK)
			return PLANT_E_INVALID;
		f->seen++;
		p.topic = f->topic;
		p.body = json_pack(
			"{s:f, s:s#, s:s#, s:b, s:s}", "v", fl[0].num, "name",
			fl[1].type == PLANT_FIELD_STRING ? fl[1].str : "", (int)fl[1].len, "obj",
			fl[2].type == PLANT_FIELD_OBJECT ? fl[2].str : "", (int)fl[2].len, "absent",
			fl[3].type == PLANT_FIELD_ABSENT, "from", f->api->msg_topic(msgs[i]));
		p.attributes = json_pack("{s:s}", "source", src ? src : "none");
		p.dedup_key = f->api->msg_id(msgs[i]);
		if (f->api->publish_ex(f->self, &p) != PLANT_OK || !p.id_out[0])
			return PLANT_E_PLUGIN;
		json_decref((json_t *)(uintptr_t)p.attributes);
		len = snprintf(text, sizeof(text), "{\"seen\":%llu}", (unsigned long long)f->seen);
		f->api->publish_text(f->self, "fx.seen", text, (size_t)len);
	}
	return PLANT_OK;
}

/* v < 0: reject; 0: nack; 1: hold; 2: ack; else leave it. {"fail":1}: fail. */
static int fx_on_job(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	struct fx *f = state;
	int rc = PLANT_OK;

	(void)user;
	for (size_t i = 0; i < n; i++) {
		const json_t *body = f->api->msg_body(msgs[i]);
		json_int_t v = json_integer_value(json_object_get(body, "v"));

		if (json_object_get(body, "fail"))
			rc = PLANT_E_IO;
		else if (v < 0)
			f->api->reject(f->self, msgs[i], "negative");
		else if (v == 0)
			f->api->nack(f->self, msgs[i], 500, "later");
		else if (v == 1)
			f->held = f->api->hold(f->self, msgs[i]);
		else if (v == 2)
			f->api->ack(f->self, msgs[i]);
		f->api->counter_add(f->self, "receives", f->api->msg_receive_count(msgs[i]));
	}
	return rc;
}

static void fx_tick(void *state, void *user)
{
	struct fx *f = state;
	json_t *v = NULL;
	uint64_t version = 0;

	(void)user;
	if (f->held) {
		f->api->ack(f->self, f->held);
		f->held = NULL;
	}
	f->api->gauge_set(f->self, "now_s", (double)(f->api->now_ms(f->self) / 1000));
	if (!f->has_store)
		return;
	if (f->api->store_get(f->self, f->store, "ticks", 5, &v, &version) == PLANT_OK) {
		json_int_t n = json_integer_value(v);

		json_decref(v);
		f->api->store_put(f->self, f->store, "ticks", 5, json_integer(n + 1),
				  PLANT_PUT_IF_VERSION, version, 0, NULL);
	} else {
		f->api->store_put(f->self, f->store, "ticks", 5, json_integer(1),
				  PLANT_PUT_IF_ABSENT, 0, 0, NULL);
	}
}

static int fx_http(void *state, plant_http_req *req, void *user)
{
	struct fx *f = state;
	struct plant_http_info info = {.struct_size = sizeof(info)};
	const char *auth = f->api->http_header(req, "x-token");
	char out[256];
	int len;

	(void)user;
	if (f->api->http_request(req, &info) != PLANT_OK)
		return PLANT_E_INVALID;
	if (streq(info.tail, "fail")) {
		f->api->error(f->self, NULL, "asked to fail");
		return PLANT_E_PLUGIN;
	}
	len = snprintf(out, sizeof(out), "%s %s tail=%s query=%s body=%.*s token=%s", info.method,
		       info.path, info.tail, info.query, (int)info.body_len,
		       info.body ? info.body : "", auth ? auth : "-");
	return f->api->http_reply(req, 200, "text/plain", out, (size_t)len, NULL);
}

static int fx_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		   void **state_out)
{
	struct fx *f;
	const char *fail = json_string_value(json_object_get(config, "fail"));

	if (streq(fail, "init")) {
		api->subscribe(self, "never.*", fx_on_msg, NULL, NULL);
		api->error(self, "fail", "init fails on request");
		return PLANT_E_PLUGIN;
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return PLANT_E_NOMEM;
	f->self = self;
	f->api = api;
	f->topic = json_string_value(json_object_get(config, "topic"));
	f->has_store = api->store_open(self, "site", &f->store) == PLANT_OK;
	if (api->subscribe(self, "in.*", fx_on_msg, NULL, NULL) != PLANT_OK ||
	    api->queue_declare(self, "jobs", NULL) != PLANT_OK ||
	    api->consume(self, "jobs", fx_on_job, NULL, 2, NULL) != PLANT_OK ||
	    api->timer_add(self, (uint64_t)json_integer_value(json_object_get(config, "period")), 0,
			   fx_tick, NULL, NULL) != PLANT_OK ||
	    api->http_route(self, "api", "GET", "/v1/items/", PLANT_ROUTE_PREFIX, fx_http, NULL) !=
		    PLANT_OK ||
	    api->http_route(self, "api", "POST", "/v1/x", 0, fx_http, NULL) != PLANT_OK) {
		free(f);
		return PLANT_E_PLUGIN;
	}
	*state_out = f;
	return PLANT_OK;
}

static int fx_start(void *state)
{
	struct fx *f = state;

	if (streq(json_string_value(json_object_get(f->api->config(f->self), "fail")), "start")) {
		f->api->error(f->self, NULL, "start fails on request");
		return PLANT_E_PLUGIN;
	}
	return f->api->publish(f->self, "fx.started",
			       json_pack("{s:s}", "site", f->api->site_name(f->self)));
}

static void fx_stop(void *state)
{
	struct fx *f = state;

	f->api->log(f->self, PLANT_LOG_INFO, "bye after %llu", (unsigned long long)f->seen);
}

static void fx_destroy(void *state)
{
	fx_destroyed++;
	free(state);
}

static int fx_health(void *state, json_t **detail_out)
{
	const struct fx *f = state;

	*detail_out = json_pack("{s:I}", "seen", (json_int_t)f->seen);
	return f->seen < 100 ? PLANT_OK : PLANT_E_FULL;
}

static const struct plant_plugin_desc fx_desc = {
	PLANT_PLUGIN_HEADER,	.name = "fx_testing",
	.version = "0.1",	.description = "exercises the fake host",
	.config_keys = fx_keys, .validate = fx_validate,
	.init = fx_init,	.start = fx_start,
	.stop = fx_stop,	.destroy = fx_destroy,
	.health = fx_health,
};

/* ---- the tests ----------------------------------------------------------------------- */

/* Every member of the table is filled in: a function appended to
 * plantd.h must be appended to the fake too. */
static void test_table_complete(void)
{
	struct plant_test_host *h = plant_test_new();
	const struct plant_host_api *api = plant_test_api(h);
	const unsigned char *p = (const unsigned char *)api;
	size_t first = offsetof(struct plant_host_api, log);

	CHECK(api->struct_size == sizeof(struct plant_host_api));
	CHECK(api->abi_major == PLANT_ABI_MAJOR && api->abi_minor == PLANT_ABI_MINOR);
	CHECK((sizeof(*api) - first) % sizeof(void (*)(void)) == 0);
	for (size_t off = first; off < sizeof(*api); off += sizeof(void (*)(void))) {
		void (*fn)(void);

		memcpy(&fn, p + off, sizeof(fn));
		if (!fn) {
			fprintf(stderr, "the fake host table has no function at offset %zu\n", off);
			exit(1);
		}
	}
	CHECK(PLANT_API_HAS(api, http_result_header));
	plant_test_free(h);
}

static void test_counter(void)
{
	struct plant_test_host *h = plant_test_new();
	json_t *detail = NULL;

	CHECK(plant_test_set_name(h, "ticker") == PLANT_OK);
	CHECK(plant_test_start(h, &PLANT_PLUGIN_DESC,
			       "{\"every\": \"250ms\", \"topic\": \"demo.count\", "
			       "\"listen\": \"demo.*\"}") == PLANT_OK);
	CHECK(json_integer_value(json_object_get(plant_test_config(h), "every")) == 250);
	CHECK(plant_test_timers(h) == 1);
	CHECK(plant_test_subscribed(h, "demo.x") == 1);
	CHECK(plant_test_subscribed(h, "other.x") == 0);

	CHECK(plant_test_advance(h, 1000) == 4);
	CHECK(plant_test_now(h) == PLANT_FAKE_START_MS + 1000);
	CHECK(plant_test_count(h, "demo.count") == 4);
	CHECK(plant_test_count(h, "demo.*") == 4);
	CHECK(plant_test_count(h, NULL) == 4);
	CHECK(json_integer_value(json_object_get(plant_test_last(h, "demo.count"), "n")) == 4);
	CHECK(streq(json_string_value(json_object_get(plant_test_last(h, NULL), "instance")),
		    "ticker"));
	CHECK(plant_test_counter(h, "published") == 4);
	CHECK(plant_test_counter(h, "nothing") == 0);
	CHECK(isnan(plant_test_gauge(h, "nothing")));

	/* the clock only fires what is due */
	CHECK(plant_test_advance(h, 100) == 0);
	CHECK(plant_test_advance(h, 150) == 1);
	CHECK(plant_test_tick(h) == 1);
	CHECK(plant_test_count(h, "demo.count") == 6);

	CHECK(plant_test_deliver(h, "demo.x", "{ \"a\" : [1, 2] }") == PLANT_OK);
	CHECK(plant_test_logged(h, "received demo.x: {\"a\":[1,2]}") == 1);
	CHECK(plant_test_deliver(h, "nomatch", "{}") == PLANT_OK);
	CHECK(plant_test_logged(h, "received") == 1);
	CHECK(plant_test_deliver(h, "demo.x", "not json") == PLANT_E_INVALID);
	CHECK(plant_test_deliver(h, "bad topic", "{}") == PLANT_E_INVALID);

	CHECK(plant_test_health(h, &detail) == PLANT_OK);
	CHECK(json_integer_value(json_object_get(detail, "published")) == 6);
	json_decref(detail);

	/* backpressure: the counter does not count what the bus refused */
	plant_test_fail_publish(h, PLANT_E_FULL);
	plant_test_tick(h);
	CHECK(plant_test_count(h, NULL) == 6);
	CHECK(plant_test_counter(h, "published") == 6);
	plant_test_fail_publish(h, PLANT_OK);

	plant_test_clear(h);
	CHECK(plant_test_count(h, NULL) == 0 && json_array_size(plant_test_logs(h)) == 0);

	plant_test_stop(h);
	CHECK(plant_test_timers(h) == 0 && plant_test_subscribed(h, "demo.x") == 0);
	CHECK(plant_test_logged(h, "stopping after 6 published, 1 received") == 1);
	CHECK(plant_test_advance(h, 10000) == 0);
	CHECK(plant_test_deliver(h, "demo.x", "{}") == PLANT_OK);
	CHECK(plant_test_logged(h, "received demo") == 0);
	plant_test_free(h);
}

static void test_counter_config(void)
{
	struct plant_test_host *h;

	/* defaults */
	h = plant_test_new();
	CHECK(plant_test_start(h, &PLANT_PLUGIN_DESC, NULL) == PLANT_OK);
	CHECK(streq(json_string_value(json_object_get(plant_test_config(h), "topic")),
		    "example.count"));
	CHECK(json_integer_value(json_object_get(plant_test_config(h), "every")) == 1000);
	CHECK(plant_test_subscribed(h, "demo.x") == 0);
	CHECK(plant_test_advance(h, 3000) == 3 && plant_test_count(h, "example.count") == 3);
	plant_test_free(h);

	/* validate() refuses, naming the key */
	h = plant_test_new();
	CHECK(plant_test_start(h, &PLANT_PLUGIN_DESC, "{\"every\": \"5ms\"}") == PLANT_E_CONFIG);
	CHECK(streq(plant_test_error_key(h), "every"));
	CHECK(strstr(plant_test_error(h), "at least 10ms") != NULL);
	CHECK(plant_test_state(h) == NULL);
	plant_test_free(h);

	/* the key table refuses a typo, a wrong type, a bad duration */
	h = plant_test_new();
	CHECK(plant_test_validate(h, &PLANT_PLUGIN_DESC, "{\"evry\": 1}") == PLANT_E_CONFIG);
	CHECK(streq(plant_test_error_key(h), "evry"));
	CHECK(strstr(plant_test_error(h), "unknown setting 'evry'") != NULL);
	plant_test_free(h);

	h = plant_test_new();
	CHECK(plant_test_validate(h, &PLANT_PLUGIN_DESC, "{\"topic\": 3}") == PLANT_E_CONFIG);
	CHECK(streq(plant_test_error_key(h), "topic"));
	CHECK(streq(plant_test_error(h), "'topic' must be a string"));
	plant_test_free(h);

	h = plant_test_new();
	CHECK(plant_test_validate(h, &PLANT_PLUGIN_DESC, "{\"every\": \"3 weeks\"}") ==
	      PLANT_E_CONFIG);
	plant_test_free(h);

	h = plant_test_new();
	CHECK(plant_test_validate(h, &PLANT_PLUGIN_DESC, "[1]") == PLANT_E_CONFIG);
	plant_test_free(h);

	/* seconds as a number, validate only: nothing was made */
	h = plant_test_new();
	CHECK(plant_test_validate(h, &PLANT_PLUGIN_DESC, "{\"every\": 0.5}") == PLANT_OK);
	CHECK(json_integer_value(json_object_get(plant_test_config(h), "every")) == 500);
	CHECK(plant_test_timers(h) == 0 && plant_test_state(h) == NULL);
	plant_test_free(h);
}

static void test_desc_checks(void)
{
	struct plant_plugin_desc d = PLANT_PLUGIN_DESC;
	struct plant_test_host *h;

	d.abi_minor = PLANT_ABI_MINOR + 1;
	h = plant_test_new();
	CHECK(plant_test_start(h, &d, NULL) == PLANT_E_ABI);
	CHECK(strstr(plant_test_error(h), "host provides") != NULL);
	plant_test_free(h);

	d = PLANT_PLUGIN_DESC;
	d.flags = 0x80;
	h = plant_test_new();
	CHECK(plant_test_start(h, &d, NULL) == PLANT_E_ABI);
	plant_test_free(h);

	d = PLANT_PLUGIN_DESC;
	d.init = NULL;
	h = plant_test_new();
	CHECK(plant_test_start(h, &d, NULL) == PLANT_E_ABI);
	plant_test_free(h);

	/* an older minor is fine */
	d = PLANT_PLUGIN_DESC;
	d.abi_minor = 0;
	h = plant_test_new();
	CHECK(plant_test_start(h, &d, NULL) == PLANT_OK);
	plant_test_free(h);
}

static void test_fixture_lifecycle(void)
{
	struct plant_test_host *h;

	/* a required key */
	h = plant_test_new();
	CHECK(plant_test_start(h, &fx_desc, "{}") == PLANT_E_CONFIG);
	CHECK(streq(plant_test_error_key(h), "topic"));
	CHECK(strstr(plant_test_error(h), "missing required setting 'topic'") != NULL);
	plant_test_free(h);

	/* validate() */
	h = plant_test_new();
	CHECK(plant_test_start(h, &fx_desc, "{\"topic\": \"o\", \"ratio\": 2}") == PLANT_E_CONFIG);
	CHECK(streq(plant_test_error_key(h), "ratio"));
	plant_test_free(h);

	/* init() fails: what it subscribed is gone, destroy() never runs */
	fx_destroyed = 0;
	h = plant_test_new();
	CHECK(plant_test_start(h, &fx_desc, "{\"topic\": \"o\", \"fail\": \"init\"}") ==
	      PLANT_E_PLUGIN);
	CHECK(streq(plant_test_error(h), "init fails on request"));
	CHECK(plant_test_subscribed(h, "never.x") == 0);
	plant_test_free(h);
	CHECK(fx_destroyed == 0);

	/* start() fails: destroy() runs, nothing stays registered */
	h = plant_test_new();
	CHECK(plant_test_start(h, &fx_desc, "{\"topic\": \"o\", \"fail\": \"start\"}") ==
	      PLANT_E_PLUGIN);
	CHECK(fx_destroyed == 1);
	CHECK(plant_test_timers(h) == 0 && plant_test_subscribed(h, "in.x") == 0);
	CHECK(plant_test_request(h, "POST", "/v1/x", NULL, NULL) == 404);
	plant_test_free(h);
	CHECK(fx_destroyed == 1);

	/* init, then start; a second instance on one host is refused */
	h = plant_test_new();
	CHECK(plant_test_set_site(h, "plant-9") == PLANT_OK);
	CHECK(plant_test_init(h, &fx_desc, "{\"topic\": \"o\"}") == PLANT_OK);
	CHECK(plant_test_set_name(h, "late") == PLANT_E_STATE);
	CHECK(plant_test_count(h, "fx.started") == 0);
	CHECK(plant_test_deliver(h, "in.a", "{\"v\": 1}") == PLANT_OK); /* before start */
	CHECK(plant_test_request(h, "POST", "/v1/x", NULL, NULL) == 503);
	CHECK(plant_test_start(h, NULL, NULL) == PLANT_OK);
	CHECK(streq(json_string_value(json_object_get(plant_test_last(h, "fx.started"), "site")),
		    "plant-9"));
	CHECK(plant_test_start(h, &fx_desc, "{\"topic\": \"o\"}") == PLANT_E_STATE);
	plant_test_destroy(h);
	CHECK(fx_destroyed == 2);
	CHECK(plant_test_logged(h, "bye after 1") == 1);
	CHECK(plant_test_count(h, "o") == 1); /* still readable */
	plant_test_free(h);
	CHECK(fx_destroyed == 2);
}

static void test_fixture_messages(void)
{
	struct plant_test_host *h = plant_test_new();
	const json_t *rec, *body;
	struct plant_test_msg batch[] = {
		{.topic = "in.a",
		 .body = "{\"v\": 2.5, \"name\": \"t-1\", \"obj\": {\"k\": [1, 2]}}",
		 .attributes = "{\"source\": \"gw1\"}",
		 .id = "m-1"},
		{.topic = "in.b", .body = "{\"v\": 3}"},
		{.topic = "out.c", .body = "{\"v\": 4}"},
	};
	json_t *detail;

	CHECK(plant_test_start(h, &fx_desc, "{\"topic\": \"fx.out\"}") == PLANT_OK);
	CHECK(plant_test_deliver_msgs(h, batch, 3) == PLANT_OK);
	CHECK(plant_test_count(h, "fx.out") == 2 && plant_test_count(h, "fx.seen") == 2);
	rec = json_array_get(plant_test_published(h), 1);
	body = json_object_get(rec, "body");
	CHECK(streq(json_string_value(json_object_get(rec, "topic")), "fx.out"));
	CHECK(json_real_value(json_object_get(body, "v")) == 2.5);
	CHECK(streq(json_string_value(json_object_get(body, "name")), "t-1"));
	CHECK(streq(json_string_value(json_object_get(body, "obj")), "{\"k\":[1,2]}"));
	CHECK(json_is_true(json_object_get(body, "absent")));
	CHECK(streq(json_string_value(json_object_get(body, "from")), "in.a"));
	CHECK(streq(
		json_string_value(json_object_get(json_object_get(rec, "attributes"), "source")),
		"gw1"));
	CHECK(streq(json_string_value(json_object_get(rec, "dedup_key")), "m-1"));
	CHECK(json_integer_value(json_object_get(plant_test_last(h, "fx.seen"), "seen")) == 2);
	CHECK(plant_test_deliver(h, "in.z", "[1]") == PLANT_E_INVALID); /* not an object */

	CHECK(plant_test_health(h, &detail) == PLANT_OK);
	CHECK(json_integer_value(json_object_get(detail, "seen")) == 2);
	json_decref(detail);
	CHECK(plant_test_health(h, NULL) == PLANT_OK);
	plant_test_free(h);
}

static void test_fixture_queue(void)
{
	struct plant_test_host *h = plant_test_new();
	struct plant_test_msg jobs[] = {
		{.id = "j-reject", .body = "{\"v\": -1}"},
		{.id = "j-nack", .body = "{\"v\": 0}", .receive_count = 3},
		{.id = "j-hold", .body = "{\"v\": 1}"},
		{.id = "j-ack", .body = "{\"v\": 2}"},
		{.id = "j-auto", .body = "{\"v\": 7}"},
	};
	struct plant_test_msg failing[] = {
		{.id = "j-timeout", .body = "{\"v\": 7, \"fail\": 1}"},
	};

	CHECK(plant_test_start(h, &fx_desc, "{\"topic\": \"o\", \"period\": 1}") == PLANT_OK);
	CHECK(plant_test_deliver_queue(h, "nope", jobs, 1) == PLANT_E_NOTFOUND);
	CHECK(plant_test_deliver_queue(h, "jobs", jobs, 5) == PLANT_OK);
	CHECK(streq(plant_test_settled(h, "j-reject"), "reject"));
	CHECK(streq(plant_test_settled(h, "j-nack"), "nack"));
	CHECK(streq(plant_test_settled(h, "j-hold"), "held"));
	CHECK(streq(plant_test_settled(h, "j-ack"), "ack"));
	CHECK(streq(plant_test_settled(h, "j-auto"), "auto-ack"));
	CHECK(plant_test_settled(h, "j-none") == NULL);
	CHECK(plant_test_counter(h, "receives") == 1 + 3 + 1 + 1 + 1);
	/* the tick acks what was held */
	CHECK(plant_test_advance(h, 1000) == 1);
	CHECK(streq(plant_test_settled(h, "j-hold"), "ack"));
	CHECK(plant_test_gauge(h, "now_s") == (double)(PLANT_FAKE_START_MS / 1000 + 1));
	CHECK(plant_test_deliver_queue(h, "jobs", failing, 1) == PLANT_E_IO);
	CHECK(streq(plant_test_settled(h, "j-timeout"), "timeout"));
	CHECK(json_array_size(plant_test_settlements(h)) == 7);
	plant_test_free(h);
}

static void test_fixture_store(void)
{
	struct plant_test_host *h = plant_test_new();
	const struct plant_host_api *api;
	plant_instance *self;
	uint32_t st;
	json_t *v = NULL, *items = NULL;
	uint64_t version = 0;
	size_t failed = 99;
	struct plant_store_op ops[2];

	CHECK(plant_test_add_store(h, "site") == PLANT_OK);
	CHECK(plant_test_add_store(h, "site") == PLANT_E_EXISTS);
	CHECK(plant_test_start(h, &fx_desc, "{\"topic\": \"o\", \"period\": \"1s\"}") == PLANT_OK);
	CHECK(plant_test_advance(h, 3000) == 3);

	api = plant_test_api(h);
	self = plant_test_instance(h);
	CHECK(api->store_open(self, "other", &st) == PLANT_E_NOTFOUND);
	CHECK(api->store_open(self, "site", &st) == PLANT_OK);
	CHECK(api->store_get(self, st, "ticks", 5, &v, &version) == PLANT_OK);
	CHECK(json_integer_value(v) == 3 && version == 3);
	json_decref(v);

	/* conditions, TTLs on the fake clock, scans in key order */
	CHECK(api->store_put(self, st, "ticks", 5, json_integer(0), PLANT_PUT_IF_VERSION, 2, 0,
			     NULL) == PLANT_E_CONDITION);
	CHECK(api->store_put(self, st, "b", 1, json_string("x"), PLANT_PUT_ANY, 0, 500, NULL) ==
	      PLANT_OK);
	CHECK(api->store_put(self, st, "a\0z", 3, json_true(), PLANT_PUT_ANY, 0, 0, NULL) ==
	      PLANT_OK);
	CHECK(api->store_scan(self, st, NULL, 0, NULL, 0, 0, &items) == PLANT_OK);
	CHECK(json_array_size(items) == 3);
	CHECK(streq(json_string_value(json_object_get(json_array_get(items, 0), "key_hex")),
		    "61007a"));
	CHECK(streq(json_string_value(json_object_get(json_array_get(items, 1), "key")), "b"));
	json_decref(items);
	plant_test_advance(h, 400); /* the tick runs on; "b" expires at +500 ms */
	CHECK(api->store_get(self, st, "b", 1, &v, NULL) == PLANT_OK);
	json_decref(v);
	plant_test_advance(h, 100);
	CHECK(api->store_get(self, st, "b", 1, &v, NULL) == PLANT_E_NOTFOUND);
	CHECK(api->store_delete(self, st, "b", 1, PLANT_PUT_ANY, 0) == PLANT_E_NOTFOUND);
	CHECK(api->store_scan(self, st, "t", 1, NULL, 0, 10, &items) == PLANT_OK);
	CHECK(json_array_size(items) == 1);
	json_decref(items);

	/* a batch is all or nothing */
	memset(ops, 0, sizeof(ops));
	ops[0] = (struct plant_store_op){
		.key = "n1", .key_len = 2, .value_text = "1", .value_text_len = 1};
	ops[1] = (struct plant_store_op){
		.key = "ticks", .key_len = 5, .value = json_null(), .cond = PLANT_PUT_IF_ABSENT};
	CHECK(api->store_batch(self, st, ops, 2, &failed) == PLANT_E_CONDITION && failed == 1);
	CHECK(api->store_get(self, st, "n1", 2, &v, NULL) == PLANT_E_NOTFOUND);
	ops[1].cond = PLANT_PUT_ANY;
	CHECK(api->store_batch(self, st, ops, 2, &failed) == PLANT_OK);
	CHECK(api->store_get(self, st, "n1", 2, &v, &version) == PLANT_OK);
	CHECK(json_integer_value(v) == 1 && version == 1);
	json_decref(v);
	plant_test_free(h);
}

static void test_fixture_http(void)
{
	struct plant_test_host *h = plant_test_new();
	const char *const headers[] = {"X-Token", "s3cret", NULL};

	CHECK(plant_test_start(h, &fx_desc, "{\"topic\": \"o\"}") == PLANT_OK);
	CHECK(plant_test_request(h, "POST", "/v1/x?a=1", "{\"q\":1}", headers) == 200);
	CHECK(streq(plant_test_reply_body(h),
		    "POST /v1/x tail= query=a=1 body={\"q\":1} token=s3cret"));
	CHECK(plant_test_request(h, "GET", "/v1/items/abc/d", NULL, NULL) == 200);
	CHECK(streq(plant_test_reply_body(h),
		    "GET /v1/items/abc/d tail=abc/d query= body= token=-"));
	CHECK(plant_test_request(h, "GET", "/v1/items/fail", NULL, NULL) == 500);
	CHECK(streq(plant_test_reply_body(h), "asked to fail"));
	CHECK(plant_test_request(h, "GET", "/v1/x", NULL, NULL) == 404);
	CHECK(plant_test_reply_status(h) == 404);
	plant_test_free(h);
}

static void test_unsupported(void)
{
	struct plant_test_host *h = plant_test_new();
	const struct plant_host_api *api = plant_test_api(h);
	struct plant_http_call call = {.struct_size = sizeof(call), .url = "http://127.0.0.1/"};
	struct plant_http_result *res = NULL;
	json_t *stats;

	CHECK(plant_test_start(h, &PLANT_PLUGIN_DESC, NULL) == PLANT_OK);
	CHECK(api->http_call(plant_test_instance(h), &call, NULL, NULL) == PLANT_E_UNSUPPORTED);
	CHECK(api->http_call_wait(plant_test_instance(h), &call, &res) == PLANT_E_UNSUPPORTED);
	CHECK(res && res->status == PLANT_E_UNSUPPORTED && res->http_status == 0);
	CHECK(api->http_result_header(res, "x") == NULL);
	api->http_result_free(res);
	plant_test_tick(h);
	stats = api->bus_stats(plant_test_instance(h));
	CHECK(json_integer_value(json_object_get(
		      json_object_get(json_object_get(stats, "topics"), "example.count"),
		      "published")) == 1);
	json_decref(stats);
	CHECK(api->counter_add(plant_test_instance(h), "Bad-Name", 1) == PLANT_E_INVALID);
	CHECK(api->gauge_set(plant_test_instance(h), "published", 1.0) == PLANT_E_INVALID);
	plant_test_free(h);
}

int main(void)
{
	test_table_complete();
	test_counter();
	test_counter_config();
	test_desc_checks();
	test_fixture_lifecycle();
	test_fixture_messages();
	test_fixture_queue();
	test_fixture_store();
	test_fixture_http();
	test_unsupported();
	printf("ok\n");
	return 0;
}
