/* sensor: the seed platform's sensor function, as a plugin.
 *
 * Consumes raw readings from a queue and, per reading:
 *   1. idempotency: a reading id already processed within the window is
 *      acked without side effects (a conditional put with a TTL);
 *   2. the registry of sensors in a store: first seen -> registered; a
 *      reading outside the model's acceptable range -> broken, for good;
 *   3. a thermistor's temperature by Steinhart–Hart (thermistor.c);
 *   4. a status from the model's thresholds;
 *   5. publishes the processed reading, and a notification for every
 *      status other than "ok";
 *   6. a reading that cannot be processed (not an object, a missing field,
 *      a wrong type, a negative resistance) goes to the dead-letter queue
 *      with the reason.
 * Work is done a batch at a time: one store write claims every reading of
 * the batch, one publish sends every processed reading. See README.md.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <plantd/plantd.h>

#include "thermistor.h"

static const struct plant_config_key config_keys[] = {
	{"queue", PLANT_CFG_STRING, 1, NULL, "the queue of raw readings to consume"},
	{"store", PLANT_CFG_STRING, 1, NULL,
	 "the site store holding the sensor registry and the idempotency keys"},
	{"output_topic", PLANT_CFG_STRING, 0, "\"sensor.{type}.processed\"",
	 "where processed readings go; {type} becomes the reading's type"},
	{"notify_topic", PLANT_CFG_STRING, 0, "\"notify.sensor\"",
	 "where a notification goes for every status other than ok"},
	{"idempotency_window", PLANT_CFG_DURATION, 0, "\"1h\"",
	 "a reading id seen again within this long is acked without effect; 0: off"},
	{"registry_cache", PLANT_CFG_DURATION, 0, "\"60s\"",
	 "how long a working sensor's registry entry is trusted from memory"},
	{"batch", PLANT_CFG_INT, 0, "256", "readings handled per batch (1..4096)"},
	{"models", PLANT_CFG_OBJECT, 0, "{}",
	 "per sensor type (or a reading's \"model\"): constants, range, thresholds"},
	{NULL, PLANT_CFG_END, 0, NULL, NULL},
};

/* ---- sensor models ----------------------------------------------------- */

/* What a reading of one type means. A thermistor's range is on the
 * resistance and its thresholds on the temperature in °C; other types
 * have both on their "value". */
struct model {
	char *name;
	bool thermistor;
	struct sh_coeffs sh;
	double min, max;  /* the acceptable range: outside it, broken */
	double low, high; /* thresholds: status low/too_cold, high/too_hot */
	char *unit;	  /* for messages; a thermistor says "ohm" */
};

struct model_default {
	const char *name;
	bool thermistor;
	double min, max, low, high;
	const char *unit;
};

/* Thresholds for a plant floor; the seed says its own are only examples. */
static const struct model_default model_defaults[] = {
	{"thermistor", true, 0.1, 20500.0, -13.0, 120.0, "ohm"},
	{"vibration", false, 0.0, 50.0, -INFINITY, 0.8, "g"},
	{"pressure", false, 0.0, 25.0, 5.0, 8.0, "bar"},
	{"power", false, 0.0, 1000.0, -INFINITY, 75.0, "kW"},
};

/* ---- the registry cache ------------------------------------------------ */

enum { REG_OK = 1, REG_BROKEN = 2 };

struct reg_entry {
	char *id; /* NULL: empty */
	uint8_t state;
	uint64_t checked_at;
};

