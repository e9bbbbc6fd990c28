/* analytics: moving averages of readings, per group (location), on a timer.
 *
 * Readings arrive through a queue and are held (api->hold), not acked, until
 * the report that counted them is stored: every `interval` one run writes,
 * in ONE store batch, the state (run number, cumulative total, one bucket
 * per group and per run over the window, the ids counted in this run) and
 * the report; then it publishes the report and acks what it held. A crash
 * before the write leaves the readings unacked (they come back and are
 * counted once, after the restart); a crash after it may lose the acks, but
 * the state names the ids it counted, so those that come back are acked
 * without being counted again. See README.md for the keys and formats.
 */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plantd/plantd.h>

static const struct plant_config_key config_keys[] = {
	{
		.name = "queue",
		.type = PLANT_CFG_STRING,
		.required = 1,
		.description = "queue of readings to consume; its visibility_timeout must be "
			       "longer than interval",
	},
	{
		.name = "store",
		.type = PLANT_CFG_STRING,
		.required = 1,
		.description = "site store for the state and the reports",
	},
	{
		.name = "interval",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"10s\"",
		.description = "how often a report runs",
	},
	{
		.name = "window",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"5m\"",
		.description = "the moving average covers this much time (at least interval)",
	},
	{
		.name = "group_by",
		.type = PLANT_CFG_STRING,
		.default_value = "\"location\"",
		.description = "string field of a reading that names its group",
	},
	{
		.name = "field",
		.type = PLANT_CFG_STRING,
		.default_value = "\"value\"",
		.description = "numeric field to average",
	},
	{
		.name = "exclude_status",
		.type = PLANT_CFG_ARRAY,
		.default_value = "[\"broken\"]",
		.description = "readings whose \"status\" is one of these are counted, not used",
	},
	{
		.name = "per_sensor",
		.type = PLANT_CFG_BOOL,
		.default_value = "false",
		.description = "also report an average per sensor",
	},
	{
		.name = "sensor_key",
		.type = PLANT_CFG_STRING,
		.default_value = "\"sensor_id\"",
		.description = "string field naming the sensor, for per_sensor",
	},
	{
		.name = "report_topic",
		.type = PLANT_CFG_STRING,
		.default_value = "\"analytics.report\"",
		.description = "topic the reports are published on",
	},
	{
		.name = "report_ttl",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"7d\"",
		.description = "stored reports expire after this long (0: never)",
	},
	{
		.name = "dedup_key",
		.type = PLANT_CFG_STRING,
		.default_value = "\"id\"",
		.description = "the body field that identifies a reading: one published "
			       "twice is counted once; \"\" or absent: the bus message id",
	},
	{.name = NULL, .type = PLANT_CFG_END},
};

/* A carried id (counted by an earlier process, maybe never acked) is kept
 * this long after the restart that read it, at least: the queue hands back
 * what was in flight at once, but one message per batch. */
#define CARRY_MIN_MS	60000u
#define CARRY_INTERVALS 10u
#define MIN_INTERVAL_MS 10u
#define TOPIC_MAX	200u

/* What one run has seen of one group or sensor, not yet stored. */
struct acc {
	char *key;
	uint64_t readings; /* counted (groups only) */
	uint64_t used;	   /* in the average */
	double sum, min, max;
};

/* Accumulators by key: `index` maps a key to its position in `v`. */
struct acc_set {
	json_t *index;
	struct acc *v;
	size_t n, cap;
};

struct analytics {
	plant_instance *self;
	const struct plant_host_api *api;

	/* settings, [borrowed] from the config (valid until destroy) */
	const char *queue, *group_by, *field, *sensor_key, *report_topic;
	const char *dedup_key;
	const char *keys[5]; /* for msg_fields: group_by, field, "status", sensor_key, dedup_key */
	const json_t *exclude;
	uint64_t interval_ms, window_ms, ttl_ms, carry_ms;
	bool per_sensor;

	uint32_t store;
	char *state_key;
	char *report_prefix;

	/* the stored state: {"run", "total", "ts", "groups", "sensors",
	 * "last_ids", "carried"}; run and total mirrored below */
	json_t *state;
	uint64_t run, total;
	uint64_t last_run_at; /* ms: the last stored run, or the start */
	json_t *seen;	      /* id -> true: counted by the last stored run */
	json_t *carried;      /* id -> until (ms): counted before a restart */

	/* this run, until stored */
	const plant_msg **held;
	size_t n_held, cap_held;
	json_t *held_ids; /* id -> position in held */
	json_t *dup_ids;  /* id -> true: already counted, acked this run */
	struct acc_set groups, sensors;
	uint64_t readings, used, invalid, again, duplicates;
	bool invalid_logged;

	bool store_failing;
	uint64_t failed_runs; /* consecutive failed store writes */
};

/* ---- accumulators -------------------------------------------------------------- */

static struct acc *acc_get(struct acc_set *s, const char *key)
{
	json_t *pos = json_object_get(s->index, key);
	struct acc *a;

