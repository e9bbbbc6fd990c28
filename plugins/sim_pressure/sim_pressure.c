/* sim_pressure: pressure transmitters on process lines. Each sensor holds
 * its own setpoint; readings wander around it with noise and a slow drift
 * (a fouling filter, a leaking valve), and now and then spike (water
 * hammer, a closing valve). Everything but the reading itself is
 * sim_common's; see README.md.
 */
#include <math.h>
#include <stdint.h>

#include <plantd/plantd.h>

#include "sim.h"

#define FAULT_BAR 1000.0 /* a fault: the transmitter pinned at its range end */
#define MAX_BAR	  500.0

struct pres_params {
	double setpoint_bar, noise, drift_per_hour, spike_rate, spike_bar;
};

struct pres_sensor {
	double f_set;	/* its setpoint, as a factor of setpoint_bar (0.9..1.1) */
	double f_drift; /* its drift, as a factor of drift_per_hour (-1..1) */
};

static const char *const tick_keys[] = {"setpoint_bar", "noise",     "drift_per_hour",
					"spike_rate",	"spike_bar", NULL};

static int pres_load(void *params, const json_t *obj, bool base, const char *where,
		     struct sim_err *err)
{
	struct pres_params *p = params;

	(void)base;
	if (sim_get_double(obj, "setpoint_bar", where, &p->setpoint_bar, err) ||
	    sim_get_double(obj, "noise", where, &p->noise, err) ||
	    sim_get_double(obj, "drift_per_hour", where, &p->drift_per_hour, err) ||
	    sim_get_double(obj, "spike_rate", where, &p->spike_rate, err) ||
	    sim_get_double(obj, "spike_bar", where, &p->spike_bar, err))
		return PLANT_E_CONFIG;
	if (p->setpoint_bar < 0 || p->setpoint_bar > MAX_BAR)
		return sim_err_set(err, "setpoint_bar", "%s'setpoint_bar' must be from 0 to %g bar",
				   where, MAX_BAR);
	if (p->noise < 0 || p->noise > MAX_BAR)
		return sim_err_set(err, "noise", "%s'noise' must be from 0 to %g bar", where,
				   MAX_BAR);
	if (fabs(p->drift_per_hour) > MAX_BAR)
		return sim_err_set(err, "drift_per_hour",
				   "%s'drift_per_hour' must be from -%g to %g bar", where, MAX_BAR,
				   MAX_BAR);
	if (!(p->spike_rate >= 0 && p->spike_rate <= 1))
		return sim_err_set(err, "spike_rate",
				   "%s'spike_rate' must be a fraction from 0 to 1", where);
	if (p->spike_bar < 0 || p->spike_bar > MAX_BAR)
		return sim_err_set(err, "spike_bar", "%s'spike_bar' must be from 0 to %g bar",
				   where, MAX_BAR);
	return PLANT_OK;
}

static void pres_sensor_init(const void *params, void *sensor, struct sim_rng *rng)
{
	struct pres_sensor *s = sensor;

	(void)params;
	s->f_set = sim_rng_uniform(rng, 0.9, 1.1);
	s->f_drift = sim_rng_uniform(rng, -1.0, 1.0);
}

/* Draws per reading: the noise, whether it spikes, how much. */
static void pres_write(const void *params, void *sensor, struct sim_rng *rng,
		       const struct sim_point *pt, struct sim_writer *w)
{
	const struct pres_params *p = params;
	const struct pres_sensor *s = sensor;
	double setpoint = p->setpoint_bar * s->f_set;
	double v = setpoint + p->drift_per_hour * s->f_drift * ((double)pt->t_ms / 3.6e6) +
		   p->noise * sim_rng_gauss(rng);
	double spike = sim_rng_double(rng), size = sim_rng_uniform(rng, 0.5, 1.5);

	if (spike < p->spike_rate)
		v += p->spike_bar * size;
	if (v < 0)
		v = 0; /* gauge pressure of a line that is never under vacuum */
	if (pt->fault)
		v = FAULT_BAR;
	sim_put_primary(w, v, 4);
	sim_put_lit(w, ",\"unit\":\"bar\",\"setpoint\":");
	sim_put_fixed(w, setpoint, 4);
}

static const struct sim_model pressure = {
	.type = "pressure",
	.primary = "value",
	.params_size = sizeof(struct pres_params),
	.sensor_size = sizeof(struct pres_sensor),
	.max_text = 64 + 2 * SIM_NUM_MAX,
	.tick_keys = tick_keys,
	.load = pres_load,
	.sensor_init = pres_sensor_init,
	.write = pres_write,
};

static const struct plant_config_key config_keys[] = {
	SIM_COMMON_KEYS("sensor.pressure.raw"),
	{"setpoint_bar", PLANT_CFG_DOUBLE, 0, "6.0", "typical setpoint, bar"},
	{"noise", PLANT_CFG_DOUBLE, 0, "0.05", "noise, bar (standard deviation)"},
	{"drift_per_hour", PLANT_CFG_DOUBLE, 0, "0.02", "largest drift per hour, bar"},
	{"spike_rate", PLANT_CFG_DOUBLE, 0, "0.001", "fraction of readings with a spike"},
	{"spike_bar", PLANT_CFG_DOUBLE, 0, "3.0", "typical spike height, bar"},
	SIM_KEYS_END,
};

static int pres_validate(plant_instance *self, const struct plant_host_api *api,
			 const json_t *config)
{
	return sim_validate(self, api, config, &pressure);
}

static int pres_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		     void **state_out)
{
	return sim_init(self, api, config, &pressure, state_out);
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "sim_pressure",
	.version = "1.0.0",
	.description = "simulates pressure transmitters on process lines",
	.config_keys = config_keys,
	.validate = pres_validate,
	.init = pres_init,
	.start = sim_start,
	.stop = sim_stop,
	.destroy = sim_destroy,
	.health = sim_health,
};
