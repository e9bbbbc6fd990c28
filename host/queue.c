#include "queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plantd/plantd.h"

/* A queued message. Queues hold the shared message (its body as text) and
 * this little record: deep queues cost text, not trees. */
struct qent {
	struct plant_msg *msg;
	uint64_t seq;	 /* enqueue order */
	uint64_t enq_at; /* when it was enqueued (ms), for retention */
	uint64_t due;	 /* delayed: when it becomes visible; in flight: its deadline */
	uint32_t receive_count;
	uint32_t suspect; /* read back after a stop: it may have been in flight */
	char *last_error;
};

/* In-flight slots: a receipt is the slot index and a generation, so an ack
 * finds its message in O(1) and a stale receipt is told apart. */
struct slot {
	struct qent e;
	const void *holder;
	uint32_t gen;
	uint32_t next_free; /* free list; UINT32_MAX ends it */
	bool used;
};

struct heap {
	struct qent *v;
	size_t len, cap;
	bool by_seq;
};

struct queue {
	pthread_mutex_t lock;
	char *name;
	struct queue_settings set;
	struct queue *dlq;

	/* visible messages: a ring, oldest at head */
	struct qent *ring;
	size_t head, len, cap;

	/* delayed messages, by `due`; messages visible again after a receive,
	 * by `seq` (they are older than the ring and go first, in order) */
	struct heap delayed, retry;
	uint64_t next_seq;

	struct slot *slots;
	uint32_t n_slots, cap_slots, free_head, in_flight;

	/* a durable queue: its store, the key prefix of its records, what
	 * publishers are writing now, and deletes waiting for queue_flush() */
	const struct plant_store_backend *be;
	void *sh;
	char *prefix;
	uint64_t reserved;
	uint64_t *dels;
	size_t n_dels, cap_dels;

	json_t *dedup; /* key -> expiry (ms) */
	uint64_t dedup_next_purge;

	struct queue_stats st;
};

void queue_settings_default(struct queue_settings *s)
{
	memset(s, 0, sizeof *s);
	s->visibility_timeout_ms = 30000;
	s->max_receive = 5;
	s->retention_ms = 4ull * 24 * 3600 * 1000;
	s->max_depth = 100000;
	s->delay_ms = 0;
	s->dedup_window_ms = 5 * 60 * 1000;
}

int queue_create(const char *name, const struct queue_settings *s, struct queue **out)
{
	struct queue *q = calloc(1, sizeof *q);
	if (!q)
		return PLANT_E_NOMEM;
	pthread_mutex_init(&q->lock, NULL);
	q->name = strdup(name);
	q->set = *s;
	q->free_head = UINT32_MAX;
	q->retry.by_seq = true;
	q->dedup = json_object();
	*out = q;
	return PLANT_OK;
}

static void qent_free(struct qent *e)
{
	msg_unref(e->msg);
	free(e->last_error);
}

void queue_destroy(struct queue *q)
{
	if (!q)
		return;
	for (size_t i = 0; i < q->len; i++)
		qent_free(&q->ring[(q->head + i) % q->cap]);
	for (size_t i = 0; i < q->delayed.len; i++)
		qent_free(&q->delayed.v[i]);
	for (size_t i = 0; i < q->retry.len; i++)
		qent_free(&q->retry.v[i]);
	for (uint32_t i = 0; i < q->n_slots; i++)
		if (q->slots[i].used)
			qent_free(&q->slots[i].e);
	free(q->ring);
	free(q->prefix);
	free(q->dels);
	free(q->delayed.v);
	free(q->retry.v);
	free(q->slots);
	json_decref(q->dedup);
	free(q->name);
	pthread_mutex_destroy(&q->lock);
	free(q);
}

const char *queue_name(const struct queue *q)
{
	return q->name;
}

const struct queue_settings *queue_settings_get(const struct queue *q)
{
	return &q->set;
}

void queue_set_settings(struct queue *q, const struct queue_settings *s)
{
	pthread_mutex_lock(&q->lock);
	q->set = *s;
	pthread_mutex_unlock(&q->lock);
}

void queue_set_dead_letter(struct queue *q, struct queue *dlq)
{
	pthread_mutex_lock(&q->lock);
	q->dlq = dlq;
	pthread_mutex_unlock(&q->lock);
}

/* ---- the ring of visible messages ------------------------------------------ */

static int ring_grow(struct queue *q)
{
	size_t cap = q->cap ? q->cap * 2 : 64;
	struct qent *v = malloc(cap * sizeof *v);
	if (!v)
		return PLANT_E_NOMEM;
	for (size_t i = 0; i < q->len; i++)
		v[i] = q->ring[(q->head + i) % q->cap];
	free(q->ring);
	q->ring = v;
	q->cap = cap;
	q->head = 0;
	return PLANT_OK;
}

static int ring_push_back(struct queue *q, const struct qent *e)
{
	if (q->len == q->cap && ring_grow(q))
		return PLANT_E_NOMEM;
	q->ring[(q->head + q->len) % q->cap] = *e;
	q->len++;
	return PLANT_OK;
}

static struct qent ring_pop(struct queue *q)
{
	struct qent e = q->ring[q->head];
	q->head = (q->head + 1) % q->cap;
	q->len--;
	return e;
}

/* ---- heaps ------------------------------------------------------------------------ */

static uint64_t key(const struct heap *h, size_t i)
{
	return h->by_seq ? h->v[i].seq : h->v[i].due;
}

