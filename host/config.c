#include "config.h"
#include "httpc.h"

#include <dirent.h>
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "plantd/plantd.h"
#include "log.h"

#define ROOT_NAME "plantd.conf"

static char *path_join(const char *dir, const char *name)
{
	if (name[0] == '/' || !dir)
		return strdup(name);
	char *out;
	if (asprintf(&out, "%s/%s", dir, name) < 0)
		return NULL;
	return out;
}

static char *dir_of(const char *file)
{
	const char *slash = strrchr(file, '/');
	if (!slash)
		return strdup(".");
	if (slash == file)
		return strdup("/");
	return strndup(file, (size_t)(slash - file));
}

static int fail(char *err, size_t errlen, const char *file, int line, const char *fmt, ...)
	PLANT_PRINTF(5, 6);
static int fail(char *err, size_t errlen, const char *file, int line, const char *fmt, ...)
{
	int n = snprintf(err, errlen, "%s:%d: ", file, line);
	if (n < 0 || (size_t)n >= errlen)
		return PLANT_E_CONFIG;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return PLANT_E_CONFIG;
}

/* libconfig names an @include'd file as written in the directive; the
 * include directory makes it a path a user can find. Names are interned so
 * they live as long as the process, like libconfig's own. */
static const char *resolve_name(const char *dir, const char *f)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static json_t *names;
	if (!f || f[0] == '/' || !dir)
		return f;
	char *full = path_join(dir, f);
	if (!full)
		return f;
	pthread_mutex_lock(&lock);
	if (!names)
		names = json_object();
	json_t *v = json_object_get(names, full);
	if (!v) {
		v = json_string(full);
		json_object_set_new(names, full, v);
	}
	pthread_mutex_unlock(&lock);
	free(full);
	return json_string_value(v);
}

static _Thread_local const char *include_dir;

static const char *setting_file(const config_setting_t *s, const char *fallback)
{
	const char *f = config_setting_source_file(s);
	if (!f)
		return fallback;
	/* the files we open ourselves are already full paths */
	if (fallback && strcmp(f, fallback) == 0)
		return fallback;
	return resolve_name(include_dir, f);
}

/* libconfig value -> JSON. Strings must be UTF-8 (JSON's rule). */
static int setting_to_json(const config_setting_t *s, const char *file, json_t **out, char *err,
			   size_t errlen)
{
	int line = config_setting_source_line(s);
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
		*out = json_integer(config_setting_get_int(s));
		break;
	case CONFIG_TYPE_INT64:
		*out = json_integer(config_setting_get_int64(s));
		break;
	case CONFIG_TYPE_FLOAT:
		*out = json_real(config_setting_get_float(s));
		break;
	case CONFIG_TYPE_BOOL:
		*out = json_boolean(config_setting_get_bool(s));
		break;
	case CONFIG_TYPE_STRING:
		*out = json_string(config_setting_get_string(s));
		if (!*out)
			return fail(err, errlen, file, line, "'%s' is not valid UTF-8",
				    config_setting_name(s) ? config_setting_name(s) : "value");
		return PLANT_OK;
	case CONFIG_TYPE_GROUP: {
		json_t *obj = json_object();
		for (int i = 0; i < config_setting_length(s); i++) {
			config_setting_t *c = config_setting_get_elem(s, (unsigned)i);
			json_t *v;
			int rc = setting_to_json(c, setting_file(c, file), &v, err, errlen);
			if (rc) {
				json_decref(obj);
				return rc;
			}
			json_object_set_new(obj, config_setting_name(c), v);
		}
		*out = obj;
		return PLANT_OK;
	}
	case CONFIG_TYPE_ARRAY:
	case CONFIG_TYPE_LIST: {
		json_t *arr = json_array();
		for (int i = 0; i < config_setting_length(s); i++) {
			config_setting_t *c = config_setting_get_elem(s, (unsigned)i);
			json_t *v;
			int rc = setting_to_json(c, setting_file(c, file), &v, err, errlen);
			if (rc) {
				json_decref(arr);
				return rc;
			}
			json_array_append_new(arr, v);
		}
		*out = arr;
		return PLANT_OK;
	}
	default:
		return fail(err, errlen, file, line, "unsupported value type");
	}
	if (!*out)
		return fail(err, errlen, file, line, "out of memory");
	return PLANT_OK;
}

