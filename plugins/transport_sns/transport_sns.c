/* transport_sns: plantd topics out to an SNS topic, and an SNS topic in on
 * every node.
 *
 * Out: messages of an internal queue (the plugin's own, fed by `subscribe`,
 * or a queue of the site named by `queue`) go to an SNS topic with
 * PublishBatch, ten entries a call, carrying message attributes (plantd's
 * topic and message id, and the attributes named in `attributes`). A
 * message is acked only once SNS accepted its entry; one that failed is
 * nacked with an exponential backoff and jitter, so that it waits in the
 * queue, not in this plugin, while SNS is away: nothing is dropped. A call
 * that fails as a whole opens a circuit: until its backoff has passed, the
 * batches that follow are put back without a call.
 *
 * In: the node's own SQS queue (`receive_queue`) is created and subscribed
 * to the SNS topic with raw delivery, then long-polled; each message is
 * published on `publish_topic`, and deleted from SQS only after the
 * internal publish succeeded (all of a receive, or none).
 *
 * Protocols, as the real services and fauxqs speak them: SNS the query
 * protocol (form-encoded requests, XML answers, read here by a small parser
 * of our own), SQS the JSON protocol (X-Amz-Target: AmazonSQS.*). Every
 * answer's shape is checked, not only its status: a server may answer 200
 * with an unrelated body. Requests go through the host's HTTP client, which
 * signs them (SigV4).
 *
 * Threads: everything runs on the instance's worker. The out side calls SNS
 * synchronously from the queue handler (so that the next batch waits in the
 * queue, not in flight); the in side long-polls asynchronously, so that a
 * 20 s wait never holds the out side. See README.md. */
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <plantd/plantd.h>

#define SNS_BATCH_MAX	  10	 /* entries per PublishBatch */
#define SNS_MAX_BYTES	  262144 /* one message, and one PublishBatch, at most */
#define SNS_MAX_ATTRS	  10	 /* message attributes an SQS subscriber takes */
#define SQS_RECEIVE_MAX	  10	 /* messages per ReceiveMessage */
#define TICK_MS		  100
#define XML_MAX_DEPTH	  64
#define ATTR_TOPIC	  "plantd_topic"
#define ATTR_ID		  "plantd_id"
#define ATTR_SQS_ID	  "sqs_message_id"
#define SNS_API_VERSION	  "2010-03-31"
#define MAX_CARRIED_ATTRS (SNS_MAX_ATTRS - 2)

static const struct plant_config_key config_keys[] = {
	{
		.name = "endpoint",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "base URL of SNS and SQS, e.g. http://127.0.0.1:4566 for a local "
			       "server; \"\": https://sns.REGION.amazonaws.com and "
			       "https://sqs.REGION.amazonaws.com",
	},
	{
		.name = "sqs_endpoint",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "base URL of SQS when it differs from `endpoint`",
	},
	{
		.name = "region",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "AWS region; \"\": the site's aws.region, else AWS_REGION",
	},
	{
		.name = "topic_arn",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "the SNS topic (or topic_name)",
	},
	{
		.name = "topic_name",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "the SNS topic by name, created (CreateTopic) at start",
	},
	{
		.name = "subscribe",
		.type = PLANT_CFG_ARRAY,
		.default_value = "[]",
		.description = "out: internal topic patterns to forward, through the plugin's own "
			       "queue INSTANCE.out",
	},
	{
		.name = "queue",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "out: a queue of the site to forward (instead of subscribe)",
	},
	{
		.name = "attributes",
		.type = PLANT_CFG_ARRAY,
		.default_value = "[]",
		.description = "out: names of message attributes to carry (at most 8)",
	},
	{
		.name = "batch",
		.type = PLANT_CFG_INT,
		.default_value = "50",
		.description = "out: messages taken from the queue at once (sent 10 a call)",
	},
	{
		.name = "message_group_id",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "out, FIFO topics: the group id; \"\": the message's topic",
	},
	{
		.name = "timeout",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"10s\"",
		.description = "one SNS or SQS call at most (a long poll: wait_time more)",
	},
	{
		.name = "retry_base",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"200ms\"",
		.description = "the first retry's delay; each further one doubles it",
	},
	{
		.name = "retry_max",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"20s\"",
		.description = "the longest delay between retries",
	},
	{
		.name = "receive_queue",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "in: this node's SQS queue, created and subscribed to the topic",
	},
	{
		.name = "publish_topic",
		.type = PLANT_CFG_STRING,
		.default_value = "\"\"",
		.description = "in: the internal topic received messages are published on",
	},
	{
		.name = "wait_time",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"20s\"",
		.description = "in: long poll wait (0 to 20 s)",
	},
	{
		.name = "visibility_timeout",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"30s\"",
		.description = "in: how long SQS hides a received message before it comes again",
	},
	{
		.name = "queue_policy",
		.type = PLANT_CFG_BOOL,
		.default_value = "true",
		.description =
			"in: set the receive queue's policy so that the topic may send to it",
	},
	{.name = NULL, .type = PLANT_CFG_END},
};

/* ---- a growable buffer --------------------------------------------------- */

struct buf {
	char *p; /* NUL-terminated when not NULL */
	size_t len, cap;
	bool oom;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_addc(struct buf *b, char c)
{
	buf_add(b, &c, 1);
}

static void buf_free(struct buf *b)
{
	free(b->p);
	*b = (struct buf){0};
}

/* Percent-encoding as SigV4 and the query protocol want it: everything but
 * A-Z a-z 0-9 - _ . ~ (a space is %20). */
static void buf_add_enc(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
			buf_addc(b, (char)c);
		} else {
			char e[3] = {'%', hex[c >> 4], hex[c & 15]};
			buf_add(b, e, 3);
		}
	}
}

/* &KEY=VALUE (no '&' first), KEY given printf-style. */
static void form_param(struct buf *b, const char *value, size_t len, const char *fmt, ...)
	PLANT_PRINTF(4, 5);

static void form_param(struct buf *b, const char *value, size_t len, const char *fmt, ...)
{
	char key[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(key, sizeof key, fmt, ap);
	va_end(ap);
	if (b->len)
		buf_addc(b, '&');
	buf_add_enc(b, key, strlen(key));
	buf_addc(b, '=');
	buf_add_enc(b, value, len);
}

/* ---- a small XML reader ------------------------------------------------------ */

/* Enough XML for AWS query-protocol answers: elements, attributes
 * (skipped), character data with the five entities and character
 * references, CDATA, comments and processing instructions. No DTD. Names
 * lose their namespace prefix. Anything else is malformed. */
struct xnode {
	char *name;
	struct buf text; /* the character data directly inside, decoded, trimmed */
	struct xnode *child, *last, *next;
};

struct xparser {
	const char *p, *end;
	int depth;
};

static void xml_free(struct xnode *n)
{
	while (n) {
		struct xnode *next = n->next;
		xml_free(n->child);
		free(n->name);
		buf_free(&n->text);
		free(n);
		n = next;
	}
}

static bool x_starts(const struct xparser *x, const char *s)
{
	size_t n = strlen(s);
	return (size_t)(x->end - x->p) >= n && memcmp(x->p, s, n) == 0;
}

/* Move past the next `s`; false when there is none. */
static bool x_skip_past(struct xparser *x, const char *s)
{
	size_t n = strlen(s);
	for (const char *q = x->p; (size_t)(x->end - q) >= n; q++) {
		if (memcmp(q, s, n) == 0) {
			x->p = q + n;
			return true;
		}
	}
	return false;
}

static bool x_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void x_skip_space(struct xparser *x)
{
	while (x->p < x->end && x_space(*x->p))
		x->p++;
}

static bool x_name_char(char c)
{
	return !x_space(c) && c != '/' && c != '>' && c != '<' && c != '=' && c != '"' &&
	       c != '\'' && c != '&' && c != '\0';
}

/* A name at x->p: its start and length, 0 when there is none. */
static size_t x_name(struct xparser *x, const char **start)
{
	*start = x->p;
	while (x->p < x->end && x_name_char(*x->p))
		x->p++;
	return (size_t)(x->p - *start);
}

static void utf8_put(struct buf *b, uint32_t cp)
{
	char u[4];
	if (cp < 0x80) {
		u[0] = (char)cp;
		buf_add(b, u, 1);
	} else if (cp < 0x800) {
		u[0] = (char)(0xC0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3F));
		buf_add(b, u, 2);
	} else if (cp < 0x10000) {
		u[0] = (char)(0xE0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		u[2] = (char)(0x80 | (cp & 0x3F));
		buf_add(b, u, 3);
	} else {
		u[0] = (char)(0xF0 | (cp >> 18));
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
		u[3] = (char)(0x80 | (cp & 0x3F));
		buf_add(b, u, 4);
	}
}

/* An entity or character reference at '&'. */
static bool x_entity(struct xparser *x, struct buf *out)
{
	static const struct {
		const char *name;
		char c;
	} named[] = {
		{"&lt;", '<'}, {"&gt;", '>'}, {"&amp;", '&'}, {"&quot;", '"'}, {"&apos;", '\''}};
	for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
		if (x_starts(x, named[i].name)) {
			buf_addc(out, named[i].c);
			x->p += strlen(named[i].name);
			return true;
		}
	}
	if (!x_starts(x, "&#"))
		return false;
	x->p += 2;
	int base = 10;
	if (x->p < x->end && *x->p == 'x') {
		base = 16;
		x->p++;
	}
	uint32_t cp = 0;
	int digits = 0;
	while (x->p < x->end && *x->p != ';') {
		char c = *x->p++;
		int v;
		if (c >= '0' && c <= '9')
			v = c - '0';
		else if (base == 16 && c >= 'a' && c <= 'f')
			v = c - 'a' + 10;
		else if (base == 16 && c >= 'A' && c <= 'F')
			v = c - 'A' + 10;
		else
			return false;
		cp = cp * (uint32_t)base + (uint32_t)v;
		if (cp > 0x10FFFF || ++digits > 8)
			return false;
	}
	if (x->p >= x->end || digits == 0 || cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF))
		return false;
	x->p++; /* ';' */
	utf8_put(out, cp);
	return true;
}