static int heap_push(struct heap *h, const struct qent *e)
{
	if (h->len == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 16;
		struct qent *v = realloc(h->v, cap * sizeof *v);
		if (!v)
			return PLANT_E_NOMEM;
		h->v = v;
		h->cap = cap;
	}
	size_t i = h->len++;
	h->v[i] = *e;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (key(h, p) <= key(h, i))
			break;
		struct qent t = h->v[p];
		h->v[p] = h->v[i];
		h->v[i] = t;
		i = p;
	}
	return PLANT_OK;
}

static struct qent heap_pop(struct heap *h)
{
	struct qent top = h->v[0];
	h->v[0] = h->v[--h->len];
	size_t i = 0;
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < h->len && key(h, l) < key(h, m))
			m = l;
		if (r < h->len && key(h, r) < key(h, m))
			m = r;
		if (m == i)
			break;
		struct qent t = h->v[m];
		h->v[m] = h->v[i];
		h->v[i] = t;
		i = m;
	}
	return top;
}

/* A dead-letter move waits until the source queue is unlocked: publishers
 * lock queues in address order, and the dead-letter queue may come first. */
struct move {
	struct qent e;
	struct plant_msg *copy;
};

/* A durable message that came back: its receive count is written again. */
struct update {
	struct qent e; /* out of sight (and counted in `reserved`) meanwhile */
	uint64_t delay;
};

struct moves {
	struct move *v;
	size_t n, cap;
	struct update *u;
	size_t n_u, cap_u;
};

static void come_back(struct queue *q, struct qent *e, uint64_t delay, uint64_t now,
		      struct moves *mv);
static struct slot *slot_of(struct queue *q, uint64_t receipt);
static void moves_flush(struct queue *q, struct moves *mv, uint64_t now);

/* ---- persistence (durable queues) ------------------------------------------------ */

/* Record key: PREFIX + 16 hex digits of the sequence, so that a scan comes
 * back in enqueue order. */
static size_t record_key(const struct queue *q, uint64_t seq, char *out, size_t len)
{
	int n = snprintf(out, len, "%s%016llx", q->prefix, (unsigned long long)seq);
	return n > 0 && (size_t)n < len ? (size_t)n : 0;
}

/* A record as JSON text, made directly: the body goes in as the checked,
 * compact text it already is, with no tree and no escaping. Topic names and
 * ids need no escaping either. */
static char *record_text(const struct plant_msg *m, uint32_t receive_count, uint64_t enq_at,
			 size_t *len_out)
{
	char *attrs = m->attrs ? json_dumps(m->attrs, JSON_COMPACT) : NULL;
	size_t cap = m->len + strlen(m->topic) + (attrs ? strlen(attrs) : 0) + 160;
	char *t = malloc(cap);
	if (!t) {
		free(attrs);
		return NULL;
	}
	int n = snprintf(
		t, cap,
		"{\"id\":\"%s\",\"topic\":\"%s\",\"ts\":%llu,\"rc\":%u,\"enq\":%llu%s%s,\"body\":",
		m->id, m->topic, (unsigned long long)m->ts, receive_count,
		(unsigned long long)enq_at, attrs ? ",\"attrs\":" : "", attrs ? attrs : "");
	free(attrs);
	memcpy(t + n, m->text, m->len);
	n += (int)m->len;
	t[n++] = '}';
	t[n] = '\0';
	*len_out = (size_t)n;
	return t;
}

static int record_put(struct queue *q, uint64_t seq, const struct plant_msg *m,
		      uint32_t receive_count, uint64_t enq_at, uint64_t now)
{
	char key[300];
	struct plant_store_op op = {.key = key};
	op.key_len = record_key(q, seq, key, sizeof key);
	char *text = record_text(m, receive_count, enq_at, &op.value_text_len);
	if (!text)
		return PLANT_E_NOMEM;
	op.value_text = text;
	size_t failed;
	int atomic;
	int rc = q->be->batch(q->sh, &op, 1, now, &failed, &atomic);
	free(text);
	return rc;
}

static void record_del(struct queue *q, uint64_t seq, uint64_t now)
{
	char key[300];
	size_t klen = record_key(q, seq, key, sizeof key);
	q->be->del(q->sh, key, klen, PLANT_PUT_ANY, 0, now);
}

/* With q locked: this record goes at the next flush. */
static void dels_add(struct queue *q, uint64_t seq)
{
	if (!q->be)
		return;
	if (q->n_dels == q->cap_dels) {
		size_t cap = q->cap_dels ? q->cap_dels * 2 : 256;
		uint64_t *v = realloc(q->dels, cap * sizeof *v);
		if (!v)
			return; /* it stays stored: at worst delivered again after a restart */
		q->dels = v;
		q->cap_dels = cap;
	}
	q->dels[q->n_dels++] = seq;
}

void queue_persist_receives(struct queue *q, struct delivery **ds, size_t n, uint64_t now)
{
	if (!q->be)
		return;
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		m += ds[i]->persist != 0;
	if (!m)
		return;
	struct plant_store_op *ops = calloc(m, sizeof *ops);
	char(*keys)[300] = malloc(m * sizeof *keys);
	size_t k = 0;
	for (size_t i = 0; ops && keys && i < n; i++) {
		struct delivery *d = ds[i];
		if (!d->persist)
			continue;
		uint64_t seq = 0;
		/* the receipt names the slot; the slot holds the sequence */
		pthread_mutex_lock(&q->lock);
		struct slot *s = slot_of(q, d->receipt);
		if (s)
			seq = s->e.seq;
		pthread_mutex_unlock(&q->lock);
		d->persist = 0;
		if (!s)
			continue;
		ops[k].key = keys[k];
		ops[k].key_len = record_key(q, seq, keys[k], sizeof keys[k]);
		ops[k].value_text =
			record_text(d->msg, d->receive_count, d->enq_at, &ops[k].value_text_len);
		if (ops[k].value_text)
			k++;
	}
	size_t failed;
	int atomic;
	if (k)
		q->be->batch(q->sh, ops, k, now, &failed, &atomic);
	for (size_t i = 0; i < k; i++)
		free((char *)ops[i].value_text);
	free(ops);
	free(keys);
}