struct reg_cache {
	struct reg_entry *v;
	size_t cap, n; /* cap: a power of two */
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static struct reg_entry *reg_find(struct reg_cache *c, const char *id, bool add)
{
	if (add && (c->n + 1) * 4 > c->cap * 3) {
		size_t cap = c->cap ? c->cap * 2 : 1024;
		struct reg_entry *v = calloc(cap, sizeof *v);
		if (!v)
			return NULL;
		for (size_t i = 0; i < c->cap; i++) {
			if (!c->v[i].id)
				continue;
			size_t j = hash_str(c->v[i].id) & (cap - 1);
			while (v[j].id)
				j = (j + 1) & (cap - 1);
			v[j] = c->v[i];
		}
		free(c->v);
		c->v = v;
		c->cap = cap;
	}
	if (!c->cap)
		return NULL;
	size_t j = hash_str(id) & (c->cap - 1);
	while (c->v[j].id) {
		if (strcmp(c->v[j].id, id) == 0)
			return &c->v[j];
		j = (j + 1) & (c->cap - 1);
	}
	if (!add)
		return NULL;
	c->v[j].id = strdup(id);
	if (!c->v[j].id)
		return NULL;
	c->n++;
	return &c->v[j];
}

static void reg_free(struct reg_cache *c)
{
	for (size_t i = 0; i < c->cap; i++)
		free(c->v[i].id);
	free(c->v);
}

/* ---- the instance ------------------------------------------------------ */

struct item {
	const plant_msg *msg;
	const json_t *body; /* the tree, only when the text did not do */
	const char *id, *sensor_id, *location, *type;
	bool added; /* the raw reading has a field we add */
	/* the strings read from the text, when no tree was needed */
	char s_id[257], s_sensor[257], s_location[257], s_type[65];
	const struct model *model;
	double x; /* resistance or value */
	enum { IT_GO, IT_BAD, IT_DUP } fate;
	int reg; /* the registry's word: REG_OK, REG_BROKEN, 0 = not registered */
	const char *status;
	double kelvin;
	char reason[160];
};

struct sensor {
	plant_instance *self;
	const struct plant_host_api *api;
	const char *queue, *output_topic, *notify_topic;
	uint32_t store;
	uint64_t window_ms, cache_ms;
	uint32_t batch;
	struct model *models;
	size_t n_models;
	struct reg_cache reg;
	/* reused from batch to batch */
	struct item *items;
	struct plant_store_op *ops;
	char **keys;
	struct plant_publish *pubs;
	const char **set; /* batch_set_add() */
	size_t set_cap;
	char *buf;
	size_t buf_len, buf_cap;
	/* counts */
	uint64_t processed, duplicates, rejected, broken_marked, notified, store_errors;
	bool store_failing;
	FILE *errors; /* errors/NAME.jsonl, when a queue has no dead-letter queue */
};

static void models_free(struct sensor *s)
{
	for (size_t i = 0; i < s->n_models; i++) {
		free(s->models[i].name);
		free(s->models[i].unit);
	}
	free(s->models);
	s->models = NULL;
	s->n_models = 0;
}

static bool get_num(const json_t *o, const char *key, double *out)
{
	const json_t *v = json_object_get(o, key);
	if (!v)
		return true;
	if (!json_is_number(v))
		return false;
	*out = json_number_value(v);
	return true;
}

/* The models: the defaults, each overridden key by key by `models` from
 * the config, plus new types the config adds. */
static int models_load(struct sensor *s, plant_instance *self, const struct plant_host_api *api,
		       const json_t *config)
{
	const json_t *cfg = json_object_get(config, "models");
	size_t nd = sizeof model_defaults / sizeof model_defaults[0];
	size_t cap = nd + json_object_size(cfg);
	struct model *m = calloc(cap ? cap : 1, sizeof *m);
	if (!m) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	size_t n = 0;
	for (size_t i = 0; i < nd; i++) {
		const struct model_default *d = &model_defaults[i];
		m[n++] = (struct model){
			.name = strdup(d->name),
			.thermistor = d->thermistor,
			.sh = {SH_DEFAULT_A, SH_DEFAULT_B, SH_DEFAULT_C},
			.min = d->min,
			.max = d->max,
			.low = d->low,
			.high = d->high,
			.unit = strdup(d->unit),
		};
	}
	s->models = m;
	s->n_models = n;
	const char *name;
	const json_t *o;
	json_object_foreach((json_t *)cfg, name, o)
	{
		if (!json_is_object(o)) {
			api->error(self, "models", "models.%s: needs a group of settings", name);
			return PLANT_E_CONFIG;
		}
		struct model *md = NULL;
		for (size_t i = 0; i < s->n_models; i++)
			if (strcmp(s->models[i].name, name) == 0)
				md = &s->models[i];
		if (!md) {
			md = &s->models[s->n_models++];
			*md = (struct model){.name = strdup(name),
					     .min = -INFINITY,
					     .max = INFINITY,
					     .low = -INFINITY,
					     .high = INFINITY,
					     .unit = strdup("")};
		}
		const json_t *kind = json_object_get(o, "kind");
		if (kind &&
		    !(json_is_string(kind) && (strcmp(json_string_value(kind), "thermistor") == 0 ||
					       strcmp(json_string_value(kind), "value") == 0))) {
			api->error(self, "models", "models.%s.kind: \"thermistor\" or \"value\"",
				   name);
			return PLANT_E_CONFIG;
		}
		if (kind)
			md->thermistor = strcmp(json_string_value(kind), "thermistor") == 0;
		const char *key;
		const json_t *v;
		json_object_foreach((json_t *)o, key, v)
		{
			static const char *const known[] = {"kind", "a",   "b",	   "c",	  "min",
							    "max",  "low", "high", "unit"};
			bool ok = false;
			for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
				ok |= strcmp(key, known[i]) == 0;
			if (!ok) {
				api->error(self, "models",
					   "models.%s: unknown key \"%s\" (known: kind, a, b, c, "
					   "min, max, low, high, unit)",
					   name, key);
				return PLANT_E_CONFIG;
			}
			if (strcmp(key, "kind") != 0 && strcmp(key, "unit") != 0 &&
			    !json_is_number(v)) {
				api->error(self, "models", "models.%s.%s: needs a number", name,
					   key);
				return PLANT_E_CONFIG;
			}
		}
		get_num(o, "a", &md->sh.a);
		get_num(o, "b", &md->sh.b);
		get_num(o, "c", &md->sh.c);
		get_num(o, "min", &md->min);
		get_num(o, "max", &md->max);
		get_num(o, "low", &md->low);
		get_num(o, "high", &md->high);
		const json_t *unit = json_object_get(o, "unit");
		if (json_is_string(unit)) {
			free(md->unit);
			md->unit = strdup(json_string_value(unit));
		}
		if (!(md->min < md->max)) {
			api->error(self, "models", "models.%s: min (%g) must be below max (%g)",
				   name, md->min, md->max);
			return PLANT_E_CONFIG;
		}
		if (!(md->low < md->high)) {
			api->error(self, "models", "models.%s: low (%g) must be below high (%g)",
				   name, md->low, md->high);
			return PLANT_E_CONFIG;
		}
		double t;
		if (md->thermistor && (sh_kelvin(&md->sh, md->max, &t) != 0 ||
				       (md->min > 0 && sh_kelvin(&md->sh, md->min, &t) != 0))) {
			api->error(self, "models",
				   "models.%s: the constants give no temperature inside "
				   "min..max",
				   name);
			return PLANT_E_CONFIG;
		}
	}
	for (size_t i = 0; i < s->n_models; i++)
		if (!s->models[i].name || !s->models[i].unit) {
			api->error(self, NULL, "out of memory");
			return PLANT_E_NOMEM;
		}
	return PLANT_OK;
}

static const struct model *model_find(const struct sensor *s, const char *name)
{
	for (size_t i = 0; i < s->n_models; i++)
		if (strcmp(s->models[i].name, name) == 0)
			return &s->models[i];
	return NULL;
}

/* ---- reading a raw reading ---------------------------------------------- */

static bool topic_safe(const char *s)
{
	if (!*s || strlen(s) > 64)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' ||
		      *s == '-'))
			return false;
	return true;
}

static const char *str_field(struct item *it, const char *key, size_t maxlen)
{
	const json_t *v = json_object_get(it->body, key);
	if (!v) {
		snprintf(it->reason, sizeof it->reason, "missing \"%s\"", key);
		return NULL;
	}
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > maxlen ||
	    strlen(json_string_value(v)) != json_string_length(v)) {
		snprintf(it->reason, sizeof it->reason,
			 "\"%s\" must be a string of 1..%zu characters", key, maxlen);
		return NULL;
	}
	return json_string_value(v);
}

