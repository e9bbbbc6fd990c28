/* config: loading files, conf.d directories, overlays, and error messages
 * that name file and line. Every config tree is written by the test. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "plantd/plantd.h"
#include "config.h"
#include "testutil.h"

static char errbuf[1024];

struct tmpdir {
	char *dir;
};

static int tmp_setup(void **state)
{
	static struct tmpdir t;
	t.dir = tu_mkdtemp();
	*state = &t;
	return 0;
}

static int tmp_teardown(void **state)
{
	struct tmpdir *t = *state;
	tu_rmtree(t->dir);
	free(t->dir);
	t->dir = NULL;
	return 0;
}

/* Load, expecting success. */
static struct site_config *load_ok(const char *path, const char *env)
{
	struct site_config *cfg = NULL;
	errbuf[0] = '\0';
	int rc = config_load(path, env, &cfg, errbuf, sizeof(errbuf));
	if (rc != PLANT_OK)
		fail_msg("config_load(%s, %s) failed (%d): %s", path, env ? env : "NULL", rc,
			 errbuf);
	assert_non_null(cfg);
	return cfg;
}

/* Load, expecting PLANT_E_CONFIG; the message is in errbuf. */
static void load_fails(const char *path, const char *env)
{
	struct site_config *cfg = NULL;
	errbuf[0] = '\0';
	int rc = config_load(path, env, &cfg, errbuf, sizeof(errbuf));
	if (rc == PLANT_OK) {
		config_free(cfg);
		fail_msg("config_load(%s) succeeded", path);
	}
	assert_int_equal(rc, PLANT_E_CONFIG);
	assert_true(errbuf[0] != '\0');
}

/* "PATH:LINE:" */
static void file_line(char *out, size_t outlen, const char *path, int line)
{
	int n = snprintf(out, outlen, "%s:%d:", path, line);
	assert_true(n > 0 && (size_t)n < outlen);
}

static const char *str_setting(const struct instance_spec *spec, const char *key)
{
	const json_t *v = json_object_get(spec->settings, key);
	if (!json_is_string(v))
		fail_msg("instance %s: %s is not a string setting", spec->name, key);
	return json_string_value(v);
}

static json_int_t int_setting(const struct instance_spec *spec, const char *key)
{
	const json_t *v = json_object_get(spec->settings, key);
	if (!json_is_integer(v))
		fail_msg("instance %s: %s is not an integer setting", spec->name, key);
	return json_integer_value(v);
}

/* ---- successful loads --------------------------------------------------- */

static const char single_conf[] =
	"# plantd test config\n"							/* 1 */
	"site = \"plant-7\";\n"								/* 2 */
	"data_dir = \"/tmp/x\";\n"							/* 3 */
	"plugin_path = \"a:b\";\n"							/* 4 */
	"workers = 2;\n"								/* 5 */
	"log_level = \"debug\";\n"							/* 6 */
	"log_file = \"x.log\";\n"							/* 7 */
	"shutdown_timeout = \"5s\";\n"							/* 8 */
	"plugins = (\n"									/* 9 */
	"  { name = \"a\"; module = \"fx_good\"; label = \"x\"; required = false; },\n" /* 10 */
	"  { name = \"b\"; module = \"fx_good\";\n"					/* 11 */
	"    label = \"y\";\n"								/* 12 */
	"    count = 4; }\n"								/* 13 */
	");\n";										/* 14 */

static void test_single_file(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX];
	tu_write(t->dir, "site.conf", single_conf, path, sizeof(path));
	struct site_config *cfg = load_ok(path, NULL);

	char want[2 * PATH_MAX + 8];
	assert_string_equal(cfg->source, path);
	assert_string_equal(cfg->dir, t->dir);
	assert_string_equal(cfg->site, "plant-7");
	assert_string_equal(cfg->data_dir, "/tmp/x");
	/* relative directories start at the root file's directory */
	tu_fmt(want, sizeof(want), "%s/a:%s/b", t->dir, t->dir);
	assert_string_equal(cfg->plugin_path, want);
	assert_int_equal(cfg->workers, 2);
	assert_int_equal(cfg->log_level, PLANT_LOG_DEBUG);
	assert_non_null(cfg->log_file);
	assert_contains(cfg->log_file, "x.log");
	assert_int_equal(cfg->shutdown_timeout_ms, 5000);

	assert_int_equal(cfg->n_instances, 2);
	const struct instance_spec *a = &cfg->instances[0];
	const struct instance_spec *b = &cfg->instances[1];
	assert_string_equal(a->name, "a");
	assert_string_equal(a->module, "fx_good");
	assert_int_equal(a->required, 0);
	assert_string_equal(a->file, path);
	assert_int_equal(a->line, 10);
	/* name, module and required are not settings */
	assert_int_equal(json_object_size(a->settings), 1);
	assert_string_equal(str_setting(a, "label"), "x");

	assert_string_equal(b->name, "b");
	assert_int_equal(b->required, 1);
	assert_int_equal(b->line, 11);
	assert_int_equal(json_object_size(b->settings), 2);
	assert_string_equal(str_setting(b, "label"), "y");
	assert_int_equal(int_setting(b, "count"), 4);

	assert_ptr_equal(config_find_instance(cfg, "b"), b);
	assert_ptr_equal(config_find_instance(cfg, "a"), a);
	assert_null(config_find_instance(cfg, "zz"));
	config_free(cfg);
}

