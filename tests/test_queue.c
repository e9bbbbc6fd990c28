/* queue: the SQS-style queue as a data structure, driven by explicit time. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "plantd/plantd.h"
#include "msg.h"
#include "queue.h"
#include "testutil.h"

#define T0 1000000ull /* an arbitrary start time (ms); never 0 */

/* Default settings with the ones a test cares about. */
static struct queue_settings settings(uint64_t visibility_ms, uint32_t max_receive)
{
	struct queue_settings s;
	queue_settings_default(&s);
	s.visibility_timeout_ms = visibility_ms;
	s.max_receive = max_receive;
	return s;
}

static struct queue *mkqueue(const char *name, const struct queue_settings *s)
{
	struct queue *q = NULL;
	assert_int_equal(queue_create(name, s, &q), PLANT_OK);
	assert_non_null(q);
	return q;
}

static struct plant_msg *mkmsg(int n)
{
	char body[64];
	tu_fmt(body, sizeof(body), "{\"n\":%d}", n);
	struct plant_msg *m = msg_new_text("topic.x", body, strlen(body));
	assert_non_null(m);
	return m;
}

/* Push message {"n": n}; the queue keeps its own reference. */
static int push_ex(struct queue *q, int n, const char *key, uint64_t delay_ms, uint64_t now)
{
	struct plant_msg *m = mkmsg(n);
	int rc = queue_push(q, m, key, delay_ms, now);
	msg_unref(m);
	return rc;
}

static int push(struct queue *q, int n, uint64_t now)
{
	return push_ex(q, n, NULL, 0, now);
}

/* The "n" of a message's body. */
static int body_n(const struct plant_msg *m)
{
	const json_t *t = msg_tree(m);
	assert_non_null(t);
	json_t *n = json_object_get(t, "n");
	assert_true(json_is_integer(n));
	return (int)json_integer_value(n);
}

/* Receive exactly one message, or fail. */
static struct delivery *recv1(struct queue *q, uint64_t now)
{
	struct delivery *d = NULL;
	size_t n = queue_receive(q, &d, 1, now);
	if (n != 1)
		fail_msg("queue %s: nothing to receive at %llu", queue_name(q),
			 (unsigned long long)now);
	assert_int_equal(d->kind, MSG_KIND_DELIVERY);
	assert_ptr_equal(d->queue, q);
	assert_int_equal(d->settled, 0);
	return d;
}

static void assert_nothing(struct queue *q, uint64_t now)
{
	struct delivery *d = NULL;
	size_t n = queue_receive(q, &d, 1, now);
	if (n) {
		int body = body_n(d->msg);
		delivery_free(d);
		fail_msg("queue %s: received {\"n\":%d} at %llu, expected nothing", queue_name(q),
			 body, (unsigned long long)now);
	}
}

static struct queue_stats stats(struct queue *q, uint64_t now)
{
	struct queue_stats s;
	queue_stats_get(q, now, &s);
	return s;
}

static const char *attr(const struct plant_msg *m, const char *key)
{
	return m->attrs ? json_string_value(json_object_get(m->attrs, key)) : NULL;
}

/* ---- push, receive, ack ------------------------------------------------------ */

static void test_push_receive_ack(void **state)
{
	(void)state;
	struct queue_settings s = settings(30000, 5);
	struct queue *q = mkqueue("q", &s);
	for (int i = 1; i <= 3; i++)
		assert_int_equal(push(q, i, T0), PLANT_OK);
	assert_int_equal(stats(q, T0).enqueued, 3);
	assert_int_equal(queue_visible(q), 3);

	/* first delivery in FIFO order, each received once */
	struct delivery *d[8];
	assert_int_equal(queue_receive(q, d, 8, T0), 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(body_n(d[i]->msg), i + 1);
		assert_int_equal(d[i]->receive_count, 1);
		assert_string_equal(d[i]->msg->topic, "topic.x");
	}
	struct queue_stats st = stats(q, T0);
	assert_int_equal(st.in_flight, 3);
	assert_int_equal(st.visible, 0);
	assert_int_equal(st.depth, 3);

	/* ack deletes */
	assert_int_equal(queue_ack(q, d[0]), PLANT_OK);
	assert_int_equal(d[0]->settled, 1);
	st = stats(q, T0);
	assert_int_equal(st.acked, 1);
	assert_int_equal(st.depth, 2);
	assert_int_equal(st.in_flight, 2);
	/* twice is once too many */
	assert_int_equal(queue_ack(q, d[0]), PLANT_E_NOTFOUND);
	assert_int_equal(queue_ack(q, d[1]), PLANT_OK);
	assert_int_equal(queue_ack(q, d[2]), PLANT_OK);
	st = stats(q, T0);
	assert_int_equal(st.depth, 0);
	assert_int_equal(st.acked, 3);
	assert_int_equal(st.redelivered, 0);
	/* nothing comes back, even much later */
	queue_tick(q, T0 + 10 * 30000);
	assert_nothing(q, T0 + 10 * 30000);
	for (int i = 0; i < 3; i++)
		delivery_free(d[i]);
	queue_destroy(q);
}

