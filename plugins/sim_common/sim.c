/* sim_common: configuration, schedules, publishing and counting for the
 * sensor simulators. See sim.h for the model interface and README.md of any
 * simulator for the keys. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "sim.h"

#define MAX_LOCATIONS 99   /* "L%02d" */
#define MAX_SENSORS   9999 /* "S%04d" */
#define MAX_READINGS  100000
#define MAX_BATCH     65536

/* How long one tick may generate and publish before it lets the instance
 * take other callbacks (and stop()). */
#define TICK_BUDGET_NS	    (20ull * 1000 * 1000)
#define FREE_TIMER_MS	    20
#define FULL_TIMER_MS	    1
#define FULL_MAX_BACKOFF_MS 32

enum { SCHED_FREE, SCHED_ITERATOR };
enum { KIND_OK, KIND_FAULT, KIND_BAD };

/* One `inputs` entry of the iterator, checked and resolved at init. */
struct sim_input {
	unsigned locations, sensors, readings;
	void *params; /* the model's parameters for this tick */
};

struct sim_cfg {
	const char *topic; /* [borrowed] from the config, valid until destroy */
	unsigned locations, sensors;
	uint64_t min_delay, max_delay, total_runtime, max_readings, silent_after, tick;
	uint64_t seed;
	bool seed_random;
	double malformed_rate, fault_rate, silent_rate;
	int schedule;
	bool full_speed;
	size_t batch;
	void *params; /* the model's parameters from the config */
	struct sim_input *inputs;
	size_t n_inputs;
};

struct sim_sensor {
	struct sim_rng rng;
	uint64_t due;	    /* simulated ms of its next reading (free, full speed) */
	uint64_t silent_at; /* it says nothing from then on; UINT64_MAX: never */
	uint16_t loc, num;  /* 1-based */
};

struct sim {
	plant_instance *self;
	const struct plant_host_api *api;
	const struct sim_model *model;
	struct sim_cfg cfg;

	/* Sensors on a grid of grid_loc x grid_sens, index (loc-1)*grid_sens +
	 * (num-1): the config's size, or the largest an input asks for. */
	unsigned grid_loc, grid_sens;
	size_t n_sensors;
	struct sim_sensor *sensors;
	unsigned char *mstate; /* the model's state, n_sensors x sensor_size */

	/* free-running: who is due next */
	struct sim_heap heap;
	uint64_t ended_runtime; /* sensors that reached total_runtime */
	/* full speed: round robin over the sensors not yet silent */
	uint32_t *active;
	size_t n_active, cursor;
	/* iterator: where in the current tick we are */
	uint64_t it_tick;
	unsigned it_r, it_loc, it_s;
	bool it_in_tick;
	uint64_t it_all_silent; /* every used sensor is silent from then on */

	/* Readings built and not yet accepted by the bus, in order. */
	char *id_prefix; /* {"id":"<instance>- */
	size_t id_prefix_len;
	char *type_field; /* ,"type":"<type>" */
	size_t type_field_len;
	size_t slot; /* the most bytes one reading may take */
	char *arena;
	size_t arena_used;
	struct plant_publish *items;
	unsigned char *kinds;
	size_t n_items, head;

	unsigned bad_kinds; /* kinds of malformed readings the model has */
	uint64_t ts_cached; /* the host clock last written, as text */
	char ts_text[SIM_NUM_MAX];
	size_t ts_len;

