/* Unit tests of cicd_notifier on the SDK's fake host (plantd/testing.h):
 * a deployment posted to the route is published once, its bundle copied
 * and served by URL; results collected per node (out of order too) until
 * every expected node is final, or the timeout makes the others silent;
 * the report on cicd.reports and in the log; expected nodes from the
 * request, the config or node.ready; bad requests; the drop directory
 * (done/ and failed/); forgetting old deployments; validate().
 * tests/integration/cicd_nodes.sh runs it in plantd on two nodes. */
#include <sys/time.h>

#include <plantd/testing.h>

#include "cicd_notifier.c"

#define CHECK PLANT_TEST_CHECK

static char tmp_dir[] = "/tmp/cicd-notifier-test.XXXXXX";
static char bundle_path[600];

static const char bundle_text[] = "{\"format\": \"plantd-bundle/1\", \"manifest\": {\"name\": "
				  "\"fx_meter\", \"version\": \"2.0.0\"}, \"module\": \"AAAA\"}\n";

static int streq(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

static const char *field(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static void put_file(const char *path, const char *text, int age_s)
{
	FILE *f = fopen(path, "w");
	CHECK(f != NULL);
	CHECK(fputs(text, f) >= 0);
	CHECK(fclose(f) == 0);
	if (age_s) {
		struct timeval tv[2];
		gettimeofday(&tv[0], NULL);
		tv[0].tv_sec -= age_s;
		tv[1] = tv[0];
		CHECK(utimes(path, tv) == 0);
	}
}

static int file_exists(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0;
}

static struct plant_test_host *host(const char *settings)
{
	struct plant_test_host *h = plant_test_new();
	CHECK(h != NULL);
	plant_test_set_site(h, "node-a");
	plant_test_set_name(h, "notifier");
	plant_test_set_data_dir(h, tmp_dir);
	CHECK(plant_test_start(h, &PLANT_PLUGIN_DESC, settings) == PLANT_OK);
	return h;
}

/* POST a deployment; its id (static buffer) or NULL when not 202. */
static const char *post(struct plant_test_host *h, const char *body)
{
	static char id[64];
	if (plant_test_request(h, "POST", "/v1/cicd/deployments", body, NULL) != 202)
		return NULL;
	json_t *a = json_loads(plant_test_reply_body(h), 0, NULL);
	CHECK(a != NULL);
	snprintf(id, sizeof id, "%s", field(a, "deployment"));
	json_decref(a);
	return id;
}

static void result(struct plant_test_host *h, const char *id, const char *node, const char *state,
		   const char *reason)
{
	char body[1024];
	snprintf(body, sizeof body,
		 "{\"deployment\": \"%s\", \"node\": \"%s\", \"instance\": \"meter\", \"state\": "
		 "\"%s\", \"version\": \"2.0.0\", \"previous_version\": \"1.0.0\", \"reason\": "
		 "%s%s%s, \"local_id\": \"dep-1\"}",
		 id, node, state, reason ? "\"" : "", reason ? reason : "null", reason ? "\"" : "");
	CHECK(plant_test_deliver(h, "cicd.results", body) == PLANT_OK);
}

/* GET a path: the answer, parsed ([new]), or NULL when not 200. */
static json_t *get(struct plant_test_host *h, const char *path)
{
	if (plant_test_request(h, "GET", path, NULL, NULL) != 200)
		return NULL;
	return json_loads(plant_test_reply_body(h), 0, NULL);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_validate(void)
{
	static const char *const bad[][2] = {
		{"{\"results\": \"cicd.*\"}", "results"},
		{"{\"publish\": \"cicd.*\"}", "publish"},
		{"{\"route\": \"/v1/cicd\"}", "route"},
		{"{\"public_url\": \"http://x:1\"}", "public_url"},
		{"{\"listener\": \"api\", \"public_url\": \"ftp://x\"}", "public_url"},
		{"{\"nodes\": [\"a\", 3]}", "nodes"},
		{"{\"timeout\": 0}", "timeout"},
		{"{\"keep\": 0}", "keep"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct plant_test_host *h = plant_test_new();
		if (plant_test_validate(h, &PLANT_PLUGIN_DESC, bad[i][0]) != PLANT_E_CONFIG ||
		    !streq(plant_test_error_key(h), bad[i][1])) {
			fprintf(stderr, "settings %s: accepted or key %s\n", bad[i][0],
				plant_test_error_key(h) ? plant_test_error_key(h) : "(none)");
			exit(1);
		}
		plant_test_free(h);
	}
	struct plant_test_host *h = plant_test_new();
	CHECK(plant_test_validate(h, &PLANT_PLUGIN_DESC,
				  "{\"listener\": \"api\", \"public_url\": \"http://a:8480\", "
				  "\"results\": \"cluster.cicd.results\", \"grace\": \"1s\"}") ==
	      PLANT_OK);
	plant_test_free(h);
}

static void test_all_deployed(void)
{
	struct plant_test_host *h = host("{\"listener\": \"api\", \"nodes\": [\"node-a\", "
					 "\"node-b\"], \"timeout\": \"10s\", \"public_url\": "
					 "\"http://10.0.0.5:8480/\"}");
	const char *id0 = post(h, "{\"bundle\": \"/nonexistent/x.bundle\"}");
	CHECK(id0 == NULL && plant_test_reply_status(h) == 404);
	char req[1024];
	snprintf(req, sizeof req,
		 "{\"bundle\": \"%s\", \"instance\": \"meter\", \"grace\": \"1s\", \"by\": \"ci\"}",
		 bundle_path);
	const char *pid = post(h, req);
	CHECK(pid != NULL);
	char id[64];
	snprintf(id, sizeof id, "%s", pid);
	CHECK(strncmp(id, "cd-", 3) == 0);

	/* the request, once, with a URL to fetch the bundle from */
	CHECK(plant_test_count(h, "cicd.deploy") == 1);
	const json_t *m = plant_test_last(h, "cicd.deploy");
	char url[256];
	snprintf(url, sizeof url, "http://10.0.0.5:8480/v1/cicd/bundles/%s.bundle", id);
	CHECK(streq(field(m, "deployment"), id));
	CHECK(streq(field(m, "bundle"), url));
	CHECK(streq(field(m, "instance"), "meter"));
	CHECK(streq(field(m, "grace"), "1s"));
	CHECK(json_array_size(json_object_get(m, "nodes")) == 0);
	CHECK(strstr(field(m, "by"), "ci"));

	/* the bundle is served as it was */
	char path[256];
	snprintf(path, sizeof path, "/v1/cicd/bundles/%s.bundle", id);
	CHECK(plant_test_request(h, "GET", path, NULL, NULL) == 200);
	CHECK(streq(plant_test_reply_body(h), bundle_text));
	CHECK(plant_test_request(h, "GET", "/v1/cicd/bundles/..%2fx", NULL, NULL) == 404);
	CHECK(plant_test_request(h, "GET", "/v1/cicd/bundles/nope.bundle", NULL, NULL) == 404);

	/* results come in, out of order too */
	snprintf(path, sizeof path, "/v1/cicd/deployments/%s", id);
	result(h, id, "node-a", "watching", NULL);
	json_t *view = get(h, path);
	CHECK(view && json_array_size(json_object_get(view, "waiting")) == 2);
	CHECK(json_is_false(json_object_get(view, "finished")));
	json_decref(view);
	result(h, id, "node-b", "deployed", NULL);
	result(h, id, "node-b", "watching", NULL);	   /* late: the final state stays */
	result(h, "cd-other", "node-a", "deployed", NULL); /* not ours */
	CHECK(plant_test_count(h, "cicd.reports") == 0);
	view = get(h, path);
	CHECK(streq(field(json_object_get(json_object_get(view, "nodes"), "node-b"), "state"),
		    "deployed"));
	CHECK(json_array_size(json_object_get(view, "waiting")) == 1);
	json_decref(view);
	result(h, id, "node-a", "deployed", NULL);

	/* every expected node is final: the report */
	CHECK(plant_test_count(h, "cicd.reports") == 1);
	const json_t *rep = plant_test_last(h, "cicd.reports");
	CHECK(streq(field(rep, "deployment"), id));
	CHECK(streq(field(rep, "bundle"), bundle_path));
	CHECK(streq(field(rep, "instance"), "meter"));
	CHECK(json_is_true(json_object_get(rep, "complete")));
	CHECK(json_is_true(json_object_get(rep, "deployed")));
	const json_t *nodes = json_object_get(rep, "nodes");
	CHECK(json_object_size(nodes) == 2);
	CHECK(streq(field(json_object_get(nodes, "node-a"), "state"), "deployed"));
	CHECK(streq(field(json_object_get(nodes, "node-a"), "version"), "2.0.0"));
	CHECK(plant_test_logged(h, "node node-a: deployed 2.0.0") == 1);
	CHECK(plant_test_logged(h, "node node-b: deployed 2.0.0") == 1);
	CHECK(plant_test_logged(h, "complete, 2 of 2 nodes deployed") == 1);
	/* later results change nothing */
	result(h, id, "node-a", "rolled_back", "x");
	CHECK(plant_test_count(h, "cicd.reports") == 1);
	view = get(h, path);
	CHECK(json_is_true(json_object_get(view, "finished")));
	json_decref(view);
	view = get(h, "/v1/cicd/deployments");
	CHECK(json_array_size(json_object_get(view, "deployments")) == 1);
	json_decref(view);
	CHECK(plant_test_request(h, "GET", "/v1/cicd/deployments/cd-nope", NULL, NULL) == 404);
	CHECK(plant_test_request(h, "GET", "/v1/cicd/what", NULL, NULL) == 404);
	plant_test_free(h);
}

static void test_refused_and_silent(void)
{
	struct plant_test_host *h = host("{\"listener\": \"api\", \"nodes\": [\"node-a\", "
					 "\"node-b\"], \"timeout\": \"10s\"}");
	char req[1024];
	snprintf(req, sizeof req, "{\"bundle\": \"%s\", \"instance\": \"meter\"}", bundle_path);
	char id[64];
	snprintf(id, sizeof id, "%s", post(h, req));
	/* without public_url: this node's path of the copy */
	const char *sent = field(plant_test_last(h, "cicd.deploy"), "bundle");
	CHECK(sent && sent[0] == '/' && strstr(sent, "/notifier/bundles/"));
	CHECK(file_exists(sent));
	result(h, id, "node-a", "refused", "sha256 mismatch: manifest says A, module is B");
	result(h, id, "node-b", "watching", NULL);
	plant_test_advance(h, 9000);
	CHECK(plant_test_count(h, "cicd.reports") == 0);
	plant_test_advance(h, 1500);
	CHECK(plant_test_count(h, "cicd.reports") == 1);
	const json_t *rep = plant_test_last(h, "cicd.reports");
	CHECK(json_is_false(json_object_get(rep, "complete")));
	CHECK(json_is_false(json_object_get(rep, "deployed")));
	const json_t *nodes = json_object_get(rep, "nodes");
	CHECK(streq(field(json_object_get(nodes, "node-a"), "state"), "refused"));
	CHECK(strstr(field(json_object_get(nodes, "node-a"), "reason"), "sha256"));
	CHECK(streq(field(json_object_get(nodes, "node-b"), "state"), "silent"));
	CHECK(strstr(field(json_object_get(nodes, "node-b"), "reason"), "last: watching"));
	CHECK(plant_test_logged(h, "node node-a: refused 2.0.0: sha256 mismatch") == 1);
	CHECK(plant_test_logged(h, "node node-b: silent") == 1);
	CHECK(plant_test_logged(h, "incomplete, 0 of 2 nodes deployed") == 1);

	/* a request's own nodes and timeout */
	snprintf(req, sizeof req,
		 "{\"bundle\": \"http://x/b.bundle\", \"instance\": \"meter\", \"nodes\": "
		 "[\"node-c\"], \"timeout\": \"2s\"}");
	snprintf(id, sizeof id, "%s", post(h, req));
	const json_t *m = plant_test_last(h, "cicd.deploy");
	CHECK(streq(field(m, "bundle"), "http://x/b.bundle"));
	CHECK(streq(json_string_value(json_array_get(json_object_get(m, "nodes"), 0)), "node-c"));
	CHECK(json_array_size(json_object_get(m, "nodes")) == 1);
	plant_test_advance(h, 2500);
	CHECK(plant_test_count(h, "cicd.reports") == 2);
	rep = plant_test_last(h, "cicd.reports");
	CHECK(json_object_size(json_object_get(rep, "nodes")) == 1);
	CHECK(streq(field(json_object_get(json_object_get(rep, "nodes"), "node-c"), "state"),
		    "silent"));
	plant_test_free(h);
}

static void test_nodes_from_ready(void)
{
	struct plant_test_host *h = host("{\"listener\": \"api\", \"grace\": \"3s\"}");
	CHECK(plant_test_deliver(h, "cicd.results",
				 "{\"event\": \"node.ready\", \"node\": \"node-x\", \"ts\": 1}") ==
	      PLANT_OK);
	CHECK(plant_test_deliver(h, "cicd.results",
				 "{\"event\": \"node.ready\", \"node\": \"node-y\", \"ts\": 2, "
				 "\"deployed\": {\"meter\": \"2.0.0\"}}") == PLANT_OK);
	CHECK(plant_test_deliver(h, "cicd.results",
				 "{\"event\": \"node.ready\", \"node\": \"node-x\", \"ts\": 3}") ==
	      PLANT_OK);
	json_t *v = get(h, "/v1/cicd/nodes");
	CHECK(v && json_object_size(json_object_get(v, "nodes")) == 2);
	CHECK(json_integer_value(json_object_get(
		      json_object_get(json_object_get(v, "nodes"), "node-x"), "ts")) == 3);
	json_decref(v);
	CHECK(plant_test_logged(h, "node node-x is ready") == 1);
	/* by URL: the notifier cannot read the bundle's name */
	CHECK(post(h, "{\"bundle\": \"https://ci/b.bundle\"}") == NULL);
	CHECK(plant_test_reply_status(h) == 400);
	CHECK(strstr(plant_test_reply_body(h), "instance"));
	const char *id = post(h, "{\"bundle\": \"https://ci/b.bundle\", \"instance\": \"m\"}");
	CHECK(id != NULL);
	json_t *a = json_loads(plant_test_reply_body(h), 0, NULL);
	CHECK(json_array_size(json_object_get(a, "nodes")) == 2);
	json_decref(a);
	/* the configured grace, as a duration the host reads */
	CHECK(streq(field(plant_test_last(h, "cicd.deploy"), "grace"), "3000ms"));
	CHECK(streq(field(plant_test_last(h, "cicd.deploy"), "instance"), "m"));
	plant_test_free(h);
}

static void test_bad_posts(void)
{
	static const char *const bad[][2] = {
		{"", "400"},
		{"not json", "400"},
		{"[1]", "400"},
		{"{}", "400"},
		{"{\"bundle\": 3}", "400"},
		{"{\"bundle\": \"http://x\"}", "400"},
		{"{\"bundle\": \"http://x\", \"nodes\": \"a\"}", "400"},
		{"{\"bundle\": \"http://x\", \"nodes\": [1]}", "400"},
		{"{\"bundle\": \"http://x\", \"grace\": \"soon\"}", "400"},
		{"{\"bundle\": \"http://x\", \"timeout\": \"0s\"}", "400"},
		{"{\"bundle\": \"http://x\", \"instance\": 7}", "400"},
		{"{\"bundle\": \"/nonexistent\"}", "404"},
		{"{\"bundle\": \"/etc\"}", "500"},
	};
	struct plant_test_host *h = host("{\"listener\": \"api\"}");
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int st = plant_test_request(h, "POST", "/v1/cicd/deployments",
					    bad[i][0][0] ? bad[i][0] : NULL, NULL);
		json_t *e = json_loads(plant_test_reply_body(h), 0, NULL);
		if (st != atoi(bad[i][1]) || !field(e, "error")) {
			fprintf(stderr, "POST %s: %d %s\n", bad[i][0], st,
				plant_test_reply_body(h));
			exit(1);
		}
		json_decref(e);
	}
	/* a file that is not a bundle */
	char p[700];
	snprintf(p, sizeof p, "%s/not.bundle", tmp_dir);
	put_file(p, "{\"format\": 1}", 0);
	char req[1024];
	snprintf(req, sizeof req, "{\"bundle\": \"%s\"}", p);
	CHECK(plant_test_request(h, "POST", "/v1/cicd/deployments", req, NULL) == 400);
	CHECK(strstr(plant_test_reply_body(h), "not a bundle"));
	CHECK(plant_test_count(h, NULL) == 0);
	/* the bus refuses */
	plant_test_fail_publish(h, PLANT_E_FULL);
	CHECK(plant_test_request(h, "POST", "/v1/cicd/deployments",
				 "{\"bundle\": \"http://x/b.bundle\", \"instance\": \"m\"}",
				 NULL) == 429);
	plant_test_fail_publish(h, PLANT_OK);
	unlink(p);
	plant_test_free(h);
}

static void test_watch_dir(void)
{
	char wd[700], good[800], bad_file[800], fresh[800], done[900], failed[900];
	snprintf(wd, sizeof wd, "%s/drop", tmp_dir);
	char settings[1024];
	snprintf(settings, sizeof settings,
		 "{\"watch_dir\": \"%s\", \"watch_every\": \"2s\", \"nodes\": [\"node-a\"]}", wd);
	struct plant_test_host *h = host(settings);
	snprintf(good, sizeof good, "%s/meter-2.0.0.bundle", wd);
	snprintf(bad_file, sizeof bad_file, "%s/broken.bundle", wd);
	snprintf(fresh, sizeof fresh, "%s/fresh.bundle", wd);
	put_file(good, bundle_text, 10);
	put_file(bad_file, "{\"format\": ", 10);
	char other[800];
	snprintf(other, sizeof other, "%s/readme.txt", wd);
	put_file(other, "not a bundle", 10);
	plant_test_advance(h, 2000);
	CHECK(plant_test_count(h, "cicd.deploy") == 1);
	const json_t *m = plant_test_last(h, "cicd.deploy");
	CHECK(streq(field(m, "instance"), "fx_meter")); /* the manifest's name */
	char id[64];
	snprintf(id, sizeof id, "%s", field(m, "deployment"));
	snprintf(failed, sizeof failed, "%s/failed/broken.bundle", wd);
	CHECK(file_exists(failed) && !file_exists(bad_file));
	CHECK(file_exists(other));
	CHECK(file_exists(good)); /* until the report */
	/* a file written just now waits for the next look */
	put_file(fresh, bundle_text, 0);
	plant_test_advance(h, 2000);
	CHECK(plant_test_count(h, "cicd.deploy") == 1); /* neither again nor the fresh one */
	result(h, id, "node-a", "deployed", NULL);
	snprintf(done, sizeof done, "%s/done/meter-2.0.0.bundle", wd);
	CHECK(file_exists(done) && !file_exists(good));
	/* a new file of the same name is a new deployment */
	put_file(good, bundle_text, 10);
	unlink(fresh);
	plant_test_advance(h, 2000);
	CHECK(plant_test_count(h, "cicd.deploy") == 2);
	plant_test_free(h);
	unlink(fresh);
	unlink(done);
	unlink(failed);
	unlink(other);
}

static void test_keep(void)
{
	struct plant_test_host *h = host("{\"listener\": \"api\", \"keep\": 2, \"nodes\": "
					 "[\"node-a\"]}");
	char req[1024], first_copy[1024] = "";
	snprintf(req, sizeof req, "{\"bundle\": \"%s\"}", bundle_path);
	for (int i = 0; i < 3; i++) {
		char id[64];
		snprintf(id, sizeof id, "%s", post(h, req));
		if (i == 0)
			snprintf(first_copy, sizeof first_copy, "%s",
				 field(plant_test_last(h, "cicd.deploy"), "bundle"));
		result(h, id, "node-a", "deployed", NULL);
	}
	json_t *v = get(h, "/v1/cicd/deployments");
	CHECK(json_array_size(json_object_get(v, "deployments")) == 2);
	json_decref(v);
	CHECK(!file_exists(first_copy));
	plant_test_free(h);
}

int main(void)
{
	CHECK(mkdtemp(tmp_dir) != NULL);
	snprintf(bundle_path, sizeof bundle_path, "%s/meter.bundle", tmp_dir);
	put_file(bundle_path, bundle_text, 0);
	test_validate();
	test_all_deployed();
	test_refused_and_silent();
	test_nodes_from_ready();
	test_bad_posts();
	test_watch_dir();
	test_keep();
	char cmd[256];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmp_dir);
	printf("cicd_notifier: all tests passed\n");
	return 0;
}
