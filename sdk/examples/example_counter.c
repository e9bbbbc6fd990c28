/* example_counter: the plantd plugin to copy when you start a new one.
 *
 * Every `every` it publishes {"n": <sequence>, "instance": "<name>"} on
 * `topic`. When `listen` is set it also subscribes to that pattern and logs
 * each message it receives. It shows, in one small file, everything a plugin
 * usually needs: a config key table, validate(), init() with a timer and a
 * subscription, a metric, health() and the teardown.
 *
 * Ground rules (see plantd/plantd.h for the full contract):
 *   - Include <plantd/plantd.h> and nothing of the host: every host service
 *     arrives in the `api` table handed to init().
 *   - Export exactly one symbol, PLANT_PLUGIN_DESC, with PLANT_EXPORT; build
 *     with -fvisibility=hidden and keep everything else static, so that two
 *     plugins can never clash over a symbol name.
 *   - Callbacks tagged [instance] never run concurrently for one instance,
 *     so per-instance state needs no locks. Avoid global mutable state: the
 *     same module may run as many instances at once.
 *
 * Example configuration (libconfig):
 *
 *   plugins = (
 *     { name = "ticker"; module = "example_counter"; every = "250ms";
 *       topic = "demo.count"; listen = "demo.*"; }
 *   );
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>

#include <plantd/plantd.h>

/* The smallest period we accept. Faster is almost certainly a mistake (a
 * bare number is seconds, a unit is easy to get wrong) and would flood the
 * bus and the log. */
#define MIN_EVERY_MS 10

/* The keys this module reads. The host checks each instance's settings
 * against this table before validate() or init() runs: unknown keys, missing
 * required keys and wrong types are reported with file and line, and absent
 * keys get their default. So the plugin itself can rely on every key with a
 * default being present and of the right type. Defaults are JSON text. */
static const struct plant_config_key config_keys[] = {
	{
		.name = "topic",
		.type = PLANT_CFG_STRING,
		.default_value = "\"example.count\"",
		.description = "topic the counter is published on",
	},
	{
		.name = "every",
		.type = PLANT_CFG_DURATION,
		.default_value = "\"1s\"",
		.description = "publishing period (at least 10ms)",
	},
	{
		.name = "listen",
		.type = PLANT_CFG_STRING,
		.description = "optional topic pattern to subscribe to and log",
	},
	{.name = NULL, .type = PLANT_CFG_END},
};

/* Per-instance state: everything lives here, nothing in globals. */
struct counter {
	plant_instance *self;
	const struct plant_host_api *api;
	const char *name;   /* [borrowed] from the host, valid until destroy() */
	const char *topic;  /* [borrowed] from the config, valid until destroy() */
	uint64_t seq;	    /* ticks so far, the "n" of the last message */
	uint64_t published; /* messages the bus accepted */
	uint64_t received;  /* messages seen on `listen` */
};

/* The checks shared by validate() and init(). validate() runs for `plantd
 * --check` and before a reload, but the host does not promise to call it
 * before every init(), so init() repeats them: a plugin must never start
 * with settings it would have refused. */
static int check_config(plant_instance *self, const struct plant_host_api *api,
			const json_t *config, uint64_t *every_out)
{
	const json_t *every = json_object_get(config, "every");

	/* A duration key reaches the plugin as an integer number of ms. */
	if (!json_is_integer(every) || json_integer_value(every) < MIN_EVERY_MS) {
		api->error(self, "every", "must be at least %dms", MIN_EVERY_MS);
		return PLANT_E_CONFIG;
	}
	if (every_out)
		*every_out = (uint64_t)json_integer_value(every);
	return PLANT_OK;
}

/* validate() [main]: semantic checks the key table cannot express. It must
 * not start anything or keep anything: the instance may never be created
 * (a --check run, a reload that is refused). Report with api->error(), naming
 * the key at fault, and return non-OK; the last error wins. */
static int counter_validate(plant_instance *self, const struct plant_host_api *api,
			    const json_t *config)
{
	return check_config(self, api, config, NULL);
}

/* Timer callback [instance]. Runs on a worker thread, never at the same time
 * as another callback of this instance, so it touches the state freely. It
 * must return quickly: a long tick delays every other callback of the
 * instance, and ticks due meanwhile are skipped, not queued. */