/* Whitespace, comments and processing instructions between elements; a
 * DOCTYPE is refused (AWS never sends one). */
static bool x_misc(struct xparser *x)
{
	for (;;) {
		x_skip_space(x);
		if (x_starts(x, "<?")) {
			if (!x_skip_past(x, "?>"))
				return false;
		} else if (x_starts(x, "<!--")) {
			if (!x_skip_past(x, "-->"))
				return false;
		} else if (x_starts(x, "<!")) {
			return false;
		} else {
			return true;
		}
	}
}

static void x_trim(struct buf *b)
{
	if (!b->p)
		return;
	size_t s = 0, e = b->len;
	while (s < e && x_space(b->p[s]))
		s++;
	while (e > s && x_space(b->p[e - 1]))
		e--;
	memmove(b->p, b->p + s, e - s);
	b->len = e - s;
	b->p[b->len] = '\0';
}

/* An element at '<'. NULL when malformed (or out of memory). */
static struct xnode *x_element(struct xparser *x)
{
	const char *qname, *end_name;
	x->p++; /* '<' */
	size_t qlen = x_name(x, &qname);
	if (qlen == 0)
		return NULL;
	const char *local = qname;
	for (size_t i = 0; i < qlen; i++)
		if (qname[i] == ':')
			local = qname + i + 1;
	struct xnode *n = calloc(1, sizeof *n);
	if (!n)
		return NULL;
	n->name = strndup(local, (size_t)(qname + qlen - local));
	if (!n->name)
		goto bad;
	/* attributes: skipped */
	for (;;) {
		x_skip_space(x);
		if (x->p >= x->end)
			goto bad;
		if (*x->p == '/') {
			if (!x_starts(x, "/>"))
				goto bad;
			x->p += 2;
			return n;
		}
		if (*x->p == '>') {
			x->p++;
			break;
		}
		const char *an;
		if (x_name(x, &an) == 0)
			goto bad;
		x_skip_space(x);
		if (x->p >= x->end || *x->p != '=')
			goto bad;
		x->p++;
		x_skip_space(x);
		if (x->p >= x->end || (*x->p != '"' && *x->p != '\''))
			goto bad;
		char quote = *x->p++;
		while (x->p < x->end && *x->p != quote && *x->p != '<')
			x->p++;
		if (x->p >= x->end || *x->p != quote)
			goto bad;
		x->p++;
	}
	if (++x->depth > XML_MAX_DEPTH)
		goto bad;
	for (;;) {
		if (x->p >= x->end)
			goto bad;
		if (*x->p == '<') {
			if (x_starts(x, "</")) {
				x->p += 2;
				size_t elen = x_name(x, &end_name);
				if (elen != qlen || memcmp(end_name, qname, qlen) != 0)
					goto bad;
				x_skip_space(x);
				if (x->p >= x->end || *x->p != '>')
					goto bad;
				x->p++;
				x->depth--;
				x_trim(&n->text);
				if (n->text.oom)
					goto bad;
				return n;
			} else if (x_starts(x, "<!--")) {
				if (!x_skip_past(x, "-->"))
					goto bad;
			} else if (x_starts(x, "<![CDATA[")) {
				x->p += 9;
				const char *s = x->p;
				if (!x_skip_past(x, "]]>"))
					goto bad;
				buf_add(&n->text, s, (size_t)(x->p - 3 - s));
			} else if (x_starts(x, "<?")) {
				if (!x_skip_past(x, "?>"))
					goto bad;
			} else if (x_starts(x, "<!")) {
				goto bad;
			} else {
				struct xnode *c = x_element(x);
				if (!c)
					goto bad;
				if (n->last)
					n->last->next = c;
				else
					n->child = c;
				n->last = c;
			}
		} else if (*x->p == '&') {
			if (!x_entity(x, &n->text))
				goto bad;
		} else {
			const char *s = x->p;
			while (x->p < x->end && *x->p != '<' && *x->p != '&')
				x->p++;
			buf_add(&n->text, s, (size_t)(x->p - s));
		}
	}
bad:
	xml_free(n);
	return NULL;
}

/* The document's root element, or NULL when `s` is not well-formed XML (as
 * far as this reader goes). */
static struct xnode *xml_parse(const char *s, size_t len)
{
	if (!s)
		return NULL;
	struct xparser x = {.p = s, .end = s + len};
	/* a byte order mark */
	if (len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
		x.p += 3;
	if (!x_misc(&x) || x.p >= x.end || *x.p != '<')
		return NULL;
	struct xnode *root = x_element(&x);
	if (!root)
		return NULL;
	if (!x_misc(&x) || x.p != x.end) {
		xml_free(root);
		return NULL;
	}
	return root;
}

static const struct xnode *xml_child(const struct xnode *n, const char *name)
{
	for (const struct xnode *c = n ? n->child : NULL; c; c = c->next)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

/* The text of child `name`, or NULL when there is no such child. */
static const char *xml_text(const struct xnode *n, const char *name)
{
	const struct xnode *c = xml_child(n, name);
	if (!c)
		return NULL;
	return c->text.p ? c->text.p : "";
}

/* The first element called `name` at or below `n`, depth first. */
static const struct xnode *xml_find(const struct xnode *n, const char *name)
{
	for (; n; n = n->next) {
		if (strcmp(n->name, name) == 0)
			return n;
		const struct xnode *f = xml_find(n->child, name);
		if (f)
			return f;
	}
	return NULL;
}

/* ---- AWS answers ----------------------------------------------------------------- */

/* What went wrong with a call, for the log and for retry decisions. */
struct aws_err {
	int status;	   /* the transport's: PLANT_OK when an answer came */
	long http;	   /* 0 without an answer */
	char code[128];	   /* the service's error code, or "" */
	char message[512]; /* the service's message, the transport's reason, or
			    * what was wrong with the answer */
	char request_id[96];
};

static void err_set(struct aws_err *e, const char *code, const char *fmt, ...) PLANT_PRINTF(3, 4);

static void err_set(struct aws_err *e, const char *code, const char *fmt, ...)
{
	va_list ap;
	snprintf(e->code, sizeof e->code, "%s", code ? code : "");
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof e->message, fmt, ap);
	va_end(ap);
}

/* Printable: control characters become spaces, cut at `max` bytes. */
static void excerpt(char *out, size_t outlen, const char *s, size_t len, size_t max)
{
	size_t n = len < max ? len : max, o = 0;
	for (size_t i = 0; i < n && o + 1 < outlen; i++) {
		unsigned char c = (unsigned char)s[i];
		out[o++] = (c < 0x20 || c == 0x7F) ? ' ' : (char)c;
	}
	out[o] = '\0';
	if (len > n && o + 4 < outlen)
		snprintf(out + o, outlen - o, "...");
}

/* Fill e->code and e->message from an error answer: an XML ErrorResponse
 * (query protocol), a JSON {"__type", "message"} (JSON protocol), else the
 * x-amzn-ErrorType / x-amzn-query-error headers, else an excerpt of the
 * body. */
static void err_from_answer(const struct plant_host_api *api, const struct plant_http_result *res,
			    struct aws_err *e)
{
	const char *body = res->body ? res->body : "";
	size_t len = res->body ? res->body_len : 0;
	size_t i = 0;
	while (i < len && x_space(body[i]))
		i++;
	e->code[0] = e->message[0] = '\0';
	if (i < len && body[i] == '<') {
		struct xnode *root = xml_parse(body, len);
		const struct xnode *er = root ? xml_find(root, "Error") : NULL;
		if (er) {
			const char *c = xml_text(er, "Code"), *m = xml_text(er, "Message");
			snprintf(e->code, sizeof e->code, "%s", c ? c : "");
			snprintf(e->message, sizeof e->message, "%s", m ? m : "");
		}
		xml_free(root);
	} else if (i < len && body[i] == '{') {
		json_t *j = json_loadb(body, len, 0, NULL);
		const char *type = json_string_value(json_object_get(j, "__type"));
		if (!type)
			type = json_string_value(json_object_get(j, "code"));
		if (!type)
			type = json_string_value(json_object_get(j, "Code"));
		const char *m = json_string_value(json_object_get(j, "message"));
		if (!m)
			m = json_string_value(json_object_get(j, "Message"));
		if (type) {
			const char *hash = strrchr(type, '#');
			snprintf(e->code, sizeof e->code, "%s", hash ? hash + 1 : type);
		}
		snprintf(e->message, sizeof e->message, "%s", m ? m : "");
		json_decref(j);
	}
	if (!e->code[0]) {
		const char *h = api->http_result_header(res, "x-amzn-ErrorType");
		if (!h)
			h = api->http_result_header(res, "x-amzn-query-error");
		if (h) {
			size_t n = strcspn(h, ":;");
			snprintf(e->code, sizeof e->code, "%.*s", (int)n, h);
		}
	}
	if (!e->message[0] && len > 0)
		excerpt(e->message, sizeof e->message, body, len, 200);
}

/* Start an answer's check: a transport failure or an HTTP status other
 * than 200 fills `e` and returns false. */
static bool answer_ok(const struct plant_host_api *api, int rc, const struct plant_http_result *res,
		      struct aws_err *e)
{
	*e = (struct aws_err){.status = res ? res->status : rc};
	if (!res) {
		if (rc == PLANT_OK)
			e->status = rc = PLANT_E_NOMEM;
		err_set(e, NULL, "the host refused the call: %s%s", plant_status_name(rc),
			rc == PLANT_E_CONFIG ? " (no AWS credentials or region?)" : "");
		return false;
	}
	e->http = res->http_status;
	const char *rid = api->http_result_header(res, "x-amzn-RequestId");
	if (!rid)
		rid = api->http_result_header(res, "x-amz-request-id");
	snprintf(e->request_id, sizeof e->request_id, "%s", rid ? rid : "");
	if (res->status != PLANT_OK) {
		err_set(e, NULL, "%s (%s)", res->error && res->error[0] ? res->error : "no answer",
			plant_status_name(res->status));
		return false;
	}
	if (res->http_status != 200) {
		err_from_answer(api, res, e);
		return false;
	}
	return true;
}

/* "HTTP 400 Throttling: Rate exceeded (request id X)", "no answer: ...". */
static void err_describe(const struct aws_err *e, char *out, size_t outlen)
{
	char rid[128] = "";
	if (e->request_id[0])
		snprintf(rid, sizeof rid, " (request id %s)", e->request_id);
	if (e->status != PLANT_OK)
		snprintf(out, outlen, "no answer: %s", e->message);
	else if (e->http != 200)
		snprintf(out, outlen, "HTTP %ld %s%s%s%s", e->http, e->code[0] ? e->code : "error",
			 e->message[0] ? ": " : "", e->message, rid);
	else
		snprintf(out, outlen, "unexpected answer%s%s: %s%s", e->code[0] ? " " : "", e->code,
			 e->message, rid);
}

/* Worth a retry soon: no answer, a server error, throttling. Other errors
 * (a missing topic, bad credentials) are retried too, at the same pace,
 * but logged as errors: they need a person. */
static bool err_transient(const struct aws_err *e)
{
	static const char *const throttles[] = {
		"Throttling",
		"ThrottlingException",
		"ThrottledException",
		"RequestThrottled",
		"TooManyRequestsException",
		"RequestLimitExceeded",
		"SlowDown",
		"RequestTimeout",
		"RequestTimeoutException",
		"ServiceUnavailable",
		"InternalError",
		"InternalFailure",
		"KMSThrottlingException",
		"PriorRequestNotComplete",
	};
	if (e->status != PLANT_OK || e->http >= 500 || e->http == 429 || e->http == 200)
		return true;
	for (size_t i = 0; i < sizeof throttles / sizeof throttles[0]; i++)
		if (strcmp(e->code, throttles[i]) == 0)
			return true;
	return false;
}

/* Warnings for what passes, errors for what needs a person, and only a
 * debug line for a call the host cancelled because the instance stops. */
static int err_level(const struct aws_err *e)
{
	if (e->status == PLANT_E_STATE)
		return PLANT_LOG_DEBUG;
	return err_transient(e) ? PLANT_LOG_WARN : PLANT_LOG_ERROR;
}

static bool err_queue_gone(const struct aws_err *e)
{
	return strcmp(e->code, "QueueDoesNotExist") == 0 ||
	       strcmp(e->code, "AWS.SimpleQueueService.NonExistentQueue") == 0;
}

static bool err_topic_gone(const struct aws_err *e)
{
	return e->http == 404 || strcmp(e->code, "NotFound") == 0;
}

/* ---- the instance ----------------------------------------------------------------- */

struct tsns {
	plant_instance *self;
	const struct plant_host_api *api;
	const char *name;

