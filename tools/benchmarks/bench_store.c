/* bench_store: durable queues and stores on a real site, one JSON line per
 * case on stdout.
 *
 *   bench_store [-n N] [-r RUNS] [-d DIR] [--list] [CASE...]
 *
 * Cases (all by default):
 *   durable_batch           publish_batch (256 per call, 2 threads) -> durable
 *                           queue on sqlite (synchronous = "normal") -> one
 *                           consumer acking all; N = 500,000
 *   durable_batch_full      the same with synchronous = "full"
 *   durable_single          publish_ex, one message per call, 2 threads;
 *                           N = 50,000
 *   registry_get            store_get of existing keys (100,000 preloaded),
 *                           2 threads; N = 1,000,000 gets
 *   registry_put_if_absent  store_batch of 256 PLANT_PUT_IF_ABSENT ops on new
 *                           keys, 2 threads; N = 500,000 ops
 *   disk_1m                 1,000,000 readings queued durably, no consumer:
 *                           the database's size on disk
 *
 * Each case builds a site of its own from a temporary conf.d (config_load,
 * site_create with the build tree's plugins, an event loop in a thread of
 * its own for the site's ticks) in a fresh directory under $TMPDIR (or -d
 * DIR / $BENCH_DIR), removed afterwards. Instances "a" and "b" are log_sink
 * instances that subscribe to nothing: the bench calls the host API table
 * `host_api` with their handles as if it were those plugins. It publishes as
 * "a" and consumes as "b" (handlers run under b's actor on the workers).
 * The plugins are found beside the executable (BUILD/tools/benchmarks ->
 * BUILD/plugins), else on $PLANTD_PLUGIN_PATH or the default path.
 *
 * Each line has suite, case, n, ops_per_s and ns_per_op and rss_bytes (peak
 * RSS of the process: run one case per process, as tools/bench does). The
 * durable cases time from the first publish until every message was
 * consumed, acked, its delete written to the store and the queue's depth is
 * 0 (the full cycle: write + delete); publish_per_s is the publishers' own
 * rate. p99_us there is the latency of one publish call (a batch of 256 for
 * the batch cases: the durable commit), p99_e2e_us the publish-to-handler
 * latency of every 64th message under the saturating load (it includes the
 * wait behind the backlog). registry_get reports the p99 of one get,
 * registry_put_if_absent of one batch call. disk_1m reports disk_bytes (the
 * database, its -wal and -shm files) and bytes_per_item. */
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "plantd/plantd.h"
#include "bus.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "site.h"

#include "bench_common.h"
#include "bench_site.h"

const char *const bench_prog = "bench_store";

#define THREADS	     2
#define BATCH	     256
#define SAMPLE_SHIFT 6 /* end-to-end latency of every 64th message */
#define TIMEOUT_MS   (600ull * 1000)
#define PRELOAD	     100000

static int runs = 1; /* timed runs; the median is reported */
static const char *base_dir;

/* ---- helpers ----------------------------------------------------------------------- */

static void die_rc(const char *what, int rc)
{
	fprintf(stderr, "bench_store: %s: %s\n", what, plant_status_name(rc));
	exit(1);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		die("out of memory");
	return p;
}

/* p99 of `n` samples (ns) in µs; sorts them */
static double p99_of(uint64_t *v, size_t n)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof *v, cmp_u64);
	return (double)v[(n * 99) / 100] / 1000.0;
}

static uint64_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* ---- a site ------------------------------------------------------------------------ */

struct rig {
	char dir[PATH_MAX];
	char data[PATH_MAX + 8];
	struct bench_site bs;
	plant_instance *a, *b;
	uint32_t q, reg; /* store handles */
};