int parse_duration_ms(const json_t *value, uint64_t *ms_out)
{
	if (json_is_number(value)) {
		double s = json_number_value(value);
		if (!(s >= 0) || s > 1e12)
			return PLANT_E_INVALID;
		*ms_out = (uint64_t)llround(s * 1000.0);
		return PLANT_OK;
	}
	if (!json_is_string(value))
		return PLANT_E_INVALID;
	const char *s = json_string_value(value);
	char *end;
	errno = 0;
	double n = strtod(s, &end);
	if (end == s || errno || !(n >= 0) || n > 1e12)
		return PLANT_E_INVALID;
	static const struct {
		const char *unit;
		double ms;
	} units[] = {{"ms", 1},	     {"s", 1000},     {"m", 60000},
		     {"h", 3600000}, {"d", 86400000}, {"", 1000}};
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (strcmp(end, units[i].unit) == 0) {
			*ms_out = (uint64_t)llround(n * units[i].ms);
			return PLANT_OK;
		}
	}
	return PLANT_E_INVALID;
}

static void spec_free(struct instance_spec *s)
{
	free(s->name);
	free(s->module);
	json_decref(s->settings);
	json_decref(s->lines);
	json_decref(s->files);
	free(s->file);
}

void config_free(struct site_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n_instances; i++)
		spec_free(&cfg->instances[i]);
	free(cfg->instances);
	for (size_t i = 0; i < cfg->n_queues; i++)
		spec_free(&cfg->queues[i]);
	free(cfg->queues);
	for (size_t i = 0; i < cfg->n_stores; i++)
		spec_free(&cfg->stores[i]);
	free(cfg->stores);
	for (size_t i = 0; i < cfg->n_listeners; i++)
		spec_free(&cfg->listeners[i]);
	free(cfg->listeners);
	json_decref(cfg->aws);
	json_decref(cfg->deploy);
	free(cfg->source);
	free(cfg->dir);
	free(cfg->site);
	free(cfg->data_dir);
	free(cfg->plugin_path);
	free(cfg->log_file);
	free(cfg);
}

const struct instance_spec *config_find_store(const struct site_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_stores; i++)
		if (strcmp(cfg->stores[i].name, name) == 0)
			return &cfg->stores[i];
	return NULL;
}

const struct instance_spec *config_find_queue(const struct site_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_queues; i++)
		if (strcmp(cfg->queues[i].name, name) == 0)
			return &cfg->queues[i];
	return NULL;
}

const struct instance_spec *config_find_instance(const struct site_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_instances; i++)
		if (strcmp(cfg->instances[i].name, name) == 0)
			return &cfg->instances[i];
	return NULL;
}

int instance_spec_line(const struct instance_spec *spec, const char *key)
{
	json_t *l = key ? json_object_get(spec->lines, key) : NULL;
	return l ? (int)json_integer_value(l) : spec->line;
}

const char *instance_spec_where(const struct instance_spec *spec, const char *key, char *buf,
				size_t len)
{
	json_t *f = key ? json_object_get(spec->files, key) : NULL;
	int line = instance_spec_line(spec, key);
	if (line > 0)
		snprintf(buf, len, "%s:%d", f ? json_string_value(f) : spec->file, line);
	else /* an entry that came as JSON (plantctl load) has no lines */
		snprintf(buf, len, "%s", spec->file);
	return buf;
}

static int valid_instance_name(const char *name)
{
	if (!*name)
		return 0;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.'))
			return 0;
	return 1;
}

