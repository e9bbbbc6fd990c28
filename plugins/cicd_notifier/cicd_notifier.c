/* cicd_notifier: start deployments on every node and report how each went
 * (issue 9).
 *
 * A deployment (POST ROUTE/deployments, or a bundle dropped into
 * `watch_dir`) is published as one deploy request on `publish`, which a
 * transport carries to the cicd_deployer of every node. The notifier then
 * collects the nodes' results on `results` until every expected node has a
 * final state (deployed, refused, rolled_back, rollback_failed, superseded,
 * abandoned) or `timeout` passed, when the nodes without one are "silent",
 * and publishes a report on `reports` (and logs one line per node).
 * Expected nodes: the request's "nodes", else the configured `nodes`, else
 * those that announced node.ready. A bundle given as a file is copied into `bundle_dir` and
 * served on ROUTE/bundles/NAME, so that nodes fetch it by URL when
 * `public_url` is set.
 *
 * Routes are served on the instance's worker (no PLANT_ROUTE_CONCURRENT),
 * like its messages and ticks: the state has no lock. See README.md.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <plantd/plantd.h>

#include "cicd_common.h"

#define TICK_MS		 500
/* A bundle file larger than this is not read (the host's own limit). */
#define BUNDLE_MAX_BYTES ((size_t)1 << 30)
/* A dropped file is taken once it has not changed for this long. */
#define SETTLE_S	 1

static const struct plant_config_key config_keys[] = {
	{
		.name = "publish",
		.type = PLANT_CFG_STRING,
		.default_value = "\"cicd.deploy\"",
		.description = "topic deploy requests are published on",
	},
	{
		.name = "results",
		.type = PLANT_CFG_STRING,
		.default_value = "\"cicd.results\"",
		.description = "topic (or pattern) of the nodes' results and node.ready "
			       "announcements",
	},
	{
		.name = "reports",
		.type = PLANT_CFG_STRING,
		.default_value = "\"cicd.reports\"",
		.description = "topic the final report of each deployment is published on",
	},
	{
		.name = "nodes",
		.type = PLANT_CFG_ARRAY,
		.default_value = "[]",
		.description = "the nodes expected to answer ([]: those that announced node.ready)",
	},
	{
		.name = "timeout",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"120s\"",
		.description = "how long to wait for every expected node's final state",
	},
	{
		.name = "grace",
		.type = PLANT_CFG_DURATION,
		.description = "grace period sent with requests that give none (absent: the "
			       "nodes' own deploy.grace)",
	},
	{
		.name = "listener",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "the site's listener that serves the routes (\"\": no routes)",
	},
	{
		.name = "route",
		.type = PLANT_CFG_STRING,
		.default_value = "\"/v1/cicd/\"",
		.description = "the routes' path prefix, beginning and ending with /",
	},
	{
		.name = "public_url",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "the listener's URL as the nodes reach it, e.g. "
			       "\"http://10.0.0.5:8480\": bundle files are sent as URLs of "
			       "ROUTE/bundles/ (\"\": as this node's file paths)",
	},
	{
		.name = "bundle_dir",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "where copies of the deployed bundle files are kept and served, "
			       "relative to the data directory (\"\": INSTANCE/bundles)",
	},
	{
		.name = "watch_dir",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "a drop directory (relative to the data directory): *.bundle "
			       "files put there are deployed to "
			       "every node (\"\": none)",
	},
	{
		.name = "watch_every",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"5s\"",
		.description = "how often watch_dir is looked at",
	},
	{
		.name = "keep",
		.type = PLANT_CFG_INT,
		.default_value = "100",
		.description = "deployments kept for GET ROUTE/deployments (and their bundle "
			       "copies); older ones are forgotten",
	},
	{.name = NULL, .type = PLANT_CFG_END},
};

/* One deployment, newest first in the notifier's list. */
struct dep {
	char id[64];
	char *bundle;	  /* as given: a path or a URL */
	char *sent;	  /* as published: a URL or a path */
	char *copy;	  /* our copy in bundle_dir, or NULL */
	char *copy_name;  /* its name, served on ROUTE/bundles/ */
	char *instance;	  /* or NULL: the bundle's module name, on each node */
	char *watch_file; /* the watch_dir file it came from, or NULL */
	dev_t watch_dev;  /* ... which was this file */
	ino_t watch_ino;
	time_t watch_mtime;
	json_t *expected; /* node names */
	json_t *nodes;	  /* {NODE: {"state", "reason", "version", ...}} */
	uint64_t started_ms, deadline_ms, timeout_ms;
	bool finished, complete, all_deployed;
	struct dep *next;
};

struct notifier {
	plant_instance *self;
	const struct plant_host_api *api;
	const char *publish, *results, *reports;
	const char *listener, *route, *public_url;
	char *watch_dir; /* resolved, or NULL */
	const json_t *nodes_cfg;
	uint64_t timeout_ms, watch_every_ms;
	json_int_t grace_ms; /* -1: none */
	size_t keep;
	char *bundle_dir; /* resolved */

	struct dep *deps;
	size_t n_deps;
	json_t *seen; /* {NODE: the last node.ready, plus "seen_ms"} */
	uint64_t seq;