static void test_defaults(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX];
	tu_write(t->dir, "min.conf", "plugins = ( { name = \"a\"; module = \"m\"; } );\n", path,
		 sizeof(path));
	struct site_config *cfg = load_ok(path, NULL);
	assert_string_equal(cfg->site, "plantd");
	assert_string_equal(cfg->dir, t->dir);
	/* "var" in the working directory */
	assert_non_null(cfg->data_dir);
	assert_string_equal(cfg->data_dir, "var");
	assert_null(cfg->plugin_path);
	assert_int_equal(cfg->workers, 0);
	assert_int_equal(cfg->log_level, -1);
	assert_null(cfg->log_file);
	assert_int_equal(cfg->shutdown_timeout_ms, 10000);
	assert_int_equal(cfg->n_instances, 1);
	assert_int_equal(cfg->instances[0].required, 1);
	assert_int_equal(json_object_size(cfg->instances[0].settings), 0);
	config_free(cfg);
}

static void test_settings_types(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX];
	tu_write(t->dir, "types.conf",
		 "plugins = ( { name = \"a\"; module = \"m\";\n"
		 "  i = 5; d = 1.5; b = true; s = \"str\"; big = 5000000000L;\n"
		 "  arr = [1, 2, 3]; lst = (1, \"two\"); grp = { x = 1; y = \"z\"; }; } );\n",
		 path, sizeof(path));
	struct site_config *cfg = load_ok(path, NULL);
	const struct instance_spec *a = &cfg->instances[0];
	assert_int_equal(int_setting(a, "i"), 5);
	assert_true(json_is_real(json_object_get(a->settings, "d")));
	assert_true(json_real_value(json_object_get(a->settings, "d")) == 1.5);
	assert_true(json_is_true(json_object_get(a->settings, "b")));
	assert_string_equal(str_setting(a, "s"), "str");
	assert_int_equal(int_setting(a, "big"), 5000000000LL);
	const json_t *arr = json_object_get(a->settings, "arr");
	assert_true(json_is_array(arr));
	assert_int_equal(json_array_size(arr), 3);
	const json_t *lst = json_object_get(a->settings, "lst");
	assert_true(json_is_array(lst));
	assert_int_equal(json_array_size(lst), 2);
	const json_t *grp = json_object_get(a->settings, "grp");
	assert_true(json_is_object(grp));
	assert_string_equal(json_string_value(json_object_get(grp, "y")), "z");
	config_free(cfg);
}

static void test_confd_order(void **state)
{
	struct tmpdir *t = *state;
	char dir[PATH_MAX], a_file[PATH_MAX];
	tu_join(dir, sizeof(dir), t->dir, "conf.d");
	/* Written out of order on purpose: readdir() order must not matter. */
	tu_write(t->dir, "conf.d/20-b.conf",
		 "plugins = ( { name = \"b1\"; module = \"fx_good\"; label = \"b\"; } );\n", NULL,
		 0);
	tu_write(t->dir, "conf.d/plantd.conf",
		 "site = \"plant-d\";\n"
		 "plugins = ( { name = \"p0\"; module = \"fx_good\"; label = \"0\"; } );\n",
		 NULL, 0);
	tu_write(t->dir, "conf.d/10-a.conf",
		 "# fragment a\n"
		 "plugins = (\n"
		 "  { name = \"a1\"; module = \"fx_good\"; label = \"a\"; },\n"
		 "  { name = \"a2\"; module = \"fx_good\"; label = \"a\"; }\n"
		 ");\n",
		 a_file, sizeof(a_file));
	tu_write(t->dir, "conf.d/notes.txt", "this is not { a config", NULL, 0);

	struct site_config *cfg = load_ok(dir, NULL);
	assert_string_equal(cfg->source, dir);
	assert_string_equal(cfg->dir, dir);
	assert_string_equal(cfg->site, "plant-d");
	assert_int_equal(cfg->n_instances, 4);
	static const char *const order[] = {"p0", "a1", "a2", "b1"};
	for (size_t i = 0; i < 4; i++) {
		if (strcmp(cfg->instances[i].name, order[i]) != 0)
			fail_msg("instance %zu is %s, want %s", i, cfg->instances[i].name,
				 order[i]);
	}
	const struct instance_spec *a2 = config_find_instance(cfg, "a2");
	assert_non_null(a2);
	assert_string_equal(a2->file, a_file);
	assert_int_equal(a2->line, 4);
	config_free(cfg);
}

