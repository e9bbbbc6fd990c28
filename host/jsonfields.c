#include "jsonfields.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* p at the opening quote: the closing quote, or NULL. */
static const char *string_end(const char *p, const char *end, int *escaped)
{
	for (p++; p < end; p++) {
		if (*p == '\\') {
			*escaped = 1;
			p++;
		} else if (*p == '"') {
			return p;
		}
	}
	return NULL;
}

/* p at '{' or '[': just past its match, or NULL. */
static const char *nested_end(const char *p, const char *end)
{
	int depth = 0, esc = 0;
	for (; p < end; p++) {
		switch (*p) {
		case '"':
			p = string_end(p, end, &esc);
			if (!p)
				return NULL;
			break;
		case '{':
		case '[':
			depth++;
			break;
		case '}':
		case ']':
			if (--depth == 0)
				return p + 1;
			break;
		default:
			break;
		}
	}
	return NULL;
}

/* p at a number: just past it. The text is valid JSON, so the characters
 * of numbers are all there is to skip. */
static const char *number_end(const char *p, const char *end)
{
	while (p < end && ((*p >= '0' && *p <= '9') || *p == '-' || *p == '+' || *p == '.' ||
			   *p == 'e' || *p == 'E'))
		p++;
	return p;
}

#define KEYS_FAST 32

int json_fields(const char *text, size_t len, const char *const *keys, size_t n,
		struct plant_field *out)
{
	const char *p = text, *end = text + len;
	size_t klens[KEYS_FAST];
	for (size_t i = 0; i < n; i++) {
		out[i] = (struct plant_field){.type = PLANT_FIELD_ABSENT};
		if (i < KEYS_FAST)
			klens[i] = strlen(keys[i]);
	}
	p = skip_ws(p, end);
	if (p >= end || *p != '{')
		return PLANT_E_INVALID;
	p = skip_ws(p + 1, end);
	if (p < end && *p == '}')
		return PLANT_OK;
	while (p < end) {
		int kesc = 0;
		if (*p != '"')
			return PLANT_E_INVALID;
		const char *k = p + 1, *kend = string_end(p, end, &kesc);
		if (!kend)
			return PLANT_E_INVALID;
		size_t klen = (size_t)(kend - k);
		p = skip_ws(kend + 1, end);
		if (p >= end || *p != ':')
			return PLANT_E_INVALID;
		p = skip_ws(p + 1, end);
		if (p >= end)
			return PLANT_E_INVALID;
		/* which keys want it: keys with escapes never match (none of
		 * ours has any) */
		size_t hit = SIZE_MAX;
		for (size_t i = 0; i < n && !kesc; i++) {
			size_t kl = i < KEYS_FAST ? klens[i] : strlen(keys[i]);
			if (kl == klen && memcmp(keys[i], k, klen) == 0) {
				hit = i;
				break;
			}
		}
		struct plant_field f = {.str = p};
		const char *v = p;
		switch (*p) {
		case '"':
			p = string_end(p, end, &f.escaped);
			if (!p)
				return PLANT_E_INVALID;
			f.type = PLANT_FIELD_STRING;
			f.str = v + 1;
			f.len = (size_t)(p - v - 1);
			p++;
			break;
		case '{':
		case '[':
			f.type = *p == '{' ? PLANT_FIELD_OBJECT : PLANT_FIELD_ARRAY;
			p = nested_end(p, end);
			if (!p)
				return PLANT_E_INVALID;
			f.len = (size_t)(p - v);
			break;
		case 't':
		case 'f':
		case 'n':
			f.type = *p == 'n' ? PLANT_FIELD_NULL : PLANT_FIELD_BOOL;
			f.num = *p == 't';
			f.len = *p == 'f' ? 5 : 4;
			p += f.len;
			break;
		default:
			/* a number: converted only when a key wants it (the
			 * text goes on past it, so strtod stops inside it) */
			f.type = PLANT_FIELD_NUMBER;
			p = number_end(p, end);
			if (p == v)
				return PLANT_E_INVALID;
			f.len = (size_t)(p - v);
			if (hit != SIZE_MAX) {
				char *stop;
				f.num = strtod(v, &stop);
				if (stop != p)
					return PLANT_E_INVALID;
			}
			break;
		}
		if (hit != SIZE_MAX) {
			/* the last of duplicate keys wins, as in jansson; the
			 * same key twice in `keys` gets it in every place */
			for (size_t i = hit; i < n; i++) {
				size_t kl = i < KEYS_FAST ? klens[i] : strlen(keys[i]);
				if (kl == klen && memcmp(keys[i], k, klen) == 0)
					out[i] = f;
			}
		}
		p = skip_ws(p, end);
		if (p < end && *p == ',') {
			p = skip_ws(p + 1, end);
			continue;
		}
		if (p < end && *p == '}')
			return PLANT_OK;
		return PLANT_E_INVALID;
	}
	return PLANT_E_INVALID;
}
