/* Finding, opening and checking plugin modules, and applying a module's
 * config key table to an instance's settings. */
#ifndef PLANTD_LOADER_H
#define PLANTD_LOADER_H

#include <stddef.h>
#include <jansson.h>

#include "plantd/plantd.h"

struct module {
	char *path;
	void *handle;
	const struct plant_plugin_desc *desc;
	int refs;
};

/* Find module `name` on the ':'-separated `path`: DIR/NAME.so or
 * DIR/NAME/NAME.so. Writes the file into path_out. PLANT_E_NOTFOUND with the
 * searched directories in err when there is none. A `name` holding a '/' is
 * the module's file itself (e.g. "/opt/plugins/meter.so"). */
int loader_find(const char *path, const char *name, char *path_out, size_t path_len, char *err,
		size_t errlen);

/* Open (or share an already open) module file and check its descriptor.
 * Errors name the file and the reason: missing, not a shared object, no
 * descriptor, ABI mismatch ("plugin F built for SDK A.B, host provides
 * C.D"), bad size or flags, no init. */
int loader_open(const char *file, struct module **out, char *err, size_t errlen);
void loader_close(struct module *mod);

/* The descriptor checks alone (used by loader_open, testable without a
 * file). */
int loader_check_desc(const struct plant_plugin_desc *desc, const char *file, char *err,
		      size_t errlen);

/* Check `settings` against the module's key table and return a new object
 * with defaults filled in and durations turned into ms. On failure
 * *bad_key names the key at fault (or NULL) and err says why. */
int loader_apply_schema(const struct plant_plugin_desc *desc, const json_t *settings,
			json_t **config_out, const char **bad_key, char *err, size_t errlen);

#endif
