/* Small helpers shared by the host tests. Include after <cmocka.h>. */
#ifndef PLANTD_TESTUTIL_H
#define PLANTD_TESTUTIL_H

#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define assert_contains(hay, needle)                                                       \
	do {                                                                               \
		const char *hay_ = (hay);                                                  \
		const char *needle_ = (needle);                                            \
		if (!hay_ || !strstr(hay_, needle_))                                       \
			fail_msg("\"%s\" does not contain \"%s\"", hay_ ? hay_ : "(null)", \
				 needle_);                                                 \
	} while (0)

#define assert_not_contains(hay, needle)                                   \
	do {                                                               \
		const char *hay_ = (hay);                                  \
		const char *needle_ = (needle);                            \
		if (hay_ && strstr(hay_, needle_))                         \
			fail_msg("\"%s\" contains \"%s\"", hay_, needle_); \
	} while (0)

#define assert_starts_with(str, prefix)                                                       \
	do {                                                                                  \
		const char *str_ = (str);                                                     \
		const char *prefix_ = (prefix);                                               \
		if (!str_ || strncmp(str_, prefix_, strlen(prefix_)) != 0)                    \
			fail_msg("\"%s\" does not start with \"%s\"", str_ ? str_ : "(null)", \
				 prefix_);                                                    \
	} while (0)

/* snprintf that fails the test instead of truncating. */
__attribute__((format(printf, 3, 4))) static inline void tu_fmt(char *out, size_t outlen,
								const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, outlen, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= outlen)
		fail_msg("string too long for its buffer: %s", fmt);
}

/* out = a "/" b, without the compiler second-guessing buffer sizes. */
static inline void tu_join(char *out, size_t outlen, const char *a, const char *b)
{
	int n = snprintf(out, outlen, "%s/%s", a, b);
	if (n < 0 || (size_t)n >= outlen)
		fail_msg("path too long: %s/%s", a, b);
}

/* $NAME, or fail the test. */
static inline const char *tu_env(const char *name)
{
	const char *v = getenv(name);
	if (!v || !*v)
		fail_msg("environment variable %s is not set (run through meson test)", name);
	return v;
}

/* A fresh directory under $TMPDIR (or /tmp); the caller frees the path. */
static inline char *tu_mkdtemp(void)
{
	const char *tmp = getenv("TMPDIR");
	char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s/plantd-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	char *d = mkdtemp(buf);
	if (!d)
		fail_msg("mkdtemp: %s", strerror(errno));
	return strdup(d);
}

/* Write `text` to DIR/NAME (creating DIR/NAME's directories), return the
 * path in `out`. */
static inline void tu_write(const char *dir, const char *name, const char *text, char *out,
			    size_t outlen)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	for (char *p = path + strlen(dir) + 1; (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		if (mkdir(path, 0755) != 0 && errno != EEXIST)
			fail_msg("mkdir %s: %s", path, strerror(errno));
		*p = '/';
	}
	FILE *f = fopen(path, "w");
	if (!f)
		fail_msg("fopen %s: %s", path, strerror(errno));
	fputs(text, f);
	fclose(f);
	if (out)
		snprintf(out, outlen, "%s", path);
}

/* Read a whole file (NUL-terminated, malloc'd), or NULL when missing. */
static inline char *tu_read(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	size_t n;
	while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len - 1 == 0) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
	}
	fclose(f);
	if (buf)
		buf[len] = '\0';
	return buf;
}

/* rm -r: only ever used on directories from tu_mkdtemp(). */
static inline void tu_rmtree(const char *path)
{
	DIR *d = opendir(path);
	if (!d) {
		unlink(path);
		return;
	}
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		char sub[PATH_MAX];
		tu_join(sub, sizeof(sub), path, e->d_name);
		struct stat st;
		if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
			tu_rmtree(sub);
		else
			unlink(sub);
	}
	closedir(d);
	rmdir(path);
}

#endif