/* ---- visibility timeout ---------------------------------------------------- */

static void test_visibility_timeout(void **state)
{
	(void)state;
	struct queue_settings s = settings(1000, 5);
	struct queue *q = mkqueue("q", &s);
	assert_int_equal(push(q, 1, T0), PLANT_OK);
	struct delivery *d1 = recv1(q, T0 + 10);
	assert_int_equal(d1->receive_count, 1);

	/* invisible while in flight */
	assert_nothing(q, T0 + 10);
	assert_int_equal(queue_tick(q, T0 + 1009), 1); /* 1 ms to the deadline */
	struct queue_stats st = stats(q, T0 + 1009);
	assert_int_equal(st.in_flight, 1);
	assert_int_equal(st.visible, 0);
	assert_int_equal(st.redelivered, 0);
	assert_nothing(q, T0 + 1009);

	/* at the deadline: visible again */
	queue_tick(q, T0 + 1010);
	st = stats(q, T0 + 1010);
	assert_int_equal(st.in_flight, 0);
	assert_int_equal(st.visible, 1);
	assert_int_equal(st.depth, 1);
	assert_int_equal(st.redelivered, 1);
	struct delivery *d2 = recv1(q, T0 + 1010);
	assert_int_equal(d2->receive_count, 2);
	assert_ptr_equal(d2->msg, d1->msg); /* the same shared message */
	assert_int_equal(body_n(d2->msg), 1);
	assert_int_equal(queue_ack(q, d2), PLANT_OK);
	assert_int_equal(stats(q, T0 + 1010).depth, 0);
	delivery_free(d1);
	delivery_free(d2);
	queue_destroy(q);
}

/* A message visible again goes to the front, before newer visible ones. */
static void test_redelivery_goes_first(void **state)
{
	(void)state;
	struct queue_settings s = settings(1000, 5);
	struct queue *q = mkqueue("q", &s);
	assert_int_equal(push(q, 1, T0), PLANT_OK);
	struct delivery *d = recv1(q, T0);
	assert_int_equal(push(q, 2, T0 + 1), PLANT_OK);
	assert_int_equal(push(q, 3, T0 + 2), PLANT_OK);

	/* by timeout */
	queue_tick(q, T0 + 1000);
	struct delivery *v[3];
	assert_int_equal(queue_receive(q, v, 3, T0 + 1000), 3);
	assert_int_equal(body_n(v[0]->msg), 1);
	assert_int_equal(v[0]->receive_count, 2);
	assert_int_equal(body_n(v[1]->msg), 2);
	assert_int_equal(body_n(v[2]->msg), 3);
	assert_int_equal(v[1]->receive_count, 1);

	/* by nack: 3 goes back before 2 when only 3 is nacked... */
	assert_int_equal(queue_ack(q, v[0]), PLANT_OK);
	assert_int_equal(queue_nack(q, v[2], 0, NULL, T0 + 1001), PLANT_OK);
	assert_int_equal(push(q, 4, T0 + 1002), PLANT_OK);
	struct delivery *w = recv1(q, T0 + 1003);
	assert_int_equal(body_n(w->msg), 3); /* ...and before the newer 4 */
	assert_int_equal(w->receive_count, 2);
	struct delivery *x = recv1(q, T0 + 1003);
	assert_int_equal(body_n(x->msg), 4);

	delivery_free(d);
	for (int i = 0; i < 3; i++)
		delivery_free(v[i]);
	delivery_free(w);
	delivery_free(x);
	queue_destroy(q);
}

/* BUG (host/queue.c, queue_tick + come_back): several messages that time out
 * together are each pushed to the front of the ring, one after the other, so
 * they come back in reverse order (3, 2, 1 instead of 1, 2, 3): the oldest
 * is no longer first. Expected: redelivered messages keep their relative
 * (first-delivery) order. This test fails until that is fixed. */
