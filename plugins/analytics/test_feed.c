/* Test fixture for the analytics tests (never installed): publishes the
 * lines of a file, each a JSON message body, on `topic`, `batch` lines per
 * tick of `every`, then logs "fed N messages". Blank lines are skipped. A
 * publish refused for backpressure is retried at the next tick. With `log`,
 * the id of every message whose publish reported success is appended to
 * that file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plantd/plantd.h>

struct feed {
	plant_instance *self;
	const struct plant_host_api *api;
	const char *topic;
	char **lines;
	size_t n, next;
	json_int_t batch;
	FILE *log;
};

static void feed_free(struct feed *f)
{
	for (size_t i = 0; i < f->n; i++)
		free(f->lines[i]);
	free(f->lines);
	if (f->log)
		fclose(f->log);
	free(f);
}

static void on_tick(void *state, void *user)
{
	struct feed *f = state;

	(void)user;
	for (json_int_t k = 0; k < f->batch && f->next < f->n; k++) {
		const char *line = f->lines[f->next];
		struct plant_publish p = {
			.struct_size = sizeof(p),
			.topic = f->topic,
			.text = line,
			.text_len = strlen(line),
		};
		int rc = f->api->publish_ex(f->self, &p);

		if (rc == PLANT_E_FULL)
			return;
		if (rc != PLANT_OK) {
			f->api->log(f->self, PLANT_LOG_ERROR, "line %zu not published: %s",
				    f->next + 1, plant_status_name(rc));
		} else if (f->log) {
			fprintf(f->log, "%s\n", p.id_out);
			fflush(f->log);
		}
		if (++f->next == f->n)
			f->api->log(f->self, PLANT_LOG_INFO, "fed %zu messages", f->n);
	}
}

static int read_lines(struct feed *f, const char *path)
{
	FILE *in = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0, cap_lines = 0;
	ssize_t len;

	if (!in)
		return -1;
	while ((len = getline(&line, &cap, in)) >= 0) {
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (len == 0)
			continue;
		if (f->n == cap_lines) {
			size_t c = cap_lines ? cap_lines * 2 : 64;
			char **v = realloc(f->lines, c * sizeof(*v));

			if (!v)
				break;
			f->lines = v;
			cap_lines = c;
		}
		f->lines[f->n] = strdup(line);
		if (f->lines[f->n])
			f->n++;
	}
	free(line);
	fclose(in);
	return 0;
}

static int feed_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		     void **state_out)
{
	const char *path = json_string_value(json_object_get(config, "path"));
	const char *log = json_string_value(json_object_get(config, "log"));
	json_int_t every = json_integer_value(json_object_get(config, "every"));
	struct feed *f = calloc(1, sizeof(*f));
	int rc;

	if (!f)
		return PLANT_E_NOMEM;
	f->self = self;
	f->api = api;
	f->topic = json_string_value(json_object_get(config, "topic"));
	f->batch = json_integer_value(json_object_get(config, "batch"));
	if (read_lines(f, path) != 0) {
		api->error(self, "path", "cannot read %s", path);
		feed_free(f);
		return PLANT_E_IO;
	}
	if (log && !(f->log = fopen(log, "a"))) {
		api->error(self, "log", "cannot open %s", log);
		feed_free(f);
		return PLANT_E_IO;
	}
	rc = api->timer_add(self, every > 0 ? (uint64_t)every : 1, 0, on_tick, NULL, NULL);
	if (rc != PLANT_OK) {
		feed_free(f);
		return rc;
	}
	*state_out = f;
	return PLANT_OK;
}

static void feed_destroy(void *state)
{
	feed_free(state);
}

static const struct plant_config_key keys[] = {
	{"path", PLANT_CFG_STRING, 1, NULL, "file of message bodies, one JSON text a line"},
	{"topic", PLANT_CFG_STRING, 1, NULL, "topic to publish on"},
	{"batch", PLANT_CFG_INT, 0, "10", "lines per tick"},
	{"every", PLANT_CFG_DURATION, 0, "\"20ms\"", "tick"},
	{"log", PLANT_CFG_STRING, 0, NULL, "file of published message ids"},
	{NULL, PLANT_CFG_END, 0, NULL, NULL},
};

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,	 .name = "analytics_feed",
	.version = "1.0.0",	 .description = "test fixture: publishes the lines of a file",
	.config_keys = keys,	 .init = feed_init,
	.destroy = feed_destroy,
};
