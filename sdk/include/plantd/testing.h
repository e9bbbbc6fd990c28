/* plantd SDK: a fake host for plugin unit tests.
 *
 * Header-only; needs <plantd/plantd.h>, jansson and the C library, no
 * plantd, no threads, no event loop. Include it in one test file, compile
 * the plugin's .c into the same test (or #include it), and drive the plugin
 * the way the host would, synchronously, on the test's own thread:
 *
 *   #include <plantd/testing.h>
 *   #include "../example_counter.c"      // the plugin, descriptor and all
 *
 *   int main(void)
 *   {
 *           struct plant_test_host *h = plant_test_new();
 *           const char *settings = "{\"every\": \"1s\", \"listen\": \"demo.*\"}";
 *
 *           PLANT_TEST_CHECK(plant_test_start(h, &PLANT_PLUGIN_DESC, settings) == PLANT_OK);
 *           plant_test_advance(h, 3000);         // the clock: three ticks
 *           PLANT_TEST_CHECK(plant_test_count(h, "example.count") == 3);
 *           PLANT_TEST_CHECK(plant_test_deliver(h, "demo.x", "{\"v\": 1}") == PLANT_OK);
 *           PLANT_TEST_CHECK(plant_test_logged(h, "received demo.x") == 1);
 *           PLANT_TEST_CHECK(plant_test_counter(h, "published") == 3);
 *           plant_test_free(h);                  // stop, destroy, free
 *           return 0;
 *   }
 *
 * A failing lifecycle step prints why on stderr ("validate of instance
 * \"test\" (module example_counter) failed: config error: must be at least
 * 10ms [key 'every']"), so the check's line is enough to go on.
 *
 * Set PLANT_TEST_VERBOSE=1 in the environment (or plant_test_verbose()) to
 * see the plugin's log lines on stderr.
 *
 * The API, in brief (every function is `static inline`, prefix plant_test_;
 * the fake's own helpers are plant_fake_ and not part of the API):
 *
 * A host, one plugin instance each:
 *   plant_test_new()                    a fresh fake host, or NULL (no memory)
 *   plant_test_free(h)                  stops and destroys what runs, frees h
 *   plant_test_set_name(h, "x")         instance_name() (default "test")
 *   plant_test_set_site(h, "s")         site_name() (default "test-site")
 *   plant_test_set_data_dir(h, "d")     data_dir() (default ".")
 *   plant_test_add_store(h, "site")     store_open("site") gets an in-memory store
 *   plant_test_verbose(h, 1)            print log lines to stderr
 *
 * The lifecycle, as the host runs it (each returns a status; on failure
 * the reason is printed on stderr and kept, see plant_test_error()):
 *   plant_test_validate(h, desc, json)  the descriptor check, the key table
 *                                       (types, required keys, unknown keys,
 *                                       defaults) and validate(): `plantd --check`
 *   plant_test_init(h, desc, json)      the same, then init()
 *   plant_test_start(h, desc, json)     the same, then start()
 *   plant_test_start(h, NULL, NULL)     start() an instance plant_test_init() made
 *   plant_test_stop(h)                  remove subscriptions, timers, consumers
 *                                       and routes, then stop()
 *   plant_test_destroy(h)               stop if needed, then destroy(); what was
 *                                       recorded can still be read
 *   plant_test_health(h, &detail)       health(); *detail [new] or NULL
 *   `json` is the instance's settings as JSON text ("{}" or NULL for none),
 *   durations as in a site conf ("250ms", "1s", or seconds). One instance
 *   per host: validate, init or start on a used host answers PLANT_E_STATE.
 *
 * Driving it:
 *   plant_test_deliver(h, topic, body)  one message to every matching subscription
 *   plant_test_deliver_msgs(h, m, n)    a batch of struct plant_test_msg (attributes,
 *                                       ids, timestamps), one call per subscription
 *   plant_test_deliver_queue(h, q, m, n) to the consumer of queue q, in batches;
 *                                       see plant_test_settled() for the outcome
 *   plant_test_advance(h, ms)           move the clock, firing due timers in order
 *   plant_test_tick(h)                  fire every timer once, clock unchanged
 *   plant_test_request(h, method, path, body, headers)
 *                                       one HTTP request to the instance's routes;
 *                                       returns the HTTP status of the reply
 *   plant_test_fail_publish(h, status)  publishing fails with `status` from now on
 *                                       (PLANT_E_FULL, say); PLANT_OK ends it
 *   plant_test_deploys(h)               deploy() requests not yet answered
 *   plant_test_deploy_request(h, i)     the i-th of them ([borrowed]), or NULL
 *   plant_test_deploy_answer(h, status, record_json, error)
 *                                       answer the oldest one: its done() runs
 *                                       now with the record (JSON text or NULL)
 *
 * Checking: PLANT_TEST_CHECK(cond) prints file, line and expression and
 * exits 1 when `cond` is false (unlike assert(), whatever NDEBUG says).
 *
 * Reading what happened:
 *   plant_test_published(h)             [borrowed] array of {"topic", "body", and
 *                                       when given "attributes", "dedup_key",
 *                                       "delay_ms"}, in order
 *   plant_test_count(h, pattern)        how many were published on matching topics
 *                                       (NULL: all)
 *   plant_test_last(h, pattern)         [borrowed] body of the last of them, or NULL
 *   plant_test_clear(h)                 forget what was published and logged
 *   plant_test_logs(h)                  [borrowed] array of {"level", "text"}
 *   plant_test_logged(h, text)          how many log lines contain `text`
 *   plant_test_error(h)                 the last api->error() (or the harness's
 *                                       own reason), or NULL
 *   plant_test_error_key(h)             its config key, or NULL
 *   plant_test_counter(h, name)         a counter (0 when never added to)
 *   plant_test_gauge(h, name)           a gauge (NAN when never set)
 *   plant_test_subscribed(h, topic)     how many subscriptions match `topic`
 *   plant_test_timers(h)                how many timers are active
 *   plant_test_settled(h, id)           how queue message `id` was settled last:
 *                                       "ack", "auto-ack", "nack", "reject",
 *                                       "held", "timeout", "returned", or NULL
 *   plant_test_settlements(h)           [borrowed] array of {"id", "queue", "how",
 *                                       "reason", "delay_ms"}, in order
 *   plant_test_reply_status(h), plant_test_reply_body(h)
 *                                       the last HTTP reply (also one given later,
 *                                       from a timer, say)
 *   plant_test_now(h)                   the fake clock, ms (starts at 1.7e12)
 *   plant_test_config(h)                [borrowed] the settings with defaults
 *   plant_test_state(h), plant_test_api(h), plant_test_instance(h)
 *                                       the plugin's state, the host table and the
 *                                       instance handle, for white-box tests
 *   plant_test_store_backend(h, kind, &backend_state)
 *                                       a backend the plugin registered, or NULL
 *
 * What the fake does not do: it is single-threaded (call it from the test's
 * thread only; a plugin's own threads must not call the table), it ignores
 * timer jitter, queue settings and delays, and a message published is only
 * recorded, never delivered (deliver it yourself). The HTTP client
 * (http_call, http_call_wait) answers PLANT_E_UNSUPPORTED. The in-memory
 * stores keep items sorted by key and honour conditions, versions and TTLs
 * on the fake clock.
 *
 * C only (C11): it uses compound literals and designated initialisers.
 *
 * Stability: this header is installed with the SDK. Functions are only
 * added; struct plant_test_msg only grows at its end (initialise it with
 * designated initialisers). struct plant_test_host is private.
 */
#ifndef PLANTD_TESTING_H
#define PLANTD_TESTING_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <plantd/plantd.h>

/* Check `cond` in a test: on failure print the file, line and expression
 * and exit(1). Unlike assert(), NDEBUG does not remove it. */
#define PLANT_TEST_CHECK(cond)                                                                   \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			exit(1);                                                                 \
		}                                                                                \
	} while (0)

/* A message to deliver, for plant_test_deliver_msgs() and
 * plant_test_deliver_queue(). Zero-initialise; every field is optional but
 * `body`. */
struct plant_test_msg {
	const char *topic;	/* for a queue delivery, NULL: the queue's name */
	const char *body;	/* JSON text */
	const char *attributes; /* JSON object of strings, or NULL */
	const char *id;		/* NULL: a fresh id like the host's */
	uint64_t ts;		/* 0: the fake clock */
	uint32_t receive_count; /* 0: 1 for a queue delivery, 0 for a topic */
};

/* ---- the fake's private state ------------------------------------------------ */

#define PLANT_FAKE_START_MS 1700000000000ull

enum plant_fake_phase {
	PLANT_FAKE_NEW = 0,
	PLANT_FAKE_VALIDATING, /* inside validate(): nothing may start */
	PLANT_FAKE_INITIALISING,
	PLANT_FAKE_READY,   /* init() returned OK; start() not yet called */
	PLANT_FAKE_RUNNING, /* start() returned OK */
	PLANT_FAKE_STOPPING,
	PLANT_FAKE_STOPPED,
	PLANT_FAKE_DESTROYED,
	PLANT_FAKE_FAILED, /* validate(), init() or start() failed */
};

struct plant_test_host;

struct plant_instance {
	struct plant_test_host *host;
};

struct plant_msg {
	struct plant_test_host *host;
	char id[64];
	char *topic;
	char *queue; /* NULL: a topic delivery */
	uint64_t ts;
	char *text; /* compact JSON */
	size_t len;
	json_t *tree;  /* parsed on first use */
	json_t *attrs; /* object of strings, or NULL */
	json_t *dumps; /* texts handed out by msg_fields() */
	uint32_t receive_count;
	int settled;		/* a queue message that was acked, nacked, ... */
	int is_handle;		/* made by hold() */
	struct plant_msg *next; /* held handles */
};

struct plant_http_req {
	struct plant_test_host *host;
	char *method, *path, *tail, *query, *body, *listener;
	size_t body_len;
	json_t *headers; /* lower-case name -> value */
	struct plant_http_req *next;
};

struct plant_fake_sub {
	uint64_t id;
	char *pattern;
	plant_msg_handler fn;
	void *user;
	int active;
};

struct plant_fake_consumer {
	uint64_t id;
	char *queue;
	plant_msg_handler fn;
	void *user;
	uint32_t max_batch;
	int active;
};

struct plant_fake_timer {
	uint64_t id;
	uint64_t every_ms;
	uint64_t due;
	plant_timer_fn fn;
	void *user;
	int active;
};

struct plant_fake_route {
	char *listener, *method, *path;
	uint32_t flags;
	plant_http_handler fn;
	void *user;
	int active;
};

struct plant_fake_item {
	char *key;
	size_t key_len;
	json_t *value;
	uint64_t version;
	uint64_t expires; /* 0: never */
};

struct plant_fake_store {
	char *name;
	struct plant_fake_item *items; /* sorted by key */
	size_t n, cap;
};

struct plant_fake_backend {
	char *kind;
	const struct plant_store_backend *backend;
	void *state;
};

struct plant_test_host {
	struct plant_host_api api;
	struct plant_instance inst;
	const struct plant_plugin_desc *desc;
	enum plant_fake_phase phase;
	void *state;
	json_t *config;
	char *name, *site, *data_dir;
	int verbose;
	uint64_t now;
	uint64_t next_id;
	uint64_t msg_seq;
	int publish_status;

	json_t *published;
	json_t *logs;
	json_t *metrics;
	json_t *settlements;
	char *error, *error_key;

	struct plant_fake_sub *subs;
	size_t n_subs, cap_subs;
	struct plant_fake_consumer *consumers;
	size_t n_consumers, cap_consumers;
	struct plant_fake_timer *timers;
	size_t n_timers, cap_timers;
	struct plant_fake_route *routes;
	size_t n_routes, cap_routes;
	struct plant_fake_store *stores;
	size_t n_stores, cap_stores;
	struct plant_fake_backend *backends;
	size_t n_backends, cap_backends;
	json_t *queues; /* declared: name -> settings */