	if (pos)
		return &s->v[json_integer_value(pos)];
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		struct acc *v = realloc(s->v, cap * sizeof(*v));

		if (!v)
			return NULL;
		s->v = v;
		s->cap = cap;
	}
	a = &s->v[s->n];
	memset(a, 0, sizeof(*a));
	a->key = strdup(key);
	if (!a->key || json_object_set_new(s->index, key, json_integer((json_int_t)s->n)) != 0) {
		free(a->key);
		return NULL;
	}
	s->n++;
	return a;
}

static void acc_add(struct acc *a, double v)
{
	if (a->used == 0 || v < a->min)
		a->min = v;
	if (a->used == 0 || v > a->max)
		a->max = v;
	a->sum += v;
	a->used++;
}

static void acc_clear(struct acc_set *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i].key);
	s->n = 0;
	json_object_clear(s->index);
}

static void acc_free(struct acc_set *s)
{
	acc_clear(s);
	free(s->v);
	json_decref(s->index);
}

/* ---- configuration ---------------------------------------------------------- */

static bool topic_ok(const char *t)
{
	size_t n = strlen(t);

	if (n == 0 || n > TOPIC_MAX || t[0] == '.' || t[n - 1] == '.')
		return false;
	for (const char *p = t; *p; p++) {
		bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.';

		if (!ok || (p[0] == '.' && p[1] == '.'))
			return false;
	}
	return true;
}

static uint64_t cfg_ms(const json_t *config, const char *key)
{
	json_int_t v = json_integer_value(json_object_get(config, key));

	return v > 0 ? (uint64_t)v : 0;
}

/* Shared by validate() and init(): init() may run without validate(). The
 * key table has checked types already. */
static int check_config(plant_instance *self, const struct plant_host_api *api,
			const json_t *config)
{
	static const char *const names[] = {"queue", "store",	   "group_by",
					    "field", "sensor_key", "report_topic"};
	const json_t *ex = json_object_get(config, "exclude_status");
	uint64_t interval = cfg_ms(config, "interval"), window = cfg_ms(config, "window");
	size_t i;
	const json_t *v;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *s = json_string_value(json_object_get(config, names[i]));

		if (!s || !*s) {
			api->error(self, names[i], "must be a non-empty string");
			return PLANT_E_CONFIG;
		}
	}
	if (!topic_ok(json_string_value(json_object_get(config, "report_topic")))) {
		api->error(self, "report_topic",
			   "not a topic name: [A-Za-z0-9_.-], dot-separated, up to %u characters",
			   TOPIC_MAX);
		return PLANT_E_CONFIG;
	}
	if (json_integer_value(json_object_get(config, "interval")) < MIN_INTERVAL_MS) {
		api->error(self, "interval", "must be %ums or more", MIN_INTERVAL_MS);
		return PLANT_E_CONFIG;
	}
	if (window < interval) {
		api->error(self, "window",
			   "must be at least interval (%" PRIu64
			   " ms): it holds one bucket per run",
			   interval);
		return PLANT_E_CONFIG;
	}
	if (json_integer_value(json_object_get(config, "report_ttl")) < 0) {
		api->error(self, "report_ttl", "must not be negative");
		return PLANT_E_CONFIG;
	}
	json_array_foreach(ex, i, v)
	{
		if (!json_is_string(v)) {
			api->error(self, "exclude_status", "entry %zu is not a string", i + 1);
			return PLANT_E_CONFIG;
		}
	}
	return PLANT_OK;
}

static int an_validate(plant_instance *self, const struct plant_host_api *api, const json_t *config)
{
	return check_config(self, api, config);
}

/* ---- the stored state ------------------------------------------------------------ */

static bool is_uint(const json_t *v)
{
	return json_is_integer(v) && json_integer_value(v) >= 0;
}

/* A bucket as a run writes it: {"t", "sum", "count"[, "min", "max"]}, with
 * min and max for groups with a count (a group whose readings were all
 * excluded has a bucket of count 0: it stays in the report). */
static bool bucket_ok(const json_t *b, bool minmax)
{
	const json_t *count = json_object_get(b, "count");

	return json_is_object(b) && is_uint(json_object_get(b, "t")) &&
	       json_is_number(json_object_get(b, "sum")) && is_uint(count) &&
	       (minmax ? json_integer_value(count) == 0 ||
				 (json_is_number(json_object_get(b, "min")) &&
				  json_is_number(json_object_get(b, "max")))
		       : json_integer_value(count) > 0);
}

/* {name: [bucket...]} with the malformed buckets (and empty names) left
 * out; *dropped counts them. [new] */