	uint64_t started, reported, complete, results_taken;
};

/* ---- small helpers ---------------------------------------------------------------- */

static bool is_final(const char *state)
{
	static const char *const finals[] = {"deployed",	"refused",    "rolled_back",
					     "rollback_failed", "superseded", "abandoned"};
	for (size_t i = 0; state && i < sizeof finals / sizeof finals[0]; i++)
		if (strcmp(state, finals[i]) == 0)
			return true;
	return false;
}

/* A file name we make and serve: [A-Za-z0-9._-], not starting with '.'. */
static bool safe_name(const char *s)
{
	if (!*s || *s == '.' || strlen(s) > 200)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-'))
			return false;
	return true;
}

/* A duration as in a site conf: a number of seconds, or "250ms", "30s",
 * "15m", "2h", "1d". */
static int parse_duration(const json_t *v, uint64_t *ms_out)
{
	double x, unit = 1000;
	if (json_is_number(v)) {
		x = json_number_value(v);
	} else if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end;
		errno = 0;
		x = strtod(s, &end);
		if (end == s || errno)
			return PLANT_E_INVALID;
		if (strcmp(end, "ms") == 0)
			unit = 1;
		else if (strcmp(end, "s") == 0 || *end == '\0')
			unit = 1000;
		else if (strcmp(end, "m") == 0)
			unit = 60000;
		else if (strcmp(end, "h") == 0)
			unit = 3600000;
		else if (strcmp(end, "d") == 0)
			unit = 86400000;
		else
			return PLANT_E_INVALID;
	} else {
		return PLANT_E_INVALID;
	}
	if (!(x >= 0) || x * unit > 1e15)
		return PLANT_E_INVALID;
	*ms_out = (uint64_t)(x * unit);
	return PLANT_OK;
}

static void dep_free(struct dep *dp)
{
	free(dp->bundle);
	free(dp->sent);
	free(dp->copy);
	free(dp->copy_name);
	free(dp->instance);
	free(dp->watch_file);
	json_decref(dp->expected);
	json_decref(dp->nodes);
	free(dp);
}

static struct dep *dep_find(struct notifier *n, const char *id)
{
	for (struct dep *dp = n->deps; dp; dp = dp->next)
		if (strcmp(dp->id, id) == 0)
			return dp;
	return NULL;
}

/* Forget the oldest finished deployments beyond `keep`, and their copies. */
static void dep_trim(struct notifier *n)
{
	while (n->n_deps > n->keep) {
		struct dep **pp = &n->deps, **oldest = NULL;
		for (; *pp; pp = &(*pp)->next)
			if ((*pp)->finished)
				oldest = pp;
		if (!oldest)
			return;
		struct dep *dp = *oldest;
		*oldest = dp->next;
		n->n_deps--;
		if (dp->copy)
			unlink(dp->copy);
		dep_free(dp);
	}
}

/* What GET ROUTE/deployments/ID shows, and the report's body. [new] */
static json_t *dep_view(const struct dep *dp)
{
	json_t *waiting = json_array();
	size_t i;
	json_t *v;
	json_array_foreach(dp->expected, i, v)
	{
		if (!is_final(cicd_jstr(json_object_get(dp->nodes, json_string_value(v)), "state")))
			json_array_append(waiting, v);
	}
	json_t *o =
		json_pack("{s:s, s:s, s:s, s:s?, s:O, s:O, s:b, s:b, s:b, s:I, s:I}", "deployment",
			  dp->id, "bundle", dp->bundle, "sent", dp->sent, "instance", dp->instance,
			  "expected", dp->expected, "nodes", dp->nodes, "finished", dp->finished,
			  "complete", dp->complete, "deployed", dp->all_deployed, "started_ms",
			  (json_int_t)dp->started_ms, "deadline_ms", (json_int_t)dp->deadline_ms);
	if (o && !dp->finished)
		json_object_set_new(o, "waiting", waiting);
	else
		json_decref(waiting);
	return o;
}

/* Move a watch_dir file to done/ or failed/. */
static void watch_move(struct notifier *n, const char *name, bool ok)
{
	char from[4200], to[4200];
	snprintf(from, sizeof from, "%s/%s", n->watch_dir, name);
	snprintf(to, sizeof to, "%s/%s/%s", n->watch_dir, ok ? "done" : "failed", name);
	if (rename(from, to) != 0)
		n->api->log(n->self, PLANT_LOG_ERROR, "cannot move %s to %s: %s", from, to,
			    strerror(errno));
}

