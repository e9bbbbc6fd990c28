/* Is this JSON text? Checked without building a tree: a tree costs more
 * than the check (about 3 us for a 200-byte reading), and messages keep
 * their text (DESIGN.md, principle 4). Accepts what jansson's parser
 * accepts with JSON_DECODE_ANY | JSON_ALLOW_NUL. */
#ifndef PLANTD_JSONCHECK_H
#define PLANTD_JSONCHECK_H

#include <stdbool.h>
#include <stddef.h>

bool json_text_valid(const char *text, size_t len);

#endif