static json_t *clean_series(const json_t *in, bool minmax, size_t *dropped)
{
	json_t *out = json_object();
	const char *key;
	const json_t *arr;

	if (!out)
		return NULL;
	json_object_foreach((json_t *)in, key, arr)
	{
		json_t *keep = json_array();
		size_t i;
		const json_t *b;

		if (!keep)
			break;
		json_array_foreach(arr, i, b)
		{
			if (bucket_ok(b, minmax))
				json_array_append(keep, (json_t *)b);
			else
				(*dropped)++;
		}
		if (!json_is_array(arr))
			(*dropped)++;
		if (json_array_size(keep) > 0)
			json_object_set_new(out, key, keep);
		else
			json_decref(keep);
	}
	return out;
}

static int load_state(struct analytics *a)
{
	const struct plant_host_api *api = a->api;
	json_t *st = NULL, *groups, *sensors;
	uint64_t now = api->now_ms(a->self);
	size_t dropped = 0, i;
	const json_t *v;
	const char *key;
	int rc;

	rc = api->store_get(a->self, a->store, a->state_key, strlen(a->state_key), &st, NULL);
	if (rc == PLANT_E_NOTFOUND) {
		a->state = json_pack("{s:I, s:I, s:{}, s:{}, s:[], s:{}}", "run", (json_int_t)0,
				     "total", (json_int_t)0, "groups", "sensors", "last_ids",
				     "carried");
		if (!a->state) {
			api->error(a->self, NULL, "out of memory");
			return PLANT_E_NOMEM;
		}
		api->log(a->self, PLANT_LOG_INFO, "no state under %s: starting at run 1",
			 a->state_key);
		return PLANT_OK;
	}
	if (rc != PLANT_OK) {
		api->error(a->self, "store", "cannot read %s: %s", a->state_key,
			   plant_status_name(rc));
		return rc;
	}
	if (!json_is_object(st) || !is_uint(json_object_get(st, "run")) ||
	    !is_uint(json_object_get(st, "total"))) {
		json_decref(st);
		api->error(a->self, "store",
			   "%s is not an analytics state (no \"run\" or \"total\"); delete it to "
			   "start over",
			   a->state_key);
		return PLANT_E_INVALID;
	}
	a->run = (uint64_t)json_integer_value(json_object_get(st, "run"));
	a->total = (uint64_t)json_integer_value(json_object_get(st, "total"));

	groups = clean_series(json_object_get(st, "groups"), true, &dropped);
	/* per_sensor switched off: what it kept goes */
	sensors = a->per_sensor ? clean_series(json_object_get(st, "sensors"), false, &dropped)
				: json_object();
	a->state = json_pack("{s:I, s:I, s:o*, s:o*, s:[], s:{}}", "run", (json_int_t)a->run,
			     "total", (json_int_t)a->total, "groups", groups, "sensors", sensors,
			     "last_ids", "carried");
	if (!a->state || !groups || !sensors) {
		json_decref(st);
		api->error(a->self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	if (dropped)
		api->log(a->self, PLANT_LOG_WARN, "%s: %zu malformed buckets left out",
			 a->state_key, dropped);

	/* What the last run counted may not have been acked: carry those ids
	 * (and those an earlier restart carried, until their time is up). */
	json_array_foreach(json_object_get(st, "last_ids"), i, v)
	{
		if (json_is_string(v))
			json_object_set_new(a->carried, json_string_value(v),
					    json_integer((json_int_t)(now + a->carry_ms)));
	}
	json_object_foreach(json_object_get(st, "carried"), key, v)
	{
		if (is_uint(v) && (uint64_t)json_integer_value(v) > now &&
		    !json_object_get(a->carried, key))
			json_object_set(a->carried, key, (json_t *)v);
	}
	json_decref(st);
	api->log(a->self, PLANT_LOG_INFO,
		 "state read back: run %" PRIu64 ", total %" PRIu64 ", %zu groups, %zu ids counted "
		 "before the restart",
		 a->run, a->total, json_object_size(groups), json_object_size(a->carried));
	return PLANT_OK;
}

/* ---- one message ------------------------------------------------------------------ */

static bool excluded(const struct analytics *a, const json_t *body)
{
	const char *status = json_string_value(json_object_get(body, "status"));
	size_t i;
	const json_t *v;

	if (!status)
		return false;
	json_array_foreach(a->exclude, i, v)
	{
		if (strcmp(json_string_value(v), status) == 0)
			return true;
	}
	return false;
}

static void note_invalid(struct analytics *a, const plant_msg *msg, const char *why)
{
	a->invalid++;
	a->api->counter_add(a->self, "invalid", 1);
	if (!a->invalid_logged)
		a->api->log(a->self, PLANT_LOG_DEBUG, "message %s: %s (acked, not counted)",
			    a->api->msg_id(msg), why);
	a->invalid_logged = true;
	a->api->ack(a->self, msg);
}

static bool hold_push(struct analytics *a, const plant_msg *h, const char *id)
{
	if (a->n_held == a->cap_held) {
		size_t cap = a->cap_held ? a->cap_held * 2 : 64;
		const plant_msg **v = realloc(a->held, cap * sizeof(*v));

		if (!v)
			return false;
		a->held = v;
		a->cap_held = cap;
	}
	if (json_object_set_new(a->held_ids, id, json_integer((json_int_t)a->n_held)) != 0)
		return false;
	a->held[a->n_held++] = h;
	return true;
}

/* Counts one reading, held already, into this run's accumulators; `g` is
 * its group's. */
static void count_reading(struct analytics *a, const json_t *body, struct acc *g)
{
	const json_t *val = json_object_get(body, a->field);
	double x;

	g->readings++;
	a->readings++;
	if (!json_is_number(val) || excluded(a, body))
		return;
	x = json_number_value(val);
	if (!isfinite(g->sum + x)) /* a value that would break the sums */
		return;
	acc_add(g, x);
	a->used++;
	if (a->per_sensor) {
		const char *sensor = json_string_value(json_object_get(body, a->sensor_key));
		struct acc *s = sensor && *sensor ? acc_get(&a->sensors, sensor) : NULL;

		/* out of memory: the group has it, the sensor not */
		if (s && isfinite(s->sum + x))
			acc_add(s, x);
	}
}

/* A string field as a NUL-terminated copy in `buf`; NULL when it is not a
 * string without escapes that fits. */
static const char *field_cstr(const struct plant_field *f, char *buf, size_t cap)
{
	if (f->type != PLANT_FIELD_STRING || f->escaped || f->len >= cap)
		return NULL;
	memcpy(buf, f->str, f->len);
	buf[f->len] = '\0';
	return buf;
}

/* count_reading() from fields read without a tree. */
static void count_fields(struct analytics *a, const struct plant_field *f, struct acc *g)
{
	double x = f[1].num;
	g->readings++;
	a->readings++;
	if (f[1].type != PLANT_FIELD_NUMBER)
		return;
	if (f[2].type == PLANT_FIELD_STRING) {
		size_t i;
		const json_t *v;
		json_array_foreach(a->exclude, i, v)
		{
			const char *ex = json_string_value(v);
			if (strlen(ex) == f[2].len && memcmp(ex, f[2].str, f[2].len) == 0)
				return;
		}
	}
	if (!isfinite(g->sum + x))
		return;
	acc_add(g, x);
	a->used++;
	if (a->per_sensor) {
		char buf[512];
		const char *sensor = field_cstr(&f[3], buf, sizeof buf);
		struct acc *s = sensor && *sensor ? acc_get(&a->sensors, sensor) : NULL;
		if (s && isfinite(s->sum + x))
			acc_add(s, x);
	}
}

/* Counted before a restart, and still remembered? */
static bool carried(const struct analytics *a, const char *id)
{
	const json_t *until = json_object_get(a->carried, id);

	return until && (uint64_t)json_integer_value(until) > a->api->now_ms(a->self);
}

/* [instance] */
static int an_on_messages(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	struct analytics *a = state;
	const struct plant_host_api *api = a->api;
	int rc = PLANT_OK;

	(void)user;
	for (size_t i = 0; i < n; i++) {
		const plant_msg *m = msgs[i];
		const json_t *body, *pos;
		const char *group;
		const plant_msg *h;
		struct acc *g;
		/* the fields from the text, in one pass; the tree only for
		 * strings with escapes */
		struct plant_field f[5];
		char gbuf[512], idbuf[256];

		if (api->msg_receive_count(m) > 1)
			a->again++;
		if (api->msg_fields(m, a->keys, 5, f) != PLANT_OK) {
			note_invalid(a, m, "not a JSON object");
			continue;
		}
		/* what tells readings apart: the reading's own id, so that a
		 * reading published twice (a producer that crashed before its
		 * ack) counts once; else the bus message id */
		const char *id = *a->dedup_key ? field_cstr(&f[4], idbuf, sizeof idbuf) : NULL;
		if (!id || !*id)
			id = api->msg_id(m);
		/* counted by a stored run whose ack did not reach the queue */
		if (json_object_get(a->seen, id) || carried(a, id)) {
			json_object_del(a->carried, id);
			json_object_set_new(a->dup_ids, id, json_true());
			a->duplicates++;
			api->counter_add(a->self, "duplicates", 1);
			api->ack(a->self, m);
			continue;
		}
		pos = json_object_get(a->held_ids, id);
		if (pos) {
			const plant_msg **slot = &a->held[json_integer_value(pos)];
			if (strcmp(api->msg_id(*slot), api->msg_id(m)) != 0) {
				/* another message with the same reading: counted
				 * once, with the one held */
				a->duplicates++;
				api->counter_add(a->self, "duplicates", 1);
				api->ack(a->self, m);
				continue;
			}
			/* the one held timed out and came back: hold it anew */
			h = api->hold(a->self, m);
			if (h) {
				api->release(a->self, *slot);
				*slot = h;
			} else {
				rc = PLANT_E_NOMEM; /* not acked: it comes back */
			}
			continue;
		}
		body = NULL;
		if ((f[0].type == PLANT_FIELD_STRING && f[0].escaped) ||
		    (f[2].type == PLANT_FIELD_STRING && f[2].escaped) ||
		    (a->per_sensor && f[3].type == PLANT_FIELD_STRING && f[3].escaped) ||
		    (f[0].type == PLANT_FIELD_STRING && f[0].len >= sizeof gbuf)) {
			body = api->msg_body(m);
			group = json_string_value(json_object_get(body, a->group_by));
		} else {
			group = field_cstr(&f[0], gbuf, sizeof gbuf);
		}
		if (!group || !*group) {
			note_invalid(a, m, "no group field (a non-empty string)");
			continue;
		}
		/* Left unsettled on failure: with the non-OK return it times
		 * out and comes back, uncounted. */
		g = acc_get(&a->groups, group);
		h = g ? api->hold(a->self, m) : NULL;
		if (!h) {
			rc = PLANT_E_NOMEM;
			continue;
		}
		if (!hold_push(a, h, id)) {
			api->release(a->self, h); /* comes back once it times out */
			rc = PLANT_E_NOMEM;
			continue;
		}
		if (body)
			count_reading(a, body, g);
		else
			count_fields(a, f, g);
	}
	api->gauge_set(a->self, "pending", (double)a->n_held);
	return rc;
}

/* ---- one run ----------------------------------------------------------------------- */

/* The series of one key after this run: the stored buckets still inside the
 * window (shared, never modified) plus this run's. [new] */
static json_t *next_series(const json_t *old, json_t *bucket, uint64_t cutoff)
{
	json_t *out = json_array();
	size_t i;
	const json_t *b;

	if (!out) {
		json_decref(bucket);
		return NULL;
	}
	json_array_foreach(old, i, b)
	{
		if ((uint64_t)json_integer_value(json_object_get(b, "t")) > cutoff)
			json_array_append(out, (json_t *)b);
	}
	if (bucket)
		json_array_append_new(out, bucket);
	return out;
}

/* {key: [bucket...]} for the next state: old series pruned to the window,
 * this run's buckets appended, empty series dropped. [new] */
static json_t *next_map(const json_t *old, const struct acc_set *accs, bool minmax, uint64_t now,
			uint64_t cutoff)
{
	json_t *out = json_object();
	const char *key;
	const json_t *series;

	if (!out)
		return NULL;
	json_object_foreach((json_t *)old, key, series)
	{
		if (!json_object_get(accs->index, key)) {
			json_t *s = next_series(series, NULL, cutoff);

			if (json_array_size(s) > 0)
				json_object_set_new(out, key, s);
			else
				json_decref(s);
		}
	}
	for (size_t i = 0; i < accs->n; i++) {
		const struct acc *c = &accs->v[i];
		json_t *bucket = NULL, *s;

		if (c->used > 0 || (minmax && c->readings > 0)) {
			bucket = json_pack("{s:I, s:f, s:I}", "t", (json_int_t)now, "sum", c->sum,
					   "count", (json_int_t)c->used);
			if (!bucket)
				goto oom;
			if (minmax && c->used > 0) {
				json_object_set_new(bucket, "min", json_real(c->min));
				json_object_set_new(bucket, "max", json_real(c->max));
			}
		}
		s = next_series(json_object_get(old, c->key), bucket, cutoff);
		if (!s)
			goto oom;
		if (json_array_size(s) > 0)
			json_object_set_new(out, c->key, s);
		else
			json_decref(s);
	}
	return out;
oom:
	json_decref(out);
	return NULL;
}

/* One entry of the report from a series: avg, min, max, count over the
 * window (avg/min/max only when there is a count). [new] */
static json_t *series_stats(const json_t *series, bool minmax)
{
	double sum = 0, mn = 0, mx = 0;
	json_int_t count = 0;
	size_t i;
	const json_t *b;
	json_t *out;

	json_array_foreach(series, i, b)
	{
		double bmin = json_number_value(json_object_get(b, "min"));
		double bmax = json_number_value(json_object_get(b, "max"));
		json_int_t n = json_integer_value(json_object_get(b, "count"));

		if (n == 0)
			continue;
		if (minmax && (count == 0 || bmin < mn))
			mn = bmin;
		if (minmax && (count == 0 || bmax > mx))
			mx = bmax;
		sum += json_number_value(json_object_get(b, "sum"));
		count += n;
	}
	out = json_pack("{s:I}", "count", count);
	if (out && count > 0) {
		json_object_set_new(out, "avg", json_real(sum / (double)count));
		if (minmax) {
			json_object_set_new(out, "min", json_real(mn));
			json_object_set_new(out, "max", json_real(mx));
		}
	}
	return out;
}

static json_t *build_report(struct analytics *a, const json_t *next, uint64_t now, uint64_t elapsed)
{
	json_t *locs = json_object(), *sensors = a->per_sensor ? json_object() : NULL;
	const char *key;
	const json_t *series;
	json_t *rep;

	if (!locs || (a->per_sensor && !sensors))
		goto oom;
	json_object_foreach(json_object_get(next, "groups"), key, series)
	{
		json_t *e = series_stats(series, true);

		if (!e)
			goto oom;
		json_object_set_new(e, "rate", json_real(0));
		json_object_set_new(locs, key, e);
	}
	/* this run's groups get their rate (each has a bucket, of count 0
	 * when all its readings were excluded) */
	for (size_t i = 0; i < a->groups.n; i++) {
		const struct acc *c = &a->groups.v[i];
		json_t *e = json_object_get(locs, c->key);

		if (!e) {
			e = json_pack("{s:I}", "count", (json_int_t)0);
			if (!e)
				goto oom;
			json_object_set_new(locs, c->key, e);
		}
		json_object_set_new(e, "rate",
				    json_real((double)c->readings * 1000.0 / (double)elapsed));
	}
	json_object_foreach(json_object_get(next, "sensors"), key, series)
	{
		if (!sensors)
			break;
		json_object_set_new(sensors, key, series_stats(series, false));
	}
	rep = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:I, s:o, s:o*}",
			"instance", a->api->instance_name(a->self), "run", (json_int_t)(a->run + 1),
			"ts", (json_int_t)now, "interval_ms", (json_int_t)a->interval_ms,
			"window_ms", (json_int_t)a->window_ms, "elapsed_ms", (json_int_t)elapsed,
			"group_by", a->group_by, "readings", (json_int_t)a->readings, "used",
			(json_int_t)a->used, "invalid", (json_int_t)a->invalid, "total",
			(json_int_t)(a->total + a->readings), "locations", locs, "sensors",
			sensors);
	return rep;
oom:
	json_decref(locs);
	json_decref(sensors);
	return NULL;
}

