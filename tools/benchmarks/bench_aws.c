/* bench_aws: readings from one plantd to SQS (fauxqs on loopback) through
 * transport_sqs, one JSON line per case on stdout.
 *
 *   bench_aws [-n READINGS] [-r RUNS] [-d DIR] [--list] [CASE...]
 *
 * Cases (all by default):
 *   sqs_send_batch          an in-memory queue of READINGS (default 50000)
 *                           readings (~200 bytes of JSON each) drained to
 *                           SQS with SendMessageBatch, 10 a request, up to 4
 *                           requests at once (the defaults)
 *   sqs_send_batch_durable  the same from a durable queue (sqlite,
 *                           synchronous = "normal"): each ack is a delete
 *   sqs_send_inflight_1     one request at a time (max_inflight = 1)
 *   sqs_send_inflight_16    up to 16 at once
 *
 * Each case writes a site into a fresh directory under $TMPDIR (or -d DIR
 * / $BENCH_DIR), removed afterwards, and runs the build tree's plantd
 * (BUILD/host/plantd, or $PLANTD) as a process of its own, with ingest_http
 * and transport_sqs; fauxqs runs as `node tests/aws/fauxqs.js PORT` (needs
 * `npm ci --prefix tests/aws`, which tools/bench does). The readings are
 * posted (NDJSON, 1000 a request) while fauxqs is not running yet, so that
 * the whole backlog waits in plantd's queue; then fauxqs starts, and the
 * clock runs from the first reading SQS took until the last: a drain of a
 * backlog, the sender's own rate. Afterwards SQS must hold every reading
 * (GetQueueAttributes).
 *
 * ops_per_s is readings accepted by SQS per second; requests_per_s the
 * SendMessageBatch calls (ops / 10); plantd_cpu and fauxqs_cpu the share of
 * one core each process used meanwhile (1.0 = one core busy); bound names
 * what limits the rate: "fauxqs" when its single node.js thread is busy
 * (>= 0.85), "plantd" when plantd uses as much, else "latency" (the
 * requests in flight wait for answers). rss_bytes is plantd's peak RSS. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "bench_common.h"
#include "bench_proc.h"

#ifndef BENCH_SOURCE_ROOT
#define BENCH_SOURCE_ROOT "."
#endif

const char *const bench_prog = "bench_aws";

static const char *const cases[] = {"sqs_send_batch", "sqs_send_batch_durable",
				    "sqs_send_inflight_1", "sqs_send_inflight_16", NULL};

#define TOPIC		"sensor.raw"
#define QUEUE_NAME	"bench"
#define POST_BATCH	1000
#define START_TIMEOUT_S 30
#define STOP_TIMEOUT_S	30
#define DRAIN_TIMEOUT_S 600
#define WORKERS		2

struct proc {
	pid_t pid;
	char log[PATH_MAX + 64];
};

static void stop_process(struct proc *p, const char *what)
{
	if (p->pid <= 0)
		return;
	kill(p->pid, SIGTERM);
	int status = wait_for(p->pid, STOP_TIMEOUT_S);
	if (status == -1) {
		fprintf(stderr, "%s: %s did not stop within %d s, killed\n", bench_prog, what,
			STOP_TIMEOUT_S);
		kill(p->pid, SIGKILL);
		waitpid(p->pid, &status, 0);
	} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "%s: %s stopped with status %d\n", bench_prog, what, status);
		show_tail(p->log);
	}
	track(p->pid, false);
	p->pid = 0;
}

/* utime + stime of a process (every thread), ns */
static uint64_t proc_cpu_ns(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')');
	if (!p)
		return 0;
	unsigned long long utime, stime;
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
		   &stime) != 2)
		return 0;
	long hz = sysconf(_SC_CLK_TCK);
	return (utime + stime) * (1000000000ull / (uint64_t)(hz > 0 ? hz : 100));
}

static uint64_t proc_hwm(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	uint64_t v = 0;
	while (fgets(line, sizeof line, f))
		if (strncmp(line, "VmHWM:", 6) == 0)
			v = strtoull(line + 6, NULL, 10) * 1024;
	fclose(f);
	return v;
}

/* ---- HTTP ---------------------------------------------------------------- */

static CURL *easy;

/* One request; the answer's JSON ([new], NULL when it is not JSON) and its
 * status in *code. */
