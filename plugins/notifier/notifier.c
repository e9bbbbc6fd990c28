/* notifier: tell people about notifications.
 *
 * Every message on the `subscribe` topics (notify.* by default) is a
 * notification. Each one is appended to a JSON-lines file (always, every
 * one) and printed to stderr as one human line, "plant-7 WARNING L01-S0042
 * too hot: 153.2 C", at most `stderr_max_per_s` a second: the lines beyond
 * that are counted and summed up in one line when the second is over.
 *
 * A notification is read once into a `struct note`, then handed to each
 * output in turn (the file, stderr). Webhooks and mail will be more outputs
 * of the same shape, each with its own filter and rate limit. See README.md.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <plantd/plantd.h>

#include "jsonl.h"

/* The longest message shown on stderr; the file always has all of it. */
#define MAX_HUMAN_TEXT 1000

static const struct plant_config_key config_keys[] = {
	{
		.name = "subscribe",
		.type = PLANT_CFG_ARRAY,
		.default_value = "[\"notify.*\"]",
		.description = "topic patterns whose messages are notifications",
	},
	{
		.name = "path",
		.type = PLANT_CFG_STRING,
		.default_value = "\"notifications.jsonl\"",
		.description = "JSON-lines file every notification is appended to, "
			       "relative to the data directory",
	},
	{
		.name = "stderr",
		.type = PLANT_CFG_BOOL,
		.default_value = "true",
		.description = "print notifications to stderr, one line each",
	},
	{
		.name = "stderr_max_per_s",
		.type = PLANT_CFG_INT,
		.default_value = "5",
		.description = "at most this many stderr lines a second (0: none); "
			       "the rest are counted in one line",
	},
	{
		.name = "min_severity",
		.type = PLANT_CFG_STRING,
		.default_value = "\"info\"",
		.description = "the least severity printed on stderr: info, warning "
			       "or critical (the file gets every notification)",
	},
	{.name = NULL, .type = PLANT_CFG_END},
};

enum severity {
	SEV_INFO = 0,
	SEV_WARNING = 1,
	SEV_CRITICAL = 2,
};

/* One notification, read from a message once for every output. Pointers
 * are [borrowed] from the message, valid during the handler call. */
struct note {
	const plant_msg *msg;
	const char *body_text; /* compact JSON, not NUL-terminated */
	size_t body_len;
	enum severity rank;   /* for filters */
	const char *severity; /* as the body spells it, or "info" */
	const char *text;     /* the body's "message", a string body, or NULL */
};

struct notifier;

/* Where notifications go. deliver() gets a batch: one call per handler
 * call, so that an output may write it at once (the file flushes once). */
struct output {
	const char *name;
	int (*deliver)(struct notifier *nt, const struct note *notes, size_t n);
};

struct notifier {
	plant_instance *self;
	const struct plant_host_api *api;
	const char *site;

	/* the file */
	FILE *out;
	char *path;   /* resolved, for messages */
	bool failing; /* the last write failed: log again only after a success */
	uint64_t write_errors;

	/* stderr */
	bool to_stderr;
	json_int_t max_per_s;
	enum severity min_rank;
	uint64_t window_printed;    /* lines printed in this second */
	uint64_t window_suppressed; /* lines held back in this second */

	uint64_t notifications, suppressed;

	const struct output *outputs[4];
	size_t n_outputs;

	/* one line being built, reused */
	struct jsonl line;
};

/* Text for a one-line human message: control characters become spaces
 * and long texts are cut (with "..."), so that one notification is always
 * one line however its body looks. */
static bool buf_add_human(struct notifier *nt, const char *s, size_t n)
{
	size_t shown = n > MAX_HUMAN_TEXT ? MAX_HUMAN_TEXT : n;

	for (size_t i = 0; i < shown; i++) {
		char c = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? ' ' : s[i];

		if (!jsonl_add(&nt->line, &c, 1))
			return false;
	}
	return shown == n || jsonl_adds(&nt->line, "...");
}

/* ---- reading a notification --------------------------------------------- */

static int severity_rank(const char *name, enum severity *out)
{
	if (strcasecmp(name, "info") == 0)
		*out = SEV_INFO;
	else if (strcasecmp(name, "warning") == 0 || strcasecmp(name, "warn") == 0)
		*out = SEV_WARNING;
	else if (strcasecmp(name, "critical") == 0)
		*out = SEV_CRITICAL;
	else
		return -1;
	return 0;
}

