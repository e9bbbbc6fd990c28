/* cicd_deployer: deploy requests from the bus, on this node (issue 9).
 *
 * One instance per node. A deploy request (on `listen`, typically relayed
 * to every node by a transport) names a bundle, by path or by http(s) URL,
 * and an instance; the deployer fetches a URL with the host's HTTP client
 * into `fetch_dir`, hands the file to the host's deploy() (SDK 1.7: verify,
 * drain and swap, watch, roll back) and publishes the answer on `results`
 * ({"deployment", "node", "state": "watching" | "deployed" | "refused",
 * ...}). A deployment in its grace period is followed on the host's
 * `events` topic (cicd.events) until its final step (deployed,
 * rolled_back, rollback_failed, superseded, abandoned), which is published
 * on `results` too. The node announces
 * itself ready ({"event": "node.ready"}) after start, after every finished
 * deployment and every `ready_every`.
 *
 * Every callback runs on the instance's worker, one at a time (the host's
 * actor model), so the state has no lock. See README.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <plantd/plantd.h>

#include "cicd_common.h"

/* Final steps seen on `events` before the deploy() answer that names them:
 * kept a while, for the answer to find. */
#define EARLY_MAX    32
/* Deployments followed at once; beyond, the oldest is dropped (logged). */
#define FOLLOW_MAX   256
/* The longest piece of an HTTP error body put in a reason. */
#define BODY_SNIPPET 200

static const struct plant_config_key config_keys[] = {
	{
		.name = "listen",
		.type = PLANT_CFG_STRING,
		.default_value = "\"cicd.deploy\"",
		.description = "topic (or pattern) of deploy requests",
	},
	{
		.name = "results",
		.type = PLANT_CFG_STRING,
		.default_value = "\"cicd.results\"",
		.description = "topic the results and node.ready announcements are published on",
	},
	{
		.name = "events",
		.type = PLANT_CFG_STRING,
		.default_value = "\"cicd.events\"",
		.description = "topic the host publishes deployment steps on",
	},
	{
		.name = "node",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "this node's name in requests and results (\"\": the site's name)",
	},
	{
		.name = "fetch_dir",
		.type = PLANT_CFG_STRING,
		.default_value = "\"bundles\"",
		.description = "where bundles fetched by URL are written, relative to the data "
			       "directory",
	},
	{
		.name = "fetch_timeout",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"60s\"",
		.description = "the whole download of a bundle at most",
	},
	{
		.name = "fetch_token",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "sent as Authorization: Bearer TOKEN when fetching a bundle (\"\": "
			       "no header)",
	},
	{
		.name = "ready_every",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"30s\"",
		.description = "announce node.ready again this often (0: only after start and "
			       "deployments)",
	},
	{.name = NULL, .type = PLANT_CFG_END},
};

/* One request on its way: fetching (a URL), then waiting for deploy(). */
struct job {
	json_t *req;	  /* what goes to deploy(): ours */
	char *deployment; /* the request's id */
	char *instance;	  /* the request's instance, or NULL */
	char *url;	  /* the bundle's URL, or NULL for a path */
	char *file;	  /* a fetched bundle, removed once deploy() answered */
	struct job *prev, *next;
};

/* A deployment in its grace period: its final step comes on `events`. */
struct follow {
	char *local_id; /* the host's deployment id */
	char *deployment, *instance, *version, *previous_version;
	struct follow *next;
};

struct deployer {
	plant_instance *self;
	const struct plant_host_api *api;
	const char *listen, *results, *events;
	const char *node; /* the configured name or the site's */
	char *fetch_dir;  /* resolved */
	char *fetch_auth; /* "Bearer TOKEN", or NULL */
	uint64_t fetch_timeout_ms;
	uint64_t ready_every_ms;

	struct job *jobs;
	size_t n_jobs;
	struct follow *follows; /* newest first */
	size_t n_follows;
	json_t *early;	  /* final events with no follow yet, oldest first */
	json_t *deployed; /* {INSTANCE: VERSION} put in place by deployments seen */
	uint64_t seq;	  /* names fetched files */
	bool warned_loop;

	uint64_t requests, ignored, refused, deployed_n, rolled_back, fetched, fetch_errors;
};

