/* msg_fields (json_fields): top-level fields read in one pass agree with
 * jansson's tree, on hand-made bodies and on random ones dumped compact and
 * indented. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jsonfields.h"

static int fields(const char *text, const char *const *keys, size_t n, struct plant_field *out)
{
	return json_fields(text, strlen(text), keys, n, out);
}

static void assert_str(const struct plant_field *f, const char *want)
{
	assert_int_equal(f->type, PLANT_FIELD_STRING);
	assert_int_equal(f->len, strlen(want));
	assert_memory_equal(f->str, want, f->len);
}

static void test_types(void **state)
{
	(void)state;
	const char *keys[] = {"id", "n", "ok", "none", "o", "a", "missing", "neg"};
	struct plant_field f[8];
	const char *text = "{\"id\":\"r-1\",\"n\":1.5e3,\"ok\":true,\"none\":null,"
			   "\"o\":{\"x\":[1,{\"y\":\"}\"}]},\"a\":[\"]\",2],\"neg\":-0.25}";
	assert_int_equal(fields(text, keys, 8, f), PLANT_OK);
	assert_str(&f[0], "r-1");
	assert_int_equal(f[1].type, PLANT_FIELD_NUMBER);
	assert_true(f[1].num == 1500.0);
	assert_int_equal(f[2].type, PLANT_FIELD_BOOL);
	assert_true(f[2].num == 1);
	assert_int_equal(f[3].type, PLANT_FIELD_NULL);
	assert_int_equal(f[4].type, PLANT_FIELD_OBJECT);
	assert_int_equal(f[4].len, strlen("{\"x\":[1,{\"y\":\"}\"}]}"));
	assert_memory_equal(f[4].str, "{\"x\":[1,{\"y\":\"}\"}]}", f[4].len);
	assert_int_equal(f[5].type, PLANT_FIELD_ARRAY);
	assert_memory_equal(f[5].str, "[\"]\",2]", f[5].len);
	assert_int_equal(f[6].type, PLANT_FIELD_ABSENT);
	assert_true(f[7].num == -0.25);
	/* nested keys are not top-level keys */
	const char *inner[] = {"x", "y"};
	assert_int_equal(fields(text, inner, 2, f), PLANT_OK);
	assert_int_equal(f[0].type, PLANT_FIELD_ABSENT);
	assert_int_equal(f[1].type, PLANT_FIELD_ABSENT);
}

static void test_escapes_whitespace_duplicates(void **state)
{
	(void)state;
	const char *keys[] = {"s", "d", "t"};
	struct plant_field f[3];
	const char *text = " {\n \"s\" : \"a\\\"b\" ,\t\"d\": 1 , \"d\" : 2, \"t\":\"\\u00e9\"\n} ";
	assert_int_equal(fields(text, keys, 3, f), PLANT_OK);
	assert_int_equal(f[0].type, PLANT_FIELD_STRING);
	assert_true(f[0].escaped);
	assert_memory_equal(f[0].str, "a\\\"b", f[0].len);
	assert_true(f[1].num == 2); /* the last one, as jansson */
	assert_true(f[2].escaped);
	assert_int_equal(fields("{}", keys, 3, f), PLANT_OK);
	assert_int_equal(f[0].type, PLANT_FIELD_ABSENT);
	assert_int_equal(fields("[1,2]", keys, 3, f), PLANT_E_INVALID);
	assert_int_equal(fields("\"s\"", keys, 3, f), PLANT_E_INVALID);
	assert_int_equal(fields("42", keys, 3, f), PLANT_E_INVALID);
}

static json_t *random_value(unsigned *seed, int depth)
{
	switch (rand_r(seed) % (depth > 2 ? 5 : 7)) {
	case 0:
		return json_integer(rand_r(seed) % 100000 - 50000);
	case 1:
		return json_real((rand_r(seed) % 2000000) / 1000.0 - 1000.0);
	case 2: {
		char s[16];
		int n = rand_r(seed) % 12;
		for (int i = 0; i < n; i++)
			s[i] = "ab\"\\}{][,: x\n"[rand_r(seed) % 13];
		s[n] = '\0';
		return json_string(s);
	}
	case 3:
		return rand_r(seed) % 2 ? json_true() : json_false();
	case 4:
		return json_null();
	case 5: {
		json_t *a = json_array();
		for (int i = rand_r(seed) % 4; i > 0; i--)
			json_array_append_new(a, random_value(seed, depth + 1));
		return a;
	}
	default: {
		json_t *o = json_object();
		for (int i = rand_r(seed) % 4; i > 0; i--) {
			char k[8];
			snprintf(k, sizeof k, "k%d", rand_r(seed) % 6);
			json_object_set_new(o, k, random_value(seed, depth + 1));
		}
		return o;
	}
	}
}

/* Each field as msg_fields reads it, checked against the tree. */
static void agree(const char *text, const json_t *tree)
{
	const char *keys[] = {"k0", "k1", "k2", "k3", "k4", "k5"};
	struct plant_field f[6];
	assert_int_equal(json_fields(text, strlen(text), keys, 6, f), PLANT_OK);
	for (int i = 0; i < 6; i++) {
		const json_t *v = json_object_get(tree, keys[i]);
		switch (f[i].type) {
		case PLANT_FIELD_ABSENT:
			assert_null(v);
			break;
		case PLANT_FIELD_NULL:
			assert_true(json_is_null(v));
			break;
		case PLANT_FIELD_BOOL:
			assert_true(json_is_boolean(v) && json_is_true(v) == (f[i].num == 1));
			break;
		case PLANT_FIELD_NUMBER:
			assert_true(json_is_number(v) && json_number_value(v) == f[i].num);
			break;
		case PLANT_FIELD_STRING: {
			assert_true(json_is_string(v));
			/* the raw text between the quotes decodes to the value */
			char *quoted = malloc(f[i].len + 3);
			quoted[0] = '"';
			memcpy(quoted + 1, f[i].str, f[i].len);
			memcpy(quoted + 1 + f[i].len, "\"", 2);
			json_t *s = json_loads(quoted, JSON_DECODE_ANY, NULL);
			assert_true(json_equal(s, v));
			assert_int_equal(f[i].escaped, strchr(quoted + 1, '\\') != NULL);
			json_decref(s);
			free(quoted);
			break;
		}
		default: {
			/* objects and arrays: their text parses to the value */
			json_t *s = json_loadb(f[i].str, f[i].len, 0, NULL);
			assert_non_null(s);
			assert_true(json_equal(s, v));
			assert_int_equal(f[i].type, json_is_object(v) ? PLANT_FIELD_OBJECT
								      : PLANT_FIELD_ARRAY);
			json_decref(s);
		}
		}
	}
}

static void test_random_bodies(void **state)
{
	(void)state;
	unsigned seed = 12345;
	for (int round = 0; round < 3000; round++) {
		json_t *o = json_object();
		for (int i = rand_r(&seed) % 7; i > 0; i--) {
			char k[8];
			snprintf(k, sizeof k, "k%d", rand_r(&seed) % 7);
			json_object_set_new(o, k, random_value(&seed, 0));
		}
		char *compact = json_dumps(o, JSON_COMPACT);
		char *indented = json_dumps(o, JSON_INDENT(2));
		agree(compact, o);
		agree(indented, o);
		free(compact);
		free(indented);
		json_decref(o);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_types),
		cmocka_unit_test(test_escapes_whitespace_duplicates),
		cmocka_unit_test(test_random_bodies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
