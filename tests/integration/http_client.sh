#!/usr/bin/env bash
# The host's HTTP client (SDK 1.6, issue 7), through the fx_http fixture's
# routes: a waiting call and an asynchronous one get the answer, its status
# and headers; the request's own headers go out; a refused connection and a
# timeout come back as such with curl's reason; a signed call carries an AWS
# SigV4 Authorization for the service and region of the site's `aws`
# settings, and without credentials is refused as a config error; a call in
# flight when plantd stops ends at once; /metrics counts the outcomes.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v jq >/dev/null || fail "jq is needed"
CONF=$TEST_TMP/site.conf
DATA=$TEST_TMP/data

site() { # site AWS_BLOCK
  cat >"$CONF" <<CONF
site = "it-client";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR";
$1
listeners = (
  { name = "admin"; admin = true; port = 0; },
  { name = "ingest"; port = 0; },
  { name = "slow"; port = 0; }
);
# (sleepy first: instances stop last first, so web stops while sleepy
# still sleeps on a request of web's)
plugins = (
  { name = "sleepy"; module = "fx_http"; listener = "slow"; slow = "5s"; },
  { name = "web"; module = "fx_http"; }
);
CONF
}

# the site's own settings, not the caller's
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_REGION AWS_DEFAULT_REGION

site 'aws = { region = "eu-west-3"; access_key_id = "AKIDTEST"; secret_access_key = "s3cr3t"; };'
start_plantd -c "$CONF"
wait_urls "$DATA"
A=$(url_of "$DATA" admin)
I=$(url_of "$DATA" ingest)
S=$(url_of "$DATA" slow)

say "waiting and asynchronous calls"
req GET "$I/fx/fetch?$A/v1/plugins"
expect_code 200 "fetch"
[[ $(jq -r '.status + " " + (.http_status | tostring) + " " + .content_type' <<<"$BODY") == \
  "ok 200 application/json" ]] || fail "fetch: $BODY"
[[ $(jq -r '.body | fromjson | .plugins | map(.name) | join(",")' <<<"$BODY") == "sleepy,web" ]] ||
  fail "the fetched body: $BODY"
req POST "$I/fx/fetch_async" -d "$A/healthz"
expect_code 200 "fetch_async"
[[ $(jq -r '.status + " " + (.http_status | tostring) + " " + (.body | fromjson | .status)' <<<"$BODY") == \
  "ok 200 ok" ]] || fail "fetch_async: $BODY"
req GET "$I/fx/fetch?$A/nothing"
[[ $(jq -r '(.http_status | tostring) + " " + .status' <<<"$BODY") == "404 ok" ]] ||
  fail "a 404 is an answer: $BODY"
# (another instance's route: web's own would wait for web, which waits)
req GET "$I/fx/fetch?$S/fx/echo"
[[ $(jq -r '.body | fromjson | .x_from' <<<"$BODY") == fx_http ]] || fail "request headers: $BODY"

say "a refused connection"
req GET "$I/fx/fetch?http://127.0.0.1:1/x"
[[ $(jq -r .status <<<"$BODY") == "i/o error" && $(jq -r .error <<<"$BODY") == *"onnect"* ]] ||
  fail "a refused connection: $BODY"

say "SigV4 with the site's credentials and region"
req GET "$I/fx/fetch?sqs:$S/fx/echo"
auth=$(jq -r '.body | fromjson | .authorization' <<<"$BODY")
[[ $auth =~ ^AWS4-HMAC-SHA256\ Credential=AKIDTEST/[0-9]{8}/eu-west-3/sqs/aws4_request,\ SignedHeaders=.*,\ Signature=[0-9a-f]{64}$ ]] ||
  fail "the Authorization header: $auth"

say "a timeout"
req GET "$I/fx/fetch?$S/fx/slow"
[[ $(jq -r .status <<<"$BODY") == timeout ]] || fail "a 2 s timeout on a 5 s answer: $BODY"

say "metrics count the outcomes"
req GET "$A/metrics"
grep -q '^plantd_http_client_requests_total{outcome="timeout"} 1$' <<<"$BODY" || fail "timeout metric"
grep -q '^plantd_http_client_requests_total{outcome="failed"} 1$' <<<"$BODY" || fail "failed metric"
stop_plantd
expect_exit 0

say "a signed call without credentials is a config error"
site ''
start_plantd -c "$CONF"
wait_urls "$DATA"
I=$(url_of "$DATA" ingest)
req GET "$I/fx/fetch?sqs:$(url_of "$DATA" slow)/fx/echo"
[[ $(jq -r .status <<<"$BODY") == "config error" ]] || fail "without credentials: $BODY"

say "a call in flight when plantd stops ends at once"
S=$(url_of "$DATA" slow)
curl -s -o "$TEST_TMP/inflight" --max-time 20 -X POST "$I/fx/fetch_async" -d "$S/fx/slow" &
cpid=$!
_BG_PIDS+=("$cpid")
sleep 0.5
start=$(date +%s%N)
send_signal TERM
wait "$cpid" || true
_forget_pid "$cpid"
ms=$((($(date +%s%N) - start) / 1000000))
((ms < 2000 * TIME_FACTOR)) || fail "the call in flight ended $ms ms after SIGTERM"
wait_exit 20
expect_exit 0
[[ $(jq -r .status "$TEST_TMP/inflight" 2>/dev/null) == "bad state" ]] ||
  fail "the call in flight: $(cat "$TEST_TMP/inflight")"
say "ok"
