/* Unit tests of sim_common: number formatting, the random streams, the
 * heap, and the engine driven through a mock host with a toy model:
 * seeded runs do not depend on when ticks come, backpressure loses and
 * repeats nothing, malformed readings fail a processor's checks, the
 * iterator emits exactly what its inputs say, bad configs name their key.
 * Also a measure of the generation cost (no bus), printed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "sim.h"

/* ---- a toy model: the thermistor's shape, one draw per reading ------------- */

struct toy_params {
	double lo, hi;
};

static const char *const toy_tick_keys[] = {"lo", "hi", NULL};

static int toy_load(void *params, const json_t *obj, bool base, const char *where,
		    struct sim_err *err)
{
	struct toy_params *p = params;

	(void)base;
	if (sim_get_double(obj, "lo", where, &p->lo, err) ||
	    sim_get_double(obj, "hi", where, &p->hi, err))
		return PLANT_E_CONFIG;
	if (p->lo > p->hi)
		return sim_err_set(err, "lo", "%s'lo' is greater than 'hi'", where);
	return PLANT_OK;
}

static void toy_sensor_init(const void *params, void *sensor, struct sim_rng *rng)
{
	(void)params;
	*(double *)sensor = sim_rng_double(rng);
}

static void toy_write(const void *params, void *sensor, struct sim_rng *rng,
		      const struct sim_point *pt, struct sim_writer *w)
{
	const struct toy_params *p = params;

	(void)sensor;
	sim_put_primary(w, pt->fault ? 1e9 : sim_rng_uniform(rng, p->lo, p->hi), 3);
	sim_put_lit(w, ",\"t\":");
	sim_put_u64(w, pt->t_ms);
}

static const struct sim_model toy = {
	.type = "toy",
	.primary = "value",
	.negative_invalid = true,
	.params_size = sizeof(struct toy_params),
	.sensor_size = sizeof(double),
	.max_text = 32 + 2 * SIM_NUM_MAX,
	.tick_keys = toy_tick_keys,
	.load = toy_load,
	.sensor_init = toy_sensor_init,
	.write = toy_write,
};

static const struct plant_config_key toy_keys[] = {
	SIM_COMMON_KEYS("sensor.toy.raw"),
	{"lo", PLANT_CFG_DOUBLE, 0, "1.0", ""},
	{"hi", PLANT_CFG_DOUBLE, 0, "100.0", ""},
	SIM_KEYS_END,
};

/* ---- a mock host ---------------------------------------------------------------- */

static struct mock {
	json_t *published; /* texts, in order */
	char err_key[64], err_msg[1024];
	uint64_t counters[3]; /* readings, malformed, faults */
	unsigned calls;
	int full_every;	    /* every n-th publish_batch call answers FULL */
	bool discard;	    /* count, keep nothing (the speed test) */
	uint64_t discarded; /* messages taken in discard mode */
	uint64_t now;
	char data_dir[256];
} mock;

static void m_log(plant_instance *self, int level, const char *fmt, ...)
{
	(void)self;
	(void)level;
	(void)fmt;
}

static void m_error(plant_instance *self, const char *key, const char *fmt, ...)
{
	va_list ap;

	(void)self;
	snprintf(mock.err_key, sizeof mock.err_key, "%s", key ? key : "");
	va_start(ap, fmt);
	vsnprintf(mock.err_msg, sizeof mock.err_msg, fmt, ap);
	va_end(ap);
}

static int m_publish_batch(plant_instance *self, struct plant_publish *items, size_t n,
			   size_t *done_out)
{
	size_t done = n;
	int rc = PLANT_OK;

	(void)self;
	mock.calls++;
	if (mock.full_every && mock.calls % (unsigned)mock.full_every == 0) {
		done = n / 2; /* part of it went, then the queue was full */
		rc = PLANT_E_FULL;
	}
	for (size_t i = 0; i < done; i++) {
		assert_non_null(items[i].text);
		assert_null(items[i].body);
		assert_string_equal(items[i].topic, "sensor.toy.raw");
		if (mock.discard)
			mock.discarded++;
		else
			json_array_append_new(mock.published,
					      json_stringn(items[i].text, items[i].text_len));
	}
	*done_out = done;
	return rc;
}