int config_spec_from_json(const json_t *entry, const char *origin, struct instance_spec *out,
			  char *err, size_t errlen)
{
	memset(out, 0, sizeof *out);
	if (!json_is_object(entry)) {
		snprintf(err, errlen,
			 "%s: an instance is an object: {\"name\", \"module\", \"config\"}",
			 origin);
		return PLANT_E_CONFIG;
	}
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)entry, key, v)
	{
		if (strcmp(key, "name") && strcmp(key, "module") && strcmp(key, "config") &&
		    strcmp(key, "required")) {
			snprintf(err, errlen,
				 "%s: unknown key \"%s\" (name, module, config, required)", origin,
				 key);
			return PLANT_E_CONFIG;
		}
	}
	const char *name = json_string_value(json_object_get(entry, "name"));
	const char *module = json_string_value(json_object_get(entry, "module"));
	const json_t *settings = json_object_get(entry, "config");
	const json_t *required = json_object_get(entry, "required");
	if (!name || !valid_instance_name(name)) {
		snprintf(err, errlen,
			 "%s: 'name' must be a string of letters, digits, '_', '-', '.'", origin);
		return PLANT_E_CONFIG;
	}
	if (!module || !*module) {
		snprintf(err, errlen,
			 "%s: instance \"%s\": 'module' must be a module name or a .so file",
			 origin, name);
		return PLANT_E_CONFIG;
	}
	if (settings && !json_is_object(settings)) {
		snprintf(err, errlen, "%s: instance \"%s\": 'config' must be an object", origin,
			 name);
		return PLANT_E_CONFIG;
	}
	if (required && !json_is_boolean(required)) {
		snprintf(err, errlen, "%s: instance \"%s\": 'required' must be true or false",
			 origin, name);
		return PLANT_E_CONFIG;
	}
	out->name = strdup(name);
	out->module = strdup(module);
	out->required = required ? json_is_true(required) : 1;
	out->settings = settings ? json_deep_copy(settings) : json_object();
	out->lines = json_object();
	out->files = json_object();
	out->file = strdup(origin);
	out->line = 0;
	return PLANT_OK;
}

json_t *config_spec_to_json(const struct instance_spec *spec)
{
	return json_pack("{s:s, s:s, s:O, s:b}", "name", spec->name, "module", spec->module,
			 "config", spec->settings, "required", spec->required);
}

void instance_spec_clear(struct instance_spec *spec)
{
	spec_free(spec);
	memset(spec, 0, sizeof *spec);
}

int config_add_instance(struct site_config *cfg, const struct instance_spec *spec)
{
	if (config_find_instance(cfg, spec->name))
		return PLANT_E_EXISTS;
	struct instance_spec *v =
		realloc(cfg->instances, (cfg->n_instances + 1) * sizeof *cfg->instances);
	if (!v)
		return PLANT_E_NOMEM;
	cfg->instances = v;
	struct instance_spec *d = &cfg->instances[cfg->n_instances++];
	d->name = strdup(spec->name);
	d->module = strdup(spec->module);
	d->required = spec->required;
	d->settings = json_deep_copy(spec->settings);
	d->lines = json_deep_copy(spec->lines);
	d->files = json_deep_copy(spec->files);
	d->file = strdup(spec->file);
	d->line = spec->line;
	return PLANT_OK;
}

int config_remove_instance(struct site_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_instances; i++) {
		if (strcmp(cfg->instances[i].name, name) != 0)
			continue;
		spec_free(&cfg->instances[i]);
		memmove(&cfg->instances[i], &cfg->instances[i + 1],
			(cfg->n_instances - i - 1) * sizeof *cfg->instances);
		cfg->n_instances--;
		return PLANT_OK;
	}
	return PLANT_E_NOTFOUND;
}

int instance_spec_equal(const struct instance_spec *a, const struct instance_spec *b)
{
	return strcmp(a->name, b->name) == 0 &&
	       (a->module && b->module ? strcmp(a->module, b->module) == 0
				       : a->module == b->module) &&
	       a->required == b->required && json_equal(a->settings, b->settings);
}

