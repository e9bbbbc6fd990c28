#!/usr/bin/env bash
# Deployments across nodes (issue 9): cicd_notifier on node a, a
# cicd_deployer on nodes a and b, deploy requests and results relayed to
# every node by transport_sns over fauxqs.
#
# Topics (the same on every node; no loops, since what comes in from SNS
# goes to a topic no out side forwards):
#   notifier --publish--> cicd.deploy  --sns_deploy-->  cluster.cicd.deploy  --> deployer (listen)
#   deployer --results--> cicd.results --sns_results--> cluster.cicd.results --> notifier (results)
# The host's own steps stay on each node's cicd.events, which its deployer
# follows.
#
# - both nodes announce node.ready; node a's notifier lists them (its
#   listener wants a token; the deployers fetch with `fetch_token`);
# - a bundle of fx_meter 2.0.0 (plantd-bundle pack), POSTed to node a's
#   notifier: each node fetches it by URL from the notifier's route, its
#   "meter" runs 2.0.0 after the grace period (GET /v1/plugins on each
#   node's admin listener), the report says deployed for both, complete,
#   on cicd.reports and in node a's log (one line per node);
# - a bundle with a wrong hash: refused on both nodes with the reason
#   (sha256), reported so, the meters still at 2.0.0;
# - node b stopped: a deployment of 1.0.0 with a short timeout reports node
#   a deployed and node b silent, incomplete;
# - both nodes stop cleanly.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=lib_aws.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib_aws.sh"

command -v jq >/dev/null || fail "jq is needed"
command -v curl >/dev/null || fail "curl is needed"
need_aws_peers
BUNDLE=$PLANTD_BUILD_ROOT/tools/plantd-bundle
CURL_MAX=$((10 * TIME_FACTOR))

declare -A NODE_PID NODE_ADMIN
NOTIFIER_URL=
# node a's cicd listener wants it; the deployers fetch bundles with it
TOKEN=cicd-test-token-0123
AUTH=(-H "Authorization: Bearer $TOKEN")

# node_conf NAME EXTRA_PLUGINS EXTRA_LISTENERS: node NAME's site.
node_conf() {
  local n=$1 extra_plugins=${2:-} extra_listeners=${3:-}
  mkdir -p "$TEST_TMP/$n"
  cat >"$TEST_TMP/$n/site.conf" <<CONF
site = "node-$n";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/plugins";
listeners = (
  { name = "admin"; admin = true; address = "127.0.0.1"; port = 0; }$extra_listeners
);
queues = ( { name = "readings"; subscribe = [ "meter.in" ]; } );
deploy = { plugins = [ "deployer" ]; grace = "1s"; };
plugins = (
  { name = "sns_deploy"; module = "transport_sns"; endpoint = "$FAUXQS_URL";
    topic_name = "plantd-cicd-deploy"; subscribe = [ "cicd.deploy" ];
    receive_queue = "node-$n-cicd-deploy"; publish_topic = "cluster.cicd.deploy";
    retry_base = "50ms"; retry_max = "1s"; timeout = "5s"; },
  { name = "sns_results"; module = "transport_sns"; endpoint = "$FAUXQS_URL";
    topic_name = "plantd-cicd-results"; subscribe = [ "cicd.results" ];
    receive_queue = "node-$n-cicd-results"; publish_topic = "cluster.cicd.results";
    retry_base = "50ms"; retry_max = "1s"; timeout = "5s"; },
  { name = "meter"; module = "fx_meter_v1"; queue = "readings"; out = "meter.out"; },
  { name = "deployer"; module = "cicd_deployer"; listen = "cluster.cicd.deploy";
    ready_every = "2s"; fetch_timeout = "10s"; fetch_token = "$TOKEN"; },
  { name = "sink"; module = "log_sink"; path = "out.jsonl";
    subscribe = [ "cicd.reports", "cicd.events", "cluster.cicd.results" ]; }$extra_plugins
);
CONF
}

# use_node NAME: the lib.sh helpers (logs, waits, fail's output) now look
# at node NAME.
# shellcheck disable=SC2034 # lib.sh's variables
use_node() {
  LOG=$TEST_TMP/$1/plantd.log
  OUT=$TEST_TMP/$1/plantd.out
  PLANTD_PID=${NODE_PID[$1]:-}
  STATUS=
}