static void test_redelivery_keeps_order(void **state)
{
	(void)state;
	struct queue_settings s = settings(1000, 5);
	struct queue *q = mkqueue("q", &s);
	for (int i = 1; i <= 4; i++)
		assert_int_equal(push(q, i, T0 + (uint64_t)i), PLANT_OK);
	struct delivery *d[3];
	assert_int_equal(queue_receive(q, d, 3, T0 + 10), 3);
	queue_tick(q, T0 + 1010);
	struct delivery *v[4];
	assert_int_equal(queue_receive(q, v, 4, T0 + 1010), 4);
	int got[4];
	for (int i = 0; i < 4; i++)
		got[i] = body_n(v[i]->msg);
	for (int i = 0; i < 3; i++)
		delivery_free(d[i]);
	for (int i = 0; i < 4; i++)
		delivery_free(v[i]);
	queue_destroy(q);
	if (got[0] != 1 || got[1] != 2 || got[2] != 3 || got[3] != 4)
		fail_msg("redelivery order %d %d %d %d, expected 1 2 3 4", got[0], got[1], got[2],
			 got[3]);
}

/* ---- nack ------------------------------------------------------------------------- */

static void test_nack_now(void **state)
{
	(void)state;
	struct queue_settings s = settings(30000, 5);
	struct queue *q = mkqueue("q", &s);
	assert_int_equal(push(q, 1, T0), PLANT_OK);
	struct delivery *d1 = recv1(q, T0);
	assert_int_equal(queue_nack(q, d1, 0, "try again", T0 + 5), PLANT_OK);
	assert_int_equal(d1->settled, 1);
	struct queue_stats st = stats(q, T0 + 5);
	assert_int_equal(st.visible, 1);
	assert_int_equal(st.in_flight, 0);
	assert_int_equal(st.redelivered, 1);
	/* a settled delivery is no longer in flight */
	assert_int_equal(queue_nack(q, d1, 0, NULL, T0 + 5), PLANT_E_NOTFOUND);
	struct delivery *d2 = recv1(q, T0 + 5);
	assert_int_equal(d2->receive_count, 2);
	assert_int_equal(queue_ack(q, d2), PLANT_OK);
	delivery_free(d1);
	delivery_free(d2);
	queue_destroy(q);
}

static void test_nack_delay(void **state)
{
	(void)state;
	struct queue_settings s = settings(30000, 5);
	struct queue *q = mkqueue("q", &s);
	assert_int_equal(push(q, 1, T0), PLANT_OK);
	struct delivery *d1 = recv1(q, T0);
	assert_int_equal(queue_nack(q, d1, 500, "later", T0 + 100), PLANT_OK);
	struct queue_stats st = stats(q, T0 + 100);
	assert_int_equal(st.delayed, 1);
	assert_int_equal(st.visible, 0);
	assert_int_equal(st.in_flight, 0);
	assert_int_equal(st.depth, 1);
	assert_nothing(q, T0 + 100);
	assert_int_equal(queue_tick(q, T0 + 599), 1);
	assert_nothing(q, T0 + 599);
	queue_tick(q, T0 + 600);
	st = stats(q, T0 + 600);
	assert_int_equal(st.delayed, 0);
	assert_int_equal(st.visible, 1);
	struct delivery *d2 = recv1(q, T0 + 600);
	assert_int_equal(d2->receive_count, 2);
	assert_int_equal(queue_ack(q, d2), PLANT_OK);
	delivery_free(d1);
	delivery_free(d2);
	queue_destroy(q);
}

/* ---- max_receive and the dead-letter queue ------------------------------------------ */

static void check_dead_letter(struct queue *dlq, const char *id, const char *last_error)
{
	struct delivery *d = recv1(dlq, T0 + 100000);
	assert_string_equal(d->msg->id, id);
	assert_string_equal(d->msg->text, "{\"n\":7}");
	assert_string_equal(d->msg->topic, "topic.x");
	assert_string_equal(attr(d->msg, "dlq_source"), "src");
	assert_string_equal(attr(d->msg, "dlq_receive_count"), "3");
	assert_string_equal(attr(d->msg, "dlq_last_error"), last_error);
	assert_int_equal(d->msg->receive_count, 3);
	assert_int_equal(d->receive_count, 1); /* a fresh start in the dead-letter queue */
	assert_int_equal(queue_ack(dlq, d), PLANT_OK);
	delivery_free(d);
}

