/* Unit tests of the analytics plugin against a mock host: what the
 * integration tests cannot arrange easily (a store write that fails, a
 * restart that finds counted readings back, a reading delivered twice
 * while held, the window sliding on a clock the test drives). The plugin's
 * source is included, so its static functions are at hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "analytics.c"
#include "jsonfields.h"

/* A delivery or a held handle. */
struct plant_msg {
	char id[32];
	json_t *body;
	const char *text; /* the body's text, while deliver() runs */
	uint32_t receive_count;
	bool handle;
};

static struct {
	uint64_t now;
	json_t *store; /* key -> value */
	json_t *ttls;  /* key -> ttl_ms */
	int fail_batch;
	json_t *published; /* report bodies */
	json_t *acked;	   /* ids */
	json_t *logs;	   /* lines */
	int live_handles, released;
	char err_key[64], err[512];
	plant_msg_handler handler;
	plant_timer_fn tick;
	uint64_t every;
} mock;

static void m_log(plant_instance *self, int level, const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	(void)self;
	(void)level;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	json_array_append_new(mock.logs, json_string(line));
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

static int m_publish(plant_instance *self, const char *topic, json_t *body)
{
	(void)self;
	assert_string_equal(topic, "analytics.report");
	json_array_append_new(mock.published, body);
	return PLANT_OK;
}

static int m_timer_add(plant_instance *self, uint64_t every, uint64_t jitter, plant_timer_fn fn,
		       void *user, uint64_t *out)
{
	(void)self;
	(void)jitter;
	(void)user;
	(void)out;
	mock.tick = fn;
	mock.every = every;
	return PLANT_OK;
}

static int m_counter_add(plant_instance *self, const char *name, uint64_t delta)
{
	(void)self;
	(void)name;
	(void)delta;
	return PLANT_OK;
}

static int m_gauge_set(plant_instance *self, const char *name, double value)
{
	(void)self;
	(void)name;
	(void)value;
	return PLANT_OK;
}

static const char *m_instance_name(plant_instance *self)
{
	(void)self;
	return "thermal";
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

static const json_t *m_msg_body(const plant_msg *m)
{
	return m->body;
}

/* The host's own reading of fields (host/jsonfields.c). */
static int m_msg_fields(const plant_msg *m, const char *const *keys, size_t n,
			struct plant_field *out)
{
	if (!m->text)
		fail_msg("msg_fields on a held handle");
	return json_fields(m->text, strlen(m->text), keys, n, out);
}

static uint32_t m_msg_receive_count(const plant_msg *m)
{
	return m->receive_count;
}

static int m_consume(plant_instance *self, const char *queue, plant_msg_handler fn, void *user,
		     uint32_t max_batch, uint64_t *out)
{
	(void)self;
	(void)user;
	(void)max_batch;
	(void)out;
	if (strcmp(queue, "q") != 0)
		return PLANT_E_NOTFOUND;
	mock.handler = fn;
	return PLANT_OK;
}

static void drop_handle(const plant_msg *m)
{
	if (m->handle) {
		json_decref(m->body);
		free((plant_msg *)m);
		mock.live_handles--;
	}
}

static int m_ack(plant_instance *self, const plant_msg *m)
{
	(void)self;
	json_array_append_new(mock.acked, json_string(m->id));
	drop_handle(m);
	return PLANT_OK;
}

static const plant_msg *m_hold(plant_instance *self, const plant_msg *m)
{
	plant_msg *h = malloc(sizeof(*h));

	(void)self;
	*h = *m;
	h->text = NULL;
	h->handle = true;
	json_incref(h->body);
	mock.live_handles++;
	return h;
}

static void m_release(plant_instance *self, const plant_msg *m)
{
	(void)self;
	mock.released++;
	drop_handle(m);
}

static int m_store_open(plant_instance *self, const char *name, uint32_t *out)
{
	(void)self;
	if (strcmp(name, "st") != 0)
		return PLANT_E_NOTFOUND;
	*out = 7;
	return PLANT_OK;
}

static int m_store_get(plant_instance *self, uint32_t store, const char *key, size_t key_len,
		       json_t **value_out, uint64_t *version_out)
{
	json_t *v = json_object_get(mock.store, key);

	(void)self;
	(void)key_len;
	(void)version_out;
	assert_int_equal(store, 7);
	if (!v)
		return PLANT_E_NOTFOUND;
	*value_out = json_deep_copy(v);
	return PLANT_OK;
}

static int m_store_batch(plant_instance *self, uint32_t store, const struct plant_store_op *ops,
			 size_t n, size_t *failed_out)
{
	(void)self;
	assert_int_equal(store, 7);
	*failed_out = 0;
	if (mock.fail_batch)
		return PLANT_E_IO;
	for (size_t i = 0; i < n; i++) {
		assert_false(ops[i].is_delete);
		assert_int_equal(ops[i].key_len, strlen(ops[i].key));
		json_object_set_new(mock.store, ops[i].key, json_deep_copy(ops[i].value));
		json_object_set_new(mock.ttls, ops[i].key, json_integer((json_int_t)ops[i].ttl_ms));
	}
	return PLANT_OK;
}

static const struct plant_host_api api = {
	.struct_size = sizeof(struct plant_host_api),
	.abi_major = PLANT_ABI_MAJOR,
	.abi_minor = PLANT_ABI_MINOR,
	.log = m_log,
	.error = m_error,
	.publish = m_publish,
	.timer_add = m_timer_add,
	.counter_add = m_counter_add,
	.gauge_set = m_gauge_set,
	.instance_name = m_instance_name,
	.now_ms = m_now_ms,
	.msg_id = m_msg_id,
	.msg_body = m_msg_body,
	.msg_receive_count = m_msg_receive_count,
	.consume = m_consume,
	.ack = m_ack,
	.hold = m_hold,
	.msg_fields = m_msg_fields,
	.release = m_release,
	.store_open = m_store_open,
	.store_get = m_store_get,
	.store_batch = m_store_batch,
};

/* ---- helpers ------------------------------------------------------------------ */

static int setup(void **state)
{
	(void)state;
	memset(&mock, 0, sizeof(mock));
	mock.now = 1000000;
	mock.store = json_object();
	mock.ttls = json_object();
	mock.published = json_array();
	mock.acked = json_array();
	mock.logs = json_array();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	assert_int_equal(mock.live_handles, 0);
	json_decref(mock.store);
	json_decref(mock.ttls);
	json_decref(mock.published);
	json_decref(mock.acked);
	json_decref(mock.logs);
	return 0;
}

/* The settings as the host hands them: `json` plus the defaults, with
 * durations in ms (the few defaults used here). */
static json_t *config(const char *json)
{
	json_t *c = json_loads(json, 0, NULL);

	assert_non_null(c);
	for (const struct plant_config_key *k = config_keys; k->name; k++) {
		if (json_object_get(c, k->name) || !k->default_value)
			continue;
		if (k->type == PLANT_CFG_DURATION) {
			json_int_t ms = strcmp(k->name, "interval") == 0 ? 10000
					: strcmp(k->name, "window") == 0 ? 300000
									 : 7 * 86400000LL;

			json_object_set_new(c, k->name, json_integer(ms));
		} else {
			json_object_set_new(c, k->name,
					    json_loads(k->default_value, JSON_DECODE_ANY, NULL));
		}
	}
	return c;
}

struct inst {
	json_t *cfg;
	struct analytics *a;
};

static int start(struct inst *in, const char *json)
{
	void *st = NULL;
	int rc;

	in->cfg = config(json);
	in->a = NULL;
	rc = PLANT_PLUGIN_DESC.init(NULL, &api, in->cfg, &st);
	in->a = st;
	if (rc != PLANT_OK)
		json_decref(in->cfg);
	return rc;
}

static void finish(struct inst *in)
{
	PLANT_PLUGIN_DESC.stop(in->a);
	PLANT_PLUGIN_DESC.destroy(in->a);
	json_decref(in->cfg);
}

/* Deliver one message with `id` and body `json` (JSON text). */
static void deliver(struct inst *in, const char *id, uint32_t rc, const char *json)
{
	plant_msg m = {.receive_count = rc};
	const plant_msg *v[1] = {&m};

	snprintf(m.id, sizeof(m.id), "%s", id);
	m.body = json_loads(json, JSON_DECODE_ANY, NULL);
	m.text = json;
	assert_int_equal(mock.handler(in->a, v, 1, NULL), PLANT_OK);
	json_decref(m.body);
}

static void reading(struct inst *in, const char *id, const char *loc, double value)
{
	char body[256];

	snprintf(body, sizeof(body),
		 "{\"location\": \"%s\", \"sensor_id\": \"%s-S0001\", "
		 "\"status\": \"ok\", \"value\": %.17g}",
		 loc, loc, value);
	deliver(in, id, 1, body);
}

static void tick(struct inst *in)
{
	mock.tick(in->a, NULL);
}

static const json_t *last_report(void)
{
	size_t n = json_array_size(mock.published);

	assert_true(n > 0);
	return json_array_get(mock.published, n - 1);
}

static json_int_t num(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v))
		fail_msg("\"%s\" is not an integer", key);
	return json_integer_value(v);
}

