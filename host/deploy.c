#include "deploy.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "plantd/plantd.h"
#include "bundle.h"
#include "bus.h"
#include "clock.h"
#include "config.h"
#include "loader.h"
#include "log.h"
#include "statefile.h"
#include "msg.h"
#include "site.h"

#define DEFAULT_GRACE_MS 10000
#define WATCH_EVERY_MS	 250
#define HISTORY_MAX	 1000

/* One deployment in its grace period: its instance's health is asked on
 * the instance's worker; the answer is read at the next tick. */
struct watch {
	struct deploy *d;
	char id[64];
	char instance[256];
	struct event *ev;
	uint64_t until_ms;
	atomic_int refs;      /* the deploy's, and a health task's */
	atomic_int asking;    /* a health task is queued or running */
	atomic_int unhealthy; /* a health answer said no */
	char detail[512];     /* why, set before `unhealthy` */
	struct watch *next;
};

/* A plugin's deploy() on its way to the main loop, and its answer back. */
struct asked {
	struct deploy *d;
	struct instance *inst;
	json_t *request;
	plant_deploy_done done;
	void *user;
	int status;
	json_t *record;
	char error[2048];
	struct asked *next; /* on deploy->asked until the main loop takes it */
};

struct deploy {
	char *data_dir;
	char *state_path;   /* DATA_DIR/deployed.json */
	char *history_path; /* DATA_DIR/deployments.jsonl */
	json_t *deployed;   /* {NAME: override}, see deploy_merge() */
	json_t *history;    /* the records, oldest first */
	struct site *site;
	struct watch *watches;
	uint64_t seq;
	pthread_mutex_t asked_lock;
	struct asked *asked;
};

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) PLANT_PRINTF(4, 5);
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

static json_t *now_iso(void)
{
	uint64_t ms = clock_now_ms();
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&s, &tm);
	char buf[40];
	strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
	return json_sprintf("%s.%03uZ", buf, (unsigned)(ms % 1000));
}

/* ---- files ----------------------------------------------------------------------------------- */

static int save_state(struct deploy *d, char *err, size_t errlen)
{
	json_t *doc = json_pack("{s:O}", "instances", d->deployed);
	int rc = statefile_save(d->state_path, doc, err, errlen);
	json_decref(doc);
	return rc;
}

static void append_history(struct deploy *d, const json_t *rec)
{
	FILE *f = fopen(d->history_path, "a");
	if (!f || json_dumpf(rec, f, JSON_COMPACT) != 0 || fputc('\n', f) == EOF) {
		log_warn("cannot append to %s: %s", d->history_path, strerror(errno));
	}
	if (f)
		fclose(f);
}

static json_t *find_record(struct deploy *d, const char *id)
{
	size_t i;
	json_t *r;
	json_array_foreach(d->history, i, r) if (strcmp(json_string_value(json_object_get(r, "id")),
							id) == 0) return r;
	return NULL;
}

static void load_history(struct deploy *d)
{
	FILE *f = fopen(d->history_path, "r");
	if (!f)
		return;
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, f) > 0) {
		json_t *r = json_loads(line, 0, NULL);
		const char *id = json_string_value(json_object_get(r, "id"));
		if (!id) {
			json_decref(r);
			continue;
		}
		json_t *old = find_record(d, id);
		if (old)
			json_object_update(old, r);
		else
			json_array_append(d->history, r);
		json_decref(r);
	}
	free(line);
	fclose(f);
	while (json_array_size(d->history) > HISTORY_MAX)
		json_array_remove(d->history, 0);
}

