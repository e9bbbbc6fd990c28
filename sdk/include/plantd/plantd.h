/* plantd SDK: the only header a plugin includes.
 *
 * Depends on C11 and jansson alone. A plugin never links against the host:
 * everything it may call arrives in `struct plant_host_api`, a table of
 * function pointers handed to init(). See sdk/README.md for the guide.
 *
 * Versioning
 *   PLANT_ABI_MAJOR  changes only on a break; it also renames the descriptor
 *                    symbol (plant_plugin_v1 -> plant_plugin_v2), so an old
 *                    host can never misread a new plugin.
 *   PLANT_ABI_MINOR  grows when functions are appended to a table. A host
 *                    accepts plugins built for its own or an older minor and
 *                    refuses a newer one (it may call what is not there).
 *
 * Thread tags on each callback and host function:
 *   [main]        called on the host's main thread (lifecycle)
 *   [instance]    called on a worker thread, never concurrently with any
 *                 other callback of the same instance: plugin state needs no
 *                 locks
 *   [any-thread]  a host function that may be called from any callback
 *   [since 1.N]   the minor version that appended the member
 *
 * Ownership, in jansson's words, at each declaration:
 *   [borrowed]  the callee does not own it; json_incref() to keep it
 *   [stolen]    the callee owns it from now on, even when the call fails
 *   [new]       the caller owns the returned reference and must decref it
 */
#ifndef PLANTD_PLANTD_H
#define PLANTD_PLANTD_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PLANT_ABI_MAJOR 1
#define PLANT_ABI_MINOR 7

/* The descriptor symbol for this major. */
#define PLANT_PLUGIN_DESC      plant_plugin_v1
#define PLANT_PLUGIN_DESC_NAME "plant_plugin_v1"

/* Marks the one symbol a plugin exports; build plugins with
 * -fvisibility=hidden so that nothing else leaves the module. */
#define PLANT_EXPORT __attribute__((visibility("default")))

#if defined(__GNUC__)
#define PLANT_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PLANT_PRINTF(f, a)
#endif

/* Status codes. Every host function and plugin callback returns one. New
 * codes are only ever appended. */
enum plant_status {
	PLANT_OK = 0,
	PLANT_E_INVALID = 1,	 /* a bad argument or a bad message */
	PLANT_E_NOMEM = 2,	 /* out of memory */
	PLANT_E_NOTFOUND = 3,	 /* no such topic, queue, store, key */
	PLANT_E_EXISTS = 4,	 /* already there */
	PLANT_E_FULL = 5,	 /* backpressure: retry later */
	PLANT_E_CONDITION = 6,	 /* a conditional write's condition failed */
	PLANT_E_TIMEOUT = 7,	 /* a deadline passed */
	PLANT_E_IO = 8,		 /* the OS or a remote service failed */
	PLANT_E_UNSUPPORTED = 9, /* not offered by this host or backend */
	PLANT_E_STATE = 10,	 /* not allowed now (e.g. during shutdown) */
	PLANT_E_CONFIG = 11,	 /* a configuration error */
	PLANT_E_ABI = 12,	 /* ABI versions do not match */
	PLANT_E_PLUGIN = 13,	 /* the plugin reported a failure */
};

/* A short, stable, lower-case name for a status code. */
static inline const char *plant_status_name(int status)
{
	/* clang-format off */
	static const char *const names[] = {
		"ok", "invalid", "out of memory", "not found", "exists",
		"full", "condition failed", "timeout", "i/o error", "unsupported",
		"bad state", "config error", "abi mismatch", "plugin error",
	};
	/* clang-format on */
	if (status < 0 || (size_t)status >= sizeof(names) / sizeof(names[0]))
		return "unknown status";
	return names[status];
}

enum plant_log_level {
	PLANT_LOG_ERROR = 0,
	PLANT_LOG_WARN = 1,
	PLANT_LOG_INFO = 2,
	PLANT_LOG_DEBUG = 3,
};

/* The host's handle for one plugin instance. Opaque; valid from init() until
 * destroy() returns. */
typedef struct plant_instance plant_instance;

/* A message on the bus. Opaque and read-only; read it through the host API.
 * Messages handed to a handler are [borrowed] for the duration of the call. */