void queue_flush(struct queue *q, uint64_t now)
{
	if (!q->be)
		return;
	pthread_mutex_lock(&q->lock);
	uint64_t *seqs = q->dels;
	size_t n = q->n_dels;
	q->dels = NULL;
	q->n_dels = q->cap_dels = 0;
	pthread_mutex_unlock(&q->lock);
	if (!n)
		return;
	/* one transaction for the lot where the backend can */
	struct plant_store_op *ops = calloc(n, sizeof *ops);
	char(*keys)[300] = malloc(n * sizeof *keys);
	int rc = PLANT_E_NOMEM;
	if (ops && keys) {
		for (size_t i = 0; i < n; i++) {
			ops[i].is_delete = 1;
			ops[i].key = keys[i];
			ops[i].key_len = record_key(q, seqs[i], keys[i], sizeof keys[i]);
		}
		size_t failed = 0;
		int atomic = 0;
		rc = q->be->batch(q->sh, ops, n, now, &failed, &atomic);
	}
	if (rc != PLANT_OK)
		for (size_t i = 0; i < n; i++)
			record_del(q, seqs[i], now);
	free(keys);
	free(ops);
	free(seqs);
}

bool queue_has_store(struct queue *q)
{
	pthread_mutex_lock(&q->lock);
	bool has = q->be != NULL;
	pthread_mutex_unlock(&q->lock);
	return has;
}

void queue_set_store(struct queue *q, const struct plant_store_backend *be, void *store)
{
	pthread_mutex_lock(&q->lock);
	q->be = be;
	q->sh = store;
	free(q->prefix);
	if (asprintf(&q->prefix, "q/%s/", q->name) < 0)
		q->prefix = NULL;
	pthread_mutex_unlock(&q->lock);
}

int queue_load(struct queue *q, uint64_t now, size_t *loaded_out, char *err, size_t errlen)
{
	size_t loaded = 0, bad = 0;
	struct moves mv = {0};
	char after[300];
	size_t after_len = 0;
	size_t plen = strlen(q->prefix);
	for (;;) {
		json_t *items = NULL;
		int rc = q->be->scan(q->sh, q->prefix, plen, after_len ? after : NULL, after_len,
				     1000, now, &items);
		if (rc != PLANT_OK) {
			moves_flush(q, &mv, now);
			snprintf(err, errlen, "queue %s: cannot read its messages back: %s",
				 q->name, plant_status_name(rc));
			return rc;
		}
		size_t n = json_array_size(items);
		for (size_t i = 0; i < n; i++) {
			json_t *it = json_array_get(items, i), *v = json_object_get(it, "value");
			const char *key = json_string_value(json_object_get(it, "key"));
			const char *topic = json_string_value(json_object_get(v, "topic"));
			const char *id = json_string_value(json_object_get(v, "id"));
			json_t *body = json_object_get(v, "body");
			char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
			if (key) {
				after_len = strlen(key);
				memcpy(after, key, after_len < sizeof after ? after_len : 0);
			}
			unsigned long long seq = 0;
			if (!key || !topic || !id || !text || strlen(id) != MSG_ID_LEN ||
			    sscanf(key + plen, "%16llx", &seq) != 1) {
				free(text);
				bad++; /* left in the store, never dropped */
				continue;
			}
			struct plant_msg *m = msg_new_text(topic, text, strlen(text));
			free(text);
			if (!m)
				continue;
			memcpy(m->id, id, MSG_ID_LEN + 1);
			m->ts = (uint64_t)json_integer_value(json_object_get(v, "ts"));
			json_t *attrs = json_object_get(v, "attrs");
			if (json_is_object(attrs))
				m->attrs = json_incref(attrs);
			struct qent e = {
				.msg = m,
				.seq = seq,
				.enq_at = (uint64_t)json_integer_value(json_object_get(v, "enq")),
				.receive_count =
					(uint32_t)json_integer_value(json_object_get(v, "rc")),
				.suspect = 1,
			};
			pthread_mutex_lock(&q->lock);
			if (seq >= q->next_seq)
				q->next_seq = seq + 1;
			if (q->set.max_receive && e.receive_count >= q->set.max_receive && q->dlq) {
				/* received max_receive times, never settled: it took
				 * the process down each time */
				e.last_error = strdup("in flight each time plantd went down");
				come_back(q, &e, 0, now, &mv);
			} else {
				ring_push_back(q, &e);
			}
			pthread_mutex_unlock(&q->lock);
			loaded++;
		}
		json_decref(items);
		if (n < 1000)
			break;
	}
	moves_flush(q, &mv, now);
	if (loaded_out)
		*loaded_out = loaded;
	if (bad) {
		snprintf(err, errlen,
			 "queue %s: %zu stored records are not messages (kept, not loaded)",
			 q->name, bad);
		return PLANT_E_INVALID;
	}
	return PLANT_OK;
}

/* ---- admission ------------------------------------------------------------------- */

static uint64_t depth(const struct queue *q)
{
	return q->len + q->delayed.len + q->retry.len + q->in_flight + q->reserved;
}

static void dedup_purge(struct queue *q, uint64_t now)
{
	if (now < q->dedup_next_purge)
		return;
	const char *k;
	json_t *v;
	void *tmp;
	json_object_foreach_safe(q->dedup, tmp, k, v)
	{
		if ((uint64_t)json_integer_value(v) <= now)
			json_object_del(q->dedup, k);
	}
	q->dedup_next_purge =
		now + (q->set.dedup_window_ms / 4 > 1000 ? q->set.dedup_window_ms / 4 : 1000);
}

