/* sim_thermistor: thermistors reporting their resistance, as the trigger
 * script of the serverless seed does: `locations` x `sensors` sensors, each
 * reporting a resistance uniform in min_r..max_r after a random delay.
 * Everything but the reading itself is sim_common's; see README.md.
 */
#include <math.h>
#include <stdint.h>

#include <plantd/plantd.h>

#include "sim.h"

#define OPEN_CIRCUIT_OHM 1e9 /* a fault: the wire is cut */
#define SHORT_OHM	 0.0 /* a fault: shorted */
#define MAX_OHM		 1e12

struct therm_params {
	double min_r, max_r;
	/* the range on the 1 milliohm grid the readings are written on */
	int64_t lo_milli, hi_milli;
};

static const char *const tick_keys[] = {"min_r", "max_r", NULL};

static int therm_load(void *params, const json_t *obj, bool base, const char *where,
		      struct sim_err *err)
{
	struct therm_params *p = params;

	(void)base;
	if (sim_get_double(obj, "min_r", where, &p->min_r, err) ||
	    sim_get_double(obj, "max_r", where, &p->max_r, err))
		return PLANT_E_CONFIG;
	if (p->min_r < 0 || p->max_r > MAX_OHM)
		return sim_err_set(err, p->min_r < 0 ? "min_r" : "max_r",
				   "%sresistances must be from 0 to %g ohm", where, MAX_OHM);
	if (p->min_r > p->max_r)
		return sim_err_set(err, "min_r", "%s'min_r' (%g) is greater than 'max_r' (%g)",
				   where, p->min_r, p->max_r);
	p->lo_milli = (int64_t)ceil(p->min_r * 1000.0 - 1e-6);
	p->hi_milli = (int64_t)floor(p->max_r * 1000.0 + 1e-6);
	return PLANT_OK;
}

static void therm_sensor_init(const void *params, void *sensor, struct sim_rng *rng)
{
	(void)params;
	(void)sensor;
	(void)rng;
}

/* One draw per reading: the resistance, or for a fault which fault. */
static void therm_write(const void *params, void *sensor, struct sim_rng *rng,
			const struct sim_point *pt, struct sim_writer *w)
{
	const struct therm_params *p = params;
	uint64_t x = sim_rng_next(rng);
	double r;

	(void)sensor;
	if (pt->fault) {
		sim_put_primary(w, (x & 1) ? OPEN_CIRCUIT_OHM : SHORT_OHM, 3);
		return;
	}
	if (p->lo_milli > p->hi_milli) {
		/* no point of the grid inside a very narrow range */
		sim_put_primary(w, p->min_r, 9);
		return;
	}
	r = (double)(p->lo_milli +
		     (int64_t)(((unsigned __int128)x * (uint64_t)(p->hi_milli - p->lo_milli + 1)) >>
			       64)) /
	    1000.0;
	sim_put_primary(w, r, 3);
}

static const struct sim_model thermistor = {
	.type = "thermistor",
	.primary = "resistance",
	.negative_invalid = true, /* no negative resistance */
	.params_size = sizeof(struct therm_params),
	.sensor_size = 0,
	.max_text = 16 + SIM_NUM_MAX,
	.tick_keys = tick_keys,
	.load = therm_load,
	.sensor_init = therm_sensor_init,
	.write = therm_write,
};

static const struct plant_config_key config_keys[] = {
	SIM_COMMON_KEYS("sensor.thermistor.raw"),
	{"min_r", PLANT_CFG_DOUBLE, 0, "0.1", "lowest resistance, ohm"},
	{"max_r", PLANT_CFG_DOUBLE, 0, "20500.0", "highest resistance, ohm"},
	SIM_KEYS_END,
};

static int therm_validate(plant_instance *self, const struct plant_host_api *api,
			  const json_t *config)
{
	return sim_validate(self, api, config, &thermistor);
}

static int therm_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		      void **state_out)
{
	return sim_init(self, api, config, &thermistor, state_out);
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "sim_thermistor",
	.version = "1.0.0",
	.description = "simulates thermistors reporting their resistance",
	.config_keys = config_keys,
	.validate = therm_validate,
	.init = therm_init,
	.start = sim_start,
	.stop = sim_stop,
	.destroy = sim_destroy,
	.health = sim_health,
};