static void rig_open(struct rig *r, const char *synchronous)
{
	memset(r, 0, sizeof *r);
	const char *tmp = base_dir ? base_dir : getenv("BENCH_DIR");
	if (!tmp || !*tmp)
		tmp = getenv("TMPDIR");
	if (!tmp || !*tmp)
		tmp = "/tmp";
	snprintf(r->dir, sizeof r->dir, "%s/bench_store.XXXXXX", tmp);
	if (!mkdtemp(r->dir))
		die("cannot make a temporary directory");
	snprintf(r->data, sizeof r->data, "%s/data", r->dir);
	char conf[PATH_MAX + 32];
	snprintf(conf, sizeof conf, "%s/conf.d", r->dir);
	if (mkdir(conf, 0755) != 0)
		die("cannot make conf.d");
	char root[PATH_MAX + 64];
	snprintf(root, sizeof root, "%s/plantd.conf", conf);
	FILE *f = fopen(root, "w");
	if (!f)
		die("cannot write plantd.conf");
	fprintf(f,
		"site = \"bench\";\n"
		"data_dir = \"%s\";\n"
		"workers = %d;\n"
		"log_level = \"warn\";\n"
		"stores = (\n"
		"  { name = \"q\"; backend = \"sqlite\"; path = \"q.db\"; synchronous = \"%s\"; },\n"
		"  { name = \"registry\"; backend = \"sqlite\"; path = \"registry.db\"; "
		"synchronous = \"%s\"; }\n"
		");\n"
		"queues = (\n"
		"  { name = \"work\"; subscribe = [ \"w.*\" ]; durable = true; store = \"q\"; "
		"max_depth = 2000000; }\n"
		");\n"
		"plugins = (\n"
		"  { name = \"a\"; module = \"log_sink\"; subscribe = [ \"nothing.here\" ]; },\n"
		"  { name = \"b\"; module = \"log_sink\"; subscribe = [ \"nothing.else\" ]; }\n"
		");\n",
		r->data, THREADS, synchronous, synchronous);
	if (fclose(f) != 0)
		die("cannot write plantd.conf");

	bench_site_start(&r->bs, conf, "log_sink/log_sink.so");
	r->a = (plant_instance *)site_find(r->bs.site, "a");
	r->b = (plant_instance *)site_find(r->bs.site, "b");
	if (!r->a || !r->b)
		die("instances a and b are missing");
	int rc;
	if ((rc = host_api.store_open(r->a, "q", &r->q)) != PLANT_OK)
		die_rc("store_open q", rc);
	if ((rc = host_api.store_open(r->a, "registry", &r->reg)) != PLANT_OK)
		die_rc("store_open registry", rc);
}

static void rig_close(struct rig *r)
{
	bench_site_stop(&r->bs);
	bench_rm_tree(r->dir);
}

/* The queue's stats from the host API: depth, in flight */
static void queue_depth(struct rig *r, uint64_t *depth, uint64_t *in_flight)
{
	json_t *st = host_api.bus_stats(r->a);
	json_t *q = json_object_get(json_object_get(st, "queues"), "work");
	if (!q)
		die("bus_stats has no queue \"work\"");
	*depth = (uint64_t)json_integer_value(json_object_get(q, "depth"));
	if (in_flight)
		*in_flight = (uint64_t)json_integer_value(json_object_get(q, "in_flight"));
	json_decref(st);
}

/* Records the store still holds for the queue (at most `limit`; 0 = all) */
static size_t stored_records(struct rig *r, size_t limit)
{
	json_t *items = NULL;
	int rc = host_api.store_scan(r->a, r->q, "q/work/", 7, NULL, 0, limit, &items);
	if (rc != PLANT_OK)
		die_rc("store_scan", rc);
	size_t n = json_array_size(items);
	json_decref(items);
	return n;
}

static uint64_t disk_bytes(struct rig *r, const char *db, uint64_t *wal_out)
{
	char p[PATH_MAX + 64];
	snprintf(p, sizeof p, "%s/%s", r->data, db);
	uint64_t main = file_size(p);
	snprintf(p, sizeof p, "%s/%s-wal", r->data, db);
	uint64_t wal = file_size(p);
	snprintf(p, sizeof p, "%s/%s-shm", r->data, db);
	uint64_t shm = file_size(p);
	if (wal_out)
		*wal_out = wal;
	return main + wal + shm;
}

