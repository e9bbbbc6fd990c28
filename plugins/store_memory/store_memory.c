/* store_memory: the store kind "memory", a table in memory per store.
 *
 * For tests and throwaway sites: nothing survives a restart. Each store is a
 * chained hash table of items (key bytes, a private deep copy of the value,
 * a version, an expiry) behind one read-write lock; scan() collects the
 * matching keys and sorts them. Expired items stay in the table, invisible,
 * until expire() removes them. See README.md.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plantd/plantd.h>

#define KEY_MAX	    1024
#define MIN_BUCKETS 16
#define NO_PREVIOUS SIZE_MAX

/* No keys: the instance only offers the kind; stores need no settings. */
static const struct plant_config_key config_keys[] = {
	{.name = NULL, .type = PLANT_CFG_END},
};

struct plugin {
	plant_instance *self;
	const struct plant_host_api *api;
	atomic_size_t open_stores;
};

struct item {
	struct item *next; /* the hash chain */
	uint64_t hash;
	uint64_t version;
	uint64_t expires_at; /* host ms; 0: never */
	json_t *value;	     /* our own copy: never handed out, never modified */
	size_t key_len;
	char key[];
};

struct mstore {
	pthread_rwlock_t lock; /* read: get, scan, health; write: the rest */
	struct item **buckets;
	size_t nbuckets; /* a power of two */
	size_t count;	 /* items held, expired ones included */
	struct plugin *owner;
};

/* ---- keys and items ------------------------------------------------------ */

static bool key_ok(const char *key, size_t len)
{
	return key && len >= 1 && len <= KEY_MAX;
}

/* FNV-1a, 64 bits. */
static uint64_t key_hash(const char *key, size_t len)
{
	uint64_t h = 0xcbf29ce484222325u;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)key[i];
		h *= 0x100000001b3u;
	}
	return h;
}

/* Byte-wise order: memcmp, then the shorter first. */
static int key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static bool live(const struct item *it, uint64_t now)
{
	return it->expires_at == 0 || now < it->expires_at;
}

static uint64_t expiry(uint64_t now, uint64_t ttl_ms)
{
	if (ttl_ms == 0)
		return 0;
	return ttl_ms > UINT64_MAX - now ? UINT64_MAX : now + ttl_ms;
}

/* A new item holding a deep copy of `value`, not yet in any table. */
static struct item *item_new(const char *key, size_t len, uint64_t hash, const json_t *value)
{
	struct item *it = malloc(sizeof(*it) + len);

	if (!it)
		return NULL;
	it->value = json_deep_copy(value);
	if (!it->value) {
		free(it);
		return NULL;
	}
	it->next = NULL;
	it->hash = hash;
	it->version = 0;
	it->expires_at = 0;
	it->key_len = len;
	memcpy(it->key, key, len);
	return it;
}

static void item_free(struct item *it)
{
	if (!it)
		return;
	json_decref(it->value);
	free(it);
}

/* ---- the hash table (callers hold the lock) ------------------------------ */

/* The link that points at the item with this key, or at the chain's end. */
static struct item **find_link(struct mstore *st, const char *key, size_t len, uint64_t hash)
{
	struct item **link = &st->buckets[hash & (st->nbuckets - 1)];

	for (; *link; link = &(*link)->next) {
		const struct item *it = *link;

		if (it->hash == hash && it->key_len == len && memcmp(it->key, key, len) == 0)
			break;
	}
	return link;
}

static struct item *find(struct mstore *st, const char *key, size_t len, uint64_t hash)
{
	return *find_link(st, key, len, hash);
}

/* Room for `extra` more items at a load factor of at most 1. */
static bool reserve(struct mstore *st, size_t extra)
{
	size_t want, n = st->nbuckets;
	struct item **b;

	if (extra > SIZE_MAX - st->count)
		return false;
	want = st->count + extra;
	if (want <= n)
		return true;
	while (n < want) {
		if (n > SIZE_MAX / 2 / sizeof(*b))
			return false;
		n *= 2;
	}
	b = calloc(n, sizeof(*b));
	if (!b)
		return false;
	for (size_t i = 0; i < st->nbuckets; i++) {
		struct item *it = st->buckets[i], *next;

		for (; it; it = next) {
			next = it->next;
			it->next = b[it->hash & (n - 1)];
			b[it->hash & (n - 1)] = it;
		}
	}
	free(st->buckets);
	st->buckets = b;
	st->nbuckets = n;
	return true;
}