	struct plant_msg *held;		   /* handles from hold() */
	struct plant_http_req *pending;	   /* requests not yet answered */
	struct plant_fake_deploy *deploys; /* deploy() requests not yet answered */
	int reply_status;
	char *reply_body;
};

/* ---- small helpers ------------------------------------------------------------- */

static inline char *plant_fake_strndup(const char *s, size_t len)
{
	char *p = malloc(len + 1);

	if (!p)
		return NULL;
	if (len)
		memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

static inline char *plant_fake_strdup(const char *s)
{
	return s ? plant_fake_strndup(s, strlen(s)) : NULL;
}

/* Make room for one more element in a growing array. */
static inline int plant_fake_grow(void **v, size_t *cap, size_t n, size_t size)
{
	size_t ncap;
	void *p;

	if (n < *cap)
		return PLANT_OK;
	ncap = *cap ? *cap * 2 : 8;
	p = realloc(*v, ncap * size);
	if (!p)
		return PLANT_E_NOMEM;
	*v = p;
	*cap = ncap;
	return PLANT_OK;
}

static inline struct plant_test_host *plant_fake_host(plant_instance *self)
{
	return self ? self->host : NULL;
}

/* Topic names as the host checks them: [A-Za-z0-9_.-], dot-separated, no
 * empty segment, up to 200 characters; patterns add '*' and '?'. */
static inline int plant_fake_name_valid(const char *s, int pattern)
{
	size_t len;

	if (!s)
		return 0;
	len = strlen(s);
	if (len == 0 || len > 200 || s[0] == '.' || s[len - 1] == '.')
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '_' || c == '-')
			continue;
		if (c == '.' && s[i + 1] != '.')
			continue;
		if (pattern && (c == '*' || c == '?'))
			continue;
		return 0;
	}
	return 1;
}

/* The host's glob: '*' any run of characters (dots too), '?' one. */
static inline int plant_fake_glob(const char *p, const char *s)
{
	const char *star = NULL, *retry = NULL;

	while (*s) {
		if (*p == '*') {
			star = p++;
			retry = s;
		} else if (*p == '?' || *p == *s) {
			p++;
			s++;
		} else if (star) {
			p = star + 1;
			s = ++retry;
		} else {
			return 0;
		}
	}
	while (*p == '*')
		p++;
	return *p == '\0';
}

static inline int plant_fake_matches(const char *pattern, const char *topic)
{
	return !pattern || plant_fake_glob(pattern, topic);
}

static inline const char *plant_fake_level_name(int level)
{
	switch (level) {
	case PLANT_LOG_ERROR:
		return "error";
	case PLANT_LOG_WARN:
		return "warn";
	case PLANT_LOG_INFO:
		return "info";
	default:
		return "debug";
	}
}

/* The harness's own complaint: kept like api->error() and printed. */
static inline void plant_fake_fail(struct plant_test_host *h, const char *key, const char *fmt, ...)
	PLANT_PRINTF(3, 4);
static inline void plant_fake_fail(struct plant_test_host *h, const char *key, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	free(h->error);
	free(h->error_key);
	h->error = plant_fake_strdup(buf);
	h->error_key = plant_fake_strdup(key);
}

/* ---- logging and errors ------------------------------------------------------- */

static inline void plant_fake_log(plant_instance *self, int level, const char *fmt, ...)
	PLANT_PRINTF(3, 4);
static inline void plant_fake_log(plant_instance *self, int level, const char *fmt, ...)
{
	struct plant_test_host *h = plant_fake_host(self);
	char buf[4096];
	va_list ap;

	if (!h || !fmt)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	json_array_append_new(h->logs, json_pack("{s:s, s:s}", "level",
						 plant_fake_level_name(level), "text", buf));
	if (h->verbose)
		fprintf(stderr, "[plant_test] %s %s: %s\n", plant_fake_level_name(level), h->name,
			buf);
}

static inline void plant_fake_error(plant_instance *self, const char *key, const char *fmt, ...)
	PLANT_PRINTF(3, 4);
static inline void plant_fake_error(plant_instance *self, const char *key, const char *fmt, ...)
{
	struct plant_test_host *h = plant_fake_host(self);
	char buf[1024];
	va_list ap;

	if (!h || !fmt)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	free(h->error);
	free(h->error_key);
	h->error = plant_fake_strdup(buf);
	h->error_key = plant_fake_strdup(key);
	if (h->verbose)
		fprintf(stderr, "[plant_test] error %s%s%s: %s\n", h->name, key ? " key " : "",
			key ? key : "", buf);
}

/* ---- publishing ------------------------------------------------------------------- */

/* May the instance publish, subscribe, add timers now? */
static inline int plant_fake_may_act(const struct plant_test_host *h)
{
	return h->phase == PLANT_FAKE_INITIALISING || h->phase == PLANT_FAKE_READY ||
	       h->phase == PLANT_FAKE_RUNNING;
}

static inline void plant_fake_new_id(struct plant_test_host *h, char *out, size_t len)
{
	snprintf(out, len, "%016llx%08llx", (unsigned long long)h->now,
		 (unsigned long long)++h->msg_seq);
}

static inline int plant_fake_counter_add(plant_instance *self, const char *name, uint64_t delta);

/* Check, then record one message; `body` is [stolen]. */
static inline int plant_fake_record(struct plant_test_host *h, const char *topic, json_t *body,
				    const json_t *attrs, const char *dedup_key, uint64_t delay_ms,
				    char *id_out)
{
	json_t *rec;

	if (!body)
		return PLANT_E_INVALID;
	if (!plant_fake_name_valid(topic, 0) || (attrs && !json_is_object(attrs))) {
		json_decref(body);
		return PLANT_E_INVALID;
	}
	if (!plant_fake_may_act(h)) {
		json_decref(body);
		return PLANT_E_STATE;
	}
	if (h->publish_status != PLANT_OK) {
		json_decref(body);
		return h->publish_status;
	}
	rec = json_pack("{s:s, s:o}", "topic", topic, "body", body);
	if (!rec)
		return PLANT_E_NOMEM;
	if (attrs)
		json_object_set_new(rec, "attributes", json_deep_copy(attrs));
	if (dedup_key)
		json_object_set_new(rec, "dedup_key", json_string(dedup_key));
	if (delay_ms)
		json_object_set_new(rec, "delay_ms", json_integer((json_int_t)delay_ms));
	if (json_array_append_new(h->published, rec) != 0)
		return PLANT_E_NOMEM;
	/* as the host does: every accepted message counts as "published" */
	plant_fake_counter_add(&h->inst, "published", 1);
	if (id_out)
		plant_fake_new_id(h, id_out, 32);
	return PLANT_OK;
}

static inline int plant_fake_publish(plant_instance *self, const char *topic, json_t *body)
{
	struct plant_test_host *h = plant_fake_host(self);

	if (!h) {
		json_decref(body);
		return PLANT_E_INVALID;
	}
	return plant_fake_record(h, topic, body, NULL, NULL, 0, NULL);
}

static inline int plant_fake_publish_text(plant_instance *self, const char *topic, const char *json,
					  size_t len)
{
	struct plant_test_host *h = plant_fake_host(self);
	json_t *body;

	if (!h || !json)
		return PLANT_E_INVALID;
	body = json_loadb(json, len, JSON_DECODE_ANY, NULL);
	if (!body)
		return PLANT_E_INVALID;
	return plant_fake_record(h, topic, body, NULL, NULL, 0, NULL);
}

/* One publish_ex() item: body or text. */
static inline int plant_fake_publish_item(struct plant_test_host *h, struct plant_publish *p)
{
	json_t *body;

	if (!p || p->struct_size < offsetof(struct plant_publish, id_out) + sizeof(p->id_out)) {
		if (p)
			json_decref(p->body);
		return PLANT_E_INVALID;
	}
	body = p->body;
	p->body = NULL; /* stolen */
	if (!body && p->text)
		body = json_loadb(p->text, p->text_len, JSON_DECODE_ANY, NULL);
	if (!body)
		return PLANT_E_INVALID;
	return plant_fake_record(h, p->topic, body, p->attributes, p->dedup_key, p->delay_ms,
				 p->id_out);
}

static inline int plant_fake_publish_ex(plant_instance *self, struct plant_publish *p)
{
	struct plant_test_host *h = plant_fake_host(self);

	if (!h) {
		if (p)
			json_decref(p->body);
		return PLANT_E_INVALID;
	}
	return plant_fake_publish_item(h, p);
}

static inline int plant_fake_publish_batch(plant_instance *self, struct plant_publish *items,
					   size_t n, size_t *done_out)
{
	struct plant_test_host *h = plant_fake_host(self);
	size_t done = 0;
	int rc = h ? PLANT_OK : PLANT_E_INVALID;

	for (size_t i = 0; i < n; i++) {
		if (rc == PLANT_OK) {
			rc = plant_fake_publish_item(h, &items[i]);
			done += rc == PLANT_OK;
		} else { /* stolen, even on error */
			json_decref(items[i].body);
			items[i].body = NULL;
		}
	}
	if (done_out)
		*done_out = done;
	return rc;
}

/* All or nothing: every item is checked before any is recorded. */
static inline int plant_fake_publish_all(plant_instance *self, struct plant_publish *items,
					 size_t n, size_t *failed_out)
{
	struct plant_test_host *h = plant_fake_host(self);
	int rc = h ? PLANT_OK : PLANT_E_INVALID;
	size_t i;

	for (i = 0; rc == PLANT_OK && i < n; i++) {
		const struct plant_publish *p = &items[i];

		if (p->struct_size < offsetof(struct plant_publish, id_out) + sizeof(p->id_out) ||
		    !plant_fake_name_valid(p->topic, 0))
			rc = PLANT_E_INVALID;
		else if (!p->body) {
			json_t *body =
				p->text ? json_loadb(p->text, p->text_len, JSON_DECODE_ANY, NULL)
					: NULL;

			if (!body)
				rc = PLANT_E_INVALID;
			json_decref(body);
		}
		if (rc != PLANT_OK && failed_out)
			*failed_out = i;
	}
	if (rc == PLANT_OK && !plant_fake_may_act(h))
		rc = PLANT_E_STATE;
	if (rc == PLANT_OK && h->publish_status != PLANT_OK)
		rc = h->publish_status;
	for (i = 0; i < n; i++) {
		if (rc == PLANT_OK) {
			plant_fake_publish_item(h, &items[i]);
		} else { /* stolen, even on error */
			json_decref(items[i].body);
			items[i].body = NULL;
		}
	}
	return rc;
}

/* ---- subscriptions, consumers, timers ----------------------------------------------- */

static inline int plant_fake_subscribe(plant_instance *self, const char *pattern,
				       plant_msg_handler fn, void *user, uint64_t *sub_out)
{
	struct plant_test_host *h = plant_fake_host(self);
	struct plant_fake_sub *s;

	if (!h || !fn || !plant_fake_name_valid(pattern, 1))
		return PLANT_E_INVALID;
	if (!plant_fake_may_act(h))
		return PLANT_E_STATE;
	if (plant_fake_grow((void **)&h->subs, &h->cap_subs, h->n_subs, sizeof(*h->subs)))
		return PLANT_E_NOMEM;
	s = &h->subs[h->n_subs];
	s->pattern = plant_fake_strdup(pattern);
	if (!s->pattern)
		return PLANT_E_NOMEM;
	s->id = ++h->next_id;
	s->fn = fn;
	s->user = user;
	s->active = 1;
	h->n_subs++;
	if (sub_out)
		*sub_out = s->id;
	return PLANT_OK;
}

