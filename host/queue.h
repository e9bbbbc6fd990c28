/* SQS-style queues: a message stays until a consumer acknowledges it.
 *
 * receive -> in flight until `visibility_timeout` -> ack deletes it; nack or
 * a timeout makes it visible again with receive_count + 1; a message
 * received `max_receive` times and not acked moves to the dead-letter queue
 * with its history. `retention` expires old messages, `max_depth` bounds the
 * queue (a full queue refuses, it never drops), `delay` holds new messages
 * back, and a deduplication key is accepted once per `dedup_window`.
 *
 * The queue is a data structure with its own lock; time is always passed in
 * (`now`, ms), so that tests drive a clock of their own. */
#ifndef PLANTD_QUEUE_H
#define PLANTD_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "msg.h"

struct plant_store_backend;

struct queue_settings {
	uint64_t visibility_timeout_ms; /* default 30 s */
	uint32_t max_receive;		/* default 5; 0 = unlimited */
	uint64_t retention_ms;		/* default 4 days; 0 = forever */
	uint64_t max_depth;		/* default 100000; 0 = unbounded */
	uint64_t delay_ms;		/* default 0 */
	uint64_t dedup_window_ms;	/* default 5 min */
	bool durable;			/* kept on `store` */
	char store[128];
};

void queue_settings_default(struct queue_settings *s);

/* One message as a consumer holds it: the shared message and this
 * delivery's receipt and count. Its first field matches struct plant_msg's
 * so that the SDK's message functions take either. */
struct delivery {
	uint32_t kind; /* MSG_KIND_DELIVERY */
	uint32_t receive_count;
	struct plant_msg *msg; /* a reference the delivery owns */
	struct queue *queue;
	uint64_t receipt;
	uint64_t enq_at;
	int settled; /* 0, or 1 once acked or nacked */
	int persist; /* a durable message read back after a stop: its receive
		      * count is written before a handler sees it */
	int held;    /* a plugin's handle from hold(): freed when settled */
};

struct queue_stats {
	uint64_t depth; /* visible + delayed + in flight */
	uint64_t visible;
	uint64_t delayed;
	uint64_t in_flight;
	uint64_t oldest_ms; /* age of the oldest message, 0 when empty */
	uint64_t enqueued, acked, redelivered, dead_lettered, expired, deduplicated, refused;
};

struct queue;

int queue_create(const char *name, const struct queue_settings *s, struct queue **out);
void queue_destroy(struct queue *q);
const char *queue_name(const struct queue *q);
const struct queue_settings *queue_settings_get(const struct queue *q);

/* New settings for a live queue (a reload); its messages stay. */
void queue_set_settings(struct queue *q, const struct queue_settings *s);
/* Make the queue durable on a store: every message is written before the
 * publish reports success, deleted when acked (at queue_flush), and its
 * receive count rewritten when it comes back. */
void queue_set_store(struct queue *q, const struct plant_store_backend *be, void *store);
bool queue_has_store(struct queue *q);
/* Read back a durable queue's messages after a start; those that were in
 * flight at a crash are visible again. */
int queue_load(struct queue *q, uint64_t now, size_t *loaded_out, char *err, size_t errlen);
/* Before a handler sees them: write the receive counts of deliveries
 * marked `persist` (one batch), so that a message that kills the process
 * while it is handled reaches max_receive across restarts and is then
 * dead-lettered instead of crashing plantd forever. May block. */
void queue_persist_receives(struct queue *q, struct delivery **ds, size_t n, uint64_t now);
/* Write out the deletes of acked messages (one batch). Any thread. */
void queue_flush(struct queue *q, uint64_t now);

/* The dead-letter queue, or NULL. */
void queue_set_dead_letter(struct queue *q, struct queue *dlq);

/* Enqueue `msg` (a new reference is taken). `dedup_key` may be NULL;
 * `delay_ms` adds to the queue's delay. PLANT_E_FULL when the queue is at
 * max_depth; PLANT_OK without enqueueing for a duplicate key. */
