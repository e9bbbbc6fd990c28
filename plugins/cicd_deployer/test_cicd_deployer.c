/* Unit tests of cicd_deployer on the SDK's fake host (plantd/testing.h):
 * readiness, requests for this node or another, bad requests, deploy()
 * answers (watching, deployed, refused, none), the host's final steps on
 * cicd.events (also before the answer), bundles fetched by URL (written to
 * fetch_dir, removed after the answer; HTTP errors and timeouts refused),
 * a newer deployment superseding one in its grace period, a host that
 * refuses deploy(), and results arriving on the requests' topic. The
 * HTTP client is the test's own (the fake host has none).
 * tests/integration/cicd_nodes.sh runs it in plantd on two nodes. */
#include <plantd/testing.h>

#include "cicd_deployer.c"

#define CHECK PLANT_TEST_CHECK

static int streq(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

static char data_dir[] = "/tmp/cicd-deployer-test.XXXXXX";

/* ---- an HTTP client of our own ------------------------------------------------------- */

static struct {
	int calls;
	char url[1024];
	char auth[256];
	uint64_t timeout_ms;
	plant_http_done done;
	void *user;
	int refuse; /* http_call() answers this instead */
} http;

static int fake_http_call(plant_instance *self, const struct plant_http_call *call,
			  plant_http_done done, void *user)
{
	(void)self;
	if (http.refuse)
		return http.refuse;
	http.calls++;
	snprintf(http.url, sizeof http.url, "%s", call->url);
	http.timeout_ms = call->timeout_ms;
	http.auth[0] = '\0';
	for (size_t i = 0; call->headers && call->headers[i]; i += 2)
		if (strcmp(call->headers[i], "Authorization") == 0)
			snprintf(http.auth, sizeof http.auth, "%s", call->headers[i + 1]);
	http.done = done;
	http.user = user;
	return PLANT_OK;
}

/* Answer the last call. */
static void http_answer(struct plant_test_host *h, int status, long code, const char *body,
			const char *error)
{
	struct plant_http_result res = {
		.status = status,
		.http_status = code,
		.body = body ? body : "",
		.body_len = body ? strlen(body) : 0,
		.error = error ? error : "",
	};
	plant_http_done done = http.done;
	CHECK(done != NULL);
	http.done = NULL;
	done(plant_test_state(h), &res, http.user);
}

static int refuse_deploy(plant_instance *self, const json_t *request, plant_deploy_done done,
			 void *user)
{
	(void)self;
	(void)request;
	(void)done;
	(void)user;
	return PLANT_E_STATE;
}

/* ---- helpers ---------------------------------------------------------------------------- */

static struct plant_test_host *host(const char *settings)
{
	struct plant_test_host *h = plant_test_new();
	CHECK(h != NULL);
	plant_test_set_site(h, "node-a");
	plant_test_set_name(h, "deployer");
	plant_test_set_data_dir(h, data_dir);
	struct plant_host_api *api = (struct plant_host_api *)plant_test_api(h);
	api->http_call = fake_http_call;
	memset(&http, 0, sizeof http);
	CHECK(plant_test_start(h, &PLANT_PLUGIN_DESC, settings) == PLANT_OK);
	return h;
}

/* The last result (not node.ready) published on `topic`, or NULL. */
static const json_t *last_result(struct plant_test_host *h, const char *topic)
{
	const json_t *all = plant_test_published(h);
	for (size_t i = json_array_size(all); i > 0; i--) {
		const json_t *rec = json_array_get(all, i - 1);
		const json_t *body = json_object_get(rec, "body");
		if (streq(json_string_value(json_object_get(rec, "topic")), topic) &&
		    !json_object_get(body, "event"))
			return body;
	}
	return NULL;
}

static size_t count_results(struct plant_test_host *h)
{
	size_t n = 0, i;
	json_t *rec;
	json_array_foreach(plant_test_published(h), i, rec)
	{
		if (!json_object_get(json_object_get(rec, "body"), "event"))
			n++;
	}
	return n;
}

static size_t count_ready(struct plant_test_host *h)
{
	return plant_test_count(h, NULL) - count_results(h);
}

static const char *field(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_ready(void)
{
	struct plant_test_host *h = host("{\"ready_every\": \"10s\"}");
	/* after start */
	CHECK(plant_test_count(h, "cicd.results") == 1);
	const json_t *r = plant_test_last(h, "cicd.results");
	CHECK(streq(field(r, "event"), "node.ready"));
	CHECK(streq(field(r, "node"), "node-a"));
	CHECK(json_integer_value(json_object_get(r, "ts")) == (json_int_t)plant_test_now(h));
	CHECK(json_object_get(r, "deployed") == NULL);
	/* and every ready_every */
	plant_test_advance(h, 25000);
	CHECK(plant_test_count(h, "cicd.results") == 3);
	plant_test_free(h);

	/* 0: only after start; a node name of its own */
	h = host("{\"ready_every\": 0, \"node\": \"line-7\", \"results\": \"x.results\"}");
	plant_test_advance(h, 120000);
	CHECK(plant_test_count(h, "x.results") == 1);
	CHECK(streq(field(plant_test_last(h, "x.results"), "node"), "line-7"));
	CHECK(plant_test_timers(h) == 0);
	plant_test_free(h);
}

static void test_validate(void)
{
	struct plant_test_host *h = plant_test_new();
	CHECK(plant_test_validate(h, &PLANT_PLUGIN_DESC, "{\"listen\": \"cicd.*\"}") ==
	      PLANT_E_CONFIG);
	CHECK(streq(plant_test_error_key(h), "results"));
	plant_test_free(h);
	h = plant_test_new();
	CHECK(plant_test_validate(h, &PLANT_PLUGIN_DESC, "{\"results\": \"cicd.*\"}") ==
	      PLANT_E_CONFIG);
	plant_test_free(h);
	h = plant_test_new();
	CHECK(plant_test_validate(h, &PLANT_PLUGIN_DESC, "{\"fetch_timeout\": 0}") ==
	      PLANT_E_CONFIG);
	CHECK(streq(plant_test_error_key(h), "fetch_timeout"));
	plant_test_free(h);
	h = plant_test_new();
	CHECK(plant_test_validate(h, &PLANT_PLUGIN_DESC, "{\"nope\": 1}") == PLANT_E_CONFIG);
	plant_test_free(h);
	h = plant_test_new();
	CHECK(plant_test_validate(h, &PLANT_PLUGIN_DESC, "{\"listen\": \"cluster.cicd.deploy\"}") ==
	      PLANT_OK);
	plant_test_free(h);
}

static void test_deploy_watch_deployed(void)
{
	struct plant_test_host *h = host("{}");
	plant_test_clear(h);
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-1\", \"bundle\": \"/b/meter.bundle\", "
				 "\"instance\": \"meter\", \"grace\": \"1s\", \"by\": \"ci\"}") ==
	      PLANT_OK);
	CHECK(plant_test_deploys(h) == 1);
	const json_t *req = plant_test_deploy_request(h, 0);
	CHECK(streq(field(req, "bundle"), "/b/meter.bundle"));
	CHECK(streq(field(req, "instance"), "meter"));
	CHECK(streq(field(req, "grace"), "1s"));
	CHECK(strstr(field(req, "by"), "ci") && strstr(field(req, "by"), "cd-1"));
	CHECK(plant_test_count(h, NULL) == 0);

	CHECK(plant_test_deploy_answer(
		      h, PLANT_OK,
		      "{\"id\": \"dep-7\", \"instance\": \"meter\", \"module\": "
		      "\"fx_meter\", \"version\": \"2.0.0\", \"previous_version\": "
		      "\"1.0.0\", \"state\": \"watching\"}",
		      NULL) == PLANT_OK);
	const json_t *r = last_result(h, "cicd.results");
	CHECK(r && streq(field(r, "state"), "watching"));
	CHECK(streq(field(r, "deployment"), "cd-1"));
	CHECK(streq(field(r, "node"), "node-a"));
	CHECK(streq(field(r, "local_id"), "dep-7"));
	CHECK(streq(field(r, "version"), "2.0.0"));
	CHECK(streq(field(r, "previous_version"), "1.0.0"));
	CHECK(json_is_null(json_object_get(r, "reason")));
	CHECK(count_ready(h) == 0); /* not finished yet */

	/* another node's step, and another deployment's: not ours */
	CHECK(plant_test_deliver(h, "cicd.events",
				 "{\"event\": \"deploy.deployed\", \"id\": \"dep-7\", \"node\": "
				 "\"node-b\", \"instance\": \"meter\"}") == PLANT_OK);
	CHECK(plant_test_deliver(h, "cicd.events",
				 "{\"event\": \"deploy.verified\", \"id\": \"dep-7\", \"node\": "
				 "\"node-a\"}") == PLANT_OK);
	CHECK(count_results(h) == 1);
	CHECK(plant_test_deliver(h, "cicd.events",
				 "{\"event\": \"deploy.deployed\", \"id\": \"dep-7\", \"node\": "
				 "\"node-a\", \"instance\": \"meter\", \"version\": \"2.0.0\", "
				 "\"previous_version\": \"1.0.0\"}") == PLANT_OK);
	CHECK(count_results(h) == 2);
	r = last_result(h, "cicd.results");
	CHECK(streq(field(r, "state"), "deployed"));
	CHECK(streq(field(r, "deployment"), "cd-1"));
	CHECK(streq(field(r, "version"), "2.0.0"));
	CHECK(streq(field(r, "instance"), "meter"));
	/* then ready, with what was deployed */
	const json_t *ready = plant_test_last(h, "cicd.results");
	CHECK(streq(field(ready, "event"), "node.ready"));
	CHECK(streq(field(json_object_get(ready, "deployed"), "meter"), "2.0.0"));
	CHECK(plant_test_counter(h, "deployed") == 1);
	/* the same step again: nothing more */
	CHECK(plant_test_deliver(h, "cicd.events",
				 "{\"event\": \"deploy.deployed\", \"id\": \"dep-7\", \"node\": "
				 "\"node-a\", \"instance\": \"meter\", \"version\": \"2.0.0\"}") ==
	      PLANT_OK);
	CHECK(count_results(h) == 2);
	plant_test_free(h);
}