/* Is this key a duplicate within the window? Records it when not. */
static bool dedup_seen(struct queue *q, const char *key, uint64_t now)
{
	json_t *v = json_object_get(q->dedup, key);
	if (v && (uint64_t)json_integer_value(v) > now)
		return true;
	json_object_set_new(q->dedup, key,
			    json_integer((json_int_t)(now + q->set.dedup_window_ms)));
	return false;
}

static int push_locked(struct queue *q, struct plant_msg *msg, uint64_t seq, uint64_t delay_ms,
		       uint64_t now)
{
	struct qent e = {.msg = msg_ref(msg), .enq_at = now, .seq = seq};
	uint64_t delay = q->set.delay_ms + delay_ms;
	int rc;
	if (delay) {
		e.due = now + delay;
		rc = heap_push(&q->delayed, &e);
	} else {
		rc = ring_push_back(q, &e);
	}
	if (rc) {
		msg_unref(msg);
		return rc;
	}
	q->st.enqueued++;
	return PLANT_OK;
}

static bool has_room(const struct queue *q)
{
	return q->set.max_depth == 0 || depth(q) < q->set.max_depth;
}

int queue_push(struct queue *q, struct plant_msg *msg, const char *dedup_key, uint64_t delay_ms,
	       uint64_t now)
{
	return queue_push_all(&q, 1, msg, dedup_key, delay_ms, now);
}

static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t) * (struct queue *const *)a,
		  y = (uintptr_t) * (struct queue *const *)b;
	return x < y ? -1 : x > y;
}

int queue_push_all(struct queue **qs, size_t n, struct plant_msg *msg, const char *dedup_key,
		   uint64_t delay_ms, uint64_t now)
{
	struct queue *one[1], **v = qs;
	if (n > 1) {
		/* a consistent lock order across publishers */
		v = malloc(n * sizeof *v);
		if (!v)
			return PLANT_E_NOMEM;
		memcpy(v, qs, n * sizeof *v);
		qsort(v, n, sizeof *v, cmp_ptr);
	} else if (n == 1) {
		one[0] = qs[0];
		v = one;
	}
	for (size_t i = 0; i < n; i++)
		pthread_mutex_lock(&v[i]->lock);
	int rc = PLANT_OK;
	for (size_t i = 0; i < n; i++) {
		if (!has_room(v[i])) {
			v[i]->st.refused++;
			rc = PLANT_E_FULL;
		}
	}
	/* admit: a sequence number each, or a duplicate (UINT64_MAX) */
	uint64_t seq_one[1], *seq = n > 1 ? malloc(n * sizeof *seq) : seq_one;
	if (!seq && rc == PLANT_OK)
		rc = PLANT_E_NOMEM;
	bool durable = false;
	for (size_t i = 0; i < n && rc == PLANT_OK; i++) {
		seq[i] = UINT64_MAX;
		if (dedup_key) {
			dedup_purge(v[i], now);
			if (dedup_seen(v[i], dedup_key, now)) {
				v[i]->st.deduplicated++;
				continue;
			}
		}
		seq[i] = v[i]->next_seq++;
		if (v[i]->be) {
			v[i]->reserved++; /* room held while the record is written */
			durable = true;
		}
	}
	if (rc == PLANT_OK && !durable) {
		for (size_t i = 0; i < n; i++)
			if (seq[i] != UINT64_MAX)
				push_locked(v[i], msg, seq[i], delay_ms, now);
	}
	for (size_t i = n; i-- > 0;)
		pthread_mutex_unlock(&v[i]->lock);

	if (rc == PLANT_OK && durable) {
		/* Written before the publish reports success, outside the locks so
		 * that concurrent publishers share the backend's commits. */
		size_t written = 0;
		for (; written < n && rc == PLANT_OK; written++)
			if (seq[written] != UINT64_MAX && v[written]->be)
				rc = record_put(v[written], seq[written], msg, 0, now, now);
		if (rc != PLANT_OK) {
			/* all or nothing: take back what was written */
			for (size_t i = 0; i + 1 < written; i++)
				if (seq[i] != UINT64_MAX && v[i]->be)
					record_del(v[i], seq[i], now);
			rc = PLANT_E_IO;
		}
		for (size_t i = 0; i < n; i++) {
			if (seq[i] == UINT64_MAX)
				continue;
			pthread_mutex_lock(&v[i]->lock);
			if (v[i]->be)
				v[i]->reserved--;
			if (rc == PLANT_OK)
				push_locked(v[i], msg, seq[i], delay_ms, now);
			else if (dedup_key) /* not published: a retry must get in */
				json_object_del(v[i]->dedup, dedup_key);
			pthread_mutex_unlock(&v[i]->lock);
		}
	}
	if (seq != seq_one)
		free(seq);
	if (v != qs && v != one)
		free(v);
	return rc;
}

static void lock_sorted(struct queue **v, size_t n)
{
	qsort(v, n, sizeof *v, cmp_ptr);
	for (size_t i = 0; i < n; i++)
		pthread_mutex_lock(&v[i]->lock);
}

static void unlock_all(struct queue **v, size_t n)
{
	for (size_t i = n; i-- > 0;)
		pthread_mutex_unlock(&v[i]->lock);
}

