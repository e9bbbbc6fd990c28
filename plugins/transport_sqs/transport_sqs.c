/* transport_sqs: an internal queue to an SQS queue (out), an SQS queue to an
 * internal topic (in), over the SQS JSON protocol and the host's
 * asynchronous HTTP client (SDK 1.6).
 *
 * Out: messages of `queue` are held (api->hold) from their delivery until
 * SQS accepted them in a SendMessageBatch (10 a request, up to
 * `max_inflight` requests at once, each answered on the instance's worker);
 * only then are they acked. Failed entries and failed requests are retried
 * with exponential backoff and full jitter. At most `max_pending` messages
 * are held: when the window is full the consumer's handler sends one batch
 * synchronously (http_call_wait), which is the backpressure: the rest of
 * the queue waits there, visible, its receive counts untouched. While SQS
 * fails and the window is full, or the failures last `hold_max`, the
 * consumer is paused (unsubscribed): what it held goes back to the queue
 * at once, nothing more is received until a probe finds SQS answering
 * again. Nothing is dropped; only entries SQS refuses as the sender's
 * fault go to the queue's dead-letter queue, with SQS's code and message.
 *
 * In: `pollers` long polls (ReceiveMessage, `wait_seconds`) run through
 * http_call without blocking the instance; each answer is published on
 * `publish_topic` with publish_all (all or nothing) and deleted from SQS
 * (DeleteMessageBatch) only once the publish succeeded. A refused publish
 * (PLANT_E_FULL) deletes nothing: the messages go back to SQS after a
 * backoff (ChangeMessageVisibilityBatch), or with on_full = "hold" are held
 * and retried, their visibility extended while held.
 *
 * See README.md for the keys, the error handling and the metrics. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plantd/plantd.h>

static const struct plant_config_key config_keys[] = {
	{
		.name = "queue",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "out: the internal queue to forward to SQS (\"\": no out direction)",
	},
	{
		.name = "publish_topic",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "in: the internal topic SQS messages are published on (\"\": no in "
			       "direction)",
	},
	{
		.name = "queue_url",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "the SQS queue's URL, used exactly as given",
	},
	{
		.name = "queue_name",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "or its name, resolved at start (GetQueueUrl, CreateQueue)",
	},
	{
		.name = "create",
		.type = PLANT_CFG_BOOL,
		.default_value = "true",
		.description = "create queue_name when it does not exist",
	},
	{
		.name = "endpoint",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "the SQS endpoint, e.g. \"http://127.0.0.1:9324\"; \"\": from "
			       "queue_url, else https://sqs.REGION.amazonaws.com",
	},
	{
		.name = "region",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "the region to sign for; \"\": the site's (aws.region, AWS_REGION)",
	},
	{
		.name = "batch",
		.type = PLANT_CFG_INT,
		.default_value = "50",
		.description = "out: messages taken from the queue at a time",
	},
	{
		.name = "max_inflight",
		.type = PLANT_CFG_INT,
		.default_value = "4",
		.description = "out: SendMessageBatch requests at once (1 for a FIFO queue)",
	},
	{
		.name = "max_pending",
		.type = PLANT_CFG_INT,
		.default_value = "500",
		.description = "out: messages held at most (received, not yet accepted by SQS)",
	},
	{
		.name = "max_batch_bytes",
		.type = PLANT_CFG_INT,
		.default_value = "262144",
		.description = "out: the most bytes of bodies and attributes in one request",
	},
	{
		.name = "attributes",
		.type = PLANT_CFG_ARRAY,
		.default_value = "[]",
		.description = "out: message attributes forwarded as SQS message attributes",
	},
	{
		.name = "group_id",
		.type = PLANT_CFG_STRING,
		.default_value = "\"plantd\"",
		.description = "out, FIFO: the MessageGroupId when group_id_field gives none",
	},
	{
		.name = "group_id_field",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "out, FIFO: body field (else attribute) holding the MessageGroupId",
	},
	{
		.name = "dedup_field",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "out, FIFO: body field (else attribute) holding the "
			       "MessageDeduplicationId; \"\": the plantd message id",
	},
	{
		.name = "retry_base",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"200ms\"",
		.description = "the first backoff; it doubles with each failure",
	},
	{
		.name = "retry_max",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"20s\"",
		.description = "the longest backoff",
	},
	{
		.name = "max_attempts",
		.type = PLANT_CFG_INT,
		.default_value = "3",
		.description = "out: tries of a message SQS refuses as the sender's fault before "
			       "it is dead-lettered",
	},
	{
		.name = "hold_max",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"10s\"",
		.description = "out: how long messages stay held while SQS fails before the "
			       "consumer pauses (shorter than the queue's visibility_timeout)",
	},
	{
		.name = "request_timeout",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"10s\"",
		.description = "one request's limit (a long poll gets wait_seconds more)",
	},
	{
		.name = "wait_seconds",
		.type = PLANT_CFG_INT,
		.default_value = "20",
		.description = "in: ReceiveMessage's WaitTimeSeconds (0..20)",
	},
	{
		.name = "max_messages",
		.type = PLANT_CFG_INT,
		.default_value = "10",
		.description = "in: ReceiveMessage's MaxNumberOfMessages (1..10)",
	},
	{
		.name = "visibility_timeout",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"30s\"",
		.description = "in: ReceiveMessage's VisibilityTimeout (whole seconds)",
	},
	{
		.name = "pollers",
		.type = PLANT_CFG_INT,
		.default_value = "1",
		.description = "in: long polls at once",
	},
	{
		.name = "on_full",
		.type = PLANT_CFG_STRING,
		.default_value = "\"release\"",
		.description = "in: when the internal publish is refused: \"release\" the "
			       "messages to SQS after a backoff, or \"hold\" them and retry",
	},
	{
		.name = "dedup",
		.type = PLANT_CFG_BOOL,
		.default_value = "true",
		.description = "in: publish with the plantd message id (else the SQS MessageId) "
			       "as deduplication key",
	},
	{
		.name = "log_interval",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"10s\"",
		.description = "the least time between two log lines about the same kind of "
			       "failure",
	},
	{.name = NULL, .type = PLANT_CFG_END},
};

#define SQS_BATCH	 10
#define TICK_MS		 20
#define MAX_ATTRS	 10 /* SQS's limit per message */
#define OWN_ATTRS	 3  /* plantd.topic, plantd.id, plantd.ts */
#define ID_MAX		 128
#define TOPIC_MAX	 200
#define ERR_TEXT	 512
#define PUBLISH_RETRIES	 (SQS_BATCH + 1)
#define HEADER_TARGET	 "X-Amz-Target"
#define CONTENT_TYPE_SQS "application/x-amz-json-1.0"

/* ---- a string builder ----------------------------------------------------------- */

struct sb {
	char *p;
	size_t len, cap;
	bool oom;
};