static int m_counter_add(plant_instance *self, const char *name, uint64_t delta)
{
	(void)self;
	if (!strcmp(name, "readings"))
		mock.counters[0] += delta;
	else if (!strcmp(name, "malformed"))
		mock.counters[1] += delta;
	else if (!strcmp(name, "faults"))
		mock.counters[2] += delta;
	else
		fail_msg("unexpected counter %s", name);
	return PLANT_OK;
}

static const char *m_instance_name(plant_instance *self)
{
	(void)self;
	return "toy1";
}

static const char *m_data_dir(plant_instance *self)
{
	(void)self;
	return mock.data_dir;
}

static uint64_t m_now_ms(plant_instance *self)
{
	(void)self;
	return mock.now;
}

static int m_timer_cancel(plant_instance *self, uint64_t timer)
{
	(void)self;
	(void)timer;
	return PLANT_OK;
}

static struct plant_host_api api = {
	.struct_size = sizeof(struct plant_host_api),
	.abi_major = PLANT_ABI_MAJOR,
	.abi_minor = PLANT_ABI_MINOR,
	.log = m_log,
	.error = m_error,
	.counter_add = m_counter_add,
	.instance_name = m_instance_name,
	.data_dir = m_data_dir,
	.now_ms = m_now_ms,
	.timer_cancel = m_timer_cancel,
	.publish_batch = m_publish_batch,
};

static plant_instance *const SELF = (plant_instance *)&mock;

static int setup(void **state)
{
	(void)state;
	memset(&mock, 0, sizeof mock);
	mock.published = json_array();
	mock.now = 1700000000000ull;
	snprintf(mock.data_dir, sizeof mock.data_dir, "%s", "/nonexistent-dir");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	json_decref(mock.published);
	return 0;
}

/* "250ms", "10s", "5m" or a number of seconds, in ms: what the host does to
 * DURATION keys. */
static json_t *duration(const json_t *v)
{
	if (json_is_number(v))
		return json_integer((json_int_t)(json_number_value(v) * 1000));
	const char *s = json_string_value(v);
	char *end;
	double n = strtod(s, &end);
	double unit = !strcmp(end, "ms") ? 1 : !strcmp(end, "m") ? 60000 : 1000;

	return json_integer((json_int_t)(n * unit));
}

/* The config as the host hands it over: defaults filled in, durations in
 * ms. `text` is a JSON object of settings. */
static json_t *config_of(const char *text)
{
	json_error_t jerr;
	json_t *c = json_loads(text, 0, &jerr);

	if (!c)
		fail_msg("bad test config %s: %s", text, jerr.text);
	for (const struct plant_config_key *k = toy_keys; k->name; k++) {
		json_t *v = json_object_get(c, k->name);

		if (!v && k->default_value) {
			json_object_set_new(c, k->name,
					    json_loads(k->default_value, JSON_DECODE_ANY, &jerr));
			v = json_object_get(c, k->name);
		}
		if (v && k->type == PLANT_CFG_DURATION)
			json_object_set_new(c, k->name, duration(v));
	}
	return c;
}

static void *start_sim(const char *text, json_t **config_out)
{
	void *sim = NULL;
	json_t *config = config_of(text);

	assert_int_equal(sim_validate(SELF, &api, config, &toy), PLANT_OK);
	assert_int_equal(sim_init(SELF, &api, config, &toy, &sim), PLANT_OK);
	*config_out = config;
	return sim;
}

/* ---- formatting -------------------------------------------------------------------- */

