#include "bus.h"

#include <fnmatch.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "config.h"
#include "queue.h"

#define TOPIC_MAX     200
#define BATCH_DEFAULT 256

struct bus_queue;

/* A plugin instance receiving from a queue. One batch at a time: while one
 * is out (`busy`), the next waits in the queue, visible to other
 * consumers. */
struct consumer {
	uint64_t id;
	void *owner;
	struct actor *actor;
	plant_msg_handler fn;
	void *user;
	uint32_t max_batch;
	struct bus_queue *bq;
	struct bus *bus;
	atomic_bool busy;
	atomic_bool dead;
	atomic_uint refs;
};

struct bus_queue {
	struct queue *q;
	atomic_int idle;   /* consumers without a batch out: pump() has work */
	char *dead_letter; /* its name, linked later */
	json_t *patterns;  /* array of strings */
	pthread_mutex_t cons_lock;
	struct consumer **cons;
	size_t n_cons, rr;
};

/* A batch handed to a consumer's actor. */
struct batch {
	struct consumer *c;
	size_t n;
	struct delivery *d[];
};

/* A topic seen by the bus: its counters and the subscriptions that match
 * it, worked out once per change of the subscription set. */
struct topic {
	char *name;
	_Atomic uint64_t published;
	uint64_t gen; /* the subscription generation `subs` was made for */
	struct bus_sub **subs;
	size_t n_subs;
	struct bus_queue **queues; /* queues subscribed to it */
	size_t n_queues;
	struct topic *next; /* hash chain */
};

struct bus {
	pthread_rwlock_t lock;
	struct bus_sub **subs;
	size_t n_subs, cap_subs;
	uint64_t gen;
	uint64_t next_id;
	struct topic **buckets;
	size_t n_buckets, n_topics;
	struct bus_queue **queues;
	size_t n_queues;
	bus_invoke_fn invoke;
	bus_ready_fn ready;
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

int bus_create(struct bus **out)
{
	struct bus *b = calloc(1, sizeof *b);
	if (!b)
		return PLANT_E_NOMEM;
	pthread_rwlock_init(&b->lock, NULL);
	b->n_buckets = 64;
	b->buckets = calloc(b->n_buckets, sizeof *b->buckets);
	b->next_id = 1;
	b->gen = 1;
	*out = b;
	return PLANT_OK;
}

void bus_set_invoke(struct bus *b, bus_invoke_fn invoke, bus_ready_fn ready)
{
	b->invoke = invoke;
	b->ready = ready;
}

static void consumer_unref(struct consumer *c)
{
	if (atomic_fetch_sub(&c->refs, 1) == 1)
		free(c);
}

void bus_sub_unref(struct bus_sub *sub)
{
	if (atomic_fetch_sub(&sub->refs, 1) != 1)
		return;
	free(sub->pattern);
	free(sub);
}

void bus_destroy(struct bus *b)
{
	if (!b)
		return;
	for (size_t i = 0; i < b->n_subs; i++) {
		atomic_store(&b->subs[i]->dead, true);
		bus_sub_unref(b->subs[i]);
	}
	free(b->subs);
	for (size_t i = 0; i < b->n_queues; i++) {
		struct bus_queue *bq = b->queues[i];
		for (size_t k = 0; k < bq->n_cons; k++) {
			atomic_store(&bq->cons[k]->dead, true);
			consumer_unref(bq->cons[k]);
		}
		free(bq->cons);
		queue_destroy(bq->q);
		free(bq->dead_letter);
		json_decref(bq->patterns);
		pthread_mutex_destroy(&bq->cons_lock);
		free(bq);
	}
	free(b->queues);
	for (size_t i = 0; i < b->n_buckets; i++) {
		struct topic *t = b->buckets[i];
		while (t) {
			struct topic *next = t->next;
			free(t->name);
			free(t->subs);
			free(t->queues);
			free(t);
			t = next;
		}
	}
	free(b->buckets);
	pthread_rwlock_destroy(&b->lock);
	free(b);
}

static bool name_valid(const char *s, bool pattern)
{
	size_t len = strlen(s);
	if (len == 0 || len > TOPIC_MAX || s[0] == '.' || s[len - 1] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '_' || c == '-')
			continue;
		if (c == '.' && s[i + 1] != '.')
			continue;
		if (pattern && (c == '*' || c == '?'))
			continue;
		return false;
	}
	return true;
}

bool bus_topic_valid(const char *topic)
{
	return topic && name_valid(topic, false);
}

bool bus_pattern_valid(const char *pattern)
{
	return pattern && name_valid(pattern, true);
}

bool bus_glob_match(const char *pattern, const char *topic)
{
	return fnmatch(pattern, topic, 0) == 0;
}

