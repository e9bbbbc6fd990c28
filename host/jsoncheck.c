#include "jsoncheck.h"

#include <jansson.h>
#include <string.h>

#define MAX_DEPTH 2048 /* jansson's own limit */

struct cur {
	const unsigned char *p, *end;
	bool unsure; /* a number jansson might refuse (range): ask it */
};

static void skip_ws(struct cur *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static int hex4(struct cur *c, unsigned *out)
{
	if (c->end - c->p < 4)
		return 0;
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned char h = c->p[i];
		v <<= 4;
		if (h >= '0' && h <= '9')
			v |= h - '0';
		else if (h >= 'a' && h <= 'f')
			v |= h - 'a' + 10;
		else if (h >= 'A' && h <= 'F')
			v |= h - 'A' + 10;
		else
			return 0;
	}
	c->p += 4;
	*out = v;
	return 1;
}

/* One UTF-8 sequence of 2..4 bytes starting at c->p (a byte >= 0x80):
 * shortest form, no surrogates, at most U+10FFFF. */
static int utf8_seq(struct cur *c)
{
	unsigned char b = *c->p;
	int n;
	unsigned cp;
	if (b >= 0xc2 && b <= 0xdf) {
		n = 1;
		cp = b & 0x1f;
	} else if (b >= 0xe0 && b <= 0xef) {
		n = 2;
		cp = b & 0x0f;
	} else if (b >= 0xf0 && b <= 0xf4) {
		n = 3;
		cp = b & 0x07;
	} else {
		return 0;
	}
	if (c->end - c->p <= n)
		return 0;
	for (int i = 1; i <= n; i++) {
		if ((c->p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (c->p[i] & 0x3f);
	}
	if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	c->p += n + 1;
	return 1;
}

static int string(struct cur *c)
{
	c->p++; /* the opening quote */
	while (c->p < c->end) {
		unsigned char ch = *c->p;
		if (ch == '"') {
			c->p++;
			return 1;
		}
		if (ch < 0x20)
			return 0;
		if (ch >= 0x80) {
			if (!utf8_seq(c))
				return 0;
			continue;
		}
		c->p++;
		if (ch != '\\')
			continue;
		if (c->p >= c->end)
			return 0;
		ch = *c->p++;
		if (strchr("\"\\/bfnrt", ch) && ch)
			continue;
		unsigned u;
		if (ch != 'u' || !hex4(c, &u))
			return 0;
		if (u >= 0xdc00 && u <= 0xdfff)
			return 0; /* a low surrogate alone */
		if (u >= 0xd800 && u <= 0xdbff) {
			unsigned lo;
			if (c->end - c->p < 2 || c->p[0] != '\\' || c->p[1] != 'u')
				return 0;
			c->p += 2;
			if (!hex4(c, &lo) || lo < 0xdc00 || lo > 0xdfff)
				return 0;
		}
	}
	return 0;
}

static int digits(struct cur *c)
{
	const unsigned char *start = c->p;
	while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
		c->p++;
	return (int)(c->p - start);
}

static int number(struct cur *c)
{
	if (*c->p == '-')
		c->p++;
	if (c->p >= c->end)
		return 0;
	int n;
	if (*c->p == '0') {
		c->p++;
		n = 1;
	} else if ((n = digits(c)) == 0) {
		return 0;
	}
	bool real = false;
	int exp_digits = 0;
	if (c->p < c->end && *c->p == '.') {
		c->p++;
		if (digits(c) == 0)
			return 0;
		real = true;
	}
	if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
		c->p++;
		if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
			c->p++;
		if ((exp_digits = digits(c)) == 0)
			return 0;
		real = true;
	}
	/* out of range for jansson (an integer past 64 bits, a real that
	 * overflows): let it decide */
	if ((!real && n > 18) || (real && (n > 300 || exp_digits > 0)))
		c->unsure = true;
	return 1;
}

static int literal(struct cur *c, const char *word)
{
	size_t len = strlen(word);
	if ((size_t)(c->end - c->p) < len || memcmp(c->p, word, len) != 0)
		return 0;
	c->p += len;
	return 1;
}

static int value(struct cur *c, int depth)
{
	if (depth > MAX_DEPTH)
		return 0;
	skip_ws(c);
	if (c->p >= c->end)
		return 0;
	switch (*c->p) {
	case '"':
		return string(c);
	case '{':
		c->p++;
		skip_ws(c);
		if (c->p < c->end && *c->p == '}') {
			c->p++;
			return 1;
		}
		for (;;) {
			skip_ws(c);
			if (c->p >= c->end || *c->p != '"' || !string(c))
				return 0;
			skip_ws(c);
			if (c->p >= c->end || *c->p++ != ':')
				return 0;
			if (!value(c, depth + 1))
				return 0;
			skip_ws(c);
			if (c->p >= c->end)
				return 0;
			if (*c->p == '}') {
				c->p++;
				return 1;
			}
			if (*c->p++ != ',')
				return 0;
		}
	case '[':
		c->p++;
		skip_ws(c);
		if (c->p < c->end && *c->p == ']') {
			c->p++;
			return 1;
		}
		for (;;) {
			if (!value(c, depth + 1))
				return 0;
			skip_ws(c);
			if (c->p >= c->end)
				return 0;
			if (*c->p == ']') {
				c->p++;
				return 1;
			}
			if (*c->p++ != ',')
				return 0;
		}
	case 't':
		return literal(c, "true");
	case 'f':
		return literal(c, "false");
	case 'n':
		return literal(c, "null");
	default:
		return (*c->p == '-' || (*c->p >= '0' && *c->p <= '9')) && number(c);
	}
}

bool json_text_valid(const char *text, size_t len)
{
	if (!text)
		return false;
	struct cur c = {.p = (const unsigned char *)text, .end = (const unsigned char *)text + len};
	if (!value(&c, 1))
		return false;
	skip_ws(&c);
	if (c.p != c.end)
		return false;
	if (c.unsure) {
		json_t *t = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
		json_decref(t);
		return t != NULL;
	}
	return true;
}
