/* bench_bus: the bus in-process, one JSON line per case on stdout.
 *
 *   bench_bus [-n N] [-r RUNS] [--list] [CASE...]
 *
 * Cases (all by default):
 *   topic_1         publish -> one no-op handler (a topic subscription)
 *   topic_fanout_4  publish -> four handlers, each on its own actor
 *   queue_ack       publish -> queue -> one consumer acking every message
 *   queue_1m        1,000,000 distinct readings queued, then consumed
 *
 * The real executor (2 workers) and real actors run the handlers; the
 * dispatch is site.c's: consecutive TASK_MSG tasks for one subscription go
 * to the handler as one batch of up to 256, TASK_CALL tasks call
 * u.fn(target, ctx). The main thread publishes pre-built readings of about
 * 200 bytes of JSON (the topic cases cycle through 4096 distinct ones).
 *
 * Each line has suite, case, n, ops_per_s and ns_per_op (published
 * messages, from the first publish until the handlers saw them all),
 * cpu_ns_per_op (CPU time of every thread per message: steadier than the
 * wall clock), and rss_bytes (the process's peak RSS so far: run one case
 * per process for a figure of its own, as tools/bench does). The streaming
 * cases run once to warm up, then RUNS times (default 5): the median run is
 * reported, with ops_per_s_min and ops_per_s_max. p99_us is the
 * publish-to-handler latency of every 64th message under the saturating
 * load, so it includes the wait behind the backlog.
 *
 * queue_1m times the queueing and the draining (also given apart) and adds
 * bytes_per_item: the resident memory a queued reading costs, message and
 * queue record together, from /proc/self/statm before the readings are made
 * and after they are all queued (msg_rss_per_item and queue_rss_per_item
 * split it). */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "clock.h"
#include "executor.h"
#include "msg.h"
#include "queue.h"

#include "bench_common.h"

const char *const bench_prog = "bench_bus";

#define WORKERS	     2
#define BATCH_MAX    256  /* as site.c */
#define POOL	     4096 /* distinct pre-built messages the topic cases cycle through */
#define SAMPLE_SHIFT 6	  /* latency of every 64th message */
#define TIMEOUT_NS   (300ull * 1000000000ull)

static int runs = 5; /* timed runs of the streaming cases; the median is reported */

/* ---- a stand-in for a plugin instance --------------------------------------------- */

struct bench_inst {
	struct actor actor;
	bool ack;		/* a queue consumer: ack every message */
	_Atomic uint64_t seen;	/* messages the handler saw */
	uint64_t expect;	/* post `done` when seen reaches it */
	const uint64_t *pub_ts; /* publish time of every 64th message, or NULL */
	uint64_t *lat;		/* latency samples (ns), written under the actor */
	size_t n_lat, cap_lat;
	_Atomic uint64_t errors; /* acks refused */
};

static sem_t done;

static int on_msgs(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	struct bench_inst *bi = user;
	if (bi->ack)
		for (size_t i = 0; i < n; i++)
			if (bus_ack(msgs[i]) != PLANT_OK)
				atomic_fetch_add(&bi->errors, 1);
	/* only this actor's handler writes `seen`, one call at a time */
	uint64_t base = atomic_load_explicit(&bi->seen, memory_order_relaxed);
	uint64_t end = base + n;
	if (bi->pub_ts) {
		uint64_t step = 1ull << SAMPLE_SHIFT;
		uint64_t k = (base + step - 1) & ~(step - 1);
		if (k < end) {
			uint64_t now = clock_mono_ns();
			for (; k < end && bi->n_lat < bi->cap_lat; k += step)
				bi->lat[bi->n_lat++] = now - bi->pub_ts[k >> SAMPLE_SHIFT];
		}
	}
	atomic_store_explicit(&bi->seen, end, memory_order_release);
	if (end == bi->expect)
		sem_post(&done);
	return PLANT_OK;
}

