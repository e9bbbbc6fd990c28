/* live_view: the demo's live view, as plain text on stdout.
 *
 * It listens to processed readings (sensor.*.processed) and analytics
 * reports (analytics.report). Every `every` it prints a table: a header
 * line with the site, its uptime, the readings processed by status and the
 * depths of the dead-letter queues, then one row per location with its
 * readings per second since the last table, the latest report's average,
 * minimum and maximum, and the sensors seen broken there. When the
 * instance stops it prints a summary, ending with one logfmt line for
 * scripts ("summary processed=N broken_sensors=N dead_lettered=N
 * analytics_total=N ..."). See README.md.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <plantd/plantd.h>

#define MIN_EVERY_MS	 10
#define MAX_NAME	 64    /* bytes in a location, type, sensor id or status */
#define MAX_LOCATIONS	 4096  /* rows; readings of more are ignored */
#define MAX_TYPES	 64    /* sensor types */
#define MAX_BROKEN	 65536 /* broken sensors remembered per location */
#define SUMMARY_MAX_LIST 50    /* broken sensor ids listed per location */

static const struct plant_config_key config_keys[] = {
	{
		.name = "readings",
		.type = PLANT_CFG_ARRAY,
		.default_value = "[\"sensor.*.processed\"]",
		.description = "topic patterns of processed readings",
	},
	{
		.name = "reports",
		.type = PLANT_CFG_ARRAY,
		.default_value = "[\"analytics.report\"]",
		.description = "topic patterns of analytics reports",
	},
	{
		.name = "every",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"5s\"",
		.description = "how often a table is printed (at least 10ms)",
	},
	{
		.name = "clear",
		.type = PLANT_CFG_BOOL,
		.description = "clear the screen before each table; absent: when stdout "
			       "is a terminal",
	},
	{
		.name = "dlq",
		.type = PLANT_CFG_ARRAY,
		.default_value = "[]",
		.description = "dead-letter queues to show; empty: every queue named "
			       "*.dlq or used as a dead_letter",
	},
	{.name = NULL, .type = PLANT_CFG_END},
};

/* Statuses of processed readings (thermistors: ok, too_hot, too_cold,
 * broken; other types: ok, high, low, broken). Anything else is "other". */
enum status { ST_OK, ST_TOO_HOT, ST_TOO_COLD, ST_HIGH, ST_LOW, ST_BROKEN, ST_OTHER, N_STATUS };

static const char *const status_names[N_STATUS] = {
	"ok", "too_hot", "too_cold", "high", "low", "broken", "other",
};

struct location {
	char *name;
	uint64_t window;   /* readings since the last table */
	uint64_t readings; /* since the start */
	char **broken;	   /* distinct sensor ids seen broken, sorted */
	size_t n_broken, cap_broken;
};

struct type_tally {
	char *name;
	uint64_t by_status[N_STATUS];
};

struct view {
	plant_instance *self;
	const struct plant_host_api *api;
	const char *site;
	const json_t *dlq; /* [borrowed] config array */
	bool clear;

	uint64_t started_ms, last_table_ms;

	struct location *locs; /* sorted by name */
	size_t n_locs, cap_locs;
	struct type_tally *types; /* in order of appearance */
	size_t n_types, cap_types;

	uint64_t processed, by_status[N_STATUS];
	uint64_t ignored;	  /* readings lacking what we need */
	uint64_t reports;	  /* reports used */
	uint64_t ignored_reports; /* reports without "locations" */
	uint64_t broken_sensors;  /* distinct, every location */
	bool warned_full;	  /* logged that a limit was reached */
	bool out_failing;	  /* the last write to stdout failed */

	json_t *report; /* the latest report, a reference we hold */
};

/* ---- names and lookups --------------------------------------------------- */

/* A name we can show in a column and in logfmt: 1..MAX_NAME bytes, no
 * blanks or control characters, none of " = \ , (UTF-8 is fine). */
static bool name_ok(const char *s)
{
	size_t n = 0;

	if (!s)
		return false;
	for (; s[n]; n++) {
		unsigned char c = (unsigned char)s[n];

		if (n >= MAX_NAME || c <= ' ' || c == 0x7f || c == '"' || c == '=' || c == '\\' ||
		    c == ',')
			return false;
	}
	return n > 0;
}

