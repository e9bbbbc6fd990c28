/* Steinhart–Hart, checked against values worked out here by other means:
 * the closed-form inverse (temperature -> resistance), and points where
 * ln R is 0 or 1, where the equation reduces to sums of the constants. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "thermistor.h"

static const struct sh_coeffs seed = {1.40e-3, 2.37e-4, 9.90e-8};

/* The resistance at temperature t (K): the inverse of Steinhart–Hart, from
 * solving the depressed cubic c y^3 + b y + (a - 1/T) = 0 for y = ln R
 * (Cardano; one real root since b, c > 0). */
static double inverse_ohm(const struct sh_coeffs *k, double t)
{
	double x = (k->a - 1.0 / t) / k->c;
	double y = sqrt(pow(k->b / (3.0 * k->c), 3) + x * x / 4.0);
	return exp(cbrt(y - x / 2.0) - cbrt(y + x / 2.0));
}

static void assert_close(double got, double want, double rel)
{
	if (!(fabs(got - want) <= rel * fabs(want)))
		fail_msg("got %.12g, want %.12g (relative tolerance %g)", got, want, rel);
}

static double kelvin(double r)
{
	double t = 0;
	if (sh_kelvin(&seed, r, &t) != 0)
		fail_msg("no temperature for %g ohm", r);
	return t;
}

/* ln 1 = 0: 1/T = a. ln e = 1: 1/T = a + b + c. */
static void test_points_from_the_constants(void **state)
{
	(void)state;
	assert_close(kelvin(1.0), 1.0 / 1.40e-3, 1e-12);
	assert_close(kelvin(M_E), 1.0 / (1.40e-3 + 2.37e-4 + 9.90e-8), 1e-12);
	/* ln R = -1: 1/T = a - b - c */
	assert_close(kelvin(1.0 / M_E), 1.0 / (1.40e-3 - 2.37e-4 - 9.90e-8), 1e-12);
}

/* Every temperature a plant sees, and then some: T -> R by the inverse,
 * back to T by the code. */
static void test_round_trip_through_the_inverse(void **state)
{
	(void)state;
	for (double c = -60.0; c <= 300.0; c += 0.5) {
		double t = c + SH_ZERO_C;
		double r = inverse_ohm(&seed, t);
		assert_true(r > 0);
		assert_close(kelvin(r), t, 1e-9);
	}
}

/* The seed's simulated range, 0.1 .. 20500 ohm, at both ends and at
 * 10 kOhm; the temperature falls as the resistance rises (NTC). */
static void test_edge_resistances(void **state)
{
	(void)state;
	const double rs[] = {1e-2, 0.1, 10000.0, 20500.0, 1e6};
	double last = INFINITY;
	for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) {
		double t = kelvin(rs[i]);
		assert_close(inverse_ohm(&seed, t), rs[i], 1e-9);
		if (i > 0 && rs[i] > rs[i - 1])
			assert_true(t < last);
		last = t;
	}
	/* about -13.4 C at the top of the range, about 899 C at the bottom */
	assert_true(fabs(kelvin(20500.0) - SH_ZERO_C + 13.4) < 0.1);
	assert_true(fabs(kelvin(0.1) - SH_ZERO_C - 899.0) < 1.0);
}

static void test_no_temperature(void **state)
{
	(void)state;
	double t = 42;
	assert_int_equal(sh_kelvin(&seed, 0.0, &t), -1);
	assert_int_equal(sh_kelvin(&seed, -5.0, &t), -1);
	assert_int_equal(sh_kelvin(&seed, NAN, &t), -1);
	assert_int_equal(sh_kelvin(&seed, INFINITY, &t), -1);
	/* the seed's constants below about 4 milliohm: a + b ln R < 0 */
	assert_int_equal(sh_kelvin(&seed, 1e-3, &t), -1);
	/* constants that make 1/T negative at small R */
	const struct sh_coeffs odd = {1e-4, 1e-3, 0};
	assert_int_equal(sh_kelvin(&odd, 0.01, &t), -1);
	assert_true(t == 42); /* untouched */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_points_from_the_constants),
		cmocka_unit_test(test_round_trip_through_the_inverse),
		cmocka_unit_test(test_edge_resistances),
		cmocka_unit_test(test_no_temperature),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