typedef struct plant_msg plant_msg;

/* ---- configuration schema --------------------------------------------- */

enum plant_cfg_type {
	PLANT_CFG_END = 0, /* terminates a key table */
	PLANT_CFG_BOOL,
	PLANT_CFG_INT,	  /* a JSON integer */
	PLANT_CFG_DOUBLE, /* a JSON real; integers in config are accepted */
	PLANT_CFG_STRING,
	PLANT_CFG_DURATION, /* config: seconds as a number, or "250ms", "60s",
			     * "15m", "2h", "1d"; the plugin gets integer ms */
	PLANT_CFG_ARRAY,
	PLANT_CFG_OBJECT, /* a libconfig group */
	PLANT_CFG_ANY,
};

/* One configuration key a module reads. The host checks every instance's
 * settings against the table before init() or validate(): a missing required
 * key, a wrong type or an unknown key is a config error naming file and line.
 * Keys that are absent get `default_value` (a JSON text, e.g. "8", "\"x\"",
 * "1.5", "true", "\"60s\""). A module without a table gets its settings
 * unchecked. */
struct plant_config_key {
	const char *name;
	enum plant_cfg_type type;
	int required;
	const char *default_value; /* JSON text, or NULL for no default */
	const char *description;
};

/* ---- callbacks the host calls ------------------------------------------ */

/* A batch of messages from one subscription [instance]. `msgs` and each
 * message are [borrowed] for the call. A non-OK return is counted as an
 * error for the instance and logged; the host goes on. */
typedef int (*plant_msg_handler)(void *state, const plant_msg *const *msgs, size_t n, void *user);

/* A timer tick [instance]. */
typedef void (*plant_timer_fn)(void *state, void *user);

struct plant_host_api;

/* What to publish, for publish_ex() [since 1.1]. Zero-initialise, set
 * struct_size = sizeof(struct plant_publish), then what you need. */
struct plant_publish {
	uint32_t struct_size;
	const char *topic;
	json_t *body;	  /* [stolen], even on error; or NULL and `text` */
	const char *text; /* [borrowed] JSON text (checked), when body is NULL */
	size_t text_len;
	const json_t *attributes; /* [borrowed] object of strings, or NULL */
	const char *dedup_key;	  /* queues accept a key once per dedup_window */
	uint64_t delay_ms;	  /* queues hold the message back this long */
	char id_out[32];	  /* the message id, set on success */
};

/* ---- fields without a tree [since 1.4] ----------------------------------------- */

enum plant_field_type {
	PLANT_FIELD_ABSENT = 0, /* the body has no such top-level key */
	PLANT_FIELD_NULL,
	PLANT_FIELD_BOOL,   /* num is 1 or 0 */
	PLANT_FIELD_NUMBER, /* num holds it (a double, as jansson's real) */
	PLANT_FIELD_STRING, /* str/len: its characters, without the quotes */
	PLANT_FIELD_OBJECT, /* str/len: its JSON text */
	PLANT_FIELD_ARRAY,  /* str/len: its JSON text */
};

/* One top-level field of a message body, read by msg_fields(). */
struct plant_field {
	int type;	 /* enum plant_field_type */
	int escaped;	 /* a STRING with backslash escapes: str/len are its raw
			  * text; read it decoded from msg_body() */
	const char *str; /* [borrowed] from the message, for as long as it is;
			  * not NUL-terminated */
	size_t len;
	double num;
};

/* ---- stores [since 1.2] ------------------------------------------------------ */

/* Conditions for store writes. A failed condition returns PLANT_E_CONDITION,
 * which is an answer, not an error. */
enum plant_put_cond {
	PLANT_PUT_ANY = 0,	  /* unconditional */
	PLANT_PUT_IF_ABSENT = 1,  /* only if no live item has the key (puts only:
				   * PLANT_E_INVALID for a delete) */
	PLANT_PUT_IF_VERSION = 2, /* only if the stored version equals `version` */
};

