/* sim_vibration: accelerometers on rotating machines. Each reading is a
 * short window of `samples` acceleration samples (a sine at the machine's
 * frequency plus noise) with its RMS as the value and its peak. The level
 * has a baseline per sensor and grows slowly (bearing wear). Everything but
 * the reading itself is sim_common's; see README.md.
 */
#include <math.h>
#include <stdint.h>

#include <plantd/plantd.h>

#include "sim.h"

#define FAULT_G	    1000.0 /* a fault: the sensor saturates at its range end */
#define MAX_SAMPLES 256
#define TWO_PI	    6.283185307179586

struct vib_params {
	double baseline_g, noise, drift_per_hour, freq_hz, sample_rate_hz;
	long long samples;
};

/* Each sensor is a machine of its own. */
struct vib_sensor {
	double f_base;	/* its level, as a factor of baseline_g (0.7..1.3) */
	double f_freq;	/* its speed, as a factor of freq_hz (0.97..1.03) */
	double f_drift; /* its wear rate, as a factor of drift_per_hour (0.5..1.5) */
};

static const char *const tick_keys[] = {"baseline_g", "noise", "drift_per_hour", "freq_hz", NULL};

static int vib_load(void *params, const json_t *obj, bool base, const char *where,
		    struct sim_err *err)
{
	struct vib_params *p = params;

	if (sim_get_double(obj, "baseline_g", where, &p->baseline_g, err) ||
	    sim_get_double(obj, "noise", where, &p->noise, err) ||
	    sim_get_double(obj, "drift_per_hour", where, &p->drift_per_hour, err) ||
	    sim_get_double(obj, "freq_hz", where, &p->freq_hz, err))
		return PLANT_E_CONFIG;
	if (base && (sim_get_double(obj, "sample_rate_hz", where, &p->sample_rate_hz, err) ||
		     sim_get_int(obj, "samples", where, &p->samples, err)))
		return PLANT_E_CONFIG;
	if (p->baseline_g < 0 || p->baseline_g > 100)
		return sim_err_set(err, "baseline_g", "%s'baseline_g' must be from 0 to 100 g",
				   where);
	if (p->noise < 0 || p->noise > 100)
		return sim_err_set(err, "noise", "%s'noise' must be from 0 to 100 g", where);
	if (fabs(p->drift_per_hour) > 100)
		return sim_err_set(err, "drift_per_hour",
				   "%s'drift_per_hour' must be from -100 to 100 g", where);
	if (p->samples < 1 || p->samples > MAX_SAMPLES)
		return sim_err_set(err, "samples", "%s'samples' must be from 1 to %d", where,
				   MAX_SAMPLES);
	if (!(p->sample_rate_hz > 0) || p->sample_rate_hz > 1e6)
		return sim_err_set(err, "sample_rate_hz",
				   "%s'sample_rate_hz' must be above 0 and at most 1000000", where);
	if (!(p->freq_hz > 0) || p->freq_hz * 1.03 >= p->sample_rate_hz / 2)
		return sim_err_set(err, "freq_hz",
				   "%s'freq_hz' must be above 0 and below half of 'sample_rate_hz' "
				   "(%g), less 3%%",
				   where, p->sample_rate_hz);
	return PLANT_OK;
}

static size_t vib_text_len(const void *params)
{
	const struct vib_params *p = params;

	return 96 + 3 * SIM_NUM_MAX + (size_t)p->samples * (SIM_NUM_MAX + 1);
}

static void vib_sensor_init(const void *params, void *sensor, struct sim_rng *rng)
{
	struct vib_sensor *s = sensor;

	(void)params;
	s->f_base = sim_rng_uniform(rng, 0.7, 1.3);
	s->f_freq = sim_rng_uniform(rng, 0.97, 1.03);
	s->f_drift = sim_rng_uniform(rng, 0.5, 1.5);
}

/* Draws per reading: one for the phase, one for the level's noise, one per
 * sample. */
