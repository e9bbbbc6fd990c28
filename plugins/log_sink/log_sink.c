/* log_sink: write every message of some topics as one JSON line.
 *
 * Each message becomes {"id":..,"topic":..,"ts":..,"body":<body>} with the
 * body copied verbatim from the message's JSON text (never parsed). Lines go
 * to `path`, relative to the instance's data directory, or through the host
 * log when there is no path. See README.md for the keys.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <plantd/plantd.h>

#include "jsonl.h"

static const struct plant_config_key config_keys[] = {
	{
		.name = "subscribe",
		.type = PLANT_CFG_ARRAY,
		.default_value = "[]",
		.description = "topic patterns to record (array of strings)",
	},
	{
		.name = "queue",
		.type = PLANT_CFG_STRING,
		.description = "a queue to consume: each message is acked once written "
			       "(and comes back if the write fails)",
	},
	{
		.name = "path",
		.type = PLANT_CFG_STRING,
		.description = "file to append to, relative to the data directory; "
			       "absent: the host log",
	},
	{
		.name = "flush",
		.type = PLANT_CFG_BOOL,
		.default_value = "true",
		.description = "flush the file after each batch",
	},
	{.name = NULL, .type = PLANT_CFG_END},
};

struct sink {
	plant_instance *self;
	const struct plant_host_api *api;
	FILE *out;  /* NULL: write through api->log */
	char *path; /* the resolved path, for messages */
	bool flush;
	bool failing; /* the last write failed */
	uint64_t messages;
	/* One line being built, reused from message to message. */
	struct jsonl line;
};

/* The line for one message, without the newline, into s->line. */
static bool build_line(struct sink *s, const plant_msg *msg)
{
	s->line.len = 0;
	return jsonl_add_message(&s->line, s->api, msg);
}

/* ---- callbacks ---------------------------------------------------------- */

/* Shared by validate() and init(): init() may run without validate() first.
 * The key table already guarantees `subscribe` is an array. */
static int check_config(plant_instance *self, const struct plant_host_api *api,
			const json_t *config)
{
	const json_t *subs = json_object_get(config, "subscribe");
	size_t i;
	const json_t *v;

	if (!json_is_array(subs) ||
	    (json_array_size(subs) == 0 && !json_object_get(config, "queue"))) {
		api->error(self, "subscribe", "needs at least one topic pattern, or a queue");
		return PLANT_E_CONFIG;
	}
	json_array_foreach(subs, i, v)
	{
		if (!json_is_string(v) || json_string_length(v) == 0) {
			api->error(self, "subscribe",
				   "entry %zu is not a topic pattern (a non-empty string)", i + 1);
			return PLANT_E_CONFIG;
		}
	}
	return PLANT_OK;
}

static int sink_validate(plant_instance *self, const struct plant_host_api *api,
			 const json_t *config)
{
	return check_config(self, api, config);
}

/* [instance], so no lock around the file: every subscription of this
 * instance is delivered here one batch at a time. A failed write returns
 * PLANT_E_IO (the host counts and logs it) and the next batch tries again;
 * lines already written stay, those after the failure are lost. */
static int sink_on_messages(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	struct sink *s = state;
	size_t done = 0;
	int rc = PLANT_OK, err = 0;

	(void)user;
	for (; done < n; done++) {
		if (!build_line(s, msgs[done])) {
			rc = PLANT_E_NOMEM;
			break;
		}
		if (!s->out) {
			s->api->log(s->self, PLANT_LOG_INFO, "%s", s->line.buf);
			continue;
		}
		if (fwrite(s->line.buf, 1, s->line.len, s->out) != s->line.len ||
		    putc('\n', s->out) == EOF) {
			err = errno;
			rc = PLANT_E_IO;
			break;
		}
	}
	if (s->out && rc == PLANT_OK && s->flush && fflush(s->out) != 0) {
		err = errno;
		rc = PLANT_E_IO;
	}

	if (rc == PLANT_E_IO) {
		/* Once per failure streak, not once per batch. */
		if (!s->failing)
			s->api->log(s->self, PLANT_LOG_ERROR, "cannot write %s: %s", s->path,
				    strerror(err));
		s->failing = true;
		clearerr(s->out);
	} else if (rc == PLANT_OK) {
		s->failing = false;
	}
	if (done > 0) {
		s->messages += done;
		s->api->counter_add(s->self, "messages", done);
	}
	return rc;
}