int queue_push_batch(struct queue_push *items, size_t n, uint64_t now, bool all, size_t *done_out)
{
	int rc = PLANT_OK;
	size_t admitted = 0;
	/* 1. admit, in order, until one does not fit: room held, sequence set */
	for (; admitted < n; admitted++) {
		struct queue_push *it = &items[admitted];
		it->seqs = malloc((it->n_qs ? it->n_qs : 1) * sizeof *it->seqs);
		if (!it->seqs) {
			rc = PLANT_E_NOMEM;
			break;
		}
		lock_sorted(it->qs, it->n_qs);
		for (size_t i = 0; i < it->n_qs; i++) {
			if (!has_room(it->qs[i])) {
				it->qs[i]->st.refused++;
				rc = PLANT_E_FULL;
			}
		}
		for (size_t i = 0; i < it->n_qs && rc == PLANT_OK; i++) {
			struct queue *q = it->qs[i];
			it->seqs[i] = UINT64_MAX;
			if (it->dedup_key) {
				dedup_purge(q, now);
				if (dedup_seen(q, it->dedup_key, now)) {
					q->st.deduplicated++;
					continue;
				}
			}
			it->seqs[i] = q->next_seq++;
			q->reserved++;
		}
		unlock_all(it->qs, it->n_qs);
		if (rc != PLANT_OK) {
			free(it->seqs);
			it->seqs = NULL;
			break;
		}
	}

	/* all or nothing: one that did not fit gives back the room of the rest */
	int wrc = all && rc != PLANT_OK ? rc : PLANT_OK;

	/* 2. the durable records, one store batch per store */
	size_t n_ops = 0;
	for (size_t k = 0; k < admitted; k++)
		for (size_t i = 0; i < items[k].n_qs; i++)
			n_ops += items[k].qs[i]->be && items[k].seqs[i] != UINT64_MAX;
	if (n_ops && wrc == PLANT_OK) {
		struct plant_store_op *ops = calloc(n_ops, sizeof *ops);
		char(*keys)[300] = malloc(n_ops * sizeof *keys);
		struct queue **owner = malloc(n_ops * sizeof *owner);
		bool *done = calloc(n_ops, sizeof *done);
		size_t m = 0;
		if (!ops || !keys || !owner || !done)
			wrc = PLANT_E_NOMEM;
		for (size_t k = 0; k < admitted && !wrc; k++) {
			for (size_t i = 0; i < items[k].n_qs; i++) {
				struct queue *q = items[k].qs[i];
				if (!q->be || items[k].seqs[i] == UINT64_MAX)
					continue;
				ops[m].key = keys[m];
				ops[m].key_len =
					record_key(q, items[k].seqs[i], keys[m], sizeof keys[m]);
				ops[m].value_text =
					record_text(items[k].msg, 0, now, &ops[m].value_text_len);
				if (!ops[m].value_text)
					wrc = PLANT_E_NOMEM;
				owner[m++] = q;
			}
		}
		/* per store: the ops of queues on the same store handle */
		for (size_t a = 0; a < m && !wrc; a++) {
			if (done[a])
				continue;
			struct plant_store_op *grp = malloc(m * sizeof *grp);
			size_t g = 0;
			for (size_t b = a; grp && b < m; b++) {
				if (!done[b] && owner[b]->sh == owner[a]->sh) {
					grp[g++] = ops[b];
					done[b] = true;
				}
			}
			size_t failed = 0;
			int atomic = 0;
			wrc = grp ? owner[a]->be->batch(owner[a]->sh, grp, g, now, &failed, &atomic)
				  : PLANT_E_NOMEM;
			free(grp);
		}
		if (wrc) {
			/* all or nothing: take back what other stores took */
			for (size_t a = 0; a < m; a++)
				if (done[a])
					owner[a]->be->del(owner[a]->sh, ops[a].key, ops[a].key_len,
							  PLANT_PUT_ANY, 0, now);
			wrc = PLANT_E_IO;
		}
		for (size_t a = 0; a < m; a++)
			free((char *)ops[a].value_text);
		free(ops);
		free(keys);
		free(owner);
		free(done);
	}

	/* 3. visible, or the room given back */
	for (size_t k = 0; k < admitted; k++) {
		struct queue_push *it = &items[k];
		for (size_t i = 0; i < it->n_qs; i++) {
			if (it->seqs[i] == UINT64_MAX)
				continue;
			struct queue *q = it->qs[i];
			pthread_mutex_lock(&q->lock);
			q->reserved--;
			if (wrc == PLANT_OK)
				push_locked(q, it->msg, it->seqs[i], it->delay_ms, now);
			else if (it->dedup_key) /* not published: a retry must get in */
				json_object_del(q->dedup, it->dedup_key);
			pthread_mutex_unlock(&q->lock);
		}
		free(it->seqs);
		it->seqs = NULL;
	}
	*done_out = wrc ? 0 : admitted;
	return wrc ? wrc : rc;
}

/* ---- receiving ----------------------------------------------------------------------- */

static bool expired(const struct queue *q, const struct qent *e, uint64_t now)
{
	return q->set.retention_ms && e->enq_at + q->set.retention_ms <= now;
}

static uint32_t slot_take(struct queue *q)
{
	if (q->free_head != UINT32_MAX) {
		uint32_t i = q->free_head;
		q->free_head = q->slots[i].next_free;
		return i;
	}
	if (q->n_slots == q->cap_slots) {
		uint32_t cap = q->cap_slots ? q->cap_slots * 2 : 64;
		struct slot *v = realloc(q->slots, cap * sizeof *v);
		if (!v)
			return UINT32_MAX;
		q->slots = v;
		q->cap_slots = cap;
	}
	q->slots[q->n_slots].gen = 0;
	return q->n_slots++;
}

static void slot_release(struct queue *q, uint32_t i)
{
	q->slots[i].used = false;
	q->slots[i].gen++;
	q->slots[i].next_free = q->free_head;
	q->free_head = i;
	q->in_flight--;
}

