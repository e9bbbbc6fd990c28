/* sim_common: what the sensor simulators share.
 *
 * A simulator module (sim_thermistor, sim_vibration, ...) is a `struct
 * sim_model`: its type name, its own config keys and how one sensor of that
 * type produces a reading. Everything else lives here: the common keys, the
 * per-sensor random streams, the free-running scheduler (a min-heap of due
 * times), the iterator schedule, malformed and fault readings, silent
 * sensors, building the JSON text without jansson, publishing in batches
 * with backpressure, and the counters.
 *
 * Reproducibility: every sensor has its own random stream, seeded from
 * `seed` and the sensor's location and number, and every draw for a reading
 * comes from that stream in a fixed order. Sensors are served in order of
 * their simulated due time (ties by index), which does not depend on when
 * the host's timer fires, so a seeded run publishes the same readings in
 * the same order every time; only "ts" (the host clock) differs.
 *
 * Not a plugin: a static library linked into each simulator, with hidden
 * visibility, so nothing here is exported from the modules.
 */
#ifndef PLANTD_SIM_H
#define PLANTD_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <plantd/plantd.h>

/* ---- random numbers: xoshiro256** seeded through splitmix64 ----------------- */

struct sim_rng {
	uint64_t s[4];
};

static inline uint64_t sim_splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t sim_rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static inline uint64_t sim_rng_next(struct sim_rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = sim_rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = sim_rotl(s[3], 45);
	return result;
}

/* A uniform double in [0, 1) from the top 53 bits of `x`. */
static inline double sim_u01(uint64_t x)
{
	return (double)(x >> 11) * 0x1.0p-53;
}

static inline double sim_rng_double(struct sim_rng *r)
{
	return sim_u01(sim_rng_next(r));
}

static inline double sim_rng_uniform(struct sim_rng *r, double lo, double hi)
{
	return lo + (hi - lo) * sim_rng_double(r);
}

/* A uniform integer in [0, n) (n > 0), by multiply-shift: the bias is below
 * n / 2^64, invisible for a simulator. */
static inline uint64_t sim_rng_below(struct sim_rng *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)sim_rng_next(r) * n) >> 64);
}

/* Approximately standard normal noise, cheaply: the sum of four 16-bit
 * uniforms (Irwin-Hall, n = 4), centred and scaled to variance 1. Bounded
 * to about +-3.46, which suits sensor noise (no wild outliers). */
static inline double sim_rng_gauss(struct sim_rng *r)
{
	uint64_t x = sim_rng_next(r);
	double sum = (double)(x & 0xffff) + (double)((x >> 16) & 0xffff) +
		     (double)((x >> 32) & 0xffff) + (double)(x >> 48);

	/* each term has mean 32767.5 and variance (65536^2 - 1) / 12 */
	return (sum - 131070.0) * (1.7320508075688772 / 65536.0);
}

/* Seed a sensor's stream from the run's seed and the sensor's place: the
 * stream does not depend on how many sensors there are. */
void sim_rng_seed(struct sim_rng *r, uint64_t seed, unsigned loc, unsigned num);

/* ---- writing a reading's JSON text ------------------------------------------- */

/* How a reading is malformed (0: it is not). Each fails a check the sensor
 * processor makes: a required field missing, the value as a string, or (for
 * a model that says a negative value is impossible) a negative value. The
 * "ts" is never left out: a processor may take the message's time. */
enum sim_bad {
	SIM_OK = 0,
	SIM_BAD_NO_SENSOR_ID,
	SIM_BAD_NO_LOCATION,
	SIM_BAD_NO_TYPE,
	SIM_BAD_NO_VALUE,
	SIM_BAD_STRING_VALUE,
	SIM_BAD_NEGATIVE_VALUE, /* last: only for models with negative_invalid */
};

/* A bounded text buffer; `overflow` is set (and nothing more written) when
 * a write does not fit. */