/* The caller has reserved room. */
static void insert(struct mstore *st, struct item *it)
{
	struct item **head = &st->buckets[it->hash & (st->nbuckets - 1)];

	it->next = *head;
	*head = it;
	st->count++;
}

static void unlink_free(struct mstore *st, struct item **link)
{
	struct item *it = *link;

	*link = it->next;
	st->count--;
	item_free(it);
}

/* ---- conditions ---------------------------------------------------------- */

/* A put on a key whose live item has `cur` (0: none). */
static int put_check(int cond, uint64_t version, uint64_t cur)
{
	switch (cond) {
	case PLANT_PUT_ANY:
		return PLANT_OK;
	case PLANT_PUT_IF_ABSENT:
		return cur == 0 ? PLANT_OK : PLANT_E_CONDITION;
	case PLANT_PUT_IF_VERSION:
		return cur != 0 && cur == version ? PLANT_OK : PLANT_E_CONDITION;
	default:
		return PLANT_E_INVALID;
	}
}

static int del_check(int cond, uint64_t version, uint64_t cur)
{
	switch (cond) {
	case PLANT_PUT_ANY:
		return cur != 0 ? PLANT_OK : PLANT_E_NOTFOUND;
	case PLANT_PUT_IF_VERSION:
		return cur != 0 && cur == version ? PLANT_OK : PLANT_E_CONDITION;
	default: /* IF_ABSENT makes no sense for a delete */
		return PLANT_E_INVALID;
	}
}

static bool cond_ok(int is_delete, int cond)
{
	if (cond == PLANT_PUT_ANY || cond == PLANT_PUT_IF_VERSION)
		return true;
	return !is_delete && cond == PLANT_PUT_IF_ABSENT;
}

/* The version of the live item `it` (may be NULL), or 0. */
static uint64_t live_version(const struct item *it, uint64_t now)
{
	return it && live(it, now) ? it->version : 0;
}

/* ---- the backend ---------------------------------------------------------- */

static int ms_open(void *backend_state, const char *name, const json_t *settings,
		   const char *data_dir, void **store_out, char *err, size_t errlen)
{
	struct plugin *p = backend_state;
	struct mstore *st = calloc(1, sizeof(*st));

	(void)settings; /* nothing to read: a memory store has no settings */
	(void)data_dir;
	if (st)
		st->buckets = calloc(MIN_BUCKETS, sizeof(*st->buckets));
	if (!st || !st->buckets || pthread_rwlock_init(&st->lock, NULL) != 0) {
		if (st)
			free(st->buckets);
		free(st);
		if (err && errlen)
			snprintf(err, errlen, "out of memory");
		return PLANT_E_NOMEM;
	}
	st->nbuckets = MIN_BUCKETS;
	st->owner = p;
	atomic_fetch_add(&p->open_stores, 1);
	p->api->log(p->self, PLANT_LOG_DEBUG, "memory store \"%s\" opened", name ? name : "");
	*store_out = st;
	return PLANT_OK;
}

static void ms_close(void *store)
{
	struct mstore *st = store;

	if (!st)
		return;
	for (size_t i = 0; i < st->nbuckets; i++) {
		struct item *it = st->buckets[i], *next;

		for (; it; it = next) {
			next = it->next;
			item_free(it);
		}
	}
	free(st->buckets);
	pthread_rwlock_destroy(&st->lock);
	atomic_fetch_sub(&st->owner->open_stores, 1);
	free(st);
}

static int ms_get(void *store, const char *key, size_t key_len, uint64_t now, json_t **value_out,
		  uint64_t *version_out)
{
	struct mstore *st = store;
	const struct item *it;
	json_t *copy = NULL;
	uint64_t version;

	if (!key_ok(key, key_len))
		return PLANT_E_INVALID;
	pthread_rwlock_rdlock(&st->lock);
	it = find(st, key, key_len, key_hash(key, key_len));
	if (!it || !live(it, now)) {
		pthread_rwlock_unlock(&st->lock);
		return PLANT_E_NOTFOUND;
	}
	version = it->version;
	if (value_out)
		copy = json_deep_copy(it->value);
	pthread_rwlock_unlock(&st->lock);

	if (value_out && !copy)
		return PLANT_E_NOMEM;
	if (value_out)
		*value_out = copy;
	if (version_out)
		*version_out = version;
	return PLANT_OK;
}

