/* The admin API (admin.h). Handlers run on the main loop, where the site
 * changes; what may block (stores, durable queues) goes to a worker as the
 * host's own work and answers from there. */
#include "admin.h"
#include "deploy.h"

#include <event2/event.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "clock.h"
#include "executor.h"
#include "http.h"
#include "httpc.h"
#include "jsoncheck.h"
#include "loader.h"
#include "log.h"
#include "metrics.h"
#include "msg.h"
#include "plantd-build.h"
#include "queue.h"
#include "site.h"

#define HEALTH_TIMEOUT_MS 2000
#define PEEK_DEFAULT	  10
#define PEEK_MAX	  1000
#define TAIL_PENDING_MAX  (4u << 20)

struct tap;

struct admin {
	struct http *http;
	struct site *site;
	struct admin_hooks hooks;
	const char *listener;
	pthread_mutex_t taps_lock;
	struct tap *taps;
	struct health *healths; /* [main] answers with a timer set */
};

static const char *state_name(enum instance_state st)
{
	switch (st) {
	case INST_NEW:
		return "new";
	case INST_INITIALISED:
		return "initialised";
	case INST_RUNNING:
		return "running";
	case INST_STOPPED:
		return "stopped";
	case INST_FAILED:
		return "failed";
	}
	return "?";
}

static int by_name(const void *a, const void *b)
{
	const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
	return strcmp(json_string_value(json_object_get(x, "name")),
		      json_string_value(json_object_get(y, "name")));
}

/* {NAME: {...}} -> [{"name": NAME, ...}] sorted by name: [new] */
static json_t *sorted_list(json_t *obj)
{
	size_t n = json_object_size(obj), i = 0;
	json_t **v = calloc(n ? n : 1, sizeof *v);
	const char *k;
	json_t *e;
	json_object_foreach(obj, k, e)
	{
		json_t *c = json_copy(e);
		json_object_set_new(c, "name", json_string(k));
		v[i++] = c;
	}
	qsort(v, i, sizeof *v, by_name);
	json_t *arr = json_array();
	for (size_t x = 0; x < i; x++)
		json_array_append_new(arr, v[x]);
	free(v);
	return arr;
}

/* ---- /healthz --------------------------------------------------------------------- */

struct health {
	pthread_mutex_t lock;
	atomic_int refs; /* each task, the timer, the handler */
	int pending;
	bool answered;
	plant_http_req *req;
	json_t *instances; /* entries, filled in as answers come */
	json_t *stores;	   /* NULL until the host's task answered */
	struct event *timer;
	struct health *next; /* on admin->healths while the timer is set */
	struct admin *a;
};

struct health_task {
	struct health *h;
	struct instance *inst;
	json_t *entry; /* [borrowed] from h->instances */
};

static void health_unref(struct health *h)
{
	if (atomic_fetch_sub(&h->refs, 1) != 1)
		return;
	json_decref(h->instances);
	json_decref(h->stores);
	if (h->timer)
		event_free(h->timer);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

/* With h->lock: answer once, with what is known now. */
static void health_answer_locked(struct health *h)
{
	if (h->answered)
		return;
	h->answered = true;
	bool ok = true;
	size_t i;
	json_t *e;
	json_array_foreach(h->instances, i, e)
	{
		if (!json_object_get(e, "healthy")) {
			json_object_set_new(e, "healthy", json_false());
			json_object_set_new(e, "detail",
					    json_string("no answer within 2 s (busy or stuck)"));
		}
		if (json_is_true(json_object_get(e, "required")) &&
		    !json_is_true(json_object_get(e, "healthy")))
			ok = false;
	}
	json_t *stores = h->stores ? json_incref(h->stores) : json_array();
	if (!h->stores)
		ok = false;
	json_array_foreach(stores, i, e) if (!json_is_true(json_object_get(e, "healthy"))) ok =
		false;
	json_t *body = json_pack("{s:s, s:O, s:o}", "status", ok ? "ok" : "failing", "instances",
				 h->instances, "stores", stores);
	http_req_reply_json(h->req, ok ? 200 : 503, body, NULL);
}

static void health_done_one(struct health *h)
{
	pthread_mutex_lock(&h->lock);
	if (--h->pending == 0)
		health_answer_locked(h);
	pthread_mutex_unlock(&h->lock);
	health_unref(h);
}

/* [worker, under the instance's actor] */
static void health_task_run(void *arg, void *actor_ctx)
{
	struct health_task *t = arg;
	struct instance *inst = t->inst;
	int rc = PLANT_E_STATE;
	json_t *detail = NULL;
	if (actor_ctx && inst->st == INST_RUNNING && inst->state)
		rc = inst->mod->desc->health(inst->state, &detail);
	pthread_mutex_lock(&t->h->lock);
	json_object_set_new(t->entry, "healthy", json_boolean(rc == PLANT_OK));
	if (detail)
		json_object_set_new(t->entry, "detail", detail);
	else if (rc != PLANT_OK)
		json_object_set_new(
			t->entry, "detail",
			json_string(rc == PLANT_E_STATE ? "not running" : plant_status_name(rc)));
	pthread_mutex_unlock(&t->h->lock);
	health_done_one(t->h);
	free(t);
}

/* [worker] the stores' own health */
static void health_stores_run(void *arg, void *actor_ctx)
{
	struct health_task *t = arg;
	struct site *site = (struct site *)t->entry;
	json_t *stores = actor_ctx ? site_stores_json(site) : NULL;
	pthread_mutex_lock(&t->h->lock);
	t->h->stores = stores;
	pthread_mutex_unlock(&t->h->lock);
	health_done_one(t->h);
	free(t);
}

/* [main loop] */
static void health_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct health *h = arg;
	for (struct health **pp = &h->a->healths; *pp; pp = &(*pp)->next) {
		if (*pp == h) {
			*pp = h->next;
			break;
		}
	}
	pthread_mutex_lock(&h->lock);
	health_answer_locked(h);
	pthread_mutex_unlock(&h->lock);
	health_unref(h);
}