	uint64_t seq, generated, readings, malformed, faults, rejected;
	const char *done_reason; /* nothing more will be generated, and why */
	bool finished, timer_on;
	uint64_t timer;
	uint64_t start_mono;
	uint64_t retry_at, backoff;
	int last_error; /* the last publish error logged, to log once */
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- configuration -------------------------------------------------------------- */

static void cfg_free(const struct sim_model *model, struct sim_cfg *cfg)
{
	(void)model;
	free(cfg->params);
	for (size_t i = 0; i < cfg->n_inputs; i++)
		free(cfg->inputs[i].params);
	free(cfg->inputs);
	memset(cfg, 0, sizeof *cfg);
}

static bool topic_ok(const char *t)
{
	size_t n = strlen(t);

	if (n == 0 || n > 200 || t[0] == '.' || t[n - 1] == '.')
		return false;
	for (const char *p = t; *p; p++) {
		char c = *p;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
		if (c == '.' && p[1] == '.')
			return false;
	}
	return true;
}

static uint64_t get_u64(const json_t *config, const char *key)
{
	json_int_t v = json_integer_value(json_object_get(config, key));

	return v > 0 ? (uint64_t)v : 0;
}

static int get_rate(const json_t *config, const char *key, double *out, struct sim_err *err)
{
	const json_t *v = json_object_get(config, key);
	double d = json_number_value(v);

	if (v && (!json_is_number(v) || !(d >= 0.0 && d <= 1.0)))
		return sim_err_set(err, key, "'%s' must be a fraction from 0 to 1, not %g", key, d);
	*out = v ? d : 0.0;
	return PLANT_OK;
}

static int get_count(const json_t *config, const char *key, long long lo, long long hi,
		     unsigned *out, struct sim_err *err)
{
	long long v = lo;

	if (sim_get_int(config, key, "", &v, err))
		return PLANT_E_CONFIG;
	if (v < lo || v > hi)
		return sim_err_set(err, key, "'%s' must be from %lld to %lld, not %lld", key, lo,
				   hi, v);
	*out = (unsigned)v;
	return PLANT_OK;
}

static bool is_tick_key(const struct sim_model *model, const char *key)
{
	if (!strcmp(key, "locations") || !strcmp(key, "sensors") || !strcmp(key, "readings"))
		return true;
	for (const char *const *k = model->tick_keys; k && *k; k++)
		if (!strcmp(*k, key))
			return true;
	return false;
}

/* The keys an input may hold, for an error message. */
static void tick_key_list(const struct sim_model *model, char *out, size_t len)
{
	size_t n = (size_t)snprintf(out, len, "locations, sensors, readings");

	for (const char *const *k = model->tick_keys; k && *k && n < len; k++)
		n += (size_t)snprintf(out + n, len - n, ", %s", *k);
}

/* Resolve and read `inputs_file`: a JSON array of inputs, or an object
 * with an "inputs" array. *out is [new]. */
static int load_inputs_file(const struct plant_host_api *api, plant_instance *self,
			    const char *file, json_t **out, struct sim_err *err)
{
	const char *dir = api->data_dir(self);
	char path[4096];
	json_error_t jerr;
	json_t *root, *arr;

	if (file[0] == '/' || !dir || !*dir)
		snprintf(path, sizeof path, "%s", file);
	else
		snprintf(path, sizeof path, "%s/%s", dir, file);
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (jerr.line > 0)
			return sim_err_set(err, "inputs_file", "inputs file %s: line %d: %s", path,
					   jerr.line, jerr.text);
		/* jansson's text names the file and the system's reason */
		return sim_err_set(err, "inputs_file", "cannot read inputs file: %s", jerr.text);
	}
	arr = json_is_object(root) ? json_object_get(root, "inputs") : root;
	if (!json_is_array(arr)) {
		json_decref(root);
		return sim_err_set(err, "inputs_file",
				   "inputs file %s: expected a JSON array of inputs (or an object "
				   "with an \"inputs\" array)",
				   path);
	}
	*out = json_incref(arr);
	json_decref(root);
	return PLANT_OK;
}

/* An error found in an input belongs to the key that holds the inputs. */
static int rekey(struct sim_err *err, const char *key)
{
	snprintf(err->key, sizeof err->key, "%s", key);
	return PLANT_E_CONFIG;
}

static int parse_inputs(const struct sim_model *model, struct sim_cfg *cfg, const json_t *arr,
			const char *key, const char *file, struct sim_err *err)
{
	size_t i;
	const json_t *in;
	char where[4200], keys[512];

	if (json_array_size(arr) == 0)
		return sim_err_set(err, key, "%s%s%sneeds at least one input",
				   file ? "inputs file " : "", file ? file : "", file ? ": " : "");
	cfg->inputs = calloc(json_array_size(arr), sizeof *cfg->inputs);
	if (!cfg->inputs)
		return sim_err_set(err, NULL, "out of memory");
	json_array_foreach(arr, i, in)
	{
		struct sim_input *it = &cfg->inputs[i];
		const char *k;
		const json_t *v;
		int rc;

		if (file)
			snprintf(where, sizeof where, "inputs file %s: input %zu: ", file, i + 1);
		else
			snprintf(where, sizeof where, "inputs[%zu]: ", i + 1);
		if (!json_is_object(in))
			return sim_err_set(err, key, "%snot an object (a group)", where);
		json_object_foreach((json_t *)in, k, v)
		{
			if (!is_tick_key(model, k)) {
				tick_key_list(model, keys, sizeof keys);
				return sim_err_set(err, key,
						   "%sunknown key '%s' (an input may set %s)",
						   where, k, keys);
			}
		}
		long long loc = cfg->locations, sens = cfg->sensors, rd = 1;

		if (sim_get_int(in, "locations", where, &loc, err) ||
		    sim_get_int(in, "sensors", where, &sens, err) ||
		    sim_get_int(in, "readings", where, &rd, err))
			return rekey(err, key);
		if (loc < 1 || loc > MAX_LOCATIONS)
			return sim_err_set(err, key, "%s'locations' must be from 1 to %d, not %lld",
					   where, MAX_LOCATIONS, loc);
		if (sens < 1 || sens > MAX_SENSORS)
			return sim_err_set(err, key, "%s'sensors' must be from 1 to %d, not %lld",
					   where, MAX_SENSORS, sens);
		if (rd < 0 || rd > MAX_READINGS)
			return sim_err_set(err, key, "%s'readings' must be from 0 to %d, not %lld",
					   where, MAX_READINGS, rd);
		it->locations = (unsigned)loc;
		it->sensors = (unsigned)sens;
		it->readings = (unsigned)rd;
		it->params = malloc(model->params_size);
		if (!it->params)
			return sim_err_set(err, NULL, "out of memory");
		memcpy(it->params, cfg->params, model->params_size);
		cfg->n_inputs = i + 1;
		rc = model->load(it->params, in, false, where, err);
		if (rc)
			return rekey(err, key);
	}
	return PLANT_OK;
}

