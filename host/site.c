#include "site.h"

#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "clock.h"
#include "jsoncheck.h"
#include "jsonfields.h"
#include "log.h"
#include "metrics.h"
#include "msg.h"
#include "queue.h"
#include "store.h"
#include "http.h"
#include "httpc.h"
#include "plantd-build.h"

#define BATCH_MAX 256

#define TICK_MS 50

struct site {
	struct site_config *cfg;
	struct event *tick;
	struct stores *stores;
	bool stores_open;
	uint64_t ticks;
	atomic_bool expiring; /* an expiry pass is queued or running */
	/* the host's own work on the workers (queue ticks touch stores: never
	 * on the loop thread) */
	struct actor host_actor;
	bool host_actor_up;
	atomic_bool ticking; /* a queue tick is queued or running */
	char *default_path;
	struct event_base *base;
	struct bus *bus;
	struct executor *exec;
	struct instance **insts;
	size_t n;
	struct http *http;   /* listeners for plugin routes, or NULL */
	struct httpc *httpc; /* the HTTP client plugins call through */
	uint64_t started_ms;
	site_deploy_fn deploy; /* api->deploy(), or NULL */
	void *deploy_ud;
};

const uint64_t site_latency_bounds_us[SITE_LATENCY_BUCKETS] = {
	10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000, 250000, 1000000,
};

/* One handler call took `ns`. */
static void latency_note(struct instance *inst, uint64_t ns)
{
	uint64_t us = ns / 1000;
	size_t b = 0;
	while (b < SITE_LATENCY_BUCKETS && us > site_latency_bounds_us[b])
		b++;
	atomic_fetch_add_explicit(&inst->lat_count[b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&inst->lat_sum_ns, ns, memory_order_relaxed);
}

struct timer {
	uint64_t id;
	struct instance *inst;
	struct event *ev;
	uint64_t every_ms, jitter_ms;
	plant_timer_fn fn;
	void *user;
	atomic_bool pending; /* a tick waits in the mailbox */
	atomic_bool cancelled;
	atomic_uint refs;
	unsigned int seed;
	struct timer *next;
};

static struct instance *inst_of(plant_instance *p)
{
	return (struct instance *)p;
}

/* ---- specs ---------------------------------------------------------------- */

static struct instance_spec *spec_dup(const struct instance_spec *s)
{
	struct instance_spec *d = calloc(1, sizeof *d);
	d->name = strdup(s->name);
	d->module = strdup(s->module);
	d->required = s->required;
	d->settings = json_deep_copy(s->settings);
	d->lines = json_deep_copy(s->lines);
	d->files = json_deep_copy(s->files);
	d->file = strdup(s->file);
	d->line = s->line;
	return d;
}

static void spec_free(struct instance_spec *s)
{
	if (!s)
		return;
	free(s->name);
	free(s->module);
	json_decref(s->settings);
	json_decref(s->lines);
	json_decref(s->files);
	free(s->file);
	free(s);
}

/* ---- the plugin path ------------------------------------------------------ */

const char *site_default_plugin_path(void)
{
	static char path[PATH_MAX * 2 + 2];
	const char *env = getenv("PLANTD_PLUGIN_PATH");
	if (env && *env)
		return env;
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n > 0) {
		exe[n] = '\0';
		size_t root = strlen(PLANTD_BUILD_ROOT);
		if (strncmp(exe, PLANTD_BUILD_ROOT, root) == 0 && exe[root] == '/') {
			snprintf(path, sizeof path, "%s:%s/sdk/examples", PLANTD_BUILD_PLUGIN_DIR,
				 PLANTD_BUILD_ROOT);
			return path;
		}
	}
	return PLANTD_PLUGIN_DIR;
}

static char *plugin_path_for(const struct site_config *cfg, const char *default_path)
{
	char *p;
	if (cfg->plugin_path && *cfg->plugin_path) {
		if (asprintf(&p, "%s:%s", cfg->plugin_path, default_path) < 0)
			return NULL;
		return p;
	}
	return strdup(default_path);
}

/* ---- instances ------------------------------------------------------------ */

static void drop_task(struct task *t);
static void inst_dispatch(void *ctx, struct task *tasks, size_t n);

static void inst_free(struct instance *inst)
{
	if (!inst)
		return;
	if (inst->actor.exec)
		actor_fini(&inst->actor);
	metrics_free(inst->metrics);
	json_decref(inst->config);
	loader_close(inst->mod);
	spec_free(inst->spec);
	pthread_mutex_destroy(&inst->timers_lock);
	free(inst);
}

static int inst_fail(const struct instance *inst, const char *key, char *err, size_t errlen,
		     const char *fmt, ...) PLANT_PRINTF(5, 6);
static int inst_fail(const struct instance *inst, const char *key, char *err, size_t errlen,
		     const char *fmt, ...)
{
	char where[PATH_MAX + 32];
	instance_spec_where(inst->spec, key, where, sizeof where);
	int n = snprintf(err, errlen, "%s: instance \"%s\" (module %s): ", where, inst->spec->name,
			 inst->spec->module);
	if (n > 0 && (size_t)n < errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return PLANT_E_CONFIG;
}

/* Find and open the module, apply its key table, run its validate(). */
static int inst_prepare(struct site *site, const struct instance_spec *spec, const char *path,
			struct instance **out, char *err, size_t errlen)
{
	struct instance *inst = calloc(1, sizeof *inst);
	inst->site = site;
	inst->spec = spec_dup(spec);
	pthread_mutex_init(&inst->timers_lock, NULL);
	inst->metrics = metrics_new();
	inst->next_timer_id = 1;

	char file[PATH_MAX], why[1024];
	int rc = loader_find(path, spec->module, file, sizeof file, why, sizeof why);
	if (!rc)
		rc = loader_open(file, &inst->mod, why, sizeof why);
	if (rc) {
		inst_fail(inst, NULL, err, errlen, "%s", why);
		inst_free(inst);
		return PLANT_E_CONFIG;
	}
	const char *bad_key = NULL;
	rc = loader_apply_schema(inst->mod->desc, spec->settings, &inst->config, &bad_key, why,
				 sizeof why);
	if (rc) {
		inst_fail(inst, bad_key, err, errlen, "%s", why);
		inst_free(inst);
		return PLANT_E_CONFIG;
	}
	if (inst->mod->desc->validate) {
		rc = inst->mod->desc->validate((plant_instance *)inst, &host_api, inst->config);
		if (rc != PLANT_OK) {
			inst_fail(inst, inst->error_key[0] ? inst->error_key : NULL, err, errlen,
				  "%s", inst->error[0] ? inst->error : plant_status_name(rc));
			inst_free(inst);
			return PLANT_E_CONFIG;
		}
	}
	inst->error[0] = inst->error_key[0] = '\0';
	*out = inst;
	return PLANT_OK;
}

static void timers_clear(struct instance *inst);

/* Remove what the host holds on the instance's behalf, so nothing new
 * reaches it. */
static void inst_detach(struct instance *inst)
{
	bus_unsubscribe_owner(inst->site->bus, inst);
	timers_clear(inst);
	http_routes_remove_owner(inst->site->http, inst);
}

static int inst_init(struct instance *inst, char *err, size_t errlen)
{
	struct site *site = inst->site;
	actor_init(&inst->actor, site->exec, inst_dispatch, inst);
	pthread_mutex_lock(&inst->actor.call_lock);
	void *state = NULL;
	int rc = inst->mod->desc->init((plant_instance *)inst, &host_api, inst->config, &state);
	/* before the lock goes: a delivery init() caused may be waiting for it,
	 * and must find the state and the instance's new standing */
	if (rc == PLANT_OK) {
		inst->state = state;
		inst->st = INST_INITIALISED;
	} else {
		inst->st = INST_FAILED;
	}
	pthread_mutex_unlock(&inst->actor.call_lock);
	if (rc != PLANT_OK) {
		inst_detach(inst);
		inst_fail(inst, inst->error_key[0] ? inst->error_key : NULL, err, errlen,
			  "init failed: %s", inst->error[0] ? inst->error : plant_status_name(rc));
		return rc ? rc : PLANT_E_PLUGIN;
	}
	log_write(PLANT_LOG_DEBUG, inst->spec->name, "initialised (module %s %s)",
		  inst->mod->desc->name, inst->mod->desc->version ? inst->mod->desc->version : "");
	return PLANT_OK;
}

static int inst_start(struct instance *inst, char *err, size_t errlen)
{
	int rc = PLANT_OK;
	if (inst->mod->desc->start) {
		pthread_mutex_lock(&inst->actor.call_lock);
		rc = inst->mod->desc->start(inst->state);
		pthread_mutex_unlock(&inst->actor.call_lock);
	}
	if (rc != PLANT_OK) {
		inst_fail(inst, NULL, err, errlen, "start failed: %s",
			  inst->error[0] ? inst->error : plant_status_name(rc));
		return rc;
	}
	inst->st = INST_RUNNING;
	log_write(PLANT_LOG_INFO, inst->spec->name, "started (module %s %s)", inst->mod->desc->name,
		  inst->mod->desc->version ? inst->mod->desc->version : "");
	return PLANT_OK;
}

/* Stop taking work, let in-flight calls finish within the shutdown timeout,
 * call stop(). Returns false when the instance did not finish in time; it is
 * then abandoned (never entered again, its module kept loaded). */
static bool inst_stop(struct instance *inst)
{
	if (inst->st != INST_RUNNING && inst->st != INST_INITIALISED && inst->st != INST_FAILED)
		return true;
	bool was_up = inst->st != INST_FAILED;
	/* nothing new from here: a callback still running cannot subscribe,
	 * consume or add a timer (it gets PLANT_E_STATE) */
	atomic_store(&inst->stopping, true);
	inst_detach(inst);
	uint64_t deadline = clock_mono_ns() + inst->site->cfg->shutdown_timeout_ms * 1000000u;
	/* HTTP calls in flight end now (PLANT_E_STATE); their answers wait in
	 * the mailbox with the rest */
	httpc_cancel_owner(inst->site->httpc, inst);
	while (atomic_load(&inst->http_calls) > 0 && clock_mono_ns() < deadline)
		usleep(1000);
	bool idle = actor_wait_idle(&inst->actor, deadline);
	actor_close(&inst->actor);
	if (!idle) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		if (pthread_mutex_timedlock(&inst->actor.call_lock, &ts) != 0) {
			log_write(PLANT_LOG_ERROR, inst->spec->name,
				  "still busy %llu ms after stop was asked; abandoned",
				  (unsigned long long)inst->site->cfg->shutdown_timeout_ms);
			inst->st = INST_STOPPED;
			return false;
		}
		pthread_mutex_unlock(&inst->actor.call_lock);
	}
	if (was_up && inst->mod->desc->stop) {
		pthread_mutex_lock(&inst->actor.call_lock);
		inst->mod->desc->stop(inst->state);
		pthread_mutex_unlock(&inst->actor.call_lock);
	}
	/* what raced with the first detach */
	inst_detach(inst);
	if (was_up)
		log_write(PLANT_LOG_INFO, inst->spec->name, "stopped (%llu handled, %llu errors)",
			  (unsigned long long)atomic_load(&inst->handled),
			  (unsigned long long)atomic_load(&inst->errors));
	inst->st = was_up ? INST_STOPPED : INST_FAILED;
	return true;
}

