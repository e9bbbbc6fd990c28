/* The HTTP server: listeners, routes, requests and replies (http.h).
 *
 * Each listener has its workers: one event loop with its own evhttp each,
 * on a thread of its own, or the host's main loop (the admin listener, so
 * that its handlers see the site from the thread that changes it). With
 * several threads, each binds the same port with SO_REUSEPORT and the
 * kernel spreads connections among them.
 *
 * A request lives in one worker. Handlers may answer later and from any
 * thread: a reply made elsewhere is queued to the worker and sent from its
 * loop. A request is freed once both its handler has returned and it has
 * been answered (two references). */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "log.h"

#define MAX_THREADS 64

/* Status codes counted one by one; anything else is counted as 0. */
static const int counted[] = {200, 201, 202, 204, 400, 401, 403, 404, 405, 408,
			      409, 413, 415, 422, 429, 431, 500, 503, 0};
#define N_COUNTED (sizeof counted / sizeof counted[0])

struct route {
	struct route *next;
	char *method;
	char *path;
	size_t path_len;
	uint32_t flags;
	void *owner;
	http_handler_fn fn;
	void *ud;
	void (*ud_free)(void *);
	atomic_uint running; /* handlers in a call now */
	atomic_uint refs;    /* the table's and each open request's */
};

struct worker;

struct listener {
	struct http *h;
	char *name;
	char *address;
	int port;
	bool admin;
	char **tokens;
	size_t n_tokens;
	size_t max_body, max_header, max_conns;
	uint64_t timeout_ms;
	int threads; /* 0: the main loop */
	SSL_CTX *ssl;
	pthread_rwlock_t routes_lock;
	struct route *routes;
	atomic_size_t conns;
	atomic_ullong answered[N_COUNTED];
	struct worker *workers;
	int n_workers;
	int bound_port;
};

struct conn {
	struct evhttp_connection *evcon;
	struct worker *w;
	plant_http_req *stream; /* a streaming answer on this connection */
};

struct worker {
	struct listener *l;
	struct event_base *base;
	bool own_base;
	pthread_t tid;
	bool started;
	struct evhttp *evh;
	struct event *wake;
	pthread_mutex_t lock;
	plant_http_req *replies;	 /* answers made on other threads */
	plant_http_req *flushes;	 /* streams with chunks waiting */
	struct evconnlistener *accepter; /* evhttp's, for pausing on accept errors */
	struct event *resume;
	uint64_t accept_warned; /* s, monotonic */
	/* this worker's connections (its thread alone touches them) */
	struct conn **conns;
	size_t n_conns, cap_conns;
};

struct plant_http_req {
	struct evhttp_request *er;
	struct worker *w;
	struct route *route;
	atomic_uint refs;
	atomic_bool replied;
	const char *method;
	const char *tail;
	const char *query;
	char *path;
	const char *body;
	size_t body_len;
	char remote[64];
	/* an answer made on another thread, until the worker sends it */
	int status;
	char *ctype;
	char *out;
	size_t out_len;
	char **hdrs; /* name, value, ..., NULL */
	plant_http_req *next;
	/* streaming */
	struct conn *conn;
	struct evbuffer *pending; /* under w->lock */
	bool stream_closed;	  /* under w->lock */
	bool flushing;		  /* on w->flushes, under w->lock */
	void (*on_close)(void *);
	void *close_ud;
};

struct http {
	struct event_base *main_base;
	struct listener *ls;
	size_t n;
	atomic_bool shutting_down;
	pthread_t main_tid;
};

/* ---- small things ------------------------------------------------------------- */

static const char *reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 413:
		return "Payload Too Large";
	case 415:
		return "Unsupported Media Type";
	case 422:
		return "Unprocessable Entity";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
	}
}

static void count_status(struct listener *l, int status)
{
	size_t i = 0;
	while (counted[i] && counted[i] != status)
		i++;
	atomic_fetch_add_explicit(&l->answered[i], 1, memory_order_relaxed);
}

/* Compare a presented token with every configured one, in time that does
 * not depend on where they differ (nor on which one matched). */
static bool token_ok(const struct listener *l, const char *given)
{
	size_t glen = strlen(given);
	unsigned ok = 0;
	for (size_t t = 0; t < l->n_tokens; t++) {
		const char *want = l->tokens[t];
		size_t wlen = strlen(want);
		unsigned diff = (unsigned)(glen ^ wlen);
		for (size_t i = 0; i < wlen; i++)
			diff |= (unsigned char)want[i] ^ (unsigned char)(i < glen ? given[i] : 0);
		ok |= diff == 0;
	}
	return ok != 0;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode `in` (n bytes) into a new string; NULL for a bad escape
 * or a decoded NUL. */
static char *pct_decode(const char *in, size_t n, bool plus_is_space)
{
	char *out = malloc(n + 1);
	if (!out)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (in[i] == '%') {
			int a = i + 2 < n ? hexval(in[i + 1]) : -1;
			int b = i + 2 < n ? hexval(in[i + 2]) : -1;
			if (a < 0 || b < 0 || (a == 0 && b == 0)) {
				free(out);
				return NULL;
			}
			out[o++] = (char)(a * 16 + b);
			i += 2;
		} else if (plus_is_space && in[i] == '+') {
			out[o++] = ' ';
		} else {
			out[o++] = in[i];
		}
	}
	out[o] = 0;
	return out;
}

/* Bytes a client sent (a path, a topic) may not be UTF-8, which a JSON
 * error message must be: anything outside ASCII becomes '?'. */
static void ascii_only(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80 || (unsigned char)*s < 0x20)
			*s = '?';
}

/* ---- connections ------------------------------------------------------------------ */