/* Everything validate() and init() check; cfg is filled in (free it with
 * cfg_free, also after an error). */
static int cfg_parse(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		     const struct sim_model *model, struct sim_cfg *cfg, struct sim_err *err)
{
	const char *sched = json_string_value(json_object_get(config, "schedule"));
	const json_t *inputs = json_object_get(config, "inputs");
	const char *inputs_file = json_string_value(json_object_get(config, "inputs_file"));
	long long batch = 1024, max_readings = 0, seed = 0;
	int rc;

	memset(cfg, 0, sizeof *cfg);
	cfg->topic = json_string_value(json_object_get(config, "topic"));
	if (!cfg->topic || !topic_ok(cfg->topic))
		return sim_err_set(err, "topic",
				   "'topic' must be a topic name: [A-Za-z0-9_.-], dot-separated, "
				   "up to 200 characters");
	if (get_count(config, "locations", 1, MAX_LOCATIONS, &cfg->locations, err) ||
	    get_count(config, "sensors", 1, MAX_SENSORS, &cfg->sensors, err))
		return PLANT_E_CONFIG;
	cfg->min_delay = get_u64(config, "min_delay");
	cfg->max_delay = get_u64(config, "max_delay");
	cfg->total_runtime = get_u64(config, "total_runtime");
	cfg->silent_after = get_u64(config, "silent_after");
	cfg->tick = get_u64(config, "tick");
	if (sim_get_int(config, "max_readings", "", &max_readings, err) ||
	    sim_get_int(config, "seed", "", &seed, err) ||
	    sim_get_int(config, "batch", "", &batch, err))
		return PLANT_E_CONFIG;
	if (max_readings < 0)
		return sim_err_set(err, "max_readings",
				   "'max_readings' must be 0 (no limit) or more, not %lld",
				   max_readings);
	cfg->max_readings = (uint64_t)max_readings;
	cfg->seed = (uint64_t)seed;
	if (batch < 1 || batch > MAX_BATCH)
		return sim_err_set(err, "batch", "'batch' must be from 1 to %d, not %lld",
				   MAX_BATCH, batch);
	cfg->batch = (size_t)batch;
	if (get_rate(config, "malformed_rate", &cfg->malformed_rate, err) ||
	    get_rate(config, "fault_rate", &cfg->fault_rate, err) ||
	    get_rate(config, "silent_rate", &cfg->silent_rate, err))
		return PLANT_E_CONFIG;
	cfg->full_speed = json_is_true(json_object_get(config, "full_speed"));

	if (!sched || !strcmp(sched, "free"))
		cfg->schedule = SCHED_FREE;
	else if (!strcmp(sched, "iterator"))
		cfg->schedule = SCHED_ITERATOR;
	else
		return sim_err_set(err, "schedule",
				   "'schedule' must be \"free\" or \"iterator\", not \"%s\"",
				   sched);

	if (cfg->min_delay > cfg->max_delay)
		return sim_err_set(err, "min_delay",
				   "'min_delay' (%" PRIu64
				   " ms) is longer than 'max_delay' (%" PRIu64 " ms)",
				   cfg->min_delay, cfg->max_delay);
	if (cfg->schedule == SCHED_FREE && cfg->max_delay == 0)
		return sim_err_set(err, "max_delay",
				   "'max_delay' must be at least 1ms (for no delays at all, use "
				   "full_speed = true)");
	if (cfg->schedule == SCHED_ITERATOR && cfg->tick == 0)
		return sim_err_set(err, "tick", "'tick' must be at least 1ms");

	cfg->params = calloc(1, model->params_size ? model->params_size : 1);
	if (!cfg->params)
		return sim_err_set(err, NULL, "out of memory");
	rc = model->load(cfg->params, config, true, "", err);
	if (rc)
		return rc;

	if (inputs && inputs_file)
		return sim_err_set(err, "inputs_file", "give 'inputs' or 'inputs_file', not both");
	if ((inputs || inputs_file) && cfg->schedule != SCHED_ITERATOR)
		return sim_err_set(err, inputs ? "inputs" : "inputs_file",
				   "'%s' is only used with schedule = \"iterator\"",
				   inputs ? "inputs" : "inputs_file");
	if (inputs_file) {
		json_t *arr = NULL;

		rc = load_inputs_file(api, self, inputs_file, &arr, err);
		if (!rc)
			rc = parse_inputs(model, cfg, arr, "inputs_file", inputs_file, err);
		json_decref(arr);
		return rc;
	}
	if (inputs)
		return parse_inputs(model, cfg, inputs, "inputs", NULL, err);
	if (cfg->schedule == SCHED_ITERATOR) {
		/* no inputs: every tick is the config itself, one reading each */
		json_t *one = json_pack("[{}]");

		rc = one ? parse_inputs(model, cfg, one, "inputs", NULL, err)
			 : sim_err_set(err, NULL, "out of memory");
		json_decref(one);
		return rc;
	}
	return PLANT_OK;
}

