/* bus: topic names, fan-out, queues and consumers, on an executor but
 * without an event loop; time is the fake clock (clock_set_fake). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "plantd/plantd.h"
#include "bus.h"
#include "clock.h"
#include "executor.h"
#include "msg.h"
#include "queue.h"
#include "testutil.h"

#define T0	1700000000000ull /* the fake clock's start (ms) */
#define WAIT_NS 5000000000ull	 /* how long to wait for the workers */
#define MAX_REC 2048

/* ---- a tiny site: instances with an actor each, as host/site.c does it ---- */

struct inst {
	struct actor actor;
	const char *name;
};

struct fx {
	struct executor *exec;
	struct bus *bus;
	struct inst a, b;
};

static void drop_task(struct task *t)
{
	if (t->kind == TASK_MSG) {
		msg_unref(t->u.msg);
		bus_sub_unref(t->target);
	} else {
		t->u.fn(t->target, NULL);
	}
}

/* [worker] what the actor runs: calls with the instance as actor_ctx,
 * messages to their subscription's handler with the instance as state. */
static void dispatch(void *ctx, struct task *tasks, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (tasks[i].kind == TASK_CALL) {
			tasks[i].u.fn(tasks[i].target, ctx);
			continue;
		}
		struct bus_sub *sub = tasks[i].target;
		const plant_msg *m = tasks[i].u.msg;
		if (!atomic_load(&sub->dead))
			sub->fn(ctx, &m, 1, sub->user);
		msg_unref(tasks[i].u.msg);
		bus_sub_unref(sub);
	}
}

static int invoke(void *actor_ctx, plant_msg_handler fn, const plant_msg *const *msgs, size_t n,
		  void *user)
{
	return fn(actor_ctx, msgs, n, user);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	clock_set_fake(T0);
	assert_int_equal(executor_create(2, drop_task, &f->exec), 0);
	assert_int_equal(bus_create(&f->bus), PLANT_OK);
	bus_set_invoke(f->bus, invoke, NULL);
	f->a.name = "a";
	f->b.name = "b";
	actor_init(&f->a.actor, f->exec, dispatch, &f->a);
	actor_init(&f->b.actor, f->exec, dispatch, &f->b);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	/* the actors first: a dropped batch settles with its queue */
	actor_fini(&f->a.actor);
	actor_fini(&f->b.actor);
	bus_destroy(f->bus);
	executor_destroy(f->exec);
	clock_set_fake(0);
	free(f);
	return 0;
}

static void settle(struct fx *f)
{
	uint64_t deadline = clock_mono_ns() + WAIT_NS;
	assert_true(actor_wait_idle(&f->a.actor, deadline));
	assert_true(actor_wait_idle(&f->b.actor, deadline));
}

/* ---- a recording handler ---------------------------------------------------------- */

struct rec {
	pthread_mutex_t lock;
	int ret;		    /* what the handler returns */
	bool ack;		    /* bus_ack() each message */
	atomic_bool *gate;	    /* when set, wait for it before anything */
	atomic_int entered;	    /* handler calls begun */
	atomic_int seen;	    /* messages handled */
	int ack_errors;		    /* bus_ack() that failed */
	size_t max_batch;	    /* the largest batch */
	int n[MAX_REC];		    /* body "n" */
	uint32_t count[MAX_REC];    /* receive count (0: not a delivery) */
	const void *ptr[MAX_REC];   /* what the handler got, resolved */
	const void *state[MAX_REC]; /* the handler's state: the instance */
};

static struct rec *rec_new(int ret, bool ack)
{
	struct rec *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	pthread_mutex_init(&r->lock, NULL);
	r->ret = ret;
	r->ack = ack;
	return r;
}

static void rec_free(struct rec *r)
{
	pthread_mutex_destroy(&r->lock);
	free(r);
}

static void pause_ms(long ms)
{
	struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000L};
	nanosleep(&ts, NULL);
}

/* [worker] */
static int handler(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	struct rec *r = user;
	atomic_fetch_add(&r->entered, 1);
	uint64_t deadline = clock_mono_ns() + WAIT_NS;
	while (r->gate && !atomic_load(r->gate) && clock_mono_ns() < deadline)
		pause_ms(1);
	pthread_mutex_lock(&r->lock);
	if (n > r->max_batch)
		r->max_batch = n;
	for (size_t i = 0; i < n; i++) {
		const struct plant_msg *m = msg_resolve(msgs[i]);
		int k = atomic_load(&r->seen);
		if (k < MAX_REC) {
			const json_t *body = msg_tree(m);
			r->n[k] = (int)json_integer_value(json_object_get(body, "n"));
			r->count[k] = msgs[i]->kind == MSG_KIND_DELIVERY
					      ? ((const struct delivery *)(const void *)msgs[i])
							->receive_count
					      : 0;
			r->ptr[k] = m;
			r->state[k] = state;
		}
		if (r->ack && bus_ack(msgs[i]) != PLANT_OK)
			r->ack_errors++;
		atomic_fetch_add(&r->seen, 1);
	}
	pthread_mutex_unlock(&r->lock);
	return r->ret;
}

/* Wait until `r` has seen `want` messages and the actors are idle. */
static void wait_seen(struct fx *f, struct rec *r, int want)
{
	uint64_t deadline = clock_mono_ns() + WAIT_NS;
	while (atomic_load(&r->seen) < want && clock_mono_ns() < deadline)
		pause_ms(1);
	settle(f);
	if (atomic_load(&r->seen) != want)
		fail_msg("the handler saw %d messages, expected %d", atomic_load(&r->seen), want);
}