/* last_ids: what this run counted or found counted already; carried: the
 * ids of earlier processes not seen again yet, while their time runs. */
static int next_ids(struct analytics *a, uint64_t now, json_t **last_out, json_t **carried_out)
{
	json_t *last = json_array(), *carried = json_object();
	const char *key;
	json_t *v;

	if (!last || !carried)
		goto oom;
	json_object_foreach(a->held_ids, key, v)
	{
		if (json_array_append_new(last, json_string(key)) != 0)
			goto oom;
	}
	json_object_foreach(a->dup_ids, key, v)
	{
		if (!json_object_get(a->held_ids, key) &&
		    json_array_append_new(last, json_string(key)) != 0)
			goto oom;
	}
	json_object_foreach(a->carried, key, v)
	{
		if ((uint64_t)json_integer_value(v) > now)
			json_object_set(carried, key, v);
	}
	*last_out = last;
	*carried_out = carried;
	return PLANT_OK;
oom:
	json_decref(last);
	json_decref(carried);
	return PLANT_E_NOMEM;
}

static void store_failed(struct analytics *a, const char *what, int rc)
{
	a->failed_runs++;
	/* once per failure streak at error, then quieter */
	a->api->log(a->self, a->store_failing ? PLANT_LOG_DEBUG : PLANT_LOG_ERROR,
		    "run %" PRIu64 " not stored (%s: %s): %zu readings stay held, retried at the "
		    "next run",
		    a->run + 1, what, plant_status_name(rc), a->n_held);
	a->store_failing = true;
}