static int get_string(const config_setting_t *s, const char *file, char **out, char *err,
		      size_t errlen)
{
	const char *v = config_setting_get_string(s);
	if (!v)
		return fail(err, errlen, file, config_setting_source_line(s),
			    "'%s' must be a string", config_setting_name(s));
	free(*out);
	*out = strdup(v);
	return PLANT_OK;
}

/* One `plugins` (or `queues`) entry: a new instance, or (from the overlay) a
 * change to an existing one. Queues have no module and no `required`. */
static int load_entry(struct site_config *cfg, char section, const config_setting_t *e,
		      const char *file, int overlay, char *err, size_t errlen)
{
	/* 'p'lugins, 'q'ueues, 's'tores, 'l'isteners: only plugins have a module */
	int is_queue = section != 'p';
	const char *what = section == 'p'   ? "instance"
			   : section == 'q' ? "queue"
			   : section == 's' ? "store"
					    : "listener";
	struct instance_spec **list = section == 'p'   ? &cfg->instances
				      : section == 'q' ? &cfg->queues
				      : section == 's' ? &cfg->stores
						       : &cfg->listeners;
	size_t *count = section == 'p'	 ? &cfg->n_instances
			: section == 'q' ? &cfg->n_queues
			: section == 's' ? &cfg->n_stores
					 : &cfg->n_listeners;
	int line = config_setting_source_line(e);
	if (!config_setting_is_group(e))
		return fail(
			err, errlen, file, line,
			"each plugins entry must be a group: { name = \"...\"; module = \"...\"; }");
	const char *name = NULL, *module = NULL;
	config_setting_lookup_string(e, "name", &name);
	config_setting_lookup_string(e, "module", &module);
	if (!name || !*name)
		return fail(err, errlen, file, line, "%s entry without a 'name' string", what);
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.'))
			return fail(err, errlen, file, line,
				    "instance name \"%s\": use letters, digits, '_', '-', '.'",
				    name);

	struct instance_spec *spec = NULL;
	for (size_t i = 0; i < *count; i++)
		if (strcmp((*list)[i].name, name) == 0)
			spec = &(*list)[i];
	if (spec && !overlay)
		return fail(err, errlen, file, line,
			    "duplicate %s name \"%s\" (first defined at %s:%d)", what, name,
			    spec->file, spec->line);
	if (!spec) {
		if (!is_queue && (!module || !*module))
			return fail(err, errlen, file, line,
				    "instance \"%s\": missing required setting 'module'", name);
		struct instance_spec *v = realloc(*list, (*count + 1) * sizeof **list);
		if (!v)
			return fail(err, errlen, file, line, "out of memory");
		*list = v;
		spec = &(*list)[(*count)++];
		memset(spec, 0, sizeof *spec);
		spec->name = strdup(name);
		spec->module = is_queue ? NULL : strdup(module);
		spec->required = 1;
		spec->settings = json_object();
		spec->lines = json_object();
		spec->files = json_object();
		spec->file = strdup(file);
		spec->line = line;
	} else if (module && !is_queue) {
		free(spec->module);
		spec->module = strdup(module);
	}

	for (int i = 0; i < config_setting_length(e); i++) {
		config_setting_t *c = config_setting_get_elem(e, (unsigned)i);
		const char *key = config_setting_name(c);
		const char *cfile = setting_file(c, file);
		int cline = config_setting_source_line(c);
		if (strcmp(key, "name") == 0 || (!is_queue && strcmp(key, "module") == 0))
			continue;
		if (!is_queue && strcmp(key, "required") == 0) {
			if (config_setting_type(c) != CONFIG_TYPE_BOOL)
				return fail(err, errlen, cfile, cline,
					    "instance \"%s\": 'required' must be true or false",
					    name);
			spec->required = config_setting_get_bool(c);
			continue;
		}
		json_t *v;
		int rc = setting_to_json(c, cfile, &v, err, errlen);
		if (rc)
			return rc;
		json_object_set_new(spec->settings, key, v);
		json_object_set_new(spec->lines, key, json_integer(cline));
		if (strcmp(cfile, spec->file) != 0)
			json_object_set_new(spec->files, key, json_string(cfile));
		else
			json_object_del(spec->files, key);
	}
	return PLANT_OK;
}