static int report(plant_instance *self, const struct plant_host_api *api, int rc,
		  const struct sim_err *err)
{
	api->error(self, err->key[0] ? err->key : NULL, "%s", err->msg);
	return rc ? rc : PLANT_E_CONFIG;
}

int sim_validate(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		 const struct sim_model *model)
{
	struct sim_cfg cfg;
	struct sim_err err = {{0}, {0}};
	int rc = cfg_parse(self, api, config, model, &cfg, &err);

	cfg_free(model, &cfg);
	return rc ? report(self, api, rc, &err) : PLANT_OK;
}

/* ---- sensors ---------------------------------------------------------------------- */

static inline void *sensor_state(struct sim *sim, size_t idx)
{
	return sim->mstate + idx * sim->model->sensor_size;
}

/* A uniformly random delay in min_delay..max_delay, in whole ms. */
static inline uint64_t draw_delay(const struct sim_cfg *cfg, struct sim_rng *rng)
{
	return cfg->min_delay + sim_rng_below(rng, cfg->max_delay - cfg->min_delay + 1);
}

static uint64_t random_seed(void)
{
	uint64_t s = 0;

	if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
		uint64_t x = mono_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL);

		s = sim_splitmix64(&x);
	}
	/* 31 bits: it can be written back as `seed` as it is (libconfig reads
	 * a bigger integer only with an L suffix) */
	s &= 0x7fffffffu;
	return s ? s : 1;
}

/* Streams, models, silence and the first due times, all from each sensor's
 * own stream in a fixed order. */
static int sensors_init(struct sim *sim)
{
	const struct sim_cfg *cfg = &sim->cfg;
	bool uses_delays = cfg->schedule == SCHED_FREE;

	sim->grid_loc = cfg->locations;
	sim->grid_sens = cfg->sensors;
	if (cfg->schedule == SCHED_ITERATOR) {
		sim->grid_loc = sim->grid_sens = 1;
		for (size_t i = 0; i < cfg->n_inputs; i++) {
			if (cfg->inputs[i].locations > sim->grid_loc)
				sim->grid_loc = cfg->inputs[i].locations;
			if (cfg->inputs[i].sensors > sim->grid_sens)
				sim->grid_sens = cfg->inputs[i].sensors;
		}
	}
	sim->n_sensors = (size_t)sim->grid_loc * sim->grid_sens;
	sim->sensors = calloc(sim->n_sensors, sizeof *sim->sensors);
	if (sim->model->sensor_size)
		sim->mstate = calloc(sim->n_sensors, sim->model->sensor_size);
	if (!sim->sensors || (sim->model->sensor_size && !sim->mstate))
		return PLANT_E_NOMEM;

	for (unsigned l = 0; l < sim->grid_loc; l++) {
		for (unsigned n = 0; n < sim->grid_sens; n++) {
			size_t idx = (size_t)l * sim->grid_sens + n;
			struct sim_sensor *s = &sim->sensors[idx];
			uint64_t r1, r2;

			s->loc = (uint16_t)(l + 1);
			s->num = (uint16_t)(n + 1);
			sim_rng_seed(&s->rng, cfg->seed, s->loc, s->num);
			r1 = sim_rng_next(&s->rng);
			r2 = sim_rng_next(&s->rng);
			s->silent_at = sim_u01(r1) < cfg->silent_rate
					       ? (uint64_t)(sim_u01(r2) * (double)cfg->silent_after)
					       : UINT64_MAX;
			sim->model->sensor_init(cfg->params, sensor_state(sim, idx), &s->rng);
			if (uses_delays)
				s->due = draw_delay(cfg, &s->rng);
		}
	}

	if (cfg->schedule == SCHED_ITERATOR) {
		/* from when on every sensor an input uses is silent */
		sim->it_all_silent = 0;
		for (size_t i = 0; i < cfg->n_inputs; i++)
			for (unsigned l = 0; l < cfg->inputs[i].locations; l++)
				for (unsigned n = 0; n < cfg->inputs[i].sensors; n++) {
					uint64_t at = sim->sensors[(size_t)l * sim->grid_sens + n]
							      .silent_at;

					if (at > sim->it_all_silent)
						sim->it_all_silent = at;
				}
		return PLANT_OK;
	}

	/* free running: a heap of due times; full speed: a round robin. Sensors
	 * whose first reading falls after their end never join. */
	if (cfg->full_speed) {
		sim->active = malloc(sim->n_sensors * sizeof *sim->active);
		if (!sim->active)
			return PLANT_E_NOMEM;
	} else if (sim_heap_init(&sim->heap, sim->n_sensors)) {
		return PLANT_E_NOMEM;
	}
	for (size_t i = 0; i < sim->n_sensors; i++) {
		const struct sim_sensor *s = &sim->sensors[i];

		if (s->due >= s->silent_at)
			continue;
		if (cfg->full_speed) {
			sim->active[sim->n_active++] = (uint32_t)i;
		} else if (cfg->total_runtime && s->due >= cfg->total_runtime) {
			sim->ended_runtime++;
		} else {
			sim_heap_push(&sim->heap, s->due, (uint32_t)i);
		}
	}
	return PLANT_OK;
}

