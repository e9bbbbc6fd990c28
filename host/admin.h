/* The admin API: health, Prometheus metrics, the site's plugins, topics,
 * queues and stores, publishing, peeking, redriving, tailing and reloading,
 * served on the site's admin listener (README: "The admin API"). */
#ifndef PLANTD_ADMIN_H
#define PLANTD_ADMIN_H

#include <stddef.h>

struct admin;
struct http;
struct site;

/* What POST /v1/reload does (main's SIGHUP handler): PLANT_OK, or an
 * error in err. [main loop] */
typedef int (*admin_reload_fn)(void *ud, char *err, size_t errlen);

/* Serve the admin routes on `http`'s admin listener, if it has one
 * (*out is NULL then). */
int admin_start(struct http *http, struct site *site, admin_reload_fn reload, void *reload_ud,
		struct admin **out);
/* Before the site goes: remove the routes and end live tails. */
void admin_stop(struct admin *a);
/* After the HTTP server is gone (its connections held tails). */
void admin_free(struct admin *a);

#endif