static void write_env_tree(const char *root, char *dir, size_t dirlen, char *overlay,
			   size_t overlaylen)
{
	tu_join(dir, dirlen, root, "conf.d");
	tu_write(root, "conf.d/plantd.conf",
		 "site = \"plant-7\";\n"
		 "plugins = (\n"
		 "  { name = \"a\"; module = \"fx_good\"; label = \"a\"; count = 1; },\n"
		 "  { name = \"b\"; module = \"fx_good\"; label = \"b\"; }\n"
		 ");\n",
		 NULL, 0);
	tu_write(root, "conf.d/env/dev.conf",
		 "site = \"plant-7-dev\";\n"				      /* 1 */
		 "plugins = (\n"					      /* 2 */
		 "  { name = \"a\"; count = 9; },\n"			      /* 3 */
		 "  { name = \"c\"; module = \"fx_good\"; label = \"c\"; }\n" /* 4 */
		 ");\n",
		 overlay, overlaylen);
}

static void test_env_overlay(void **state)
{
	struct tmpdir *t = *state;
	char dir[PATH_MAX], overlay[PATH_MAX], base[PATH_MAX], where[PATH_MAX + 16];
	char want[PATH_MAX + 16];
	write_env_tree(t->dir, dir, sizeof(dir), overlay, sizeof(overlay));
	tu_join(base, sizeof(base), dir, "plantd.conf");

	/* Without the overlay. */
	struct site_config *cfg = load_ok(dir, NULL);
	assert_string_equal(cfg->site, "plant-7");
	assert_int_equal(cfg->n_instances, 2);
	assert_int_equal(int_setting(config_find_instance(cfg, "a"), "count"), 1);
	config_free(cfg);

	cfg = load_ok(dir, "dev");
	assert_string_equal(cfg->site, "plant-7-dev");
	assert_int_equal(cfg->n_instances, 3);
	assert_string_equal(cfg->instances[0].name, "a");
	assert_string_equal(cfg->instances[1].name, "b");
	assert_string_equal(cfg->instances[2].name, "c");

	const struct instance_spec *a = config_find_instance(cfg, "a");
	assert_int_equal(int_setting(a, "count"), 9);
	assert_string_equal(str_setting(a, "label"), "a"); /* kept from the base */
	assert_string_equal(a->module, "fx_good");
	/* The entry starts in the base file; the key the overlay set is
	 * located in the overlay. */
	assert_string_equal(a->file, base);
	assert_int_equal(a->line, 3);
	assert_int_equal(instance_spec_line(a, "count"), 3);
	tu_fmt(want, sizeof(want), "%s:3", overlay);
	assert_string_equal(instance_spec_where(a, "count", where, sizeof(where)), want);
	tu_fmt(want, sizeof(want), "%s:3", base);
	assert_string_equal(instance_spec_where(a, "label", where, sizeof(where)), want);
	assert_string_equal(instance_spec_where(a, NULL, where, sizeof(where)), want);

	const struct instance_spec *b = config_find_instance(cfg, "b");
	assert_int_equal(json_object_size(b->settings), 1);
	assert_string_equal(b->file, base);

	const struct instance_spec *c = config_find_instance(cfg, "c");
	assert_string_equal(c->module, "fx_good");
	assert_string_equal(c->file, overlay);
	assert_int_equal(c->line, 4);
	config_free(cfg);
}

