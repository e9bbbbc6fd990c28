/* bench_ingest: readings over HTTP into a running plantd, driven by wrk, one
 * JSON line per case on stdout.
 *
 *   bench_ingest [-s SECONDS] [-c CONNECTIONS] [-T WRK_THREADS] [-r RUNS]
 *                [-d DIR] [--list] [CASE...]
 *
 * Cases (all by default):
 *   single             one thermistor reading (~125 bytes of JSON, the
 *                      same bytes each time: wrk's cheapest load) per
 *                      POST /v1/ingest/sensor.raw, keep-alive connections;
 *                      the topic feeds an in-memory queue that log_sink
 *                      drains (acking each message) into /dev/null
 *   batch_100          a JSON array of 100 readings per request
 *   single_durable     single, the queue durable on the sqlite store
 *                      (synchronous = "normal")
 *   batch_100_durable  batch_100, the queue durable
 *   compare_nginx      single's load against nginx answering a static 202
 *                      `{}` (the floor an HTTP server sets on this machine),
 *                      printed with "server": "nginx"
 *
 * Each plantd case writes a site into a fresh directory under $TMPDIR (or
 * -d DIR / $BENCH_DIR), removed afterwards: an ingest listener on 127.0.0.1
 * port 0 with threads = 2 (its URL read from DATA/listeners.json), an admin
 * listener, ingest_http and the draining log_sink, and runs the build tree's
 * plantd (BUILD/host/plantd beside BUILD/tools/benchmarks, or $PLANTD) as a
 * process of its own. wrk (-T threads, default 1; -c connections, default
 * 32; --latency) loads it for a warm-up second, then for -s seconds
 * (default 10) per run; with -r RUNS the run with the median rate is
 * reported.
 *
 * ops_per_s counts readings accepted (202) per second: requests for single,
 * 100 per request for batch_100; requests_per_s the requests; p50_us and
 * p99_us wrk's latency percentiles; non_2xx the requests refused (e.g. 429:
 * the queue was full); published the readings the bus took during the run
 * (from GET /v1/topics, at least those accepted); queue_depth what was left
 * in the queue after it; rss_bytes and cpu_per_op_ns the server's (plantd:
 * its peak RSS, CPU of every thread per reading; nginx: master and workers).
 * wrk and the server share this machine's cores.
 *
 * Needs wrk, and nginx for compare_nginx: tools/bench installs them. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <ftw.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "bench_common.h"
#include "bench_proc.h"

const char *const bench_prog = "bench_ingest";

static const char *const cases[] = {
	"single", "batch_100", "single_durable", "batch_100_durable", "compare_nginx", NULL};

#define TOPIC		 "sensor.raw"
#define BATCH		 100
#define START_TIMEOUT_S	 30
#define STOP_TIMEOUT_S	 60
#define WARMUP_S	 1
#define LISTENER_THREADS 2
#define WORKERS		 2

struct opts {
	int seconds;
	int connections;
	int wrk_threads;
	int runs;
	const char *dir;
	const char *want[16];
	size_t n_want;
};

/* What one wrk run measured. */
struct wrk_result {
	uint64_t requests, duration_us, non_2xx, socket_errors;
	double p50_us, p90_us, p99_us, max_us;
	uint64_t published; /* readings the bus took meanwhile (plantd) */
	uint64_t cpu_ns;    /* the server's CPU meanwhile */
	double ops_per_s;
};

/* A server under test, in a process of its own. */
struct server {
	char dir[PATH_MAX];
	pid_t pid;
	char url[512];	 /* where wrk sends its POSTs */
	char admin[256]; /* plantd's admin listener, "" for nginx */
	bool nginx;
};

/* Processes to end when the benchmark dies half-way. */
/* Stop a server: SIGTERM, then SIGKILL when it takes too long. */
static void stop_process(pid_t pid, const char *what, const char *log)
{
	kill(pid, SIGTERM);
	int status = wait_for(pid, STOP_TIMEOUT_S);
	if (status == -1) {
		fprintf(stderr, "%s: %s did not stop within %d s, killed\n", bench_prog, what,
			STOP_TIMEOUT_S);
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "%s: %s stopped with status %d\n", bench_prog, what, status);
		show_tail(log);
	}
	track(pid, false);
}

/* ---- /proc --------------------------------------------------------------- */