static void test_dead_letter_after_nacks(void **state)
{
	(void)state;
	struct queue_settings s = settings(1000, 3), ds = settings(1000, 0);
	struct queue *q = mkqueue("src", &s), *dlq = mkqueue("src.dlq", &ds);
	queue_set_dead_letter(q, dlq);
	assert_int_equal(push(q, 7, T0), PLANT_OK);
	char id[MSG_ID_LEN + 1];
	uint64_t now = T0;
	for (uint32_t i = 1; i <= 3; i++) {
		struct delivery *d = recv1(q, now);
		assert_int_equal(d->receive_count, i);
		if (i == 1)
			memcpy(id, d->msg->id, sizeof(id));
		char reason[32];
		tu_fmt(reason, sizeof(reason), "failure %u", i);
		assert_int_equal(queue_nack(q, d, 0, reason, now), PLANT_OK);
		delivery_free(d);
		struct queue_stats st = stats(q, now);
		assert_int_equal(st.dead_lettered, i == 3 ? 1 : 0);
		assert_int_equal(st.depth, i == 3 ? 0 : 1);
		now += 10;
	}
	struct queue_stats st = stats(q, now);
	assert_int_equal(st.redelivered, 2);
	assert_int_equal(stats(dlq, now).depth, 1);
	json_t *j = queue_stats_json(q, now);
	assert_string_equal(json_string_value(json_object_get(j, "dead_letter")), "src.dlq");
	assert_int_equal(json_integer_value(json_object_get(j, "dead_lettered")), 1);
	json_decref(j);
	check_dead_letter(dlq, id, "failure 3");
	queue_destroy(q);
	queue_destroy(dlq);
}

static void test_dead_letter_after_timeouts(void **state)
{
	(void)state;
	struct queue_settings s = settings(1000, 3), ds = settings(1000, 0);
	struct queue *q = mkqueue("src", &s), *dlq = mkqueue("src.dlq", &ds);
	queue_set_dead_letter(q, dlq);
	assert_int_equal(push(q, 7, T0), PLANT_OK);
	char id[MSG_ID_LEN + 1];
	uint64_t now = T0;
	for (uint32_t i = 1; i <= 3; i++) {
		struct delivery *d = recv1(q, now);
		assert_int_equal(d->receive_count, i);
		memcpy(id, d->msg->id, sizeof(id));
		delivery_free(d);
		now += 1000;
		queue_tick(q, now);
	}
	struct queue_stats st = stats(q, now);
	assert_int_equal(st.depth, 0);
	assert_int_equal(st.dead_lettered, 1);
	assert_int_equal(st.redelivered, 2);
	check_dead_letter(dlq, id, "visibility timeout");
	queue_destroy(q);
	queue_destroy(dlq);
}

/* BUG (host/queue.c, queue_tick: `if (!e.last_error) e.last_error =
 * strdup("visibility timeout")`, and queue_receive never clears it): the
 * last error is the first one ever kept, not the last failure's. A message
 * nacked once with "boom" and then left to time out twice goes to the
 * dead-letter queue with dlq_last_error "boom"; expected "visibility
 * timeout", the cause of its last (3rd) failure. (A queue_note() made during
 * the final receive should still win over "visibility timeout".) This test
 * fails until that is fixed. */
static void test_dead_letter_last_error_is_latest(void **state)
{
	(void)state;
	struct queue_settings s = settings(1000, 3), ds = settings(1000, 0);
	struct queue *q = mkqueue("src", &s), *dlq = mkqueue("src.dlq", &ds);
	queue_set_dead_letter(q, dlq);
	assert_int_equal(push(q, 7, T0), PLANT_OK);
	struct delivery *d = recv1(q, T0);
	assert_int_equal(queue_nack(q, d, 0, "boom", T0), PLANT_OK);
	delivery_free(d);
	uint64_t now = T0;
	for (int i = 0; i < 2; i++) {
		d = recv1(q, now);
		delivery_free(d);
		now += 1000;
		queue_tick(q, now);
	}
	assert_int_equal(stats(q, now).dead_lettered, 1);
	d = recv1(dlq, now);
	char got[64];
	tu_fmt(got, sizeof(got), "%s", attr(d->msg, "dlq_last_error"));
	delivery_free(d);
	queue_destroy(q);
	queue_destroy(dlq);
	assert_string_equal(got, "visibility timeout");
}

/* Without a dead-letter queue, max_receive cannot drop anything. */
static void test_no_dead_letter_keeps_message(void **state)
{
	(void)state;
	struct queue_settings s = settings(1000, 3);
	struct queue *q = mkqueue("src", &s);
	assert_int_equal(push(q, 7, T0), PLANT_OK);
	uint64_t now = T0;
	for (uint32_t i = 1; i <= 8; i++) {
		struct delivery *d = recv1(q, now);
		assert_int_equal(d->receive_count, i);
		if (i % 2)
			assert_int_equal(queue_nack(q, d, 0, "no", now), PLANT_OK);
		delivery_free(d);
		now += 1000;
		queue_tick(q, now);
		assert_int_equal(stats(q, now).depth, 1);
	}
	struct queue_stats st = stats(q, now);
	assert_int_equal(st.dead_lettered, 0);
	assert_int_equal(st.visible, 1);
	queue_destroy(q);
}

