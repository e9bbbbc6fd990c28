#include "store.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct kind {
	char *name;
	const struct plant_store_backend *be;
	void *be_state;
	const void *owner;
};

struct open_store {
	char *name;
	char *kind;
	const struct plant_store_backend *be;
	void *h;
};

struct stores {
	struct kind *kinds;
	size_t n_kinds;
	/* opened once, at start, before any plugin can look one up: read
	 * without a lock afterwards */
	struct open_store *open;
	size_t n_open;
};

/* The 1.2 backend table: everything up to health. */
#define BACKEND_SIZE_1_2 (offsetof(struct plant_store_backend, health) + sizeof(void *))

struct stores *stores_new(void)
{
	return calloc(1, sizeof(struct stores));
}

void stores_close_all(struct stores *st)
{
	for (size_t i = st->n_open; i-- > 0;) {
		st->open[i].be->close(st->open[i].h);
		free(st->open[i].name);
		free(st->open[i].kind);
	}
	free(st->open);
	st->open = NULL;
	st->n_open = 0;
}

void stores_free(struct stores *st)
{
	if (!st)
		return;
	stores_close_all(st);
	for (size_t i = 0; i < st->n_kinds; i++)
		free(st->kinds[i].name);
	free(st->kinds);
	free(st);
}

void stores_module_for(const char *kind, char *out, size_t len)
{
	snprintf(out, len, "store_%s", kind);
}

int stores_register_kind(struct stores *st, const char *kind, const struct plant_store_backend *be,
			 void *be_state, void *owner, char *err, size_t errlen)
{
	if (!kind || !*kind || !be) {
		snprintf(err, errlen, "store_register: a kind name and a backend are needed");
		return PLANT_E_INVALID;
	}
	if (be->struct_size < BACKEND_SIZE_1_2 || !be->open || !be->close || !be->get || !be->put ||
	    !be->del || !be->scan || !be->batch || !be->expire) {
		snprintf(err, errlen, "store kind \"%s\": the backend table is incomplete", kind);
		return PLANT_E_INVALID;
	}
	for (size_t i = 0; i < st->n_kinds; i++) {
		if (strcmp(st->kinds[i].name, kind) == 0) {
			snprintf(err, errlen, "store kind \"%s\" is already registered", kind);
			return PLANT_E_EXISTS;
		}
	}
	struct kind *v = realloc(st->kinds, (st->n_kinds + 1) * sizeof *v);
	if (!v)
		return PLANT_E_NOMEM;
	st->kinds = v;
	st->kinds[st->n_kinds++] =
		(struct kind){.name = strdup(kind), .be = be, .be_state = be_state, .owner = owner};
	return PLANT_OK;
}

int stores_owner_serves(const struct stores *st, const void *owner)
{
	for (size_t i = 0; i < st->n_kinds; i++)
		if (st->kinds[i].owner == owner)
			return 1;
	return 0;
}

int stores_open_all(struct stores *st, const struct site_config *cfg, const char *data_dir,
		    char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->n_stores; i++) {
		const struct instance_spec *spec = &cfg->stores[i];
		char where[PATH_MAX + 32];
		const char *kind = json_string_value(json_object_get(spec->settings, "backend"));
		const struct kind *k = NULL;
		for (size_t j = 0; kind && j < st->n_kinds; j++)
			if (strcmp(st->kinds[j].name, kind) == 0)
				k = &st->kinds[j];
		if (!k) {
			stores_close_all(st);
			snprintf(err, errlen, "%s: store \"%s\": no backend serves kind \"%s\"",
				 instance_spec_where(spec, "backend", where, sizeof where),
				 spec->name, kind ? kind : "?");
			return PLANT_E_CONFIG;
		}
		json_t *settings = json_deep_copy(spec->settings);
		json_object_del(settings, "backend");
		void *h = NULL;
		char why[1024] = "";
		int rc = k->be->open(k->be_state, spec->name, settings, data_dir, &h, why,
				     sizeof why);
		json_decref(settings);
		if (rc != PLANT_OK) {
			/* the ones opened before it close now, while their backends
			 * are still loaded */
			stores_close_all(st);
			snprintf(err, errlen, "%s: store \"%s\" (backend %s): %s",
				 instance_spec_where(spec, NULL, where, sizeof where), spec->name,
				 kind, why[0] ? why : plant_status_name(rc));
			return rc;
		}
		struct open_store *v = realloc(st->open, (st->n_open + 1) * sizeof *v);
		if (!v) {
			k->be->close(h);
			return PLANT_E_NOMEM;
		}
		st->open = v;
		st->open[st->n_open++] = (struct open_store){
			.name = strdup(spec->name), .kind = strdup(kind), .be = k->be, .h = h};
		log_info("store \"%s\" open (backend %s)", spec->name, kind);
	}
	return PLANT_OK;
}

int stores_find(const struct stores *st, const char *name, uint32_t *id_out)
{
	for (size_t i = 0; name && i < st->n_open; i++) {
		if (strcmp(st->open[i].name, name) == 0) {
			*id_out = (uint32_t)i;
			return PLANT_OK;
		}
	}
	return PLANT_E_NOTFOUND;
}

int stores_ref(const struct stores *st, uint32_t id, struct store_ref *out)
{
	if (id >= st->n_open)
		return PLANT_E_NOTFOUND;
	out->be = st->open[id].be;
	out->h = st->open[id].h;
	out->name = st->open[id].name;
	return PLANT_OK;
}

json_t *stores_json(const struct stores *st)
{
	json_t *arr = json_array();
	for (size_t i = 0; i < st->n_open; i++) {
		const struct open_store *s = &st->open[i];
		json_t *detail = NULL;
		int rc = s->be->health ? s->be->health(s->h, &detail) : PLANT_OK;
		json_array_append_new(arr, json_pack("{s:s, s:s, s:b, s:o?}", "name", s->name,
						     "backend", s->kind, "healthy", rc == PLANT_OK,
						     "detail", detail));
	}
	return arr;
}

size_t stores_expire_all(struct stores *st, uint64_t now)
{
	size_t n = 0;
	for (size_t i = 0; i < st->n_open; i++)
		n += st->open[i].be->expire(st->open[i].h, now);
	return n;
}
