/* loader: finding modules, opening and checking them, applying key tables. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "loader.h"
#include "testutil.h"

static char fixture_dir[PATH_MAX];
static char data_dir[PATH_MAX];
static char errbuf[1024];

static void fixture_file(const char *name, char *out, size_t outlen)
{
	tu_fmt(out, outlen, "%s/%s.so", fixture_dir, name);
}

/* Open fixture `name`, expecting failure; the message is in errbuf and the
 * file in `file`. */
static int open_failing(const char *name, char *file, size_t filelen)
{
	fixture_file(name, file, filelen);
	struct module *mod = NULL;
	errbuf[0] = '\0';
	int rc = loader_open(file, &mod, errbuf, sizeof(errbuf));
	if (rc == PLANT_OK) {
		loader_close(mod);
		fail_msg("loader_open(%s) succeeded", file);
	}
	assert_true(errbuf[0] != '\0');
	return rc;
}

static void abi_text(char *out, size_t outlen, unsigned major, unsigned minor)
{
	snprintf(out, outlen, "built for SDK %u.%u, host provides %u.%u", major, minor,
		 (unsigned)PLANT_ABI_MAJOR, (unsigned)PLANT_ABI_MINOR);
}

/* ---- loader_find ---------------------------------------------------------- */

static void test_find(void **state)
{
	(void)state;
	char *tmp = tu_mkdtemp();
	char d1[PATH_MAX], d2[PATH_MAX], path[2 * PATH_MAX + 2], out[PATH_MAX], want[PATH_MAX];
	tu_join(d1, sizeof(d1), tmp, "d1");
	tu_join(d2, sizeof(d2), tmp, "d2");
	tu_write(tmp, "d1/alpha.so", "", NULL, 0);
	tu_write(tmp, "d1/both.so", "", NULL, 0);
	tu_write(tmp, "d2/beta/beta.so", "", NULL, 0);
	tu_write(tmp, "d2/both.so", "", NULL, 0);
	snprintf(path, sizeof(path), "%s:%s", d1, d2);

	assert_int_equal(loader_find(path, "alpha", out, sizeof(out), errbuf, sizeof(errbuf)),
			 PLANT_OK);
	tu_join(want, sizeof(want), d1, "alpha.so");
	assert_string_equal(out, want);

	assert_int_equal(loader_find(path, "beta", out, sizeof(out), errbuf, sizeof(errbuf)),
			 PLANT_OK);
	tu_join(want, sizeof(want), d2, "beta/beta.so");
	assert_string_equal(out, want);

	/* The first directory on the path wins. */
	assert_int_equal(loader_find(path, "both", out, sizeof(out), errbuf, sizeof(errbuf)),
			 PLANT_OK);
	tu_join(want, sizeof(want), d1, "both.so");
	assert_string_equal(out, want);

	tu_rmtree(tmp);
	free(tmp);
}

static void test_find_fixture(void **state)
{
	(void)state;
	char out[PATH_MAX], want[PATH_MAX];
	assert_int_equal(
		loader_find(fixture_dir, "fx_good", out, sizeof(out), errbuf, sizeof(errbuf)),
		PLANT_OK);
	fixture_file("fx_good", want, sizeof(want));
	assert_string_equal(out, want);
}

static void test_find_not_found(void **state)
{
	(void)state;
	char *tmp = tu_mkdtemp();
	char d1[PATH_MAX], d2[PATH_MAX], path[2 * PATH_MAX + 2], out[PATH_MAX];
	tu_join(d1, sizeof(d1), tmp, "one");
	tu_join(d2, sizeof(d2), tmp, "two");
	tu_write(tmp, "one/other.so", "", NULL, 0);
	snprintf(path, sizeof(path), "%s:%s", d1, d2);
	errbuf[0] = '\0';
	assert_int_equal(loader_find(path, "gamma", out, sizeof(out), errbuf, sizeof(errbuf)),
			 PLANT_E_NOTFOUND);
	assert_contains(errbuf, "gamma");
	assert_contains(errbuf, d1);
	assert_contains(errbuf, d2);
	tu_rmtree(tmp);
	free(tmp);
}