/* After the store: the state is the new one, the held messages are acked,
 * the run starts empty. */
static void commit_run(struct analytics *a, json_t *next, json_t *last_ids, json_t *carried,
		       uint64_t now)
{
	const struct plant_host_api *api = a->api;
	size_t late = 0, i;
	json_t *v;

	json_decref(a->state);
	a->state = next;
	a->run++;
	a->total += a->readings;
	a->last_run_at = now;

	json_object_clear(a->seen);
	json_array_foreach(last_ids, i, v)
		json_object_set_new(a->seen, json_string_value(v), json_true());
	json_decref(a->carried);
	a->carried = json_incref(carried);

	for (i = 0; i < a->n_held; i++)
		if (api->ack(a->self, a->held[i]) == PLANT_E_NOTFOUND)
			late++;
	if (late)
		api->log(a->self, PLANT_LOG_WARN,
			 "%zu readings timed out in the queue before run %" PRIu64
			 " was stored: the queue's visibility_timeout must be longer than "
			 "interval (%" PRIu64 " ms)",
			 late, a->run, a->interval_ms);
	if (a->again)
		api->log(a->self, PLANT_LOG_WARN,
			 "%" PRIu64 " messages came back for another delivery (receive_count > 1): "
			 "expected after a restart, otherwise the queue's visibility_timeout must "
			 "be longer than interval (%" PRIu64 " ms)",
			 a->again, a->interval_ms);
	if (a->duplicates)
		api->log(a->self, PLANT_LOG_INFO,
			 "%" PRIu64 " messages counted before a restart came back: acked, not "
			 "counted again",
			 a->duplicates);
	if (a->invalid)
		api->log(a->self, PLANT_LOG_INFO,
			 "%" PRIu64 " invalid messages in run %" PRIu64
			 " (not an object, or no \"%s\"): acked, not counted",
			 a->invalid, a->run, a->group_by);
	if (a->store_failing)
		api->log(a->self, PLANT_LOG_INFO,
			 "run %" PRIu64 " stored after %" PRIu64 " failed attempts", a->run,
			 a->failed_runs);

	api->counter_add(a->self, "readings", a->readings);
	api->counter_add(a->self, "used", a->used);
	api->counter_add(a->self, "runs", 1);

	a->store_failing = false;
	a->failed_runs = 0;
	a->n_held = 0;
	json_object_clear(a->held_ids);
	json_object_clear(a->dup_ids);
	acc_clear(&a->groups);
	acc_clear(&a->sensors);
	a->readings = a->used = a->invalid = a->again = a->duplicates = 0;
	a->invalid_logged = false;
	api->gauge_set(a->self, "pending", 0);
}