/* One write of a batch (store_batch). */
struct plant_store_op {
	int is_delete;
	const char *key; /* bytes; NUL allowed */
	size_t key_len;
	const json_t *value; /* [borrowed]; ignored for a delete */
	int cond;	     /* enum plant_put_cond */
	uint64_t version;    /* for PLANT_PUT_IF_VERSION */
	uint64_t ttl_ms;     /* 0 = no expiry */
	/* Instead of `value` (NULL): the value as JSON text, already checked,
	 * which a backend may store as it is, sparing a tree and a dump. */
	const char *value_text;
	size_t value_text_len;
};

/* A store backend, registered by a plugin under a kind name ("sqlite").
 * Unlike other callbacks, these are [any-thread]: the host calls them from
 * whichever thread uses the store, concurrently, so a backend does its own
 * locking. Items are JSON values under byte-string keys, each with a
 * version that every write bumps (the first write gives version 1). Keys
 * are 1..1024 bytes; `now` is the host clock in ms, for TTLs. */
struct plant_store_backend {
	uint32_t struct_size;
	/* Open store `name` with the `stores` entry's settings ([borrowed]; a
	 * relative `path` is relative to `data_dir`). Errors go to `err`. */
	int (*open)(void *backend_state, const char *name, const json_t *settings,
		    const char *data_dir, void **store_out, char *err, size_t errlen);
	void (*close)(void *store);
	/* *value_out is [new]; PLANT_E_NOTFOUND when absent or expired. */
	int (*get)(void *store, const char *key, size_t key_len, uint64_t now, json_t **value_out,
		   uint64_t *version_out);
	/* `value` is [borrowed]. */
	int (*put)(void *store, const char *key, size_t key_len, const json_t *value, int cond,
		   uint64_t version, uint64_t ttl_ms, uint64_t now, uint64_t *version_out);
	int (*del)(void *store, const char *key, size_t key_len, int cond, uint64_t version,
		   uint64_t now);
	/* Live items whose key starts with `prefix`, in key order, after the key
	 * `after` (NULL: from the start), at most `limit`: *items_out is a [new]
	 * array of {"key": KEY, "value": V, "version": N} where KEY is a string
	 * (keys that are not UTF-8 come as {"key_hex": "..."}). */
	int (*scan)(void *store, const char *prefix, size_t prefix_len, const char *after,
		    size_t after_len, size_t limit, uint64_t now, json_t **items_out);
	/* All or nothing where the backend can (`atomic_out` says whether it
	 * was): the first failing op's index goes to *failed_out. */
	int (*batch)(void *store, const struct plant_store_op *ops, size_t n, uint64_t now,
		     size_t *failed_out, int *atomic_out);
	/* Delete expired items; returns how many. */
	size_t (*expire)(void *store, uint64_t now);
	/* Optional: is the store healthy? *detail_out [new] or NULL. */
	int (*health)(void *store, json_t **detail_out);
};

/* ---- HTTP routes [since 1.5] -------------------------------------------------- */

/* One HTTP request to a plugin's route. Opaque; valid until http_reply(). */
typedef struct plant_http_req plant_http_req;

#define PLANT_ROUTE_PREFIX	0x1u /* `path` ends in '/' and matches every path below it */
/* The handler is thread-safe: the host calls it directly on the listener's
 * HTTP threads, several at once when the listener has several, sparing the
 * hop to a worker. Without it, requests are queued to the instance's worker
 * and handled one at a time like messages ([instance]). */
#define PLANT_ROUTE_CONCURRENT	0x2u
#define PLANT_ROUTE_KNOWN_FLAGS (PLANT_ROUTE_PREFIX | PLANT_ROUTE_CONCURRENT)

/* Handle one request: answer it with http_reply() exactly once, before
 * returning or later from any thread. Returning non-OK without having
 * replied makes the host answer 500 with the instance's last error. */
typedef int (*plant_http_handler)(void *state, plant_http_req *req, void *user);

/* What a request says, from http_request(). Strings are [borrowed] until
 * the reply. */
struct plant_http_info {
	uint32_t struct_size; /* set by the caller: sizeof(struct plant_http_info) */
	const char *method;   /* "GET", "POST", "PUT", "DELETE", ... */
	const char *path;     /* decoded, without the query: "/v1/ingest/sensor.raw" */
	const char *tail;     /* for a prefix route, what follows the prefix; else "" */
	const char *query;    /* the raw query string, or "" */
	const char *body;     /* the body (not NUL-terminated), or NULL when empty */
	size_t body_len;
	const char *remote;   /* the peer's address */
	const char *listener; /* the listener's name */
};