/* ---- loader_open: refusals ------------------------------------------------ */

static void test_open_missing(void **state)
{
	(void)state;
	char file[PATH_MAX];
	open_failing("fx_does_not_exist", file, sizeof(file));
	assert_contains(errbuf, file);
}

static void test_open_not_shared_object(void **state)
{
	(void)state;
	char file[PATH_MAX];
	tu_join(file, sizeof(file), data_dir, "not_a_plugin.so");
	struct module *mod = NULL;
	errbuf[0] = '\0';
	int rc = loader_open(file, &mod, errbuf, sizeof(errbuf));
	assert_int_not_equal(rc, PLANT_OK);
	assert_contains(errbuf, file);
	if (!strstr(errbuf, "shared object") && !strstr(errbuf, "cannot be loaded") &&
	    !strstr(errbuf, "cannot load"))
		fail_msg("\"%s\" does not say the file is not a shared object", errbuf);
}

static void test_open_no_desc(void **state)
{
	(void)state;
	char file[PATH_MAX];
	open_failing("fx_no_desc", file, sizeof(file));
	assert_contains(errbuf, file);
	assert_contains(errbuf, PLANT_PLUGIN_DESC_NAME);
}

static void test_open_major2(void **state)
{
	(void)state;
	char file[PATH_MAX], want[128];
	int rc = open_failing("fx_major2", file, sizeof(file));
	assert_int_equal(rc, PLANT_E_ABI);
	abi_text(want, sizeof(want), 2, 0);
	assert_contains(errbuf, want);
	assert_contains(errbuf, file);
}

static void test_open_major_in_v1(void **state)
{
	(void)state;
	char file[PATH_MAX], want[128];
	int rc = open_failing("fx_major_in_v1", file, sizeof(file));
	assert_int_equal(rc, PLANT_E_ABI);
	abi_text(want, sizeof(want), 2, 0);
	assert_contains(errbuf, want);
	assert_contains(errbuf, file);
}

static void test_open_newer_minor(void **state)
{
	(void)state;
	char file[PATH_MAX], want[128];
	int rc = open_failing("fx_newer_minor", file, sizeof(file));
	assert_int_equal(rc, PLANT_E_ABI);
	abi_text(want, sizeof(want), PLANT_ABI_MAJOR, PLANT_ABI_MINOR + 1);
	assert_contains(errbuf, want);
	assert_contains(errbuf, file);
}

static void test_open_no_init(void **state)
{
	(void)state;
	char file[PATH_MAX];
	open_failing("fx_no_init", file, sizeof(file));
	assert_contains(errbuf, file);
	assert_contains(errbuf, "init");
}

static void test_open_bad_flags(void **state)
{
	(void)state;
	char file[PATH_MAX];
	open_failing("fx_bad_flags", file, sizeof(file));
	assert_contains(errbuf, file);
	assert_contains(errbuf, "flags");
}

static void test_open_small_size(void **state)
{
	(void)state;
	char file[PATH_MAX];
	open_failing("fx_small_size", file, sizeof(file));
	assert_contains(errbuf, file);
	assert_contains(errbuf, "size");
}

/* ---- loader_open: success and sharing ------------------------------------- */

static void test_open_good_shared(void **state)
{
	(void)state;
	char file[PATH_MAX];
	fixture_file("fx_good", file, sizeof(file));
	struct module *m1 = NULL, *m2 = NULL;
	assert_int_equal(loader_open(file, &m1, errbuf, sizeof(errbuf)), PLANT_OK);
	assert_non_null(m1);
	assert_non_null(m1->desc);
	assert_string_equal(m1->desc->name, "fx_good");
	assert_int_equal(m1->refs, 1);
	assert_int_equal(loader_open(file, &m2, errbuf, sizeof(errbuf)), PLANT_OK);
	assert_ptr_equal(m1, m2);
	assert_int_equal(m1->refs, 2);
	loader_close(m2);
	assert_int_equal(m1->refs, 1);
	loader_close(m1);

	/* Closed for good: opening again works. */
	assert_int_equal(loader_open(file, &m1, errbuf, sizeof(errbuf)), PLANT_OK);
	assert_int_equal(m1->refs, 1);
	loader_close(m1);
}

