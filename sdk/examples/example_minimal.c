/* example_minimal: the smallest useful plantd plugin, shown in full in
 * sdk/README.md ("A first plugin"). Every `every` it publishes {"n": N} on
 * `topic`:
 *
 *   plugins = ( { name = "hello"; module = "example_minimal"; topic = "demo.hello"; } );
 */
#include <stdlib.h>

#include <plantd/plantd.h>

/* The keys this module reads: the host checks them before init() runs. */
static const struct plant_config_key keys[] = {
	{"topic", PLANT_CFG_STRING, 1, NULL, "topic to publish on (required)"},
	{"every", PLANT_CFG_DURATION, 0, "\"1s\"", "how often"},
	{NULL, PLANT_CFG_END, 0, NULL, NULL},
};

/* One instance's state: the module may run as many instances as the site
 * configures, so nothing lives in globals. */
struct hello {
	plant_instance *self;
	const struct plant_host_api *api;
	const char *topic; /* [borrowed] from the config, valid until destroy() */
	json_int_t n;
};

/* [instance] A timer tick: never concurrent with another callback of this
 * instance, so the state needs no lock. */
static void hello_tick(void *state, void *user)
{
	struct hello *h = state;
	(void)user;
	h->n++;
	/* publish() steals the body, even when it fails */
	int rc = h->api->publish(h->self, h->topic, json_pack("{s:I}", "n", h->n));
	if (rc != PLANT_OK)
		h->api->log(h->self, PLANT_LOG_WARN, "publish on %s: %s", h->topic,
			    plant_status_name(rc));
}

/* [main] Set up one instance. The timer belongs to the instance: the host
 * removes it when the instance stops. */
static int hello_init(plant_instance *self, const struct plant_host_api *api, const json_t *config,
		      void **state_out)
{
	struct hello *h = calloc(1, sizeof *h);
	if (!h) {
		api->error(self, NULL, "out of memory");
		return PLANT_E_NOMEM;
	}
	h->self = self;
	h->api = api;
	h->topic = json_string_value(json_object_get(config, "topic"));
	/* a duration arrives as an integer of milliseconds */
	json_int_t every = json_integer_value(json_object_get(config, "every"));
	int rc = api->timer_add(self, (uint64_t)every, 0, hello_tick, NULL, NULL);
	if (rc != PLANT_OK) {
		api->error(self, "every", "cannot tick every %" JSON_INTEGER_FORMAT " ms: %s",
			   every, plant_status_name(rc));
		free(h); /* destroy() is never called after a failed init() */
		return rc;
	}
	*state_out = h;
	return PLANT_OK;
}

/* [main] Free the state, once, after the instance stopped. */
static void hello_destroy(void *state)
{
	free(state);
}

/* The one symbol the module exports. */
PLANT_EXPORT const struct plant_plugin_desc PLANT_PLUGIN_DESC = {
	PLANT_PLUGIN_HEADER, /* the ABI version and size the host checks first */
	.name = "example_minimal",
	.version = "1.0.0",
	.description = "publishes a counter on a timer",
	.config_keys = keys,
	.init = hello_init,	  /* required */
	.destroy = hello_destroy, /* optional, like every other callback */
};