/* ---- readings -------------------------------------------------------------------------- */

static inline char *put2(char *p, unsigned v)
{
	p[0] = (char)('0' + v / 10 % 10);
	p[1] = (char)('0' + v % 10);
	return p + 2;
}

static inline char *put4(char *p, unsigned v)
{
	p[0] = (char)('0' + v / 1000 % 10);
	p[1] = (char)('0' + v / 100 % 10);
	p[2] = (char)('0' + v / 10 % 10);
	p[3] = (char)('0' + v % 10);
	return p + 4;
}

/* Build the next reading of sensor `idx` at simulated time `t` into the
 * arena. The caller made sure there is a free slot. */
static void emit(struct sim *sim, size_t idx, const void *params, uint64_t t, uint64_t ts)
{
	struct sim_sensor *s = &sim->sensors[idx];
	const struct sim_cfg *cfg = &sim->cfg;
	uint64_t r1 = sim_rng_next(&s->rng), r2 = sim_rng_next(&s->rng);
	int bad = sim_u01(r1) < cfg->malformed_rate ? 1 + (int)((r1 & 0xffff) % sim->bad_kinds)
						    : SIM_OK;
	struct sim_point pt = {.t_ms = t, .fault = !bad && sim_u01(r2) < cfg->fault_rate};
	char *start = sim->arena + sim->arena_used;
	struct sim_writer w = {
		.p = start, .end = start + sim->slot, .bad = bad, .primary = sim->model->primary};
	char tmp[64], *p;

	sim_put_raw(&w, sim->id_prefix, sim->id_prefix_len);
	sim_put_u64(&w, ++sim->seq);
	sim_put_lit(&w, "\"");
	if (bad != SIM_BAD_NO_SENSOR_ID) {
		p = tmp;
		memcpy(p, ",\"sensor_id\":\"L", 15);
		p = put2(p + 15, s->loc);
		memcpy(p, "-S", 2);
		p = put4(p + 2, s->num);
		*p++ = '"';
		sim_put_raw(&w, tmp, (size_t)(p - tmp));
	}
	if (bad != SIM_BAD_NO_LOCATION) {
		p = tmp;
		memcpy(p, ",\"location\":\"L", 14);
		p = put2(p + 14, s->loc);
		*p++ = '"';
		sim_put_raw(&w, tmp, (size_t)(p - tmp));
	}
	if (bad != SIM_BAD_NO_TYPE)
		sim_put_raw(&w, sim->type_field, sim->type_field_len);
	if (ts != sim->ts_cached) {
		/* the same for a whole batch: written once */
		sim->ts_cached = ts;
		sim->ts_len = (size_t)(sim_fmt_u64(sim->ts_text, ts) - sim->ts_text);
	}
	sim_put_lit(&w, ",\"ts\":");
	sim_put_raw(&w, sim->ts_text, sim->ts_len);
	sim->model->write(params, sensor_state(sim, idx), &s->rng, &pt, &w);
	sim_put_lit(&w, "}");
	sim->generated++;
	if (w.overflow) {
		/* a model that under-declared its text: a bug, said once */
		if (!sim->rejected++)
			sim->api->log(
				sim->self, PLANT_LOG_ERROR,
				"a reading did not fit in %zu bytes; such readings are left out",
				sim->slot);
		return;
	}
	struct plant_publish *it = &sim->items[sim->n_items];

	memset(it, 0, sizeof *it);
	it->struct_size = sizeof *it;
	it->topic = cfg->topic;
	it->text = start;
	it->text_len = (size_t)(w.p - start);
	sim->kinds[sim->n_items] = bad ? KIND_BAD : pt.fault ? KIND_FAULT : KIND_OK;
	sim->n_items++;
	sim->arena_used += it->text_len;
}

static inline bool quota_left(const struct sim *sim)
{
	return !sim->cfg.max_readings || sim->generated < sim->cfg.max_readings;
}

/* Each generate_*() fills the arena with up to `batch` readings and
 * returns true when it stopped for room or for its work budget (call again),
 * false when nothing more is due now. */