/* site.c's inst_dispatch, less the instance state checks and the logging */
static void bench_dispatch(void *ctx, struct task *tasks, size_t n)
{
	const plant_msg *batch[BATCH_MAX];
	size_t i = 0;
	while (i < n) {
		if (tasks[i].kind == TASK_CALL) {
			tasks[i].u.fn(tasks[i].target, ctx);
			i++;
			continue;
		}
		struct bus_sub *sub = tasks[i].target;
		size_t k = 0, j = i;
		while (j < n && k < BATCH_MAX && tasks[j].kind == TASK_MSG &&
		       tasks[j].target == sub)
			batch[k++] = (const plant_msg *)tasks[j++].u.msg;
		if (!atomic_load(&sub->dead))
			sub->fn(ctx, batch, k, sub->user);
		for (size_t x = i; x < j; x++) {
			msg_unref(tasks[x].u.msg);
			bus_sub_unref(tasks[x].target);
		}
		i = j;
	}
}

static void bench_drop(struct task *t)
{
	if (t->kind == TASK_MSG) {
		msg_unref(t->u.msg);
		bus_sub_unref(t->target);
	} else {
		t->u.fn(t->target, NULL);
	}
}

/* site.c's site_invoke */
static int bench_invoke(void *actor_ctx, plant_msg_handler fn, const plant_msg *const *msgs,
			size_t n, void *user)
{
	int rc = fn(actor_ctx, msgs, n, user);
	return rc < 0 ? PLANT_E_PLUGIN : rc;
}

/* ---- helpers ----------------------------------------------------------------------- */

static uint64_t current_rss(void)
{
	unsigned long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f || fscanf(f, "%lu %lu", &size, &resident) != 2)
		die("cannot read /proc/self/statm");
	fclose(f);
	return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* A distinct sensor reading as a message. */
static struct plant_msg *make_reading(const char *topic, uint64_t i)
{
	char text[READING_MAX];
	size_t len = reading(text, sizeof text, i);
	struct plant_msg *m = msg_new_text(topic, text, len);
	if (!m)
		die("out of memory");
	return m;
}

/* ---- one setup: an executor, a bus, instances ---------------------------------------- */

struct rig {
	struct executor *exec;
	struct bus *bus;
	struct bench_inst *inst;
	size_t n_inst;
};

static void rig_open(struct rig *r, size_t n_inst, bool ack)
{
	memset(r, 0, sizeof *r);
	if (executor_create(WORKERS, bench_drop, &r->exec) != 0 || bus_create(&r->bus) != PLANT_OK)
		die("cannot create the executor or the bus");
	bus_set_invoke(r->bus, bench_invoke, NULL);
	r->inst = calloc(n_inst, sizeof *r->inst);
	if (!r->inst)
		die("out of memory");
	r->n_inst = n_inst;
	for (size_t i = 0; i < n_inst; i++) {
		actor_init(&r->inst[i].actor, r->exec, bench_dispatch, &r->inst[i]);
		r->inst[i].ack = ack;
	}
}

static void rig_close(struct rig *r)
{
	for (size_t i = 0; i < r->n_inst; i++)
		bus_unsubscribe_owner(r->bus, &r->inst[i]);
	for (size_t i = 0; i < r->n_inst; i++) {
		actor_fini(&r->inst[i].actor);
		free(r->inst[i].lat);
	}
	executor_destroy(r->exec);
	bus_destroy(r->bus);
	free(r->inst);
}

/* Arm every instance for `n` more messages, with latency samples when
 * `pub_ts` is given. */
static void rig_arm(struct rig *r, uint64_t n, const uint64_t *pub_ts)
{
	for (size_t i = 0; i < r->n_inst; i++) {
		struct bench_inst *bi = &r->inst[i];
		atomic_store(&bi->seen, 0);
		bi->expect = n;
		bi->pub_ts = pub_ts;
		bi->n_lat = 0;
		if (pub_ts && bi->cap_lat < (n >> SAMPLE_SHIFT) + 1) {
			free(bi->lat);
			bi->cap_lat = (n >> SAMPLE_SHIFT) + 1;
			bi->lat = malloc(bi->cap_lat * sizeof *bi->lat);
			if (!bi->lat)
				die("out of memory");
		}
	}
}

/* Wait until every instance saw what it was armed for, then until the
 * actors are idle. */