/* A "Name:   N kB" field of /proc/PID/status, in bytes. */
static uint64_t proc_status_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	uint64_t v = 0;
	size_t n = strlen(field);
	while (fgets(line, sizeof line, f))
		if (strncmp(line, field, n) == 0 && line[n] == ':')
			v = strtoull(line + n + 1, NULL, 10) * 1024;
	fclose(f);
	return v;
}

/* utime + stime of a process (every thread), ns; its parent's pid. */
static uint64_t proc_cpu_ns(pid_t pid, pid_t *ppid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')'); /* the command may hold spaces */
	if (!p)
		return 0;
	/* after ")": state ppid pgrp session tty tpgid flags minflt cminflt
	 * majflt cmajflt utime stime */
	char state;
	int pp;
	unsigned long long utime, stime;
	if (sscanf(p + 1, " %c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &state, &pp,
		   &utime, &stime) != 4)
		return 0;
	if (ppid)
		*ppid = pp;
	long hz = sysconf(_SC_CLK_TCK);
	return (utime + stime) * (1000000000ull / (uint64_t)(hz > 0 ? hz : 100));
}

/* A server's CPU time and peak RSS: the process, and for nginx its
 * workers (the children of its master). */
static void server_usage(const struct server *srv, uint64_t *cpu, uint64_t *rss)
{
	*cpu = proc_cpu_ns(srv->pid, NULL);
	*rss = proc_status_kb(srv->pid, "VmHWM");
	if (!srv->nginx)
		return;
	DIR *d = opendir("/proc");
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);
		if (*end || pid <= 0)
			continue;
		pid_t ppid = 0;
		uint64_t c = proc_cpu_ns((pid_t)pid, &ppid);
		if (ppid != srv->pid)
			continue;
		*cpu += c;
		*rss += proc_status_kb((pid_t)pid, "VmHWM");
	}
	closedir(d);
}

/* ---- plantd -------------------------------------------------------------- */

/* GET an admin path of plantd: its JSON (a new reference). */
static json_t *admin_get(const struct server *srv, const char *path)
{
	char url[512];
	snprintf(url, sizeof url, "%s%s", srv->admin, path);
	CURL *e = curl_easy_init();
	if (!e)
		die("curl_easy_init failed");
	struct body b = {0};
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	CURLcode rc = curl_easy_perform(e);
	long code = 0;
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_cleanup(e);
	if (rc != CURLE_OK || code != 200)
		fail("GET %s: %s", url, rc != CURLE_OK ? curl_easy_strerror(rc) : "not 200");
	json_error_t err;
	json_t *j = json_loads(b.text ? b.text : "", 0, &err);
	free(b.text);
	if (!j)
		fail("GET %s: not JSON: %s", url, err.text);
	return j;
}

/* The messages the bus took on TOPIC so far. */
static uint64_t topic_published(const struct server *srv)
{
	json_t *j = admin_get(srv, "/v1/topics");
	json_t *t;
	size_t i;
	uint64_t n = 0;
	json_array_foreach(json_object_get(j, "topics"), i, t)
	{
		const char *name = json_string_value(json_object_get(t, "name"));
		if (name && strcmp(name, TOPIC) == 0)
			n = (uint64_t)json_integer_value(json_object_get(t, "published"));
	}
	json_decref(j);
	return n;
}

static uint64_t queue_depth(const struct server *srv)
{
	json_t *j = admin_get(srv, "/v1/queues");
	json_t *q;
	size_t i;
	uint64_t n = 0;
	json_array_foreach(json_object_get(j, "queues"), i, q)
	{
		const char *name = json_string_value(json_object_get(q, "name"));
		if (name && strcmp(name, TOPIC) == 0)
			n = (uint64_t)json_integer_value(json_object_get(q, "depth"));
	}
	json_decref(j);
	return n;
}