static void emit(const char *name, uint64_t n, uint64_t ns, const char *extra)
{
	double secs = (double)ns / 1e9;
	printf("{\"suite\": \"store\", \"case\": \"%s\", \"n\": %" PRIu64 ", \"threads\": %d, "
	       "\"ops_per_s\": %.0f, \"ns_per_op\": %.1f, \"rss_bytes\": %" PRIu64 "%s}\n",
	       name, n, THREADS, (double)n / secs, (double)ns / (double)n, peak_rss(), extra);
	fflush(stdout);
}

/* ---- the durable queue cases ----------------------------------------------------------- */

static sem_t done;

/* What the consumer ("b") sees */
struct consumer {
	struct rig *r;
	_Atomic uint64_t seen;
	uint64_t expect;
	const _Atomic uint64_t *pub_ts; /* publish time of every 64th message */
	uint64_t *lat;			/* written under b's actor only */
	size_t n_lat, cap_lat;
	_Atomic uint64_t errors;
};

static uint64_t seq_of(const plant_msg *m)
{
	size_t len;
	const char *t = host_api.msg_body_text(m, &len);
	const char *p = t ? memmem(t, len, "\"seq\":", 6) : NULL;
	return p ? strtoull(p + 6, NULL, 10) : UINT64_MAX;
}

static int on_work(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	struct consumer *c = user;
	uint64_t now = 0;
	for (size_t i = 0; i < n; i++) {
		if (host_api.ack(c->r->b, msgs[i]) != PLANT_OK)
			atomic_fetch_add(&c->errors, 1);
		uint64_t s = seq_of(msgs[i]);
		if (s != UINT64_MAX && (s & ((1u << SAMPLE_SHIFT) - 1)) == 0 &&
		    c->n_lat < c->cap_lat) {
			uint64_t t = atomic_load_explicit(&c->pub_ts[s >> SAMPLE_SHIFT],
							  memory_order_relaxed);
			if (!now)
				now = clock_mono_ns();
			if (t && now > t)
				c->lat[c->n_lat++] = now - t;
		}
	}
	uint64_t end = atomic_fetch_add(&c->seen, n) + n;
	if (end == c->expect)
		sem_post(&done);
	return PLANT_OK;
}

struct publisher {
	struct rig *r;
	uint64_t first, count; /* the readings [first, first + count) */
	size_t batch;	       /* 1: publish_ex; else publish_batch */
	_Atomic uint64_t *pub_ts;
	uint64_t *lat; /* per call */
	size_t n_lat;
	uint64_t t_end;
};

static void *publisher_main(void *arg)
{
	struct publisher *p = arg;
	char(*text)[READING_MAX] = xmalloc(p->batch * sizeof *text);
	struct plant_publish *items = xmalloc(p->batch * sizeof *items);
	uint64_t i = p->first, end = p->first + p->count;
	while (i < end) {
		size_t k = end - i < p->batch ? (size_t)(end - i) : p->batch;
		for (size_t j = 0; j < k; j++) {
			items[j] = (struct plant_publish){.struct_size = sizeof items[j],
							  .topic = "w.reading"};
			items[j].text = text[j];
			items[j].text_len = reading(text[j], sizeof text[j], i + j);
		}
		size_t off = 0;
		while (off < k) {
			uint64_t t0 = clock_mono_ns();
			for (size_t j = off; j < k; j++)
				if (((i + j) & ((1u << SAMPLE_SHIFT) - 1)) == 0 && p->pub_ts)
					atomic_store_explicit(&p->pub_ts[(i + j) >> SAMPLE_SHIFT],
							      t0, memory_order_relaxed);
			size_t did = 0;
			int rc;
			if (p->batch == 1) {
				rc = host_api.publish_ex(p->r->a, &items[off]);
				did = rc == PLANT_OK;
			} else {
				rc = host_api.publish_batch(p->r->a, &items[off], k - off, &did);
			}
			p->lat[p->n_lat++] = clock_mono_ns() - t0;
			off += did;
			if (rc == PLANT_E_FULL) {
				usleep(1000);
				continue;
			}
			if (rc != PLANT_OK)
				die_rc(p->batch == 1 ? "publish_ex" : "publish_batch", rc);
		}
		i += k;
	}
	p->t_end = clock_mono_ns();
	free(text);
	free(items);
	return NULL;
}