static void inst_destroy(struct instance *inst, bool abandoned)
{
	if (abandoned) {
		/* a callback still runs: leave its memory and module alone */
		return;
	}
	if (inst->state && inst->mod->desc->destroy)
		inst->mod->desc->destroy(inst->state);
	inst->state = NULL;
	inst_free(inst);
}

/* ---- delivery --------------------------------------------------------------- */

static void timer_unref(struct timer *t)
{
	if (atomic_fetch_sub(&t->refs, 1) != 1)
		return;
	if (t->ev)
		event_free(t->ev);
	free(t);
}

static void drop_task(struct task *t)
{
	if (t->kind == TASK_MSG) {
		msg_unref(t->u.msg);
		bus_sub_unref(t->target);
	} else {
		t->u.fn(t->target, NULL);
	}
}

static void deliver_batch(struct instance *inst, struct bus_sub *sub, const plant_msg **msgs,
			  size_t n)
{
	if (atomic_load(&sub->dead) || (inst->st != INST_RUNNING && inst->st != INST_INITIALISED))
		return;
	uint64_t t0 = clock_mono_ns();
	int rc = sub->fn(inst->state, msgs, n, sub->user);
	latency_note(inst, clock_mono_ns() - t0);
	atomic_fetch_add(&inst->handled, n);
	if (rc != PLANT_OK) {
		uint64_t e = atomic_fetch_add(&inst->errors, 1) + 1;
		/* one line for the 1st, 2nd, 4th, 8th... failure: visible, not a flood */
		if ((e & (e - 1)) == 0)
			log_write(PLANT_LOG_WARN, inst->spec->name,
				  "handler for \"%s\" failed: %s%s%s (%llu failures so far)",
				  sub->pattern, plant_status_name(rc), inst->error[0] ? ": " : "",
				  inst->error, (unsigned long long)e);
	}
}

/* [worker] can the instance take a queue batch now? */
static bool site_ready(void *actor_ctx)
{
	const struct instance *inst = actor_ctx;
	return inst->st == INST_RUNNING || inst->st == INST_INITIALISED;
}

/* [worker] how the bus enters an instance for a queue batch */
static int site_invoke(void *actor_ctx, plant_msg_handler fn, const plant_msg *const *msgs,
		       size_t n, void *user)
{
	struct instance *inst = actor_ctx;
	if (inst->st != INST_RUNNING && inst->st != INST_INITIALISED)
		return -1;
	uint64_t t0 = clock_mono_ns();
	int rc = fn(inst->state, msgs, n, user);
	latency_note(inst, clock_mono_ns() - t0);
	atomic_fetch_add(&inst->handled, n);
	if (rc != PLANT_OK) {
		uint64_t e = atomic_fetch_add(&inst->errors, 1) + 1;
		if ((e & (e - 1)) == 0)
			log_write(PLANT_LOG_WARN, inst->spec->name,
				  "queue handler failed: %s%s%s (%llu failures so far)",
				  plant_status_name(rc), inst->error[0] ? ": " : "", inst->error,
				  (unsigned long long)e);
	}
	return rc < 0 ? PLANT_E_PLUGIN : rc;
}

static void inst_dispatch(void *ctx, struct task *tasks, size_t n)
{
	struct instance *inst = ctx;
	const plant_msg *batch[BATCH_MAX];
	size_t i = 0;
	while (i < n) {
		if (tasks[i].kind == TASK_CALL) {
			tasks[i].u.fn(tasks[i].target, inst);
			i++;
			continue;
		}
		struct bus_sub *sub = tasks[i].target;
		size_t k = 0, j = i;
		while (j < n && k < BATCH_MAX && tasks[j].kind == TASK_MSG &&
		       tasks[j].target == sub)
			batch[k++] = (const plant_msg *)tasks[j++].u.msg;
		deliver_batch(inst, sub, batch, k);
		for (size_t x = i; x < j; x++) {
			msg_unref(tasks[x].u.msg);
			bus_sub_unref(tasks[x].target);
		}
		i = j;
	}
}

/* ---- timers ----------------------------------------------------------------- */

static void timer_arm(struct timer *t)
{
	uint64_t ms = t->every_ms;
	if (t->jitter_ms)
		ms += (uint64_t)rand_r(&t->seed) % (t->jitter_ms + 1);
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
			     .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	event_add(t->ev, &tv);
}

/* [worker] the tick, under the instance's actor; inst is NULL when the task
 * was dropped. */
static void timer_run(void *arg, void *actor_ctx)
{
	struct timer *t = arg;
	struct instance *inst = actor_ctx;
	atomic_store(&t->pending, false);
	if (inst && !atomic_load(&t->cancelled) && inst->st == INST_RUNNING)
		t->fn(inst->state, t->user);
	timer_unref(t);
}

/* [loop] */
static void timer_fire(evutil_socket_t fd, short what, void *arg)
{
	struct timer *t = arg;
	if (atomic_load(&t->cancelled))
		return;
	if (!atomic_exchange(&t->pending, true)) {
		atomic_fetch_add(&t->refs, 1);
		struct task task = {.kind = TASK_CALL, .target = t, .u.fn = timer_run};
		if (!actor_post(&t->inst->actor, &task)) {
			atomic_store(&t->pending, false);
			timer_unref(t);
			return;
		}
	}
	timer_arm(t);
}

static void timer_remove(struct timer *t)
{
	atomic_store(&t->cancelled, true);
	event_del(t->ev);
	timer_unref(t);
}

static void timers_clear(struct instance *inst)
{
	pthread_mutex_lock(&inst->timers_lock);
	struct timer *t = inst->timers;
	inst->timers = NULL;
	pthread_mutex_unlock(&inst->timers_lock);
	while (t) {
		struct timer *next = t->next;
		timer_remove(t);
		t = next;
	}
}

/* ---- the host API ------------------------------------------------------------ */

static void api_log(plant_instance *self, int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vwrite(level, self ? inst_of(self)->spec->name : NULL, fmt, ap);
	va_end(ap);
}

static void api_error(plant_instance *self, const char *key, const char *fmt, ...)
{
	struct instance *inst = inst_of(self);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(inst->error, sizeof inst->error, fmt, ap);
	va_end(ap);
	snprintf(inst->error_key, sizeof inst->error_key, "%s", key ? key : "");
}

/* The bus, or NULL where the instance may not use it: in validate() (no
 * actor yet; under --check no bus at all) or once it is stopping. */
static struct bus *bus_of(const struct instance *inst)
{
	if (!inst->site || !inst->actor.exec || atomic_load(&inst->stopping))
		return NULL;
	return inst->site->bus;
}

static int publish_msg(struct instance *inst, struct plant_msg *msg)
{
	if (!msg)
		return PLANT_E_NOMEM;
	if (!bus_of(inst)) {
		msg_unref(msg);
		return PLANT_E_STATE;
	}
	int rc = bus_publish(inst->site->bus, msg);
	if (rc == PLANT_OK)
		metrics_counter_add(inst->metrics, "published", 1);
	return rc;
}

static int api_publish(plant_instance *self, const char *topic, json_t *body)
{
	if (!body)
		return PLANT_E_INVALID;
	if (!bus_topic_valid(topic)) {
		json_decref(body);
		return PLANT_E_INVALID;
	}
	return publish_msg(inst_of(self), msg_new_json(topic, body));
}

