/* plantctl: the admin command line of plantd. It speaks the admin listener's
 * HTTP API (GET /healthz, /v1/...) through libcurl and prints tables for
 * people, or the server's own JSON (--json) for scripts.
 *
 * Exit status: 0 on success, 1 when plantd cannot be reached, refuses the
 * request or (status) reports the site failing, 2 for a bad command line. */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXIT_FAIL	  1
#define EXIT_USAGE	  2
#define DEFAULT_URL	  "http://127.0.0.1:8470"
#define DEFAULT_TIMEOUT_S 30.0
#define DEFAULT_PEEK	  10
#define ERROR_BODY_MAX	  65536
#define HELP_COLUMN	  25

struct buf {
	char *data; /* NUL-terminated once anything was appended */
	size_t len, cap;
};

/* What one command line asks for, and the connection it is served on. */
struct ctl {
	char *url;	   /* the admin listener, without a trailing '/' */
	const char *token; /* NULL: no Authorization header */
	int json;
	double timeout_s;   /* 0: no limit */
	long count;	    /* -n, 0 when not given */
	const char *as;	    /* load --as NAME */
	const char *config; /* load --config JSON */
	int optional;	    /* load --optional */
	const char *grace;  /* deploy --grace DURATION */
	int wait;	    /* deploy --wait */
	CURL *curl;
	char errbuf[CURL_ERROR_SIZE];
};

struct reply {
	long status;
	struct buf body;
};

struct command {
	const char *name;
	const char *args; /* the synopsis after the name */
	const char *help; /* lines, '\n'-separated, for the usage text */
	int min_args, max_args;
	int takes_count;  /* accepts -n */
	int takes_load;	  /* accepts --as, --config, --optional */
	int takes_deploy; /* accepts --as, --grace, --wait */
	int (*run)(struct ctl *ctl, char **args);
};

/* ---- small helpers -------------------------------------------------------- */

static void die_nomem(void)
{
	fputs("plantctl: out of memory\n", stderr);
	exit(EXIT_FAIL);
}

static void buf_append(struct buf *b, const void *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->data, cap);
		if (!p)
			die_nomem();
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void buf_printf(struct buf *b, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof small) {
		buf_append(b, small, (size_t)n);
		return;
	}
	char *big = malloc((size_t)n + 1);
	if (!big)
		die_nomem();
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	buf_append(b, big, (size_t)n);
	free(big);
}

static const char *buf_str(const struct buf *b)
{
	return b->data ? b->data : "";
}

static void buf_free(struct buf *b)
{
	free(b->data);
	*b = (struct buf){0};
}

/* A name (queue, topic, pattern) as one path segment: everything but
 * RFC 3986 unreserved characters and '*' is percent-encoded, so '?' in a
 * pattern and '/' cannot change the route. */
static void buf_append_segment(struct buf *b, const char *name)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		unsigned char c = *p;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~' || c == '*') {
			buf_append(b, p, 1);
		} else {
			char enc[3] = {'%', hex[c >> 4], hex[c & 15]};
			buf_append(b, enc, 3);
		}
	}
}

static int parse_long(const char *s, long min, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min)
		return -1;
	*out = v;
	return 0;
}

/* The first line of a text, without trailing blanks, cut to fit `size`. */
static void first_line(const char *text, char *out, size_t size)
{
	size_t n = strcspn(text, "\r\n");
	while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\t'))
		n--;
	if (n >= size)
		n = size - 1;
	memcpy(out, text, n);
	out[n] = '\0';
}

/* ---- HTTP ----------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	buf_append(arg, data, size * nmemb);
	return size * nmemb;
}

/* Sets what every request shares; the caller adds the method, the body and
 * the write callback. The returned header list is the caller's to free. */
static struct curl_slist *request_setup(struct ctl *ctl, const char *path, int has_body)
{
	CURL *c = ctl->curl;
	struct buf url = {0};
	buf_printf(&url, "%s%s", ctl->url, path);
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url.data);
	buf_free(&url); /* libcurl keeps its own copy */
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ctl->errbuf);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "plantctl/" PLANTCTL_VERSION);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
	ctl->errbuf[0] = '\0';

	struct curl_slist *headers = NULL, *h;
	struct buf line = {0};
	if (ctl->token && *ctl->token) {
		buf_printf(&line, "Authorization: Bearer %s", ctl->token);
		if (!(h = curl_slist_append(headers, line.data)))
			die_nomem();
		headers = h;
	}
	buf_free(&line);
	/* no "Expect: 100-continue" round trip; no form content type on an
	 * empty POST */
	const char *fixed[] = {"Accept: application/json, application/x-ndjson", "Expect:",
			       has_body ? "Content-Type: application/json" : "Content-Type:"};
	for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
		if (!(h = curl_slist_append(headers, fixed[i])))
			die_nomem();
		headers = h;
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	return headers;
}

static void report_transport_error(struct ctl *ctl, CURLcode rc)
{
	const char *why = ctl->errbuf[0] ? ctl->errbuf : curl_easy_strerror(rc);
	if (rc == CURLE_OPERATION_TIMEDOUT)
		fprintf(stderr, "plantctl: no answer from plantd at %s within %g s: %s\n", ctl->url,
			ctl->timeout_s, why);
	else
		fprintf(stderr, "plantctl: cannot reach plantd at %s: %s\n", ctl->url, why);
}

/* One request, its whole answer in `out` (the caller frees out->body).
 * Returns 0 when plantd answered, whatever the status; -1 (reported) when
 * it could not be reached. */
static int http_call(struct ctl *ctl, const char *method, const char *path, const char *body,
		     size_t body_len, struct reply *out)
{
	CURL *c = ctl->curl;
	*out = (struct reply){0};
	struct curl_slist *headers = request_setup(ctl, path, body != NULL);
	if (strcmp(method, "POST") == 0) {
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_len : 0));
	} else if (strcmp(method, "GET") != 0) {
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	}
	if (ctl->timeout_s > 0)
		curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(ctl->timeout_s * 1000));
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &out->body);
	CURLcode rc = curl_easy_perform(c);
	curl_slist_free_all(headers);
	if (rc != CURLE_OK) {
		report_transport_error(ctl, rc);
		buf_free(&out->body);
		return -1;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
	return 0;
}

