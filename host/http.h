/* The host's HTTP server: listeners from the site's config, each with its
 * own threads (or the main loop), tokens, TLS and limits; routes that the
 * host (the admin API) and plugins (through the SDK) register; replies from
 * any thread. Built on libevent's evhttp. */
#ifndef PLANTD_HTTP_H
#define PLANTD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "plantd/plantd.h"

struct event_base;
struct http;
struct site_config;

/* A route's handler, on the listener's thread. Returns PLANT_OK when it
 * replied or will reply; otherwise the server answers 500 (or 503 for
 * PLANT_E_STATE) unless a reply was made. */
typedef int (*http_handler_fn)(void *ud, plant_http_req *req);

/* Check the `listeners` entries of `cfg` (for --check and before a reload).
 * Errors name file and line. */
int http_check(const struct site_config *cfg, char *err, size_t errlen);

/* Bind every listener of `cfg` and start its threads; the admin listener
 * (and any with threads = 0) runs on `main_base`. With no listeners, *out
 * is a server with nothing to serve. */
int http_create(const struct site_config *cfg, struct event_base *main_base, struct http **out,
		char *err, size_t errlen);
/* From now on every request is answered 503; returns once the handlers
 * running on listener threads have returned. */
void http_shutdown(struct http *h);
/* Stop the threads, close every connection, free. */
void http_destroy(struct http *h);

/* Where each listener ended up, as {"name": "http://127.0.0.1:PORT"}: [new]. */
json_t *http_urls_json(struct http *h);
/* The admin listener's name, or NULL. */
const char *http_admin_listener(struct http *h);

/* Add a route; `owner` groups routes for http_routes_remove_owner. With
 * PLANT_ROUTE_CONCURRENT the handler may run on several threads at once.
 * `ud_free` (may be NULL) frees `ud` when the route goes. */
int http_route_add(struct http *h, const char *listener, const char *method, const char *path,
		   uint32_t flags, void *owner, http_handler_fn fn, void *ud,
		   void (*ud_free)(void *));
/* Remove the owner's routes, after waiting for their running handlers. */
void http_routes_remove_owner(struct http *h, void *owner);

/* Keep a request past its answer (for a caller that must look at it after
 * handing it to another thread); every ref needs an unref. */
void http_req_ref(plant_http_req *req);
void http_req_unref(plant_http_req *req);

/* Requests (what the SDK's http_* functions call). */
int http_req_info(const plant_http_req *req, struct plant_http_info *out);
const char *http_req_header(const plant_http_req *req, const char *name);
int http_req_reply(plant_http_req *req, int status, const char *content_type, const char *body,
		   size_t len, const char *const *headers);
/* A JSON reply: {"error": msg} for status >= 400 when `body` is NULL.
 * `body` is [stolen]. */
int http_req_reply_json(plant_http_req *req, int status, json_t *body, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* A value from the query string, decoded, into buf; NULL when absent. */
const char *http_req_query(const plant_http_req *req, const char *key, char *buf, size_t len);

/* Streaming answers (the admin API's tail): start with a status and type,
 * then chunks from any thread (those sent before the start are refused);
 * `on_close` runs on the listener's thread when the client goes (or the
 * server stops), and `req` is freed when it returns: the caller must have
 * stopped every thread that sends chunks by then. A stream is not subject
 * to the listener's idle timeout. */
int http_req_stream_start(plant_http_req *req, const char *content_type, void (*on_close)(void *ud),
			  void *ud);
/* Queue a chunk; PLANT_E_STATE once the client went, PLANT_E_FULL when
 * more than `max_pending` bytes wait to be sent (the chunk is dropped). */
int http_req_stream_chunk(plant_http_req *req, const char *data, size_t len, size_t max_pending);

/* Per listener and status: requests answered; Prometheus lines appended to
 * `out` by the caller's writer. */
typedef void (*http_stat_fn)(void *ud, const char *listener, int status, uint64_t count);
void http_stats_foreach(struct http *h, http_stat_fn fn, void *ud);

#endif
