#include "loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

/* The size of the 1.0 descriptor: anything smaller cannot be read. */
#define DESC_SIZE_1_0 (offsetof(struct plant_plugin_desc, health) + sizeof(void *))

static pthread_mutex_t modules_lock = PTHREAD_MUTEX_INITIALIZER;
static struct module **modules;
static size_t n_modules;

int loader_find(const char *path, const char *name, char *path_out, size_t path_len, char *err,
		size_t errlen)
{
	if (strchr(name, '/')) { /* a file, not a name to look for */
		struct stat st;
		size_t n = strlen(name);
		if (n >= path_len) {
			snprintf(err, errlen, "module file name too long");
			return PLANT_E_INVALID;
		}
		memcpy(path_out, name, n + 1);
		if (lstat(name, &st) == 0)
			return PLANT_OK;
		snprintf(err, errlen, "cannot open module file %s: %s", name, strerror(errno));
		return PLANT_E_NOTFOUND;
	}
	char *copy = strdup(path ? path : "");
	char *save = NULL;
	for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		for (int f = 0; f < 2; f++) {
			if (f == 0)
				snprintf(path_out, path_len, "%s/%s.so", dir, name);
			else
				snprintf(path_out, path_len, "%s/%s/%s.so", dir, name, name);
			/* lstat: a dangling link is this module's file, and
			 * opening it says so */
			struct stat st;
			if (lstat(path_out, &st) == 0) {
				free(copy);
				return PLANT_OK;
			}
		}
	}
	free(copy);
	snprintf(err, errlen, "unknown module \"%s\": no %s.so on the plugin path (%s)", name, name,
		 path && *path ? path : "empty");
	return PLANT_E_NOTFOUND;
}

int loader_check_desc(const struct plant_plugin_desc *d, const char *file, char *err, size_t errlen)
{
	if (d->abi_major != PLANT_ABI_MAJOR || d->abi_minor > PLANT_ABI_MINOR) {
		snprintf(err, errlen, "plugin %s built for SDK %u.%u, host provides %d.%d", file,
			 d->abi_major, d->abi_minor, PLANT_ABI_MAJOR, PLANT_ABI_MINOR);
		return PLANT_E_ABI;
	}
	if (d->struct_size < DESC_SIZE_1_0) {
		snprintf(err, errlen,
			 "plugin %s: descriptor size %u is below the %zu bytes of SDK 1.0", file,
			 d->struct_size, (size_t)DESC_SIZE_1_0);
		return PLANT_E_ABI;
	}
	if (d->flags & ~PLANT_PLUGIN_KNOWN_FLAGS) {
		snprintf(err, errlen, "plugin %s: unknown descriptor flags 0x%x", file,
			 d->flags & ~PLANT_PLUGIN_KNOWN_FLAGS);
		return PLANT_E_ABI;
	}
	if (!d->init) {
		snprintf(err, errlen, "plugin %s: descriptor has no init callback", file);
		return PLANT_E_ABI;
	}
	if (!d->name || !*d->name) {
		snprintf(err, errlen, "plugin %s: descriptor has no module name", file);
		return PLANT_E_ABI;
	}
	return PLANT_OK;
}

static int open_module(const char *file, struct module **out, char *err, size_t errlen)
{
	struct stat st;
	if (stat(file, &st) != 0) {
		snprintf(err, errlen, "plugin %s: %s", file, strerror(errno));
		return PLANT_E_NOTFOUND;
	}
	dlerror();
	void *h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *why = dlerror();
		snprintf(err, errlen, "plugin %s: not a loadable shared object: %s", file,
			 why ? why : "unknown reason");
		return PLANT_E_INVALID;
	}
	const struct plant_plugin_desc *d = dlsym(h, PLANT_PLUGIN_DESC_NAME);
	if (!d) {
		/* Another major exports another symbol; its first fields are the
		 * same in every major, so its version can still be told. */
		for (int major = 0; major < 10 && !d; major++) {
			char sym[32];
			snprintf(sym, sizeof sym, "plant_plugin_v%d", major);
			if (major != PLANT_ABI_MAJOR)
				d = dlsym(h, sym);
		}
		if (!d) {
			snprintf(err, errlen,
				 "plugin %s: no plantd descriptor (symbol %s not found); is it "
				 "a plantd plugin?",
				 file, PLANT_PLUGIN_DESC_NAME);
			dlclose(h);
			return PLANT_E_INVALID;
		}
	}
	int rc = loader_check_desc(d, file, err, errlen);
	if (rc) {
		dlclose(h);
		return rc;
	}
	struct module *m = calloc(1, sizeof *m);
	m->path = strdup(file);
	m->handle = h;
	m->desc = d;
	m->refs = 1;
	*out = m;
	return PLANT_OK;
}

int loader_open(const char *file, struct module **out, char *err, size_t errlen)
{
	char real[PATH_MAX];
	if (!realpath(file, real))
		snprintf(real, sizeof real, "%s", file);
	pthread_mutex_lock(&modules_lock);
	for (size_t i = 0; i < n_modules; i++) {
		if (strcmp(modules[i]->path, real) == 0) {
			modules[i]->refs++;
			*out = modules[i];
			pthread_mutex_unlock(&modules_lock);
			return PLANT_OK;
		}
	}
	struct module *m;
	int rc = open_module(real, &m, err, errlen);
	if (!rc) {
		struct module **v = realloc(modules, (n_modules + 1) * sizeof *v);
		if (v) {
			modules = v;
			modules[n_modules++] = m;
			*out = m;
		} else {
			dlclose(m->handle);
			free(m->path);
			free(m);
			snprintf(err, errlen, "out of memory");
			rc = PLANT_E_NOMEM;
		}
	}
	pthread_mutex_unlock(&modules_lock);
	return rc;
}