static struct plant_msg *mkmsg(const char *topic, int n)
{
	char body[64];
	tu_fmt(body, sizeof(body), "{\"n\":%d}", n);
	struct plant_msg *m = msg_new_text(topic, body, strlen(body));
	assert_non_null(m);
	return m;
}

static int publish(struct fx *f, const char *topic, int n)
{
	return bus_publish(f->bus, mkmsg(topic, n));
}

/* bus_stats_json: queues.NAME.KEY */
static json_int_t qstat(struct fx *f, const char *queue, const char *key)
{
	json_t *s = bus_stats_json(f->bus);
	json_t *v = json_object_get(json_object_get(json_object_get(s, "queues"), queue), key);
	if (!json_is_integer(v)) {
		json_decref(s);
		fail_msg("no queues.%s.%s in the bus stats", queue, key);
	}
	json_int_t x = json_integer_value(v);
	json_decref(s);
	return x;
}

/* bus_stats_json: topics.NAME.KEY, or -1 when the topic is not there */
static json_int_t tstat(struct fx *f, const char *topic, const char *key)
{
	json_t *s = bus_stats_json(f->bus);
	json_t *v = json_object_get(json_object_get(json_object_get(s, "topics"), topic), key);
	json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
	json_decref(s);
	return x;
}

static void declare(struct fx *f, const char *name, const char *settings)
{
	json_error_t jerr;
	json_t *j = json_loads(settings, 0, &jerr);
	if (!j)
		fail_msg("bad JSON in the test: %s", jerr.text);
	char err[512] = "";
	int rc = bus_queue_declare(f->bus, name, j, err, sizeof(err));
	json_decref(j);
	if (rc != PLANT_OK)
		fail_msg("bus_queue_declare(%s): %s", name, err);
}

static void link_dead_letters(struct fx *f)
{
	char err[512] = "";
	if (bus_link_dead_letters(f->bus, err, sizeof(err)) != PLANT_OK)
		fail_msg("bus_link_dead_letters: %s", err);
}

/* ---- names and patterns ------------------------------------------------------------ */

static void test_names(void **state)
{
	(void)state;
	assert_true(bus_topic_valid("sensor.raw"));
	assert_true(bus_topic_valid("a"));
	assert_true(bus_topic_valid("A-b_c.9"));
	assert_false(bus_topic_valid(NULL));
	assert_false(bus_topic_valid(""));
	assert_false(bus_topic_valid("a..b"));
	assert_false(bus_topic_valid(".a"));
	assert_false(bus_topic_valid("a."));
	assert_false(bus_topic_valid("a b"));
	assert_false(bus_topic_valid("a/b"));
	assert_false(bus_topic_valid("sensor.*")); /* a pattern, not a topic */

	char name[202];
	memset(name, 'x', 200);
	name[200] = '\0';
	assert_true(bus_topic_valid(name));
	assert_true(bus_pattern_valid(name));
	name[200] = 'x';
	name[201] = '\0';
	assert_false(bus_topic_valid(name));
	assert_false(bus_pattern_valid(name));

	assert_true(bus_pattern_valid("sensor.*"));
	assert_true(bus_pattern_valid("*.dlq"));
	assert_true(bus_pattern_valid("sensor.?"));
	assert_true(bus_pattern_valid("*"));
	assert_false(bus_pattern_valid(NULL));
	assert_false(bus_pattern_valid(""));
	assert_false(bus_pattern_valid("a..*"));
	assert_false(bus_pattern_valid(".*"));
	assert_false(bus_pattern_valid("a *"));
	assert_false(bus_pattern_valid("a[bc]"));

	assert_true(bus_glob_match("sensor.*", "sensor.raw"));
	assert_true(bus_glob_match("sensor.*", "sensor.raw.x")); /* one segment or more */
	assert_false(bus_glob_match("sensor.*", "sensorx"));
	assert_false(bus_glob_match("sensor.*", "sensor"));
	assert_false(bus_glob_match("sensor.*", "other.raw"));
	assert_true(bus_glob_match("*.dlq", "a.dlq"));
	assert_false(bus_glob_match("*.dlq", "a.dlqx"));
	assert_true(bus_glob_match("sensor.?", "sensor.1"));
	assert_false(bus_glob_match("sensor.?", "sensor.12"));
	assert_true(bus_glob_match("exact.name", "exact.name"));
	assert_false(bus_glob_match("exact.name", "exact.names"));
}