/* A body without "severity" is information; one with a severity we do not
 * know ranks as a warning, so that a filter never hides it for being
 * spelled differently ("error", "alarm"). */
static void note_read(const struct plant_host_api *api, const plant_msg *msg, struct note *n)
{
	const json_t *body = api->msg_body(msg);
	const json_t *sev = json_object_get(body, "severity");
	const json_t *text = json_object_get(body, "message");

	n->msg = msg;
	n->body_text = api->msg_body_text(msg, &n->body_len);
	n->severity = "info";
	n->rank = SEV_INFO;
	if (json_is_string(sev) && json_string_length(sev) > 0) {
		n->severity = json_string_value(sev);
		if (severity_rank(n->severity, &n->rank) != 0)
			n->rank = SEV_WARNING;
	}
	if (json_is_string(text))
		n->text = json_string_value(text);
	else if (json_is_string(body))
		n->text = json_string_value(body);
	else
		n->text = NULL;
}

/* ---- the file ---------------------------------------------------------------- */

/* {"id":..,"topic":..,"ts":..,"body":<the body as published>} */
static bool file_line(struct notifier *nt, const struct note *n)
{
	nt->line.len = 0;
	return jsonl_add_message(&nt->line, nt->api, n->msg) && jsonl_adds(&nt->line, "\n");
}

/* A failed write returns PLANT_E_IO, which the host counts and logs as an
 * error of the instance; the lines of that batch may be lost (there is no
 * retry: a notification is not held anywhere). We log it once per run of
 * failures, and the next batch tries again. */
static int file_deliver(struct notifier *nt, const struct note *notes, size_t n)
{
	int rc = PLANT_OK, err = 0;

	for (size_t i = 0; i < n; i++) {
		if (!file_line(nt, &notes[i])) {
			rc = PLANT_E_NOMEM;
			break;
		}
		if (fwrite(nt->line.buf, 1, nt->line.len, nt->out) != nt->line.len) {
			err = errno;
			rc = PLANT_E_IO;
			break;
		}
	}
	if (rc == PLANT_OK && fflush(nt->out) != 0) {
		err = errno;
		rc = PLANT_E_IO;
	}
	if (rc == PLANT_E_IO) {
		nt->write_errors++;
		nt->api->counter_add(nt->self, "write_errors", 1);
		if (!nt->failing)
			nt->api->log(nt->self, PLANT_LOG_ERROR,
				     "cannot write notifications to %s: %s (logged once until "
				     "a write succeeds)",
				     nt->path, strerror(err));
		nt->failing = true;
		clearerr(nt->out);
	} else if (rc == PLANT_OK) {
		if (nt->failing)
			nt->api->log(nt->self, PLANT_LOG_INFO, "writing to %s again", nt->path);
		nt->failing = false;
	}
	return rc;
}

static const struct output file_output = {"file", file_deliver};

/* ---- stderr ------------------------------------------------------------------ */

/* One write(2) per line: the host logs to the same stderr from other
 * threads, and a single write keeps our line whole. */
static void stderr_write(struct notifier *nt)
{
	const char *p = nt->line.buf;
	size_t left = nt->line.len;

	while (left > 0) {
		ssize_t w = write(STDERR_FILENO, p, left);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* nowhere to complain to */
		p += w;
		left -= (size_t)w;
	}
}

/* "plant-7 WARNING L01-S0042 too hot: 153.2 C" */
static bool human_line(struct notifier *nt, const struct note *n)
{
	nt->line.len = 0;
	if (!buf_add_human(nt, nt->site, strlen(nt->site)) || !jsonl_adds(&nt->line, " "))
		return false;
	for (const char *p = n->severity; *p && p - n->severity < 32; p++) {
		char c = *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;

		if ((unsigned char)c <= ' ' || c == 0x7f)
			c = '_';
		if (!jsonl_add(&nt->line, &c, 1))
			return false;
	}
	if (!jsonl_adds(&nt->line, " "))
		return false;
	if (n->text ? !buf_add_human(nt, n->text, strlen(n->text))
		    : !buf_add_human(nt, n->body_text, n->body_len))
		return false;
	return jsonl_adds(&nt->line, "\n");
}