int bus_subscribe(struct bus *b, const char *pattern, void *owner, struct actor *actor,
		  plant_msg_handler fn, void *user, uint64_t *id_out)
{
	if (!bus_pattern_valid(pattern) || !fn)
		return PLANT_E_INVALID;
	struct bus_sub *s = calloc(1, sizeof *s);
	if (!s)
		return PLANT_E_NOMEM;
	s->pattern = strdup(pattern);
	s->owner = owner;
	s->actor = actor;
	s->fn = fn;
	s->user = user;
	atomic_init(&s->refs, 1);
	pthread_rwlock_wrlock(&b->lock);
	if (b->n_subs == b->cap_subs) {
		size_t cap = b->cap_subs ? b->cap_subs * 2 : 16;
		struct bus_sub **v = realloc(b->subs, cap * sizeof *v);
		if (!v) {
			pthread_rwlock_unlock(&b->lock);
			bus_sub_unref(s);
			return PLANT_E_NOMEM;
		}
		b->subs = v;
		b->cap_subs = cap;
	}
	s->id = b->next_id++;
	b->subs[b->n_subs++] = s;
	b->gen++;
	pthread_rwlock_unlock(&b->lock);
	if (id_out)
		*id_out = s->id;
	return PLANT_OK;
}

/* Remove subscriptions for which `pick` holds; with the write lock held. */
static size_t remove_subs(struct bus *b, void *owner, uint64_t id)
{
	size_t removed = 0, j = 0;
	for (size_t i = 0; i < b->n_subs; i++) {
		struct bus_sub *s = b->subs[i];
		if (s->owner == owner && (id == 0 || s->id == id)) {
			atomic_store(&s->dead, true);
			bus_sub_unref(s);
			removed++;
		} else {
			b->subs[j++] = s;
		}
	}
	b->n_subs = j;
	for (size_t i = 0; i < b->n_queues; i++) {
		struct bus_queue *bq = b->queues[i];
		pthread_mutex_lock(&bq->cons_lock);
		size_t k = 0;
		for (size_t x = 0; x < bq->n_cons; x++) {
			struct consumer *c = bq->cons[x];
			if (c->owner == owner && (id == 0 || c->id == id)) {
				atomic_store(&c->dead, true);
				/* what it held and settled no more comes back now;
				 * a batch still running settles its own */
				if (!atomic_load(&c->busy))
					queue_release_holder(bq->q, c, clock_now_ms());
				consumer_unref(c);
				removed++;
			} else {
				bq->cons[k++] = c;
			}
		}
		bq->n_cons = k;
		pthread_mutex_unlock(&bq->cons_lock);
	}
	if (removed)
		b->gen++;
	return removed;
}

int bus_unsubscribe(struct bus *b, void *owner, uint64_t id)
{
	if (id == 0)
		return PLANT_E_NOTFOUND;
	pthread_rwlock_wrlock(&b->lock);
	size_t n = remove_subs(b, owner, id);
	pthread_rwlock_unlock(&b->lock);
	return n ? PLANT_OK : PLANT_E_NOTFOUND;
}

void bus_unsubscribe_owner(struct bus *b, void *owner)
{
	pthread_rwlock_wrlock(&b->lock);
	remove_subs(b, owner, 0);
	pthread_rwlock_unlock(&b->lock);
}

static struct topic *topic_find(struct bus *b, const char *name, uint64_t h)
{
	for (struct topic *t = b->buckets[h & (b->n_buckets - 1)]; t; t = t->next)
		if (strcmp(t->name, name) == 0)
			return t;
	return NULL;
}

/* With the write lock held: the topic, created when new, with its
 * subscriber list brought up to date. */
static struct topic *topic_refresh(struct bus *b, const char *name, uint64_t h)
{
	struct topic *t = topic_find(b, name, h);
	if (!t) {
		if (b->n_topics >= b->n_buckets) {
			size_t nb = b->n_buckets * 2;
			struct topic **nbk = calloc(nb, sizeof *nbk);
			if (!nbk)
				return NULL;
			for (size_t i = 0; i < b->n_buckets; i++) {
				struct topic *x = b->buckets[i];
				while (x) {
					struct topic *next = x->next;
					size_t k = hash_str(x->name) & (nb - 1);
					x->next = nbk[k];
					nbk[k] = x;
					x = next;
				}
			}
			free(b->buckets);
			b->buckets = nbk;
			b->n_buckets = nb;
		}
		t = calloc(1, sizeof *t);
		if (!t)
			return NULL;
		t->name = strdup(name);
		size_t k = h & (b->n_buckets - 1);
		t->next = b->buckets[k];
		b->buckets[k] = t;
		b->n_topics++;
	}
	if (t->gen != b->gen) {
		size_t n = 0;
		struct bus_sub **v = malloc((b->n_subs ? b->n_subs : 1) * sizeof *v);
		if (!v)
			return NULL;
		for (size_t i = 0; i < b->n_subs; i++)
			if (bus_glob_match(b->subs[i]->pattern, name))
				v[n++] = b->subs[i];
		free(t->subs);
		t->subs = v;
		t->n_subs = n;
		struct bus_queue **qv = malloc((b->n_queues ? b->n_queues : 1) * sizeof *qv);
		if (!qv)
			return NULL;
		size_t nq = 0;
		for (size_t i = 0; i < b->n_queues; i++) {
			size_t k;
			json_t *p;
			json_array_foreach(b->queues[i]->patterns, k, p)
			{
				if (bus_glob_match(json_string_value(p), name)) {
					qv[nq++] = b->queues[i];
					break;
				}
			}
		}
		free(t->queues);
		t->queues = qv;
		t->n_queues = nq;
		t->gen = b->gen;
	}
	return t;
}