static int get_healthz(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	struct health *h = calloc(1, sizeof *h);
	if (!h)
		return PLANT_E_NOMEM;
	pthread_mutex_init(&h->lock, NULL);
	atomic_init(&h->refs, 1);
	h->req = req;
	h->a = a;
	h->instances = json_array();
	h->pending = 1; /* the handler's own, dropped at the end */
	for (size_t i = 0; i < site_instance_count(a->site); i++) {
		struct instance *inst = site_instance(a->site, i);
		json_t *e = json_pack("{s:s, s:s, s:b, s:s}", "name", inst->spec->name, "module",
				      inst->spec->module, "required", inst->spec->required, "state",
				      state_name(inst->st));
		json_array_append_new(h->instances, e);
		if (inst->st != INST_RUNNING) {
			json_object_set_new(e, "healthy", json_false());
			continue;
		}
		if (!inst->mod->desc->health) {
			json_object_set_new(e, "healthy", json_true());
			continue;
		}
		struct health_task *t = malloc(sizeof *t);
		if (!t) {
			json_object_set_new(e, "healthy", json_false());
			continue;
		}
		*t = (struct health_task){.h = h, .inst = inst, .entry = e};
		pthread_mutex_lock(&h->lock);
		h->pending++;
		pthread_mutex_unlock(&h->lock);
		atomic_fetch_add(&h->refs, 1);
		if (site_post_instance(inst, health_task_run, t) != PLANT_OK)
			health_task_run(t, NULL);
	}
	struct health_task *st = malloc(sizeof *st);
	if (st) {
		*st = (struct health_task){.h = h, .entry = (json_t *)a->site};
		pthread_mutex_lock(&h->lock);
		h->pending++;
		pthread_mutex_unlock(&h->lock);
		atomic_fetch_add(&h->refs, 1);
		if (site_post_host(a->site, health_stores_run, st) != PLANT_OK)
			health_stores_run(st, NULL);
	}
	/* a stuck instance must not hold the answer forever */
	pthread_mutex_lock(&h->lock);
	bool open = !h->answered && h->pending > 1;
	pthread_mutex_unlock(&h->lock);
	if (open) {
		h->timer = evtimer_new(site_event_base(a->site), health_timeout, h);
		if (h->timer) {
			atomic_fetch_add(&h->refs, 1);
			struct timeval tv = {.tv_sec = HEALTH_TIMEOUT_MS / 1000,
					     .tv_usec = (HEALTH_TIMEOUT_MS % 1000) * 1000};
			evtimer_add(h->timer, &tv);
			h->next = a->healths;
			a->healths = h;
		}
	}
	health_done_one(h);
	return PLANT_OK;
}

/* ---- /metrics ------------------------------------------------------------------------- */

struct text {
	char *s;
	size_t len, cap;
	bool oom;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct text *t, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0 || t->oom)
			return;
		if (t->s && t->len + (size_t)n < t->cap) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = (t->cap ? t->cap * 2 : 8192) + (size_t)n;
		char *v = realloc(t->s, cap);
		if (!v) {
			t->oom = true;
			return;
		}
		t->s = v;
		t->cap = cap;
	}
}

/* A label value, escaped as the text format wants (\\, \", \n). */
static const char *esc(const char *in, char *buf, size_t len)
{
	size_t o = 0;
	for (; *in && o + 3 < len; in++) {
		if (*in == '\\' || *in == '"') {
			buf[o++] = '\\';
			buf[o++] = *in;
		} else if (*in == '\n') {
			buf[o++] = '\\';
			buf[o++] = 'n';
		} else {
			buf[o++] = *in;
		}
	}
	buf[o] = 0;
	return buf;
}

