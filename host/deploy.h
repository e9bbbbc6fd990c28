/* Deployments: a new version of one instance's plugin, from a bundle
 * (host/bundle.h), put into the running site — verified (hash, signature
 * when the site requires one, ABI), the running version drained and
 * swapped, the new one watched for a grace period and rolled back when its
 * health fails. What was deployed is kept in DATA_DIR/deployed.json (it
 * survives restarts and reloads of the site's files) and every step in
 * DATA_DIR/deployments.jsonl, and published on the topic cicd.events.
 * [main loop] */
#ifndef PLANTD_DEPLOY_H
#define PLANTD_DEPLOY_H

#include <stddef.h>
#include <jansson.h>

struct deploy;
struct site;
struct site_config;

#define DEPLOY_TOPIC "cicd.events"

/* Read DATA_DIR/deployed.json (none yet: nothing deployed). */
int deploy_open(const char *data_dir, struct deploy **out, char *err, size_t errlen);
/* The site to act on, once it runs (NULL before it goes). */
void deploy_attach(struct deploy *d, struct site *site);
void deploy_free(struct deploy *d);

/* Give the site's instances their deployed versions: module file and
 * settings. An instance the files no longer define is skipped (warned). */
int deploy_merge(struct deploy *d, struct site_config *cfg, char *err, size_t errlen);

/* Start a deployment: {"bundle": PATH, "instance": NAME (default: the
 * bundle's module name), "grace": DURATION (default: the site's
 * deploy.grace, else 10 s)}. Checks and the swap happen now; *result_out
 * ([new]) is the deployment record ({"id", "instance", "version", "state",
 * "reason"...}) whose state is "watching" (swapped, in its grace period),
 * "deployed" (no grace) or "refused" (with "reason"; the running version as
 * it was or, when the new one failed to start, running again). Returns
 * PLANT_OK when swapped, else the refusal's status. */
int deploy_start(struct deploy *d, const json_t *request, json_t **result_out, char *err,
		 size_t errlen);

/* Put the previous version of instance `name` back (plantctl rollback). */
int deploy_rollback(struct deploy *d, const char *name, const char *why, json_t **result_out,
		    char *err, size_t errlen);

/* Instance `name` left the site (plantctl unload): stop watching it and
 * forget its deployed version. */
void deploy_forget(struct deploy *d, const char *name);

/* The history: every deployment record, oldest first ([new]); or one. */
json_t *deploy_list(struct deploy *d);
json_t *deploy_get(struct deploy *d, const char *id);

/* Stop watching (shutdown): deployments in their grace period stay as they
 * are. */
void deploy_stop(struct deploy *d);

#endif