/* ---- the HTTP client [since 1.6] ---------------------------------------------------- */

/* An outgoing request, for http_call() and http_call_wait(). Zero-initialise,
 * set struct_size = sizeof(struct plant_http_call), then what you need.
 * Every pointer is [borrowed] for the duration of the call only: the host
 * copies what it keeps. */
struct plant_http_call {
	uint32_t struct_size;
	const char *method;	    /* "GET" (default), "POST", "PUT", "DELETE", ... */
	const char *url;	    /* http:// or https:// */
	const char *const *headers; /* NULL or a NULL-terminated list of name, value pairs */
	const char *body;	    /* or NULL */
	size_t body_len;
	uint64_t timeout_ms; /* the whole exchange; 0 = 30 s */
	/* AWS Signature Version 4: with a service name ("sqs", "sns",
	 * "dynamodb", "s3"), the host signs the request with the site's AWS
	 * credentials (the `aws` settings, else AWS_ACCESS_KEY_ID,
	 * AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN from the environment).
	 * PLANT_E_CONFIG from the call when there are none. */
	const char *aws_service;
	const char *aws_region; /* NULL: the site's region (`aws.region`, else AWS_REGION) */
};

/* What came back. [borrowed] for the duration of the callback (or until
 * http_result_free() for http_call_wait()). */
struct plant_http_result {
	int status;	  /* PLANT_OK when an answer came (whatever its HTTP
			   * status), PLANT_E_TIMEOUT, PLANT_E_IO (no
			   * connection, TLS, reset), PLANT_E_STATE (stopping) */
	long http_status; /* 200, 404, ...; 0 without an answer */
	const char *body; /* NUL-terminated (also holds `body_len` bytes) */
	size_t body_len;
	const char *error; /* the transport's reason when status is not OK, else "" */
	uint64_t elapsed_us;
};

/* [instance] The answer to http_call(), on the instance's worker like a
 * message handler. */
typedef void (*plant_http_done)(void *state, const struct plant_http_result *res, void *user);

/* [instance] The answer to deploy() [since 1.7]: `status` is PLANT_OK when
 * the new version runs, else the refusal's. `deployment` ([borrowed] for the
 * call, or NULL for a request that was not one) is the record `plantctl
 * deployments` shows: {"id", "instance", "module", "version",
 * "previous_version", "state": "watching" | "deployed" | "refused", "reason",
 * ...}; `error` the reason as text ("" when OK). */
typedef void (*plant_deploy_done)(void *state, int status, const json_t *deployment,
				  const char *error, void *user);

#define PLANT_PLUGIN_MAY_BLOCK	 0x1u /* reserved: callbacks block for long */
#define PLANT_PLUGIN_KNOWN_FLAGS PLANT_PLUGIN_MAY_BLOCK

/* What a plugin exports, as const data, under PLANT_PLUGIN_DESC. Its first
 * four fields never change, in any major, so every host can read the version
 * of any plugin. Fields are only appended, each tagged [since 1.N]. */
struct plant_plugin_desc {
	uint32_t abi_major;   /* PLANT_ABI_MAJOR the module was built against */
	uint32_t abi_minor;   /* PLANT_ABI_MINOR the module was built against */
	uint32_t struct_size; /* sizeof(struct plant_plugin_desc) at build */
	uint32_t flags;	      /* PLANT_PLUGIN_*; unknown bits are refused */

	const char *name;			    /* module name, e.g. "sim_thermistor" */
	const char *version;			    /* module version, e.g. "1.2.0" */
	const char *description;		    /* one line */
	const struct plant_config_key *config_keys; /* or NULL; ends at END */

	/* Optional [main]: semantic checks beyond the key table, for `plantd
	 * --check` and before a reload. `config` is [borrowed] with defaults
	 * filled in. Report with api->error(self, key, ...) and return non-OK.
	 * Must not start anything: init() may never follow (publish, subscribe,
	 * consume and timers answer PLANT_E_STATE here, as they do once the
	 * instance is stopping). */
	int (*validate)(plant_instance *self, const struct plant_host_api *api,
			const json_t *config);