static double real(const json_t *obj, const char *path1, const char *path2, const char *key)
{
	const json_t *v = json_object_get(json_object_get(json_object_get(obj, path1), path2), key);

	if (!json_is_number(v))
		fail_msg("%s.%s.%s is not a number", path1, path2, key);
	return json_number_value(v);
}

static bool acked(const char *id)
{
	size_t i;
	json_t *v;

	json_array_foreach(mock.acked, i, v)
	{
		if (strcmp(json_string_value(v), id) == 0)
			return true;
	}
	return false;
}

static bool logged(const char *text)
{
	size_t i;
	json_t *v;

	json_array_foreach(mock.logs, i, v)
	{
		if (strstr(json_string_value(v), text))
			return true;
	}
	return false;
}

/* ---- tests ------------------------------------------------------------------------ */

/* Readings are held until their run is stored; then state, report (with
 * its TTL) and acks. Excluded and value-less readings count, unused;
 * invalid messages are acked at once. */
static void test_run_stores_then_acks(void **state)
{
	struct inst in;
	const json_t *rep, *st;

	(void)state;
	assert_int_equal(start(&in, "{\"queue\": \"q\", \"store\": \"st\"}"), PLANT_OK);
	assert_int_equal(mock.every, 10000);
	reading(&in, "m1", "L01", 20);
	reading(&in, "m2", "L01", 23);
	reading(&in, "m3", "L02", -4.5);
	deliver(&in, "m4", 1, "{\"location\": \"L01\", \"status\": \"broken\", \"value\": 500}");
	deliver(&in, "m5", 1, "{\"location\": \"L02\", \"status\": \"ok\"}");
	deliver(&in, "bad1", 1, "[1, 2]");
	deliver(&in, "bad2", 1, "{\"value\": 3}");
	assert_int_equal(json_array_size(mock.acked), 2); /* the invalid ones only */
	assert_true(acked("bad1") && acked("bad2"));
	assert_int_equal(mock.live_handles, 5);

	mock.now += 10000;
	tick(&in);
	rep = last_report();
	assert_int_equal(num(rep, "run"), 1);
	assert_int_equal(num(rep, "readings"), 5);
	assert_int_equal(num(rep, "used"), 3);
	assert_int_equal(num(rep, "invalid"), 2);
	assert_int_equal(num(rep, "total"), 5);
	assert_int_equal(num(rep, "elapsed_ms"), 10000);
	assert_true(real(rep, "locations", "L01", "avg") == 21.5);
	assert_true(real(rep, "locations", "L01", "min") == 20);
	assert_true(real(rep, "locations", "L01", "max") == 23);
	assert_true(real(rep, "locations", "L01", "rate") == 0.3);
	assert_int_equal(num(json_object_get(json_object_get(rep, "locations"), "L02"), "count"),
			 1);
	assert_null(json_object_get(rep, "sensors"));

	st = json_object_get(mock.store, "analytics/thermal/state");
	assert_int_equal(num(st, "run"), 1);
	assert_int_equal(num(st, "total"), 5);
	assert_int_equal(json_array_size(json_object_get(st, "last_ids")), 5);
	assert_true(json_equal(json_object_get(mock.store, "analytics/thermal/report/000000000001"),
			       (json_t *)rep));
	assert_int_equal(json_integer_value(json_object_get(
				 mock.ttls, "analytics/thermal/report/000000000001")),
			 7 * 86400000LL);
	assert_true(acked("m1") && acked("m4") && acked("m5"));
	assert_int_equal(mock.live_handles, 0);
	assert_true(logged("2 invalid messages in run 1"));
	finish(&in);
	assert_true(logged("analytics stopped total=5 runs=1"));
}