/* Every expected node has a final state, or the time is up: report. */
static void dep_finish(struct notifier *n, struct dep *dp)
{
	size_t i;
	json_t *v;
	json_array_foreach(dp->expected, i, v)
	{
		const char *node = json_string_value(v);
		json_t *cur = json_object_get(dp->nodes, node);
		const char *st = cicd_jstr(cur, "state");
		if (is_final(st))
			continue;
		char why[256];
		snprintf(why, sizeof why, "no final result within %" PRIu64 " ms%s%s",
			 dp->timeout_ms, st ? " (last: " : "", st ? st : "");
		if (st)
			strncat(why, ")", sizeof why - strlen(why) - 1);
		json_t *s = json_pack("{s:s, s:s}", "state", "silent", "reason", why);
		if (cur) {
			json_t *ver = json_object_get(cur, "version");
			if (json_is_string(ver))
				json_object_set(s, "version", ver);
		}
		json_object_set_new(dp->nodes, node, s);
	}
	const char *node;
	size_t n_nodes = json_object_size(dp->nodes), n_final = 0, n_deployed = 0;
	json_object_foreach(dp->nodes, node, v)
	{
		const char *st = cicd_jstr(v, "state");
		n_final += is_final(st) ? 1 : 0;
		n_deployed += st && strcmp(st, "deployed") == 0 ? 1 : 0;
	}
	dp->finished = true;
	dp->complete = n_nodes > 0 && n_final == n_nodes;
	dp->all_deployed = n_nodes > 0 && n_deployed == n_nodes;

	json_t *report = dep_view(dp);
	json_object_del(report, "waiting");
	json_object_set_new(report, "finished_ms",
			    json_integer((json_int_t)n->api->now_ms(n->self)));
	n->api->log(n->self, dp->all_deployed ? PLANT_LOG_INFO : PLANT_LOG_WARN,
		    "deployment %s of %s to %s: %s, %zu of %zu nodes deployed", dp->id, dp->bundle,
		    dp->instance ? dp->instance : "(the bundle's module)",
		    dp->complete ? "complete" : "incomplete", n_deployed, n_nodes);
	json_object_foreach(dp->nodes, node, v)
	{
		const char *st = cicd_jstr(v, "state");
		const char *ver = cicd_jstr(v, "version");
		const char *reason = cicd_jstr(v, "reason");
		bool good = st && strcmp(st, "deployed") == 0;
		n->api->log(n->self, good ? PLANT_LOG_INFO : PLANT_LOG_WARN,
			    "deployment %s: node %s: %s%s%s%s%s", dp->id, node, st ? st : "?",
			    ver ? " " : "", ver ? ver : "", reason ? ": " : "",
			    reason ? reason : "");
	}
	n->reported++;
	n->api->counter_add(n->self, "reported", 1);
	if (dp->complete) {
		n->complete++;
		n->api->counter_add(n->self, "complete", 1);
	}
	/* a tree of its own: the host shares it with other threads, and it
	 * must not share parts with ours */
	int rc = n->api->publish(n->self, n->reports, json_deep_copy(report));
	json_decref(report);
	if (rc != PLANT_OK)
		n->api->log(n->self, PLANT_LOG_WARN, "cannot publish the report of %s on %s: %s",
			    dp->id, n->reports, plant_status_name(rc));
	if (dp->watch_file)
		watch_move(n, dp->watch_file, dp->all_deployed);
	dep_trim(n);
}

static void dep_check(struct notifier *n, struct dep *dp)
{
	if (dp->finished || json_array_size(dp->expected) == 0)
		return;
	size_t i;
	json_t *v;
	json_array_foreach(dp->expected, i, v)
	{
		if (!is_final(cicd_jstr(json_object_get(dp->nodes, json_string_value(v)), "state")))
			return;
	}
	dep_finish(n, dp);
}

/* Start a deployment: `req` is {"bundle": PATH or URL, "instance", "nodes",
 * "grace", "timeout", "by"} ([borrowed]); `watch_file` and `watch_st` name
 * the watch_dir file it comes from, or are NULL. On success *answer_out ([new])
 * is {"deployment", "bundle", "instance", "nodes"}; else `err` says why and
 * the status is PLANT_E_INVALID (a bad request), PLANT_E_IO, PLANT_E_NOMEM
 * or the publish's. */