	/* Required [main]: set up an instance. `api` stays valid until destroy();
	 * `config` is [borrowed] and stays valid until destroy(). Store the
	 * instance state in *state_out. Subscriptions and timers may be made
	 * here. On failure report with api->error() and return non-OK: nothing
	 * else of this instance is called, not even destroy(). */
	int (*init)(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		    void **state_out);

	/* Optional [main], never beside the instance's other callbacks: begin
	 * work. Runs after every instance of the site has been initialised, in
	 * config order. */
	int (*start)(void *state);

	/* Optional [main], never beside the instance's other callbacks: stop
	 * work. The host has already removed the instance's subscriptions and
	 * timers and let its in-flight calls finish; after stop() no message or
	 * tick arrives, and publishing answers PLANT_E_STATE. */
	void (*stop)(void *state);

	/* Optional [main]: free everything. Called once, after stop() or after a
	 * start() that failed, never after a failed init(). */
	void (*destroy)(void *state);

	/* Optional [instance]: is the instance healthy? Return PLANT_OK for yes.
	 * *detail_out may be set to a [new] JSON value the host shows in its
	 * health report. */
	int (*health)(void *state, json_t **detail_out);
};

/* Use as the first line of a descriptor initialiser. */
#define PLANT_PLUGIN_HEADER                                         \
	.abi_major = PLANT_ABI_MAJOR, .abi_minor = PLANT_ABI_MINOR, \
	.struct_size = (uint32_t)sizeof(struct plant_plugin_desc)

/* ---- what the host offers ------------------------------------------------ */

/* Handed to init(); the same table for every instance. Functions are only
 * appended, each tagged [since 1.N]. Test PLANT_API_HAS() before calling a
 * function newer than the minor your plugin needs at least. */
struct plant_host_api {
	uint32_t struct_size; /* sizeof the host's table */
	uint16_t abi_major;
	uint16_t abi_minor;

	/* [any-thread] One log line with the instance's name attached. */
	void (*log)(plant_instance *self, int level, const char *fmt, ...) PLANT_PRINTF(3, 4);

	/* [any-thread] Record why a callback failed, for the user. `key` names
	 * the config key at fault or is NULL; the host adds file and line. The
	 * last call before a non-OK return from validate() or init() wins. */
	void (*error)(plant_instance *self, const char *key, const char *fmt, ...)
		PLANT_PRINTF(3, 4);

	/* [any-thread] Publish `body` on `topic`. `body` is [stolen], even on
	 * error. Returns PLANT_E_INVALID for a bad topic name, PLANT_E_FULL when
	 * a queue fed by the topic is full (then nothing is delivered anywhere),
	 * PLANT_E_STATE during shutdown. */
	int (*publish)(plant_instance *self, const char *topic, json_t *body);

	/* [any-thread] Publish a body given as JSON text (it is checked, not kept
	 * as a tree). `json` is [borrowed]; `len` bytes, no NUL needed. */
	int (*publish_text)(plant_instance *self, const char *topic, const char *json, size_t len);

	/* [any-thread] Deliver messages whose topic matches `pattern` (a topic
	 * name, or a glob with `*` for any run of characters, dots included, and
	 * `?` for one character) to `fn` in batches. The host removes subscriptions
	 * when the instance stops. `*sub_out` (may be NULL) gets an id for
	 * unsubscribe(). */
	int (*subscribe)(plant_instance *self, const char *pattern, plant_msg_handler fn,
			 void *user, uint64_t *sub_out);
	int (*unsubscribe)(plant_instance *self, uint64_t sub);

	/* [any-thread] Call `fn` every `every_ms` (plus a random 0..jitter_ms
	 * each time). Ticks do not pile up: a tick due while the previous one
	 * still waits to run is skipped. Removed when the instance stops. */
	int (*timer_add)(plant_instance *self, uint64_t every_ms, uint64_t jitter_ms,
			 plant_timer_fn fn, void *user, uint64_t *timer_out);
	int (*timer_cancel)(plant_instance *self, uint64_t timer);