static inline int plant_fake_unsubscribe(plant_instance *self, uint64_t sub)
{
	struct plant_test_host *h = plant_fake_host(self);

	for (size_t i = 0; h && i < h->n_subs; i++) {
		if (h->subs[i].id == sub && h->subs[i].active) {
			h->subs[i].active = 0;
			return PLANT_OK;
		}
	}
	return PLANT_E_NOTFOUND;
}

static inline int plant_fake_timer_add(plant_instance *self, uint64_t every_ms, uint64_t jitter_ms,
				       plant_timer_fn fn, void *user, uint64_t *timer_out)
{
	struct plant_test_host *h = plant_fake_host(self);
	struct plant_fake_timer *t;

	(void)jitter_ms;
	if (!h || !fn || every_ms == 0)
		return PLANT_E_INVALID;
	if (!plant_fake_may_act(h))
		return PLANT_E_STATE;
	if (plant_fake_grow((void **)&h->timers, &h->cap_timers, h->n_timers, sizeof(*h->timers)))
		return PLANT_E_NOMEM;
	t = &h->timers[h->n_timers++];
	t->id = ++h->next_id;
	t->every_ms = every_ms;
	t->due = h->now + every_ms;
	t->fn = fn;
	t->user = user;
	t->active = 1;
	if (timer_out)
		*timer_out = t->id;
	return PLANT_OK;
}

static inline int plant_fake_timer_cancel(plant_instance *self, uint64_t timer)
{
	struct plant_test_host *h = plant_fake_host(self);

	for (size_t i = 0; h && i < h->n_timers; i++) {
		if (h->timers[i].id == timer && h->timers[i].active) {
			h->timers[i].active = 0;
			return PLANT_OK;
		}
	}
	return PLANT_E_NOTFOUND;
}

/* ---- metrics and introspection -------------------------------------------------- */

static inline int plant_fake_metric_name_valid(const char *name)
{
	if (!name || !*name || strlen(name) > 100)
		return 0;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			return 0;
	return 1;
}

static inline int plant_fake_counter_add(plant_instance *self, const char *name, uint64_t delta)
{
	struct plant_test_host *h = plant_fake_host(self);
	json_t *v;

	if (!h || !plant_fake_metric_name_valid(name))
		return PLANT_E_INVALID;
	v = json_object_get(h->metrics, name);
	if (!v)
		return json_object_set_new(h->metrics, name, json_integer((json_int_t)delta))
			       ? PLANT_E_NOMEM
			       : PLANT_OK;
	if (!json_is_integer(v))
		return PLANT_E_INVALID; /* a gauge of that name */
	json_integer_set(v, json_integer_value(v) + (json_int_t)delta);
	return PLANT_OK;
}

static inline int plant_fake_gauge_set(plant_instance *self, const char *name, double value)
{
	struct plant_test_host *h = plant_fake_host(self);
	json_t *v;

	if (!h || !plant_fake_metric_name_valid(name))
		return PLANT_E_INVALID;
	v = json_object_get(h->metrics, name);
	if (!v)
		return json_object_set_new(h->metrics, name, json_real(value)) ? PLANT_E_NOMEM
									       : PLANT_OK;
	if (!json_is_real(v))
		return PLANT_E_INVALID; /* a counter of that name */
	json_real_set(v, value);
	return PLANT_OK;
}

static inline const json_t *plant_fake_config(plant_instance *self)
{
	struct plant_test_host *h = plant_fake_host(self);

	return h ? h->config : NULL;
}

static inline const char *plant_fake_instance_name(plant_instance *self)
{
	struct plant_test_host *h = plant_fake_host(self);

	return h ? h->name : NULL;
}

static inline const char *plant_fake_site_name(plant_instance *self)
{
	struct plant_test_host *h = plant_fake_host(self);

	return h ? h->site : NULL;
}

static inline const char *plant_fake_data_dir(plant_instance *self)
{
	struct plant_test_host *h = plant_fake_host(self);

	return h ? h->data_dir : NULL;
}

static inline uint64_t plant_fake_now_ms(plant_instance *self)
{
	struct plant_test_host *h = plant_fake_host(self);

	return h ? h->now : 0;
}

/* ---- reading messages ------------------------------------------------------------- */

static inline const char *plant_fake_msg_id(const plant_msg *m)
{
	return m ? m->id : NULL;
}

static inline const char *plant_fake_msg_topic(const plant_msg *m)
{
	return m ? m->topic : NULL;
}

static inline uint64_t plant_fake_msg_ts(const plant_msg *m)
{
	return m ? m->ts : 0;
}

static inline const char *plant_fake_msg_body_text(const plant_msg *m, size_t *len_out)
{
	if (len_out)
		*len_out = m ? m->len : 0;
	return m ? m->text : NULL;
}

static inline const json_t *plant_fake_msg_body(const plant_msg *cm)
{
	/* The cache is the message's own: a reader sees it as const. */
	struct plant_msg *m = (struct plant_msg *)(uintptr_t)cm;

	if (!m)
		return NULL;
	if (!m->tree)
		m->tree = json_loadb(m->text, m->len, JSON_DECODE_ANY, NULL);
	return m->tree;
}

static inline const char *plant_fake_msg_attr(const plant_msg *m, const char *name)
{
	if (!m || !m->attrs || !name)
		return NULL;
	return json_string_value(json_object_get(m->attrs, name));
}

static inline uint32_t plant_fake_msg_receive_count(const plant_msg *m)
{
	return m ? m->receive_count : 0;
}

static inline int plant_fake_msg_fields(const plant_msg *cm, const char *const *keys, size_t n,
					struct plant_field *out)
{
	struct plant_msg *m = (struct plant_msg *)(uintptr_t)cm;
	const json_t *body = plant_fake_msg_body(cm);

	if (!m || !keys || !out || !json_is_object(body))
		return PLANT_E_INVALID;
	if (!m->dumps && !(m->dumps = json_array()))
		return PLANT_E_NOMEM;
	for (size_t i = 0; i < n; i++) {
		const json_t *v = json_object_get(body, keys[i]);
		struct plant_field *f = &out[i];
		char *text;

		memset(f, 0, sizeof(*f));
		if (!v) {
			f->type = PLANT_FIELD_ABSENT;
			continue;
		}
		switch (json_typeof(v)) {
		case JSON_NULL:
			f->type = PLANT_FIELD_NULL;
			break;
		case JSON_TRUE:
		case JSON_FALSE:
			f->type = PLANT_FIELD_BOOL;
			f->num = json_is_true(v) ? 1 : 0;
			break;
		case JSON_INTEGER:
		case JSON_REAL:
			f->type = PLANT_FIELD_NUMBER;
			f->num = json_number_value(v);
			break;
		case JSON_STRING:
			f->type = PLANT_FIELD_STRING;
			f->str = json_string_value(v);
			f->len = json_string_length(v);
			break;
		case JSON_OBJECT:
		case JSON_ARRAY:
			f->type = json_is_object(v) ? PLANT_FIELD_OBJECT : PLANT_FIELD_ARRAY;
			text = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
			if (!text || json_array_append_new(m->dumps, json_string(text)) != 0) {
				free(text);
				return PLANT_E_NOMEM;
			}
			free(text);
			v = json_array_get(m->dumps, json_array_size(m->dumps) - 1);
			f->str = json_string_value(v);
			f->len = json_string_length(v);
			break;
		}
	}
	return PLANT_OK;
}

/* A message from a test's description; NULL (and the reason kept) when it
 * is not usable. */
static inline struct plant_msg *
plant_fake_msg_new(struct plant_test_host *h, const struct plant_test_msg *d, const char *queue)
{
	struct plant_msg *m;
	json_t *body, *attrs = NULL;
	const char *topic = d->topic ? d->topic : queue;

	if (!plant_fake_name_valid(topic, 0)) {
		plant_fake_fail(h, NULL, "plant_test: bad topic \"%s\"", topic ? topic : "(null)");
		return NULL;
	}
	body = d->body ? json_loads(d->body, JSON_DECODE_ANY, NULL) : NULL;
	if (!body) {
		plant_fake_fail(h, NULL, "plant_test: the body of a message on %s is not JSON: %s",
				topic, d->body ? d->body : "(null)");
		return NULL;
	}
	if (d->attributes) {
		const char *k;
		json_t *v;

		attrs = json_loads(d->attributes, 0, NULL);
		json_object_foreach(attrs, k, v)
		{
			if (!json_is_string(v)) {
				json_decref(attrs);
				attrs = NULL;
				break;
			}
		}
		if (!json_is_object(attrs)) {
			plant_fake_fail(
				h, NULL,
				"plant_test: attributes must be a JSON object of strings: %s",
				d->attributes);
			json_decref(attrs);
			json_decref(body);
			return NULL;
		}
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		json_decref(body);
		json_decref(attrs);
		return NULL;
	}
	m->host = h;
	if (d->id)
		snprintf(m->id, sizeof(m->id), "%s", d->id);
	else
		plant_fake_new_id(h, m->id, sizeof(m->id));
	m->topic = plant_fake_strdup(topic);
	m->queue = plant_fake_strdup(queue);
	m->ts = d->ts ? d->ts : h->now;
	m->text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
	m->len = m->text ? strlen(m->text) : 0;
	m->tree = body;
	m->attrs = attrs;
	m->receive_count = d->receive_count ? d->receive_count : queue ? 1 : 0;
	return m;
}

static inline void plant_fake_msg_free(struct plant_msg *m)
{
	if (!m)
		return;
	free(m->topic);
	free(m->queue);
	free(m->text);
	json_decref(m->tree);
	json_decref(m->attrs);
	json_decref(m->dumps);
	free(m);
}

/* ---- queues ------------------------------------------------------------------------- */

static inline void plant_fake_settle_record(struct plant_test_host *h, const struct plant_msg *m,
					    const char *how, const char *reason, uint64_t delay_ms)
{
	json_t *rec = json_pack("{s:s, s:s, s:s}", "id", m->id, "queue", m->queue ? m->queue : "",
				"how", how);

	if (!rec)
		return;
	if (reason)
		json_object_set_new(rec, "reason", json_string(reason));
	if (delay_ms)
		json_object_set_new(rec, "delay_ms", json_integer((json_int_t)delay_ms));
	json_array_append_new(h->settlements, rec);
}

/* Forget a held handle. */
static inline void plant_fake_unhold(struct plant_test_host *h, const plant_msg *held)
{
	for (struct plant_msg **p = &h->held; *p; p = &(*p)->next) {
		if (*p == held) {
			struct plant_msg *m = *p;

			*p = m->next;
			plant_fake_msg_free(m);
			return;
		}
	}
}

/* Settle queue message `cm` (a delivery or a held handle). */
static inline int plant_fake_settle(plant_instance *self, const plant_msg *cm, const char *how,
				    const char *reason, uint64_t delay_ms)
{
	struct plant_test_host *h = plant_fake_host(self);
	struct plant_msg *m = (struct plant_msg *)(uintptr_t)cm;

	if (!h || !m || !m->queue)
		return PLANT_E_INVALID;
	if (m->settled) {
		if (m->is_handle)
			plant_fake_unhold(h, m);
		return PLANT_E_NOTFOUND;
	}
	m->settled = 1;
	plant_fake_settle_record(h, m, how, reason, delay_ms);
	if (m->is_handle)
		plant_fake_unhold(h, m);
	return PLANT_OK;
}

static inline int plant_fake_queue_declare(plant_instance *self, const char *name,
					   const json_t *settings)
{
	struct plant_test_host *h = plant_fake_host(self);

	if (!h || !plant_fake_name_valid(name, 0) || (settings && !json_is_object(settings)))
		return PLANT_E_INVALID;
	if (h->phase == PLANT_FAKE_VALIDATING)
		return PLANT_E_STATE;
	return json_object_set_new(h->queues, name,
				   settings ? json_deep_copy(settings) : json_object())
		       ? PLANT_E_NOMEM
		       : PLANT_OK;
}