static int dep_start(struct notifier *n, const json_t *req, const char *watch_file,
		     const struct stat *watch_st, json_t **answer_out, char *err, size_t errlen)
{
	*answer_out = NULL;
	if (!json_is_object(req)) {
		snprintf(err, errlen,
			 "a deployment must be a JSON object {\"bundle\", "
			 "\"instance\", \"nodes\", \"grace\"}");
		return PLANT_E_INVALID;
	}
	const char *bundle = cicd_jstr(req, "bundle");
	if (!bundle || !*bundle) {
		snprintf(err, errlen, "a deployment needs \"bundle\": a file path or a URL");
		return PLANT_E_INVALID;
	}
	const json_t *jinst = json_object_get(req, "instance");
	if (jinst && !json_is_null(jinst) &&
	    (!json_is_string(jinst) || !*json_string_value(jinst))) {
		snprintf(err, errlen, "'instance' must be an instance name");
		return PLANT_E_INVALID;
	}
	const json_t *nodes = json_object_get(req, "nodes");
	if (json_is_null(nodes))
		nodes = NULL;
	if (nodes) {
		size_t i;
		json_t *v;
		bool ok = json_is_array(nodes);
		json_array_foreach(nodes, i, v) ok = ok && json_is_string(v);
		if (!ok) {
			snprintf(err, errlen, "'nodes' must be a list of node names");
			return PLANT_E_INVALID;
		}
	}
	uint64_t ms;
	const json_t *grace = json_object_get(req, "grace");
	if (json_is_null(grace))
		grace = NULL;
	if (grace && parse_duration(grace, &ms) != PLANT_OK) {
		snprintf(err, errlen, "'grace' must be a duration, e.g. \"10s\"");
		return PLANT_E_INVALID;
	}
	uint64_t timeout_ms = n->timeout_ms;
	const json_t *jto = json_object_get(req, "timeout");
	if (jto && !json_is_null(jto) &&
	    (parse_duration(jto, &timeout_ms) != PLANT_OK || timeout_ms == 0)) {
		snprintf(err, errlen, "'timeout' must be a duration, e.g. \"60s\"");
		return PLANT_E_INVALID;
	}
	const json_t *jby = json_object_get(req, "by");
	if (jby && !json_is_string(jby)) {
		snprintf(err, errlen, "'by' must be a string");
		return PLANT_E_INVALID;
	}

	struct dep *dp = calloc(1, sizeof *dp);
	if (!dp) {
		snprintf(err, errlen, "out of memory");
		return PLANT_E_NOMEM;
	}
	uint64_t now = n->api->now_ms(n->self);
	snprintf(dp->id, sizeof dp->id, "cd-%" PRIu64 "-%" PRIu64, now, ++n->seq);
	dp->bundle = strdup(bundle);
	dp->instance = jinst && json_is_string(jinst) ? strdup(json_string_value(jinst)) : NULL;
	dp->nodes = json_object();
	dp->started_ms = now;
	dp->timeout_ms = timeout_ms;
	dp->deadline_ms = now + timeout_ms;
	int rc = PLANT_OK;
	if (!dp->bundle || !dp->nodes || (jinst && json_is_string(jinst) && !dp->instance)) {
		snprintf(err, errlen, "out of memory");
		rc = PLANT_E_NOMEM;
	}

	/* a file: read it (is it a bundle? which module?), keep a copy to serve */
	if (rc == PLANT_OK && !cicd_is_url(bundle)) {
		char *data = NULL;
		size_t len = 0;
		int e = cicd_read_file(bundle, BUNDLE_MAX_BYTES, &data, &len);
		json_error_t jerr;
		json_t *doc = e ? NULL : json_loadb(data, len, 0, &jerr);
		const char *name = cicd_jstr(json_object_get(doc, "manifest"), "name");
		if (e) {
			snprintf(err, errlen, "cannot read %s: %s", bundle, strerror(e));
			rc = e == ENOENT ? PLANT_E_NOTFOUND : PLANT_E_IO;
		} else if (!doc) {
			snprintf(err, errlen, "%s is not a bundle: line %d: %s", bundle, jerr.line,
				 jerr.text);
			rc = PLANT_E_INVALID;
		} else if (!name) {
			snprintf(err, errlen, "%s is not a bundle: no manifest with a \"name\"",
				 bundle);
			rc = PLANT_E_INVALID;
		}
		if (rc == PLANT_OK && !dp->instance && !(dp->instance = strdup(name))) {
			snprintf(err, errlen, "out of memory");
			rc = PLANT_E_NOMEM;
		}
		if (rc == PLANT_OK) {
			char path[4200];
			if (asprintf(&dp->copy_name, "%s.bundle", dp->id) < 0)
				dp->copy_name = NULL;
			snprintf(path, sizeof path, "%s/%s", n->bundle_dir,
				 dp->copy_name ? dp->copy_name : "");
			e = dp->copy_name ? cicd_write_atomic(path, data, len) : ENOMEM;
			if (e) {
				snprintf(err, errlen, "cannot write %.900s: %s", path, strerror(e));
				rc = PLANT_E_IO;
			} else {
				char real[PATH_MAX];
				dp->copy = strdup(realpath(path, real) ? real : path);
			}
		}
		json_decref(doc);
		free(data);
		if (rc == PLANT_OK) {
			if (*n->public_url) {
				size_t ul = strlen(n->public_url);
				bool slash = ul && n->public_url[ul - 1] == '/';
				if (asprintf(&dp->sent, "%.*s%sbundles/%s",
					     (int)(slash ? ul - 1 : ul), n->public_url, n->route,
					     dp->copy_name) < 0)
					dp->sent = NULL;
			} else {
				dp->sent = dp->copy ? strdup(dp->copy) : NULL;
			}
			if (!dp->sent || !dp->copy) {
				snprintf(err, errlen, "out of memory");
				rc = PLANT_E_NOMEM;
			}
		}
	} else if (rc == PLANT_OK && !dp->instance) {
		snprintf(err, errlen,
			 "a bundle given by URL needs \"instance\": the instance to "
			 "deploy to");
		rc = PLANT_E_INVALID;
	} else if (rc == PLANT_OK && !(dp->sent = strdup(bundle))) {
		snprintf(err, errlen, "out of memory");
		rc = PLANT_E_NOMEM;
	}

	/* who is expected to answer */
	if (rc == PLANT_OK) {
		if (json_array_size(nodes)) {
			dp->expected = json_deep_copy(nodes);
		} else if (json_array_size(n->nodes_cfg)) {
			dp->expected = json_deep_copy(n->nodes_cfg);
		} else {
			const char *node;
			json_t *v;
			dp->expected = json_array();
			json_object_foreach(n->seen, node, v)
				json_array_append_new(dp->expected, json_string(node));
		}
		if (!dp->expected) {
			snprintf(err, errlen, "out of memory");
			rc = PLANT_E_NOMEM;
		}
	}

	/* the request every node gets */
	if (rc == PLANT_OK) {
		char by[512];
		snprintf(by, sizeof by, "%s%scicd_notifier %s", jby ? json_string_value(jby) : "",
			 jby ? " via " : "", n->api->instance_name(n->self));
		json_t *targets = nodes ? json_incref((json_t *)nodes) : json_array();
		json_t *msg = json_pack("{s:s, s:s, s:o, s:s}", "deployment", dp->id, "bundle",
					dp->sent, "nodes", targets, "by", by);
		if (msg && dp->instance)
			json_object_set_new(msg, "instance", json_string(dp->instance));
		if (msg && grace)
			json_object_set(msg, "grace", (json_t *)grace);
		else if (msg && n->grace_ms >= 0)
			json_object_set_new(
				msg, "grace",
				json_sprintf("%" JSON_INTEGER_FORMAT "ms", n->grace_ms));
		rc = n->api->publish(n->self, n->publish, msg);
		if (rc != PLANT_OK)
			snprintf(err, errlen, "cannot publish the request on %s: %s", n->publish,
				 plant_status_name(rc));
	}
	if (rc != PLANT_OK) {
		if (dp->copy)
			unlink(dp->copy);
		dep_free(dp);
		return rc;
	}
	if (watch_file && watch_st) {
		dp->watch_file = strdup(watch_file);
		dp->watch_dev = watch_st->st_dev;
		dp->watch_ino = watch_st->st_ino;
		dp->watch_mtime = watch_st->st_mtime;
	}
	dp->next = n->deps;
	n->deps = dp;
	n->n_deps++;
	n->started++;
	n->api->counter_add(n->self, "started", 1);
	char *who = json_dumps(dp->expected, JSON_COMPACT);
	n->api->log(n->self, PLANT_LOG_INFO, "deployment %s: %s to %s on %s", dp->id, dp->sent,
		    dp->instance ? dp->instance : "(the bundle's module)",
		    json_array_size(dp->expected) ? (who ? who : "?")
						  : "every node (none known yet)");
	free(who);
	*answer_out = json_pack("{s:s, s:s, s:s?, s:O}", "deployment", dp->id, "bundle", dp->sent,
				"instance", dp->instance, "nodes", dp->expected);
	dep_trim(n);
	return PLANT_OK;
}