static int stderr_deliver(struct notifier *nt, const struct note *notes, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (notes[i].rank < nt->min_rank)
			continue;
		if (nt->window_printed >= (uint64_t)nt->max_per_s) {
			nt->window_suppressed++;
			nt->suppressed++;
			nt->api->counter_add(nt->self, "suppressed", 1);
			continue;
		}
		if (!human_line(nt, &notes[i]))
			return PLANT_E_NOMEM;
		stderr_write(nt);
		nt->window_printed++;
	}
	return PLANT_OK;
}

static const struct output stderr_output = {"stderr", stderr_deliver};

/* The second is over: say how many lines it held back, open the next. */
static void stderr_roll(struct notifier *nt)
{
	if (nt->window_suppressed > 0) {
		char line[64];

		nt->line.len = 0;
		snprintf(line, sizeof(line), "%" PRIu64, nt->window_suppressed);
		if (jsonl_adds(&nt->line, line) &&
		    jsonl_adds(&nt->line, nt->window_suppressed == 1 ? " more notification"
								     : " more notifications") &&
		    jsonl_adds(&nt->line, " in the last second (see ") &&
		    jsonl_adds(&nt->line, nt->path) && jsonl_adds(&nt->line, ")\n"))
			stderr_write(nt);
	}
	nt->window_printed = 0;
	nt->window_suppressed = 0;
}

static void on_second(void *state, void *user)
{
	(void)user;
	stderr_roll(state);
}

/* ---- callbacks ------------------------------------------------------------------ */

/* [instance]: every subscription lands here, one batch at a time. Each
 * output gets the whole batch; the first failure is returned (after the
 * other outputs had their turn). */
static int on_notifications(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	struct notifier *nt = state;
	struct note stack[64], *notes = stack;
	int rc = PLANT_OK;

	(void)user;
	if (n > sizeof(stack) / sizeof(stack[0])) {
		notes = malloc(n * sizeof(*notes));
		if (!notes)
			return PLANT_E_NOMEM;
	}
	for (size_t i = 0; i < n; i++)
		note_read(nt->api, msgs[i], &notes[i]);
	nt->notifications += n;
	nt->api->counter_add(nt->self, "notifications", n);

	for (size_t i = 0; i < nt->n_outputs; i++) {
		int orc = nt->outputs[i]->deliver(nt, notes, n);

		if (orc != PLANT_OK && rc == PLANT_OK)
			rc = orc;
	}
	if (notes != stack)
		free(notes);
	return rc;
}

static int check_config(plant_instance *self, const struct plant_host_api *api,
			const json_t *config, enum severity *min_out)
{
	const json_t *subs = json_object_get(config, "subscribe");
	const char *path = json_string_value(json_object_get(config, "path"));
	const char *min = json_string_value(json_object_get(config, "min_severity"));
	json_int_t max = json_integer_value(json_object_get(config, "stderr_max_per_s"));
	enum severity rank;
	size_t i;
	const json_t *v;

	if (!json_is_array(subs) || json_array_size(subs) == 0) {
		api->error(self, "subscribe", "needs at least one topic pattern");
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
	if (!path || !*path) {
		api->error(self, "path", "must name a file");
		return PLANT_E_CONFIG;
	}
	if (max < 0) {
		api->error(self, "stderr_max_per_s",
			   "must be 0 (never print) or more, not %" JSON_INTEGER_FORMAT, max);
		return PLANT_E_CONFIG;
	}
	if (!min || severity_rank(min, &rank) != 0 || strcasecmp(min, "warn") == 0) {
		api->error(self, "min_severity",
			   "must be \"info\", \"warning\" or \"critical\", not \"%s\"",
			   min ? min : "");
		return PLANT_E_CONFIG;
	}
	if (min_out)
		*min_out = rank;
	return PLANT_OK;
}

static int notifier_validate(plant_instance *self, const struct plant_host_api *api,
			     const json_t *config)
{
	return check_config(self, api, config, NULL);
}

/* mkdir -p of the directory part of `path`. */
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
	char *full;

	if (path[0] == '/' || !dir || !*dir)
		return strdup(path);
	if (asprintf(&full, "%s/%s", dir, path) < 0)
		return NULL;
	return full;
}