static int api_publish_text(plant_instance *self, const char *topic, const char *json, size_t len)
{
	if (!json || !bus_topic_valid(topic))
		return PLANT_E_INVALID;
	/* checked once here so that no reader ever meets a broken body */
	if (!json_text_valid(json, len))
		return PLANT_E_INVALID;
	return publish_msg(inst_of(self), msg_new_text(topic, json, len));
}

static int api_subscribe(plant_instance *self, const char *pattern, plant_msg_handler fn,
			 void *user, uint64_t *sub_out)
{
	struct instance *inst = inst_of(self);
	if (!inst->actor.exec || !bus_of(inst))
		return PLANT_E_STATE; /* not from validate(), not once stopping */
	return bus_subscribe(inst->site->bus, pattern, inst, &inst->actor, fn, user, sub_out);
}

static int api_unsubscribe(plant_instance *self, uint64_t sub)
{
	struct instance *inst = inst_of(self);
	if (!inst->site || !inst->site->bus)
		return PLANT_E_STATE;
	return bus_unsubscribe(inst->site->bus, inst, sub);
}

static int api_timer_add(plant_instance *self, uint64_t every_ms, uint64_t jitter_ms,
			 plant_timer_fn fn, void *user, uint64_t *timer_out)
{
	struct instance *inst = inst_of(self);
	if (!fn || every_ms == 0)
		return PLANT_E_INVALID;
	if (!inst->actor.exec || !inst->site->base || atomic_load(&inst->stopping))
		return PLANT_E_STATE;
	struct timer *t = calloc(1, sizeof *t);
	if (!t)
		return PLANT_E_NOMEM;
	t->inst = inst;
	t->every_ms = every_ms;
	t->jitter_ms = jitter_ms;
	t->fn = fn;
	t->user = user;
	t->seed = (unsigned int)clock_mono_ns();
	atomic_init(&t->refs, 1);
	t->ev = event_new(inst->site->base, -1, 0, timer_fire, t);
	if (!t->ev) {
		free(t);
		return PLANT_E_NOMEM;
	}
	pthread_mutex_lock(&inst->timers_lock);
	t->id = inst->next_timer_id++;
	t->next = inst->timers;
	inst->timers = t;
	pthread_mutex_unlock(&inst->timers_lock);
	timer_arm(t);
	if (timer_out)
		*timer_out = t->id;
	return PLANT_OK;
}

static int api_timer_cancel(plant_instance *self, uint64_t id)
{
	struct instance *inst = inst_of(self);
	pthread_mutex_lock(&inst->timers_lock);
	struct timer **pp = &inst->timers, *t = NULL;
	while (*pp && (*pp)->id != id)
		pp = &(*pp)->next;
	if (*pp) {
		t = *pp;
		*pp = t->next;
	}
	pthread_mutex_unlock(&inst->timers_lock);
	if (!t)
		return PLANT_E_NOTFOUND;
	timer_remove(t);
	return PLANT_OK;
}

static int api_counter_add(plant_instance *self, const char *name, uint64_t delta)
{
	return metrics_counter_add(inst_of(self)->metrics, name, delta);
}

static int api_gauge_set(plant_instance *self, const char *name, double value)
{
	return metrics_gauge_set(inst_of(self)->metrics, name, value);
}

static const json_t *api_config(plant_instance *self)
{
	return inst_of(self)->config;
}

static const char *api_instance_name(plant_instance *self)
{
	return inst_of(self)->spec->name;
}

static const char *api_site_name(plant_instance *self)
{
	struct instance *inst = inst_of(self);
	return inst->site ? inst->site->cfg->site : "";
}

static const char *api_data_dir(plant_instance *self)
{
	struct instance *inst = inst_of(self);
	return inst->site ? inst->site->cfg->data_dir : ".";
}

static uint64_t api_now_ms(plant_instance *self)
{
	return clock_now_ms();
}

static const char *api_msg_id(const plant_msg *m)
{
	return msg_resolve(m)->id;
}

static const char *api_msg_topic(const plant_msg *m)
{
	return msg_resolve(m)->topic;
}

static uint64_t api_msg_ts(const plant_msg *m)
{
	return msg_resolve(m)->ts;
}

static const char *api_msg_body_text(const plant_msg *dm, size_t *len_out)
{
	const struct plant_msg *m = msg_resolve(dm);
	if (len_out)
		*len_out = m->len;
	return m->text;
}

static int api_msg_fields(const plant_msg *dm, const char *const *keys, size_t n,
			  struct plant_field *out)
{
	const struct plant_msg *m = msg_resolve(dm);
	if (!m || !keys || !out)
		return PLANT_E_INVALID;
	return json_fields(m->text, m->len, keys, n, out);
}

static const json_t *api_msg_body(const plant_msg *m)
{
	return msg_tree(msg_resolve(m));
}

static const char *api_msg_attr(const plant_msg *dm, const char *name)
{
	const struct plant_msg *m = msg_resolve(dm);
	return m->attrs ? json_string_value(json_object_get(m->attrs, name)) : NULL;
}

static uint32_t api_msg_receive_count(const plant_msg *m)
{
	if (m->kind == MSG_KIND_DELIVERY)
		return ((const struct delivery *)(const void *)m)->receive_count;
	return m->receive_count;
}

/* A message from a plant_publish; the body is taken (stolen) either way. */
static int msg_from_publish(struct plant_publish *p, struct plant_msg **out)
{
	*out = NULL;
	if (!p || p->struct_size < offsetof(struct plant_publish, id_out)) {
		if (p)
			json_decref(p->body);
		return PLANT_E_INVALID;
	}
	json_t *body = p->body;
	p->body = NULL;
	if (!bus_topic_valid(p->topic) || (!body && !p->text) ||
	    (p->attributes && !json_is_object(p->attributes))) {
		json_decref(body);
		return PLANT_E_INVALID;
	}
	struct plant_msg *m;
	if (body) {
		m = msg_new_json(p->topic, body);
	} else {
		if (!json_text_valid(p->text, p->text_len))
			return PLANT_E_INVALID;
		m = msg_new_text(p->topic, p->text, p->text_len);
	}
	if (!m)
		return PLANT_E_NOMEM;
	if (p->attributes) {
		const char *k;
		json_t *v;
		json_object_foreach((json_t *)p->attributes, k, v)
		{
			if (!json_is_string(v)) {
				msg_unref(m);
				return PLANT_E_INVALID;
			}
		}
		m->attrs = json_deep_copy(p->attributes);
	}
	if (p->struct_size >= offsetof(struct plant_publish, id_out) + sizeof p->id_out)
		snprintf(p->id_out, sizeof p->id_out, "%s", m->id);
	*out = m;
	return PLANT_OK;
}

static int api_publish_ex(plant_instance *self, struct plant_publish *p)
{
	struct plant_msg *m;
	int rc = msg_from_publish(p, &m);
	if (rc)
		return rc;
	struct instance *inst = inst_of(self);
	if (!bus_of(inst)) {
		msg_unref(m);
		return PLANT_E_STATE;
	}
	rc = bus_publish_ex(inst->site->bus, m, p->dedup_key, p->delay_ms);
	if (rc == PLANT_OK)
		metrics_counter_add(inst->metrics, "published", 1);
	return rc;
}

static int publish_many(plant_instance *self, struct plant_publish *items, size_t n, bool all,
			size_t *done_out, size_t *failed_out)
{
	struct instance *inst = inst_of(self);
	struct plant_msg **msgs = calloc(n ? n : 1, sizeof *msgs);
	const char **keys = calloc(n ? n : 1, sizeof *keys);
	uint64_t *delays = calloc(n ? n : 1, sizeof *delays);
	int rc = msgs && keys && delays ? PLANT_OK : PLANT_E_NOMEM;
	if (!rc && !bus_of(inst))
		rc = PLANT_E_STATE;
	size_t made = 0;
	for (size_t i = 0; i < n; i++) {
		if (rc) { /* every body is stolen, even after a failure */
			json_decref(items[i].body);
			items[i].body = NULL;
			continue;
		}
		rc = msg_from_publish(&items[i], &msgs[made]);
		if (rc) {
			if (failed_out)
				*failed_out = i;
			continue;
		}
		keys[made] = items[i].dedup_key;
		delays[made] = items[i].delay_ms;
		made++;
	}
	size_t done = 0;
	if (rc && all) { /* nothing of it, then */
		for (size_t i = 0; i < made; i++)
			msg_unref(msgs[i]);
		made = 0;
	}
	int prc = made ? bus_publish_batch(inst->site->bus, msgs, keys, delays, made, all, &done)
		       : PLANT_OK;
	if (!rc)
		rc = prc;
	if (done)
		metrics_counter_add(inst->metrics, "published", done);
	if (done_out)
		*done_out = done;
	free(msgs);
	free(keys);
	free(delays);
	return rc;
}

static int api_publish_batch(plant_instance *self, struct plant_publish *items, size_t n,
			     size_t *done_out)
{
	return publish_many(self, items, n, false, done_out, NULL);
}

static int api_publish_all(plant_instance *self, struct plant_publish *items, size_t n,
			   size_t *failed_out)
{
	if (failed_out)
		*failed_out = 0;
	return publish_many(self, items, n, true, NULL, failed_out);
}