static inline int plant_fake_consume(plant_instance *self, const char *queue, plant_msg_handler fn,
				     void *user, uint32_t max_batch, uint64_t *consumer_out)
{
	struct plant_test_host *h = plant_fake_host(self);
	struct plant_fake_consumer *c;

	if (!h || !fn || !plant_fake_name_valid(queue, 0))
		return PLANT_E_INVALID;
	if (!plant_fake_may_act(h))
		return PLANT_E_STATE;
	if (plant_fake_grow((void **)&h->consumers, &h->cap_consumers, h->n_consumers,
			    sizeof(*h->consumers)))
		return PLANT_E_NOMEM;
	c = &h->consumers[h->n_consumers];
	c->queue = plant_fake_strdup(queue);
	if (!c->queue)
		return PLANT_E_NOMEM;
	c->id = ++h->next_id;
	c->fn = fn;
	c->user = user;
	c->max_batch = max_batch ? max_batch : 256;
	c->active = 1;
	h->n_consumers++;
	if (consumer_out)
		*consumer_out = c->id;
	return PLANT_OK;
}

static inline int plant_fake_ack(plant_instance *self, const plant_msg *msg)
{
	return plant_fake_settle(self, msg, "ack", NULL, 0);
}

static inline int plant_fake_nack(plant_instance *self, const plant_msg *msg, uint64_t delay_ms,
				  const char *reason)
{
	return plant_fake_settle(self, msg, "nack", reason, delay_ms);
}

static inline int plant_fake_reject(plant_instance *self, const plant_msg *msg, const char *reason)
{
	return plant_fake_settle(self, msg, "reject", reason, 0);
}

static inline const plant_msg *plant_fake_hold(plant_instance *self, const plant_msg *cm)
{
	struct plant_test_host *h = plant_fake_host(self);
	struct plant_msg *m = (struct plant_msg *)(uintptr_t)cm;
	struct plant_msg *k;

	if (!h || !m || !m->queue || m->settled || m->is_handle)
		return NULL;
	k = calloc(1, sizeof(*k));
	if (!k)
		return NULL;
	*k = *m;
	k->topic = plant_fake_strdup(m->topic);
	k->queue = plant_fake_strdup(m->queue);
	k->text = plant_fake_strndup(m->text, m->len);
	k->tree = json_incref(m->tree);
	k->attrs = json_incref(m->attrs);
	k->dumps = json_incref(m->dumps);
	k->is_handle = 1;
	k->next = h->held;
	if (!k->topic || !k->queue || !k->text) {
		plant_fake_msg_free(k);
		return NULL;
	}
	h->held = k;
	m->settled = 1;
	plant_fake_settle_record(h, m, "held", NULL, 0);
	return k;
}

static inline void plant_fake_release(plant_instance *self, const plant_msg *held)
{
	struct plant_test_host *h = plant_fake_host(self);

	if (h && held)
		plant_fake_unhold(h, held);
}

static inline int plant_fake_queue_room(plant_instance *self, const char *queue, uint64_t *room_out)
{
	if (!plant_fake_host(self) || !plant_fake_name_valid(queue, 0) || !room_out)
		return PLANT_E_INVALID;
	*room_out = UINT64_MAX;
	return PLANT_OK;
}

/* {"topics": {NAME: {"published": N, "subscribers": 0}}, "queues": {NAME: {...}}} */
static inline json_t *plant_fake_bus_stats(plant_instance *self)
{
	struct plant_test_host *h = plant_fake_host(self);
	json_t *topics = json_object(), *queues = json_object(), *rec;
	const char *name;
	size_t i;

	if (!h)
		return NULL;
	json_array_foreach(h->published, i, rec)
	{
		const char *t = json_string_value(json_object_get(rec, "topic"));
		json_t *o = json_object_get(topics, t);

		if (!o) {
			o = json_pack("{s:I, s:I}", "published", (json_int_t)0, "subscribers",
				      (json_int_t)0);
			json_object_set_new(topics, t, o);
		}
		json_object_set_new(
			o, "published",
			json_integer(json_integer_value(json_object_get(o, "published")) + 1));
	}
	json_object_foreach(h->queues, name, rec)
	{
		json_object_set_new(queues, name,
				    json_pack("{s:I, s:I, s:I, s:I}", "depth", (json_int_t)0,
					      "in_flight", (json_int_t)0, "oldest_age_ms",
					      (json_int_t)0, "dead_lettered", (json_int_t)0));
	}
	return json_pack("{s:o, s:o}", "topics", topics, "queues", queues);
}

/* ---- stores --------------------------------------------------------------------------- */

static inline int plant_fake_store_register(plant_instance *self, const char *kind,
					    const struct plant_store_backend *backend,
					    void *backend_state)
{
	struct plant_test_host *h = plant_fake_host(self);
	struct plant_fake_backend *b;

	if (!h || !kind || !*kind || !backend)
		return PLANT_E_INVALID;
	if (h->phase != PLANT_FAKE_INITIALISING)
		return PLANT_E_STATE;
	for (size_t i = 0; i < h->n_backends; i++)
		if (strcmp(h->backends[i].kind, kind) == 0)
			return PLANT_E_EXISTS;
	if (plant_fake_grow((void **)&h->backends, &h->cap_backends, h->n_backends,
			    sizeof(*h->backends)))
		return PLANT_E_NOMEM;
	b = &h->backends[h->n_backends];
	b->kind = plant_fake_strdup(kind);
	if (!b->kind)
		return PLANT_E_NOMEM;
	b->backend = backend;
	b->state = backend_state;
	h->n_backends++;
	return PLANT_OK;
}

static inline int plant_fake_store_open(plant_instance *self, const char *name, uint32_t *store_out)
{
	struct plant_test_host *h = plant_fake_host(self);

	if (!h || !name || !store_out)
		return PLANT_E_INVALID;
	for (size_t i = 0; i < h->n_stores; i++) {
		if (strcmp(h->stores[i].name, name) == 0) {
			*store_out = (uint32_t)i + 1;
			return PLANT_OK;
		}
	}
	return PLANT_E_NOTFOUND;
}

static inline struct plant_fake_store *plant_fake_store_of(plant_instance *self, uint32_t store)
{
	struct plant_test_host *h = plant_fake_host(self);

	if (!h || store == 0 || store > h->n_stores)
		return NULL;
	return &h->stores[store - 1];
}

static inline int plant_fake_key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen ? 1 : 0;
}

/* The index of `key`, or where it would go (*found 0). */
static inline size_t plant_fake_find(const struct plant_fake_store *s, const char *key,
				     size_t key_len, int *found)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = plant_fake_key_cmp(s->items[mid].key, s->items[mid].key_len, key, key_len);

		if (c == 0) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = 0;
	return lo;
}

static inline int plant_fake_live(const struct plant_fake_item *it, uint64_t now)
{
	return it->expires == 0 || it->expires > now;
}

/* The live version of `key`, or 0. */
static inline uint64_t plant_fake_version(const struct plant_fake_store *s, const char *key,
					  size_t key_len, uint64_t now)
{
	int found;
	size_t i = plant_fake_find(s, key, key_len, &found);

	return found && plant_fake_live(&s->items[i], now) ? s->items[i].version : 0;
}

static inline int plant_fake_check(int is_delete, int cond, uint64_t version, uint64_t cur)
{
	switch (cond) {
	case PLANT_PUT_ANY:
		return is_delete && cur == 0 ? PLANT_E_NOTFOUND : PLANT_OK;
	case PLANT_PUT_IF_ABSENT:
		if (is_delete)
			return PLANT_E_INVALID;
		return cur == 0 ? PLANT_OK : PLANT_E_CONDITION;
	case PLANT_PUT_IF_VERSION:
		return cur != 0 && cur == version ? PLANT_OK : PLANT_E_CONDITION;
	default:
		return PLANT_E_INVALID;
	}
}

static inline int plant_fake_key_ok(const char *key, size_t key_len)
{
	return key && key_len >= 1 && key_len <= 1024;
}

/* Apply a write whose condition held; `value` is [stolen]. */
static inline int plant_fake_apply(struct plant_fake_store *s, int is_delete, const char *key,
				   size_t key_len, json_t *value, uint64_t ttl_ms, uint64_t now,
				   uint64_t *version_out)
{
	int found;
	size_t i = plant_fake_find(s, key, key_len, &found);
	uint64_t cur = found && plant_fake_live(&s->items[i], now) ? s->items[i].version : 0;
	struct plant_fake_item *it;

	if (is_delete) {
		if (found) {
			free(s->items[i].key);
			json_decref(s->items[i].value);
			memmove(&s->items[i], &s->items[i + 1], (s->n - i - 1) * sizeof(*s->items));
			s->n--;
		}
		return PLANT_OK;
	}
	if (!found) {
		char *k = plant_fake_strndup(key, key_len);

		if (!k || plant_fake_grow((void **)&s->items, &s->cap, s->n, sizeof(*s->items))) {
			free(k);
			json_decref(value);
			return PLANT_E_NOMEM;
		}
		memmove(&s->items[i + 1], &s->items[i], (s->n - i) * sizeof(*s->items));
		s->n++;
		s->items[i] = (struct plant_fake_item){.key = k, .key_len = key_len};
	}
	it = &s->items[i];
	json_decref(it->value);
	it->value = value;
	it->version = cur + 1;
	it->expires = ttl_ms ? now + ttl_ms : 0;
	if (version_out)
		*version_out = it->version;
	return PLANT_OK;
}

static inline int plant_fake_store_get(plant_instance *self, uint32_t store, const char *key,
				       size_t key_len, json_t **value_out, uint64_t *version_out)
{
	struct plant_fake_store *s = plant_fake_store_of(self, store);
	int found;
	size_t i;

	if (!s)
		return PLANT_E_NOTFOUND;
	if (!plant_fake_key_ok(key, key_len) || !value_out)
		return PLANT_E_INVALID;
	i = plant_fake_find(s, key, key_len, &found);
	if (!found || !plant_fake_live(&s->items[i], self->host->now))
		return PLANT_E_NOTFOUND;
	*value_out = json_deep_copy(s->items[i].value);
	if (version_out)
		*version_out = s->items[i].version;
	return *value_out ? PLANT_OK : PLANT_E_NOMEM;
}

static inline int plant_fake_store_put(plant_instance *self, uint32_t store, const char *key,
				       size_t key_len, json_t *value, int cond, uint64_t version,
				       uint64_t ttl_ms, uint64_t *version_out)
{
	struct plant_fake_store *s = plant_fake_store_of(self, store);
	uint64_t now;
	int rc;

	if (!s) {
		json_decref(value);
		return PLANT_E_NOTFOUND;
	}
	if (!value || !plant_fake_key_ok(key, key_len)) {
		json_decref(value);
		return PLANT_E_INVALID;
	}
	now = self->host->now;
	rc = plant_fake_check(0, cond, version, plant_fake_version(s, key, key_len, now));
	if (rc != PLANT_OK) {
		json_decref(value);
		return rc;
	}
	return plant_fake_apply(s, 0, key, key_len, value, ttl_ms, now, version_out);
}

static inline int plant_fake_store_delete(plant_instance *self, uint32_t store, const char *key,
					  size_t key_len, int cond, uint64_t version)
{
	struct plant_fake_store *s = plant_fake_store_of(self, store);
	uint64_t now;
	int rc;

	if (!s)
		return PLANT_E_NOTFOUND;
	if (!plant_fake_key_ok(key, key_len))
		return PLANT_E_INVALID;
	now = self->host->now;
	rc = plant_fake_check(1, cond, version, plant_fake_version(s, key, key_len, now));
	if (rc != PLANT_OK)
		return rc;
	return plant_fake_apply(s, 1, key, key_len, NULL, 0, now, NULL);
}