static void plantd_start(struct server *srv, bool durable)
{
	char path[PATH_MAX + 64], log[PATH_MAX + 64];
	snprintf(path, sizeof path, "%s/conf.d", srv->dir);
	if (mkdir(path, 0755) != 0)
		fail("cannot make %s: %s", path, strerror(errno));
	snprintf(path, sizeof path, "%s/conf.d/plantd.conf", srv->dir);
	write_file(path,
		   "site = \"bench-ingest\";\n"
		   "data_dir = \"%s/data\";\n"
		   "workers = %d;\n"
		   "log_level = \"warn\";\n"
		   "stores = ( { name = \"site\"; backend = \"sqlite\"; path = \"site.db\"; "
		   "synchronous = \"normal\"; } );\n"
		   "queues = (\n"
		   "  { name = \"%s\"; subscribe = [ \"%s\" ]; max_depth = 1000000; %s }\n"
		   ");\n"
		   "listeners = (\n"
		   "  { name = \"admin\"; admin = true; address = \"127.0.0.1\"; port = 0; },\n"
		   "  { name = \"ingest\"; address = \"127.0.0.1\"; port = 0; threads = %d; "
		   "max_connections = 4096; }\n"
		   ");\n"
		   "plugins = (\n"
		   "  { name = \"ingest\"; module = \"ingest_http\"; listener = \"ingest\"; },\n"
		   "  { name = \"drain\"; module = \"log_sink\"; queue = \"%s\"; "
		   "path = \"/dev/null\"; flush = false; }\n"
		   ");\n",
		   srv->dir, WORKERS, TOPIC, TOPIC,
		   durable ? "durable = true; store = \"site\";" : "", LISTENER_THREADS, TOPIC);

	snprintf(path, sizeof path, "%s/conf.d", srv->dir);
	snprintf(log, sizeof log, "%s/plantd.log", srv->dir);
	char *argv[] = {(char *)plantd_path(), "-c", path, "-l", "warn", NULL};
	srv->pid = spawn(argv, log);

	char urls[PATH_MAX + 64];
	snprintf(urls, sizeof urls, "%s/data/listeners.json", srv->dir);
	uint64_t deadline = mono_ns() + (uint64_t)START_TIMEOUT_S * 1000000000ull;
	json_t *j = NULL;
	while (!(j = json_load_file(urls, 0, NULL))) {
		int status;
		if (waitpid(srv->pid, &status, WNOHANG) == srv->pid) {
			track(srv->pid, false);
			show_tail(log);
			fail("plantd exited (status %d) before its listeners were up", status);
		}
		if (mono_ns() > deadline) {
			show_tail(log);
			fail("no %s after %d s", urls, START_TIMEOUT_S);
		}
		sleep_ms(20);
	}
	const char *ingest = json_string_value(json_object_get(j, "ingest"));
	const char *admin = json_string_value(json_object_get(j, "admin"));
	if (!ingest || !admin)
		fail("%s has no \"ingest\" or \"admin\" URL", urls);
	snprintf(srv->url, sizeof srv->url, "%s/v1/ingest/%s", ingest, TOPIC);
	snprintf(srv->admin, sizeof srv->admin, "%s", admin);
	json_decref(j);
}

/* ---- nginx --------------------------------------------------------------- */

static const char *nginx_path(void)
{
	static const char *const where[] = {"/usr/sbin/nginx", "/usr/local/sbin/nginx",
					    "/usr/local/nginx/sbin/nginx", NULL};
	const char *env = getenv("NGINX");
	if (env && *env)
		return env;
	for (size_t i = 0; where[i]; i++)
		if (access(where[i], X_OK) == 0)
			return where[i];
	return "nginx"; /* on PATH, or spawn() says it is missing */
}