/* ---- loader_check_desc without a file -------------------------------------- */

static int dummy_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		      void **state_out)
{
	(void)self;
	(void)api;
	(void)config;
	*state_out = NULL;
	return PLANT_OK;
}

static void test_check_desc(void **state)
{
	(void)state;
	struct plant_plugin_desc d = {
		PLANT_PLUGIN_HEADER,	 .name = "inline",   .version = "1",
		.description = "inline", .init = dummy_init,
	};
	assert_int_equal(loader_check_desc(&d, "/x/inline.so", errbuf, sizeof(errbuf)), PLANT_OK);

	/* An older minor is fine, a newer one is not. */
	if (PLANT_ABI_MINOR > 0) {
		d.abi_minor = PLANT_ABI_MINOR - 1;
		assert_int_equal(loader_check_desc(&d, "/x/inline.so", errbuf, sizeof(errbuf)),
				 PLANT_OK);
	}
	d.abi_minor = PLANT_ABI_MINOR + 1;
	errbuf[0] = '\0';
	assert_int_equal(loader_check_desc(&d, "/x/inline.so", errbuf, sizeof(errbuf)),
			 PLANT_E_ABI);
	char want[128];
	abi_text(want, sizeof(want), PLANT_ABI_MAJOR, PLANT_ABI_MINOR + 1);
	assert_contains(errbuf, want);
	assert_contains(errbuf, "/x/inline.so");

	d.abi_minor = PLANT_ABI_MINOR;
	d.flags = PLANT_PLUGIN_KNOWN_FLAGS;
	assert_int_equal(loader_check_desc(&d, "/x/inline.so", errbuf, sizeof(errbuf)), PLANT_OK);
	d.flags = 0x40u;
	assert_int_not_equal(loader_check_desc(&d, "/x/inline.so", errbuf, sizeof(errbuf)),
			     PLANT_OK);
	assert_contains(errbuf, "flags");
}

/* ---- loader_apply_schema ---------------------------------------------------- */

struct schema_fixture {
	struct module *mod;
	json_t *settings; /* kept: bad_key may point into it */
	json_t *config;
	const char *bad_key;
};

static int schema_setup(void **state)
{
	static struct schema_fixture f;
	char file[PATH_MAX];
	memset(&f, 0, sizeof(f));
	fixture_file("fx_good", file, sizeof(file));
	if (loader_open(file, &f.mod, errbuf, sizeof(errbuf)) != PLANT_OK) {
		print_error("cannot open %s: %s\n", file, errbuf);
		return -1;
	}
	*state = &f;
	return 0;
}

static int schema_teardown(void **state)
{
	struct schema_fixture *f = *state;
	json_decref(f->config);
	json_decref(f->settings);
	loader_close(f->mod);
	return 0;
}

/* Apply the schema to settings given as JSON text. */
static int apply(struct schema_fixture *f, const char *settings_text)
{
	json_error_t jerr;
	json_decref(f->settings);
	json_decref(f->config);
	f->config = NULL;
	f->settings = json_loads(settings_text, 0, &jerr);
	if (!f->settings)
		fail_msg("bad test JSON %s: %s", settings_text, jerr.text);
	f->bad_key = NULL;
	errbuf[0] = '\0';
	int rc = loader_apply_schema(f->mod->desc, f->settings, &f->config, &f->bad_key, errbuf,
				     sizeof(errbuf));
	if (rc == PLANT_OK)
		assert_non_null(f->config);
	return rc;
}