/* {"key": K} for UTF-8 keys without NUL, else {"key_hex": "..."}. */
static inline json_t *plant_fake_scan_entry(const struct plant_fake_item *it)
{
	static const char hex[] = "0123456789abcdef";
	json_t *o = json_pack("{s:O, s:I}", "value", it->value, "version", (json_int_t)it->version);
	json_t *k = memchr(it->key, 0, it->key_len) ? NULL : json_stringn(it->key, it->key_len);

	if (!o)
		return NULL;
	if (k) {
		json_object_set_new(o, "key", k);
	} else {
		char *buf = malloc(2 * it->key_len + 1);

		if (!buf) {
			json_decref(o);
			return NULL;
		}
		for (size_t i = 0; i < it->key_len; i++) {
			buf[2 * i] = hex[(unsigned char)it->key[i] >> 4];
			buf[2 * i + 1] = hex[(unsigned char)it->key[i] & 0xf];
		}
		json_object_set_new(o, "key_hex", json_stringn(buf, 2 * it->key_len));
		free(buf);
	}
	return o;
}

static inline int plant_fake_store_scan(plant_instance *self, uint32_t store, const char *prefix,
					size_t prefix_len, const char *after, size_t after_len,
					size_t limit, json_t **items_out)
{
	struct plant_fake_store *s = plant_fake_store_of(self, store);
	json_t *out;

	if (!s)
		return PLANT_E_NOTFOUND;
	if ((!prefix && prefix_len) || !items_out)
		return PLANT_E_INVALID;
	out = json_array();
	if (!out)
		return PLANT_E_NOMEM;
	for (size_t i = 0; i < s->n && (!limit || json_array_size(out) < limit); i++) {
		const struct plant_fake_item *it = &s->items[i];

		if (!plant_fake_live(it, self->host->now) || it->key_len < prefix_len ||
		    (prefix_len && memcmp(it->key, prefix, prefix_len) != 0))
			continue;
		if (after && plant_fake_key_cmp(it->key, it->key_len, after, after_len) <= 0)
			continue;
		if (json_array_append_new(out, plant_fake_scan_entry(it)) != 0) {
			json_decref(out);
			return PLANT_E_NOMEM;
		}
	}
	*items_out = out;
	return PLANT_OK;
}

/* All or nothing: every condition is checked (in order, as if the earlier
 * ops were applied) before anything is written. */
static inline int plant_fake_store_batch(plant_instance *self, uint32_t store,
					 const struct plant_store_op *ops, size_t n,
					 size_t *failed_out)
{
	struct plant_fake_store *s = plant_fake_store_of(self, store);
	uint64_t now, *versions;
	int rc = PLANT_OK;

	if (!s)
		return PLANT_E_NOTFOUND;
	if (!ops && n)
		return PLANT_E_INVALID;
	now = self->host->now;
	versions = calloc(n ? n : 1, sizeof(*versions));
	if (!versions)
		return PLANT_E_NOMEM;
	for (size_t i = 0; i < n && rc == PLANT_OK; i++) {
		const struct plant_store_op *op = &ops[i];
		uint64_t cur = plant_fake_version(s, op->key, op->key_len, now);

		/* an earlier op of the batch on the same key counts */
		for (size_t j = 0; j < i; j++)
			if (plant_fake_key_cmp(ops[j].key, ops[j].key_len, op->key, op->key_len) ==
			    0)
				cur = versions[j];
		if (!plant_fake_key_ok(op->key, op->key_len) ||
		    (!op->is_delete && !op->value && !op->value_text))
			rc = PLANT_E_INVALID;
		else
			rc = plant_fake_check(op->is_delete, op->cond, op->version, cur);
		versions[i] = op->is_delete ? 0 : cur + 1;
		if (rc != PLANT_OK && failed_out)
			*failed_out = i;
	}
	free(versions);
	for (size_t i = 0; i < n && rc == PLANT_OK; i++) {
		const struct plant_store_op *op = &ops[i];
		json_t *v = NULL;

		if (!op->is_delete) {
			v = op->value ? json_deep_copy(op->value)
				      : json_loadb(op->value_text, op->value_text_len,
						   JSON_DECODE_ANY, NULL);
			if (!v)
				return PLANT_E_INVALID;
		}
		rc = plant_fake_apply(s, op->is_delete, op->key, op->key_len, v, op->ttl_ms, now,
				      NULL);
	}
	return rc;
}

/* ---- HTTP --------------------------------------------------------------------------- */

static inline int plant_fake_http_route(plant_instance *self, const char *listener,
					const char *method, const char *path, uint32_t flags,
					plant_http_handler fn, void *user)
{
	struct plant_test_host *h = plant_fake_host(self);
	struct plant_fake_route *r;
	size_t len = path ? strlen(path) : 0;

	if (!h || !fn || !listener || !method || !path || path[0] != '/' ||
	    (flags & ~PLANT_ROUTE_KNOWN_FLAGS) ||
	    ((flags & PLANT_ROUTE_PREFIX) && path[len - 1] != '/'))
		return PLANT_E_INVALID;
	if (!plant_fake_may_act(h))
		return PLANT_E_STATE;
	for (size_t i = 0; i < h->n_routes; i++) {
		r = &h->routes[i];
		if (r->active && strcmp(r->method, method) == 0 && strcmp(r->path, path) == 0)
			return PLANT_E_EXISTS;
	}
	if (plant_fake_grow((void **)&h->routes, &h->cap_routes, h->n_routes, sizeof(*h->routes)))
		return PLANT_E_NOMEM;
	r = &h->routes[h->n_routes];
	*r = (struct plant_fake_route){
		.listener = plant_fake_strdup(listener),
		.method = plant_fake_strdup(method),
		.path = plant_fake_strdup(path),
		.flags = flags,
		.fn = fn,
		.user = user,
		.active = 1,
	};
	if (!r->listener || !r->method || !r->path) {
		free(r->listener);
		free(r->method);
		free(r->path);
		return PLANT_E_NOMEM;
	}
	h->n_routes++;
	return PLANT_OK;
}

static inline int plant_fake_http_request(const plant_http_req *req, struct plant_http_info *out)
{
	if (!req || !out ||
	    out->struct_size < offsetof(struct plant_http_info, listener) + sizeof(out->listener))
		return PLANT_E_INVALID;
	out->method = req->method;
	out->path = req->path;
	out->tail = req->tail;
	out->query = req->query;
	out->body = req->body_len ? req->body : NULL;
	out->body_len = req->body_len;
	out->remote = "127.0.0.1";
	out->listener = req->listener;
	return PLANT_OK;
}

static inline const char *plant_fake_http_header(const plant_http_req *req, const char *name)
{
	char lower[256];
	size_t i;

	if (!req || !name)
		return NULL;
	for (i = 0; name[i] && i + 1 < sizeof(lower); i++)
		lower[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
	lower[i] = '\0';
	return json_string_value(json_object_get(req->headers, lower));
}

static inline void plant_fake_req_free(struct plant_http_req *r)
{
	free(r->method);
	free(r->path);
	free(r->tail);
	free(r->query);
	free(r->body);
	free(r->listener);
	json_decref(r->headers);
	free(r);
}

static inline void plant_fake_reply_set(struct plant_test_host *h, int status, const char *body,
					size_t len)
{
	free(h->reply_body);
	h->reply_status = status;
	h->reply_body = plant_fake_strndup(body ? body : "", body ? len : 0);
}

static inline int plant_fake_http_reply(plant_http_req *req, int status, const char *content_type,
					const char *body, size_t len, const char *const *headers)
{
	struct plant_test_host *h;

	(void)content_type;
	(void)headers;
	if (!req)
		return PLANT_E_INVALID;
	h = req->host;
	for (struct plant_http_req **p = &h->pending; *p; p = &(*p)->next) {
		if (*p == req) {
			*p = req->next;
			plant_fake_reply_set(h, status, body, len);
			plant_fake_req_free(req);
			return PLANT_OK;
		}
	}
	return PLANT_E_STATE; /* answered already */
}

struct plant_fake_deploy {
	json_t *request;
	plant_deploy_done done;
	void *user;
	struct plant_fake_deploy *next;
};

static inline int plant_fake_deploy(plant_instance *self, const json_t *request,
				    plant_deploy_done done, void *user)
{
	struct plant_test_host *h = plant_fake_host(self);
	struct plant_fake_deploy *dep, **pp;

	if (!h || !json_is_object(request) || !done ||
	    !json_is_string(json_object_get(request, "instance")))
		return PLANT_E_INVALID;
	if (!plant_fake_may_act(h))
		return PLANT_E_STATE;
	dep = calloc(1, sizeof(*dep));
	if (!dep)
		return PLANT_E_NOMEM;
	dep->request = json_deep_copy(request);
	dep->done = done;
	dep->user = user;
	for (pp = &h->deploys; *pp; pp = &(*pp)->next)
		;
	*pp = dep;
	return PLANT_OK;
}

static inline int plant_fake_http_call(plant_instance *self, const struct plant_http_call *call,
				       plant_http_done done, void *user)
{
	(void)self;
	(void)call;
	(void)done;
	(void)user;
	return PLANT_E_UNSUPPORTED;
}

/* A result, as the contract asks, saying there is no client. */
static inline int plant_fake_http_call_wait(plant_instance *self,
					    const struct plant_http_call *call,
					    struct plant_http_result **out)
{
	struct plant_http_result *r;

	(void)self;
	if (!call || !out)
		return PLANT_E_INVALID;
	r = calloc(1, sizeof(*r));
	if (!r)
		return PLANT_E_NOMEM;
	r->status = PLANT_E_UNSUPPORTED;
	r->body = "";
	r->error = "the plant_test fake host has no HTTP client";
	*out = r;
	return PLANT_E_UNSUPPORTED;
}

static inline void plant_fake_http_result_free(struct plant_http_result *res)
{
	free(res);
}

static inline const char *plant_fake_http_result_header(const struct plant_http_result *res,
							const char *name)
{
	(void)res;
	(void)name;
	return NULL;
}

/* ---- the configuration, as the loader checks it --------------------------------------- */

/* A duration: seconds as a number, or "250ms", "60s", "15m", "2h", "1d". */
static inline int plant_fake_duration(const json_t *v, uint64_t *ms_out)
{
	static const struct {
		const char *unit;
		double ms;
	} units[] = {{"ms", 1},	     {"s", 1000},     {"m", 60000},
		     {"h", 3600000}, {"d", 86400000}, {"", 1000}};
	const char *s;
	char *end;
	double n;

	if (json_is_number(v)) {
		n = json_number_value(v);
		if (!(n >= 0) || n > 1e12)
			return PLANT_E_INVALID;
		*ms_out = (uint64_t)(n * 1000.0 + 0.5);
		return PLANT_OK;
	}
	if (!json_is_string(v))
		return PLANT_E_INVALID;
	s = json_string_value(v);
	n = strtod(s, &end);
	if (end == s || !(n >= 0) || n > 1e12)
		return PLANT_E_INVALID;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit) == 0) {
			*ms_out = (uint64_t)(n * units[i].ms + 0.5);
			return PLANT_OK;
		}
	}
	return PLANT_E_INVALID;
}

static inline const char *plant_fake_type_name(enum plant_cfg_type t)
{
	switch (t) {
	case PLANT_CFG_BOOL:
		return "a boolean (true or false)";
	case PLANT_CFG_INT:
		return "an integer";
	case PLANT_CFG_DOUBLE:
		return "a number";
	case PLANT_CFG_STRING:
		return "a string";
	case PLANT_CFG_DURATION:
		return "a duration (seconds, or a string like \"250ms\", \"60s\", \"15m\", \"2h\")";
	case PLANT_CFG_ARRAY:
		return "a list or array";
	case PLANT_CFG_OBJECT:
		return "a group";
	default:
		return "any value";
	}
}