static void deliver(struct topic *t, struct plant_msg *msg)
{
	atomic_fetch_add_explicit(&t->published, 1, memory_order_relaxed);
	for (size_t i = 0; i < t->n_subs; i++) {
		struct bus_sub *s = t->subs[i];
		atomic_fetch_add(&s->refs, 1);
		struct task task = {.kind = TASK_MSG, .target = s, .u.msg = msg_ref(msg)};
		if (!actor_post(s->actor, &task)) {
			msg_unref(msg);
			bus_sub_unref(s);
		}
	}
}

static void pump(struct bus *b, struct bus_queue *bq);

/* With the lock held: queues first (they may refuse the whole publish),
 * then handlers. Fills `pumps` with the queues to wake after unlocking. */
#define PUMPS_ON_STACK 8

static int route(struct topic *t, struct plant_msg *msg, const char *dedup_key, uint64_t delay_ms,
		 struct bus_queue ***pumps, size_t *n_pumps)
{
	*n_pumps = 0;
	if (t->n_queues) {
		struct queue *one[8], **qs = one;
		if (t->n_queues > 8 && !(qs = malloc(t->n_queues * sizeof *qs)))
			return PLANT_E_NOMEM;
		for (size_t i = 0; i < t->n_queues; i++)
			qs[i] = t->queues[i]->q;
		int rc = queue_push_all(qs, t->n_queues, msg, dedup_key, delay_ms, clock_now_ms());
		if (qs != one)
			free(qs);
		if (rc)
			return rc;
		if (t->n_queues > PUMPS_ON_STACK)
			*pumps = malloc(t->n_queues * sizeof **pumps);
		if (*pumps) {
			memcpy(*pumps, t->queues, t->n_queues * sizeof **pumps);
			*n_pumps = t->n_queues;
		}
	}
	deliver(t, msg);
	return PLANT_OK;
}

int bus_publish_ex(struct bus *b, struct plant_msg *msg, const char *dedup_key, uint64_t delay_ms)
{
	if (!msg)
		return PLANT_E_NOMEM;
	uint64_t h = hash_str(msg->topic);
	struct bus_queue *stack[PUMPS_ON_STACK], **pumps = stack;
	size_t n_pumps = 0;
	int rc;
	pthread_rwlock_rdlock(&b->lock);
	struct topic *t = topic_find(b, msg->topic, h);
	if (t && t->gen == b->gen) {
		/* a known topic was checked when it came in */
		rc = route(t, msg, dedup_key, delay_ms, &pumps, &n_pumps);
		pthread_rwlock_unlock(&b->lock);
	} else {
		pthread_rwlock_unlock(&b->lock);
		if (!bus_topic_valid(msg->topic)) {
			msg_unref(msg);
			return PLANT_E_INVALID;
		}
		pthread_rwlock_wrlock(&b->lock);
		t = topic_refresh(b, msg->topic, h);
		rc = t ? route(t, msg, dedup_key, delay_ms, &pumps, &n_pumps) : PLANT_E_NOMEM;
		pthread_rwlock_unlock(&b->lock);
	}
	msg_unref(msg);
	/* queues are never removed while the bus lives */
	for (size_t i = 0; i < n_pumps; i++)
		pump(b, pumps[i]);
	if (pumps != stack)
		free(pumps);
	return rc;
}

/* The queues a topic feeds, as a [new] array of bus queues; and, when
 * `msg` is given, the message delivered to the topic's handlers. */
