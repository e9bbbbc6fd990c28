/* Thermistor temperature by the Steinhart–Hart equation,
 *
 *	1/T = a + b ln R + c (ln R)^3		(T in kelvin, R in ohms)
 *
 * kept apart from the plugin so that tests can check it alone. */
#ifndef PLANTD_SENSOR_THERMISTOR_H
#define PLANTD_SENSOR_THERMISTOR_H

#define SH_ZERO_C 273.15 /* 0 °C in kelvin */

/* The seed platform's material constants. */
#define SH_DEFAULT_A 1.40e-3
#define SH_DEFAULT_B 2.37e-4
#define SH_DEFAULT_C 9.90e-8

struct sh_coeffs {
	double a, b, c;
};

/* The temperature of a thermistor showing `r_ohm`, in kelvin. Returns 0, or
 * -1 when there is none: R not a positive finite number, or constants that
 * give 1/T <= 0 (no physical temperature) at that resistance. */
int sh_kelvin(const struct sh_coeffs *k, double r_ohm, double *kelvin_out);

#endif