static bool port_open(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

static void nginx_start(struct server *srv)
{
	int port = free_port();
	char conf[PATH_MAX + 64], log[PATH_MAX + 64], prefix[PATH_MAX + 8];
	const char *d = srv->dir;
	/* workers run as nobody when we are root: they only need the sockets */
	chmod(d, 0755);
	snprintf(conf, sizeof conf, "%s/nginx.conf", d);
	write_file(conf,
		   "daemon off;\n"
		   "master_process on;\n"
		   "worker_processes %d;\n"
		   "pid %s/nginx.pid;\n"
		   "error_log %s/error.log warn;\n"
		   "events { worker_connections 4096; }\n"
		   "http {\n"
		   "  access_log off;\n"
		   "  client_body_temp_path %s/body;\n"
		   "  proxy_temp_path %s/proxy;\n"
		   "  fastcgi_temp_path %s/fastcgi;\n"
		   "  uwsgi_temp_path %s/uwsgi;\n"
		   "  scgi_temp_path %s/scgi;\n"
		   "  keepalive_requests 100000000;\n"
		   "  keepalive_timeout 60s;\n"
		   "  server {\n"
		   "    listen 127.0.0.1:%d;\n"
		   "    location / { default_type application/json; return 202 '{}'; }\n"
		   "  }\n"
		   "}\n",
		   LISTENER_THREADS, d, d, d, d, d, d, d, port);
	snprintf(log, sizeof log, "%s/nginx.out", d);
	snprintf(prefix, sizeof prefix, "%s/", d);
	char elog[PATH_MAX + 64];
	snprintf(elog, sizeof elog, "%s/error.log", d);
	char *argv[] = {(char *)nginx_path(), "-p", prefix, "-c", conf, "-e", elog, NULL};
	srv->pid = spawn(argv, log);
	srv->nginx = true;
	uint64_t deadline = mono_ns() + (uint64_t)START_TIMEOUT_S * 1000000000ull;
	while (!port_open(port)) {
		int status;
		if (waitpid(srv->pid, &status, WNOHANG) == srv->pid) {
			track(srv->pid, false);
			show_tail(log);
			show_tail(elog);
			fail("nginx exited (status %d) before it listened", status);
		}
		if (mono_ns() > deadline)
			fail("nginx does not listen on port %d after %d s", port, START_TIMEOUT_S);
		sleep_ms(20);
	}
	snprintf(srv->url, sizeof srv->url, "http://127.0.0.1:%d/v1/ingest/%s", port, TOPIC);
}

/* ---- load ---------------------------------------------------------------- */

/* A thermistor reading as the sensor plugin takes it; returns its length. */
static size_t thermistor_reading(char *out, size_t cap, uint64_t i)
{
	unsigned loc = 1 + (unsigned)(i % 8), sensor = 1 + (unsigned)((i * 7919) % 1000);
	uint64_t milli = 100 + (i * 2654435761u) % 20500000u;
	int n = snprintf(out, cap,
			 "{\"id\":\"bench-%09" PRIu64 "\",\"sensor_id\":\"L%02u-S%04u\","
			 "\"location\":\"L%02u\",\"type\":\"thermistor\",\"ts\":%" PRIu64
			 ",\"resistance\":%" PRIu64 ".%03u}",
			 i, loc, sensor, loc, (uint64_t)1718000000000 + i, milli / 1000,
			 (unsigned)(milli % 1000));
	if (n <= 0 || (size_t)n >= cap)
		die("reading too long");
	return (size_t)n;
}

/* The wrk script: a static POST (wrk sends the same bytes again, the
 * cheapest load it makes) and, when done, one line of figures. */
static void write_script(const char *path, size_t readings)
{
	size_t cap = readings * READING_MAX + 16, len = 0;
	char *body = malloc(cap);
	if (!body)
		die("out of memory");
	if (readings > 1)
		body[len++] = '[';
	for (size_t i = 0; i < readings; i++) {
		if (i)
			body[len++] = ',';
		len += thermistor_reading(body + len, cap - len, i + 1);
	}
	if (readings > 1)
		body[len++] = ']';
	body[len] = '\0';
	write_file(path,
		   "wrk.method = \"POST\"\n"
		   "wrk.headers[\"Content-Type\"] = \"application/json\"\n"
		   "wrk.body = [==[%s]==]\n"
		   "function done(summary, latency, requests)\n"
		   "  local e = summary.errors\n"
		   "  io.write(string.format(\"WRK_RESULT %%.0f %%.0f %%.0f %%.0f %%.0f %%.0f "
		   "%%.0f %%.0f\\n\",\n"
		   "    summary.requests, summary.duration, e.status,\n"
		   "    e.connect + e.read + e.write + e.timeout,\n"
		   "    latency:percentile(50), latency:percentile(90),\n"
		   "    latency:percentile(99), latency.max))\n"
		   "end\n",
		   body);
	free(body);
}

static void run_wrk(const struct opts *o, const char *dir, const char *url, int seconds,
		    struct wrk_result *r)
{
	char script[PATH_MAX + 64], out[PATH_MAX + 64], dur[32], conns[32], threads[32];
	snprintf(script, sizeof script, "%s/load.lua", dir);
	snprintf(out, sizeof out, "%s/wrk.out", dir);
	snprintf(dur, sizeof dur, "%ds", seconds);
	snprintf(conns, sizeof conns, "%d", o->connections);
	snprintf(threads, sizeof threads, "%d", o->wrk_threads);
	char *argv[] = {"wrk", "-t",	    threads, "-c",   conns,	  "-d",
			dur,   "--latency", "-s",    script, (char *)url, NULL};
	pid_t pid = spawn(argv, out);
	int status = wait_for(pid, seconds + 60);
	track(pid, false);
	if (status == -1) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		fail("wrk did not finish");
	}
	FILE *f = fopen(out, "r");
	char line[1024];
	bool found = false;
	while (f && fgets(line, sizeof line, f)) {
		double v[8];
		if (sscanf(line, "WRK_RESULT %lf %lf %lf %lf %lf %lf %lf %lf", &v[0], &v[1], &v[2],
			   &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
			memset(r, 0, sizeof *r);
			r->requests = (uint64_t)v[0];
			r->duration_us = (uint64_t)v[1];
			r->non_2xx = (uint64_t)v[2];
			r->socket_errors = (uint64_t)v[3];
			r->p50_us = v[4];
			r->p90_us = v[5];
			r->p99_us = v[6];
			r->max_us = v[7];
			found = true;
		}
	}
	if (f)
		fclose(f);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !found) {
		show_tail(out);
		fail("wrk failed (status %d)", status);
	}
}