struct pub_run {
	uint64_t ns, cpu_ns, pub_ns;
	double p99_us, p99_e2e_us;
};

static int cmp_run(const void *a, const void *b)
{
	uint64_t x = ((const struct pub_run *)a)->ns, y = ((const struct pub_run *)b)->ns;
	return x < y ? -1 : x > y;
}

/* Publish readings [first, first + n) from THREADS threads in calls of
 * `batch`; with a consumer `c`, wait until it saw all, the queue is empty
 * and the consumer's actor is idle (the last deletes written). */
static struct pub_run publish_run(struct rig *r, struct consumer *c, uint64_t first, uint64_t n,
				  size_t batch, const char *name)
{
	struct pub_run out = {0};
	struct publisher p[THREADS];
	pthread_t th[THREADS];
	_Atomic uint64_t *pub_ts = NULL;
	if (c) {
		pub_ts = calloc(((first + n) >> SAMPLE_SHIFT) + 1, sizeof *pub_ts);
		if (!pub_ts)
			die("out of memory");
		atomic_store(&c->seen, 0);
		c->expect = n;
		c->pub_ts = pub_ts;
		c->n_lat = 0;
		if (c->cap_lat < (n >> SAMPLE_SHIFT) + 16) {
			free(c->lat);
			c->cap_lat = (n >> SAMPLE_SHIFT) + 16;
			c->lat = xmalloc(c->cap_lat * sizeof *c->lat);
		}
	}
	uint64_t cpu0 = cpu_ns();
	uint64_t t0 = clock_mono_ns();
	for (int t = 0; t < THREADS; t++) {
		uint64_t share = n / THREADS;
		p[t] = (struct publisher){.r = r,
					  .first = first + share * (uint64_t)t,
					  .count = t == THREADS - 1 ? n - share * (THREADS - 1)
								    : share,
					  .batch = batch,
					  .pub_ts = pub_ts};
		p[t].lat = xmalloc((p[t].count / batch + 64) * 4 * sizeof *p[t].lat);
		if (pthread_create(&th[t], NULL, publisher_main, &p[t]) != 0)
			die("cannot start a publisher");
	}
	uint64_t t_pub = 0;
	for (int t = 0; t < THREADS; t++) {
		pthread_join(th[t], NULL);
		if (p[t].t_end > t_pub)
			t_pub = p[t].t_end;
	}
	if (c) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += (time_t)(TIMEOUT_MS / 1000);
		while (sem_timedwait(&done, &ts) != 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "bench_store: %s: timed out: %" PRIu64 "/%" PRIu64 "\n",
				name, atomic_load(&c->seen), c->expect);
			exit(1);
		}
		/* the last batch's deletes are written before b's actor is idle */
		if (!site_wait_idle(r->bs.site, TIMEOUT_MS))
			die("the site did not go idle");
		uint64_t depth = 1, in_flight = 0;
		for (int k = 0; depth && k < 10000; k++) {
			queue_depth(r, &depth, &in_flight);
			if (depth)
				usleep(100);
		}
		if (depth)
			die("the queue is not empty after every message was consumed");
	}
	out.ns = clock_mono_ns() - t0;
	out.cpu_ns = cpu_ns() - cpu0;
	out.pub_ns = t_pub - t0;

	size_t total = 0;
	for (int t = 0; t < THREADS; t++)
		total += p[t].n_lat;
	uint64_t *all = xmalloc(total * sizeof *all);
	total = 0;
	for (int t = 0; t < THREADS; t++) {
		memcpy(all + total, p[t].lat, p[t].n_lat * sizeof *all);
		total += p[t].n_lat;
		free(p[t].lat);
	}
	out.p99_us = p99_of(all, total);
	free(all);
	if (c) {
		out.p99_e2e_us = p99_of(c->lat, c->n_lat);
		c->pub_ts = NULL;
		free(pub_ts);
	}
	return out;
}