/* "plantctl: STATUS: MESSAGE" from a refusal: the {"error"} text, else the
 * first line of the body. */
static void report_http_error(struct ctl *ctl, long status, const char *body)
{
	char text[512];
	json_t *doc = json_loads(body, JSON_DECODE_ANY, NULL);
	const char *msg = json_string_value(json_object_get(doc, "error"));
	if (msg)
		snprintf(text, sizeof text, "%s", msg);
	else
		first_line(body, text, sizeof text);
	json_decref(doc);
	if (!text[0])
		snprintf(text, sizeof text, "HTTP error");
	fprintf(stderr, "plantctl: %ld: %s%s\n", status, text,
		status == 401 && !(ctl->token && *ctl->token) ? " (set --token or PLANTD_TOKEN)"
							      : "");
}

/* A request that must succeed with a JSON answer. Returns the parsed answer
 * (new reference), or NULL after reporting why not. */
static json_t *http_json(struct ctl *ctl, const char *method, const char *path, const char *body,
			 size_t body_len)
{
	struct reply r;
	if (http_call(ctl, method, path, body, body_len, &r) != 0)
		return NULL;
	json_t *doc = NULL;
	if (r.status < 200 || r.status > 299) {
		report_http_error(ctl, r.status, buf_str(&r.body));
	} else {
		json_error_t jerr;
		doc = json_loads(buf_str(&r.body), JSON_DECODE_ANY, &jerr);
		if (!doc)
			fprintf(stderr, "plantctl: %s%s answered with something not JSON: %s\n",
				ctl->url, path, jerr.text);
	}
	buf_free(&r.body);
	return doc;
}

/* ---- output --------------------------------------------------------------- */

static void print_json(const json_t *doc)
{
	json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY);
	putchar('\n');
}

