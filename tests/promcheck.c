/* promcheck: a strict checker of the Prometheus text exposition format
 * (version 0.0.4), for what plantd serves on GET /metrics.
 *
 *   promcheck [FILE]     (standard input without FILE)
 *
 * Exit 0 when the text is valid; otherwise print "line N: reason" for the
 * first problem on stderr and exit 1 (2 for a usage or read error).
 *
 * Stricter than Prometheus' own parser where the format leaves room for
 * mistakes a scraper would swallow quietly:
 * - lines: `# HELP name text`, `# TYPE name counter|gauge|histogram|summary|
 *   untyped`, other `#` comments, blank lines, and samples
 *   `name{label="value",...} value [timestamp]`;
 * - metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]*,
 *   label values and HELP text valid UTF-8 with only the escapes \\ \" \n
 *   (HELP: \\ and \n); no label name twice in one sample;
 * - a value is a decimal float, +Inf, -Inf or NaN (not "inf" or hex); a
 *   timestamp an integer (milliseconds) that fits in 64 bits;
 * - a family (the samples of one name, or of a histogram's or summary's
 *   _bucket/_sum/_count) is contiguous: its HELP, TYPE and samples come in
 *   one run of lines, TYPE before every sample, HELP and TYPE at most once;
 * - no series twice (the same name and label set, labels in any order);
 * - counters are not negative (nor NaN);
 * - histograms: every _bucket has an `le`, buckets of one label set come in
 *   increasing `le` with non-decreasing counts and end with le="+Inf",
 *   whose count equals _count; _sum and _count are there for every label
 *   set; summaries: `quantile` in 0..1 on the plain samples, _sum and _count
 *   for every label set;
 * - the text ends with a newline and holds no NUL or carriage return.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum family_type { T_UNTYPED, T_COUNTER, T_GAUGE, T_HISTOGRAM, T_SUMMARY };

static const char *const type_names[] = {"untyped", "counter", "gauge", "histogram", "summary"};

/* One label set of a histogram or summary (its labels but `le`/`quantile`),
 * with what its samples said so far. */
struct group {
	char *key; /* canonical labels, see canon() */
	size_t key_len;
	long first_line;
	bool has_bucket, has_inf, has_sum, has_count;
	double last_le, last_bucket, inf_bucket, count;
};

struct family {
	char *name;
	enum family_type type;
	bool has_help, has_type;
	bool closed; /* another family came after it */
	unsigned long samples;
	struct group *groups;
	size_t n_groups, cap_groups;
};

/* The series of the current family (names and label sets), to find one
 * twice: a family's lines are contiguous, so a series can only repeat
 * within its family. Open addressing over length-prefixed keys. */
struct series_set {
	char **keys; /* each: size_t length, then the bytes */
	size_t cap, n;
};

struct label {
	const char *name;
	size_t name_len;
	char *value; /* unescaped, in the line's value buffer */
	size_t value_len;
};

struct checker {
	long line_no;
	struct family **families;
	size_t n_families, cap_families;
	struct family *current;
	struct series_set series;
	/* the labels of the line being checked */
	struct label *labels;
	size_t n_labels, cap_labels;
	char *values; /* unescaped label values of the line */
	size_t values_cap;
	char *key; /* a canonical key being built */
	size_t key_len, key_cap;
	char err[512];
	long err_line;
};

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p) {
		fputs("promcheck: out of memory\n", stderr);
		exit(2);
	}
	return p;
}

static char *xstrndup(const char *s, size_t n)
{
	char *d = xrealloc(NULL, n + 1);
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

/* Record the first error (at `line`) and return false, so that a check
 * reads `return fail(...)`. */
__attribute__((format(printf, 3, 4))) static bool fail(struct checker *c, long line,
						       const char *fmt, ...)
{
	if (c->err[0])
		return false;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof c->err, fmt, ap);
	va_end(ap);
	c->err_line = line;
	return false;
}

/* ---- lexical pieces ------------------------------------------------------ */

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

