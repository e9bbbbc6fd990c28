/* The bus: topics with fan-out to subscribers (glob patterns allowed). */
#ifndef PLANTD_BUS_H
#define PLANTD_BUS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plantd/plantd.h"
#include "executor.h"
#include "msg.h"

struct bus;
struct queue;
struct queue_settings;

/* How the bus enters an instance to run a handler, on a worker, under the
 * instance's actor. `actor_ctx` is what the actor's dispatch received (NULL
 * when the task was dropped). Returns the handler's status, or -1 when the
 * instance cannot take messages now. */
typedef int (*bus_invoke_fn)(void *actor_ctx, plant_msg_handler fn, const plant_msg *const *msgs,
			     size_t n, void *user);

struct bus_sub {
	uint64_t id;
	char *pattern;
	void *owner;	     /* the instance; compared, never dereferenced */
	struct actor *actor; /* where deliveries go */
	plant_msg_handler fn;
	void *user;
	atomic_uint refs;
	atomic_bool dead; /* unsubscribed: pending deliveries are dropped */
};

/* Can the instance take messages now? (May be NULL: always.) */
typedef bool (*bus_ready_fn)(void *actor_ctx);

int bus_create(struct bus **out);
void bus_set_invoke(struct bus *bus, bus_invoke_fn invoke, bus_ready_fn ready);
void bus_destroy(struct bus *bus);

/* Topic names: 1..200 characters of [A-Za-z0-9_.-], no empty segment. */
bool bus_topic_valid(const char *topic);
/* Patterns additionally allow '*' (one segment or more) and '?'. */
bool bus_pattern_valid(const char *pattern);
bool bus_glob_match(const char *pattern, const char *topic);

int bus_subscribe(struct bus *bus, const char *pattern, void *owner, struct actor *actor,
		  plant_msg_handler fn, void *user, uint64_t *id_out);
int bus_unsubscribe(struct bus *bus, void *owner, uint64_t id);
/* Removes the owner's subscriptions and consumers; what a consumer holds
 * comes back to its queue when its batch finishes or is dropped. */
void bus_unsubscribe_owner(struct bus *bus, void *owner);

/* Publish `msg` ([stolen]) to every matching subscriber. */
int bus_publish(struct bus *bus, struct plant_msg *msg);
/* ... with a deduplication key and a delay for the queues. A queue that is
 * full refuses the whole publish: PLANT_E_FULL, delivered nowhere. */
int bus_publish_ex(struct bus *bus, struct plant_msg *msg, const char *dedup_key,
		   uint64_t delay_ms);

/* Publish `n` messages ([stolen], all of them) in one go: durable queues
 * write them in one store batch. In order until one fails, or with `all`
 * every one or none; *done_out counts those published. `dedup_keys` and
 * `delays` may be NULL. */
int bus_publish_batch(struct bus *bus, struct plant_msg **msgs, const char *const *dedup_keys,
		      const uint64_t *delays, size_t n, bool all, size_t *done_out);

/* ---- queues ---- */

/* Parse queue settings as in config ({"subscribe": [...], "visibility_timeout":
 * "30s", "max_receive": 5, "dead_letter": "x", "retention": "4d", "max_depth":
 * N, "delay": 0, "dedup_window": "5m"}). On error *bad_key names the key. */
int bus_queue_parse(const json_t *settings, struct queue_settings *out, const char **bad_key,
		    char *err, size_t errlen);
/* Create a queue, or update the settings and subscriptions of one that
 * exists. Its dead-letter queue is linked by bus_link_dead_letters(). */
int bus_queue_declare(struct bus *bus, const char *name, const json_t *settings, char *err,
		      size_t errlen);
/* Link every queue's `dead_letter`; fails on a missing queue or a cycle. */
int bus_link_dead_letters(struct bus *bus, char *err, size_t errlen);
struct queue *bus_queue_find(struct bus *bus, const char *name);

int bus_consume(struct bus *bus, const char *queue, void *owner, struct actor *actor,
		plant_msg_handler fn, void *user, uint32_t max_batch, uint64_t *id_out);
/* Settle a delivery made to a consumer. */
int bus_ack(const plant_msg *msg);
int bus_nack(const plant_msg *msg, uint64_t delay_ms, const char *reason);
/* To the dead-letter queue now (queue_reject). */
int bus_reject(const plant_msg *msg, const char *reason);
/* A handle on an unsettled delivery that outlives its batch (the plugin
 * settles it later); NULL when `msg` is not one. */
const plant_msg *bus_hold(const plant_msg *msg);
/* Free a held handle without settling it. */
void bus_release(const plant_msg *held);

/* Move the messages waiting in dead-letter queue `dlq` now back to the
 * queue each came from (its "dlq_source" attribute). Those that cannot go (no source, the
 * source full or gone) stay, counted in *kept_out. PLANT_E_NOTFOUND for an
 * unknown queue. May block on a durable queue's store: run it on a worker. */
int bus_redrive(struct bus *bus, const char *dlq, size_t *moved_out, size_t *kept_out);

/* Time passes for every queue (visibility timeouts, delays, retention) and
 * waiting messages go to idle consumers. Returns ms until the next due. */
uint64_t bus_tick(struct bus *bus, uint64_t now);

/* Write out what durable queues owe their stores (acked messages). */
void bus_flush_all(struct bus *bus);

/* {"topics": {...}, "queues": {...}}: [new]. */
json_t *bus_stats_json(struct bus *bus);

void bus_sub_unref(struct bus_sub *sub);

/* Per-topic published counts, as {topic: count}: [new]. */
json_t *bus_topics_json(struct bus *bus);

#endif