/* A full dead-letter queue refuses: the message stays where it was. */
static void test_dead_letter_full(void **state)
{
	(void)state;
	struct queue_settings s = settings(1000, 1), ds = settings(1000, 0);
	ds.max_depth = 1;
	struct queue *q = mkqueue("src", &s), *dlq = mkqueue("src.dlq", &ds);
	queue_set_dead_letter(q, dlq);
	assert_int_equal(push(dlq, 99, T0), PLANT_OK); /* fills it */
	assert_int_equal(push(q, 7, T0), PLANT_OK);

	struct delivery *d = recv1(q, T0);
	assert_int_equal(queue_nack(q, d, 0, "boom", T0), PLANT_OK);
	delivery_free(d);
	struct queue_stats st = stats(q, T0);
	assert_int_equal(st.depth, 1);
	assert_int_equal(st.visible, 1);
	assert_int_equal(st.dead_lettered, 0);
	st = stats(dlq, T0);
	assert_int_equal(st.depth, 1);
	assert_int_equal(st.refused, 1);

	/* by timeout too */
	d = recv1(q, T0 + 1);
	assert_int_equal(body_n(d->msg), 7);
	assert_int_equal(d->receive_count, 2);
	delivery_free(d);
	queue_tick(q, T0 + 1001);
	assert_int_equal(stats(q, T0 + 1001).depth, 1);
	assert_int_equal(stats(dlq, T0 + 1001).refused, 2);

	/* room in the dead-letter queue: the next failure moves it */
	d = recv1(dlq, T0 + 1001);
	assert_int_equal(queue_ack(dlq, d), PLANT_OK);
	delivery_free(d);
	d = recv1(q, T0 + 1002);
	assert_int_equal(queue_nack(q, d, 0, "boom again", T0 + 1002), PLANT_OK);
	delivery_free(d);
	assert_int_equal(stats(q, T0 + 1002).depth, 0);
	assert_int_equal(stats(q, T0 + 1002).dead_lettered, 1);
	d = recv1(dlq, T0 + 1002);
	assert_int_equal(body_n(d->msg), 7);
	assert_string_equal(attr(d->msg, "dlq_last_error"), "boom again");
	assert_string_equal(attr(d->msg, "dlq_receive_count"), "3");
	delivery_free(d);
	queue_destroy(q);
	queue_destroy(dlq);
}

/* ---- retention ------------------------------------------------------------------------- */

static void test_retention(void **state)
{
	(void)state;
	struct queue_settings s = settings(30000, 5);
	s.retention_ms = 1000;
	struct queue *q = mkqueue("q", &s);
	assert_int_equal(push(q, 1, T0), PLANT_OK);
	assert_int_equal(push(q, 2, T0 + 600), PLANT_OK);

	assert_int_equal(queue_tick(q, T0 + 999), 1);
	assert_int_equal(stats(q, T0 + 999).depth, 2);
	assert_int_equal(stats(q, T0 + 999).expired, 0);
	/* by tick: the older goes, the younger stays */
	assert_int_equal(queue_tick(q, T0 + 1000), 600);
	struct queue_stats st = stats(q, T0 + 1000);
	assert_int_equal(st.depth, 1);
	assert_int_equal(st.expired, 1);
	assert_int_equal(st.oldest_ms, 400);

	/* by receive */
	assert_int_equal(push(q, 3, T0 + 1500), PLANT_OK);
	struct delivery *d = recv1(q, T0 + 1600);
	assert_int_equal(body_n(d->msg), 3);
	st = stats(q, T0 + 1600);
	assert_int_equal(st.expired, 2);
	assert_int_equal(st.depth, 1);
	assert_int_equal(st.in_flight, 1);
	assert_int_equal(queue_ack(q, d), PLANT_OK);
	delivery_free(d);
	queue_destroy(q);
}

/* ---- delay ---------------------------------------------------------------------------- */