/* Does the raw reading already carry a field we would add? */
static bool has_added_fields(const struct item *it)
{
	static const char *const added[] = {"status", "processed_at", "temp_k",
					    "temp_c", "value",	      "unit"};
	for (size_t i = 0; i < sizeof added / sizeof added[0]; i++) {
		if (!it->model->thermistor && (i == 4 || i == 5))
			continue;
		if (json_object_get(it->body, added[i]))
			return true;
	}
	return false;
}

/* Fills `it` from its message's tree, or says why it cannot be
 * processed. */
static bool parse_tree(const struct sensor *s, struct item *it)
{
	it->body = s->api->msg_body(it->msg);
	if (!json_is_object(it->body)) {
		snprintf(it->reason, sizeof it->reason, "not a JSON object");
		return false;
	}
	if (!(it->id = str_field(it, "id", 256)) ||
	    !(it->sensor_id = str_field(it, "sensor_id", 256)) ||
	    !(it->location = str_field(it, "location", 256)) ||
	    !(it->type = str_field(it, "type", 64)))
		return false;
	if (!topic_safe(it->type)) {
		snprintf(it->reason, sizeof it->reason,
			 "\"type\" must be lower-case letters, digits, '_' or '-'");
		return false;
	}
	const json_t *mname = json_object_get(it->body, "model");
	it->model = json_is_string(mname) ? model_find(s, json_string_value(mname)) : NULL;
	if (!it->model)
		it->model = model_find(s, it->type);
	if (!it->model) {
		snprintf(it->reason, sizeof it->reason, "unknown sensor type \"%.64s\"", it->type);
		return false;
	}
	const char *field = it->model->thermistor ? "resistance" : "value";
	const json_t *v = json_object_get(it->body, field);
	if (!v) {
		snprintf(it->reason, sizeof it->reason, "missing \"%s\"", field);
		return false;
	}
	if (!json_is_number(v)) {
		snprintf(it->reason, sizeof it->reason, "\"%s\" must be a number", field);
		return false;
	}
	it->x = json_number_value(v);
	if (it->model->thermistor && it->x < 0) {
		snprintf(it->reason, sizeof it->reason, "negative resistance %g ohm", it->x);
		return false;
	}
	it->added = has_added_fields(it);
	return true;
}

enum {
	F_ID,
	F_SENSOR,
	F_LOCATION,
	F_TYPE,
	F_MODEL,
	F_RESISTANCE,
	F_VALUE,
	F_STATUS, /* the fields we add, from here on */
	F_PROCESSED_AT,
	F_TEMP_K,
	F_TEMP_C,
	F_UNIT,
	F_N
};

static const char *const field_keys[F_N] = {
	"id",	 "sensor_id", "location",     "type",	"model",  "resistance",
	"value", "status",    "processed_at", "temp_k", "temp_c", "unit",
};

/* A string field into `buf`, or why not. */
static bool field_str(struct item *it, const struct plant_field *f, const char *key, char *buf,
		      size_t cap)
{
	if (f->type == PLANT_FIELD_ABSENT) {
		snprintf(it->reason, sizeof it->reason, "missing \"%s\"", key);
		return false;
	}
	if (f->type != PLANT_FIELD_STRING || f->len == 0 || f->len >= cap) {
		snprintf(it->reason, sizeof it->reason,
			 "\"%s\" must be a string of 1..%zu characters", key, cap - 1);
		return false;
	}
	memcpy(buf, f->str, f->len);
	buf[f->len] = '\0';
	return true;
}

/* Fills `it` from its message's text, in one pass and without a tree (the
 * tree only for the rare reading whose strings have escapes), or says why
 * it cannot be processed. */
static bool parse(const struct sensor *s, struct item *it)
{
	struct plant_field f[F_N];
	if (s->api->msg_fields(it->msg, field_keys, F_N, f) != PLANT_OK) {
		snprintf(it->reason, sizeof it->reason, "not a JSON object");
		return false;
	}
	for (int i = F_ID; i <= F_MODEL; i++)
		if (f[i].type == PLANT_FIELD_STRING && f[i].escaped)
			return parse_tree(s, it);
	if (!field_str(it, &f[F_ID], "id", it->s_id, sizeof it->s_id) ||
	    !field_str(it, &f[F_SENSOR], "sensor_id", it->s_sensor, sizeof it->s_sensor) ||
	    !field_str(it, &f[F_LOCATION], "location", it->s_location, sizeof it->s_location) ||
	    !field_str(it, &f[F_TYPE], "type", it->s_type, sizeof it->s_type))
		return false;
	it->id = it->s_id;
	it->sensor_id = it->s_sensor;
	it->location = it->s_location;
	it->type = it->s_type;
	if (!topic_safe(it->type)) {
		snprintf(it->reason, sizeof it->reason,
			 "\"type\" must be lower-case letters, digits, '_' or '-'");
		return false;
	}
	it->model = NULL;
	if (f[F_MODEL].type == PLANT_FIELD_STRING && f[F_MODEL].len < 65) {
		char model[65];
		memcpy(model, f[F_MODEL].str, f[F_MODEL].len);
		model[f[F_MODEL].len] = '\0';
		it->model = model_find(s, model);
	}
	if (!it->model)
		it->model = model_find(s, it->type);
	if (!it->model) {
		snprintf(it->reason, sizeof it->reason, "unknown sensor type \"%.64s\"", it->type);
		return false;
	}
	const char *field = it->model->thermistor ? "resistance" : "value";
	const struct plant_field *v = &f[it->model->thermistor ? F_RESISTANCE : F_VALUE];
	if (v->type == PLANT_FIELD_ABSENT) {
		snprintf(it->reason, sizeof it->reason, "missing \"%s\"", field);
		return false;
	}
	if (v->type != PLANT_FIELD_NUMBER) {
		snprintf(it->reason, sizeof it->reason, "\"%s\" must be a number", field);
		return false;
	}
	it->x = v->num;
	if (it->model->thermistor && it->x < 0) {
		snprintf(it->reason, sizeof it->reason, "negative resistance %g ohm", it->x);
		return false;
	}
	it->added = false;
	for (int i = F_STATUS; i < F_N; i++)
		if (f[i].type != PLANT_FIELD_ABSENT && (it->model->thermistor || (i != F_UNIT)))
			it->added = true;
	if (it->model->thermistor && f[F_VALUE].type != PLANT_FIELD_ABSENT)
		it->added = true;
	return true;
}

