/* Per-instance metrics: counters and gauges by name. */
#ifndef PLANTD_METRICS_H
#define PLANTD_METRICS_H

#include <stdint.h>
#include <jansson.h>

struct metrics;

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);
int metrics_counter_add(struct metrics *m, const char *name, uint64_t delta);
int metrics_gauge_set(struct metrics *m, const char *name, double value);
/* {name: value, ...}: [new]. */
json_t *metrics_json(struct metrics *m);
int metrics_name_valid(const char *name);

#endif