static int topic_visit(struct bus *b, const char *topic, struct plant_msg *msg,
		       struct bus_queue ***bqs_out, size_t *n_out)
{
	uint64_t h = hash_str(topic);
	pthread_rwlock_rdlock(&b->lock);
	struct topic *t = topic_find(b, topic, h);
	if (!t || t->gen != b->gen) {
		pthread_rwlock_unlock(&b->lock);
		pthread_rwlock_wrlock(&b->lock);
		t = topic_refresh(b, topic, h);
	}
	int rc = t ? PLANT_OK : PLANT_E_NOMEM;
	if (t && bqs_out) {
		*n_out = t->n_queues;
		*bqs_out = malloc((t->n_queues ? t->n_queues : 1) * sizeof **bqs_out);
		if (*bqs_out)
			memcpy(*bqs_out, t->queues, t->n_queues * sizeof **bqs_out);
		else
			rc = PLANT_E_NOMEM;
	}
	if (t && msg)
		deliver(t, msg);
	pthread_rwlock_unlock(&b->lock);
	return rc;
}

int bus_publish_batch(struct bus *b, struct plant_msg **msgs, const char *const *dedup_keys,
		      const uint64_t *delays, size_t n, bool all, size_t *done_out)
{
	*done_out = 0;
	struct queue_push *items = calloc(n ? n : 1, sizeof *items);
	struct bus_queue ***bqs = calloc(n ? n : 1, sizeof *bqs);
	size_t usable = 0;
	int rc = items && bqs ? PLANT_OK : PLANT_E_NOMEM;
	for (; usable < n && rc == PLANT_OK; usable++) {
		if (!bus_topic_valid(msgs[usable]->topic)) {
			rc = PLANT_E_INVALID;
			break;
		}
		size_t nq = 0;
		rc = topic_visit(b, msgs[usable]->topic, NULL, &bqs[usable], &nq);
		if (rc)
			break;
		items[usable].qs = malloc((nq ? nq : 1) * sizeof *items[usable].qs);
		if (!items[usable].qs) {
			rc = PLANT_E_NOMEM;
			break;
		}
		for (size_t i = 0; i < nq; i++)
			items[usable].qs[i] = bqs[usable][i]->q;
		items[usable].n_qs = nq;
		items[usable].msg = msgs[usable];
		items[usable].dedup_key = dedup_keys ? dedup_keys[usable] : NULL;
		items[usable].delay_ms = delays ? delays[usable] : 0;
	}
	size_t done = 0;
	if (usable && !(all && rc != PLANT_OK)) {
		int prc = queue_push_batch(items, usable, clock_now_ms(), all, &done);
		if (rc == PLANT_OK)
			rc = prc;
	}
	/* the handlers, and the consumers of every queue that got something */
	for (size_t i = 0; i < done; i++)
		topic_visit(b, msgs[i]->topic, msgs[i], NULL, NULL);
	for (size_t i = 0; i < done; i++)
		for (size_t k = 0; k < items[i].n_qs; k++) {
			bool seen = false;
			for (size_t j = 0; j < i && !seen; j++)
				for (size_t x = 0; x < items[j].n_qs && !seen; x++)
					seen = bqs[j][x] == bqs[i][k];
			if (!seen)
				pump(b, bqs[i][k]);
		}
	for (size_t i = 0; i < n; i++) {
		if (items)
			free(items[i].qs);
		if (bqs)
			free(bqs[i]);
		msg_unref(msgs[i]);
	}
	free(items);
	free(bqs);
	*done_out = done;
	return rc;
}

int bus_publish(struct bus *b, struct plant_msg *msg)
{
	return bus_publish_ex(b, msg, NULL, 0);
}

/* ---- queues ---------------------------------------------------------------------- */

static int dur_key(const json_t *settings, const char *key, uint64_t *out, int positive,
		   const char **bad_key, char *err, size_t errlen)
{
	json_t *v = json_object_get(settings, key);
	if (!v)
		return PLANT_OK;
	if (parse_duration_ms(v, out) != PLANT_OK || (positive && *out == 0)) {
		*bad_key = key;
		snprintf(
			err, errlen,
			"'%s' must be a %sduration (seconds, or \"250ms\", \"30s\", \"5m\", \"4d\")",
			key, positive ? "positive " : "");
		return PLANT_E_CONFIG;
	}
	return PLANT_OK;
}

static int int_key(const json_t *settings, const char *key, uint64_t *out, uint64_t min,
		   const char **bad_key, char *err, size_t errlen)
{
	json_t *v = json_object_get(settings, key);
	if (!v)
		return PLANT_OK;
	if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)min) {
		*bad_key = key;
		snprintf(err, errlen, "'%s' must be an integer of at least %llu", key,
			 (unsigned long long)min);
		return PLANT_E_CONFIG;
	}
	*out = (uint64_t)json_integer_value(v);
	return PLANT_OK;
}