static int api_queue_declare(plant_instance *self, const char *name, const json_t *settings)
{
	struct instance *inst = inst_of(self);
	if (!bus_of(inst))
		return PLANT_E_STATE;
	if (json_is_true(json_object_get(settings, "durable"))) {
		/* a durable queue belongs to the site: it must be there at start to
		 * read back what it kept */
		api_error(self, NULL, "queue %s: durable queues are declared in the site config",
			  name ? name : "");
		return PLANT_E_UNSUPPORTED;
	}
	const char *dl = json_string_value(json_object_get(settings, "dead_letter"));
	if (dl && !bus_queue_find(inst->site->bus, dl)) {
		api_error(self, "dead_letter", "queue %s: dead_letter \"%s\" is not a queue",
			  name ? name : "", dl);
		return PLANT_E_NOTFOUND;
	}
	char err[512];
	json_t *empty = settings ? NULL : json_object();
	int rc = bus_queue_declare(inst->site->bus, name, settings ? settings : empty, err,
				   sizeof err);
	json_decref(empty);
	if (rc == PLANT_OK)
		rc = bus_link_dead_letters(inst->site->bus, err, sizeof err);
	if (rc != PLANT_OK)
		api_error(self, NULL, "%s", err);
	return rc;
}

static int api_consume(plant_instance *self, const char *queue, plant_msg_handler fn, void *user,
		       uint32_t max_batch, uint64_t *consumer_out)
{
	struct instance *inst = inst_of(self);
	if (!inst->actor.exec || !bus_of(inst))
		return PLANT_E_STATE;
	return bus_consume(inst->site->bus, queue, inst, &inst->actor, fn, user, max_batch,
			   consumer_out);
}

static int api_ack(plant_instance *self, const plant_msg *msg)
{
	return bus_ack(msg);
}

static int api_nack(plant_instance *self, const plant_msg *msg, uint64_t delay_ms,
		    const char *reason)
{
	return bus_nack(msg, delay_ms, reason);
}

static int api_reject(plant_instance *self, const plant_msg *msg, const char *reason)
{
	(void)self;
	return bus_reject(msg, reason);
}

static const plant_msg *api_hold(plant_instance *self, const plant_msg *msg)
{
	(void)self;
	return bus_hold(msg);
}

static void api_release(plant_instance *self, const plant_msg *held)
{
	(void)self;
	bus_release(held);
}

static int api_queue_room(plant_instance *self, const char *queue, uint64_t *room_out)
{
	struct instance *inst = inst_of(self);
	if (!inst->site || !inst->site->bus || !room_out)
		return PLANT_E_STATE;
	struct queue *q = queue ? bus_queue_find(inst->site->bus, queue) : NULL;
	if (!q)
		return PLANT_E_NOTFOUND;
	*room_out = queue_room(q);
	return PLANT_OK;
}

static json_t *api_bus_stats(plant_instance *self)
{
	struct instance *inst = inst_of(self);
	return inst->site && inst->site->bus ? bus_stats_json(inst->site->bus) : NULL;
}

static int api_store_register(plant_instance *self, const char *kind,
			      const struct plant_store_backend *backend, void *backend_state)
{
	struct instance *inst = inst_of(self);
	char err[512];
	if (!inst->site || !inst->site->stores || inst->st != INST_NEW)
		return PLANT_E_STATE; /* from init() only */
	int rc = stores_register_kind(inst->site->stores, kind, backend, backend_state, inst, err,
				      sizeof err);
	if (rc != PLANT_OK)
		api_error(self, NULL, "%s", err);
	return rc;
}

static int store_of(plant_instance *self, uint32_t id, struct store_ref *ref)
{
	struct instance *inst = inst_of(self);
	if (!inst->site || !inst->site->stores)
		return PLANT_E_STATE;
	return stores_ref(inst->site->stores, id, ref);
}

static int key_ok(const char *key, size_t len)
{
	return key && len >= 1 && len <= 1024;
}

static int api_store_open(plant_instance *self, const char *name, uint32_t *store_out)
{
	struct instance *inst = inst_of(self);
	if (!inst->site || !inst->site->stores || !store_out)
		return PLANT_E_STATE;
	return stores_find(inst->site->stores, name, store_out);
}

static int api_store_get(plant_instance *self, uint32_t store, const char *key, size_t key_len,
			 json_t **value_out, uint64_t *version_out)
{
	struct store_ref r;
	int rc = store_of(self, store, &r);
	if (rc)
		return rc;
	if (!key_ok(key, key_len) || !value_out)
		return PLANT_E_INVALID;
	uint64_t version = 0;
	rc = r.be->get(r.h, key, key_len, clock_now_ms(), value_out, &version);
	if (version_out)
		*version_out = version;
	return rc;
}

static int api_store_put(plant_instance *self, uint32_t store, const char *key, size_t key_len,
			 json_t *value, int cond, uint64_t version, uint64_t ttl_ms,
			 uint64_t *version_out)
{
	struct store_ref r;
	int rc = store_of(self, store, &r);
	if (!rc && (!key_ok(key, key_len) || !value || cond < PLANT_PUT_ANY ||
		    cond > PLANT_PUT_IF_VERSION))
		rc = PLANT_E_INVALID;
	uint64_t v = 0;
	if (!rc)
		rc = r.be->put(r.h, key, key_len, value, cond, version, ttl_ms, clock_now_ms(), &v);
	json_decref(value);
	if (!rc && version_out)
		*version_out = v;
	return rc;
}

static int api_store_delete(plant_instance *self, uint32_t store, const char *key, size_t key_len,
			    int cond, uint64_t version)
{
	struct store_ref r;
	int rc = store_of(self, store, &r);
	if (rc)
		return rc;
	if (!key_ok(key, key_len))
		return PLANT_E_INVALID;
	return r.be->del(r.h, key, key_len, cond, version, clock_now_ms());
}

static int api_store_scan(plant_instance *self, uint32_t store, const char *prefix,
			  size_t prefix_len, const char *after, size_t after_len, size_t limit,
			  json_t **items_out)
{
	struct store_ref r;
	int rc = store_of(self, store, &r);
	if (rc)
		return rc;
	if (!items_out || (prefix_len && !prefix) || (after_len && !after))
		return PLANT_E_INVALID;
	return r.be->scan(r.h, prefix ? prefix : "", prefix_len, after, after_len, limit,
			  clock_now_ms(), items_out);
}

static int api_store_batch(plant_instance *self, uint32_t store, const struct plant_store_op *ops,
			   size_t n, size_t *failed_out)
{
	struct store_ref r;
	int rc = store_of(self, store, &r);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		if (!key_ok(ops[i].key, ops[i].key_len) ||
		    (!ops[i].is_delete && !ops[i].value && !ops[i].value_text)) {
			if (failed_out)
				*failed_out = i;
			return PLANT_E_INVALID;
		}
	}
	size_t failed = 0;
	int atomic = 0;
	rc = r.be->batch(r.h, ops, n, clock_now_ms(), &failed, &atomic);
	if (failed_out)
		*failed_out = failed;
	return rc;
}

/* ---- the HTTP client ----------------------------------------------------------- */

struct call_ctx {
	struct instance *inst;
	plant_http_done done;
	void *user;
	struct plant_http_result *res; /* the copy for the worker */
};

/* [worker, under the instance's actor] or dropped (NULL) while stopping */
static void call_task(void *arg, void *actor_ctx)
{
	struct call_ctx *cc = arg;
	struct instance *inst = cc->inst;
	if (!actor_ctx || !inst->state)
		cc->res->status = PLANT_E_STATE;
	if (inst->state)
		cc->done(inst->state, cc->res, cc->user);
	httpc_result_free(cc->res);
	free(cc);
}

/* [client thread] */
static void call_finished(void *ud, struct plant_http_result *res)
{
	struct call_ctx *cc = ud;
	struct instance *inst = cc->inst;
	cc->res = httpc_result_copy(res);
	if (!cc->res) {
		log_write(PLANT_LOG_ERROR, inst->spec->name,
			  "out of memory: the answer to an HTTP call is lost");
		free(cc);
	} else {
		struct task t = {.kind = TASK_CALL, .target = cc, .u.fn = call_task};
		if (!actor_post(&inst->actor, &t))
			call_task(cc, NULL);
	}
	atomic_fetch_sub(&inst->http_calls, 1);
}

static int api_http_call(plant_instance *self, const struct plant_http_call *call,
			 plant_http_done done, void *user)
{
	struct instance *inst = inst_of(self);
	if (!done)
		return PLANT_E_INVALID;
	atomic_fetch_add(&inst->http_calls, 1);
	if (atomic_load(&inst->stopping)) {
		atomic_fetch_sub(&inst->http_calls, 1);
		return PLANT_E_STATE;
	}
	struct call_ctx *cc = calloc(1, sizeof *cc);
	char why[512] = "";
	int rc = cc ? PLANT_OK : PLANT_E_NOMEM;
	if (cc) {
		*cc = (struct call_ctx){.inst = inst, .done = done, .user = user};
		rc = httpc_submit(inst->site->httpc, inst, call, call_finished, cc, why,
				  sizeof why);
	}
	if (rc != PLANT_OK) {
		free(cc);
		atomic_fetch_sub(&inst->http_calls, 1);
		if (why[0])
			api_error(self, NULL, "%s", why);
	}
	return rc;
}

struct waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	struct plant_http_result *res;
};