/* Writes the state and the report of run a->run + 1 in one batch. */
static int store_run(struct analytics *a, const json_t *next, const json_t *report)
{
	char key[300];
	size_t failed = 0;
	struct plant_store_op ops[2] = {
		{.key = a->state_key, .key_len = strlen(a->state_key), .value = next},
		{.key = key, .value = report, .ttl_ms = a->ttl_ms},
	};

	snprintf(key, sizeof(key), "%s%012" PRIu64, a->report_prefix, a->run + 1);
	ops[1].key_len = strlen(key);
	return a->api->store_batch(a->self, a->store, ops, 2, &failed);
}

/* [instance] A timer tick: report over what arrived since the last run. */
static void an_on_tick(void *state, void *user)
{
	struct analytics *a = state;
	const struct plant_host_api *api = a->api;
	uint64_t now = api->now_ms(a->self);
	uint64_t elapsed = now > a->last_run_at ? now - a->last_run_at : 1;
	uint64_t cutoff = now > a->window_ms ? now - a->window_ms : 0;
	json_t *groups, *sensors, *next = NULL, *report = NULL, *last = NULL, *carried = NULL;
	int rc;

	(void)user;
	groups = next_map(json_object_get(a->state, "groups"), &a->groups, true, now, cutoff);
	sensors = next_map(json_object_get(a->state, "sensors"), &a->sensors, false, now, cutoff);
	if (groups && sensors && next_ids(a, now, &last, &carried) == PLANT_OK)
		next = json_pack(
			"{s:I, s:I, s:I, s:O, s:O, s:O, s:O}", "run", (json_int_t)(a->run + 1),
			"total", (json_int_t)(a->total + a->readings), "ts", (json_int_t)now,
			"groups", groups, "sensors", sensors, "last_ids", last, "carried", carried);
	if (next)
		report = build_report(a, next, now, elapsed);
	json_decref(groups);
	json_decref(sensors);
	if (!report) {
		store_failed(a, "building the report", PLANT_E_NOMEM);
		goto out;
	}
	rc = store_run(a, next, report);
	if (rc != PLANT_OK) {
		store_failed(a, "store", rc);
		goto out;
	}
	/* The report is stored: a lost publish loses nothing. */
	rc = api->publish(a->self, a->report_topic, report);
	report = NULL;
	if (rc != PLANT_OK)
		/* refused while the site shuts down: expected, and harmless */
		api->log(a->self, rc == PLANT_E_STATE ? PLANT_LOG_INFO : PLANT_LOG_WARN,
			 "run %" PRIu64 " stored but not published on %s: %s", a->run + 1,
			 a->report_topic, plant_status_name(rc));
	/* and only now are its readings acked */
	commit_run(a, next, last, carried, now);
	next = NULL;
out:
	json_decref(next);
	json_decref(report);
	json_decref(last);
	json_decref(carried);
}