/* mkdir -p of the directory part of `path`, so that a fresh data directory
 * (or path = "logs/x.jsonl") works without preparing anything by hand. */
static int make_parent_dirs(char *path)
{
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) != 0 && errno != EEXIST) {
			*p = '/';
			return -1;
		}
		*p = '/';
	}
	return 0;
}

static char *resolve_path(const struct plant_host_api *api, plant_instance *self, const char *path)
{
	const char *dir = api->data_dir(self);
	size_t n;
	char *full;

	if (path[0] == '/' || !dir || !*dir)
		return strdup(path);
	n = strlen(dir) + 1 + strlen(path) + 1;
	full = malloc(n);
	if (full)
		snprintf(full, n, "%s/%s", dir, path);
	return full;
}

static void sink_free(struct sink *s)
{
	if (s->out)
		fclose(s->out);
	free(s->path);
	jsonl_free(&s->line);
	free(s);
}

/* The file is opened here rather than in start() so that a bad path fails
 * the instance at init, with the key named, before anything runs. */
static int sink_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		     void **state_out)
{
	const char *path = json_string_value(json_object_get(config, "path"));
	const json_t *subs = json_object_get(config, "subscribe");
	struct sink *s;
	size_t i;
	const json_t *v;
	int rc;

	rc = check_config(self, api, config);
	if (rc != PLANT_OK)
		return rc;

	s = calloc(1, sizeof(*s));
	if (!s) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	s->self = self;
	s->api = api;
	s->flush = json_is_true(json_object_get(config, "flush"));

	if (path) {
		s->path = resolve_path(api, self, path);
		if (!s->path) {
			api->error(self, NULL, "out of memory");
			sink_free(s);
			return PLANT_E_NOMEM;
		}
		if (make_parent_dirs(s->path) != 0 || !(s->out = fopen(s->path, "a"))) {
			int err = errno;

			api->error(self, "path", "cannot open %s: %s", s->path, strerror(err));
			sink_free(s);
			return PLANT_E_IO;
		}
	}

	/* Subscriptions last: the host drops them itself if init() fails. */
	json_array_foreach(subs, i, v)
	{
		const char *pattern = json_string_value(v);

		rc = api->subscribe(self, pattern, sink_on_messages, NULL, NULL);
		if (rc != PLANT_OK) {
			api->error(self, "subscribe", "cannot subscribe to \"%s\": %s", pattern,
				   plant_status_name(rc));
			sink_free(s);
			return rc;
		}
	}

	const char *queue = json_string_value(json_object_get(config, "queue"));
	if (queue) {
		if (!PLANT_API_HAS(api, consume)) {
			api->error(self, "queue", "this host has no queues (SDK 1.1 needed)");
			sink_free(s);
			return PLANT_E_UNSUPPORTED;
		}
		rc = api->consume(self, queue, sink_on_messages, NULL, 0, NULL);
		if (rc != PLANT_OK) {
			api->error(self, "queue", "cannot consume \"%s\": %s", queue,
				   plant_status_name(rc));
			sink_free(s);
			return rc;
		}
	}

	*state_out = s;
	return PLANT_OK;
}

/* Nothing arrives after stop(): push out what flush = false left buffered. */
static void sink_stop(void *state)
{
	struct sink *s = state;

	if (s->out && fflush(s->out) != 0)
		s->api->log(s->self, PLANT_LOG_ERROR, "cannot write %s: %s", s->path,
			    strerror(errno));
}

static void sink_destroy(void *state)
{
	sink_free(state);
}

/* Unhealthy while writes fail; healthy again after the next good batch. */
static int sink_health(void *state, json_t **detail_out)
{
	const struct sink *s = state;

	*detail_out =
		json_pack("{s:I, s:s?}", "messages", (json_int_t)s->messages, "path", s->path);
	return s->failing ? PLANT_E_IO : PLANT_OK;
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "log_sink",
	.version = "1.0.0",
	.description = "writes every message of some topics as one JSON line",
	.config_keys = config_keys,
	.validate = sink_validate,
	.init = sink_init,
	.stop = sink_stop,
	.destroy = sink_destroy,
	.health = sink_health,
};