static void expect_fixed(double v, int decimals, const char *want)
{
	char buf[SIM_NUM_MAX + 1];
	char *end = sim_fmt_fixed(buf, v, decimals);

	*end = '\0';
	assert_string_equal(buf, want);
}

static void test_format(void **state)
{
	char buf[SIM_NUM_MAX + 1], *end;
	json_t *j;
	json_error_t jerr;

	(void)state;
	expect_fixed(1234.5, 3, "1234.5");
	expect_fixed(0.0, 3, "0.0");
	expect_fixed(1e9, 3, "1000000000.0");
	expect_fixed(-0.25, 2, "-0.25");
	expect_fixed(2.0, 0, "2.0");
	expect_fixed(0.1, 3, "0.1");
	expect_fixed(20500.0, 3, "20500.0");
	expect_fixed(0.00049, 3, "0.0");
	expect_fixed(0.0006, 3, "0.001");
	expect_fixed(9.99996, 4, "10.0");
	expect_fixed(1.0 / 3.0, 4, "0.3333");
	/* too big for the integer path: still a JSON real */
	end = sim_fmt_fixed(buf, 1e20, 3);
	*end = '\0';
	j = json_loads(buf, JSON_DECODE_ANY, &jerr);
	assert_non_null(j);
	assert_true(json_is_real(j));
	assert_true(json_real_value(j) == 1e20);
	json_decref(j);
	end = sim_fmt_u64(buf, 18446744073709551615ull);
	*end = '\0';
	assert_string_equal(buf, "18446744073709551615");
	end = sim_fmt_u64(buf, 0);
	*end = '\0';
	assert_string_equal(buf, "0");
}

/* ---- random streams ---------------------------------------------------------------- */

static void test_rng(void **state)
{
	struct sim_rng a, b, c;
	double sum = 0, sum2 = 0, lo = 1, hi = 0;
	const int n = 200000;

	(void)state;
	sim_rng_seed(&a, 42, 1, 1);
	sim_rng_seed(&b, 42, 1, 1);
	sim_rng_seed(&c, 42, 1, 2);
	for (int i = 0; i < 1000; i++) {
		uint64_t x = sim_rng_next(&a);

		assert_true(x == sim_rng_next(&b));
		assert_true(x != sim_rng_next(&c));
	}
	for (int i = 0; i < n; i++) {
		double u = sim_rng_double(&a), g = sim_rng_gauss(&a);

		lo = u < lo ? u : lo;
		hi = u > hi ? u : hi;
		sum += g;
		sum2 += g * g;
		assert_true(sim_rng_below(&a, 7) < 7);
	}
	assert_true(lo >= 0 && lo < 0.001 && hi < 1 && hi > 0.999);
	assert_true(fabs(sum / n) < 0.02);
	assert_true(fabs(sum2 / n - 1.0) < 0.02);
}

/* ---- the heap ------------------------------------------------------------------------- */

static void test_heap(void **state)
{
	struct sim_heap h;
	struct sim_rng r;
	uint64_t last_due = 0;
	uint32_t last_idx = 0;

	(void)state;
	sim_rng_seed(&r, 7, 0, 0);
	assert_int_equal(sim_heap_init(&h, 5000), PLANT_OK);
	for (uint32_t i = 0; i < 5000; i++)
		sim_heap_push(&h, sim_rng_below(&r, 300), i);
	/* pop half, re-schedule the other half later, as the simulator does */
	for (int i = 0; i < 20000 && h.n; i++) {
		uint64_t due = h.a[0].due;
		uint32_t idx = h.a[0].idx;

		assert_true(due > last_due || (due == last_due && idx > last_idx) || i == 0);
		last_due = due;
		last_idx = idx;
		if (idx % 2)
			sim_heap_pop(&h);
		else
			sim_heap_replace_top(&h, due + 1 + sim_rng_below(&r, 100), idx);
	}
	sim_heap_free(&h);
}