size_t queue_receive(struct queue *q, struct delivery **out, size_t max, uint64_t now)
{
	return queue_receive_for(q, NULL, out, max, now);
}

size_t queue_receive_for(struct queue *q, const void *holder, struct delivery **out, size_t max,
			 uint64_t now)
{
	size_t n = 0;
	pthread_mutex_lock(&q->lock);
	while (n < max && (q->retry.len > 0 || q->len > 0)) {
		/* Messages read back after a stop may have been in flight when
		 * the process died: each goes alone, so that one that kills it
		 * takes no other message's receive count along. */
		const struct qent *next = q->retry.len ? &q->retry.v[0] : &q->ring[q->head];
		if (n > 0 && next->suspect && q->be)
			break;
		struct qent e = q->retry.len ? heap_pop(&q->retry) : ring_pop(q);
		if (expired(q, &e, now)) {
			q->st.expired++;
			dels_add(q, e.seq);
			qent_free(&e);
			continue;
		}
		uint32_t i = slot_take(q);
		struct delivery *d = malloc(sizeof *d);
		if (i == UINT32_MAX || !d) {
			free(d);
			if (i != UINT32_MAX) { /* the slot goes back unused */
				q->slots[i].next_free = q->free_head;
				q->free_head = i;
			}
			heap_push(&q->retry, &e);
			break;
		}
		e.receive_count++;
		/* the last error is that of the latest receive */
		free(e.last_error);
		e.last_error = NULL;
		e.due = now + q->set.visibility_timeout_ms;
		struct slot *s = &q->slots[i];
		s->e = e;
		s->holder = holder;
		s->used = true;
		q->in_flight++;
		*d = (struct delivery){.kind = MSG_KIND_DELIVERY};
		d->receive_count = e.receive_count;
		d->msg = msg_ref(e.msg);
		d->queue = q;
		d->receipt = ((uint64_t)s->gen << 32) | i;
		d->enq_at = e.enq_at;
		d->settled = 0;
		d->persist = e.suspect && q->be;
		s->e.suspect = 0;
		out[n++] = d;
		if (d->persist)
			break;
	}
	pthread_mutex_unlock(&q->lock);
	return n;
}

static struct slot *slot_of(struct queue *q, uint64_t receipt)
{
	uint32_t i = (uint32_t)receipt;
	if (i >= q->n_slots || !q->slots[i].used || q->slots[i].gen != (uint32_t)(receipt >> 32))
		return NULL;
	return &q->slots[i];
}

int queue_ack(struct queue *q, struct delivery *d)
{
	pthread_mutex_lock(&q->lock);
	struct slot *s = slot_of(q, d->receipt);
	if (!s) {
		pthread_mutex_unlock(&q->lock);
		return PLANT_E_NOTFOUND;
	}
	dels_add(q, s->e.seq);
	qent_free(&s->e);
	slot_release(q, (uint32_t)d->receipt);
	q->st.acked++;
	pthread_mutex_unlock(&q->lock);
	d->settled = 1;
	return PLANT_OK;
}

static void back_visible(struct queue *q, struct qent *e, uint64_t delay, uint64_t now)
{
	if (delay) {
		e->due = now + delay;
		heap_push(&q->delayed, e);
	} else {
		heap_push(&q->retry, e);
	}
}

/* A message that comes back: to the dead-letter queue (through `mv`) when it
 * has used its receives, else visible again (now or after `delay`). With q
 * locked. */
static void come_back(struct queue *q, struct qent *e, uint64_t delay, uint64_t now,
		      struct moves *mv)
{
	if (q->set.max_receive && e->receive_count >= q->set.max_receive && q->dlq) {
		json_t *attrs = e->msg->attrs ? json_deep_copy(e->msg->attrs) : json_object();
		char count[16];
		snprintf(count, sizeof count, "%u", e->receive_count);
		json_object_set_new(attrs, "dlq_source", json_string(q->name));
		json_object_set_new(attrs, "dlq_receive_count", json_string(count));
		if (e->last_error)
			json_object_set_new(attrs, "dlq_last_error", json_string(e->last_error));
		struct plant_msg *copy = msg_copy(e->msg, attrs, e->receive_count);
		if (copy && mv->n == mv->cap) {
			size_t cap = mv->cap ? mv->cap * 2 : 8;
			struct move *v = realloc(mv->v, cap * sizeof *v);
			if (v) {
				mv->v = v;
				mv->cap = cap;
			}
		}
		if (copy && mv->n < mv->cap) {
			mv->v[mv->n++] = (struct move){.e = *e, .copy = copy};
			return;
		}
		msg_unref(copy);
	}
	q->st.redelivered++;
	if (q->be) {
		/* A durable message comes back only once its new receive count is
		 * written, so that no consumer can ack it (and its record go)
		 * before the rewrite lands. */
		if (mv->n_u == mv->cap_u) {
			size_t cap = mv->cap_u ? mv->cap_u * 2 : 8;
			struct update *u = realloc(mv->u, cap * sizeof *u);
			if (u) {
				mv->u = u;
				mv->cap_u = cap;
			}
		}
		if (mv->n_u < mv->cap_u) {
			mv->u[mv->n_u++] = (struct update){.e = *e, .delay = delay};
			q->reserved++;
			return;
		}
	}
	back_visible(q, e, delay, now);
}

/* With q unlocked: push the dead-letter copies; one that does not fit (the
 * dead-letter queue is full) stays in q rather than being lost. */
