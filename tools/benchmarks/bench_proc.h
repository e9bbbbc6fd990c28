/* Child processes for the benchmarks that run servers (plantd, nginx,
 * fauxqs) as processes of their own: spawn, wait, kill what is left on a
 * failure, and a few file helpers. Static functions; include once per
 * program, after bench_common.h (which gives die() and bench_prog). */
#ifndef PLANTD_BENCH_PROC_H
#define PLANTD_BENCH_PROC_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The children still running, for kill_live(). */
static pid_t live_pids[4];

static void kill_live(void)
{
	for (size_t i = 0; i < sizeof live_pids / sizeof *live_pids; i++) {
		if (live_pids[i] > 0) {
			kill(live_pids[i], SIGKILL);
			waitpid(live_pids[i], NULL, 0);
			live_pids[i] = 0;
		}
	}
}

static void track(pid_t pid, bool on)
{
	for (size_t i = 0; i < sizeof live_pids / sizeof *live_pids; i++) {
		if (on ? live_pids[i] == 0 : live_pids[i] == pid) {
			live_pids[i] = on ? pid : 0;
			return;
		}
	}
	if (on)
		die("too many child processes");
}

__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "%s: ", bench_prog);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(long ms)
{
	nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000}, NULL);
}

__attribute__((format(printf, 2, 3))) static void write_file(const char *path, const char *fmt, ...)
{
	FILE *f = fopen(path, "w");
	if (!f)
		fail("cannot write %s: %s", path, strerror(errno));
	va_list ap;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	if (fclose(f) != 0)
		fail("cannot write %s", path);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* The last lines of a log, for a failure's message. */
static void show_tail(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char buf[4096];
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	fseek(f, size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0, SEEK_SET);
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	buf[n] = '\0';
	fclose(f);
	fprintf(stderr, "--- %s ---\n%s\n---\n", path, buf);
}

/* Run argv[0] (a path, or a name found on PATH) with stdout and stderr to
 * `out`; returns its pid, tracked (killed by kill_live()). */
static pid_t spawn(char *const argv[], const char *out)
{
	pid_t pid = fork();
	if (pid < 0)
		fail("fork: %s", strerror(errno));
	if (pid == 0) {
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		int null = open("/dev/null", O_RDONLY);
		if (null >= 0) {
			dup2(null, 0);
			close(null);
		}
		execvp(argv[0], argv);
		fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	track(pid, true);
	return pid;
}

/* Wait for pid up to timeout_s; its wait status, or -1 when it is still
 * running. */
static int wait_for(pid_t pid, int timeout_s)
{
	uint64_t deadline = mono_ns() + (uint64_t)timeout_s * 1000000000ull;
	for (;;) {
		int status;
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			return status;
		if (r < 0)
			return 0;
		if (mono_ns() > deadline)
			return -1;
		sleep_ms(20);
	}
}

/* The build tree's plantd: BUILD/tools/benchmarks/bench_* ->
 * BUILD/host/plantd, or $PLANTD. */
static const char *plantd_path(void)
{
	static char path[PATH_MAX + 32];
	const char *env = getenv("PLANTD");
	if (env && *env)
		return env;
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n <= 0)
		fail("cannot find myself in /proc/self/exe");
	exe[n] = '\0';
	char *slash = strrchr(exe, '/');
	if (slash)
		*slash = '\0';
	snprintf(path, sizeof path, "%s/../../host/plantd", exe);
	if (access(path, X_OK) != 0)
		fail("no plantd at %s (build it, or set $PLANTD)", path);
	return path;
}

/* A free port on 127.0.0.1 (free when asked: nginx takes it right after). */
static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) != 0)
		fail("cannot find a free port: %s", strerror(errno));
	close(fd);
	return ntohs(a.sin_port);
}

struct body {
	char *text;
	size_t len;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *user)
{
	struct body *b = user;
	size_t n = size * nmemb;
	char *t = realloc(b->text, b->len + n + 1);
	if (!t)
		return 0;
	memcpy(t + b->len, data, n);
	b->len += n;
	t[b->len] = '\0';
	b->text = t;
	return n;
}

#endif