/* ---- dead letters -------------------------------------------------------- */

static void reject(struct sensor *s, struct item *it)
{
	const struct plant_host_api *api = s->api;
	s->rejected++;
	api->counter_add(s->self, "rejected", 1);
	api->log(s->self, PLANT_LOG_WARN, "bad reading %s: %s", api->msg_id(it->msg), it->reason);
	int rc = api->reject(s->self, it->msg, it->reason);
	if (rc == PLANT_OK || rc == PLANT_E_NOTFOUND) /* done, or back already */
		return;
	if (rc != PLANT_E_UNSUPPORTED) {
		/* a full dead-letter queue, say: again in a minute */
		api->nack(s->self, it->msg, 60000, it->reason);
		return;
	}
	/* no dead-letter queue: keep it in errors/ rather than lose it */
	if (!s->errors) {
		char dir[4096], path[4200];
		snprintf(dir, sizeof dir, "%s/errors", api->data_dir(s->self));
		mkdir(dir, 0755);
		snprintf(path, sizeof path, "%s/%s.jsonl", dir, api->instance_name(s->self));
		s->errors = fopen(path, "a");
		if (!s->errors) {
			api->log(s->self, PLANT_LOG_ERROR,
				 "cannot keep a bad reading: %s: %s (it stays in queue %s)", path,
				 strerror(errno), s->queue);
			api->nack(s->self, it->msg, 60000, it->reason);
			return;
		}
		api->log(s->self, PLANT_LOG_WARN,
			 "queue %s has no dead_letter: bad readings are kept in %s", s->queue,
			 path);
	}
	size_t len = 0;
	const char *text = api->msg_body_text(it->msg, &len);
	json_t *reason = json_string(it->reason);
	char *r = reason ? json_dumps(reason, JSON_ENCODE_ANY) : NULL;
	fprintf(s->errors, "{\"id\":\"%s\",\"reason\":%s,\"body\":%.*s}\n", api->msg_id(it->msg),
		r ? r : "\"?\"", (int)len, text);
	free(r);
	json_decref(reason);
	if (fflush(s->errors) == 0)
		api->ack(s->self, it->msg);
	else
		api->nack(s->self, it->msg, 60000, it->reason);
}

/* ---- idempotency -------------------------------------------------------- */

/* A set of strings for one batch (open addressing over s->set, whose size
 * is a power of two at least twice the batch): false when `str` was in. */
static bool batch_set_add(struct sensor *s, const char *str)
{
	size_t mask = s->set_cap - 1, j = hash_str(str) & mask;
	while (s->set[j]) {
		if (strcmp(s->set[j], str) == 0)
			return false;
		j = (j + 1) & mask;
	}
	s->set[j] = str;
	return true;
}

static void batch_set_clear(struct sensor *s)
{
	memset(s->set, 0, s->set_cap * sizeof *s->set);
}

/* Claim every reading of the batch in one conditional write. A claim names
 * the bus message that made it: the same message back again (a crash, or a
 * failed publish, before its ack) is processed again; another message with
 * the same reading id is a duplicate. Returns non-OK when the store fails:
 * nothing was claimed then. */
static int claim(struct sensor *s, struct item *items, size_t n)
{
	const struct plant_host_api *api = s->api;
	if (!s->window_ms)
		return PLANT_OK;
	size_t *idx = malloc(n * sizeof *idx);
	/* the claims' values as text ({"m": MSG_ID}): no tree to build and dump */
	char(*txt)[48] = malloc(n * sizeof *txt);
	if (!idx || !txt) {
		free(idx);
		free(txt);
		return PLANT_E_NOMEM;
	}
	size_t m = 0;
	int rc = PLANT_OK;
	batch_set_clear(s);
	for (size_t i = 0; i < n; i++) {
		struct item *it = &items[i];
		if (it->fate != IT_GO)
			continue;
		/* the same id twice in one batch: the first one counts */
		if (!batch_set_add(s, it->id)) {
			it->fate = IT_DUP;
			continue;
		}
		free(s->keys[m]);
		if (asprintf(&s->keys[m], "reading/%s", it->id) < 0) {
			s->keys[m] = NULL;
			rc = PLANT_E_NOMEM;
			goto out;
		}
		int tlen = snprintf(txt[m], sizeof txt[m], "{\"m\":\"%s\"}", api->msg_id(it->msg));
		s->ops[m] = (struct plant_store_op){
			.key = s->keys[m],
			.key_len = strlen(s->keys[m]),
			.value_text = txt[m],
			.value_text_len = (size_t)tlen,
			.cond = PLANT_PUT_IF_ABSENT,
			.ttl_ms = s->window_ms,
		};
		idx[m++] = i;
	}
	while (m > 0) {
		size_t failed = SIZE_MAX;
		rc = api->store_batch(s->self, s->store, s->ops, m, &failed);
		if (rc != PLANT_E_CONDITION || failed >= m)
			break;
		/* someone holds this reading's claim: ours, or a duplicate's */
		struct item *it = &items[idx[failed]];
		json_t *held = NULL;
		int grc = api->store_get(s->self, s->store, s->ops[failed].key,
					 s->ops[failed].key_len, &held, NULL);
		if (grc != PLANT_OK && grc != PLANT_E_NOTFOUND) {
			rc = grc;
			break;
		}
		const char *owner = json_string_value(json_object_get(held, "m"));
		if (grc == PLANT_OK && !(owner && strcmp(owner, api->msg_id(it->msg)) == 0))
			it->fate = IT_DUP;
		json_decref(held);
		/* drop it from the batch and try the rest again */
		char *key = s->keys[failed];
		memmove(&s->ops[failed], &s->ops[failed + 1], (m - failed - 1) * sizeof *s->ops);
		memmove(&idx[failed], &idx[failed + 1], (m - failed - 1) * sizeof *idx);
		memmove(&s->keys[failed], &s->keys[failed + 1], (m - failed - 1) * sizeof *s->keys);
		s->keys[--m] = key;
		rc = PLANT_OK;
	}
out:
	free(txt);
	free(idx);
	return rc;
}