/* A JSON value on one line: strings bare, everything else compact JSON. */
static char *value_text(const json_t *v)
{
	if (!v || json_is_null(v))
		return strdup("-");
	if (json_is_string(v))
		return strdup(json_string_value(v));
	return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

static void format_ms(double ms, char *out, size_t size)
{
	long long s = (long long)(ms / 1000);
	if (ms < 1000)
		snprintf(out, size, "%.0fms", ms);
	else if (ms < 60000)
		snprintf(out, size, "%.1fs", ms / 1000);
	else if (s < 3600)
		snprintf(out, size, "%lldm%02llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(out, size, "%lldh%02lldm", s / 3600, s % 3600 / 60);
	else
		snprintf(out, size, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
}

enum cell_kind {
	CELL_TEXT, /* strings as they are, numbers as numbers */
	CELL_BOOL, /* yes / no */
	CELL_AGE,  /* milliseconds as 850ms, 12.3s, 4m05s; "-" for an empty queue */
	CELL_COUNT /* a number, or the length of a list */
};

struct column {
	const char *title;
	const char *key;
	enum cell_kind kind;
};

static char *cell_text(const json_t *row, const struct column *col)
{
	const json_t *v = json_object_get(row, col->key);
	char tmp[64];
	switch (col->kind) {
	case CELL_BOOL:
		if (json_is_boolean(v))
			return strdup(json_is_true(v) ? "yes" : "no");
		break;
	case CELL_AGE:
		if (json_integer_value(json_object_get(row, "depth")) == 0 &&
		    json_is_integer(json_object_get(row, "depth")))
			return strdup("-");
		if (json_is_number(v)) {
			format_ms(json_number_value(v), tmp, sizeof tmp);
			return strdup(tmp);
		}
		break;
	case CELL_COUNT:
		if (json_is_array(v)) {
			snprintf(tmp, sizeof tmp, "%zu", json_array_size(v));
			return strdup(tmp);
		}
		break;
	case CELL_TEXT:
		break;
	}
	return value_text(v);
}

/* Rows (objects) as columns aligned on their widest cell, two spaces apart. */
static void print_table(const json_t *rows, const struct column *cols, size_t ncols)
{
	size_t nrows = json_array_size(rows);
	char **cells = calloc((nrows + 1) * ncols, sizeof *cells);
	size_t *width = calloc(ncols, sizeof *width);
	if (!cells || !width)
		die_nomem();
	for (size_t j = 0; j < ncols; j++)
		cells[j] = strdup(cols[j].title);
	for (size_t i = 0; i < nrows; i++)
		for (size_t j = 0; j < ncols; j++)
			cells[(i + 1) * ncols + j] = cell_text(json_array_get(rows, i), &cols[j]);
	for (size_t k = 0; k < (nrows + 1) * ncols; k++) {
		if (!cells[k])
			die_nomem();
		size_t w = strlen(cells[k]);
		if (w > width[k % ncols])
			width[k % ncols] = w;
	}
	for (size_t i = 0; i <= nrows; i++) {
		for (size_t j = 0; j < ncols; j++) {
			const char *s = cells[i * ncols + j];
			if (j + 1 < ncols)
				printf("%-*s  ", (int)width[j], s);
			else
				printf("%s\n", s);
		}
	}
	for (size_t k = 0; k < (nrows + 1) * ncols; k++)
		free(cells[k]);
	free(cells);
	free(width);
}

/* GET PATH and print the list under KEY as a table, or the answer (--json). */
static int list_command(struct ctl *ctl, const char *path, const char *key,
			const struct column *cols, size_t ncols)
{
	json_t *doc = http_json(ctl, "GET", path, NULL, 0);
	if (!doc)
		return EXIT_FAIL;
	int rc = 0;
	const json_t *rows = json_object_get(doc, key);
	if (ctl->json) {
		print_json(doc);
	} else if (!json_is_array(rows)) {
		fprintf(stderr, "plantctl: %s%s answered without a \"%s\" list\n", ctl->url, path,
			key);
		rc = EXIT_FAIL;
	} else {
		print_table(rows, cols, ncols);
	}
	json_decref(doc);
	return rc;
}

/* "2024-05-01T12:00:00.123Z" from milliseconds since the epoch. */
static void format_ts(const json_t *ts, char *out, size_t size)
{
	if (json_is_string(ts)) {
		snprintf(out, size, "%s", json_string_value(ts));
		return;
	}
	if (!json_is_integer(ts)) {
		snprintf(out, size, "-");
		return;
	}
	json_int_t ms = json_integer_value(ts);
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	char date[32];
	if (!gmtime_r(&secs, &tm) || !strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm)) {
		snprintf(out, size, "%lld", (long long)ms);
		return;
	}
	snprintf(out, size, "%s.%03dZ", date, (int)(ms % 1000));
}

/* ---- commands --------------------------------------------------------------- */

static double metric_value(const char *metrics, const char *name)
{
	size_t n = strlen(name);
	for (const char *line = metrics; line && *line;) {
		if (strncmp(line, name, n) == 0 && line[n] == ' ')
			return strtod(line + n + 1, NULL);
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	return -1;
}

/* "version" of plantd_build_info{version="0.1.0",abi="1.5"}, or "". */
static void metric_version(const char *metrics, char *out, size_t size)
{
	out[0] = '\0';
	const char *p = strstr(metrics, "plantd_build_info{");
	if (p && (p = strstr(p, "version=\"")) != NULL) {
		p += strlen("version=\"");
		size_t n = strcspn(p, "\"\n");
		if (n >= size)
			n = size - 1;
		memcpy(out, p, n);
		out[n] = '\0';
	}
}

static void format_uptime(double s, char *out, size_t size)
{
	long long t = (long long)s;
	if (t >= 86400)
		snprintf(out, size, "%lldd %lld:%02lld:%02lld", t / 86400, t % 86400 / 3600,
			 t % 3600 / 60, t % 60);
	else
		snprintf(out, size, "%lld:%02lld:%02lld", t / 3600, t % 3600 / 60, t % 60);
}

/* "N/M healthy", then the unhealthy ones on their own lines. */
static void print_health(const char *what, const json_t *list)
{
	size_t i, healthy = 0;
	const json_t *it;
	json_array_foreach(list, i, it) healthy += json_is_true(json_object_get(it, "healthy"));
	printf("%-10s %zu/%zu healthy\n", what, healthy, json_array_size(list));
	json_array_foreach(list, i, it)
	{
		if (json_is_true(json_object_get(it, "healthy")))
			continue;
		const char *name = json_string_value(json_object_get(it, "name"));
		const char *state = json_string_value(json_object_get(it, "state"));
		const json_t *detail = json_object_get(it, "detail");
		char *text = detail ? value_text(detail) : NULL;
		printf("  %s: %s%s%s\n", name ? name : "?", state ? state : "unhealthy",
		       text ? ", " : "", text ? text : "");
		free(text);
	}
}

/* The summary's optional parts: a failure to get them is not the status's. */
static void print_status_extras(struct ctl *ctl)
{
	struct reply r;
	if (http_call(ctl, "GET", "/v1/queues", NULL, 0, &r) == 0) {
		json_t *doc = r.status == 200 ? json_loads(buf_str(&r.body), 0, NULL) : NULL;
		const json_t *queues = json_object_get(doc, "queues"), *q;
		size_t i;
		json_int_t depth = 0, in_flight = 0, dead = 0;
		json_array_foreach(queues, i, q)
		{
			depth += json_integer_value(json_object_get(q, "depth"));
			in_flight += json_integer_value(json_object_get(q, "in_flight"));
			dead += json_integer_value(json_object_get(q, "dead_lettered"));
		}
		if (json_is_array(queues))
			printf("%-10s %zu (%lld waiting, %lld in flight, %lld dead-lettered)\n",
			       "queues", json_array_size(queues), (long long)depth,
			       (long long)in_flight, (long long)dead);
		json_decref(doc);
		buf_free(&r.body);
	}
	if (http_call(ctl, "GET", "/metrics", NULL, 0, &r) == 0) {
		double up = r.status == 200
				    ? metric_value(buf_str(&r.body), "plantd_uptime_seconds")
				    : -1;
		char version[64], text[64];
		metric_version(buf_str(&r.body), version, sizeof version);
		if (up >= 0) {
			format_uptime(up, text, sizeof text);
			printf("%-10s %s\n", "uptime", text);
		}
		if (r.status == 200 && version[0])
			printf("%-10s %s\n", "version", version);
		buf_free(&r.body);
	}
}

static int cmd_status(struct ctl *ctl, char **args)
{
	struct reply r;
	if (http_call(ctl, "GET", "/healthz", NULL, 0, &r) != 0)
		return EXIT_FAIL;
	if (r.status != 200 && r.status != 503) {
		report_http_error(ctl, r.status, buf_str(&r.body));
		buf_free(&r.body);
		return EXIT_FAIL;
	}
	int rc = r.status == 200 ? 0 : EXIT_FAIL;
	json_error_t jerr;
	json_t *doc = json_loads(buf_str(&r.body), 0, &jerr);
	buf_free(&r.body);
	if (!doc) {
		fprintf(stderr, "plantctl: %s/healthz answered with something not JSON: %s\n",
			ctl->url, jerr.text);
		return EXIT_FAIL;
	}
	if (ctl->json) {
		print_json(doc);
		json_decref(doc);
		return rc;
	}
	const char *status = json_string_value(json_object_get(doc, "status"));
	printf("plantd at %s: %s\n", ctl->url, status ? status : rc ? "failing" : "ok");
	print_health("instances", json_object_get(doc, "instances"));
	print_health("stores", json_object_get(doc, "stores"));
	json_decref(doc);
	print_status_extras(ctl);
	return rc;
}

static int cmd_plugins(struct ctl *ctl, char **args)
{
	static const struct column cols[] = {
		{"NAME", "name", CELL_TEXT},	   {"MODULE", "module", CELL_TEXT},
		{"VERSION", "version", CELL_TEXT}, {"STATE", "state", CELL_TEXT},
		{"HANDLED", "handled", CELL_TEXT}, {"ERRORS", "errors", CELL_TEXT},
	};
	return list_command(ctl, "/v1/plugins", "plugins", cols, sizeof cols / sizeof cols[0]);
}

static int cmd_queues(struct ctl *ctl, char **args)
{
	static const struct column cols[] = {
		{"NAME", "name", CELL_TEXT},
		{"DEPTH", "depth", CELL_TEXT},
		{"IN_FLIGHT", "in_flight", CELL_TEXT},
		{"OLDEST_AGE", "oldest_age_ms", CELL_AGE},
		{"DEAD_LETTERED", "dead_lettered", CELL_TEXT},
		{"DURABLE", "durable", CELL_BOOL},
	};
	return list_command(ctl, "/v1/queues", "queues", cols, sizeof cols / sizeof cols[0]);
}

static int cmd_topics(struct ctl *ctl, char **args)
{
	static const struct column cols[] = {
		{"NAME", "name", CELL_TEXT},
		{"PUBLISHED", "published", CELL_TEXT},
		{"SUBSCRIBERS", "subscribers", CELL_COUNT},
		{"QUEUES", "queues", CELL_COUNT},
	};
	return list_command(ctl, "/v1/topics", "topics", cols, sizeof cols / sizeof cols[0]);
}

static int cmd_stores(struct ctl *ctl, char **args)
{
	static const struct column cols[] = {
		{"NAME", "name", CELL_TEXT},
		{"BACKEND", "backend", CELL_TEXT},
		{"HEALTHY", "healthy", CELL_BOOL},
	};
	return list_command(ctl, "/v1/stores", "stores", cols, sizeof cols / sizeof cols[0]);
}

static int read_stream(FILE *f, struct buf *out)
{
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
		buf_append(out, chunk, n);
	return ferror(f) ? -1 : 0;
}

static int cmd_publish(struct ctl *ctl, char **args)
{
	const char *topic = args[0];
	struct buf text = {0};
	if (strcmp(args[1], "-") == 0) {
		if (read_stream(stdin, &text) != 0) {
			fprintf(stderr, "plantctl: cannot read the message from stdin: %s\n",
				strerror(errno));
			buf_free(&text);
			return EXIT_FAIL;
		}
	} else {
		buf_append(&text, args[1], strlen(args[1]));
	}
	/* checked here, so that a typo is shown where it is, not as a 400 */
	json_error_t jerr;
	json_t *check = json_loadb(buf_str(&text), text.len, JSON_DECODE_ANY, &jerr);
	if (!check) {
		fprintf(stderr, "plantctl: the message is not JSON: line %d, column %d: %s\n",
			jerr.line, jerr.column, jerr.text);
		buf_free(&text);
		return EXIT_USAGE;
	}
	json_decref(check);

	struct buf path = {0};
	buf_printf(&path, "/v1/topics/");
	buf_append_segment(&path, topic);
	json_t *doc = http_json(ctl, "POST", path.data, buf_str(&text), text.len);
	buf_free(&path);
	buf_free(&text);
	if (!doc)
		return EXIT_FAIL;
	if (ctl->json) {
		print_json(doc);
	} else {
		const char *id = json_string_value(json_object_get(doc, "id"));
		printf("%s\n", id ? id : "-");
	}
	json_decref(doc);
	return 0;
}

static int cmd_peek(struct ctl *ctl, char **args)
{
	struct buf path = {0};
	buf_printf(&path, "/v1/queues/");
	buf_append_segment(&path, args[0]);
	buf_printf(&path, "/messages?peek=%ld", ctl->count > 0 ? ctl->count : DEFAULT_PEEK);
	json_t *doc = http_json(ctl, "GET", path.data, NULL, 0);
	buf_free(&path);
	if (!doc)
		return EXIT_FAIL;
	if (ctl->json) {
		print_json(doc);
		json_decref(doc);
		return 0;
	}
	/* id and topic aligned, the body (compact JSON) last, whole */
	const json_t *msgs = json_object_get(doc, "messages"), *m;
	size_t i, wid = 0, wtopic = 0;
	json_array_foreach(msgs, i, m)
	{
		const char *id = json_string_value(json_object_get(m, "id"));
		const char *topic = json_string_value(json_object_get(m, "topic"));
		if (id && strlen(id) > wid)
			wid = strlen(id);
		if (topic && strlen(topic) > wtopic)
			wtopic = strlen(topic);
	}
	json_array_foreach(msgs, i, m)
	{
		const char *id = json_string_value(json_object_get(m, "id"));
		const char *topic = json_string_value(json_object_get(m, "topic"));
		char *body = value_text(json_object_get(m, "body"));
		if (json_is_string(json_object_get(m, "body"))) { /* keep the quotes */
			free(body);
			body = json_dumps(json_object_get(m, "body"), JSON_ENCODE_ANY);
		}
		printf("%-*s  %-*s  %s\n", (int)wid, id ? id : "-", (int)wtopic,
		       topic ? topic : "-", body ? body : "-");
		free(body);
	}
	json_decref(doc);
	return 0;
}

static int cmd_redrive(struct ctl *ctl, char **args)
{
	struct buf path = {0};
	buf_printf(&path, "/v1/queues/");
	buf_append_segment(&path, args[0]);
	buf_printf(&path, "/redrive");
	json_t *doc = http_json(ctl, "POST", path.data, NULL, 0);
	buf_free(&path);
	if (!doc)
		return EXIT_FAIL;
	if (ctl->json) {
		print_json(doc);
	} else {
		json_int_t n = json_integer_value(json_object_get(doc, "redriven"));
		printf("redriven %lld message%s from %s\n", (long long)n, n == 1 ? "" : "s",
		       args[0]);
	}
	json_decref(doc);
	return 0;
}

static int cmd_reload(struct ctl *ctl, char **args)
{
	json_t *doc = http_json(ctl, "POST", "/v1/reload", NULL, 0);
	if (!doc)
		return EXIT_FAIL;
	if (ctl->json)
		print_json(doc);
	else
		printf("configuration reloaded\n");
	json_decref(doc);
	return 0;
}

/* FILE.so (a path: made absolute, for plantd resolves it itself) or a module
 * NAME on plantd's plugin path. */
static int module_arg(const char *arg, char *out, size_t size, char *name, size_t name_size)
{
	size_t len = strlen(arg);
	int is_file = strchr(arg, '/') || (len > 3 && strcmp(arg + len - 3, ".so") == 0);
	const char *base = strrchr(arg, '/');
	base = base ? base + 1 : arg;
	size_t blen = strlen(base);
	if (blen > 3 && strcmp(base + blen - 3, ".so") == 0)
		blen -= 3;
	snprintf(name, name_size, "%.*s", (int)blen, base);
	if (!is_file) {
		snprintf(out, size, "%s", arg);
		return 0;
	}
	char abs[PATH_MAX];
	if (realpath(arg, abs)) {
		snprintf(out, size, "%s", abs);
		return 0;
	}
	if (arg[0] == '/') { /* perhaps only on plantd's machine */
		snprintf(out, size, "%s", arg);
		return 0;
	}
	fprintf(stderr, "plantctl: %s: %s\n", arg, strerror(errno));
	return -1;
}

static int cmd_load(struct ctl *ctl, char **args)
{
	char module[PATH_MAX], name[256];
	if (module_arg(args[0], module, sizeof module, name, sizeof name) != 0)
		return EXIT_USAGE;
	json_t *config = json_object();
	if (ctl->config) {
		json_error_t jerr;
		json_decref(config);
		config = json_loads(ctl->config, 0, &jerr);
		if (!json_is_object(config)) {
			fprintf(stderr, "plantctl: --config needs a JSON object%s%s\n",
				config ? "" : ": ", config ? "" : jerr.text);
			json_decref(config);
			return EXIT_USAGE;
		}
	}
	json_t *entry = json_pack("{s:s, s:s, s:o, s:b}", "name", ctl->as ? ctl->as : name,
				  "module", module, "config", config, "required", !ctl->optional);
	char *body = json_dumps(entry, JSON_COMPACT);
	json_decref(entry);
	if (!body)
		die_nomem();
	json_t *doc = http_json(ctl, "POST", "/v1/plugins", body, strlen(body));
	free(body);
	if (!doc)
		return EXIT_FAIL;
	if (ctl->json) {
		print_json(doc);
	} else {
		const char *version = json_string_value(json_object_get(doc, "version"));
		printf("loaded %s (%s%s%s)\n", json_string_value(json_object_get(doc, "loaded")),
		       module, version && *version ? " " : "", version ? version : "");
	}
	json_decref(doc);
	return 0;
}

static int cmd_unload(struct ctl *ctl, char **args)
{
	struct buf path = {0};
	buf_printf(&path, "/v1/plugins/");
	buf_append_segment(&path, args[0]);
	json_t *doc = http_json(ctl, "DELETE", path.data, NULL, 0);
	buf_free(&path);
	if (!doc)
		return EXIT_FAIL;
	if (ctl->json)
		print_json(doc);
	else
		printf("unloaded %s\n", args[0]);
	json_decref(doc);
	return 0;
}

static void print_deployment(const json_t *rec)
{
	const char *module = json_string_value(json_object_get(rec, "module"));
	const char *version = json_string_value(json_object_get(rec, "version"));
	const char *reason = json_string_value(json_object_get(rec, "reason"));
	const char *prev = json_string_value(json_object_get(rec, "previous_version"));
	printf("deployment %s: %s %s on %s%s%s: %s%s%s\n",
	       json_string_value(json_object_get(rec, "id")), module ? module : "?",
	       version ? version : "?", json_string_value(json_object_get(rec, "instance")),
	       prev ? ", was " : "", prev ? prev : "",
	       json_string_value(json_object_get(rec, "state")), reason ? ": " : "",
	       reason ? reason : "");
}

static int deployment_final(const char *state)
{
	return state && strcmp(state, "watching") != 0 && strcmp(state, "verified") != 0;
}

static int cmd_deploy(struct ctl *ctl, char **args)
{
	char path[PATH_MAX];
	if (!realpath(args[0], path)) {
		if (args[0][0] != '/') {
			fprintf(stderr, "plantctl: %s: %s\n", args[0], strerror(errno));
			return EXIT_USAGE;
		}
		snprintf(path, sizeof path, "%s", args[0]);
	}
	const char *user = getenv("USER");
	char host[256] = "";
	gethostname(host, sizeof host - 1);
	json_t *req = json_pack("{s:s, s:s*, s:s*}", "bundle", path, "instance", ctl->as, "grace",
				ctl->grace);
	json_object_set_new(req, "by", json_sprintf("%s@%s", user ? user : "?", host));
	char *body = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!body)
		die_nomem();
	struct reply r;
	int rc = http_call(ctl, "POST", "/v1/deployments", body, strlen(body), &r);
	free(body);
	if (rc != 0)
		return EXIT_FAIL;
	json_t *doc = json_loadb(r.body.data ? r.body.data : "", r.body.len, 0, NULL);
	if (r.status != 201) {
		report_http_error(ctl, r.status, buf_str(&r.body));
		json_decref(doc);
		buf_free(&r.body);
		return EXIT_FAIL;
	}
	buf_free(&r.body);
	if (!doc) {
		fprintf(stderr, "plantctl: plantd's answer is not JSON\n");
		return EXIT_FAIL;
	}
	char id[128];
	snprintf(id, sizeof id, "%s", json_string_value(json_object_get(doc, "id")));
	if (!ctl->json)
		print_deployment(doc);
	while (ctl->wait && !deployment_final(json_string_value(json_object_get(doc, "state")))) {
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 200 * 1000000L};
		nanosleep(&ts, NULL);
		struct buf p = {0};
		buf_printf(&p, "/v1/deployments/");
		buf_append_segment(&p, id);
		json_t *next = http_json(ctl, "GET", p.data, NULL, 0);
		buf_free(&p);
		if (!next) {
			json_decref(doc);
			return EXIT_FAIL;
		}
		json_decref(doc);
		doc = next;
		if (!ctl->json &&
		    deployment_final(json_string_value(json_object_get(doc, "state"))))
			print_deployment(doc);
	}
	if (ctl->json)
		print_json(doc);
	const char *state = json_string_value(json_object_get(doc, "state"));
	int status = state && (strcmp(state, "refused") == 0 || strcmp(state, "rolled_back") == 0)
			     ? EXIT_FAIL
			     : 0;
	json_decref(doc);
	return status;
}

static int cmd_deployments(struct ctl *ctl, char **args)
{
	static const struct column cols[] = {
		{"ID", "id", CELL_TEXT},	 {"INSTANCE", "instance", CELL_TEXT},
		{"MODULE", "module", CELL_TEXT}, {"VERSION", "version", CELL_TEXT},
		{"STATE", "state", CELL_TEXT},	 {"UPDATED", "updated", CELL_TEXT},
		{"REASON", "reason", CELL_TEXT},
	};
	return list_command(ctl, "/v1/deployments", "deployments", cols,
			    sizeof cols / sizeof cols[0]);
}

static int cmd_rollback(struct ctl *ctl, char **args)
{
	struct buf path = {0};
	buf_printf(&path, "/v1/plugins/");
	buf_append_segment(&path, args[0]);
	buf_printf(&path, "/rollback");
	json_t *doc = http_json(ctl, "POST", path.data, NULL, 0);
	buf_free(&path);
	if (!doc)
		return EXIT_FAIL;
	if (ctl->json)
		print_json(doc);
	else
		printf("rolled back %s\n", args[0]);
	json_decref(doc);
	return 0;
}

/* ---- tail ------------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
	interrupted = 1;
}

struct tail {
	struct ctl *ctl;
	long status; /* of the answer, once its first bytes came */
	struct buf line;
	struct buf error; /* the body of a refusal */
	long received;
	int done;	  /* -n messages printed: stop */
	int write_failed; /* stdout is gone */
	int write_errno;
};

