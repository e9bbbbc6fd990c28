/* The HTTP client (httpc.h).
 *
 * Requests are queued from any thread and taken up by the client's loop,
 * which adds them to one curl multi handle: connections are kept and
 * reused per host. libcurl tells the loop which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION) and when to wake (CURLMOPT_TIMERFUNCTION). A
 * finished transfer's result goes to its callback on the loop's thread. */
#include "httpc.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "log.h"

#define DEFAULT_TIMEOUT_MS 30000
#define MAX_BODY	   (64u << 20) /* an answer larger than this fails */

/* A result and what it points into. `pub` first: a result pointer is one. */
struct hres {
	struct plant_http_result pub;
	char *body;
	size_t body_len, body_cap;
	char *hdrs; /* "Name: value\r\n"... of the last response */
	size_t hdrs_len, hdrs_cap;
	char err[CURL_ERROR_SIZE];
	bool too_big;
	char **hv; /* name, value, ... into hdrs, once the transfer ended */
	size_t n_hv;
};

struct hreq {
	struct hreq *next;
	struct httpc *c;
	void *owner;
	httpc_done_fn done;
	void *ud;
	CURL *easy;
	struct curl_slist *headers;
	char *method, *url, *body, *sigv4, *userpwd;
	size_t body_len;
	uint64_t timeout_ms, started_us;
	struct hres res;
	bool cancelled;
};

struct sock {
	struct event *ev;
	struct httpc *c;
	curl_socket_t fd;
};

struct httpc {
	pthread_t tid;
	struct event_base *base;
	struct event *wake, *timer;
	CURLM *multi;
	pthread_mutex_t lock;
	pthread_cond_t settled;
	struct hreq *queued;  /* submitted, not yet on the multi handle */
	struct hreq *running; /* on the multi handle (the loop's own list) */
	void *cancel_owner;   /* under lock: complete this owner's requests */
	size_t cancels;	      /* under lock: cancel passes done */
	bool stopping;
	char *region, *key, *secret, *token;
	atomic_ullong sent, ok, failed, timeouts, cancelled;
	atomic_llong in_flight;
};

/* ---- settings --------------------------------------------------------------------- */

static const char *const aws_keys[] = {"region", "access_key_id", "secret_access_key",
				       "session_token", NULL};

int httpc_check_aws(const json_t *aws, char *err, size_t errlen)
{
	if (!aws)
		return PLANT_OK;
	if (!json_is_object(aws)) {
		snprintf(err, errlen, "'aws' must be a group: aws = { region = \"...\"; };");
		return PLANT_E_CONFIG;
	}
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)aws, k, v)
	{
		bool known = false;
		for (size_t i = 0; aws_keys[i] && !known; i++)
			known = strcmp(aws_keys[i], k) == 0;
		if (!known) {
			snprintf(err, errlen,
				 "aws: unknown setting '%s' (known: region, access_key_id, "
				 "secret_access_key, session_token)",
				 k);
			return PLANT_E_CONFIG;
		}
		if (!json_is_string(v) || !*json_string_value(v)) {
			snprintf(err, errlen, "aws: '%s' must be a non-empty string", k);
			return PLANT_E_CONFIG;
		}
	}
	if (!json_object_get(aws, "access_key_id") != !json_object_get(aws, "secret_access_key")) {
		snprintf(err, errlen, "aws: 'access_key_id' and 'secret_access_key' go together");
		return PLANT_E_CONFIG;
	}
	return PLANT_OK;
}

static char *setting(const json_t *aws, const char *key, const char *env)
{
	const char *v = json_string_value(json_object_get(aws, key));
	if (!v)
		v = getenv(env);
	return v && *v ? strdup(v) : NULL;
}

/* ---- results -------------------------------------------------------------------------- */