static int ms_put(void *store, const char *key, size_t key_len, const json_t *value, int cond,
		  uint64_t version, uint64_t ttl_ms, uint64_t now, uint64_t *version_out)
{
	struct mstore *st = store;
	uint64_t hash, cur;
	struct item *fresh, *it;
	int rc;

	if (!key_ok(key, key_len) || !value || !cond_ok(0, cond))
		return PLANT_E_INVALID;
	/* Copy outside the lock; the item is wasted when the key exists. */
	hash = key_hash(key, key_len);
	fresh = item_new(key, key_len, hash, value);
	if (!fresh)
		return PLANT_E_NOMEM;

	pthread_rwlock_wrlock(&st->lock);
	it = find(st, key, key_len, hash);
	cur = live_version(it, now);
	rc = put_check(cond, version, cur);
	if (rc == PLANT_OK && !it) {
		if (reserve(st, 1)) {
			insert(st, fresh);
			it = fresh;
			fresh = NULL;
		} else {
			rc = PLANT_E_NOMEM;
		}
	} else if (rc == PLANT_OK) {
		json_t *old = it->value;

		it->value = fresh->value;
		fresh->value = old;
	}
	if (rc == PLANT_OK) {
		it->version = cur + 1; /* 1 when absent or expired */
		it->expires_at = expiry(now, ttl_ms);
		if (version_out)
			*version_out = it->version;
	}
	pthread_rwlock_unlock(&st->lock);
	item_free(fresh);
	return rc;
}

static int ms_del(void *store, const char *key, size_t key_len, int cond, uint64_t version,
		  uint64_t now)
{
	struct mstore *st = store;
	struct item **link;
	int rc;

	if (!key_ok(key, key_len) || !cond_ok(1, cond))
		return PLANT_E_INVALID;
	pthread_rwlock_wrlock(&st->lock);
	link = find_link(st, key, key_len, key_hash(key, key_len));
	rc = del_check(cond, version, live_version(*link, now));
	if (rc == PLANT_OK)
		unlink_free(st, link);
	pthread_rwlock_unlock(&st->lock);
	return rc;
}

/* Keys that are UTF-8 without NUL come as strings; others as hex. */
static bool key_is_text(const char *key, size_t len)
{
	const unsigned char *s = (const unsigned char *)key;
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i];
		size_t n;
		uint32_t cp, min;

		if (c == 0)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 2;
			cp = c & 0x1f;
			min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 3;
			cp = c & 0x0f;
			min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 4;
			cp = c & 0x07;
			min = 0x10000;
		} else {
			return false;
		}
		if (len - i < n)
			return false;
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n;
	}
	return true;
}

static json_t *key_json(const struct item *it, const char **field)
{
	static const char hex[] = "0123456789abcdef";
	char buf[2 * KEY_MAX + 1];

	if (key_is_text(it->key, it->key_len)) {
		*field = "key";
		return json_stringn(it->key, it->key_len);
	}
	for (size_t i = 0; i < it->key_len; i++) {
		buf[2 * i] = hex[(unsigned char)it->key[i] >> 4];
		buf[2 * i + 1] = hex[(unsigned char)it->key[i] & 0xf];
	}
	*field = "key_hex";
	return json_stringn(buf, 2 * it->key_len);
}