static bool generate_free(struct sim *sim, uint64_t now, uint64_t ts)
{
	const struct sim_cfg *cfg = &sim->cfg;
	struct sim_heap *h = &sim->heap;

	while (h->n && h->a[0].due <= now) {
		if (sim->n_items == cfg->batch || !quota_left(sim))
			return true;
		uint32_t idx = h->a[0].idx;
		struct sim_sensor *s = &sim->sensors[idx];

		emit(sim, idx, cfg->params, s->due, ts);
		s->due += draw_delay(cfg, &s->rng);
		if (s->due >= s->silent_at) {
			sim_heap_pop(h);
		} else if (cfg->total_runtime && s->due >= cfg->total_runtime) {
			sim->ended_runtime++;
			sim_heap_pop(h);
		} else {
			sim_heap_replace_top(h, s->due, idx);
		}
	}
	if (!h->n)
		sim->done_reason = sim->ended_runtime ? "total_runtime" : "all_silent";
	return false;
}

static bool generate_full(struct sim *sim, uint64_t ts)
{
	const struct sim_cfg *cfg = &sim->cfg;

	while (sim->n_active) {
		if (sim->n_items == cfg->batch || !quota_left(sim))
			return true;
		if (sim->cursor >= sim->n_active)
			sim->cursor = 0;
		uint32_t idx = sim->active[sim->cursor];
		struct sim_sensor *s = &sim->sensors[idx];

		emit(sim, idx, cfg->params, s->due, ts);
		s->due += draw_delay(cfg, &s->rng);
		if (s->due >= s->silent_at) {
			/* keep the order of the others: a deterministic round robin */
			memmove(&sim->active[sim->cursor], &sim->active[sim->cursor + 1],
				(sim->n_active - sim->cursor - 1) * sizeof *sim->active);
			sim->n_active--;
		} else {
			sim->cursor++;
		}
	}
	sim->done_reason = "all_silent";
	return false;
}

static bool generate_iterator(struct sim *sim, uint64_t now, uint64_t ts)
{
	const struct sim_cfg *cfg = &sim->cfg;
	size_t work = 0, max_work = 16 * cfg->batch;

	for (;;) {
		if (sim->n_items == cfg->batch || !quota_left(sim) || work++ >= max_work)
			return true;
		uint64_t T = sim->it_tick * cfg->tick;

		if (!sim->it_in_tick) {
			if (cfg->total_runtime && T >= cfg->total_runtime) {
				sim->done_reason = "total_runtime";
				return false;
			}
			if (T >= sim->it_all_silent) {
				sim->done_reason = "all_silent";
				return false;
			}
			if (T > now && !cfg->full_speed)
				return false;
			sim->it_in_tick = true;
			sim->it_r = sim->it_loc = sim->it_s = 0;
		}
		const struct sim_input *in = &cfg->inputs[sim->it_tick % cfg->n_inputs];

		if (sim->it_r >= in->readings) {
			sim->it_in_tick = false;
			sim->it_tick++;
			continue;
		}
		/* a tick's readings are spread evenly over it, in simulated time */
		uint64_t t =
			T + (uint64_t)((unsigned __int128)sim->it_r * cfg->tick / in->readings);
		size_t idx = (size_t)sim->it_loc * sim->grid_sens + sim->it_s;

		if (t < sim->sensors[idx].silent_at)
			emit(sim, idx, in->params, t, ts);
		if (++sim->it_s == in->sensors) {
			sim->it_s = 0;
			if (++sim->it_loc == in->locations) {
				sim->it_loc = 0;
				sim->it_r++;
			}
		}
	}
}

/* ---- publishing ------------------------------------------------------------------------- */

static void count_published(struct sim *sim, size_t from, size_t to)
{
	uint64_t ok = 0, faults = 0, bad = 0;

	for (size_t i = from; i < to; i++) {
		switch (sim->kinds[i]) {
		case KIND_FAULT:
			faults++;
			ok++;
			break;
		case KIND_BAD:
			bad++;
			break;
		default:
			ok++;
		}
	}
	sim->readings += ok;
	sim->faults += faults;
	sim->malformed += bad;
	if (ok)
		sim->api->counter_add(sim->self, "readings", ok);
	if (bad)
		sim->api->counter_add(sim->self, "malformed", bad);
	if (faults)
		sim->api->counter_add(sim->self, "faults", faults);
}

/* Offer what is pending to the bus. What it accepted is counted and
 * forgotten; the rest stays, in order, for the next try. */
static int flush(struct sim *sim)
{
	while (sim->head < sim->n_items) {
		size_t n = sim->n_items - sim->head, done = 0;
		int rc = sim->api->publish_batch(sim->self, &sim->items[sim->head], n, &done);

		if (done > n)
			done = n;
		count_published(sim, sim->head, sim->head + done);
		sim->head += done;
		if (rc == PLANT_OK && done) {
			sim->last_error = PLANT_OK;
			continue;
		}
		if (rc == PLANT_OK) /* took nothing, said nothing: try later */
			return PLANT_E_FULL;
		if (rc == PLANT_E_FULL)
			return rc;
		if (rc != sim->last_error)
			sim->api->log(
				sim->self, rc == PLANT_E_STATE ? PLANT_LOG_DEBUG : PLANT_LOG_ERROR,
				"publish on %s failed: %s", sim->cfg.topic, plant_status_name(rc));
		sim->last_error = rc;
		if (rc == PLANT_E_INVALID && sim->head < sim->n_items) {
			/* refused for itself, it would be refused forever */
			sim->head++;
			sim->rejected++;
			continue;
		}
		return rc;
	}
	sim->head = sim->n_items = sim->arena_used = 0;
	return PLANT_OK;
}