void loader_close(struct module *mod)
{
	if (!mod)
		return;
	pthread_mutex_lock(&modules_lock);
	if (--mod->refs > 0) {
		pthread_mutex_unlock(&modules_lock);
		return;
	}
	for (size_t i = 0; i < n_modules; i++) {
		if (modules[i] == mod) {
			modules[i] = modules[--n_modules];
			break;
		}
	}
	if (n_modules == 0) {
		free(modules);
		modules = NULL;
	}
	pthread_mutex_unlock(&modules_lock);
	/* Under valgrind or ASan, unloading loses the symbols of leak reports;
	 * PLANTD_NO_DLCLOSE keeps modules mapped for such runs. */
	if (!getenv("PLANTD_NO_DLCLOSE"))
		dlclose(mod->handle);
	free(mod->path);
	free(mod);
}

static const char *type_name(enum plant_cfg_type t)
{
	switch (t) {
	case PLANT_CFG_BOOL:
		return "a boolean (true or false)";
	case PLANT_CFG_INT:
		return "an integer";
	case PLANT_CFG_DOUBLE:
		return "a number";
	case PLANT_CFG_STRING:
		return "a string";
	case PLANT_CFG_DURATION:
		return "a duration (seconds, or a string like \"250ms\", \"60s\", \"15m\", \"2h\")";
	case PLANT_CFG_ARRAY:
		return "a list or array";
	case PLANT_CFG_OBJECT:
		return "a group";
	default:
		return "any value";
	}
}

/* Check one value against its type; *conv gets a [new] converted value. */
static int check_type(const struct plant_config_key *k, json_t *v, json_t **conv)
{
	uint64_t ms;
	switch (k->type) {
	case PLANT_CFG_BOOL:
		if (!json_is_boolean(v))
			return PLANT_E_CONFIG;
		break;
	case PLANT_CFG_INT:
		if (!json_is_integer(v))
			return PLANT_E_CONFIG;
		break;
	case PLANT_CFG_DOUBLE:
		if (!json_is_number(v))
			return PLANT_E_CONFIG;
		*conv = json_real(json_number_value(v));
		return PLANT_OK;
	case PLANT_CFG_STRING:
		if (!json_is_string(v))
			return PLANT_E_CONFIG;
		break;
	case PLANT_CFG_DURATION:
		if (parse_duration_ms(v, &ms) != PLANT_OK)
			return PLANT_E_CONFIG;
		*conv = json_integer((json_int_t)ms);
		return PLANT_OK;
	case PLANT_CFG_ARRAY:
		if (!json_is_array(v))
			return PLANT_E_CONFIG;
		break;
	case PLANT_CFG_OBJECT:
		if (!json_is_object(v))
			return PLANT_E_CONFIG;
		break;
	default:
		break;
	}
	*conv = json_incref(v);
	return PLANT_OK;
}

int loader_apply_schema(const struct plant_plugin_desc *desc, const json_t *settings,
			json_t **config_out, const char **bad_key, char *err, size_t errlen)
{
	*bad_key = NULL;
	const struct plant_config_key *keys = desc->config_keys;
	if (!keys) {
		*config_out = json_deep_copy(settings);
		return PLANT_OK;
	}
	json_t *out = json_object();
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)settings, key, v)
	{
		const struct plant_config_key *k = keys;
		while (k->type != PLANT_CFG_END && strcmp(k->name, key) != 0)
			k++;
		if (k->type == PLANT_CFG_END) {
			*bad_key = key;
			snprintf(err, errlen, "unknown setting '%s' for module %s", key,
				 desc->name);
			json_decref(out);
			return PLANT_E_CONFIG;
		}
		json_t *conv = NULL;
		if (check_type(k, v, &conv) != PLANT_OK) {
			*bad_key = k->name;
			snprintf(err, errlen, "'%s' must be %s", key, type_name(k->type));
			json_decref(out);
			return PLANT_E_CONFIG;
		}
		json_object_set_new(out, key, conv);
	}
	for (const struct plant_config_key *k = keys; k->type != PLANT_CFG_END; k++) {
		if (json_object_get(out, k->name))
			continue;
		if (k->required) {
			*bad_key = k->name;
			snprintf(err, errlen, "missing required setting '%s' (%s)", k->name,
				 type_name(k->type));
			json_decref(out);
			return PLANT_E_CONFIG;
		}
		if (!k->default_value)
			continue;
		json_error_t jerr;
		json_t *def = json_loads(k->default_value, JSON_DECODE_ANY, &jerr);
		json_t *conv = NULL;
		if (!def || check_type(k, def, &conv) != PLANT_OK) {
			*bad_key = k->name;
			snprintf(err, errlen, "module %s: bad default for '%s': %s", desc->name,
				 k->name, k->default_value);
			json_decref(def);
			json_decref(out);
			return PLANT_E_CONFIG;
		}
		json_decref(def);
		json_object_set_new(out, k->name, conv);
	}
	*config_out = out;
	return PLANT_OK;
}