/* ---- the registry -------------------------------------------------------- */

static void reg_remember(struct sensor *s, const char *sensor_id, int state, uint64_t now)
{
	struct reg_entry *e = reg_find(&s->reg, sensor_id, true);
	if (e) {
		e->state = (uint8_t)state;
		e->checked_at = now;
	}
}

/* The registry's word on `it`'s sensor, into it->reg: REG_OK or REG_BROKEN,
 * from memory when fresh, else from the store; 0 when the store has no
 * entry yet (registry_add_new() registers it). */
static int registry_lookup(struct sensor *s, struct item *it, uint64_t now)
{
	const struct plant_host_api *api = s->api;
	struct reg_entry *e = reg_find(&s->reg, it->sensor_id, false);
	if (e && (e->state == REG_BROKEN || now - e->checked_at < s->cache_ms)) {
		it->reg = e->state;
		return PLANT_OK;
	}
	char key[300];
	int klen = snprintf(key, sizeof key, "sensor/%s", it->sensor_id);
	json_t *v = NULL;
	int rc = api->store_get(s->self, s->store, key, (size_t)klen, &v, NULL);
	if (rc == PLANT_E_NOTFOUND) {
		it->reg = 0;
		return PLANT_OK;
	}
	if (rc != PLANT_OK)
		return rc;
	it->reg = json_is_true(json_object_get(v, "broken")) ? REG_BROKEN : REG_OK;
	json_decref(v);
	reg_remember(s, it->sensor_id, it->reg, now);
	return PLANT_OK;
}

/* Register every sensor of the batch seen for the first time, in one
 * conditional write. A sensor someone registered meanwhile is read back. */
static int registry_add_new(struct sensor *s, struct item *items, size_t n, uint64_t now)
{
	const struct plant_host_api *api = s->api;
	size_t m = 0;
	int rc = PLANT_OK;
	json_t **vals = calloc(n, sizeof *vals);
	const char **ids = calloc(n, sizeof *ids);
	if (!vals || !ids) {
		free(vals);
		free(ids);
		return PLANT_E_NOMEM;
	}
	batch_set_clear(s);
	for (size_t i = 0; i < n; i++) {
		struct item *it = &items[i];
		if (it->fate != IT_GO || it->reg != 0)
			continue;
		if (!batch_set_add(s, it->sensor_id))
			continue;
		free(s->keys[m]);
		if (asprintf(&s->keys[m], "sensor/%s", it->sensor_id) < 0) {
			s->keys[m] = NULL;
			rc = PLANT_E_NOMEM;
			goto out;
		}
		vals[m] = json_pack("{s:s,s:s,s:s,s:b,s:I}", "sensor_id", it->sensor_id, "type",
				    it->type, "location", it->location, "broken", 0, "first_seen",
				    (json_int_t)now);
		s->ops[m] = (struct plant_store_op){
			.key = s->keys[m],
			.key_len = strlen(s->keys[m]),
			.value = vals[m],
			.cond = PLANT_PUT_IF_ABSENT,
		};
		ids[m++] = it->sensor_id;
	}
	while (m > 0) {
		size_t failed = SIZE_MAX;
		rc = api->store_batch(s->self, s->store, s->ops, m, &failed);
		if (rc == PLANT_OK) {
			api->counter_add(s->self, "registered", m);
			for (size_t j = 0; j < m; j++)
				reg_remember(s, ids[j], REG_OK, now);
			break;
		}
		if (rc != PLANT_E_CONDITION || failed >= m)
			break;
		/* registered meanwhile (another instance): its entry decides */
		json_t *v = NULL;
		rc = api->store_get(s->self, s->store, s->ops[failed].key, s->ops[failed].key_len,
				    &v, NULL);
		if (rc != PLANT_OK) {
			json_decref(v);
			break;
		}
		reg_remember(s, ids[failed],
			     json_is_true(json_object_get(v, "broken")) ? REG_BROKEN : REG_OK, now);
		json_decref(v);
		json_decref(vals[failed]);
		char *key = s->keys[failed];
		size_t rest = m - failed - 1;
		memmove(&s->ops[failed], &s->ops[failed + 1], rest * sizeof *s->ops);
		memmove(&vals[failed], &vals[failed + 1], rest * sizeof *vals);
		memmove(&ids[failed], &ids[failed + 1], rest * sizeof *ids);
		memmove(&s->keys[failed], &s->keys[failed + 1], rest * sizeof *s->keys);
		vals[m - 1] = NULL;
		s->keys[--m] = key;
	}
out:
	for (size_t j = 0; j < n; j++)
		json_decref(vals[j]);
	free(vals);
	free(ids);
	if (rc != PLANT_OK)
		return rc;
	/* what the registry says now, for every new sensor of the batch */
	for (size_t i = 0; i < n; i++) {
		struct item *it = &items[i];
		if (it->fate != IT_GO || it->reg != 0)
			continue;
		struct reg_entry *e = reg_find(&s->reg, it->sensor_id, false);
		it->reg = e ? e->state : REG_OK;
	}
	return PLANT_OK;
}

