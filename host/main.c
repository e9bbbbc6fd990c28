/* plantd: the host. Loads a site's configuration, its plugins through the
 * SDK, and runs them until told to stop. */
#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "admin.h"
#include "config.h"
#include "deploy.h"
#include "dropin.h"
#include "http.h"
#include "log.h"
#include "plantd-build.h"
#include "site.h"

#define EXIT_CONFIG 2

struct runtime {
	const char *config_path;
	const char *env;
	struct event_base *base;
	struct site *site;
	int cli_log_level;
	char *site_data_dir;   /* where listeners.json was written */
	struct dropin *dropin; /* instances started with plantctl load */
	struct deploy *deploy; /* deployed versions and their history */
};

static void usage(FILE *f)
{
	fprintf(f, "usage: plantd -c PATH [options]\n"
		   "\n"
		   "Run a plantd site: load its configuration and its plugins, route messages\n"
		   "on the bus until SIGTERM or SIGINT. SIGHUP reloads the configuration.\n"
		   "\n"
		   "  -c, --config PATH      the site: a file, or a conf.d directory holding\n"
		   "                         plantd.conf and *.conf fragments\n"
		   "  -e, --env NAME         add the overlay env/NAME.conf (e.g. dev, prod)\n"
		   "      --check            load and validate everything, then exit\n"
		   "      --run-for SECONDS  stop gracefully after SECONDS\n"
		   "  -l, --log-level L      error, warn, info (default) or debug\n"
		   "  -V, --version          print the version and the SDK ABI, then exit\n"
		   "  -h, --help             this text\n"
		   "\n"
		   "Exit status: 0 on a clean stop, 1 on a runtime failure, 2 for a bad\n"
		   "configuration or plugin.\n");
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
	struct runtime *rt = arg;
	log_info("signal %s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
	event_base_loopexit(rt->base, NULL);
}

static void on_run_for(evutil_socket_t fd, short what, void *arg)
{
	struct runtime *rt = arg;
	log_info("run-for time reached: stopping");
	event_base_loopexit(rt->base, NULL);
}

/* Listeners are bound at start; a reload keeps them as they are. */
static bool listeners_equal(const struct site_config *a, const struct site_config *b)
{
	if (a->n_listeners != b->n_listeners)
		return false;
	for (size_t i = 0; i < a->n_listeners; i++)
		if (!instance_spec_equal(&a->listeners[i], &b->listeners[i]))
			return false;
	return true;
}

static int do_reload(void *ud, char *err, size_t errlen)
{
	struct runtime *rt = ud;
	struct site_config *cfg;
	log_info("reloading %s", rt->config_path);
	if (config_load(rt->config_path, rt->env, &cfg, err, errlen) != PLANT_OK)
		return PLANT_E_CONFIG;
	if (dropin_merge(rt->dropin, cfg, err, errlen) != PLANT_OK ||
	    deploy_merge(rt->deploy, cfg, err, errlen) != PLANT_OK) {
		config_free(cfg);
		return PLANT_E_CONFIG;
	}
	if (rt->cli_log_level >= 0)
		cfg->log_level = rt->cli_log_level;
	if (!listeners_equal(cfg, site_config(rt->site)))
		log_warn("listener changes take effect when plantd restarts");
	return site_reload(rt->site, cfg, err, errlen);
}

static int do_load(void *ud, const json_t *entry, char *err, size_t errlen)
{
	struct runtime *rt = ud;
	return dropin_load(rt->dropin, rt->site, entry, err, errlen);
}

static int do_unload(void *ud, const char *name, char *err, size_t errlen)
{
	struct runtime *rt = ud;
	int rc = dropin_unload(rt->dropin, rt->site, name, err, errlen);
	if (rc == PLANT_OK)
		deploy_forget(rt->deploy, name);
	return rc;
}

static void on_reload(evutil_socket_t sig, short what, void *arg)
{
	struct runtime *rt = arg;
	char err[4096];
	log_info("SIGHUP");
	if (do_reload(rt, err, sizeof err) != PLANT_OK)
		log_error("reload refused, the site runs on unchanged: %s", err);
}

/* A listeners.json a crashed run left would tell of ports long gone. */
static void unlink_stale_urls(const char *data_dir)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/listeners.json", data_dir);
	unlink(path);
}