start_node() {
  use_node "$1"
  rm -f "$TEST_TMP/$1/data/listeners.json"
  start_plantd -c "$TEST_TMP/$1/site.conf"
  NODE_PID[$1]=$PLANTD_PID
  wait_urls "$TEST_TMP/$1/data"
  NODE_ADMIN[$1]=$(url_of "$TEST_TMP/$1/data" admin)
  for t in deploy results; do
    wait_for_log "receiving SNS topic arn:[^ ]*:plantd-cicd-$t through SQS queue [^ ]*node-$1-cicd-$t" 20
  done
}

stop_node() {
  use_node "$1"
  stop_plantd TERM "${2:-20}"
  expect_exit 0
  NODE_PID[$1]=
}

# meter_version NODE: "VERSION STATE" of instance meter on NODE.
meter_version() {
  curl -sf --max-time "$CURL_MAX" "${NODE_ADMIN[$1]}/v1/plugins" |
    jq -r '.plugins[] | select(.name == "meter") | "\(.version) \(.state)"'
}

meter_is() { # NODE VERSION
  [[ $(meter_version "$1") == "$2 running" ]]
}

# counter NODE INSTANCE NAME: a plugin counter on /metrics (0 when absent).
counter() {
  local v
  v=$(curl -sf --max-time "$CURL_MAX" "${NODE_ADMIN[$1]}/metrics" |
    sed -n "s/^plantd_instance_counter{instance=\"$2\",name=\"$3\"} \\([0-9]*\\)\$/\\1/p")
  echo "${v:-0}"
}

nodes_seen() { # N: the notifier lists N nodes ready
  local got
  got=$(curl -sf --max-time "$CURL_MAX" "${AUTH[@]}" "$NOTIFIER_URL/v1/cicd/nodes" | jq '.nodes | length') || return 1
  [[ $got == "$1" ]]
}

# deploy JSON: POST a deployment to node a's notifier; its id in DEP.
deploy() {
  req POST "$NOTIFIER_URL/v1/cicd/deployments" "${AUTH[@]}" -H 'Content-Type: application/json' \
    --data-binary "$1"
  expect_code 202 "POST /v1/cicd/deployments $1"
  DEP=$(jq -r .deployment <<<"$BODY")
  [[ $DEP == cd-* ]] || fail "no deployment id in $BODY"
}

# report ID: the notifier's view of a deployment, in REPORT.
report() {
  REPORT=$(curl -sf --max-time "$CURL_MAX" "${AUTH[@]}" "$NOTIFIER_URL/v1/cicd/deployments/$1")
}

finished() {
  report "$1" && [[ $(jq -r .finished <<<"$REPORT") == true ]]
}

node_state() { # NODE: its state in REPORT
  jq -r --arg n "node-$1" '.nodes[$n].state' <<<"$REPORT"
}

# reported ID: the report of ID is in node a's sink (cicd.reports).
reported() {
  [[ -f $TEST_TMP/a/data/out.jsonl ]] &&
    jq -se --arg id "$1" 'any(.[]; .topic == "cicd.reports" and .body.deployment == $id)' \
      "$TEST_TMP/a/data/out.jsonl" >/dev/null
}

