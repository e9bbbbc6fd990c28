# shellcheck shell=bash
# Helpers for the tests that talk AWS protocols (suite aws) to third-party
# servers on loopback. Source it after lib.sh:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   source "$(dirname "${BASH_SOURCE[0]}")/lib_aws.sh"
#   need_aws_peers
#   start_fauxqs            # FAUXQS_URL, FAUXQS_PID, FAUXQS_PORT
#   start_dynalite          # DYNALITE_URL, DYNALITE_PID, DYNALITE_PORT
#   aws_cli sqs create-queue --queue-name q1
#   start_fake_aws          # FAKE_AWS_URL, FAKE_AWS_PID: scripted bad answers
#   fake_aws_script '[{"status": 500, "body": "..."}]'
#
# The servers are the npm packages pinned in tests/aws/package.json (fauxqs
# for SNS, SQS and S3; dynalite for DynamoDB), installed with
# `npm ci --prefix tests/aws`. Each is started bound to 127.0.0.1, its pid is
# registered with lib.sh so that it is killed when the script exits, and its
# output goes to $TEST_TMP/fauxqs.log / dynalite.log (shown by aws_fail).
#
# Sourcing this file exports dummy credentials and a region, so that plantd
# (signing with the environment's credentials) and the aws command never
# reach for real ones: AWS_ACCESS_KEY_ID=test, AWS_SECRET_ACCESS_KEY=test,
# AWS_REGION=AWS_DEFAULT_REGION=us-east-1, no session token, no profile,
# no config files.

AWS_PEERS_DIR=$PLANTD_SOURCE_ROOT/tests/aws

export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
unset AWS_SESSION_TOKEN AWS_SECURITY_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE
unset AWS_ENDPOINT_URL AWS_CA_BUNDLE
export AWS_CONFIG_FILE=/nonexistent/plantd-test/aws-config
export AWS_SHARED_CREDENTIALS_FILE=/nonexistent/plantd-test/aws-credentials
export AWS_EC2_METADATA_DISABLED=true

FAUXQS_URL=
FAUXQS_PID=
FAUXQS_PORT=
DYNALITE_URL=
DYNALITE_PID=
DYNALITE_PORT=
FAKE_AWS_URL=
FAKE_AWS_PID=

# aws_fail MSG...: fail, showing what the peers printed.
aws_fail() {
  local f
  for f in "$TEST_TMP/fauxqs.log" "$TEST_TMP/dynalite.log" "$TEST_TMP/fake_aws.log"; do
    if [[ -s $f ]]; then
      echo "--- $f:" >&2
      tail -n 50 "$f" >&2
    fi
  done
  fail "$@"
}

# need_aws_peers: node, aws and the installed packages are there, or fail
# (the tests skip nothing).
need_aws_peers() {
  command -v node >/dev/null || fail "node is not on PATH (needed for the AWS test peers)"
  command -v aws >/dev/null || fail "aws (awscli 1.x) is not on PATH"
  if [[ ! -f $AWS_PEERS_DIR/node_modules/fauxqs/package.json ||
    ! -f $AWS_PEERS_DIR/node_modules/dynalite/package.json ]]; then
    fail "the AWS test peers are not installed in $AWS_PEERS_DIR/node_modules: run npm ci --prefix tests/aws"
  fi
}

# _free_port: a TCP port free on 127.0.0.1 right now, on stdout.
_free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});'
}

_fauxqs_ready() {
  [[ -s $TEST_TMP/fauxqs.out ]] && grep -q '^ready [0-9]' "$TEST_TMP/fauxqs.out"
}

_peer_alive() {
  kill -0 "$1" 2>/dev/null
}

# _launch_fauxqs PORT: start fauxqs and wait until it listens (status 0) or
# dies (status 1, e.g. the port is taken); fail at the deadline.
_launch_fauxqs() {
  local port=$1
  : >"$TEST_TMP/fauxqs.out"
  node "$AWS_PEERS_DIR/fauxqs.js" "$port" </dev/null >"$TEST_TMP/fauxqs.out" 2>>"$TEST_TMP/fauxqs.log" &
  FAUXQS_PID=$!
  _BG_PIDS+=("$FAUXQS_PID")
  _deadline 15
  while ! _fauxqs_ready; do
    if ! _peer_alive "$FAUXQS_PID"; then
      _fauxqs_ready && break
      wait "$FAUXQS_PID" 2>/dev/null || true
      _forget_pid "$FAUXQS_PID"
      FAUXQS_PID=
      return 1
    fi
    _now_us
    if ((_NOW_US >= _DEADLINE_US)); then
      aws_fail "fauxqs (pid $FAUXQS_PID) not ready after $(_secs 15)"
    fi
    sleep 0.05
  done
  FAUXQS_PORT=$(sed -n 's/^ready \([0-9]*\)$/\1/p' "$TEST_TMP/fauxqs.out" | head -n 1)
  FAUXQS_URL=http://127.0.0.1:$FAUXQS_PORT
}

