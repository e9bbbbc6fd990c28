#include "msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "queue.h"

static _Atomic uint64_t id_seq;

void msg_make_id(uint64_t ts, char out[MSG_ID_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	uint64_t seq = atomic_fetch_add_explicit(&id_seq, 1, memory_order_relaxed);
	/* %016llx%08llx, without printf on the path of every publish */
	for (int i = 15; i >= 0; i--, ts >>= 4)
		out[i] = hex[ts & 0xf];
	for (int i = 23; i >= 16; i--, seq >>= 4)
		out[i] = hex[seq & 0xf];
	out[MSG_ID_LEN] = '\0';
}

static struct plant_msg *msg_alloc(const char *topic, const char *text, size_t len)
{
	size_t tlen = strlen(topic);
	struct plant_msg *m = malloc(sizeof *m + len + 1 + tlen + 1);
	if (!m)
		return NULL;
	m->kind = MSG_KIND_MSG;
	atomic_init(&m->refs, 1);
	m->receive_count = 0;
	m->ts = clock_now_ms();
	msg_make_id(m->ts, m->id);
	m->attrs = NULL;
	atomic_init(&m->tree, NULL);
	m->len = len;
	memcpy(m->text, text, len);
	m->text[len] = '\0';
	/* the topic lives after the body, in the same allocation */
	m->topic = m->text + len + 1;
	memcpy(m->topic, topic, tlen + 1);
	return m;
}

struct plant_msg *msg_new_text(const char *topic, const char *text, size_t len)
{
	return msg_alloc(topic, text, len);
}

struct plant_msg *msg_new_json(const char *topic, json_t *body)
{
	if (!body)
		return NULL;
	char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!text) {
		json_decref(body);
		return NULL;
	}
	struct plant_msg *m = msg_alloc(topic, text, strlen(text));
	free(text);
	/* The publisher's tree is not kept: a message may wait in deep queues,
	 * where text costs a fifth of a tree (DESIGN.md, principle 4). A reader
	 * that wants a tree parses it once, for every reader. */
	json_decref(body);
	return m;
}

struct plant_msg *msg_copy(const struct plant_msg *msg, json_t *attrs, uint32_t receive_count)
{
	struct plant_msg *m = msg_alloc(msg->topic, msg->text, msg->len);
	if (!m) {
		json_decref(attrs);
		return NULL;
	}
	m->ts = msg->ts;
	memcpy(m->id, msg->id, sizeof m->id);
	m->attrs = attrs;
	m->receive_count = receive_count;
	return m;
}

const struct plant_msg *msg_resolve(const struct plant_msg *m)
{
	if (m && m->kind == MSG_KIND_DELIVERY)
		return ((const struct delivery *)(const void *)m)->msg;
	return m;
}

struct plant_msg *msg_ref(struct plant_msg *msg)
{
	atomic_fetch_add_explicit(&msg->refs, 1, memory_order_relaxed);
	return msg;
}

void msg_unref(struct plant_msg *msg)
{
	if (!msg)
		return;
	if (atomic_fetch_sub_explicit(&msg->refs, 1, memory_order_acq_rel) != 1)
		return;
	json_decref(atomic_load(&msg->tree));
	json_decref(msg->attrs);
	free(msg);
}

const json_t *msg_tree(const struct plant_msg *cmsg)
{
	struct plant_msg *msg = (struct plant_msg *)cmsg;
	json_t *t = atomic_load_explicit(&msg->tree, memory_order_acquire);
	if (t)
		return t;
	t = json_loadb(msg->text, msg->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	if (!t)
		return NULL;
	json_t *expected = NULL;
	if (!atomic_compare_exchange_strong(&msg->tree, &expected, t)) {
		/* another reader won the race; use its tree */
		json_decref(t);
		return expected;
	}
	return t;
}