/* ---- results ------------------------------------------------------------------------ */

static void take_ready(struct notifier *n, const json_t *body)
{
	const char *node = cicd_jstr(body, "node");
	if (!node || !*node)
		return;
	if (!json_object_get(n->seen, node))
		n->api->log(n->self, PLANT_LOG_INFO, "node %s is ready", node);
	json_t *copy = json_deep_copy(body);
	if (!copy)
		return;
	json_object_set_new(copy, "seen_ms", json_integer((json_int_t)n->api->now_ms(n->self)));
	json_object_set_new(n->seen, node, copy);
}

static void take_result(struct notifier *n, const json_t *body)
{
	const char *id = cicd_jstr(body, "deployment");
	const char *node = cicd_jstr(body, "node");
	const char *state = cicd_jstr(body, "state");
	if (!id || !node || !state)
		return;
	struct dep *dp = dep_find(n, id);
	if (!dp || dp->finished)
		return; /* another notifier's, or too late */
	json_t *cur = json_object_get(dp->nodes, node);
	/* results may come out of order: a final state stays */
	if (is_final(cicd_jstr(cur, "state")) && !is_final(state))
		return;
	json_t *rec = json_pack("{s:s}", "state", state);
	static const char *const keep[] = {"reason",   "version",  "previous_version",
					   "instance", "local_id", "ts"};
	for (size_t i = 0; rec && i < sizeof keep / sizeof keep[0]; i++) {
		json_t *v = json_object_get(body, keep[i]);
		if (v && !json_is_null(v))
			json_object_set(rec, keep[i], v);
	}
	if (!rec)
		return;
	json_object_set_new(dp->nodes, node, rec);
	n->results_taken++;
	n->api->log(n->self, PLANT_LOG_DEBUG, "deployment %s: node %s: %s", id, node, state);
	dep_check(n, dp);
}

/* [instance] Results and node.ready announcements. */
static int on_results(void *state, const plant_msg *const *msgs, size_t count, void *user)
{
	struct notifier *n = state;
	(void)user;
	for (size_t i = 0; i < count; i++) {
		const json_t *body = n->api->msg_body(msgs[i]);
		if (!json_is_object(body))
			continue;
		const char *event = cicd_jstr(body, "event");
		if (event && strcmp(event, "node.ready") == 0)
			take_ready(n, body);
		else if (!event)
			take_result(n, body);
	}
	return PLANT_OK;
}