/* ---- the engine --------------------------------------------------------------------- */

/* The published texts without "ts", as one string per reading. */
static json_t *without_ts(const json_t *texts)
{
	json_t *out = json_array();
	size_t i;
	const json_t *t;

	json_array_foreach(texts, i, t)
	{
		json_error_t jerr;
		json_t *r = json_loads(json_string_value(t), 0, &jerr);

		if (!r)
			fail_msg("reading %zu is not JSON: %s", i, json_string_value(t));
		json_object_del(r, "ts");
		char *dump = json_dumps(r, JSON_SORT_KEYS);

		json_array_append_new(out, json_string(dump));
		free(dump);
		json_decref(r);
	}
	return out;
}

/* Run to the end, with ticks every `step` ms. Returns the readings. */
static json_t *run(const char *conf, uint64_t step, int full_every)
{
	json_t *config, *texts;
	void *sim;
	struct sim_totals tot;
	uint64_t t = 0;

	json_array_clear(mock.published);
	memset(mock.counters, 0, sizeof mock.counters);
	mock.calls = 0;
	mock.full_every = full_every;
	sim = start_sim(conf, &config);
	while (sim_tick_at(sim, t)) {
		t += step;
		mock.now += step;
		assert_true(t < 10000000);
	}
	sim_totals(sim, &tot);
	assert_true(tot.finished);
	assert_int_equal(tot.pending, 0);
	/* every reading published was counted once, in one of two counters */
	assert_int_equal(tot.readings + tot.malformed, json_array_size(mock.published));
	assert_int_equal(mock.counters[0], tot.readings);
	assert_int_equal(mock.counters[1], tot.malformed);
	assert_int_equal(mock.counters[2], tot.faults);
	texts = json_copy(mock.published); /* the strings are shared, never changed */
	sim_destroy(sim);
	json_decref(config);
	return texts;
}

static void assert_same_readings(const json_t *a, const json_t *b)
{
	json_t *x = without_ts(a), *y = without_ts(b);

	assert_int_equal(json_array_size(x), json_array_size(y));
	for (size_t i = 0; i < json_array_size(x); i++)
		assert_string_equal(json_string_value(json_array_get(x, i)),
				    json_string_value(json_array_get(y, i)));
	json_decref(x);
	json_decref(y);
}

#define FREE_CONF                                                                               \
	"{\"locations\": 3, \"sensors\": 5, \"min_delay\": \"10ms\", \"max_delay\": \"50ms\", " \
	"\"seed\": 42, \"malformed_rate\": 0.1, \"fault_rate\": 0.1, \"batch\": 16, "           \
	"\"max_readings\": 700, \"silent_rate\": 0.2, \"silent_after\": \"2s\"}"

/* A seeded run gives the same readings in the same order whatever the
 * ticks, and whatever the backpressure. */
static void test_seeded_free_run(void **state)
{
	json_t *a, *b, *c, *d;

	(void)state;
	a = run(FREE_CONF, 7, 0);
	assert_int_equal(json_array_size(a), 700);
	b = run(FREE_CONF, 23, 0);
	c = run(FREE_CONF, 20, 3); /* every third publish is refused half-way */
	d = run(FREE_CONF, 1000, 2);
	assert_same_readings(a, b);
	assert_same_readings(a, c);
	assert_same_readings(a, d);
	/* ids run from 1, in order, none twice; a seeded run names its seed */
	for (size_t i = 0; i < json_array_size(c); i++) {
		json_t *r = json_loads(json_string_value(json_array_get(c, i)), 0, NULL);
		char want[32];

		snprintf(want, sizeof want, "toy1-s42-%zu", i + 1);
		assert_string_equal(json_string_value(json_object_get(r, "id")), want);
		json_decref(r);
	}
	json_decref(a);
	json_decref(b);
	json_decref(c);
	json_decref(d);
	/* another seed, other readings */
	a = run(FREE_CONF, 7, 0);
	b = run("{\"locations\": 3, \"sensors\": 5, \"min_delay\": \"10ms\", \"max_delay\": "
		"\"50ms\", \"seed\": 43, \"malformed_rate\": 0.1, \"fault_rate\": 0.1, \"batch\": "
		"16, \"max_readings\": 700, \"silent_rate\": 0.2, \"silent_after\": \"2s\"}",
		7, 0);
	json_t *x = without_ts(a), *y = without_ts(b);

	assert_false(json_equal(x, y));
	json_decref(x);
	json_decref(y);
	json_decref(a);
	json_decref(b);
}