static void test_delay_setting(void **state)
{
	(void)state;
	struct queue_settings s = settings(30000, 5);
	s.delay_ms = 500;
	struct queue *q = mkqueue("q", &s);
	assert_int_equal(push(q, 1, T0), PLANT_OK);
	struct queue_stats st = stats(q, T0);
	assert_int_equal(st.delayed, 1);
	assert_int_equal(st.visible, 0);
	assert_int_equal(st.depth, 1);
	assert_nothing(q, T0);
	assert_int_equal(queue_tick(q, T0 + 499), 1);
	assert_nothing(q, T0 + 499);
	queue_tick(q, T0 + 500);
	struct delivery *d = recv1(q, T0 + 500);
	assert_int_equal(body_n(d->msg), 1);
	assert_int_equal(d->receive_count, 1);
	delivery_free(d);
	queue_destroy(q);
}

static void test_delay_per_message(void **state)
{
	(void)state;
	struct queue_settings s = settings(30000, 5);
	struct queue *q = mkqueue("q", &s);
	assert_int_equal(push_ex(q, 1, NULL, 300, T0), PLANT_OK);
	assert_int_equal(push(q, 2, T0), PLANT_OK);
	/* the undelayed one is there at once */
	struct delivery *d = recv1(q, T0);
	assert_int_equal(body_n(d->msg), 2);
	delivery_free(d);
	assert_nothing(q, T0);
	assert_int_equal(queue_tick(q, T0 + 299), 1);
	assert_nothing(q, T0 + 299);
	queue_tick(q, T0 + 300);
	d = recv1(q, T0 + 300);
	assert_int_equal(body_n(d->msg), 1);
	delivery_free(d);
	queue_destroy(q);

	/* a message's delay adds to the queue's */
	s.delay_ms = 100;
	q = mkqueue("q2", &s);
	assert_int_equal(push_ex(q, 3, NULL, 200, T0), PLANT_OK);
	queue_tick(q, T0 + 299);
	assert_nothing(q, T0 + 299);
	queue_tick(q, T0 + 300);
	d = recv1(q, T0 + 300);
	assert_int_equal(body_n(d->msg), 3);
	delivery_free(d);
	queue_destroy(q);
}

/* ---- deduplication ------------------------------------------------------------------------ */

static void test_dedup(void **state)
{
	(void)state;
	struct queue_settings s = settings(30000, 5);
	s.dedup_window_ms = 1000;
	struct queue *q = mkqueue("q", &s);
	assert_int_equal(push_ex(q, 1, "k1", 0, T0), PLANT_OK);
	assert_int_equal(push_ex(q, 2, "k1", 0, T0 + 999), PLANT_OK); /* a duplicate */
	struct queue_stats st = stats(q, T0 + 999);
	assert_int_equal(st.depth, 1);
	assert_int_equal(st.enqueued, 1);
	assert_int_equal(st.deduplicated, 1);
	/* another key is another message */
	assert_int_equal(push_ex(q, 3, "k2", 0, T0 + 999), PLANT_OK);
	assert_int_equal(stats(q, T0 + 999).depth, 2);
	/* the window is over: accepted again */
	assert_int_equal(push_ex(q, 4, "k1", 0, T0 + 1000), PLANT_OK);
	st = stats(q, T0 + 1000);
	assert_int_equal(st.depth, 3);
	assert_int_equal(st.enqueued, 3);
	assert_int_equal(st.deduplicated, 1);
	/* without a key, never a duplicate */
	assert_int_equal(push(q, 5, T0 + 1000), PLANT_OK);
	assert_int_equal(push(q, 5, T0 + 1000), PLANT_OK);
	assert_int_equal(stats(q, T0 + 1000).depth, 5);

	struct delivery *d[8];
	assert_int_equal(queue_receive(q, d, 8, T0 + 1000), 5);
	int want[] = {1, 3, 4, 5, 5};
	for (int i = 0; i < 5; i++) {
		assert_int_equal(body_n(d[i]->msg), want[i]);
		delivery_free(d[i]);
	}
	queue_destroy(q);
}

/* ---- max_depth ---------------------------------------------------------------------------- */