static struct conn *conn_find(struct worker *w, struct evhttp_connection *evcon)
{
	for (size_t i = 0; i < w->n_conns; i++)
		if (w->conns[i]->evcon == evcon)
			return w->conns[i];
	return NULL;
}

static void stream_closed(plant_http_req *req);

/* [worker] the connection goes: forget it, and end a stream on it */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
	struct conn *c = arg;
	struct worker *w = c->w;
	for (size_t i = 0; i < w->n_conns; i++) {
		if (w->conns[i] == c) {
			w->conns[i] = w->conns[--w->n_conns];
			break;
		}
	}
	atomic_fetch_sub(&w->l->conns, 1);
	if (c->stream)
		stream_closed(c->stream);
	free(c);
}

/* The connection's record, made at its first request. NULL when the
 * listener has max_connections already (or out of memory). */
static struct conn *conn_track(struct worker *w, struct evhttp_connection *evcon)
{
	struct conn *c = conn_find(w, evcon);
	if (c)
		return c;
	if (atomic_load(&w->l->conns) >= w->l->max_conns)
		return NULL;
	if (w->n_conns == w->cap_conns) {
		size_t cap = w->cap_conns ? w->cap_conns * 2 : 64;
		struct conn **v = realloc(w->conns, cap * sizeof *v);
		if (!v)
			return NULL;
		w->conns = v;
		w->cap_conns = cap;
	}
	c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->evcon = evcon;
	c->w = w;
	w->conns[w->n_conns++] = c;
	atomic_fetch_add(&w->l->conns, 1);
	evhttp_connection_set_closecb(evcon, on_conn_close, c);
	return c;
}

/* ---- requests and replies -------------------------------------------------------------- */

static void route_unref(struct route *r)
{
	if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
		return;
	if (r->ud_free)
		r->ud_free(r->ud);
	free(r->method);
	free(r->path);
	free(r);
}

static void req_free(plant_http_req *req)
{
	route_unref(req->route);
	free(req->path);
	free(req->ctype);
	free(req->out);
	if (req->hdrs)
		for (char **p = req->hdrs; *p; p++)
			free(*p);
	free(req->hdrs);
	if (req->pending)
		evbuffer_free(req->pending);
	free(req);
}

static void req_unref(plant_http_req *req)
{
	if (atomic_fetch_sub(&req->refs, 1) == 1)
		req_free(req);
}

void http_req_ref(plant_http_req *req)
{
	atomic_fetch_add(&req->refs, 1);
}

void http_req_unref(plant_http_req *req)
{
	req_unref(req);
}

static bool on_worker_thread(const struct worker *w)
{
	return pthread_equal(pthread_self(), w->tid);
}

/* [worker] write the answer out */
static void send_now(plant_http_req *req, int status, const char *ctype, const char *body,
		     size_t len, const char *const *headers)
{
	struct evhttp_request *er = req->er;
	struct evkeyvalq *oh = evhttp_request_get_output_headers(er);
	if (ctype)
		evhttp_add_header(oh, "Content-Type", ctype);
	for (const char *const *h = headers; h && h[0] && h[1]; h += 2)
		evhttp_add_header(oh, h[0], h[1]);
	if (len)
		evbuffer_add(evhttp_request_get_output_buffer(er), body, len);
	count_status(req->w->l, status);
	evhttp_send_reply(er, status, reason(status), NULL);
	req_unref(req);
}

static void flush_streams(struct worker *w);

/* [worker] answers and stream chunks from other threads */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	pthread_mutex_lock(&w->lock);
	plant_http_req *list = w->replies;
	w->replies = NULL;
	pthread_mutex_unlock(&w->lock);
	/* the list is newest first: answer in the order they came */
	plant_http_req *rev = NULL;
	while (list) {
		plant_http_req *n = list->next;
		list->next = rev;
		rev = list;
		list = n;
	}
	while (rev) {
		plant_http_req *n = rev->next;
		send_now(rev, rev->status, rev->ctype, rev->out, rev->out_len,
			 (const char *const *)rev->hdrs);
		rev = n;
	}
	flush_streams(w);
}

int http_req_reply(plant_http_req *req, int status, const char *content_type, const char *body,
		   size_t len, const char *const *headers)
{
	if (!req || status < 200 || status > 599 || (len && !body))
		return PLANT_E_INVALID;
	if (status == 204 || status == 304)
		len = 0; /* they have none: one would break the connection's framing */
	if (atomic_exchange(&req->replied, true))
		return PLANT_E_STATE;
	struct worker *w = req->w;
	if (on_worker_thread(w)) {
		send_now(req, status, content_type, body, len, headers);
		return PLANT_OK;
	}
	/* keep a copy for the worker's loop */
	size_t nh = 0;
	while (headers && headers[nh] && headers[nh + 1])
		nh += 2;
	req->status = status;
	req->ctype = content_type ? strdup(content_type) : NULL;
	req->out = len ? malloc(len) : NULL;
	req->hdrs = nh ? calloc(nh + 1, sizeof *req->hdrs) : NULL;
	if ((content_type && !req->ctype) || (len && !req->out) || (nh && !req->hdrs)) {
		/* what can still be said without memory */
		free(req->out);
		req->out = NULL;
		len = 0;
		req->status = 503;
	}
	if (req->out)
		memcpy(req->out, body, len);
	req->out_len = len;
	for (size_t i = 0; req->hdrs && i < nh; i++)
		req->hdrs[i] = strdup(headers[i]);
	pthread_mutex_lock(&w->lock);
	req->next = w->replies;
	w->replies = req;
	pthread_mutex_unlock(&w->lock);
	event_active(w->wake, EV_READ, 0);
	return PLANT_OK;
}