static const char *get_name(const json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return name_ok(s) ? s : NULL;
}

static enum status status_of(const char *s)
{
	for (int i = 0; i < ST_OTHER; i++)
		if (strcmp(s, status_names[i]) == 0)
			return (enum status)i;
	return ST_OTHER;
}

/* Where `name` is in the sorted `v` (n entries of `size` bytes, each
 * starting with a char *), or where it would go: *found says which. */
static size_t sorted_find(const void *v, size_t n, size_t size, const char *name, bool *found)
{
	size_t lo = 0, hi = n;

	*found = false;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const char *at = *(char *const *)((const char *)v + mid * size);
		int c = strcmp(at, name);

		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Grow `*v` (of `size`-byte entries) to hold one more. */
static bool grow(void **v, size_t n, size_t *cap, size_t size)
{
	size_t ncap;
	void *p;

	if (n < *cap)
		return true;
	ncap = *cap ? *cap * 2 : 16;
	p = realloc(*v, ncap * size);
	if (!p)
		return false;
	*v = p;
	*cap = ncap;
	return true;
}

static void warn_full(struct view *v, const char *what)
{
	if (v->warned_full)
		return;
	v->warned_full = true;
	v->api->log(v->self, PLANT_LOG_WARN, "more than %s: further ones are ignored (logged once)",
		    what);
}

/* The row of `name`, added when new; NULL when full or out of memory. */
static struct location *location_get(struct view *v, const char *name)
{
	bool found;
	size_t at = sorted_find(v->locs, v->n_locs, sizeof(*v->locs), name, &found);
	struct location *loc;

	if (found)
		return &v->locs[at];
	if (v->n_locs >= MAX_LOCATIONS) {
		warn_full(v, "4096 locations");
		return NULL;
	}
	if (!grow((void **)&v->locs, v->n_locs, &v->cap_locs, sizeof(*v->locs)))
		return NULL;
	loc = &v->locs[at];
	memmove(loc + 1, loc, (v->n_locs - at) * sizeof(*loc));
	memset(loc, 0, sizeof(*loc));
	loc->name = strdup(name);
	if (!loc->name) {
		memmove(loc, loc + 1, (v->n_locs - at) * sizeof(*loc));
		return NULL;
	}
	v->n_locs++;
	return loc;
}

static struct type_tally *type_get(struct view *v, const char *name)
{
	struct type_tally *t;

	for (size_t i = 0; i < v->n_types; i++)
		if (strcmp(v->types[i].name, name) == 0)
			return &v->types[i];
	if (v->n_types >= MAX_TYPES) {
		warn_full(v, "64 sensor types");
		return NULL;
	}
	if (!grow((void **)&v->types, v->n_types, &v->cap_types, sizeof(*v->types)))
		return NULL;
	t = &v->types[v->n_types];
	memset(t, 0, sizeof(*t));
	t->name = strdup(name);
	if (!t->name)
		return NULL;
	v->n_types++;
	return t;
}

/* Remember `sensor` as broken at `loc`; true when it is new. */
static bool broken_add(struct view *v, struct location *loc, const char *sensor)
{
	bool found;
	size_t at = sorted_find(loc->broken, loc->n_broken, sizeof(*loc->broken), sensor, &found);
	char *copy;

	if (found)
		return false;
	if (loc->n_broken >= MAX_BROKEN) {
		warn_full(v, "65536 broken sensors in a location");
		return false;
	}
	if (!grow((void **)&loc->broken, loc->n_broken, &loc->cap_broken, sizeof(*loc->broken)))
		return false;
	copy = strdup(sensor);
	if (!copy)
		return false;
	memmove(loc->broken + at + 1, loc->broken + at, (loc->n_broken - at) * sizeof(char *));
	loc->broken[at] = copy;
	loc->n_broken++;
	return true;
}

/* ---- messages ---------------------------------------------------------------- */

/* One processed reading. Needs string "location", "sensor_id", "type" and
 * "status"; anything else about it is not our business. */
static bool reading_add(struct view *v, const json_t *body)
{
	const char *location = get_name(body, "location");
	const char *sensor = get_name(body, "sensor_id");
	const char *type = get_name(body, "type");
	const char *status = get_name(body, "status");
	struct location *loc;
	struct type_tally *t;
	enum status st;

	if (!location || !sensor || !type || !status)
		return false;
	loc = location_get(v, location);
	t = loc ? type_get(v, type) : NULL;
	if (!t)
		return false;
	st = status_of(status);
	if (st == ST_BROKEN && broken_add(v, loc, sensor))
		v->broken_sensors++;
	loc->window++;
	loc->readings++;
	t->by_status[st]++;
	v->by_status[st]++;
	v->processed++;
	return true;
}

static int on_readings(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	struct view *v = state;
	uint64_t used = 0;

	(void)user;
	for (size_t i = 0; i < n; i++)
		if (reading_add(v, v->api->msg_body(msgs[i])))
			used++;
	if (used)
		v->api->counter_add(v->self, "readings", used);
	if (used < n) {
		v->ignored += n - used;
		v->api->counter_add(v->self, "ignored", n - used);
	}
	return PLANT_OK;
}

/* A report is kept whole (its tree is shared and never modified); its
 * locations become rows, so that a location shows before its first
 * reading arrives here. */
static int on_reports(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	struct view *v = state;

	(void)user;
	for (size_t i = 0; i < n; i++) {
		const json_t *body = v->api->msg_body(msgs[i]);
		const json_t *locs = json_object_get(body, "locations");
		const char *name;
		const json_t *entry;

		if (!json_is_object(locs)) {
			v->ignored_reports++;
			v->api->counter_add(v->self, "ignored_reports", 1);
			continue;
		}
		json_object_foreach((json_t *)locs, name, entry)
		{
			if (name_ok(name) && json_is_object(entry))
				location_get(v, name);
		}
		json_decref(v->report);
		v->report = json_incref((json_t *)body);
		v->reports++;
		v->api->counter_add(v->self, "reports", 1);
	}
	return PLANT_OK;
}

/* ---- dead-letter queues ---------------------------------------------------------- */

struct dlq_depth {
	const char *name; /* [borrowed] from the stats or the config */
	json_int_t depth; /* -1: no such queue */
};

static int dlq_cmp(const void *a, const void *b)
{
	return strcmp(((const struct dlq_depth *)a)->name, ((const struct dlq_depth *)b)->name);
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Is `name` the dead_letter of some queue in `queues`? */
static bool is_dead_letter(const json_t *queues, const char *name)
{
	const char *q;
	const json_t *st;

	json_object_foreach((json_t *)queues, q, st)
	{
		const char *dl = json_string_value(json_object_get(st, "dead_letter"));

		if (dl && strcmp(dl, name) == 0)
			return true;
	}
	return false;
}

/* The dead-letter queues to show, sorted, with their depths, into *out
 * (free it); names are borrowed from `stats` and the config. */
static size_t dlq_collect(struct view *v, const json_t *stats, struct dlq_depth **out)
{
	const json_t *queues = json_object_get(stats, "queues");
	size_t max = json_array_size(v->dlq) + json_object_size(queues), n = 0;
	struct dlq_depth *d;

	*out = NULL;
	if (max == 0)
		return 0;
	d = calloc(max, sizeof(*d));
	if (!d)
		return 0;
	if (json_array_size(v->dlq) > 0) {
		size_t i;
		const json_t *name;

		json_array_foreach(v->dlq, i, name)
		{
			const json_t *st = json_object_get(queues, json_string_value(name));

			d[n].name = json_string_value(name);
			d[n].depth = st ? json_integer_value(json_object_get(st, "depth")) : -1;
			n++;
		}
	} else {
		const char *name;
		const json_t *st;

		json_object_foreach((json_t *)queues, name, st)
		{
			if (!ends_with(name, ".dlq") && !is_dead_letter(queues, name))
				continue;
			d[n].name = name;
			d[n].depth = json_integer_value(json_object_get(st, "depth"));
			n++;
		}
	}
	qsort(d, n, sizeof(*d), dlq_cmp);
	*out = d;
	return n;
}

/* ---- printing ------------------------------------------------------------------ */

static void fmt_duration(char *buf, size_t len, uint64_t ms)
{
	uint64_t s = (ms + 500) / 1000;

	snprintf(buf, len, "%" PRIu64 ":%02u:%02u", s / 3600, (unsigned)(s / 60 % 60),
		 (unsigned)(s % 60));
}

/* A number of the latest report's entry for `loc`, as "%.2f", or "-". */
static void fmt_report(char *buf, size_t len, const json_t *report, const char *loc,
		       const char *key)
{
	const json_t *x =
		json_object_get(json_object_get(json_object_get(report, "locations"), loc), key);

	if (json_is_number(x))
		snprintf(buf, len, "%.2f", json_number_value(x));
	else
		snprintf(buf, len, "-");
}

/* `text` to stdout, flushed; a failure is logged once per streak. */
static void emit(struct view *v, char *text, size_t len)
{
	bool ok = fwrite(text, 1, len, stdout) == len && fflush(stdout) == 0;

	if (!ok && !v->out_failing)
		v->api->log(v->self, PLANT_LOG_ERROR, "cannot write to stdout: %s (logged once)",
			    strerror(errno));
	v->out_failing = !ok;
	clearerr(stdout);
}

static void print_dlqs(FILE *f, const struct dlq_depth *d, size_t n, const char *sep)
{
	if (n == 0)
		fputs(" none", f);
	for (size_t i = 0; i < n; i++) {
		if (d[i].depth < 0)
			fprintf(f, "%s%s ?", i ? sep : " ", d[i].name);
		else
			fprintf(f, "%s%s %" JSON_INTEGER_FORMAT, i ? sep : " ", d[i].name,
				d[i].depth);
	}
}

static void print_table(struct view *v)
{
	uint64_t now = v->api->now_ms(v->self);
	double secs = (double)(now > v->last_table_ms ? now - v->last_table_ms : 0) / 1000.0;
	json_t *stats = v->api->bus_stats(v->self);
	struct dlq_depth *dlqs;
	size_t n_dlqs = dlq_collect(v, stats, &dlqs);
	char up[32], *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		goto out;
	if (v->clear)
		fputs("\033[H\033[2J", f);
	fmt_duration(up, sizeof(up), now > v->started_ms ? now - v->started_ms : 0);
	fprintf(f, "%s  up %s  processed %" PRIu64 " (", v->site, up, v->processed);
	for (int s = 0; s < ST_OTHER; s++)
		fprintf(f, "%s%s %" PRIu64, s ? ", " : "", status_names[s], v->by_status[s]);
	if (v->by_status[ST_OTHER])
		fprintf(f, ", other %" PRIu64, v->by_status[ST_OTHER]);
	fputc(')', f);
	if (v->ignored)
		fprintf(f, "  ignored %" PRIu64, v->ignored);
	fputs("  dlq:", f);
	print_dlqs(f, dlqs, n_dlqs, ", ");
	fputc('\n', f);

	fprintf(f, "%-10s %10s %8s %8s %8s %7s\n", "location", "readings/s", "avg_C", "min_C",
		"max_C", "broken");
	for (size_t i = 0; i < v->n_locs; i++) {
		struct location *loc = &v->locs[i];
		char avg[32], min[32], max[32];

		fmt_report(avg, sizeof(avg), v->report, loc->name, "avg");
		fmt_report(min, sizeof(min), v->report, loc->name, "min");
		fmt_report(max, sizeof(max), v->report, loc->name, "max");
		fprintf(f, "%-10s %10.1f %8s %8s %8s %7zu\n", loc->name,
			secs > 0 ? (double)loc->window / secs : 0.0, avg, min, max, loc->n_broken);
		loc->window = 0;
	}
	if (v->n_locs == 0)
		fputs("(no readings yet)\n", f);
	fputc('\n', f);
	if (fclose(f) == 0)
		emit(v, text, len);
out:
	v->last_table_ms = now;
	free(text);
	free(dlqs);
	json_decref(stats);
}

static void on_tick(void *state, void *user)
{
	(void)user;
	print_table(state);
}

static void print_summary(struct view *v)
{
	uint64_t now = v->api->now_ms(v->self);
	uint64_t ran = now > v->started_ms ? now - v->started_ms : 0;
	json_t *stats = v->api->bus_stats(v->self);
	struct dlq_depth *dlqs;
	size_t n_dlqs = dlq_collect(v, stats, &dlqs);
	json_int_t dead = 0, total = 0;
	const json_t *jtotal = json_object_get(v->report, "total");
	char up[32], *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		goto out;
	if (json_is_integer(jtotal))
		total = json_integer_value(jtotal);
	else if (json_is_real(jtotal) && json_real_value(jtotal) >= 0 &&
		 json_real_value(jtotal) < 9e18)
		total = (json_int_t)json_real_value(jtotal);
	for (size_t i = 0; i < n_dlqs; i++)
		if (dlqs[i].depth > 0)
			dead += dlqs[i].depth;

	fmt_duration(up, sizeof(up), ran);
	fprintf(f, "%s: live view summary, ran %s (%.1f s)\n", v->site, up, (double)ran / 1000.0);
	fprintf(f, "readings processed: %" PRIu64, v->processed);
	if (v->ignored)
		fprintf(f, " (and %" PRIu64 " ignored: no location, sensor_id, type or status)",
			v->ignored);
	fputc('\n', f);
	for (size_t i = 0; i < v->n_types; i++) {
		fprintf(f, "  type %s:", v->types[i].name);
		for (int s = 0; s < N_STATUS; s++)
			if (s != ST_OTHER || v->types[i].by_status[s])
				fprintf(f, " %s=%" PRIu64, status_names[s],
					v->types[i].by_status[s]);
		fputc('\n', f);
	}
	for (size_t i = 0; i < v->n_locs; i++) {
		const struct location *loc = &v->locs[i];
		char avg[32], min[32], max[32];

		fmt_report(avg, sizeof(avg), v->report, loc->name, "avg");
		fmt_report(min, sizeof(min), v->report, loc->name, "min");
		fmt_report(max, sizeof(max), v->report, loc->name, "max");
		fprintf(f,
			"  location %s: readings=%" PRIu64 " avg_C=%s min_C=%s max_C=%s "
			"broken_sensors=%zu",
			loc->name, loc->readings, avg, min, max, loc->n_broken);
		for (size_t j = 0; j < loc->n_broken && j < SUMMARY_MAX_LIST; j++)
			fprintf(f, "%c%s", j ? ',' : ' ', loc->broken[j]);
		if (loc->n_broken > SUMMARY_MAX_LIST)
			fprintf(f, " (and %zu more)", loc->n_broken - SUMMARY_MAX_LIST);
		fputc('\n', f);
	}
	if (v->report)
		fprintf(f,
			"analytics: total %" JSON_INTEGER_FORMAT " in the latest of %" PRIu64
			" reports\n",
			total, v->reports);
	else
		fputs("analytics: no report received\n", f);
	fputs("dead-letter queues:", f);
	print_dlqs(f, dlqs, n_dlqs, ", ");
	fputc('\n', f);

	fprintf(f,
		"summary processed=%" PRIu64 " broken_sensors=%" PRIu64
		" dead_lettered=%" JSON_INTEGER_FORMAT " analytics_total=%" JSON_INTEGER_FORMAT,
		v->processed, v->broken_sensors, dead, total);
	for (int s = 0; s < N_STATUS; s++)
		fprintf(f, " %s=%" PRIu64, status_names[s], v->by_status[s]);
	fprintf(f,
		" ignored=%" PRIu64 " reports=%" PRIu64 " ignored_reports=%" PRIu64
		" locations=%zu run_s=%.1f\n",
		v->ignored, v->reports, v->ignored_reports, v->n_locs, (double)ran / 1000.0);
	if (fclose(f) == 0)
		emit(v, text, len);
out:
	free(text);
	free(dlqs);
	json_decref(stats);
}

/* ---- lifecycle ---------------------------------------------------------------- */

static int check_patterns(plant_instance *self, const struct plant_host_api *api,
			  const json_t *config, const char *key, bool may_be_empty)
{
	const json_t *arr = json_object_get(config, key);
	size_t i;
	const json_t *x;

	if (!json_is_array(arr) || (!may_be_empty && json_array_size(arr) == 0)) {
		api->error(self, key, "needs at least one topic pattern");
		return PLANT_E_CONFIG;
	}
	json_array_foreach(arr, i, x)
	{
		if (!json_is_string(x) || json_string_length(x) == 0) {
			api->error(self, key, "entry %zu is not a non-empty string", i + 1);
			return PLANT_E_CONFIG;
		}
	}
	return PLANT_OK;
}

static int check_config(plant_instance *self, const struct plant_host_api *api,
			const json_t *config)
{
	json_int_t every = json_integer_value(json_object_get(config, "every"));
	int rc;

	if ((rc = check_patterns(self, api, config, "readings", false)) != PLANT_OK ||
	    (rc = check_patterns(self, api, config, "reports", true)) != PLANT_OK ||
	    (rc = check_patterns(self, api, config, "dlq", true)) != PLANT_OK)
		return rc;
	if (every < MIN_EVERY_MS) {
		api->error(self, "every", "must be at least %dms", MIN_EVERY_MS);
		return PLANT_E_CONFIG;
	}
	return PLANT_OK;
}

static int view_validate(plant_instance *self, const struct plant_host_api *api,
			 const json_t *config)
{
	return check_config(self, api, config);
}

static void view_free(struct view *v)
{
	for (size_t i = 0; i < v->n_locs; i++) {
		for (size_t j = 0; j < v->locs[i].n_broken; j++)
			free(v->locs[i].broken[j]);
		free(v->locs[i].broken);
		free(v->locs[i].name);
	}
	free(v->locs);
	for (size_t i = 0; i < v->n_types; i++)
		free(v->types[i].name);
	free(v->types);
	json_decref(v->report);
	free(v);
}

static int subscribe_all(struct view *v, const json_t *config, const char *key,
			 plant_msg_handler fn)
{
	size_t i;
	const json_t *x;

	json_array_foreach(json_object_get(config, key), i, x)
	{
		int rc = v->api->subscribe(v->self, json_string_value(x), fn, NULL, NULL);

		if (rc != PLANT_OK) {
			v->api->error(v->self, key, "cannot subscribe to \"%s\": %s",
				      json_string_value(x), plant_status_name(rc));
			return rc;
		}
	}
	return PLANT_OK;
}

static int view_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		     void **state_out)
{
	const json_t *clear = json_object_get(config, "clear");
	struct view *v;
	int rc;

	rc = check_config(self, api, config);
	if (rc != PLANT_OK)
		return rc;
	v = calloc(1, sizeof(*v));
	if (!v) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	v->self = self;
	v->api = api;
	v->site = api->site_name(self);
	if (!v->site || !*v->site)
		v->site = "plantd";
	v->dlq = json_object_get(config, "dlq");
	v->clear = clear ? json_is_true(clear) : isatty(STDOUT_FILENO) == 1;
	v->started_ms = v->last_table_ms = api->now_ms(self);

	rc = api->timer_add(self, (uint64_t)json_integer_value(json_object_get(config, "every")), 0,
			    on_tick, NULL, NULL);
	if (rc != PLANT_OK) {
		api->error(self, "every", "cannot add a timer: %s", plant_status_name(rc));
		view_free(v);
		return rc;
	}
	/* The host drops the timer and subscriptions itself if init() fails. */
	rc = subscribe_all(v, config, "readings", on_readings);
	if (rc == PLANT_OK)
		rc = subscribe_all(v, config, "reports", on_reports);
	if (rc != PLANT_OK) {
		view_free(v);
		return rc;
	}
	*state_out = v;
	return PLANT_OK;
}

/* Uptime and rates count from here: every instance is ready now. */
static int view_start(void *state)
{
	struct view *v = state;

	v->started_ms = v->last_table_ms = v->api->now_ms(v->self);
	return PLANT_OK;
}

static void view_stop(void *state)
{
	print_summary(state);
}

static void view_destroy(void *state)
{
	view_free(state);
}

static int view_health(void *state, json_t **detail_out)
{
	const struct view *v = state;

	*detail_out = json_pack("{s:I, s:I, s:I, s:I, s:I}", "processed", (json_int_t)v->processed,
				"ignored", (json_int_t)v->ignored, "reports",
				(json_int_t)v->reports, "locations", (json_int_t)v->n_locs,
				"broken_sensors", (json_int_t)v->broken_sensors);
	return PLANT_OK;
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "live_view",
	.version = "1.0.0",
	.description = "prints a live table of readings, averages and dead letters on stdout",
	.config_keys = config_keys,
	.validate = view_validate,
	.init = view_init,
	.start = view_start,
	.stop = view_stop,
	.destroy = view_destroy,
	.health = view_health,
};
