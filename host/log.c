#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_out;
static int log_level = PLANT_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int log_level_parse(const char *name, int *level_out)
{
	for (int i = 0; i < 4; i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*level_out = i;
			return PLANT_OK;
		}
	}
	return PLANT_E_INVALID;
}

void log_set_level(int level)
{
	log_level = level;
}

int log_get_level(void)
{
	return log_level;
}

int log_open(const char *path, char *err, size_t errlen)
{
	FILE *f = NULL;
	if (path) {
		f = fopen(path, "ae");
		if (!f) {
			snprintf(err, errlen, "cannot open log file %s: %s", path, strerror(errno));
			return PLANT_E_IO;
		}
		setvbuf(f, NULL, _IOLBF, 0);
	}
	pthread_mutex_lock(&log_lock);
	if (log_out)
		fclose(log_out);
	log_out = f;
	pthread_mutex_unlock(&log_lock);
	return PLANT_OK;
}

void log_close(void)
{
	pthread_mutex_lock(&log_lock);
	if (log_out)
		fclose(log_out);
	log_out = NULL;
	pthread_mutex_unlock(&log_lock);
}

/* A log line being built: the whole line goes out in one write, so that
 * nothing else written to the same stderr (a plugin's own lines) can land
 * inside it. Too long a line is cut, never split. */
struct line {
	char buf[4096];
	size_t len;
};

static void put(struct line *l, const char *s, size_t n)
{
	/* two kept: a closing quote and the newline */
	size_t room = sizeof l->buf - 2 - l->len;
	if (n > room)
		n = room;
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void puts_(struct line *l, const char *s)
{
	put(l, s, strlen(s));
}

/* logfmt value: quoted when it holds a space, a quote, '=' or a control
 * character, with \" \\ \n \t escapes. */
static void put_value(struct line *l, const char *v)
{
	int quote = *v == '\0';
	for (const char *p = v; *p && !quote; p++)
		quote = (unsigned char)*p <= ' ' || *p == '"' || *p == '=' || *p == '\\';
	if (!quote) {
		puts_(l, v);
		return;
	}
	put(l, "\"", 1);
	for (const char *p = v; *p; p++) {
		switch (*p) {
		case '"':
			puts_(l, "\\\"");
			break;
		case '\\':
			puts_(l, "\\\\");
			break;
		case '\n':
			puts_(l, "\\n");
			break;
		case '\t':
			puts_(l, "\\t");
			break;
		default:
			if ((unsigned char)*p < ' ') {
				char x[8];
				snprintf(x, sizeof x, "\\x%02x", (unsigned char)*p);
				puts_(l, x);
			} else {
				put(l, p, 1);
			}
		}
	}
	l->buf[l->len++] = '"'; /* room was kept for it */
}

void log_vwrite(int level, const char *inst, const char *fmt, va_list ap)
{
	if (level > log_level)
		return;
	if (level < 0)
		level = 0;
	char msg[2048];
	vsnprintf(msg, sizeof msg, fmt, ap);

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[40];
	size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + n, sizeof when - n, ".%03ldZ", ts.tv_nsec / 1000000);

	struct line l;
	l.len = (size_t)snprintf(l.buf, sizeof l.buf, "ts=%s level=%s", when,
				 level_names[level > 3 ? 3 : level]);
	if (inst) {
		puts_(&l, " inst=");
		put_value(&l, inst);
	}
	puts_(&l, " msg=");
	put_value(&l, msg);
	l.buf[l.len++] = '\n';

	pthread_mutex_lock(&log_lock);
	FILE *f = log_out ? log_out : stderr;
	fwrite(l.buf, 1, l.len, f);
	fflush(f);
	pthread_mutex_unlock(&log_lock);
}

void log_write(int level, const char *inst, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vwrite(level, inst, fmt, ap);
	va_end(ap);
}