int http_req_reply_json(plant_http_req *req, int status, json_t *body, const char *fmt, ...)
{
	if (!body && fmt) {
		char msg[1024];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof msg, fmt, ap);
		va_end(ap);
		ascii_only(msg);
		body = json_pack("{ss}", "error", msg);
	}
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	size_t len = text ? strlen(text) : 0;
	int rc;
	if (text) {
		text[len] = 0;
		/* a line for a person reading it with curl */
		char *t = realloc(text, len + 2);
		if (t) {
			text = t;
			text[len++] = '\n';
		}
	}
	rc = http_req_reply(req, status, "application/json", text, len, NULL);
	free(text);
	return rc;
}

int http_req_info(const plant_http_req *req, struct plant_http_info *out)
{
	if (!req || !out ||
	    out->struct_size < offsetof(struct plant_http_info, listener) + sizeof out->listener)
		return PLANT_E_INVALID;
	out->method = req->method;
	out->path = req->path;
	out->tail = req->tail;
	out->query = req->query;
	out->body = req->body_len ? req->body : NULL;
	out->body_len = req->body_len;
	out->remote = req->remote;
	out->listener = req->w->l->name;
	return PLANT_OK;
}

const char *http_req_header(const plant_http_req *req, const char *name)
{
	if (!req || !name)
		return NULL;
	return evhttp_find_header(evhttp_request_get_input_headers(req->er), name);
}

const char *http_req_query(const plant_http_req *req, const char *key, char *buf, size_t len)
{
	size_t klen = strlen(key);
	const char *q = req->query;
	while (q && *q) {
		const char *amp = strchr(q, '&');
		size_t n = amp ? (size_t)(amp - q) : strlen(q);
		if (n >= klen && strncmp(q, key, klen) == 0 && (n == klen || q[klen] == '=')) {
			const char *v = n == klen ? "" : q + klen + 1;
			size_t vlen = n == klen ? 0 : n - klen - 1;
			char *d = pct_decode(v, vlen, true);
			if (!d)
				return NULL;
			snprintf(buf, len, "%s", d);
			free(d);
			return buf;
		}
		q = amp ? amp + 1 : NULL;
	}
	return NULL;
}

/* ---- streams ----------------------------------------------------------------------------- */

int http_req_stream_start(plant_http_req *req, const char *content_type, void (*on_close)(void *ud),
			  void *ud)
{
	struct worker *w = req->w;
	if (!on_worker_thread(w) || !req->conn || req->conn->stream || atomic_load(&req->replied))
		return PLANT_E_STATE;
	struct evbuffer *pending = evbuffer_new();
	if (!pending)
		return PLANT_E_NOMEM;
	atomic_store(&req->replied, true);
	/* chunks may come from other threads as soon as the caller has
	 * subscribed something: they find the buffer under the lock */
	pthread_mutex_lock(&w->lock);
	req->pending = pending;
	pthread_mutex_unlock(&w->lock);
	req->on_close = on_close;
	req->close_ud = ud;
	req->conn->stream = req;
	evhttp_add_header(evhttp_request_get_output_headers(req->er), "Content-Type", content_type);
	count_status(w->l, 200);
	evhttp_send_reply_start(req->er, 200, "OK");
	/* a stream may be quiet for long: the listener's idle timeout is for
	 * requests, not for this (a day, as good as none) */
	struct evhttp_connection *evcon = evhttp_request_get_connection(req->er);
	if (evcon) {
		evhttp_connection_set_timeout(evcon, 86400);
		bufferevent_set_timeouts(evhttp_connection_get_bufferevent(evcon), NULL, NULL);
	}
	return PLANT_OK;
}

int http_req_stream_chunk(plant_http_req *req, const char *data, size_t len, size_t max_pending)
{
	struct worker *w = req->w;
	int rc = PLANT_OK;
	bool wake = false;
	pthread_mutex_lock(&w->lock);
	if (req->stream_closed || !req->pending)
		rc = PLANT_E_STATE;
	else if (evbuffer_get_length(req->pending) + len > max_pending)
		rc = PLANT_E_FULL;
	else if (evbuffer_add(req->pending, data, len) != 0)
		rc = PLANT_E_NOMEM;
	if (rc == PLANT_OK && !req->flushing) {
		req->flushing = true;
		req->next = w->flushes;
		w->flushes = req;
		wake = true;
	}
	pthread_mutex_unlock(&w->lock);
	if (wake)
		event_active(w->wake, EV_READ, 0);
	return rc;
}

/* [worker] */
static void flush_streams(struct worker *w)
{
	struct evbuffer *out = NULL;
	for (;;) {
		pthread_mutex_lock(&w->lock);
		plant_http_req *req = w->flushes;
		if (req) {
			w->flushes = req->next;
			req->flushing = false;
			if (!req->stream_closed) {
				if (!out)
					out = evbuffer_new();
				if (out)
					evbuffer_add_buffer(out, req->pending);
			}
		}
		pthread_mutex_unlock(&w->lock);
		if (!req)
			break;
		if (!req->stream_closed && out && evbuffer_get_length(out))
			evhttp_send_reply_chunk(req->er, out);
	}
	if (out)
		evbuffer_free(out);
}

/* [worker] the client of a stream went (or the server stops) */
static void stream_closed(plant_http_req *req)
{
	struct worker *w = req->w;
	pthread_mutex_lock(&w->lock);
	req->stream_closed = true;
	if (req->flushing) {
		plant_http_req **pp = &w->flushes;
		while (*pp && *pp != req)
			pp = &(*pp)->next;
		if (*pp)
			*pp = req->next;
		req->flushing = false;
	}
	pthread_mutex_unlock(&w->lock);
	if (req->on_close)
		req->on_close(req->close_ud);
	/* a request the connection let go of is ours to free; one it still
	 * holds (the server is stopping) goes with it */
	if (!evhttp_request_get_connection(req->er))
		evhttp_send_reply_end(req->er);
	req_unref(req);
}