/* ---- lifecycle -------------------------------------------------------------------- */

static void an_free(struct analytics *a)
{
	/* normally empty here: stop() released them */
	for (size_t i = 0; i < a->n_held; i++)
		a->api->release(a->self, a->held[i]);
	free(a->held);
	json_decref(a->held_ids);
	json_decref(a->dup_ids);
	json_decref(a->seen);
	json_decref(a->carried);
	json_decref(a->state);
	acc_free(&a->groups);
	acc_free(&a->sensors);
	free(a->state_key);
	free(a->report_prefix);
	free(a);
}

static int an_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		   void **state_out)
{
	const char *inst = api->instance_name(self);
	const char *store;
	struct analytics *a;
	int rc;

	rc = check_config(self, api, config);
	if (rc != PLANT_OK)
		return rc;
	if (!PLANT_API_HAS(api, msg_fields) || !PLANT_API_HAS(api, hold)) {
		api->error(self, NULL, "this host is too old (SDK 1.4 needed)");
		return PLANT_E_UNSUPPORTED;
	}

	a = calloc(1, sizeof(*a));
	if (!a) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	a->self = self;
	a->api = api;
	a->queue = json_string_value(json_object_get(config, "queue"));
	a->group_by = json_string_value(json_object_get(config, "group_by"));
	a->field = json_string_value(json_object_get(config, "field"));
	a->sensor_key = json_string_value(json_object_get(config, "sensor_key"));
	a->keys[0] = a->group_by;
	a->keys[1] = a->field;
	a->keys[2] = "status";
	a->keys[3] = a->sensor_key;
	a->dedup_key = json_string_value(json_object_get(config, "dedup_key"));
	a->keys[4] = a->dedup_key;
	a->report_topic = json_string_value(json_object_get(config, "report_topic"));
	a->exclude = json_object_get(config, "exclude_status");
	a->per_sensor = json_is_true(json_object_get(config, "per_sensor"));
	a->interval_ms = cfg_ms(config, "interval");
	a->window_ms = cfg_ms(config, "window");
	a->ttl_ms = cfg_ms(config, "report_ttl");
	a->carry_ms = a->interval_ms * CARRY_INTERVALS > CARRY_MIN_MS
			      ? a->interval_ms * CARRY_INTERVALS
			      : CARRY_MIN_MS;
	a->seen = json_object();
	a->carried = json_object();
	a->held_ids = json_object();
	a->dup_ids = json_object();
	a->groups.index = json_object();
	a->sensors.index = json_object();
	if (asprintf(&a->state_key, "analytics/%s/state", inst) < 0)
		a->state_key = NULL;
	if (asprintf(&a->report_prefix, "analytics/%s/report/", inst) < 0)
		a->report_prefix = NULL;
	if (!a->seen || !a->carried || !a->held_ids || !a->dup_ids || !a->groups.index ||
	    !a->sensors.index || !a->state_key || !a->report_prefix) {
		api->error(self, NULL, "out of memory");
		an_free(a);
		return PLANT_E_NOMEM;
	}

	store = json_string_value(json_object_get(config, "store"));
	rc = api->store_open(self, store, &a->store);
	if (rc != PLANT_OK) {
		api->error(self, "store", "cannot open store \"%s\": %s%s", store,
			   plant_status_name(rc),
			   rc == PLANT_E_NOTFOUND ? " (no such store in this site)" : "");
		an_free(a);
		return rc == PLANT_E_NOTFOUND ? PLANT_E_CONFIG : rc;
	}
	rc = load_state(a);
	if (rc != PLANT_OK) {
		an_free(a);
		return rc;
	}
	a->last_run_at = api->now_ms(self);

	rc = api->timer_add(self, a->interval_ms, 0, an_on_tick, NULL, NULL);
	if (rc != PLANT_OK) {
		api->error(self, "interval", "cannot add a timer: %s", plant_status_name(rc));
		an_free(a);
		return rc;
	}
	/* Last: messages may arrive as soon as init() returns. */
	rc = api->consume(self, a->queue, an_on_messages, NULL, 0, NULL);
	if (rc != PLANT_OK) {
		api->error(self, "queue", "cannot consume \"%s\": %s%s", a->queue,
			   plant_status_name(rc),
			   rc == PLANT_E_NOTFOUND ? " (no such queue in this site)" : "");
		an_free(a);
		return rc == PLANT_E_NOTFOUND ? PLANT_E_CONFIG : rc;
	}
	*state_out = a;
	return PLANT_OK;
}