static void rig_wait(struct rig *r, const char *name)
{
	uint64_t deadline = clock_mono_ns() + TIMEOUT_NS;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(TIMEOUT_NS / 1000000000ull);
	for (size_t i = 0; i < r->n_inst; i++) {
		while (sem_timedwait(&done, &ts) != 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "bench_bus: %s: timed out;", name);
			for (size_t k = 0; k < r->n_inst; k++)
				fprintf(stderr, " %" PRIu64 "/%" PRIu64,
					atomic_load(&r->inst[k].seen), r->inst[k].expect);
			fputc('\n', stderr);
			exit(1);
		}
	}
	for (size_t i = 0; i < r->n_inst; i++)
		if (!actor_wait_idle(&r->inst[i].actor, deadline))
			die("an actor did not go idle");
}

static double p99_us(struct rig *r)
{
	size_t total = 0;
	for (size_t i = 0; i < r->n_inst; i++)
		total += r->inst[i].n_lat;
	if (!total)
		return 0;
	uint64_t *all = malloc(total * sizeof *all);
	if (!all)
		die("out of memory");
	size_t k = 0;
	for (size_t i = 0; i < r->n_inst; i++) {
		memcpy(all + k, r->inst[i].lat, r->inst[i].n_lat * sizeof *all);
		k += r->inst[i].n_lat;
	}
	qsort(all, total, sizeof *all, cmp_u64);
	double p = (double)all[(total * 99) / 100] / 1000.0;
	free(all);
	return p;
}

/* Publish `n` messages cycling through `pool`, stamping every 64th when
 * `pub_ts` is given. Returns the elapsed ns until the handlers saw all. */
static uint64_t publish_run(struct rig *r, struct plant_msg **pool, uint64_t n, uint64_t *pub_ts,
			    const char *name)
{
	rig_arm(r, n, pub_ts);
	uint64_t t0 = clock_mono_ns();
	for (uint64_t i = 0; i < n; i++) {
		if (pub_ts && (i & ((1u << SAMPLE_SHIFT) - 1)) == 0)
			pub_ts[i >> SAMPLE_SHIFT] = clock_mono_ns();
		int rc = bus_publish(r->bus, msg_ref(pool[i % POOL]));
		if (rc != PLANT_OK) {
			fprintf(stderr, "bench_bus: %s: publish %" PRIu64 ": %s\n", name, i,
				plant_status_name(rc));
			exit(1);
		}
	}
	rig_wait(r, name);
	return clock_mono_ns() - t0;
}

static void emit(const char *name, uint64_t n, uint64_t ns, const char *extra)
{
	double secs = (double)ns / 1e9;
	printf("{\"suite\": \"bus\", \"case\": \"%s\", \"n\": %" PRIu64 ", \"workers\": %d, "
	       "\"ops_per_s\": %.0f, \"ns_per_op\": %.1f, \"rss_bytes\": %" PRIu64 "%s}\n",
	       name, n, WORKERS, (double)n / secs, (double)ns / (double)n, peak_rss(), extra);
	fflush(stdout);
}

struct run {
	uint64_t ns, cpu_ns;
	double p99_us;
};

static int cmp_run(const void *a, const void *b)
{
	uint64_t x = ((const struct run *)a)->ns, y = ((const struct run *)b)->ns;
	return x < y ? -1 : x > y;
}

/* A warm-up (mailboxes, the topic cache, the allocator), then `runs` timed
 * runs; fills `med` with the median run and returns the spread as JSON. */
static void timed_runs(struct rig *r, struct plant_msg **pool, uint64_t n, const char *name,
		       struct run *med, char *spread, size_t spread_len)
{
	struct run v[RUNS_MAX];
	uint64_t *pub_ts = malloc(((n >> SAMPLE_SHIFT) + 1) * sizeof *pub_ts);
	if (!pub_ts)
		die("out of memory");
	publish_run(r, pool, n / 10 + 1, NULL, name);
	for (int i = 0; i < runs; i++) {
		uint64_t cpu0 = cpu_ns();
		v[i].ns = publish_run(r, pool, n, pub_ts, name);
		v[i].cpu_ns = cpu_ns() - cpu0;
		v[i].p99_us = p99_us(r);
	}
	free(pub_ts);
	qsort(v, (size_t)runs, sizeof v[0], cmp_run);
	*med = v[runs / 2];
	snprintf(spread, spread_len,
		 ", \"cpu_ns_per_op\": %.1f, \"runs\": %d, \"ops_per_s_min\": %.0f, "
		 "\"ops_per_s_max\": %.0f",
		 (double)med->cpu_ns / (double)n, runs, (double)n / ((double)v[runs - 1].ns / 1e9),
		 (double)n / ((double)v[0].ns / 1e9));
}