/* A failed store write: nothing published or acked, the run does not
 * advance, health is bad; the next run takes everything. */
static void test_store_failure_keeps_everything(void **state)
{
	struct inst in;
	json_t *detail = NULL;

	(void)state;
	assert_int_equal(start(&in, "{\"queue\": \"q\", \"store\": \"st\"}"), PLANT_OK);
	reading(&in, "m1", "L01", 1);
	reading(&in, "m2", "L01", 2);
	mock.fail_batch = 1;
	mock.now += 10000;
	tick(&in);
	assert_int_equal(json_array_size(mock.published), 0);
	assert_int_equal(json_array_size(mock.acked), 0);
	assert_int_equal(mock.live_handles, 2);
	assert_int_equal(PLANT_PLUGIN_DESC.health(in.a, &detail), PLANT_E_IO);
	json_decref(detail);
	assert_true(logged("run 1 not stored"));

	reading(&in, "m3", "L01", 6);
	mock.now += 10000;
	tick(&in); /* fails again */
	mock.fail_batch = 0;
	mock.now += 10000;
	tick(&in);
	assert_int_equal(json_array_size(mock.published), 1);
	assert_int_equal(num(last_report(), "run"), 1);
	assert_int_equal(num(last_report(), "readings"), 3);
	assert_true(real(last_report(), "locations", "L01", "avg") == 3);
	assert_int_equal(json_array_size(mock.acked), 3);
	assert_int_equal(PLANT_PLUGIN_DESC.health(in.a, &detail), PLANT_OK);
	json_decref(detail);
	assert_true(logged("run 1 stored after 2 failed attempts"));
	finish(&in);
}