static void case_durable(const char *name, const char *synchronous, size_t batch, uint64_t n)
{
	struct rig r;
	rig_open(&r, synchronous);
	struct consumer c = {.r = &r};
	int rc = host_api.consume(r.b, "work", on_work, &c, BATCH, NULL);
	if (rc != PLANT_OK)
		die_rc("consume", rc);

	/* a warm-up: the store's statements, the allocator, the topic cache */
	uint64_t warm = n / 20 + THREADS;
	publish_run(&r, &c, 0, warm, batch, name);
	uint64_t first = warm;

	struct pub_run v[RUNS_MAX];
	for (int i = 0; i < runs; i++) {
		v[i] = publish_run(&r, &c, first, n, batch, name);
		first += n;
	}
	if (atomic_load(&c.errors))
		die("acks refused");
	size_t left = stored_records(&r, 1);
	if (left)
		die("the store still holds records of the queue");
	uint64_t wal = 0, disk = disk_bytes(&r, "q.db", &wal);
	qsort(v, (size_t)runs, sizeof v[0], cmp_run);
	struct pub_run med = v[runs / 2];

	char extra[640];
	snprintf(extra, sizeof extra,
		 ", \"synchronous\": \"%s\", \"batch\": %zu, \"p99_us\": %.1f, "
		 "\"p99_e2e_us\": %.1f, \"publish_per_s\": %.0f, \"cpu_ns_per_op\": %.1f, "
		 "\"disk_bytes_after\": %" PRIu64 ", \"wal_bytes_after\": %" PRIu64
		 ", \"runs\": %d, \"ops_per_s_min\": %.0f, \"ops_per_s_max\": %.0f",
		 synchronous, batch, med.p99_us, med.p99_e2e_us,
		 (double)n / ((double)med.pub_ns / 1e9), (double)med.cpu_ns / (double)n, disk, wal,
		 runs, (double)n / ((double)v[runs - 1].ns / 1e9),
		 (double)n / ((double)v[0].ns / 1e9));
	emit(name, n, med.ns, extra);
	rig_close(&r);
	free(c.lat);
}

static void case_disk(const char *name, uint64_t n)
{
	struct rig r;
	rig_open(&r, "normal");
	uint64_t disk0 = disk_bytes(&r, "q.db", NULL);
	struct pub_run run = publish_run(&r, NULL, 0, n, BATCH, name);
	uint64_t depth = 0;
	queue_depth(&r, &depth, NULL);
	if (depth != n)
		die("the queue does not hold every reading");
	uint64_t wal = 0, disk = disk_bytes(&r, "q.db", &wal);
	char text[READING_MAX];
	size_t msg_bytes = reading(text, sizeof text, n / 2);

	char extra[512];
	snprintf(extra, sizeof extra,
		 ", \"disk_bytes\": %" PRIu64 ", \"bytes_per_item\": %.1f, \"wal_bytes\": %" PRIu64
		 ", \"db_bytes\": %" PRIu64 ", \"p99_us\": %.1f, \"cpu_ns_per_op\": %.1f, "
		 "\"msg_bytes\": %zu",
		 disk, (double)(disk - disk0) / (double)n, wal, disk - wal, run.p99_us,
		 (double)run.cpu_ns / (double)n, msg_bytes);
	emit(name, n, run.ns, extra);
	rig_close(&r);
}

/* ---- the registry cases ------------------------------------------------------------- */

static size_t reg_key(char *key, size_t cap, const char *prefix, uint64_t i)
{
	return (size_t)snprintf(key, cap, "%s/plant-north/line-%02u/temp-%07" PRIu64, prefix,
				(unsigned)(i % 16), i);
}

static json_t *reg_value(uint64_t i)
{
	return json_pack("{s:s, s:s, s:f, s:f, s:I, s:{s:s, s:s}}", "kind", "temperature", "unit",
			 "degC", "min", -40.0, "max", 125.0 + (double)(i % 7), "installed",
			 (json_int_t)(1718000000000 + i), "tags", "zone", "z07", "rack", "r123");
}

struct reg_worker {
	struct rig *r;
	int put; /* 0: gets; 1: put-if-absent batches */
	uint64_t first, count;
	uint64_t *lat;
	size_t n_lat;
	unsigned seed;
	uint64_t errors;
};