/* ---- the cases ---------------------------------------------------------------------- */

/* publish -> `fanout` handlers, each on its own actor (instance) */
static void case_topic(const char *name, size_t fanout, uint64_t n)
{
	static const char topic[] = "sensor.reading";
	struct rig r;
	rig_open(&r, fanout, false);
	for (size_t i = 0; i < fanout; i++)
		if (bus_subscribe(r.bus, "sensor.*", &r.inst[i], &r.inst[i].actor, on_msgs,
				  &r.inst[i], NULL) != PLANT_OK)
			die("subscribe failed");
	struct plant_msg **pool = malloc(POOL * sizeof *pool);
	if (!pool)
		die("out of memory");
	for (size_t i = 0; i < POOL; i++)
		pool[i] = make_reading(topic, i);

	struct run med;
	char spread[128], extra[320];
	timed_runs(&r, pool, n, name, &med, spread, sizeof spread);
	snprintf(extra, sizeof extra,
		 ", \"p99_us\": %.1f, \"handlers\": %zu, \"deliveries_per_s\": %.0f, "
		 "\"msg_bytes\": %zu%s",
		 med.p99_us, fanout, (double)n * (double)fanout / ((double)med.ns / 1e9),
		 pool[0]->len, spread);
	emit(name, n, med.ns, extra);
	for (size_t i = 0; i < POOL; i++)
		msg_unref(pool[i]);
	free(pool);
	rig_close(&r);
}

static void queue_declare(struct rig *r, uint64_t depth)
{
	char err[256];
	json_t *settings =
		json_pack("{s:[s], s:I}", "subscribe", "sensor.*", "max_depth", (json_int_t)depth);
	if (!settings || bus_queue_declare(r->bus, "readings", settings, err, sizeof err))
		die("queue declare failed");
	json_decref(settings);
	if (bus_link_dead_letters(r->bus, err, sizeof err) != PLANT_OK)
		die(err);
}

/* publish -> queue -> one consumer that acks every message, consuming
 * while the publisher publishes */
static void case_queue_ack(const char *name, uint64_t n)
{
	static const char topic[] = "sensor.reading";
	struct rig r;
	rig_open(&r, 1, true);
	/* room for everything: a full queue refuses, and this measures flow */
	queue_declare(&r, n + n / 10 + 2);
	if (bus_consume(r.bus, "readings", &r.inst[0], &r.inst[0].actor, on_msgs, &r.inst[0],
			BATCH_MAX, NULL) != PLANT_OK)
		die("consume failed");
	struct plant_msg **pool = malloc(POOL * sizeof *pool);
	if (!pool)
		die("out of memory");
	for (size_t i = 0; i < POOL; i++)
		pool[i] = make_reading(topic, i);

	struct run med;
	char spread[128], extra[256];
	timed_runs(&r, pool, n, name, &med, spread, sizeof spread);

	struct queue_stats st;
	queue_stats_get(bus_queue_find(r.bus, "readings"), clock_now_ms(), &st);
	if (st.depth != 0 || atomic_load(&r.inst[0].errors))
		die("queue_ack: messages left in the queue or acks refused");
	snprintf(extra, sizeof extra, ", \"p99_us\": %.1f, \"msg_bytes\": %zu%s", med.p99_us,
		 pool[0]->len, spread);
	emit(name, n, med.ns, extra);
	for (size_t i = 0; i < POOL; i++)
		msg_unref(pool[i]);
	free(pool);
	rig_close(&r);
}

/* n distinct readings queued with no consumer, then one consumer drains
 * them. ops_per_s covers both phases (queueing and draining). */