int bus_queue_parse(const json_t *settings, struct queue_settings *out, const char **bad_key,
		    char *err, size_t errlen)
{
	static const char *const known[] = {
		"subscribe",   "visibility_timeout",
		"max_receive", "dead_letter",
		"retention",   "max_depth",
		"delay",       "dedup_window",
		"durable",     "store",
		NULL,
	};
	*bad_key = NULL;
	queue_settings_default(out);
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)settings, key, v)
	{
		size_t i = 0;
		while (known[i] && strcmp(known[i], key) != 0)
			i++;
		if (!known[i]) {
			*bad_key = key;
			snprintf(err, errlen, "unknown queue setting '%s'", key);
			return PLANT_E_CONFIG;
		}
	}
	json_t *sub = json_object_get(settings, "subscribe");
	if (sub) {
		size_t i;
		json_t *p;
		int ok = json_is_array(sub);
		json_array_foreach(sub, i, p) ok = ok && bus_pattern_valid(json_string_value(p));
		if (!ok) {
			*bad_key = "subscribe";
			snprintf(
				err, errlen,
				"'subscribe' must be a list of topic names or patterns, e.g. [ \"sensor.*\" ]");
			return PLANT_E_CONFIG;
		}
	}
	json_t *dl = json_object_get(settings, "dead_letter");
	if (dl && (!json_is_string(dl) || !bus_topic_valid(json_string_value(dl)))) {
		*bad_key = "dead_letter";
		snprintf(err, errlen, "'dead_letter' must name a queue");
		return PLANT_E_CONFIG;
	}
	uint64_t max_receive = out->max_receive;
	int rc = dur_key(settings, "visibility_timeout", &out->visibility_timeout_ms, 1, bad_key,
			 err, errlen);
	if (!rc)
		rc = int_key(settings, "max_receive", &max_receive, 1, bad_key, err, errlen);
	if (!rc)
		rc = dur_key(settings, "retention", &out->retention_ms, 1, bad_key, err, errlen);
	if (!rc)
		rc = int_key(settings, "max_depth", &out->max_depth, 1, bad_key, err, errlen);
	if (!rc)
		rc = dur_key(settings, "delay", &out->delay_ms, 0, bad_key, err, errlen);
	if (!rc)
		rc = dur_key(settings, "dedup_window", &out->dedup_window_ms, 1, bad_key, err,
			     errlen);
	out->max_receive = (uint32_t)max_receive;
	json_t *durable = json_object_get(settings, "durable");
	json_t *store = json_object_get(settings, "store");
	if (!rc && durable && !json_is_boolean(durable)) {
		*bad_key = "durable";
		snprintf(err, errlen, "'durable' must be true or false");
		rc = PLANT_E_CONFIG;
	}
	if (!rc && store &&
	    (!json_is_string(store) || !*json_string_value(store) ||
	     json_string_length(store) >= sizeof out->store)) {
		*bad_key = "store";
		snprintf(err, errlen, "'store' must name a store of the site");
		rc = PLANT_E_CONFIG;
	}
	out->durable = json_is_true(durable);
	if (!rc && out->durable && !store) {
		*bad_key = "durable";
		snprintf(err, errlen, "a durable queue needs 'store', the store that keeps it");
		rc = PLANT_E_CONFIG;
	}
	if (store)
		snprintf(out->store, sizeof out->store, "%s", json_string_value(store));
	return rc;
}

static struct bus_queue *find_queue_locked(struct bus *b, const char *name)
{
	for (size_t i = 0; i < b->n_queues; i++)
		if (strcmp(queue_name(b->queues[i]->q), name) == 0)
			return b->queues[i];
	return NULL;
}

struct queue *bus_queue_find(struct bus *b, const char *name)
{
	pthread_rwlock_rdlock(&b->lock);
	struct bus_queue *bq = find_queue_locked(b, name);
	pthread_rwlock_unlock(&b->lock);
	return bq ? bq->q : NULL;
}

int bus_queue_declare(struct bus *b, const char *name, const json_t *settings, char *err,
		      size_t errlen)
{
	struct queue_settings qs;
	const char *bad_key;
	char why[512];
	if (!bus_topic_valid(name)) {
		snprintf(err, errlen, "bad queue name \"%s\"", name ? name : "");
		return PLANT_E_INVALID;
	}
	if (bus_queue_parse(settings, &qs, &bad_key, why, sizeof why) != PLANT_OK) {
		snprintf(err, errlen, "queue %s: %s", name, why);
		return PLANT_E_CONFIG;
	}
	json_t *patterns = json_object_get(settings, "subscribe");
	json_t *dl = json_object_get(settings, "dead_letter");
	pthread_rwlock_wrlock(&b->lock);
	struct bus_queue *bq = find_queue_locked(b, name);
	if (bq) {
		/* settings that change live; the queue keeps its messages */
		queue_set_settings(bq->q, &qs);
	} else {
		bq = calloc(1, sizeof *bq);
		struct bus_queue **v =
			bq ? realloc(b->queues, (b->n_queues + 1) * sizeof *v) : NULL;
		if (v)
			b->queues = v; /* the old block may be gone */
		if (!v || queue_create(name, &qs, &bq->q) != PLANT_OK) {
			pthread_rwlock_unlock(&b->lock);
			free(bq);
			snprintf(err, errlen, "queue %s: out of memory", name);
			return PLANT_E_NOMEM;
		}
		pthread_mutex_init(&bq->cons_lock, NULL);
		b->queues = v;
		b->queues[b->n_queues++] = bq;
	}
	json_decref(bq->patterns);
	bq->patterns = patterns ? json_deep_copy(patterns) : json_array();
	free(bq->dead_letter);
	bq->dead_letter = dl ? strdup(json_string_value(dl)) : NULL;
	b->gen++;
	pthread_rwlock_unlock(&b->lock);
	return PLANT_OK;
}