static json_t *http(const char *method, const char *url, const char *const *headers,
		    const char *data, size_t len, long *code)
{
	struct body b = {0};
	struct curl_slist *h = NULL;
	for (size_t i = 0; headers && headers[i]; i++)
		h = curl_slist_append(h, headers[i]);
	curl_easy_reset(easy);
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h);
	if (data) {
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, data);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long)len);
	}
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	CURLcode rc = curl_easy_perform(easy);
	*code = 0;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, code);
	curl_slist_free_all(h);
	json_t *j = NULL;
	if (rc == CURLE_OK && b.text)
		j = json_loads(b.text, JSON_DECODE_ANY, NULL);
	free(b.text);
	return j;
}

/* A plugin counter on plantd's /metrics. */
static uint64_t counter(const char *admin, const char *instance, const char *name)
{
	char url[512], want[256];
	snprintf(url, sizeof url, "%s/metrics", admin);
	snprintf(want, sizeof want, "plantd_instance_counter{instance=\"%s\",name=\"%s\"} ",
		 instance, name);
	struct body b = {0};
	curl_easy_reset(easy);
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	uint64_t v = 0;
	if (curl_easy_perform(easy) == CURLE_OK && b.text) {
		char *at = strstr(b.text, want);
		if (at)
			v = strtoull(at + strlen(want), NULL, 10);
	}
	free(b.text);
	return v;
}

static uint64_t queue_depth(const char *admin, const char *queue)
{
	char url[512];
	long code;
	snprintf(url, sizeof url, "%s/v1/queues", admin);
	json_t *j = http("GET", url, NULL, NULL, 0, &code);
	uint64_t depth = UINT64_MAX;
	size_t i;
	json_t *q;
	json_array_foreach(json_object_get(j, "queues"), i, q)
	{
		if (strcmp(json_string_value(json_object_get(q, "name")), queue) == 0)
			depth = (uint64_t)json_integer_value(json_object_get(q, "depth"));
	}
	json_decref(j);
	return depth;
}

/* An SQS action on fauxqs (it checks no signature). */
static json_t *sqs(const char *endpoint, const char *action, const char *body)
{
	char target[96];
	long code;
	snprintf(target, sizeof target, "X-Amz-Target: AmazonSQS.%s", action);
	const char *const hdrs[] = {target, "Content-Type: application/x-amz-json-1.0", NULL};
	json_t *j = http("POST", endpoint, hdrs, body, strlen(body), &code);
	if (code != 200)
		fail("SQS %s answered %ld", action, code);
	return j;
}

/* ---- a case ---------------------------------------------------------------- */

struct result {
	uint64_t readings;
	double seconds, ops_per_s, plantd_cpu, fauxqs_cpu;
	uint64_t rss, retries;
};

static void fauxqs_start(struct proc *f, const char *dir, int port)
{
	char script[PATH_MAX], portarg[16], ready[64];
	snprintf(script, sizeof script, "%s/tests/aws/fauxqs.js", BENCH_SOURCE_ROOT);
	snprintf(portarg, sizeof portarg, "%d", port);
	snprintf(f->log, sizeof f->log, "%s/fauxqs.out", dir);
	char modules[PATH_MAX + 64];
	snprintf(modules, sizeof modules, "%s/tests/aws/node_modules/fauxqs", BENCH_SOURCE_ROOT);
	if (access(modules, R_OK) != 0)
		fail("fauxqs is not installed: run npm ci --prefix tests/aws");
	char *argv[] = {"node", script, portarg, NULL};
	f->pid = spawn(argv, f->log);
	snprintf(ready, sizeof ready, "ready %d", port);
	uint64_t deadline = mono_ns() + (uint64_t)START_TIMEOUT_S * 1000000000ull;
	for (;;) {
		char buf[256] = "";
		FILE *in = fopen(f->log, "r");
		if (in) {
			size_t n = fread(buf, 1, sizeof buf - 1, in);
			buf[n] = '\0';
			fclose(in);
		}
		if (strstr(buf, ready))
			return;
		int status;
		if (waitpid(f->pid, &status, WNOHANG) == f->pid) {
			track(f->pid, false);
			show_tail(f->log);
			fail("fauxqs exited (status %d) before it was ready", status);
		}
		if (mono_ns() > deadline)
			fail("fauxqs not ready after %d s", START_TIMEOUT_S);
		sleep_ms(20);
	}
}