static void family(struct text *t, const char *name, const char *type, const char *help)
{
	put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static uint64_t rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long long size = 0, rss = 0;
	if (f) {
		if (fscanf(f, "%llu %llu", &size, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	return rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

struct http_stat_ctx {
	struct text *t;
};

static void http_stat_line(void *ud, const char *listener, int status, uint64_t count)
{
	struct http_stat_ctx *c = ud;
	char b[256];
	put(c->t, "plantd_http_requests_total{listener=\"%s\",code=\"%d\"} %" PRIu64 "\n",
	    esc(listener, b, sizeof b), status, count);
}

static void plugin_metrics(struct text *t, struct site *site, bool counters)
{
	char b1[256], b2[256];
	for (size_t i = 0; i < site_instance_count(site); i++) {
		struct instance *inst = site_instance(site, i);
		json_t *m = metrics_json(inst->metrics);
		const char *k;
		json_t *v;
		json_object_foreach(m, k, v)
		{
			if (counters != json_is_integer(v))
				continue;
			put(t, "plantd_instance_%s{instance=\"%s\",name=\"%s\"} %.17g\n",
			    counters ? "counter" : "gauge", esc(inst->spec->name, b1, sizeof b1),
			    esc(k, b2, sizeof b2), json_number_value(v));
		}
		json_decref(m);
	}
}

static int get_metrics(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	struct text t = {0};
	char b1[256], b2[256];
	uint64_t now = clock_now_ms();

	family(&t, "plantd_build_info", "gauge", "The host's version and SDK ABI.");
	put(&t, "plantd_build_info{version=\"%s\",abi=\"%d.%d\"} 1\n", PLANTD_VERSION,
	    PLANT_ABI_MAJOR, PLANT_ABI_MINOR);
	family(&t, "plantd_uptime_seconds", "gauge", "Seconds since the host started.");
	put(&t, "plantd_uptime_seconds %.3f\n", (double)(now - site_started_ms(a->site)) / 1000.0);
	family(&t, "plantd_process_resident_memory_bytes", "gauge", "Resident memory.");
	put(&t, "plantd_process_resident_memory_bytes %" PRIu64 "\n", rss_bytes());

	json_t *stats = bus_stats_json(site_bus(a->site));
	json_t *topics = sorted_list(json_object_get(stats, "topics"));
	json_t *queues = sorted_list(json_object_get(stats, "queues"));
	size_t i;
	json_t *e;
	family(&t, "plantd_topic_published_total", "counter", "Messages published per topic.");
	json_array_foreach(topics, i, e)
		put(&t, "plantd_topic_published_total{topic=\"%s\"} %" JSON_INTEGER_FORMAT "\n",
		    json_string_value(json_object_get(e, "name")),
		    json_integer_value(json_object_get(e, "published")));
	static const struct {
		const char *name, *key, *type, *help;
		double scale;
	} qf[] = {
		{"plantd_queue_depth", "depth", "gauge",
		 "Messages in the queue, in flight included.", 1},
		{"plantd_queue_in_flight", "in_flight", "gauge", "Messages received, not settled.",
		 1},
		{"plantd_queue_oldest_age_seconds", "oldest_age_ms", "gauge",
		 "Age of the oldest message.", 1000},
		{"plantd_queue_dead_lettered_total", "dead_lettered", "counter",
		 "Messages moved to the dead-letter queue.", 1},
		{"plantd_queue_enqueued_total", "enqueued", "counter", "Messages enqueued.", 1},
		{"plantd_queue_acked_total", "acked", "counter", "Messages acknowledged.", 1},
		{"plantd_queue_refused_total", "refused", "counter",
		 "Publishes refused because the queue was full.", 1},
	};
	for (size_t f = 0; f < sizeof qf / sizeof qf[0]; f++) {
		family(&t, qf[f].name, qf[f].type, qf[f].help);
		json_array_foreach(queues, i, e)
		{
			json_int_t v = json_integer_value(json_object_get(e, qf[f].key));
			esc(json_string_value(json_object_get(e, "name")), b1, sizeof b1);
			if (qf[f].scale == 1)
				put(&t, "%s{queue=\"%s\"} %" JSON_INTEGER_FORMAT "\n", qf[f].name,
				    b1, v);
			else
				put(&t, "%s{queue=\"%s\"} %.3f\n", qf[f].name, b1,
				    (double)v / qf[f].scale);
		}
	}
	json_decref(topics);
	json_decref(queues);
	json_decref(stats);

	size_t n = site_instance_count(a->site);
	family(&t, "plantd_instance_handled_total", "counter",
	       "Messages and requests handled per instance.");
	for (i = 0; i < n; i++) {
		struct instance *inst = site_instance(a->site, i);
		put(&t, "plantd_instance_handled_total{instance=\"%s\",module=\"%s\"} %llu\n",
		    esc(inst->spec->name, b1, sizeof b1), esc(inst->spec->module, b2, sizeof b2),
		    (unsigned long long)atomic_load(&inst->handled));
	}
	family(&t, "plantd_instance_errors_total", "counter",
	       "Handler calls that failed per instance.");
	for (i = 0; i < n; i++) {
		struct instance *inst = site_instance(a->site, i);
		put(&t, "plantd_instance_errors_total{instance=\"%s\",module=\"%s\"} %llu\n",
		    esc(inst->spec->name, b1, sizeof b1), esc(inst->spec->module, b2, sizeof b2),
		    (unsigned long long)atomic_load(&inst->errors));
	}
	family(&t, "plantd_instance_handler_seconds", "histogram",
	       "Time per handler call (a batch of messages, or a request).");
	for (i = 0; i < n; i++) {
		struct instance *inst = site_instance(a->site, i);
		esc(inst->spec->name, b1, sizeof b1);
		uint64_t cum = 0;
		for (size_t b = 0; b <= SITE_LATENCY_BUCKETS; b++) {
			cum += atomic_load(&inst->lat_count[b]);
			if (b < SITE_LATENCY_BUCKETS)
				put(&t,
				    "plantd_instance_handler_seconds_bucket{instance=\"%s\",le=\"%g\"} "
				    "%" PRIu64 "\n",
				    b1, (double)site_latency_bounds_us[b] / 1e6, cum);
			else
				put(&t,
				    "plantd_instance_handler_seconds_bucket{instance=\"%s\",le=\"+Inf\"} "
				    "%" PRIu64 "\n",
				    b1, cum);
		}
		put(&t, "plantd_instance_handler_seconds_sum{instance=\"%s\"} %.9f\n", b1,
		    (double)atomic_load(&inst->lat_sum_ns) / 1e9);
		put(&t, "plantd_instance_handler_seconds_count{instance=\"%s\"} %" PRIu64 "\n", b1,
		    cum);
	}
	family(&t, "plantd_instance_counter", "counter", "Counters plugins keep.");
	plugin_metrics(&t, a->site, true);
	family(&t, "plantd_instance_gauge", "gauge", "Gauges plugins keep.");
	plugin_metrics(&t, a->site, false);
	struct httpc_stats hs;
	httpc_stats_get(site_httpc(a->site), &hs);
	family(&t, "plantd_http_client_requests_total", "counter",
	       "Requests plugins made through the host's HTTP client, by outcome.");
	put(&t,
	    "plantd_http_client_requests_total{outcome=\"answered\"} %" PRIu64 "\n"
	    "plantd_http_client_requests_total{outcome=\"failed\"} %" PRIu64 "\n"
	    "plantd_http_client_requests_total{outcome=\"timeout\"} %" PRIu64 "\n"
	    "plantd_http_client_requests_total{outcome=\"cancelled\"} %" PRIu64 "\n",
	    hs.ok, hs.failed, hs.timeouts, hs.cancelled);
	family(&t, "plantd_http_client_in_flight", "gauge", "Requests waiting for an answer.");
	put(&t, "plantd_http_client_in_flight %" PRIu64 "\n", hs.in_flight);
	family(&t, "plantd_http_requests_total", "counter",
	       "Requests answered per listener and status code (0: any other).");
	struct http_stat_ctx c = {.t = &t};
	http_stats_foreach(a->http, http_stat_line, &c);

	int rc;
	if (t.oom)
		rc = http_req_reply_json(req, 503, NULL, "out of memory");
	else
		rc = http_req_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", t.s,
				    t.len, NULL);
	free(t.s);
	return rc;
}

/* ---- /v1 lists --------------------------------------------------------------------------- */

static int get_plugins(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	json_t *arr = json_array();
	for (size_t i = 0; i < site_instance_count(a->site); i++) {
		struct instance *inst = site_instance(a->site, i);
		const struct plant_plugin_desc *d = inst->mod ? inst->mod->desc : NULL;
		json_array_append_new(
			arr,
			json_pack("{s:s, s:s, s:s?, s:s, s:b, s:I, s:I}", "name", inst->spec->name,
				  "module", inst->spec->module, "version", d ? d->version : NULL,
				  "state", state_name(inst->st), "required", inst->spec->required,
				  "handled", (json_int_t)atomic_load(&inst->handled), "errors",
				  (json_int_t)atomic_load(&inst->errors)));
		json_t *e = json_array_get(arr, json_array_size(arr) - 1);
		if (d)
			json_object_set_new(e, "abi",
					    json_sprintf("%u.%u", d->abi_major, d->abi_minor));
		if (inst->error[0] && inst->st == INST_FAILED)
			json_object_set_new(e, "error", json_string(inst->error));
		char where[4200];
		json_object_set_new(
			e, "source",
			json_string(instance_spec_where(inst->spec, NULL, where, sizeof where)));
	}
	return http_req_reply_json(req, 200, json_pack("{s:o}", "plugins", arr), NULL);
}

static int get_topics(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	json_t *stats = bus_stats_json(site_bus(a->site));
	json_t *list = sorted_list(json_object_get(stats, "topics"));
	json_decref(stats);
	return http_req_reply_json(req, 200, json_pack("{s:o}", "topics", list), NULL);
}

static int get_queues(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	struct bus *bus = site_bus(a->site);
	json_t *stats = bus_stats_json(bus);
	json_t *list = sorted_list(json_object_get(stats, "queues"));
	json_decref(stats);
	size_t i;
	json_t *e;
	json_array_foreach(list, i, e)
	{
		struct queue *q =
			bus_queue_find(bus, json_string_value(json_object_get(e, "name")));
		json_object_set_new(e, "durable", json_boolean(q && queue_has_store(q)));
	}
	return http_req_reply_json(req, 200, json_pack("{s:o}", "queues", list), NULL);
}

struct host_call {
	struct admin *a;
	plant_http_req *req;
	char name[256];
};

static void stores_run(void *arg, void *actor_ctx)
{
	struct host_call *c = arg;
	if (!actor_ctx)
		http_req_reply_json(c->req, 503, NULL, "plantd is shutting down");
	else
		http_req_reply_json(c->req, 200,
				    json_pack("{s:o}", "stores", site_stores_json(c->a->site)),
				    NULL);
	free(c);
}

static int post_host(struct admin *a, plant_http_req *req, const char *name,
		     void (*fn)(void *, void *))
{
	struct host_call *c = calloc(1, sizeof *c);
	if (!c)
		return PLANT_E_NOMEM;
	c->a = a;
	c->req = req;
	snprintf(c->name, sizeof c->name, "%s", name ? name : "");
	if (site_post_host(a->site, fn, c) != PLANT_OK) {
		free(c);
		return PLANT_E_STATE;
	}
	return PLANT_OK;
}

static int get_stores(void *ud, plant_http_req *req)
{
	return post_host(ud, req, NULL, stores_run);
}

/* ---- publish, peek, redrive, reload --------------------------------------------------------- */

/* [worker] a durable queue's write may block */
static void publish_run(void *arg, void *actor_ctx)
{
	struct host_call *c = arg;
	struct plant_http_info info = {.struct_size = sizeof info};
	http_req_info(c->req, &info);
	if (!actor_ctx) {
		http_req_reply_json(c->req, 503, NULL, "plantd is shutting down");
		free(c);
		return;
	}
	struct plant_msg *m = msg_new_text(c->name, info.body, info.body_len);
	char id[MSG_ID_LEN + 1] = "";
	if (m)
		memcpy(id, m->id, sizeof id);
	int rc = m ? bus_publish(site_bus(c->a->site), m) : PLANT_E_NOMEM; /* takes m */
	if (rc == PLANT_OK) {
		http_req_reply_json(c->req, 202, json_pack("{s:s}", "id", id), NULL);
	} else if (rc == PLANT_E_FULL) {
		static const char *const hdrs[] = {"Retry-After", "1", NULL};
		json_t *j =
			json_pack("{s:s}", "error", "a queue on this topic is full: retry later");
		char *text = json_dumps(j, JSON_COMPACT);
		json_decref(j);
		http_req_reply(c->req, 429, "application/json", text, text ? strlen(text) : 0,
			       hdrs);
		free(text);
	} else {
		http_req_reply_json(c->req, rc == PLANT_E_STATE ? 503 : 500, NULL,
				    "cannot publish on \"%s\": %s", c->name, plant_status_name(rc));
	}
	free(c);
}

static int post_topic(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	struct plant_http_info info = {.struct_size = sizeof info};
	http_req_info(req, &info);
	if (!bus_topic_valid(info.tail))
		return http_req_reply_json(req, 400, NULL,
					   "\"%s\" is not a topic name: 1 to 200 characters of "
					   "letters, digits, '_', '-' and '.'",
					   info.tail);
	if (!info.body_len || !json_text_valid(info.body, info.body_len))
		return http_req_reply_json(req, 400, NULL,
					   "the body must be one JSON value (the message body)");
	return post_host(a, req, info.tail, publish_run);
}

static bool split_tail(const char *tail, const char *what, char *name, size_t len)
{
	const char *slash = strchr(tail, '/');
	if (!slash || strcmp(slash + 1, what) != 0 || slash == tail ||
	    (size_t)(slash - tail) >= len)
		return false;
	memcpy(name, tail, (size_t)(slash - tail));
	name[slash - tail] = 0;
	return true;
}

static int get_queue_messages(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	struct plant_http_info info = {.struct_size = sizeof info};
	http_req_info(req, &info);
	char name[256], buf[32];
	if (!split_tail(info.tail, "messages", name, sizeof name))
		return http_req_reply_json(req, 404, NULL, "no route for GET %s", info.path);
	struct queue *q = bus_queue_find(site_bus(a->site), name);
	if (!q)
		return http_req_reply_json(req, 404, NULL, "no queue \"%s\"", name);
	long n = PEEK_DEFAULT;
	if (http_req_query(req, "peek", buf, sizeof buf)) {
		char *end;
		n = strtol(buf, &end, 10);
		if (*end || n < 1 || n > PEEK_MAX)
			return http_req_reply_json(req, 400, NULL,
						   "peek must be a number from 1 to %d", PEEK_MAX);
	}
	return http_req_reply_json(
		req, 200,
		json_pack("{s:s, s:o}", "queue", name, "messages", queue_peek(q, (size_t)n)), NULL);
}

static void redrive_run(void *arg, void *actor_ctx)
{
	struct host_call *c = arg;
	size_t moved = 0, kept = 0;
	int rc = actor_ctx ? bus_redrive(site_bus(c->a->site), c->name, &moved, &kept)
			   : PLANT_E_STATE;
	if (rc == PLANT_OK) {
		if (moved)
			log_info("redrive: %zu messages of \"%s\" back to their queues", moved,
				 c->name);
		http_req_reply_json(c->req, 200,
				    json_pack("{s:s, s:I, s:I}", "queue", c->name, "redriven",
					      (json_int_t)moved, "kept", (json_int_t)kept),
				    NULL);
	} else if (rc == PLANT_E_NOTFOUND) {
		http_req_reply_json(c->req, 404, NULL, "no queue \"%s\"", c->name);
	} else {
		http_req_reply_json(c->req, rc == PLANT_E_STATE ? 503 : 500, NULL,
				    "redrive of \"%s\" stopped: %s (%zu moved)", c->name,
				    plant_status_name(rc), moved);
	}
	free(c);
}

static int post_queue_redrive(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	struct plant_http_info info = {.struct_size = sizeof info};
	http_req_info(req, &info);
	char name[256];
	if (!split_tail(info.tail, "redrive", name, sizeof name))
		return http_req_reply_json(req, 404, NULL, "no route for POST %s", info.path);
	if (!bus_queue_find(site_bus(a->site), name))
		return http_req_reply_json(req, 404, NULL, "no queue \"%s\"", name);
	return post_host(a, req, name, redrive_run);
}

static int post_reload(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	char err[4096];
	log_info("reload asked through the admin API");
	if (a->hooks.reload(a->hooks.ud, err, sizeof err) != PLANT_OK)
		return http_req_reply_json(
			req, 400, json_pack("{s:s, s:b}", "error", err, "reloaded", 0), NULL);
	return http_req_reply_json(req, 200, json_pack("{s:b}", "reloaded", 1), NULL);
}

static int status_http(int rc)
{
	switch (rc) {
	case PLANT_E_EXISTS:
	case PLANT_E_STATE:
		return 409;
	case PLANT_E_NOTFOUND:
		return 404;
	case PLANT_E_CONFIG:
	case PLANT_E_PLUGIN:
	case PLANT_E_INVALID:
	case PLANT_E_ABI:
		return 400;
	default:
		return 500;
	}
}

/* POST /v1/plugins {"name", "module", "config", "required"}: plantctl load */
static int post_plugins(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	struct plant_http_info info = {.struct_size = sizeof info};
	http_req_info(req, &info);
	json_error_t jerr;
	json_t *entry = info.body_len ? json_loadb(info.body, info.body_len, 0, &jerr) : NULL;
	if (!entry)
		return http_req_reply_json(
			req, 400, NULL,
			"the body must be a JSON object: {\"name\": ..., \"module\": ..., \"config\": {...}}");
	char err[4096];
	int rc = a->hooks.load(a->hooks.ud, entry, err, sizeof err);
	const char *name = json_string_value(json_object_get(entry, "name"));
	if (rc != PLANT_OK) {
		log_warn("load refused: %s", err);
		json_decref(entry);
		return http_req_reply_json(req, status_http(rc), NULL, "%s", err);
	}
	json_t *answer = json_pack("{s:s}", "loaded", name);
	struct instance *inst = site_find(a->site, name);
	if (inst && inst->mod)
		json_object_set_new(
			answer, "version",
			json_string(inst->mod->desc->version ? inst->mod->desc->version : ""));
	json_decref(entry);
	return http_req_reply_json(req, 201, answer, NULL);
}

/* DELETE /v1/plugins/NAME: plantctl unload */
static int delete_plugin(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	struct plant_http_info info = {.struct_size = sizeof info};
	http_req_info(req, &info);
	char err[4096];
	int rc = a->hooks.unload(a->hooks.ud, info.tail, err, sizeof err);
	if (rc != PLANT_OK)
		return http_req_reply_json(req, status_http(rc), NULL, "%s", err);
	return http_req_reply_json(req, 200, json_pack("{s:s}", "unloaded", info.tail), NULL);
}

/* POST /v1/deployments {"bundle", "instance", "grace", "by"}: plantctl deploy */
static int post_deployment(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	struct plant_http_info info = {.struct_size = sizeof info};
	http_req_info(req, &info);
	json_error_t jerr;
	json_t *body = info.body_len ? json_loadb(info.body, info.body_len, 0, &jerr) : NULL;
	if (!json_is_object(body)) {
		json_decref(body);
		return http_req_reply_json(
			req, 400, NULL,
			"the body must be a JSON object: {\"bundle\": PATH, \"instance\": NAME}");
	}
	char err[4096];
	json_t *rec = NULL;
	int rc = deploy_start(a->hooks.deploy, body, &rec, err, sizeof err);
	json_decref(body);
	if (rc == PLANT_OK)
		return http_req_reply_json(req, 201, rec, NULL);
	json_t *answer = json_pack("{s:s}", "error", err);
	if (rec)
		json_object_set_new(answer, "deployment", rec);
	return http_req_reply_json(req, rc == PLANT_E_NOTFOUND ? 404 : status_http(rc), answer,
				   NULL);
}

static int get_deployments(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	return http_req_reply_json(
		req, 200, json_pack("{s:o}", "deployments", deploy_list(a->hooks.deploy)), NULL);
}

static int get_deployment(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	struct plant_http_info info = {.struct_size = sizeof info};
	http_req_info(req, &info);
	json_t *rec = deploy_get(a->hooks.deploy, info.tail);
	if (!rec)
		return http_req_reply_json(req, 404, NULL, "no deployment \"%s\"", info.tail);
	return http_req_reply_json(req, 200, rec, NULL);
}

/* POST /v1/plugins/NAME/rollback: plantctl rollback */
static int post_plugin_action(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	struct plant_http_info info = {.struct_size = sizeof info};
	http_req_info(req, &info);
	char name[256];
	if (!split_tail(info.tail, "rollback", name, sizeof name))
		return http_req_reply_json(req, 404, NULL, "no route for POST %s", info.path);
	char err[4096];
	json_t *rec = NULL;
	int rc = deploy_rollback(a->hooks.deploy, name, "asked through the admin API", &rec, err,
				 sizeof err);
	if (rc != PLANT_OK)
		return http_req_reply_json(req, status_http(rc), NULL, "%s", err);
	return http_req_reply_json(req, 200, rec, NULL);
}

/* ---- tail ----------------------------------------------------------------------------------- */

struct tap {
	struct admin *a;
	struct tap *next;
	plant_http_req *req;
	struct actor actor;
	uint64_t sub;
	bool live; /* subscribed, actor up */
	atomic_ullong dropped;
};

static int tap_unused(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	return PLANT_OK;
}

/* [worker] messages for one tail: lines to the stream */
static void tap_dispatch(void *ctx, struct task *tasks, size_t n)
{
	struct tap *t = ctx;
	for (size_t i = 0; i < n; i++) {
		if (tasks[i].kind != TASK_MSG) {
			tasks[i].u.fn(tasks[i].target, ctx);
			continue;
		}
		const struct plant_msg *m = tasks[i].u.msg;
		char *attrs = m->attrs ? json_dumps(m->attrs, JSON_COMPACT) : NULL;
		char head[512];
		int hn = snprintf(head, sizeof head,
				  "{\"id\":\"%s\",\"topic\":\"%s\",\"ts\":%llu,\"body\":", m->id,
				  m->topic, (unsigned long long)m->ts);
		size_t len = (size_t)hn + m->len + strlen(attrs ? attrs : "null") + 20;
		char *line = malloc(len);
		if (line && hn > 0) {
			int k = snprintf(line, len, "%s%s,\"attributes\":%s}\n", head, m->text,
					 attrs ? attrs : "null");
			if (k > 0 && http_req_stream_chunk(t->req, line, (size_t)k,
							   TAIL_PENDING_MAX) == PLANT_E_FULL)
				atomic_fetch_add(&t->dropped, 1);
		}
		free(line);
		free(attrs);
		msg_unref(tasks[i].u.msg);
		bus_sub_unref(tasks[i].target);
	}
}

/* [main] no more messages for the tap */
static void tap_down(struct tap *t)
{
	if (!t->live)
		return;
	t->live = false;
	bus_unsubscribe_owner(site_bus(t->a->site), t);
	actor_wait_idle(&t->actor, clock_mono_ns() + 5000000000ull);
	actor_close(&t->actor);
	actor_fini(&t->actor);
	if (atomic_load(&t->dropped))
		log_info("tail: %llu messages dropped for a slow reader",
			 (unsigned long long)atomic_load(&t->dropped));
}

/* [main] the tail's client went */
static void tap_closed(void *ud)
{
	struct tap *t = ud;
	struct admin *a = t->a;
	tap_down(t);
	pthread_mutex_lock(&a->taps_lock);
	for (struct tap **pp = &a->taps; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
	pthread_mutex_unlock(&a->taps_lock);
	free(t);
}

static int get_topic_tail(void *ud, plant_http_req *req)
{
	struct admin *a = ud;
	struct plant_http_info info = {.struct_size = sizeof info};
	http_req_info(req, &info);
	char pattern[256];
	if (!split_tail(info.tail, "tail", pattern, sizeof pattern))
		return http_req_reply_json(req, 404, NULL, "no route for GET %s", info.path);
	if (!bus_pattern_valid(pattern))
		return http_req_reply_json(req, 400, NULL, "\"%s\" is not a topic name or pattern",
					   pattern);
	struct tap *t = calloc(1, sizeof *t);
	if (!t)
		return PLANT_E_NOMEM;
	t->a = a;
	t->req = req;
	actor_init(&t->actor, site_executor(a->site), tap_dispatch, t);
	int rc = bus_subscribe(site_bus(a->site), pattern, t, &t->actor, tap_unused, NULL, &t->sub);
	if (rc != PLANT_OK) {
		actor_fini(&t->actor);
		free(t);
		return rc;
	}
	t->live = true;
	rc = http_req_stream_start(req, "application/x-ndjson", tap_closed, t);
	if (rc != PLANT_OK) {
		tap_down(t);
		free(t);
		return rc;
	}
	pthread_mutex_lock(&a->taps_lock);
	t->next = a->taps;
	a->taps = t;
	pthread_mutex_unlock(&a->taps_lock);
	return PLANT_OK;
}

/* ---- setup ------------------------------------------------------------------------------------
 */

int admin_start(struct http *http, struct site *site, const struct admin_hooks *hooks,
		struct admin **out)
{
	*out = NULL;
	const char *l = http_admin_listener(http);
	if (!l)
		return PLANT_OK;
	struct admin *a = calloc(1, sizeof *a);
	if (!a)
		return PLANT_E_NOMEM;
	a->http = http;
	a->site = site;
	a->hooks = *hooks;
	a->listener = l;
	pthread_mutex_init(&a->taps_lock, NULL);
	static const struct {
		const char *method, *path;
		uint32_t flags;
		http_handler_fn fn;
	} routes[] = {
		{"GET", "/healthz", 0, get_healthz},
		{"GET", "/metrics", 0, get_metrics},
		{"GET", "/v1/plugins", 0, get_plugins},
		{"GET", "/v1/topics", 0, get_topics},
		{"GET", "/v1/queues", 0, get_queues},
		{"GET", "/v1/stores", 0, get_stores},
		{"POST", "/v1/reload", 0, post_reload},
		{"POST", "/v1/plugins", 0, post_plugins},
		{"DELETE", "/v1/plugins/", PLANT_ROUTE_PREFIX, delete_plugin},
		{"POST", "/v1/plugins/", PLANT_ROUTE_PREFIX, post_plugin_action},
		{"POST", "/v1/deployments", 0, post_deployment},
		{"GET", "/v1/deployments", 0, get_deployments},
		{"GET", "/v1/deployments/", PLANT_ROUTE_PREFIX, get_deployment},
		{"POST", "/v1/topics/", PLANT_ROUTE_PREFIX, post_topic},
		{"GET", "/v1/topics/", PLANT_ROUTE_PREFIX, get_topic_tail},
		{"GET", "/v1/queues/", PLANT_ROUTE_PREFIX, get_queue_messages},
		{"POST", "/v1/queues/", PLANT_ROUTE_PREFIX, post_queue_redrive},
	};
	for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
		int rc = http_route_add(http, l, routes[i].method, routes[i].path, routes[i].flags,
					a, routes[i].fn, a, NULL);
		if (rc) {
			http_routes_remove_owner(http, a);
			pthread_mutex_destroy(&a->taps_lock);
			free(a);
			return rc;
		}
	}
	*out = a;
	return PLANT_OK;
}

void admin_stop(struct admin *a)
{
	if (!a)
		return;
	http_routes_remove_owner(a->http, a);
	/* live tails stop taking messages; their connections close with the
	 * server, which frees them */
	pthread_mutex_lock(&a->taps_lock);
	for (struct tap *t = a->taps; t; t = t->next)
		tap_down(t);
	pthread_mutex_unlock(&a->taps_lock);
	/* health answers still waiting: answered with what they have */
	while (a->healths) {
		struct health *h = a->healths;
		event_del(h->timer);
		health_timeout(-1, 0, h);
	}
}

void admin_free(struct admin *a)
{
	if (!a)
		return;
	pthread_mutex_destroy(&a->taps_lock);
	free(a);
}