/* ---- small helpers ---------------------------------------------------------------- */

/* The host's glob: '*' any run of characters (dots too), '?' one. */

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* ---- publishing -------------------------------------------------------------------- */

static void publish(struct deployer *d, json_t *body)
{
	int rc = d->api->publish(d->self, d->results, body);
	if (rc != PLANT_OK)
		d->api->log(d->self, PLANT_LOG_WARN, "cannot publish on %s: %s", d->results,
			    plant_status_name(rc));
}

/* A result of `deployment` on this node. Every string may be NULL (null in
 * the message) but `state`. */
static void publish_result(struct deployer *d, const char *deployment, const char *instance,
			   const char *state, const char *version, const char *previous_version,
			   const char *reason, const char *local_id)
{
	json_t *body =
		json_pack("{s:s?, s:s, s:s?, s:s, s:s?, s:s?, s:s?, s:s?, s:I}", "deployment",
			  deployment, "node", d->node, "instance", instance, "state", state,
			  "version", version, "previous_version", previous_version, "reason",
			  reason, "local_id", local_id, "ts", (json_int_t)d->api->now_ms(d->self));
	bool bad = strcmp(state, "watching") != 0 && strcmp(state, "deployed") != 0;
	d->api->log(d->self, bad ? PLANT_LOG_WARN : PLANT_LOG_INFO,
		    "deployment %s: %s on %s%s%s%s%s", deployment ? deployment : "(none)", state,
		    instance ? instance : "?", version ? " version " : "", version ? version : "",
		    reason ? ": " : "", reason ? reason : "");
	if (strcmp(state, "refused") == 0) {
		d->refused++;
		d->api->counter_add(d->self, "refused", 1);
	} else if (strcmp(state, "deployed") == 0) {
		d->deployed_n++;
		d->api->counter_add(d->self, "deployed", 1);
	} else if (strcmp(state, "rolled_back") == 0) {
		d->rolled_back++;
		d->api->counter_add(d->self, "rolled_back", 1);
	}
	publish(d, body);
}

/* {"event": "node.ready", "node", "ts"} and, when deployments were seen,
 * "deployed": {INSTANCE: VERSION}. */
static void publish_ready(struct deployer *d)
{
	json_t *body = json_pack("{s:s, s:s, s:I}", "event", "node.ready", "node", d->node, "ts",
				 (json_int_t)d->api->now_ms(d->self));
	/* a copy: the message is shared, our map changes */
	if (body && json_object_size(d->deployed))
		json_object_set_new(body, "deployed", json_deep_copy(d->deployed));
	publish(d, body);
}

/* ---- jobs ----------------------------------------------------------------------------- */

static void job_free(struct deployer *d, struct job *j)
{
	if (j->prev)
		j->prev->next = j->next;
	else if (d->jobs == j)
		d->jobs = j->next;
	if (j->next)
		j->next->prev = j->prev;
	d->n_jobs--;
	if (j->file)
		unlink(j->file);
	json_decref(j->req);
	free(j->deployment);
	free(j->instance);
	free(j->url);
	free(j->file);
	free(j);
}

static void job_refuse(struct deployer *d, struct job *j, const char *reason)
{
	publish_result(d, j->deployment, j->instance, "refused", NULL, NULL, reason, NULL);
	job_free(d, j);
	publish_ready(d);
}

/* ---- following deployments in their grace period ---------------------------------------- */

static void follow_free(struct follow *f)
{
	free(f->local_id);
	free(f->deployment);
	free(f->instance);
	free(f->version);
	free(f->previous_version);
	free(f);
}

/* Remove and return the follow of `local_id`, or NULL. */
static struct follow *follow_take(struct deployer *d, const char *local_id)
{
	for (struct follow **pp = &d->follows; *pp; pp = &(*pp)->next) {
		struct follow *f = *pp;
		if (strcmp(f->local_id, local_id) == 0) {
			*pp = f->next;
			d->n_follows--;
			return f;
		}
	}
	return NULL;
}

/* What deployments put in place, from a final step: `version` when
 * deployed, `previous_version` back when rolled back. */
