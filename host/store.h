/* Stores: named key-value tables served by backend plugins. A backend
 * plugin registers a kind ("sqlite", "memory") from its init(); the site's
 * `stores` entries are opened on their kind once every backend is up, and
 * plugins reach them by name. */
#ifndef PLANTD_STORE_H
#define PLANTD_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "plantd/plantd.h"
#include "config.h"

struct stores;

/* One open store, for calls into its backend. */
struct store_ref {
	const struct plant_store_backend *be;
	void *h;
	const char *name;
};

struct stores *stores_new(void);
/* Closes what is still open. */
void stores_free(struct stores *st);

/* A backend offers `kind` on behalf of `owner` (an instance). */
int stores_register_kind(struct stores *st, const char *kind, const struct plant_store_backend *be,
			 void *be_state, void *owner, char *err, size_t errlen);
/* Does `owner` serve any kind? */
int stores_owner_serves(const struct stores *st, const void *owner);

/* Open every store of `cfg` on its registered kind. Errors name the file
 * and line of the store's entry, and the backend's reason. */
int stores_open_all(struct stores *st, const struct site_config *cfg, const char *data_dir,
		    char *err, size_t errlen);
void stores_close_all(struct stores *st);

int stores_find(const struct stores *st, const char *name, uint32_t *id_out);
int stores_ref(const struct stores *st, uint32_t id, struct store_ref *out);
/* [{name, backend, healthy, detail}]: [new] */
json_t *stores_json(const struct stores *st);

/* Remove expired items from every open store; returns how many. May block
 * (run it on a worker). */
size_t stores_expire_all(struct stores *st, uint64_t now);

/* The backend module that serves `kind`: "store_" + kind. */
void stores_module_for(const char *kind, char *out, size_t len);

#endif
