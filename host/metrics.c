#include "metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "plantd/plantd.h"

struct metrics {
	pthread_mutex_t lock;
	json_t *values; /* name -> integer (counter) or real (gauge) */
};

struct metrics *metrics_new(void)
{
	struct metrics *m = calloc(1, sizeof *m);
	if (!m)
		return NULL;
	pthread_mutex_init(&m->lock, NULL);
	m->values = json_object();
	return m;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	json_decref(m->values);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

int metrics_name_valid(const char *name)
{
	if (!name || !*name || strlen(name) > 100)
		return 0;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			return 0;
	return 1;
}

int metrics_counter_add(struct metrics *m, const char *name, uint64_t delta)
{
	if (!metrics_name_valid(name))
		return PLANT_E_INVALID;
	pthread_mutex_lock(&m->lock);
	json_t *v = json_object_get(m->values, name);
	int rc = PLANT_OK;
	if (!v)
		json_object_set_new(m->values, name, json_integer((json_int_t)delta));
	else if (json_is_integer(v))
		json_integer_set(v, json_integer_value(v) + (json_int_t)delta);
	else
		rc = PLANT_E_INVALID; /* a gauge of that name */
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int metrics_gauge_set(struct metrics *m, const char *name, double value)
{
	if (!metrics_name_valid(name))
		return PLANT_E_INVALID;
	pthread_mutex_lock(&m->lock);
	json_t *v = json_object_get(m->values, name);
	int rc = PLANT_OK;
	if (!v)
		json_object_set_new(m->values, name, json_real(value));
	else if (json_is_real(v))
		json_real_set(v, value);
	else
		rc = PLANT_E_INVALID; /* a counter of that name */
	pthread_mutex_unlock(&m->lock);
	return rc;
}

json_t *metrics_json(struct metrics *m)
{
	pthread_mutex_lock(&m->lock);
	json_t *copy = json_deep_copy(m->values);
	pthread_mutex_unlock(&m->lock);
	return copy;
}