struct sim_writer {
	char *p, *end;
	bool overflow;
	int bad;	     /* enum sim_bad of the reading being written */
	const char *primary; /* "resistance" or "value" */
};

/* Longest text of one number written by sim_put_fixed() or sim_put_u64(). */
#define SIM_NUM_MAX 32

void sim_put_raw(struct sim_writer *w, const char *s, size_t n);
#define sim_put_lit(w, lit) sim_put_raw((w), (lit), sizeof(lit) - 1)
void sim_put_u64(struct sim_writer *w, uint64_t v);
/* `v` with `decimals` (0..9) digits after the point, trailing zeros dropped
 * but at least one kept, so that it is always a JSON real ("3.0"). */
void sim_put_fixed(struct sim_writer *w, double v, int decimals);
/* `,"<primary>":<v>`, or its malformed variant: left out, a string, or
 * negated (the magnitude kept, never -0). */
void sim_put_primary(struct sim_writer *w, double v, int decimals);

/* Formatting into a plain buffer (at least SIM_NUM_MAX bytes): the end. */
char *sim_fmt_u64(char *p, uint64_t v);
char *sim_fmt_fixed(char *p, double v, int decimals);

/* ---- models ---------------------------------------------------------------------- */

/* A config problem: the key at fault and a message for the user. */
struct sim_err {
	char key[64];
	char msg[512];
};

int sim_err_set(struct sim_err *err, const char *key, const char *fmt, ...) PLANT_PRINTF(3, 4);

/* Reading model keys from a config object or an `inputs` entry. Each sets
 * *out only when `key` is in `obj`; a value of the wrong type is an error
 * (PLANT_E_CONFIG with err filled in). `where` prefixes messages, e.g.
 * "inputs[2]: " (or ""). */
int sim_get_double(const json_t *obj, const char *key, const char *where, double *out,
		   struct sim_err *err);
int sim_get_int(const json_t *obj, const char *key, const char *where, long long *out,
		struct sim_err *err);

/* Where a reading happens, for the model. */
struct sim_point {
	uint64_t t_ms; /* simulated time since the start, in ms */
	bool fault;    /* write an out-of-range (but well-formed) value */
};

/* One sensor type. All callbacks are plain functions of their arguments, so
 * that a sensor's readings depend only on its own stream. */
struct sim_model {
	const char *type;      /* "thermistor": the "type" field, in messages */
	const char *primary;   /* the main value's field: "resistance", "value" */
	bool negative_invalid; /* a negative primary is a malformed reading */
	size_t params_size;    /* the model's parameters (from config) */
	size_t sensor_size;    /* each sensor's own state (may be 0) */
	size_t max_text;       /* longest text write() adds, for the biggest params */
	/* Keys an `inputs` entry may override per tick (numbers), NULL-ended. */
	const char *const *tick_keys;

	/* Read the model's keys from `obj` into `params`: the whole config with
	 * defaults filled in (base = true), or an `inputs` entry over a copy of
	 * the base (base = false: only the keys present). Then check them all.
	 * `where` prefixes messages. */
	int (*load)(void *params, const json_t *obj, bool base, const char *where,
		    struct sim_err *err);
	/* Bytes write() may add for these params (<= max_text), or NULL for
	 * max_text. */
	size_t (*text_len)(const void *params);
	/* Set up a sensor's state from its stream (the draws are part of the
	 * stream: a fixed number of them). */
	void (*sensor_init)(const void *params, void *sensor, struct sim_rng *rng);
	/* Append the type's fields of one reading, starting with
	 * sim_put_primary(), without the closing brace. */
	void (*write)(const void *params, void *sensor, struct sim_rng *rng,
		      const struct sim_point *pt, struct sim_writer *w);
};

/* ---- the scheduler (exposed for the unit test) -------------------------------- */

struct sim_heap_item {
	uint64_t due;
	uint32_t idx;
};