static bool grow(char **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return true;
	size_t cap2 = *cap ? *cap : 1024;
	while (cap2 < need)
		cap2 *= 2;
	char *v = realloc(*buf, cap2);
	if (!v)
		return false;
	*buf = v;
	*cap = cap2;
	return true;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct hres *r = arg;
	size_t len = size * n;
	if (r->body_len + len + 1 > MAX_BODY ||
	    !grow(&r->body, &r->body_cap, r->body_len + len + 1)) {
		r->too_big = true;
		return 0; /* fails the transfer */
	}
	memcpy(r->body + r->body_len, data, len);
	r->body_len += len;
	r->body[r->body_len] = 0;
	return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
	struct hres *r = arg;
	size_t len = size * n;
	/* a new status line: the headers of an earlier response (100
	 * Continue, a redirect) are not this one's */
	if (len > 5 && strncmp(data, "HTTP/", 5) == 0)
		r->hdrs_len = 0;
	if (grow(&r->hdrs, &r->hdrs_cap, r->hdrs_len + len + 1)) {
		memcpy(r->hdrs + r->hdrs_len, data, len);
		r->hdrs_len += len;
		r->hdrs[r->hdrs_len] = 0;
	}
	return len;
}

const char *httpc_result_header(const struct plant_http_result *res, const char *name)
{
	const struct hres *r = (const struct hres *)res;
	if (!r || !name)
		return NULL;
	const char *found = NULL;
	for (size_t i = 0; i + 1 < r->n_hv; i += 2)
		if (strcasecmp(r->hv[i], name) == 0)
			found = r->hv[i + 1];
	return found;
}

/* The header block as name, value pairs, in place (at the end of a
 * transfer: read-only from then on). */
static void headers_index(struct hres *r)
{
	size_t lines = 0;
	for (size_t i = 0; i < r->hdrs_len; i++)
		lines += r->hdrs[i] == '\n';
	r->hv = calloc(2 * lines + 2, sizeof *r->hv);
	if (!r->hv)
		return;
	char *p = r->hdrs, *end = r->hdrs + r->hdrs_len;
	while (p && p < end) {
		char *eol = memchr(p, '\n', (size_t)(end - p));
		if (!eol)
			break;
		*eol = 0;
		if (eol > p && eol[-1] == '\r')
			eol[-1] = 0;
		char *colon = strchr(p, ':');
		if (colon && colon > p) {
			*colon = 0;
			char *v = colon + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			r->hv[r->n_hv++] = p;
			r->hv[r->n_hv++] = v;
		}
		p = eol + 1;
	}
}

static void hres_fini(struct hres *r)
{
	free(r->body);
	free(r->hdrs);
	free(r->hv);
}

struct plant_http_result *httpc_result_copy(const struct plant_http_result *res)
{
	const struct hres *r = (const struct hres *)res;
	struct hres *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	*c = *r;
	c->body = malloc(r->body_len + 1);
	c->hdrs = r->hdrs ? malloc(r->hdrs_len + 1) : NULL;
	if (!c->body || (r->hdrs && !c->hdrs)) {
		free(c->body);
		free(c->hdrs);
		free(c);
		return NULL;
	}
	memcpy(c->body, r->body ? r->body : "", r->body_len);
	c->body[r->body_len] = 0;
	if (c->hdrs)
		memcpy(c->hdrs, r->hdrs, r->hdrs_len + 1);
	/* the pairs point into the copy */
	c->hv = r->n_hv ? calloc(r->n_hv, sizeof *c->hv) : NULL;
	c->n_hv = c->hv ? r->n_hv : 0;
	for (size_t i = 0; i < c->n_hv; i++)
		c->hv[i] = c->hdrs + (r->hv[i] - r->hdrs);
	c->body_cap = r->body_len + 1;
	c->hdrs_cap = r->hdrs ? r->hdrs_len + 1 : 0;
	c->pub.body = c->body;
	c->pub.error = c->err;
	return &c->pub;
}

void httpc_result_free(struct plant_http_result *res)
{
	if (!res)
		return;
	struct hres *r = (struct hres *)res;
	hres_fini(r);
	free(r);
}

/* ---- requests ------------------------------------------------------------------------------ */

static void hreq_free(struct hreq *q)
{
	if (q->easy)
		curl_easy_cleanup(q->easy);
	curl_slist_free_all(q->headers);
	free(q->method);
	free(q->url);
	free(q->body);
	free(q->sigv4);
	free(q->userpwd);
	hres_fini(&q->res);
	free(q);
}