say "fauxqs, two nodes: a with the notifier, b"
start_fauxqs 0
CICD_PORT=$(_free_port)
NOTIFIER_URL=http://127.0.0.1:$CICD_PORT
node_conf a ",
  { name = \"cicd\"; module = \"cicd_notifier\"; results = \"cluster.cicd.results\";
    nodes = [ \"node-a\", \"node-b\" ]; timeout = \"30s\"; listener = \"cicd\";
    public_url = \"$NOTIFIER_URL\"; }" ",
  { name = \"cicd\"; address = \"127.0.0.1\"; port = $CICD_PORT; tokens = [ \"$TOKEN\" ]; }"
node_conf b
start_node a
start_node b
use_node a
wait_until 20 "node a's notifier sees both nodes ready" nodes_seen 2
meter_is a 1.0.0 || fail "meter on a: $(meter_version a)"
meter_is b 1.0.0 || fail "meter on b: $(meter_version b)"
req GET "$NOTIFIER_URL/v1/cicd/nodes"
expect_code 401 "the notifier's routes without a token"

say "pack fx_meter 2.0.0 and deploy it to both nodes"
cd "$TEST_TMP"
for v in v1 v2; do
  "$BUNDLE" pack "$PLANTD_FIXTURE_DIR/fx_meter_$v.so" -o "$TEST_TMP/meter-$v.bundle" >/dev/null ||
    fail "plantd-bundle pack fx_meter_$v.so failed"
done
deploy "{\"bundle\": \"$TEST_TMP/meter-v2.bundle\", \"instance\": \"meter\", \"grace\": \"1s\"}"
jq -e '.nodes == ["node-a", "node-b"] and (.bundle | test("^http://127.0.0.1:[0-9]+/v1/cicd/bundles/cd-.*\\.bundle$"))' \
  <<<"$BODY" >/dev/null || fail "the answer: $BODY"
wait_until 30 "the report of $DEP" finished "$DEP"
jq -e '.complete == true and .deployed == true and
  ([.nodes[] | select(.state == "deployed" and .version == "2.0.0" and .previous_version == "1.0.0")] | length) == 2' \
  <<<"$REPORT" >/dev/null || fail "report of $DEP: $REPORT"
meter_is a 2.0.0 || fail "meter on a after the deployment: $(meter_version a)"
meter_is b 2.0.0 || fail "meter on b after the deployment: $(meter_version b)"
for n in a b; do
  [[ $(counter "$n" deployer fetched) == 1 ]] || fail "node $n fetched $(counter "$n" deployer fetched) bundles, not 1"
done
wait_until 5 "the report on cicd.reports" reported "$DEP"
expect_in_log -E "deployment $DEP: node node-a: deployed 2\\.0\\.0"
expect_in_log -E "deployment $DEP: node node-b: deployed 2\\.0\\.0"
expect_in_log -F "deployment $DEP of $TEST_TMP/meter-v2.bundle to meter: complete, 2 of 2 nodes deployed"
# the host's history on b says who asked
curl -sf "${NODE_ADMIN[b]}/v1/deployments" |
  jq -e --arg id "$DEP" '.deployments[-1] | .state == "deployed" and (.by | contains($id))' >/dev/null ||
  fail "b's history: $(curl -sf "${NODE_ADMIN[b]}/v1/deployments")"
# readiness after the deployment carries what was deployed
nodes_deployed() {
  curl -sf --max-time "$CURL_MAX" "${AUTH[@]}" "$NOTIFIER_URL/v1/cicd/nodes" |
    jq -e '[.nodes[] | select(.deployed.meter == "2.0.0")] | length == 2' >/dev/null
}
wait_until 10 "node.ready with meter 2.0.0 from both nodes" nodes_deployed

say "a bundle with a wrong hash: refused on both, the meters untouched"
jq '.module |= (.[0:4000] + (if .[4000:4001] == "A" then "B" else "A" end) + .[4001:])' \
  "$TEST_TMP/meter-v2.bundle" >"$TEST_TMP/bad-hash.bundle"
cmp -s "$TEST_TMP/meter-v2.bundle" "$TEST_TMP/bad-hash.bundle" && fail "the tampered bundle is the same"
deploy "{\"bundle\": \"$TEST_TMP/bad-hash.bundle\", \"instance\": \"meter\"}"
wait_until 30 "the report of $DEP" finished "$DEP"
jq -e '.complete == true and .deployed == false and
  ([.nodes[] | select(.state == "refused" and (.reason | test("sha256")))] | length) == 2' \
  <<<"$REPORT" >/dev/null || fail "report of the bad bundle $DEP: $REPORT"
meter_is a 2.0.0 || fail "meter on a after the refusal: $(meter_version a)"
meter_is b 2.0.0 || fail "meter on b after the refusal: $(meter_version b)"
expect_in_log -E "deployment $DEP: node node-b: refused.*sha256"
wait_until 5 "the report on cicd.reports" reported "$DEP"

say "node b down: silent after the timeout"
stop_node b
use_node a
deploy "{\"bundle\": \"$TEST_TMP/meter-v1.bundle\", \"instance\": \"meter\", \"grace\": \"0s\", \"timeout\": \"4s\"}"
wait_until 20 "the report of $DEP" finished "$DEP"
[[ $(node_state a) == deployed && $(node_state b) == silent ]] || fail "report with b down: $REPORT"
jq -e '.complete == false and .deployed == false and (.nodes["node-b"].reason | test("no final result"))' \
  <<<"$REPORT" >/dev/null || fail "report with b down: $REPORT"
meter_is a 1.0.0 || fail "meter on a: $(meter_version a)"
expect_in_log -E "deployment $DEP: node node-b: silent"
expect_in_log -F "deployment $DEP of $TEST_TMP/meter-v1.bundle to meter: incomplete, 1 of 2 nodes deployed"

stop_node a
say "ok"