static void test_env_overlay_single_file(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX];
	tu_write(t->dir, "site.conf", single_conf, path, sizeof(path));
	tu_write(t->dir, "env/prod.conf", "workers = 8;\n", NULL, 0);
	struct site_config *cfg = load_ok(path, "prod");
	assert_int_equal(cfg->workers, 8);
	assert_string_equal(cfg->site, "plant-7");
	assert_int_equal(cfg->n_instances, 2);
	config_free(cfg);
}

static void test_include(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX], more[PATH_MAX];
	tu_write(t->dir, "more.conf",
		 "workers = 3;\n"
		 "plugins = ( { name = \"i\"; module = \"fx_good\"; label = \"i\"; } );\n",
		 more, sizeof(more));
	tu_write(t->dir, "main.conf",
		 "site = \"inc\";\n"
		 "@include \"more.conf\"\n",
		 path, sizeof(path));
	/* The include is relative to the including file, not to the cwd. */
	char cwd[PATH_MAX];
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir("/"), 0);
	struct site_config *cfg = NULL;
	int rc = config_load(path, NULL, &cfg, errbuf, sizeof(errbuf));
	assert_int_equal(chdir(cwd), 0);
	if (rc != PLANT_OK)
		fail_msg("config_load: %s", errbuf);
	assert_string_equal(cfg->site, "inc");
	assert_int_equal(cfg->workers, 3);
	const struct instance_spec *i = config_find_instance(cfg, "i");
	assert_non_null(i);
	assert_string_equal(i->file, more);
	assert_int_equal(i->line, 2);
	config_free(cfg);
}

/* ---- errors --------------------------------------------------------------- */

static void test_missing_file(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX];
	tu_join(path, sizeof(path), t->dir, "nope.conf");
	load_fails(path, NULL);
	assert_contains(errbuf, path);
}

static void test_syntax_error(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX], want[PATH_MAX + 16];
	tu_write(t->dir, "bad.conf",
		 "site = \"x\";\n"
		 "workers = ;\n",
		 path, sizeof(path));
	load_fails(path, NULL);
	file_line(want, sizeof(want), path, 2);
	assert_starts_with(errbuf, want);
}

static void test_syntax_error_in_fragment(void **state)
{
	struct tmpdir *t = *state;
	char dir[PATH_MAX], frag[PATH_MAX], want[PATH_MAX + 16];
	tu_join(dir, sizeof(dir), t->dir, "conf.d");
	tu_write(t->dir, "conf.d/plantd.conf", "site = \"x\";\n", NULL, 0);
	tu_write(t->dir, "conf.d/50-broken.conf",
		 "# ok\n"
		 "# ok\n"
		 "workers = ;\n",
		 frag, sizeof(frag));
	load_fails(dir, NULL);
	file_line(want, sizeof(want), frag, 3);
	assert_starts_with(errbuf, want);
}

static void test_duplicate_instance(void **state)
{
	struct tmpdir *t = *state;
	char dir[PATH_MAX], second[PATH_MAX], want[PATH_MAX + 16];
	tu_join(dir, sizeof(dir), t->dir, "conf.d");
	tu_write(t->dir, "conf.d/plantd.conf", "site = \"d\";\n", NULL, 0);
	tu_write(t->dir, "conf.d/10-a.conf",
		 "# fragment\n"
		 "plugins = (\n"
		 "  { name = \"dup_one\"; module = \"fx_good\"; label = \"1\"; }\n"
		 ");\n",
		 NULL, 0);
	tu_write(t->dir, "conf.d/20-b.conf",
		 "# another\n"
		 "\n"
		 "plugins = ( { name = \"y\"; module = \"fx_good\"; label = \"2\"; },\n"
		 "  { name = \"dup_one\"; module = \"fx_good\"; label = \"3\"; } );\n",
		 second, sizeof(second));
	load_fails(dir, NULL);
	file_line(want, sizeof(want), second, 4);
	assert_starts_with(errbuf, want);
	assert_contains(errbuf, "dup_one");
}

static void test_duplicate_in_one_file(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX], want[PATH_MAX + 16];
	tu_write(t->dir, "dup.conf",
		 "plugins = (\n"
		 "  { name = \"twice\"; module = \"m\"; },\n"
		 "  { name = \"twice\"; module = \"m\"; }\n"
		 ");\n",
		 path, sizeof(path));
	load_fails(path, NULL);
	file_line(want, sizeof(want), path, 3);
	assert_starts_with(errbuf, want);
	assert_contains(errbuf, "twice");
}