/* `v` as key `k` wants it ([new]), or NULL when it has the wrong type. */
static inline json_t *plant_fake_convert(const struct plant_config_key *k, json_t *v)
{
	uint64_t ms;

	switch (k->type) {
	case PLANT_CFG_BOOL:
		return json_is_boolean(v) ? json_incref(v) : NULL;
	case PLANT_CFG_INT:
		return json_is_integer(v) ? json_incref(v) : NULL;
	case PLANT_CFG_DOUBLE:
		return json_is_number(v) ? json_real(json_number_value(v)) : NULL;
	case PLANT_CFG_STRING:
		return json_is_string(v) ? json_incref(v) : NULL;
	case PLANT_CFG_DURATION:
		return plant_fake_duration(v, &ms) == PLANT_OK ? json_integer((json_int_t)ms)
							       : NULL;
	case PLANT_CFG_ARRAY:
		return json_is_array(v) ? json_incref(v) : NULL;
	case PLANT_CFG_OBJECT:
		return json_is_object(v) ? json_incref(v) : NULL;
	default:
		return json_incref(v);
	}
}

/* The descriptor, as the loader checks it. */
static inline int plant_fake_check_desc(struct plant_test_host *h,
					const struct plant_plugin_desc *d)
{
	if (!d) {
		plant_fake_fail(h, NULL, "no descriptor");
		return PLANT_E_INVALID;
	}
	if (d->abi_major != PLANT_ABI_MAJOR || d->abi_minor > PLANT_ABI_MINOR) {
		plant_fake_fail(h, NULL, "built for SDK %u.%u, host provides %d.%d",
				(unsigned)d->abi_major, (unsigned)d->abi_minor, PLANT_ABI_MAJOR,
				PLANT_ABI_MINOR);
		return PLANT_E_ABI;
	}
	if (d->struct_size < offsetof(struct plant_plugin_desc, health) + sizeof(void *)) {
		plant_fake_fail(h, NULL, "descriptor size %u is below the size of SDK 1.0",
				(unsigned)d->struct_size);
		return PLANT_E_ABI;
	}
	if (d->flags & ~PLANT_PLUGIN_KNOWN_FLAGS) {
		plant_fake_fail(h, NULL, "unknown descriptor flags 0x%x",
				(unsigned)(d->flags & ~PLANT_PLUGIN_KNOWN_FLAGS));
		return PLANT_E_ABI;
	}
	if (!d->init) {
		plant_fake_fail(h, NULL, "descriptor has no init callback");
		return PLANT_E_ABI;
	}
	if (!d->name || !*d->name) {
		plant_fake_fail(h, NULL, "descriptor has no module name");
		return PLANT_E_ABI;
	}
	return PLANT_OK;
}

/* The settings checked against the key table, defaults filled in, into
 * h->config. */
static inline int plant_fake_apply_schema(struct plant_test_host *h, const char *settings)
{
	const struct plant_config_key *keys = h->desc->config_keys;
	json_error_t jerr;
	json_t *in, *out, *v;
	const char *key;

	in = json_loads(settings && *settings ? settings : "{}", 0, &jerr);
	if (!json_is_object(in)) {
		plant_fake_fail(h, NULL, "the settings are not a JSON object: %s",
				in ? "another JSON value" : jerr.text);
		json_decref(in);
		return PLANT_E_CONFIG;
	}
	if (!keys) {
		h->config = in;
		return PLANT_OK;
	}
	out = json_object();
	json_object_foreach(in, key, v)
	{
		const struct plant_config_key *k = keys;
		json_t *conv;

		while (k->type != PLANT_CFG_END && strcmp(k->name, key) != 0)
			k++;
		if (k->type == PLANT_CFG_END) {
			plant_fake_fail(h, key, "unknown setting '%s' for module %s", key,
					h->desc->name);
			goto fail;
		}
		conv = plant_fake_convert(k, v);
		if (!conv) {
			plant_fake_fail(h, key, "'%s' must be %s", key,
					plant_fake_type_name(k->type));
			goto fail;
		}
		json_object_set_new(out, key, conv);
	}
	for (const struct plant_config_key *k = keys; k->type != PLANT_CFG_END; k++) {
		json_t *def, *conv;

		if (json_object_get(out, k->name))
			continue;
		if (k->required) {
			plant_fake_fail(h, k->name, "missing required setting '%s' (%s)", k->name,
					plant_fake_type_name(k->type));
			goto fail;
		}
		if (!k->default_value)
			continue;
		def = json_loads(k->default_value, JSON_DECODE_ANY, NULL);
		conv = def ? plant_fake_convert(k, def) : NULL;
		json_decref(def);
		if (!conv) {
			plant_fake_fail(h, k->name, "module %s: bad default for '%s': %s",
					h->desc->name, k->name, k->default_value);
			goto fail;
		}
		json_object_set_new(out, k->name, conv);
	}
	json_decref(in);
	h->config = out;
	return PLANT_OK;
fail:
	json_decref(in);
	json_decref(out);
	return PLANT_E_CONFIG;
}

/* ---- the public API ---------------------------------------------------------------------- */

/* A fresh fake host, or NULL when out of memory. Free it with
 * plant_test_free(). */
static inline struct plant_test_host *plant_test_new(void)
{
	struct plant_test_host *h = calloc(1, sizeof(*h));
	const char *verbose = getenv("PLANT_TEST_VERBOSE");

	if (!h)
		return NULL;
	h->api = (struct plant_host_api){
		.struct_size = sizeof(struct plant_host_api),
		.abi_major = PLANT_ABI_MAJOR,
		.abi_minor = PLANT_ABI_MINOR,
		.log = plant_fake_log,
		.error = plant_fake_error,
		.publish = plant_fake_publish,
		.publish_text = plant_fake_publish_text,
		.subscribe = plant_fake_subscribe,
		.unsubscribe = plant_fake_unsubscribe,
		.timer_add = plant_fake_timer_add,
		.timer_cancel = plant_fake_timer_cancel,
		.counter_add = plant_fake_counter_add,
		.gauge_set = plant_fake_gauge_set,
		.config = plant_fake_config,
		.instance_name = plant_fake_instance_name,
		.site_name = plant_fake_site_name,
		.data_dir = plant_fake_data_dir,
		.now_ms = plant_fake_now_ms,
		.msg_id = plant_fake_msg_id,
		.msg_topic = plant_fake_msg_topic,
		.msg_ts = plant_fake_msg_ts,
		.msg_body_text = plant_fake_msg_body_text,
		.msg_body = plant_fake_msg_body,
		.msg_attr = plant_fake_msg_attr,
		.msg_receive_count = plant_fake_msg_receive_count,
		.publish_ex = plant_fake_publish_ex,
		.queue_declare = plant_fake_queue_declare,
		.consume = plant_fake_consume,
		.ack = plant_fake_ack,
		.nack = plant_fake_nack,
		.queue_room = plant_fake_queue_room,
		.bus_stats = plant_fake_bus_stats,
		.store_register = plant_fake_store_register,
		.store_open = plant_fake_store_open,
		.store_get = plant_fake_store_get,
		.store_put = plant_fake_store_put,
		.store_delete = plant_fake_store_delete,
		.store_scan = plant_fake_store_scan,
		.store_batch = plant_fake_store_batch,
		.publish_batch = plant_fake_publish_batch,
		.hold = plant_fake_hold,
		.release = plant_fake_release,
		.reject = plant_fake_reject,
		.msg_fields = plant_fake_msg_fields,
		.http_route = plant_fake_http_route,
		.http_request = plant_fake_http_request,
		.http_header = plant_fake_http_header,
		.http_reply = plant_fake_http_reply,
		.publish_all = plant_fake_publish_all,
		.http_call = plant_fake_http_call,
		.http_call_wait = plant_fake_http_call_wait,
		.http_result_free = plant_fake_http_result_free,
		.http_result_header = plant_fake_http_result_header,
		.deploy = plant_fake_deploy,
	};
	h->inst.host = h;
	h->now = PLANT_FAKE_START_MS;
	h->verbose = verbose && *verbose && strcmp(verbose, "0") != 0;
	h->name = plant_fake_strdup("test");
	h->site = plant_fake_strdup("test-site");
	h->data_dir = plant_fake_strdup(".");
	h->published = json_array();
	h->logs = json_array();
	h->metrics = json_object();
	h->settlements = json_array();
	h->queues = json_object();
	if (!h->name || !h->site || !h->data_dir || !h->published || !h->logs || !h->metrics ||
	    !h->settlements || !h->queues) {
		free(h->name);
		free(h->site);
		free(h->data_dir);
		json_decref(h->published);
		json_decref(h->logs);
		json_decref(h->metrics);
		json_decref(h->settlements);
		json_decref(h->queues);
		free(h);
		return NULL;
	}
	return h;
}

static inline int plant_fake_set(struct plant_test_host *h, char **field, const char *value)
{
	char *copy;

	if (!h || !value || h->phase != PLANT_FAKE_NEW)
		return PLANT_E_STATE;
	copy = plant_fake_strdup(value);
	if (!copy)
		return PLANT_E_NOMEM;
	free(*field);
	*field = copy;
	return PLANT_OK;
}

/* The instance's name, site name and data directory (before the instance
 * is made). */
static inline int plant_test_set_name(struct plant_test_host *h, const char *name)
{
	return plant_fake_set(h, &h->name, name);
}

static inline int plant_test_set_site(struct plant_test_host *h, const char *site)
{
	return plant_fake_set(h, &h->site, site);
}

static inline int plant_test_set_data_dir(struct plant_test_host *h, const char *dir)
{
	return plant_fake_set(h, &h->data_dir, dir);
}

/* Print the plugin's log lines (and errors) on stderr, or stop. */
static inline void plant_test_verbose(struct plant_test_host *h, int on)
{
	h->verbose = on;
}

/* Give the site an empty in-memory store `name` (api->store_open finds it). */
static inline int plant_test_add_store(struct plant_test_host *h, const char *name)
{
	struct plant_fake_store *s;

	if (!name || !*name)
		return PLANT_E_INVALID;
	for (size_t i = 0; i < h->n_stores; i++)
		if (strcmp(h->stores[i].name, name) == 0)
			return PLANT_E_EXISTS;
	if (plant_fake_grow((void **)&h->stores, &h->cap_stores, h->n_stores, sizeof(*h->stores)))
		return PLANT_E_NOMEM;
	s = &h->stores[h->n_stores];
	*s = (struct plant_fake_store){.name = plant_fake_strdup(name)};
	if (!s->name)
		return PLANT_E_NOMEM;
	h->n_stores++;
	return PLANT_OK;
}

/* From now on, every publish answers `status` (PLANT_E_FULL: backpressure,
 * PLANT_E_STATE: shutting down) and records nothing; PLANT_OK ends it. */
static inline void plant_test_fail_publish(struct plant_test_host *h, int status)
{
	h->publish_status = status;
}

/* Why the last step failed: the plugin's last api->error(), or the
 * harness's own reason (a refused descriptor, a bad setting). NULL when
 * there was none. */
static inline const char *plant_test_error(const struct plant_test_host *h)
{
	return h->error;
}

/* The config key the last error names, or NULL. */
static inline const char *plant_test_error_key(const struct plant_test_host *h)
{
	return h->error_key;
}

/* Print why a lifecycle step failed, so that an assert's line is enough. */
static inline int plant_fake_report(struct plant_test_host *h, const char *step, int rc)
{
	if (rc != PLANT_OK)
		fprintf(stderr,
			"plant_test: %s of instance \"%s\" (module %s) failed: %s: %s%s%s%s\n",
			step, h->name, h->desc && h->desc->name ? h->desc->name : "?",
			plant_status_name(rc), h->error ? h->error : "(no error given)",
			h->error_key ? " [key '" : "", h->error_key ? h->error_key : "",
			h->error_key ? "']" : "");
	return rc;
}

/* Drop every subscription, consumer, timer and route, as the host does when
 * an instance stops or its init() fails. */
