/* One log line per event, logfmt: ts=... level=... inst=... msg="..." */
#ifndef PLANTD_LOG_H
#define PLANTD_LOG_H

#include <stdarg.h>
#include <stddef.h>

#include "plantd/plantd.h"

/* Levels are enum plant_log_level. Until log_open() runs, lines go to stderr
 * at info level. */
int log_level_parse(const char *name, int *level_out);
void log_set_level(int level);
int log_get_level(void);
/* Send lines to `path` (appended) instead of stderr; NULL means stderr. */
int log_open(const char *path, char *err, size_t errlen);
void log_close(void);

void log_write(int level, const char *inst, const char *fmt, ...) PLANT_PRINTF(3, 4);
void log_vwrite(int level, const char *inst, const char *fmt, va_list ap);

#define log_error(...) log_write(PLANT_LOG_ERROR, NULL, __VA_ARGS__)
#define log_warn(...)  log_write(PLANT_LOG_WARN, NULL, __VA_ARGS__)
#define log_info(...)  log_write(PLANT_LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...) log_write(PLANT_LOG_DEBUG, NULL, __VA_ARGS__)

#endif