/* An invalid topic is refused and reaches neither queues nor handlers. */
static void test_publish_invalid_topic(void **state)
{
	struct fx *f = *state;
	struct rec *r = rec_new(PLANT_OK, false);
	declare(f, "all", "{\"subscribe\": [\"*\"]}");
	link_dead_letters(f);
	assert_int_equal(bus_subscribe(f->bus, "*", &f->a, &f->a.actor, handler, r, NULL),
			 PLANT_OK);

	const char *bad[] = {"", "a..b", ".a", "a b", "a.", "t.*"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(publish(f, bad[i], 1), PLANT_E_INVALID);
		assert_int_equal(tstat(f, bad[i], "published"), -1);
	}
	char longname[202];
	memset(longname, 'x', 201);
	longname[201] = '\0';
	assert_int_equal(publish(f, longname, 1), PLANT_E_INVALID);
	assert_int_equal(bus_publish(f->bus, NULL), PLANT_E_NOMEM);
	settle(f);
	assert_int_equal(atomic_load(&r->seen), 0);
	assert_int_equal(qstat(f, "all", "depth"), 0);
	assert_int_equal(qstat(f, "all", "enqueued"), 0);

	/* a valid one goes through both */
	assert_int_equal(publish(f, "x.y", 1), PLANT_OK);
	wait_seen(f, r, 1);
	assert_int_equal(qstat(f, "all", "depth"), 1);
	assert_int_equal(tstat(f, "x.y", "published"), 1);

	/* and a subscription needs a valid pattern */
	assert_int_equal(bus_subscribe(f->bus, "a b", &f->a, &f->a.actor, handler, r, NULL),
			 PLANT_E_INVALID);
	assert_int_equal(bus_subscribe(f->bus, "x.*", &f->a, &f->a.actor, NULL, r, NULL),
			 PLANT_E_INVALID);
	rec_free(r);
}

/* ---- fan-out to handlers ---------------------------------------------------------- */

static void test_fan_out(void **state)
{
	struct fx *f = *state;
	struct rec *r1 = rec_new(PLANT_OK, false), *r2 = rec_new(PLANT_OK, false),
		   *r3 = rec_new(PLANT_OK, false);
	uint64_t id1 = 0, id2 = 0, id3 = 0;
	assert_int_equal(bus_subscribe(f->bus, "t.*", &f->a, &f->a.actor, handler, r1, &id1),
			 PLANT_OK);
	assert_int_equal(bus_subscribe(f->bus, "t.*", &f->b, &f->b.actor, handler, r2, &id2),
			 PLANT_OK);
	assert_int_equal(bus_subscribe(f->bus, "u.*", &f->a, &f->a.actor, handler, r3, &id3),
			 PLANT_OK);
	assert_true(id1 != 0 && id2 != 0 && id3 != 0);
	assert_true(id1 != id2 && id2 != id3 && id1 != id3);

	struct plant_msg *m = mkmsg("t.a", 1);
	msg_ref(m); /* keep it, to compare */
	assert_int_equal(bus_publish(f->bus, m), PLANT_OK);
	wait_seen(f, r1, 1);
	wait_seen(f, r2, 1);
	assert_int_equal(atomic_load(&r3->seen), 0);
	/* shared, not copied */
	assert_ptr_equal(r1->ptr[0], m);
	assert_ptr_equal(r2->ptr[0], m);
	assert_int_equal(r1->count[0], 0); /* a plain message, not a delivery */
	/* each under its own instance */
	assert_ptr_equal(r1->state[0], &f->a);
	assert_ptr_equal(r2->state[0], &f->b);
	msg_unref(m);
	assert_int_equal(tstat(f, "t.a", "published"), 1);
	assert_int_equal(tstat(f, "t.a", "subscribers"), 2);
	assert_int_equal(tstat(f, "t.a", "queues"), 0);

	/* unsubscribe stops delivery; only the owner may */
	assert_int_equal(bus_unsubscribe(f->bus, &f->b, id1), PLANT_E_NOTFOUND);
	assert_int_equal(bus_unsubscribe(f->bus, &f->a, id1), PLANT_OK);
	assert_int_equal(bus_unsubscribe(f->bus, &f->a, id1), PLANT_E_NOTFOUND);
	assert_int_equal(bus_unsubscribe(f->bus, &f->a, 0), PLANT_E_NOTFOUND);
	assert_int_equal(publish(f, "t.a", 2), PLANT_OK);
	wait_seen(f, r2, 2);
	assert_int_equal(atomic_load(&r1->seen), 1);
	assert_int_equal(tstat(f, "t.a", "subscribers"), 1);

	/* a whole owner at once */
	assert_int_equal(publish(f, "u.b", 3), PLANT_OK);
	wait_seen(f, r3, 1);
	bus_unsubscribe_owner(f->bus, &f->b);
	bus_unsubscribe_owner(f->bus, &f->a);
	assert_int_equal(publish(f, "t.a", 4), PLANT_OK);
	assert_int_equal(publish(f, "u.b", 5), PLANT_OK);
	settle(f);
	assert_int_equal(atomic_load(&r1->seen), 1);
	assert_int_equal(atomic_load(&r2->seen), 2);
	assert_int_equal(atomic_load(&r3->seen), 1);
	assert_int_equal(tstat(f, "t.a", "published"), 3);
	rec_free(r1);
	rec_free(r2);
	rec_free(r3);
}

/* ---- queues ----------------------------------------------------------------------------- */