static void tail_print(struct tail *t, const char *line, size_t len)
{
	if (len == 0)
		return;
	if (t->ctl->json) {
		fwrite(line, 1, len, stdout);
		putchar('\n');
	} else {
		json_t *m = json_loadb(line, len, 0, NULL);
		char ts[64];
		format_ts(json_object_get(m, "ts"), ts, sizeof ts);
		const char *topic = json_string_value(json_object_get(m, "topic"));
		const char *id = json_string_value(json_object_get(m, "id"));
		char *body = json_dumps(json_object_get(m, "body"), JSON_COMPACT | JSON_ENCODE_ANY);
		if (m)
			printf("%s %s %s %s\n", ts, topic ? topic : "-", id ? id : "-",
			       body ? body : "-");
		else /* not ours to judge: show it as it came */
			printf("%.*s\n", (int)len, line);
		free(body);
		json_decref(m);
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		t->write_failed = 1;
		t->write_errno = errno;
	}
	t->received++;
	if (t->ctl->count > 0 && t->received >= t->ctl->count)
		t->done = 1;
}

static size_t on_tail_data(char *data, size_t size, size_t nmemb, void *arg)
{
	struct tail *t = arg;
	size_t n = size * nmemb;
	if (!t->status)
		curl_easy_getinfo(t->ctl->curl, CURLINFO_RESPONSE_CODE, &t->status);
	if (t->status != 200) {
		if (t->error.len < ERROR_BODY_MAX)
			buf_append(&t->error, data, n);
		return n;
	}
	buf_append(&t->line, data, n);
	size_t start = 0;
	for (char *nl; !t->done && !t->write_failed &&
		       (nl = memchr(t->line.data + start, '\n', t->line.len - start)) != NULL;) {
		size_t end = (size_t)(nl - t->line.data);
		size_t len = end - start;
		if (len > 0 && t->line.data[start + len - 1] == '\r')
			len--;
		tail_print(t, t->line.data + start, len);
		start = end + 1;
	}
	memmove(t->line.data, t->line.data + start, t->line.len - start);
	t->line.len -= start;
	t->line.data[t->line.len] = '\0';
	/* a short count makes libcurl stop the transfer */
	return t->done || t->write_failed ? 0 : n;
}

