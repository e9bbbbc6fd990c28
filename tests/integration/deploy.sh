#!/usr/bin/env bash
# Deployments on one node (issue 9): a new version of a plugin, packed with
# plantd-bundle and deployed with plantctl into a running site.
#
# - under load (a producer feeding a queue the plugin consumes): every
#   reading is processed exactly once across the swap, those after it by the
#   new version (its output carries its version); the steps are published on
#   cicd.events and kept in the history;
# - refused, the running version untouched and the reason in the answer,
#   the history and the event: a wrong hash, an ABI newer than the host, a
#   module whose init() fails (the running version runs again), an unknown
#   instance;
# - a version whose health fails within the grace period is rolled back by
#   itself; `plantctl rollback` puts the previous version back; with nothing
#   left to roll back it says so;
# - a deployed version survives a restart (DATA_DIR/deployed.json);
# - with deploy.require_signature, an unsigned bundle and one signed by an
#   untrusted key are refused; one signed by a trusted key is deployed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v jq >/dev/null || fail "jq is needed"
command -v openssl >/dev/null || fail "openssl is needed"
PLANTCTL=$PLANTD_BUILD_ROOT/tools/plantctl
BUNDLE=$PLANTD_BUILD_ROOT/tools/plantd-bundle
unset PLANTD_URL PLANTD_TOKEN

CONF=$TEST_TMP/site.conf
DATA=$TEST_TMP/data
OUTF=$DATA/out.jsonl
COUNT=3000

site() { # [EXTRA ROOT SETTINGS] [EXTRA PLUGIN ENTRIES]
  cat >"$CONF" <<CONF
site = "it-deploy";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/plugins";
listeners = ( { name = "admin"; admin = true; address = "127.0.0.1"; port = 0; } );
queues = ( { name = "readings"; subscribe = [ "meter.in" ]; } );
plugins = (
  { name = "gen"; module = "fx_producer"; topic = "meter.in"; count = $COUNT; batch = 10;
    every = "10ms"; },
  { name = "meter"; module = "fx_meter_v1"; queue = "readings"; out = "meter.out"; },
  { name = "sink"; module = "log_sink"; subscribe = [ "meter.out", "cicd.events" ];
    path = "out.jsonl"; }${2:+,
  $2}
);
${1:-}
CONF
}

ctl() {
  RC=0
  "$PLANTCTL" "$@" >"$TEST_TMP/ctl.out" 2>"$TEST_TMP/ctl.err" </dev/null || RC=$?
  COUT=$(cat "$TEST_TMP/ctl.out")
  CERR=$(cat "$TEST_TMP/ctl.err")
}

start_site() {
  start_plantd -c "$CONF"
  wait_urls "$DATA"
  PLANTD_URL=$(url_of "$DATA" admin)
  export PLANTD_URL
}

meter_version() { # the running meter's version and state
  ctl --json plugins
  jq -r '.plugins[] | select(.name == "meter") | "\(.version) \(.state)"' <<<"$COUT"
}

outputs() { # how many readings the sink has from the meter
  [[ -f $OUTF ]] || {
    echo 0
    return
  }
  jq -c 'select(.topic == "meter.out")' "$OUTF" | wc -l
}
outputs_at_least() { (($(outputs) >= $1)); }

events_of() { # DEPLOYMENT: its events on cicd.events, in order
  jq -r --arg id "$1" 'select(.topic == "cicd.events" and .body.id == $id) | .body.event' \
    "$OUTF" | tr '\n' ' '
}

# refused WHAT TEXT BUNDLE [ARGS]: the deployment is refused with TEXT, the
# meter runs as it did, the refusal is in the history and on cicd.events
refused() {
  local what=$1 text=$2 before
  shift 2
  before=$(meter_version)
  ctl deploy "$@" --as meter --wait
  [[ $RC == 1 ]] || fail "$what: exit $RC, expected 1: $COUT $CERR"
  grep -qF -- "$text" <<<"$CERR" || fail "$what: expected '$text' in: $CERR"
  REFUSAL=$CERR
  [[ $(meter_version) == "$before" ]] || fail "$what: the meter changed: $(meter_version)"
  ctl --json deployments
  local last
  last=$(jq -c '.deployments[-1]' <<<"$COUT")
  [[ $(jq -r .state <<<"$last") == refused ]] || fail "$what: history: $last"
  jq -r .reason <<<"$last" | grep -qF -- "$text" || fail "$what: history reason: $last"
  wait_until 5 "the refusal of $what on cicd.events" event_seen "$(jq -r .id <<<"$last")" \
    deploy.refused
}

