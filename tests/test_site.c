/* site: lifecycle order, checks, failing inits, reload diffing, and the bus,
 * with the fixture plugins. Waiting never depends on the clock's speed: a
 * condition is polled (running the event loop) until a generous deadline. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "plantd/plantd.h"
#include "config.h"
#include "site.h"
#include "testutil.h"

#define WAIT_MS 5000

static char fixture_dir[PATH_MAX];
static char trace_file[PATH_MAX];
static char errbuf[2048];

struct fx {
	char *dir;
	char conf[PATH_MAX];
	struct event_base *base;
	struct site *site;
};

static int fx_setup(void **state)
{
	static struct fx f;
	memset(&f, 0, sizeof(f));
	f.dir = tu_mkdtemp();
	f.base = event_base_new();
	if (!f.base)
		return -1;
	/* Each test starts with an empty trace. */
	FILE *t = fopen(trace_file, "w");
	if (!t)
		return -1;
	fclose(t);
	*state = &f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	site_destroy(f->site);
	f->site = NULL;
	event_base_free(f->base);
	tu_rmtree(f->dir);
	free(f->dir);
	return 0;
}

/* Write the site config: common settings on lines 1-6, `plugins` from line
 * 7, one entry per line of `entries` (so entry k is on line 7 + k). */
static void write_conf(struct fx *f, const char *entries)
{
	char text[8192], var[PATH_MAX], list[4096];
	tu_join(var, sizeof(var), f->dir, "var");
	/* Entries end in ",\n"; libconfig 1.5 refuses a trailing comma. */
	tu_fmt(list, sizeof(list), "%s", entries);
	char *comma = strrchr(list, ',');
	if (comma && strspn(comma + 1, " \n") == strlen(comma + 1))
		*comma = ' ';
	tu_fmt(text, sizeof(text),
	       "site = \"test-site\";\n"      /* 1 */
	       "plugin_path = \"%s\";\n"      /* 2 */
	       "data_dir = \"%s\";\n"	      /* 3 */
	       "workers = 2;\n"		      /* 4 */
	       "log_level = \"warn\";\n"      /* 5 */
	       "shutdown_timeout = \"5s\";\n" /* 6 */
	       "plugins = (\n"		      /* 7 */
	       "%s"
	       ");\n",
	       fixture_dir, var, list);
	tu_write(f->dir, "site.conf", text, f->conf, sizeof(f->conf));
}

static struct site_config *load(struct fx *f, const char *entries)
{
	write_conf(f, entries);
	struct site_config *cfg = NULL;
	errbuf[0] = '\0';
	if (config_load(f->conf, NULL, &cfg, errbuf, sizeof(errbuf)) != PLANT_OK)
		fail_msg("config_load: %s", errbuf);
	return cfg;
}

static void create(struct fx *f, const char *entries)
{
	struct site_config *cfg = load(f, entries);
	errbuf[0] = '\0';
	if (site_create(cfg, fixture_dir, f->base, &f->site, errbuf, sizeof(errbuf)) != PLANT_OK)
		fail_msg("site_create: %s", errbuf);
	assert_non_null(f->site);
	assert_true(site_wait_idle(f->site, WAIT_MS));
}

static char *trace(void)
{
	char *t = tu_read(trace_file);
	if (!t)
		fail_msg("cannot read %s", trace_file);
	return t;
}

static size_t trace_len(void)
{
	char *t = trace();
	size_t n = strlen(t);
	free(t);
	return n;
}

/* The line number (0-based) of the first `line` at or after line `from` of
 * `text`, or -1. */
static int line_index(const char *text, const char *line, int from)
{
	size_t len = strlen(line);
	int i = 0;
	for (const char *p = text; *p; i++) {
		const char *nl = strchr(p, '\n');
		size_t l = nl ? (size_t)(nl - p) : strlen(p);
		if (i >= from && l == len && strncmp(p, line, len) == 0)
			return i;
		if (!nl)
			break;
		p = nl + 1;
	}
	return -1;
}

