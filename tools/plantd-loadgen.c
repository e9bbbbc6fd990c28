/* plantd-loadgen: the seed's trigger script (004) against a real ingest
 * endpoint. Sends simulated thermistor readings, as the `sensor` plugin
 * consumes them,
 *
 *   {"id":"lg-5f3a09c1-000000042","sensor_id":"L03-S0421","location":"L03",
 *    "type":"thermistor","ts":1718000000000,"resistance":12345.678}
 *
 * to `POST URL` (e.g. http://127.0.0.1:8480/v1/ingest/sensor.raw), one per
 * request or `--batch N` per request as a JSON array, over keep-alive
 * connections (libcurl multi, one event loop).
 *
 * Pacing, from the seed's config or flags:
 * - default: each of the --connections senders waits a random delay, uniform
 *   in min_delay..max_delay, after each answer (the trigger script's random
 *   intervals);
 * - --rate R: R requests a second in all, spread evenly;
 * - --rate 0: as fast as the connections go.
 * Each runs for total_runtime (0: until Ctrl-C or --requests).
 *
 * A progress line on stderr each second; at the end a summary (sent,
 * accepted 2xx, refused 429, failed, latency percentiles), or with --json one
 * JSON object on stdout. Exit 0 when no request failed (a 429 is not a
 * failure), 1 when one did, 2 for bad usage or configuration. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#define EXIT_USAGE	2
#define MAX_CONNECTIONS 10000
#define MAX_BATCH	100000
#define READING_MAX	256
#define RESP_KEEP	512 /* bytes of an answer kept for an error message */
#define ERRORS_SHOWN	10

/* What the seed's YAML says (as JSON), and how to load the endpoint. */
struct settings {
	const char *url;
	const char *token;
	int locations;	    /* meta.locations */
	int sensors;	    /* meta.sensors, per location */
	double min_r;	    /* sensor.min_r, ohm */
	double max_r;	    /* sensor.max_r */
	double runtime_s;   /* timer.total_runtime_seconds, 0: no limit */
	double min_delay_s; /* timer.min_delay_seconds */
	double max_delay_s; /* timer.max_delay_seconds */
	double rate;	    /* < 0: the seed's delays; 0: flat out; else requests/s */
	int connections;
	int batch; /* 0: one object per request; N: arrays of N */
	double timeout_s;
	uint64_t max_requests; /* 0: no limit */
	uint64_t seed;
	bool seed_set;
	bool json;
	bool quiet;
};

struct slot {
	CURL *easy;
	bool busy;
	int readings;
	uint64_t start_ns;
	uint64_t next_ns; /* seed pacing: when this sender sends again */
	char *body;
	size_t body_len, body_cap;
	char resp[RESP_KEEP];
	size_t resp_len;
	char error[CURL_ERROR_SIZE];
};

struct counts {
	uint64_t sent, accepted, refused, failed;
	uint64_t readings_sent, readings_accepted;
};

struct loadgen {
	struct settings s;
	CURLM *multi;
	struct curl_slist *headers;
	struct slot *slots;
	int in_flight;
	struct counts c;
	uint64_t done_last_second; /* answers, for the progress line */
	uint32_t *lat_us;	   /* latency of every answered request */
	size_t n_lat, cap_lat;
	uint64_t rng;
	uint64_t seq;
	char run_tag[16];
	unsigned errors_shown;
};

static volatile sig_atomic_t stop_requested;
/* The config file, kept while url and token point into it. */
static json_t *config_root;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