static void note_version(struct deployer *d, const char *state, const char *instance,
			 const char *version, const char *previous_version)
{
	const char *v = NULL;
	if (strcmp(state, "deployed") == 0)
		v = version;
	else if (strcmp(state, "rolled_back") == 0)
		v = previous_version;
	if (instance && v)
		json_object_set_new(d->deployed, instance, json_string(v));
}

/* The host's final steps of a deployment in its grace period: its grace
 * passed; its health failed (rolled back, or the rollback failed too); a
 * newer deployment of the instance replaced it; the instance went. */
static bool is_final_step(const char *state)
{
	static const char *const finals[] = {"deployed", "rolled_back", "rollback_failed",
					     "superseded", "abandoned"};
	for (size_t i = 0; i < sizeof finals / sizeof finals[0]; i++)
		if (strcmp(state, finals[i]) == 0)
			return true;
	return false;
}

/* A followed deployment's final step: `ev` is the host's event. */
static void follow_finish(struct deployer *d, struct follow *f, const json_t *ev)
{
	const char *state = cicd_jstr(ev, "event") + strlen("deploy.");
	const char *version = cicd_jstr(ev, "version");
	const char *prev = cicd_jstr(ev, "previous_version");
	publish_result(d, f->deployment, f->instance, state, version ? version : f->version,
		       prev ? prev : f->previous_version, cicd_jstr(ev, "reason"), f->local_id);
	follow_free(f);
	publish_ready(d);
}

/* Deployment `local_id` of `instance` is watching: follow it until the
 * host publishes its final step. */
static void follow_add(struct deployer *d, const char *deployment, const char *instance,
		       const char *local_id, const char *version, const char *previous_version)
{
	struct follow *f = calloc(1, sizeof *f);
	if (!f)
		return;
	f->local_id = strdup(local_id);
	f->deployment = dup_or_null(deployment);
	f->instance = dup_or_null(instance);
	f->version = dup_or_null(version);
	f->previous_version = dup_or_null(previous_version);
	if (!f->local_id) {
		follow_free(f);
		return;
	}
	/* its final step may have come already */
	size_t i;
	json_t *ev;
	json_array_foreach(d->early, i, ev)
	{
		if (strcmp(cicd_jstr(ev, "id"), local_id) == 0) {
			json_incref(ev);
			json_array_remove(d->early, i);
			follow_finish(d, f, ev);
			json_decref(ev);
			return;
		}
	}
	f->next = d->follows;
	d->follows = f;
	if (++d->n_follows > FOLLOW_MAX) {
		struct follow **pp = &d->follows;
		while ((*pp)->next)
			pp = &(*pp)->next;
		d->api->log(d->self, PLANT_LOG_WARN,
			    "following %d deployments: no longer following %s (deployment %s)",
			    FOLLOW_MAX, (*pp)->local_id,
			    (*pp)->deployment ? (*pp)->deployment : "?");
		follow_free(*pp);
		*pp = NULL;
		d->n_follows--;
	}
}

/* [instance] The host's deployment steps. */
static int on_event(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	struct deployer *d = state;
	const char *site = d->api->site_name(d->self);
	(void)user;
	for (size_t i = 0; i < n; i++) {
		const json_t *ev = d->api->msg_body(msgs[i]);
		const char *event = cicd_jstr(ev, "event");
		const char *id = cicd_jstr(ev, "id");
		const char *node = cicd_jstr(ev, "node");
		if (!event || !id || strncmp(event, "deploy.", 7) != 0)
			continue;
		/* another node's step, relayed here: not ours */
		if (node && site && strcmp(node, site) != 0)
			continue;
		const char *st = event + 7;
		if (!is_final_step(st))
			continue;
		note_version(d, st, cicd_jstr(ev, "instance"), cicd_jstr(ev, "version"),
			     cicd_jstr(ev, "previous_version"));
		struct follow *f = follow_take(d, id);
		if (f) {
			follow_finish(d, f, ev);
			continue;
		}
		json_array_append(d->early, (json_t *)ev);
		while (json_array_size(d->early) > EARLY_MAX)
			json_array_remove(d->early, 0);
	}
	return PLANT_OK;
}

/* ---- deploying ----------------------------------------------------------------------- */