static void moves_flush(struct queue *q, struct moves *mv, uint64_t now)
{
	for (size_t i = 0; i < mv->n; i++) {
		struct move *m = &mv->v[i];
		int rc = queue_push(q->dlq, m->copy, NULL, 0, now);
		msg_unref(m->copy);
		pthread_mutex_lock(&q->lock);
		if (rc == PLANT_OK) {
			q->st.dead_lettered++;
			dels_add(q, m->e.seq);
			qent_free(&m->e);
		} else {
			q->st.redelivered++;
			heap_push(&q->retry, &m->e);
		}
		pthread_mutex_unlock(&q->lock);
	}
	free(mv->v);
	/* receive counts survive a restart: a message cannot dodge max_receive
	 * by a clean restart (a crash while it is handled still can) */
	for (size_t i = 0; i < mv->n_u; i++) {
		struct update *u = &mv->u[i];
		record_put(q, u->e.seq, u->e.msg, u->e.receive_count, u->e.enq_at, now);
		pthread_mutex_lock(&q->lock);
		q->reserved--;
		back_visible(q, &u->e, u->delay, now);
		pthread_mutex_unlock(&q->lock);
	}
	free(mv->u);
}

int queue_nack(struct queue *q, struct delivery *d, uint64_t delay_ms, const char *reason,
	       uint64_t now)
{
	pthread_mutex_lock(&q->lock);
	struct slot *s = slot_of(q, d->receipt);
	if (!s) {
		pthread_mutex_unlock(&q->lock);
		return PLANT_E_NOTFOUND;
	}
	struct qent e = s->e;
	slot_release(q, (uint32_t)d->receipt);
	if (reason) {
		free(e.last_error);
		e.last_error = strdup(reason);
	}
	struct moves mv = {0};
	come_back(q, &e, delay_ms, now, &mv);
	pthread_mutex_unlock(&q->lock);
	moves_flush(q, &mv, now);
	d->settled = 1;
	return PLANT_OK;
}

int queue_reject(struct queue *q, struct delivery *d, const char *reason, uint64_t now)
{
	/* a full dead-letter queue refuses now, leaving the message in flight
	 * (the plugin nacks it, or it times out): no spin of reject, come
	 * back, reject */
	if (q->dlq && queue_room(q->dlq) == 0)
		return PLANT_E_FULL;
	pthread_mutex_lock(&q->lock);
	struct slot *s = q->dlq ? slot_of(q, d->receipt) : NULL;
	if (!s) {
		int rc = q->dlq ? PLANT_E_NOTFOUND : PLANT_E_UNSUPPORTED;
		pthread_mutex_unlock(&q->lock);
		return rc;
	}
	struct moves mv = {0};
	json_t *attrs = s->e.msg->attrs ? json_deep_copy(s->e.msg->attrs) : json_object();
	char count[16];
	snprintf(count, sizeof count, "%u", s->e.receive_count);
	json_object_set_new(attrs, "dlq_source", json_string(q->name));
	json_object_set_new(attrs, "dlq_receive_count", json_string(count));
	json_object_set_new(attrs, "dlq_reason", json_string(reason ? reason : "rejected"));
	struct plant_msg *copy = msg_copy(s->e.msg, attrs, s->e.receive_count);
	mv.v = copy ? malloc(sizeof *mv.v) : NULL;
	if (!mv.v) {
		msg_unref(copy);
		pthread_mutex_unlock(&q->lock);
		return PLANT_E_NOMEM;
	}
	mv.v[0] = (struct move){.e = s->e, .copy = copy};
	mv.n = mv.cap = 1;
	slot_release(q, (uint32_t)d->receipt);
	pthread_mutex_unlock(&q->lock);
	moves_flush(q, &mv, now);
	d->settled = 1;
	return PLANT_OK;
}

void queue_note(struct queue *q, struct delivery *d, const char *reason)
{
	pthread_mutex_lock(&q->lock);
	struct slot *s = slot_of(q, d->receipt);
	if (s && reason) {
		free(s->e.last_error);
		s->e.last_error = strdup(reason);
	}
	pthread_mutex_unlock(&q->lock);
}

int queue_return(struct queue *q, struct delivery *d, uint64_t now)
{
	pthread_mutex_lock(&q->lock);
	struct slot *s = slot_of(q, d->receipt);
	if (!s) {
		pthread_mutex_unlock(&q->lock);
		return PLANT_E_NOTFOUND;
	}
	struct qent e = s->e;
	slot_release(q, (uint32_t)d->receipt);
	/* nobody saw it: this receive does not count */
	if (e.receive_count)
		e.receive_count--;
	heap_push(&q->retry, &e);
	pthread_mutex_unlock(&q->lock);
	d->settled = 1;
	return PLANT_OK;
}

void delivery_free(struct delivery *d)
{
	if (!d)
		return;
	msg_unref(d->msg);
	free(d);
}

void queue_release_holder(struct queue *q, const void *holder, uint64_t now)
{
	struct moves mv = {0};
	pthread_mutex_lock(&q->lock);
	for (uint32_t i = 0; i < q->n_slots; i++) {
		struct slot *s = &q->slots[i];
		if (!s->used || s->holder != holder)
			continue;
		struct qent e = s->e;
		slot_release(q, i);
		if (!e.last_error)
			e.last_error = strdup("its consumer went away");
		come_back(q, &e, 0, now, &mv);
	}
	pthread_mutex_unlock(&q->lock);
	moves_flush(q, &mv, now);
}