static void test_entry_without_module(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX], want[PATH_MAX + 16];
	tu_write(t->dir, "nomod.conf",
		 "site = \"s\";\n"
		 "plugins = (\n"
		 "  { name = \"nomod\"; label = \"x\"; }\n"
		 ");\n",
		 path, sizeof(path));
	load_fails(path, NULL);
	file_line(want, sizeof(want), path, 3);
	assert_starts_with(errbuf, want);
	assert_contains(errbuf, "module");
}

static void test_entry_without_name(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX], want[PATH_MAX + 16];
	tu_write(t->dir, "noname.conf",
		 "plugins = (\n"
		 "  { module = \"fx_good\"; label = \"x\"; }\n"
		 ");\n",
		 path, sizeof(path));
	load_fails(path, NULL);
	file_line(want, sizeof(want), path, 2);
	assert_starts_with(errbuf, want);
	assert_contains(errbuf, "name");
}

static void test_missing_env_overlay(void **state)
{
	struct tmpdir *t = *state;
	char dir[PATH_MAX], overlay[PATH_MAX];
	write_env_tree(t->dir, dir, sizeof(dir), overlay, sizeof(overlay));
	load_fails(dir, "staging");
	assert_contains(errbuf, "env/staging.conf");
}

static void test_unknown_top_level(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX], want[PATH_MAX + 16];
	tu_write(t->dir, "unknown.conf",
		 "site = \"s\";\n"
		 "workers = 1;\n"
		 "colour = \"red\";\n"
		 "plugins = ();\n",
		 path, sizeof(path));
	load_fails(path, NULL);
	file_line(want, sizeof(want), path, 3);
	assert_starts_with(errbuf, want);
	assert_contains(errbuf, "colour");
}

static void test_top_level_wrong_type(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX], want[PATH_MAX + 16];
	tu_write(t->dir, "wrongtype.conf",
		 "site = \"s\";\n"
		 "workers = \"two\";\n",
		 path, sizeof(path));
	load_fails(path, NULL);
	file_line(want, sizeof(want), path, 2);
	assert_starts_with(errbuf, want);
	assert_contains(errbuf, "workers");
}

static void test_bad_shutdown_timeout(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX], want[PATH_MAX + 16];
	tu_write(t->dir, "timeout.conf",
		 "site = \"s\";\n"
		 "shutdown_timeout = \"5 parsecs\";\n",
		 path, sizeof(path));
	load_fails(path, NULL);
	file_line(want, sizeof(want), path, 2);
	assert_starts_with(errbuf, want);
}

/* ---- instance specs ------------------------------------------------------- */

static void test_instance_spec_line(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX];
	tu_write(t->dir, "site.conf", single_conf, path, sizeof(path));
	struct site_config *cfg = load_ok(path, NULL);
	const struct instance_spec *b = config_find_instance(cfg, "b");
	assert_int_equal(instance_spec_line(b, "label"), 12);
	assert_int_equal(instance_spec_line(b, "count"), 13);
	assert_int_equal(instance_spec_line(b, "no_such_key"), b->line);
	const struct instance_spec *a = config_find_instance(cfg, "a");
	assert_int_equal(instance_spec_line(a, "label"), 10);

	char where[PATH_MAX + 16], want[PATH_MAX + 16];
	tu_fmt(want, sizeof(want), "%s:13", path);
	assert_string_equal(instance_spec_where(b, "count", where, sizeof(where)), want);
	tu_fmt(want, sizeof(want), "%s:11", path);
	assert_string_equal(instance_spec_where(b, NULL, where, sizeof(where)), want);
	assert_string_equal(instance_spec_where(b, "no_such_key", where, sizeof(where)), want);
	config_free(cfg);
}

