/* Site configuration: a root file or a conf.d directory, fragments and an
 * environment overlay, merged into one view that remembers where every
 * setting came from (file and line) for error messages. */
#ifndef PLANTD_CONFIG_H
#define PLANTD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

/* One plugin instance as configured. */
struct instance_spec {
	char *name;
	char *module;
	int required;	  /* default 1 */
	json_t *settings; /* the entry's keys except name, module, required */
	json_t *lines;	  /* key -> line number (integer) */
	json_t *files;	  /* key -> file, where an overlay set the key */
	char *file;	  /* where the entry starts */
	int line;
};

struct site_config {
	char *source;		      /* the path given to config_load() */
	char *site;		      /* default "plantd" */
	char *dir;		      /* the root file's directory: relative paths start here */
	char *data_dir;		      /* default "var" in the working directory */
	char *plugin_path;	      /* ':'-separated, or NULL for the built-in default */
	int workers;		      /* 0 = number of cores */
	int log_level;		      /* -1 = not set */
	char *log_file;		      /* NULL = stderr */
	uint64_t shutdown_timeout_ms; /* default 10 s */
	json_t *aws;		      /* the `aws` group as an object, or NULL */
	json_t *deploy;		      /* the `deploy` group (key files made absolute), or NULL */

	struct instance_spec *instances;
	size_t n_instances;

	/* queues = ( { name = "..."; subscribe = [...]; ... } ): entries with
	 * `module` NULL; their settings are checked by the bus */
	struct instance_spec *queues;
	size_t n_queues;

	/* stores = ( { name = "..."; backend = "sqlite"; ... } ): entries with
	 * `module` NULL; the backend's settings are checked when it opens */
	struct instance_spec *stores;
	size_t n_stores;

	/* listeners = ( { name = "admin"; port = 8470; admin = true; ... } ):
	 * entries with `module` NULL; checked by the HTTP server */
	struct instance_spec *listeners;
	size_t n_listeners;
};

/* Load `path` (a file, or a directory holding plantd.conf and other *.conf
 * fragments read in lexical order) and, when `env` is not NULL, the overlay
 * env/ENV.conf beside the root file. Overlay plugin entries with the name of
 * an existing instance change that instance's settings; others are added.
 * On failure returns PLANT_E_CONFIG with "FILE:LINE: message" in err. */
int config_load(const char *path, const char *env, struct site_config **out, char *err,
		size_t errlen);
void config_free(struct site_config *cfg);

const struct instance_spec *config_find_store(const struct site_config *cfg, const char *name);
const struct instance_spec *config_find_queue(const struct site_config *cfg, const char *name);
const struct instance_spec *config_find_instance(const struct site_config *cfg, const char *name);
/* The line of `key` in the instance's entry, or the entry's own line. */
int instance_spec_line(const struct instance_spec *spec, const char *key);
/* "FILE:LINE" of `key` (or of the entry when key is NULL or unknown). */
const char *instance_spec_where(const struct instance_spec *spec, const char *key, char *buf,
				size_t len);
/* Do two specs describe the same instance with the same settings? */
int instance_spec_equal(const struct instance_spec *a, const struct instance_spec *b);

/* An instance from JSON, as `plantctl load` sends it: {"name": "...",
 * "module": "NAME" or "/path/NAME.so", "config": {...}, "required": bool}.
 * `origin` stands for file and line in messages (it has no lines). On
 * failure returns PLANT_E_CONFIG with the reason in err. */
int config_spec_from_json(const json_t *entry, const char *origin, struct instance_spec *out,
			  char *err, size_t errlen);
/* The same form back: [new]. */
json_t *config_spec_to_json(const struct instance_spec *spec);
/* Free what a spec holds (not the spec itself). */
void instance_spec_clear(struct instance_spec *spec);
/* Append a copy of `spec` to the site's instances (PLANT_E_EXISTS when the
 * name is taken), or remove one by name (PLANT_E_NOTFOUND). */
int config_add_instance(struct site_config *cfg, const struct instance_spec *spec);
int config_remove_instance(struct site_config *cfg, const char *name);

/* "250ms", "60s", "15m", "2h", "1d", or a number of seconds -> ms. */
int parse_duration_ms(const json_t *value, uint64_t *ms_out);

#endif