# start_fauxqs [PORT]: start fauxqs on 127.0.0.1:PORT (default: any free
# port); wait until it listens. Sets FAUXQS_URL (http://127.0.0.1:PORT),
# FAUXQS_PORT and FAUXQS_PID. Its state lives in memory: a restart loses
# every queue, topic and message.
start_fauxqs() {
  [[ -z $FAUXQS_PID ]] || aws_fail "start_fauxqs: fauxqs already runs (pid $FAUXQS_PID)"
  _launch_fauxqs "${1:-0}" || aws_fail "fauxqs ended before it was ready (port ${1:-0})"
}

# _stop_peer PID: SIGTERM, wait up to 10 s, then SIGKILL.
_stop_peer() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  _deadline 10
  while _peer_alive "$pid"; do
    _now_us
    if ((_NOW_US >= _DEADLINE_US)); then
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.05
  done
  wait "$pid" 2>/dev/null || true
  _forget_pid "$pid"
}

# stop_fauxqs: stop it (SIGTERM; SIGKILL after 10 s). FAUXQS_URL and
# FAUXQS_PORT stay set, for restart_fauxqs.
stop_fauxqs() {
  [[ -n $FAUXQS_PID ]] || aws_fail "stop_fauxqs: fauxqs is not running"
  _stop_peer "$FAUXQS_PID"
  FAUXQS_PID=
}

# restart_fauxqs: start it again on the same port (after stop_fauxqs, or
# stopping it first when it runs): an outage for the clients. It comes back
# empty (fauxqs keeps nothing): recreate queues and topics.
restart_fauxqs() {
  [[ -n $FAUXQS_PORT ]] || aws_fail "restart_fauxqs: fauxqs was never started"
  if [[ -n $FAUXQS_PID ]]; then
    stop_fauxqs
  fi
  local tries=0
  # The port was ours a moment ago; retry for a while should it still be
  # taken.
  until _launch_fauxqs "$FAUXQS_PORT"; do
    tries=$((tries + 1))
    ((tries < 20)) || aws_fail "restart_fauxqs: cannot listen on port $FAUXQS_PORT again"
    sleep 0.25
  done
}

_dynalite_ready() {
  grep -q 'Dynalite listening at' "$TEST_TMP/dynalite.out" 2>/dev/null
}

# start_dynalite [PORT]: start dynalite (in memory, tables ACTIVE at once)
# on 127.0.0.1:PORT (default: a free port); wait until it listens. Sets
# DYNALITE_URL, DYNALITE_PORT and DYNALITE_PID.
start_dynalite() {
  local port=${1:-} tries=0
  [[ -z $DYNALITE_PID ]] || aws_fail "start_dynalite: dynalite already runs (pid $DYNALITE_PID)"
  while true; do
    # dynalite takes port 0 for its default, 4567: choose a free port.
    local p=${port:-$(_free_port)}
    : >"$TEST_TMP/dynalite.out"
    node "$AWS_PEERS_DIR/node_modules/dynalite/cli.js" --host 127.0.0.1 --port "$p" \
      --createTableMs 0 --deleteTableMs 0 --updateTableMs 0 \
      </dev/null >"$TEST_TMP/dynalite.out" 2>>"$TEST_TMP/dynalite.log" &
    DYNALITE_PID=$!
    _BG_PIDS+=("$DYNALITE_PID")
    _deadline 15
    while ! _dynalite_ready && _peer_alive "$DYNALITE_PID"; do
      _now_us
      if ((_NOW_US >= _DEADLINE_US)); then
        aws_fail "dynalite (pid $DYNALITE_PID) not ready after $(_secs 15)"
      fi
      sleep 0.05
    done
    if _dynalite_ready; then
      # shellcheck disable=SC2034 # for the test scripts
      DYNALITE_PORT=$p
      DYNALITE_URL=http://127.0.0.1:$p
      return 0
    fi
    # it died: most likely the port was taken in between
    wait "$DYNALITE_PID" 2>/dev/null || true
    _forget_pid "$DYNALITE_PID"
    DYNALITE_PID=
    tries=$((tries + 1))
    if [[ -n $port ]] || ((tries >= 5)); then
      aws_fail "dynalite did not start on port $p"
    fi
  done
}

