#include "dropin.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plantd/plantd.h"
#include "config.h"
#include "log.h"
#include "statefile.h"
#include "site.h"

#define ORIGIN_LOAD "plantctl load"

struct dropin {
	char *path;   /* DATA_DIR/loaded.json */
	json_t *list; /* the entries, as config_spec_to_json() writes them */
};

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) PLANT_PRINTF(4, 5);
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

int dropin_open(const char *data_dir, struct dropin **out, char *err, size_t errlen)
{
	*out = NULL;
	struct dropin *d = calloc(1, sizeof *d);
	if (!d || asprintf(&d->path, "%s/loaded.json", data_dir) < 0) {
		free(d);
		return fail(err, errlen, PLANT_E_NOMEM, "out of memory");
	}
	json_error_t jerr;
	json_t *doc = json_load_file(d->path, 0, &jerr);
	if (!doc && access(d->path, F_OK) != 0 && errno == ENOENT) {
		d->list = json_array();
		*out = d;
		return PLANT_OK;
	}
	int rc = PLANT_OK;
	if (!doc)
		rc = fail(err, errlen, PLANT_E_CONFIG, "%s:%d: %s", d->path, jerr.line, jerr.text);
	else if (!json_is_array(json_object_get(doc, "plugins")))
		rc = fail(err, errlen, PLANT_E_CONFIG,
			  "%s: expected {\"plugins\": [...]}, as plantctl load writes it", d->path);
	size_t i;
	json_t *e;
	if (!rc)
		json_array_foreach(json_object_get(doc, "plugins"), i, e)
		{
			struct instance_spec spec;
			rc = config_spec_from_json(e, d->path, &spec, err, errlen);
			if (rc)
				break;
			instance_spec_clear(&spec);
		}
	if (rc) {
		json_decref(doc);
		dropin_free(d);
		return rc;
	}
	d->list = json_incref(json_object_get(doc, "plugins"));
	json_decref(doc);
	*out = d;
	return PLANT_OK;
}

void dropin_free(struct dropin *d)
{
	if (!d)
		return;
	json_decref(d->list);
	free(d->path);
	free(d);
}

/* Write the list and make it durable: a load that was answered survives a
 * crash. */
static int save(struct dropin *d, char *err, size_t errlen)
{
	json_t *doc = json_pack("{s:O}", "plugins", d->list);
	int rc = statefile_save(d->path, doc, err, errlen);
	json_decref(doc);
	return rc;
}

static ssize_t find(const struct dropin *d, const char *name)
{
	size_t i;
	json_t *e;
	json_array_foreach(d->list, i, e)
	{
		const char *n = json_string_value(json_object_get(e, "name"));
		if (n && strcmp(n, name) == 0)
			return (ssize_t)i;
	}
	return -1;
}

int dropin_merge(struct dropin *d, struct site_config *cfg, char *err, size_t errlen)
{
	size_t i;
	json_t *e;
	json_array_foreach(d->list, i, e)
	{
		struct instance_spec spec;
		int rc = config_spec_from_json(e, d->path, &spec, err, errlen);
		if (rc)
			return rc;
		const struct instance_spec *file = config_find_instance(cfg, spec.name);
		if (file) {
			char where[4200];
			log_warn(
				"instance \"%s\" is defined in %s: the one loaded with plantctl load is not started (plantctl unload %s forgets it)",
				spec.name, instance_spec_where(file, NULL, where, sizeof where),
				spec.name);
		} else if (config_add_instance(cfg, &spec) != PLANT_OK) {
			instance_spec_clear(&spec);
			return fail(err, errlen, PLANT_E_NOMEM, "out of memory");
		}
		instance_spec_clear(&spec);
	}
	return PLANT_OK;
}

int dropin_load(struct dropin *d, struct site *site, const json_t *entry, char *err, size_t errlen)
{
	struct instance_spec spec;
	int rc = config_spec_from_json(entry, ORIGIN_LOAD, &spec, err, errlen);
	if (rc)
		return rc;
	const struct instance_spec *have = config_find_instance(site_config(site), spec.name);
	if (have) {
		char where[4200];
		rc = fail(err, errlen, PLANT_E_EXISTS, "an instance named \"%s\" runs already (%s)",
			  spec.name, instance_spec_where(have, NULL, where, sizeof where));
		instance_spec_clear(&spec);
		return rc;
	}
	rc = site_add(site, &spec, err, errlen);
	if (rc) {
		instance_spec_clear(&spec);
		return rc;
	}
	json_array_append_new(d->list, config_spec_to_json(&spec));
	rc = save(d, err, errlen);
	if (rc) {
		char ignored[256];
		json_array_remove(d->list, json_array_size(d->list) - 1);
		site_remove(site, spec.name, ignored, sizeof ignored);
	} else {
		log_info("instance \"%s\" (module %s) loaded; kept in %s", spec.name, spec.module,
			 d->path);
	}
	instance_spec_clear(&spec);
	return rc;
}

int dropin_unload(struct dropin *d, struct site *site, const char *name, char *err, size_t errlen)
{
	ssize_t i = find(d, name);
	const struct instance_spec *have = config_find_instance(site_config(site), name);
	if (i < 0 && have) {
		char where[4200];
		return fail(err, errlen, PLANT_E_STATE,
			    "instance \"%s\" comes from %s: remove it there, then reload", name,
			    instance_spec_where(have, NULL, where, sizeof where));
	}
	if (i < 0)
		return fail(err, errlen, PLANT_E_NOTFOUND, "no loaded instance named \"%s\"", name);
	json_t *entry = json_incref(json_array_get(d->list, (size_t)i));
	json_array_remove(d->list, (size_t)i);
	int rc = save(d, err, errlen);
	if (rc) {
		json_array_insert_new(d->list, (size_t)i, entry);
		return rc;
	}
	json_decref(entry);
	/* shadowed by the files (dropin_merge), it is not running: forgetting
	 * it is all there is to do */
	if (have && strcmp(have->file, d->path) != 0 && strcmp(have->file, ORIGIN_LOAD) != 0)
		return PLANT_OK;
	if (have)
		return site_remove(site, name, err, errlen);
	return PLANT_OK;
}