/* Each sensor reports in time order, its delays inside min..max; readings
 * stop at total_runtime; silent sensors stop for good. */
static void test_free_schedule(void **state)
{
	json_t *texts;
	uint64_t last_t[16] = {0};
	int count[16] = {0};
	size_t i;
	json_t *t;

	(void)state;
	texts = run("{\"locations\": 1, \"sensors\": 16, \"min_delay\": \"100ms\", \"max_delay\": "
		    "\"300ms\", \"seed\": 9, \"total_runtime\": \"10s\", \"silent_rate\": 0.5, "
		    "\"silent_after\": \"5s\"}",
		    20, 0);
	json_array_foreach(texts, i, t)
	{
		json_t *r = json_loads(json_string_value(t), 0, NULL);
		int n = atoi(json_string_value(json_object_get(r, "sensor_id")) + 5) - 1;
		uint64_t at = (uint64_t)json_integer_value(json_object_get(r, "t"));

		assert_true(n >= 0 && n < 16);
		assert_true(at < 10000);
		if (count[n]++)
			assert_true(at - last_t[n] >= 100 && at - last_t[n] <= 300);
		else
			assert_true(at >= 100 && at <= 300);
		last_t[n] = at;
		json_decref(r);
	}
	int silent = 0;

	for (int n = 0; n < 16; n++) {
		if (last_t[n] < 5000)
			silent++;
		else
			assert_true(last_t[n] >= 9700); /* went on to the end */
	}
	/* 16 sensors at 50%: 3..13 fall silent unless the stream is broken */
	assert_true(silent >= 3 && silent <= 13);
	json_decref(texts);
}

/* What a sensor processor checks; true when the reading passes. */
static bool reading_ok(const json_t *r)
{
	const json_t *v = json_object_get(r, "value");

	return json_is_string(json_object_get(r, "id")) &&
	       json_is_string(json_object_get(r, "sensor_id")) &&
	       json_is_string(json_object_get(r, "location")) &&
	       json_is_string(json_object_get(r, "type")) && json_is_number(v) &&
	       json_number_value(v) >= 0;
}

static void test_malformed_and_faults(void **state)
{
	json_t *texts;
	size_t i;
	json_t *t;
	int kinds[7] = {0};

	(void)state;
	texts = run("{\"locations\": 2, \"sensors\": 50, \"seed\": 5, \"malformed_rate\": 1.0, "
		    "\"max_readings\": 2000, \"full_speed\": true}",
		    1, 0);
	assert_int_equal(json_array_size(texts), 2000);
	assert_int_equal(mock.counters[0], 0);
	assert_int_equal(mock.counters[1], 2000);
	json_array_foreach(texts, i, t)
	{
		json_t *r = json_loads(json_string_value(t), 0, NULL);
		const json_t *v = json_object_get(r, "value");

		assert_non_null(r);
		assert_false(reading_ok(r));
		kinds[!json_object_get(r, "sensor_id")	? 1
		      : !json_object_get(r, "location") ? 2
		      : !json_object_get(r, "type")	? 3
		      : !v				? 4
		      : json_is_string(v)		? 5
		      : json_number_value(v) < 0	? 6
							: 0]++;
		/* the time is always there */
		assert_true(json_is_integer(json_object_get(r, "ts")));
		json_decref(r);
	}
	assert_int_equal(kinds[0], 0);
	for (int k = 1; k < 7; k++)
		assert_true(kinds[k] > 200); /* each kind, about 2000 / 6 */
	json_decref(texts);

	texts = run("{\"locations\": 2, \"sensors\": 50, \"seed\": 5, \"fault_rate\": 0.25, "
		    "\"max_readings\": 4000, \"full_speed\": true}",
		    1, 0);
	uint64_t faults = 0;

	json_array_foreach(texts, i, t)
	{
		json_t *r = json_loads(json_string_value(t), 0, NULL);
		double v = json_number_value(json_object_get(r, "value"));

		assert_true(reading_ok(r));
		if (v == 1e9)
			faults++;
		else
			assert_true(v >= 1.0 && v <= 100.0);
		json_decref(r);
	}
	assert_int_equal(faults, mock.counters[2]);
	assert_true(faults > 800 && faults < 1200);
	assert_int_equal(mock.counters[0], 4000);
	json_decref(texts);
}