/* ---- dispatch ------------------------------------------------------------------------------ */

static void answer_plain(struct worker *w, struct evhttp_request *er, int status,
			 const char *extra_name, const char *extra_value, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));
static void answer_plain(struct worker *w, struct evhttp_request *er, int status,
			 const char *extra_name, const char *extra_value, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	ascii_only(msg);
	json_t *j = json_pack("{ss}", "error", msg);
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	struct evkeyvalq *oh = evhttp_request_get_output_headers(er);
	evhttp_add_header(oh, "Content-Type", "application/json");
	if (extra_name)
		evhttp_add_header(oh, extra_name, extra_value);
	struct evbuffer *b = evhttp_request_get_output_buffer(er);
	if (text) {
		evbuffer_add(b, text, strlen(text));
		evbuffer_add(b, "\n", 1);
	}
	free(text);
	count_status(w->l, status);
	evhttp_send_reply(er, status, reason(status), NULL);
}

/* Host: 127.x.x.x, localhost, [::1], with or without a port. */
static bool host_is_local(const char *host)
{
	char h[256];
	snprintf(h, sizeof h, "%s", host);
	char *end = h[0] == '[' ? strchr(h, ']') : strrchr(h, ':');
	if (h[0] == '[') {
		if (!end)
			return false;
		*end = 0;
		return strcmp(h + 1, "::1") == 0;
	}
	if (end)
		*end = 0;
	struct in_addr a;
	if (inet_pton(AF_INET, h, &a) == 1)
		return (ntohl(a.s_addr) >> 24) == 127;
	return strcasecmp(h, "localhost") == 0;
}

static const char *method_name(enum evhttp_cmd_type t)
{
	switch (t) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_DELETE:
		return "DELETE";
	case EVHTTP_REQ_OPTIONS:
		return "OPTIONS";
	case EVHTTP_REQ_TRACE:
		return "TRACE";
	case EVHTTP_REQ_CONNECT:
		return "CONNECT";
	case EVHTTP_REQ_PATCH:
		return "PATCH";
	}
	return "?";
}

static bool path_matches(const struct route *r, const char *path)
{
	if (r->flags & PLANT_ROUTE_PREFIX)
		return strncmp(path, r->path, r->path_len) == 0;
	return strcmp(path, r->path) == 0;
}

/* [worker] every request of the listener */
static void on_request(struct evhttp_request *er, void *arg)
{
	struct worker *w = arg;
	struct listener *l = w->l;
	struct evhttp_connection *evcon = evhttp_request_get_connection(er);
	struct conn *c = conn_track(w, evcon);
	if (!c) {
		answer_plain(w, er, 503, "Connection", "close",
			     "listener \"%s\" has its %zu connections already", l->name,
			     l->max_conns);
		return;
	}
	if (atomic_load(&l->h->shutting_down)) {
		answer_plain(w, er, 503, "Connection", "close", "plantd is shutting down");
		return;
	}
	if (l->n_tokens) {
		const char *auth =
			evhttp_find_header(evhttp_request_get_input_headers(er), "Authorization");
		if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) {
			answer_plain(w, er, 401, "WWW-Authenticate", "Bearer",
				     "this listener needs a token: Authorization: Bearer TOKEN");
			return;
		}
		if (!token_ok(l, auth + 7)) {
			answer_plain(w, er, 401, "WWW-Authenticate", "Bearer",
				     "the token is not one of this listener's");
			return;
		}
	}
	if (l->admin && !l->n_tokens) {
		/* without tokens the admin API trusts loopback: not a web page
		 * the operator's browser runs (cross-site requests carry an
		 * Origin; DNS rebinding a Host that is not ours) */
		struct evkeyvalq *ih = evhttp_request_get_input_headers(er);
		const char *origin = evhttp_find_header(ih, "Origin");
		const char *host = evhttp_find_header(ih, "Host");
		if (origin || (host && !host_is_local(host))) {
			answer_plain(w, er, 403, NULL, NULL,
				     "the admin API refuses requests from web pages (Origin or a "
				     "foreign Host): use plantctl or curl, or give the listener "
				     "tokens");
			return;
		}
	}
	const char *method = method_name(evhttp_request_get_command(er));
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(er);
	const char *raw = uri ? evhttp_uri_get_path(uri) : NULL;
	char *path = raw ? pct_decode(raw, strlen(raw), false) : NULL;
	if (!path) {
		answer_plain(w, er, 400, NULL, NULL, "bad request path");
		return;
	}

	pthread_rwlock_rdlock(&l->routes_lock);
	struct route *r = NULL;
	bool path_known = false;
	for (struct route *x = l->routes; x && !r; x = x->next) {
		if (!path_matches(x, path))
			continue;
		path_known = true;
		if (strcmp(x->method, method) == 0)
			r = x;
	}
	if (r) {
		atomic_fetch_add(&r->refs, 1);
		atomic_fetch_add(&r->running, 1);
	}
	pthread_rwlock_unlock(&l->routes_lock);
	if (!r) {
		if (path_known)
			answer_plain(w, er, 405, NULL, NULL, "%s is not allowed on %s", method,
				     path);
		else
			answer_plain(w, er, 404, NULL, NULL, "no route for %s %s", method, path);
		free(path);
		return;
	}

	plant_http_req *req = calloc(1, sizeof *req);
	if (!req) {
		atomic_fetch_sub(&r->running, 1);
		route_unref(r);
		free(path);
		answer_plain(w, er, 503, NULL, NULL, "out of memory");
		return;
	}
	atomic_init(&req->refs, 2); /* the call below, and the answer */
	req->er = er;
	req->w = w;
	req->route = r;
	req->conn = c;
	req->method = method;
	req->path = path;
	req->tail = r->flags & PLANT_ROUTE_PREFIX ? path + r->path_len : "";
	req->query = uri && evhttp_uri_get_query(uri) ? evhttp_uri_get_query(uri) : "";
	struct evbuffer *in = evhttp_request_get_input_buffer(er);
	req->body_len = evbuffer_get_length(in);
	req->body = req->body_len ? (const char *)evbuffer_pullup(in, -1) : NULL;
	if (req->body_len && !req->body)
		req->body_len = 0;
	char *host = NULL;
	ev_uint16_t port = 0;
	evhttp_connection_get_peer(evcon, &host, &port);
	snprintf(req->remote, sizeof req->remote, "%s:%u", host ? host : "?", port);

	int rc = r->fn(r->ud, req);
	atomic_fetch_sub(&r->running, 1);
	if (rc != PLANT_OK && !atomic_load(&req->replied))
		http_req_reply_json(req, rc == PLANT_E_STATE ? 503 : 500, NULL, "%s",
				    rc == PLANT_E_STATE ? "not running now, try again later"
							: plant_status_name(rc));
	req_unref(req);
}