/* [instance] Deadlines. */
static void on_tick(void *state, void *user)
{
	struct notifier *n = state;
	uint64_t now = n->api->now_ms(n->self);
	(void)user;
	/* dep_finish may trim the list: find one due at a time */
	for (;;) {
		struct dep *due = NULL;
		for (struct dep *dp = n->deps; dp && !due; dp = dp->next)
			if (!dp->finished && now >= dp->deadline_ms)
				due = dp;
		if (!due)
			return;
		dep_finish(n, due);
	}
}

/* ---- the drop directory ----------------------------------------------------------------- */

/* Is `name` deployed already: in flight, or finished with this very file
 * still there (its move failed)? A new file of the same name is not. */
static bool taken(const struct notifier *n, const char *name, const struct stat *st)
{
	for (const struct dep *dp = n->deps; dp; dp = dp->next) {
		if (!dp->watch_file || strcmp(dp->watch_file, name) != 0)
			continue;
		if (!dp->finished || (dp->watch_dev == st->st_dev && dp->watch_ino == st->st_ino &&
				      dp->watch_mtime == st->st_mtime))
			return true;
	}
	return false;
}

/* [instance] New *.bundle files in watch_dir: deployed to every node. */
static void on_watch(void *state, void *user)
{
	struct notifier *n = state;
	(void)user;
	DIR *dir = opendir(n->watch_dir);
	if (!dir) {
		n->api->log(n->self, PLANT_LOG_WARN, "cannot read %s: %s", n->watch_dir,
			    strerror(errno));
		return;
	}
	time_t now = time(NULL);
	struct dirent *e;
	/* names first: starting a deployment changes nothing in the directory,
	 * but a bad file moves */
	json_t *names = json_array();
	while ((e = readdir(dir))) {
		size_t len = strlen(e->d_name);
		if (e->d_name[0] == '.' || len <= 7 || strcmp(e->d_name + len - 7, ".bundle") != 0)
			continue;
		json_array_append_new(names, json_string(e->d_name));
	}
	closedir(dir);
	size_t i;
	json_t *v;
	json_array_foreach(names, i, v)
	{
		const char *name = json_string_value(v);
		char path[4200];
		struct stat st;
		snprintf(path, sizeof path, "%s/%s", n->watch_dir, name);
		if (!name || stat(path, &st) != 0 || !S_ISREG(st.st_mode) || taken(n, name, &st))
			continue;
		if (st.st_mtime > now - SETTLE_S)
			continue; /* still being written, maybe: next time */
		json_t *req = json_pack("{s:s, s:s}", "bundle", path, "by", "watch_dir");
		json_t *answer = NULL;
		char err[1024];
		int rc = dep_start(n, req, name, &st, &answer, err, sizeof err);
		json_decref(req);
		json_decref(answer);
		if (rc == PLANT_OK)
			continue;
		n->api->log(n->self, PLANT_LOG_ERROR, "%s: not deployed: %s", path, err);
		if (rc == PLANT_E_INVALID || rc == PLANT_E_NOTFOUND || rc == PLANT_E_IO)
			watch_move(n, name, false);
	}
	json_decref(names);
}

/* ---- HTTP ------------------------------------------------------------------------------ */

static int reply_json(struct notifier *n, plant_http_req *req, int status, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (!text)
		return n->api->http_reply(req, 500, "application/json",
					  "{\"error\":\"out of memory\"}", 25, NULL);
	int rc = n->api->http_reply(req, status, "application/json", text, strlen(text), NULL);
	free(text);
	return rc;
}

static int reply_error(struct notifier *n, plant_http_req *req, int status, const char *why)
{
	return reply_json(n, req, status, json_pack("{s:s}", "error", why));
}

static int serve_bundle(struct notifier *n, plant_http_req *req, const char *name)
{
	if (!safe_name(name))
		return reply_error(n, req, 404, "no such bundle");
	char path[4200], *data = NULL;
	size_t len = 0;
	snprintf(path, sizeof path, "%s/%s", n->bundle_dir, name);
	int e = cicd_read_file(path, BUNDLE_MAX_BYTES, &data, &len);
	if (e == ENOENT)
		return reply_error(n, req, 404, "no such bundle");
	if (e) {
		char why[512];
		snprintf(why, sizeof why, "cannot read the bundle: %s", strerror(e));
		return reply_error(n, req, 500, why);
	}
	int rc = n->api->http_reply(req, 200, "application/json", data, len, NULL);
	free(data);
	return rc;
}