int deploy_open(const char *data_dir, struct deploy **out, char *err, size_t errlen)
{
	*out = NULL;
	struct deploy *d = calloc(1, sizeof *d);
	if (!d)
		return fail(err, errlen, PLANT_E_NOMEM, "out of memory");
	d->data_dir = strdup(data_dir);
	pthread_mutex_init(&d->asked_lock, NULL);
	if (asprintf(&d->state_path, "%s/deployed.json", data_dir) < 0 ||
	    asprintf(&d->history_path, "%s/deployments.jsonl", data_dir) < 0) {
		deploy_free(d);
		return fail(err, errlen, PLANT_E_NOMEM, "out of memory");
	}
	d->history = json_array();
	json_error_t jerr;
	json_t *doc = json_load_file(d->state_path, 0, &jerr);
	if (!doc && access(d->state_path, F_OK) == 0) {
		fail(err, errlen, PLANT_E_CONFIG, "%s:%d: %s", d->state_path, jerr.line, jerr.text);
		deploy_free(d);
		return PLANT_E_CONFIG;
	}
	if (doc && !json_is_object(json_object_get(doc, "instances"))) {
		json_decref(doc);
		fail(err, errlen, PLANT_E_CONFIG, "%s: expected {\"instances\": {...}}",
		     d->state_path);
		deploy_free(d);
		return PLANT_E_CONFIG;
	}
	d->deployed = doc ? json_incref(json_object_get(doc, "instances")) : json_object();
	json_decref(doc);
	load_history(d);
	*out = d;
	return PLANT_OK;
}

/* ---- merge ----------------------------------------------------------------------------------- */

int deploy_merge(struct deploy *d, struct site_config *cfg, char *err, size_t errlen)
{
	const char *name;
	json_t *o;
	json_object_foreach(d->deployed, name, o)
	{
		struct instance_spec *spec = NULL;
		for (size_t i = 0; i < cfg->n_instances; i++)
			if (strcmp(cfg->instances[i].name, name) == 0)
				spec = &cfg->instances[i];
		if (!spec) {
			log_warn(
				"instance \"%s\" has a deployed version (%s) but the site no longer defines it",
				name, d->state_path);
			continue;
		}
		if (json_is_null(o))
			continue;
		const char *module = json_string_value(json_object_get(o, "module"));
		if (!module)
			return fail(err, errlen, PLANT_E_CONFIG,
				    "%s: instance \"%s\" without a module", d->state_path, name);
		free(spec->module);
		spec->module = strdup(module);
		json_t *conf = json_object_get(o, "config");
		if (json_is_object(conf))
			json_object_update(spec->settings, conf);
	}
	return PLANT_OK;
}

static int deploy_async(void *ud, struct instance *inst, const json_t *request,
			plant_deploy_done done, void *user);

void deploy_attach(struct deploy *d, struct site *site)
{
	d->site = site;
	site_set_deploy(site, deploy_async, d);
}

/* ---- events ---------------------------------------------------------------------------------- */

struct announce_task {
	struct bus *bus;
	struct plant_msg *msg;
};

static void announce_run(void *arg, void *actor_ctx)
{
	struct announce_task *t = arg;
	if (actor_ctx) {
		int rc = bus_publish(t->bus, t->msg); /* takes it */
		if (rc != PLANT_OK)
			log_warn("deploy event not published on " DEPLOY_TOPIC ": %s",
				 plant_status_name(rc));
	} else {
		msg_unref(t->msg);
	}
	free(t);
}