# stop_dynalite: stop it (SIGTERM; SIGKILL after 10 s).
stop_dynalite() {
  [[ -n $DYNALITE_PID ]] || aws_fail "stop_dynalite: dynalite is not running"
  _stop_peer "$DYNALITE_PID"
  DYNALITE_PID=
}

_fake_aws_ready() {
  grep -q '^ready [0-9]' "$TEST_TMP/fake_aws.out" 2>/dev/null
}

# start_fake_aws: start tests/aws/fake_aws.js (a scripted AWS endpoint for
# bad answers: 5xx, throttling, malformed bodies; see the file) on a free
# port of 127.0.0.1. Sets FAKE_AWS_URL and FAKE_AWS_PID. Script it with
# fake_aws_script JSON_ARRAY.
start_fake_aws() {
  [[ -z $FAKE_AWS_PID ]] || aws_fail "start_fake_aws: it already runs (pid $FAKE_AWS_PID)"
  : >"$TEST_TMP/fake_aws.out"
  node "$AWS_PEERS_DIR/fake_aws.js" 0 </dev/null >"$TEST_TMP/fake_aws.out" 2>>"$TEST_TMP/fake_aws.log" &
  FAKE_AWS_PID=$!
  _BG_PIDS+=("$FAKE_AWS_PID")
  _deadline 15
  while ! _fake_aws_ready; do
    if ! _peer_alive "$FAKE_AWS_PID"; then
      _fake_aws_ready && break
      aws_fail "fake_aws.js (pid $FAKE_AWS_PID) ended before it was ready"
    fi
    _now_us
    if ((_NOW_US >= _DEADLINE_US)); then
      aws_fail "fake_aws.js (pid $FAKE_AWS_PID) not ready after $(_secs 15)"
    fi
    sleep 0.05
  done
  FAKE_AWS_URL=http://127.0.0.1:$(sed -n 's/^ready \([0-9]*\)$/\1/p' "$TEST_TMP/fake_aws.out" | head -n 1)
}

# fake_aws_script JSON_ARRAY: append answers to the fake's script.
fake_aws_script() {
  curl -sf --max-time $((10 * TIME_FACTOR)) -X POST --data-binary "$1" "$FAKE_AWS_URL/_fake/script" >/dev/null ||
    aws_fail "fake_aws_script: the fake refused $1"
}

# fake_aws_get WHAT: GET /_fake/WHAT (requests, accepted) on stdout.
fake_aws_get() {
  curl -sf --max-time $((10 * TIME_FACTOR)) "$FAKE_AWS_URL/_fake/$1"
}

# aws_cli SERVICE ARGS...: the aws command against the local peer for
# SERVICE (dynamodb: $DYNALITE_URL; anything else: $FAUXQS_URL; or
# $AWS_CLI_ENDPOINT when set), with the dummy credentials, JSON output, and
# bounded in time (30 s x TIME_FACTOR, connect and read timeouts 10 s, one
# attempt). Its status is aws's own; stdout is the JSON answer.
aws_cli() {
  local service=$1 endpoint
  shift
  if [[ -n ${AWS_CLI_ENDPOINT:-} ]]; then
    endpoint=$AWS_CLI_ENDPOINT
  elif [[ $service == dynamodb ]]; then
    endpoint=$DYNALITE_URL
  else
    endpoint=$FAUXQS_URL
  fi
  [[ -n $endpoint ]] || aws_fail "aws_cli $service: no server started for it"
  AWS_MAX_ATTEMPTS=1 AWS_RETRY_MODE=standard AWS_PAGER='' \
    timeout $((30 * TIME_FACTOR)) aws --endpoint-url "$endpoint" --region us-east-1 \
    --output json --cli-connect-timeout 10 --cli-read-timeout 10 \
    "$service" "$@"
}