static void counter_tick(void *state, void *user)
{
	struct counter *c = state;
	json_t *body;
	int rc;

	(void)user;
	c->seq++;
	body = json_pack("{s:I, s:s}", "n", (json_int_t)c->seq, "instance", c->name);
	if (!body) {
		c->api->log(c->self, PLANT_LOG_ERROR, "out of memory building a message");
		return;
	}
	/* publish() steals `body`, even when it fails: never decref it after. */
	rc = c->api->publish(c->self, c->topic, body);
	if (rc != PLANT_OK) {
		/* PLANT_E_FULL (a subscriber applies backpressure) or
		 * PLANT_E_STATE (shutting down) are normal; this message is
		 * simply lost and the next tick tries again. */
		c->api->log(c->self, PLANT_LOG_DEBUG, "publish on %s failed: %s", c->topic,
			    plant_status_name(rc));
		return;
	}
	/* the host counts every accepted publish itself (the instance's
	 * "published" counter in /metrics): only our own figure to keep */
	c->published++;
}

/* Message handler [instance]. Messages come in batches to amortise the
 * hand-over between threads; each message is [borrowed] for this call only
 * (json_incref() the body, or copy strings, to keep anything). A non-OK
 * return counts as an error of the instance and is logged by the host, which
 * then goes on with the next batch: do not count on seeing a batch again. */
static int counter_on_message(void *state, const plant_msg *const *msgs, size_t n, void *user)
{
	struct counter *c = state;

	(void)user;
	for (size_t i = 0; i < n; i++) {
		size_t len = 0;
		/* The body as compact JSON text; cheaper than msg_body(),
		 * which parses it, when all we do is print it. */
		const char *text = c->api->msg_body_text(msgs[i], &len);

		c->api->log(c->self, PLANT_LOG_INFO, "received %s: %.*s",
			    c->api->msg_topic(msgs[i]), (int)len, text);
		c->received++;
	}
	return PLANT_OK;
}

/* init() [main]: create the instance. `config` has every default filled in
 * and stays valid until destroy(), so strings from it can be kept without
 * copying. Timers and subscriptions made here belong to the instance: the
 * host removes them itself when the instance stops (or when init() fails),
 * so we never cancel them by hand. On failure, free what was allocated here:
 * destroy() is not called after a failed init(). */
static int counter_init(plant_instance *self, const struct plant_host_api *api,
			const json_t *config, void **state_out)
{
	struct counter *c;
	const char *listen;
	uint64_t every_ms;
	int rc;

	rc = check_config(self, api, config, &every_ms);
	if (rc != PLANT_OK)
		return rc;

	c = calloc(1, sizeof(*c));
	if (!c) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	c->self = self;
	c->api = api;
	c->name = api->instance_name(self);
	c->topic = json_string_value(json_object_get(config, "topic"));

	/* An optional key without a default is simply absent. */
	listen = json_string_value(json_object_get(config, "listen"));
	if (listen) {
		rc = api->subscribe(self, listen, counter_on_message, NULL, NULL);
		if (rc != PLANT_OK) {
			api->error(self, "listen", "cannot subscribe to \"%s\": %s", listen,
				   plant_status_name(rc));
			free(c);
			return rc;
		}
	}

	/* No jitter: one instance, one steady beat. Give a jitter when many
	 * instances would otherwise fire in lockstep. */
	rc = api->timer_add(self, every_ms, 0, counter_tick, NULL, NULL);
	if (rc != PLANT_OK) {
		api->error(self, "every", "cannot add a timer: %s", plant_status_name(rc));
		free(c);
		return rc;
	}

	*state_out = c;
	return PLANT_OK;
}

/* start() is optional and not needed here. Give one when the work must wait
 * until every instance of the site is initialised, e.g. a first publish that
 * other instances should not miss. */

/* stop() [instance]: the host has already removed our timer and subscription
 * and waited for running callbacks, so nothing else arrives. This is the
 * place to flush or say goodbye, not to free: destroy() follows and owns the
 * state. */
static void counter_stop(void *state)
{
	struct counter *c = state;

	c->api->log(c->self, PLANT_LOG_DEBUG,
		    "stopping after %" PRIu64 " published, %" PRIu64 " received", c->published,
		    c->received);
}

/* destroy() [main]: free everything, exactly once. Called after stop(), or
 * after a start() that failed; never after a failed init(). */
static void counter_destroy(void *state)
{
	free(state);
}

/* health() [instance]: answer quickly from the state, without blocking.
 * PLANT_OK means healthy; the optional detail is a [new] reference that the
 * host takes over and shows in its health report. */
static int counter_health(void *state, json_t **detail_out)
{
	const struct counter *c = state;

	*detail_out = json_pack("{s:I}", "published", (json_int_t)c->published);
	return PLANT_OK;
}

/* The one exported symbol. PLANT_PLUGIN_HEADER fills in the ABI version and
 * the struct size the host checks before touching anything else. */
PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER,
	.name = "example_counter",
	.version = "1.0.0",
	.description = "publishes a counter periodically; optionally logs what it hears",
	.config_keys = config_keys,
	.validate = counter_validate,
	.init = counter_init,
	.stop = counter_stop,
	.destroy = counter_destroy,
	.health = counter_health,
};
