/* A growing text buffer for JSON lines, shared by the plugins that write
 * messages out as {"id":..,"topic":..,"ts":..,"body":..} (log_sink, the
 * notifier). Not a plugin: linked statically into each module. */
#ifndef PLANTD_JSONL_H
#define PLANTD_JSONL_H

#include <stdbool.h>
#include <stddef.h>

#include <plantd/plantd.h>

struct jsonl {
	char *buf; /* NUL-terminated after every add */
	size_t len, cap;
};

/* Each returns false when out of memory (the buffer keeps what it had). */
bool jsonl_add(struct jsonl *l, const char *data, size_t n);
bool jsonl_adds(struct jsonl *l, const char *str);
/* `str` as a JSON string: quotes, backslashes and control characters are
 * escaped, everything else (UTF-8 included) copied. */
bool jsonl_add_string(struct jsonl *l, const char *str);
/* One message as {"id":..,"topic":..,"ts":..,"body":..}, the body copied
 * verbatim from its JSON text (never parsed), no newline. */
bool jsonl_add_message(struct jsonl *l, const struct plant_host_api *api, const plant_msg *msg);
void jsonl_free(struct jsonl *l);

#endif