static void test_deployed_at_once_and_rolled_back(void)
{
	struct plant_test_host *h = host("{}");
	plant_test_clear(h);
	/* no grace: deployed in the answer */
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-2\", \"bundle\": \"/b/x.bundle\", "
				 "\"instance\": \"x\", \"nodes\": []}") == PLANT_OK);
	CHECK(plant_test_deploys(h) == 1);
	CHECK(plant_test_deploy_answer(h, PLANT_OK,
				       "{\"id\": \"dep-1\", \"instance\": \"x\", \"version\": "
				       "\"1.1.0\", \"state\": \"deployed\"}",
				       NULL) == PLANT_OK);
	CHECK(streq(field(last_result(h, "cicd.results"), "state"), "deployed"));
	CHECK(streq(field(plant_test_last(h, "cicd.results"), "event"), "node.ready"));

	/* watching, then rolled back by the host */
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-3\", \"bundle\": \"/b/sick.bundle\", "
				 "\"instance\": \"x\", \"nodes\": [\"node-a\", \"node-b\"]}") ==
	      PLANT_OK);
	CHECK(plant_test_deploy_answer(h, PLANT_OK,
				       "{\"id\": \"dep-2\", \"instance\": \"x\", \"version\": "
				       "\"2.1.0\", \"previous_version\": \"1.1.0\", \"state\": "
				       "\"watching\"}",
				       NULL) == PLANT_OK);
	CHECK(plant_test_deliver(
		      h, "cicd.events",
		      "{\"event\": \"deploy.rolled_back\", \"id\": \"dep-2\", \"node\": "
		      "\"node-a\", \"instance\": \"x\", \"version\": \"2.1.0\", "
		      "\"previous_version\": \"1.1.0\", \"reason\": \"health failed\"}") ==
	      PLANT_OK);
	const json_t *r = last_result(h, "cicd.results");
	CHECK(streq(field(r, "state"), "rolled_back"));
	CHECK(streq(field(r, "reason"), "health failed"));
	CHECK(streq(field(r, "deployment"), "cd-3"));
	const json_t *ready = plant_test_last(h, "cicd.results");
	CHECK(streq(field(json_object_get(ready, "deployed"), "x"), "1.1.0"));
	CHECK(plant_test_counter(h, "rolled_back") == 1);
	plant_test_free(h);
}