/* Connections need descriptors: take the hard limit, not the (often 1024)
 * soft one. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* DATA_DIR/listeners.json: where each listener ended up (port 0 picks
 * one), for plantctl and scripts. */
static void write_urls(struct http *http, const char *data_dir)
{
	char path[4096], tmp[4200];
	snprintf(path, sizeof path, "%s/listeners.json", data_dir);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	json_t *urls = http_urls_json(http);
	if (json_dump_file(urls, tmp, JSON_INDENT(2)) != 0 || rename(tmp, path) != 0)
		log_warn("cannot write %s: %s", path, strerror(errno));
	json_decref(urls);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"env", required_argument, NULL, 'e'},
		{"check", no_argument, NULL, 'k'},
		{"run-for", required_argument, NULL, 'r'},
		{"log-level", required_argument, NULL, 'l'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct runtime rt = {.cli_log_level = -1};
	int check = 0;
	double run_for = 0;
	int c;
	while ((c = getopt_long(argc, argv, "c:e:l:Vh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			rt.config_path = optarg;
			break;
		case 'e':
			rt.env = optarg;
			break;
		case 'k':
			check = 1;
			break;
		case 'r': {
			char *end;
			errno = 0;
			run_for = strtod(optarg, &end);
			if (errno || *end || !(run_for > 0)) {
				fprintf(stderr,
					"plantd: --run-for needs a positive number of seconds, not \"%s\"\n",
					optarg);
				return EXIT_CONFIG;
			}
			break;
		}
		case 'l':
			if (log_level_parse(optarg, &rt.cli_log_level) != PLANT_OK) {
				fprintf(stderr,
					"plantd: unknown log level \"%s\" (error, warn, info, debug)\n",
					optarg);
				return EXIT_CONFIG;
			}
			break;
		case 'V':
			printf("plantd %s (SDK ABI %d.%d)\n", PLANTD_VERSION, PLANT_ABI_MAJOR,
			       PLANT_ABI_MINOR);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_CONFIG;
		}
	}
	if (!rt.config_path || optind != argc) {
		usage(stderr);
		return EXIT_CONFIG;
	}

	char err[4096];
	struct site_config *cfg;
	if (config_load(rt.config_path, rt.env, &cfg, err, sizeof err) != PLANT_OK) {
		fprintf(stderr, "%s\n", err);
		return EXIT_CONFIG;
	}
	if (rt.cli_log_level >= 0)
		cfg->log_level = rt.cli_log_level;
	if (cfg->log_level >= 0)
		log_set_level(cfg->log_level);
	if (dropin_open(cfg->data_dir, &rt.dropin, err, sizeof err) != PLANT_OK ||
	    dropin_merge(rt.dropin, cfg, err, sizeof err) != PLANT_OK ||
	    deploy_open(cfg->data_dir, &rt.deploy, err, sizeof err) != PLANT_OK ||
	    deploy_merge(rt.deploy, cfg, err, sizeof err) != PLANT_OK) {
		fprintf(stderr, "%s\n", err);
		dropin_free(rt.dropin);
		deploy_free(rt.deploy);
		config_free(cfg);
		return EXIT_CONFIG;
	}

	const char *plugin_path = site_default_plugin_path();
	if (check) {
		int rc = site_check(cfg, plugin_path, err, sizeof err);
		if (rc != PLANT_OK)
			fprintf(stderr, "%s\n", err);
		else
			printf("%s: configuration OK (site \"%s\", %zu instances)\n",
			       rt.config_path, cfg->site, cfg->n_instances);
		config_free(cfg);
		dropin_free(rt.dropin);
		deploy_free(rt.deploy);
		return rc == PLANT_OK ? 0 : EXIT_CONFIG;
	}

	if (cfg->log_file && log_open(cfg->log_file, err, sizeof err) != PLANT_OK) {
		fprintf(stderr, "plantd: %s\n", err);
		config_free(cfg);
		dropin_free(rt.dropin);
		deploy_free(rt.deploy);
		return EXIT_CONFIG;
	}

	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	curl_global_init(CURL_GLOBAL_DEFAULT);
	evthread_use_pthreads();
	rt.base = event_base_new();
	if (!rt.base) {
		fprintf(stderr, "plantd: cannot create the event loop\n");
		config_free(cfg);
		dropin_free(rt.dropin);
		deploy_free(rt.deploy);
		return 1;
	}
	struct event *ev_term = evsignal_new(rt.base, SIGTERM, on_stop_signal, &rt);
	struct event *ev_int = evsignal_new(rt.base, SIGINT, on_stop_signal, &rt);
	struct event *ev_hup = evsignal_new(rt.base, SIGHUP, on_reload, &rt);
	struct event *ev_run_for = evtimer_new(rt.base, on_run_for, &rt);
	event_add(ev_term, NULL);
	event_add(ev_int, NULL);
	event_add(ev_hup, NULL);

	log_info("plantd %s (SDK ABI %d.%d) starting site from %s%s%s", PLANTD_VERSION,
		 PLANT_ABI_MAJOR, PLANT_ABI_MINOR, rt.config_path, rt.env ? ", env " : "",
		 rt.env ? rt.env : "");
	int status = 0;
	struct http *http = NULL;
	struct admin *admin = NULL;
	unlink_stale_urls(cfg->data_dir);
	if (http_create(cfg, rt.base, &http, err, sizeof err) != PLANT_OK) {
		fprintf(stderr, "%s\n", err);
		log_error("site failed to start: %s", err);
		config_free(cfg);
		status = EXIT_CONFIG;
	} else if (site_create_http(cfg, plugin_path, rt.base, http, &rt.site, err, sizeof err) !=
		   PLANT_OK) {
		fprintf(stderr, "%s\n", err);
		log_error("site failed to start: %s", err);
		status = EXIT_CONFIG;
	} else if (admin_start(http, rt.site,
			       &(struct admin_hooks){.ud = &rt,
						     .reload = do_reload,
						     .load = do_load,
						     .unload = do_unload,
						     .deploy = rt.deploy},
			       &admin) != PLANT_OK) {
		fprintf(stderr, "plantd: cannot serve the admin API\n");
		site_destroy(rt.site);
		status = 1;
	} else {
		deploy_attach(rt.deploy, rt.site);
		if (site_config(rt.site)->n_listeners) {
			rt.site_data_dir = strdup(site_config(rt.site)->data_dir);
			write_urls(http, rt.site_data_dir);
		}
		if (run_for > 0) {
			struct timeval tv = {
				.tv_sec = (time_t)run_for,
				.tv_usec =
					(suseconds_t)((run_for - (double)(time_t)run_for) * 1e6)};
			event_add(ev_run_for, &tv);
		}
		event_base_dispatch(rt.base);
		/* new requests get 503; those in a handler finish, then the site */
		http_shutdown(http);
		admin_stop(admin);
		deploy_stop(rt.deploy);
		site_destroy(rt.site);
		log_info("stopped cleanly");
	}
	http_destroy(http);
	admin_free(admin);
	if (rt.site_data_dir) { /* where the listeners were: gone now */
		char path[4096];
		snprintf(path, sizeof path, "%s/listeners.json", rt.site_data_dir);
		unlink(path);
		free(rt.site_data_dir);
	}

	dropin_free(rt.dropin);
	deploy_free(rt.deploy);
	event_free(ev_run_for);
	event_free(ev_hup);
	event_free(ev_int);
	event_free(ev_term);
	event_base_free(rt.base);
	libevent_global_shutdown();
	curl_global_cleanup();
	log_close();
	return status;
}