static int load_root_setting(struct site_config *cfg, const config_setting_t *s, const char *file,
			     int overlay, char *err, size_t errlen)
{
	const char *key = config_setting_name(s);
	int line = config_setting_source_line(s);
	if (strcmp(key, "plugins") == 0 || strcmp(key, "queues") == 0 ||
	    strcmp(key, "stores") == 0 || strcmp(key, "listeners") == 0) {
		if (!config_setting_is_aggregate(s) || config_setting_is_group(s))
			return fail(err, errlen, file, line,
				    "'%s' must be a list: %s = ( { ... }, { ... } );", key, key);
		for (int i = 0; i < config_setting_length(s); i++) {
			config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
			int rc = load_entry(cfg, key[0], e, setting_file(e, file), overlay, err,
					    errlen);
			if (rc)
				return rc;
		}
		return PLANT_OK;
	}
	if (strcmp(key, "site") == 0)
		return get_string(s, file, &cfg->site, err, errlen);
	if (strcmp(key, "data_dir") == 0) {
		char *v = NULL;
		int rc = get_string(s, file, &v, err, errlen);
		if (rc)
			return rc;
		free(cfg->data_dir);
		cfg->data_dir = path_join(cfg->dir, v);
		free(v);
		return PLANT_OK;
	}
	if (strcmp(key, "plugin_path") == 0) {
		char *v = NULL;
		int rc = get_string(s, file, &v, err, errlen);
		if (rc)
			return rc;
		/* relative entries start at the config directory */
		size_t cap = strlen(v) * 2 + strlen(cfg->dir) * 8 + 64, n = 0;
		char *out = calloc(1, cap);
		char *save = NULL;
		for (char *tok = strtok_r(v, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
			char *full = path_join(cfg->dir, tok);
			size_t need = strlen(full) + 2;
			if (n + need >= cap) {
				cap = (n + need) * 2;
				out = realloc(out, cap);
			}
			n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? ":" : "", full);
			free(full);
		}
		free(v);
		free(cfg->plugin_path);
		cfg->plugin_path = out;
		return PLANT_OK;
	}
	if (strcmp(key, "log_file") == 0) {
		char *v = NULL;
		int rc = get_string(s, file, &v, err, errlen);
		if (rc)
			return rc;
		free(cfg->log_file);
		cfg->log_file = path_join(cfg->dir, v);
		free(v);
		return PLANT_OK;
	}
	if (strcmp(key, "log_level") == 0) {
		const char *v = config_setting_get_string(s);
		if (!v || log_level_parse(v, &cfg->log_level) != PLANT_OK)
			return fail(err, errlen, file, line,
				    "'log_level' must be one of \"error\", \"warn\", \"info\", "
				    "\"debug\"");
		return PLANT_OK;
	}
	if (strcmp(key, "workers") == 0) {
		if (config_setting_type(s) != CONFIG_TYPE_INT || config_setting_get_int(s) < 0 ||
		    config_setting_get_int(s) > 256)
			return fail(err, errlen, file, line,
				    "'workers' must be an integer from 0 (one per core) to 256");
		cfg->workers = config_setting_get_int(s);
		return PLANT_OK;
	}
	if (strcmp(key, "deploy") == 0) {
		if (!config_setting_is_group(s))
			return fail(
				err, errlen, file, line,
				"'deploy' must be a group: deploy = { require_signature = true; trusted_keys = [ \"ci.pub\" ]; };");
		json_t *v;
		int rc = setting_to_json(s, file, &v, err, errlen);
		if (rc)
			return rc;
		const char *k;
		json_t *e;
		uint64_t ms;
		json_object_foreach(v, k, e)
		{
			const char *bad = NULL;
			if (strcmp(k, "trusted_keys") == 0) {
				size_t i;
				json_t *f;
				if (!json_is_array(e))
					bad = "'trusted_keys' must be a list of public key files (PEM)";
				json_array_foreach(e, i, f) if (!json_is_string(f)) bad =
					"'trusted_keys' must be a list of public key files (PEM)";
			} else if (strcmp(k, "plugins") == 0) {
				size_t i;
				json_t *f;
				if (!json_is_array(e))
					bad = "'plugins' must be a list of instance names (those that may deploy)";
				json_array_foreach(e, i, f) if (!json_is_string(f)) bad =
					"'plugins' must be a list of instance names (those that may deploy)";
			} else if (strcmp(k, "require_signature") == 0) {
				if (!json_is_boolean(e))
					bad = "'require_signature' must be true or false";
			} else if (strcmp(k, "grace") == 0) {
				if (parse_duration_ms(e, &ms) != PLANT_OK)
					bad = "'grace' must be a duration, e.g. \"30s\"";
			} else {
				bad = "unknown key in 'deploy' (plugins, trusted_keys, require_signature, grace)";
			}
			if (bad) {
				int l = config_setting_source_line(config_setting_get_member(s, k));
				json_decref(v);
				return fail(err, errlen, file, l > 0 ? l : line, "%s", bad);
			}
		}
		/* key files are relative to the root file's directory */
		json_t *keys = json_object_get(v, "trusted_keys");
		size_t i;
		json_t *f;
		json_array_foreach(keys, i, f)
		{
			const char *kf = json_string_value(f);
			if (kf[0] != '/' && cfg->dir) {
				char *abs = NULL;
				if (asprintf(&abs, "%s/%s", cfg->dir, kf) > 0) {
					json_array_set_new(keys, i, json_string(abs));
					free(abs);
				}
			}
		}
		if (!cfg->deploy)
			cfg->deploy = json_object();
		json_object_update(cfg->deploy, v);
		json_decref(v);
		return PLANT_OK;
	}
	if (strcmp(key, "aws") == 0) {
		if (!config_setting_is_group(s))
			return fail(err, errlen, file, line,
				    "'aws' must be a group: aws = { region = \"eu-west-1\"; };");
		json_t *v;
		int rc = setting_to_json(s, file, &v, err, errlen);
		if (rc)
			return rc;
		char why[512];
		if (httpc_check_aws(v, why, sizeof why) != PLANT_OK) {
			json_decref(v);
			return fail(err, errlen, file, line, "%s", why);
		}
		/* an overlay changes single keys */
		if (!cfg->aws)
			cfg->aws = json_object();
		json_object_update(cfg->aws, v);
		json_decref(v);
		return PLANT_OK;
	}
	if (strcmp(key, "shutdown_timeout") == 0) {
		json_t *v;
		int rc = setting_to_json(s, file, &v, err, errlen);
		if (rc)
			return rc;
		rc = parse_duration_ms(v, &cfg->shutdown_timeout_ms);
		json_decref(v);
		if (rc || cfg->shutdown_timeout_ms == 0)
			return fail(err, errlen, file, line,
				    "'shutdown_timeout' must be a positive duration, e.g. \"10s\"");
		return PLANT_OK;
	}
	return fail(err, errlen, file, line, "unknown setting '%s'", key);
}