static void wait_finished(void *ud, struct plant_http_result *res)
{
	struct waiter *w = ud;
	struct plant_http_result *copy = httpc_result_copy(res);
	pthread_mutex_lock(&w->lock);
	w->res = copy;
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static int api_http_call_wait(plant_instance *self, const struct plant_http_call *call,
			      struct plant_http_result **out)
{
	struct instance *inst = inst_of(self);
	if (!out)
		return PLANT_E_INVALID;
	*out = NULL;
	if (httpc_on_thread(inst->site->httpc))
		return PLANT_E_STATE;
	struct waiter w = {.done = false};
	pthread_mutex_init(&w.lock, NULL);
	pthread_cond_init(&w.cond, NULL);
	char why[512] = "";
	int rc = httpc_submit(inst->site->httpc, inst, call, wait_finished, &w, why, sizeof why);
	if (rc == PLANT_OK) {
		pthread_mutex_lock(&w.lock);
		while (!w.done)
			pthread_cond_wait(&w.cond, &w.lock);
		pthread_mutex_unlock(&w.lock);
		*out = w.res;
		rc = w.res ? w.res->status : PLANT_E_NOMEM;
	} else if (why[0]) {
		api_error(self, NULL, "%s", why);
	}
	pthread_cond_destroy(&w.cond);
	pthread_mutex_destroy(&w.lock);
	return rc;
}

static void api_http_result_free(struct plant_http_result *res)
{
	httpc_result_free(res);
}

static const char *api_http_result_header(const struct plant_http_result *res, const char *name)
{
	return httpc_result_header(res, name);
}

/* ---- HTTP routes ------------------------------------------------------------- */

struct inst_route {
	struct instance *inst;
	plant_http_handler fn;
	void *user;
	uint32_t flags;
};

struct route_call {
	struct inst_route *ir;
	plant_http_req *req;
};

static bool inst_serves(const struct instance *inst)
{
	return inst->st == INST_RUNNING && !atomic_load(&inst->stopping);
}

static void route_failed(struct instance *inst, plant_http_req *req, int rc)
{
	if (rc == PLANT_E_STATE)
		http_req_reply_json(req, 503, NULL, "instance \"%s\" is not running now",
				    inst->spec->name);
	else
		http_req_reply_json(req, 500, NULL, "instance \"%s\": %s%s%s", inst->spec->name,
				    plant_status_name(rc), inst->error[0] ? ": " : "", inst->error);
}

/* [worker, under the instance's actor] */
static void route_task(void *arg, void *actor_ctx)
{
	struct route_call *c = arg;
	struct instance *inst = c->ir->inst;
	int rc = PLANT_E_STATE;
	if (actor_ctx && inst_serves(inst)) {
		uint64_t t0 = clock_mono_ns();
		rc = c->ir->fn(inst->state, c->req, c->ir->user);
		latency_note(inst, clock_mono_ns() - t0);
		atomic_fetch_add(&inst->handled, 1);
		if (rc != PLANT_OK)
			atomic_fetch_add(&inst->errors, 1);
	}
	if (rc != PLANT_OK)
		route_failed(inst, c->req, rc); /* refused when it replied already */
	http_req_unref(c->req);
	free(c);
}

/* [listener thread] a request for one of the instance's routes */
static int route_enter(void *ud, plant_http_req *req)
{
	struct inst_route *ir = ud;
	struct instance *inst = ir->inst;
	if (!inst_serves(inst))
		return PLANT_E_STATE;
	if (ir->flags & PLANT_ROUTE_CONCURRENT) {
		uint64_t t0 = clock_mono_ns();
		int rc = ir->fn(inst->state, req, ir->user);
		latency_note(inst, clock_mono_ns() - t0);
		atomic_fetch_add(&inst->handled, 1);
		if (rc != PLANT_OK) {
			atomic_fetch_add(&inst->errors, 1);
			http_req_ref(req);
			route_failed(inst, req, rc);
			http_req_unref(req);
		}
		return PLANT_OK;
	}
	struct route_call *c = malloc(sizeof *c);
	if (!c)
		return PLANT_E_NOMEM;
	c->ir = ir;
	c->req = req;
	http_req_ref(req);
	struct task t = {.kind = TASK_CALL, .target = c, .u.fn = route_task};
	if (!actor_post(&inst->actor, &t)) {
		http_req_unref(req);
		free(c);
		return PLANT_E_STATE;
	}
	return PLANT_OK;
}

static int api_http_route(plant_instance *self, const char *listener, const char *method,
			  const char *path, uint32_t flags, plant_http_handler fn, void *user)
{
	struct instance *inst = inst_of(self);
	if (atomic_load(&inst->stopping))
		return PLANT_E_STATE;
	if (!fn)
		return PLANT_E_INVALID;
	if (!inst->site->http)
		return PLANT_E_NOTFOUND;
	struct inst_route *ir = malloc(sizeof *ir);
	if (!ir)
		return PLANT_E_NOMEM;
	*ir = (struct inst_route){.inst = inst, .fn = fn, .user = user, .flags = flags};
	int rc = http_route_add(inst->site->http, listener, method, path, flags, inst, route_enter,
				ir, free);
	if (rc)
		free(ir);
	else
		log_write(PLANT_LOG_DEBUG, inst->spec->name, "serves %s %s%s on listener \"%s\"",
			  method, path, flags & PLANT_ROUTE_PREFIX ? "*" : "", listener);
	return rc;
}

static int api_http_request(const plant_http_req *req, struct plant_http_info *out)
{
	return http_req_info(req, out);
}

static const char *api_http_header(const plant_http_req *req, const char *name)
{
	return http_req_header(req, name);
}

static int api_http_reply(plant_http_req *req, int status, const char *content_type,
			  const char *body, size_t len, const char *const *headers)
{
	return http_req_reply(req, status, content_type, body, len, headers);
}

static int api_deploy(plant_instance *self, const json_t *request, plant_deploy_done done,
		      void *user)
{
	struct instance *inst = (struct instance *)self;
	struct site *site = inst->site;
	if (!json_is_object(request) || !done)
		return PLANT_E_INVALID;
	const char *target = json_string_value(json_object_get(request, "instance"));
	if (!target) {
		log_write(PLANT_LOG_ERROR, inst->spec->name,
			  "deploy refused: the request names no \"instance\"");
		return PLANT_E_INVALID;
	}
	if (strcmp(target, inst->spec->name) == 0) {
		log_write(PLANT_LOG_ERROR, inst->spec->name,
			  "an instance cannot deploy over itself");
		return PLANT_E_INVALID;
	}
	const json_t *allowed =
		site->cfg->deploy ? json_object_get(site->cfg->deploy, "plugins") : NULL;
	bool ok = false;
	size_t i;
	json_t *e;
	json_array_foreach(allowed, i, e) if (strcmp(json_string_value(e), inst->spec->name) == 0)
		ok = true;
	if (!ok) {
		log_write(PLANT_LOG_ERROR, inst->spec->name,
			  "deploy refused: this instance is not in the site's deploy.plugins");
		return PLANT_E_STATE;
	}
	if (!site->deploy || atomic_load(&inst->stopping))
		return PLANT_E_STATE;
	return site->deploy(site->deploy_ud, inst, request, done, user);
}

void site_set_deploy(struct site *site, site_deploy_fn fn, void *ud)
{
	site->deploy = fn;
	site->deploy_ud = ud;
}

const struct plant_host_api host_api = {
	.struct_size = sizeof(struct plant_host_api),
	.abi_major = PLANT_ABI_MAJOR,
	.abi_minor = PLANT_ABI_MINOR,
	.log = api_log,
	.error = api_error,
	.publish = api_publish,
	.publish_text = api_publish_text,
	.subscribe = api_subscribe,
	.unsubscribe = api_unsubscribe,
	.timer_add = api_timer_add,
	.timer_cancel = api_timer_cancel,
	.counter_add = api_counter_add,
	.gauge_set = api_gauge_set,
	.config = api_config,
	.instance_name = api_instance_name,
	.site_name = api_site_name,
	.data_dir = api_data_dir,
	.now_ms = api_now_ms,
	.msg_id = api_msg_id,
	.msg_topic = api_msg_topic,
	.msg_ts = api_msg_ts,
	.msg_body_text = api_msg_body_text,
	.msg_body = api_msg_body,
	.msg_attr = api_msg_attr,
	.msg_receive_count = api_msg_receive_count,
	.publish_ex = api_publish_ex,
	.queue_declare = api_queue_declare,
	.consume = api_consume,
	.ack = api_ack,
	.nack = api_nack,
	.queue_room = api_queue_room,
	.bus_stats = api_bus_stats,
	.store_register = api_store_register,
	.store_open = api_store_open,
	.store_get = api_store_get,
	.store_put = api_store_put,
	.store_delete = api_store_delete,
	.store_scan = api_store_scan,
	.store_batch = api_store_batch,
	.publish_batch = api_publish_batch,
	.hold = api_hold,
	.release = api_release,
	.reject = api_reject,
	.msg_fields = api_msg_fields,
	.http_route = api_http_route,
	.http_request = api_http_request,
	.http_header = api_http_header,
	.http_reply = api_http_reply,
	.publish_all = api_publish_all,
	.http_call = api_http_call,
	.http_call_wait = api_http_call_wait,
	.http_result_free = api_http_result_free,
	.http_result_header = api_http_result_header,
	.deploy = api_deploy,
};

/* ---- the site ------------------------------------------------------------------ */

static int add_backend_instances(struct site_config *cfg, char *err, size_t errlen);

/* The queues of a config: good settings, dead-letter queues that exist and
 * chains of them that end. Errors name the file and line. */
static int queues_check(const struct site_config *cfg, char *err, size_t errlen)
{
	char where[PATH_MAX + 32], why[512];
	for (size_t i = 0; i < cfg->n_queues; i++) {
		const struct instance_spec *q = &cfg->queues[i];
		struct queue_settings qs;
		const char *bad = NULL;
		if (!bus_topic_valid(q->name)) {
			snprintf(err, errlen, "%s: bad queue name \"%s\"",
				 instance_spec_where(q, NULL, where, sizeof where), q->name);
			return PLANT_E_CONFIG;
		}
		if (bus_queue_parse(q->settings, &qs, &bad, why, sizeof why) != PLANT_OK) {
			snprintf(err, errlen, "%s: queue \"%s\": %s",
				 instance_spec_where(q, bad, where, sizeof where), q->name, why);
			return PLANT_E_CONFIG;
		}
		const json_t *dl = json_object_get(q->settings, "dead_letter");
		const struct instance_spec *x = q;
		for (size_t hops = 0; dl; hops++) {
			x = config_find_queue(cfg, json_string_value(dl));
			if (!x) {
				snprintf(
					err, errlen,
					"%s: queue \"%s\": dead_letter \"%s\" is not a queue of this site",
					instance_spec_where(q, "dead_letter", where, sizeof where),
					q->name, json_string_value(dl));
				return PLANT_E_CONFIG;
			}
			if (x == q || hops > cfg->n_queues) {
				snprintf(
					err, errlen,
					"%s: queue \"%s\": its dead-letter queues form a cycle (back to \"%s\")",
					instance_spec_where(q, "dead_letter", where, sizeof where),
					q->name, x->name);
				return PLANT_E_CONFIG;
			}
			dl = json_object_get(x->settings, "dead_letter");
		}
		if (qs.store[0] && !config_find_store(cfg, qs.store)) {
			snprintf(err, errlen,
				 "%s: queue \"%s\": store \"%s\" is not a store of this site",
				 instance_spec_where(q, "store", where, sizeof where), q->name,
				 qs.store);
			return PLANT_E_CONFIG;
		}
	}
	return PLANT_OK;
}

/* Durable queues go onto their stores and read back what they kept. */
static int queues_attach_stores(struct site *site, char *err, size_t errlen)
{
	for (size_t i = 0; i < site->cfg->n_queues; i++) {
		const struct instance_spec *spec = &site->cfg->queues[i];
		struct queue *q = bus_queue_find(site->bus, spec->name);
		const struct queue_settings *qs = q ? queue_settings_get(q) : NULL;
		if (!qs || !qs->durable || queue_has_store(q))
			continue;
		uint32_t id;
		struct store_ref ref;
		if (stores_find(site->stores, qs->store, &id) ||
		    stores_ref(site->stores, id, &ref)) {
			snprintf(err, errlen, "queue %s: store \"%s\" is not open", spec->name,
				 qs->store);
			return PLANT_E_CONFIG;
		}
		queue_set_store(q, ref.be, ref.h);
		size_t loaded = 0;
		char why[512];
		int rc = queue_load(q, clock_now_ms(), &loaded, why, sizeof why);
		if (rc == PLANT_E_INVALID) {
			log_error("%s", why); /* kept in the store; the site runs on */
		} else if (rc) {
			snprintf(err, errlen, "%s", why);
			return rc;
		}
		log_info("queue \"%s\": durable on store \"%s\", %zu messages read back",
			 spec->name, qs->store, loaded);
	}
	return PLANT_OK;
}

/* Create (or update) the config's queues; queues_check() passed. */
static int queues_apply(struct site *site, const struct site_config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->n_queues; i++) {
		int rc = bus_queue_declare(site->bus, cfg->queues[i].name, cfg->queues[i].settings,
					   err, errlen);
		if (rc)
			return rc;
	}
	return bus_link_dead_letters(site->bus, err, errlen);
}