	/* settings */
	char *sns_url, *sqs_url;
	const char *region; /* NULL: the site's */
	const char *topic_arn_cfg, *topic_name;
	char *out_queue; /* NULL: no out side */
	const char *attr_names[MAX_CARRIED_ATTRS];
	size_t n_attr_names;
	uint32_t batch;
	const char *group_id;
	uint64_t timeout_ms, retry_base_ms, retry_max_ms;
	const char *receive_queue, *publish_topic; /* NULL: no in side */
	uint64_t wait_ms, visibility_ms;
	bool queue_policy;

	/* the topic */
	char *topic_arn;
	bool fifo;
	uint64_t topic_streak, topic_retry_at;

	/* out */
	bool consuming;
	uint64_t out_streak, out_retry_at;
	uint64_t sent, failed, retries, rejected;

	/* in */
	char *queue_url, *queue_arn, *sub_arn;
	bool in_ready, polling;
	uint64_t in_streak, in_retry_at;
	uint64_t received, receive_errors;

	bool stopping;
	uint64_t rng;
	char last_error[700];
};

static uint64_t now_ms(struct tsns *t)
{
	return t->api->now_ms(t->self);
}

static uint64_t rnd(struct tsns *t)
{
	/* xorshift64*: jitter needs no more */
	t->rng ^= t->rng >> 12;
	t->rng ^= t->rng << 25;
	t->rng ^= t->rng >> 27;
	return t->rng * 2685821657736338717ull;
}

/* The delay before attempt `n + 1` after `n` failures (n >= 1): the base
 * doubled each time up to the maximum, of which a random half ("equal
 * jitter"), so that nodes and messages that failed together do not come
 * back together. */
static uint64_t backoff(struct tsns *t, uint64_t n)
{
	uint64_t d = t->retry_base_ms;
	for (uint64_t i = 1; i < n && d < t->retry_max_ms; i++)
		d *= 2;
	if (d > t->retry_max_ms)
		d = t->retry_max_ms;
	return d / 2 + rnd(t) % (d / 2 + 1);
}

static void count(struct tsns *t, const char *name, uint64_t n)
{
	if (n)
		t->api->counter_add(t->self, name, n);
}

static void note_error(struct tsns *t, const char *what, const char *why)
{
	snprintf(t->last_error, sizeof t->last_error, "%.60s: %.600s", what, why);
}

/* ---- calls ---------------------------------------------------------------------------- */

/* One SNS query-protocol call, waited for. *res is [new] (or NULL). */
static int sns_call(struct tsns *t, const struct buf *form, struct plant_http_result **res)
{
	static const char *const headers[] = {
		"Content-Type", "application/x-www-form-urlencoded; charset=utf-8", NULL, NULL};
	if (form->oom) {
		*res = NULL;
		return PLANT_E_NOMEM;
	}
	struct plant_http_call call = {
		.struct_size = sizeof call,
		.method = "POST",
		.url = t->sns_url,
		.headers = headers,
		.body = form->p,
		.body_len = form->len,
		.timeout_ms = t->timeout_ms,
		.aws_service = "sns",
		.aws_region = t->region,
	};
	return t->api->http_call_wait(t->self, &call, res);
}

/* The SQS JSON-protocol request for `action` ("AmazonSQS.ACTION"). */
static void sqs_prepare(struct tsns *t, struct plant_http_call *call, const char *target_hdr[5],
			const char *body, uint64_t timeout_ms)
{
	target_hdr[0] = "Content-Type";
	target_hdr[1] = "application/x-amz-json-1.0";
	target_hdr[2] = "X-Amz-Target";
	/* target_hdr[3] set by the caller */
	target_hdr[4] = NULL;
	*call = (struct plant_http_call){
		.struct_size = sizeof *call,
		.method = "POST",
		.url = t->sqs_url,
		.headers = target_hdr,
		.body = body,
		.body_len = strlen(body),
		.timeout_ms = timeout_ms,
		.aws_service = "sqs",
		.aws_region = t->region,
	};
}

/* One SQS call, waited for: the answer as a JSON object in *out ([new]), or
 * a filled `e`. `req` is [borrowed]. */
static int sqs_call(struct tsns *t, const char *action, const json_t *req, json_t **out,
		    struct aws_err *e)
{
	char target[64];
	const char *hdr[6];
	struct plant_http_call call;
	*out = NULL;
	char *body = json_dumps(req, JSON_COMPACT);
	if (!body) {
		*e = (struct aws_err){.status = PLANT_E_NOMEM};
		err_set(e, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	snprintf(target, sizeof target, "AmazonSQS.%s", action);
	sqs_prepare(t, &call, hdr, body, t->timeout_ms);
	hdr[3] = target;
	struct plant_http_result *res = NULL;
	int rc = t->api->http_call_wait(t->self, &call, &res);
	free(body);
	if (!answer_ok(t->api, rc, res, e)) {
		rc = PLANT_E_IO;
	} else {
		*out = json_loadb(res->body, res->body_len, 0, NULL);
		if (!json_is_object(*out)) {
			char ex[220];
			excerpt(ex, sizeof ex, res->body, res->body_len, 200);
			err_set(e, NULL, "not a JSON object: %s", ex);
			json_decref(*out);
			*out = NULL;
			rc = PLANT_E_IO;
		}
	}
	if (res)
		t->api->http_result_free(res);
	return rc;
}

/* ---- the topic ------------------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void set_topic(struct tsns *t, const char *arn)
{
	free(t->topic_arn);
	t->topic_arn = arn ? strdup(arn) : NULL;
	t->fifo = t->topic_arn && ends_with(t->topic_arn, ".fifo");
}

/* The topic ARN, from the settings or CreateTopic (idempotent: it answers
 * the existing topic's ARN), at most once per backoff. */
static int ensure_topic(struct tsns *t)
{
	if (t->topic_arn)
		return PLANT_OK;
	if (t->topic_arn_cfg[0]) {
		set_topic(t, t->topic_arn_cfg);
		return t->topic_arn ? PLANT_OK : PLANT_E_NOMEM;
	}
	uint64_t now = now_ms(t);
	if (now < t->topic_retry_at)
		return PLANT_E_FULL;
	struct buf form = {0};
	form_param(&form, "CreateTopic", 11, "Action");
	form_param(&form, SNS_API_VERSION, strlen(SNS_API_VERSION), "Version");
	form_param(&form, t->topic_name, strlen(t->topic_name), "Name");
	if (ends_with(t->topic_name, ".fifo")) {
		form_param(&form, "FifoTopic", 9, "Attributes.entry.1.key");
		form_param(&form, "true", 4, "Attributes.entry.1.value");
	}
	struct plant_http_result *res = NULL;
	int rc = sns_call(t, &form, &res);
	buf_free(&form);
	struct aws_err e;
	const char *arn = NULL;
	struct xnode *root = NULL;
	if (answer_ok(t->api, rc, res, &e)) {
		root = xml_parse(res->body, res->body_len);
		arn = xml_text(xml_child(root, "CreateTopicResult"), "TopicArn");
		if (!root || strcmp(root->name, "CreateTopicResponse") != 0 || !arn ||
		    strncmp(arn, "arn:", 4) != 0) {
			char ex[220];
			excerpt(ex, sizeof ex, res->body, res->body_len, 200);
			err_set(&e, NULL, "%s: %s",
				root ? "no CreateTopicResult/TopicArn" : "malformed XML", ex);
			arn = NULL;
		}
	}
	if (res)
		t->api->http_result_free(res);
	if (arn) {
		set_topic(t, arn);
		xml_free(root);
		if (t->topic_streak)
			t->api->log(t->self, PLANT_LOG_INFO,
				    "SNS topic %s created after %" PRIu64 " failed attempts",
				    t->topic_arn, t->topic_streak);
		t->topic_streak = 0;
		return t->topic_arn ? PLANT_OK : PLANT_E_NOMEM;
	}
	xml_free(root);
	char why[800];
	err_describe(&e, why, sizeof why);
	uint64_t delay = backoff(t, ++t->topic_streak);
	t->topic_retry_at = now + delay;
	note_error(t, "CreateTopic", why);
	t->api->log(t->self, err_level(&e),
		    "cannot create SNS topic %s: %s; retrying in %" PRIu64 " ms", t->topic_name,
		    why, delay);
	return PLANT_E_IO;
}

/* The topic is gone (a NotFound answer): one we created is created again. */
static void topic_gone(struct tsns *t)
{
	if (!t->topic_arn_cfg[0])
		set_topic(t, NULL);
	/* our queue's subscription went with it: subscribe again */
	t->in_ready = false;
}

/* ---- out ----------------------------------------------------------------------------- */

/* What a message costs against SNS's 256 KiB: its body and the attributes
 * it carries. */
static size_t entry_size(struct tsns *t, const plant_msg *m)
{
	size_t len;
	t->api->msg_body_text(m, &len);
	len += strlen(ATTR_TOPIC) + strlen(t->api->msg_topic(m)) + 6;
	len += strlen(ATTR_ID) + strlen(t->api->msg_id(m)) + 6;
	for (size_t i = 0; i < t->n_attr_names; i++) {
		const char *v = t->api->msg_attr(m, t->attr_names[i]);
		if (v && v[0])
			len += strlen(t->attr_names[i]) + strlen(v) + 6;
	}
	return len;
}

static void add_attr(struct buf *form, size_t member, size_t *k, const char *name,
		     const char *value)
{
	(*k)++;
	const char *pre = "PublishBatchRequestEntries.member";
	form_param(form, name, strlen(name), "%s.%zu.MessageAttributes.entry.%zu.Name", pre, member,
		   *k);
	form_param(form, "String", 6, "%s.%zu.MessageAttributes.entry.%zu.Value.DataType", pre,
		   member, *k);
	form_param(form, value, strlen(value),
		   "%s.%zu.MessageAttributes.entry.%zu.Value.StringValue", pre, member, *k);
}

static void build_publish_batch(struct tsns *t, const plant_msg *const *msgs, size_t n,
				struct buf *form)
{
	form_param(form, "PublishBatch", 12, "Action");
	form_param(form, SNS_API_VERSION, strlen(SNS_API_VERSION), "Version");
	form_param(form, t->topic_arn, strlen(t->topic_arn), "TopicArn");
	for (size_t i = 0; i < n; i++) {
		const plant_msg *m = msgs[i];
		size_t member = i + 1, k = 0, len;
		const char *pre = "PublishBatchRequestEntries.member";
		char id[8];
		snprintf(id, sizeof id, "e%zu", i);
		form_param(form, id, strlen(id), "%s.%zu.Id", pre, member);
		const char *body = t->api->msg_body_text(m, &len);
		form_param(form, body, len, "%s.%zu.Message", pre, member);
		if (t->fifo) {
			const char *g = t->group_id[0] ? t->group_id : t->api->msg_topic(m);
			form_param(form, g, strlen(g), "%s.%zu.MessageGroupId", pre, member);
			const char *d = t->api->msg_id(m);
			form_param(form, d, strlen(d), "%s.%zu.MessageDeduplicationId", pre,
				   member);
		}
		add_attr(form, member, &k, ATTR_TOPIC, t->api->msg_topic(m));
		add_attr(form, member, &k, ATTR_ID, t->api->msg_id(m));
		for (size_t a = 0; a < t->n_attr_names; a++) {
			const char *v = t->api->msg_attr(m, t->attr_names[a]);
			if (v && v[0])
				add_attr(form, member, &k, t->attr_names[a], v);
		}
	}
}

/* Put a message back for a later attempt. */
static void defer(struct tsns *t, const plant_msg *m, uint64_t delay, const char *reason)
{
	int rc = t->api->nack(t->self, m, delay, reason);
	if (rc != PLANT_OK && rc != PLANT_E_NOTFOUND)
		t->api->log(t->self, PLANT_LOG_WARN, "cannot put message %s back: %s",
			    t->api->msg_id(m), plant_status_name(rc));
	t->retries++;
	count(t, "retries", 1);
}

/* Put back msgs[0..n) until the circuit closes (plus a little jitter, so
 * that they do not all come back in one batch). */
static void defer_all(struct tsns *t, const plant_msg *const *msgs, size_t n, uint64_t until,
		      const char *reason)
{
	uint64_t now = now_ms(t);
	uint64_t wait = until > now ? until - now : 0;
	for (size_t i = 0; i < n; i++)
		defer(t, msgs[i], wait + rnd(t) % (t->retry_base_ms + 1), reason);
}

/* SNS will never take this message (SenderFault, or too big): the queue's
 * dead-letter queue, when it has one; else it stays in the queue and is
 * tried again every retry_max, loudly. */
static void give_up(struct tsns *t, const plant_msg *m, const char *code, const char *why)
{
	char reason[700];
	snprintf(reason, sizeof reason, "SNS refused it: %s: %s", code, why);
	int rc = t->api->reject(t->self, m, reason);
	if (rc == PLANT_OK) {
		t->rejected++;
		count(t, "rejected", 1);
		t->api->log(t->self, PLANT_LOG_ERROR,
			    "message %s (topic %s) dead-lettered: SNS refused it: %s: %s",
			    t->api->msg_id(m), t->api->msg_topic(m), code, why);
		return;
	}
	t->api->log(t->self, PLANT_LOG_ERROR,
		    "SNS refuses message %s (topic %s): %s: %s; queue %s cannot dead-letter it "
		    "(%s): it is tried again in %" PRIu64 " ms",
		    t->api->msg_id(m), t->api->msg_topic(m), code, why, t->out_queue,
		    plant_status_name(rc), t->retry_max_ms);
	defer(t, m, t->retry_max_ms, reason);
}

/* A call failed as a whole: open the circuit for a backoff. */
static void out_call_failed(struct tsns *t, const struct aws_err *e, size_t n_entries)
{
	char why[800];
	err_describe(e, why, sizeof why);
	uint64_t delay = backoff(t, ++t->out_streak);
	t->out_retry_at = now_ms(t) + delay;
	t->failed += n_entries;
	count(t, "failed", n_entries);
	count(t, "call_errors", 1);
	note_error(t, "PublishBatch", why);
	t->api->log(t->self, err_level(e),
		    "SNS PublishBatch to %s failed: %s; its %zu %s, and those behind, retried in "
		    "%" PRIu64 " ms (failure %" PRIu64 " in a row)",
		    t->topic_arn, why, n_entries, n_entries == 1 ? "message" : "messages", delay,
		    t->out_streak);
	if (e->status == PLANT_OK && err_topic_gone(e))
		topic_gone(t);
}

/* Send msgs[0..n) (n <= 10) in one PublishBatch and settle each one that
 * the answer speaks of. PLANT_OK when the call was answered with the
 * expected shape (entries may still have failed: they are settled);
 * otherwise nothing is settled and the circuit is open. */
static int publish_chunk(struct tsns *t, const plant_msg *const *msgs, size_t n)
{
	struct buf form = {0};
	build_publish_batch(t, msgs, n, &form);
	struct plant_http_result *res = NULL;
	int rc = sns_call(t, &form, &res);
	buf_free(&form);
	struct aws_err e;
	struct xnode *root = NULL;
	const struct xnode *result = NULL;
	if (answer_ok(t->api, rc, res, &e)) {
		root = xml_parse(res->body, res->body_len);
		result = xml_child(root, "PublishBatchResult");
		if (!root || strcmp(root->name, "PublishBatchResponse") != 0 || !result) {
			char ex[220];
			excerpt(ex, sizeof ex, res->body, res->body_len, 200);
			err_set(&e, root ? "UnexpectedAnswer" : "MalformedXML", "%s: %s",
				root ? "not a PublishBatchResponse with a PublishBatchResult"
				     : "not well-formed XML",
				ex);
			result = NULL;
		}
	}
	if (res)
		t->api->http_result_free(res);
	if (!result) {
		xml_free(root);
		out_call_failed(t, &e, n);
		return PLANT_E_IO;
	}
	if (t->out_streak) {
		t->api->log(t->self, PLANT_LOG_INFO,
			    "SNS accepts messages again after %" PRIu64 " failed calls",
			    t->out_streak);
		t->out_streak = 0;
	}
	/* 0: not in the answer, 1: accepted, 2: failed */
	int fate[SNS_BATCH_MAX] = {0};
	const char *codes[SNS_BATCH_MAX] = {0}, *texts[SNS_BATCH_MAX] = {0};
	bool sender[SNS_BATCH_MAX] = {0};
	const struct xnode *ok = xml_child(result, "Successful");
	const struct xnode *bad = xml_child(result, "Failed");
	for (int pass = 0; pass < 2; pass++) {
		const struct xnode *list = pass == 0 ? ok : bad;
		for (const struct xnode *m = list ? list->child : NULL; m; m = m->next) {
			const char *id = xml_text(m, "Id");
			char *end;
			if (strcmp(m->name, "member") != 0 || !id || id[0] != 'e')
				continue;
			unsigned long i = strtoul(id + 1, &end, 10);
			if (*end || end == id + 1 || i >= n || fate[i])
				continue;
			if (pass == 0 && xml_text(m, "MessageId")) {
				fate[i] = 1;
			} else if (pass == 1) {
				fate[i] = 2;
				codes[i] = xml_text(m, "Code");
				texts[i] = xml_text(m, "Message");
				const char *sf = xml_text(m, "SenderFault");
				sender[i] = sf && strcmp(sf, "true") == 0;
			}
		}
	}
	size_t n_ok = 0, n_failed = 0, n_missing = 0;
	const char *first_code = NULL, *first_text = NULL;
	for (size_t i = 0; i < n; i++) {
		if (fate[i] == 1) {
			int arc = t->api->ack(t->self, msgs[i]);
			if (arc != PLANT_OK)
				t->api->log(t->self, PLANT_LOG_WARN,
					    "message %s reached SNS but its ack failed (%s): it "
					    "will be sent again",
					    t->api->msg_id(msgs[i]), plant_status_name(arc));
			n_ok++;
			continue;
		}
		n_failed++;
		char reason[700];
		if (fate[i] == 0) {
			n_missing++;
			snprintf(reason, sizeof reason,
				 "SNS: the PublishBatch answer did not mention it");
		} else {
			if (!first_code) {
				first_code = codes[i] ? codes[i] : "";
				first_text = texts[i] ? texts[i] : "";
			}
			snprintf(reason, sizeof reason, "SNS: %s: %s", codes[i] ? codes[i] : "",
				 texts[i] ? texts[i] : "");
		}
		if (fate[i] == 2 && sender[i]) {
			give_up(t, msgs[i], codes[i] ? codes[i] : "", texts[i] ? texts[i] : "");
		} else {
			uint32_t tries = t->api->msg_receive_count(msgs[i]);
			defer(t, msgs[i], backoff(t, tries ? tries : 1), reason);
		}
	}
	t->sent += n_ok;
	count(t, "sent", n_ok);
	t->failed += n_failed;
	count(t, "failed", n_failed);
	if (first_code) {
		char why[700];
		snprintf(why, sizeof why, "%s: %s", first_code, first_text);
		note_error(t, "PublishBatch entry", why);
		t->api->log(t->self, PLANT_LOG_WARN,
			    "SNS refused %zu of %zu entries (first: %s); those not at fault are "
			    "retried",
			    n_failed - n_missing, n, why);
	}
	if (n_missing)
		t->api->log(t->self, PLANT_LOG_WARN,
			    "the PublishBatch answer did not mention %zu of %zu entries: retried",
			    n_missing, n);
	xml_free(root); /* codes[] and texts[] point into it */
	return PLANT_OK;
}

/* [instance] A batch of the out queue: sent 10 a call, each settled by the
 * answer. */
static int on_out(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	struct tsns *t = state;
	(void)user;
	if (t->stopping) {
		defer_all(t, msgs, n, 0, "stopping");
		return PLANT_OK;
	}
	if (ensure_topic(t) != PLANT_OK) {
		defer_all(t, msgs, n, t->topic_retry_at, "SNS topic not created yet");
		return PLANT_OK;
	}
	size_t i = 0;
	while (i < n) {
		if (now_ms(t) < t->out_retry_at) {
			defer_all(t, msgs + i, n - i, t->out_retry_at, "SNS failing: backing off");
			break;
		}
		const plant_msg *chunk[SNS_BATCH_MAX];
		size_t k = 0, bytes = 0;
		while (i < n && k < SNS_BATCH_MAX) {
			size_t sz = entry_size(t, msgs[i]);
			if (sz > SNS_MAX_BYTES) {
				char why[160];
				snprintf(why, sizeof why,
					 "message and attributes of %zu bytes, over SNS's %d", sz,
					 SNS_MAX_BYTES);
				t->failed++;
				count(t, "failed", 1);
				give_up(t, msgs[i], "MessageTooLong", why);
				i++;
				continue;
			}
			if (bytes + sz > SNS_MAX_BYTES)
				break;
			bytes += sz;
			chunk[k++] = msgs[i++];
		}
		if (k == 0)
			continue;
		if (publish_chunk(t, chunk, k) != PLANT_OK) {
			defer_all(t, chunk, k, t->out_retry_at, t->last_error);
			defer_all(t, msgs + i, n - i, t->out_retry_at, t->last_error);
			break;
		}
	}
	return PLANT_OK;
}

/* ---- in --------------------------------------------------------------------------------- */

static void in_failed(struct tsns *t, const char *what, const struct aws_err *e)
{
	char why[800];
	err_describe(e, why, sizeof why);
	uint64_t delay = backoff(t, ++t->in_streak);
	t->in_retry_at = now_ms(t) + delay;
	note_error(t, what, why);
	t->api->log(t->self, err_level(e), "%s (queue %s) failed: %s; retrying in %" PRIu64 " ms",
		    what, t->receive_queue, why, delay);
	if (e->status == PLANT_OK && err_queue_gone(e) && t->in_ready) {
		t->in_ready = false;
		t->api->log(t->self, PLANT_LOG_WARN,
			    "SQS queue %s is gone: creating and subscribing it again",
			    t->receive_queue);
	}
}

static const char *jstr(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static void set_str(char **dst, const char *s)
{
	free(*dst);
	*dst = s ? strdup(s) : NULL;
}

/* Create the node's queue and subscribe it to the topic with raw delivery.
 * Every step is idempotent, so a retry starts again from the top. */
static int setup_in(struct tsns *t)
{
	struct aws_err e = {0};
	json_t *req, *ans = NULL;
	const char *step;
	int rc;

	if (ensure_topic(t) != PLANT_OK) {
		t->in_retry_at = t->topic_retry_at;
		return PLANT_E_IO;
	}
	step = "SQS CreateQueue";
	req = json_pack("{s:s}", "QueueName", t->receive_queue);
	if (req && ends_with(t->receive_queue, ".fifo"))
		json_object_set_new(req, "Attributes", json_pack("{s:s}", "FifoQueue", "true"));
	rc = sqs_call(t, "CreateQueue", req, &ans, &e);
	json_decref(req);
	if (rc == PLANT_OK && !jstr(ans, "QueueUrl")) {
		err_set(&e, "UnexpectedAnswer", "no QueueUrl in the CreateQueue answer");
		rc = PLANT_E_IO;
	}
	if (rc != PLANT_OK)
		goto failed;
	set_str(&t->queue_url, jstr(ans, "QueueUrl"));
	json_decref(ans);
	ans = NULL;

	step = "SQS GetQueueAttributes";
	req = json_pack("{s:s, s:[s]}", "QueueUrl", t->queue_url, "AttributeNames", "QueueArn");
	rc = sqs_call(t, "GetQueueAttributes", req, &ans, &e);
	json_decref(req);
	const char *qarn = jstr(json_object_get(ans, "Attributes"), "QueueArn");
	if (rc == PLANT_OK && (!qarn || strncmp(qarn, "arn:", 4) != 0)) {
		err_set(&e, "UnexpectedAnswer", "no Attributes.QueueArn in the answer");
		rc = PLANT_E_IO;
	}
	if (rc != PLANT_OK)
		goto failed;
	set_str(&t->queue_arn, qarn);
	json_decref(ans);
	ans = NULL;

	if (t->queue_policy) {
		/* on AWS, SNS may send to the queue only when its policy says so */
		step = "SQS SetQueueAttributes";
		json_t *policy =
			json_pack("{s:s, s:[{s:s, s:s, s:{s:s}, s:s, s:s, s:{s:{s:s}}}]}",
				  "Version", "2012-10-17", "Statement", "Sid", "plantd-sns",
				  "Effect", "Allow", "Principal", "Service", "sns.amazonaws.com",
				  "Action", "sqs:SendMessage", "Resource", t->queue_arn,
				  "Condition", "ArnEquals", "aws:SourceArn", t->topic_arn);
		char *ptext = policy ? json_dumps(policy, JSON_COMPACT) : NULL;
		json_decref(policy);
		req = ptext ? json_pack("{s:s, s:{s:s}}", "QueueUrl", t->queue_url, "Attributes",
					"Policy", ptext)
			    : NULL;
		free(ptext);
		if (!req) {
			err_set(&e, NULL, "out of memory");
			goto failed;
		}
		rc = sqs_call(t, "SetQueueAttributes", req, &ans, &e);
		json_decref(req);
		json_decref(ans);
		ans = NULL;
		if (rc != PLANT_OK)
			goto failed;
	}

	step = "SNS Subscribe";
	struct buf form = {0};
	form_param(&form, "Subscribe", 9, "Action");
	form_param(&form, SNS_API_VERSION, strlen(SNS_API_VERSION), "Version");
	form_param(&form, t->topic_arn, strlen(t->topic_arn), "TopicArn");
	form_param(&form, "sqs", 3, "Protocol");
	form_param(&form, t->queue_arn, strlen(t->queue_arn), "Endpoint");
	form_param(&form, "RawMessageDelivery", 18, "Attributes.entry.1.key");
	form_param(&form, "true", 4, "Attributes.entry.1.value");
	form_param(&form, "true", 4, "ReturnSubscriptionArn");
	struct plant_http_result *res = NULL;
	rc = sns_call(t, &form, &res);
	buf_free(&form);
	const char *sarn = NULL;
	struct xnode *root = NULL;
	if (answer_ok(t->api, rc, res, &e)) {
		root = xml_parse(res->body, res->body_len);
		sarn = xml_text(xml_child(root, "SubscribeResult"), "SubscriptionArn");
		if (!root || strcmp(root->name, "SubscribeResponse") != 0 || !sarn || !sarn[0]) {
			char ex[220];
			excerpt(ex, sizeof ex, res->body, res->body_len, 200);
			err_set(&e, root ? "UnexpectedAnswer" : "MalformedXML",
				"no SubscribeResult/SubscriptionArn: %s", ex);
			sarn = NULL;
		}
	}
	if (res)
		t->api->http_result_free(res);
	if (sarn)
		set_str(&t->sub_arn, sarn);
	xml_free(root);
	if (!sarn) {
		if (e.status == PLANT_OK && err_topic_gone(&e))
			topic_gone(t);
		goto failed;
	}
	t->in_ready = true;
	t->in_streak = 0;
	t->in_retry_at = 0;
	t->api->log(
		t->self, PLANT_LOG_INFO,
		"receiving SNS topic %s through SQS queue %s (subscription %s, raw delivery) on "
		"topic %s",
		t->topic_arn, t->queue_url, t->sub_arn, t->publish_topic);
	return PLANT_OK;

failed:
	json_decref(ans);
	in_failed(t, step, &e);
	return PLANT_E_IO;
}

static void start_receive(struct tsns *t);

/* Delete what was published; what is not deleted comes again after the
 * visibility timeout (and the internal dedup window catches it). */
static void delete_batch(struct tsns *t, const json_t *handles)
{
	struct aws_err e;
	json_t *entries = json_array(), *ans = NULL;
	size_t i;
	json_t *h;
	json_array_foreach(handles, i, h)
	{
		char id[32];
		snprintf(id, sizeof id, "m%zu", i);
		json_array_append_new(entries,
				      json_pack("{s:s, s:O}", "Id", id, "ReceiptHandle", h));
	}
	json_t *req = json_pack("{s:s, s:o}", "QueueUrl", t->queue_url, "Entries", entries);
	int rc = sqs_call(t, "DeleteMessageBatch", req, &ans, &e);
	json_decref(req);
	if (rc == PLANT_OK) {
		json_t *okl = json_object_get(ans, "Successful");
		json_t *bad = json_object_get(ans, "Failed");
		size_t n_ok = json_is_array(okl) ? json_array_size(okl) : 0;
		size_t n_bad = json_is_array(bad) ? json_array_size(bad) : 0;
		if (n_bad) {
			json_t *f = json_array_get(bad, 0);
			t->api->log(
				t->self, PLANT_LOG_WARN,
				"SQS DeleteMessageBatch: %zu of %zu not deleted (first: %s: %s); "
				"they come again after the visibility timeout",
				n_bad, json_array_size(handles),
				jstr(f, "Code") ? jstr(f, "Code") : "?",
				jstr(f, "Message") ? jstr(f, "Message") : "");
			count(t, "delete_errors", n_bad);
		} else if (n_ok != json_array_size(handles)) {
			t->api->log(t->self, PLANT_LOG_WARN,
				    "SQS DeleteMessageBatch answered for %zu of %zu messages", n_ok,
				    json_array_size(handles));
		}
	} else {
		char why[800];
		err_describe(&e, why, sizeof why);
		note_error(t, "DeleteMessageBatch", why);
		t->api->log(t->self, PLANT_LOG_WARN,
			    "SQS DeleteMessageBatch failed: %s; %zu messages come again after the "
			    "visibility timeout",
			    why, json_array_size(handles));
		count(t, "delete_errors", json_array_size(handles));
		if (err_queue_gone(&e))
			t->in_ready = false;
	}
	json_decref(ans);
}

/* The internal messages for the SQS messages `ok` (an array of message
 * objects), skipping `skip` (a flag per message, may be NULL). */
static size_t build_items(struct tsns *t, const json_t *ok, const bool *skip,
			  struct plant_publish *items, json_t **attrs)
{
	size_t k = 0, i;
	json_t *m;
	json_array_foreach(ok, i, m)
	{
		if (skip && skip[i])
			continue;
		const char *body = jstr(m, "Body");
		size_t blen = json_string_length(json_object_get(m, "Body"));
		/* raw delivery: the SNS message as it was published; plantd
		 * publishes JSON, anyone else may not */
		json_t *b = json_loadb(body, blen, JSON_DECODE_ANY, NULL);
		if (!b)
			b = json_stringn(body, blen);
		json_t *a = json_object();
		const char *key;
		json_t *v;
		json_object_foreach(json_object_get(m, "MessageAttributes"), key, v)
		{
			const char *s = jstr(v, "StringValue");
			if (s)
				json_object_set_new(a, key, json_string(s));
		}
		json_object_set_new(a, ATTR_SQS_ID, json_string(jstr(m, "MessageId")));
		attrs[k] = a;
		items[k] = (struct plant_publish){
			.struct_size = sizeof items[k],
			.topic = t->publish_topic,
			.body = b,
			.attributes = a,
			.dedup_key = jstr(m, "MessageId"),
		};
		k++;
	}
	return k;
}

/* [instance] The answer to ReceiveMessage. */
static void on_receive(void *state, const struct plant_http_result *res, void *user)
{
	struct tsns *t = state;
	struct aws_err e;
	(void)user;
	t->polling = false;
	if (t->stopping || (res && res->status == PLANT_E_STATE))
		return;
	json_t *ans = NULL, *msgs = NULL;
	if (answer_ok(t->api, PLANT_OK, res, &e)) {
		ans = json_loadb(res->body, res->body_len, 0, NULL);
		msgs = json_object_get(ans, "Messages");
		if (!json_is_object(ans) || (msgs && !json_is_array(msgs) && !json_is_null(msgs))) {
			char ex[220];
			excerpt(ex, sizeof ex, res->body, res->body_len, 200);
			err_set(&e, "UnexpectedAnswer", "not a ReceiveMessage answer: %s", ex);
			json_decref(ans);
			ans = NULL;
		}
	}
	if (!ans) {
		t->receive_errors++;
		count(t, "receive_errors", 1);
		in_failed(t, "SQS ReceiveMessage", &e);
		return;
	}
	if (t->in_streak) {
		t->api->log(t->self, PLANT_LOG_INFO,
			    "SQS queue %s answers again after %" PRIu64 " failures",
			    t->receive_queue, t->in_streak);
		t->in_streak = 0;
	}
	/* the messages with what we need; the others are left to SQS (and its
	 * redrive policy) */
	json_t *ok = json_array(), *handles = json_array();
	size_t i;
	json_t *m;
	json_array_foreach(msgs, i, m)
	{
		if (!jstr(m, "MessageId") || !jstr(m, "ReceiptHandle") || !jstr(m, "Body")) {
			t->api->log(t->self, PLANT_LOG_WARN,
				    "SQS ReceiveMessage: a message without MessageId, "
				    "ReceiptHandle or Body: skipped");
			t->receive_errors++;
			count(t, "receive_errors", 1);
			continue;
		}
		json_array_append(ok, m);
	}
	/* a server that sent more than asked: the rest come again */
	while (json_array_size(ok) > SQS_RECEIVE_MAX)
		json_array_remove(ok, json_array_size(ok) - 1);
	size_t n = json_array_size(ok);
	if (n) {
		struct plant_publish items[SQS_RECEIVE_MAX];
		json_t *attrs[SQS_RECEIVE_MAX];
		bool skip[SQS_RECEIVE_MAX] = {0};
		int rc;
		size_t k;
		/* all or nothing; an item the bus refuses as invalid is left in
		 * SQS and the rest tried again */
		for (;;) {
			k = build_items(t, ok, skip, items, attrs);
			size_t failed = 0;
			rc = t->api->publish_all(t->self, items, k, &failed);
			for (size_t a = 0; a < k; a++)
				json_decref(attrs[a]);
			if (rc != PLANT_E_INVALID || failed >= k)
				break;
			/* map item `failed` back to its message */
			for (size_t j = 0, seen = 0; j < n; j++) {
				if (skip[j])
					continue;
				if (seen++ == failed) {
					skip[j] = true;
					t->api->log(
						t->self, PLANT_LOG_ERROR,
						"SQS message %s refused by the bus (invalid); left "
						"in SQS",
						jstr(json_array_get(ok, j), "MessageId"));
					break;
				}
			}
		}
		if (rc == PLANT_OK) {
			for (size_t j = 0; j < n; j++)
				if (!skip[j])
					json_array_append(handles,
							  json_object_get(json_array_get(ok, j),
									  "ReceiptHandle"));
			t->received += k;
			count(t, "received", k);
			if (k)
				delete_batch(t, handles);
		} else {
			uint64_t delay = backoff(t, 4);
			t->in_retry_at = now_ms(t) + delay;
			count(t, "publish_refused", n);
			t->api->log(t->self, PLANT_LOG_WARN,
				    "cannot publish %zu received messages on %s: %s; left in SQS "
				    "(they come again after the visibility timeout), next receive "
				    "in %" PRIu64 " ms",
				    n, t->publish_topic, plant_status_name(rc), delay);
		}
	}
	json_decref(handles);
	json_decref(ok);
	json_decref(ans);
	if (t->in_ready && now_ms(t) >= t->in_retry_at)
		start_receive(t);
}

/* A long poll, answered on the worker (on_receive). */
static void start_receive(struct tsns *t)
{
	if (t->polling || t->stopping || !t->in_ready)
		return;
	json_t *req = json_pack("{s:s, s:i, s:I, s:I, s:[s]}", "QueueUrl", t->queue_url,
				"MaxNumberOfMessages", SQS_RECEIVE_MAX, "WaitTimeSeconds",
				(json_int_t)(t->wait_ms / 1000), "VisibilityTimeout",
				(json_int_t)((t->visibility_ms + 999) / 1000),
				"MessageAttributeNames", "All");
	char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (!body) {
		t->in_retry_at = now_ms(t) + t->retry_base_ms;
		return;
	}
	const char *hdr[6];
	struct plant_http_call call;
	sqs_prepare(t, &call, hdr, body, t->wait_ms + t->timeout_ms);
	hdr[3] = "AmazonSQS.ReceiveMessage";
	int rc = t->api->http_call(t->self, &call, on_receive, NULL);
	free(body);
	if (rc == PLANT_OK) {
		t->polling = true;
	} else if (rc != PLANT_E_STATE) {
		struct aws_err e = {.status = rc};
		err_set(&e, NULL, "the call was refused: %s", plant_status_name(rc));
		in_failed(t, "SQS ReceiveMessage", &e);
	}
}

/* ---- timer ------------------------------------------------------------------------------ */

/* [instance] Setup and polling, as their backoffs allow. */
static void on_tick(void *state, void *user)
{
	struct tsns *t = state;
	(void)user;
	if (t->stopping)
		return;
	if (t->out_queue && !t->consuming && ensure_topic(t) == PLANT_OK) {
		int rc = t->api->consume(t->self, t->out_queue, on_out, NULL, t->batch, NULL);
		if (rc == PLANT_OK) {
			t->consuming = true;
			t->api->log(t->self, PLANT_LOG_INFO, "forwarding queue %s to SNS topic %s",
				    t->out_queue, t->topic_arn);
		} else if (rc != PLANT_E_STATE) {
			t->api->log(t->self, PLANT_LOG_ERROR, "cannot consume queue %s: %s",
				    t->out_queue, plant_status_name(rc));
		}
	}
	if (t->receive_queue) {
		uint64_t now = now_ms(t);
		if (!t->in_ready && now >= t->in_retry_at)
			setup_in(t);
		if (t->in_ready && !t->polling && now_ms(t) >= t->in_retry_at)
			start_receive(t);
	}
}

/* ---- lifecycle ------------------------------------------------------------------------- */

/* Does `topic` match the glob `pat` (`*` any run, `?` one character)? */
static bool glob_match(const char *pat, const char *s)
{
	if (*pat == '\0')
		return *s == '\0';
	if (*pat == '*')
		return glob_match(pat + 1, s) || (*s && glob_match(pat, s + 1));
	if (*s && (*pat == '?' || *pat == *s))
		return glob_match(pat + 1, s + 1);
	return false;
}

static bool topic_name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 200)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
			return false;
	return true;
}

/* SNS message attribute names: [A-Za-z0-9_.-], 256 at most, no "..", not
 * starting or ending with '.', not AWS's or Amazon's. */
static bool sns_attr_name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 256 || s[0] == '.' || s[n - 1] == '.' || strstr(s, "..") ||
	    strncasecmp(s, "AWS.", 4) == 0 || strncasecmp(s, "Amazon.", 7) == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
			return false;
	return true;
}

static bool sqs_queue_name_valid(const char *s)
{
	size_t n = strlen(s);
	size_t base = ends_with(s, ".fifo") ? n - 5 : n;
	if (n == 0 || n > 80 || base == 0)
		return false;
	for (size_t i = 0; i < base; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
			return false;
	return true;
}

static bool url_valid(const char *s)
{
	return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

static const char *cfg_str(const json_t *config, const char *key)
{
	const char *s = json_string_value(json_object_get(config, key));
	return s ? s : "";
}

static uint64_t cfg_ms(const json_t *config, const char *key)
{
	json_int_t v = json_integer_value(json_object_get(config, key));
	return v > 0 ? (uint64_t)v : 0;
}

static const char *env_region(void)
{
	const char *r = getenv("AWS_REGION");
	if (!r || !r[0])
		r = getenv("AWS_DEFAULT_REGION");
	return r && r[0] ? r : NULL;
}

static int tsns_validate(plant_instance *self, const struct plant_host_api *api,
			 const json_t *config)
{
	const char *arn = cfg_str(config, "topic_arn"), *tname = cfg_str(config, "topic_name");
	if (!!arn[0] == !!tname[0]) {
		api->error(self, arn[0] ? "topic_name" : "topic_arn",
			   "set exactly one of topic_arn and topic_name");
		return PLANT_E_CONFIG;
	}
	if (arn[0] && strncmp(arn, "arn:", 4) != 0) {
		api->error(self, "topic_arn",
			   "\"%s\" is not an ARN (arn:aws:sns:REGION:ACCOUNT:NAME)", arn);
		return PLANT_E_CONFIG;
	}
	if (tname[0]) {
		size_t base = ends_with(tname, ".fifo") ? strlen(tname) - 5 : strlen(tname);
		bool ok = base > 0 && strlen(tname) <= 256;
		for (size_t i = 0; ok && i < base; i++)
			ok = isalnum((unsigned char)tname[i]) || tname[i] == '_' || tname[i] == '-';
		if (!ok) {
			api->error(self, "topic_name",
				   "an SNS topic name is 1 to 256 of A-Z a-z 0-9 _ - (and "
				   ".fifo at the end), not \"%s\"",
				   tname);
			return PLANT_E_CONFIG;
		}
	}
	const char *endpoint = cfg_str(config, "endpoint"),
		   *sqs_ep = cfg_str(config, "sqs_endpoint");
	if (endpoint[0] && !url_valid(endpoint)) {
		api->error(self, "endpoint", "must start with http:// or https://");
		return PLANT_E_CONFIG;
	}
	if (sqs_ep[0] && !url_valid(sqs_ep)) {
		api->error(self, "sqs_endpoint", "must start with http:// or https://");
		return PLANT_E_CONFIG;
	}
	if (!endpoint[0] && !cfg_str(config, "region")[0] && !env_region()) {
		api->error(self, "region",
			   "without an endpoint, the region is needed for AWS's URLs: set region "
			   "(or AWS_REGION), or endpoint");
		return PLANT_E_CONFIG;
	}
	const json_t *subs = json_object_get(config, "subscribe");
	const char *queue = cfg_str(config, "queue");
	size_t i;
	json_t *v;
	json_array_foreach(subs, i, v)
	{
		if (!json_is_string(v) || !json_string_length(v)) {
			api->error(self, "subscribe", "each pattern must be a non-empty string");
			return PLANT_E_CONFIG;
		}
	}
	if (json_array_size(subs) && queue[0]) {
		api->error(self, "queue",
			   "set subscribe or queue, not both: a queue of the site takes its topics "
			   "from its own subscribe setting");
		return PLANT_E_CONFIG;
	}
	const json_t *attrs = json_object_get(config, "attributes");
	if (json_array_size(attrs) > MAX_CARRIED_ATTRS) {
		api->error(self, "attributes",
			   "at most %d: an SQS subscriber takes %d message attributes, and plantd "
			   "sends " ATTR_TOPIC " and " ATTR_ID,
			   MAX_CARRIED_ATTRS, SNS_MAX_ATTRS);
		return PLANT_E_CONFIG;
	}
	json_array_foreach(attrs, i, v)
	{
		const char *s = json_string_value(v);
		if (!s || !sns_attr_name_valid(s) || strcmp(s, ATTR_TOPIC) == 0 ||
		    strcmp(s, ATTR_ID) == 0) {
			api->error(self, "attributes",
				   "\"%s\" is not a name SNS takes for a message attribute "
				   "([A-Za-z0-9_.-], not AWS. or Amazon., not " ATTR_TOPIC
				   " or " ATTR_ID ")",
				   s ? s : "(not a string)");
			return PLANT_E_CONFIG;
		}
	}
	json_int_t batch = json_integer_value(json_object_get(config, "batch"));
	if (batch < 1 || batch > 1000) {
		api->error(self, "batch", "must be 1 to 1000, not %" JSON_INTEGER_FORMAT, batch);
		return PLANT_E_CONFIG;
	}
	uint64_t base = cfg_ms(config, "retry_base"), max = cfg_ms(config, "retry_max");
	if (base == 0) {
		api->error(self, "retry_base", "must be more than 0");
		return PLANT_E_CONFIG;
	}
	if (max < base) {
		api->error(self, "retry_max", "must be at least retry_base");
		return PLANT_E_CONFIG;
	}
	if (cfg_ms(config, "timeout") == 0) {
		api->error(self, "timeout", "must be more than 0");
		return PLANT_E_CONFIG;
	}
	const char *rq = cfg_str(config, "receive_queue"), *pt = cfg_str(config, "publish_topic");
	if (!!rq[0] != !!pt[0]) {
		api->error(self, rq[0] ? "publish_topic" : "receive_queue",
			   "receive_queue and publish_topic go together (the in side)");
		return PLANT_E_CONFIG;
	}
	if (rq[0] && !sqs_queue_name_valid(rq)) {
		api->error(self, "receive_queue",
			   "an SQS queue name is 1 to 80 of A-Z a-z 0-9 _ - (and .fifo at the "
			   "end), not \"%s\"",
			   rq);
		return PLANT_E_CONFIG;
	}
	if (pt[0] && !topic_name_valid(pt)) {
		api->error(self, "publish_topic", "\"%s\" is not a topic name", pt);
		return PLANT_E_CONFIG;
	}
	json_array_foreach(subs, i, v)
	{
		if (pt[0] && glob_match(json_string_value(v), pt)) {
			api->error(self, "publish_topic",
				   "\"%s\" matches subscribe pattern \"%s\": every message "
				   "received would be sent out again",
				   pt, json_string_value(v));
			return PLANT_E_CONFIG;
		}
	}
	uint64_t wait = cfg_ms(config, "wait_time");
	if (wait > 20000 || wait % 1000) {
		api->error(self, "wait_time", "must be whole seconds, 0 to 20 s");
		return PLANT_E_CONFIG;
	}
	uint64_t vis = cfg_ms(config, "visibility_timeout");
	if (vis < 1000 || vis > 43200000) {
		api->error(self, "visibility_timeout", "must be 1 s to 12 h");
		return PLANT_E_CONFIG;
	}
	if (!rq[0] && !json_array_size(subs) && !queue[0]) {
		api->error(self, NULL,
			   "nothing to do: set subscribe or queue (out), or receive_queue and "
			   "publish_topic (in)");
		return PLANT_E_CONFIG;
	}
	return PLANT_OK;
}

static void tsns_free(struct tsns *t)
{
	if (!t)
		return;
	free(t->sns_url);
	free(t->sqs_url);
	free(t->out_queue);
	free(t->topic_arn);
	free(t->queue_url);
	free(t->queue_arn);
	free(t->sub_arn);
	free(t);
}

static char *service_url(const char *endpoint, const char *service, const char *region)
{
	char *s = NULL;
	if (endpoint[0]) {
		size_t n = strlen(endpoint);
		/* the query and JSON protocols post to "/" */
		if (asprintf(&s, "%s%s", endpoint, endpoint[n - 1] == '/' ? "" : "/") < 0)
			s = NULL;
	} else if (asprintf(&s, "https://%s.%s.amazonaws.com/", service, region) < 0) {
		s = NULL;
	}
	return s;
}

/* Does the site have queue `name`? */
static bool site_has_queue(plant_instance *self, const struct plant_host_api *api, const char *name)
{
	json_t *st = api->bus_stats(self);
	bool yes = json_object_get(json_object_get(st, "queues"), name) != NULL;
	json_decref(st);
	return yes;
}

static int tsns_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		     void **state_out)
{
	int rc = tsns_validate(self, api, config);
	if (rc != PLANT_OK)
		return rc;
	if (!PLANT_API_HAS(api, http_call_wait) || !PLANT_API_HAS(api, http_call) ||
	    !PLANT_API_HAS(api, http_result_header) || !PLANT_API_HAS(api, publish_all)) {
		api->error(self, NULL, "this host has no HTTP client (SDK 1.6 needed)");
		return PLANT_E_UNSUPPORTED;
	}
	struct tsns *t = calloc(1, sizeof *t);
	if (!t) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	t->self = self;
	t->api = api;
	t->name = api->instance_name(self);
	const char *region = cfg_str(config, "region");
	t->region = region[0] ? region : NULL;
	const char *url_region = t->region ? t->region : env_region();
	const char *endpoint = cfg_str(config, "endpoint"),
		   *sqs_ep = cfg_str(config, "sqs_endpoint");
	t->sns_url = service_url(endpoint, "sns", url_region ? url_region : "");
	t->sqs_url =
		service_url(sqs_ep[0] ? sqs_ep : endpoint, "sqs", url_region ? url_region : "");
	t->topic_arn_cfg = cfg_str(config, "topic_arn");
	t->topic_name = cfg_str(config, "topic_name");
	const json_t *attrs = json_object_get(config, "attributes");
	size_t i;
	json_t *v;
	json_array_foreach(attrs, i, v)
	{
		if (i < MAX_CARRIED_ATTRS)
			t->attr_names[t->n_attr_names++] = json_string_value(v);
	}
	t->batch = (uint32_t)json_integer_value(json_object_get(config, "batch"));
	t->group_id = cfg_str(config, "message_group_id");
	t->timeout_ms = cfg_ms(config, "timeout");
	t->retry_base_ms = cfg_ms(config, "retry_base");
	t->retry_max_ms = cfg_ms(config, "retry_max");
	t->wait_ms = cfg_ms(config, "wait_time");
	t->visibility_ms = cfg_ms(config, "visibility_timeout");
	t->queue_policy = json_is_true(json_object_get(config, "queue_policy"));
	const char *rq = cfg_str(config, "receive_queue");
	if (rq[0]) {
		t->receive_queue = rq;
		t->publish_topic = cfg_str(config, "publish_topic");
	}
	t->rng = (api->now_ms(self) ^ (uint64_t)(uintptr_t)t) | 1;
	if (!t->sns_url || !t->sqs_url) {
		api->error(self, NULL, "out of memory");
		tsns_free(t);
		return PLANT_E_NOMEM;
	}

	const json_t *subs = json_object_get(config, "subscribe");
	const char *queue = cfg_str(config, "queue");
	if (json_array_size(subs)) {
		/* the plugin's own queue: in memory, no dead-letter queue (an
		 * outage never dead-letters), invisible while a batch is sent
		 * (one failed call opens the circuit: the rest are put back) */
		if (asprintf(&t->out_queue, "%s.out", t->name) < 0)
			t->out_queue = NULL;
		if (!t->out_queue || !topic_name_valid(t->out_queue)) {
			api->error(self, "queue",
				   "instance name \"%s\" does not make a queue name: set queue",
				   t->name);
			tsns_free(t);
			return PLANT_E_CONFIG;
		}
		uint64_t vis = 30000;
		if (vis < 2 * t->timeout_ms + 10000)
			vis = 2 * t->timeout_ms + 10000;
		json_t *qs = json_pack("{s:O, s:I}", "subscribe", subs, "visibility_timeout",
				       (json_int_t)vis);
		rc = qs ? api->queue_declare(self, t->out_queue, qs) : PLANT_E_NOMEM;
		json_decref(qs);
		if (rc != PLANT_OK) {
			api->error(self, "subscribe", "cannot declare queue %s: %s", t->out_queue,
				   plant_status_name(rc));
			tsns_free(t);
			return rc;
		}
	} else if (queue[0]) {
		if (!site_has_queue(self, api, queue)) {
			api->error(self, "queue", "no queue \"%s\" in this site", queue);
			tsns_free(t);
			return PLANT_E_NOTFOUND;
		}
		t->out_queue = strdup(queue);
		if (!t->out_queue) {
			api->error(self, NULL, "out of memory");
			tsns_free(t);
			return PLANT_E_NOMEM;
		}
	}
	rc = api->timer_add(self, TICK_MS, 0, on_tick, NULL, NULL);
	if (rc != PLANT_OK) {
		api->error(self, NULL, "cannot add a timer: %s", plant_status_name(rc));
		tsns_free(t);
		return rc;
	}
	*state_out = t;
	return PLANT_OK;
}

static void tsns_stop(void *state)
{
	struct tsns *t = state;
	t->stopping = true;
}

static void tsns_destroy(void *state)
{
	tsns_free(state);
}

static int tsns_health(void *state, json_t **detail_out)
{
	struct tsns *t = state;
	json_t *d = json_object();
	bool ok = true;
	json_object_set_new(d, "topic_arn", t->topic_arn ? json_string(t->topic_arn) : json_null());
	if (t->out_queue) {
		json_object_set_new(d, "out",
				    json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:I}", "queue",
					      t->out_queue, "forwarding", t->consuming,
					      "failing_calls", (json_int_t)t->out_streak, "sent",
					      (json_int_t)t->sent, "failed", (json_int_t)t->failed,
					      "retries", (json_int_t)t->retries, "rejected",
					      (json_int_t)t->rejected));
		ok = ok && t->consuming && t->out_streak == 0;
	}
	if (t->receive_queue) {
		json_object_set_new(
			d, "in",
			json_pack("{s:s, s:o, s:o, s:b, s:I, s:I, s:I}", "receive_queue",
				  t->receive_queue, "queue_url",
				  t->queue_url ? json_string(t->queue_url) : json_null(),
				  "subscription_arn",
				  t->sub_arn ? json_string(t->sub_arn) : json_null(), "subscribed",
				  t->in_ready, "failing_calls", (json_int_t)t->in_streak,
				  "received", (json_int_t)t->received, "receive_errors",
				  (json_int_t)t->receive_errors));
		ok = ok && t->in_ready && t->in_streak == 0;
	}
	if (t->last_error[0])
		json_object_set_new(d, "last_error", json_string(t->last_error));
	*detail_out = d;
	return ok ? PLANT_OK : PLANT_E_IO;
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "transport_sns",
	.version = "1.0.0",
	.description = "forwards plantd topics to an SNS topic and receives it on every node "
		       "through an SQS queue",
	.config_keys = config_keys,
	.validate = tsns_validate,
	.init = tsns_init,
	.stop = tsns_stop,
	.destroy = tsns_destroy,
	.health = tsns_health,
};