/* Record a step of `rec`: its state, the history file, the event. */
static void step(struct deploy *d, json_t *rec, const char *state, const char *reason)
{
	json_object_set_new(rec, "state", json_string(state));
	json_object_set_new(rec, "updated", now_iso());
	if (reason)
		json_object_set_new(rec, "reason", json_string(reason));
	json_t *steps = json_object_get(rec, "steps");
	json_t *s = json_pack("{s:s, s:o}", "state", state, "ts", now_iso());
	if (reason)
		json_object_set_new(s, "reason", json_string(reason));
	json_array_append_new(steps, s);
	append_history(d, rec);
	if (reason)
		log_write(strcmp(state, "refused") == 0 || strcmp(state, "rolled_back") == 0
				  ? PLANT_LOG_WARN
				  : PLANT_LOG_INFO,
			  json_string_value(json_object_get(rec, "instance")),
			  "deployment %s: %s: %s", json_string_value(json_object_get(rec, "id")),
			  state, reason);
	else
		log_write(PLANT_LOG_INFO, json_string_value(json_object_get(rec, "instance")),
			  "deployment %s: %s (version %s)",
			  json_string_value(json_object_get(rec, "id")), state,
			  json_string_value(json_object_get(rec, "version")));
	if (!d->site)
		return;
	json_t *ev = json_deep_copy(rec);
	json_object_del(ev, "steps");
	json_object_set_new(ev, "event", json_sprintf("deploy.%s", state));
	json_object_set_new(ev, "node", json_string(site_config(d->site)->site));
	struct announce_task *t = malloc(sizeof *t);
	struct plant_msg *m = msg_new_json(DEPLOY_TOPIC, ev); /* takes ev */
	if (!t || !m) {
		free(t);
		if (m)
			msg_unref(m);
		return;
	}
	*t = (struct announce_task){.bus = site_bus(d->site), .msg = m};
	if (site_post_host(d->site, announce_run, t) != PLANT_OK)
		announce_run(t, NULL);
}

/* ---- the watch ------------------------------------------------------------------------------- */

static void watch_unref(struct watch *w)
{
	if (atomic_fetch_sub(&w->refs, 1) != 1)
		return;
	if (w->ev)
		event_free(w->ev);
	free(w);
}