static int line_count(const char *text, const char *line)
{
	int n = 0;
	for (int i = line_index(text, line, 0); i >= 0; i = line_index(text, line, i + 1))
		n++;
	return n;
}

/* Assert that `first` comes before `second` in text, each exactly once. */
static void assert_order(const char *text, const char *first, const char *second)
{
	if (line_count(text, first) != 1)
		fail_msg("\"%s\" appears %d times in the trace:\n%s", first,
			 line_count(text, first), text);
	if (line_count(text, second) != 1)
		fail_msg("\"%s\" appears %d times in the trace:\n%s", second,
			 line_count(text, second), text);
	if (line_index(text, first, 0) > line_index(text, second, 0))
		fail_msg("\"%s\" comes after \"%s\" in the trace:\n%s", first, second, text);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Run the loop until `*counter` > `above`, or WAIT_MS. */
static bool pump_until(struct event_base *base, atomic_ullong *counter, unsigned long long above)
{
	uint64_t deadline = mono_ms() + WAIT_MS;
	while (atomic_load(counter) <= above) {
		if (mono_ms() > deadline)
			return false;
		event_base_loop(base, EVLOOP_NONBLOCK | EVLOOP_ONCE);
		struct timespec pause = {0, 1000000};
		nanosleep(&pause, NULL);
	}
	return true;
}

#define GOOD(name) "  { name = \"" name "\"; module = \"fx_good\"; label = \"" name "\"; },\n"

/* ---- lifecycle ------------------------------------------------------------- */

static void test_lifecycle_order(void **state)
{
	struct fx *f = *state;
	create(f, GOOD("a") GOOD("b") GOOD("c"));
	assert_int_equal(site_instance_count(f->site), 3);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(site_instance(f->site, i)->st, INST_RUNNING);
	assert_string_equal(site_find(f->site, "b")->spec->name, "b");
	assert_null(site_find(f->site, "zz"));

	char *t = trace();
	assert_string_equal(t, "a:init\nb:init\nc:init\n"
			       "a:start\nb:start\nc:start\n");
	free(t);

	site_destroy(f->site);
	f->site = NULL;
	t = trace();
	assert_string_equal(t, "a:init\nb:init\nc:init\n"
			       "a:start\nb:start\nc:start\n"
			       "c:stop\nb:stop\na:stop\n"
			       "c:destroy\nb:destroy\na:destroy\n");
	free(t);
}

static void test_config_reaches_plugin(void **state)
{
	struct fx *f = *state;
	create(f, "  { name = \"a\"; module = \"fx_good\"; label = \"l\"; count = 7; period = "
		  "\"250ms\"; },\n");
	struct instance *a = site_find(f->site, "a");
	assert_non_null(a);
	assert_int_equal(json_integer_value(json_object_get(a->config, "count")), 7);
	assert_int_equal(json_integer_value(json_object_get(a->config, "period")), 250);
	assert_true(json_real_value(json_object_get(a->config, "ratio")) == 0.5);
	assert_string_equal(site_config(f->site)->site, "test-site");
}

/* ---- site_check ------------------------------------------------------------ */

static void test_check_validate_fails(void **state)
{
	struct fx *f = *state;
	struct site_config *cfg = load(f, GOOD("fine") /* line 8 */
				       "  { name = \"bad_one\"; module = \"fx_good\";\n" /* 9 */
				       "    count = 2;\n"				 /* 10 */
				       "    label = \"bad\"; },\n");			 /* 11 */
	errbuf[0] = '\0';
	assert_int_not_equal(site_check(cfg, fixture_dir, errbuf, sizeof(errbuf)), PLANT_OK);
	char want[PATH_MAX + 16];
	tu_fmt(want, sizeof(want), "%s:11:", f->conf);
	assert_contains(errbuf, want);
	assert_contains(errbuf, "label must not be bad");
	assert_contains(errbuf, "bad_one");
	config_free(cfg);
	/* Checking starts nothing. */
	assert_int_equal(trace_len(), 0);
}

static void test_check_schema_fails(void **state)
{
	struct fx *f = *state;
	struct site_config *cfg =
		load(f, GOOD("fine")						   /* line 8 */
		     "  { name = \"typo\"; module = \"fx_good\"; label = \"x\";\n" /* 9 */
		     "    colour = \"red\"; },\n");				   /* 10 */
	errbuf[0] = '\0';
	assert_int_not_equal(site_check(cfg, fixture_dir, errbuf, sizeof(errbuf)), PLANT_OK);
	char want[PATH_MAX + 16];
	tu_fmt(want, sizeof(want), "%s:10:", f->conf);
	assert_contains(errbuf, want);
	assert_contains(errbuf, "colour");
	assert_contains(errbuf, "typo");
	config_free(cfg);
}

static void test_check_unknown_module(void **state)
{
	struct fx *f = *state;
	struct site_config *cfg = load(f, "  { name = \"ghost\"; module = \"fx_nope\"; },\n");
	errbuf[0] = '\0';
	assert_int_not_equal(site_check(cfg, fixture_dir, errbuf, sizeof(errbuf)), PLANT_OK);
	char want[PATH_MAX + 16];
	tu_fmt(want, sizeof(want), "%s:8:", f->conf);
	assert_contains(errbuf, want);
	assert_contains(errbuf, "fx_nope");
	config_free(cfg);
}

static void test_check_ok(void **state)
{
	struct fx *f = *state;
	struct site_config *cfg = load(f, GOOD("a") GOOD("b"));
	errbuf[0] = '\0';
	if (site_check(cfg, fixture_dir, errbuf, sizeof(errbuf)) != PLANT_OK)
		fail_msg("site_check: %s", errbuf);
	config_free(cfg);
	assert_int_equal(trace_len(), 0);
}

/* ---- init failures ---------------------------------------------------------- */

static void test_init_fails_required(void **state)
{
	struct fx *f = *state;
	struct site_config *cfg =
		load(f, GOOD("a") "  { name = \"x\"; module = \"fx_init_fails\"; },\n");
	errbuf[0] = '\0';
	/* site_create takes cfg over, even when it fails. */
	assert_int_not_equal(
		site_create(cfg, fixture_dir, f->base, &f->site, errbuf, sizeof(errbuf)), PLANT_OK);
	f->site = NULL;
	assert_contains(errbuf, "cannot open device /dev/fx0");
	/* a was set up and must be torn down again, without ever starting. */
	char *t = trace();
	assert_int_equal(line_count(t, "a:init"), 1);
	assert_int_equal(line_count(t, "a:start"), 0);
	assert_int_equal(line_count(t, "a:destroy"), 1);
	free(t);
}

static void test_init_fails_optional(void **state)
{
	struct fx *f = *state;
	create(f, GOOD("a") "  { name = \"x\"; module = \"fx_init_fails\"; required = false; },\n");
	struct instance *x = site_find(f->site, "x");
	assert_non_null(x);
	assert_int_equal(x->st, INST_FAILED);
	assert_contains(x->error, "cannot open device /dev/fx0");
	assert_int_equal(site_find(f->site, "a")->st, INST_RUNNING);
}

/* ---- reload ------------------------------------------------------------------- */

static void test_reload_diff(void **state)
{
	struct fx *f = *state;
	create(f, GOOD("a") GOOD("b") GOOD("c"));
	struct instance *a = site_find(f->site, "a");
	size_t mark = trace_len();

	struct site_config *cfg = load(f, GOOD("a") "  { name = \"b\"; module = \"fx_good\"; "
						    "label = \"b\"; count = 9; },\n" GOOD("d"));
	errbuf[0] = '\0';
	if (site_reload(f->site, cfg, errbuf, sizeof(errbuf)) != PLANT_OK)
		fail_msg("site_reload: %s", errbuf);
	assert_true(site_wait_idle(f->site, WAIT_MS));

	char *all = trace();
	const char *t = all + mark;
	/* a: untouched, the very same instance */
	assert_not_contains(t, "a:");
	assert_ptr_equal(site_find(f->site, "a"), a);
	assert_int_equal(a->st, INST_RUNNING);
	/* c: gone */
	assert_order(t, "c:stop", "c:destroy");
	assert_null(site_find(f->site, "c"));
	/* b: restarted with the new settings */
	assert_order(t, "b:stop", "b:destroy");
	assert_order(t, "b:destroy", "b:init");
	assert_order(t, "b:init", "b:start");
	struct instance *b = site_find(f->site, "b");
	assert_non_null(b);
	assert_int_equal(b->st, INST_RUNNING);
	assert_int_equal(json_integer_value(json_object_get(b->config, "count")), 9);
	/* d: new */
	assert_order(t, "d:init", "d:start");
	assert_non_null(site_find(f->site, "d"));
	assert_int_equal(site_find(f->site, "d")->st, INST_RUNNING);
	free(all);

	assert_int_equal(site_instance_count(f->site), 3);
	assert_string_equal(site_instance(f->site, 0)->spec->name, "a");
	assert_string_equal(site_instance(f->site, 1)->spec->name, "b");
	assert_string_equal(site_instance(f->site, 2)->spec->name, "d");
}

static void test_reload_unchanged(void **state)
{
	struct fx *f = *state;
	create(f, GOOD("a") GOOD("b"));
	size_t mark = trace_len();
	struct site_config *cfg = load(f, GOOD("a") GOOD("b"));
	if (site_reload(f->site, cfg, errbuf, sizeof(errbuf)) != PLANT_OK)
		fail_msg("site_reload: %s", errbuf);
	assert_true(site_wait_idle(f->site, WAIT_MS));
	assert_int_equal(trace_len(), mark);
}

static void assert_site_abc_running(struct fx *f, size_t mark)
{
	assert_int_equal(site_instance_count(f->site), 3);
	static const char *const names[] = {"a", "b", "c"};
	for (size_t i = 0; i < 3; i++) {
		struct instance *inst = site_instance(f->site, i);
		assert_string_equal(inst->spec->name, names[i]);
		assert_int_equal(inst->st, INST_RUNNING);
	}
	assert_int_equal(trace_len(), mark);
}

static void test_reload_invalid_unknown_module(void **state)
{
	struct fx *f = *state;
	create(f, GOOD("a") GOOD("b") GOOD("c"));
	size_t mark = trace_len();
	struct site_config *cfg =
		load(f, GOOD("a") "  { name = \"b\"; module = \"fx_nope\"; label = \"b\"; },\n");
	errbuf[0] = '\0';
	/* site_reload takes cfg over, even when it refuses it. */
	assert_int_not_equal(site_reload(f->site, cfg, errbuf, sizeof(errbuf)), PLANT_OK);
	assert_contains(errbuf, "fx_nope");
	assert_true(site_wait_idle(f->site, WAIT_MS));
	assert_site_abc_running(f, mark);
}

static void test_reload_invalid_validate(void **state)
{
	struct fx *f = *state;
	create(f, GOOD("a") GOOD("b") GOOD("c"));
	size_t mark = trace_len();
	struct site_config *cfg = load(f, GOOD("a") GOOD("c") "  { name = \"b\"; module = "
							      "\"fx_good\"; label = \"bad\"; },\n");
	errbuf[0] = '\0';
	assert_int_not_equal(site_reload(f->site, cfg, errbuf, sizeof(errbuf)), PLANT_OK);
	assert_contains(errbuf, "label must not be bad");
	assert_true(site_wait_idle(f->site, WAIT_MS));
	assert_site_abc_running(f, mark);
}

/* ---- the bus ---------------------------------------------------------------- */

static void test_bus_delivery(void **state)
{
	struct fx *f = *state;
	create(f,
	       "  { name = \"pub\"; module = \"fx_good\"; label = \"p\"; publish = \"t.x\"; "
	       "every = \"10ms\"; },\n"
	       "  { name = \"lis\"; module = \"fx_good\"; label = \"l\"; listen = \"t.*\"; },\n"
	       "  { name = \"deaf\"; module = \"fx_good\"; label = \"d\"; listen = \"u.*\"; },\n");
	struct instance *lis = site_find(f->site, "lis");
	assert_non_null(lis);
	if (!pump_until(f->base, &lis->handled, 0))
		fail_msg("no message reached the listener in %d ms", WAIT_MS);
	/* and they keep coming */
	unsigned long long seen = atomic_load(&lis->handled);
	if (!pump_until(f->base, &lis->handled, seen))
		fail_msg("delivery stopped after %llu messages", seen);
	assert_int_equal(atomic_load(&lis->errors), 0);
	assert_int_equal(atomic_load(&site_find(f->site, "deaf")->handled), 0);
}

static void test_handler_errors(void **state)
{
	struct fx *f = *state;
	create(f,
	       "  { name = \"pub\"; module = \"fx_good\"; label = \"p\"; publish = \"t.x\"; "
	       "every = \"10ms\"; },\n"
	       "  { name = \"err\"; module = \"fx_handler_errors\"; listen = \"t.*\"; },\n"
	       "  { name = \"lis\"; module = \"fx_good\"; label = \"l\"; listen = \"t.x\"; },\n");
	struct instance *err = site_find(f->site, "err");
	struct instance *lis = site_find(f->site, "lis");
	assert_non_null(err);
	if (!pump_until(f->base, &err->errors, 2))
		fail_msg("handler errors were not counted: %llu in %d ms",
			 (unsigned long long)atomic_load(&err->errors), WAIT_MS);
	/* The failing instance stays up and the others are not disturbed. */
	assert_int_equal(err->st, INST_RUNNING);
	assert_true(atomic_load(&err->handled) >= atomic_load(&err->errors));
	assert_true(pump_until(f->base, &lis->handled, 0));
	assert_int_equal(atomic_load(&lis->errors), 0);
	for (size_t i = 0; i < site_instance_count(f->site); i++)
		assert_int_equal(site_instance(f->site, i)->st, INST_RUNNING);
	/* the plugin saw every failed delivery (its counter is the first member
	 * of its state) */
	assert_true(atomic_load((atomic_ulong *)err->state) >= 3);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
	const char *fx = getenv("PLANTD_FIXTURE_DIR");
	if (!fx) {
		fprintf(stderr, "PLANTD_FIXTURE_DIR must be set\n");
		return 1;
	}
	snprintf(fixture_dir, sizeof(fixture_dir), "%s", fx);

	/* One trace file for the whole run, named before any thread exists; the
	 * tests empty it. */
	char *tmp = tu_mkdtemp();
	tu_join(trace_file, sizeof(trace_file), tmp, "trace");
	setenv("FX_TRACE", trace_file, 1);

	evthread_use_pthreads();

	const struct CMUnitTest tests[] = {
		T(test_lifecycle_order),
		T(test_config_reaches_plugin),
		T(test_check_validate_fails),
		T(test_check_schema_fails),
		T(test_check_unknown_module),
		T(test_check_ok),
		T(test_init_fails_required),
		T(test_init_fails_optional),
		T(test_reload_diff),
		T(test_reload_unchanged),
		T(test_reload_invalid_unknown_module),
		T(test_reload_invalid_validate),
		T(test_bus_delivery),
		T(test_handler_errors),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	tu_rmtree(tmp);
	free(tmp);
	return rc;
}