static void *reg_main(void *arg)
{
	struct reg_worker *w = arg;
	struct rig *r = w->r;
	char key[128];
	if (!w->put) {
		for (uint64_t i = 0; i < w->count; i++) {
			uint64_t k = (uint64_t)rand_r(&w->seed) % PRELOAD;
			size_t len = reg_key(key, sizeof key, "sensor", k);
			json_t *v = NULL;
			uint64_t ver = 0;
			uint64_t t0 = clock_mono_ns();
			int rc = host_api.store_get(r->a, r->reg, key, len, &v, &ver);
			w->lat[w->n_lat++] = clock_mono_ns() - t0;
			if (rc != PLANT_OK || !v)
				w->errors++;
			json_decref(v);
		}
		return NULL;
	}
	struct plant_store_op ops[BATCH];
	char(*keys)[128] = xmalloc(BATCH * sizeof *keys);
	json_t *vals[BATCH];
	for (uint64_t i = w->first; i < w->first + w->count;) {
		size_t k =
			w->first + w->count - i < BATCH ? (size_t)(w->first + w->count - i) : BATCH;
		for (size_t j = 0; j < k; j++) {
			vals[j] = reg_value(i + j);
			ops[j] = (struct plant_store_op){
				.key = keys[j],
				.key_len = reg_key(keys[j], sizeof keys[j], "new", i + j),
				.value = vals[j],
				.cond = PLANT_PUT_IF_ABSENT,
			};
		}
		size_t failed = 0;
		uint64_t t0 = clock_mono_ns();
		int rc = host_api.store_batch(r->a, r->reg, ops, k, &failed);
		w->lat[w->n_lat++] = clock_mono_ns() - t0;
		if (rc != PLANT_OK) {
			fprintf(stderr, "bench_store: store_batch: %s at op %zu\n",
				plant_status_name(rc), failed);
			exit(1);
		}
		for (size_t j = 0; j < k; j++)
			json_decref(vals[j]);
		i += k;
	}
	free(keys);
	return NULL;
}

static void preload(struct rig *r)
{
	struct plant_store_op ops[BATCH];
	char(*keys)[128] = xmalloc(BATCH * sizeof *keys);
	json_t *vals[BATCH];
	for (uint64_t i = 0; i < PRELOAD;) {
		size_t k = PRELOAD - i < BATCH ? (size_t)(PRELOAD - i) : BATCH;
		for (size_t j = 0; j < k; j++) {
			vals[j] = reg_value(i + j);
			ops[j] = (struct plant_store_op){
				.key = keys[j],
				.key_len = reg_key(keys[j], sizeof keys[j], "sensor", i + j),
				.value = vals[j],
			};
		}
		size_t failed = 0;
		int rc = host_api.store_batch(r->a, r->reg, ops, k, &failed);
		if (rc != PLANT_OK)
			die_rc("preload", rc);
		for (size_t j = 0; j < k; j++)
			json_decref(vals[j]);
		i += k;
	}
	free(keys);
}

struct reg_run {
	uint64_t ns, cpu_ns;
	double p99_us;
};

static int cmp_reg_run(const void *a, const void *b)
{
	uint64_t x = ((const struct reg_run *)a)->ns, y = ((const struct reg_run *)b)->ns;
	return x < y ? -1 : x > y;
}