/* [loop] hand the result over, forget the request */
static void finish(struct hreq *q, int status, const char *why)
{
	struct httpc *c = q->c;
	q->res.pub.status = status;
	q->res.pub.body = q->res.body ? q->res.body : "";
	q->res.pub.body_len = q->res.body_len;
	if (why && !q->res.err[0])
		snprintf(q->res.err, sizeof q->res.err, "%s", why);
	if (status == PLANT_OK)
		q->res.err[0] = 0;
	q->res.pub.error = q->res.err;
	if (q->res.hdrs)
		headers_index(&q->res);
	q->res.pub.elapsed_us = clock_mono_ns() / 1000 - q->started_us;
	if (status == PLANT_OK)
		atomic_fetch_add(&c->ok, 1);
	else if (status == PLANT_E_TIMEOUT)
		atomic_fetch_add(&c->timeouts, 1);
	else if (status == PLANT_E_STATE)
		atomic_fetch_add(&c->cancelled, 1);
	else
		atomic_fetch_add(&c->failed, 1);
	q->done(q->ud, &q->res.pub);
	atomic_fetch_sub(&c->in_flight, 1);
	hreq_free(q);
}

static bool has_header(const struct plant_http_call *call, const char *name)
{
	for (const char *const *h = call->headers; h && h[0] && h[1]; h += 2)
		if (strcasecmp(h[0], name) == 0)
			return true;
	return false;
}

int httpc_submit(struct httpc *c, void *owner, const struct plant_http_call *call,
		 httpc_done_fn done, void *ud, char *err, size_t errlen)
{
	if (!c || !call || !done ||
	    call->struct_size <
		    offsetof(struct plant_http_call, aws_region) + sizeof call->aws_region ||
	    !call->url ||
	    (strncmp(call->url, "http://", 7) != 0 && strncmp(call->url, "https://", 8) != 0) ||
	    (call->body_len && !call->body)) {
		snprintf(err, errlen, "a request needs an http:// or https:// URL");
		return PLANT_E_INVALID;
	}
	const char *region = call->aws_region ? call->aws_region : c->region;
	if (call->aws_service && (!c->key || !c->secret || !region)) {
		snprintf(err, errlen,
			 "a signed request needs AWS credentials and a region: set aws = { "
			 "region; access_key_id; secret_access_key; } in the site or "
			 "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION");
		return PLANT_E_CONFIG;
	}
	struct hreq *q = calloc(1, sizeof *q);
	if (!q)
		return PLANT_E_NOMEM;
	q->c = c;
	q->owner = owner;
	q->done = done;
	q->ud = ud;
	q->method = strdup(call->method ? call->method : "GET");
	q->url = strdup(call->url);
	q->body_len = call->body_len;
	q->body = malloc(call->body_len + 1);
	q->timeout_ms = call->timeout_ms ? call->timeout_ms : DEFAULT_TIMEOUT_MS;
	bool ok = q->method && q->url && q->body;
	if (ok && call->body_len)
		memcpy(q->body, call->body, call->body_len);
	for (const char *const *h = call->headers; ok && h && h[0] && h[1]; h += 2) {
		char line[8192];
		snprintf(line, sizeof line, "%s: %s", h[0], h[1]);
		struct curl_slist *l = curl_slist_append(q->headers, line);
		ok = l != NULL;
		if (l)
			q->headers = l;
	}
	if (ok && call->aws_service) {
		char sv[256];
		snprintf(sv, sizeof sv, "aws:amz:%s:%s", region, call->aws_service);
		q->sigv4 = strdup(sv);
		if (asprintf(&q->userpwd, "%s:%s", c->key, c->secret) < 0)
			q->userpwd = NULL;
		ok = q->sigv4 && q->userpwd;
		if (ok && c->token && !has_header(call, "X-Amz-Security-Token")) {
			char line[4096];
			snprintf(line, sizeof line, "X-Amz-Security-Token: %s", c->token);
			struct curl_slist *l = curl_slist_append(q->headers, line);
			ok = l != NULL;
			if (l)
				q->headers = l;
		}
	}
	if (!ok) {
		hreq_free(q);
		return PLANT_E_NOMEM;
	}
	q->started_us = clock_mono_ns() / 1000;
	pthread_mutex_lock(&c->lock);
	if (c->stopping) {
		pthread_mutex_unlock(&c->lock);
		hreq_free(q);
		return PLANT_E_STATE;
	}
	q->next = c->queued;
	c->queued = q;
	atomic_fetch_add(&c->in_flight, 1);
	atomic_fetch_add(&c->sent, 1);
	pthread_mutex_unlock(&c->lock);
	event_active(c->wake, EV_READ, 0);
	return PLANT_OK;
}