/* ---- routes -------------------------------------------------------------------------------- */

static struct listener *listener_find(struct http *h, const char *name)
{
	for (size_t i = 0; h && name && i < h->n; i++)
		if (strcmp(h->ls[i].name, name) == 0)
			return &h->ls[i];
	return NULL;
}

int http_route_add(struct http *h, const char *listener, const char *method, const char *path,
		   uint32_t flags, void *owner, http_handler_fn fn, void *ud,
		   void (*ud_free)(void *))
{
	if (!method || !*method || !path || path[0] != '/' || !fn ||
	    (flags & ~(uint32_t)PLANT_ROUTE_KNOWN_FLAGS) ||
	    ((flags & PLANT_ROUTE_PREFIX) && path[strlen(path) - 1] != '/'))
		return PLANT_E_INVALID;
	struct listener *l = listener_find(h, listener);
	if (!l)
		return PLANT_E_NOTFOUND;
	struct route *r = calloc(1, sizeof *r);
	if (!r)
		return PLANT_E_NOMEM;
	r->method = strdup(method);
	r->path = strdup(path);
	r->path_len = strlen(path);
	r->flags = flags;
	r->owner = owner;
	r->fn = fn;
	r->ud = ud;
	r->ud_free = ud_free;
	atomic_init(&r->refs, 1);
	if (!r->method || !r->path) {
		r->ud_free = NULL;
		route_unref(r);
		return PLANT_E_NOMEM;
	}
	pthread_rwlock_wrlock(&l->routes_lock);
	for (struct route *x = l->routes; x; x = x->next) {
		if (strcmp(x->method, method) == 0 && strcmp(x->path, path) == 0 &&
		    (x->flags & PLANT_ROUTE_PREFIX) == (flags & PLANT_ROUTE_PREFIX)) {
			pthread_rwlock_unlock(&l->routes_lock);
			r->ud_free = NULL;
			route_unref(r);
			return PLANT_E_EXISTS;
		}
	}
	/* exact paths before prefixes, longer prefixes first */
	struct route **pp = &l->routes;
	while (*pp && (!((*pp)->flags & PLANT_ROUTE_PREFIX) ||
		       ((flags & PLANT_ROUTE_PREFIX) && (*pp)->path_len >= r->path_len)))
		pp = &(*pp)->next;
	r->next = *pp;
	*pp = r;
	pthread_rwlock_unlock(&l->routes_lock);
	return PLANT_OK;
}

void http_routes_remove_owner(struct http *h, void *owner)
{
	for (size_t i = 0; h && i < h->n; i++) {
		struct listener *l = &h->ls[i];
		struct route *gone = NULL;
		pthread_rwlock_wrlock(&l->routes_lock);
		for (struct route **pp = &l->routes; *pp;) {
			struct route *r = *pp;
			if (r->owner == owner) {
				*pp = r->next;
				r->next = gone;
				gone = r;
			} else {
				pp = &r->next;
			}
		}
		pthread_rwlock_unlock(&l->routes_lock);
		while (gone) {
			struct route *n = gone->next;
			/* a handler still in its call finishes first */
			while (atomic_load(&gone->running))
				usleep(200);
			route_unref(gone);
			gone = n;
		}
	}
}

const char *http_admin_listener(struct http *h)
{
	for (size_t i = 0; h && i < h->n; i++)
		if (h->ls[i].admin)
			return h->ls[i].name;
	return NULL;
}

json_t *http_urls_json(struct http *h)
{
	json_t *o = json_object();
	for (size_t i = 0; h && i < h->n; i++) {
		struct listener *l = &h->ls[i];
		const char *a = l->address;
		bool v6 = strchr(a, ':') != NULL;
		json_object_set_new(o, l->name,
				    json_sprintf("%s://%s%s%s:%d", l->ssl ? "https" : "http",
						 v6 ? "[" : "", a, v6 ? "]" : "", l->bound_port));
	}
	return o;
}

void http_stats_foreach(struct http *h, http_stat_fn fn, void *ud)
{
	for (size_t i = 0; h && i < h->n; i++)
		for (size_t k = 0; k < N_COUNTED; k++) {
			uint64_t v = atomic_load(&h->ls[i].answered[k]);
			if (v)
				fn(ud, h->ls[i].name, counted[k], v);
		}
}