/* Nothing arrives after stop(): what was held and not reported yet goes
 * back to the queue, for the next start to count. */
static void an_stop(void *state)
{
	struct analytics *a = state;

	for (size_t i = 0; i < a->n_held; i++)
		a->api->release(a->self, a->held[i]);
	if (a->n_held)
		a->api->log(a->self, PLANT_LOG_INFO,
			    "%zu readings not reported yet go back to queue %s", a->n_held,
			    a->queue);
	a->n_held = 0;
	a->api->gauge_set(a->self, "pending", 0);
	a->api->log(a->self, PLANT_LOG_INFO, "analytics stopped total=%" PRIu64 " runs=%" PRIu64,
		    a->total, a->run);
}

static void an_destroy(void *state)
{
	an_free(state);
}

static int an_health(void *state, json_t **detail_out)
{
	const struct analytics *a = state;

	*detail_out = json_pack("{s:I, s:I, s:I, s:b}", "run", (json_int_t)a->run, "total",
				(json_int_t)a->total, "pending", (json_int_t)a->n_held,
				"store_failing", a->store_failing);
	return a->store_failing ? PLANT_E_IO : PLANT_OK;
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "analytics",
	.version = "1.0.0",
	.description = "moving averages of readings per group, reported and stored on a timer",
	.config_keys = config_keys,
	.validate = an_validate,
	.init = an_init,
	.stop = an_stop,
	.destroy = an_destroy,
	.health = an_health,
};