static void case_queue_1m(const char *name, uint64_t n)
{
	static const char topic[] = "sensor.reading";
	struct rig r;
	rig_open(&r, 1, true);
	queue_declare(&r, n + 1);

	/* the bench's own array, resident before the baseline: not counted */
	struct plant_msg **msgs = malloc(n * sizeof *msgs);
	if (!msgs)
		die("out of memory");
	memset(msgs, 0, n * sizeof *msgs);
	malloc_trim(0); /* what earlier cases freed would hide growth */
	uint64_t rss0 = current_rss();
	for (uint64_t i = 0; i < n; i++)
		msgs[i] = make_reading(topic, i);
	uint64_t rss1 = current_rss();
	size_t msg_bytes = msgs[0]->len;

	rig_arm(&r, n, NULL);
	uint64_t cpu0 = cpu_ns();
	uint64_t t0 = clock_mono_ns();
	for (uint64_t i = 0; i < n; i++) {
		int rc = bus_publish(r.bus, msgs[i]); /* the queue keeps the only reference */
		if (rc != PLANT_OK) {
			fprintf(stderr, "bench_bus: %s: publish %" PRIu64 ": %s\n", name, i,
				plant_status_name(rc));
			exit(1);
		}
	}
	uint64_t t1 = clock_mono_ns();
	uint64_t cpu1 = cpu_ns();
	uint64_t rss2 = current_rss();
	free(msgs);

	uint64_t cpu2 = cpu_ns();
	uint64_t t2 = clock_mono_ns();
	if (bus_consume(r.bus, "readings", &r.inst[0], &r.inst[0].actor, on_msgs, &r.inst[0],
			BATCH_MAX, NULL) != PLANT_OK)
		die("consume failed");
	rig_wait(&r, name);
	uint64_t t3 = clock_mono_ns();
	uint64_t cpu3 = cpu_ns();

	struct queue_stats st;
	queue_stats_get(bus_queue_find(r.bus, "readings"), clock_now_ms(), &st);
	if (st.depth != 0 || atomic_load(&r.inst[0].errors))
		die("queue_1m: messages left in the queue or acks refused");

	char extra[320];
	snprintf(extra, sizeof extra,
		 ", \"bytes_per_item\": %.1f, \"msg_rss_per_item\": %.1f, "
		 "\"queue_rss_per_item\": %.1f, \"enqueue_per_s\": %.0f, \"drain_per_s\": %.0f, "
		 "\"cpu_ns_per_op\": %.1f, \"msg_bytes\": %zu",
		 (double)(rss2 - rss0) / (double)n, (double)(rss1 - rss0) / (double)n,
		 (double)(rss2 - rss1) / (double)n, (double)n / ((double)(t1 - t0) / 1e9),
		 (double)n / ((double)(t3 - t2) / 1e9),
		 (double)((cpu1 - cpu0) + (cpu3 - cpu2)) / (double)n, msg_bytes);
	emit(name, n, (t1 - t0) + (t3 - t2), extra);
	rig_close(&r);
}

/* ---- main ----------------------------------------------------------------------------- */

static const char *const cases[] = {"topic_1", "topic_fanout_4", "queue_ack", "queue_1m", NULL};

static void run_case(const char *name, uint64_t n_override)
{
	if (strcmp(name, "topic_1") == 0)
		case_topic(name, 1, n_override ? n_override : 2000000);
	else if (strcmp(name, "topic_fanout_4") == 0)
		case_topic(name, 4, n_override ? n_override : 2000000);
	else if (strcmp(name, "queue_ack") == 0)
		case_queue_ack(name, n_override ? n_override : 2000000);
	else if (strcmp(name, "queue_1m") == 0)
		case_queue_1m(name, n_override ? n_override : 1000000);
}

int main(int argc, char **argv)
{
	struct bench_args args = {.runs = runs};
	bench_args_parse(argc, argv, cases, false, &args);
	runs = args.runs;
	if (sem_init(&done, 0, 0) != 0)
		die("sem_init failed");
	for (size_t i = 0; i < args.n_want; i++)
		run_case(args.want[i], args.n);
	sem_destroy(&done);
	free(args.want);
	return 0;
}