static json_int_t int_of(const json_t *config, const char *key)
{
	const json_t *v = json_object_get(config, key);
	if (!json_is_integer(v))
		fail_msg("\"%s\" is not an integer in the config", key);
	return json_integer_value(v);
}

static void test_schema_defaults(void **state)
{
	struct schema_fixture *f = *state;
	assert_int_equal(apply(f, "{\"label\": \"x\"}"), PLANT_OK);
	assert_int_equal(int_of(f->config, "count"), 3);
	const json_t *ratio = json_object_get(f->config, "ratio");
	assert_true(json_is_real(ratio));
	assert_true(json_real_value(ratio) == 0.5);
	assert_true(json_is_true(json_object_get(f->config, "enabled")));
	assert_int_equal(int_of(f->config, "period"), 2000);
	assert_int_equal(int_of(f->config, "every"), 100);
	assert_string_equal(json_string_value(json_object_get(f->config, "label")), "x");
	/* Optional keys without a default stay absent. */
	assert_null(json_object_get(f->config, "listen"));
	assert_null(json_object_get(f->config, "publish"));
}

static void test_schema_given_values(void **state)
{
	struct schema_fixture *f = *state;
	assert_int_equal(apply(f, "{\"label\": \"y\", \"count\": 7, \"ratio\": 0.25, "
				  "\"enabled\": false, \"listen\": \"a.b\"}"),
			 PLANT_OK);
	assert_int_equal(int_of(f->config, "count"), 7);
	assert_true(json_real_value(json_object_get(f->config, "ratio")) == 0.25);
	assert_true(json_is_false(json_object_get(f->config, "enabled")));
	assert_string_equal(json_string_value(json_object_get(f->config, "listen")), "a.b");
}

static void test_schema_int_as_double(void **state)
{
	struct schema_fixture *f = *state;
	assert_int_equal(apply(f, "{\"label\": \"x\", \"ratio\": 2}"), PLANT_OK);
	const json_t *ratio = json_object_get(f->config, "ratio");
	assert_true(json_is_real(ratio));
	assert_true(json_real_value(ratio) == 2.0);
}

static void test_schema_wrong_type(void **state)
{
	struct schema_fixture *f = *state;
	assert_int_not_equal(apply(f, "{\"label\": 5}"), PLANT_OK);
	assert_non_null(f->bad_key);
	assert_string_equal(f->bad_key, "label");
	assert_contains(errbuf, "string");

	assert_int_not_equal(apply(f, "{\"label\": \"x\", \"count\": \"many\"}"), PLANT_OK);
	assert_non_null(f->bad_key);
	assert_string_equal(f->bad_key, "count");

	assert_int_not_equal(apply(f, "{\"label\": \"x\", \"count\": 1.5}"), PLANT_OK);
	assert_non_null(f->bad_key);
	assert_string_equal(f->bad_key, "count");

	assert_int_not_equal(apply(f, "{\"label\": \"x\", \"enabled\": \"yes\"}"), PLANT_OK);
	assert_non_null(f->bad_key);
	assert_string_equal(f->bad_key, "enabled");
}

static void test_schema_missing_required(void **state)
{
	struct schema_fixture *f = *state;
	assert_int_not_equal(apply(f, "{\"count\": 1}"), PLANT_OK);
	assert_non_null(f->bad_key);
	assert_string_equal(f->bad_key, "label");
	assert_contains(errbuf, "label");
}

static void test_schema_unknown_key(void **state)
{
	struct schema_fixture *f = *state;
	assert_int_not_equal(apply(f, "{\"label\": \"x\", \"colour\": \"red\"}"), PLANT_OK);
	assert_non_null(f->bad_key);
	assert_string_equal(f->bad_key, "colour");
	assert_contains(errbuf, "colour");
}