static void notifier_free(struct notifier *nt)
{
	if (nt->out)
		fclose(nt->out);
	free(nt->path);
	jsonl_free(&nt->line);
	free(nt);
}

/* The file is opened here, so that a path that cannot be written fails the
 * instance at startup with the key named, not at the first notification. */
static int notifier_init(plant_instance *self, const struct plant_host_api *api,
			 const json_t *config, void **state_out)
{
	const json_t *subs = json_object_get(config, "subscribe");
	const char *path = json_string_value(json_object_get(config, "path"));
	struct notifier *nt;
	enum severity min_rank = SEV_INFO;
	size_t i;
	const json_t *v;
	int rc;

	rc = check_config(self, api, config, &min_rank);
	if (rc != PLANT_OK)
		return rc;
	nt = calloc(1, sizeof(*nt));
	if (!nt) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	nt->self = self;
	nt->api = api;
	nt->site = api->site_name(self);
	if (!nt->site)
		nt->site = "";
	nt->min_rank = min_rank;
	nt->max_per_s = json_integer_value(json_object_get(config, "stderr_max_per_s"));
	nt->to_stderr = json_is_true(json_object_get(config, "stderr")) && nt->max_per_s > 0;

	nt->path = resolve_path(api, self, path);
	if (!nt->path) {
		api->error(self, NULL, "out of memory");
		notifier_free(nt);
		return PLANT_E_NOMEM;
	}
	if (make_parent_dirs(nt->path) != 0) {
		api->error(self, "path", "cannot create the directory of %s: %s", nt->path,
			   strerror(errno));
		notifier_free(nt);
		return PLANT_E_IO;
	}
	nt->out = fopen(nt->path, "ae");
	if (!nt->out) {
		api->error(self, "path", "cannot open %s for appending: %s", nt->path,
			   strerror(errno));
		notifier_free(nt);
		return PLANT_E_IO;
	}

	nt->outputs[nt->n_outputs++] = &file_output;
	if (nt->to_stderr) {
		nt->outputs[nt->n_outputs++] = &stderr_output;
		rc = api->timer_add(self, 1000, 0, on_second, NULL, NULL);
		if (rc != PLANT_OK) {
			api->error(self, NULL, "cannot add a timer: %s", plant_status_name(rc));
			notifier_free(nt);
			return rc;
		}
	}

	/* Subscriptions last: the host drops them (and the timer) itself if
	 * init() fails. */
	json_array_foreach(subs, i, v)
	{
		const char *pattern = json_string_value(v);

		rc = api->subscribe(self, pattern, on_notifications, NULL, NULL);
		if (rc != PLANT_OK) {
			api->error(self, "subscribe", "cannot subscribe to \"%s\": %s", pattern,
				   plant_status_name(rc));
			notifier_free(nt);
			return rc;
		}
	}
	*state_out = nt;
	return PLANT_OK;
}

/* Nothing arrives after stop(): what the last second held back is said
 * now rather than never. */
static void notifier_stop(void *state)
{
	struct notifier *nt = state;

	if (nt->to_stderr)
		stderr_roll(nt);
	if (fflush(nt->out) != 0)
		nt->api->log(nt->self, PLANT_LOG_ERROR, "cannot write notifications to %s: %s",
			     nt->path, strerror(errno));
}

static void notifier_destroy(void *state)
{
	notifier_free(state);
}

/* Not healthy while the file cannot be written. */
static int notifier_health(void *state, json_t **detail_out)
{
	const struct notifier *nt = state;

	*detail_out =
		json_pack("{s:I, s:I, s:I, s:s}", "notifications", (json_int_t)nt->notifications,
			  "suppressed", (json_int_t)nt->suppressed, "write_errors",
			  (json_int_t)nt->write_errors, "path", nt->path);
	return nt->failing ? PLANT_E_IO : PLANT_OK;
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "notifier",
	.version = "1.0.0",
	.description = "appends notifications to a file and prints them on stderr, rate-limited",
	.config_keys = config_keys,
	.validate = notifier_validate,
	.init = notifier_init,
	.stop = notifier_stop,
	.destroy = notifier_destroy,
	.health = notifier_health,
};
