/* Not a plugin: helpers cicd_deployer and cicd_notifier share, linked
 * statically into each module with hidden visibility. */
#ifndef PLANTD_CICD_COMMON_H
#define PLANTD_CICD_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

/* A topic glob as the bus matches it: '*' any run of characters, '?' one. */
bool cicd_glob_match(const char *pattern, const char *s);
/* Starts with http:// or https://. */
bool cicd_is_url(const char *s);
/* A string member of `o`, or NULL. */
const char *cicd_jstr(const json_t *o, const char *key);
/* mkdir -p, 0755. Returns 0 or an errno. */
int cicd_mkdir_p(const char *path);
/* Write `len` bytes to `path` all or nothing: PATH.part, fsync'd, renamed.
 * Returns 0 or an errno. */
int cicd_write_atomic(const char *path, const char *data, size_t len);
/* Read a whole regular file of at most `max` bytes into *data_out
 * (NUL-terminated, malloc'd). Returns 0 or an errno (EFBIG when larger). */
int cicd_read_file(const char *path, size_t max, char **data_out, size_t *len_out);

#endif