static void test_schema_durations(void **state)
{
	struct schema_fixture *f = *state;
	static const struct {
		const char *json;
		json_int_t ms;
	} cases[] = {
		{"\"250ms\"", 250},  {"\"60s\"", 60000},  {"\"15m\"", 900000},
		{"\"1h\"", 3600000}, {"\"2h\"", 7200000}, {"\"1d\"", 86400000},
		{"3", 3000},	     {"1.5", 1500},	  {"0", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[128];
		snprintf(text, sizeof(text), "{\"label\": \"x\", \"period\": %s}", cases[i].json);
		if (apply(f, text) != PLANT_OK)
			fail_msg("period %s refused: %s", cases[i].json, errbuf);
		if (int_of(f->config, "period") != cases[i].ms)
			fail_msg("period %s gave %lld ms, want %lld", cases[i].json,
				 (long long)int_of(f->config, "period"), (long long)cases[i].ms);
	}
}

static void test_schema_bad_duration(void **state)
{
	struct schema_fixture *f = *state;
	static const char *const bad[] = {"\"5 parsecs\"", "\"\"", "\"ms\"", "true", "[1]"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[128];
		snprintf(text, sizeof(text), "{\"label\": \"x\", \"period\": %s}", bad[i]);
		if (apply(f, text) == PLANT_OK)
			fail_msg("period %s accepted", bad[i]);
		assert_non_null(f->bad_key);
		assert_string_equal(f->bad_key, "period");
	}
}

static void test_schema_no_table(void **state)
{
	(void)state;
	/* A module without a table gets its settings unchecked. */
	struct plant_plugin_desc d = {
		PLANT_PLUGIN_HEADER,
		.name = "inline",
		.init = dummy_init,
	};
	json_t *settings = json_pack("{sssi}", "anything", "goes", "n", 1);
	json_t *config = NULL;
	const char *bad_key = NULL;
	assert_int_equal(
		loader_apply_schema(&d, settings, &config, &bad_key, errbuf, sizeof(errbuf)),
		PLANT_OK);
	assert_non_null(config);
	assert_true(json_equal(config, settings));
	json_decref(config);
	json_decref(settings);
}

int main(void)
{
	const char *fx = getenv("PLANTD_FIXTURE_DIR");
	const char *data = getenv("PLANTD_TEST_DATA");
	if (!fx || !data) {
		fprintf(stderr, "PLANTD_FIXTURE_DIR and PLANTD_TEST_DATA must be set\n");
		return 1;
	}
	snprintf(fixture_dir, sizeof(fixture_dir), "%s", fx);
	snprintf(data_dir, sizeof(data_dir), "%s", data);

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_find),
		cmocka_unit_test(test_find_fixture),
		cmocka_unit_test(test_find_not_found),
		cmocka_unit_test(test_open_missing),
		cmocka_unit_test(test_open_not_shared_object),
		cmocka_unit_test(test_open_no_desc),
		cmocka_unit_test(test_open_major2),
		cmocka_unit_test(test_open_major_in_v1),
		cmocka_unit_test(test_open_newer_minor),
		cmocka_unit_test(test_open_no_init),
		cmocka_unit_test(test_open_bad_flags),
		cmocka_unit_test(test_open_small_size),
		cmocka_unit_test(test_open_good_shared),
		cmocka_unit_test(test_check_desc),
		cmocka_unit_test_setup_teardown(test_schema_defaults, schema_setup,
						schema_teardown),
		cmocka_unit_test_setup_teardown(test_schema_given_values, schema_setup,
						schema_teardown),
		cmocka_unit_test_setup_teardown(test_schema_int_as_double, schema_setup,
						schema_teardown),
		cmocka_unit_test_setup_teardown(test_schema_wrong_type, schema_setup,
						schema_teardown),
		cmocka_unit_test_setup_teardown(test_schema_missing_required, schema_setup,
						schema_teardown),
		cmocka_unit_test_setup_teardown(test_schema_unknown_key, schema_setup,
						schema_teardown),
		cmocka_unit_test_setup_teardown(test_schema_durations, schema_setup,
						schema_teardown),
		cmocka_unit_test_setup_teardown(test_schema_bad_duration, schema_setup,
						schema_teardown),
		cmocka_unit_test(test_schema_no_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
