/* What the benchmarks that run a whole site share: the build tree's
 * plugins, the site's event loop in a thread, and cleaning up. Included
 * after bench_common.h by one .c file each. */
#ifndef PLANTD_BENCH_SITE_H
#define PLANTD_BENCH_SITE_H

#include <ftw.h>
#include <pthread.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "config.h"
#include "site.h"

static inline int bench_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Remove a benchmark's directory and everything in it. */
static inline void bench_rm_tree(const char *dir)
{
	nftw(dir, bench_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A thread running a site's event loop (its ticks) until loopbreak. */
static inline void *bench_loop_main(void *base)
{
	event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

/* The build tree's plugins, beside the executable: BUILD/tools/benchmarks/x
 * -> BUILD/plugins when `probe` (e.g. "log_sink/log_sink.so") is there; else
 * $PLANTD_PLUGIN_PATH or the host's default path. */
static inline const char *bench_plugin_path(const char *probe)
{
	static char path[PATH_MAX + 64];
	const char *env = getenv("PLANTD_PLUGIN_PATH");
	if (env && *env)
		return env;
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			char file[PATH_MAX + 128];
			snprintf(file, sizeof file, "%s/../../plugins/%s", exe, probe);
			if (access(file, R_OK) == 0) {
				snprintf(path, sizeof path, "%s/../../plugins", exe);
				return path;
			}
		}
	}
	return site_default_plugin_path();
}

/* A running site: its loop thread runs the ticks. */
struct bench_site {
	struct event_base *base;
	struct site *site;
	pthread_t loop;
};

/* Load `conf` (a conf.d), create the site with the build tree's plugins
 * (bench_plugin_path(probe)) and start its loop. Exits on failure. */
static inline void bench_site_start(struct bench_site *b, const char *conf, const char *probe)
{
	char err[2048];
	struct site_config *cfg;
	if (config_load(conf, NULL, &cfg, err, sizeof err) != PLANT_OK) {
		fprintf(stderr, "%s: %s\n", bench_prog, err);
		exit(1);
	}
	b->base = event_base_new();
	if (!b->base)
		die("event_base_new failed");
	int rc = site_create(cfg, bench_plugin_path(probe), b->base, &b->site, err, sizeof err);
	if (rc != PLANT_OK) {
		fprintf(stderr, "%s: site_create: %s: %s\n", bench_prog, plant_status_name(rc),
			err);
		exit(1);
	}
	if (pthread_create(&b->loop, NULL, bench_loop_main, b->base) != 0)
		die("cannot start the loop thread");
}

static inline void bench_site_stop(struct bench_site *b)
{
	event_base_loopbreak(b->base);
	pthread_join(b->loop, NULL);
	site_destroy(b->site);
	event_base_free(b->base);
}

#endif