static int load_file(struct site_config *cfg, const char *file, int overlay, char *err,
		     size_t errlen)
{
	struct stat st;
	if (stat(file, &st) != 0)
		return fail(err, errlen, file, 0, "cannot read: %s", strerror(errno));
	config_t lc;
	config_init(&lc);
	config_set_include_dir(&lc, cfg->dir);
	int rc = PLANT_OK;
	if (config_read_file(&lc, file) != CONFIG_TRUE) {
		const char *efile = config_error_file(&lc);
		if (efile && strcmp(efile, file) != 0)
			efile = resolve_name(cfg->dir, efile);
		if (config_error_type(&lc) == CONFIG_ERR_FILE_IO && !efile)
			rc = fail(err, errlen, file, 0, "cannot read: %s", strerror(errno));
		else
			rc = fail(err, errlen, efile ? efile : file, config_error_line(&lc), "%s",
				  config_error_text(&lc));
		config_destroy(&lc);
		return rc;
	}
	include_dir = cfg->dir;
	config_setting_t *root = config_root_setting(&lc);
	for (int i = 0; i < config_setting_length(root) && !rc; i++) {
		config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
		rc = load_root_setting(cfg, s, setting_file(s, file), overlay, err, errlen);
	}
	config_destroy(&lc);
	return rc;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every *.conf in `dir` except the root file, in lexical order. */
static int list_fragments(const char *dir, char ***out, size_t *n_out, char *err, size_t errlen)
{
	DIR *d = opendir(dir);
	if (!d)
		return fail(err, errlen, dir, 0, "cannot open directory: %s", strerror(errno));
	char **v = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		if (len < 6 || strcmp(de->d_name + len - 5, ".conf") != 0 ||
		    strcmp(de->d_name, ROOT_NAME) == 0 || de->d_name[0] == '.')
			continue;
		char *full = path_join(dir, de->d_name);
		struct stat st;
		if (stat(full, &st) != 0 || !S_ISREG(st.st_mode)) {
			free(full);
			continue;
		}
		v = realloc(v, (n + 1) * sizeof *v);
		v[n++] = full;
	}
	closedir(d);
	if (n)
		qsort(v, n, sizeof *v, cmp_str);
	*out = v;
	*n_out = n;
	return PLANT_OK;
}

