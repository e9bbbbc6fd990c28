/* Bus messages: immutable, reference counted, shared by every subscriber.
 * The body is kept as compact JSON text; a tree is parsed on first demand
 * and cached (DESIGN.md, principle 4). */
#ifndef PLANTD_MSG_H
#define PLANTD_MSG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#define MSG_ID_LEN 24 /* 16 hex digits of ms-time and 8 of sequence */

/* The first field of what a plugin sees as a plant_msg: a message, or a
 * queue delivery that points at one (queue.h). */
#define MSG_KIND_MSG	  0x6d736731u
#define MSG_KIND_DELIVERY 0x646c7631u

struct plant_msg {
	uint32_t kind; /* MSG_KIND_MSG */
	atomic_uint refs;
	uint32_t receive_count;
	uint64_t ts; /* ms since the epoch */
	char id[MSG_ID_LEN + 1];
	char *topic;
	json_t *attrs; /* object of strings, or NULL */
	_Atomic(json_t *) tree;
	size_t len;
	char text[]; /* compact JSON, NUL-terminated */
};

/* A new message with one reference. `body` is [stolen]: serialised once to
 * compact text, then released. NULL on allocation failure or a body that
 * cannot be serialised. */
struct plant_msg *msg_new_json(const char *topic, json_t *body);
/* From JSON text that was already checked (or will be by the caller). */
struct plant_msg *msg_new_text(const char *topic, const char *text, size_t len);

/* The same message (id, topic, time, body) with other attributes
 * ([stolen]) and a receive count: for dead-lettering with history. */
struct plant_msg *msg_copy(const struct plant_msg *msg, json_t *attrs, uint32_t receive_count);
/* The message behind what a plugin holds: itself, or a delivery's. */
const struct plant_msg *msg_resolve(const struct plant_msg *m);

struct plant_msg *msg_ref(struct plant_msg *msg);
void msg_unref(struct plant_msg *msg);
/* The parsed body, cached: [borrowed]. */
const json_t *msg_tree(const struct plant_msg *msg);

/* A unique, time-ordered id: 16 hex digits of ms time, 8 of a counter. */
void msg_make_id(uint64_t ts, char out[MSG_ID_LEN + 1]);

#endif