struct sim_heap {
	struct sim_heap_item *a;
	size_t n, cap;
};

int sim_heap_init(struct sim_heap *h, size_t cap);
void sim_heap_free(struct sim_heap *h);
/* Ordered by due time, then index. */
void sim_heap_push(struct sim_heap *h, uint64_t due, uint32_t idx);
void sim_heap_pop(struct sim_heap *h);
/* Replace the top with (due, idx) and restore the order: a pop and a push
 * for the price of one sift. */
void sim_heap_replace_top(struct sim_heap *h, uint64_t due, uint32_t idx);

/* ---- the plugin callbacks, shared by every simulator ------------------------- */

/* The common keys, first in each simulator's key table. `topic` is the
 * default topic, a string literal: "sensor.thermistor.raw". */
/* clang-format off */
#define SIM_COMMON_KEYS(topic)                                                              \
	{"topic", PLANT_CFG_STRING, 0, "\"" topic "\"", "topic to publish readings on"},    \
	{"locations", PLANT_CFG_INT, 0, "8", "number of locations (1..99)"},                \
	{"sensors", PLANT_CFG_INT, 0, "1000", "sensors per location (1..9999)"},            \
	{"min_delay", PLANT_CFG_DURATION, 0, "\"1s\"", "shortest delay between readings"},  \
	{"max_delay", PLANT_CFG_DURATION, 0, "\"10s\"", "longest delay between readings"},  \
	{"total_runtime", PLANT_CFG_DURATION, 0, "0", "stop after this long (0: never)"},   \
	{"max_readings", PLANT_CFG_INT, 0, "0", "stop after this many (0: no limit)"},      \
	{"seed", PLANT_CFG_INT, 0, "0", "random seed (0: a new one each run)"},             \
	{"malformed_rate", PLANT_CFG_DOUBLE, 0, "0.0", "fraction of malformed readings"},   \
	{"fault_rate", PLANT_CFG_DOUBLE, 0, "0.0", "fraction of out-of-range readings"},    \
	{"silent_rate", PLANT_CFG_DOUBLE, 0, "0.0", "fraction of sensors falling silent"},  \
	{"silent_after", PLANT_CFG_DURATION, 0, "\"5m\"", "they fall silent within this"},  \
	{"schedule", PLANT_CFG_STRING, 0, "\"free\"", "\"free\" or \"iterator\""},          \
	{"tick", PLANT_CFG_DURATION, 0, "\"60s\"", "iterator period"},                      \
	{"inputs", PLANT_CFG_ARRAY, 0, NULL, "iterator inputs, one per tick, cycled"},      \
	{"inputs_file", PLANT_CFG_STRING, 0, NULL, "JSON file of iterator inputs"},         \
	{"full_speed", PLANT_CFG_BOOL, 0, "false", "publish as fast as the bus accepts"},   \
	{"batch", PLANT_CFG_INT, 0, "1024", "readings per publish_batch call"}

#define SIM_KEYS_END {NULL, PLANT_CFG_END, 0, NULL, NULL}
/* clang-format on */

/* [main] validate(): the common keys and the model's. */
int sim_validate(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		 const struct sim_model *model);
/* [main] init(): checks the config again (init may come without validate). */
int sim_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
	     const struct sim_model *model, void **state_out);
int sim_start(void *state);
void sim_stop(void *state);
void sim_destroy(void *state);
int sim_health(void *state, json_t **detail_out);

/* ---- driving a simulator without a timer (the unit test) ------------------------ */

/* One tick at `elapsed_ms` of the simulator's own clock (ms since start):
 * what the timer does. Returns true while there is more to do. */
bool sim_tick_at(void *state, uint64_t elapsed_ms);
struct sim_totals {
	uint64_t readings, malformed, faults, pending;
	bool finished;
};
void sim_totals(const void *state, struct sim_totals *out);

#endif /* PLANTD_SIM_H */