static bool is_alpha_(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

static bool is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

static const char *skip_blanks(const char *p)
{
	while (is_blank(*p))
		p++;
	return p;
}

/* Length of the metric name at p, 0 when there is none. */
static size_t metric_name_len(const char *p)
{
	if (!is_alpha_(*p) && *p != ':')
		return 0;
	size_t n = 1;
	while (is_alpha_(p[n]) || is_digit(p[n]) || p[n] == ':')
		n++;
	return n;
}

static size_t label_name_len(const char *p)
{
	if (!is_alpha_(*p))
		return 0;
	size_t n = 1;
	while (is_alpha_(p[n]) || is_digit(p[n]))
		n++;
	return n;
}

/* The length of the token at p: up to a blank or the end of the line. */
static size_t token_len(const char *p)
{
	size_t n = 0;
	while (p[n] && !is_blank(p[n]))
		n++;
	return n;
}

/* Is [s, s+n) valid UTF-8 (shortest forms, no surrogates, <= U+10FFFF)? */
static bool utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char b = s[i];
		size_t len;
		uint32_t cp;
		if (b < 0x80) {
			i++;
			continue;
		} else if ((b & 0xe0) == 0xc0) {
			len = 2;
			cp = b & 0x1f;
		} else if ((b & 0xf0) == 0xe0) {
			len = 3;
			cp = b & 0x0f;
		} else if ((b & 0xf8) == 0xf0) {
			len = 4;
			cp = b & 0x07;
		} else {
			return false;
		}
		if (i + len > n)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
		    (len == 4 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

/* A sample value or `le`/`quantile`: a decimal float ([+-]? digits with an
 * optional fraction and exponent), +Inf, -Inf or NaN. */
static bool parse_float(const char *p, size_t n, double *out)
{
	if (n == 4 && memcmp(p, "+Inf", 4) == 0) {
		*out = INFINITY;
		return true;
	}
	if (n == 4 && memcmp(p, "-Inf", 4) == 0) {
		*out = -INFINITY;
		return true;
	}
	if (n == 3 && memcmp(p, "NaN", 3) == 0) {
		*out = NAN;
		return true;
	}
	size_t i = 0, digits = 0;
	if (i < n && (p[i] == '+' || p[i] == '-'))
		i++;
	while (i < n && is_digit(p[i]))
		i++, digits++;
	if (i < n && p[i] == '.') {
		i++;
		while (i < n && is_digit(p[i]))
			i++, digits++;
	}
	if (digits == 0)
		return false;
	if (i < n && (p[i] == 'e' || p[i] == 'E')) {
		i++;
		if (i < n && (p[i] == '+' || p[i] == '-'))
			i++;
		size_t exp_digits = 0;
		while (i < n && is_digit(p[i]))
			i++, exp_digits++;
		if (exp_digits == 0)
			return false;
	}
	if (i != n)
		return false;
	char buf[512];
	if (n >= sizeof buf)
		return false;
	memcpy(buf, p, n);
	buf[n] = '\0';
	*out = strtod(buf, NULL);
	return true;
}

/* A timestamp: an integer (milliseconds since the epoch) in int64. */
static bool timestamp_valid(const char *p, size_t n)
{
	size_t i = 0;
	if (i < n && p[i] == '-')
		i++;
	if (i == n)
		return false;
	for (size_t k = i; k < n; k++)
		if (!is_digit(p[k]))
			return false;
	char buf[32];
	if (n >= sizeof buf)
		return false;
	memcpy(buf, p, n);
	buf[n] = '\0';
	errno = 0;
	(void)strtoll(buf, NULL, 10);
	return errno == 0;
}

/* ---- families and series ------------------------------------------------- */

static struct family *family_find(struct checker *c, const char *name, size_t len)
{
	for (size_t i = 0; i < c->n_families; i++) {
		struct family *f = c->families[i];
		if (strlen(f->name) == len && memcmp(f->name, name, len) == 0)
			return f;
	}
	return NULL;
}

static struct family *family_add(struct checker *c, const char *name, size_t len)
{
	if (c->n_families == c->cap_families) {
		c->cap_families = c->cap_families ? c->cap_families * 2 : 64;
		c->families = xrealloc(c->families, c->cap_families * sizeof *c->families);
	}
	struct family *f = xrealloc(NULL, sizeof *f);
	memset(f, 0, sizeof *f);
	f->name = xstrndup(name, len);
	c->families[c->n_families++] = f;
	return f;
}

static bool has_suffix(const char *name, size_t len, const char *suffix, size_t *base_len)
{
	size_t s = strlen(suffix);
	if (len <= s || memcmp(name + len - s, suffix, s) != 0)
		return false;
	*base_len = len - s;
	return true;
}

/* The histogram or summary a sample or HELP/TYPE name belongs to by its
 * suffix, or NULL. */
static struct family *compound_owner(struct checker *c, const char *name, size_t len)
{
	static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
	for (size_t i = 0; i < 3; i++) {
		size_t base;
		if (!has_suffix(name, len, suffixes[i], &base))
			continue;
		struct family *f = family_find(c, name, base);
		if (f && (f->type == T_HISTOGRAM || (f->type == T_SUMMARY && i > 0)))
			return f;
	}
	return NULL;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

static void series_clear(struct series_set *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->keys[i]);
	free(s->keys);
	memset(s, 0, sizeof *s);
}

/* Add a key; false when it was there already. */
static bool series_add(struct series_set *s, const char *key, size_t len)
{
	if ((s->n + 1) * 2 > s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		char **keys = xrealloc(NULL, cap * sizeof *keys);
		memset(keys, 0, cap * sizeof *keys);
		for (size_t i = 0; i < s->cap; i++) {
			char *k = s->keys[i];
			if (!k)
				continue;
			size_t klen;
			memcpy(&klen, k, sizeof klen);
			size_t j = hash_bytes(k + sizeof klen, klen) & (cap - 1);
			while (keys[j])
				j = (j + 1) & (cap - 1);
			keys[j] = k;
		}
		free(s->keys);
		s->keys = keys;
		s->cap = cap;
	}
	size_t j = hash_bytes(key, len) & (s->cap - 1);
	while (s->keys[j]) {
		size_t klen;
		memcpy(&klen, s->keys[j], sizeof klen);
		if (klen == len && memcmp(s->keys[j] + sizeof klen, key, len) == 0)
			return false;
		j = (j + 1) & (s->cap - 1);
	}
	char *k = xrealloc(NULL, sizeof len + len);
	memcpy(k, &len, sizeof len);
	memcpy(k + sizeof len, key, len);
	s->keys[j] = k;
	s->n++;
	return true;
}

static int label_cmp(const void *a, const void *b)
{
	const struct label *x = a, *y = b;
	size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
	int r = memcmp(x->name, y->name, n);
	if (r)
		return r;
	return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

static void key_put(struct checker *c, const void *bytes, size_t n)
{
	if (c->key_len + n > c->key_cap) {
		c->key_cap = (c->key_len + n) * 2 + 64;
		c->key = xrealloc(c->key, c->key_cap);
	}
	memcpy(c->key + c->key_len, bytes, n);
	c->key_len += n;
}

/* The canonical form of the line's (sorted) labels, without the label
 * `skip` (NULL: none), prefixed by `name` when given, into c->key: each
 * part length-prefixed, so that no value can pass for another. */
static void canon(struct checker *c, const char *name, size_t name_len, const char *skip)
{
	c->key_len = 0;
	if (name) {
		key_put(c, &name_len, sizeof name_len);
		key_put(c, name, name_len);
	}
	for (size_t i = 0; i < c->n_labels; i++) {
		const struct label *l = &c->labels[i];
		if (skip && l->name_len == strlen(skip) && memcmp(l->name, skip, l->name_len) == 0)
			continue;
		key_put(c, &l->name_len, sizeof l->name_len);
		key_put(c, l->name, l->name_len);
		key_put(c, &l->value_len, sizeof l->value_len);
		key_put(c, l->value, l->value_len);
	}
}

static const struct label *label_get(const struct checker *c, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < c->n_labels; i++)
		if (c->labels[i].name_len == n && memcmp(c->labels[i].name, name, n) == 0)
			return &c->labels[i];
	return NULL;
}

/* The group of the line's labels but `skip`, made when new. */
static struct group *group_get(struct checker *c, struct family *f, const char *skip)
{
	canon(c, NULL, 0, skip);
	for (size_t i = 0; i < f->n_groups; i++) {
		struct group *g = &f->groups[i];
		if (g->key_len == c->key_len && memcmp(g->key, c->key, c->key_len) == 0)
			return g;
	}
	if (f->n_groups == f->cap_groups) {
		f->cap_groups = f->cap_groups ? f->cap_groups * 2 : 8;
		f->groups = xrealloc(f->groups, f->cap_groups * sizeof *f->groups);
	}
	struct group *g = &f->groups[f->n_groups++];
	memset(g, 0, sizeof *g);
	g->key = xstrndup(c->key, c->key_len);
	g->key_len = c->key_len;
	g->first_line = c->line_no;
	return g;
}

/* What can only be checked once a family's lines are over. */
static bool family_close(struct checker *c, struct family *f)
{
	bool ok = true;
	f->closed = true;
	series_clear(&c->series);
	if (f->type != T_HISTOGRAM && f->type != T_SUMMARY)
		return true;
	const char *what = type_names[f->type];
	for (size_t i = 0; ok && i < f->n_groups; i++) {
		struct group *g = &f->groups[i];
		if (f->type == T_HISTOGRAM && !g->has_inf)
			ok = fail(c, g->first_line,
				  "histogram %s: a label set has no le=\"+Inf\" bucket", f->name);
		else if (!g->has_sum)
			ok = fail(c, g->first_line, "%s %s: a label set has no %s_sum", what,
				  f->name, f->name);
		else if (!g->has_count)
			ok = fail(c, g->first_line, "%s %s: a label set has no %s_count", what,
				  f->name, f->name);
		else if (f->type == T_HISTOGRAM && g->inf_bucket != g->count)
			ok = fail(c, g->first_line,
				  "histogram %s: the +Inf bucket (%g) differs from %s_count (%g)",
				  f->name, g->inf_bucket, f->name, g->count);
	}
	for (size_t i = 0; i < f->n_groups; i++)
		free(f->groups[i].key);
	free(f->groups);
	f->groups = NULL;
	f->n_groups = f->cap_groups = 0;
	return ok;
}

/* Make f the current family: its lines must not have ended already. */
static bool family_enter(struct checker *c, struct family *f, const char *what)
{
	if (c->current == f)
		return true;
	if (f->closed)
		return fail(c, c->line_no,
			    "%s of family %s after other families' lines "
			    "(a family's lines must be contiguous)",
			    what, f->name);
	if (c->current && !family_close(c, c->current))
		return false;
	c->current = f;
	return true;
}

/* ---- lines --------------------------------------------------------------- */

static bool check_help_text(struct checker *c, const char *p)
{
	for (const char *q = p; *q; q++) {
		if (*q != '\\')
			continue;
		if (q[1] != '\\' && q[1] != 'n')
			return fail(c, c->line_no,
				    "HELP text: invalid escape \\%c (only \\\\ and \\n)",
				    q[1] ? q[1] : ' ');
		q++;
	}
	if (!utf8_valid((const unsigned char *)p, strlen(p)))
		return fail(c, c->line_no, "HELP text is not valid UTF-8");
	return true;
}

static bool check_comment(struct checker *c, const char *line)
{
	const char *p = skip_blanks(line + 1);
	size_t kw = token_len(p);
	bool help = kw == 4 && memcmp(p, "HELP", 4) == 0;
	bool type = kw == 4 && memcmp(p, "TYPE", 4) == 0;
	if (!help && !type)
		return true; /* a plain comment */
	const char *word = help ? "HELP" : "TYPE";
	p = skip_blanks(p + kw);
	size_t n = metric_name_len(p);
	if (n == 0)
		return fail(c, c->line_no, "%s: missing or invalid metric name", word);
	if (p[n] && !is_blank(p[n]))
		return fail(c, c->line_no, "%s: invalid metric name \"%.*s\"", word,
			    (int)(n + token_len(p + n)), p);
	const char *name = p;
	struct family *owner = compound_owner(c, name, n);
	if (owner)
		return fail(c, c->line_no, "%s %.*s: that name belongs to %s %s", word, (int)n,
			    name, type_names[owner->type], owner->name);
	struct family *f = family_find(c, name, n);
	if (!f)
		f = family_add(c, name, n);
	if (!family_enter(c, f, word))
		return false;
	p = skip_blanks(p + n);
	if (help) {
		if (f->has_help)
			return fail(c, c->line_no, "second HELP for %s", f->name);
		f->has_help = true;
		return check_help_text(c, p);
	}
	if (f->has_type)
		return fail(c, c->line_no, "second TYPE for %s", f->name);
	if (f->samples)
		return fail(c, c->line_no, "TYPE for %s after its samples", f->name);
	size_t t = token_len(p);
	int found = -1;
	for (int i = 0; i < 5; i++)
		if (strlen(type_names[i]) == t && memcmp(p, type_names[i], t) == 0)
			found = i;
	if (found < 0)
		return fail(c, c->line_no, "TYPE %s: unknown type \"%.*s\"", f->name, (int)t, p);
	if (*skip_blanks(p + t))
		return fail(c, c->line_no, "TYPE %s: text after the type", f->name);
	f->type = (enum family_type)found;
	f->has_type = true;
	if (f->type == T_HISTOGRAM || f->type == T_SUMMARY) {
		/* its samples' names must not have been families of their own */
		static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
		for (size_t i = f->type == T_SUMMARY ? 1 : 0; i < 3; i++) {
			char other[1024];
			snprintf(other, sizeof other, "%s%s", f->name, suffixes[i]);
			if (family_find(c, other, strlen(other)))
				return fail(c, c->line_no, "TYPE %s %s after lines of %s", f->name,
					    type_names[f->type], other);
		}
	}
	return true;
}

/* Parse `{name="value",...}` at *pp into c->labels (values unescaped). */
static bool parse_labels(struct checker *c, const char **pp)
{
	const char *p = *pp + 1; /* past '{' */
	c->n_labels = 0;
	size_t line_len = strlen(p);
	if (c->values_cap < line_len + 1) {
		c->values_cap = line_len + 1;
		c->values = xrealloc(c->values, c->values_cap);
	}
	char *out = c->values;
	for (;;) {
		p = skip_blanks(p);
		if (*p == '}')
			break;
		size_t n = label_name_len(p);
		if (n == 0)
			return fail(c, c->line_no, "invalid label name at \"%.20s\"", p);
		const char *name = p;
		p = skip_blanks(p + n);
		if (*p != '=')
			return fail(c, c->line_no, "label %.*s: expected '='", (int)n, name);
		p = skip_blanks(p + 1);
		if (*p != '"')
			return fail(c, c->line_no, "label %.*s: the value must be in double quotes",
				    (int)n, name);
		p++;
		char *value = out;
		for (;;) {
			if (!*p)
				return fail(c, c->line_no, "label %.*s: unterminated value", (int)n,
					    name);
			if (*p == '"')
				break;
			if (*p == '\\') {
				if (p[1] == '\\' || p[1] == '"')
					*out++ = p[1];
				else if (p[1] == 'n')
					*out++ = '\n';
				else
					return fail(
						c, c->line_no,
						"label %.*s: invalid escape \\%c (only \\\\, \\\" "
						"and \\n)",
						(int)n, name, p[1] ? p[1] : ' ');
				p += 2;
				continue;
			}
			*out++ = *p++;
		}
		p++; /* past '"' */
		size_t value_len = (size_t)(out - value);
		if (!utf8_valid((const unsigned char *)value, value_len))
			return fail(c, c->line_no, "label %.*s: value is not valid UTF-8", (int)n,
				    name);
		for (size_t i = 0; i < c->n_labels; i++)
			if (c->labels[i].name_len == n && memcmp(c->labels[i].name, name, n) == 0)
				return fail(c, c->line_no, "label %.*s twice", (int)n, name);
		if (c->n_labels == c->cap_labels) {
			c->cap_labels = c->cap_labels ? c->cap_labels * 2 : 16;
			c->labels = xrealloc(c->labels, c->cap_labels * sizeof *c->labels);
		}
		c->labels[c->n_labels++] = (struct label){name, n, value, value_len};
		p = skip_blanks(p);
		if (*p == ',') {
			p++;
			continue;
		}
		if (*p != '}')
			return fail(c, c->line_no,
				    "label %.*s: expected ',' or '}' after the value", (int)n,
				    name);
	}
	*pp = p + 1;
	qsort(c->labels, c->n_labels, sizeof *c->labels, label_cmp);
	return true;
}

static bool check_histogram_sample(struct checker *c, struct family *f, const char *suffix,
				   double value)
{
	const struct label *le = label_get(c, "le");
	if (strcmp(suffix, "_bucket") == 0) {
		if (!le)
			return fail(c, c->line_no, "%s_bucket without an le label", f->name);
		double bound;
		if (!parse_float(le->value, le->value_len, &bound) || isnan(bound))
			return fail(c, c->line_no, "%s_bucket: le=\"%.*s\" is not a number",
				    f->name, (int)le->value_len, le->value);
		if (isnan(value) || value < 0)
			return fail(c, c->line_no, "%s_bucket: count %g is not a count", f->name,
				    value);
		struct group *g = group_get(c, f, "le");
		if (g->has_inf)
			return fail(c, c->line_no,
				    "%s_bucket after the le=\"+Inf\" bucket of its "
				    "label set",
				    f->name);
		if (g->has_bucket && !(bound > g->last_le))
			return fail(c, c->line_no,
				    "%s_bucket: le=\"%.*s\" is not above the previous bucket's le "
				    "(%g)",
				    f->name, (int)le->value_len, le->value, g->last_le);
		if (g->has_bucket && value < g->last_bucket)
			return fail(
				c, c->line_no,
				"%s_bucket: cumulative count %g is below the previous bucket's %g",
				f->name, value, g->last_bucket);
		g->has_bucket = true;
		g->last_le = bound;
		g->last_bucket = value;
		if (isinf(bound) && bound > 0) {
			g->has_inf = true;
			g->inf_bucket = value;
		}
		return true;
	}
	if (le)
		return fail(c, c->line_no, "%s%s has an le label", f->name, suffix);
	struct group *g = group_get(c, f, NULL);
	if (strcmp(suffix, "_sum") == 0) {
		g->has_sum = true;
		return true;
	}
	if (isnan(value) || value < 0)
		return fail(c, c->line_no, "%s_count: %g is not a count", f->name, value);
	g->has_count = true;
	g->count = value;
	return true;
}

static bool check_summary_sample(struct checker *c, struct family *f, const char *suffix,
				 double value)
{
	const struct label *q = label_get(c, "quantile");
	if (!*suffix) {
		double v;
		if (!q)
			return fail(c, c->line_no, "summary %s: a sample without a quantile label",
				    f->name);
		if (!parse_float(q->value, q->value_len, &v) || !(v >= 0 && v <= 1))
			return fail(c, c->line_no, "summary %s: quantile=\"%.*s\" is not in 0..1",
				    f->name, (int)q->value_len, q->value);
		group_get(c, f, "quantile");
		return true;
	}
	if (q)
		return fail(c, c->line_no, "%s%s has a quantile label", f->name, suffix);
	struct group *g = group_get(c, f, NULL);
	if (strcmp(suffix, "_sum") == 0) {
		g->has_sum = true;
		return true;
	}
	if (isnan(value) || value < 0)
		return fail(c, c->line_no, "%s_count: %g is not a count", f->name, value);
	g->has_count = true;
	return true;
}

static bool check_sample(struct checker *c, const char *line)
{
	const char *p = skip_blanks(line);
	size_t n = metric_name_len(p);
	if (n == 0)
		return fail(c, c->line_no, "invalid metric name at \"%.20s\"", p);
	const char *name = p;
	p = skip_blanks(p + n);
	c->n_labels = 0;
	if (*p == '{') {
		if (!parse_labels(c, &p))
			return false;
	} else if (p == name + n && *p) {
		return fail(c, c->line_no, "invalid metric name \"%.*s\"",
			    (int)(n + token_len(name + n)), name);
	}
	p = skip_blanks(p);
	size_t vn = token_len(p);
	if (vn == 0)
		return fail(c, c->line_no, "%.*s: missing value", (int)n, name);
	if (p[-1] != ' ' && p[-1] != '\t')
		return fail(c, c->line_no, "%.*s: no blank before the value", (int)n, name);
	double value;
	if (!parse_float(p, vn, &value))
		return fail(c, c->line_no,
			    "%.*s: value \"%.*s\" is not a float (+Inf, -Inf, NaN "
			    "or decimal)",
			    (int)n, name, (int)vn, p);
	p = skip_blanks(p + vn);
	size_t tn = token_len(p);
	if (tn) {
		if (!timestamp_valid(p, tn))
			return fail(c, c->line_no, "%.*s: timestamp \"%.*s\" is not an integer",
				    (int)n, name, (int)tn, p);
		p = skip_blanks(p + tn);
		if (*p)
			return fail(c, c->line_no, "%.*s: text after the timestamp", (int)n, name);
	}

	/* its family */
	struct family *f = compound_owner(c, name, n);
	char suffix[8] = ""; /* "", "_bucket", "_sum" or "_count" */
	if (f) {
		size_t base = strlen(f->name);
		memcpy(suffix, name + base, n - base);
		suffix[n - base] = '\0';
	} else {
		f = family_find(c, name, n);
		if (!f)
			f = family_add(c, name, n);
		if (f->type == T_HISTOGRAM)
			return fail(c, c->line_no,
				    "histogram %s: sample %s must be %s_bucket, %s_sum or %s_count",
				    f->name, f->name, f->name, f->name, f->name);
	}
	if (!family_enter(c, f, "sample"))
		return false;
	f->samples++;

	canon(c, name, n, NULL);
	if (!series_add(&c->series, c->key, c->key_len))
		return fail(c, c->line_no, "series %.*s with these labels twice", (int)n, name);

	switch (f->type) {
	case T_COUNTER:
		if (isnan(value) || value < 0)
			return fail(c, c->line_no, "counter %s: value %g is negative or NaN",
				    f->name, value);
		return true;
	case T_HISTOGRAM:
		return check_histogram_sample(c, f, suffix, value);
	case T_SUMMARY:
		return check_summary_sample(c, f, suffix, value);
	default:
		return true;
	}
}

static bool check_line(struct checker *c, const char *line, size_t len)
{
	if (memchr(line, '\0', len))
		return fail(c, c->line_no, "NUL byte");
	if (memchr(line, '\r', len))
		return fail(c, c->line_no, "carriage return (lines end with \\n alone)");
	const char *p = skip_blanks(line);
	if (!*p)
		return true;
	if (*p == '#')
		return check_comment(c, p);
	return check_sample(c, line);
}

static int check_stream(FILE *in)
{
	struct checker c;
	memset(&c, 0, sizeof c);
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	bool last_newline = true;
	bool ok = true;
	while (ok && (len = getline(&line, &cap, in)) >= 0) {
		c.line_no++;
		last_newline = len > 0 && line[len - 1] == '\n';
		if (last_newline)
			line[--len] = '\0';
		ok = check_line(&c, line, (size_t)len);
	}
	if (ferror(in)) {
		fprintf(stderr, "promcheck: read error: %s\n", strerror(errno));
		return 2;
	}
	if (ok && !last_newline)
		ok = fail(&c, c.line_no, "no newline at the end of the text");
	if (ok && c.current)
		ok = family_close(&c, c.current);
	if (!ok)
		fprintf(stderr, "line %ld: %s\n", c.err_line, c.err);

	series_clear(&c.series);
	for (size_t i = 0; i < c.n_families; i++) {
		struct family *f = c.families[i];
		for (size_t k = 0; k < f->n_groups; k++)
			free(f->groups[k].key);
		free(f->groups);
		free(f->name);
		free(f);
	}
	free(c.families);
	free(c.labels);
	free(c.values);
	free(c.key);
	free(line);
	return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc > 2 ||
	    (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))) {
		fputs("usage: promcheck [FILE]\n"
		      "Check Prometheus text exposition (0.0.4) on FILE or standard input:\n"
		      "exit 0 when valid, else print \"line N: reason\" and exit 1.\n",
		      argc > 2 ? stderr : stdout);
		return argc > 2 ? 2 : 0;
	}
	FILE *in = stdin;
	if (argc == 2 && strcmp(argv[1], "-") != 0) {
		in = fopen(argv[1], "r");
		if (!in) {
			fprintf(stderr, "promcheck: %s: %s\n", argv[1], strerror(errno));
			return 2;
		}
	}
	int rc = check_stream(in);
	if (in != stdin)
		fclose(in);
	return rc;
}
