/* sim_power: power meters on machines. Each meter has its own load, shaped
 * over the day by a shift or daily profile, with noise; it reports the
 * active power, the voltage, the power factor and its energy register,
 * which only ever grows. Everything but the reading itself is sim_common's;
 * see README.md.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <plantd/plantd.h>

#include "sim.h"

#define FAULT_KW 1000000.0 /* a fault: a reading no feeder of a plant can carry */
#define MAX_KW	 100000.0

enum { PROFILE_SHIFT, PROFILE_DAILY, PROFILE_FLAT };

struct power_params {
	double load_kw, noise, voltage, voltage_noise, pf, start_hour;
	uint64_t day_ms;
	int profile;
};

struct power_sensor {
	double f_load;	   /* its load, as a factor of load_kw (0.5..1.5) */
	double pf_offset;  /* its power factor against pf (-0.05..0.05) */
	double energy_kwh; /* its register */
	uint64_t last_t;   /* simulated ms of its last reading */
};

static const char *const tick_keys[] = {"load_kw", "noise", "voltage", "voltage_noise", "pf", NULL};

static int power_load(void *params, const json_t *obj, bool base, const char *where,
		      struct sim_err *err)
{
	struct power_params *p = params;

	if (sim_get_double(obj, "load_kw", where, &p->load_kw, err) ||
	    sim_get_double(obj, "noise", where, &p->noise, err) ||
	    sim_get_double(obj, "voltage", where, &p->voltage, err) ||
	    sim_get_double(obj, "voltage_noise", where, &p->voltage_noise, err) ||
	    sim_get_double(obj, "pf", where, &p->pf, err))
		return PLANT_E_CONFIG;
	if (base) {
		const char *profile = json_string_value(json_object_get(obj, "profile"));
		long long day = 0;

		if (sim_get_double(obj, "start_hour", where, &p->start_hour, err) ||
		    sim_get_int(obj, "day_length", where, &day, err))
			return PLANT_E_CONFIG;
		if (!profile || !strcmp(profile, "shift"))
			p->profile = PROFILE_SHIFT;
		else if (!strcmp(profile, "daily"))
			p->profile = PROFILE_DAILY;
		else if (!strcmp(profile, "flat"))
			p->profile = PROFILE_FLAT;
		else
			return sim_err_set(
				err, "profile",
				"'profile' must be \"shift\", \"daily\" or \"flat\", not "
				"\"%s\"",
				profile);
		if (day < 1000)
			return sim_err_set(err, "day_length", "'day_length' must be at least 1s");
		p->day_ms = (uint64_t)day;
		if (!(p->start_hour >= 0 && p->start_hour < 24))
			return sim_err_set(err, "start_hour",
					   "'start_hour' must be from 0 to 24 (not included)");
	}
	if (p->load_kw < 0 || p->load_kw > MAX_KW)
		return sim_err_set(err, "load_kw", "%s'load_kw' must be from 0 to %g kW", where,
				   MAX_KW);
	if (p->noise < 0 || p->noise > 1)
		return sim_err_set(err, "noise", "%s'noise' must be a fraction of the load, 0 to 1",
				   where);
	if (p->voltage < 1 || p->voltage > 100000)
		return sim_err_set(err, "voltage", "%s'voltage' must be from 1 to 100000 V", where);
	if (p->voltage_noise < 0 || p->voltage_noise > p->voltage / 10)
		return sim_err_set(err, "voltage_noise",
				   "%s'voltage_noise' must be from 0 to a tenth of 'voltage'",
				   where);
	if (p->pf < 0.3 || p->pf > 1)
		return sim_err_set(err, "pf", "%s'pf' must be from 0.3 to 1", where);
	return PLANT_OK;
}

static void power_sensor_init(const void *params, void *sensor, struct sim_rng *rng)
{
	struct power_sensor *s = sensor;

	(void)params;
	s->f_load = sim_rng_uniform(rng, 0.5, 1.5);
	s->pf_offset = sim_rng_uniform(rng, -0.05, 0.05);
	s->energy_kwh = sim_rng_uniform(rng, 1000.0, 100000.0);
	s->last_t = 0;
}

