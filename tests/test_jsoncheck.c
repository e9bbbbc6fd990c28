/* The JSON check agrees with jansson's parser: on hand-picked cases and on
 * thousands of random mutations of valid documents. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jsoncheck.h"

static bool jansson_says(const char *s, size_t len)
{
	json_t *t = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	json_decref(t);
	return t != NULL;
}

static size_t n_valid, n_invalid;

static void agree(const char *s, size_t len)
{
	bool mine = json_text_valid(s, len), theirs = jansson_says(s, len);
	if (theirs)
		n_valid++;
	else
		n_invalid++;
	if (mine != theirs)
		fail_msg("json_text_valid says %s, jansson %s, for [%.*s]",
			 mine ? "valid" : "invalid", theirs ? "valid" : "invalid", (int)len, s);
}

static void test_cases(void **state)
{
	static const char *const cases[] = {
		"{}",
		"[]",
		"0",
		"-0",
		"1.5",
		"-1.5e10",
		"1E+2",
		"1e-2",
		"\"\"",
		"true",
		"false",
		"null",
		" {\"a\" : [1, 2, {\"b\": null}] } ",
		"{\"r\":12.5,\"id\":\"t-1\"}",
		"\"\\u00e9\\n\\t\\\"\\\\\\/\"",
		"\"\\ud83d\\ude00\"",
		"\"\xc3\xa9\"",
		"\"\xf0\x9f\x98\x80\"",
		"[1,]",
		"{,}",
		"{\"a\"}",
		"{\"a\":}",
		"{\"a\" 1}",
		"[1 2]",
		"01",
		"1.",
		".5",
		"-",
		"+1",
		"1e",
		"1e+",
		"tru",
		"nul",
		"\"abc",
		"\"\\x\"",
		"\"\\u12\"",
		"\"\\ud800\"",
		"\"\\udc00\"",
		"\"\\ud800\\u0041\"",
		"\"\xc0\xaf\"",
		"\"\xed\xa0\x80\"",
		"\"\xf4\x90\x80\x80\"",
		"\"\xff\"",
		"\"a\tb\"",
		"{} {}",
		"[",
		"]",
		"",
		"   ",
		"123456789012345678",
		"1234567890123456789",
		"99999999999999999999",
		"-9223372036854775808",
		"9223372036854775807",
		"9223372036854775808",
		"1e308",
		"1e309",
		"-1e400",
		"1e-400",
		"[[[[[]]]]]",
		"\"\\u0000\"",
		"{\"a\":1,\"a\":2}",
		"NaN",
		"Infinity",
		"[1e1000]",
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		agree(cases[i], strlen(cases[i]));
	agree("\"a\0b\"", 5); /* a raw NUL inside a string */
	/* a mantissa of 250 digits and an exponent: a real jansson refuses */
	char big[300];
	memset(big, '9', 250);
	memcpy(big + 250, "e99", 4);
	agree(big, strlen(big));
}

static void test_deep(void **state)
{
	char *s = malloc(5000);
	for (int depth = 2040; depth <= 2060; depth += 4) {
		memset(s, '[', (size_t)depth);
		memset(s + depth, ']', (size_t)depth);
		agree(s, (size_t)depth * 2);
	}
	free(s);
}

static void test_mutations(void **state)
{
	const char *base = "{\"sensor_id\":\"loc-3/s-0042\",\"location\":3,\"r\":10234.57,"
			   "\"ts\":1795433155164,\"tags\":[\"a\",\"\\u00e9\",true,null,-1.5e-3],"
			   "\"n\":{\"x\":[]}}";
	size_t len = strlen(base);
	static const char alphabet[] = "{}[]\":,.-+eE0123456789tfnul\\ \t\n\xc3\xa9\x80\xff";
	char buf[256];
	unsigned seed = 12345;
	n_valid = n_invalid = 0;
	for (int i = 0; i < 20000; i++) {
		memcpy(buf, base, len);
		size_t n = len;
		int edits = 1 + rand_r(&seed) % 3;
		for (int e = 0; e < edits; e++) {
			size_t at = (size_t)rand_r(&seed) % n;
			switch (rand_r(&seed) % 3) {
			case 0: /* replace */
				buf[at] = alphabet[rand_r(&seed) % (sizeof alphabet - 1)];
				break;
			case 1: /* delete */
				memmove(buf + at, buf + at + 1, n - at - 1);
				n--;
				break;
			default: /* insert */
				if (n + 1 < sizeof buf) {
					memmove(buf + at + 1, buf + at, n - at);
					buf[at] = alphabet[rand_r(&seed) % (sizeof alphabet - 1)];
					n++;
				}
			}
		}
		agree(buf, n);
	}
	/* the mutations must reach both sides, or the comparison proves little */
	assert_true(n_valid > 500);
	assert_true(n_invalid > 500);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_deep),
		cmocka_unit_test(test_mutations),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