static int on_tail_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
			    curl_off_t ulnow)
{
	return interrupted ? 1 : 0;
}

static int cmd_tail(struct ctl *ctl, char **args)
{
	struct buf path = {0};
	buf_printf(&path, "/v1/topics/");
	buf_append_segment(&path, args[0]);
	buf_printf(&path, "/tail");
	struct curl_slist *headers = request_setup(ctl, path.data, 0);
	buf_free(&path);

	struct tail t = {.ctl = ctl};
	CURL *c = ctl->curl;
	/* a stream has no end to time: only the connection is timed */
	if (ctl->timeout_s > 0)
		curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(ctl->timeout_s * 1000));
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_tail_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
	/* called about once a second while the stream is idle: Ctrl-C ends
	 * the transfer from there */
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_tail_progress);

	struct sigaction sa = {.sa_handler = on_interrupt}, old_int, old_term;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	CURLcode rc = curl_easy_perform(c);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	curl_slist_free_all(headers);

	int status = 0;
	if (t.write_failed) {
		/* a closed pipe (| head) is a reader's way to stop */
		if (t.write_errno != EPIPE)
			fprintf(stderr, "plantctl: cannot write to stdout: %s\n",
				strerror(t.write_errno));
		status = t.write_errno == EPIPE ? 0 : EXIT_FAIL;
	} else if (t.done || (rc == CURLE_ABORTED_BY_CALLBACK && interrupted)) {
		status = 0;
	} else if (rc == CURLE_OK && t.status != 200) {
		report_http_error(ctl, t.status, buf_str(&t.error));
		status = EXIT_FAIL;
	} else if (rc != CURLE_OK && t.status == 0) {
		report_transport_error(ctl, rc);
		status = EXIT_FAIL;
	} else if (rc != CURLE_OK) {
		fprintf(stderr,
			"plantctl: the stream from plantd at %s broke after %ld messages: %s\n",
			ctl->url, t.received,
			ctl->errbuf[0] ? ctl->errbuf : curl_easy_strerror(rc));
		status = EXIT_FAIL;
	} else {
		/* plantd ended the stream: a last line without its newline counts */
		tail_print(&t, buf_str(&t.line), t.line.len);
		if (ctl->count > 0 && t.received < ctl->count) {
			fprintf(stderr,
				"plantctl: plantd ended the stream after %ld of %ld messages\n",
				t.received, ctl->count);
			status = EXIT_FAIL;
		}
	}
	buf_free(&t.line);
	buf_free(&t.error);
	return status;
}