/* splitmix64: small, fast, good enough for simulated readings */
static uint64_t rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* uniform in [0, 1) */
static double rng_unit(uint64_t *state)
{
	return (double)(rng_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (!p) {
		fputs("plantd-loadgen: out of memory\n", stderr);
		exit(1);
	}
	return p;
}

/* ---- configuration ------------------------------------------------------- */

static void usage(FILE *f)
{
	fputs("usage: plantd-loadgen [options] URL\n"
	      "\n"
	      "Send simulated thermistor readings (the seed's trigger script) to an ingest\n"
	      "endpoint: POST URL, e.g. http://127.0.0.1:8480/v1/ingest/sensor.raw\n"
	      "\n"
	      "  -c, --config FILE      the seed's settings as JSON (flags override it):\n"
	      "                         {\"meta\": {\"locations\": 8, \"sensors\": 1000},\n"
	      "                          \"sensor\": {\"min_r\": 0.1, \"max_r\": 20500},\n"
	      "                          \"timer\": {\"total_runtime_seconds\": 10,\n"
	      "                                    \"min_delay_seconds\": 1,\n"
	      "                                    \"max_delay_seconds\": 10},\n"
	      "                          \"load\": {\"url\", \"connections\", \"rate\", \"batch\",\n"
	      "                                   \"token\", \"requests\", \"timeout_seconds\"}}\n"
	      "      --locations N      locations L01.. (1..99, default 8)\n"
	      "      --sensors N        sensors per location S0001.. (1..9999, default 1000)\n"
	      "      --min-r OHM        lowest resistance (default 0.1)\n"
	      "      --max-r OHM        highest resistance (default 20500)\n"
	      "  -d, --runtime SECONDS  how long to run (default 10; 0: until Ctrl-C)\n"
	      "      --min-delay S      a sender's shortest wait between readings (default 1)\n"
	      "      --max-delay S      its longest (default 10)\n"
	      "  -r, --rate R           R requests/s in all instead of the random delays;\n"
	      "                         0: as fast as possible\n"
	      "  -C, --connections N    concurrent keep-alive connections (default 1)\n"
	      "  -b, --batch N          N readings per request, as a JSON array\n"
	      "  -n, --requests N       stop after N requests\n"
	      "      --token TOKEN      send Authorization: Bearer TOKEN (default $PLANTD_TOKEN)\n"
	      "      --timeout S        a request's time limit (default 10)\n"
	      "      --seed N           random seed (default: from the clock)\n"
	      "      --json             print the summary as one JSON object\n"
	      "  -q, --quiet            no progress lines\n"
	      "  -h, --help             this text\n"
	      "\n"
	      "Exit status: 0 when every request got a 2xx or a 429, 1 when one failed\n"
	      "otherwise (another status, a transport error, a timeout), 2 for bad usage.\n",
	      f);
}

__attribute__((format(printf, 1, 2))) static void die_usage(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("plantd-loadgen: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(EXIT_USAGE);
}

static double parse_number(const char *opt, const char *text)
{
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	if (errno || end == text || *end || !isfinite(v))
		die_usage("%s needs a number, not \"%s\"", opt, text);
	return v;
}

static int parse_int(const char *opt, const char *text, int lo, int hi)
{
	char *end;
	errno = 0;
	long v = strtol(text, &end, 10);
	if (errno || end == text || *end || v < lo || v > hi)
		die_usage("%s needs a whole number in %d..%d, not \"%s\"", opt, lo, hi, text);
	return (int)v;
}

static uint64_t parse_count(const char *opt, const char *text)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	if (errno || end == text || *end || text[0] == '-')
		die_usage("%s needs a whole number, not \"%s\"", opt, text);
	return v;
}

/* A number at `section.key` of the config, when present. */
static void config_number(const char *file, json_t *section, const char *sname, const char *key,
			  double *out)
{
	json_t *v = json_object_get(section, key);
	if (!v)
		return;
	if (!json_is_number(v))
		die_usage("%s: %s.%s must be a number", file, sname, key);
	*out = json_number_value(v);
}

/* A whole number in lo..hi at `section.key` of the config, when present. */
static void config_int(const char *file, json_t *section, const char *sname, const char *key,
		       int lo, int hi, int *out)
{
	json_t *v = json_object_get(section, key);
	if (!v)
		return;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		die_usage("%s: %s.%s must be a whole number in %d..%d", file, sname, key, lo, hi);
	*out = (int)json_integer_value(v);
}

static void config_check_keys(const char *file, json_t *obj, const char *name,
			      const char *const *keys)
{
	const char *k;
	json_t *v;
	if (!json_is_object(obj))
		die_usage("%s: %s must be an object", file, name);
	json_object_foreach(obj, k, v)
	{
		size_t i = 0;
		while (keys[i] && strcmp(keys[i], k) != 0)
			i++;
		if (!keys[i])
			die_usage("%s: unknown key %s%s%s", file, name, *name ? "." : "", k);
	}
}

/* Apply a config file (the seed's YAML, as JSON) to `s`. */
static void config_load(const char *file, struct settings *s)
{
	json_error_t err;
	json_t *root = json_load_file(file, JSON_REJECT_DUPLICATES, &err);
	if (!root && err.line > 0)
		die_usage("%s:%d:%d: %s", file, err.line, err.column, err.text);
	if (!root)
		die_usage("%s", err.text);
	static const char *const top[] = {"meta", "sensor", "timer", "load", NULL};
	static const char *const meta[] = {"locations", "sensors", NULL};
	static const char *const sensor[] = {"min_r", "max_r", NULL};
	static const char *const timer[] = {"total_runtime_seconds", "min_delay_seconds",
					    "max_delay_seconds", NULL};
	static const char *const load[] = {"url",      "connections",	  "rate", "batch", "token",
					   "requests", "timeout_seconds", NULL};
	config_check_keys(file, root, "", top);
	json_t *m = json_object_get(root, "meta"), *se = json_object_get(root, "sensor");
	json_t *t = json_object_get(root, "timer"), *l = json_object_get(root, "load");
	if (m) {
		config_check_keys(file, m, "meta", meta);
		config_int(file, m, "meta", "locations", 1, 99, &s->locations);
		config_int(file, m, "meta", "sensors", 1, 9999, &s->sensors);
	}
	if (se) {
		config_check_keys(file, se, "sensor", sensor);
		config_number(file, se, "sensor", "min_r", &s->min_r);
		config_number(file, se, "sensor", "max_r", &s->max_r);
	}
	if (t) {
		config_check_keys(file, t, "timer", timer);
		config_number(file, t, "timer", "total_runtime_seconds", &s->runtime_s);
		config_number(file, t, "timer", "min_delay_seconds", &s->min_delay_s);
		config_number(file, t, "timer", "max_delay_seconds", &s->max_delay_s);
	}
	if (l) {
		config_check_keys(file, l, "load", load);
		json_t *u = json_object_get(l, "url"), *tok = json_object_get(l, "token");
		if (u && !json_is_string(u))
			die_usage("%s: load.url must be a string", file);
		if (tok && !json_is_string(tok))
			die_usage("%s: load.token must be a string", file);
		if (u)
			s->url = json_string_value(u);
		if (tok)
			s->token = json_string_value(tok);
		config_int(file, l, "load", "connections", 1, MAX_CONNECTIONS, &s->connections);
		if (json_object_get(l, "rate")) {
			config_number(file, l, "load", "rate", &s->rate);
			if (s->rate < 0)
				die_usage("%s: load.rate must not be negative", file);
		}
		config_int(file, l, "load", "batch", 1, MAX_BATCH, &s->batch);
		int requests = -1;
		config_int(file, l, "load", "requests", 0, INT_MAX, &requests);
		if (requests >= 0)
			s->max_requests = (uint64_t)requests;
		config_number(file, l, "load", "timeout_seconds", &s->timeout_s);
	}
	json_decref(config_root);
	config_root = root;
}

/* An http:// or https:// URL that libcurl can parse. */
static bool url_valid(const char *url)
{
	CURLU *u = curl_url();
	char *scheme = NULL;
	bool ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		  curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
		  (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0);
	curl_free(scheme);
	curl_url_cleanup(u);
	return ok;
}

static void settings_check(const struct settings *s)
{
	if (!s->url)
		die_usage("no URL (see --help)");
	if (!url_valid(s->url))
		die_usage("\"%s\" is not an http:// or https:// URL", s->url);
	if (s->locations < 1 || s->locations > 99)
		die_usage("locations must be 1..99, not %d", s->locations);
	if (s->sensors < 1 || s->sensors > 9999)
		die_usage("sensors must be 1..9999, not %d", s->sensors);
	if (!(s->min_r >= 0) || !(s->max_r >= s->min_r) || s->max_r > 1e12)
		die_usage("the resistance range must be 0 <= min_r <= max_r <= 1e12, not %g..%g",
			  s->min_r, s->max_r);
	if (!(s->runtime_s >= 0))
		die_usage("the runtime must not be negative");
	if (!(s->min_delay_s >= 0) || !(s->max_delay_s >= s->min_delay_s))
		die_usage("the delays must be 0 <= min_delay <= max_delay, not %g..%g",
			  s->min_delay_s, s->max_delay_s);
	if (s->connections < 1 || s->connections > MAX_CONNECTIONS)
		die_usage("connections must be 1..%d, not %d", MAX_CONNECTIONS, s->connections);
	if (s->batch < 0 || s->batch > MAX_BATCH)
		die_usage("batch must be 1..%d, not %d", MAX_BATCH, s->batch);
	if (!(s->timeout_s > 0))
		die_usage("the timeout must be positive");
}

static void parse_args(int argc, char **argv, struct settings *s)
{
	enum {
		O_LOCATIONS = 256,
		O_SENSORS,
		O_MIN_R,
		O_MAX_R,
		O_MIN_DELAY,
		O_MAX_DELAY,
		O_TOKEN,
		O_TIMEOUT,
		O_SEED,
		O_JSON,
	};
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"locations", required_argument, NULL, O_LOCATIONS},
		{"sensors", required_argument, NULL, O_SENSORS},
		{"min-r", required_argument, NULL, O_MIN_R},
		{"max-r", required_argument, NULL, O_MAX_R},
		{"runtime", required_argument, NULL, 'd'},
		{"min-delay", required_argument, NULL, O_MIN_DELAY},
		{"max-delay", required_argument, NULL, O_MAX_DELAY},
		{"rate", required_argument, NULL, 'r'},
		{"connections", required_argument, NULL, 'C'},
		{"batch", required_argument, NULL, 'b'},
		{"requests", required_argument, NULL, 'n'},
		{"token", required_argument, NULL, O_TOKEN},
		{"timeout", required_argument, NULL, O_TIMEOUT},
		{"seed", required_argument, NULL, O_SEED},
		{"json", no_argument, NULL, O_JSON},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static const char *const shorts = "c:d:r:C:b:n:qh";
	int c;

	/* The config file first, so that every flag overrides it. */
	opterr = 0;
	while ((c = getopt_long(argc, argv, shorts, opts, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout);
			exit(0);
		}
		if (c == 'c')
			config_load(optarg, s);
	}
	opterr = 1;
	optind = 0; /* GNU: start over */
	while ((c = getopt_long(argc, argv, shorts, opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			break;
		case O_LOCATIONS:
			s->locations = parse_int("--locations", optarg, 1, 99);
			break;
		case O_SENSORS:
			s->sensors = parse_int("--sensors", optarg, 1, 9999);
			break;
		case O_MIN_R:
			s->min_r = parse_number("--min-r", optarg);
			break;
		case O_MAX_R:
			s->max_r = parse_number("--max-r", optarg);
			break;
		case 'd':
			s->runtime_s = parse_number("--runtime", optarg);
			break;
		case O_MIN_DELAY:
			s->min_delay_s = parse_number("--min-delay", optarg);
			break;
		case O_MAX_DELAY:
			s->max_delay_s = parse_number("--max-delay", optarg);
			break;
		case 'r':
			s->rate = parse_number("--rate", optarg);
			if (s->rate < 0)
				die_usage("--rate must not be negative");
			break;
		case 'C':
			s->connections = parse_int("--connections", optarg, 1, MAX_CONNECTIONS);
			break;
		case 'b':
			s->batch = parse_int("--batch", optarg, 1, MAX_BATCH);
			break;
		case 'n':
			s->max_requests = parse_count("--requests", optarg);
			break;
		case O_TOKEN:
			s->token = optarg;
			break;
		case O_TIMEOUT:
			s->timeout_s = parse_number("--timeout", optarg);
			break;
		case O_SEED:
			s->seed = parse_count("--seed", optarg);
			s->seed_set = true;
			break;
		case O_JSON:
			s->json = true;
			break;
		case 'q':
			s->quiet = true;
			break;
		default:
			usage(stderr);
			exit(EXIT_USAGE);
		}
	}
	if (optind + 1 < argc)
		die_usage("one URL only (see --help)");
	if (optind < argc)
		s->url = argv[optind];
	if (!s->token) {
		const char *env = getenv("PLANTD_TOKEN");
		if (env && *env)
			s->token = env;
	}
	settings_check(s);
}

/* ---- requests ------------------------------------------------------------ */

/* One reading, as the sensor plugin consumes it; returns its length. */
static size_t reading(struct loadgen *g, char *out, size_t cap)
{
	const struct settings *s = &g->s;
	unsigned loc = 1 + (unsigned)(rng_next(&g->rng) % (uint64_t)s->locations);
	unsigned sensor = 1 + (unsigned)(rng_next(&g->rng) % (uint64_t)s->sensors);
	/* on the milliohm grid inside min_r..max_r, both ends included */
	uint64_t lo = (uint64_t)ceil(s->min_r * 1000.0), hi = (uint64_t)floor(s->max_r * 1000.0);
	uint64_t milli = hi > lo ? lo + rng_next(&g->rng) % (hi - lo + 1) : lo;
	int n = snprintf(out, cap,
			 "{\"id\":\"lg-%s-%09" PRIu64 "\",\"sensor_id\":\"L%02u-S%04u\","
			 "\"location\":\"L%02u\",\"type\":\"thermistor\",\"ts\":%" PRIu64
			 ",\"resistance\":%" PRIu64 ".%03u}",
			 g->run_tag, ++g->seq, loc, sensor, loc, wall_ms(), milli / 1000,
			 (unsigned)(milli % 1000));
	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static void body_reserve(struct slot *sl, size_t need)
{
	if (sl->body_len + need <= sl->body_cap)
		return;
	sl->body_cap = (sl->body_len + need) * 2;
	sl->body = xrealloc(sl->body, sl->body_cap);
}

static void body_build(struct loadgen *g, struct slot *sl)
{
	int n = g->s.batch ? g->s.batch : 1;
	sl->body_len = 0;
	sl->readings = n;
	body_reserve(sl, (size_t)n * (READING_MAX + 1) + 3);
	if (g->s.batch)
		sl->body[sl->body_len++] = '[';
	for (int i = 0; i < n; i++) {
		if (i)
			sl->body[sl->body_len++] = ',';
		sl->body_len += reading(g, sl->body + sl->body_len, READING_MAX);
	}
	if (g->s.batch)
		sl->body[sl->body_len++] = ']';
	sl->body[sl->body_len] = '\0';
}

static size_t on_response_data(char *data, size_t size, size_t nmemb, void *user)
{
	struct slot *sl = user;
	size_t n = size * nmemb;
	size_t keep = n < RESP_KEEP - 1 - sl->resp_len ? n : RESP_KEEP - 1 - sl->resp_len;
	memcpy(sl->resp + sl->resp_len, data, keep);
	sl->resp_len += keep;
	sl->resp[sl->resp_len] = '\0';
	return n;
}

static void slot_init(struct loadgen *g, struct slot *sl)
{
	sl->easy = curl_easy_init();
	if (!sl->easy) {
		fputs("plantd-loadgen: curl_easy_init failed\n", stderr);
		exit(1);
	}
	CURL *e = sl->easy;
	curl_easy_setopt(e, CURLOPT_URL, g->s.url);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, g->headers);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_response_data);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, sl);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, sl->error);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(g->s.timeout_s * 1000));
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "plantd-loadgen/1");
	curl_easy_setopt(e, CURLOPT_PRIVATE, sl);
}

