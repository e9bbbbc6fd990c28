/* The admin API: health, Prometheus metrics, the site's plugins, topics,
 * queues and stores, publishing, peeking, redriving, tailing and reloading,
 * served on the site's admin listener (README: "The admin API"). */
#ifndef PLANTD_ADMIN_H
#define PLANTD_ADMIN_H

#include <stddef.h>
#include <jansson.h>

struct admin;
struct http;
struct site;

/* What the site's runner does for the API. Each returns PLANT_OK, or an
 * error in err. [main loop] */
struct admin_hooks {
	void *ud;
	/* POST /v1/reload: what SIGHUP does */
	int (*reload)(void *ud, char *err, size_t errlen);
	/* POST /v1/plugins: start an instance ({"name", "module", "config",
	 * "required"}) and keep it (dropin_load) */
	int (*load)(void *ud, const json_t *entry, char *err, size_t errlen);
	/* DELETE /v1/plugins/NAME: stop a loaded instance and forget it */
	int (*unload)(void *ud, const char *name, char *err, size_t errlen);
	/* /v1/deployments, POST /v1/plugins/NAME/rollback (host/deploy.h) */
	struct deploy *deploy;
};

/* Serve the admin routes on `http`'s admin listener, if it has one
 * (*out is NULL then). `hooks` is copied. */
int admin_start(struct http *http, struct site *site, const struct admin_hooks *hooks,
		struct admin **out);
/* Before the site goes: remove the routes and end live tails. */
void admin_stop(struct admin *a);
/* After the HTTP server is gone (its connections held tails). */
void admin_free(struct admin *a);

#endif