static struct reg_run reg_run(struct rig *r, int put, uint64_t first, uint64_t n, unsigned seed)
{
	struct reg_worker w[THREADS];
	pthread_t th[THREADS];
	uint64_t cpu0 = cpu_ns();
	uint64_t t0 = clock_mono_ns();
	for (int t = 0; t < THREADS; t++) {
		uint64_t share = n / THREADS;
		w[t] = (struct reg_worker){
			.r = r,
			.put = put,
			.first = first + share * (uint64_t)t,
			.count = t == THREADS - 1 ? n - share * (THREADS - 1) : share,
			.seed = seed + (unsigned)t * 7919u,
		};
		w[t].lat = xmalloc((put ? w[t].count / BATCH + 2 : w[t].count) * sizeof *w[t].lat);
		if (pthread_create(&th[t], NULL, reg_main, &w[t]) != 0)
			die("cannot start a thread");
	}
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	struct reg_run out = {.ns = clock_mono_ns() - t0, .cpu_ns = cpu_ns() - cpu0};
	size_t total = 0;
	uint64_t errors = 0;
	for (int t = 0; t < THREADS; t++)
		total += w[t].n_lat, errors += w[t].errors;
	if (errors)
		die("store_get of a preloaded key failed");
	uint64_t *all = xmalloc(total * sizeof *all);
	total = 0;
	for (int t = 0; t < THREADS; t++) {
		memcpy(all + total, w[t].lat, w[t].n_lat * sizeof *all);
		total += w[t].n_lat;
		free(w[t].lat);
	}
	out.p99_us = p99_of(all, total);
	free(all);
	return out;
}

static void case_registry(const char *name, int put, uint64_t n)
{
	struct rig r;
	rig_open(&r, "normal");
	preload(&r);
	uint64_t first = 0;
	/* a warm-up: the page cache, the read connection */
	reg_run(&r, put, first, n / 10 + THREADS, 1);
	first += n / 10 + THREADS;
	struct reg_run v[RUNS_MAX];
	for (int i = 0; i < runs; i++) {
		v[i] = reg_run(&r, put, first, n, 100u + (unsigned)i);
		first += n;
	}
	qsort(v, (size_t)runs, sizeof v[0], cmp_reg_run);
	struct reg_run med = v[runs / 2];
	char extra[400];
	snprintf(extra, sizeof extra,
		 ", \"%s\": %.1f, \"preloaded\": %d, \"cpu_ns_per_op\": %.1f, \"runs\": %d, "
		 "\"ops_per_s_min\": %.0f, \"ops_per_s_max\": %.0f",
		 put ? "p99_batch_us" : "p99_us", med.p99_us, PRELOAD,
		 (double)med.cpu_ns / (double)n, runs, (double)n / ((double)v[runs - 1].ns / 1e9),
		 (double)n / ((double)v[0].ns / 1e9));
	if (put)
		snprintf(extra + strlen(extra), sizeof extra - strlen(extra), ", \"batch\": %d",
			 BATCH);
	emit(name, n, med.ns, extra);
	rig_close(&r);
}

/* ---- main ----------------------------------------------------------------------------- */

static const char *const cases[] = {
	"durable_batch",
	"durable_batch_full",
	"durable_single",
	"registry_get",
	"registry_put_if_absent",
	"disk_1m",
	NULL,
};

static uint64_t env_n(void)
{
	const char *e = getenv("BENCH_N");
	return e && *e ? strtoull(e, NULL, 10) : 0;
}

static void run_case(const char *name, uint64_t n)
{
	if (strcmp(name, "durable_batch") == 0)
		case_durable(name, "normal", BATCH, n ? n : 500000);
	else if (strcmp(name, "durable_batch_full") == 0)
		case_durable(name, "full", BATCH, n ? n : 500000);
	else if (strcmp(name, "durable_single") == 0)
		case_durable(name, "normal", 1, n ? n : 50000);
	else if (strcmp(name, "registry_get") == 0)
		case_registry(name, 0, n ? n : 1000000);
	else if (strcmp(name, "registry_put_if_absent") == 0)
		case_registry(name, 1, n ? n : 500000);
	else if (strcmp(name, "disk_1m") == 0)
		case_disk(name, n ? n : 1000000);
}

int main(int argc, char **argv)
{
	struct bench_args args = {.n = env_n(), .runs = runs};
	bench_args_parse(argc, argv, cases, true, &args);
	runs = args.runs;
	base_dir = args.dir;
	log_set_level(PLANT_LOG_WARN);
	if (evthread_use_pthreads() != 0)
		die("evthread_use_pthreads failed");
	if (sem_init(&done, 0, 0) != 0)
		die("sem_init failed");
	for (size_t i = 0; i < args.n_want; i++)
		run_case(args.want[i], args.n);
	sem_destroy(&done);
	free(args.want);
	return 0;
}