/* [loop] a queued request onto the multi handle */
static void start_one(struct httpc *c, struct hreq *q)
{
	CURL *e = curl_easy_init();
	if (!e) {
		finish(q, PLANT_E_NOMEM, "out of memory");
		return;
	}
	q->easy = e;
	curl_easy_setopt(e, CURLOPT_URL, q->url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, q);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)q->timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)(q->timeout_ms < 10000 ? q->timeout_ms : 10000));
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, q->res.err);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &q->res);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, &q->res);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	if (strcmp(q->method, "GET") == 0) {
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	} else if (strcmp(q->method, "HEAD") == 0) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	} else {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
		if (strcmp(q->method, "POST") != 0)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, q->method);
	}
	if (q->headers)
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->headers);
	if (q->sigv4) {
		curl_easy_setopt(e, CURLOPT_AWS_SIGV4, q->sigv4);
		curl_easy_setopt(e, CURLOPT_USERPWD, q->userpwd);
	}
	if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
		finish(q, PLANT_E_IO, "cannot start the transfer");
		return;
	}
	q->next = c->running;
	c->running = q;
}

static void unlink_running(struct httpc *c, struct hreq *q)
{
	for (struct hreq **pp = &c->running; *pp; pp = &(*pp)->next) {
		if (*pp == q) {
			*pp = q->next;
			return;
		}
	}
}

/* [loop] transfers that ended */
static void reap(struct httpc *c)
{
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(c->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		struct hreq *q = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&q);
		CURLcode cc = m->data.result;
		curl_multi_remove_handle(c->multi, m->easy_handle);
		unlink_running(c, q);
		long code = 0;
		curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &code);
		q->res.pub.http_status = cc == CURLE_OK ? code : 0;
		if (cc == CURLE_OK)
			finish(q, PLANT_OK, NULL);
		else if (cc == CURLE_OPERATION_TIMEDOUT)
			finish(q, PLANT_E_TIMEOUT, curl_easy_strerror(cc));
		else if (q->res.too_big)
			finish(q, PLANT_E_IO, "the answer is larger than 64 MiB");
		else
			finish(q, PLANT_E_IO, curl_easy_strerror(cc));
	}
}

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
	struct httpc *c = arg;
	int flags =
		(what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
	int running;
	curl_multi_socket_action(c->multi, fd, flags, &running);
	reap(c);
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *arg, void *sockp)
{
	struct httpc *c = arg;
	struct sock *s = sockp;
	if (what == CURL_POLL_REMOVE) {
		if (s) {
			event_free(s->ev);
			free(s);
			curl_multi_assign(c->multi, fd, NULL);
		}
		return 0;
	}
	if (!s) {
		s = calloc(1, sizeof *s);
		if (!s)
			return -1;
		s->c = c;
		s->fd = fd;
		curl_multi_assign(c->multi, fd, s);
	} else {
		event_free(s->ev);
	}
	short ev = (short)((what & CURL_POLL_IN ? EV_READ : 0) |
			   (what & CURL_POLL_OUT ? EV_WRITE : 0) | EV_PERSIST);
	s->ev = event_new(c->base, fd, ev, on_socket_event, c);
	if (!s->ev)
		return -1;
	event_add(s->ev, NULL);
	return 0;
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct httpc *c = arg;
	int running;
	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	reap(c);
}

static int on_timer(CURLM *multi, long ms, void *arg)
{
	struct httpc *c = arg;
	if (ms < 0) {
		evtimer_del(c->timer);
	} else {
		struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
		evtimer_add(c->timer, &tv);
	}
	return 0;
}