/* After a crash between store and acks, the counted readings come back:
 * acked, not counted. Ids carried over a restart are remembered until
 * they come back or their time is up, across a second restart too. */
static void test_restart_skips_what_was_counted(void **state)
{
	struct inst a, b, c;
	const json_t *st;

	(void)state;
	assert_int_equal(start(&a, "{\"queue\": \"q\", \"store\": \"st\"}"), PLANT_OK);
	reading(&a, "m1", "L01", 10);
	reading(&a, "m2", "L01", 20);
	reading(&a, "m3", "L01", 30);
	mock.now += 10000;
	tick(&a);
	finish(&a); /* as if its acks were lost */
	json_array_clear(mock.acked);

	assert_int_equal(start(&b, "{\"queue\": \"q\", \"store\": \"st\"}"), PLANT_OK);
	assert_true(logged("state read back: run 1, total 3, 1 groups, 3 ids"));
	deliver(&b, "m2", 2, "{\"location\": \"L01\", \"value\": 20}");
	assert_true(acked("m2")); /* at once */
	reading(&b, "m4", "L01", 40);
	mock.now += 10000;
	tick(&b);
	assert_int_equal(num(last_report(), "run"), 2);
	assert_int_equal(num(last_report(), "readings"), 1);
	assert_int_equal(num(last_report(), "total"), 4);
	assert_true(real(last_report(), "locations", "L01", "avg") == 25);
	assert_int_equal(
		num(json_object_get(json_object_get(last_report(), "locations"), "L01"), "count"),
		4);
	assert_true(logged("1 messages counted before a restart came back"));
	st = json_object_get(mock.store, "analytics/thermal/state");
	assert_int_equal(json_object_size(json_object_get(st, "carried")), 2); /* m1, m3 */
	assert_int_equal(json_array_size(json_object_get(st, "last_ids")), 2); /* m4, m2 */
	finish(&b);

	/* a second restart: m1 still known (carried), m4 (last run) too */
	assert_int_equal(start(&c, "{\"queue\": \"q\", \"store\": \"st\"}"), PLANT_OK);
	deliver(&c, "m1", 3, "{\"location\": \"L01\", \"value\": 10}");
	deliver(&c, "m4", 2, "{\"location\": \"L01\", \"value\": 40}");
	assert_int_equal(mock.live_handles, 0);
	/* m3 is remembered for max(60 s, 10 intervals) = 100 s after the
	 * restart that carried it (b's), not after this one */
	mock.now += 89000;
	deliver(&c, "m3", 3, "{\"location\": \"L01\", \"value\": 30}");
	assert_int_equal(mock.live_handles, 0);
	mock.now += 2000;
	deliver(&c, "m3", 3, "{\"location\": \"L01\", \"value\": 30}");
	assert_int_equal(mock.live_handles, 1);
	tick(&c);
	assert_int_equal(num(last_report(), "readings"), 1);
	assert_int_equal(num(last_report(), "total"), 5);
	finish(&c);
}