	/* [any-thread] Metrics, named [a-z0-9_]; the host adds the instance. */
	int (*counter_add)(plant_instance *self, const char *name, uint64_t delta);
	int (*gauge_set)(plant_instance *self, const char *name, double value);

	/* [any-thread] The instance's settings with defaults filled in
	 * ([borrowed], valid until destroy()). */
	const json_t *(*config)(plant_instance *self);
	/* [any-thread] [borrowed] strings valid until destroy(). */
	const char *(*instance_name)(plant_instance *self);
	const char *(*site_name)(plant_instance *self);
	const char *(*data_dir)(plant_instance *self);

	/* [any-thread] The host clock in ms since the epoch (tests may drive
	 * it). */
	uint64_t (*now_ms)(plant_instance *self);

	/* [any-thread] Reading a message. Every string is [borrowed] for as long
	 * as the message is. */
	const char *(*msg_id)(const plant_msg *msg);
	const char *(*msg_topic)(const plant_msg *msg);
	uint64_t (*msg_ts)(const plant_msg *msg);
	/* The body as compact JSON text (always there, never parsed). */
	const char *(*msg_body_text)(const plant_msg *msg, size_t *len_out);
	/* The body as a tree, parsed on first use and cached for every other
	 * reader: [borrowed], never modify it. NULL if the body is not JSON. */
	const json_t *(*msg_body)(const plant_msg *msg);
	/* A string attribute, or NULL. */
	const char *(*msg_attr)(const plant_msg *msg, const char *name);
	uint32_t (*msg_receive_count)(const plant_msg *msg);

	/* ---- [since 1.1] queues, publish options, introspection ---- */

	/* [any-thread] Publish with attributes, a deduplication key or a delay.
	 * PLANT_E_FULL when a queue subscribed to the topic is full: then
	 * nothing was delivered anywhere (all or nothing). */
	int (*publish_ex)(plant_instance *self, struct plant_publish *p);

	/* [any-thread] Create a queue (or check an existing one) with settings
	 * as in config: {"subscribe": ["topic.*"], "visibility_timeout": "30s",
	 * "max_receive": 5, "dead_letter": "name", "retention": "4d",
	 * "max_depth": 100000, "delay": 0, "dedup_window": "5m"}. [borrowed] */
	int (*queue_declare)(plant_instance *self, const char *name, const json_t *settings);

	/* [any-thread] Receive from `queue` in batches of up to `max_batch`
	 * (0 = 256). Messages handed to `fn` are in flight: settle each with
	 * ack() or nack(). Those left unsettled are acked when `fn` returns
	 * PLANT_OK, and left to time out (visible again after the visibility
	 * timeout, receive count + 1) when it returns an error. Removed when the
	 * instance stops; what it held comes back for the next consumer. */
	int (*consume)(plant_instance *self, const char *queue, plant_msg_handler fn, void *user,
		       uint32_t max_batch, uint64_t *consumer_out);

	/* [instance] Settle a message received through consume(): ack deletes
	 * it; nack makes it visible again after `delay_ms`, keeping `reason`
	 * (may be NULL) as its last error. PLANT_E_NOTFOUND when it timed out
	 * and went back already. */
	int (*ack)(plant_instance *self, const plant_msg *msg);
	int (*nack)(plant_instance *self, const plant_msg *msg, uint64_t delay_ms,
		    const char *reason);

	/* [any-thread] How many more messages fit in `queue` (UINT64_MAX when
	 * unbounded). */
	int (*queue_room)(plant_instance *self, const char *queue, uint64_t *room_out);

	/* [any-thread] The bus as JSON: {"topics": {NAME: {"published": N,
	 * "subscribers": N}}, "queues": {NAME: {"depth": N, "in_flight": N,
	 * "oldest_age_ms": N, "dead_lettered": N, ...}}}. [new] */
	json_t *(*bus_stats)(plant_instance *self);

	/* ---- [since 1.2] stores ---- */

	/* [main] Offer a store kind (called from init()). `backend` is
	 * [borrowed] and must stay valid until the instance is destroyed, which
	 * the host does only after every store of that kind is closed. */
	int (*store_register)(plant_instance *self, const char *kind,
			      const struct plant_store_backend *backend, void *backend_state);