static void vib_write(const void *params, void *sensor, struct sim_rng *rng,
		      const struct sim_point *pt, struct sim_writer *w)
{
	const struct vib_params *p = params;
	const struct vib_sensor *s = sensor;
	double hours = (double)pt->t_ms / 3.6e6;
	double level = p->baseline_g * s->f_base + p->drift_per_hour * s->f_drift * hours;
	double freq = p->freq_hz * s->f_freq;
	double phase = TWO_PI * sim_rng_double(rng);
	double step = TWO_PI * freq / p->sample_rate_hz;
	double amp, sn, cs, sd, cd, sum2 = 0, peak = 0;
	double x[MAX_SAMPLES];
	int n = (int)p->samples;

	level += p->noise * sim_rng_gauss(rng);
	if (level < 0)
		level = 0;
	amp = level * 1.4142135623730951; /* a sine's peak is sqrt(2) x its RMS */
	/* sin(phase + k step) by rotation: two sin/cos per reading, not 32 */
	sn = sin(phase);
	cs = cos(phase);
	sd = sin(step);
	cd = cos(step);
	for (int k = 0; k < n; k++) {
		double v = amp * sn + p->noise * sim_rng_gauss(rng), t;

		if (pt->fault)
			v = sn >= 0 ? FAULT_G : -FAULT_G;
		x[k] = v;
		sum2 += v * v;
		if (fabs(v) > peak)
			peak = fabs(v);
		t = sn * cd + cs * sd;
		cs = cs * cd - sn * sd;
		sn = t;
	}
	sim_put_primary(w, sqrt(sum2 / n), 4);
	sim_put_lit(w, ",\"unit\":\"g\",\"peak\":");
	sim_put_fixed(w, peak, 4);
	sim_put_lit(w, ",\"freq_hz\":");
	sim_put_fixed(w, freq, 2);
	sim_put_lit(w, ",\"samples\":[");
	for (int k = 0; k < n; k++) {
		if (k)
			sim_put_lit(w, ",");
		sim_put_fixed(w, x[k], 4);
	}
	sim_put_lit(w, "]");
}

static const struct sim_model vibration = {
	.type = "vibration",
	.primary = "value",
	.params_size = sizeof(struct vib_params),
	.sensor_size = sizeof(struct vib_sensor),
	.max_text = 0, /* text_len() says, from `samples` */
	.tick_keys = tick_keys,
	.load = vib_load,
	.text_len = vib_text_len,
	.sensor_init = vib_sensor_init,
	.write = vib_write,
};

static const struct plant_config_key config_keys[] = {
	SIM_COMMON_KEYS("sensor.vibration.raw"),
	{"baseline_g", PLANT_CFG_DOUBLE, 0, "0.5", "typical RMS level, g"},
	{"noise", PLANT_CFG_DOUBLE, 0, "0.05", "noise, g (standard deviation)"},
	{"drift_per_hour", PLANT_CFG_DOUBLE, 0, "0.01", "RMS growth per hour (wear), g"},
	{"freq_hz", PLANT_CFG_DOUBLE, 0, "50.0", "the machines' rotation frequency, Hz"},
	{"samples", PLANT_CFG_INT, 0, "32", "samples per reading (1..256)"},
	{"sample_rate_hz", PLANT_CFG_DOUBLE, 0, "1000.0", "sampling rate of the samples, Hz"},
	SIM_KEYS_END,
};

static int vib_validate(plant_instance *self, const struct plant_host_api *api,
			const json_t *config)
{
	return sim_validate(self, api, config, &vibration);
}

static int vib_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		    void **state_out)
{
	return sim_init(self, api, config, &vibration, state_out);
}

PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,	    .name = "sim_vibration",
	.version = "1.0.0",	    .description = "simulates accelerometers on rotating machines",
	.config_keys = config_keys, .validate = vib_validate,
	.init = vib_init,	    .start = sim_start,
	.stop = sim_stop,	    .destroy = sim_destroy,
	.health = sim_health,
};