/* {"key": K, "value": V, "version": N}, or NULL when out of memory. */
static json_t *scan_entry(const struct item *it)
{
	const char *field;
	json_t *key = key_json(it, &field);
	json_t *o = json_object();

	if (!o) {
		json_decref(key);
		return NULL;
	}
	if (json_object_set_new(o, field, key) != 0 ||
	    json_object_set_new(o, "value", json_deep_copy(it->value)) != 0 ||
	    json_object_set_new(o, "version", json_integer((json_int_t)it->version)) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int item_order(const void *a, const void *b)
{
	const struct item *x = *(const struct item *const *)a;
	const struct item *y = *(const struct item *const *)b;

	return key_cmp(x->key, x->key_len, y->key, y->key_len);
}

static int ms_scan(void *store, const char *prefix, size_t prefix_len, const char *after,
		   size_t after_len, size_t limit, uint64_t now, json_t **items_out)
{
	struct mstore *st = store;
	const struct item **hits = NULL;
	size_t n = 0;
	json_t *out;
	int rc = PLANT_OK;

	if ((!prefix && prefix_len > 0) || !items_out)
		return PLANT_E_INVALID;
	out = json_array();
	if (!out)
		return PLANT_E_NOMEM;

	pthread_rwlock_rdlock(&st->lock);
	if (st->count > 0) {
		hits = malloc(st->count * sizeof(*hits));
		if (!hits)
			rc = PLANT_E_NOMEM;
	}
	for (size_t b = 0; hits && b < st->nbuckets; b++) {
		for (const struct item *it = st->buckets[b]; it; it = it->next) {
			if (!live(it, now) || it->key_len < prefix_len ||
			    (prefix_len && memcmp(it->key, prefix, prefix_len) != 0))
				continue;
			if (after && key_cmp(it->key, it->key_len, after, after_len) <= 0)
				continue;
			hits[n++] = it;
		}
	}
	if (n > 1)
		qsort(hits, n, sizeof(*hits), item_order);
	if (limit && n > limit)
		n = limit;
	for (size_t i = 0; rc == PLANT_OK && i < n; i++) {
		if (json_array_append_new(out, scan_entry(hits[i])) != 0)
			rc = PLANT_E_NOMEM;
	}
	pthread_rwlock_unlock(&st->lock);

	free(hits);
	if (rc != PLANT_OK) {
		json_decref(out);
		return rc;
	}
	*items_out = out;
	return PLANT_OK;
}

/* ---- batches --------------------------------------------------------------
 *
 * All or nothing under the write lock: first every condition is checked
 * against the state the earlier ops of the batch would leave (so "create k,
 * then update k at version 1" works), then everything is applied. Whatever
 * could fail (copies, items, table growth) is done before anything changes.
 */

struct bop {
	struct item *fresh; /* puts: the item ready to insert */
	size_t previous;    /* the last earlier op on the same key, or NO_PREVIOUS */
	uint64_t result;    /* the key's live version after this op (0: none) */
};

struct bref {
	const struct plant_store_op *op;
	size_t i;
};

static int bref_order(const void *a, const void *b)
{
	const struct bref *x = a, *y = b;
	int c = key_cmp(x->op->key, x->op->key_len, y->op->key, y->op->key_len);

	if (c != 0)
		return c;
	return x->i < y->i ? -1 : x->i > y->i;
}

/* bop[i].previous for every op before `n`, through a sort by key. */
static bool link_same_keys(const struct plant_store_op *ops, size_t n, struct bop *bop)
{
	struct bref *refs = malloc((n ? n : 1) * sizeof(*refs));

	if (!refs)
		return false;
	for (size_t i = 0; i < n; i++) {
		refs[i].op = &ops[i];
		refs[i].i = i;
	}
	qsort(refs, n, sizeof(*refs), bref_order);
	for (size_t k = 0; k < n; k++) {
		bool same = k > 0 && key_cmp(refs[k].op->key, refs[k].op->key_len,
					     refs[k - 1].op->key, refs[k - 1].op->key_len) == 0;

		bop[refs[k].i].previous = same ? refs[k - 1].i : NO_PREVIOUS;
	}
	free(refs);
	return true;
}

static int ms_batch(void *store, const struct plant_store_op *ops, size_t n, uint64_t now,
		    size_t *failed_out, int *atomic_out)
{
	struct mstore *st = store;
	struct bop *bop = NULL;
	size_t bad = n, failed = n, puts = 0;
	int rc = PLANT_OK;

	if (atomic_out)
		*atomic_out = 1;
	if (!ops && n > 0) {
		if (failed_out)
			*failed_out = 0;
		return PLANT_E_INVALID;
	}
	/* The first malformed op fails the batch, unless an earlier op's
	 * condition fails first: only the ops before it are prepared. */
	for (size_t i = 0; i < n; i++) {
		const struct plant_store_op *op = &ops[i];

		if (!key_ok(op->key, op->key_len) || !cond_ok(op->is_delete, op->cond) ||
		    (!op->is_delete && !op->value && !op->value_text)) {
			bad = i;
			break;
		}
	}
	if (bad > 0) {
		bop = calloc(bad, sizeof(*bop));
		if (!bop || !link_same_keys(ops, bad, bop)) {
			failed = 0;
			rc = PLANT_E_NOMEM;
			goto out;
		}
	}
	for (size_t i = 0; i < bad; i++) {
		const struct plant_store_op *op = &ops[i];

		if (op->is_delete)
			continue;
		json_t *parsed = NULL;
		if (!op->value) /* given as text: kept as a tree here */
			parsed = json_loadb(op->value_text, op->value_text_len,
					    JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
		bop[i].fresh = item_new(op->key, op->key_len, key_hash(op->key, op->key_len),
					op->value ? op->value : parsed);
		json_decref(parsed);
		if (!bop[i].fresh) {
			failed = i;
			rc = PLANT_E_NOMEM;
			goto out;
		}
		puts++;
	}

	pthread_rwlock_wrlock(&st->lock);
	for (size_t i = 0; i < bad && rc == PLANT_OK; i++) {
		const struct plant_store_op *op = &ops[i];
		size_t p = bop[i].previous;
		uint64_t cur;

		if (p != NO_PREVIOUS)
			cur = bop[p].result;
		else
			cur = live_version(
				find(st, op->key, op->key_len, key_hash(op->key, op->key_len)),
				now);
		if (op->is_delete) {
			rc = del_check(op->cond, op->version, cur);
			bop[i].result = 0;
		} else {
			rc = put_check(op->cond, op->version, cur);
			bop[i].result = cur + 1;
		}
		if (rc != PLANT_OK)
			failed = i;
	}
	if (rc == PLANT_OK && bad < n) {
		failed = bad;
		rc = PLANT_E_INVALID;
	}
	if (rc == PLANT_OK && !reserve(st, puts)) {
		failed = 0;
		rc = PLANT_E_NOMEM;
	}
	for (size_t i = 0; i < bad && rc == PLANT_OK; i++) {
		const struct plant_store_op *op = &ops[i];
		struct item **link =
			find_link(st, op->key, op->key_len, key_hash(op->key, op->key_len));
		struct item *it = *link;

		if (op->is_delete) {
			unlink_free(st, link); /* checked: it is there and live */
			continue;
		}
		if (it) {
			json_t *old = it->value;

			it->value = bop[i].fresh->value;
			bop[i].fresh->value = old;
		} else {
			it = bop[i].fresh;
			bop[i].fresh = NULL;
			insert(st, it);
		}
		it->version = bop[i].result;
		it->expires_at = expiry(now, op->ttl_ms);
	}
	pthread_rwlock_unlock(&st->lock);

out:
	for (size_t i = 0; bop && i < bad; i++)
		item_free(bop[i].fresh);
	free(bop);
	if (failed_out)
		*failed_out = failed; /* n when nothing failed */
	return rc;
}

static size_t ms_expire(void *store, uint64_t now)
{
	struct mstore *st = store;
	size_t removed = 0;

	pthread_rwlock_wrlock(&st->lock);
	for (size_t b = 0; b < st->nbuckets; b++) {
		struct item **link = &st->buckets[b];

		while (*link) {
			if (live(*link, now)) {
				link = &(*link)->next;
			} else {
				unlink_free(st, link);
				removed++;
			}
		}
	}
	pthread_rwlock_unlock(&st->lock);
	return removed;
}

static int ms_health(void *store, json_t **detail_out)
{
	struct mstore *st = store;
	size_t count;

	pthread_rwlock_rdlock(&st->lock);
	count = st->count;
	pthread_rwlock_unlock(&st->lock);
	if (detail_out)
		*detail_out = json_pack("{s:I}", "items", (json_int_t)count);
	return PLANT_OK;
}

static const struct plant_store_backend backend = {
	.struct_size = sizeof(struct plant_store_backend),
	.open = ms_open,
	.close = ms_close,
	.get = ms_get,
	.put = ms_put,
	.del = ms_del,
	.scan = ms_scan,
	.batch = ms_batch,
	.expire = ms_expire,
	.health = ms_health,
};

/* ---- the plugin ------------------------------------------------------------ */

static int mem_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		    void **state_out)
{
	struct plugin *p;
	int rc;

	(void)config;
	if (!PLANT_API_HAS(api, store_register)) {
		api->error(self, NULL, "this host has no stores (they need plantd SDK 1.2)");
		return PLANT_E_UNSUPPORTED;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	p->self = self;
	p->api = api;
	atomic_init(&p->open_stores, 0);
	rc = api->store_register(self, "memory", &backend, p);
	if (rc != PLANT_OK) {
		api->error(self, NULL, "cannot offer the store kind \"memory\": %s",
			   plant_status_name(rc));
		free(p);
		return rc;
	}
	*state_out = p;
	return PLANT_OK;
}

static void mem_destroy(void *state)
{
	free(state);
}

static int mem_health(void *state, json_t **detail_out)
{
	struct plugin *p = state;

	*detail_out = json_pack("{s:I}", "stores", (json_int_t)atomic_load(&p->open_stores));
	return PLANT_OK;
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "store_memory",
	.version = "1.0.0",
	.description = "the store kind \"memory\": tables in memory, for tests and throwaway sites",
	.config_keys = config_keys,
	.init = mem_init,
	.destroy = mem_destroy,
	.health = mem_health,
};