int bus_link_dead_letters(struct bus *b, char *err, size_t errlen)
{
	int rc = PLANT_OK;
	pthread_rwlock_wrlock(&b->lock);
	for (size_t i = 0; i < b->n_queues && !rc; i++) {
		struct bus_queue *bq = b->queues[i];
		if (!bq->dead_letter) {
			queue_set_dead_letter(bq->q, NULL);
			continue;
		}
		struct bus_queue *dlq = find_queue_locked(b, bq->dead_letter);
		if (!dlq) {
			snprintf(err, errlen, "queue %s: dead_letter \"%s\" is not a queue",
				 queue_name(bq->q), bq->dead_letter);
			rc = PLANT_E_CONFIG;
			break;
		}
		/* follow the chain: it must end, not come back */
		struct bus_queue *x = dlq;
		for (size_t hops = 0; x && x->dead_letter; hops++) {
			if (x == bq || hops > b->n_queues) {
				snprintf(err, errlen, "queue %s: dead-letter queues form a cycle",
					 queue_name(bq->q));
				rc = PLANT_E_CONFIG;
				break;
			}
			x = find_queue_locked(b, x->dead_letter);
		}
		if (!rc)
			queue_set_dead_letter(bq->q, dlq->q);
	}
	pthread_rwlock_unlock(&b->lock);
	return rc;
}

int bus_consume(struct bus *b, const char *queue, void *owner, struct actor *actor,
		plant_msg_handler fn, void *user, uint32_t max_batch, uint64_t *id_out)
{
	if (!fn || !queue)
		return PLANT_E_INVALID;
	struct consumer *c = calloc(1, sizeof *c);
	if (!c)
		return PLANT_E_NOMEM;
	c->owner = owner;
	c->actor = actor;
	c->fn = fn;
	c->user = user;
	c->max_batch = max_batch ? max_batch : BATCH_DEFAULT;
	c->bus = b;
	atomic_init(&c->refs, 1);
	pthread_rwlock_wrlock(&b->lock);
	struct bus_queue *bq = find_queue_locked(b, queue);
	if (!bq) {
		pthread_rwlock_unlock(&b->lock);
		free(c);
		return PLANT_E_NOTFOUND;
	}
	c->bq = bq;
	c->id = b->next_id++;
	pthread_mutex_lock(&bq->cons_lock);
	struct consumer **v = realloc(bq->cons, (bq->n_cons + 1) * sizeof *v);
	if (v) {
		bq->cons = v;
		bq->cons[bq->n_cons++] = c;
		atomic_fetch_add(&bq->idle, 1);
	}
	pthread_mutex_unlock(&bq->cons_lock);
	pthread_rwlock_unlock(&b->lock);
	if (!v) {
		free(c);
		return PLANT_E_NOMEM;
	}
	if (id_out)
		*id_out = c->id;
	pump(b, bq);
	return PLANT_OK;
}

/* [worker] A batch under the consumer's actor; actor_ctx is NULL when the
 * task was dropped (the consumer went away). */
static void run_batch(void *arg, void *actor_ctx)
{
	struct batch *bt = arg;
	struct consumer *c = bt->c;
	struct queue *q = c->bq->q;
	int rc = -1;
	bool seen = actor_ctx && !atomic_load(&c->dead) && c->bus->invoke &&
		    (!c->bus->ready || c->bus->ready(actor_ctx));
	if (seen) {
		queue_persist_receives(q, bt->d, bt->n, clock_now_ms());
		rc = c->bus->invoke(actor_ctx, c->fn, (const plant_msg *const *)bt->d, bt->n,
				    c->user);
	}
	uint64_t now = clock_now_ms();
	for (size_t i = 0; i < bt->n; i++) {
		struct delivery *d = bt->d[i];
		if (!d->settled) {
			if (rc == PLANT_OK)
				queue_ack(q, d);
			else if (!seen)
				/* nobody saw it: back now, not counted */
				queue_return(q, d, now);
			else if (rc < 0 || atomic_load(&c->dead))
				/* its consumer went away: back now, for the next */
				queue_nack(q, d, 0, NULL, now);
			else
				queue_note(q, d, plant_status_name(rc));
		}
		delivery_free(d);
	}
	/* the batch's acks reach a durable queue's store in one write */
	queue_flush(q, now);
	/* busy first, dead second: with bus_unsubscribe_owner() doing the
	 * opposite, one of the two always releases what the consumer held */
	atomic_store(&c->busy, false);
	atomic_fetch_add(&c->bq->idle, 1);
	if (atomic_load(&c->dead))
		queue_release_holder(q, c, now);
	/* a dropped batch (actor_ctx NULL) may come from pump() itself; the
	 * next tick hands the messages on */
	if (actor_ctx && !atomic_load(&c->dead))
		pump(c->bus, c->bq);
	consumer_unref(c);
	free(bt);
}

