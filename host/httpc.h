/* The host's HTTP client: libcurl's multi interface driven by an event loop
 * on a thread of its own, so that requests from any thread run side by
 * side on kept-alive connections and the host's main loop never waits on
 * the network. AWS Signature Version 4 through libcurl (CURLOPT_AWS_SIGV4)
 * with the site's credentials. */
#ifndef PLANTD_HTTPC_H
#define PLANTD_HTTPC_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "plantd/plantd.h"

struct httpc;

/* Credentials and region for SigV4: from the site's `aws` settings (an
 * object: region, access_key_id, secret_access_key, session_token; may be
 * NULL), else the environment. */
int httpc_create(const json_t *aws, struct httpc **out, char *err, size_t errlen);
/* Cancels what is in flight (each completes with PLANT_E_STATE), stops. */
void httpc_destroy(struct httpc *c);

/* Check a site's `aws` settings (for --check): keys and types. */
int httpc_check_aws(const json_t *aws, char *err, size_t errlen);

/* Called once with the result ([borrowed]: valid for the call), on the
 * client's thread. */
typedef void (*httpc_done_fn)(void *ud, struct plant_http_result *res);

/* Queue a request on behalf of `owner`. PLANT_E_INVALID for a bad call,
 * PLANT_E_CONFIG for a signed call without credentials (err says why),
 * PLANT_E_STATE when the client stops. On PLANT_OK `done` is called
 * exactly once. */
int httpc_submit(struct httpc *c, void *owner, const struct plant_http_call *call,
		 httpc_done_fn done, void *ud, char *err, size_t errlen);

/* Complete every request of `owner` still in flight with PLANT_E_STATE,
 * and return once their callbacks ran. */
void httpc_cancel_owner(struct httpc *c, void *owner);

/* Is the caller the client's own thread? (Waiting there would deadlock.) */
int httpc_on_thread(const struct httpc *c);

/* A copy of a result that outlives the callback, and its release. */
struct plant_http_result *httpc_result_copy(const struct plant_http_result *res);
void httpc_result_free(struct plant_http_result *res);
const char *httpc_result_header(const struct plant_http_result *res, const char *name);

/* Requests so far, for /metrics. */
struct httpc_stats {
	uint64_t sent, ok, failed, timeouts, cancelled, in_flight;
};
void httpc_stats_get(struct httpc *c, struct httpc_stats *out);

#endif