static void test_instance_spec_equal(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX];
	tu_write(t->dir, "site.conf", single_conf, path, sizeof(path));
	struct site_config *c1 = load_ok(path, NULL);
	struct site_config *c2 = load_ok(path, NULL);
	assert_true(
		instance_spec_equal(config_find_instance(c1, "a"), config_find_instance(c2, "a")));
	assert_true(
		instance_spec_equal(config_find_instance(c1, "b"), config_find_instance(c2, "b")));
	assert_false(
		instance_spec_equal(config_find_instance(c1, "a"), config_find_instance(c2, "b")));
	config_free(c2);

	/* One setting differs. */
	tu_write(t->dir, "site.conf",
		 "plugins = (\n"
		 "  { name = \"a\"; module = \"fx_good\"; label = \"x\"; required = false; },\n"
		 "  { name = \"b\"; module = \"fx_good\"; label = \"y\"; count = 5; }\n"
		 ");\n",
		 NULL, 0);
	c2 = load_ok(path, NULL);
	assert_true(
		instance_spec_equal(config_find_instance(c1, "a"), config_find_instance(c2, "a")));
	assert_false(
		instance_spec_equal(config_find_instance(c1, "b"), config_find_instance(c2, "b")));
	config_free(c2);

	/* Another module with the same settings. */
	tu_write(t->dir, "site.conf",
		 "plugins = (\n"
		 "  { name = \"a\"; module = \"fx_other\"; label = \"x\"; required = false; }\n"
		 ");\n",
		 NULL, 0);
	c2 = load_ok(path, NULL);
	assert_false(
		instance_spec_equal(config_find_instance(c1, "a"), config_find_instance(c2, "a")));
	config_free(c2);
	config_free(c1);
}

static void test_instance_spec_equal_ignores_position(void **state)
{
	struct tmpdir *t = *state;
	char path[PATH_MAX];
	tu_write(t->dir, "site.conf", single_conf, path, sizeof(path));
	struct site_config *c1 = load_ok(path, NULL);
	/* The same instances, moved down by a comment and reordered keys: a
	 * reload must not restart them. */
	tu_write(t->dir, "site.conf",
		 "# a new comment\n"
		 "\n"
		 "plugins = (\n"
		 "  { name = \"b\"; module = \"fx_good\"; count = 4; label = \"y\"; },\n"
		 "  { name = \"a\"; module = \"fx_good\"; label = \"x\"; required = false; }\n"
		 ");\n",
		 NULL, 0);
	struct site_config *c2 = load_ok(path, NULL);
	assert_true(
		instance_spec_equal(config_find_instance(c1, "a"), config_find_instance(c2, "a")));
	assert_true(
		instance_spec_equal(config_find_instance(c1, "b"), config_find_instance(c2, "b")));
	config_free(c2);
	config_free(c1);
}

/* ---- parse_duration_ms ---------------------------------------------------- */

static void test_parse_duration(void **state)
{
	(void)state;
	static const struct {
		const char *json;
		uint64_t ms;
	} good[] = {
		{"\"250ms\"", 250},   {"\"60s\"", 60000}, {"\"15m\"", 900000}, {"\"2h\"", 7200000},
		{"\"1d\"", 86400000}, {"\"0s\"", 0},	  {"5", 5000},	       {"0", 0},
		{"1.5", 1500},	      {"0.25", 250},	  {"\"1h\"", 3600000},
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		json_t *v = json_loads(good[i].json, JSON_DECODE_ANY, NULL);
		assert_non_null(v);
		uint64_t ms = 12345;
		int rc = parse_duration_ms(v, &ms);
		json_decref(v);
		if (rc != PLANT_OK)
			fail_msg("%s refused (%d)", good[i].json, rc);
		if (ms != good[i].ms)
			fail_msg("%s gave %llu ms, want %llu", good[i].json, (unsigned long long)ms,
				 (unsigned long long)good[i].ms);
	}
	static const char *const bad[] = {
		"\"5 parsecs\"", "\"\"", "\"ms\"", "\"5x\"", "\"-1s\"", "-5",
		"true",		 "null", "[1]",	   "{}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *v = json_loads(bad[i], JSON_DECODE_ANY, NULL);
		assert_non_null(v);
		uint64_t ms = 0;
		int rc = parse_duration_ms(v, &ms);
		json_decref(v);
		if (rc == PLANT_OK)
			fail_msg("%s accepted as %llu ms", bad[i], (unsigned long long)ms);
	}
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, tmp_setup, tmp_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_single_file),
		T(test_defaults),
		T(test_settings_types),
		T(test_confd_order),
		T(test_env_overlay),
		T(test_env_overlay_single_file),
		T(test_include),
		T(test_missing_file),
		T(test_syntax_error),
		T(test_syntax_error_in_fragment),
		T(test_duplicate_instance),
		T(test_duplicate_in_one_file),
		T(test_entry_without_module),
		T(test_entry_without_name),
		T(test_missing_env_overlay),
		T(test_unknown_top_level),
		T(test_top_level_wrong_type),
		T(test_bad_shutdown_timeout),
		T(test_instance_spec_line),
		T(test_instance_spec_equal),
		T(test_instance_spec_equal_ignores_position),
		cmocka_unit_test(test_parse_duration),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