/* A held reading that timed out and came back is held once, counted once. */
static void test_redelivered_while_held(void **state)
{
	struct inst in;

	(void)state;
	assert_int_equal(start(&in, "{\"queue\": \"q\", \"store\": \"st\"}"), PLANT_OK);
	reading(&in, "m1", "L01", 5);
	deliver(&in, "m1", 2, "{\"location\": \"L01\", \"value\": 5}");
	assert_int_equal(mock.live_handles, 1);
	assert_int_equal(mock.released, 1);
	mock.now += 10000;
	tick(&in);
	assert_int_equal(num(last_report(), "readings"), 1);
	assert_true(logged("came back for another delivery"));
	finish(&in);
}

/* Buckets leave the window once older than `window`; a group with none
 * left leaves the report. Sensors likewise. */
/* A reading published twice (two bus messages, one reading id: a producer
 * that crashed between its publish and its ack) is counted once, in the
 * same run and in the next one; without a dedup_key each message counts. */
static void test_same_reading_twice(void **state)
{
	struct inst in;

	(void)state;
	assert_int_equal(start(&in, "{\"queue\": \"q\", \"store\": \"st\"}"), PLANT_OK);
	deliver(&in, "m1", 1, "{\"id\": \"r-1\", \"location\": \"L01\", \"value\": 5}");
	deliver(&in, "m2", 1, "{\"id\": \"r-1\", \"location\": \"L01\", \"value\": 5}");
	assert_true(acked("m2")); /* at once, as a duplicate */
	assert_int_equal(mock.live_handles, 1);
	mock.now += 10000;
	tick(&in);
	assert_int_equal(num(last_report(), "readings"), 1);
	/* and once more after the run that counted it was stored */
	deliver(&in, "m3", 1, "{\"id\": \"r-1\", \"location\": \"L01\", \"value\": 5}");
	assert_true(acked("m3"));
	assert_int_equal(mock.live_handles, 0);
	mock.now += 10000;
	tick(&in);
	assert_int_equal(num(last_report(), "total"), 1);
	finish(&in);

	json_object_clear(mock.store); /* a new site */
	assert_int_equal(start(&in, "{\"queue\": \"q\", \"store\": \"st\", \"dedup_key\": \"\"}"),
			 PLANT_OK);
	deliver(&in, "n1", 1, "{\"id\": \"r-1\", \"location\": \"L01\", \"value\": 5}");
	deliver(&in, "n2", 1, "{\"id\": \"r-1\", \"location\": \"L01\", \"value\": 5}");
	mock.now += 10000;
	tick(&in);
	assert_int_equal(num(last_report(), "readings"), 2);
	finish(&in);
}