static void watch_remove(struct deploy *d, struct watch *w)
{
	for (struct watch **pp = &d->watches; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	event_del(w->ev);
	watch_unref(w);
}

/* [worker, under the instance's actor] */
static void health_run(void *arg, void *actor_ctx)
{
	struct watch *w = arg;
	struct instance *inst = actor_ctx;
	int rc = PLANT_OK;
	json_t *detail = NULL;
	if (!inst || inst->st != INST_RUNNING || !inst->state)
		rc = PLANT_E_STATE;
	else if (inst->mod->desc->health)
		rc = inst->mod->desc->health(inst->state, &detail);
	if (rc != PLANT_OK) {
		char *text = detail ? json_dumps(detail, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		snprintf(w->detail, sizeof w->detail, "health failed: %s%s%s",
			 plant_status_name(rc), text ? ": " : "", text ? text : "");
		free(text);
		atomic_store(&w->unhealthy, 1);
	}
	json_decref(detail);
	atomic_store(&w->asking, 0);
	watch_unref(w);
}

static int rollback(struct deploy *d, const char *name, const char *why, json_t **rec_out,
		    char *err, size_t errlen);

static void watch_tick(evutil_socket_t fd, short what, void *arg)
{
	struct watch *w = arg;
	struct deploy *d = w->d;
	json_t *rec = find_record(d, w->id);
	struct instance *inst = site_find(d->site, w->instance);
	const char *why = NULL;
	char buf[600];
	if (!inst) { /* removed meanwhile (plantctl unload): nothing to watch */
		if (rec)
			step(d, rec, "abandoned", "the instance was removed");
		watch_remove(d, w);
		return;
	}
	if (inst->st != INST_RUNNING) {
		snprintf(buf, sizeof buf, "the new version is not running (%s)",
			 inst && inst->error[0] ? inst->error : "failed");
		why = buf;
	} else if (atomic_load(&w->unhealthy)) {
		snprintf(buf, sizeof buf, "%s", w->detail);
		why = buf;
	}
	if (why) {
		char err[2048];
		json_t *done = NULL;
		char reason[1024];
		snprintf(reason, sizeof reason, "%s within the grace period", why);
		int rc = rollback(d, w->instance, reason, &done, err, sizeof err);
		json_decref(done);
		if (rc != PLANT_OK) {
			char both[3200];
			snprintf(both, sizeof both, "%s; the rollback failed: %s", reason, err);
			log_error("deployment %s: %s", w->id, both);
			if (rec)
				step(d, rec, "rollback_failed", both);
		} else if (rec) {
			step(d, rec, "rolled_back", reason);
		}
		watch_remove(d, w);
		return;
	}
	if (clock_now_ms() >= w->until_ms) {
		if (rec)
			step(d, rec, "deployed", NULL);
		watch_remove(d, w);
		return;
	}
	if (!atomic_exchange(&w->asking, 1)) {
		atomic_fetch_add(&w->refs, 1);
		if (site_post_instance(inst, health_run, w) != PLANT_OK) {
			atomic_store(&w->asking, 0);
			watch_unref(w);
		}
	}
}

static void watch_start(struct deploy *d, const char *id, const char *instance, uint64_t grace_ms)
{
	struct watch *w = calloc(1, sizeof *w);
	if (!w)
		return;
	w->d = d;
	snprintf(w->id, sizeof w->id, "%s", id);
	snprintf(w->instance, sizeof w->instance, "%s", instance);
	w->until_ms = clock_now_ms() + grace_ms;
	atomic_init(&w->refs, 1);
	w->ev = event_new(site_event_base(d->site), -1, EV_PERSIST, watch_tick, w);
	struct timeval tv = {.tv_sec = 0, .tv_usec = WATCH_EVERY_MS * 1000};
	event_add(w->ev, &tv);
	w->next = d->watches;
	d->watches = w;
}

/* Stop watching `instance`; the watched deployment's record gets `state`
 * and `why` (or nothing: a rollback records itself). */
static void watch_cancel(struct deploy *d, const char *instance, const char *state, const char *why)
{
	for (struct watch *w = d->watches, *next; w; w = next) {
		next = w->next;
		if (strcmp(w->instance, instance) != 0)
			continue;
		json_t *rec = find_record(d, w->id);
		if (rec && state)
			step(d, rec, state, why);
		watch_remove(d, w);
	}
}

void deploy_stop(struct deploy *d)
{
	if (!d)
		return;
	while (d->watches)
		watch_remove(d, d->watches);
}

static void asked_free(struct asked *a)
{
	json_decref(a->request);
	json_decref(a->record);
	free(a);
}

void deploy_free(struct deploy *d)
{
	if (!d)
		return;
	deploy_stop(d);
	/* asked while the loop was ending: never answered */
	while (d->asked) {
		struct asked *a = d->asked;
		d->asked = a->next;
		asked_free(a);
	}
	pthread_mutex_destroy(&d->asked_lock);
	json_decref(d->deployed);
	json_decref(d->history);
	free(d->data_dir);
	free(d->state_path);
	free(d->history_path);
	free(d);
}

/* ---- deploy and roll back -------------------------------------------------------------------- */

static json_t *spec_snapshot(const struct instance_spec *s)
{
	return json_pack("{s:s, s:O, s:b}", "module", s->module, "settings", s->settings,
			 "required", s->required);
}

static json_t *new_record(struct deploy *d, const char *instance)
{
	char id[64];
	snprintf(id, sizeof id, "dep-%llu-%llu", (unsigned long long)clock_now_ms(),
		 (unsigned long long)++d->seq);
	json_t *rec = json_pack("{s:s, s:s, s:o, s:[]}", "id", id, "instance", instance, "started",
				now_iso(), "steps");
	json_array_append_new(d->history, rec);
	while (json_array_size(d->history) > HISTORY_MAX)
		json_array_remove(d->history, 0);
	return rec;
}

static int refuse(struct deploy *d, json_t *rec, int rc, const char *why, json_t **result_out,
		  char *err, size_t errlen)
{
	step(d, rec, "refused", why);
	*result_out = json_deep_copy(rec);
	return fail(err, errlen, rc, "%s", why);
}

int deploy_start(struct deploy *d, const json_t *request, json_t **result_out, char *err,
		 size_t errlen)
{
	*result_out = NULL;
	const char *path = json_string_value(json_object_get(request, "bundle"));
	const char *instance = json_string_value(json_object_get(request, "instance"));
	const char *by = json_string_value(json_object_get(request, "by"));
	const json_t *grace_j = json_object_get(request, "grace");
	if (json_is_null(grace_j))
		grace_j = NULL;
	const struct site_config *cfg = site_config(d->site);
	uint64_t grace_ms = DEFAULT_GRACE_MS;
	if (cfg->deploy && json_object_get(cfg->deploy, "grace"))
		parse_duration_ms(json_object_get(cfg->deploy, "grace"), &grace_ms);
	if (!path || !*path)
		return fail(err, errlen, PLANT_E_INVALID,
			    "a deployment needs {\"bundle\": PATH, \"instance\": NAME}");
	if (grace_j && parse_duration_ms(grace_j, &grace_ms) != PLANT_OK)
		return fail(err, errlen, PLANT_E_INVALID,
			    "'grace' must be a duration, e.g. \"30s\"");

	char why[2048];
	struct bundle *b = NULL;
	int rc = bundle_read(path, &b, why, sizeof why);
	json_t *rec = new_record(d, instance ? instance : (b ? bundle_name(b) : "?"));
	json_object_set_new(rec, "bundle", json_string(path));
	if (by)
		json_object_set_new(rec, "by", json_string(by));
	if (rc != PLANT_OK)
		return refuse(d, rec, PLANT_E_INVALID, why, result_out, err, errlen);
	/* a copy: the bundle goes before the end */
	char target[256];
	snprintf(target, sizeof target, "%s", instance ? instance : bundle_name(b));
	instance = target;
	json_object_set_new(rec, "module", json_string(bundle_name(b)));
	json_object_set_new(rec, "version", json_string(bundle_version(b)));
	json_object_set_new(rec, "sha256", json_string(bundle_sha256(b)));
	json_object_set_new(rec, "signed", json_boolean(bundle_signed(b)));

	/* verified: the signature (when the site asks for one), the ABI */
	const json_t *keys = cfg->deploy ? json_object_get(cfg->deploy, "trusted_keys") : NULL;
	size_t n_keys = json_array_size(keys);
	const char **key_files = calloc(n_keys + 1, sizeof *key_files);
	for (size_t i = 0; i < n_keys; i++)
		key_files[i] = json_string_value(json_array_get(keys, i));
	int required =
		cfg->deploy && json_is_true(json_object_get(cfg->deploy, "require_signature"));
	rc = bundle_verify(b, key_files, n_keys, required, why, sizeof why);
	free(key_files);
	if (rc == PLANT_OK)
		rc = bundle_check_abi(b, why, sizeof why);
	struct instance *running = rc == PLANT_OK ? site_find(d->site, instance) : NULL;
	if (rc == PLANT_OK && !running) {
		snprintf(why, sizeof why, "no instance \"%s\" runs on this site", instance);
		rc = PLANT_E_NOTFOUND;
	}
	char file[4200];
	if (rc == PLANT_OK) {
		char dir[4200];
		snprintf(dir, sizeof dir, "%s/modules", d->data_dir);
		rc = bundle_write_module(b, dir, file, sizeof file, why, sizeof why);
	}
	if (rc != PLANT_OK) {
		bundle_free(b);
		return refuse(d, rec, rc, why, result_out, err, errlen);
	}
	const struct plant_plugin_desc *old_desc = running->mod ? running->mod->desc : NULL;
	if (old_desc && old_desc->version)
		json_object_set_new(rec, "previous_version", json_string(old_desc->version));
	step(d, rec, "verified", NULL);

	/* the new spec: the running one with the bundle's module and settings
	 * (copies: the running instance and its spec go during the swap) */
	struct instance_spec spec = {0};
	const struct instance_spec *cur = running->spec;
	spec.name = strdup(cur->name);
	spec.module = strdup(file);
	spec.required = cur->required;
	spec.settings = json_deep_copy(cur->settings);
	const json_t *bconf = bundle_config(b);
	if (bconf)
		json_object_update(spec.settings, (json_t *)bconf);
	spec.lines = json_deep_copy(cur->lines);
	spec.files = json_deep_copy(cur->files);
	spec.file = strdup(cur->file);
	spec.line = cur->line;
	json_t *previous = json_pack("{s:o, s:s*, s:O*}", "spec", spec_snapshot(cur), "version",
				     old_desc ? old_desc->version : NULL, "override",
				     json_object_get(d->deployed, instance));
	json_t *override =
		json_pack("{s:s, s:s, s:O*, s:s, s:o}", "module", file, "version",
			  bundle_version(b), "config", bconf, "deployment",
			  json_string_value(json_object_get(rec, "id")), "previous", previous);
	bundle_free(b);

	rc = site_replace(d->site, &spec, why, sizeof why);
	instance_spec_clear(&spec);
	if (rc != PLANT_OK) {
		json_decref(override);
		return refuse(d, rec, rc, why, result_out, err, errlen);
	}
	char superseded[128];
	snprintf(superseded, sizeof superseded, "deployment %s replaced it",
		 json_string_value(json_object_get(rec, "id")));
	watch_cancel(d, instance, "superseded", superseded);
	json_object_set_new(d->deployed, instance, override);
	if (save_state(d, why, sizeof why) != PLANT_OK)
		log_error("deployment %s: %s: after a restart the site runs its previous version",
			  json_string_value(json_object_get(rec, "id")), why);
	if (grace_ms > 0) {
		step(d, rec, "watching", NULL);
		watch_start(d, json_string_value(json_object_get(rec, "id")), instance, grace_ms);
	} else {
		step(d, rec, "deployed", NULL);
	}
	*result_out = json_deep_copy(rec);
	return PLANT_OK;
}

static int rollback(struct deploy *d, const char *name, const char *why, json_t **rec_out,
		    char *err, size_t errlen)
{
	json_t *o = json_object_get(d->deployed, name);
	json_t *prev = json_object_get(o, "previous");
	json_t *snap = json_object_get(prev, "spec");
	if (!snap) {
		if (!site_find(d->site, name))
			return fail(err, errlen, PLANT_E_NOTFOUND, "no instance \"%s\"", name);
		return fail(err, errlen, PLANT_E_NOTFOUND,
			    "instance \"%s\" has no deployed version to roll back", name);
	}
	struct instance *running = site_find(d->site, name);
	struct instance_spec spec = {0};
	spec.name = strdup(name);
	const char *snap_module = json_string_value(json_object_get(snap, "module"));
	if (!snap_module)
		return fail(err, errlen, PLANT_E_CONFIG,
			    "%s: instance \"%s\": no module to roll back to", d->state_path, name);
	spec.module = strdup(snap_module);
	spec.required = json_is_true(json_object_get(snap, "required"));
	spec.settings = json_deep_copy(json_object_get(snap, "settings"));
	if (running) {
		spec.lines = json_deep_copy(running->spec->lines);
		spec.files = json_deep_copy(running->spec->files);
		spec.file = strdup(running->spec->file);
		spec.line = running->spec->line;
	} else {
		spec.lines = json_object();
		spec.files = json_object();
		spec.file = strdup(d->state_path);
	}
	char module[4200];
	snprintf(module, sizeof module, "%s", spec.module);
	int rc = running ? site_replace(d->site, &spec, err, errlen)
			 : site_add(d->site, &spec, err, errlen);
	instance_spec_clear(&spec);
	if (rc != PLANT_OK)
		return rc;
	json_t *before = json_incref(json_object_get(prev, "override"));
	if (json_is_null(before)) {
		json_decref(before);
		before = NULL;
	}
	if (before)
		json_object_set_new(d->deployed, name, before);
	else
		json_object_del(d->deployed, name);
	char serr[512];
	if (save_state(d, serr, sizeof serr) != PLANT_OK)
		log_error("rollback of %s: %s", name, serr);
	log_warn("instance \"%s\" rolled back to %s: %s", name, module, why);
	*rec_out = NULL;
	return PLANT_OK;
}

int deploy_rollback(struct deploy *d, const char *name, const char *why, json_t **result_out,
		    char *err, size_t errlen)
{
	*result_out = NULL;
	json_t *o = json_object_get(d->deployed, name);
	const char *id = json_string_value(json_object_get(o, "deployment"));
	json_t *rec = id ? find_record(d, id) : NULL;
	watch_cancel(d, name, NULL, NULL);
	json_t *ignored = NULL;
	int rc = rollback(d, name, why, &ignored, err, errlen);
	json_decref(ignored);
	if (rc != PLANT_OK)
		return rc;
	if (rec) {
		step(d, rec, "rolled_back", why);
		*result_out = json_deep_copy(rec);
	} else {
		*result_out = json_pack("{s:s, s:s}", "instance", name, "state", "rolled_back");
	}
	return PLANT_OK;
}

json_t *deploy_list(struct deploy *d)
{
	return json_deep_copy(d->history);
}

json_t *deploy_get(struct deploy *d, const char *id)
{
	json_t *r = find_record(d, id);
	return r ? json_deep_copy(r) : NULL;
}

/* ---- deploy() from a plugin ------------------------------------------------------------------ */

/* [worker, under the asking instance's actor] */
static void answer_run(void *arg, void *actor_ctx)
{
	struct asked *a = arg;
	struct instance *inst = actor_ctx;
	if (inst && inst->state && inst->st == INST_RUNNING)
		a->done(inst->state, a->status, a->record, a->error, a->user);
	asked_free(a);
}

/* [main loop] */
static void asked_run(evutil_socket_t fd, short what, void *arg)
{
	struct asked *a = arg;
	struct deploy *d = a->d;
	pthread_mutex_lock(&d->asked_lock);
	for (struct asked **pp = &d->asked; *pp; pp = &(*pp)->next)
		if (*pp == a) {
			*pp = a->next;
			break;
		}
	pthread_mutex_unlock(&d->asked_lock);
	/* the asking instance may have gone meanwhile (unload, reload) */
	bool there = false;
	for (size_t i = 0; i < site_instance_count(d->site) && !there; i++)
		there = site_instance(d->site, i) == a->inst;
	if (!there || a->inst->st != INST_RUNNING) {
		asked_free(a);
		return;
	}
	if (!json_object_get(a->request, "by"))
		json_object_set_new(a->request, "by",
				    json_sprintf("instance %s", a->inst->spec->name));
	a->status = deploy_start(d, a->request, &a->record, a->error, sizeof a->error);
	if (a->status == PLANT_OK)
		a->error[0] = '\0';
	there = false;
	for (size_t i = 0; i < site_instance_count(d->site) && !there; i++)
		there = site_instance(d->site, i) == a->inst;
	if (!there || site_post_instance(a->inst, answer_run, a) != PLANT_OK)
		asked_free(a);
}

/* [any-thread] */
static int deploy_async(void *ud, struct instance *inst, const json_t *request,
			plant_deploy_done done, void *user)
{
	struct deploy *d = ud;
	struct asked *a = calloc(1, sizeof *a);
	if (!a)
		return PLANT_E_NOMEM;
	*a = (struct asked){.d = d,
			    .inst = inst,
			    .request = json_deep_copy(request),
			    .done = done,
			    .user = user};
	pthread_mutex_lock(&d->asked_lock);
	a->next = d->asked;
	d->asked = a;
	pthread_mutex_unlock(&d->asked_lock);
	struct timeval now = {0, 0};
	if (event_base_once(site_event_base(d->site), -1, EV_TIMEOUT, asked_run, a, &now) != 0) {
		pthread_mutex_lock(&d->asked_lock);
		for (struct asked **pp = &d->asked; *pp; pp = &(*pp)->next)
			if (*pp == a) {
				*pp = a->next;
				break;
			}
		pthread_mutex_unlock(&d->asked_lock);
		asked_free(a);
		return PLANT_E_STATE;
	}
	return PLANT_OK;
}

void deploy_forget(struct deploy *d, const char *name)
{
	watch_cancel(d, name, "abandoned", "the instance was removed");
	if (!json_object_get(d->deployed, name))
		return;
	json_object_del(d->deployed, name);
	char err[512];
	if (save_state(d, err, sizeof err) != PLANT_OK)
		log_error("%s", err);
}