static void test_early_event(void)
{
	struct plant_test_host *h = host("{}");
	plant_test_clear(h);
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-4\", \"bundle\": \"/b/x.bundle\", "
				 "\"instance\": \"x\"}") == PLANT_OK);
	/* the final step before the answer */
	CHECK(plant_test_deliver(h, "cicd.events",
				 "{\"event\": \"deploy.deployed\", \"id\": \"dep-9\", \"node\": "
				 "\"node-a\", \"instance\": \"x\", \"version\": \"3.0.0\"}") ==
	      PLANT_OK);
	CHECK(count_results(h) == 0);
	CHECK(plant_test_deploy_answer(h, PLANT_OK,
				       "{\"id\": \"dep-9\", \"instance\": \"x\", \"version\": "
				       "\"3.0.0\", \"state\": \"watching\"}",
				       NULL) == PLANT_OK);
	CHECK(count_results(h) == 2);
	CHECK(streq(field(last_result(h, "cicd.results"), "state"), "deployed"));
	plant_test_free(h);
}

static void test_not_for_us(void)
{
	struct plant_test_host *h = host("{}");
	plant_test_clear(h);
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-5\", \"bundle\": \"/b/x.bundle\", "
				 "\"nodes\": [\"node-b\"]}") == PLANT_OK);
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-6\", \"bundle\": \"/b/x.bundle\", "
				 "\"nodes\": \"node-c\"}") == PLANT_OK);
	CHECK(plant_test_deploys(h) == 0);
	CHECK(plant_test_count(h, NULL) == 0);
	CHECK(plant_test_counter(h, "ignored") == 2);
	/* a result on the requests' topic: ignored, said once */
	for (int i = 0; i < 3; i++)
		CHECK(plant_test_deliver(h, "cicd.deploy",
					 "{\"deployment\": \"cd-5\", \"node\": \"node-b\", "
					 "\"state\": \"refused\", \"bundle\": \"x\"}") == PLANT_OK);
	CHECK(plant_test_deliver(h, "cicd.deploy", "{\"event\": \"node.ready\"}") == PLANT_OK);
	CHECK(plant_test_deploys(h) == 0);
	CHECK(plant_test_count(h, NULL) == 0);
	CHECK(plant_test_logged(h, "results must not reach") == 1);
	plant_test_free(h);
}

