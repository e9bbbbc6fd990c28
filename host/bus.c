#include "bus.h"

#include <fnmatch.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define TOPIC_MAX 200

/* A topic seen by the bus: its counters and the subscriptions that match
 * it, worked out once per change of the subscription set. */
struct topic {
	char *name;
	_Atomic uint64_t published;
	uint64_t gen; /* the subscription generation `subs` was made for */
	struct bus_sub **subs;
	size_t n_subs;
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
	for (size_t i = 0; i < b->n_buckets; i++) {
		struct topic *t = b->buckets[i];
		while (t) {
			struct topic *next = t->next;
			free(t->name);
			free(t->subs);
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

int bus_publish(struct bus *b, struct plant_msg *msg)
{
	if (!msg)
		return PLANT_E_NOMEM;
	if (!bus_topic_valid(msg->topic)) {
		msg_unref(msg);
		return PLANT_E_INVALID;
	}
	uint64_t h = hash_str(msg->topic);
	pthread_rwlock_rdlock(&b->lock);
	struct topic *t = topic_find(b, msg->topic, h);
	if (t && t->gen == b->gen) {
		deliver(t, msg);
		pthread_rwlock_unlock(&b->lock);
		msg_unref(msg);
		return PLANT_OK;
	}
	pthread_rwlock_unlock(&b->lock);

	pthread_rwlock_wrlock(&b->lock);
	t = topic_refresh(b, msg->topic, h);
	if (t)
		deliver(t, msg);
	pthread_rwlock_unlock(&b->lock);
	msg_unref(msg);
	return t ? PLANT_OK : PLANT_E_NOMEM;
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