/* ---- cases --------------------------------------------------------------- */

static int cmp_ops(const void *a, const void *b)
{
	const struct wrk_result *x = a, *y = b;
	return x->ops_per_s < y->ops_per_s ? -1 : x->ops_per_s > y->ops_per_s;
}

static void run_case(const struct opts *o, const char *name)
{
	bool nginx = strcmp(name, "compare_nginx") == 0;
	bool durable = strstr(name, "_durable") != NULL;
	size_t per_request = strncmp(name, "batch_100", 9) == 0 ? BATCH : 1;

	struct server srv;
	memset(&srv, 0, sizeof srv);
	const char *tmp = o->dir ? o->dir : getenv("BENCH_DIR");
	if (!tmp || !*tmp)
		tmp = getenv("TMPDIR");
	if (!tmp || !*tmp)
		tmp = "/tmp";
	snprintf(srv.dir, sizeof srv.dir, "%s/bench_ingest.XXXXXX", tmp);
	if (!mkdtemp(srv.dir))
		fail("cannot make a directory under %s: %s", tmp, strerror(errno));
	char script[PATH_MAX + 64];
	snprintf(script, sizeof script, "%s/load.lua", srv.dir);
	write_script(script, per_request);

	if (nginx)
		nginx_start(&srv);
	else
		plantd_start(&srv, durable);
	fprintf(stderr, "%s: %s: %s on %s\n", bench_prog, name, nginx ? "nginx" : "plantd",
		srv.url);

	struct wrk_result warm, runs[RUNS_MAX];
	run_wrk(o, srv.dir, srv.url, WARMUP_S, &warm);
	for (int i = 0; i < o->runs; i++) {
		struct wrk_result *r = &runs[i];
		uint64_t pub0 = nginx ? 0 : topic_published(&srv);
		uint64_t cpu0, cpu1, rss;
		server_usage(&srv, &cpu0, &rss);
		run_wrk(o, srv.dir, srv.url, o->seconds, r);
		server_usage(&srv, &cpu1, &rss);
		r->cpu_ns = cpu1 - cpu0;
		r->published = nginx ? 0 : (topic_published(&srv) - pub0);
		double secs = (double)r->duration_us / 1e6;
		uint64_t accepted = r->requests - r->non_2xx;
		r->ops_per_s = secs > 0 ? (double)(accepted * per_request) / secs : 0;
		if (!nginx && r->published < accepted * per_request)
			fail("%s: the bus took %" PRIu64 " readings, fewer than the %" PRIu64
			     " accepted",
			     name, r->published, accepted * per_request);
	}
	uint64_t cpu_end, rss;
	server_usage(&srv, &cpu_end, &rss);
	uint64_t depth = nginx ? 0 : queue_depth(&srv);

	char log[PATH_MAX + 64];
	snprintf(log, sizeof log, "%s/%s", srv.dir, nginx ? "error.log" : "plantd.log");
	stop_process(srv.pid, nginx ? "nginx" : "plantd", log);
	nftw(srv.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);

	qsort(runs, (size_t)o->runs, sizeof *runs, cmp_ops);
	const struct wrk_result *r = &runs[o->runs / 2];
	double secs = (double)r->duration_us / 1e6;
	uint64_t accepted = r->requests - r->non_2xx;
	uint64_t ops = accepted * per_request;
	if (r->non_2xx || r->socket_errors)
		fprintf(stderr,
			"%s: %s: %" PRIu64 " requests refused (non-2xx), %" PRIu64
			" socket errors\n",
			bench_prog, name, r->non_2xx, r->socket_errors);
	printf("{\"suite\": \"ingest\", \"case\": \"%s\", \"server\": \"%s\", "
	       "\"readings_per_request\": %zu, \"connections\": %d, \"wrk_threads\": %d, "
	       "\"seconds\": %.3f, \"requests\": %" PRIu64 ", \"non_2xx\": %" PRIu64
	       ", \"socket_errors\": %" PRIu64 ", \"ops_per_s\": %.0f, \"requests_per_s\": %.0f, "
	       "\"ns_per_op\": %.1f, \"p50_us\": %.0f, \"p90_us\": %.0f, \"p99_us\": %.0f, "
	       "\"max_us\": %.0f, ",
	       name, nginx ? "nginx" : "plantd", per_request, o->connections, o->wrk_threads, secs,
	       r->requests, r->non_2xx, r->socket_errors, r->ops_per_s,
	       secs > 0 ? (double)r->requests / secs : 0, r->ops_per_s > 0 ? 1e9 / r->ops_per_s : 0,
	       r->p50_us, r->p90_us, r->p99_us, r->max_us);
	if (!nginx)
		printf("\"published\": %" PRIu64 ", \"queue_depth\": %" PRIu64 ", ", r->published,
		       depth);
	printf("\"cpu_per_op_ns\": %.1f, \"rss_bytes\": %" PRIu64 "}\n",
	       ops ? (double)r->cpu_ns / (double)ops : 0, rss);
	fflush(stdout);
}

