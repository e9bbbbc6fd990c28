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
	char *buf;
	size_t len, cap;
};

/* ---- building a line ---------------------------------------------------- */

static bool buf_reserve(struct sink *s, size_t more)
{
	size_t want = s->len + more + 1; /* room for a NUL */
	size_t cap = s->cap ? s->cap : 256;
	char *p;

	if (want <= s->cap)
		return true;
	while (cap < want)
		cap *= 2;
	p = realloc(s->buf, cap);
	if (!p)
		return false;
	s->buf = p;
	s->cap = cap;
	return true;
}

static bool buf_add(struct sink *s, const char *data, size_t n)
{
	if (!buf_reserve(s, n))
		return false;
	memcpy(s->buf + s->len, data, n);
	s->len += n;
	s->buf[s->len] = '\0';
	return true;
}

static bool buf_adds(struct sink *s, const char *str)
{
	return buf_add(s, str, strlen(str));
}

/* `str` as a JSON string: quotes, backslashes and control characters are
 * escaped, everything else (UTF-8 included) is copied. */
static bool buf_add_json_string(struct sink *s, const char *str)
{
	static const char hex[] = "0123456789abcdef";

	if (!buf_add(s, "\"", 1))
		return false;
	for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
		char esc[6];
		size_t n = 0;

		if (*p == '"' || *p == '\\') {
			esc[n++] = '\\';
			esc[n++] = (char)*p;
		} else if (*p < 0x20) {
			esc[n++] = '\\';
			esc[n++] = 'u';
			esc[n++] = '0';
			esc[n++] = '0';
			esc[n++] = hex[*p >> 4];
			esc[n++] = hex[*p & 0xf];
		} else {
			esc[n++] = (char)*p;
		}
		if (!buf_add(s, esc, n))
			return false;
	}
	return buf_add(s, "\"", 1);
}

/* The line for one message, without the newline, into s->buf. */
static bool build_line(struct sink *s, const plant_msg *msg)
{
	const struct plant_host_api *api = s->api;
	char ts[32];
	size_t body_len = 0;
	const char *body = api->msg_body_text(msg, &body_len);

	snprintf(ts, sizeof(ts), "%" PRIu64, api->msg_ts(msg));
	s->len = 0;
	return buf_adds(s, "{\"id\":") && buf_add_json_string(s, api->msg_id(msg)) &&
	       buf_adds(s, ",\"topic\":") && buf_add_json_string(s, api->msg_topic(msg)) &&
	       buf_adds(s, ",\"ts\":") && buf_adds(s, ts) && buf_adds(s, ",\"body\":") &&
	       buf_add(s, body, body_len) && buf_adds(s, "}");
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
			s->api->log(s->self, PLANT_LOG_INFO, "%s", s->buf);
			continue;
		}
		if (fwrite(s->buf, 1, s->len, s->out) != s->len || putc('\n', s->out) == EOF) {
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
	free(s->buf);
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
