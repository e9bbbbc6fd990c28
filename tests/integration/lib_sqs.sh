# shellcheck shell=bash
# Helpers for the transport_sqs tests: several plantd nodes, each in
# $TEST_TMP/NAME with its own site, data dir, admin listener (port 0) and
# logs; readings ingested through ingest_http (NDJSON batches); what a node
# received read back from a log_sink file with jq. Source after lib.sh and
# lib_aws.sh.
#
#   sqs_node_conf NAME <<'CONF' ... CONF   the site's queues and plugins
#                                          (the rest is added)
#   start_node NAME; stop_node NAME
#   ingest NAME FIRST COUNT [BATCH]        readings r-FIRST.. into sensor.raw
#   counter NAME INSTANCE COUNTER, gauge NAME INSTANCE GAUGE (from /metrics)
#   sink_lines FILE, sink_distinct FILE    lines / distinct reading ids

declare -A NODE_PID NODE_ADMIN NODE_INGEST

SQS_PLUGINS=$PLANTD_BUILD_ROOT/plugins/transport_sqs:$PLANTD_BUILD_ROOT/plugins/ingest_http:$PLANTD_BUILD_ROOT/plugins/log_sink:$PLANTD_BUILD_ROOT/plugins/store_sqlite
CURL_MAX=$((10 * TIME_FACTOR))

# sqs_node_conf NAME: node NAME's site, its queues and plugins read from
# stdin (libconfig text: `queues = (...); plugins = (...);`), with an admin
# and an ingest listener, a sqlite store "site" and the plugin path.
sqs_node_conf() {
  local n=$1
  mkdir -p "$TEST_TMP/$n"
  {
    cat <<CONF
site = "node-$n";
data_dir = "$TEST_TMP/$n/data";
plugin_path = "$SQS_PLUGINS";
workers = 2;
listeners = (
  { name = "admin"; admin = true; address = "127.0.0.1"; port = 0; },
  { name = "ingest"; address = "127.0.0.1"; port = 0; }
);
stores = ( { name = "site"; backend = "sqlite"; path = "site.db"; synchronous = "normal"; } );
CONF
    cat
  } >"$TEST_TMP/$n/site.conf"
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
  NODE_INGEST[$1]=$(url_of "$TEST_TMP/$1/data" ingest)
}

# stop_node NAME [TIMEOUT_S]: SIGTERM; it must end with status 0.
stop_node() {
  use_node "$1"
  stop_plantd TERM "${2:-20}"
  expect_exit 0
  NODE_PID[$1]=
}

# ingest NAME FIRST COUNT [BATCH]: readings r-FIRST .. r-(FIRST+COUNT-1)
# (ids zero-padded to 7 digits) posted to NAME's ingest listener as NDJSON,
# BATCH (default 1000) a request, each answered 202.
ingest() {
  local n=$1 first=$2 count=$3 batch=${4:-1000} i end code
  for ((i = first; i < first + count; i += batch)); do
    end=$((i + batch - 1))
    ((end < first + count)) || end=$((first + count - 1))
    seq "$i" "$end" |
      awk '{printf "{\"id\":\"r-%07d\",\"sensor_id\":\"L%02d-S%04d\",\"location\":\"L%02d\",\"value\":%d.25,\"note\":\"q\\\"uote \\u00e9\"}\n",$1,$1%8,$1%1000,$1%8,$1%40}' \
        >"$TEST_TMP/batch.ndjson"
    code=$(curl -s -o "$TEST_TMP/ingest.out" -w '%{http_code}' --max-time "$CURL_MAX" \
      -H 'Content-Type: application/x-ndjson' --data-binary @"$TEST_TMP/batch.ndjson" \
      "${NODE_INGEST[$n]}/v1/ingest/sensor.raw") || true
    [[ $code == 202 ]] || fail "ingest on $n ($i..$end): HTTP $code $(head -c 300 "$TEST_TMP/ingest.out")"
  done
}

_metric() {
  local v
  v=$(curl -sf --max-time "$CURL_MAX" "${NODE_ADMIN[$1]}/metrics" |
    sed -n "s/^plantd_instance_$4{instance=\"$2\",name=\"$3\"} \\([0-9.e+-]*\\)\$/\\1/p")
  echo "${v:-0}"
}

# counter NAME INSTANCE COUNTER: a plugin counter on /metrics (0 when absent).
counter() {
  _metric "$1" "$2" "$3" counter
}

# gauge NAME INSTANCE GAUGE: a plugin gauge on /metrics, as an integer.
gauge() {
  local v
  v=$(_metric "$1" "$2" "$3" gauge)
  printf '%.0f\n' "$v"
}

counter_at_least() {
  (($(counter "$1" "$2" "$3") >= $4))
}

gauge_above() {
  (($(gauge "$1" "$2" "$3") > $4))
}

# queue_left NAME QUEUE: depth (visible, delayed and in flight) of a queue.
queue_left() {
  curl -sf --max-time "$CURL_MAX" "${NODE_ADMIN[$1]}/v1/queues" |
    jq -r --arg q "$2" '.queues[] | select(.name == $q) | .depth'
}

queue_empty() {
  [[ $(queue_left "$1" "$2") == 0 ]]
}

# sink_lines FILE: lines a log_sink wrote (0 when there is no file yet).
sink_lines() {
  if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi
}

# sink_distinct FILE: distinct reading ids (body.id) in a log_sink file.
sink_distinct() {
  if [[ -f $1 ]]; then jq -r '.body.id' "$1" | sort -u | wc -l; else echo 0; fi
}

sink_distinct_at_least() {
  (($(sink_distinct "$1") >= $2))
}

# sink_exactly FILE FIRST COUNT: FILE holds readings r-FIRST.. once each and
# nothing else; fails naming what is missing or repeated.
sink_exactly() {
  local f=$1 first=$2 count=$3 want got
  want=$(seq "$first" $((first + count - 1)) | awk '{printf "r-%07d\n",$1}')
  got=$(jq -r '.body.id' "$f" | sort)
  if [[ $got != "$want" ]]; then
    local missing dup
    missing=$(comm -23 <(echo "$want") <(echo "$got" | sort -u) | head -5 | tr '\n' ' ')
    dup=$(echo "$got" | uniq -d | head -5 | tr '\n' ' ')
    fail "$f: not r-$first..+$count once each: $(echo "$got" | wc -l) lines, $(echo "$got" | sort -u | wc -l) distinct; missing: ${missing:-none}; twice: ${dup:-none}"
  fi
}
