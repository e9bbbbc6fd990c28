/* What every benchmark program shares: failure, resource figures, and the
 * sensor reading they all move. Included by one .c file each. */
#ifndef PLANTD_BENCH_COMMON_H
#define PLANTD_BENCH_COMMON_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

/* The program's name, for messages; each benchmark defines it. */
extern const char *const bench_prog;

static inline void die(const char *what)
{
	fprintf(stderr, "%s: %s\n", bench_prog, what);
	exit(1);
}

static inline uint64_t peak_rss(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)ru.ru_maxrss * 1024;
}

/* CPU time of the whole process (every thread, user and system), ns */
static inline uint64_t cpu_ns(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
	       ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

static inline int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

#define RUNS_MAX 101

/* What a benchmark program was asked for. */
struct bench_args {
	uint64_t n;	   /* -n N: 0 = each case's own default */
	int runs;	   /* -r RUNS */
	const char *dir;   /* -d DIR, where it takes one */
	const char **want; /* the cases to run, in order: all when none named */
	size_t n_want;
};

static inline void bench_usage(FILE *f, const char *const *cases, bool takes_dir)
{
	fprintf(f, "usage: %s [-n N] [-r RUNS]%s [--list] [CASE...]\ncases:", bench_prog,
		takes_dir ? " [-d DIR]" : "");
	for (size_t i = 0; cases[i]; i++)
		fprintf(f, " %s", cases[i]);
	fputc('\n', f);
}

/* Parse the command line into `a` (whose n and runs hold the defaults).
 * --list and --help print and exit 0; a bad argument exits 2. */
static inline void bench_args_parse(int argc, char **argv, const char *const *cases, bool takes_dir,
				    struct bench_args *a)
{
	a->want = calloc((size_t)argc + 1 + 16, sizeof *a->want);
	a->n_want = 0;
	if (!a->want)
		die("out of memory");
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		bool has_value = i + 1 < argc;
		if (strcmp(arg, "--list") == 0) {
			for (size_t k = 0; cases[k]; k++)
				puts(cases[k]);
			exit(0);
		} else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			bench_usage(stdout, cases, takes_dir);
			exit(0);
		} else if (strcmp(arg, "-r") == 0 && has_value) {
			a->runs = atoi(argv[++i]);
			if (a->runs < 1 || a->runs > RUNS_MAX)
				goto bad;
		} else if (strcmp(arg, "-d") == 0 && has_value && takes_dir) {
			a->dir = argv[++i];
		} else if (strcmp(arg, "-n") == 0 && has_value) {
			char *end;
			a->n = strtoull(argv[++i], &end, 10);
			if (*end || a->n == 0)
				goto bad;
		} else {
			size_t k = 0;
			while (cases[k] && strcmp(cases[k], arg) != 0)
				k++;
			if (!cases[k]) {
				fprintf(stderr, "%s: unknown case \"%s\"\n", bench_prog, arg);
				goto bad;
			}
			a->want[a->n_want++] = cases[k];
		}
	}
	if (a->n_want == 0)
		for (size_t k = 0; cases[k]; k++)
			a->want[a->n_want++] = cases[k];
	return;
bad:
	bench_usage(stderr, cases, takes_dir);
	exit(2);
}

#define READING_MAX 256

/* A sensor reading of about 200 bytes of compact JSON, distinct per i.
 * Returns its length. */
static inline size_t reading(char *text, size_t cap, uint64_t i)
{
	int len = snprintf(
		text, cap,
		"{\"sensor\":\"plant-north/line-%02u/temp-%07" PRIu64 "\","
		"\"site\":\"north\",\"fw\":\"2.4.1\",\"kind\":\"temperature\",\"unit\":\"degC\",\"value\":%u.%03u,"
		"\"quality\":\"good\",\"ts\":%" PRIu64 ",\"seq\":%" PRIu64 ","
		"\"tags\":{\"zone\":\"z%02u\",\"rack\":\"r%03u\"}}",
		(unsigned)(i % 16), i, (unsigned)(15 + i % 20), (unsigned)((i * 7919) % 1000),
		(uint64_t)1718000000000 + i, i, (unsigned)(i % 40), (unsigned)(i % 400));
	if (len <= 0 || (size_t)len >= cap)
		die("reading too long");
	return (size_t)len;
}

#endif