	/* [any-thread] A store of the site, by name, as a handle for the calls
	 * below. PLANT_E_NOTFOUND when the site has no such store. */
	int (*store_open)(plant_instance *self, const char *name, uint32_t *store_out);

	/* [any-thread] May block (disk, network). *value_out is [new]. */
	int (*store_get)(plant_instance *self, uint32_t store, const char *key, size_t key_len,
			 json_t **value_out, uint64_t *version_out);
	/* `value` is [stolen], even on error. PLANT_E_CONDITION when `cond`
	 * fails. *version_out (may be NULL) gets the new version. */
	int (*store_put)(plant_instance *self, uint32_t store, const char *key, size_t key_len,
			 json_t *value, int cond, uint64_t version, uint64_t ttl_ms,
			 uint64_t *version_out);
	int (*store_delete)(plant_instance *self, uint32_t store, const char *key, size_t key_len,
			    int cond, uint64_t version);
	int (*store_scan)(plant_instance *self, uint32_t store, const char *prefix,
			  size_t prefix_len, const char *after, size_t after_len, size_t limit,
			  json_t **items_out);
	int (*store_batch)(plant_instance *self, uint32_t store, const struct plant_store_op *ops,
			   size_t n, size_t *failed_out);

	/* [any-thread] Publish `n` messages in one go: a durable queue writes
	 * them all in one store transaction, which is how a producer reaches
	 * hundreds of thousands of durable messages a second. Published in
	 * order until one fails (its status is returned); *done_out counts
	 * those published. Every item's body is [stolen], even on error; each
	 * published item's id_out is set. */
	int (*publish_batch)(plant_instance *self, struct plant_publish *items, size_t n,
			     size_t *done_out);

	/* ---- [since 1.3] holding and rejecting queue messages ---- */

	/* [instance] Keep a message received through consume() in flight past
	 * the handler's return, to settle it later (from a timer, say): for a
	 * consumer that acks only once work spanning many batches is done.
	 * Returns a handle, a plant_msg that stays valid until ack(), nack(),
	 * reject() or release() is called on it; the `msg` the handler got is
	 * settled by this call (the handler's return no longer touches it).
	 * The visibility timeout still runs: settle in time, or the message
	 * comes back (and ack() answers PLANT_E_NOTFOUND, still releasing the
	 * handle). When the instance stops, what it holds comes back for the
	 * next consumer at once: release the handles in stop(). NULL when
	 * `msg` is not an unsettled queue delivery, or out of memory. */
	const plant_msg *(*hold)(plant_instance *self, const plant_msg *msg);
	/* [instance] Let go of a held handle without settling its message. */
	void (*release)(plant_instance *self, const plant_msg *held);
	/* [instance] Settle a queue message as one that can never be
	 * processed: it goes to the queue's dead-letter queue now, whatever
	 * its receive count, with `reason` in its "dlq_reason" attribute.
	 * When it cannot, the message (and a held handle) is left as it was,
	 * for the plugin to nack or ack: PLANT_E_UNSUPPORTED when the queue
	 * has no dead-letter queue, PLANT_E_FULL when that is full,
	 * PLANT_E_NOMEM. Otherwise a held handle is released. */
	int (*reject)(plant_instance *self, const plant_msg *msg, const char *reason);

	/* ---- [since 1.4] ---- */

	/* [any-thread] Read the top-level fields `keys[0..n)` of a message body
	 * into `out[0..n)` in one pass over its text, building no tree: for a
	 * handler that needs a few fields of many messages. A key the body
	 * has twice gives its last value, as msg_body() does. PLANT_E_INVALID
	 * when the body is not a JSON object. */
	int (*msg_fields)(const plant_msg *msg, const char *const *keys, size_t n,
			  struct plant_field *out);

	/* ---- [since 1.5] HTTP routes, all-or-nothing batches ---- */