/* Exactly readings x sensors per tick, per input, cycled. */
static void test_iterator(void **state)
{
	json_t *config, *r;
	void *sim;

	(void)state;
	sim = start_sim(
		"{\"schedule\": \"iterator\", \"tick\": \"100ms\", \"seed\": 1, \"inputs\": "
		"[{\"locations\": 1, \"sensors\": 3, \"readings\": 2, \"lo\": 5, \"hi\": "
		"6}, {\"locations\": 2, \"sensors\": 2}]}",
		&config);
	sim_tick_at(sim, 0);
	assert_int_equal(json_array_size(mock.published), 6);
	sim_tick_at(sim, 99);
	assert_int_equal(json_array_size(mock.published), 6);
	sim_tick_at(sim, 100);
	assert_int_equal(json_array_size(mock.published), 10);
	sim_tick_at(sim, 250);
	assert_int_equal(json_array_size(mock.published), 16);
	sim_tick_at(sim, 399); /* tick 3 (at 300) */
	assert_int_equal(json_array_size(mock.published), 20);
	/* the first tick's: L01 S0001..S0003, twice, values in 5..6 */
	for (size_t i = 0; i < 6; i++) {
		char want[16];

		r = json_loads(json_string_value(json_array_get(mock.published, i)), 0, NULL);
		snprintf(want, sizeof want, "L01-S%04zu", i % 3 + 1);
		assert_string_equal(json_string_value(json_object_get(r, "sensor_id")), want);
		assert_true(json_number_value(json_object_get(r, "value")) >= 5);
		assert_true(json_number_value(json_object_get(r, "value")) <= 6);
		assert_int_equal(json_integer_value(json_object_get(r, "t")), i < 3 ? 0 : 50);
		json_decref(r);
	}
	/* the second's: four sensors on two locations, values in 1..100 again */
	r = json_loads(json_string_value(json_array_get(mock.published, 9)), 0, NULL);
	assert_string_equal(json_string_value(json_object_get(r, "sensor_id")), "L02-S0002");
	assert_int_equal(json_integer_value(json_object_get(r, "t")), 100);
	json_decref(r);
	sim_destroy(sim);
	json_decref(config);

	/* total_runtime ends it: ticks at 0, 100, 200 */
	json_t *texts = run("{\"schedule\": \"iterator\", \"tick\": \"100ms\", \"sensors\": 4, "
			    "\"locations\": 2, \"total_runtime\": \"250ms\"}",
			    30, 0);

	assert_int_equal(json_array_size(texts), 3 * 8);
	json_decref(texts);
}