event_seen() { # DEPLOYMENT EVENT: the sink has it
  [[ $(events_of "$1") == *"$2 "* ]]
}

say "pack versions of fx_meter"
cd "$TEST_TMP"
for v in v2 sick initfail v1; do
  "$BUNDLE" pack "$PLANTD_FIXTURE_DIR/fx_meter_$v.so" -o "$TEST_TMP/meter-$v.bundle" >/dev/null ||
    fail "plantd-bundle pack fx_meter_$v.so failed"
done

site
start_site
wait_until 10 "readings processed by 1.0.0" outputs_at_least 200
[[ $(meter_version) == "1.0.0 running" ]] || fail "before: $(meter_version)"

say "deploy 2.0.0 under load: every reading once, the new ones by 2.0.0"
ctl deploy "$TEST_TMP/meter-v2.bundle" --as meter --grace 1s --wait
[[ $RC == 0 ]] || fail "deploy v2: exit $RC: $COUT $CERR"
grep -qE '^deployment dep-[0-9-]+: fx_meter 2\.0\.0 on meter, was 1\.0\.0: deployed$' <<<"$COUT" ||
  fail "deploy v2 printed: $COUT"
[[ $(meter_version) == "2.0.0 running" ]] || fail "after deploy: $(meter_version)"
v2_id=$(grep -oE 'dep-[0-9-]+' <<<"$COUT" | head -1)
wait_for_log "produced $COUNT" 60
wait_until 30 "all $COUNT readings processed" outputs_at_least "$COUNT"
sleep 0.3
jq -r 'select(.topic == "meter.out") | "\(.body.seq) \(.body.version)"' "$OUTF" >"$TEST_TMP/seen"
[[ $(wc -l <"$TEST_TMP/seen") == "$COUNT" ]] || fail "$(wc -l <"$TEST_TMP/seen") outputs for $COUNT readings"
[[ $(cut -d' ' -f1 "$TEST_TMP/seen" | sort -n | uniq | wc -l) == "$COUNT" ]] ||
  fail "a reading processed twice: $(cut -d' ' -f1 "$TEST_TMP/seen" | sort -n | uniq -d | head -3)"
[[ $(cut -d' ' -f1 "$TEST_TMP/seen" | sort -n | head -1) == 0 &&
  $(cut -d' ' -f1 "$TEST_TMP/seen" | sort -n | tail -1) == $((COUNT - 1)) ]] || fail "readings missing"
# in output order: 1.0.0 first, then 2.0.0 only
order=$(cut -d' ' -f2 "$TEST_TMP/seen" | uniq | tr '\n' ' ')
[[ $order == "1.0.0 2.0.0 " ]] || fail "versions in output order: $order"
say "$(grep -c ' 1.0.0$' "$TEST_TMP/seen") by 1.0.0, $(grep -c ' 2.0.0$' "$TEST_TMP/seen") by 2.0.0"
wait_until 5 "the deployed event" event_seen "$v2_id" deploy.deployed
[[ $(events_of "$v2_id") == "deploy.verified deploy.watching deploy.deployed " ]] ||
  fail "events of $v2_id: $(events_of "$v2_id")"
ctl --json deployments
jq -e --arg id "$v2_id" '.deployments[] | select(.id == $id) |
  .state == "deployed" and .version == "2.0.0" and .previous_version == "1.0.0" and
  (.by | test("@")) and (.sha256 | length == 64)' <<<"$COUT" >/dev/null ||
  fail "history of $v2_id: $COUT"

say "bad bundles are refused, the running version untouched"
# one base64 character of the module changed (to another one)
jq '.module |= (.[0:4000] + (if .[4000:4001] == "A" then "B" else "A" end) + .[4001:])' \
  "$TEST_TMP/meter-v2.bundle" >"$TEST_TMP/bad-hash.bundle"
cmp -s "$TEST_TMP/meter-v2.bundle" "$TEST_TMP/bad-hash.bundle" && fail "the tampered bundle is the same"
refused "a wrong hash" "sha256" "$TEST_TMP/bad-hash.bundle"
IFS=. read -r major minor < <(host_abi)
jq --arg abi "$major.$((minor + 1))" '.manifest.abi = $abi' "$TEST_TMP/meter-v2.bundle" \
  >"$TEST_TMP/newer.bundle"