	/* [any-thread] Serve `method` `path` on the site's listener `listener`
	 * (see listeners in the README): exact paths, or with
	 * PLANT_ROUTE_PREFIX every path below a prefix ending in '/'. The
	 * listener checks tokens and size limits before the handler runs.
	 * Requests reach the handler only while the instance runs (503
	 * before); routes go when it stops. PLANT_E_NOTFOUND for an unknown
	 * listener, PLANT_E_EXISTS when another route has the same method and
	 * path, PLANT_E_INVALID for a bad path or flags. */
	int (*http_route)(plant_instance *self, const char *listener, const char *method,
			  const char *path, uint32_t flags, plant_http_handler fn, void *user);
	/* [any-thread] Fill `out` (set out->struct_size first). */
	int (*http_request)(const plant_http_req *req, struct plant_http_info *out);
	/* [any-thread] A request header, case-insensitive, or NULL. */
	const char *(*http_header)(const plant_http_req *req, const char *name);
	/* [any-thread] Answer and release `req`. `headers` is NULL or a
	 * NULL-terminated list of name, value pairs. `body` is copied. */
	int (*http_reply)(plant_http_req *req, int status, const char *content_type,
			  const char *body, size_t len, const char *const *headers);

	/* [any-thread] publish_batch(), all or nothing: every item is
	 * published, or none is: PLANT_E_FULL when one does not fit in a queue,
	 * PLANT_E_INVALID for a bad topic or body (*failed_out, may be NULL,
	 * names that item). A durable queue has them all stored when this
	 * returns OK. Bodies are [stolen], even on error. */
	int (*publish_all)(plant_instance *self, struct plant_publish *items, size_t n,
			   size_t *failed_out);

	/* ---- [since 1.6] the HTTP client ---- */

	/* [any-thread] Send a request without waiting: the host's client runs
	 * it on its own loop (connections are kept alive and reused) and
	 * calls `done` on the instance's worker with the result. `done` is
	 * always called exactly once when this returns PLANT_OK, with
	 * PLANT_E_STATE when the instance stops first. */
	int (*http_call)(plant_instance *self, const struct plant_http_call *call,
			 plant_http_done done, void *user);
	/* [any-thread] Send a request and wait for the result (*out is [new]:
	 * http_result_free() it), blocking the calling thread but never the
	 * host's loops: from a handler, a timer, a store backend's callback (not
	 * from a PLANT_ROUTE_CONCURRENT handler: it runs on a listener's loop).
	 * Returns the result's status (the result is there either way, unless
	 * PLANT_E_INVALID, PLANT_E_CONFIG or PLANT_E_NOMEM). */
	int (*http_call_wait)(plant_instance *self, const struct plant_http_call *call,
			      struct plant_http_result **out);
	void (*http_result_free)(struct plant_http_result *res);
	/* [any-thread] A header of a result, case-insensitive, or NULL (the
	 * last one when it came twice). */
	const char *(*http_result_header)(const struct plant_http_result *res, const char *name);

	/* ---- deployments [since 1.7] ---- */

	/* [any-thread] Deploy a plugin bundle file to an instance of this site,
	 * as `plantctl deploy` does (verify, drain and swap, watch, roll back).
	 * `request` [borrowed]: {"bundle": PATH, "instance": NAME, "grace":
	 * "10s", "by": WHO}. The checks and the swap run on the host's main
	 * loop; `done` gets the answer on this instance's worker. Later steps
	 * (deployed, rolled_back) are published by the host on "cicd.events"
	 * as {"event": "deploy.STATE", "id", "instance", "version", "reason",
	 * "node", ...}. Only the instances the site lists in `deploy.plugins`
	 * may deploy: PLANT_E_STATE for others (and when the site is
	 * stopping), PLANT_E_INVALID for a request that is not an object or
	 * names no "instance". An instance cannot deploy over itself. */
	int (*deploy)(plant_instance *self, const json_t *request, plant_deploy_done done,
		      void *user);
};

/* Is `fn` offered by this host? For functions newer than the minor a plugin
 * was built for at least. */
#define PLANT_API_HAS(api, fn)                                                                     \
	((api)->struct_size >=                                                                     \
		 offsetof(struct plant_host_api, fn) + sizeof(((struct plant_host_api *)0)->fn) && \
	 (api)->fn != NULL)

#ifdef __cplusplus
}
#endif

#endif /* PLANTD_PLANTD_H */