/* [instance] deploy()'s answer. */
static void on_deployed(void *state, int status, const json_t *rec, const char *error, void *user)
{
	struct deployer *d = state;
	struct job *j = user;
	const char *st = cicd_jstr(rec, "state");
	if (!st)
		st = status == PLANT_OK ? "deployed" : "refused";
	const char *reason = cicd_jstr(rec, "reason");
	if (!reason && status != PLANT_OK)
		reason = error && *error ? error : plant_status_name(status);
	const char *instance = cicd_jstr(rec, "instance");
	if (!instance)
		instance = j->instance;
	const char *local_id = cicd_jstr(rec, "id");
	const char *version = cicd_jstr(rec, "version");
	const char *prev = cicd_jstr(rec, "previous_version");
	publish_result(d, j->deployment, instance, st, version, prev, reason, local_id);
	if (strcmp(st, "watching") == 0 && local_id) {
		follow_add(d, j->deployment, instance, local_id, version, prev);
	} else {
		note_version(d, st, instance, version, prev);
		publish_ready(d);
	}
	job_free(d, j);
}

static void job_deploy(struct deployer *d, struct job *j)
{
	int rc = d->api->deploy(d->self, j->req, on_deployed, j);
	if (rc == PLANT_OK)
		return;
	char why[512];
	if (rc == PLANT_E_STATE)
		snprintf(why, sizeof why,
			 "the host refused deploy(): %s (is instance \"%s\" in the site's "
			 "deploy.plugins?)",
			 plant_status_name(rc), d->api->instance_name(d->self));
	else
		snprintf(why, sizeof why, "the host refused deploy(): %s", plant_status_name(rc));
	job_refuse(d, j, why);
}

/* A name for a fetched file: the deployment id, tamed. */
static void file_name(struct deployer *d, const char *deployment, char *out, size_t len)
{
	char safe[101];
	size_t k = 0;
	for (const char *p = deployment; *p && k < sizeof safe - 1; p++) {
		char c = *p;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '-' || c == '_' || (c == '.' && k > 0);
		safe[k++] = ok ? c : '_';
	}
	safe[k] = '\0';
	snprintf(out, len, "%s/%s-%" PRIu64 ".bundle", d->fetch_dir, k ? safe : "bundle", ++d->seq);
}

/* [instance] The bundle's download. */
static void on_fetched(void *state, const struct plant_http_result *res, void *user)
{
	struct deployer *d = state;
	struct job *j = user;
	char why[1024];
	if (res->status != PLANT_OK) {
		snprintf(why, sizeof why, "cannot fetch %s: %s%s%s", j->url,
			 plant_status_name(res->status), res->error && *res->error ? ": " : "",
			 res->error ? res->error : "");
	} else if (res->http_status != 200) {
		int blen = res->body_len > BODY_SNIPPET ? BODY_SNIPPET : (int)res->body_len;
		snprintf(why, sizeof why, "cannot fetch %s: HTTP %ld%s%.*s", j->url,
			 res->http_status, blen ? ": " : "", blen, res->body ? res->body : "");
	} else {
		char path[4200];
		file_name(d, j->deployment, path, sizeof path);
		int e = cicd_write_atomic(path, res->body, res->body_len);
		if (e == 0) {
			d->fetched++;
			d->api->counter_add(d->self, "fetched", 1);
			j->file = strdup(path);
			json_object_set_new(j->req, "bundle", json_string(path));
			job_deploy(d, j);
			return;
		}
		snprintf(why, sizeof why, "cannot write %.900s: %s", path, strerror(e));
	}
	d->fetch_errors++;
	d->api->counter_add(d->self, "fetch_errors", 1);
	job_refuse(d, j, why);
}

static void job_fetch(struct deployer *d, struct job *j)
{
	const char *const hdrs[] = {"Authorization", d->fetch_auth, NULL};
	struct plant_http_call call = {
		.struct_size = sizeof call,
		.method = "GET",
		.url = j->url,
		.headers = d->fetch_auth ? hdrs : NULL,
		.timeout_ms = d->fetch_timeout_ms,
	};
	int rc = d->api->http_call(d->self, &call, on_fetched, j);
	if (rc != PLANT_OK) {
		char why[1024];
		snprintf(why, sizeof why, "cannot fetch %s: %s", j->url, plant_status_name(rc));
		d->fetch_errors++;
		d->api->counter_add(d->self, "fetch_errors", 1);
		job_refuse(d, j, why);
	}
}