/* Hand waiting messages to idle consumers, one batch each. Any thread. */
static void pump(struct bus *b, struct bus_queue *bq)
{
	/* every consumer has a batch out: each pumps again when it is done */
	if (atomic_load(&bq->idle) <= 0)
		return;
	pthread_mutex_lock(&bq->cons_lock);
	for (size_t k = 0; k < bq->n_cons; k++) {
		struct consumer *c = bq->cons[(bq->rr + k) % bq->n_cons];
		if (atomic_load(&c->dead) || atomic_exchange(&c->busy, true))
			continue;
		atomic_fetch_sub(&bq->idle, 1);
		struct batch *bt = malloc(sizeof *bt + c->max_batch * sizeof bt->d[0]);
		size_t n =
			bt ? queue_receive_for(bq->q, c, bt->d, c->max_batch, clock_now_ms()) : 0;
		if (n == 0) {
			free(bt);
			atomic_store(&c->busy, false);
			atomic_fetch_add(&bq->idle, 1);
			/* a publish may have come between the receive and here */
			if (queue_visible(bq->q) == 0)
				break;
			continue;
		}
		bt->n = n;
		bt->c = c;
		atomic_fetch_add(&c->refs, 1);
		struct task task = {.kind = TASK_CALL, .target = bt, .u.fn = run_batch};
		if (!actor_post(c->actor, &task))
			run_batch(bt, NULL);
	}
	if (bq->n_cons)
		bq->rr = (bq->rr + 1) % bq->n_cons;
	pthread_mutex_unlock(&bq->cons_lock);
}

static struct delivery *as_delivery(const plant_msg *msg)
{
	const struct delivery *d = (const struct delivery *)(const void *)msg;
	return d && d->kind == MSG_KIND_DELIVERY ? (struct delivery *)d : NULL;
}

/* A held handle is the plugin's to settle once: settling frees it. */
static int settled(struct delivery *d, int rc)
{
	if (d->held)
		delivery_free(d);
	return rc;
}

int bus_ack(const plant_msg *msg)
{
	struct delivery *d = as_delivery(msg);
	if (!d)
		return PLANT_E_INVALID;
	if (d->settled)
		return PLANT_E_STATE;
	return settled(d, queue_ack(d->queue, d));
}

int bus_nack(const plant_msg *msg, uint64_t delay_ms, const char *reason)
{
	struct delivery *d = as_delivery(msg);
	if (!d)
		return PLANT_E_INVALID;
	if (d->settled)
		return PLANT_E_STATE;
	return settled(d, queue_nack(d->queue, d, delay_ms, reason, clock_now_ms()));
}

int bus_reject(const plant_msg *msg, const char *reason)
{
	struct delivery *d = as_delivery(msg);
	if (!d)
		return PLANT_E_INVALID;
	if (d->settled)
		return PLANT_E_STATE;
	int rc = queue_reject(d->queue, d, reason, clock_now_ms());
	/* not settled (no dead-letter queue, a full one, out of memory): the
	 * message and a handle stay as they were, for the plugin to settle
	 * otherwise */
	if (rc == PLANT_E_UNSUPPORTED || rc == PLANT_E_FULL || rc == PLANT_E_NOMEM)
		return rc;
	return settled(d, rc);
}

const plant_msg *bus_hold(const plant_msg *msg)
{
	struct delivery *d = as_delivery(msg);
	if (!d || d->settled || d->held)
		return NULL;
	struct delivery *h = malloc(sizeof *h);
	if (!h)
		return NULL;
	*h = *d;
	h->held = 1;
	msg_ref(h->msg);
	/* the batch neither acks nor returns it now: the handle will */
	d->settled = 1;
	return (const plant_msg *)(const void *)h;
}

void bus_release(const plant_msg *held)
{
	struct delivery *d = as_delivery(held);
	if (d && d->held)
		delivery_free(d);
}