/* ---- listeners from config ------------------------------------------------------------------ */

static int lfail(const struct instance_spec *spec, const char *key, char *err, size_t errlen,
		 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int lfail(const struct instance_spec *spec, const char *key, char *err, size_t errlen,
		 const char *fmt, ...)
{
	char where[PATH_MAX + 32];
	instance_spec_where(spec, key, where, sizeof where);
	int n = snprintf(err, errlen, "%s: listener \"%s\": ", where, spec->name);
	if (n > 0 && (size_t)n < errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return PLANT_E_CONFIG;
}

/* A numeric loopback address (a name could resolve anywhere). */
static bool is_loopback(const char *address)
{
	struct in_addr a;
	struct in6_addr a6;
	if (inet_pton(AF_INET, address, &a) == 1)
		return (ntohl(a.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, address, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

static int int_key(const struct instance_spec *spec, const char *key, long long lo, long long hi,
		   long long def, long long *out, char *err, size_t errlen)
{
	json_t *v = json_object_get(spec->settings, key);
	*out = def;
	if (!v)
		return PLANT_OK;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return lfail(spec, key, err, errlen, "'%s' must be an integer from %lld to %lld",
			     key, lo, hi);
	*out = json_integer_value(v);
	return PLANT_OK;
}

static char *path_from(const char *dir, const char *p)
{
	if (p[0] == '/' || !dir)
		return strdup(p);
	char *out = NULL;
	if (asprintf(&out, "%s/%s", dir, p) < 0)
		return NULL;
	return out;
}

/* Read one entry into `l` (names and settings only: nothing is bound). */
static int listener_parse(const struct site_config *cfg, const struct instance_spec *spec,
			  struct listener *l, char *err, size_t errlen)
{
	static const char *const known[] = {
		"address",  "port",	  "admin",	     "tokens",	"tls_cert", "tls_key",
		"max_body", "max_header", "max_connections", "timeout", "threads",  NULL,
	};
	const char *k;
	json_t *v;
	json_object_foreach(spec->settings, k, v)
	{
		bool ok = false;
		for (size_t i = 0; known[i] && !ok; i++)
			ok = strcmp(known[i], k) == 0;
		if (!ok)
			return lfail(spec, k, err, errlen,
				     "unknown setting '%s' (known: address, port, admin, tokens, "
				     "tls_cert, tls_key, max_body, max_header, max_connections, "
				     "timeout, threads)",
				     k);
	}
	l->name = strdup(spec->name);
	v = json_object_get(spec->settings, "address");
	if (v && (!json_is_string(v) || !*json_string_value(v)))
		return lfail(spec, "address", err, errlen,
			     "'address' must be a host address, e.g. \"127.0.0.1\" or \"0.0.0.0\"");
	l->address = strdup(v ? json_string_value(v) : "127.0.0.1");
	long long n;
	if (!json_object_get(spec->settings, "port"))
		return lfail(spec, NULL, err, errlen,
			     "missing required setting 'port' (0 picks a free one)");
	if (int_key(spec, "port", 0, 65535, 0, &n, err, errlen))
		return PLANT_E_CONFIG;
	l->port = (int)n;
	v = json_object_get(spec->settings, "admin");
	if (v && !json_is_boolean(v))
		return lfail(spec, "admin", err, errlen, "'admin' must be true or false");
	l->admin = json_is_true(v);
	v = json_object_get(spec->settings, "tokens");
	if (v) {
		if (!json_is_array(v))
			return lfail(spec, "tokens", err, errlen,
				     "'tokens' must be a list of strings: [\"...\", \"...\"]");
		l->tokens = calloc(json_array_size(v) + 1, sizeof *l->tokens);
		size_t i;
		json_t *t;
		json_array_foreach(v, i, t)
		{
			if (!json_is_string(t) || strlen(json_string_value(t)) < 8)
				return lfail(spec, "tokens", err, errlen,
					     "token %zu: each token must be a string of 8 "
					     "characters or more",
					     i + 1);
			l->tokens[l->n_tokens++] = strdup(json_string_value(t));
		}
	}
	if (l->admin && !l->n_tokens && !is_loopback(l->address))
		return lfail(spec, "address", err, errlen,
			     "the admin listener on %s needs 'tokens': without them, bind it to "
			     "a loopback address such as 127.0.0.1",
			     l->address);
	json_t *cert = json_object_get(spec->settings, "tls_cert");
	json_t *key = json_object_get(spec->settings, "tls_key");
	if ((cert && !json_is_string(cert)) || (key && !json_is_string(key)))
		return lfail(spec, cert && !json_is_string(cert) ? "tls_cert" : "tls_key", err,
			     errlen, "'tls_cert' and 'tls_key' must be file names");
	if (!cert != !key)
		return lfail(spec, cert ? "tls_cert" : "tls_key", err, errlen,
			     "TLS needs both 'tls_cert' and 'tls_key'");
	if (cert) {
		char *cp = path_from(cfg->dir, json_string_value(cert));
		char *kp = path_from(cfg->dir, json_string_value(key));
		SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
		int rc = PLANT_OK;
		if (!ctx || !cp || !kp) {
			rc = lfail(spec, "tls_cert", err, errlen, "cannot set up TLS");
		} else if (SSL_CTX_use_certificate_chain_file(ctx, cp) != 1) {
			rc = lfail(spec, "tls_cert", err, errlen, "cannot use certificate %s: %s",
				   cp, ERR_reason_error_string(ERR_get_error()));
		} else if (SSL_CTX_use_PrivateKey_file(ctx, kp, SSL_FILETYPE_PEM) != 1 ||
			   SSL_CTX_check_private_key(ctx) != 1) {
			rc = lfail(spec, "tls_key", err, errlen,
				   "cannot use private key %s with %s: %s", kp, cp,
				   ERR_reason_error_string(ERR_get_error()));
		}
		ERR_clear_error();
		free(cp);
		free(kp);
		if (rc) {
			SSL_CTX_free(ctx);
			return rc;
		}
		SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
		l->ssl = ctx;
	}
	if (int_key(spec, "max_body", 1, 1LL << 32, 1 << 20, &n, err, errlen))
		return PLANT_E_CONFIG;
	l->max_body = (size_t)n;
	if (int_key(spec, "max_header", 256, 1 << 20, 8192, &n, err, errlen))
		return PLANT_E_CONFIG;
	l->max_header = (size_t)n;
	if (int_key(spec, "max_connections", 1, 1 << 20, 1024, &n, err, errlen))
		return PLANT_E_CONFIG;
	l->max_conns = (size_t)n;
	if (int_key(spec, "threads", 0, MAX_THREADS, l->admin ? 0 : 1, &n, err, errlen))
		return PLANT_E_CONFIG;
	if (l->admin && n)
		return lfail(spec, "threads", err, errlen,
			     "the admin listener runs on the main loop: leave 'threads' out");
	l->threads = (int)n;
	l->timeout_ms = 30000;
	v = json_object_get(spec->settings, "timeout");
	if (v && (parse_duration_ms(v, &l->timeout_ms) != PLANT_OK || l->timeout_ms == 0))
		return lfail(spec, "timeout", err, errlen,
			     "'timeout' must be a positive duration, e.g. \"30s\"");
	return PLANT_OK;
}

static void listener_fini(struct listener *l)
{
	free(l->name);
	free(l->address);
	for (size_t i = 0; i < l->n_tokens; i++)
		free(l->tokens[i]);
	free(l->tokens);
	if (l->ssl)
		SSL_CTX_free(l->ssl);
	struct route *r = l->routes;
	while (r) {
		struct route *n = r->next;
		route_unref(r);
		r = n;
	}
	pthread_rwlock_destroy(&l->routes_lock);
}

int http_check(const struct site_config *cfg, char *err, size_t errlen)
{
	int admins = 0;
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		struct listener l = {0};
		pthread_rwlock_init(&l.routes_lock, NULL);
		int rc = listener_parse(cfg, &cfg->listeners[i], &l, err, errlen);
		admins += l.admin;
		listener_fini(&l);
		if (rc)
			return rc;
		if (admins > 1)
			return lfail(&cfg->listeners[i], "admin", err, errlen,
				     "a site has one admin listener at most");
	}
	return PLANT_OK;
}

/* ---- workers -------------------------------------------------------------------------------- */

static struct bufferevent *make_tls_bev(struct event_base *base, void *arg)
{
	struct listener *l = arg;
	SSL *ssl = SSL_new(l->ssl);
	if (!ssl)
		return NULL;
	return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
					      BEV_OPT_CLOSE_ON_FREE);
}

static int bind_socket(struct listener *l, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *ai = NULL;
	char port[16];
	snprintf(port, sizeof port, "%d", l->bound_port ? l->bound_port : l->port);
	int g = getaddrinfo(l->address, port, &hints, &ai);
	if (g != 0) {
		snprintf(err, errlen, "listener \"%s\": address %s: %s", l->name, l->address,
			 gai_strerror(g));
		return -1;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    (l->threads > 1 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
		snprintf(err, errlen, "listener \"%s\": cannot listen on %s port %s: %s", l->name,
			 l->address, port, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	if (!l->bound_port) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		getsockname(fd, (struct sockaddr *)&ss, &sl);
		l->bound_port =
			ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						       : ((struct sockaddr_in *)&ss)->sin_port);
	}
	return fd;
}

/* The server of this process, for libevent callbacks that do not carry
 * ours. */
static _Atomic(struct http *) the_server;

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	evconnlistener_enable(w->accepter);
}

/* [worker] accept() failed: out of descriptors, most likely. Pause the
 * listener for a second rather than retry at once (which spins), and say
 * so once a minute. */
static void on_accept_error(struct evconnlistener *lis, void *arg)
{
	int e = EVUTIL_SOCKET_ERROR();
	/* `arg` is evhttp's own (its struct evhttp): find our worker by it */
	struct worker *w = NULL;
	struct http *h = atomic_load(&the_server);
	for (size_t i = 0; h && i < h->n && !w; i++)
		for (int k = 0; k < h->ls[i].n_workers && !w; k++)
			if (h->ls[i].workers[k].evh == arg)
				w = &h->ls[i].workers[k];
	if (!w || !w->resume)
		return;
	evconnlistener_disable(lis);
	struct timeval tv = {.tv_sec = 1};
	evtimer_add(w->resume, &tv);
	uint64_t now = clock_mono_ns() / 1000000000u;
	if (now >= w->accept_warned + 60) {
		w->accept_warned = now;
		log_warn("listener \"%s\": cannot accept connections: %s; pausing 1 s", w->l->name,
			 evutil_socket_error_to_string(e));
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	event_base_dispatch(w->base);
	return NULL;
}

static int worker_init(struct http *h, struct listener *l, struct worker *w, char *err,
		       size_t errlen)
{
	w->l = l;
	pthread_mutex_init(&w->lock, NULL);
	w->own_base = l->threads > 0;
	w->base = w->own_base ? event_base_new() : h->main_base;
	w->tid = h->main_tid;
	if (!w->base) {
		snprintf(err, errlen, "listener \"%s\": cannot make an event loop", l->name);
		return PLANT_E_NOMEM;
	}
	w->evh = evhttp_new(w->base);
	w->wake = event_new(w->base, -1, EV_PERSIST, on_wake, w);
	if (!w->evh || !w->wake) {
		snprintf(err, errlen, "listener \"%s\": out of memory", l->name);
		return PLANT_E_NOMEM;
	}
	evhttp_set_max_body_size(w->evh, (ev_ssize_t)l->max_body);
	evhttp_set_max_headers_size(w->evh, (ev_ssize_t)l->max_header);
	struct timeval tv = {.tv_sec = (time_t)(l->timeout_ms / 1000),
			     .tv_usec = (suseconds_t)(l->timeout_ms % 1000) * 1000};
	evhttp_set_timeout_tv(w->evh, &tv);
	evhttp_set_gencb(w->evh, on_request, w);
	evhttp_set_allowed_methods(w->evh, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
						   EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD |
						   EVHTTP_REQ_PATCH);
	if (l->ssl)
		evhttp_set_bevcb(w->evh, make_tls_bev, l);
	int fd = bind_socket(l, err, errlen);
	if (fd < 0)
		return PLANT_E_IO;
	struct evhttp_bound_socket *bs = evhttp_accept_socket_with_handle(w->evh, fd);
	if (!bs) {
		close(fd);
		snprintf(err, errlen, "listener \"%s\": cannot accept on its socket", l->name);
		return PLANT_E_IO;
	}
	w->accepter = evhttp_bound_socket_get_listener(bs);
	w->resume = evtimer_new(w->base, on_resume, w);
	if (w->accepter && w->resume)
		evconnlistener_set_error_cb(w->accepter, on_accept_error);
	return PLANT_OK;
}

/* [main, after the thread stopped] answers still waiting, then the rest */
static void worker_fini(struct worker *w)
{
	if (w->wake)
		on_wake(-1, 0, w);
	if (w->evh)
		evhttp_free(w->evh);
	if (w->wake)
		event_free(w->wake);
	if (w->resume)
		event_free(w->resume);
	if (w->own_base && w->base)
		event_base_free(w->base);
	free(w->conns);
	pthread_mutex_destroy(&w->lock);
}

int http_create(const struct site_config *cfg, struct event_base *main_base, struct http **out,
		char *err, size_t errlen)
{
	*out = NULL;
	int rc = http_check(cfg, err, errlen);
	if (rc)
		return rc;
	struct http *h = calloc(1, sizeof *h);
	if (!h)
		return PLANT_E_NOMEM;
	h->main_base = main_base;
	h->main_tid = pthread_self();
	atomic_store(&the_server, h);
	h->ls = calloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof *h->ls);
	if (!h->ls) {
		free(h);
		return PLANT_E_NOMEM;
	}
	for (size_t i = 0; i < cfg->n_listeners && !rc; i++) {
		struct listener *l = &h->ls[h->n++];
		l->h = h;
		pthread_rwlock_init(&l->routes_lock, NULL);
		rc = listener_parse(cfg, &cfg->listeners[i], l, err, errlen);
		if (rc)
			break;
		l->n_workers = l->threads ? l->threads : 1;
		l->workers = calloc((size_t)l->n_workers, sizeof *l->workers);
		if (!l->workers) {
			rc = PLANT_E_NOMEM;
			break;
		}
		for (int k = 0; k < l->n_workers && !rc; k++)
			rc = worker_init(h, l, &l->workers[k], err, errlen);
	}
	for (size_t i = 0; i < h->n && !rc; i++) {
		struct listener *l = &h->ls[i];
		for (int k = 0; k < l->n_workers && l->threads; k++) {
			struct worker *w = &l->workers[k];
			if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
				snprintf(err, errlen, "listener \"%s\": cannot start a thread",
					 l->name);
				rc = PLANT_E_NOMEM;
				break;
			}
			w->started = true;
		}
		if (!rc)
			log_info("listener \"%s\" on %s://%s:%d%s%s", l->name,
				 l->ssl ? "https" : "http", l->address, l->bound_port,
				 l->admin ? " (admin API)" : "",
				 l->n_tokens ? ", with tokens" : "");
	}
	if (rc) {
		http_destroy(h);
		return rc;
	}
	*out = h;
	return PLANT_OK;
}

void http_shutdown(struct http *h)
{
	if (!h)
		return;
	atomic_store(&h->shutting_down, true);
	/* handlers in a call on listener threads finish first */
	for (size_t i = 0; i < h->n; i++) {
		struct listener *l = &h->ls[i];
		if (!l->threads)
			continue; /* on this thread: none is running */
		for (;;) {
			unsigned running = 0;
			pthread_rwlock_rdlock(&l->routes_lock);
			for (struct route *r = l->routes; r; r = r->next)
				running += atomic_load(&r->running);
			pthread_rwlock_unlock(&l->routes_lock);
			if (!running)
				break;
			usleep(200);
		}
	}
}

void http_destroy(struct http *h)
{
	if (!h)
		return;
	atomic_store(&h->shutting_down, true);
	for (size_t i = 0; i < h->n; i++) {
		struct listener *l = &h->ls[i];
		for (int k = 0; l->workers && k < l->n_workers; k++) {
			struct worker *w = &l->workers[k];
			if (w->started) {
				event_base_loopexit(w->base, NULL);
				pthread_join(w->tid, NULL);
			}
			w->tid = pthread_self();
			if (w->l)
				worker_fini(w);
		}
		free(l->workers);
		listener_fini(l);
	}
	free(h->ls);
	struct http *expected = h;
	atomic_compare_exchange_strong(&the_server, &expected, NULL);
	free(h);
}