/* [instance] Everything under `route`. */
static int on_http(void *state, plant_http_req *req, void *user)
{
	struct notifier *n = state;
	struct plant_http_info info = {.struct_size = sizeof info};
	(void)user;
	int rc = n->api->http_request(req, &info);
	if (rc != PLANT_OK)
		return rc;
	const char *tail = info.tail;
	bool get = strcmp(info.method, "GET") == 0;
	bool post = strcmp(info.method, "POST") == 0;

	if (strcmp(tail, "deployments") == 0 && post) {
		json_error_t jerr;
		json_t *body = info.body ? json_loadb(info.body, info.body_len, 0, &jerr) : NULL;
		if (!body) {
			char why[256];
			snprintf(why, sizeof why, "the body must be a JSON object: %s",
				 info.body ? jerr.text : "empty");
			return reply_error(n, req, 400, why);
		}
		json_t *answer = NULL;
		char err[1024];
		rc = dep_start(n, body, NULL, NULL, &answer, err, sizeof err);
		json_decref(body);
		if (rc == PLANT_OK)
			return reply_json(n, req, 202, answer);
		int status = rc == PLANT_E_INVALID    ? 400
			     : rc == PLANT_E_NOTFOUND ? 404
			     : rc == PLANT_E_FULL     ? 429
						      : 500;
		return reply_error(n, req, status, err);
	}
	if (strcmp(tail, "deployments") == 0 && get) {
		json_t *list = json_array();
		for (struct dep *dp = n->deps; dp; dp = dp->next)
			json_array_append_new(list, dep_view(dp));
		return reply_json(n, req, 200, json_pack("{s:o}", "deployments", list));
	}
	if (strncmp(tail, "deployments/", 12) == 0 && get) {
		struct dep *dp = dep_find(n, tail + 12);
		if (!dp)
			return reply_error(n, req, 404, "no such deployment");
		return reply_json(n, req, 200, dep_view(dp));
	}
	if (strcmp(tail, "nodes") == 0 && get)
		return reply_json(n, req, 200, json_pack("{s:O}", "nodes", n->seen));
	if (strncmp(tail, "bundles/", 8) == 0 && get)
		return serve_bundle(n, req, tail + 8);
	return reply_error(n, req, 404, "no such resource");
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static int check_config(plant_instance *self, const struct plant_host_api *api,
			const json_t *config)
{
	static const char *const topics[] = {"publish", "results", "reports"};
	for (size_t i = 0; i < 3; i++) {
		if (!*cicd_jstr(config, topics[i])) {
			api->error(self, topics[i], "'%s' must not be empty", topics[i]);
			return PLANT_E_CONFIG;
		}
	}
	const char *publish = cicd_jstr(config, "publish");
	const char *results = cicd_jstr(config, "results");
	const char *reports = cicd_jstr(config, "reports");
	if (strpbrk(publish, "*?") || strpbrk(reports, "*?")) {
		api->error(self, strpbrk(publish, "*?") ? "publish" : "reports",
			   "'%s' must be a topic, not a pattern",
			   strpbrk(publish, "*?") ? "publish" : "reports");
		return PLANT_E_CONFIG;
	}
	if (cicd_glob_match(results, publish) || cicd_glob_match(results, reports)) {
		api->error(self, "results",
			   "'results' (%s) must not match 'publish' (%s) or 'reports' (%s)",
			   results, publish, reports);
		return PLANT_E_CONFIG;
	}
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(config, "nodes"), i, v)
	{
		if (!json_is_string(v) || !*json_string_value(v)) {
			api->error(self, "nodes", "'nodes' must be a list of node names");
			return PLANT_E_CONFIG;
		}
	}
	if (json_integer_value(json_object_get(config, "timeout")) <= 0) {
		api->error(self, "timeout", "'timeout' must be more than 0");
		return PLANT_E_CONFIG;
	}
	const char *route = cicd_jstr(config, "route");
	size_t rl = strlen(route);
	if (rl < 2 || route[0] != '/' || route[rl - 1] != '/') {
		api->error(self, "route", "'route' must begin and end with /, like \"/v1/cicd/\"");
		return PLANT_E_CONFIG;
	}
	const char *url = cicd_jstr(config, "public_url");
	if (*url && !cicd_is_url(url)) {
		api->error(self, "public_url",
			   "'public_url' must start with http:// or https://, not \"%s\"", url);
		return PLANT_E_CONFIG;
	}
	if (*url && !*cicd_jstr(config, "listener")) {
		api->error(self, "public_url",
			   "'public_url' needs a 'listener' to serve the bundles on");
		return PLANT_E_CONFIG;
	}
	if (*cicd_jstr(config, "watch_dir") &&
	    json_integer_value(json_object_get(config, "watch_every")) <= 0) {
		api->error(self, "watch_every", "'watch_every' must be more than 0");
		return PLANT_E_CONFIG;
	}
	if (json_integer_value(json_object_get(config, "keep")) < 1) {
		api->error(self, "keep", "'keep' must be 1 or more");
		return PLANT_E_CONFIG;
	}
	return PLANT_OK;
}

static int notifier_validate(plant_instance *self, const struct plant_host_api *api,
			     const json_t *config)
{
	return check_config(self, api, config);
}

static void notifier_free(struct notifier *n)
{
	while (n->deps) {
		struct dep *dp = n->deps;
		n->deps = dp->next;
		dep_free(dp);
	}
	json_decref(n->seen);
	free(n->bundle_dir);
	free(n->watch_dir);
	free(n);
}

static char *resolve(const struct plant_host_api *api, plant_instance *self, const char *path)
{
	char *out = NULL;
	if (path[0] == '/')
		return strdup(path);
	if (asprintf(&out, "%s/%s", api->data_dir(self), path) < 0)
		return NULL;
	return out;
}