static void test_max_depth(void **state)
{
	(void)state;
	struct queue_settings s = settings(30000, 5);
	s.max_depth = 2;
	struct queue *q = mkqueue("q", &s);
	assert_int_equal(queue_room(q), 2);
	assert_int_equal(push(q, 1, T0), PLANT_OK);
	assert_int_equal(queue_room(q), 1);
	assert_int_equal(push_ex(q, 2, NULL, 1000, T0), PLANT_OK); /* delayed ones count */
	assert_int_equal(queue_room(q), 0);
	assert_int_equal(push(q, 3, T0), PLANT_E_FULL);
	struct queue_stats st = stats(q, T0);
	assert_int_equal(st.refused, 1);
	assert_int_equal(st.depth, 2);
	assert_int_equal(st.enqueued, 2);

	/* in flight counts too */
	struct delivery *d = recv1(q, T0);
	assert_int_equal(queue_room(q), 0);
	assert_int_equal(push(q, 3, T0), PLANT_E_FULL);
	assert_int_equal(stats(q, T0).refused, 2);
	/* an ack makes room */
	assert_int_equal(queue_ack(q, d), PLANT_OK);
	delivery_free(d);
	assert_int_equal(queue_room(q), 1);
	assert_int_equal(push(q, 3, T0), PLANT_OK);
	assert_int_equal(queue_room(q), 0);
	queue_destroy(q);

	s.max_depth = 0;
	q = mkqueue("unbounded", &s);
	assert_int_equal(queue_room(q), UINT64_MAX);
	for (int i = 0; i < 300; i++)
		assert_int_equal(push(q, i, T0), PLANT_OK);
	assert_int_equal(stats(q, T0).depth, 300);
	assert_int_equal(queue_room(q), UINT64_MAX);
	queue_destroy(q);
}

/* All or nothing: one full queue keeps the message from every queue. */
static void test_push_all(void **state)
{
	(void)state;
	struct queue_settings s = settings(30000, 5);
	s.max_depth = 1;
	struct queue *a = mkqueue("a", &s), *b = mkqueue("b", &s);
	assert_int_equal(push(a, 1, T0), PLANT_OK); /* a is full */

	struct plant_msg *m = mkmsg(2);
	struct queue *both[] = {a, b}, *rev[] = {b, a};
	assert_int_equal(queue_push_all(both, 2, m, NULL, 0, T0), PLANT_E_FULL);
	assert_int_equal(queue_push_all(rev, 2, m, NULL, 0, T0), PLANT_E_FULL);
	assert_int_equal(atomic_load(&m->refs), 1); /* nobody kept a reference */
	assert_int_equal(stats(b, T0).depth, 0);
	assert_int_equal(stats(b, T0).enqueued, 0);
	assert_int_equal(stats(a, T0).depth, 1);
	assert_int_equal(stats(a, T0).refused, 2);

	/* with room in both, both get it: the same message */
	struct delivery *d = recv1(a, T0);
	assert_int_equal(queue_ack(a, d), PLANT_OK);
	delivery_free(d);
	assert_int_equal(queue_push_all(both, 2, m, NULL, 0, T0), PLANT_OK);
	assert_int_equal(atomic_load(&m->refs), 3);
	struct delivery *da = recv1(a, T0), *db = recv1(b, T0);
	assert_ptr_equal(da->msg, m);
	assert_ptr_equal(db->msg, m);
	delivery_free(da);
	delivery_free(db);
	msg_unref(m);
	queue_destroy(a);
	queue_destroy(b);
}

/* ---- a stale receipt ------------------------------------------------------------------- */

static void test_stale_receipt(void **state)
{
	(void)state;
	struct queue_settings s = settings(1000, 5);
	struct queue *q = mkqueue("q", &s);
	assert_int_equal(push(q, 1, T0), PLANT_OK);
	struct delivery *old = recv1(q, T0);
	queue_tick(q, T0 + 1000);
	struct delivery *cur = recv1(q, T0 + 1000);
	assert_int_equal(cur->receive_count, 2);
	assert_true(cur->receipt != old->receipt);

	/* the first consumer is too late: its receipt names nothing now */
	assert_int_equal(queue_ack(q, old), PLANT_E_NOTFOUND);
	assert_int_equal(old->settled, 0);
	assert_int_equal(queue_nack(q, old, 0, "late", T0 + 1001), PLANT_E_NOTFOUND);
	queue_note(q, old, "late");
	struct queue_stats st = stats(q, T0 + 1001);
	assert_int_equal(st.in_flight, 1);
	assert_int_equal(st.depth, 1);
	assert_int_equal(st.acked, 0);
	assert_nothing(q, T0 + 1001);

	/* the current receipt still works */
	assert_int_equal(queue_ack(q, cur), PLANT_OK);
	assert_int_equal(stats(q, T0 + 1001).depth, 0);
	delivery_free(old);
	delivery_free(cur);
	queue_destroy(q);
}

/* ---- stats and peek ----------------------------------------------------------------------- */