static void finish(struct sim *sim, const char *reason)
{
	sim->finished = true;
	if (sim->timer_on) {
		sim->api->timer_cancel(sim->self, sim->timer);
		sim->timer_on = false;
	}
	sim->api->log(sim->self, PLANT_LOG_INFO,
		      "finished reason=%s readings=%" PRIu64 " malformed=%" PRIu64
		      " faults=%" PRIu64,
		      reason, sim->readings, sim->malformed, sim->faults);
}

/* One tick at `now` ms of simulated time since the start. */
static bool tick(struct sim *sim, uint64_t now)
{
	const struct sim_cfg *cfg = &sim->cfg;
	uint64_t t0 = mono_ns(), ts;

	if (sim->finished)
		return false;
	if (sim->retry_at && t0 < sim->retry_at)
		return true;
	sim->retry_at = 0;
	for (;;) {
		int rc = flush(sim);

		if (rc == PLANT_E_FULL && cfg->full_speed) {
			/* back off, 1 ms doubling to 32 ms, until the bus has room */
			sim->backoff = sim->backoff ? sim->backoff * 2 : 1;
			if (sim->backoff > FULL_MAX_BACKOFF_MS)
				sim->backoff = FULL_MAX_BACKOFF_MS;
			sim->retry_at = mono_ns() + sim->backoff * 1000000ull;
		}
		if (rc)
			return true;
		sim->backoff = 0;
		if (!quota_left(sim)) {
			finish(sim, "max_readings");
			return false;
		}
		if (cfg->full_speed && cfg->schedule == SCHED_FREE && cfg->total_runtime &&
		    now >= cfg->total_runtime) {
			finish(sim, "total_runtime");
			return false;
		}
		if (sim->done_reason) {
			finish(sim, sim->done_reason);
			return false;
		}
		if (mono_ns() - t0 > TICK_BUDGET_NS)
			return true;
		ts = sim->api->now_ms(sim->self); /* once a batch */

		bool more;

		if (cfg->schedule == SCHED_ITERATOR)
			more = generate_iterator(sim, now, ts);
		else if (cfg->full_speed)
			more = generate_full(sim, ts);
		else
			more = generate_free(sim, now, ts);
		if (!more && sim->n_items == 0 && !sim->done_reason)
			return true;
	}
}

bool sim_tick_at(void *state, uint64_t elapsed_ms)
{
	return tick(state, elapsed_ms);
}

void sim_totals(const void *state, struct sim_totals *out)
{
	const struct sim *sim = state;

	out->readings = sim->readings;
	out->malformed = sim->malformed;
	out->faults = sim->faults;
	out->pending = sim->n_items - sim->head;
	out->finished = sim->finished;
}

static void on_timer(void *state, void *user)
{
	struct sim *sim = state;

	(void)user;
	tick(sim, (mono_ns() - sim->start_mono) / 1000000ull);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void sim_free(struct sim *sim)
{
	if (!sim)
		return;
	cfg_free(sim->model, &sim->cfg);
	free(sim->sensors);
	free(sim->mstate);
	sim_heap_free(&sim->heap);
	free(sim->active);
	free(sim->id_prefix);
	free(sim->type_field);
	free(sim->arena);
	free(sim->items);
	free(sim->kinds);
	free(sim);
}

/* `{"id":"<name>-<run>-` with the name escaped for JSON. */
static char *make_id_prefix(const char *name, const char *run, size_t *len_out)
{
	size_t n = strlen(name), len = 0;
	char *out = malloc(8 + 6 * n + strlen(run) + 3);

	if (!out)
		return NULL;
	memcpy(out, "{\"id\":\"", 7);
	len = 7;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		if (*p == '"' || *p == '\\') {
			out[len++] = '\\';
			out[len++] = (char)*p;
		} else if (*p < 0x20) {
			len += (size_t)sprintf(out + len, "\\u%04x", *p);
		} else {
			out[len++] = (char)*p;
		}
	}
	len += (size_t)sprintf(out + len, "-%s-", run);
	*len_out = len;
	return out;
}

static size_t model_text_len(const struct sim_model *model, const struct sim_cfg *cfg)
{
	size_t most = model->text_len ? model->text_len(cfg->params) : model->max_text;

	for (size_t i = 0; model->text_len && i < cfg->n_inputs; i++) {
		size_t n = model->text_len(cfg->inputs[i].params);

		if (n > most)
			most = n;
	}
	return most;
}