/* Out of range: broken from now on, whatever else anyone writes. */
static int registry_break(struct sensor *s, struct item *it, uint64_t now)
{
	const struct plant_host_api *api = s->api;
	char key[300];
	int klen = snprintf(key, sizeof key, "sensor/%s", it->sensor_id);
	json_t *entry = json_pack("{s:s,s:s,s:s,s:b,s:I,s:s}", "sensor_id", it->sensor_id, "type",
				  it->type, "location", it->location, "broken", 1, "broken_at",
				  (json_int_t)now, "reason", it->reason);
	int rc = api->store_put(s->self, s->store, key, (size_t)klen, entry, PLANT_PUT_ANY, 0, 0,
				NULL);
	if (rc != PLANT_OK)
		return rc;
	struct reg_entry *e = reg_find(&s->reg, it->sensor_id, true);
	if (e) {
		e->state = REG_BROKEN;
		e->checked_at = now;
	}
	s->broken_marked++;
	api->counter_add(s->self, "broken", 1);
	return PLANT_OK;
}

/* ---- processing ---------------------------------------------------------- */

static void status_of(struct item *it)
{
	const struct model *md = it->model;
	if (md->thermistor) {
		double c = it->kelvin - SH_ZERO_C;
		it->status = c > md->high ? "too_hot" : c < md->low ? "too_cold" : "ok";
	} else {
		it->status = it->x > md->high ? "high" : it->x < md->low ? "low" : "ok";
	}
}

/* Decide the item's status: the registry, the range, the temperature. */
static int evaluate(struct sensor *s, struct item *it, uint64_t now)
{
	const struct model *md = it->model;
	int rc;
	it->reason[0] = '\0';
	/* a reading earlier in the batch may have broken it */
	struct reg_entry *e = reg_find(&s->reg, it->sensor_id, false);
	if (it->reg == REG_BROKEN || (e && e->state == REG_BROKEN)) {
		it->status = "broken";
		snprintf(it->reason, sizeof it->reason, "marked broken earlier");
		return PLANT_OK;
	}
	bool out = !(it->x >= md->min && it->x <= md->max);
	if (!out && md->thermistor && sh_kelvin(&md->sh, it->x, &it->kelvin) != 0)
		out = true;
	if (out) {
		snprintf(it->reason, sizeof it->reason, "%s %g %s outside %g..%g",
			 md->thermistor ? "resistance" : "value", it->x, md->unit, md->min,
			 md->max);
		rc = registry_break(s, it, now);
		if (rc != PLANT_OK)
			return rc;
		it->status = "broken";
		return PLANT_OK;
	}
	status_of(it);
	return PLANT_OK;
}

static int buf_put(struct sensor *s, const char *text, size_t len)
{
	if (s->buf_cap - s->buf_len < len + 1) {
		size_t cap = (s->buf_cap + len + 1) * 2;
		char *b = realloc(s->buf, cap);
		if (!b)
			return -1;
		s->buf = b;
		s->buf_cap = cap;
	}
	memcpy(s->buf + s->buf_len, text, len);
	s->buf_len += len;
	return 0;
}

static int buf_printf(struct sensor *s, const char *fmt, ...) PLANT_PRINTF(2, 3);
static int buf_printf(struct sensor *s, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int k = vsnprintf(s->buf + s->buf_len, s->buf_cap - s->buf_len, fmt, ap);
		va_end(ap);
		if (k < 0)
			return -1;
		if ((size_t)k < s->buf_cap - s->buf_len) {
			s->buf_len += (size_t)k;
			return 0;
		}
		size_t cap = (s->buf_cap + (size_t)k + 1) * 2;
		char *b = realloc(s->buf, cap);
		if (!b)
			return -1;
		s->buf = b;
		s->buf_cap = cap;
	}
}

/* The processed reading's text, appended to s->buf; its offset in *off. The
 * raw text is kept verbatim, the new fields appended to it. */
static int processed_text(struct sensor *s, struct item *it, uint64_t now, size_t *off)
{
	*off = s->buf_len;
	size_t len = 0;
	const char *raw = s->api->msg_body_text(it->msg, &len);
	if (it->added) {
		/* the rare raw reading that has them: rebuild it as a tree */
		json_t *o = json_deep_copy(it->body ? it->body : s->api->msg_body(it->msg));
		json_object_set_new(o, "status", json_string(it->status));
		json_object_set_new(o, "processed_at", json_integer((json_int_t)now));
		if (it->model->thermistor && strcmp(it->status, "broken") != 0) {
			json_object_set_new(o, "temp_k", json_real(it->kelvin));
			json_object_set_new(o, "temp_c", json_real(it->kelvin - SH_ZERO_C));
			json_object_set_new(o, "value", json_real(it->kelvin - SH_ZERO_C));
			json_object_set_new(o, "unit", json_string("C"));
		}
		char *t = json_dumps(o, JSON_COMPACT);
		json_decref(o);
		int rc = t ? buf_printf(s, "%s", t) : -1;
		free(t);
		return rc;
	}
	while (len > 0 && raw[len - 1] != '}')
		len--;
	if (len < 1)
		return -1;
	len--; /* the closing brace */
	bool empty = len == 1;
	/* the raw text by memcpy (a printf of it costs more than all the rest) */
	if (buf_put(s, raw, len) || buf_printf(s, "%s\"status\":\"%s\",\"processed_at\":%" PRIu64,
					       empty ? "" : ",", it->status, now))
		return -1;
	if (it->model->thermistor && strcmp(it->status, "broken") != 0) {
		/* 13 significant digits: far below any thermistor's accuracy;
		 * the value is the same text as temp_c */
		char c[40];
		snprintf(c, sizeof c, "%.13g", it->kelvin - SH_ZERO_C);
		if (buf_printf(s, ",\"temp_k\":%.13g,\"temp_c\":%s,\"value\":%s,\"unit\":\"C\"",
			       it->kelvin, c, c))
			return -1;
	}
	return buf_printf(s, "}");
}

