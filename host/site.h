/* A running site: its instances, the bus, the executor, the event loop
 * timers, and the host API table plugins receive. Lifecycle and reload. */
#ifndef PLANTD_SITE_H
#define PLANTD_SITE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "plantd/plantd.h"
#include "config.h"
#include "executor.h"
#include "loader.h"

struct event_base;
struct site;
struct metrics;
struct http;

enum instance_state {
	INST_NEW,
	INST_INITIALISED,
	INST_RUNNING,
	INST_STOPPED,
	INST_FAILED, /* init or start failed; kept for the report */
};

/* Upper bounds of the handler latency histogram, in µs. */
#define SITE_LATENCY_BUCKETS 12
extern const uint64_t site_latency_bounds_us[SITE_LATENCY_BUCKETS];

struct instance {
	struct site *site;
	struct instance_spec *spec; /* owned copy */
	struct module *mod;
	json_t *config; /* settings with defaults, as the plugin sees it */
	void *state;
	enum instance_state st;
	struct actor actor;
	struct metrics *metrics;
	char error[512]; /* the last api->error() text */
	char error_key[64];
	pthread_mutex_t timers_lock;
	struct timer *timers;
	uint64_t next_timer_id;
	atomic_ullong handled, errors;
	/* handler calls by duration (SITE_LATENCY_BOUNDS_US, then +Inf) */
	atomic_ullong lat_count[SITE_LATENCY_BUCKETS + 1];
	atomic_ullong lat_sum_ns;
	atomic_bool stopping;	/* the host API refuses new subscriptions and timers */
	atomic_long http_calls; /* http_call()s whose answer is not yet in the mailbox */
};

/* Open every module of `cfg`, check every instance's settings against its
 * module's key table and call each validate(). Does not init anything. On
 * failure err holds "FILE:LINE: instance \"x\": ...". Used by --check and
 * before a reload. */
int site_check(const struct site_config *cfg, const char *default_plugin_path, char *err,
	       size_t errlen);

/* Build a site from `cfg` (taken over), run every init() in config order and
 * then every start(). An init() that fails on a required instance fails the
 * whole (with the plugin's message in err); an optional one is logged and
 * kept as failed. `base` is the loop that runs timers. */
int site_create(struct site_config *cfg, const char *default_plugin_path, struct event_base *base,
		struct site **out, char *err, size_t errlen);
/* Stop every instance in reverse config order (letting in-flight calls
 * finish within shutdown_timeout), then destroy them and close modules. */
void site_destroy(struct site *site);

/* Apply `cfg` (taken over) to a running site: unchanged instances go on
 * untouched, changed ones restart with new settings, removed ones stop, new
 * ones start. A config that does not check is refused as a whole and the
 * site is left as it was (PLANT_E_CONFIG with the reason in err). */
int site_reload(struct site *site, struct site_config *cfg, char *err, size_t errlen);

/* Start one more instance on a running site (plantctl load): checked as at
 * start (module, ABI, key table, validate()), then init() and start(). On
 * any failure the site is left as it was and err says why: PLANT_E_EXISTS
 * for a name in use, PLANT_E_CONFIG, PLANT_E_PLUGIN when init() or start()
 * failed. `spec` is copied. [main loop] */
int site_add(struct site *site, const struct instance_spec *spec, char *err, size_t errlen);
/* Replace the running instance spec->name with `spec` (another module file,
 * other settings): the new one is checked first (module, ABI, key table,
 * validate()) and a refusal leaves the running one alone (PLANT_E_CONFIG).
 * Then the running one is drained (stop: nothing new reaches it, what it
 * handles finishes; its queues keep what waits) and the new one brought up
 * on the same subscriptions. If its init() or start() fails, the previous
 * spec is started again and PLANT_E_PLUGIN says so. [main loop] */
int site_replace(struct site *site, const struct instance_spec *spec, char *err, size_t errlen);
/* Stop one instance and remove it (plantctl unload): PLANT_E_NOTFOUND, or
 * PLANT_E_STATE for the backend of the site's stores. [main loop] */
int site_remove(struct site *site, const char *name, char *err, size_t errlen);

/* What api->deploy() calls (host/deploy.c), once the caller is allowed:
 * [any-thread]. */
typedef int (*site_deploy_fn)(void *ud, struct instance *inst, const json_t *request,
			      plant_deploy_done done, void *user);
void site_set_deploy(struct site *site, site_deploy_fn fn, void *ud);

/* Counters for the summary and tests. */
size_t site_instance_count(const struct site *site);
struct instance *site_instance(const struct site *site, size_t i);
struct instance *site_find(const struct site *site, const char *name);
struct bus *site_bus(const struct site *site);
const struct site_config *site_config(const struct site *site);
/* Wait until no instance has work pending (tests), up to timeout_ms. */
bool site_wait_idle(struct site *site, uint64_t timeout_ms);

/* site_create() for a host that serves HTTP: plugins register their routes
 * on `http`'s listeners (which must outlive the site). */
int site_create_http(struct site_config *cfg, const char *default_plugin_path,
		     struct event_base *base, struct http *http, struct site **out, char *err,
		     size_t errlen);

/* For the admin API. */
struct executor *site_executor(const struct site *site);
/* Run fn(arg, actor_ctx) on a worker, as the host's own work (store and
 * durable queue calls); actor_ctx is NULL when it can never run. */
int site_post_host(struct site *site, void (*fn)(void *arg, void *actor_ctx), void *arg);
/* Run fn on the instance's worker, never beside its other callbacks. */
int site_post_instance(struct instance *inst, void (*fn)(void *arg, void *actor_ctx), void *arg);
/* [{name, backend, healthy, detail}] [new]; may block: on a worker. */
json_t *site_stores_json(struct site *site);
/* The loop the site's timers run on. */
struct event_base *site_event_base(const struct site *site);
/* The site's HTTP client. */
struct httpc *site_httpc(const struct site *site);
/* The host's start, ms since the epoch. */
uint64_t site_started_ms(const struct site *site);

/* The host API table (one for every instance). */
extern const struct plant_host_api host_api;

/* The default plugin path: the build tree's plugins when running from the
 * build tree, else the installed plugin directory. */
const char *site_default_plugin_path(void);

#endif