/* ---- command line ----------------------------------------------------------- */

static const struct command commands[] = {
	{.name = "status",
	 .args = "",
	 .help = "health of the site (GET /healthz) and a summary;\n"
		 "exit 0 when healthy, 1 when failing",
	 .run = cmd_status},
	{.name = "plugins",
	 .args = "",
	 .help = "the plugin instances: module, version, state,\n"
		 "messages handled, errors",
	 .run = cmd_plugins},
	{.name = "queues",
	 .args = "",
	 .help = "the queues: depth, in flight, age of the oldest\n"
		 "message, dead-lettered, durable",
	 .run = cmd_queues},
	{.name = "topics",
	 .args = "",
	 .help = "the topics: messages published, subscribers,\n"
		 "queues subscribed",
	 .run = cmd_topics},
	{.name = "stores", .args = "", .help = "the stores: backend, health", .run = cmd_stores},
	{.name = "publish",
	 .args = "TOPIC JSON",
	 .help = "publish one message on TOPIC; JSON is its body,\n"
		 "or - to read it from stdin; prints its id",
	 .min_args = 2,
	 .max_args = 2,
	 .run = cmd_publish},
	{.name = "peek",
	 .args = "QUEUE [-n N]",
	 .help = "show the first N (default 10) messages waiting in\n"
		 "QUEUE without taking them: id, topic, body",
	 .min_args = 1,
	 .max_args = 1,
	 .takes_count = 1,
	 .run = cmd_peek},
	{.name = "redrive",
	 .args = "QUEUE",
	 .help = "move the messages of dead-letter queue QUEUE\n"
		 "back to the queues they came from",
	 .min_args = 1,
	 .max_args = 1,
	 .run = cmd_redrive},
	{.name = "tail",
	 .args = "PATTERN [-n N]",
	 .help = "print the messages published on the topics\n"
		 "matching PATTERN (e.g. 'sensor.*') as they come:\n"
		 "time, topic, id, body; stop after N messages,\n"
		 "on Ctrl-C, or when plantd ends the stream",
	 .min_args = 1,
	 .max_args = 1,
	 .takes_count = 1,
	 .run = cmd_tail},
	{.name = "reload",
	 .args = "",
	 .help = "reload the site's configuration (as SIGHUP does);\n"
		 "a bad configuration is refused, the site runs on",
	 .run = cmd_reload},
	{.name = "load",
	 .args = "FILE.so|MODULE [--as NAME] [--config JSON] [--optional]",
	 .help = "start an instance of a plugin module on the running\n"
		 "site, checked as at start; a refusal leaves the site\n"
		 "as it was. NAME defaults to the module's; JSON is its\n"
		 "settings, e.g. '{\"interval\": \"5s\"}'. plantd keeps it\n"
		 "(DATA_DIR/loaded.json): it comes back on a restart",
	 .min_args = 1,
	 .max_args = 1,
	 .takes_load = 1,
	 .run = cmd_load},
	{.name = "deploy",
	 .args = "BUNDLE [--as NAME] [--grace DURATION] [--wait]",
	 .help = "deploy a plugin bundle (plantd-bundle pack) to instance\n"
		 "NAME (default: the bundle's module): verified, the\n"
		 "running version drained and swapped, the new one\n"
		 "watched for DURATION (default: deploy.grace, 10s) and\n"
		 "rolled back if its health fails; --wait: until then.\n"
		 "Exit 1 when refused or rolled back",
	 .min_args = 1,
	 .max_args = 1,
	 .takes_deploy = 1,
	 .run = cmd_deploy},
	{.name = "deployments",
	 .args = "",
	 .help = "the deployments: instance, version, state, reason",
	 .run = cmd_deployments},
	{.name = "rollback",
	 .args = "NAME",
	 .help = "put instance NAME's previous version back",
	 .min_args = 1,
	 .max_args = 1,
	 .run = cmd_rollback},
	{.name = "unload",
	 .args = "NAME",
	 .help = "stop an instance started with load and forget it",
	 .min_args = 1,
	 .max_args = 1,
	 .run = cmd_unload},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

/* "  NAME ARGS" padded to HELP_COLUMN, then the help, indented alike. */
static void print_command_help(FILE *f, const struct command *cmd)
{
	char head[64];
	snprintf(head, sizeof head, "  %s%s%s", cmd->name, cmd->args[0] ? " " : "", cmd->args);
	fprintf(f, "%-*s", HELP_COLUMN, head);
	if (strlen(head) >= HELP_COLUMN)
		fprintf(f, "\n%*s", HELP_COLUMN, "");
	for (const char *p = cmd->help; *p;) {
		size_t n = strcspn(p, "\n");
		fprintf(f, "%.*s\n", (int)n, p);
		p += n;
		if (*p == '\n' && *++p)
			fprintf(f, "%*s", HELP_COLUMN, "");
	}
}

static void usage(FILE *f)
{
	fprintf(f, "usage: plantctl [options] COMMAND [ARGS]\n"
		   "\n"
		   "Administer a running plantd through its admin HTTP listener.\n"
		   "\n"
		   "Commands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		print_command_help(f, &commands[i]);
	fprintf(f, "\n"
		   "Options (before or after the command):\n"
		   "  -u, --url URL          the admin listener; default $PLANTD_URL, else\n"
		   "                         " DEFAULT_URL "\n"
		   "  -t, --token TOKEN      sent as \"Authorization: Bearer TOKEN\"; default\n"
		   "                         $PLANTD_TOKEN\n"
		   "  -j, --json             print plantd's JSON answer (pretty; tail: one\n"
		   "                         line per message) instead of tables\n"
		   "  -T, --timeout SECONDS  give up on a request after SECONDS (default 30;\n"
		   "                         tail: on connecting); 0 waits forever\n"
		   "  -n, --count N          peek: how many messages; tail: stop after N\n"
		   "      --as NAME          load, deploy: the instance's name\n"
		   "      --config JSON      load: the instance's settings (an object)\n"
		   "      --optional         load: required = false\n"
		   "      --grace DURATION   deploy: how long to watch the new version\n"
		   "      --wait             deploy: until deployed or rolled back\n"
		   "  -h, --help             this text; plantctl COMMAND --help: that command's\n"
		   "  -V, --version          print the version, then exit\n"
		   "\n"
		   "Exit status: 0 on success; 1 when plantd cannot be reached, refuses the\n"
		   "request, or (status) reports the site failing; 2 for a bad command line.\n");
}

static void command_usage(FILE *f, const struct command *cmd)
{
	fprintf(f, "usage: plantctl [options] %s%s%s\n\n", cmd->name, cmd->args[0] ? " " : "",
		cmd->args);
	print_command_help(f, cmd);
	fprintf(f, "\nOptions: plantctl --help.\n");
}

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"url", required_argument, NULL, 'u'},
		{"token", required_argument, NULL, 't'},
		{"json", no_argument, NULL, 'j'},
		{"timeout", required_argument, NULL, 'T'},
		{"count", required_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{"as", required_argument, NULL, 'a'},
		{"config", required_argument, NULL, 'C'},
		{"optional", no_argument, NULL, 'o'},
		{"grace", required_argument, NULL, 'g'},
		{"wait", no_argument, NULL, 'w'},
		{NULL, 0, NULL, 0},
	};
	struct ctl ctl = {.timeout_s = DEFAULT_TIMEOUT_S, .token = getenv("PLANTD_TOKEN")};
	const char *url = getenv("PLANTD_URL");
	int help = 0, c;
	if (!url || !*url)
		url = DEFAULT_URL;
	while ((c = getopt_long(argc, argv, "u:t:jT:n:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'u':
			url = optarg;
			break;
		case 't':
			ctl.token = optarg;
			break;
		case 'j':
			ctl.json = 1;
			break;
		case 'T': {
			char *end;
			errno = 0;
			ctl.timeout_s = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(ctl.timeout_s >= 0)) {
				fprintf(stderr,
					"plantctl: --timeout needs a number of seconds, not \"%s\"\n",
					optarg);
				return EXIT_USAGE;
			}
			break;
		}
		case 'n':
			if (parse_long(optarg, 1, &ctl.count) != 0) {
				fprintf(stderr,
					"plantctl: -n needs a whole number of at least 1, not \"%s\"\n",
					optarg);
				return EXIT_USAGE;
			}
			break;
		case 'h':
			help = 1;
			break;
		case 'a':
			ctl.as = optarg;
			break;
		case 'C':
			ctl.config = optarg;
			break;
		case 'o':
			ctl.optional = 1;
			break;
		case 'g':
			ctl.grace = optarg;
			break;
		case 'w':
			ctl.wait = 1;
			break;
		case 'V':
			printf("plantctl %s\n", PLANTCTL_VERSION);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	const struct command *cmd = optind < argc ? find_command(argv[optind]) : NULL;
	if (help) {
		if (cmd)
			command_usage(stdout, cmd);
		else
			usage(stdout);
		return 0;
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!cmd) {
		fprintf(stderr, "plantctl: unknown command \"%s\"\n\n", argv[optind]);
		usage(stderr);
		return EXIT_USAGE;
	}
	int nargs = argc - optind - 1;
	if (nargs < cmd->min_args || nargs > cmd->max_args) {
		fprintf(stderr, "plantctl: wrong number of arguments for %s\n\n", cmd->name);
		command_usage(stderr, cmd);
		return EXIT_USAGE;
	}
	if (ctl.count && !cmd->takes_count) {
		fprintf(stderr, "plantctl: -n applies to peek and tail, not %s\n\n", cmd->name);
		command_usage(stderr, cmd);
		return EXIT_USAGE;
	}

	if ((ctl.grace || ctl.wait) && !cmd->takes_deploy) {
		fprintf(stderr, "plantctl: --grace and --wait apply to deploy, not %s\n\n",
			cmd->name);
		command_usage(stderr, cmd);
		return EXIT_USAGE;
	}
	if ((ctl.config || ctl.optional || (ctl.as && !cmd->takes_deploy)) && !cmd->takes_load) {
		fprintf(stderr, "plantctl: --as, --config and --optional apply to load, not %s\n\n",
			cmd->name);
		command_usage(stderr, cmd);
		return EXIT_USAGE;
	}

	size_t len = strlen(url);
	while (len > 0 && url[len - 1] == '/')
		len--;
	if (len == 0) {
		fprintf(stderr, "plantctl: the URL of plantd is empty\n");
		return EXIT_USAGE;
	}
	if (!(ctl.url = strndup(url, len)))
		die_nomem();

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(ctl.curl = curl_easy_init())) {
		fprintf(stderr, "plantctl: cannot initialise libcurl\n");
		free(ctl.url);
		return EXIT_FAIL;
	}
	/* a closed stdout shows as a write error, not a silent death */
	signal(SIGPIPE, SIG_IGN);
	int status = cmd->run(&ctl, argv + optind + 1);
	if (fflush(stdout) != 0 && status == 0 && errno != EPIPE) {
		fprintf(stderr, "plantctl: cannot write to stdout: %s\n", strerror(errno));
		status = EXIT_FAIL;
	}
	curl_easy_cleanup(ctl.curl);
	curl_global_cleanup();
	free(ctl.url);
	return status;
}