int queue_push(struct queue *q, struct plant_msg *msg, const char *dedup_key, uint64_t delay_ms,
	       uint64_t now);

/* All-or-nothing admission for a fan-out: lock every queue of `qs` (in
 * address order), check room for one message in each, push to all or to
 * none. PLANT_E_FULL names nothing; the caller knows the topic. */
int queue_push_all(struct queue **qs, size_t n, struct plant_msg *msg, const char *dedup_key,
		   uint64_t delay_ms, uint64_t now);

/* One message of a batch and the queues it goes to (the caller's array;
 * it is reordered). */
struct queue_push {
	struct queue **qs;
	size_t n_qs;
	struct plant_msg *msg; /* a reference is taken per queue */
	const char *dedup_key;
	uint64_t delay_ms;
	uint64_t *seqs; /* the queue's own use */
};

/* Publish a batch: messages are admitted in order until one does not fit
 * (PLANT_E_FULL: those before it are published, it and the rest are not;
 * with `all`, none is);
 * the durable records of all of them are written in one store batch per
 * store (a failed write publishes none: PLANT_E_IO); then all become
 * visible together. *done_out counts the messages published. */
int queue_push_batch(struct queue_push *items, size_t n, uint64_t now, bool all, size_t *done_out);

/* Receive up to `max` visible messages, making them in flight until
 * now + visibility_timeout. Fills `out` with new deliveries (the caller
 * frees each with delivery_free after settling). Returns the count. */
size_t queue_receive(struct queue *q, struct delivery **out, size_t max, uint64_t now);
/* The same, marking the messages as held by `holder` (a consumer). */
size_t queue_receive_for(struct queue *q, const void *holder, struct delivery **out, size_t max,
			 uint64_t now);
/* Everything `holder` has in flight comes back now (it went away). */
void queue_release_holder(struct queue *q, const void *holder, uint64_t now);

/* Delete a received message. PLANT_E_NOTFOUND when its receipt is stale
 * (it timed out and was received again). */
int queue_ack(struct queue *q, struct delivery *d);
/* Make a received message visible again after `delay_ms`; `reason` (may be
 * NULL) is kept as its last error. */
int queue_nack(struct queue *q, struct delivery *d, uint64_t delay_ms, const char *reason,
	       uint64_t now);
/* Give back a delivery no consumer saw (its consumer went away before the
 * batch ran): visible again at once, and the receive does not count. */
int queue_return(struct queue *q, struct delivery *d, uint64_t now);
/* Keep `reason` as the last error of a message left in flight. */
void queue_note(struct queue *q, struct delivery *d, const char *reason);
void delivery_free(struct delivery *d);

/* Settle a received message as unprocessable: to the dead-letter queue now,
 * with `reason` kept as its "dlq_reason" attribute. PLANT_E_UNSUPPORTED
 * when `q` has no dead-letter queue, PLANT_E_FULL when it is full (the
 * message stays in flight in both cases), PLANT_E_NOTFOUND when the receipt
 * is stale. */
int queue_reject(struct queue *q, struct delivery *d, const char *reason, uint64_t now);

/* Time passes: in-flight messages past their deadline become visible again
 * (or go to the dead-letter queue), delayed ones that are due become
 * visible, expired ones go. Returns the ms until the next thing is due
 * (UINT64_MAX when nothing is). */
uint64_t queue_tick(struct queue *q, uint64_t now);

/* How many more messages fit (UINT64_MAX when unbounded). */
uint64_t queue_room(struct queue *q);
size_t queue_visible(struct queue *q);
void queue_stats_get(struct queue *q, uint64_t now, struct queue_stats *out);
json_t *queue_stats_json(struct queue *q, uint64_t now); /* [new] */

/* Up to `max` visible messages, oldest first, without receiving them: a
 * JSON array of {id, topic, ts, receive_count, body}. [new] */
json_t *queue_peek(struct queue *q, size_t max);

#endif
