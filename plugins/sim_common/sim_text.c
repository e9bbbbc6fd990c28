/* sim_common: numbers and fields as JSON text, without jansson or printf in
 * the common case (a reading must cost well under a microsecond). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sim.h"

static const uint64_t pow10_u[] = {
	1ull,	   10ull,      100ull,	    1000ull,	  10000ull,
	100000ull, 1000000ull, 10000000ull, 100000000ull, 1000000000ull,
};

char *sim_fmt_u64(char *p, uint64_t v)
{
	char tmp[20];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

char *sim_fmt_fixed(char *p, double v, int decimals)
{
	uint64_t scale, scaled, ip, fp;
	char frac[10];
	int n;

	if (decimals < 0)
		decimals = 0;
	if (decimals > 9)
		decimals = 9;
	if (!isfinite(v))
		v = 0.0; /* models never produce one; JSON has no NaN */
	scale = pow10_u[decimals];
	if (fabs(v) * (double)scale >= 9.0e18) {
		/* beyond the integer path: an exponent keeps it a JSON real */
		n = snprintf(p, SIM_NUM_MAX, "%.6e", v);
		return p + (n > 0 ? n : 0);
	}
	if (v < 0) {
		*p++ = '-';
		v = -v;
	}
	scaled = (uint64_t)(v * (double)scale + 0.5);
	ip = scaled / scale;
	fp = scaled % scale;
	p = sim_fmt_u64(p, ip);
	*p++ = '.';
	if (decimals == 0) {
		*p++ = '0';
		return p;
	}
	for (n = decimals - 1; n >= 0; n--) {
		frac[n] = (char)('0' + fp % 10);
		fp /= 10;
	}
	n = decimals;
	while (n > 1 && frac[n - 1] == '0')
		n--;
	memcpy(p, frac, (size_t)n);
	return p + n;
}

void sim_put_raw(struct sim_writer *w, const char *s, size_t n)
{
	if (w->overflow || (size_t)(w->end - w->p) < n) {
		w->overflow = true;
		return;
	}
	memcpy(w->p, s, n);
	w->p += n;
}

void sim_put_u64(struct sim_writer *w, uint64_t v)
{
	if (w->overflow || w->end - w->p < SIM_NUM_MAX) {
		w->overflow = true;
		return;
	}
	w->p = sim_fmt_u64(w->p, v);
}

void sim_put_fixed(struct sim_writer *w, double v, int decimals)
{
	if (w->overflow || w->end - w->p < SIM_NUM_MAX) {
		w->overflow = true;
		return;
	}
	w->p = sim_fmt_fixed(w->p, v, decimals);
}

void sim_put_primary(struct sim_writer *w, double v, int decimals)
{
	if (w->bad == SIM_BAD_NO_VALUE)
		return;
	sim_put_lit(w, ",\"");
	sim_put_raw(w, w->primary, strlen(w->primary));
	sim_put_lit(w, "\":");
	switch (w->bad) {
	case SIM_BAD_STRING_VALUE:
		sim_put_lit(w, "\"");
		sim_put_fixed(w, v, decimals);
		sim_put_lit(w, "\"");
		break;
	case SIM_BAD_NEGATIVE_VALUE:
		v = fabs(v);
		/* strictly negative once written */
		if (v * (double)pow10_u[decimals < 0 ? 0 : decimals > 9 ? 9 : decimals] < 1.0)
			v = 1.0;
		sim_put_fixed(w, -v, decimals);
		break;
	default:
		sim_put_fixed(w, v, decimals);
	}
}

int sim_err_set(struct sim_err *err, const char *key, const char *fmt, ...)
{
	va_list ap;

	snprintf(err->key, sizeof err->key, "%s", key ? key : "");
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	va_end(ap);
	return PLANT_E_CONFIG;
}

int sim_get_double(const json_t *obj, const char *key, const char *where, double *out,
		   struct sim_err *err)
{
	const json_t *v = json_object_get(obj, key);

	if (!v)
		return PLANT_OK;
	if (!json_is_number(v) || !isfinite(json_number_value(v)))
		return sim_err_set(err, key, "%s'%s' must be a number", where, key);
	*out = json_number_value(v);
	return PLANT_OK;
}

int sim_get_int(const json_t *obj, const char *key, const char *where, long long *out,
		struct sim_err *err)
{
	const json_t *v = json_object_get(obj, key);

	if (!v)
		return PLANT_OK;
	if (!json_is_integer(v))
		return sim_err_set(err, key, "%s'%s' must be an integer", where, key);
	*out = (long long)json_integer_value(v);
	return PLANT_OK;
}

void sim_rng_seed(struct sim_rng *r, uint64_t seed, unsigned loc, unsigned num)
{
	uint64_t place = ((uint64_t)loc << 32) | num;
	uint64_t x = seed ^ sim_splitmix64(&place);

	for (int i = 0; i < 4; i++)
		r->s[i] = sim_splitmix64(&x);
	/* xoshiro must not start all-zero; splitmix64 never gives four zeros,
	 * but be certain */
	if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3]))
		r->s[0] = 1;
}