static void run_case(const char *name, uint64_t n, const char *base, struct result *res)
{
	bool durable = strstr(name, "_durable") != NULL;
	int inflight = strstr(name, "inflight_16") ? 16 : strstr(name, "inflight_1") ? 1 : 4;
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s/bench_aws.XXXXXX", base);
	if (!mkdtemp(dir))
		fail("cannot make a directory under %s: %s", base, strerror(errno));
	int port = free_port();
	char endpoint[64];
	snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", port);

	char conf[PATH_MAX + 64], data[PATH_MAX + 64];
	snprintf(data, sizeof data, "%s/data", dir);
	snprintf(conf, sizeof conf, "%s/plantd.conf", dir);
	write_file(conf,
		   "site = \"bench-aws\";\n"
		   "data_dir = \"%s\";\n"
		   "workers = %d;\n"
		   "log_level = \"warn\";\n"
		   "aws = { region = \"us-east-1\"; access_key_id = \"test\"; "
		   "secret_access_key = \"test\"; };\n"
		   "stores = ( { name = \"site\"; backend = \"sqlite\"; path = \"site.db\"; "
		   "synchronous = \"normal\"; } );\n"
		   "queues = ( { name = \"out\"; subscribe = [ \"%s\" ]; max_depth = %" PRIu64
		   "; visibility_timeout = \"5m\"; %s } );\n"
		   "listeners = (\n"
		   "  { name = \"admin\"; admin = true; address = \"127.0.0.1\"; port = 0; },\n"
		   "  { name = \"ingest\"; address = \"127.0.0.1\"; port = 0; threads = 2; "
		   "max_body = 67108864; }\n"
		   ");\n"
		   "plugins = (\n"
		   "  { name = \"ingest\"; module = \"ingest_http\"; max_items = %d; },\n"
		   "  { name = \"sqs\"; module = \"transport_sqs\"; queue = \"out\"; "
		   "queue_name = \"%s\"; endpoint = \"%s\"; max_inflight = %d; "
		   "retry_base = \"20ms\"; retry_max = \"50ms\"; hold_max = \"1h\"; }\n"
		   ");\n",
		   data, WORKERS, TOPIC, n + 1000,
		   durable ? "durable = true; store = \"site\";" : "", POST_BATCH, QUEUE_NAME,
		   endpoint, inflight);

	struct proc pd = {0}, fq = {0};
	snprintf(pd.log, sizeof pd.log, "%s/plantd.log", dir);
	char *argv[] = {(char *)plantd_path(), "-c", conf, "-l", "warn", NULL};
	pd.pid = spawn(argv, pd.log);

	char urls[PATH_MAX + 128];
	snprintf(urls, sizeof urls, "%s/listeners.json", data);
	uint64_t deadline = mono_ns() + (uint64_t)START_TIMEOUT_S * 1000000000ull;
	json_t *j = NULL;
	while (!(j = json_load_file(urls, 0, NULL))) {
		int status;
		if (waitpid(pd.pid, &status, WNOHANG) == pd.pid) {
			track(pd.pid, false);
			show_tail(pd.log);
			fail("plantd exited (status %d) before its listeners were up", status);
		}
		if (mono_ns() > deadline)
			fail("no %s after %d s", urls, START_TIMEOUT_S);
		sleep_ms(20);
	}
	char admin[256], ingest[512];
	snprintf(admin, sizeof admin, "%s", json_string_value(json_object_get(j, "admin")));
	snprintf(ingest, sizeof ingest, "%s/v1/ingest/%s",
		 json_string_value(json_object_get(j, "ingest")), TOPIC);
	json_decref(j);

	/* the backlog, while SQS is away */
	fprintf(stderr, "%s: %s: %" PRIu64 " readings into plantd's queue\n", bench_prog, name, n);
	size_t cap = POST_BATCH * (READING_MAX + 1) + 1;
	char *body = malloc(cap);
	if (!body)
		die("out of memory");
	const char *const nd[] = {"Content-Type: application/x-ndjson", NULL};
	for (uint64_t i = 0; i < n; i += POST_BATCH) {
		size_t len = 0;
		for (uint64_t k = i; k < n && k < i + POST_BATCH; k++) {
			len += reading(body + len, cap - len, k);
			body[len++] = '\n';
		}
		long code;
		json_decref(http("POST", ingest, nd, body, len, &code));
		if (code != 202)
			fail("ingest answered %ld", code);
	}
	free(body);
	if (queue_depth(admin, "out") != n)
		fail("queue out holds %" PRIu64 ", not %" PRIu64, queue_depth(admin, "out"), n);

	/* SQS comes: the clock runs from the first reading it took */
	fauxqs_start(&fq, dir, port);
	deadline = mono_ns() + (uint64_t)DRAIN_TIMEOUT_S * 1000000000ull;
	uint64_t sent = 0, t0 = 0, sent0 = 0, cpu_p0 = 0, cpu_f0 = 0, t1 = 0;
	for (;;) {
		sent = counter(admin, "sqs", "sent");
		uint64_t now = mono_ns();
		if (!t0 && sent > 0) {
			t0 = now;
			sent0 = sent;
			cpu_p0 = proc_cpu_ns(pd.pid);
			cpu_f0 = proc_cpu_ns(fq.pid);
		}
		if (sent >= n) {
			t1 = now;
			break;
		}
		if (now > deadline)
			fail("only %" PRIu64 " of %" PRIu64 " sent after %d s", sent, n,
			     DRAIN_TIMEOUT_S);
		sleep_ms(10);
	}
	uint64_t cpu_p1 = proc_cpu_ns(pd.pid), cpu_f1 = proc_cpu_ns(fq.pid);
	res->rss = proc_hwm(pd.pid);
	res->retries = counter(admin, "sqs", "retries");
	res->readings = n - sent0;
	res->seconds = (double)(t1 - t0) / 1e9;
	res->ops_per_s = res->seconds > 0 ? (double)res->readings / res->seconds : 0;
	res->plantd_cpu = res->seconds > 0 ? (double)(cpu_p1 - cpu_p0) / 1e9 / res->seconds : 0;
	res->fauxqs_cpu = res->seconds > 0 ? (double)(cpu_f1 - cpu_f0) / 1e9 / res->seconds : 0;

	/* every reading in SQS */
	char req[256];
	snprintf(req, sizeof req, "{\"QueueName\":\"%s\"}", QUEUE_NAME);
	json_t *u = sqs(endpoint, "GetQueueUrl", req);
	snprintf(req, sizeof req,
		 "{\"QueueUrl\":\"%s\",\"AttributeNames\":[\"ApproximateNumberOfMessages\"]}",
		 json_string_value(json_object_get(u, "QueueUrl")));
	json_decref(u);
	json_t *a = sqs(endpoint, "GetQueueAttributes", req);
	const char *count = json_string_value(
		json_object_get(json_object_get(a, "Attributes"), "ApproximateNumberOfMessages"));
	if (!count || strtoull(count, NULL, 10) < n)
		fail("SQS holds %s messages, fewer than the %" PRIu64 " sent", count ? count : "?",
		     n);
	json_decref(a);

	stop_process(&pd, "plantd");
	stop_process(&fq, "fauxqs");
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int cmp_rate(const void *a, const void *b)
{
	const struct result *x = a, *y = b;
	return x->ops_per_s < y->ops_per_s ? -1 : x->ops_per_s > y->ops_per_s;
}

int main(int argc, char **argv)
{
	struct bench_args a = {.n = 0, .runs = 1};
	bench_args_parse(argc, argv, cases, true, &a);
	uint64_t n = a.n ? a.n : 50000;
	const char *base = a.dir ? a.dir : getenv("BENCH_DIR");
	if (!base || !*base)
		base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	signal(SIGPIPE, SIG_IGN);
	atexit(kill_live);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(easy = curl_easy_init()))
		die("curl init failed");
	for (size_t c = 0; c < a.n_want; c++) {
		struct result runs[RUNS_MAX];
		for (int r = 0; r < a.runs; r++)
			run_case(a.want[c], n, base, &runs[r]);
		qsort(runs, (size_t)a.runs, sizeof *runs, cmp_rate);
		const struct result *m = &runs[a.runs / 2];
		const char *bound = m->fauxqs_cpu >= 0.85   ? "fauxqs"
				    : m->plantd_cpu >= 0.85 ? "plantd"
							    : "latency";
		printf("{\"suite\": \"aws\", \"case\": \"%s\", \"readings\": %" PRIu64
		       ", \"seconds\": %.3f, \"ops_per_s\": %.0f, \"requests_per_s\": %.0f, "
		       "\"ns_per_op\": %.1f, \"plantd_cpu\": %.2f, \"fauxqs_cpu\": %.2f, "
		       "\"plantd_cpu_per_op_ns\": %.0f, \"retries\": %" PRIu64
		       ", \"bound\": \"%s\", \"rss_bytes\": %" PRIu64 "}\n",
		       a.want[c], m->readings, m->seconds, m->ops_per_s, m->ops_per_s / 10,
		       m->ops_per_s > 0 ? 1e9 / m->ops_per_s : 0, m->plantd_cpu, m->fauxqs_cpu,
		       m->ops_per_s > 0 ? m->plantd_cpu * 1e9 / m->ops_per_s : 0, m->retries, bound,
		       m->rss);
		fflush(stdout);
	}
	curl_easy_cleanup(easy);
	curl_global_cleanup();
	free(a.want);
	return 0;
}
