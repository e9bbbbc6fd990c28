/* Top-level fields of a JSON object text, in one pass and without a tree
 * (the SDK's msg_fields). The text must be valid JSON: messages on the bus
 * are checked when published. */
#ifndef PLANTD_JSONFIELDS_H
#define PLANTD_JSONFIELDS_H

#include <stddef.h>

#include <plantd/plantd.h>

/* PLANT_OK, or PLANT_E_INVALID when `text` is not an object. */
int json_fields(const char *text, size_t len, const char *const *keys, size_t n,
		struct plant_field *out);

#endif