#define EXPIRE_EVERY_TICKS (10000 / TICK_MS)

/* [worker] TTL expiry, on a store backend's actor so the loop never waits
 * for a disk; actor_ctx is NULL when the task was dropped. */
static void expire_stores(void *arg, void *actor_ctx)
{
	struct site *site = arg;
	if (actor_ctx && site->stores_open) {
		size_t n = stores_expire_all(site->stores, clock_now_ms());
		if (n)
			log_debug("expired %zu store items", n);
	}
	atomic_store(&site->expiring, false);
}

static void host_dispatch(void *ctx, struct task *tasks, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (tasks[i].kind == TASK_CALL)
			tasks[i].u.fn(tasks[i].target, ctx);
}

/* [worker] visibility timeouts, delays, retention, waiting messages, and
 * the durable writes they cause */
static void run_tick(void *arg, void *actor_ctx)
{
	struct site *site = arg;
	if (actor_ctx)
		bus_tick(site->bus, clock_now_ms());
	atomic_store(&site->ticking, false);
}

/* [loop] the queue tick goes to a worker (one at a time); every 10 s, store
 * expiry */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct site *site = arg;
	if (!atomic_exchange(&site->ticking, true)) {
		struct task t = {.kind = TASK_CALL, .target = site, .u.fn = run_tick};
		if (!actor_post(&site->host_actor, &t))
			atomic_store(&site->ticking, false);
	}
	if (++site->ticks % EXPIRE_EVERY_TICKS || !site->stores_open ||
	    atomic_exchange(&site->expiring, true))
		return;
	for (size_t i = 0; i < site->n; i++) {
		struct instance *inst = site->insts[i];
		if (inst->st == INST_RUNNING && stores_owner_serves(site->stores, inst)) {
			struct task t = {.kind = TASK_CALL, .target = site, .u.fn = expire_stores};
			if (actor_post(&inst->actor, &t))
				return;
		}
	}
	atomic_store(&site->expiring, false);
}

int site_check(const struct site_config *cfg, const char *default_plugin_path, char *err,
	       size_t errlen)
{
	int qrc = queues_check(cfg, err, errlen);
	if (!qrc)
		qrc = http_check(cfg, err, errlen);
	if (!qrc)
		qrc = add_backend_instances((struct site_config *)cfg, err, errlen);
	if (qrc)
		return qrc;
	char *path = plugin_path_for(cfg, default_plugin_path);
	struct site tmp = {.cfg = (struct site_config *)cfg};
	int rc = PLANT_OK;
	for (size_t i = 0; i < cfg->n_instances && !rc; i++) {
		struct instance *inst;
		rc = inst_prepare(&tmp, &cfg->instances[i], path, &inst, err, errlen);
		if (!rc)
			inst_free(inst);
	}
	free(path);
	return rc;
}

static int make_dirs(const char *dir, char *err, size_t errlen)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof buf, "%s", dir);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		mkdir(buf, 0755);
		*p = '/';
	}
	if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "data_dir %s: cannot create: %s", dir, strerror(errno));
		return PLANT_E_IO;
	}
	if (access(buf, W_OK) != 0) {
		snprintf(err, errlen, "data_dir %s: not writable: %s", dir, strerror(errno));
		return PLANT_E_IO;
	}
	return PLANT_OK;
}

static void stop_all(struct site *site, bool *abandoned)
{
	for (size_t i = site->n; i-- > 0;)
		abandoned[i] = !inst_stop(site->insts[i]);
}

static void destroy_all(struct site *site, const bool *abandoned)
{
	for (size_t i = site->n; i-- > 0;) {
		/* stores close before the backends that serve them go */
		if (site->stores_open && stores_owner_serves(site->stores, site->insts[i])) {
			stores_close_all(site->stores);
			site->stores_open = false;
		}
		inst_destroy(site->insts[i], abandoned && abandoned[i]);
	}
	free(site->insts);
	site->insts = NULL;
	site->n = 0;
}

static bool is_backend(const struct instance *inst)
{
	return strncmp(inst->spec->module, "store_", 6) == 0;
}

static int init_one(struct site *site, struct instance *inst, bool fatal, char *err, size_t errlen)
{
	char why[2048];
	if (inst->st != INST_NEW || inst_init(inst, why, sizeof why) == PLANT_OK)
		return PLANT_OK;
	if (fatal && inst->spec->required) {
		snprintf(err, errlen, "%s", why);
		return PLANT_E_PLUGIN;
	}
	log_write(PLANT_LOG_ERROR, inst->spec->name, "%s%s", why,
		  inst->spec->required ? "" : " (required = false: the site runs on)");
	return PLANT_OK;
}

/* Bring up new instances: store backends first, then the site's stores,
 * then every other init(), then every start(), in config order. A required
 * instance failing is fatal when `fatal`; otherwise it is logged and kept as
 * failed. */