/* ---- arguments ----------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: %s [-s SECONDS] [-c CONNECTIONS] [-T WRK_THREADS] [-r RUNS] [-d DIR] "
		"[--list] [CASE...]\ncases:",
		bench_prog);
	for (size_t i = 0; cases[i]; i++)
		fprintf(f, " %s", cases[i]);
	fputc('\n', f);
}

static int int_arg(const char *text, int lo, int hi)
{
	char *end;
	long v = strtol(text, &end, 10);
	if (*end || end == text || v < lo || v > hi) {
		usage(stderr);
		exit(2);
	}
	return (int)v;
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool more = i + 1 < argc;
		if (strcmp(a, "--list") == 0) {
			for (size_t k = 0; cases[k]; k++)
				puts(cases[k]);
			exit(0);
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			exit(0);
		} else if (strcmp(a, "-s") == 0 && more) {
			o->seconds = int_arg(argv[++i], 1, 3600);
		} else if (strcmp(a, "-c") == 0 && more) {
			o->connections = int_arg(argv[++i], 1, 10000);
		} else if (strcmp(a, "-T") == 0 && more) {
			o->wrk_threads = int_arg(argv[++i], 1, 64);
		} else if (strcmp(a, "-r") == 0 && more) {
			o->runs = int_arg(argv[++i], 1, RUNS_MAX);
		} else if (strcmp(a, "-d") == 0 && more) {
			o->dir = argv[++i];
		} else if (strcmp(a, "-n") == 0 && more) {
			/* $BENCH_ARGS gives every suite the same -n: a count of
			 * operations, which a timed load cannot honour */
			fprintf(stderr, "%s: -n %s ignored: each case runs -s SECONDS\n",
				bench_prog, argv[++i]);
		} else {
			size_t k = 0;
			while (cases[k] && strcmp(cases[k], a) != 0)
				k++;
			if (!cases[k] || o->n_want == sizeof o->want / sizeof *o->want) {
				fprintf(stderr, "%s: unknown case \"%s\"\n", bench_prog, a);
				usage(stderr);
				exit(2);
			}
			o->want[o->n_want++] = cases[k];
		}
	}
	if (o->connections < o->wrk_threads)
		o->wrk_threads = o->connections;
	if (o->n_want == 0)
		for (size_t k = 0; cases[k]; k++)
			o->want[o->n_want++] = cases[k];
}

int main(int argc, char **argv)
{
	struct opts o = {.seconds = 10, .connections = 32, .wrk_threads = 1, .runs = 1};
	parse_args(argc, argv, &o);
	signal(SIGPIPE, SIG_IGN);
	atexit(kill_live);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		die("curl_global_init failed");
	for (size_t i = 0; i < o.n_want; i++)
		run_case(&o, o.want[i]);
	curl_global_cleanup();
	return 0;
}