uint64_t queue_tick(struct queue *q, uint64_t now)
{
	uint64_t next = UINT64_MAX;
	struct moves mv = {0};
	pthread_mutex_lock(&q->lock);
	for (uint32_t i = 0; i < q->n_slots; i++) {
		struct slot *s = &q->slots[i];
		if (!s->used)
			continue;
		if (s->e.due > now) {
			if (s->e.due - now < next)
				next = s->e.due - now;
			continue;
		}
		struct qent e = s->e;
		slot_release(q, i);
		if (!e.last_error)
			e.last_error = strdup("visibility timeout");
		come_back(q, &e, 0, now, &mv);
	}
	while (q->delayed.len && q->delayed.v[0].due <= now) {
		struct qent e = heap_pop(&q->delayed);
		/* first deliveries join the ring; redeliveries keep their place */
		if (e.receive_count)
			heap_push(&q->retry, &e);
		else
			ring_push_back(q, &e);
	}
	if (q->delayed.len && q->delayed.v[0].due - now < next)
		next = q->delayed.v[0].due - now;
	while (q->retry.len && expired(q, &q->retry.v[0], now)) {
		struct qent e = heap_pop(&q->retry);
		q->st.expired++;
		dels_add(q, e.seq);
		qent_free(&e);
	}
	while (q->len && expired(q, &q->ring[q->head], now)) {
		struct qent e = ring_pop(q);
		q->st.expired++;
		dels_add(q, e.seq);
		qent_free(&e);
	}
	if (q->len && q->set.retention_ms) {
		uint64_t exp = q->ring[q->head].enq_at + q->set.retention_ms - now;
		if (exp < next)
			next = exp;
	}
	pthread_mutex_unlock(&q->lock);
	moves_flush(q, &mv, now);
	return next;
}

uint64_t queue_room(struct queue *q)
{
	pthread_mutex_lock(&q->lock);
	uint64_t d = depth(q);
	uint64_t room = q->set.max_depth == 0	? UINT64_MAX
			: d >= q->set.max_depth ? 0
						: q->set.max_depth - d;
	pthread_mutex_unlock(&q->lock);
	return room;
}

size_t queue_visible(struct queue *q)
{
	pthread_mutex_lock(&q->lock);
	size_t n = q->len + q->retry.len;
	pthread_mutex_unlock(&q->lock);
	return n;
}

void queue_stats_get(struct queue *q, uint64_t now, struct queue_stats *out)
{
	pthread_mutex_lock(&q->lock);
	*out = q->st;
	out->visible = q->len + q->retry.len;
	out->delayed = q->delayed.len;
	out->in_flight = q->in_flight;
	out->depth = depth(q);
	uint64_t oldest = UINT64_MAX;
	for (size_t i = 0; i < q->len; i++) {
		uint64_t t = q->ring[(q->head + i) % q->cap].enq_at;
		if (t < oldest)
			oldest = t;
		break; /* the ring is in enqueue order */
	}
	for (size_t i = 0; i < q->delayed.len; i++)
		if (q->delayed.v[i].enq_at < oldest)
			oldest = q->delayed.v[i].enq_at;
	if (q->retry.len && q->retry.v[0].enq_at < oldest)
		oldest = q->retry.v[0].enq_at;
	for (uint32_t i = 0; i < q->n_slots; i++)
		if (q->slots[i].used && q->slots[i].e.enq_at < oldest)
			oldest = q->slots[i].e.enq_at;
	out->oldest_ms = oldest == UINT64_MAX || oldest > now ? 0 : now - oldest;
	pthread_mutex_unlock(&q->lock);
}

json_t *queue_stats_json(struct queue *q, uint64_t now)
{
	struct queue_stats s;
	queue_stats_get(q, now, &s);
	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s?}",
			 "name", q->name, "depth", (json_int_t)s.depth, "visible",
			 (json_int_t)s.visible, "delayed", (json_int_t)s.delayed, "in_flight",
			 (json_int_t)s.in_flight, "oldest_age_ms", (json_int_t)s.oldest_ms,
			 "enqueued", (json_int_t)s.enqueued, "acked", (json_int_t)s.acked,
			 "redelivered", (json_int_t)s.redelivered, "dead_lettered",
			 (json_int_t)s.dead_lettered, "expired", (json_int_t)s.expired,
			 "deduplicated", (json_int_t)s.deduplicated, "refused",
			 (json_int_t)s.refused, "dead_letter", q->dlq ? q->dlq->name : NULL);
}

static int cmp_seq(const void *a, const void *b)
{
	uint64_t x = ((const struct qent *)a)->seq, y = ((const struct qent *)b)->seq;
	return x < y ? -1 : x > y;
}

json_t *queue_peek(struct queue *q, size_t max)
{
	json_t *arr = json_array();
	pthread_mutex_lock(&q->lock);
	/* the retry heap in its order of delivery, then the ring */
	struct qent *retry = malloc((q->retry.len ? q->retry.len : 1) * sizeof *retry);
	size_t n_retry = retry ? q->retry.len : 0;
	if (n_retry) {
		memcpy(retry, q->retry.v, n_retry * sizeof *retry);
		qsort(retry, n_retry, sizeof *retry, cmp_seq);
	}
	for (size_t i = 0; i < n_retry + q->len && i < max; i++) {
		const struct qent *e =
			i < n_retry ? &retry[i] : &q->ring[(q->head + i - n_retry) % q->cap];
		json_t *body = json_loadb(e->msg->text, e->msg->len, JSON_DECODE_ANY, NULL);
		json_array_append_new(
			arr, json_pack("{s:s, s:s, s:I, s:i, s:o, s:O?}", "id", e->msg->id, "topic",
				       e->msg->topic, "ts", (json_int_t)e->msg->ts, "receive_count",
				       (int)e->receive_count, "body", body ? body : json_null(),
				       "attributes", e->msg->attrs));
	}
	pthread_mutex_unlock(&q->lock);
	free(retry);
	return arr;
}
