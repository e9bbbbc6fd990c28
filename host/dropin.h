/* Instances started on a running site (plantctl load) rather than from the
 * site's files. They are kept in DATA_DIR/loaded.json so that they come
 * back when plantd restarts and survive a reload of the files. [main loop] */
#ifndef PLANTD_DROPIN_H
#define PLANTD_DROPIN_H

#include <stddef.h>
#include <jansson.h>

struct dropin;
struct site;
struct site_config;

/* Read DATA_DIR/loaded.json (none yet is an empty list). PLANT_E_CONFIG with
 * the file and the reason in err when it cannot be read. */
int dropin_open(const char *data_dir, struct dropin **out, char *err, size_t errlen);
void dropin_free(struct dropin *d);

/* Add the loaded instances to a configuration read from the site's files.
 * An instance the files now define as well is theirs: the loaded one is
 * dropped, with a warning. */
int dropin_merge(struct dropin *d, struct site_config *cfg, char *err, size_t errlen);

/* Start the instance `entry` describes ({"name", "module", "config",
 * "required"}) on `site` and keep it. On failure nothing changes:
 * PLANT_E_CONFIG (a bad entry, module or config), PLANT_E_EXISTS (the name
 * is taken), PLANT_E_PLUGIN (init() or start() failed), PLANT_E_IO (it
 * could not be kept: the instance is stopped again). */
int dropin_load(struct dropin *d, struct site *site, const json_t *entry, char *err, size_t errlen);

/* Stop a loaded instance and forget it. PLANT_E_NOTFOUND when there is no
 * such instance, PLANT_E_STATE when it comes from the site's files. */
int dropin_unload(struct dropin *d, struct site *site, const char *name, char *err, size_t errlen);

#endif