static int bring_up(struct site *site, bool fatal, char *err, size_t errlen)
{
	char why[2048];
	for (size_t i = 0; i < site->n; i++)
		if (is_backend(site->insts[i]) &&
		    init_one(site, site->insts[i], fatal, err, errlen))
			return PLANT_E_PLUGIN;
	if (!site->stores_open) {
		int rc = stores_open_all(site->stores, site->cfg, site->cfg->data_dir, err, errlen);
		if (rc)
			return rc;
		site->stores_open = true;
		rc = queues_attach_stores(site, err, errlen);
		if (rc)
			return rc;
	}
	for (size_t i = 0; i < site->n; i++)
		if (!is_backend(site->insts[i]) &&
		    init_one(site, site->insts[i], fatal, err, errlen))
			return PLANT_E_PLUGIN;
	for (size_t i = 0; i < site->n; i++) {
		struct instance *inst = site->insts[i];
		if (inst->st != INST_INITIALISED)
			continue;
		if (inst_start(inst, why, sizeof why) == PLANT_OK)
			continue;
		/* stop() is not called after a failed start(): destroy() is */
		inst->st = INST_FAILED;
		inst_stop(inst);
		if (fatal && inst->spec->required) {
			snprintf(err, errlen, "%s", why);
			return PLANT_E_PLUGIN;
		}
		log_write(PLANT_LOG_ERROR, inst->spec->name, "%s", why);
	}
	return PLANT_OK;
}

/* Every store's backend module runs as an instance (named after the module
 * unless the site configures one), placed first. */
static int add_backend_instances(struct site_config *cfg, char *err, size_t errlen)
{
	char where[PATH_MAX + 32];
	for (size_t i = 0; i < cfg->n_stores; i++) {
		const struct instance_spec *st = &cfg->stores[i];
		const char *kind = json_string_value(json_object_get(st->settings, "backend"));
		bool ok = kind && *kind && strlen(kind) < 64;
		for (const char *p = kind; ok && *p; p++)
			ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';
		if (!ok) {
			snprintf(
				err, errlen,
				"%s: store \"%s\": 'backend' must name a store kind, e.g. \"sqlite\" or \"memory\"",
				instance_spec_where(st, "backend", where, sizeof where), st->name);
			return PLANT_E_CONFIG;
		}
		char module[80];
		stores_module_for(kind, module, sizeof module);
		bool have = false;
		for (size_t j = 0; j < cfg->n_instances && !have; j++)
			have = strcmp(cfg->instances[j].module, module) == 0;
		if (have)
			continue;
		if (config_find_instance(cfg, module)) {
			snprintf(
				err, errlen,
				"%s: store \"%s\": its backend would run as instance \"%s\", a name the site uses for another module",
				instance_spec_where(st, "backend", where, sizeof where), st->name,
				module);
			return PLANT_E_CONFIG;
		}
		struct instance_spec *v =
			realloc(cfg->instances, (cfg->n_instances + 1) * sizeof *cfg->instances);
		if (!v)
			return PLANT_E_NOMEM;
		cfg->instances = v;
		memmove(&cfg->instances[1], &cfg->instances[0],
			cfg->n_instances * sizeof *cfg->instances);
		cfg->n_instances++;
		cfg->instances[0] = (struct instance_spec){
			.name = strdup(module),
			.module = strdup(module),
			.required = 1,
			.settings = json_object(),
			.lines = json_object(),
			.files = json_object(),
			.file = strdup(st->file),
			.line = st->line,
		};
	}
	return PLANT_OK;
}

int site_create(struct site_config *cfg, const char *default_plugin_path, struct event_base *base,
		struct site **out, char *err, size_t errlen)
{
	return site_create_http(cfg, default_plugin_path, base, NULL, out, err, errlen);
}

int site_create_http(struct site_config *cfg, const char *default_plugin_path,
		     struct event_base *base, struct http *http, struct site **out, char *err,
		     size_t errlen)
{
	struct site *site = calloc(1, sizeof *site);
	site->cfg = cfg;
	site->http = http;
	site->started_ms = clock_now_ms();
	int hrc = httpc_create(cfg->aws, &site->httpc, err, errlen);
	if (hrc) {
		free(site);
		config_free(cfg);
		return hrc;
	}
	site->base = base;
	site->default_path = strdup(default_plugin_path);
	int rc = make_dirs(cfg->data_dir, err, errlen);
	if (rc)
		goto fail;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	int workers = cfg->workers ? cfg->workers : (int)(cores > 0 ? cores : 1);
	if (bus_create(&site->bus) || executor_create(workers, drop_task, &site->exec)) {
		snprintf(err, errlen, "cannot start the bus and workers: out of resources");
		rc = PLANT_E_NOMEM;
		goto fail;
	}
	bus_set_invoke(site->bus, site_invoke, site_ready);
	actor_init(&site->host_actor, site->exec, host_dispatch, site);
	site->host_actor_up = true;
	site->stores = stores_new();
	rc = queues_check(cfg, err, errlen);
	if (!rc)
		rc = add_backend_instances(cfg, err, errlen);
	if (!rc)
		rc = queues_apply(site, cfg, err, errlen);
	if (rc)
		goto fail;
	if (base) {
		site->tick = event_new(base, -1, EV_PERSIST, on_tick, site);
		struct timeval tv = {.tv_sec = 0, .tv_usec = TICK_MS * 1000};
		if (site->tick)
			event_add(site->tick, &tv);
	}
	char *path = plugin_path_for(cfg, default_plugin_path);
	site->insts = calloc(cfg->n_instances ? cfg->n_instances : 1, sizeof *site->insts);
	for (size_t i = 0; i < cfg->n_instances; i++) {
		rc = inst_prepare(site, &cfg->instances[i], path, &site->insts[site->n], err,
				  errlen);
		if (rc)
			break;
		site->n++;
	}
	free(path);
	if (!rc)
		rc = bring_up(site, true, err, errlen);
	if (rc) {
		bool *ab = calloc(site->n + 1, sizeof *ab);
		stop_all(site, ab);
		destroy_all(site, ab);
		free(ab);
		goto fail;
	}
	log_info("site \"%s\" up: %zu instances, %d workers, data in %s", cfg->site, site->n,
		 executor_workers(site->exec), cfg->data_dir);
	*out = site;
	return PLANT_OK;
fail:
	if (site->tick)
		event_free(site->tick);
	httpc_destroy(site->httpc);
	executor_destroy(site->exec);
	if (site->host_actor_up)
		actor_fini(&site->host_actor);
	stores_free(site->stores);
	bus_destroy(site->bus);
	free(site->default_path);
	free(site);
	config_free(cfg);
	return rc;
}

void site_destroy(struct site *site)
{
	if (!site)
		return;
	bool *ab = calloc(site->n + 1, sizeof *ab);
	stop_all(site, ab);
	/* workers finish what runs, then exit: nothing calls a plugin after */
	executor_destroy(site->exec);
	/* after the stores' users, before the stores (a backend may call out
	 * until it is closed: destroy_all closes them below) */
	actor_fini(&site->host_actor);
	bus_flush_all(site->bus);
	destroy_all(site, ab);
	free(ab);
	if (site->tick)
		event_free(site->tick);
	bus_destroy(site->bus);
	stores_free(site->stores);
	httpc_destroy(site->httpc);
	config_free(site->cfg);
	free(site->default_path);
	free(site);
}

int site_reload(struct site *site, struct site_config *cfg, char *err, size_t errlen)
{
	bool *keep = calloc(site->n + 1, sizeof *keep);
	char *path = plugin_path_for(cfg, site->default_path);
	int rc = PLANT_OK;

	/* 1. Check everything that changes before touching anything. */
	rc = queues_check(cfg, err, errlen);
	if (!rc)
		rc = http_check(cfg, err, errlen);
	if (!rc)
		rc = add_backend_instances(cfg, err, errlen);
	/* counted after the backends' instances were added */
	size_t n_new = cfg->n_instances;
	struct instance **next = calloc(n_new + 1, sizeof *next);
	for (size_t i = 0; i < site->n && !rc; i++) {
		struct instance *old = site->insts[i];
		const struct instance_spec *now = config_find_instance(cfg, old->spec->name);
		if (stores_owner_serves(site->stores, old) &&
		    (!now || !instance_spec_equal(old->spec, now))) {
			snprintf(
				err, errlen,
				"instance \"%s\" serves the site's stores: it cannot change or go on a reload; restart plantd",
				old->spec->name);
			rc = PLANT_E_CONFIG;
		}
	}
	bool stores_same = cfg->n_stores == site->cfg->n_stores;
	for (size_t i = 0; i < cfg->n_stores && stores_same; i++)
		stores_same = instance_spec_equal(&cfg->stores[i], &site->cfg->stores[i]);
	if (!rc && !stores_same)
		log_warn("reload: changes to 'stores' take effect at the next start");
	for (size_t i = 0; i < n_new && !rc; i++) {
		const struct instance_spec *spec = &cfg->instances[i];
		struct instance *old = NULL;
		size_t oi = 0;
		for (; oi < site->n; oi++)
			if (strcmp(site->insts[oi]->spec->name, spec->name) == 0) {
				old = site->insts[oi];
				break;
			}
		if (old && old->st == INST_RUNNING && instance_spec_equal(old->spec, spec)) {
			next[i] = old;
			keep[oi] = true;
			continue;
		}
		rc = inst_prepare(site, spec, path, &next[i], err, errlen);
	}
	free(path);
	if (rc) {
		for (size_t i = 0; i < n_new; i++)
			if (next[i] && next[i]->st == INST_NEW)
				inst_free(next[i]);
		free(next);
		free(keep);
		config_free(cfg);
		return PLANT_E_CONFIG;
	}

	/* 2. Stop what goes away or changes, last first. */
	size_t stopped = 0, started = 0;
	for (size_t i = site->n; i-- > 0;) {
		if (keep[i])
			continue;
		struct instance *inst = site->insts[i];
		bool ok = inst_stop(inst);
		inst_destroy(inst, !ok);
		stopped++;
	}
	free(keep);
	free(site->insts);
	site->insts = next;
	site->n = n_new;

	/* the new globals that can change live */
	if (cfg->log_level >= 0)
		log_set_level(cfg->log_level);
	if (cfg->workers != site->cfg->workers || strcmp(cfg->data_dir, site->cfg->data_dir) != 0)
		log_warn("reload: 'workers' and 'data_dir' take effect at the next start");
	free(cfg->data_dir);
	cfg->data_dir = strdup(site->cfg->data_dir);
	cfg->workers = site->cfg->workers;
	config_free(site->cfg);
	site->cfg = cfg;

	/* 3. Queues (new ones, new settings), then what is new, in config
	 * order. Queues gone from the config stay until the next start: they
	 * may hold messages. */
	char qerr[512];
	if (queues_apply(site, cfg, qerr, sizeof qerr) != PLANT_OK ||
	    queues_attach_stores(site, qerr, sizeof qerr) != PLANT_OK)
		log_error("reload: %s", qerr);

	for (size_t i = 0; i < site->n; i++)
		if (site->insts[i]->st == INST_NEW)
			started++;
	bring_up(site, false, err, errlen);
	log_info("reload applied: %zu stopped, %zu started, %zu untouched", stopped, started,
		 site->n - started);
	return PLANT_OK;
}