static void test_stats(void **state)
{
	(void)state;
	struct queue_settings s = settings(30000, 5);
	struct queue *q = mkqueue("q", &s);
	struct queue_stats st = stats(q, T0);
	assert_int_equal(st.depth, 0);
	assert_int_equal(st.oldest_ms, 0);

	assert_int_equal(push(q, 1, T0), PLANT_OK);
	assert_int_equal(push_ex(q, 2, NULL, 1000, T0 + 100), PLANT_OK);
	assert_int_equal(push(q, 3, T0 + 200), PLANT_OK);
	assert_int_equal(push(q, 4, T0 + 250), PLANT_OK);
	struct delivery *d = recv1(q, T0 + 300);
	assert_int_equal(body_n(d->msg), 1);

	st = stats(q, T0 + 500);
	assert_int_equal(st.depth, 4);
	assert_int_equal(st.visible, 2);
	assert_int_equal(st.delayed, 1);
	assert_int_equal(st.in_flight, 1);
	assert_int_equal(st.oldest_ms, 500); /* the one in flight, enqueued at T0 */
	assert_int_equal(st.enqueued, 4);

	json_t *j = queue_stats_json(q, T0 + 500);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "name")), "q");
	assert_int_equal(json_integer_value(json_object_get(j, "depth")), 4);
	assert_int_equal(json_integer_value(json_object_get(j, "in_flight")), 1);
	assert_int_equal(json_integer_value(json_object_get(j, "delayed")), 1);
	assert_int_equal(json_integer_value(json_object_get(j, "oldest_age_ms")), 500);
	json_t *dl = json_object_get(j, "dead_letter"); /* none: null or absent */
	assert_true(dl == NULL || json_is_null(dl));
	json_decref(j);

	assert_int_equal(queue_ack(q, d), PLANT_OK);
	delivery_free(d);
	/* now the delayed one (T0 + 100) is the oldest */
	st = stats(q, T0 + 500);
	assert_int_equal(st.oldest_ms, 400);
	assert_int_equal(st.depth, 3);
	queue_destroy(q);
}

static void test_peek(void **state)
{
	(void)state;
	struct queue_settings s = settings(30000, 5);
	struct queue *q = mkqueue("q", &s);
	for (int i = 1; i <= 3; i++)
		assert_int_equal(push(q, i, T0), PLANT_OK);
	json_t *arr = queue_peek(q, 2);
	assert_true(json_is_array(arr));
	assert_int_equal(json_array_size(arr), 2);
	for (size_t i = 0; i < 2; i++) {
		json_t *e = json_array_get(arr, i);
		assert_string_equal(json_string_value(json_object_get(e, "topic")), "topic.x");
		assert_int_equal(json_integer_value(json_object_get(e, "receive_count")), 0);
		assert_int_equal(
			json_integer_value(json_object_get(json_object_get(e, "body"), "n")),
			(json_int_t)i + 1);
		assert_int_equal(strlen(json_string_value(json_object_get(e, "id"))), MSG_ID_LEN);
	}
	json_decref(arr);
	/* nothing was received */
	struct queue_stats st = stats(q, T0);
	assert_int_equal(st.visible, 3);
	assert_int_equal(st.in_flight, 0);
	struct delivery *d = recv1(q, T0);
	assert_int_equal(body_n(d->msg), 1);
	assert_int_equal(d->receive_count, 1);

	/* in-flight messages are not shown */
	arr = queue_peek(q, 10);
	assert_int_equal(json_array_size(arr), 2);
	assert_int_equal(json_integer_value(json_object_get(
				 json_object_get(json_array_get(arr, 0), "body"), "n")),
			 2);
	json_decref(arr);
	delivery_free(d);
	queue_destroy(q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_push_receive_ack),
		cmocka_unit_test(test_visibility_timeout),
		cmocka_unit_test(test_redelivery_goes_first),
		cmocka_unit_test(test_redelivery_keeps_order),
		cmocka_unit_test(test_nack_now),
		cmocka_unit_test(test_nack_delay),
		cmocka_unit_test(test_dead_letter_after_nacks),
		cmocka_unit_test(test_dead_letter_after_timeouts),
		cmocka_unit_test(test_dead_letter_last_error_is_latest),
		cmocka_unit_test(test_no_dead_letter_keeps_message),
		cmocka_unit_test(test_dead_letter_full),
		cmocka_unit_test(test_retention),
		cmocka_unit_test(test_delay_setting),
		cmocka_unit_test(test_delay_per_message),
		cmocka_unit_test(test_dedup),
		cmocka_unit_test(test_max_depth),
		cmocka_unit_test(test_push_all),
		cmocka_unit_test(test_stale_receipt),
		cmocka_unit_test(test_stats),
		cmocka_unit_test(test_peek),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
