#include "jsonfields.h"

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

int json_fields(const char *text, size_t len, const char *const *keys, size_t n,
		struct plant_field *out)
{
	const char *p = text, *end = text + len;
	for (size_t i = 0; i < n; i++)
		out[i] = (struct plant_field){.type = PLANT_FIELD_ABSENT};
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
		default: {
			/* a number; the text goes on past it (a ',' or '}' at
			 * least), so strtod stops inside it */
			char *stop;
			f.type = PLANT_FIELD_NUMBER;
			f.num = strtod(p, &stop);
			if (stop == p || stop > end)
				return PLANT_E_INVALID;
			p = stop;
			f.len = (size_t)(p - v);
			break;
		}
		}
		/* keys with escapes never match: none of ours has any */
		for (size_t i = 0; i < n && !kesc; i++)
			if (strlen(keys[i]) == klen && memcmp(keys[i], k, klen) == 0)
				out[i] = f;
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