static void test_bad_requests(void)
{
	static const char *const bad[][2] = {
		{"[1, 2]", "JSON object"},
		{"\"deploy!\"", "JSON object"},
		{"{\"deployment\": \"cd-7\"}", "no \"bundle\""},
		{"{\"deployment\": \"cd-7\", \"bundle\": \"\"}", "no \"bundle\""},
		{"{\"deployment\": \"cd-7\", \"bundle\": \"/x\", \"instance\": 3}", "'instance'"},
		{"{\"deployment\": \"cd-7\", \"bundle\": \"/x\", \"grace\": [1]}", "'grace'"},
		{"{\"deployment\": \"cd-7\", \"bundle\": \"/x\", \"nodes\": {\"a\": 1}}",
		 "'nodes'"},
		{"{\"deployment\": 7, \"bundle\": \"/x\"}", "'deployment'"},
		{"{\"deployment\": \"cd-7\", \"bundle\": \"/x\"}", "no \"instance\""},
		{"{\"deployment\": \"cd-7\", \"bundle\": \"/x\", \"instance\": \"deployer\"}",
		 "its own instance"},
		{"{\"deployment\": \"cd-7\", \"bundle\": \"/x\", \"instance\": \"\"}",
		 "no \"instance\""},
	};
	struct plant_test_host *h = host("{}");
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		plant_test_clear(h);
		CHECK(plant_test_deliver(h, "cicd.deploy", bad[i][0]) == PLANT_OK);
		const json_t *r = last_result(h, "cicd.results");
		if (!r || !streq(field(r, "state"), "refused") ||
		    !strstr(field(r, "reason"), bad[i][1])) {
			fprintf(stderr, "request %s: %s\n", bad[i][0],
				r ? json_dumps(r, 0) : "no result");
			exit(1);
		}
		CHECK(field(r, "deployment") != NULL); /* the message's id at least */
		CHECK(streq(field(plant_test_last(h, "cicd.results"), "event"), "node.ready"));
	}
	CHECK(plant_test_deploys(h) == 0);
	CHECK(plant_test_counter(h, "refused") == sizeof bad / sizeof bad[0]);
	plant_test_free(h);
}