static int notification_text(struct sensor *s, struct item *it, uint64_t now, size_t *off)
{
	char msg[512];
	const struct model *md = it->model;
	bool critical = strcmp(it->status, "broken") == 0;
	if (critical)
		snprintf(msg, sizeof msg, "%s broken: %s", it->sensor_id, it->reason);
	else if (md->thermistor)
		snprintf(msg, sizeof msg, "%s %s: %.1f C", it->sensor_id,
			 strcmp(it->status, "too_hot") == 0 ? "too hot" : "too cold",
			 it->kelvin - SH_ZERO_C);
	else
		snprintf(msg, sizeof msg, "%s %s: %g %s", it->sensor_id, it->status, it->x,
			 md->unit);
	json_t *o = json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "ts", (json_int_t)now,
			      "severity", critical ? "critical" : "warning", "sensor_id",
			      it->sensor_id, "location", it->location, "type", it->type, "status",
			      it->status, "reading_id", it->id, "message", msg);
	char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	*off = s->buf_len;
	int rc = t ? buf_printf(s, "%s", t) : -1;
	free(t);
	return rc;
}

static void topic_for(const struct sensor *s, const char *type, char *out, size_t cap)
{
	const char *p = strstr(s->output_topic, "{type}");
	if (!p)
		snprintf(out, cap, "%s", s->output_topic);
	else
		snprintf(out, cap, "%.*s%s%s", (int)(p - s->output_topic), s->output_topic, type,
			 p + 6);
}

/* Publish items[0..n) (those with a text) in one go; settle each. */
static void publish_all(struct sensor *s, struct item *items, size_t n, const size_t *offs,
			const size_t *lens, char (*topics)[128], bool notify, size_t *nlens)
{
	const struct plant_host_api *api = s->api;
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (lens[i] == 0)
			continue;
		s->pubs[m] = (struct plant_publish){
			.struct_size = sizeof(struct plant_publish),
			.topic = notify ? s->notify_topic : topics[i],
			.text = s->buf + offs[i],
			.text_len = lens[i],
		};
		m++;
	}
	if (m == 0)
		return;
	size_t done = 0;
	int rc = api->publish_batch(s->self, s->pubs, m, &done);
	if (notify) {
		s->notified += done;
		api->counter_add(s->self, "notifications", done);
		if (rc != PLANT_OK)
			api->log(s->self, PLANT_LOG_WARN, "%zu notification(s) not published: %s",
				 m - done, plant_status_name(rc));
		return;
	}
	/* the published ones are done; the rest come back to be tried again
	 * (their claims are theirs: the same message is processed again) */
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (lens[i] == 0)
			continue;
		if (k++ < done) {
			api->ack(s->self, items[i].msg);
			s->processed++;
		} else {
			api->nack(s->self, items[i].msg, 1000, plant_status_name(rc));
			nlens[i] = 0; /* notified when it is processed again */
		}
	}
	api->counter_add(s->self, "processed", done);
	if (rc != PLANT_OK)
		api->log(s->self, PLANT_LOG_WARN, "%zu processed reading(s) not published: %s",
			 m - done, plant_status_name(rc));
}

static int on_readings(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	struct sensor *s = state;
	const struct plant_host_api *api = s->api;
	(void)user;
	if (n > s->batch)
		n = s->batch;
	uint64_t now = api->now_ms(s->self);
	struct item *items = s->items;
	for (size_t i = 0; i < n; i++) {
		items[i] = (struct item){.msg = msgs[i], .fate = IT_GO};
		if (!parse(s, &items[i])) {
			items[i].fate = IT_BAD;
			reject(s, &items[i]);
		}
	}
	int rc = claim(s, items, n);
	if (rc != PLANT_OK) {
		if (!s->store_failing)
			api->log(s->self, PLANT_LOG_ERROR,
				 "store: cannot claim readings: %s (they come back later)",
				 plant_status_name(rc));
		s->store_failing = true;
		s->store_errors++;
		for (size_t i = 0; i < n; i++)
			if (items[i].fate == IT_GO || items[i].fate == IT_DUP)
				api->nack(s->self, items[i].msg, 1000, "store unavailable");
		return PLANT_OK;
	}
	size_t *offs = calloc(n, sizeof *offs), *lens = calloc(n, sizeof *lens);
	size_t *noffs = calloc(n, sizeof *noffs), *nlens = calloc(n, sizeof *nlens);
	char(*topics)[128] = calloc(n, sizeof *topics);
	if (!offs || !lens || !noffs || !nlens || !topics) {
		free(offs);
		free(lens);
		free(noffs);
		free(nlens);
		free(topics);
		return PLANT_E_NOMEM; /* unsettled: back after the timeout */
	}
	s->buf_len = 0;
	/* the registry: what it says of each sensor, registering new ones */
	bool failing = false;
	for (size_t i = 0; i < n && rc == PLANT_OK; i++)
		if (items[i].fate == IT_GO)
			rc = registry_lookup(s, &items[i], now);
	if (rc == PLANT_OK)
		rc = registry_add_new(s, items, n, now);
	if (rc != PLANT_OK) {
		if (!s->store_failing)
			api->log(s->self, PLANT_LOG_ERROR,
				 "store: registry unavailable: %s (readings come back later)",
				 plant_status_name(rc));
		failing = true;
	}
	for (size_t i = 0; i < n; i++) {
		struct item *it = &items[i];
		if (it->fate == IT_DUP) {
			s->duplicates++;
			api->counter_add(s->self, "duplicates", 1);
			api->ack(s->self, it->msg);
			continue;
		}
		if (it->fate != IT_GO)
			continue;
		rc = failing ? PLANT_E_IO : evaluate(s, it, now);
		if (rc != PLANT_OK) {
			if (!failing && !s->store_failing)
				api->log(s->self, PLANT_LOG_ERROR,
					 "store: registry unavailable: %s (readings come back "
					 "later)",
					 plant_status_name(rc));
			failing = true;
			api->nack(s->self, it->msg, 1000, "registry unavailable");
			continue;
		}
		size_t off;
		if (processed_text(s, it, now, &off) != 0) {
			snprintf(it->reason, sizeof it->reason,
				 "cannot build the processed reading");
			reject(s, it);
			continue;
		}
		offs[i] = off;
		lens[i] = s->buf_len - off;
		topic_for(s, it->type, topics[i], sizeof topics[i]);
		if (strcmp(it->status, "ok") != 0 && notification_text(s, it, now, &off) == 0) {
			noffs[i] = off;
			nlens[i] = s->buf_len - off;
		}
	}
	if (failing) {
		s->store_failing = true;
		s->store_errors++;
	} else if (s->store_failing) {
		s->store_failing = false;
		api->log(s->self, PLANT_LOG_INFO, "store: working again");
	}
	publish_all(s, items, n, offs, lens, topics, false, nlens);
	publish_all(s, items, n, noffs, nlens, NULL, true, NULL);
	free(offs);
	free(lens);
	free(noffs);
	free(nlens);
	free(topics);
	return PLANT_OK;
}