refused "a newer ABI" "$major.$((minor + 1))" "$TEST_TMP/newer.bundle"
[[ $REFUSAL == "plantctl: 400: "* ]] || fail "an ABI refusal: $REFUSAL"
refused "init() fails" "cannot open the meter's device" "$TEST_TMP/meter-initfail.bundle"
grep -q "the previous version runs again" <<<"$REFUSAL" || fail "init fails: $REFUSAL"
ctl deploy "$TEST_TMP/meter-v2.bundle" --as nosuch
[[ $RC == 1 && $CERR == *'no instance "nosuch"'* ]] || fail "unknown instance: $RC $CERR"

say "a version whose health fails is rolled back by itself"
ctl deploy "$TEST_TMP/meter-sick.bundle" --as meter --grace 3s --wait
[[ $RC == 1 ]] || fail "sick deploy: exit $RC: $COUT $CERR"
grep -q 'rolled_back: health failed: .*the sensor bus is jammed.*within the grace period' <<<"$COUT" ||
  fail "sick deploy printed: $COUT"
[[ $(meter_version) == "2.0.0 running" ]] || fail "after the rollback: $(meter_version)"

say "plantctl rollback puts the previous version back"
ctl rollback meter
[[ $RC == 0 && $COUT == "rolled back meter" ]] || fail "rollback: $RC $COUT $CERR"
[[ $(meter_version) == "1.0.0 running" ]] || fail "after plantctl rollback: $(meter_version)"
ctl rollback meter
[[ $RC == 1 && $CERR == *"no deployed version to roll back"* ]] || fail "rollback again: $RC $CERR"
# back to the files' version: a reload and a restart run it
ctl reload
[[ $RC == 0 ]] || fail "reload after the rollback: $RC $CERR"
[[ $(meter_version) == "1.0.0 running" ]] || fail "after the reload: $(meter_version)"

say "a deployed version survives a restart"
ctl deploy "$TEST_TMP/meter-v2.bundle" --as meter --grace 0s
[[ $RC == 0 ]] || fail "deploy v2 again: $RC $CERR"
stop_plantd TERM 20
expect_exit 0
start_site
[[ $(meter_version) == "2.0.0 running" ]] || fail "after restart: $(meter_version)"
stop_plantd TERM 20
expect_exit 0

say "signatures, when the site requires them"
openssl genpkey -algorithm ed25519 -out "$TEST_TMP/ci.pem" 2>/dev/null
openssl pkey -in "$TEST_TMP/ci.pem" -pubout -out "$TEST_TMP/ci.pub" 2>/dev/null
openssl genpkey -algorithm ed25519 -out "$TEST_TMP/other.pem" 2>/dev/null
"$BUNDLE" pack "$PLANTD_FIXTURE_DIR/fx_meter_v1.so" -k "$TEST_TMP/ci.pem" \
  -o "$TEST_TMP/v1-signed.bundle" >/dev/null
"$BUNDLE" pack "$PLANTD_FIXTURE_DIR/fx_meter_v1.so" -k "$TEST_TMP/other.pem" \
  -o "$TEST_TMP/v1-other.bundle" >/dev/null
site 'deploy = { require_signature = true; trusted_keys = [ "ci.pub" ]; grace = "0s"; };' \
  '{ name = "fx_meter"; module = "fx_meter_v2"; queue = "readings"; }'
start_site
refused "an unsigned bundle" "not signed" "$TEST_TMP/meter-v1.bundle"
refused "an untrusted key" "key" "$TEST_TMP/v1-other.bundle"
ctl deploy "$TEST_TMP/v1-signed.bundle" --as meter --wait
[[ $RC == 0 ]] || fail "signed deploy: $RC $COUT $CERR"
[[ $(meter_version) == "1.0.0 running" ]] || fail "after the signed deploy: $(meter_version)"
# without --as: the instance named after the bundle's module
ctl deploy "$TEST_TMP/v1-signed.bundle" --wait
[[ $RC == 0 && $COUT == *"fx_meter 1.0.0 on fx_meter, was 2.0.0: deployed"* ]] ||
  fail "deploy without --as: $RC $COUT $CERR"
stop_plantd TERM 20
expect_exit 0
say "ok"