int config_load(const char *path, const char *env, struct site_config **out, char *err,
		size_t errlen)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return fail(err, errlen, path, 0, "cannot read: %s", strerror(errno));

	struct site_config *cfg = calloc(1, sizeof *cfg);
	cfg->source = strdup(path);
	cfg->log_level = -1;
	cfg->shutdown_timeout_ms = 10000;
	cfg->site = strdup("plantd");
	cfg->data_dir = strdup("var");

	char *root;
	char **frags = NULL;
	size_t n_frags = 0;
	int rc = PLANT_OK;
	if (S_ISDIR(st.st_mode)) {
		cfg->dir = strdup(path);
		root = path_join(path, ROOT_NAME);
		rc = list_fragments(path, &frags, &n_frags, err, errlen);
	} else {
		root = strdup(path);
		cfg->dir = dir_of(path);
	}

	if (!rc)
		rc = load_file(cfg, root, 0, err, errlen);
	for (size_t i = 0; i < n_frags && !rc; i++)
		rc = load_file(cfg, frags[i], 0, err, errlen);
	if (!rc && env) {
		if (!*env || strchr(env, '/'))
			rc = fail(err, errlen, root, 0, "bad environment name \"%s\"", env);
		char *overlay = NULL;
		if (!rc && asprintf(&overlay, "%s/env/%s.conf", cfg->dir, env) < 0)
			overlay = NULL;
		if (!rc && overlay && access(overlay, R_OK) != 0)
			rc = fail(err, errlen, overlay, 0,
				  "environment \"%s\": no overlay file (%s)", env, strerror(errno));
		if (!rc)
			rc = load_file(cfg, overlay, 1, err, errlen);
		free(overlay);
	}
	for (size_t i = 0; i < n_frags; i++)
		free(frags[i]);
	free(frags);
	free(root);
	if (rc) {
		config_free(cfg);
		return rc;
	}
	*out = cfg;
	return PLANT_OK;
}