static void sb_reserve(struct sb *b, size_t more)
{
	if (b->oom || b->len + more + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 1024;
	while (cap < b->len + more + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		b->oom = true;
		return;
	}
	b->p = p;
	b->cap = cap;
}

static void sb_add(struct sb *b, const char *s, size_t n)
{
	sb_reserve(b, n);
	if (b->oom)
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_str(struct sb *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void sb_fmt(struct sb *b, const char *fmt, ...) PLANT_PRINTF(2, 3);
static void sb_fmt(struct sb *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	sb_reserve(b, (size_t)n);
	if (b->oom)
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* `s` as a JSON string, quotes included. UTF-8 passes as it is. */
static void sb_json(struct sb *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	sb_reserve(b, n + 2);
	sb_add(b, "\"", 1);
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		sb_add(b, s + run, i - run);
		run = i + 1;
		char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
		if (c == '"' || c == '\\') {
			esc[1] = (char)c;
			sb_add(b, esc, 2);
		} else if (c == '\n') {
			sb_add(b, "\\n", 2);
		} else if (c == '\t') {
			sb_add(b, "\\t", 2);
		} else if (c == '\r') {
			sb_add(b, "\\r", 2);
		} else {
			sb_add(b, esc, 6);
		}
	}
	sb_add(b, s + run, n - run);
	sb_add(b, "\"", 1);
}

static void sb_jstr(struct sb *b, const char *s)
{
	sb_json(b, s, strlen(s));
}

/* ---- state ----------------------------------------------------------------------- */

/* What went wrong with a request, as the service (or the transport) said. */
enum err_kind {
	ERR_NONE = 0,
	ERR_TRANSPORT, /* no answer: refused, reset, timeout */
	ERR_THROTTLE,  /* 429, ThrottlingException, RequestThrottled, ... */
	ERR_SERVER,    /* 5xx */
	ERR_NOQUEUE,   /* QueueDoesNotExist / AWS.SimpleQueueService.NonExistentQueue */
	ERR_AUTH,      /* credentials, signature, access */
	ERR_CLIENT,    /* another 4xx */
	ERR_MALFORMED, /* an answer that is not what the action returns */
	ERR_STOPPING,  /* the instance stops */
	ERR_CONFIG,    /* the host cannot sign: no credentials */
	ERR_KINDS,
};

static const char *const err_kind_names[ERR_KINDS] = {
	"none", "transport", "throttling", "server",   "no_queue",
	"auth", "client",    "malformed",  "stopping", "config",
};

struct aws_err {
	int kind;
	long http_status;
	char code[128];
	char qcode[128]; /* the query protocol's code (x-amzn-query-error), or "" */
	char message[ERR_TEXT];
};

/* One log line per kind of trouble and `log_interval`, with a count of
 * what was left out. */
struct ratelog {
	uint64_t last;
	uint64_t suppressed;
};

/* A message held for SQS. */
struct pend {
	const plant_msg *h; /* the held handle; NULL once given back */
	char id[40];
	uint32_t attempts;	  /* failed sends of it */
	uint32_t sender_faults;	  /* of those, refused as its own fault */
	uint64_t due;		  /* not sent before (ms) */
	bool solo;		  /* sent alone: a request with it was refused */
	bool in_req;		  /* in a request now */
	struct pend *prev, *next; /* the ready list */
};

struct sqs;

enum req_kind {
	REQ_SEND,
	REQ_RESOLVE_GET,
	REQ_RESOLVE_CREATE,
	REQ_PROBE,
	REQ_RECEIVE,
	REQ_DELETE,
	REQ_VISIBILITY
};

/* A request in flight: the `user` of http_call. */
struct req {
	int kind;
	struct sqs *s;
	struct pend *e[SQS_BATCH]; /* REQ_SEND */
	size_t n;
	char *receipts[SQS_BATCH]; /* REQ_DELETE, REQ_VISIBILITY */
	uint64_t deadline;	   /* REQ_DELETE: the receipts' visibility ends */
	uint32_t attempts;
	bool sync;		 /* sent with http_call_wait */
	struct req *prev, *next; /* s->reqs */
};

/* A delete to try again. */
struct retry_del {
	struct req *r; /* its receipts, kept */
	uint64_t due;
	struct retry_del *next;
};

/* A received batch held because the internal publish was refused
 * (on_full = "hold"). */
struct held_in {
	json_t *messages; /* the Messages array of the answer */
	uint64_t received_at, extended_at, next_try;
	uint32_t tries;
	struct held_in *next;
};

struct sqs {
	plant_instance *self;
	const struct plant_host_api *api;

	/* settings, [borrowed] from the config */
	const char *queue, *publish_topic, *queue_url_cfg, *queue_name, *region;
	const char *group_id, *group_id_field, *dedup_field;
	const json_t *attributes;
	bool create, fifo, dedup, hold_on_full;
	uint32_t batch, max_inflight, max_pending, max_attempts;
	uint64_t max_batch_bytes;
	uint64_t retry_base, retry_max, hold_max, request_timeout, log_interval;
	uint32_t wait_seconds, max_messages, visibility_s, pollers;
	char *endpoint; /* with a trailing "/" */

	/* the queue's URL, exactly as configured or returned */
	char *url;
	bool resolving;
	uint32_t resolve_streak;
	uint64_t resolve_due;

	uint64_t rng;
	uint64_t timer;
	bool started, stopping;
	struct req *reqs; /* every request in flight */

	struct {
		bool on;
		bool consuming, paused, probing;
		uint64_t consumer;
		struct pend *head, *tail; /* the ready list, oldest first */
		size_t n_ready, n_pending;
		json_t *index; /* plantd id -> pend (as an integer) */
		uint32_t n_reqs;
		uint32_t streak;	/* request-level failures since the last success */
		uint64_t failing_since; /* the first of them */
		uint64_t streak_since;	/* the same, or the last resume: for hold_max */
		uint64_t blocked_until, backoff;
		uint64_t sent, send_failed, retries, rejected;
	} out;

	struct {
		bool on;
		uint32_t n_polls;
		uint32_t streak, full_streak;
		uint64_t streak_since, blocked_until, backoff;
		struct retry_del *retries;
		struct held_in *held;
		uint64_t received, deleted, refused, delete_failed;
	} in;

	struct aws_err last; /* the last failure, for health */
	uint64_t last_at;
	struct ratelog logs[ERR_KINDS];
	struct ratelog log_other;
	double gauge_backoff;
};

/* ---- small helpers --------------------------------------------------------------- */

static uint64_t now_ms(struct sqs *s)
{
	return s->api->now_ms(s->self);
}

static uint64_t rng_next(struct sqs *s)
{
	/* xorshift64*: jitter needs no better */
	uint64_t x = s->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	s->rng = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/* The backoff ceiling after `streak` failures: retry_base * 2^(streak-1),
 * at most retry_max. */
static uint64_t backoff_ceiling(const struct sqs *s, uint32_t streak)
{
	uint64_t d = s->retry_base ? s->retry_base : 1;
	for (uint32_t i = 1; i < streak && d < s->retry_max; i++)
		d *= 2;
	return d < s->retry_max ? d : s->retry_max;
}

/* Full jitter: uniform in [0, ceiling]. */
static uint64_t jitter(struct sqs *s, uint64_t ceiling)
{
	return ceiling ? rng_next(s) % (ceiling + 1) : 0;
}

static void gauge_backoff(struct sqs *s)
{
	uint64_t b = s->out.backoff > s->in.backoff ? s->out.backoff : s->in.backoff;
	if (s->url == NULL && s->resolve_streak)
		b = b > backoff_ceiling(s, s->resolve_streak)
			    ? b
			    : backoff_ceiling(s, s->resolve_streak);
	if ((double)b != s->gauge_backoff) {
		s->gauge_backoff = (double)b;
		s->api->gauge_set(s->self, "backoff_ms", (double)b);
	}
}

static void count(struct sqs *s, const char *name, uint64_t n)
{
	if (n)
		s->api->counter_add(s->self, name, n);
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* A topic name: [A-Za-z0-9_.-], dot-separated, no empty segment. */
static bool topic_ok(const char *t)
{
	size_t n = strlen(t);
	if (n == 0 || n > TOPIC_MAX || t[0] == '.' || t[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = t[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
		if (!ok || (c == '.' && t[i + 1] == '.'))
			return false;
	}
	return true;
}

/* An SQS message attribute name: [A-Za-z0-9_.-], at most 256, no leading or
 * trailing '.', no "..", not AWS./Amazon. */
static bool attr_name_ok(const char *a)
{
	size_t n = strlen(a);
	if (n == 0 || n > 256 || a[0] == '.' || a[n - 1] == '.' || strstr(a, "..") ||
	    strncasecmp(a, "aws.", 4) == 0 || strncasecmp(a, "amazon.", 7) == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = a[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
	}
	return true;
}

/* ---- logging, rate-limited ---------------------------------------------------- */

static void note_failure(struct sqs *s, const struct aws_err *e, const char *what)
{
	s->last = *e;
	s->last_at = now_ms(s);
	struct ratelog *rl = e->kind > 0 && e->kind < ERR_KINDS ? &s->logs[e->kind] : &s->log_other;
	uint64_t now = now_ms(s);
	if (rl->last && now - rl->last < s->log_interval) {
		rl->suppressed++;
		return;
	}
	int level = e->kind == ERR_AUTH || e->kind == ERR_CONFIG || e->kind == ERR_CLIENT
			    ? PLANT_LOG_ERROR
			    : PLANT_LOG_WARN;
	char more[64] = "";
	if (rl->suppressed)
		snprintf(more, sizeof more, " (%" PRIu64 " more like it since the last line)",
			 rl->suppressed);
	if (e->http_status && e->qcode[0])
		s->api->log(s->self, level, "%s: HTTP %ld %s (%s): %s%s", what, e->http_status,
			    e->code, e->qcode, e->message, more);
	else if (e->http_status)
		s->api->log(s->self, level, "%s: HTTP %ld %s: %s%s", what, e->http_status, e->code,
			    e->message, more);
	else
		s->api->log(s->self, level, "%s: %s: %s%s", what, e->code, e->message, more);
	rl->last = now;
	rl->suppressed = 0;
}

static void count_error(struct sqs *s, const struct aws_err *e)
{
	char name[64];
	if (e->kind <= ERR_NONE || e->kind >= ERR_KINDS || e->kind == ERR_STOPPING)
		return;
	snprintf(name, sizeof name, "errors_%s", err_kind_names[e->kind]);
	count(s, name, 1);
}

/* ---- requests -------------------------------------------------------------------- */

static void on_done(void *state, const struct plant_http_result *res, void *user);
static void handle_result(struct sqs *s, struct req *r, const struct plant_http_result *res);

static struct req *req_new(struct sqs *s, int kind)
{
	struct req *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->kind = kind;
	r->s = s;
	return r;
}

static void req_link(struct sqs *s, struct req *r)
{
	r->prev = NULL;
	r->next = s->reqs;
	if (s->reqs)
		s->reqs->prev = r;
	s->reqs = r;
}

static void req_unlink(struct sqs *s, struct req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else if (s->reqs == r)
		s->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->prev = r->next = NULL;
}

static void req_free(struct req *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < SQS_BATCH; i++)
		free(r->receipts[i]);
	free(r);
}

static const char *action_of(int kind)
{
	switch (kind) {
	case REQ_SEND:
		return "SendMessageBatch";
	case REQ_RESOLVE_GET:
		return "GetQueueUrl";
	case REQ_RESOLVE_CREATE:
		return "CreateQueue";
	case REQ_PROBE:
		return "GetQueueAttributes";
	case REQ_RECEIVE:
		return "ReceiveMessage";
	case REQ_DELETE:
		return "DeleteMessageBatch";
	default:
		return "ChangeMessageVisibilityBatch";
	}
}

static void call_fill(struct sqs *s, struct plant_http_call *c, const char *const *hdrs,
		      const struct sb *body, uint64_t timeout)
{
	memset(c, 0, sizeof *c);
	c->struct_size = sizeof *c;
	c->method = "POST";
	c->url = s->endpoint;
	c->headers = hdrs;
	c->body = body->p;
	c->body_len = body->len;
	c->timeout_ms = timeout;
	c->aws_service = "sqs";
	c->aws_region = s->region[0] ? s->region : NULL;
}

/* Send `body` for `r` without waiting: the answer comes to on_done(). When
 * the host refuses at once, the failure is handled here, as an answer. */
static void req_start(struct sqs *s, struct req *r, struct sb *body, uint64_t timeout)
{
	char target[64];
	snprintf(target, sizeof target, "AmazonSQS.%s", action_of(r->kind));
	const char *hdrs[] = {HEADER_TARGET, target, "Content-Type", CONTENT_TYPE_SQS, NULL};
	struct plant_http_call call;
	req_link(s, r);
	if (body->oom) {
		free(body->p);
		struct plant_http_result res = {.status = PLANT_E_NOMEM, .error = "out of memory"};
		req_unlink(s, r);
		handle_result(s, r, &res);
		return;
	}
	call_fill(s, &call, hdrs, body, timeout);
	int rc = s->api->http_call(s->self, &call, on_done, r);
	free(body->p);
	body->p = NULL;
	if (rc != PLANT_OK) {
		struct plant_http_result res = {.status = rc,
						.error = rc == PLANT_E_CONFIG
								 ? "no AWS credentials for signing"
								 : plant_status_name(rc)};
		req_unlink(s, r);
		handle_result(s, r, &res);
	}
}

/* The same, waiting for the answer (from a handler: the backpressure). */
static void req_run_sync(struct sqs *s, struct req *r, struct sb *body, uint64_t timeout)
{
	char target[64];
	snprintf(target, sizeof target, "AmazonSQS.%s", action_of(r->kind));
	const char *hdrs[] = {HEADER_TARGET, target, "Content-Type", CONTENT_TYPE_SQS, NULL};
	struct plant_http_call call;
	struct plant_http_result *res = NULL;
	r->sync = true;
	if (body->oom) {
		free(body->p);
		struct plant_http_result fail = {.status = PLANT_E_NOMEM, .error = "out of memory"};
		handle_result(s, r, &fail);
		return;
	}
	call_fill(s, &call, hdrs, body, timeout);
	int rc = s->api->http_call_wait(s->self, &call, &res);
	free(body->p);
	body->p = NULL;
	if (res) {
		handle_result(s, r, res);
		s->api->http_result_free(res);
	} else {
		struct plant_http_result fail = {.status = rc,
						 .error = rc == PLANT_E_CONFIG
								  ? "no AWS credentials for signing"
								  : plant_status_name(rc)};
		handle_result(s, r, &fail);
	}
}

/* [instance] */
static void on_done(void *state, const struct plant_http_result *res, void *user)
{
	struct sqs *s = state;
	struct req *r = user;
	req_unlink(s, r);
	handle_result(s, r, res);
}

/* ---- answers --------------------------------------------------------------------- */

static bool code_in(const char *code, const char *const *list)
{
	for (size_t i = 0; list[i]; i++)
		if (strcmp(code, list[i]) == 0)
			return true;
	return false;
}

/* A printable excerpt of a body that is not what it should be. */
static void excerpt(char *out, size_t cap, const char *body, size_t len)
{
	size_t k = 0;
	for (size_t i = 0; i < len && k + 4 < cap; i++) {
		unsigned char c = (unsigned char)body[i];
		out[k++] = c >= 0x20 && c < 0x7f ? (char)c : ' ';
	}
	if (len && k + 4 >= cap) {
		out[k++] = '.';
		out[k++] = '.';
		out[k++] = '.';
	}
	out[k] = '\0';
}

/* Read an answer. A 2xx JSON object comes back ([new]); anything else is
 * described in `e` and NULL comes back. */
static json_t *read_answer(struct sqs *s, const struct plant_http_result *res, struct aws_err *e)
{
	static const char *const throttles[] = {"ThrottlingException",
						"Throttling",
						"RequestThrottled",
						"ThrottledException",
						"TooManyRequestsException",
						"RequestLimitExceeded",
						"SlowDown",
						"KmsThrottled",
						"RequestThrottledException",
						NULL};
	static const char *const no_queue[] = {"QueueDoesNotExist", "NonExistentQueue", NULL};
	static const char *const auth[] = {"AccessDenied",
					   "AccessDeniedException",
					   "InvalidClientTokenId",
					   "SignatureDoesNotMatch",
					   "UnrecognizedClientException",
					   "MissingAuthenticationToken",
					   "IncompleteSignature",
					   "InvalidSecurity",
					   "ExpiredToken",
					   "ExpiredTokenException",
					   "RequestExpired",
					   "NotAuthorized",
					   NULL};
	memset(e, 0, sizeof *e);
	if (res->status == PLANT_E_STATE)
		s->stopping = true; /* the host stops us: start nothing more */
	if (res->status != PLANT_OK) {
		e->kind = res->status == PLANT_E_STATE	  ? ERR_STOPPING
			  : res->status == PLANT_E_CONFIG ? ERR_CONFIG
							  : ERR_TRANSPORT;
		snprintf(e->code, sizeof e->code, "%s",
			 res->status == PLANT_E_TIMEOUT ? "Timeout"
			 : res->status == PLANT_E_CONFIG
				 ? "NoCredentials"
				 : (res->status == PLANT_E_STATE ? "Stopping" : "NoAnswer"));
		snprintf(e->message, sizeof e->message, "%s",
			 res->error && res->error[0] ? res->error : plant_status_name(res->status));
		return NULL;
	}
	e->http_status = res->http_status;
	json_error_t jerr;
	json_t *j =
		res->body && res->body_len ? json_loadb(res->body, res->body_len, 0, &jerr) : NULL;
	if (res->http_status >= 200 && res->http_status < 300) {
		if (json_is_object(j))
			return j;
		json_decref(j);
		e->kind = ERR_MALFORMED;
		snprintf(e->code, sizeof e->code, "MalformedAnswer");
		char ex[160];
		excerpt(ex, sizeof ex, res->body ? res->body : "", res->body_len);
		snprintf(e->message, sizeof e->message, "not a JSON object: \"%s\"", ex);
		return NULL;
	}
	/* An error: {"__type": "com.amazonaws.sqs#Code", "message": "..."};
	 * x-amzn-query-error names the query protocol's code
	 * ("AWS.SimpleQueueService.NonExistentQueue;Sender"). */
	const char *type = json_string_value(json_object_get(j, "__type"));
	if (!type)
		type = json_string_value(json_object_get(j, "code"));
	const char *msg = json_string_value(json_object_get(j, "message"));
	if (!msg)
		msg = json_string_value(json_object_get(j, "Message"));
	const char *qerr = s->api->http_result_header
				   ? s->api->http_result_header(res, "x-amzn-query-error")
				   : NULL;
	if (type) {
		const char *hash = strrchr(type, '#');
		snprintf(e->code, sizeof e->code, "%s", hash ? hash + 1 : type);
		char *colon = strchr(e->code, ':'); /* "Code:http://..." in some services */
		if (colon)
			*colon = '\0';
	} else {
		snprintf(e->code, sizeof e->code, "HTTP%ld", res->http_status);
	}
	if (msg) {
		snprintf(e->message, sizeof e->message, "%s", msg);
	} else {
		char ex[160];
		excerpt(ex, sizeof ex, res->body ? res->body : "", res->body_len);
		snprintf(e->message, sizeof e->message, "%s%s%s",
			 j ? "an error without a message" : "an answer that is not JSON",
			 ex[0] ? ": " : "", ex);
	}
	if (qerr && qerr[0]) {
		snprintf(e->qcode, sizeof e->qcode, "%s", qerr);
		char *semi = strchr(e->qcode, ';');
		if (semi)
			*semi = '\0';
		if (strcmp(e->qcode, e->code) == 0)
			e->qcode[0] = '\0';
	}
	json_decref(j);
	const char *bare = strrchr(e->code, '.') ? strrchr(e->code, '.') + 1 : e->code;
	const char *qbare = strrchr(e->qcode, '.') ? strrchr(e->qcode, '.') + 1 : e->qcode;
	if (res->http_status == 429 || code_in(bare, throttles) || code_in(qbare, throttles))
		e->kind = ERR_THROTTLE;
	else if (code_in(bare, no_queue) || code_in(qbare, no_queue))
		e->kind = ERR_NOQUEUE;
	else if (res->http_status >= 500)
		e->kind = ERR_SERVER;
	else if (res->http_status == 401 || res->http_status == 403 || code_in(bare, auth) ||
		 code_in(qbare, auth))
		e->kind = ERR_AUTH;
	else if (res->http_status >= 400)
		e->kind = ERR_CLIENT;
	else
		e->kind = ERR_MALFORMED; /* 1xx, 3xx */
	return NULL;
}

static void malformed(struct aws_err *e, const char *action, const char *why)
{
	e->kind = ERR_MALFORMED;
	snprintf(e->code, sizeof e->code, "MalformedAnswer");
	snprintf(e->message, sizeof e->message, "%s answered 2xx with %s", action, why);
}

/* Only `allowed` keys at the top: an unrelated 200 answer is refused. */
static bool only_keys(const json_t *j, const char *const *allowed)
{
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)j, key, v)
	{
		(void)v;
		bool ok = false;
		for (size_t i = 0; allowed[i]; i++)
			ok = ok || strcmp(key, allowed[i]) == 0;
		if (!ok)
			return false;
	}
	return true;
}

/* ---- resolving the queue URL ----------------------------------------------------- */

static void out_resume_if_ready(struct sqs *s);
static void in_kick(struct sqs *s);
static void out_kick(struct sqs *s);

static void resolve_start(struct sqs *s, int kind)
{
	if (s->url || s->stopping)
		return;
	if (s->queue_url_cfg[0]) {
		s->url = strdup(s->queue_url_cfg);
		return;
	}
	struct req *r = req_new(s, kind);
	if (!r)
		return;
	struct sb b = {0};
	sb_str(&b, "{\"QueueName\":");
	sb_jstr(&b, s->queue_name);
	if (kind == REQ_RESOLVE_CREATE && s->fifo)
		sb_str(&b, ",\"Attributes\":{\"FifoQueue\":\"true\"}");
	sb_str(&b, "}");
	s->resolving = true;
	req_start(s, r, &b, s->request_timeout);
}

static void resolve_failed(struct sqs *s, const struct aws_err *e, const char *action)
{
	s->resolving = false;
	s->resolve_streak++;
	s->resolve_due = now_ms(s) + jitter(s, backoff_ceiling(s, s->resolve_streak));
	count_error(s, e);
	char what[160];
	snprintf(what, sizeof what, "%s %s", action, s->queue_name);
	note_failure(s, e, what);
	gauge_backoff(s);
}

static void resolve_done(struct sqs *s, struct req *r, const struct plant_http_result *res)
{
	struct aws_err e;
	json_t *j = read_answer(s, res, &e);
	if (!j) {
		if (e.kind == ERR_STOPPING) {
			s->resolving = false;
			return;
		}
		if (e.kind == ERR_NOQUEUE && r->kind == REQ_RESOLVE_GET && s->create) {
			s->resolving = false;
			resolve_start(s, REQ_RESOLVE_CREATE);
			return;
		}
		resolve_failed(s, &e, action_of(r->kind));
		return;
	}
	static const char *const keys[] = {"QueueUrl", NULL};
	const char *url = json_string_value(json_object_get(j, "QueueUrl"));
	if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) ||
	    !only_keys(j, keys)) {
		malformed(&e, action_of(r->kind), "no QueueUrl");
		json_decref(j);
		resolve_failed(s, &e, action_of(r->kind));
		return;
	}
	s->url = strdup(url);
	json_decref(j);
	s->resolving = false;
	if (!s->url)
		return;
	if (s->resolve_streak)
		s->api->log(s->self, PLANT_LOG_INFO,
			    "queue %s resolved after %u failed attempts: %s", s->queue_name,
			    s->resolve_streak, s->url);
	else
		s->api->log(s->self, PLANT_LOG_INFO, "queue %s: %s", s->queue_name, s->url);
	s->resolve_streak = 0;
	gauge_backoff(s);
	out_resume_if_ready(s);
	in_kick(s);
	out_kick(s);
}

/* SQS says the queue is gone: resolve it again (queue_name), maybe
 * creating it. */
static void queue_gone(struct sqs *s)
{
	if (!s->queue_name[0] || !s->url)
		return;
	free(s->url);
	s->url = NULL;
	s->resolve_due = 0;
}

/* ---- out ---------------------------------------------------------------------- */

static void ready_unlink(struct sqs *s, struct pend *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		s->out.head = p->next;
	if (p->next)
		p->next->prev = p->prev;
	else
		s->out.tail = p->prev;
	p->prev = p->next = NULL;
	s->out.n_ready--;
}

static void ready_append(struct sqs *s, struct pend *p)
{
	p->next = NULL;
	p->prev = s->out.tail;
	if (s->out.tail)
		s->out.tail->next = p;
	else
		s->out.head = p;
	s->out.tail = p;
	s->out.n_ready++;
}

/* Put a request's entries back at the front, in their order. */
static void ready_prepend(struct sqs *s, struct pend *const *v, size_t n)
{
	for (size_t i = n; i-- > 0;) {
		struct pend *p = v[i];
		p->prev = NULL;
		p->next = s->out.head;
		if (s->out.head)
			s->out.head->prev = p;
		else
			s->out.tail = p;
		s->out.head = p;
		s->out.n_ready++;
	}
}

/* Forget an entry whose message is settled or given back. */
static void pend_drop(struct sqs *s, struct pend *p)
{
	json_t *at = json_object_get(s->out.index, p->id);
	if (at && (struct pend *)(intptr_t)json_integer_value(at) == p)
		json_object_del(s->out.index, p->id);
	s->out.n_pending--;
	free(p);
}

static void gauge_pending(struct sqs *s)
{
	s->api->gauge_set(s->self, "pending", (double)s->out.n_pending);
}

/* A body field, else a message attribute, as text; false when neither. */
static bool field_or_attr(struct sqs *s, const plant_msg *m, const char *name, char *out,
			  size_t cap)
{
	const char *keys[1] = {name};
	struct plant_field f;
	if (s->api->msg_fields(m, keys, 1, &f) == PLANT_OK) {
		if (f.type == PLANT_FIELD_STRING && !f.escaped) {
			snprintf(out, cap, "%.*s", (int)f.len, f.str);
			return true;
		}
		if (f.type == PLANT_FIELD_STRING) {
			const char *v =
				json_string_value(json_object_get(s->api->msg_body(m), name));
			if (v) {
				snprintf(out, cap, "%s", v);
				return true;
			}
		}
		if (f.type == PLANT_FIELD_NUMBER) {
			snprintf(out, cap, "%.17g", f.num);
			return true;
		}
	}
	const char *a = s->api->msg_attr(m, name);
	if (a) {
		snprintf(out, cap, "%s", a);
		return true;
	}
	return false;
}

/* A MessageGroupId or MessageDeduplicationId: 1..128 characters of
 * printable ASCII. Another value becomes "h" and a hash of it. */
static void sqs_id(const char *v, char *out, size_t cap)
{
	size_t n = strlen(v);
	bool ok = n > 0 && n <= ID_MAX;
	for (size_t i = 0; ok && i < n; i++)
		ok = v[i] >= 0x21 && v[i] <= 0x7e;
	if (ok) {
		snprintf(out, cap, "%s", v);
		return;
	}
	uint64_t h1 = 0xcbf29ce484222325ull, h2 = 0x84222325cbf29ce4ull;
	for (size_t i = 0; i < n; i++) {
		h1 = (h1 ^ (unsigned char)v[i]) * 0x100000001b3ull;
		h2 = (h2 ^ (unsigned char)v[n - 1 - i]) * 0x100000001b3ull;
	}
	snprintf(out, cap, "h%016" PRIx64 "%016" PRIx64, h1, h2);
}

/* One entry of a SendMessageBatch; returns its size as SQS counts it
 * (body and attributes). */
static uint64_t entry_json(struct sqs *s, const plant_msg *m, size_t idx, struct sb *b)
{
	size_t len;
	const char *body = s->api->msg_body_text(m, &len);
	const char *topic = s->api->msg_topic(m);
	const char *id = s->api->msg_id(m);
	char ts[24];
	snprintf(ts, sizeof ts, "%" PRIu64, s->api->msg_ts(m));
	uint64_t size = len;
	sb_fmt(b, "{\"Id\":\"%zu\",\"MessageBody\":", idx);
	sb_json(b, body, len);
	sb_str(b, ",\"MessageAttributes\":{\"plantd.topic\":{\"DataType\":\"String\","
		  "\"StringValue\":");
	sb_jstr(b, topic);
	sb_str(b, "},\"plantd.id\":{\"DataType\":\"String\",\"StringValue\":");
	sb_jstr(b, id);
	sb_fmt(b, "},\"plantd.ts\":{\"DataType\":\"Number\",\"StringValue\":\"%s\"}", ts);
	size += strlen("plantd.topic") + 6 + strlen(topic) + strlen("plantd.id") + 6 + strlen(id) +
		strlen("plantd.ts") + 6 + strlen(ts);
	size_t i;
	json_t *name;
	json_array_foreach(s->attributes, i, name)
	{
		const char *a = json_string_value(name);
		const char *v = a ? s->api->msg_attr(m, a) : NULL;
		if (!v || !v[0])
			continue; /* SQS refuses an empty StringValue */
		sb_str(b, ",");
		sb_jstr(b, a);
		sb_str(b, ":{\"DataType\":\"String\",\"StringValue\":");
		sb_jstr(b, v);
		sb_str(b, "}");
		size += strlen(a) + 6 + strlen(v);
	}
	sb_str(b, "}");
	if (s->fifo) {
		char raw[1024], sid[ID_MAX + 8];
		if (!s->group_id_field[0] ||
		    !field_or_attr(s, m, s->group_id_field, raw, sizeof raw))
			snprintf(raw, sizeof raw, "%s", s->group_id);
		sqs_id(raw, sid, sizeof sid);
		sb_str(b, ",\"MessageGroupId\":");
		sb_jstr(b, sid);
		if (!s->dedup_field[0] || !field_or_attr(s, m, s->dedup_field, raw, sizeof raw))
			snprintf(raw, sizeof raw, "%s", id);
		sqs_id(raw, sid, sizeof sid);
		sb_str(b, ",\"MessageDeduplicationId\":");
		sb_jstr(b, sid);
	}
	sb_str(b, "}");
	return size;
}

/* The size SQS will count for a message, as entry_json() gives it. */
static uint64_t entry_size(struct sqs *s, const plant_msg *m)
{
	size_t len;
	char ts[24];
	s->api->msg_body_text(m, &len);
	snprintf(ts, sizeof ts, "%" PRIu64, s->api->msg_ts(m));
	uint64_t size = len + strlen("plantd.topic") + 6 + strlen(s->api->msg_topic(m)) +
			strlen("plantd.id") + 6 + strlen(s->api->msg_id(m)) + strlen("plantd.ts") +
			6 + strlen(ts);
	size_t i;
	json_t *name;
	json_array_foreach(s->attributes, i, name)
	{
		const char *v = s->api->msg_attr(m, json_string_value(name));
		if (v && v[0])
			size += json_string_length(name) + 6 + strlen(v);
	}
	return size;
}

/* Settle a message SQS will never take: to the dead-letter queue with the
 * reason; without one, back to the queue after retry_max. */
static void dead_letter(struct sqs *s, struct pend *p, const char *reason)
{
	int rc = p->h ? s->api->reject(s->self, p->h, reason) : PLANT_OK;
	if (rc == PLANT_OK) {
		s->out.rejected++;
		count(s, "rejected", 1);
		s->api->log(s->self, PLANT_LOG_WARN, "message %s dead-lettered: %s", p->id, reason);
	} else {
		s->api->log(s->self, PLANT_LOG_ERROR,
			    "message %s cannot go to SQS (%s) nor to a dead-letter queue (%s): "
			    "back to the queue in %" PRIu64 " ms",
			    p->id, reason, plant_status_name(rc), s->retry_max);
		s->api->nack(s->self, p->h, s->retry_max, reason);
	}
	p->h = NULL;
	pend_drop(s, p);
}

/* Take the next batch to send from the ready list: due entries, oldest
 * first, up to 10 and max_batch_bytes; a `solo` entry alone. */
static struct req *out_take(struct sqs *s, uint64_t now, struct sb *body)
{
	struct req *r = NULL;
	uint64_t bytes = 0;
	struct pend *p = s->out.head;
	while (p && (!r || r->n < SQS_BATCH)) {
		struct pend *next = p->next;
		/* FIFO: nothing overtakes a message waiting for its retry */
		if (s->fifo && p->due > now)
			break;
		if (p->due > now || (p->solo && r && r->n)) {
			p = next;
			continue;
		}
		if (!r) {
			r = req_new(s, REQ_SEND);
			if (!r)
				return NULL;
			sb_str(body, "{\"QueueUrl\":");
			sb_jstr(body, s->url);
			sb_str(body, ",\"Entries\":[");
		}
		size_t mark = body->len;
		if (r->n)
			sb_str(body, ",");
		uint64_t size = entry_json(s, p->h, r->n, body);
		if (r->n && bytes + size > s->max_batch_bytes) {
			body->len = mark; /* next time */
			if (body->p)
				body->p[mark] = '\0';
			break;
		}
		bytes += size;
		ready_unlink(s, p);
		p->in_req = true;
		r->e[r->n++] = p;
		if (p->solo)
			break;
		p = next;
	}
	if (r)
		sb_str(body, "]}");
	return r;
}

static bool out_can_send(struct sqs *s, uint64_t now)
{
	return s->out.on && s->url && !s->out.paused && !s->stopping && now >= s->out.blocked_until;
}

/* Requests to a FIFO queue go one at a time, synchronously, so that the
 * messages of a group reach SQS in their order; at most this many per call
 * (the tick goes on). */
#define FIFO_SENDS_PER_KICK 8

static void out_kick(struct sqs *s)
{
	uint64_t now = now_ms(s);
	if (s->fifo) {
		for (int k = 0; k < FIFO_SENDS_PER_KICK && s->out.n_ready; k++) {
			now = now_ms(s);
			if (!out_can_send(s, now))
				break;
			struct sb body = {0};
			struct req *r = out_take(s, now, &body);
			if (!r) {
				free(body.p);
				break;
			}
			req_run_sync(s, r, &body, s->request_timeout);
		}
		return;
	}
	while (out_can_send(s, now) && s->out.n_reqs < s->max_inflight && s->out.n_ready) {
		struct sb body = {0};
		struct req *r = out_take(s, now, &body);
		if (!r) {
			free(body.p);
			break;
		}
		s->out.n_reqs++;
		req_start(s, r, &body, s->request_timeout);
	}
}

/* Stop receiving: every held message goes back to the queue (the
 * consumer's going does that), nothing more comes until SQS answers a
 * probe. Those in a request now are forgotten when it ends. */
static void out_pause(struct sqs *s, const char *why)
{
	if (s->out.paused || !s->out.consuming)
		return;
	s->api->unsubscribe(s->self, s->out.consumer);
	s->out.consuming = false;
	s->out.paused = true;
	size_t given = s->out.n_pending;
	while (s->out.head) {
		struct pend *p = s->out.head;
		ready_unlink(s, p);
		if (p->h)
			s->api->release(s->self, p->h);
		p->h = NULL;
		pend_drop(s, p);
	}
	for (struct req *r = s->reqs; r; r = r->next)
		for (size_t i = 0; r->kind == REQ_SEND && i < r->n; i++)
			if (r->e[i] && r->e[i]->h) {
				s->api->release(s->self, r->e[i]->h);
				r->e[i]->h = NULL;
			}
	s->api->gauge_set(s->self, "paused", 1);
	gauge_pending(s);
	s->api->log(s->self, PLANT_LOG_WARN,
		    "paused: %s; %zu held messages went back to queue %s, which keeps the rest",
		    why, given, s->queue);
}

static int on_out_batch(void *state, const plant_msg *const *msgs, size_t n, void *user);

static void out_consume(struct sqs *s)
{
	if (s->out.consuming || s->stopping)
		return;
	int rc = s->api->consume(s->self, s->queue, on_out_batch, NULL, s->batch, &s->out.consumer);
	if (rc != PLANT_OK) {
		s->api->log(s->self, PLANT_LOG_ERROR, "cannot consume queue %s: %s", s->queue,
			    plant_status_name(rc));
		return;
	}
	s->out.consuming = true;
}

static void out_resume_if_ready(struct sqs *s)
{
	if (!s->out.on || !s->url || s->stopping)
		return;
	out_consume(s);
	if (!s->out.consuming)
		return; /* paused still: the next probe tries again */
	if (s->out.paused) {
		s->out.paused = false;
		/* a fresh hold_max: the backoff keeps growing until a send works */
		if (s->out.streak)
			s->out.streak_since = now_ms(s);
		s->api->gauge_set(s->self, "paused", 0);
		s->api->log(s->self, PLANT_LOG_INFO, "SQS answers again: consuming queue %s",
			    s->queue);
	}
}

/* While requests fail: pause when the window is full, or when messages
 * have been held for hold_max. */
static void out_check_pause(struct sqs *s, uint64_t now)
{
	if (!s->out.consuming || s->out.paused)
		return;
	bool failing = s->out.streak > 0 || !s->url;
	if (!failing)
		return;
	if (s->out.n_pending >= s->max_pending)
		out_pause(s, "SQS fails and the window of held messages is full");
	else if (s->out.n_pending && s->out.streak_since &&
		 now - s->out.streak_since >= s->hold_max)
		out_pause(s, "SQS has failed for hold_max");
}

/* A request-level failure (no answer, an error, a malformed answer). */
static void out_request_failed(struct sqs *s, struct req *r, const struct aws_err *e)
{
	uint64_t now = now_ms(s);
	char reason[ERR_TEXT + 256];
	snprintf(reason, sizeof reason, "SQS SendMessageBatch: %s: %s", e->code, e->message);
	struct pend *back[SQS_BATCH];
	size_t nb = 0;
	for (size_t i = 0; i < r->n; i++) {
		struct pend *p = r->e[i];
		p->in_req = false;
		if (!p->h) { /* given back by a pause */
			pend_drop(s, p);
			continue;
		}
		p->attempts++;
		s->out.retries++;
		s->out.send_failed++;
		if (e->kind == ERR_CLIENT) {
			/* maybe one message's fault: each alone from now on, and
			 * one refused alone max_attempts times is dead-lettered */
			if (r->n == 1 && p->solo && ++p->sender_faults >= s->max_attempts) {
				dead_letter(s, p, reason);
				continue;
			}
			p->solo = true;
		}
		back[nb++] = p;
	}
	count(s, "retries", nb);
	count(s, "send_failed", r->n);
	ready_prepend(s, back, nb);
	if (e->kind == ERR_CLIENT && r->n > 1) {
		/* split at once: the others may be fine */
		note_failure(s, e, "SendMessageBatch (sending its messages one by one)");
		return;
	}
	if (!s->out.streak)
		s->out.streak_since = s->out.failing_since = now;
	s->out.streak++;
	s->out.backoff = backoff_ceiling(s, s->out.streak);
	s->out.blocked_until = now + jitter(s, s->out.backoff);
	if (e->kind == ERR_NOQUEUE)
		queue_gone(s);
	char what[96];
	snprintf(what, sizeof what, "SendMessageBatch (retry in at most %" PRIu64 " ms)",
		 s->out.backoff);
	note_failure(s, e, what);
	gauge_backoff(s);
}

static void out_recovered(struct sqs *s, uint64_t now)
{
	if (!s->out.streak)
		return;
	s->api->log(s->self, PLANT_LOG_INFO,
		    "SendMessageBatch works again after %u failed attempts (%" PRIu64 " ms)",
		    s->out.streak, now - s->out.failing_since);
	s->out.streak = 0;
	s->out.streak_since = 0;
	s->out.failing_since = 0;
	s->out.backoff = 0;
	s->out.blocked_until = 0;
	gauge_backoff(s);
}

static void send_done(struct sqs *s, struct req *r, const struct plant_http_result *res, bool async)
{
	uint64_t now = now_ms(s);
	struct aws_err e;
	if (async)
		s->out.n_reqs--;
	json_t *j = read_answer(s, res, &e);
	if (!j) {
		if (e.kind == ERR_STOPPING) {
			for (size_t i = 0; i < r->n; i++) {
				if (r->e[i]->h)
					s->api->release(s->self, r->e[i]->h);
				r->e[i]->h = NULL;
				r->e[i]->in_req = false;
				pend_drop(s, r->e[i]);
			}
			return;
		}
		count_error(s, &e);
		out_request_failed(s, r, &e);
		gauge_pending(s);
		return;
	}
	/* {"Successful": [{"Id", "MessageId", "MD5OfMessageBody", ...}],
	 *  "Failed": [{"Id", "SenderFault", "Code", "Message"}]}: every entry
	 * once, in one of the two */
	static const char *const keys[] = {"Successful", "Failed", NULL};
	json_t *ok = json_object_get(j, "Successful"), *bad = json_object_get(j, "Failed");
	int seen[SQS_BATCH] = {0};
	bool shape = (ok || bad) && (!ok || json_is_array(ok)) && (!bad || json_is_array(bad)) &&
		     only_keys(j, keys);
	size_t i;
	json_t *x;
	json_array_foreach(ok, i, x)
	{
		const char *id = json_string_value(json_object_get(x, "Id"));
		char *end;
		unsigned long k = id ? strtoul(id, &end, 10) : SQS_BATCH;
		if (!id || *end || k >= r->n || seen[k] ||
		    !json_is_string(json_object_get(x, "MessageId")))
			shape = false;
		else
			seen[k] = 1;
	}
	json_array_foreach(bad, i, x)
	{
		const char *id = json_string_value(json_object_get(x, "Id"));
		char *end;
		unsigned long k = id ? strtoul(id, &end, 10) : SQS_BATCH;
		if (!id || *end || k >= r->n || seen[k] ||
		    !json_is_string(json_object_get(x, "Code")))
			shape = false;
		else
			seen[k] = 2 + (int)i;
	}
	for (size_t k = 0; k < r->n; k++)
		shape = shape && seen[k];
	if (!shape) {
		/* nothing is taken for sent unless the answer says so clearly */
		malformed(&e, "SendMessageBatch",
			  "an answer that does not account for its entries");
		json_decref(j);
		count_error(s, &e);
		out_request_failed(s, r, &e);
		gauge_pending(s);
		return;
	}
	size_t sent = 0, failed = 0, retry = 0;
	struct pend *back[SQS_BATCH];
	size_t nb = 0;
	struct aws_err fe = {0};
	uint64_t wait = UINT64_MAX;
	for (size_t k = 0; k < r->n; k++) {
		struct pend *p = r->e[k];
		p->in_req = false;
		if (seen[k] == 1) {
			if (p->h) {
				int rc = s->api->ack(s->self, p->h);
				if (rc != PLANT_OK && rc != PLANT_E_NOTFOUND)
					s->api->log(s->self, PLANT_LOG_WARN, "ack of %s: %s", p->id,
						    plant_status_name(rc));
				p->h = NULL;
			}
			sent++;
			pend_drop(s, p);
			continue;
		}
		json_t *f = json_array_get(bad, (size_t)(seen[k] - 2));
		const char *code = json_string_value(json_object_get(f, "Code"));
		const char *msg = json_string_value(json_object_get(f, "Message"));
		bool sender = json_is_true(json_object_get(f, "SenderFault"));
		failed++;
		fe.kind = sender ? ERR_CLIENT : ERR_SERVER;
		snprintf(fe.code, sizeof fe.code, "%s", code);
		snprintf(fe.message, sizeof fe.message, "%s", msg ? msg : "");
		if (!p->h) {
			pend_drop(s, p);
			continue;
		}
		p->attempts++;
		if (sender && ++p->sender_faults >= s->max_attempts) {
			char reason[ERR_TEXT + 256];
			snprintf(reason, sizeof reason, "SQS refused it (sender's fault): %s: %s",
				 fe.code, fe.message);
			dead_letter(s, p, reason);
			continue;
		}
		/* one wait for all the entries of an answer: they go again
		 * together */
		if (wait == UINT64_MAX)
			wait = jitter(s, backoff_ceiling(s, p->attempts));
		p->due = now + wait;
		back[nb++] = p;
		retry++;
	}
	json_decref(j);
	ready_prepend(s, back, nb);
	gauge_pending(s);
	s->out.sent += sent;
	s->out.send_failed += failed;
	s->out.retries += retry;
	count(s, "sent", sent);
	count(s, "send_failed", failed);
	count(s, "retries", retry);
	if (failed) {
		count(s, "errors_entries", failed);
		note_failure(s, &fe, "SendMessageBatch entry");
	}
	if (sent)
		out_recovered(s, now);
	else if (failed == r->n && fe.kind == ERR_SERVER) {
		/* all refused by the server: as good as a failed request */
		if (!s->out.streak)
			s->out.streak_since = s->out.failing_since = now;
		s->out.streak++;
		s->out.backoff = backoff_ceiling(s, s->out.streak);
		s->out.blocked_until = now + jitter(s, s->out.backoff);
		gauge_backoff(s);
	}
}

/* [instance] The consumer: hold everything, send what the window allows,
 * and when it is full send synchronously until there is room. */
static int on_out_batch(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	struct sqs *s = state;
	(void)user;
	if (s->out.paused || s->stopping) {
		/* a batch of the consumer we just removed */
		for (size_t i = 0; i < n; i++)
			s->api->nack(s->self, msgs[i], 0, "transport_sqs paused");
		return PLANT_OK;
	}
	for (size_t i = 0; i < n; i++) {
		const plant_msg *m = msgs[i];
		const char *id = s->api->msg_id(m);
		json_t *at = json_object_get(s->out.index, id);
		if (at) {
			/* it timed out while held and came back: the old handle is
			 * stale, keep the entry with the new one */
			struct pend *old = (struct pend *)(intptr_t)json_integer_value(at);
			const plant_msg *h = s->api->hold(s->self, m);
			if (h) {
				if (old->h)
					s->api->release(s->self, old->h);
				old->h = h;
			}
			continue;
		}
		uint64_t size = entry_size(s, m);
		if (size > s->max_batch_bytes) {
			char reason[160];
			snprintf(reason, sizeof reason,
				 "too large for SQS: %" PRIu64
				 " bytes with its attributes, more than "
				 "max_batch_bytes (%" PRIu64 ")",
				 size, s->max_batch_bytes);
			int rc = s->api->reject(s->self, m, reason);
			if (rc != PLANT_OK)
				s->api->nack(s->self, m, s->retry_max, reason);
			else
				count(s, "rejected", 1);
			s->api->log(s->self, PLANT_LOG_WARN, "message %s %s: %s", id,
				    rc == PLANT_OK ? "dead-lettered" : "cannot be sent", reason);
			continue;
		}
		struct pend *p = calloc(1, sizeof *p);
		const plant_msg *h = p ? s->api->hold(s->self, m) : NULL;
		if (!h) {
			free(p);
			s->api->nack(s->self, m, s->retry_base, "out of memory");
			continue;
		}
		p->h = h;
		snprintf(p->id, sizeof p->id, "%s", id);
		json_object_set_new(s->out.index, p->id, json_integer((json_int_t)(intptr_t)p));
		ready_append(s, p);
		s->out.n_pending++;
	}
	out_kick(s);
	while (s->out.n_pending >= s->max_pending && !s->stopping && s->out.consuming) {
		uint64_t now = now_ms(s);
		if (!out_can_send(s, now)) {
			out_check_pause(s, now);
			break;
		}
		struct sb body = {0};
		struct req *r = out_take(s, now, &body);
		if (!r) {
			free(body.p);
			/* all in requests now: the next batch finds room; or none
			 * due, every one refused lately: make room by pausing */
			if (s->out.n_ready)
				out_pause(s, "the window is full of messages SQS refused lately");
			break;
		}
		req_run_sync(s, r, &body, s->request_timeout);
	}
	gauge_pending(s);
	return PLANT_OK;
}

/* A probe while paused: does SQS answer for the queue? */
static void out_probe(struct sqs *s)
{
	struct req *r = req_new(s, REQ_PROBE);
	if (!r)
		return;
	struct sb b = {0};
	sb_str(&b, "{\"QueueUrl\":");
	sb_jstr(&b, s->url);
	sb_str(&b, ",\"AttributeNames\":[\"QueueArn\"]}");
	s->out.probing = true;
	req_start(s, r, &b, s->request_timeout);
}

static void probe_done(struct sqs *s, const struct plant_http_result *res)
{
	s->out.probing = false;
	struct aws_err e;
	json_t *j = read_answer(s, res, &e);
	static const char *const keys[] = {"Attributes", NULL};
	if (j && (!json_is_object(json_object_get(j, "Attributes")) || !only_keys(j, keys))) {
		malformed(&e, "GetQueueAttributes", "no Attributes");
		json_decref(j);
		j = NULL;
	}
	uint64_t now = now_ms(s);
	if (!j) {
		if (e.kind == ERR_STOPPING)
			return;
		count_error(s, &e);
		s->out.streak++;
		s->out.backoff = backoff_ceiling(s, s->out.streak);
		s->out.blocked_until = now + jitter(s, s->out.backoff);
		if (e.kind == ERR_NOQUEUE)
			queue_gone(s);
		note_failure(s, &e, "GetQueueAttributes (paused)");
		gauge_backoff(s);
		return;
	}
	json_decref(j);
	out_resume_if_ready(s);
}

/* ---- in ----------------------------------------------------------------------- */

static void in_failed(struct sqs *s, const struct aws_err *e, const char *what)
{
	uint64_t now = now_ms(s);
	if (!s->in.streak)
		s->in.streak_since = now;
	s->in.streak++;
	s->in.backoff = backoff_ceiling(s, s->in.streak);
	s->in.blocked_until = now + jitter(s, s->in.backoff);
	count_error(s, e);
	if (e->kind == ERR_NOQUEUE)
		queue_gone(s);
	char w[128];
	snprintf(w, sizeof w, "%s (retry in at most %" PRIu64 " ms)", what, s->in.backoff);
	note_failure(s, e, w);
	gauge_backoff(s);
}

static void in_recovered(struct sqs *s)
{
	if (!s->in.streak)
		return;
	s->api->log(s->self, PLANT_LOG_INFO,
		    "ReceiveMessage works again after %u failed attempts (%" PRIu64 " ms)",
		    s->in.streak, now_ms(s) - s->in.streak_since);
	s->in.streak = 0;
	s->in.backoff = 0;
	s->in.blocked_until = 0;
	gauge_backoff(s);
}

static void in_poll(struct sqs *s)
{
	struct req *r = req_new(s, REQ_RECEIVE);
	if (!r)
		return;
	struct sb b = {0};
	sb_str(&b, "{\"QueueUrl\":");
	sb_jstr(&b, s->url);
	sb_fmt(&b,
	       ",\"MaxNumberOfMessages\":%u,\"WaitTimeSeconds\":%u,\"VisibilityTimeout\":%u,"
	       "\"MessageAttributeNames\":[\"All\"],\"MessageSystemAttributeNames\":[\"All\"]}",
	       s->max_messages, s->wait_seconds, s->visibility_s);
	s->in.n_polls++;
	req_start(s, r, &b, s->request_timeout + (uint64_t)s->wait_seconds * 1000);
}

static void in_kick(struct sqs *s)
{
	uint64_t now = now_ms(s);
	while (s->in.on && s->url && !s->stopping && !s->in.held && now >= s->in.blocked_until &&
	       s->in.n_polls < s->pollers)
		in_poll(s);
}

/* A batch request on receipt handles: DeleteMessageBatch or
 * ChangeMessageVisibilityBatch (`visibility` seconds). Takes `r`. */
static void receipts_start(struct sqs *s, struct req *r, int visibility)
{
	if (!s->url) {
		struct plant_http_result res = {.status = PLANT_E_IO,
						.error = "the queue URL is not known now"};
		handle_result(s, r, &res);
		return;
	}
	struct sb b = {0};
	sb_str(&b, "{\"QueueUrl\":");
	sb_jstr(&b, s->url);
	sb_str(&b, ",\"Entries\":[");
	for (size_t i = 0; i < r->n; i++) {
		sb_fmt(&b, "%s{\"Id\":\"%zu\",\"ReceiptHandle\":", i ? "," : "", i);
		sb_jstr(&b, r->receipts[i]);
		if (r->kind == REQ_VISIBILITY)
			sb_fmt(&b, ",\"VisibilityTimeout\":%d", visibility);
		sb_str(&b, "}");
	}
	sb_str(&b, "]}");
	req_start(s, r, &b, s->request_timeout);
}

static struct req *receipts_req(struct sqs *s, int kind, const json_t *messages)
{
	struct req *r = req_new(s, kind);
	if (!r)
		return NULL;
	size_t i;
	json_t *m;
	json_array_foreach(messages, i, m)
	{
		if (i >= SQS_BATCH)
			break;
		r->receipts[r->n] = strdup(json_string_value(json_object_get(m, "ReceiptHandle")));
		if (r->receipts[r->n])
			r->n++;
	}
	return r;
}

static void in_delete(struct sqs *s, const json_t *messages, uint64_t received_at)
{
	struct req *r = receipts_req(s, REQ_DELETE, messages);
	if (!r)
		return;
	r->deadline = received_at + (uint64_t)s->visibility_s * 1000;
	receipts_start(s, r, 0);
}

static void in_visibility(struct sqs *s, const json_t *messages, int seconds)
{
	struct req *r = receipts_req(s, REQ_VISIBILITY, messages);
	if (r)
		receipts_start(s, r, seconds);
}

/* Internal attributes of a received message: its String and Number
 * message attributes, plantd.* renamed source_*, and sqs_message_id.
 * [new] */
static json_t *in_attributes(const json_t *m)
{
	json_t *a = json_object();
	const char *key;
	json_t *v;
	json_object_foreach(json_object_get(m, "MessageAttributes"), key, v)
	{
		const char *sv = json_string_value(json_object_get(v, "StringValue"));
		const char *name = key;
		if (!sv)
			continue; /* binary */
		if (strcmp(key, "plantd.topic") == 0)
			name = "source_topic";
		else if (strcmp(key, "plantd.id") == 0)
			name = "source_id";
		else if (strcmp(key, "plantd.ts") == 0)
			name = "source_ts";
		json_object_set_new(a, name, json_string(sv));
	}
	const char *mid = json_string_value(json_object_get(m, "MessageId"));
	if (mid)
		json_object_set_new(a, "sqs_message_id", json_string(mid));
	return a;
}

/* Publish a received batch, all or nothing. PLANT_OK, PLANT_E_FULL, or
 * another status when it cannot be published at all. */
static int in_publish(struct sqs *s, const json_t *messages)
{
	size_t n = json_array_size(messages);
	struct plant_publish items[SQS_BATCH];
	json_t *attrs[SQS_BATCH];
	bool as_string[SQS_BATCH] = {false};
	int rc = PLANT_E_INVALID;
	if (n > SQS_BATCH)
		n = SQS_BATCH;
	for (size_t k = 0; k < n; k++)
		attrs[k] = in_attributes(json_array_get(messages, k));
	for (int round = 0; round < PUBLISH_RETRIES; round++) {
		for (size_t k = 0; k < n; k++) {
			const json_t *m = json_array_get(messages, k);
			const json_t *body = json_object_get(m, "Body");
			memset(&items[k], 0, sizeof items[k]);
			items[k].struct_size = sizeof items[k];
			items[k].topic = s->publish_topic;
			items[k].attributes = attrs[k];
			if (as_string[k]) {
				items[k].body = json_stringn(json_string_value(body),
							     json_string_length(body));
			} else {
				items[k].text = json_string_value(body);
				items[k].text_len = json_string_length(body);
			}
			if (s->dedup) {
				const char *d =
					json_string_value(json_object_get(attrs[k], "source_id"));
				items[k].dedup_key =
					d ? d : json_string_value(json_object_get(m, "MessageId"));
			}
		}
		size_t bad = SIZE_MAX;
		rc = s->api->publish_all(s->self, items, n, &bad);
		if (rc != PLANT_E_INVALID || bad >= n || as_string[bad])
			break;
		/* a body that is not JSON: published as a JSON string */
		as_string[bad] = true;
	}
	for (size_t k = 0; k < n; k++)
		json_decref(attrs[k]);
	return rc;
}

static void receive_done(struct sqs *s, const struct plant_http_result *res)
{
	s->in.n_polls--;
	struct aws_err e;
	json_t *j = read_answer(s, res, &e);
	if (!j) {
		if (e.kind == ERR_STOPPING)
			return;
		count(s, "receive_failed", 1);
		in_failed(s, &e, "ReceiveMessage");
		in_kick(s);
		return;
	}
	/* {} after a long poll that found nothing, or {"Messages": [{"MessageId",
	 * "ReceiptHandle", "Body", "MD5OfBody", "MessageAttributes"?, "Attributes"?}]} */
	static const char *const keys[] = {"Messages", NULL};
	json_t *msgs = json_object_get(j, "Messages");
	bool shape = only_keys(j, keys) && (!msgs || json_is_array(msgs)) &&
		     json_array_size(msgs) <= SQS_BATCH;
	size_t i;
	json_t *m;
	json_array_foreach(msgs, i, m)
	{
		const json_t *ma = json_object_get(m, "MessageAttributes");
		shape = shape && json_is_string(json_object_get(m, "MessageId")) &&
			json_is_string(json_object_get(m, "ReceiptHandle")) &&
			json_is_string(json_object_get(m, "Body")) && (!ma || json_is_object(ma));
	}
	if (!shape) {
		malformed(&e, "ReceiveMessage", "an answer that is not a list of messages");
		json_decref(j);
		count(s, "receive_failed", 1);
		in_failed(s, &e, "ReceiveMessage");
		in_kick(s);
		return;
	}
	in_recovered(s);
	size_t n = json_array_size(msgs);
	if (n) {
		uint64_t now = now_ms(s);
		int rc = in_publish(s, msgs);
		if (rc == PLANT_OK) {
			s->in.received += n;
			count(s, "received", n);
			in_delete(s, msgs, now);
			if (s->in.full_streak) {
				s->in.full_streak = 0;
				s->in.backoff = 0;
				gauge_backoff(s);
			}
		} else {
			s->in.refused += n;
			count(s, "publish_refused", n);
			s->in.full_streak++;
			s->in.backoff = backoff_ceiling(s, s->in.full_streak);
			uint64_t wait = jitter(s, s->in.backoff);
			struct aws_err fe = {.kind = ERR_NONE};
			snprintf(fe.code, sizeof fe.code, "PublishRefused");
			snprintf(fe.message, sizeof fe.message,
				 "%s: publish_all on %s refused %zu messages",
				 plant_status_name(rc), s->publish_topic, n);
			note_failure(s, &fe, "internal publish");
			if (s->hold_on_full) {
				struct held_in *h = calloc(1, sizeof *h);
				if (h) {
					h->messages = json_incref(msgs);
					h->received_at = h->extended_at = now;
					h->next_try = now + wait;
					h->next = s->in.held;
					s->in.held = h;
				}
			} else {
				/* back to SQS after the backoff, for any consumer */
				int secs = (int)((wait + 999) / 1000);
				in_visibility(s, msgs, secs);
				s->in.blocked_until = now + wait;
			}
			gauge_backoff(s);
		}
	}
	json_decref(j);
	in_kick(s);
}

/* Receipts that a failed DeleteMessageBatch still has time for are tried
 * again: a message that is not deleted comes back, and is published twice
 * (the dedup key catches it within the queue's dedup_window). */
static void receipts_done(struct sqs *s, struct req *r, const struct plant_http_result *res)
{
	struct aws_err e;
	json_t *j = read_answer(s, res, &e);
	bool del = r->kind == REQ_DELETE;
	const char *action = action_of(r->kind);
	if (j) {
		static const char *const keys[] = {"Successful", "Failed", NULL};
		json_t *ok = json_object_get(j, "Successful"), *bad = json_object_get(j, "Failed");
		if ((!ok && !bad) || (ok && !json_is_array(ok)) || (bad && !json_is_array(bad)) ||
		    !only_keys(j, keys) || json_array_size(ok) + json_array_size(bad) != r->n) {
			malformed(&e, action, "an answer that does not account for its entries");
			json_decref(j);
			j = NULL;
		}
	}
	if (!j) {
		if (e.kind == ERR_STOPPING) {
			req_free(r);
			return;
		}
		count_error(s, &e);
		note_failure(s, &e, action);
		uint64_t now = now_ms(s);
		r->attempts++;
		if (e.kind == ERR_NOQUEUE)
			queue_gone(s);
		if (del && now < r->deadline && e.kind != ERR_NOQUEUE) {
			struct retry_del *d = calloc(1, sizeof *d);
			if (d) {
				d->r = r;
				d->due = now + jitter(s, backoff_ceiling(s, r->attempts));
				d->next = s->in.retries;
				s->in.retries = d;
				return;
			}
		}
		if (del) {
			s->in.delete_failed += r->n;
			count(s, "delete_failed", r->n);
		}
		req_free(r);
		return;
	}
	size_t good = json_array_size(json_object_get(j, "Successful"));
	size_t bad = json_array_size(json_object_get(j, "Failed"));
	if (bad) {
		json_t *f = json_array_get(json_object_get(j, "Failed"), 0);
		struct aws_err fe = {.kind = ERR_CLIENT};
		snprintf(fe.code, sizeof fe.code, "%s",
			 json_string_value(json_object_get(f, "Code"))
				 ? json_string_value(json_object_get(f, "Code"))
				 : "Unknown");
		snprintf(fe.message, sizeof fe.message, "%zu of %zu entries: %s", bad, r->n,
			 json_string_value(json_object_get(f, "Message"))
				 ? json_string_value(json_object_get(f, "Message"))
				 : "");
		note_failure(s, &fe, action);
	}
	if (del) {
		s->in.deleted += good;
		s->in.delete_failed += bad;
		count(s, "deleted", good);
		count(s, "delete_failed", bad);
	} else {
		count(s, "visibility_changed", good);
	}
	json_decref(j);
	req_free(r);
}

/* ---- the tick -------------------------------------------------------------------- */

static void in_tick(struct sqs *s, uint64_t now)
{
	/* deletes to try again */
	struct retry_del **pp = &s->in.retries;
	while (*pp) {
		struct retry_del *d = *pp;
		if (d->due > now || !s->url) {
			pp = &d->next;
			continue;
		}
		*pp = d->next;
		struct req *r = d->r;
		free(d);
		if (now >= r->deadline) {
			s->in.delete_failed += r->n;
			count(s, "delete_failed", r->n);
			req_free(r);
			continue;
		}
		receipts_start(s, r, 0);
	}
	/* held batches (on_full = "hold"): publish again, extend the visibility */
	struct held_in **hp = &s->in.held;
	while (*hp) {
		struct held_in *h = *hp;
		if (now >= h->next_try) {
			int rc = in_publish(s, h->messages);
			if (rc == PLANT_OK) {
				size_t n = json_array_size(h->messages);
				s->in.received += n;
				count(s, "received", n);
				in_delete(s, h->messages, h->extended_at);
				*hp = h->next;
				json_decref(h->messages);
				free(h);
				s->in.full_streak = 0;
				s->in.backoff = 0;
				gauge_backoff(s);
				continue;
			}
			s->in.full_streak++;
			s->in.backoff = backoff_ceiling(s, s->in.full_streak);
			h->next_try = now + jitter(s, s->in.backoff);
			h->tries++;
			count(s, "publish_refused", json_array_size(h->messages));
			gauge_backoff(s);
		}
		if (s->url && now - h->extended_at >= (uint64_t)s->visibility_s * 500) {
			in_visibility(s, h->messages, (int)s->visibility_s);
			h->extended_at = now;
		}
		hp = &h->next;
	}
	in_kick(s);
}

/* [instance] */
static void on_tick(void *state, void *user)
{
	struct sqs *s = state;
	(void)user;
	if (s->stopping)
		return;
	uint64_t now = now_ms(s);
	if (!s->url && !s->resolving && now >= s->resolve_due)
		resolve_start(s, REQ_RESOLVE_GET);
	if (s->out.on) {
		out_check_pause(s, now);
		if (s->out.paused && s->url && !s->out.probing && now >= s->out.blocked_until)
			out_probe(s);
		out_kick(s);
	}
	if (s->in.on)
		in_tick(s, now);
}

static void handle_result(struct sqs *s, struct req *r, const struct plant_http_result *res)
{
	switch (r->kind) {
	case REQ_SEND: {
		bool sync = r->sync;
		send_done(s, r, res, !sync);
		req_free(r);
		if (!sync) /* a synchronous sender goes on by itself */
			out_kick(s);
		break;
	}
	case REQ_RESOLVE_GET:
	case REQ_RESOLVE_CREATE:
		resolve_done(s, r, res);
		req_free(r);
		break;
	case REQ_PROBE:
		probe_done(s, res);
		req_free(r);
		break;
	case REQ_RECEIVE:
		receive_done(s, res);
		req_free(r);
		break;
	default:
		receipts_done(s, r, res);
		break;
	}
}

/* ---- lifecycle ------------------------------------------------------------------ */

static int num(const json_t *config, const char *key, int64_t lo, int64_t hi, int64_t *out,
	       plant_instance *self, const struct plant_host_api *api)
{
	json_int_t v = json_integer_value(json_object_get(config, key));
	if (v < lo || v > hi) {
		api->error(self, key, "%s must be between %" PRId64 " and %" PRId64 ", not %lld",
			   key, lo, hi, (long long)v);
		return PLANT_E_CONFIG;
	}
	*out = v;
	return PLANT_OK;
}

static int sqs_validate(plant_instance *self, const struct plant_host_api *api,
			const json_t *config)
{
	const char *queue = json_string_value(json_object_get(config, "queue"));
	const char *topic = json_string_value(json_object_get(config, "publish_topic"));
	const char *url = json_string_value(json_object_get(config, "queue_url"));
	const char *name = json_string_value(json_object_get(config, "queue_name"));
	const char *endpoint = json_string_value(json_object_get(config, "endpoint"));
	const char *on_full = json_string_value(json_object_get(config, "on_full"));
	int64_t v;
	if (!queue[0] && !topic[0]) {
		api->error(self, NULL,
			   "nothing to do: set queue (internal queue -> SQS) and/or "
			   "publish_topic (SQS -> internal topic)");
		return PLANT_E_CONFIG;
	}
	if (topic[0] && !topic_ok(topic)) {
		api->error(self, "publish_topic", "\"%s\" is not a topic name", topic);
		return PLANT_E_CONFIG;
	}
	if (!url[0] == !name[0]) {
		api->error(self, url[0] ? "queue_url" : NULL,
			   "set exactly one of queue_url and queue_name");
		return PLANT_E_CONFIG;
	}
	if (url[0] && strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
		api->error(self, "queue_url", "\"%s\" is not an http:// or https:// URL", url);
		return PLANT_E_CONFIG;
	}
	if (endpoint[0] && strncmp(endpoint, "http://", 7) != 0 &&
	    strncmp(endpoint, "https://", 8) != 0) {
		api->error(self, "endpoint", "\"%s\" is not an http:// or https:// URL", endpoint);
		return PLANT_E_CONFIG;
	}
	if (name[0]) {
		size_t n = strlen(name);
		bool ok = n <= 80;
		for (size_t i = 0; ok && i < n; i++) {
			char c = name[i];
			ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c >= '0' && c <= '9') || c == '_' || c == '-' ||
			     (c == '.' && strcmp(name + i, ".fifo") == 0);
		}
		if (!ok) {
			api->error(self, "queue_name",
				   "\"%s\" is not an SQS queue name (1..80 of [A-Za-z0-9_-], "
				   "ending in .fifo for a FIFO queue)",
				   name);
			return PLANT_E_CONFIG;
		}
	}
	if (strcmp(on_full, "release") != 0 && strcmp(on_full, "hold") != 0) {
		api->error(self, "on_full", "on_full must be \"release\" or \"hold\", not \"%s\"",
			   on_full);
		return PLANT_E_CONFIG;
	}
	const json_t *attrs = json_object_get(config, "attributes");
	size_t i;
	json_t *a;
	if (json_array_size(attrs) > MAX_ATTRS - OWN_ATTRS) {
		api->error(self, "attributes",
			   "at most %d attributes (SQS allows %d, plantd uses %d)",
			   MAX_ATTRS - OWN_ATTRS, MAX_ATTRS, OWN_ATTRS);
		return PLANT_E_CONFIG;
	}
	json_array_foreach(attrs, i, a)
	{
		const char *an = json_string_value(a);
		if (!an || !attr_name_ok(an) || strncmp(an, "plantd.", 7) == 0) {
			api->error(self, "attributes",
				   "attribute %zu is not a name SQS takes ([A-Za-z0-9_.-], not "
				   "AWS./Amazon./plantd.)",
				   i);
			return PLANT_E_CONFIG;
		}
	}
	if (num(config, "batch", 1, 10000, &v, self, api) ||
	    num(config, "max_inflight", 1, 64, &v, self, api) ||
	    num(config, "max_pending", SQS_BATCH, 1000000, &v, self, api) ||
	    num(config, "max_batch_bytes", 1024, 1048576, &v, self, api) ||
	    num(config, "max_attempts", 1, 1000, &v, self, api) ||
	    num(config, "wait_seconds", 0, 20, &v, self, api) ||
	    num(config, "max_messages", 1, 10, &v, self, api) ||
	    num(config, "pollers", 1, 64, &v, self, api))
		return PLANT_E_CONFIG;
	int64_t vis = json_integer_value(json_object_get(config, "visibility_timeout"));
	if (vis < 0 || vis > 43200000) {
		api->error(self, "visibility_timeout", "visibility_timeout must be 0..12h");
		return PLANT_E_CONFIG;
	}
	int64_t base = json_integer_value(json_object_get(config, "retry_base"));
	int64_t max = json_integer_value(json_object_get(config, "retry_max"));
	if (base <= 0 || max < base) {
		api->error(self, base <= 0 ? "retry_base" : "retry_max",
			   "retry_base must be positive and retry_max at least retry_base");
		return PLANT_E_CONFIG;
	}
	if (json_integer_value(json_object_get(config, "request_timeout")) <= 0) {
		api->error(self, "request_timeout", "request_timeout must be positive");
		return PLANT_E_CONFIG;
	}
	return PLANT_OK;
}

static void sqs_free(struct sqs *s)
{
	if (!s)
		return;
	while (s->out.head) {
		struct pend *p = s->out.head;
		ready_unlink(s, p);
		free(p);
	}
	while (s->reqs) {
		struct req *r = s->reqs;
		req_unlink(s, r);
		for (size_t i = 0; r->kind == REQ_SEND && i < r->n; i++)
			free(r->e[i]);
		req_free(r);
	}
	while (s->in.retries) {
		struct retry_del *d = s->in.retries;
		s->in.retries = d->next;
		req_free(d->r);
		free(d);
	}
	while (s->in.held) {
		struct held_in *h = s->in.held;
		s->in.held = h->next;
		json_decref(h->messages);
		free(h);
	}
	json_decref(s->out.index);
	free(s->endpoint);
	free(s->url);
	free(s);
}

/* The endpoint requests go to: `endpoint`, else the scheme and host of
 * queue_url, else https://sqs.REGION.amazonaws.com; with a trailing '/'. */
static char *endpoint_of(const char *endpoint, const char *url, const char *region)
{
	char buf[1024];
	if (endpoint[0]) {
		snprintf(buf, sizeof buf, "%s", endpoint);
	} else if (url[0]) {
		const char *host = strstr(url, "://") + 3;
		const char *slash = strchr(host, '/');
		size_t n = slash ? (size_t)(slash - url) : strlen(url);
		snprintf(buf, sizeof buf, "%.*s", (int)n, url);
	} else {
		const char *r = region[0] ? region : getenv("AWS_REGION");
		if (!r || !r[0])
			r = getenv("AWS_DEFAULT_REGION");
		snprintf(buf, sizeof buf, "https://sqs.%s.amazonaws.com",
			 r && r[0] ? r : "us-east-1");
	}
	size_t n = strlen(buf);
	if (n == 0 || buf[n - 1] != '/')
		snprintf(buf + n, sizeof buf - n, "/");
	return strdup(buf);
}

static int sqs_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		    void **state_out)
{
	if (!PLANT_API_HAS(api, http_call) || !PLANT_API_HAS(api, http_call_wait) ||
	    !PLANT_API_HAS(api, publish_all) || !PLANT_API_HAS(api, hold)) {
		api->error(self, NULL,
			   "transport_sqs needs a plantd with the HTTP client (SDK 1.6); this "
			   "one offers SDK %u.%u",
			   api->abi_major, api->abi_minor);
		return PLANT_E_UNSUPPORTED;
	}
	int rc = sqs_validate(self, api, config);
	if (rc != PLANT_OK)
		return rc;
	struct sqs *s = calloc(1, sizeof *s);
	if (!s) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
#define STR(k) json_string_value(json_object_get(config, k))
#define INT(k) ((uint64_t)json_integer_value(json_object_get(config, k)))
	s->self = self;
	s->api = api;
	s->queue = STR("queue");
	s->publish_topic = STR("publish_topic");
	s->queue_url_cfg = STR("queue_url");
	s->queue_name = STR("queue_name");
	s->region = STR("region");
	s->group_id = STR("group_id");
	s->group_id_field = STR("group_id_field");
	s->dedup_field = STR("dedup_field");
	s->attributes = json_object_get(config, "attributes");
	s->create = json_is_true(json_object_get(config, "create"));
	s->dedup = json_is_true(json_object_get(config, "dedup"));
	s->hold_on_full = strcmp(STR("on_full"), "hold") == 0;
	s->fifo = ends_with(s->queue_name[0] ? s->queue_name : s->queue_url_cfg, ".fifo");
	s->batch = (uint32_t)INT("batch");
	s->max_inflight = s->fifo ? 1 : (uint32_t)INT("max_inflight");
	s->max_pending = (uint32_t)INT("max_pending");
	s->max_batch_bytes = INT("max_batch_bytes");
	s->max_attempts = (uint32_t)INT("max_attempts");
	s->retry_base = INT("retry_base");
	s->retry_max = INT("retry_max");
	s->hold_max = INT("hold_max");
	s->request_timeout = INT("request_timeout");
	s->log_interval = INT("log_interval");
	s->wait_seconds = (uint32_t)INT("wait_seconds");
	s->max_messages = (uint32_t)INT("max_messages");
	s->visibility_s = (uint32_t)((INT("visibility_timeout") + 999) / 1000);
	s->pollers = (uint32_t)INT("pollers");
#undef STR
#undef INT
	s->endpoint = endpoint_of(json_string_value(json_object_get(config, "endpoint")),
				  s->queue_url_cfg, s->region);
	s->out.index = json_object();
	s->out.on = s->queue[0] != '\0';
	s->in.on = s->publish_topic[0] != '\0';
	s->rng = (api->now_ms(self) ^ (uint64_t)(uintptr_t)s) | 1;
	if (!s->endpoint || !s->out.index) {
		sqs_free(s);
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	*state_out = s;
	return PLANT_OK;
}

static int sqs_start(void *state)
{
	struct sqs *s = state;
	int rc = s->api->timer_add(s->self, TICK_MS, 0, on_tick, NULL, &s->timer);
	if (rc != PLANT_OK) {
		s->api->error(s->self, NULL, "cannot add a timer: %s", plant_status_name(rc));
		return rc;
	}
	s->started = true;
	s->api->gauge_set(s->self, "backoff_ms", 0);
	if (s->out.on) {
		s->api->gauge_set(s->self, "paused", 0);
		s->api->gauge_set(s->self, "pending", 0);
	}
	resolve_start(s, REQ_RESOLVE_GET);
	out_resume_if_ready(s);
	in_kick(s);
	return PLANT_OK;
}

/* Give back what is held: the queue hands it to the next consumer. */
static void sqs_stop(void *state)
{
	struct sqs *s = state;
	s->stopping = true;
	while (s->out.head) {
		struct pend *p = s->out.head;
		ready_unlink(s, p);
		if (p->h)
			s->api->release(s->self, p->h);
		p->h = NULL;
		pend_drop(s, p);
	}
	for (struct req *r = s->reqs; r; r = r->next)
		for (size_t i = 0; r->kind == REQ_SEND && i < r->n; i++)
			if (r->e[i]->h) {
				s->api->release(s->self, r->e[i]->h);
				r->e[i]->h = NULL;
			}
	s->api->log(s->self, PLANT_LOG_INFO,
		    "stopped: sent=%" PRIu64 " send_failed=%" PRIu64 " retries=%" PRIu64
		    " rejected=%" PRIu64 " received=%" PRIu64 " deleted=%" PRIu64
		    " publish_refused=%" PRIu64,
		    s->out.sent, s->out.send_failed, s->out.retries, s->out.rejected,
		    s->in.received, s->in.deleted, s->in.refused);
}

static void sqs_destroy(void *state)
{
	sqs_free(state);
}

static int sqs_health(void *state, json_t **detail_out)
{
	struct sqs *s = state;
	json_t *d = json_object();
	json_object_set_new(d, "queue_url", s->url ? json_string(s->url) : json_null());
	if (s->out.on)
		json_object_set_new(
			d, "out",
			json_pack("{s:s, s:I, s:I, s:b, s:I, s:I, s:I, s:I, s:I}", "queue",
				  s->queue, "pending", (json_int_t)s->out.n_pending, "inflight",
				  (json_int_t)s->out.n_reqs, "paused", s->out.paused, "failures",
				  (json_int_t)s->out.streak, "backoff_ms",
				  (json_int_t)s->out.backoff, "sent", (json_int_t)s->out.sent,
				  "retries", (json_int_t)s->out.retries, "rejected",
				  (json_int_t)s->out.rejected));
	if (s->in.on)
		json_object_set_new(
			d, "in",
			json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "topic", s->publish_topic,
				  "failures", (json_int_t)s->in.streak, "backoff_ms",
				  (json_int_t)s->in.backoff, "received", (json_int_t)s->in.received,
				  "deleted", (json_int_t)s->in.deleted, "publish_refused",
				  (json_int_t)s->in.refused));
	if (s->last.code[0])
		json_object_set_new(
			d, "last_error",
			json_pack("{s:s, s:s, s:s, s:I, s:s, s:I}", "code", s->last.code,
				  "query_code", s->last.qcode, "message", s->last.message,
				  "http_status", (json_int_t)s->last.http_status, "kind",
				  err_kind_names[s->last.kind], "at_ms", (json_int_t)s->last_at));
	*detail_out = d;
	/* unhealthy while SQS fails or cannot be found */
	bool bad = (s->out.on && (s->out.streak > 0 || s->out.paused)) ||
		   (s->in.on && s->in.streak) || (!s->url && s->resolve_streak);
	return bad ? PLANT_E_IO : PLANT_OK;
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "transport_sqs",
	.version = "1.0.0",
	.description = "an internal queue to SQS and SQS to an internal topic (SQS JSON protocol)",
	.config_keys = config_keys,
	.validate = sqs_validate,
	.init = sqs_init,
	.start = sqs_start,
	.stop = sqs_stop,
	.destroy = sqs_destroy,
	.health = sqs_health,
};
