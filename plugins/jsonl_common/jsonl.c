#include "jsonl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool jsonl_add(struct jsonl *l, const char *data, size_t n)
{
	size_t want = l->len + n + 1; /* room for a NUL */
	if (want > l->cap) {
		size_t cap = l->cap ? l->cap : 256;
		while (cap < want)
			cap *= 2;
		char *p = realloc(l->buf, cap);
		if (!p)
			return false;
		l->buf = p;
		l->cap = cap;
	}
	memcpy(l->buf + l->len, data, n);
	l->len += n;
	l->buf[l->len] = '\0';
	return true;
}

bool jsonl_adds(struct jsonl *l, const char *str)
{
	return jsonl_add(l, str, strlen(str));
}

bool jsonl_add_string(struct jsonl *l, const char *str)
{
	static const char hex[] = "0123456789abcdef";
	if (!jsonl_add(l, "\"", 1))
		return false;
	for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
		char esc[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 0xf]};
		bool ok;
		if (*p == '"' || *p == '\\') {
			esc[1] = (char)*p;
			ok = jsonl_add(l, esc, 2);
		} else if (*p < 0x20) {
			ok = jsonl_add(l, esc, 6);
		} else {
			ok = jsonl_add(l, (const char *)p, 1);
		}
		if (!ok)
			return false;
	}
	return jsonl_add(l, "\"", 1);
}

bool jsonl_add_message(struct jsonl *l, const struct plant_host_api *api, const plant_msg *msg)
{
	char ts[32];
	size_t body_len = 0;
	const char *body = api->msg_body_text(msg, &body_len);
	snprintf(ts, sizeof ts, "%" PRIu64, api->msg_ts(msg));
	return jsonl_adds(l, "{\"id\":") && jsonl_add_string(l, api->msg_id(msg)) &&
	       jsonl_adds(l, ",\"topic\":") && jsonl_add_string(l, api->msg_topic(msg)) &&
	       jsonl_adds(l, ",\"ts\":") && jsonl_adds(l, ts) && jsonl_adds(l, ",\"body\":") &&
	       jsonl_add(l, body, body_len) && jsonl_adds(l, "}");
}

void jsonl_free(struct jsonl *l)
{
	free(l->buf);
	*l = (struct jsonl){0};
}