/* A topic that feeds a full queue is refused everywhere. */
static void test_queue_full_refuses_publish(void **state)
{
	struct fx *f = *state;
	struct rec *r = rec_new(PLANT_OK, false);
	declare(f, "q1", "{\"subscribe\": [\"t.*\"], \"max_depth\": 2}");
	declare(f, "q2", "{\"subscribe\": [\"t.a\"]}");
	link_dead_letters(f);
	assert_non_null(bus_queue_find(f->bus, "q1"));
	assert_null(bus_queue_find(f->bus, "nope"));
	assert_int_equal(bus_subscribe(f->bus, "t.*", &f->a, &f->a.actor, handler, r, NULL),
			 PLANT_OK);

	assert_int_equal(publish(f, "t.a", 1), PLANT_OK);
	assert_int_equal(publish(f, "t.a", 2), PLANT_OK);
	wait_seen(f, r, 2);
	assert_int_equal(qstat(f, "q1", "depth"), 2);
	assert_int_equal(qstat(f, "q2", "depth"), 2);
	assert_int_equal(queue_room(bus_queue_find(f->bus, "q1")), 0);
	assert_int_equal(tstat(f, "t.a", "queues"), 2);

	assert_int_equal(publish(f, "t.a", 3), PLANT_E_FULL);
	assert_int_equal(publish(f, "t.b", 4), PLANT_E_FULL); /* q1 alone */
	settle(f);
	assert_int_equal(atomic_load(&r->seen), 2);
	assert_int_equal(qstat(f, "q1", "depth"), 2);
	assert_int_equal(qstat(f, "q1", "refused"), 2);
	assert_int_equal(qstat(f, "q2", "depth"), 2);
	assert_int_equal(qstat(f, "q2", "enqueued"), 2);
	assert_int_equal(qstat(f, "q2", "refused"), 0);

	/* a topic without queues is not held back */
	assert_int_equal(publish(f, "t", 5), PLANT_OK);

	/* the queue holds the same message the handler got */
	json_t *peek = queue_peek(bus_queue_find(f->bus, "q2"), 10);
	assert_int_equal(json_array_size(peek), 2);
	assert_int_equal(json_integer_value(json_object_get(
				 json_object_get(json_array_get(peek, 1), "body"), "n")),
			 2);
	json_decref(peek);
	rec_free(r);
}