static void slot_start(struct loadgen *g, struct slot *sl)
{
	body_build(g, sl);
	sl->resp_len = 0;
	sl->resp[0] = '\0';
	sl->error[0] = '\0';
	curl_easy_setopt(sl->easy, CURLOPT_POSTFIELDS, sl->body);
	curl_easy_setopt(sl->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)sl->body_len);
	sl->start_ns = mono_ns();
	sl->busy = true;
	CURLMcode rc = curl_multi_add_handle(g->multi, sl->easy);
	if (rc != CURLM_OK) {
		fprintf(stderr, "plantd-loadgen: %s\n", curl_multi_strerror(rc));
		exit(1);
	}
	g->in_flight++;
	g->c.sent++;
	g->c.readings_sent += (uint64_t)sl->readings;
}

static void show_error(struct loadgen *g, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void show_error(struct loadgen *g, const char *fmt, ...)
{
	if (g->errors_shown > ERRORS_SHOWN)
		return;
	if (g->errors_shown++ == ERRORS_SHOWN) {
		fprintf(stderr, "plantd-loadgen: more failures, not shown\n");
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	fputs("plantd-loadgen: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void slot_done(struct loadgen *g, struct slot *sl, CURLcode result)
{
	uint64_t now = mono_ns();
	curl_multi_remove_handle(g->multi, sl->easy);
	sl->busy = false;
	g->in_flight--;
	g->done_last_second++;
	if (g->s.rate < 0) {
		double d = g->s.min_delay_s +
			   (g->s.max_delay_s - g->s.min_delay_s) * rng_unit(&g->rng);
		sl->next_ns = now + (uint64_t)(d * 1e9);
	}
	if (result != CURLE_OK) {
		g->c.failed++;
		show_error(g, "%s", sl->error[0] ? sl->error : curl_easy_strerror(result));
		return;
	}
	if (g->n_lat == g->cap_lat) {
		g->cap_lat = g->cap_lat ? g->cap_lat * 2 : 65536;
		g->lat_us = xrealloc(g->lat_us, g->cap_lat * sizeof *g->lat_us);
	}
	uint64_t us = (now - sl->start_ns) / 1000;
	g->lat_us[g->n_lat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
	long code = 0;
	curl_easy_getinfo(sl->easy, CURLINFO_RESPONSE_CODE, &code);
	if (code >= 200 && code < 300) {
		g->c.accepted++;
		g->c.readings_accepted += (uint64_t)sl->readings;
	} else if (code == 429) {
		g->c.refused++;
	} else {
		g->c.failed++;
		while (sl->resp_len &&
		       (sl->resp[sl->resp_len - 1] == '\n' || sl->resp[sl->resp_len - 1] == '\r'))
			sl->resp[--sl->resp_len] = '\0';
		show_error(g, "HTTP %ld: %s", code, sl->resp);
	}
}

/* ---- the run ------------------------------------------------------------- */

/* Start whatever is due now; returns how long (ms) until more is due. */
static long start_due(struct loadgen *g, uint64_t t0, uint64_t now)
{
	const struct settings *s = &g->s;
	long wait_ms = 1000;
	for (int i = 0; i < s->connections; i++) {
		if (s->max_requests && g->c.sent >= s->max_requests)
			return 1000;
		struct slot *sl = &g->slots[i];
		if (sl->busy)
			continue;
		if (s->rate == 0) {
			slot_start(g, sl);
		} else if (s->rate > 0) {
			/* the requests due by now, however many are late */
			uint64_t due = (uint64_t)((double)(now - t0) / 1e9 * s->rate) + 1;
			if (g->c.sent >= due) {
				double next = (double)(g->c.sent) / s->rate * 1e9;
				double in = (next - (double)(now - t0)) / 1e6;
				return in < 1 ? 1 : (long)in;
			}
			slot_start(g, sl);
		} else if (sl->next_ns <= now) {
			slot_start(g, sl);
		} else {
			long in = (long)((sl->next_ns - now) / 1000000) + 1;
			if (in < wait_ms)
				wait_ms = in;
		}
	}
	return wait_ms;
}

static void progress(struct loadgen *g, double secs)
{
	if (g->s.quiet)
		return;
	fprintf(stderr,
		"plantd-loadgen: %5.0fs sent %" PRIu64 " accepted %" PRIu64 " refused %" PRIu64
		" errors %" PRIu64 " req/s %" PRIu64,
		secs, g->c.sent, g->c.accepted, g->c.refused, g->c.failed, g->done_last_second);
	if (g->s.batch)
		fprintf(stderr, " readings/s %" PRIu64, g->done_last_second * (uint64_t)g->s.batch);
	fputc('\n', stderr);
	g->done_last_second = 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile p (0..100) of the sorted latencies, in ms. */
static double percentile_ms(const struct loadgen *g, double p)
{
	if (!g->n_lat)
		return 0;
	size_t rank = (size_t)ceil(p / 100.0 * (double)g->n_lat);
	if (rank < 1)
		rank = 1;
	return (double)g->lat_us[rank - 1] / 1000.0;
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void summary(struct loadgen *g, double secs)
{
	qsort(g->lat_us, g->n_lat, sizeof *g->lat_us, cmp_u32);
	const struct counts *c = &g->c;
	double rps = secs > 0 ? (double)c->sent / secs : 0;
	double readings_ps = secs > 0 ? (double)c->readings_accepted / secs : 0;
	double p50 = percentile_ms(g, 50), p90 = percentile_ms(g, 90), p99 = percentile_ms(g, 99);
	double max = percentile_ms(g, 100);
	if (g->s.rate > 0 && rps < g->s.rate * 0.95)
		fprintf(stderr,
			"plantd-loadgen: %.1f req/s, below the rate of %g asked for: more "
			"--connections?\n",
			rps, g->s.rate);
	if (g->s.json) {
		printf("{\"url\": ");
		json_str(stdout, g->s.url);
		printf(", \"seconds\": %.3f, \"connections\": %d, \"batch\": %d, \"rate\": ", secs,
		       g->s.connections, g->s.batch);
		if (g->s.rate < 0)
			printf("null");
		else
			printf("%g", g->s.rate);
		printf(", \"sent\": %" PRIu64 ", \"accepted\": %" PRIu64 ", \"refused\": %" PRIu64
		       ", \"failed\": %" PRIu64 ", \"readings_sent\": %" PRIu64
		       ", \"readings_accepted\": %" PRIu64 ", \"req_per_s\": %.1f"
		       ", \"readings_per_s\": %.1f, \"p50_ms\": %.3f, \"p90_ms\": %.3f"
		       ", \"p99_ms\": %.3f, \"max_ms\": %.3f}\n",
		       c->sent, c->accepted, c->refused, c->failed, c->readings_sent,
		       c->readings_accepted, rps, readings_ps, p50, p90, p99, max);
		return;
	}
	printf("sent      %" PRIu64 " requests (%" PRIu64 " readings) in %.2f s, %.1f req/s\n",
	       c->sent, c->readings_sent, secs, rps);
	printf("accepted  %" PRIu64 " (2xx; %" PRIu64 " readings, %.1f readings/s)\n", c->accepted,
	       c->readings_accepted, readings_ps);
	printf("refused   %" PRIu64 " (429)\n", c->refused);
	printf("failed    %" PRIu64 "\n", c->failed);
	printf("latency   p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms\n", p50, p90, p99,
	       max);
}

int main(int argc, char **argv)
{
	struct loadgen g;
	memset(&g, 0, sizeof g);
	g.s = (struct settings){
		.locations = 8,
		.sensors = 1000,
		.min_r = 0.1,
		.max_r = 20500,
		.runtime_s = 10,
		.min_delay_s = 1,
		.max_delay_s = 10,
		.rate = -1,
		.connections = 1,
		.timeout_s = 10,
	};
	parse_args(argc, argv, &g.s);

	uint64_t seed = g.s.seed_set ? g.s.seed : (wall_ms() ^ ((uint64_t)getpid() << 32));
	g.rng = seed;
	/* ids differ from run to run, even with the same seed */
	uint64_t tag_state = wall_ms() ^ (uint64_t)getpid();
	snprintf(g.run_tag, sizeof g.run_tag, "%08x", (unsigned)rng_next(&tag_state));

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fputs("plantd-loadgen: curl_global_init failed\n", stderr);
		return 1;
	}
	g.multi = curl_multi_init();
	if (!g.multi) {
		fputs("plantd-loadgen: curl_multi_init failed\n", stderr);
		return 1;
	}
	/* one connection per sender, kept alive between its requests */
	curl_multi_setopt(g.multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)g.s.connections);
	curl_multi_setopt(g.multi, CURLMOPT_MAXCONNECTS, (long)g.s.connections);
	g.headers = curl_slist_append(NULL, "Content-Type: application/json");
	g.headers = curl_slist_append(g.headers, "Expect:"); /* no 100-continue round trip */
	char auth[1024];
	if (g.s.token) {
		if ((size_t)snprintf(auth, sizeof auth, "Authorization: Bearer %s", g.s.token) >=
		    sizeof auth)
			die_usage("the token is too long");
		g.headers = curl_slist_append(g.headers, auth);
	}
	if (!g.headers) {
		fputs("plantd-loadgen: out of memory\n", stderr);
		return 1;
	}
	g.slots = calloc((size_t)g.s.connections, sizeof *g.slots);
	if (!g.slots) {
		fputs("plantd-loadgen: out of memory\n", stderr);
		return 1;
	}
	for (int i = 0; i < g.s.connections; i++)
		slot_init(&g, &g.slots[i]);

	struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESETHAND};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	uint64_t t0 = mono_ns();
	uint64_t end = g.s.runtime_s > 0 ? t0 + (uint64_t)(g.s.runtime_s * 1e9) : UINT64_MAX;
	uint64_t next_progress = t0 + 1000000000ull;
	for (;;) {
		uint64_t now = mono_ns();
		bool stopping = stop_requested || now >= end ||
				(g.s.max_requests && g.c.sent >= g.s.max_requests);
		long wait_ms = stopping ? 100 : start_due(&g, t0, now);
		if (stopping && g.in_flight == 0)
			break;
		int running;
		curl_multi_perform(g.multi, &running);
		CURLMsg *m;
		int left;
		bool finished = false;
		while ((m = curl_multi_info_read(g.multi, &left))) {
			if (m->msg != CURLMSG_DONE)
				continue;
			char *sl = NULL;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &sl);
			slot_done(&g, (struct slot *)sl, m->data.result);
			finished = true;
		}
		now = mono_ns();
		if (now >= next_progress) {
			progress(&g, (double)(now - t0) / 1e9);
			next_progress += 1000000000ull;
		}
		if (finished)
			continue; /* what is due now that senders are free */
		uint64_t until_progress = next_progress > now ? (next_progress - now) / 1000000 : 0;
		if ((uint64_t)wait_ms > until_progress)
			wait_ms = (long)until_progress + 1;
		if (!stopping && end != UINT64_MAX) {
			uint64_t until_end = end > now ? (end - now) / 1000000 + 1 : 0;
			if ((uint64_t)wait_ms > until_end)
				wait_ms = (long)until_end;
		}
		curl_multi_poll(g.multi, NULL, 0, (int)wait_ms, NULL);
	}
	double secs = (double)(mono_ns() - t0) / 1e9;
	summary(&g, secs);

	for (int i = 0; i < g.s.connections; i++) {
		curl_easy_cleanup(g.slots[i].easy);
		free(g.slots[i].body);
	}
	free(g.slots);
	free(g.lat_us);
	curl_slist_free_all(g.headers);
	curl_multi_cleanup(g.multi);
	curl_global_cleanup();
	json_decref(config_root);
	return g.c.failed ? 1 : 0;
}