int sim_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
	     const struct sim_model *model, void **state_out)
{
	struct sim_err err = {{0}, {0}};
	struct sim *sim = calloc(1, sizeof *sim);
	const char *name = api->instance_name(self);
	int rc;

	if (!sim) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	if (!PLANT_API_HAS(api, publish_batch)) {
		free(sim);
		api->error(self, NULL, "this host has no publish_batch (SDK 1.2 needed)");
		return PLANT_E_UNSUPPORTED;
	}
	sim->self = self;
	sim->api = api;
	sim->model = model;
	sim->ts_cached = UINT64_MAX; /* never a clock reading: the first is written */
	sim->bad_kinds = model->negative_invalid ? SIM_BAD_NEGATIVE_VALUE : SIM_BAD_STRING_VALUE;
	rc = cfg_parse(self, api, config, model, &sim->cfg, &err);
	if (rc) {
		sim_free(sim);
		return report(self, api, rc, &err);
	}
	if (sim->cfg.seed == 0) {
		sim->cfg.seed = random_seed();
		sim->cfg.seed_random = true;
	}
	rc = sensors_init(sim);
	if (!rc) {
		size_t type_len = strlen(model->type);

		/* Reading ids are unique across runs, so that a processor's
		 * idempotency window never mistakes a new run's readings for
		 * old ones: the run is the start time in hex. A seeded run is
		 * the same readings again, ids included: "s" and the seed. */
		char run[32];
		if (sim->cfg.seed_random)
			snprintf(run, sizeof run, "%" PRIx64, api->now_ms(self));
		else
			snprintf(run, sizeof run, "s%" PRIu64, sim->cfg.seed);
		sim->id_prefix = make_id_prefix(name ? name : "sim", run, &sim->id_prefix_len);
		sim->type_field = malloc(type_len + 12);
		if (sim->type_field)
			sim->type_field_len =
				(size_t)sprintf(sim->type_field, ",\"type\":\"%s\"", model->type);
		/* id, sensor_id, location, type, ts and the braces */
		sim->slot = sim->id_prefix_len + sim->type_field_len + 2 * SIM_NUM_MAX + 64 +
			    model_text_len(model, &sim->cfg);
		sim->arena = malloc(sim->slot * sim->cfg.batch);
		sim->items = calloc(sim->cfg.batch, sizeof *sim->items);
		sim->kinds = malloc(sim->cfg.batch);
		if (!sim->id_prefix || !sim->type_field || !sim->arena || !sim->items ||
		    !sim->kinds)
			rc = PLANT_E_NOMEM;
	}
	if (rc) {
		api->error(self, NULL, "out of memory for %zu sensors", sim->n_sensors);
		sim_free(sim);
		return rc;
	}
	*state_out = sim;
	return PLANT_OK;
}

int sim_start(void *state)
{
	struct sim *sim = state;
	const struct sim_cfg *cfg = &sim->cfg;
	uint64_t every = cfg->full_speed ? FULL_TIMER_MS : FREE_TIMER_MS;
	int rc;

	if (cfg->schedule == SCHED_ITERATOR && !cfg->full_speed && cfg->tick < every)
		every = cfg->tick;
	sim->start_mono = mono_ns();
	rc = sim->api->timer_add(sim->self, every, 0, on_timer, NULL, &sim->timer);
	if (rc != PLANT_OK) {
		sim->api->error(sim->self, NULL, "cannot add a timer: %s", plant_status_name(rc));
		return rc;
	}
	sim->timer_on = true;
	sim->api->log(sim->self, PLANT_LOG_INFO,
		      "started type=%s sensors=%zu schedule=%s%s seed=%" PRIu64 "%s",
		      sim->model->type, sim->n_sensors,
		      cfg->schedule == SCHED_ITERATOR ? "iterator" : "free",
		      cfg->full_speed ? " full_speed=true" : "", cfg->seed,
		      cfg->seed_random ? " (random: set seed to repeat this run)" : "");
	return PLANT_OK;
}

/* The host removed the timer already. Readings built but not accepted by
 * the bus were never published nor counted: they are said, not lost
 * silently. */
void sim_stop(void *state)
{
	struct sim *sim = state;

	sim->timer_on = false;
	sim->api->log(sim->self, PLANT_LOG_INFO,
		      "stopped readings=%" PRIu64 " malformed=%" PRIu64 " faults=%" PRIu64
		      " unpublished=%zu%s",
		      sim->readings, sim->malformed, sim->faults, sim->n_items - sim->head,
		      sim->finished ? " (finished)" : "");
}

void sim_destroy(void *state)
{
	sim_free(state);
}

int sim_health(void *state, json_t **detail_out)
{
	const struct sim *sim = state;

	*detail_out = json_pack("{s:I, s:I, s:I, s:I, s:b, s:I}", "readings",
				(json_int_t)sim->readings, "malformed", (json_int_t)sim->malformed,
				"faults", (json_int_t)sim->faults, "pending",
				(json_int_t)(sim->n_items - sim->head), "finished", sim->finished,
				"seed", (json_int_t)sim->cfg.seed);
	return PLANT_OK;
}