/* [loop] new requests, cancellations, the stop */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct httpc *c = arg;
	pthread_mutex_lock(&c->lock);
	struct hreq *list = c->queued;
	c->queued = NULL;
	void *cancel = c->cancel_owner;
	bool stopping = c->stopping;
	pthread_mutex_unlock(&c->lock);
	/* in the order they came */
	struct hreq *rev = NULL;
	while (list) {
		struct hreq *n = list->next;
		list->next = rev;
		rev = list;
		list = n;
	}
	while (rev) {
		struct hreq *n = rev->next;
		if (stopping || (cancel && rev->owner == cancel))
			finish(rev, PLANT_E_STATE, "cancelled: plantd is stopping this instance");
		else
			start_one(c, rev);
		rev = n;
	}
	if (cancel || stopping) {
		for (struct hreq *q = c->running, *n; q; q = n) {
			n = q->next;
			if (!stopping && q->owner != cancel)
				continue;
			curl_multi_remove_handle(c->multi, q->easy);
			unlink_running(c, q);
			finish(q, PLANT_E_STATE, "cancelled: plantd is stopping");
		}
		pthread_mutex_lock(&c->lock);
		if (cancel && c->cancel_owner == cancel) {
			c->cancel_owner = NULL;
			c->cancels++;
		}
		pthread_cond_broadcast(&c->settled);
		pthread_mutex_unlock(&c->lock);
	}
	if (stopping)
		event_base_loopbreak(c->base);
}

static void *loop_main(void *arg)
{
	struct httpc *c = arg;
	event_base_loop(c->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

int httpc_create(const json_t *aws, struct httpc **out, char *err, size_t errlen)
{
	*out = NULL;
	struct httpc *c = calloc(1, sizeof *c);
	if (!c)
		return PLANT_E_NOMEM;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->settled, NULL);
	c->region = setting(aws, "region", "AWS_REGION");
	if (!c->region)
		c->region =
			getenv("AWS_DEFAULT_REGION") ? strdup(getenv("AWS_DEFAULT_REGION")) : NULL;
	c->key = setting(aws, "access_key_id", "AWS_ACCESS_KEY_ID");
	c->secret = setting(aws, "secret_access_key", "AWS_SECRET_ACCESS_KEY");
	c->token = setting(aws, "session_token", "AWS_SESSION_TOKEN");
	c->base = event_base_new();
	c->multi = curl_multi_init();
	if (!c->base || !c->multi) {
		snprintf(err, errlen, "cannot start the HTTP client");
		httpc_destroy(c);
		return PLANT_E_NOMEM;
	}
	c->wake = event_new(c->base, -1, EV_PERSIST, on_wake, c);
	c->timer = evtimer_new(c->base, on_timeout, c);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 32L);
	if (!c->wake || !c->timer || pthread_create(&c->tid, NULL, loop_main, c) != 0) {
		snprintf(err, errlen, "cannot start the HTTP client's thread");
		httpc_destroy(c);
		return PLANT_E_NOMEM;
	}
	*out = c;
	return PLANT_OK;
}

void httpc_destroy(struct httpc *c)
{
	if (!c)
		return;
	if (c->tid) {
		pthread_mutex_lock(&c->lock);
		c->stopping = true;
		pthread_mutex_unlock(&c->lock);
		event_active(c->wake, EV_READ, 0);
		pthread_join(c->tid, NULL);
	}
	if (c->wake)
		event_free(c->wake);
	if (c->timer)
		event_free(c->timer);
	if (c->multi)
		curl_multi_cleanup(c->multi);
	if (c->base)
		event_base_free(c->base);
	pthread_cond_destroy(&c->settled);
	pthread_mutex_destroy(&c->lock);
	free(c->region);
	free(c->key);
	free(c->secret);
	free(c->token);
	free(c);
}

void httpc_cancel_owner(struct httpc *c, void *owner)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	while (c->cancel_owner) /* one cancel at a time */
		pthread_cond_wait(&c->settled, &c->lock);
	c->cancel_owner = owner;
	size_t ticket = c->cancels;
	pthread_mutex_unlock(&c->lock);
	event_active(c->wake, EV_READ, 0);
	pthread_mutex_lock(&c->lock);
	while (c->cancels == ticket && !c->stopping)
		pthread_cond_wait(&c->settled, &c->lock);
	pthread_mutex_unlock(&c->lock);
}

int httpc_on_thread(const struct httpc *c)
{
	return c && pthread_equal(pthread_self(), c->tid);
}

void httpc_stats_get(struct httpc *c, struct httpc_stats *out)
{
	memset(out, 0, sizeof *out);
	if (!c)
		return;
	out->sent = atomic_load(&c->sent);
	out->ok = atomic_load(&c->ok);
	out->failed = atomic_load(&c->failed);
	out->timeouts = atomic_load(&c->timeouts);
	out->cancelled = atomic_load(&c->cancelled);
	long long f = atomic_load(&c->in_flight);
	out->in_flight = f > 0 ? (uint64_t)f : 0;
}