static void expect_config_error(const char *conf, const char *key, const char *words)
{
	json_t *config = config_of(conf);
	void *sim = NULL;

	mock.err_key[0] = mock.err_msg[0] = '\0';
	assert_int_equal(sim_validate(SELF, &api, config, &toy), PLANT_E_CONFIG);
	assert_string_equal(mock.err_key, key);
	if (!strstr(mock.err_msg, words))
		fail_msg("error \"%s\" does not say \"%s\"", mock.err_msg, words);
	/* init refuses it the same way, without a leak */
	assert_int_not_equal(sim_init(SELF, &api, config, &toy, &sim), PLANT_OK);
	assert_string_equal(mock.err_key, key);
	json_decref(config);
}

static void test_config_errors(void **state)
{
	(void)state;
	expect_config_error("{\"min_delay\": \"5s\", \"max_delay\": \"1s\"}", "min_delay",
			    "longer than 'max_delay'");
	expect_config_error("{\"malformed_rate\": 1.5}", "malformed_rate", "from 0 to 1");
	expect_config_error("{\"fault_rate\": -0.1}", "fault_rate", "from 0 to 1");
	expect_config_error("{\"silent_rate\": 2}", "silent_rate", "from 0 to 1");
	expect_config_error("{\"locations\": 0}", "locations", "from 1 to 99");
	expect_config_error("{\"sensors\": 10000}", "sensors", "from 1 to 9999");
	expect_config_error("{\"batch\": 0}", "batch", "'batch'");
	expect_config_error("{\"max_readings\": -1}", "max_readings", "'max_readings'");
	expect_config_error("{\"schedule\": \"sometimes\"}", "schedule",
			    "\"free\" or \"iterator\"");
	expect_config_error("{\"topic\": \"a b\"}", "topic", "topic name");
	expect_config_error("{\"lo\": 5, \"hi\": 1}", "lo", "greater than");
	expect_config_error("{\"max_delay\": 0, \"min_delay\": 0}", "max_delay", "at least 1ms");
	expect_config_error("{\"inputs\": [{}]}", "inputs", "schedule = \"iterator\"");
	expect_config_error("{\"schedule\": \"iterator\", \"inputs\": [{\"colour\": 1}]}", "inputs",
			    "inputs[1]: unknown key 'colour'");
	expect_config_error("{\"schedule\": \"iterator\", \"inputs\": [{}, {\"sensors\": \"x\"}]}",
			    "inputs", "inputs[2]: 'sensors' must be an integer");
	expect_config_error("{\"schedule\": \"iterator\", \"inputs\": [{\"lo\": 9, \"hi\": 2}]}",
			    "inputs", "inputs[1]: 'lo' is greater");
	expect_config_error("{\"schedule\": \"iterator\", \"inputs\": []}", "inputs",
			    "at least one input");
	expect_config_error("{\"schedule\": \"iterator\", \"inputs_file\": \"nope.json\"}",
			    "inputs_file", "/nonexistent-dir/nope.json");
	expect_config_error("{\"schedule\": \"iterator\", \"tick\": 0}", "tick", "at least 1ms");
}

/* Not an assertion of speed (machines differ): the cost of generating, to
 * compare with the bus's. */
static void test_generation_speed(void **state)
{
	json_t *config;
	void *sim;
	struct timespec a, b;

	(void)state;
	mock.discard = true;
	sim = start_sim("{\"seed\": 3, \"full_speed\": true, \"max_readings\": 2000000, \"lo\": "
			"0.1, \"hi\": 20500}",
			&config);
	clock_gettime(CLOCK_MONOTONIC, &a);
	while (sim_tick_at(sim, 0))
		;
	clock_gettime(CLOCK_MONOTONIC, &b);
	double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;

	assert_int_equal(mock.discarded, 2000000);
	print_message("generation: %.0f readings/s (%.0f ns each)\n", 2e6 / s, s / 2e6 * 1e9);
	sim_destroy(sim);
	json_decref(config);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_rng),
		cmocka_unit_test(test_heap),
		cmocka_unit_test_setup_teardown(test_seeded_free_run, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_schedule, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_and_faults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_iterator, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_generation_speed, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
