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

int bus_create(struct bus **out);
void bus_destroy(struct bus *bus);

/* Topic names: 1..200 characters of [A-Za-z0-9_.-], no empty segment. */
bool bus_topic_valid(const char *topic);
/* Patterns additionally allow '*' (one segment or more) and '?'. */
bool bus_pattern_valid(const char *pattern);
bool bus_glob_match(const char *pattern, const char *topic);

int bus_subscribe(struct bus *bus, const char *pattern, void *owner, struct actor *actor,
		  plant_msg_handler fn, void *user, uint64_t *id_out);
int bus_unsubscribe(struct bus *bus, void *owner, uint64_t id);
void bus_unsubscribe_owner(struct bus *bus, void *owner);

/* Publish `msg` ([stolen]) to every matching subscriber. */
int bus_publish(struct bus *bus, struct plant_msg *msg);

void bus_sub_unref(struct bus_sub *sub);

/* Per-topic published counts, as {topic: count}: [new]. */
json_t *bus_topics_json(struct bus *bus);

#endif
