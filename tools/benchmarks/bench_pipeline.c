/* bench_pipeline: the demo site's pipeline at full speed, one JSON line per
 * case on stdout.
 *
 *   bench_pipeline [-n N] [-r RUNS] [-d DIR] [--list] [CASE...]
 *
 * Cases (all by default):
 *   sim_sensor_analytics          sim_thermistor (full_speed, 8 x 1000
 *                                 sensors) -> queue sensor.raw (in memory,
 *                                 max_depth 100,000) -> sensor (registry and
 *                                 idempotency claims on the sqlite store)
 *                                 -> queue analytics.thermistor -> analytics
 *                                 (every 250 ms, reports on the sqlite
 *                                 store); N = 1,000,000 readings
 *   sim_sensor_analytics_durable  the same with both queues durable on the
 *                                 sqlite store (synchronous = "normal")
 *
 * Each case builds a site from a temporary conf.d in a fresh directory under
 * $TMPDIR (or -d DIR / $BENCH_DIR), removed afterwards, with the build tree's
 * plugins (BUILD/tools/benchmarks -> BUILD/plugins). It times from the
 * site's start until analytics has acked all N readings, which it does only
 * once the report that counted them is stored: every reading was simulated,
 * claimed, checked against the registry, given a temperature, published,
 * queued, counted and reported. ops_per_s is N over that time; ns_per_op
 * its inverse; rss_bytes the peak RSS; cpu_per_op_ns the CPU time of every
 * thread per reading. */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "bench_common.h"
#include "bench_site.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "site.h"

const char *const bench_prog = "bench_pipeline";

static const char *const cases[] = {"sim_sensor_analytics", "sim_sensor_analytics_durable", NULL};

#define DEFAULT_N 1000000
#define TIMEOUT_S 600
#define THREADS	  2

struct rig {
	char dir[PATH_MAX];
	struct bench_site bs;
	plant_instance *probe;
};

static void rig_open(struct rig *r, const char *base_dir, bool durable, uint64_t n)
{
	memset(r, 0, sizeof *r);
	const char *tmp = base_dir ? base_dir : getenv("BENCH_DIR");
	if (!tmp || !*tmp)
		tmp = getenv("TMPDIR");
	if (!tmp || !*tmp)
		tmp = "/tmp";
	snprintf(r->dir, sizeof r->dir, "%s/bench_pipeline.XXXXXX", tmp);
	if (!mkdtemp(r->dir))
		die("cannot make a temporary directory");
	char conf[PATH_MAX + 32];
	snprintf(conf, sizeof conf, "%s/conf.d", r->dir);
	if (mkdir(conf, 0755) != 0)
		die("cannot make conf.d");
	char root[PATH_MAX + 64];
	snprintf(root, sizeof root, "%s/plantd.conf", conf);
	FILE *f = fopen(root, "w");
	if (!f)
		die("cannot write plantd.conf");
	const char *d = durable ? "durable = true; store = \"site\";" : "";
	fprintf(f,
		"site = \"bench\";\n"
		"data_dir = \"%s/data\";\n"
		"workers = %d;\n"
		"log_level = \"warn\";\n"
		"stores = ( { name = \"site\"; backend = \"sqlite\"; path = \"site.db\"; "
		"synchronous = \"normal\"; } );\n"
		"queues = (\n"
		"  { name = \"sensor.raw\"; subscribe = [ \"sensor.*.raw\" ]; %s "
		"max_depth = 100000; dead_letter = \"sensor.raw.dlq\"; },\n"
		"  { name = \"sensor.raw.dlq\"; },\n"
		"  { name = \"analytics.thermistor\"; subscribe = [ "
		"\"sensor.thermistor.processed\" ]; %s visibility_timeout = \"5m\"; "
		"max_depth = 2000000; }\n"
		");\n"
		"plugins = (\n"
		"  { name = \"probe\"; module = \"log_sink\"; subscribe = [ \"nothing.here\" ]; },\n"
		"  { name = \"sensor\"; module = \"sensor\"; queue = \"sensor.raw\"; store = "
		"\"site\"; batch = 1024; },\n"
		"  { name = \"thermal\"; module = \"analytics\"; queue = \"analytics.thermistor\"; "
		"store = \"site\"; interval = \"250ms\"; window = \"1m\"; },\n"
		"  { name = \"sim\"; module = \"sim_thermistor\"; full_speed = true; "
		"max_readings = %" PRIu64 "; seed = 7; locations = 8; sensors = 1000; }\n"
		");\n",
		r->dir, THREADS, d, d, n);
	if (fclose(f) != 0)
		die("cannot write plantd.conf");

	bench_site_start(&r->bs, conf, "sensor/sensor.so");
	r->probe = (plant_instance *)site_find(r->bs.site, "probe");
	if (!r->probe)
		die("the probe instance is missing");
}

static void rig_close(struct rig *r)
{
	bench_site_stop(&r->bs);
	bench_rm_tree(r->dir);
}

static uint64_t queue_stat(struct rig *r, const char *queue, const char *key)
{
	json_t *s = host_api.bus_stats(r->probe);
	json_t *v = json_object_get(json_object_get(json_object_get(s, "queues"), queue), key);
	uint64_t x = json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
	json_decref(s);
	return x;
}

static void run_case(const char *name, uint64_t n, const char *dir)
{
	if (!n)
		n = DEFAULT_N;
	bool durable = strcmp(name, "sim_sensor_analytics_durable") == 0;
	struct rig r;
	uint64_t cpu0 = cpu_ns();
	uint64_t t0 = clock_mono_ns();
	rig_open(&r, dir, durable, n);
	uint64_t deadline = t0 + (uint64_t)TIMEOUT_S * 1000000000ull;
	uint64_t acked = 0, dead = 0;
	while ((acked = queue_stat(&r, "analytics.thermistor", "acked")) < n) {
		if (clock_mono_ns() > deadline) {
			fprintf(stderr,
				"%s: %s: only %" PRIu64 " of %" PRIu64 " readings after %d s\n",
				bench_prog, name, acked, n, TIMEOUT_S);
			exit(1);
		}
		dead = queue_stat(&r, "sensor.raw.dlq", "depth");
		if (dead)
			die("readings went to the dead-letter queue");
		nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
	}
	uint64_t elapsed = clock_mono_ns() - t0;
	uint64_t cpu = cpu_ns() - cpu0;
	rig_close(&r);
	double secs = (double)elapsed / 1e9;
	printf("{\"suite\": \"pipeline\", \"case\": \"%s\", \"n\": %" PRIu64
	       ", \"ops_per_s\": %.0f, \"ns_per_op\": %.1f, \"cpu_per_op_ns\": %.1f, "
	       "\"seconds\": %.3f, \"rss_bytes\": %" PRIu64 "}\n",
	       name, n, (double)n / secs, (double)elapsed / (double)n, (double)cpu / (double)n,
	       secs, peak_rss());
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct bench_args args = {.n = 0, .runs = 1};
	bench_args_parse(argc, argv, cases, true, &args);
	log_set_level(PLANT_LOG_WARN);
	if (evthread_use_pthreads() != 0)
		die("evthread_use_pthreads failed");
	for (size_t i = 0; i < args.n_want; i++)
		run_case(args.want[i], args.n, args.dir);
	free(args.want);
	return 0;
}