static void test_window_slides(void **state)
{
	struct inst in;
	const json_t *locs;

	(void)state;
	assert_int_equal(start(&in, "{\"queue\": \"q\", \"store\": \"st\", \"interval\": 1000, "
				    "\"window\": 3000, \"per_sensor\": true}"),
			 PLANT_OK);
	reading(&in, "m1", "L01", 10);
	mock.now += 1000; /* t0 + 1000 */
	tick(&in);
	reading(&in, "m2", "L01", 20);
	reading(&in, "m3", "L02", 7);
	mock.now += 1000; /* + 2000 */
	tick(&in);
	mock.now += 1000; /* + 3000 */
	tick(&in);
	assert_true(real(last_report(), "locations", "L01", "avg") == 15);
	assert_true(real(last_report(), "sensors", "L01-S0001", "avg") == 15);
	mock.now += 1000; /* + 4000: the bucket of + 1000 is out */
	tick(&in);
	assert_true(real(last_report(), "locations", "L01", "avg") == 20);
	assert_true(real(last_report(), "sensors", "L01-S0001", "avg") == 20);
	assert_true(real(last_report(), "locations", "L01", "rate") == 0);
	mock.now += 1000; /* + 5000: all out */
	tick(&in);
	locs = json_object_get(last_report(), "locations");
	assert_int_equal(json_object_size(locs), 0);
	assert_int_equal(json_object_size(json_object_get(last_report(), "sensors")), 0);
	assert_int_equal(num(last_report(), "total"), 3);
	finish(&in);
}

/* What was held at stop goes back, unacked. */
static void test_stop_releases(void **state)
{
	struct inst in;

	(void)state;
	assert_int_equal(start(&in, "{\"queue\": \"q\", \"store\": \"st\"}"), PLANT_OK);
	reading(&in, "m1", "L01", 5);
	reading(&in, "m2", "L01", 6);
	finish(&in);
	assert_int_equal(mock.released, 2);
	assert_int_equal(json_array_size(mock.acked), 0);
	assert_true(logged("analytics stopped total=0 runs=0"));
}

static void test_bad_state_refused(void **state)
{
	struct inst in;

	(void)state;
	json_object_set_new(mock.store, "analytics/thermal/state", json_string("garbage"));
	assert_int_not_equal(start(&in, "{\"queue\": \"q\", \"store\": \"st\"}"), PLANT_OK);
	assert_string_equal(mock.err_key, "store");
	assert_non_null(strstr(mock.err, "not an analytics state"));
}

static void expect_config_error(const char *json, const char *key)
{
	struct inst in;

	mock.err_key[0] = '\0';
	assert_int_equal(start(&in, json), PLANT_E_CONFIG);
	assert_string_equal(mock.err_key, key);
}

static void test_config_errors(void **state)
{
	(void)state;
	expect_config_error("{\"queue\": \"q\", \"store\": \"st\", \"interval\": 60000, "
			    "\"window\": 1000}",
			    "window");
	expect_config_error("{\"queue\": \"q\", \"store\": \"st\", \"interval\": 0}", "interval");
	expect_config_error("{\"queue\": \"q\", \"store\": \"st\", \"report_topic\": \"a b\"}",
			    "report_topic");
	expect_config_error("{\"queue\": \"q\", \"store\": \"st\", \"exclude_status\": [1]}",
			    "exclude_status");
	expect_config_error("{\"queue\": \"q\", \"store\": \"st\", \"group_by\": \"\"}",
			    "group_by");
	expect_config_error("{\"queue\": \"q\", \"store\": \"nope\"}", "store");
	expect_config_error("{\"queue\": \"nope\", \"store\": \"st\"}", "queue");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_run_stores_then_acks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_failure_keeps_everything, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_restart_skips_what_was_counted, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_redelivered_while_held, setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_reading_twice, setup, teardown),
		cmocka_unit_test_setup_teardown(test_window_slides, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop_releases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_state_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