/* One consumer acks everything: all 1000 arrive, in order, and go. */
static void test_consumer_acks(void **state)
{
	struct fx *f = *state;
	enum { N = 1000 };
	struct rec *r = rec_new(PLANT_OK, true);
	declare(f, "q1", "{\"subscribe\": [\"t.*\"]}");
	link_dead_letters(f);
	uint64_t cid = 0;
	assert_int_equal(bus_consume(f->bus, "q1", &f->a, &f->a.actor, handler, r, 64, &cid),
			 PLANT_OK);
	assert_true(cid != 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(publish(f, "t.a", i), PLANT_OK);
	wait_seen(f, r, N);
	assert_int_equal(r->ack_errors, 0);
	assert_true(r->max_batch >= 1 && r->max_batch <= 64);
	for (int i = 0; i < N; i++) {
		if (r->n[i] != i)
			fail_msg("message %d arrived as number %d", r->n[i], i);
		assert_int_equal(r->count[i], 1);
		assert_ptr_equal(r->state[i], &f->a);
	}
	assert_int_equal(qstat(f, "q1", "depth"), 0);
	assert_int_equal(qstat(f, "q1", "acked"), N);
	assert_int_equal(qstat(f, "q1", "redelivered"), 0);
	rec_free(r);
}

/* Messages left unsettled are acked when the handler returns PLANT_OK. */
static void test_consumer_ok_acks_the_rest(void **state)
{
	struct fx *f = *state;
	struct rec *r = rec_new(PLANT_OK, false);
	declare(f, "q1", "{\"subscribe\": [\"t.*\"]}");
	link_dead_letters(f);
	assert_int_equal(bus_consume(f->bus, "q1", &f->a, &f->a.actor, handler, r, 0, NULL),
			 PLANT_OK);
	for (int i = 0; i < 10; i++)
		assert_int_equal(publish(f, "t.a", i), PLANT_OK);
	wait_seen(f, r, 10);
	assert_int_equal(qstat(f, "q1", "depth"), 0);
	assert_int_equal(qstat(f, "q1", "acked"), 10);
	rec_free(r);

	/* no such queue; no handler */
	assert_int_equal(bus_consume(f->bus, "nope", &f->a, &f->a.actor, handler, NULL, 0, NULL),
			 PLANT_E_NOTFOUND);
	assert_int_equal(bus_consume(f->bus, "q1", &f->a, &f->a.actor, NULL, NULL, 0, NULL),
			 PLANT_E_INVALID);
}

/* A failing handler: in flight until the visibility timeout, then again with
 * receive count 2, then (max_receive 2) to the dead-letter queue. */
static void test_consumer_error_redelivers_then_dead_letters(void **state)
{
	struct fx *f = *state;
	struct rec *r = rec_new(PLANT_E_PLUGIN, false);
	declare(f, "work",
		"{\"subscribe\": [\"job.*\"], \"visibility_timeout\": \"1s\", \"max_receive\": 2,"
		" \"dead_letter\": \"work.dlq\"}");
	declare(f, "work.dlq", "{}");
	link_dead_letters(f);
	assert_int_equal(bus_consume(f->bus, "work", &f->a, &f->a.actor, handler, r, 0, NULL),
			 PLANT_OK);
	for (int i = 0; i < 3; i++)
		assert_int_equal(publish(f, "job.a", i), PLANT_OK);
	wait_seen(f, r, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(r->count[i], 1);
	assert_int_equal(qstat(f, "work", "in_flight"), 3);
	assert_int_equal(qstat(f, "work", "visible"), 0);

	/* not yet */
	clock_advance(999);
	bus_tick(f->bus, clock_now_ms());
	settle(f);
	assert_int_equal(atomic_load(&r->seen), 3);
	assert_int_equal(qstat(f, "work", "in_flight"), 3);

	/* the timeout: again, received a second time */
	clock_advance(1);
	bus_tick(f->bus, clock_now_ms());
	wait_seen(f, r, 6);
	for (int i = 3; i < 6; i++)
		assert_int_equal(r->count[i], 2);
	assert_int_equal(qstat(f, "work", "redelivered"), 3);
	assert_int_equal(qstat(f, "work", "in_flight"), 3);

	/* the second timeout: dead letters */
	clock_advance(1000);
	bus_tick(f->bus, clock_now_ms());
	settle(f);
	assert_int_equal(atomic_load(&r->seen), 6);
	assert_int_equal(qstat(f, "work", "depth"), 0);
	assert_int_equal(qstat(f, "work", "dead_lettered"), 3);
	assert_int_equal(qstat(f, "work.dlq", "depth"), 3);
	json_t *peek = queue_peek(bus_queue_find(f->bus, "work.dlq"), 10);
	assert_int_equal(json_array_size(peek), 3);
	size_t i;
	json_t *e;
	json_array_foreach(peek, i, e)
	{
		json_t *at = json_object_get(e, "attributes");
		assert_string_equal(json_string_value(json_object_get(at, "dlq_source")), "work");
		assert_string_equal(json_string_value(json_object_get(at, "dlq_receive_count")),
				    "2");
		assert_string_equal(json_string_value(json_object_get(at, "dlq_last_error")),
				    plant_status_name(PLANT_E_PLUGIN));
		assert_string_equal(json_string_value(json_object_get(e, "topic")), "job.a");
	}
	json_decref(peek);
	rec_free(r);
}

/* ---- hold, release and reject [since 1.3] ---------------------------------------- */

struct holder {
	atomic_int seen;
	int reject; /* reject every message instead of holding it */
	int rejected;
	const plant_msg *held[16];
	int n_held;
};

/* [worker] Holds (or rejects) everything and returns an error: the error
 * must not touch what was held or rejected. */
static int hold_handler(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	(void)state;
	struct holder *h = user;
	for (size_t i = 0; i < n; i++) {
		if (h->reject) {
			if (bus_reject(msgs[i], "not a reading") == PLANT_OK)
				h->rejected++;
		} else if (h->n_held < 16) {
			const plant_msg *m = bus_hold(msgs[i]);
			assert_non_null(m);
			/* a second hold of the same message is refused */
			assert_null(bus_hold(msgs[i]));
			h->held[h->n_held++] = m;
		}
		atomic_fetch_add(&h->seen, 1);
	}
	return PLANT_E_PLUGIN;
}

static void wait_holder(struct fx *f, struct holder *h, int want)
{
	uint64_t deadline = clock_mono_ns() + WAIT_NS;
	while (atomic_load(&h->seen) < want && clock_mono_ns() < deadline)
		pause_ms(1);
	settle(f);
	assert_int_equal(atomic_load(&h->seen), want);
}

/* Held messages stay in flight past their batch, and are settled one by one
 * later: ack deletes, nack brings back, release leaves them to time out. */
static void test_hold_settles_later(void **state)
{
	struct fx *f = *state;
	struct holder h = {0};
	declare(f, "q1", "{\"subscribe\": [\"t.*\"], \"visibility_timeout\": \"10s\"}");
	assert_int_equal(bus_consume(f->bus, "q1", &f->a, &f->a.actor, hold_handler, &h, 0, NULL),
			 PLANT_OK);
	for (int i = 0; i < 4; i++)
		assert_int_equal(publish(f, "t.x", i), PLANT_OK);
	wait_holder(f, &h, 4);
	assert_int_equal(h.n_held, 4);
	/* the handler failed, yet nothing was noted against them */
	assert_int_equal(qstat(f, "q1", "in_flight"), 4);
	for (int i = 0; i < 4; i++)
		assert_int_equal(
			json_integer_value(json_object_get(msg_tree(msg_resolve(h.held[i])), "n")),
			i);

	assert_int_equal(bus_ack(h.held[0]), PLANT_OK);
	assert_int_equal(bus_nack(h.held[1], 0, "later"), PLANT_OK);
	bus_release(h.held[2]);
	assert_int_equal(qstat(f, "q1", "acked"), 1);
	/* the nacked one is visible again: the next tick hands it out */
	bus_tick(f->bus, clock_now_ms());
	wait_holder(f, &h, 5);
	assert_int_equal(h.n_held, 5);
	assert_int_equal(qstat(f, "q1", "in_flight"), 3);

	/* the released one times out like any unsettled message, and so do
	 * the two still held: their handles answer not found, and are freed
	 * all the same */
	clock_advance(10000);
	bus_tick(f->bus, clock_now_ms());
	wait_holder(f, &h, 8);
	assert_int_equal(bus_ack(h.held[3]), PLANT_E_NOTFOUND);
	assert_int_equal(bus_ack(h.held[4]), PLANT_E_NOTFOUND);
	for (int i = 5; i < h.n_held; i++)
		assert_int_equal(bus_ack(h.held[i]), PLANT_OK);
	assert_int_equal(qstat(f, "q1", "depth"), 0);
	assert_int_equal(qstat(f, "q1", "acked"), 4);
}

/* reject() sends a message to the dead-letter queue at once, with the
 * reason; a queue without one says so and keeps the message. */
static void test_reject_dead_letters_now(void **state)
{
	struct fx *f = *state;
	struct holder h = {.reject = 1};
	declare(f, "work",
		"{\"subscribe\": [\"job.*\"], \"max_receive\": 5, \"dead_letter\": \"work.dlq\"}");
	declare(f, "work.dlq", "{}");
	declare(f, "plain", "{\"subscribe\": [\"other.*\"], \"visibility_timeout\": \"1s\"}");
	link_dead_letters(f);
	assert_int_equal(bus_consume(f->bus, "work", &f->a, &f->a.actor, hold_handler, &h, 0, NULL),
			 PLANT_OK);
	for (int i = 0; i < 3; i++)
		assert_int_equal(publish(f, "job.a", i), PLANT_OK);
	wait_holder(f, &h, 3);
	assert_int_equal(h.rejected, 3);
	assert_int_equal(qstat(f, "work", "depth"), 0);
	assert_int_equal(qstat(f, "work", "dead_lettered"), 3);
	json_t *peek = queue_peek(bus_queue_find(f->bus, "work.dlq"), 10);
	assert_int_equal(json_array_size(peek), 3);
	size_t i;
	json_t *e;
	json_array_foreach(peek, i, e)
	{
		json_t *at = json_object_get(e, "attributes");
		assert_string_equal(json_string_value(json_object_get(at, "dlq_reason")),
				    "not a reading");
		assert_string_equal(json_string_value(json_object_get(at, "dlq_receive_count")),
				    "1");
	}
	json_decref(peek);

	struct holder h2 = {.reject = 1};
	assert_int_equal(
		bus_consume(f->bus, "plain", &f->b, &f->b.actor, hold_handler, &h2, 0, NULL),
		PLANT_OK);
	assert_int_equal(publish(f, "other.a", 7), PLANT_OK);
	wait_holder(f, &h2, 1);
	assert_int_equal(h2.rejected, 0);
	/* refused, so still in flight: back after its timeout */
	assert_int_equal(qstat(f, "plain", "in_flight"), 1);
	clock_advance(1000);
	bus_tick(f->bus, clock_now_ms());
	wait_holder(f, &h2, 2);
	assert_int_equal(qstat(f, "plain", "redelivered"), 1);
}

/* A full dead-letter queue refuses a reject: the message stays in flight
 * (no spin of reject, come back, reject), for the plugin to nack. */
static void test_reject_into_a_full_dead_letter_queue(void **state)
{
	struct fx *f = *state;
	struct holder h = {.reject = 1};
	declare(f, "work",
		"{\"subscribe\": [\"job.*\"], \"visibility_timeout\": \"5s\","
		" \"dead_letter\": \"work.dlq\"}");
	declare(f, "work.dlq", "{\"max_depth\": 1}");
	link_dead_letters(f);
	assert_int_equal(bus_consume(f->bus, "work", &f->a, &f->a.actor, hold_handler, &h, 0, NULL),
			 PLANT_OK);
	for (int i = 0; i < 3; i++)
		assert_int_equal(publish(f, "job.a", i), PLANT_OK);
	wait_holder(f, &h, 3);
	assert_int_equal(h.rejected, 1);
	assert_int_equal(qstat(f, "work.dlq", "depth"), 1);
	/* the two refused are in flight, not handed out again */
	assert_int_equal(qstat(f, "work", "in_flight"), 2);
	bus_tick(f->bus, clock_now_ms());
	settle(f);
	assert_int_equal(atomic_load(&h.seen), 3);
}

/* A deduplication key: the second publish is not delivered; a delay holds a
 * message back until the clock gets there. */
static void test_publish_ex_dedup_and_delay(void **state)
{
	struct fx *f = *state;
	struct rec *r = rec_new(PLANT_OK, true);
	declare(f, "q1", "{\"subscribe\": [\"t.*\"], \"dedup_window\": \"1s\"}");
	link_dead_letters(f);
	assert_int_equal(bus_consume(f->bus, "q1", &f->a, &f->a.actor, handler, r, 0, NULL),
			 PLANT_OK);
	assert_int_equal(bus_publish_ex(f->bus, mkmsg("t.a", 1), "k", 0), PLANT_OK);
	assert_int_equal(bus_publish_ex(f->bus, mkmsg("t.a", 2), "k", 0), PLANT_OK);
	assert_int_equal(bus_publish_ex(f->bus, mkmsg("t.a", 3), "k2", 0), PLANT_OK);
	wait_seen(f, r, 2);
	assert_int_equal(r->n[0], 1);
	assert_int_equal(r->n[1], 3);
	assert_int_equal(qstat(f, "q1", "deduplicated"), 1);
	assert_int_equal(qstat(f, "q1", "enqueued"), 2);

	/* after the window, the key is new again */
	clock_advance(1000);
	assert_int_equal(bus_publish_ex(f->bus, mkmsg("t.a", 4), "k", 0), PLANT_OK);
	wait_seen(f, r, 3);
	assert_int_equal(r->n[2], 4);

	/* a delay */
	assert_int_equal(bus_publish_ex(f->bus, mkmsg("t.a", 5), NULL, 500), PLANT_OK);
	settle(f);
	assert_int_equal(atomic_load(&r->seen), 3);
	assert_int_equal(qstat(f, "q1", "delayed"), 1);
	clock_advance(499);
	bus_tick(f->bus, clock_now_ms());
	settle(f);
	assert_int_equal(atomic_load(&r->seen), 3);
	clock_advance(1);
	bus_tick(f->bus, clock_now_ms());
	wait_seen(f, r, 4);
	assert_int_equal(r->n[3], 5);
	assert_int_equal(qstat(f, "q1", "depth"), 0);
	rec_free(r);
}

/* ---- a consumer that goes away holding messages ---------------------------------- */

static void block_fn(void *arg, void *actor_ctx)
{
	atomic_bool *gate = arg;
	uint64_t deadline = clock_mono_ns() + WAIT_NS;
	while (actor_ctx && !atomic_load(gate) && clock_mono_ns() < deadline)
		pause_ms(1);
}

/* The batch waits in the actor's mailbox when its consumer goes: it does not
 * run, and its messages are visible again at once. */
static void test_unsubscribe_owner_pending_batch(void **state)
{
	struct fx *f = *state;
	struct rec *r = rec_new(PLANT_OK, true), *r2 = rec_new(PLANT_OK, true);
	declare(f, "q1", "{\"subscribe\": [\"t.*\"]}");
	link_dead_letters(f);
	atomic_bool gate = false;
	struct task busy = {.kind = TASK_CALL, .target = &gate, .u.fn = block_fn};
	assert_true(actor_post(&f->a.actor, &busy)); /* the actor is busy */
	assert_int_equal(bus_consume(f->bus, "q1", &f->a, &f->a.actor, handler, r, 0, NULL),
			 PLANT_OK);
	assert_int_equal(publish(f, "t.a", 1), PLANT_OK);
	assert_int_equal(publish(f, "t.a", 2), PLANT_OK);
	assert_int_equal(qstat(f, "q1", "in_flight"), 1); /* one batch, behind block_fn */
	assert_int_equal(qstat(f, "q1", "visible"), 1);

	bus_unsubscribe_owner(f->bus, &f->a);
	atomic_store(&gate, true);
	settle(f);
	assert_int_equal(atomic_load(&r->entered), 0);
	assert_int_equal(qstat(f, "q1", "in_flight"), 0);
	assert_int_equal(qstat(f, "q1", "visible"), 2);

	/* the next consumer gets them, first the one that came back; nobody
	 * saw it, so that receive does not count toward max_receive */
	assert_int_equal(bus_consume(f->bus, "q1", &f->b, &f->b.actor, handler, r2, 0, NULL),
			 PLANT_OK);
	wait_seen(f, r2, 2);
	assert_int_equal(r2->n[0], 1);
	assert_int_equal(r2->count[0], 1);
	assert_int_equal(r2->n[1], 2);
	assert_int_equal(r2->count[1], 1);
	assert_int_equal(qstat(f, "q1", "depth"), 0);
	rec_free(r);
	rec_free(r2);
}

/* The handler runs when its consumer goes, then gives up (-1): the batch
 * comes back at once, not after the visibility timeout. */
static void test_unsubscribe_owner_running_batch(void **state)
{
	struct fx *f = *state;
	struct rec *r = rec_new(-1, false), *r2 = rec_new(PLANT_OK, true);
	declare(f, "q1", "{\"subscribe\": [\"t.*\"]}");
	link_dead_letters(f);
	atomic_bool gate = false;
	r->gate = &gate;
	assert_int_equal(bus_consume(f->bus, "q1", &f->a, &f->a.actor, handler, r, 0, NULL),
			 PLANT_OK);
	assert_int_equal(publish(f, "t.a", 1), PLANT_OK);
	uint64_t deadline = clock_mono_ns() + WAIT_NS;
	while (atomic_load(&r->entered) == 0 && clock_mono_ns() < deadline)
		pause_ms(1);
	assert_int_equal(atomic_load(&r->entered), 1);
	assert_int_equal(qstat(f, "q1", "in_flight"), 1);

	bus_unsubscribe_owner(f->bus, &f->a);
	atomic_store(&gate, true);
	settle(f);
	assert_int_equal(qstat(f, "q1", "in_flight"), 0);
	assert_int_equal(qstat(f, "q1", "visible"), 1);
	assert_int_equal(qstat(f, "q1", "redelivered"), 1);
	/* nobody consumes now: it waits */
	bus_tick(f->bus, clock_now_ms());
	settle(f);
	assert_int_equal(atomic_load(&r->seen), 1);

	assert_int_equal(bus_consume(f->bus, "q1", &f->b, &f->b.actor, handler, r2, 0, NULL),
			 PLANT_OK);
	wait_seen(f, r2, 1);
	assert_int_equal(r2->count[0], 2);
	assert_int_equal(qstat(f, "q1", "depth"), 0);
	rec_free(r);
	rec_free(r2);
}

/* ---- queue settings ---------------------------------------------------------------------- */

/* Parse `settings`, expecting a refusal that names `key`. */
static void parse_fails(const char *settings, const char *key)
{
	json_t *j = json_loads(settings, 0, NULL);
	assert_non_null(j);
	struct queue_settings qs;
	const char *bad = NULL;
	char err[256] = "";
	int rc = bus_queue_parse(j, &qs, &bad, err, sizeof(err));
	if (rc == PLANT_OK) {
		json_decref(j);
		fail_msg("bus_queue_parse(%s) accepted it", settings);
	}
	assert_int_equal(rc, PLANT_E_CONFIG);
	assert_non_null(bad);
	assert_string_equal(bad, key);
	assert_contains(err, key);
	json_decref(j);
}

static void test_queue_parse(void **state)
{
	(void)state;
	parse_fails("{\"visibility_tmeout\": 5}", "visibility_tmeout");
	parse_fails("{\"subscribe\": [\"t.*\"], \"colour\": \"red\"}", "colour");
	parse_fails("{\"visibility_timeout\": 0}", "visibility_timeout");
	parse_fails("{\"visibility_timeout\": \"0s\"}", "visibility_timeout");
	parse_fails("{\"visibility_timeout\": \"soon\"}", "visibility_timeout");
	parse_fails("{\"visibility_timeout\": -1}", "visibility_timeout");
	parse_fails("{\"max_receive\": 0}", "max_receive");
	parse_fails("{\"max_receive\": \"3\"}", "max_receive");
	parse_fails("{\"max_depth\": 0}", "max_depth");
	parse_fails("{\"retention\": \"4x\"}", "retention");
	parse_fails("{\"dedup_window\": 0}", "dedup_window");
	parse_fails("{\"delay\": \"-1s\"}", "delay");
	parse_fails("{\"subscribe\": \"t.*\"}", "subscribe");
	parse_fails("{\"subscribe\": [\"a b\"]}", "subscribe");
	parse_fails("{\"subscribe\": [5]}", "subscribe");
	parse_fails("{\"dead_letter\": 5}", "dead_letter");
	parse_fails("{\"dead_letter\": \"a..b\"}", "dead_letter");

	/* the defaults, and every key */
	json_t *j = json_object();
	struct queue_settings qs, def;
	const char *bad = NULL;
	char err[256] = "";
	queue_settings_default(&def);
	assert_int_equal(bus_queue_parse(j, &qs, &bad, err, sizeof(err)), PLANT_OK);
	assert_null(bad);
	assert_int_equal(qs.visibility_timeout_ms, def.visibility_timeout_ms);
	assert_int_equal(qs.max_receive, def.max_receive);
	assert_int_equal(qs.retention_ms, def.retention_ms);
	assert_int_equal(qs.max_depth, def.max_depth);
	assert_int_equal(qs.delay_ms, def.delay_ms);
	assert_int_equal(qs.dedup_window_ms, def.dedup_window_ms);
	json_decref(j);
	j = json_loads("{\"subscribe\": [\"t.*\", \"u\"], \"visibility_timeout\": \"250ms\","
		       " \"max_receive\": 3, \"dead_letter\": \"x.dlq\", \"retention\": \"2h\","
		       " \"max_depth\": 10, \"delay\": 1.5, \"dedup_window\": \"5m\"}",
		       0, NULL);
	assert_non_null(j);
	assert_int_equal(bus_queue_parse(j, &qs, &bad, err, sizeof(err)), PLANT_OK);
	assert_int_equal(qs.visibility_timeout_ms, 250);
	assert_int_equal(qs.max_receive, 3);
	assert_int_equal(qs.retention_ms, 2 * 3600 * 1000);
	assert_int_equal(qs.max_depth, 10);
	assert_int_equal(qs.delay_ms, 1500);
	assert_int_equal(qs.dedup_window_ms, 5 * 60 * 1000);
	json_decref(j);
}

static void test_queue_declare_errors(void **state)
{
	struct fx *f = *state;
	char err[512] = "";
	json_t *j = json_loads("{\"max_receive\": 0}", 0, NULL);
	assert_int_equal(bus_queue_declare(f->bus, "q1", j, err, sizeof(err)), PLANT_E_CONFIG);
	assert_contains(err, "q1");
	assert_contains(err, "max_receive");
	assert_null(bus_queue_find(f->bus, "q1"));
	json_decref(j);
	j = json_object();
	assert_int_equal(bus_queue_declare(f->bus, "a b", j, err, sizeof(err)), PLANT_E_INVALID);
	assert_int_equal(bus_queue_declare(f->bus, "", j, err, sizeof(err)), PLANT_E_INVALID);
	json_decref(j);
}

static void test_link_dead_letters(void **state)
{
	struct fx *f = *state;
	char err[512] = "";
	/* a missing dead-letter queue */
	declare(f, "q1", "{\"dead_letter\": \"nope\"}");
	assert_int_equal(bus_link_dead_letters(f->bus, err, sizeof(err)), PLANT_E_CONFIG);
	assert_contains(err, "q1");
	assert_contains(err, "nope");

	/* declared now: a chain that ends is fine */
	declare(f, "nope", "{\"dead_letter\": \"last\"}");
	declare(f, "last", "{}");
	link_dead_letters(f);

	/* a cycle, and a queue that is its own dead-letter queue */
	declare(f, "last", "{\"dead_letter\": \"q1\"}");
	err[0] = '\0';
	assert_int_equal(bus_link_dead_letters(f->bus, err, sizeof(err)), PLANT_E_CONFIG);
	assert_contains(err, "cycle");
	declare(f, "last", "{}");
	link_dead_letters(f);
	declare(f, "self", "{\"dead_letter\": \"self\"}");
	err[0] = '\0';
	assert_int_equal(bus_link_dead_letters(f->bus, err, sizeof(err)), PLANT_E_CONFIG);
	assert_contains(err, "cycle");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test_setup_teardown(test_publish_invalid_topic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fan_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_full_refuses_publish, setup, teardown),
		cmocka_unit_test_setup_teardown(test_consumer_acks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_consumer_ok_acks_the_rest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_consumer_error_redelivers_then_dead_letters,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_publish_ex_dedup_and_delay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hold_settles_later, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reject_dead_letters_now, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reject_into_a_full_dead_letter_queue, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unsubscribe_owner_pending_batch, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unsubscribe_owner_running_batch, setup,
						teardown),
		cmocka_unit_test(test_queue_parse),
		cmocka_unit_test_setup_teardown(test_queue_declare_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_link_dead_letters, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
