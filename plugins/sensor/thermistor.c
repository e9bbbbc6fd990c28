#include "thermistor.h"

#include <math.h>

int sh_kelvin(const struct sh_coeffs *k, double r_ohm, double *kelvin_out)
{
	if (!(r_ohm > 0) || !isfinite(r_ohm))
		return -1;
	double x = log(r_ohm);
	double inv = k->a + k->b * x + k->c * x * x * x;
	if (!(inv > 0) || !isfinite(inv))
		return -1;
	*kelvin_out = 1.0 / inv;
	return 0;
}