static inline void plant_fake_unregister(struct plant_test_host *h)
{
	for (size_t i = 0; i < h->n_subs; i++)
		h->subs[i].active = 0;
	for (size_t i = 0; i < h->n_consumers; i++)
		h->consumers[i].active = 0;
	for (size_t i = 0; i < h->n_timers; i++)
		h->timers[i].active = 0;
	for (size_t i = 0; i < h->n_routes; i++)
		h->routes[i].active = 0;
}

/* The descriptor check, the key table and validate(): what `plantd --check`
 * does. PLANT_OK, or the failure (printed; plant_test_error() says why). */
static inline int plant_test_validate(struct plant_test_host *h,
				      const struct plant_plugin_desc *desc, const char *settings)
{
	int rc;

	if (h->phase != PLANT_FAKE_NEW) {
		plant_fake_fail(h, NULL, "this fake host has made its instance already");
		return plant_fake_report(h, "validate", PLANT_E_STATE);
	}
	h->desc = desc;
	rc = plant_fake_check_desc(h, desc);
	if (rc == PLANT_OK)
		rc = plant_fake_apply_schema(h, settings);
	if (rc == PLANT_OK && desc->validate) {
		h->phase = PLANT_FAKE_VALIDATING;
		rc = desc->validate(&h->inst, &h->api, h->config);
		h->phase = PLANT_FAKE_NEW;
	}
	if (rc != PLANT_OK) {
		json_decref(h->config);
		h->config = NULL;
	}
	return plant_fake_report(h, "validate", rc);
}

/* plant_test_validate(), then init(). After a failed init() the instance's
 * subscriptions and timers are gone and destroy() is never called. */
static inline int plant_test_init(struct plant_test_host *h, const struct plant_plugin_desc *desc,
				  const char *settings)
{
	int rc;

	if (h->phase != PLANT_FAKE_NEW) /* leaves the instance there alone */
		return plant_test_validate(h, desc, settings);
	rc = plant_test_validate(h, desc, settings);
	if (rc != PLANT_OK) {
		h->phase = PLANT_FAKE_FAILED;
		return rc;
	}
	h->phase = PLANT_FAKE_INITIALISING;
	rc = desc->init(&h->inst, &h->api, h->config, &h->state);
	if (rc != PLANT_OK) {
		plant_fake_unregister(h);
		h->state = NULL;
		h->phase = PLANT_FAKE_FAILED;
		return plant_fake_report(h, "init", rc);
	}
	h->phase = PLANT_FAKE_READY;
	return PLANT_OK;
}

/* plant_test_init(), then start(): the instance runs. With a NULL `desc`,
 * starts the instance plant_test_init() made. After a failed start() the
 * instance's subscriptions and timers are gone and destroy() has run. */
static inline int plant_test_start(struct plant_test_host *h, const struct plant_plugin_desc *desc,
				   const char *settings)
{
	int rc;

	if (desc) {
		rc = plant_test_init(h, desc, settings);
		if (rc != PLANT_OK)
			return rc;
	} else if (h->phase != PLANT_FAKE_READY) {
		plant_fake_fail(h, NULL, "plant_test_start(h, NULL, NULL) needs plant_test_init()");
		return plant_fake_report(h, "start", PLANT_E_STATE);
	}
	h->phase = PLANT_FAKE_RUNNING;
	if (!h->desc->start)
		return PLANT_OK;
	rc = h->desc->start(h->state);
	if (rc != PLANT_OK) {
		plant_fake_unregister(h);
		h->phase = PLANT_FAKE_FAILED;
		if (h->desc->destroy)
			h->desc->destroy(h->state);
		h->state = NULL;
		return plant_fake_report(h, "start", rc);
	}
	return PLANT_OK;
}

/* Stop the instance: its subscriptions, consumers, timers and routes go
 * first, then stop() runs (when start() did). Queue messages it still holds
 * are "returned". Nothing happens for an instance not made or stopped. */
static inline void plant_test_stop(struct plant_test_host *h)
{
	int started = h->phase == PLANT_FAKE_RUNNING;

	if (h->phase != PLANT_FAKE_READY && h->phase != PLANT_FAKE_RUNNING)
		return;
	plant_fake_unregister(h);
	h->phase = PLANT_FAKE_STOPPING;
	if (started && h->desc->stop)
		h->desc->stop(h->state);
	for (struct plant_msg *m = h->held; m; m = m->next) {
		if (!m->settled) {
			m->settled = 1;
			plant_fake_settle_record(h, m, "returned", NULL, 0);
		}
	}
	h->phase = PLANT_FAKE_STOPPED;
}

/* plant_test_stop() if needed, then destroy(). What was published, logged,
 * counted and settled can still be read until plant_test_free(). */
static inline void plant_test_destroy(struct plant_test_host *h)
{
	plant_test_stop(h);
	if (h->phase != PLANT_FAKE_STOPPED)
		return;
	if (h->desc->destroy)
		h->desc->destroy(h->state);
	h->state = NULL;
	h->phase = PLANT_FAKE_DESTROYED;
}

/* Stop and destroy the instance if need be, and free the fake host. */
static inline void plant_test_free(struct plant_test_host *h)
{
	if (!h)
		return;
	plant_test_destroy(h);
	for (size_t i = 0; i < h->n_subs; i++)
		free(h->subs[i].pattern);
	free(h->subs);
	for (size_t i = 0; i < h->n_consumers; i++)
		free(h->consumers[i].queue);
	free(h->consumers);
	free(h->timers);
	for (size_t i = 0; i < h->n_routes; i++) {
		free(h->routes[i].listener);
		free(h->routes[i].method);
		free(h->routes[i].path);
	}
	free(h->routes);
	for (size_t i = 0; i < h->n_stores; i++) {
		for (size_t k = 0; k < h->stores[i].n; k++) {
			free(h->stores[i].items[k].key);
			json_decref(h->stores[i].items[k].value);
		}
		free(h->stores[i].items);
		free(h->stores[i].name);
	}
	free(h->stores);
	for (size_t i = 0; i < h->n_backends; i++)
		free(h->backends[i].kind);
	free(h->backends);
	while (h->held) {
		struct plant_msg *m = h->held;

		h->held = m->next;
		plant_fake_msg_free(m);
	}
	while (h->pending) {
		struct plant_http_req *r = h->pending;

		h->pending = r->next;
		plant_fake_req_free(r);
	}
	while (h->deploys) {
		struct plant_fake_deploy *dep = h->deploys;

		h->deploys = dep->next;
		json_decref(dep->request);
		free(dep);
	}
	json_decref(h->config);
	json_decref(h->published);
	json_decref(h->logs);
	json_decref(h->metrics);
	json_decref(h->settlements);
	json_decref(h->queues);
	free(h->error);
	free(h->error_key);
	free(h->reply_body);
	free(h->name);
	free(h->site);
	free(h->data_dir);
	free(h);
}

/* health(): PLANT_OK when the module has none. *detail_out (may be NULL) gets
 * the plugin's [new] detail or NULL; the caller decrefs it. */
static inline int plant_test_health(struct plant_test_host *h, json_t **detail_out)
{
	json_t *detail = NULL;
	int rc = PLANT_OK;

	if (h->phase != PLANT_FAKE_READY && h->phase != PLANT_FAKE_RUNNING)
		rc = PLANT_E_STATE;
	else if (h->desc->health)
		rc = h->desc->health(h->state, &detail);
	if (detail_out)
		*detail_out = detail;
	else
		json_decref(detail);
	return rc;
}

/* Is the instance there to receive messages and ticks? */
static inline int plant_fake_live_instance(const struct plant_test_host *h)
{
	return h->phase == PLANT_FAKE_READY || h->phase == PLANT_FAKE_RUNNING;
}

/* Deliver `n` messages: each subscription of the instance gets, in one
 * call, those whose topic its pattern matches. PLANT_OK when every handler
 * returned OK (also when none matched: see plant_test_subscribed()), else
 * the first failure; PLANT_E_INVALID (printed) for a bad topic or a body
 * that is not JSON. */
static inline int plant_test_deliver_msgs(struct plant_test_host *h,
					  const struct plant_test_msg *msgs, size_t n)
{
	struct plant_msg **built = calloc(n ? n : 1, sizeof(*built));
	const plant_msg **batch = calloc(n ? n : 1, sizeof(*batch));
	size_t n_subs = h->n_subs;
	int rc = PLANT_OK;

	if (!built || !batch) {
		free(built);
		free(batch);
		return PLANT_E_NOMEM;
	}
	for (size_t i = 0; i < n && rc == PLANT_OK; i++) {
		built[i] = plant_fake_msg_new(h, &msgs[i], NULL);
		if (!built[i])
			rc = plant_fake_report(h, "a delivery", PLANT_E_INVALID);
	}
	for (size_t s = 0; rc == PLANT_OK && s < n_subs; s++) {
		size_t k = 0;
		int hrc;

		if (!h->subs[s].active || !plant_fake_live_instance(h))
			continue;
		for (size_t i = 0; i < n; i++)
			if (plant_fake_glob(h->subs[s].pattern, built[i]->topic))
				batch[k++] = built[i];
		if (!k)
			continue;
		hrc = h->subs[s].fn(h->state, batch, k, h->subs[s].user);
		if (hrc != PLANT_OK && rc == PLANT_OK)
			rc = hrc;
	}
	for (size_t i = 0; i < n; i++)
		plant_fake_msg_free(built[i]);
	free(built);
	free(batch);
	return rc;
}

/* One message with body `body` (JSON text) on `topic`. */
static inline int plant_test_deliver(struct plant_test_host *h, const char *topic, const char *body)
{
	struct plant_test_msg m = {.topic = topic, .body = body};

	return plant_test_deliver_msgs(h, &m, 1);
}

/* Hand `n` messages to the (first) consumer of `queue`, in batches of its
 * max_batch. As the host does, messages a handler leaves unsettled are
 * "auto-ack"ed when it returns PLANT_OK and "timeout" when it fails; read
 * each outcome with plant_test_settled(h, id). PLANT_E_NOTFOUND when the
 * instance consumes no such queue; else PLANT_OK or the first handler
 * failure. */
static inline int plant_test_deliver_queue(struct plant_test_host *h, const char *queue,
					   const struct plant_test_msg *msgs, size_t n)
{
	struct plant_fake_consumer *c = NULL;
	struct plant_msg **built;
	int rc = PLANT_OK;

	for (size_t i = 0; i < h->n_consumers && !c; i++)
		if (h->consumers[i].active && queue && strcmp(h->consumers[i].queue, queue) == 0)
			c = &h->consumers[i];
	if (!c || !plant_fake_live_instance(h)) {
		plant_fake_fail(h, NULL, "no consumer of queue \"%s\"", queue ? queue : "(null)");
		return plant_fake_report(h, "a queue delivery", PLANT_E_NOTFOUND);
	}
	built = calloc(n ? n : 1, sizeof(*built));
	if (!built)
		return PLANT_E_NOMEM;
	for (size_t i = 0; i < n && rc == PLANT_OK; i++) {
		built[i] = plant_fake_msg_new(h, &msgs[i], queue);
		if (!built[i])
			rc = plant_fake_report(h, "a queue delivery", PLANT_E_INVALID);
	}
	for (size_t first = 0; rc == PLANT_OK && first < n;) {
		/* c may move when the handler consumes more: take a copy */
		struct plant_fake_consumer cur = *c;
		size_t k = n - first < cur.max_batch ? n - first : cur.max_batch;
		int hrc;

		if (!plant_fake_live_instance(h))
			break;
		hrc = cur.fn(h->state, (const plant_msg *const *)&built[first], k, cur.user);
		for (size_t i = first; i < first + k; i++) {
			if (!built[i]->settled) {
				built[i]->settled = 1;
				plant_fake_settle_record(h, built[i],
							 hrc == PLANT_OK ? "auto-ack" : "timeout",
							 NULL, 0);
			}
		}
		if (hrc != PLANT_OK)
			rc = hrc;
		first += k;
	}
	for (size_t i = 0; i < n; i++)
		plant_fake_msg_free(built[i]);
	free(built);
	return rc;
}