/* ---- lifecycle ----------------------------------------------------------- */

static int check(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		 struct sensor *s)
{
	json_int_t batch = json_integer_value(json_object_get(config, "batch"));
	if (batch < 1 || batch > 4096) {
		api->error(self, "batch", "must be 1..4096, not %" JSON_INTEGER_FORMAT, batch);
		return PLANT_E_CONFIG;
	}
	const char *topic = json_string_value(json_object_get(config, "output_topic"));
	if (!topic || !*topic) {
		api->error(self, "output_topic", "must not be empty");
		return PLANT_E_CONFIG;
	}
	const char *nt = json_string_value(json_object_get(config, "notify_topic"));
	if (!nt || !*nt) {
		api->error(self, "notify_topic", "must not be empty");
		return PLANT_E_CONFIG;
	}
	return models_load(s, self, api, config);
}

static int sensor_validate(plant_instance *self, const struct plant_host_api *api,
			   const json_t *config)
{
	struct sensor s = {0};
	int rc = check(self, api, config, &s);
	models_free(&s);
	return rc;
}

static void sensor_destroy(void *state)
{
	struct sensor *s = state;
	if (!s)
		return;
	models_free(s);
	reg_free(&s->reg);
	for (uint32_t i = 0; s->keys && i < s->batch; i++)
		free(s->keys[i]);
	free(s->keys);
	free(s->items);
	free(s->ops);
	free(s->pubs);
	free(s->set);
	free(s->buf);
	if (s->errors)
		fclose(s->errors);
	free(s);
}

static int sensor_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		       void **state_out)
{
	if (!PLANT_API_HAS(api, msg_fields) || !PLANT_API_HAS(api, reject)) {
		api->error(self, NULL, "this host is too old (SDK 1.4 needed)");
		return PLANT_E_ABI;
	}
	struct sensor *s = calloc(1, sizeof *s);
	if (!s) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	s->self = self;
	s->api = api;
	int rc = check(self, api, config, s);
	if (rc != PLANT_OK) {
		sensor_destroy(s);
		return rc;
	}
	s->queue = json_string_value(json_object_get(config, "queue"));
	s->output_topic = json_string_value(json_object_get(config, "output_topic"));
	s->notify_topic = json_string_value(json_object_get(config, "notify_topic"));
	s->window_ms = (uint64_t)json_integer_value(json_object_get(config, "idempotency_window"));
	s->cache_ms = (uint64_t)json_integer_value(json_object_get(config, "registry_cache"));
	s->batch = (uint32_t)json_integer_value(json_object_get(config, "batch"));
	s->items = calloc(s->batch, sizeof *s->items);
	s->ops = calloc(s->batch, sizeof *s->ops);
	s->keys = calloc(s->batch, sizeof *s->keys);
	s->pubs = calloc(s->batch, sizeof *s->pubs);
	s->set_cap = 1;
	while (s->set_cap < 2 * (size_t)s->batch)
		s->set_cap *= 2;
	s->set = calloc(s->set_cap, sizeof *s->set);
	if (!s->items || !s->ops || !s->keys || !s->pubs || !s->set) {
		api->error(self, NULL, "out of memory");
		sensor_destroy(s);
		return PLANT_E_NOMEM;
	}
	const char *store = json_string_value(json_object_get(config, "store"));
	rc = api->store_open(self, store, &s->store);
	if (rc != PLANT_OK) {
		api->error(self, "store", "no store \"%s\" in this site: %s", store,
			   plant_status_name(rc));
		sensor_destroy(s);
		return PLANT_E_CONFIG;
	}
	*state_out = s;
	return PLANT_OK;
}

static int sensor_start(void *state)
{
	struct sensor *s = state;
	int rc = s->api->consume(s->self, s->queue, on_readings, NULL, s->batch, NULL);
	if (rc != PLANT_OK) {
		s->api->error(s->self, "queue", "cannot consume \"%s\": %s", s->queue,
			      plant_status_name(rc));
		return rc;
	}
	return PLANT_OK;
}

static void sensor_stop(void *state)
{
	struct sensor *s = state;
	s->api->log(s->self, PLANT_LOG_INFO,
		    "sensor stopped: processed=%" PRIu64 " duplicates=%" PRIu64 " rejected=%" PRIu64
		    " broken=%" PRIu64 " notifications=%" PRIu64,
		    s->processed, s->duplicates, s->rejected, s->broken_marked, s->notified);
}

static int sensor_health(void *state, json_t **detail_out)
{
	struct sensor *s = state;
	*detail_out = json_pack("{s:I,s:I,s:I,s:I,s:b}", "processed", (json_int_t)s->processed,
				"duplicates", (json_int_t)s->duplicates, "rejected",
				(json_int_t)s->rejected, "store_errors",
				(json_int_t)s->store_errors, "store_failing", s->store_failing);
	return s->store_failing ? PLANT_E_IO : PLANT_OK;
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "sensor",
	.version = "1.0.0",
	.description = "validates raw readings, keeps the sensor registry, computes "
		       "temperatures and statuses",
	.config_keys = config_keys,
	.validate = sensor_validate,
	.init = sensor_init,
	.start = sensor_start,
	.stop = sensor_stop,
	.destroy = sensor_destroy,
	.health = sensor_health,
};