/* Take slot i out of the site's list. */
static void site_forget_slot(struct site *site, size_t i)
{
	memmove(&site->insts[i], &site->insts[i + 1], (site->n - i - 1) * sizeof *site->insts);
	site->insts[--site->n] = NULL;
}

/* Take instance i out of the site's list and its config. */
static void site_forget(struct site *site, size_t i)
{
	config_remove_instance(site->cfg, site->insts[i]->spec->name);
	site_forget_slot(site, i);
}

int site_add(struct site *site, const struct instance_spec *spec, char *err, size_t errlen)
{
	if (site_find(site, spec->name)) {
		snprintf(err, errlen, "an instance named \"%s\" runs already", spec->name);
		return PLANT_E_EXISTS;
	}
	char *path = plugin_path_for(site->cfg, site->default_path);
	struct instance *inst = NULL;
	int rc = inst_prepare(site, spec, path, &inst, err, errlen);
	free(path);
	if (rc)
		return PLANT_E_CONFIG;
	struct instance **v = realloc(site->insts, (site->n + 2) * sizeof *v);
	rc = v ? config_add_instance(site->cfg, spec) : PLANT_E_NOMEM;
	if (rc != PLANT_OK) {
		if (v)
			site->insts = v;
		inst_free(inst);
		snprintf(err, errlen, "%s",
			 rc == PLANT_E_EXISTS ? "the site's config has an instance of that name"
					      : "out of memory");
		return rc;
	}
	site->insts = v;
	site->insts[site->n++] = inst;
	site->insts[site->n] = NULL;

	char why[2048];
	rc = inst_init(inst, why, sizeof why);
	if (rc == PLANT_OK) {
		rc = inst_start(inst, why, sizeof why);
		if (rc != PLANT_OK) /* stop() is not called after a failed start() */
			inst->st = INST_FAILED;
	}
	if (rc != PLANT_OK) {
		snprintf(err, errlen, "%s", why);
		bool ok = inst_stop(inst);
		site_forget(site, site->n - 1);
		inst_destroy(inst, !ok);
		return PLANT_E_PLUGIN;
	}
	return PLANT_OK;
}

/* Bring up a prepared instance: init() and start(). On failure it is
 * stopped and freed, and err says why. */
static int inst_bring_up_one(struct instance *inst, char *err, size_t errlen)
{
	int rc = inst_init(inst, err, errlen);
	if (rc == PLANT_OK) {
		rc = inst_start(inst, err, errlen);
		if (rc != PLANT_OK) /* stop() is not called after a failed start() */
			inst->st = INST_FAILED;
	}
	if (rc == PLANT_OK)
		return PLANT_OK;
	bool ok = inst_stop(inst);
	inst_destroy(inst, !ok);
	return PLANT_E_PLUGIN;
}

int site_replace(struct site *site, const struct instance_spec *spec, char *err, size_t errlen)
{
	size_t i = 0;
	while (i < site->n && strcmp(site->insts[i]->spec->name, spec->name) != 0)
		i++;
	if (i == site->n) {
		snprintf(err, errlen, "no instance named \"%s\"", spec->name);
		return PLANT_E_NOTFOUND;
	}
	struct instance *old = site->insts[i];
	if (stores_owner_serves(site->stores, old)) {
		snprintf(err, errlen,
			 "instance \"%s\" serves the site's stores: it cannot be replaced live",
			 spec->name);
		return PLANT_E_STATE;
	}
	/* 1. everything that can be checked, before touching the running one */
	char *path = plugin_path_for(site->cfg, site->default_path);
	struct instance *next = NULL;
	int rc = inst_prepare(site, spec, path, &next, err, errlen);
	free(path);
	if (rc)
		return PLANT_E_CONFIG;
	struct instance_spec *prev = spec_dup(old->spec);

	/* 2. drain the running one: nothing new reaches it, what it handles
	 * finishes; its queues keep what waits */
	bool ok = inst_stop(old);
	inst_destroy(old, !ok);
	site->insts[i] = next;

	/* 3. the new one on the same subscriptions and queues */
	char why[2048];
	rc = inst_bring_up_one(next, why, sizeof why);
	if (rc == PLANT_OK) {
		config_remove_instance(site->cfg, spec->name);
		config_add_instance(site->cfg, spec);
		spec_free(prev);
		log_info("instance \"%s\" replaced: module %s", spec->name, spec->module);
		return PLANT_OK;
	}
	/* 4. it failed: the previous version again, from its spec */
	path = plugin_path_for(site->cfg, site->default_path);
	struct instance *again = NULL;
	char why_again[2048];
	int rc2 = inst_prepare(site, prev, path, &again, why_again, sizeof why_again);
	free(path);
	if (rc2 == PLANT_OK)
		rc2 = inst_bring_up_one(again, why_again, sizeof why_again);
	spec_free(prev);
	if (rc2 == PLANT_OK) {
		site->insts[i] = again;
		snprintf(err, errlen, "%s; the previous version runs again", why);
		return PLANT_E_PLUGIN;
	}
	/* neither: the instance is gone from the site; say both */
	site_forget(site, i);
	snprintf(err, errlen, "%s; the previous version failed too: %s", why, why_again);
	log_error("instance \"%s\" is down: %s", spec->name, err);
	return PLANT_E_PLUGIN;
}

int site_remove(struct site *site, const char *name, char *err, size_t errlen)
{
	size_t i = 0;
	while (i < site->n && strcmp(site->insts[i]->spec->name, name) != 0)
		i++;
	if (i == site->n) {
		snprintf(err, errlen, "no instance named \"%s\"", name);
		return PLANT_E_NOTFOUND;
	}
	struct instance *inst = site->insts[i];
	if (stores_owner_serves(site->stores, inst)) {
		snprintf(err, errlen,
			 "instance \"%s\" serves the site's stores: it stays until plantd stops",
			 name);
		return PLANT_E_STATE;
	}
	bool ok = inst_stop(inst);
	site_forget(site, i);
	inst_destroy(inst, !ok);
	log_info("instance \"%s\" removed", name);
	return PLANT_OK;
}

size_t site_instance_count(const struct site *site)
{
	return site->n;
}

struct instance *site_instance(const struct site *site, size_t i)
{
	return i < site->n ? site->insts[i] : NULL;
}

struct instance *site_find(const struct site *site, const char *name)
{
	for (size_t i = 0; i < site->n; i++)
		if (strcmp(site->insts[i]->spec->name, name) == 0)
			return site->insts[i];
	return NULL;
}

struct bus *site_bus(const struct site *site)
{
	return site->bus;
}

const struct site_config *site_config(const struct site *site)
{
	return site->cfg;
}

bool site_wait_idle(struct site *site, uint64_t timeout_ms)
{
	uint64_t deadline = clock_mono_ns() + timeout_ms * 1000000u;
	for (size_t i = 0; i < site->n; i++)
		if (site->insts[i]->actor.exec &&
		    !actor_wait_idle(&site->insts[i]->actor, deadline))
			return false;
	return true;
}

struct executor *site_executor(const struct site *site)
{
	return site->exec;
}

int site_post_host(struct site *site, void (*fn)(void *arg, void *actor_ctx), void *arg)
{
	struct task t = {.kind = TASK_CALL, .target = arg, .u.fn = fn};
	return actor_post(&site->host_actor, &t) ? PLANT_OK : PLANT_E_STATE;
}

int site_post_instance(struct instance *inst, void (*fn)(void *arg, void *actor_ctx), void *arg)
{
	struct task t = {.kind = TASK_CALL, .target = arg, .u.fn = fn};
	return actor_post(&inst->actor, &t) ? PLANT_OK : PLANT_E_STATE;
}

json_t *site_stores_json(struct site *site)
{
	return site->stores_open ? stores_json(site->stores) : json_array();
}

uint64_t site_started_ms(const struct site *site)
{
	return site->started_ms;
}

struct event_base *site_event_base(const struct site *site)
{
	return site->base;
}

struct httpc *site_httpc(const struct site *site)
{
	return site->httpc;
}