/* Fire every active timer once, in the order they were added, without
 * moving the clock. Returns how many fired. */
static inline size_t plant_test_tick(struct plant_test_host *h)
{
	size_t n = h->n_timers, fired = 0;

	for (size_t i = 0; i < n; i++) {
		if (!h->timers[i].active || !plant_fake_live_instance(h))
			continue;
		h->timers[i].fn(h->state, h->timers[i].user);
		fired++;
	}
	return fired;
}

/* Move the clock `ms` forward, firing each timer whenever it falls due
 * (ticks of several timers in time order; the clock reads each tick's
 * time). Returns how many ticks fired. */
static inline size_t plant_test_advance(struct plant_test_host *h, uint64_t ms)
{
	uint64_t target = h->now + ms;
	size_t fired = 0;

	for (;;) {
		struct plant_fake_timer *t = NULL;
		size_t idx = 0;

		for (size_t i = 0; i < h->n_timers; i++) {
			if (h->timers[i].active && h->timers[i].due <= target &&
			    (!t || h->timers[i].due < t->due)) {
				t = &h->timers[i];
				idx = i;
			}
		}
		if (!t || !plant_fake_live_instance(h))
			break;
		if (t->due > h->now)
			h->now = t->due;
		t->due += t->every_ms;
		h->timers[idx].fn(h->state, h->timers[idx].user);
		fired++;
	}
	h->now = target;
	return fired;
}

/* The fake clock, ms since the epoch. */
static inline uint64_t plant_test_now(const struct plant_test_host *h)
{
	return h->now;
}

/* One HTTP request to the instance's routes (any listener). `path` may
 * carry a query ("/x?a=1"); `body` (JSON or not) and `headers` (NULL, or a
 * NULL-terminated list of name, value pairs) may be NULL. Returns the
 * reply's HTTP status: 404 without a matching route, 503 when the instance
 * is not running, 500 when the handler fails without replying, 0 when it
 * has not replied yet (it may later: see plant_test_reply_status()). */
static inline int plant_test_request(struct plant_test_host *h, const char *method,
				     const char *path, const char *body, const char *const *headers)
{
	const struct plant_fake_route *r = NULL;
	struct plant_http_req *req;
	const char *q = path ? strchr(path, '?') : NULL;
	size_t plen = path ? (q ? (size_t)(q - path) : strlen(path)) : 0;
	int rc;

	plant_fake_reply_set(h, 0, NULL, 0);
	for (size_t i = 0; i < h->n_routes && !r && method; i++) {
		const struct plant_fake_route *c = &h->routes[i];
		size_t len = strlen(c->path);

		if (!c->active || strcmp(c->method, method) != 0)
			continue;
		if ((c->flags & PLANT_ROUTE_PREFIX) ? plen >= len && !strncmp(c->path, path, len)
						    : plen == len && !strncmp(c->path, path, len))
			r = c;
	}
	if (!r) {
		plant_fake_reply_set(h, 404, "no route", 8);
		return 404;
	}
	if (h->phase != PLANT_FAKE_RUNNING) {
		plant_fake_reply_set(h, 503, "not running", 11);
		return 503;
	}
	req = calloc(1, sizeof(*req));
	if (!req)
		return 500;
	req->host = h;
	req->method = plant_fake_strdup(method);
	req->path = plant_fake_strndup(path, plen);
	/* for a prefix route, what follows the prefix */
	req->tail = plant_fake_strdup(
		req->path && (r->flags & PLANT_ROUTE_PREFIX) ? req->path + strlen(r->path) : "");
	req->query = plant_fake_strdup(q ? q + 1 : "");
	req->body_len = body ? strlen(body) : 0;
	req->body = plant_fake_strndup(body ? body : "", req->body_len);
	req->listener = plant_fake_strdup(r->listener);
	req->headers = json_object();
	for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2) {
		char lower[256];
		size_t k;

		for (k = 0; headers[i][k] && k + 1 < sizeof(lower); k++)
			lower[k] = (char)(headers[i][k] >= 'A' && headers[i][k] <= 'Z'
						  ? headers[i][k] + 32
						  : headers[i][k]);
		lower[k] = '\0';
		json_object_set_new(req->headers, lower, json_string(headers[i + 1]));
	}
	if (!req->method || !req->path || !req->tail || !req->query || !req->body ||
	    !req->listener || !req->headers) {
		plant_fake_req_free(req);
		return 500;
	}
	req->next = h->pending;
	h->pending = req;
	rc = r->fn(h->state, req, r->user);
	if (h->reply_status == 0 && rc != PLANT_OK) {
		/* the host answers 500 with the instance's last error */
		const char *why = h->error ? h->error : plant_status_name(rc);

		plant_fake_http_reply(req, 500, "text/plain", why, strlen(why), NULL);
	}
	return h->reply_status;
}

/* The last HTTP reply's status (0: none yet) and body ("" when none). */
static inline int plant_test_reply_status(const struct plant_test_host *h)
{
	return h->reply_status;
}

/* deploy() requests not yet answered. */
static inline size_t plant_test_deploys(const struct plant_test_host *h)
{
	size_t n = 0;

	for (const struct plant_fake_deploy *dep = h->deploys; dep; dep = dep->next)
		n++;
	return n;
}

/* The i-th unanswered deploy() request, oldest first ([borrowed]), or NULL. */
static inline const json_t *plant_test_deploy_request(const struct plant_test_host *h, size_t i)
{
	for (const struct plant_fake_deploy *dep = h->deploys; dep; dep = dep->next)
		if (i-- == 0)
			return dep->request;
	return NULL;
}

/* Answer the oldest deploy() request: its done() runs now with `status`,
 * the record parsed from `record_json` (or NULL) and `error` (NULL: "").
 * PLANT_E_NOTFOUND when none waits, PLANT_E_INVALID for bad JSON. */
static inline int plant_test_deploy_answer(struct plant_test_host *h, int status,
					   const char *record_json, const char *error)
{
	struct plant_fake_deploy *dep = h->deploys;
	json_t *rec = NULL;

	if (!dep)
		return PLANT_E_NOTFOUND;
	if (record_json && !(rec = json_loads(record_json, 0, NULL)))
		return PLANT_E_INVALID;
	h->deploys = dep->next;
	if (h->state && h->phase == PLANT_FAKE_RUNNING)
		dep->done(h->state, status, rec, error ? error : "", dep->user);
	json_decref(rec);
	json_decref(dep->request);
	free(dep);
	return PLANT_OK;
}

static inline const char *plant_test_reply_body(const struct plant_test_host *h)
{
	return h->reply_body ? h->reply_body : "";
}

/* Everything published, in order: [borrowed] array of objects {"topic",
 * "body"} plus, when the plugin gave them, "attributes", "dedup_key" and
 * "delay_ms". */
static inline const json_t *plant_test_published(const struct plant_test_host *h)
{
	return h->published;
}

/* How many messages were published on a topic matching `pattern` (a topic
 * name or a glob; NULL: all). */
static inline size_t plant_test_count(const struct plant_test_host *h, const char *pattern)
{
	size_t i, n = 0;
	json_t *rec;

	json_array_foreach(h->published, i, rec)
	{
		if (plant_fake_matches(pattern, json_string_value(json_object_get(rec, "topic"))))
			n++;
	}
	return n;
}

/* The body of the last message published on a topic matching `pattern`
 * (NULL: any), [borrowed], or NULL when there is none. */
static inline const json_t *plant_test_last(const struct plant_test_host *h, const char *pattern)
{
	for (size_t i = json_array_size(h->published); i > 0; i--) {
		const json_t *rec = json_array_get(h->published, i - 1);

		if (plant_fake_matches(pattern, json_string_value(json_object_get(rec, "topic"))))
			return json_object_get(rec, "body");
	}
	return NULL;
}

/* Forget what was published and logged so far (metrics stay). */
static inline void plant_test_clear(struct plant_test_host *h)
{
	json_array_clear(h->published);
	json_array_clear(h->logs);
}

/* Every log line: [borrowed] array of {"level": "error"|"warn"|"info"|
 * "debug", "text": "..."}. */
static inline const json_t *plant_test_logs(const struct plant_test_host *h)
{
	return h->logs;
}

/* How many log lines contain `text`. */
static inline size_t plant_test_logged(const struct plant_test_host *h, const char *text)
{
	size_t i, n = 0;
	json_t *rec;

	json_array_foreach(h->logs, i, rec)
	{
		const char *line = json_string_value(json_object_get(rec, "text"));

		if (line && text && strstr(line, text))
			n++;
	}
	return n;
}

/* A counter's value (0 when never added to). */
static inline uint64_t plant_test_counter(const struct plant_test_host *h, const char *name)
{
	const json_t *v = json_object_get(h->metrics, name);

	return json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
}

/* A gauge's value (NAN when never set). */
static inline double plant_test_gauge(const struct plant_test_host *h, const char *name)
{
	const json_t *v = json_object_get(h->metrics, name);

	return json_is_real(v) ? json_real_value(v) : NAN;
}

/* How many active subscriptions match `topic`. */
static inline size_t plant_test_subscribed(const struct plant_test_host *h, const char *topic)
{
	size_t n = 0;

	for (size_t i = 0; i < h->n_subs; i++)
		if (h->subs[i].active && topic && plant_fake_glob(h->subs[i].pattern, topic))
			n++;
	return n;
}

/* How many timers are active. */
static inline size_t plant_test_timers(const struct plant_test_host *h)
{
	size_t n = 0;

	for (size_t i = 0; i < h->n_timers; i++)
		n += h->timers[i].active ? 1 : 0;
	return n;
}

/* Every settlement of a queue message, in order: [borrowed] array of {"id",
 * "queue", "how"} plus "reason" and "delay_ms" when given. */
static inline const json_t *plant_test_settlements(const struct plant_test_host *h)
{
	return h->settlements;
}

/* How queue message `id` was settled last: "ack", "nack", "reject" (by the
 * plugin), "held" (hold(), not settled yet), "auto-ack" (left unsettled by
 * a handler that returned OK), "timeout" (left unsettled by one that
 * failed), "returned" (held when the instance stopped); NULL: never. */
static inline const char *plant_test_settled(const struct plant_test_host *h, const char *id)
{
	for (size_t i = json_array_size(h->settlements); i > 0 && id; i--) {
		const json_t *rec = json_array_get(h->settlements, i - 1);

		if (strcmp(json_string_value(json_object_get(rec, "id")), id) == 0)
			return json_string_value(json_object_get(rec, "how"));
	}
	return NULL;
}

/* The settings as the plugin sees them, defaults filled in ([borrowed]), or
 * NULL before plant_test_validate(). */
static inline const json_t *plant_test_config(const struct plant_test_host *h)
{
	return h->config;
}

/* The plugin's state (what init() stored), or NULL. */
static inline void *plant_test_state(const struct plant_test_host *h)
{
	return h->state;
}

/* The host table and the instance handle, to call a plugin's own helpers. */
static inline const struct plant_host_api *plant_test_api(const struct plant_test_host *h)
{
	return &h->api;
}

static inline plant_instance *plant_test_instance(struct plant_test_host *h)
{
	return &h->inst;
}

/* The store backend the plugin registered under `kind`, or NULL;
 * *backend_state_out (may be NULL) gets its state. */
static inline const struct plant_store_backend *
plant_test_store_backend(const struct plant_test_host *h, const char *kind,
			 void **backend_state_out)
{
	for (size_t i = 0; i < h->n_backends && kind; i++) {
		if (strcmp(h->backends[i].kind, kind) == 0) {
			if (backend_state_out)
				*backend_state_out = h->backends[i].state;
			return h->backends[i].backend;
		}
	}
	return NULL;
}

#endif /* PLANTD_TESTING_H */