/* Is this node among `nodes` (absent or empty: every node)? */
static bool targeted(const struct deployer *d, const json_t *nodes)
{
	if (!nodes || json_is_null(nodes))
		return true;
	if (json_is_string(nodes))
		return strcmp(json_string_value(nodes), d->node) == 0;
	if (json_array_size(nodes) == 0)
		return true;
	size_t i;
	json_t *v;
	json_array_foreach(nodes, i, v) if (json_is_string(v) &&
					    strcmp(json_string_value(v), d->node) == 0) return true;
	return false;
}

/* A refusal of a request that never became a job. */
static void refuse_request(struct deployer *d, const char *deployment, const char *instance,
			   const char *reason)
{
	publish_result(d, deployment, instance, "refused", NULL, NULL, reason, NULL);
	publish_ready(d);
}

static void handle_request(struct deployer *d, const plant_msg *m)
{
	const json_t *body = d->api->msg_body(m);
	/* the request's id; a relayed message keeps its origin's id */
	const char *deployment = cicd_jstr(body, "deployment");
	if (!deployment)
		deployment = d->api->msg_attr(m, "plantd_id");
	if (!deployment)
		deployment = d->api->msg_id(m);

	if (!json_is_object(body)) {
		d->requests++;
		d->api->counter_add(d->self, "requests", 1);
		refuse_request(d, deployment, NULL, "a deploy request must be a JSON object");
		return;
	}
	/* A result or an announcement here means topics that loop: answering
	 * it would feed the loop. */
	if (json_object_get(body, "event") || json_object_get(body, "state")) {
		d->ignored++;
		d->api->counter_add(d->self, "ignored", 1);
		if (!d->warned_loop)
			d->api->log(d->self, PLANT_LOG_WARN,
				    "a result or event arrived on %s (topic %s): ignored; results "
				    "must not reach the requests' topic",
				    d->listen, d->api->msg_topic(m));
		d->warned_loop = true;
		return;
	}
	const json_t *nodes = json_object_get(body, "nodes");
	if (nodes && !json_is_array(nodes) && !json_is_string(nodes) && !json_is_null(nodes)) {
		d->requests++;
		d->api->counter_add(d->self, "requests", 1);
		refuse_request(d, deployment, cicd_jstr(body, "instance"),
			       "'nodes' must be a list of node names");
		return;
	}
	if (!targeted(d, nodes)) {
		d->ignored++;
		d->api->counter_add(d->self, "ignored", 1);
		return;
	}
	d->requests++;
	d->api->counter_add(d->self, "requests", 1);
	const json_t *jdep = json_object_get(body, "deployment");
	if (jdep && !json_is_string(jdep)) {
		refuse_request(d, deployment, NULL, "'deployment' must be a string");
		return;
	}
	const json_t *jinst = json_object_get(body, "instance");
	if (jinst && !json_is_null(jinst) && !json_is_string(jinst)) {
		refuse_request(d, deployment, NULL, "'instance' must be a string");
		return;
	}
	const char *instance = json_string_value(jinst);
	if (instance && !*instance)
		instance = NULL;
	const char *bundle = cicd_jstr(body, "bundle");
	if (!bundle || !*bundle) {
		refuse_request(d, deployment, instance,
			       "no \"bundle\": a deploy request needs a bundle path or URL");
		return;
	}
	const json_t *grace = json_object_get(body, "grace");
	if (grace && !json_is_null(grace) && !json_is_string(grace) && !json_is_number(grace)) {
		refuse_request(d, deployment, instance, "'grace' must be a duration, e.g. \"10s\"");
		return;
	}
	if (!instance) {
		refuse_request(d, deployment, NULL,
			       "no \"instance\": a deploy request names the instance to deploy to");
		return;
	}
	if (strcmp(instance, d->api->instance_name(d->self)) == 0) {
		refuse_request(d, deployment, instance,
			       "the deployer cannot deploy over its own instance");
		return;
	}
	const char *by = cicd_jstr(body, "by");

	struct job *j = calloc(1, sizeof *j);
	char who[512];
	snprintf(who, sizeof who, "%s%scicd deployment %s on %s", by ? by : "", by ? ", " : "",
		 deployment, d->node);
	if (j)
		j->req = json_pack("{s:s, s:s}", "bundle", bundle, "by", who);
	if (j && j->req) {
		j->deployment = strdup(deployment);
		j->instance = strdup(instance);
		json_object_set_new(j->req, "instance", json_string(instance));
		if (grace && !json_is_null(grace))
			json_object_set(j->req, "grace", (json_t *)grace);
	}
	if (!j || !j->req || !j->deployment || !j->instance) {
		if (j) {
			json_decref(j->req);
			free(j->deployment);
			free(j->instance);
			free(j);
		}
		refuse_request(d, deployment, instance, "out of memory");
		return;
	}
	j->next = d->jobs;
	if (d->jobs)
		d->jobs->prev = j;
	d->jobs = j;
	d->n_jobs++;
	d->api->log(d->self, PLANT_LOG_INFO, "deployment %s: %s to %s", deployment, bundle,
		    instance);
	if (cicd_is_url(bundle)) {
		j->url = strdup(bundle);
		if (!j->url) {
			job_refuse(d, j, "out of memory");
			return;
		}
		job_fetch(d, j);
	} else {
		job_deploy(d, j);
	}
}