static void test_refused_answers(void)
{
	struct plant_test_host *h = host("{}");
	plant_test_clear(h);
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-8\", \"bundle\": \"/b/bad.bundle\", "
				 "\"instance\": \"meter\"}") == PLANT_OK);
	CHECK(plant_test_deploy_answer(
		      h, PLANT_E_INVALID,
		      "{\"id\": \"dep-3\", \"instance\": \"meter\", \"state\": "
		      "\"refused\", \"reason\": \"sha256 mismatch: manifest says A, "
		      "module is B\"}",
		      "sha256 mismatch: manifest says A, module is B") == PLANT_OK);
	const json_t *r = last_result(h, "cicd.results");
	CHECK(streq(field(r, "state"), "refused"));
	CHECK(strstr(field(r, "reason"), "sha256 mismatch"));
	CHECK(streq(field(r, "local_id"), "dep-3"));
	CHECK(streq(field(r, "instance"), "meter"));

	/* no record: the error text is the reason */
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-9\", \"bundle\": \"/b/bad.bundle\", "
				 "\"instance\": \"meter\"}") == PLANT_OK);
	CHECK(plant_test_deploy_answer(h, PLANT_E_INVALID, NULL, "'grace' must be a duration") ==
	      PLANT_OK);
	r = last_result(h, "cicd.results");
	CHECK(streq(field(r, "state"), "refused"));
	CHECK(streq(field(r, "reason"), "'grace' must be a duration"));
	CHECK(streq(field(r, "instance"), "meter"));
	CHECK(json_is_null(json_object_get(r, "local_id")));
	plant_test_free(h);

	/* a host that does not let this instance deploy */
	h = plant_test_new();
	plant_test_set_data_dir(h, data_dir);
	((struct plant_host_api *)plant_test_api(h))->deploy = refuse_deploy;
	CHECK(plant_test_start(h, &PLANT_PLUGIN_DESC, "{}") == PLANT_OK);
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-10\", \"bundle\": \"/b/x.bundle\", "
				 "\"instance\": \"m\"}") == PLANT_OK);
	r = last_result(h, "cicd.results");
	CHECK(streq(field(r, "state"), "refused"));
	CHECK(strstr(field(r, "reason"), "deploy.plugins"));
	plant_test_free(h);
}

static int file_exists(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0;
}

static void test_fetch(void)
{
	struct plant_test_host *h =
		host("{\"fetch_timeout\": \"5s\", \"fetch_token\": \"s3cret-token\"}");
	plant_test_clear(h);
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd/11\", \"bundle\": "
				 "\"http://a.example:8480/v1/cicd/bundles/cd-11.bundle\", "
				 "\"instance\": \"meter\"}") == PLANT_OK);
	CHECK(http.calls == 1);
	CHECK(streq(http.url, "http://a.example:8480/v1/cicd/bundles/cd-11.bundle"));
	CHECK(http.timeout_ms == 5000);
	CHECK(streq(http.auth, "Bearer s3cret-token"));
	CHECK(plant_test_deploys(h) == 0);
	http_answer(h, PLANT_OK, 200, "{\"format\": \"plantd-bundle/1\"}", NULL);
	CHECK(plant_test_deploys(h) == 1);
	const char *path = field(plant_test_deploy_request(h, 0), "bundle");
	char want[512];
	snprintf(want, sizeof want, "%s/bundles/", data_dir);
	CHECK(path && strncmp(path, want, strlen(want)) == 0);
	CHECK(strchr(path + strlen(want), '/') == NULL); /* the id's '/' tamed */
	char saved[1024];
	snprintf(saved, sizeof saved, "%s", path);
	char *data = NULL;
	size_t len = 0;
	FILE *f = fopen(saved, "r");
	CHECK(f != NULL);
	data = calloc(1, 256);
	len = fread(data, 1, 255, f);
	fclose(f);
	CHECK(len > 0 && strcmp(data, "{\"format\": \"plantd-bundle/1\"}") == 0);
	free(data);
	CHECK(plant_test_counter(h, "fetched") == 1);
	CHECK(plant_test_deploy_answer(h, PLANT_OK,
				       "{\"id\": \"dep-4\", \"instance\": \"meter\", \"state\": "
				       "\"deployed\", \"version\": \"2.0.0\"}",
				       NULL) == PLANT_OK);
	CHECK(!file_exists(saved)); /* removed once deployed */
	CHECK(streq(field(last_result(h, "cicd.results"), "deployment"), "cd/11"));

	/* 404 */
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-12\", \"bundle\": "
				 "\"https://a.example/nope.bundle\", \"instance\": \"m\"}") ==
	      PLANT_OK);
	http_answer(h, PLANT_OK, 404, "{\"error\": \"no such bundle\"}", NULL);
	const json_t *r = last_result(h, "cicd.results");
	CHECK(streq(field(r, "state"), "refused"));
	CHECK(strstr(field(r, "reason"), "HTTP 404") && strstr(field(r, "reason"), "no such"));
	CHECK(plant_test_deploys(h) == 0);

	/* a timeout */
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-13\", \"bundle\": "
				 "\"http://10.9.9.9/x.bundle\", \"instance\": \"m\"}") == PLANT_OK);
	http_answer(h, PLANT_E_TIMEOUT, 0, NULL, "Operation timed out after 5000 ms");
	r = last_result(h, "cicd.results");
	CHECK(streq(field(r, "state"), "refused"));
	CHECK(strstr(field(r, "reason"), "timeout") && strstr(field(r, "reason"), "5000 ms"));
	CHECK(plant_test_counter(h, "fetch_errors") == 2);

	/* the client refuses the call */
	http.refuse = PLANT_E_INVALID;
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-14\", \"bundle\": \"http://\", "
				 "\"instance\": \"m\"}") == PLANT_OK);
	CHECK(streq(field(last_result(h, "cicd.results"), "state"), "refused"));
	plant_test_free(h);
}

