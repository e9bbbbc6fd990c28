/* What every benchmark program shares: failure, resource figures, and the
 * sensor reading they all move. Included by one .c file each. */
#ifndef PLANTD_BENCH_COMMON_H
#define PLANTD_BENCH_COMMON_H

#include <inttypes.h>
#include <stdint.h>
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