uint64_t bus_tick(struct bus *b, uint64_t now)
{
	uint64_t next = UINT64_MAX;
	pthread_rwlock_rdlock(&b->lock);
	size_t n = b->n_queues;
	struct bus_queue **v = malloc((n ? n : 1) * sizeof *v);
	if (v && n)
		memcpy(v, b->queues, n * sizeof *v);
	pthread_rwlock_unlock(&b->lock);
	for (size_t i = 0; v && i < n; i++) {
		uint64_t due = queue_tick(v[i]->q, now);
		queue_flush(v[i]->q, now);
		if (due < next)
			next = due;
		pump(b, v[i]);
	}
	free(v);
	return next;
}

void bus_flush_all(struct bus *b)
{
	uint64_t now = clock_now_ms();
	pthread_rwlock_rdlock(&b->lock);
	for (size_t i = 0; i < b->n_queues; i++)
		queue_flush(b->queues[i]->q, now);
	pthread_rwlock_unlock(&b->lock);
}

json_t *bus_stats_json(struct bus *b)
{
	json_t *topics = json_object(), *queues = json_object();
	uint64_t now = clock_now_ms();
	pthread_rwlock_wrlock(&b->lock);
	for (size_t i = 0; i < b->n_buckets; i++) {
		for (struct topic *t = b->buckets[i]; t; t = t->next) {
			struct topic *r = topic_refresh(b, t->name, hash_str(t->name));
			json_object_set_new(topics, t->name,
					    json_pack("{s:I, s:I, s:I}", "published",
						      (json_int_t)atomic_load(&t->published),
						      "subscribers",
						      (json_int_t)(r ? r->n_subs : 0), "queues",
						      (json_int_t)(r ? r->n_queues : 0)));
		}
	}
	for (size_t i = 0; i < b->n_queues; i++)
		json_object_set_new(queues, queue_name(b->queues[i]->q),
				    queue_stats_json(b->queues[i]->q, now));
	pthread_rwlock_unlock(&b->lock);
	return json_pack("{s:o, s:o}", "topics", topics, "queues", queues);
}

json_t *bus_topics_json(struct bus *b)
{
	json_t *out = json_object();
	pthread_rwlock_rdlock(&b->lock);
	for (size_t i = 0; i < b->n_buckets; i++)
		for (struct topic *t = b->buckets[i]; t; t = t->next)
			json_object_set_new(out, t->name,
					    json_integer((json_int_t)atomic_load(&t->published)));
	pthread_rwlock_unlock(&b->lock);
	return out;
}

int bus_redrive(struct bus *b, const char *dlq, size_t *moved_out, size_t *kept_out)
{
	*moved_out = 0;
	*kept_out = 0;
	pthread_rwlock_rdlock(&b->lock);
	struct bus_queue *from = find_queue_locked(b, dlq);
	pthread_rwlock_unlock(&b->lock);
	if (!from)
		return PLANT_E_NOTFOUND;
	/* what is visible now, a batch at a time; what cannot go back is
	 * returned after the pass, so that it is not read twice */
	struct delivery **keep = NULL;
	size_t n_keep = 0, cap_keep = 0;
	int rc = PLANT_OK;
	/* what waits now, not what comes back meanwhile (a source whose
	 * consumer still fails would send it round again) */
	size_t budget = queue_visible(from->q);
	while (budget) {
		struct delivery *ds[256];
		uint64_t now = clock_now_ms();
		size_t n = queue_receive(from->q, ds, budget < 256 ? budget : 256, now);
		if (n == 0)
			break;
		budget -= n;
		for (size_t i = 0; i < n; i++) {
			json_t *attrs = ds[i]->msg->attrs;
			const char *src =
				attrs ? json_string_value(json_object_get(attrs, "dlq_source"))
				      : NULL;
			pthread_rwlock_rdlock(&b->lock);
			struct bus_queue *to = src ? find_queue_locked(b, src) : NULL;
			pthread_rwlock_unlock(&b->lock);
			int prc = to && to != from ? queue_push(to->q, ds[i]->msg, NULL, 0, now)
						   : PLANT_E_NOTFOUND;
			if (prc == PLANT_OK) {
				queue_ack(from->q, ds[i]);
				delivery_free(ds[i]);
				pump(b, to);
				(*moved_out)++;
				continue;
			}
			if (n_keep == cap_keep) {
				size_t cap = cap_keep ? cap_keep * 2 : 64;
				struct delivery **v = realloc(keep, cap * sizeof *v);
				if (!v) {
					queue_return(from->q, ds[i], now);
					delivery_free(ds[i]);
					rc = PLANT_E_NOMEM;
					continue;
				}
				keep = v;
				cap_keep = cap;
			}
			keep[n_keep++] = ds[i];
		}
	}
	for (size_t i = 0; i < n_keep; i++) {
		queue_return(from->q, keep[i], clock_now_ms());
		delivery_free(keep[i]);
	}
	free(keep);
	*kept_out = n_keep;
	if (n_keep)
		pump(b, from);
	return rc;
}