/* [instance] Deploy requests. */
static int on_request(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	(void)user;
	for (size_t i = 0; i < n; i++)
		handle_request(state, msgs[i]);
	return PLANT_OK;
}

static void on_ready_tick(void *state, void *user)
{
	(void)user;
	publish_ready(state);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static int check_config(plant_instance *self, const struct plant_host_api *api,
			const json_t *config)
{
	const char *listen = cicd_jstr(config, "listen");
	const char *results = cicd_jstr(config, "results");
	const char *events = cicd_jstr(config, "events");
	if (!*listen || !*results || !*events) {
		api->error(self,
			   !*listen    ? "listen"
			   : !*results ? "results"
				       : "events",
			   "'%s' must not be empty",
			   !*listen    ? "listen"
			   : !*results ? "results"
				       : "events");
		return PLANT_E_CONFIG;
	}
	if (strchr(results, '*') || strchr(results, '?')) {
		api->error(self, "results", "'results' must be a topic, not a pattern");
		return PLANT_E_CONFIG;
	}
	if (cicd_glob_match(listen, results)) {
		api->error(self, "results",
			   "'results' (%s) must not be a topic that 'listen' (%s) matches: the "
			   "deployer would read its own results",
			   results, listen);
		return PLANT_E_CONFIG;
	}
	if (cicd_glob_match(events, results)) {
		api->error(self, "results", "'results' (%s) must not be matched by 'events' (%s)",
			   results, events);
		return PLANT_E_CONFIG;
	}
	if (json_integer_value(json_object_get(config, "fetch_timeout")) <= 0) {
		api->error(self, "fetch_timeout", "'fetch_timeout' must be more than 0");
		return PLANT_E_CONFIG;
	}
	if (!*cicd_jstr(config, "fetch_dir")) {
		api->error(self, "fetch_dir", "'fetch_dir' must not be empty");
		return PLANT_E_CONFIG;
	}
	return PLANT_OK;
}

static int deployer_validate(plant_instance *self, const struct plant_host_api *api,
			     const json_t *config)
{
	return check_config(self, api, config);
}

static void deployer_free(struct deployer *d)
{
	while (d->jobs)
		job_free(d, d->jobs);
	while (d->follows) {
		struct follow *f = d->follows;
		d->follows = f->next;
		follow_free(f);
	}
	json_decref(d->early);
	json_decref(d->deployed);
	free(d->fetch_dir);
	free(d->fetch_auth);
	free(d);
}

static int deployer_init(plant_instance *self, const struct plant_host_api *api,
			 const json_t *config, void **state_out)
{
	int rc = check_config(self, api, config);
	if (rc != PLANT_OK)
		return rc;
	if (!PLANT_API_HAS(api, deploy) || !PLANT_API_HAS(api, http_call)) {
		api->error(self, NULL,
			   "this host offers no deploy() (SDK 1.7 is needed, it has %u.%u)",
			   (unsigned)api->abi_major, (unsigned)api->abi_minor);
		return PLANT_E_UNSUPPORTED;
	}
	struct deployer *d = calloc(1, sizeof *d);
	if (!d) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	d->self = self;
	d->api = api;
	d->listen = cicd_jstr(config, "listen");
	d->results = cicd_jstr(config, "results");
	d->events = cicd_jstr(config, "events");
	d->node = cicd_jstr(config, "node");
	if (!*d->node)
		d->node = api->site_name(self);
	d->fetch_timeout_ms =
		(uint64_t)json_integer_value(json_object_get(config, "fetch_timeout"));
	json_int_t every = json_integer_value(json_object_get(config, "ready_every"));
	d->ready_every_ms = every > 0 ? (uint64_t)every : 0;
	d->early = json_array();
	d->deployed = json_object();
	const char *fd = cicd_jstr(config, "fetch_dir");
	if (fd[0] == '/')
		d->fetch_dir = strdup(fd);
	else if (asprintf(&d->fetch_dir, "%s/%s", api->data_dir(self), fd) < 0)
		d->fetch_dir = NULL;
	const char *token = cicd_jstr(config, "fetch_token");
	if (*token && asprintf(&d->fetch_auth, "Bearer %s", token) < 0)
		d->fetch_auth = NULL;
	if (!d->early || !d->deployed || !d->fetch_dir || !d->node || (*token && !d->fetch_auth)) {
		api->error(self, NULL, "out of memory");
		deployer_free(d);
		return PLANT_E_NOMEM;
	}
	int e = cicd_mkdir_p(d->fetch_dir);
	if (e) {
		api->error(self, "fetch_dir", "cannot make %s: %s", d->fetch_dir, strerror(e));
		deployer_free(d);
		return PLANT_E_IO;
	}
	rc = api->subscribe(self, d->listen, on_request, NULL, NULL);
	if (rc == PLANT_OK) {
		rc = api->subscribe(self, d->events, on_event, NULL, NULL);
		if (rc != PLANT_OK)
			api->error(self, "events", "cannot subscribe to %s: %s", d->events,
				   plant_status_name(rc));
	} else {
		api->error(self, "listen", "cannot subscribe to %s: %s", d->listen,
			   plant_status_name(rc));
	}
	if (rc == PLANT_OK && d->ready_every_ms) {
		rc = api->timer_add(self, d->ready_every_ms, 0, on_ready_tick, NULL, NULL);
		if (rc != PLANT_OK)
			api->error(self, "ready_every", "cannot add a timer: %s",
				   plant_status_name(rc));
	}
	if (rc != PLANT_OK) {
		deployer_free(d);
		return rc;
	}
	*state_out = d;
	return PLANT_OK;
}

static int deployer_start(void *state)
{
	struct deployer *d = state;
	d->api->log(d->self, PLANT_LOG_INFO, "node %s takes deploy requests on %s, results on %s",
		    d->node, d->listen, d->results);
	publish_ready(d);
	return PLANT_OK;
}

static void deployer_destroy(void *state)
{
	deployer_free(state);
}

static int deployer_health(void *state, json_t **detail_out)
{
	struct deployer *d = state;
	*detail_out = json_pack(
		"{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "node", d->node, "in_progress",
		(json_int_t)d->n_jobs, "watching", (json_int_t)d->n_follows, "requests",
		(json_int_t)d->requests, "refused", (json_int_t)d->refused, "deployed",
		(json_int_t)d->deployed_n, "rolled_back", (json_int_t)d->rolled_back, "fetched",
		(json_int_t)d->fetched, "fetch_errors", (json_int_t)d->fetch_errors);
	return PLANT_OK;
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "cicd_deployer",
	.version = "1.0.0",
	.description = "deploys bundles on this node on requests from the bus, reports results",
	.config_keys = config_keys,
	.validate = deployer_validate,
	.init = deployer_init,
	.start = deployer_start,
	.destroy = deployer_destroy,
	.health = deployer_health,
};