/* The share of a meter's load at `hour` of the day. */
static double profile_at(int profile, double hour)
{
	switch (profile) {
	case PROFILE_SHIFT:
		/* early and late shifts, a skeleton crew at night */
		if (hour >= 6 && hour < 14)
			return 1.0;
		if (hour >= 14 && hour < 22)
			return 0.8;
		return 0.3;
	case PROFILE_DAILY:
		/* a smooth day peaking at 14:00 */
		return 0.65 + 0.35 * cos(6.283185307179586 * (hour - 14.0) / 24.0);
	default:
		return 1.0;
	}
}

/* Draws per reading: the load's noise, the voltage's, the power factor's. */
static void power_write(const void *params, void *sensor, struct sim_rng *rng,
			const struct sim_point *pt, struct sim_writer *w)
{
	const struct power_params *p = params;
	struct power_sensor *s = sensor;
	double hour = fmod(p->start_hour + 24.0 * (double)pt->t_ms / (double)p->day_ms, 24.0);
	double kw = p->load_kw * s->f_load * profile_at(p->profile, hour) *
		    (1.0 + p->noise * sim_rng_gauss(rng));
	double volts = p->voltage + p->voltage_noise * sim_rng_gauss(rng);
	double pf = p->pf + s->pf_offset + 0.01 * sim_rng_gauss(rng);

	if (kw < 0)
		kw = 0;
	if (pf > 1)
		pf = 1;
	if (pf < 0.3)
		pf = 0.3;
	/* the register counts what the machine drew since the last reading,
	 * faults or not: it never goes back */
	if (pt->t_ms > s->last_t)
		s->energy_kwh += kw * (double)(pt->t_ms - s->last_t) / 3.6e6;
	s->last_t = pt->t_ms;
	sim_put_primary(w, pt->fault ? FAULT_KW : kw, 3);
	sim_put_lit(w, ",\"unit\":\"kW\",\"energy_kwh\":");
	sim_put_fixed(w, s->energy_kwh, 3);
	sim_put_lit(w, ",\"voltage\":");
	sim_put_fixed(w, volts, 2);
	sim_put_lit(w, ",\"pf\":");
	sim_put_fixed(w, pf, 3);
}

static const struct sim_model power = {
	.type = "power",
	.primary = "value",
	.params_size = sizeof(struct power_params),
	.sensor_size = sizeof(struct power_sensor),
	.max_text = 80 + 4 * SIM_NUM_MAX,
	.tick_keys = tick_keys,
	.load = power_load,
	.sensor_init = power_sensor_init,
	.write = power_write,
};

static const struct plant_config_key config_keys[] = {
	SIM_COMMON_KEYS("sensor.power.raw"),
	{"load_kw", PLANT_CFG_DOUBLE, 0, "50.0", "typical load of a meter, kW"},
	{"noise", PLANT_CFG_DOUBLE, 0, "0.05", "load noise, a fraction of the load"},
	{"profile", PLANT_CFG_STRING, 0, "\"shift\"", "\"shift\", \"daily\" or \"flat\""},
	{"start_hour", PLANT_CFG_DOUBLE, 0, "6.0", "simulated hour of the day at start"},
	{"day_length", PLANT_CFG_DURATION, 0, "\"24h\"", "how long a simulated day lasts"},
	{"voltage", PLANT_CFG_DOUBLE, 0, "230.0", "nominal voltage, V"},
	{"voltage_noise", PLANT_CFG_DOUBLE, 0, "2.0", "voltage noise, V (standard deviation)"},
	{"pf", PLANT_CFG_DOUBLE, 0, "0.92", "typical power factor"},
	SIM_KEYS_END,
};

static int power_validate(plant_instance *self, const struct plant_host_api *api,
			  const json_t *config)
{
	return sim_validate(self, api, config, &power);
}

static int power_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		      void **state_out)
{
	return sim_init(self, api, config, &power, state_out);
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,	    .name = "sim_power",
	.version = "1.0.0",	    .description = "simulates power meters on machines",
	.config_keys = config_keys, .validate = power_validate,
	.init = power_init,	    .start = sim_start,
	.stop = sim_stop,	    .destroy = sim_destroy,
	.health = sim_health,
};