static void test_superseded(void)
{
	struct plant_test_host *h = host("{}");
	plant_test_clear(h);
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-20\", \"bundle\": \"/b/1.bundle\", "
				 "\"instance\": \"m\"}") == PLANT_OK);
	CHECK(plant_test_deploy_answer(h, PLANT_OK,
				       "{\"id\": \"dep-20\", \"instance\": \"m\", \"state\": "
				       "\"watching\", \"version\": \"1\"}",
				       NULL) == PLANT_OK);
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-21\", \"bundle\": \"/b/2.bundle\", "
				 "\"instance\": \"m\"}") == PLANT_OK);
	CHECK(plant_test_deploy_answer(h, PLANT_OK,
				       "{\"id\": \"dep-21\", \"instance\": \"m\", \"state\": "
				       "\"watching\", \"version\": \"2\"}",
				       NULL) == PLANT_OK);
	json_t *detail = NULL;
	CHECK(plant_test_health(h, &detail) == PLANT_OK);
	CHECK(json_integer_value(json_object_get(detail, "watching")) == 2);
	json_decref(detail);
	/* the host ends the older one's watch */
	CHECK(plant_test_deliver(h, "cicd.events",
				 "{\"event\": \"deploy.superseded\", \"id\": \"dep-20\", \"node\": "
				 "\"node-a\", \"instance\": \"m\", \"version\": \"1\", \"reason\": "
				 "\"deployment dep-21 replaced it\"}") == PLANT_OK);
	const json_t *r = last_result(h, "cicd.results");
	CHECK(streq(field(r, "state"), "superseded"));
	CHECK(streq(field(r, "deployment"), "cd-20"));
	CHECK(streq(field(r, "reason"), "deployment dep-21 replaced it"));
	/* and the newer one's rollback fails */
	CHECK(plant_test_deliver(h, "cicd.events",
				 "{\"event\": \"deploy.rollback_failed\", \"id\": \"dep-21\", "
				 "\"node\": \"node-a\", \"instance\": \"m\", \"reason\": \"x; the "
				 "rollback failed: y\"}") == PLANT_OK);
	r = last_result(h, "cicd.results");
	CHECK(streq(field(r, "state"), "rollback_failed"));
	CHECK(streq(field(r, "deployment"), "cd-21"));
	CHECK(plant_test_health(h, &detail) == PLANT_OK);
	CHECK(json_integer_value(json_object_get(detail, "watching")) == 0);
	json_decref(detail);
	plant_test_free(h);
}

static void test_stop_with_work(void)
{
	/* requests in flight when the instance goes: freed, nothing published */
	struct plant_test_host *h = host("{}");
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-30\", \"bundle\": \"/b/1.bundle\", "
				 "\"instance\": \"m\"}") == PLANT_OK);
	CHECK(plant_test_deliver(h, "cicd.deploy",
				 "{\"deployment\": \"cd-31\", \"bundle\": \"http://x/1.bundle\", "
				 "\"instance\": \"m\"}") == PLANT_OK);
	plant_test_free(h);
}

int main(void)
{
	CHECK(mkdtemp(data_dir) != NULL);
	test_ready();
	test_validate();
	test_deploy_watch_deployed();
	test_deployed_at_once_and_rolled_back();
	test_early_event();
	test_not_for_us();
	test_bad_requests();
	test_refused_answers();
	test_fetch();
	test_superseded();
	test_stop_with_work();
	char cmd[256];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", data_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", data_dir);
	printf("cicd_deployer: all tests passed\n");
	return 0;
}