static int notifier_init(plant_instance *self, const struct plant_host_api *api,
			 const json_t *config, void **state_out)
{
	int rc = check_config(self, api, config);
	if (rc != PLANT_OK)
		return rc;
	struct notifier *n = calloc(1, sizeof *n);
	if (!n) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	n->self = self;
	n->api = api;
	n->publish = cicd_jstr(config, "publish");
	n->results = cicd_jstr(config, "results");
	n->reports = cicd_jstr(config, "reports");
	n->listener = cicd_jstr(config, "listener");
	n->route = cicd_jstr(config, "route");
	n->public_url = cicd_jstr(config, "public_url");
	n->nodes_cfg = json_object_get(config, "nodes");
	n->timeout_ms = (uint64_t)json_integer_value(json_object_get(config, "timeout"));
	n->watch_every_ms = (uint64_t)json_integer_value(json_object_get(config, "watch_every"));
	const json_t *grace = json_object_get(config, "grace");
	n->grace_ms = json_is_integer(grace) ? json_integer_value(grace) : -1;
	n->keep = (size_t)json_integer_value(json_object_get(config, "keep"));
	n->seen = json_object();
	const char *bd = cicd_jstr(config, "bundle_dir");
	if (*bd) {
		n->bundle_dir = resolve(api, self, bd);
	} else {
		char rel[1024];
		snprintf(rel, sizeof rel, "%s/bundles", api->instance_name(self));
		n->bundle_dir = resolve(api, self, rel);
	}
	if (!n->seen || !n->bundle_dir) {
		api->error(self, NULL, "out of memory");
		notifier_free(n);
		return PLANT_E_NOMEM;
	}
	int e = cicd_mkdir_p(n->bundle_dir);
	if (e) {
		api->error(self, "bundle_dir", "cannot make %s: %s", n->bundle_dir, strerror(e));
		notifier_free(n);
		return PLANT_E_IO;
	}
	const char *wd = cicd_jstr(config, "watch_dir");
	if (*wd) {
		n->watch_dir = resolve(api, self, wd);
		if (!n->watch_dir) {
			api->error(self, NULL, "out of memory");
			notifier_free(n);
			return PLANT_E_NOMEM;
		}
		static const char *const subs[] = {"", "/done", "/failed"};
		for (size_t i = 0; i < 3 && !e; i++) {
			char p[4200];
			snprintf(p, sizeof p, "%s%s", n->watch_dir, subs[i]);
			e = cicd_mkdir_p(p);
			if (e)
				api->error(self, "watch_dir", "cannot make %s: %s", p, strerror(e));
		}
		if (e) {
			notifier_free(n);
			return PLANT_E_IO;
		}
	}
	rc = api->subscribe(self, n->results, on_results, NULL, NULL);
	if (rc != PLANT_OK)
		api->error(self, "results", "cannot subscribe to %s: %s", n->results,
			   plant_status_name(rc));
	if (rc == PLANT_OK) {
		rc = api->timer_add(self, TICK_MS, 0, on_tick, NULL, NULL);
		if (rc != PLANT_OK)
			api->error(self, NULL, "cannot add a timer: %s", plant_status_name(rc));
	}
	if (rc == PLANT_OK && n->watch_dir) {
		rc = api->timer_add(self, n->watch_every_ms, 0, on_watch, NULL, NULL);
		if (rc != PLANT_OK)
			api->error(self, "watch_every", "cannot add a timer: %s",
				   plant_status_name(rc));
	}
	if (rc == PLANT_OK && *n->listener) {
		rc = api->http_route(self, n->listener, "GET", n->route, PLANT_ROUTE_PREFIX,
				     on_http, NULL);
		if (rc == PLANT_OK)
			rc = api->http_route(self, n->listener, "POST", n->route,
					     PLANT_ROUTE_PREFIX, on_http, NULL);
		if (rc != PLANT_OK)
			api->error(self, rc == PLANT_E_NOTFOUND ? "listener" : "route",
				   "cannot serve %s on listener \"%s\": %s", n->route, n->listener,
				   plant_status_name(rc));
	}
	if (rc != PLANT_OK) {
		notifier_free(n);
		return rc;
	}
	*state_out = n;
	return PLANT_OK;
}

static void notifier_destroy(void *state)
{
	notifier_free(state);
}

static int notifier_health(void *state, json_t **detail_out)
{
	struct notifier *n = state;
	size_t running = 0;
	for (struct dep *dp = n->deps; dp; dp = dp->next)
		running += dp->finished ? 0 : 1;
	*detail_out = json_pack("{s:I, s:I, s:I, s:I, s:I}", "in_progress", (json_int_t)running,
				"started", (json_int_t)n->started, "reported",
				(json_int_t)n->reported, "complete", (json_int_t)n->complete,
				"nodes_seen", (json_int_t)json_object_size(n->seen));
	return PLANT_OK;
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "cicd_notifier",
	.version = "1.0.0",
	.description = "starts deployments on every node and reports each node's result",
	.config_keys = config_keys,
	.validate = notifier_validate,
	.init = notifier_init,
	.destroy = notifier_destroy,
	.health = notifier_health,
};
