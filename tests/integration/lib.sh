# shellcheck shell=bash
# Helpers for the integration tests, which run the real plantd binary.
# Source it first thing from a test script:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Environment (tests/integration/meson.build sets the first four):
#   PLANTD              the plantd binary
#   PLANTD_FIXTURE_DIR  the fixture plugins (build/tests/fixtures)
#   PLANTD_BUILD_ROOT   the build directory
#   PLANTD_SOURCE_ROOT  the source directory
#   PLANTD_WRAPPER      optional: a command put in front of plantd, split on
#                       blanks (no quoting), e.g.
#                       'valgrind --leak-check=full --error-exitcode=99 --quiet'
#   PLANTD_TIME_FACTOR  optional: every timeout is multiplied by it (a whole
#                       number); default 1, or 20 under PLANTD_WRAPPER
#   PLANTD_KEEP_TMP     optional: keep the temporary directory for a look
#
# What the helpers share:
#   TEST_TMP    a fresh directory, removed on exit
#   LOG, OUT    where plantd's stderr and stdout go (change them per case)
#   PLANTD_PID  the plantd started last by start_plantd
#   STATUS      its exit status, once wait_exit (or plantd_run) saw it end
#
# Every background process started here is killed when the script exits, and
# conditions are polled (every 50 ms, up to a deadline), never waited for
# with a fixed sleep.

set -euo pipefail
export LC_ALL=C

: "${PLANTD:?set PLANTD to the plantd binary}"
: "${PLANTD_FIXTURE_DIR:?set PLANTD_FIXTURE_DIR to build/tests/fixtures}"
: "${PLANTD_BUILD_ROOT:?set PLANTD_BUILD_ROOT to the build directory}"
: "${PLANTD_SOURCE_ROOT:?set PLANTD_SOURCE_ROOT to the source directory}"

# The plugin path must come from the build tree and the test's own configs,
# never from the caller's environment.
unset PLANTD_PLUGIN_PATH

PLANTD_WRAPPER=${PLANTD_WRAPPER:-}
read -r -a _wrapper <<<"$PLANTD_WRAPPER"
PLANTD_CMD=("${_wrapper[@]}" "$PLANTD")
if [[ -n $PLANTD_WRAPPER ]]; then
  TIME_FACTOR=${PLANTD_TIME_FACTOR:-20}
else
  TIME_FACTOR=${PLANTD_TIME_FACTOR:-1}
fi
if ! [[ $TIME_FACTOR =~ ^[1-9][0-9]*$ ]]; then
  echo "lib.sh: PLANTD_TIME_FACTOR must be a whole number >= 1, not '$TIME_FACTOR'" >&2
  exit 1
fi

TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/plantd-it.XXXXXX")
# plantd reports plugin files by their real path: spell ours the same way.
TEST_TMP=$(cd -P "$TEST_TMP" && pwd)
LOG=$TEST_TMP/plantd.log
OUT=$TEST_TMP/plantd.out
PLANTD_PID=
STATUS=
_BG_PIDS=()

_cleanup() {
  local rc=$? pid
  for pid in "${_BG_PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n ${PLANTD_KEEP_TMP:-} ]]; then
    echo "# kept $TEST_TMP" >&2
  else
    rm -rf "$TEST_TMP"
  fi
  exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- reporting --------------------------------------------------------------

say() {
  echo "# $*"
}

# fail MSG...: report, show what plantd printed, exit 1.
fail() {
  {
    echo "FAIL: $*"
    if [[ -s $LOG ]]; then
      echo "--- plantd stderr ($LOG):"
      cat "$LOG"
      echo "---"
    fi
    if [[ -s $OUT ]]; then
      echo "--- plantd stdout ($OUT):"
      cat "$OUT"
      echo "---"
    fi
  } >&2
  exit 1
}

# ---- time ---------------------------------------------------------------------

# _now_us: the wall clock in microseconds, into _NOW_US.
_now_us() {
  if [[ -n ${EPOCHREALTIME:-} ]]; then
    _NOW_US=${EPOCHREALTIME/[.,]/}
  else
    _NOW_US=$(date +%s%6N)
  fi
}

# _deadline SECONDS: now + SECONDS * TIME_FACTOR, into _DEADLINE_US. SECONDS
# may have a fraction (0.5).
_deadline() {
  local s=$1 int frac
  if ! [[ $s =~ ^([0-9]+)(\.([0-9]*))?$ ]]; then
    echo "lib.sh: bad number of seconds '$s'" >&2
    exit 1
  fi
  int=${BASH_REMATCH[1]}
  frac=${BASH_REMATCH[3]}000000
  frac=${frac:0:6}
  _now_us
  _DEADLINE_US=$((_NOW_US + (10#$int * 1000000 + 10#$frac) * TIME_FACTOR))
}

# _secs SECONDS: "SECONDS s", with the factor when there is one.
_secs() {
  if ((TIME_FACTOR > 1)); then
    echo "${1}s x $TIME_FACTOR"
  else
    echo "${1}s"
  fi
}

# ---- running plantd -------------------------------------------------------------

# run_plantd ARGS...: plantd ARGS, behind $PLANTD_WRAPPER when set, in the
# foreground with the caller's redirections.
run_plantd() {
  "${PLANTD_CMD[@]}" "$@"
}

# start_plantd ARGS...: plantd ARGS in the background; stdout to $OUT and
# stderr to $LOG (both truncated); its pid in PLANTD_PID.
start_plantd() {
  STATUS=
  # A simple command, so that $! is plantd itself (or its wrapper, which
  # valgrind runs in the same process) and signals reach it.
  "${PLANTD_CMD[@]}" "$@" </dev/null >"$OUT" 2>"$LOG" &
  PLANTD_PID=$!
  _BG_PIDS+=("$PLANTD_PID")
}

plantd_running() {
  [[ -n $PLANTD_PID ]] && kill -0 "$PLANTD_PID" 2>/dev/null
}

_forget_pid() {
  local pid keep=()
  for pid in "${_BG_PIDS[@]}"; do
    [[ $pid == "$1" ]] || keep+=("$pid")
  done
  _BG_PIDS=("${keep[@]}")
}

# wait_exit TIMEOUT_S: wait for the background plantd to end; its status in
# STATUS. Kills it and fails when it is still running at the deadline.
wait_exit() {
  local timeout=$1
  [[ -n $PLANTD_PID ]] || fail "wait_exit: no plantd was started"
  _deadline "$timeout"
  while plantd_running; do
    _now_us
    if ((_NOW_US >= _DEADLINE_US)); then
      kill -KILL "$PLANTD_PID" 2>/dev/null || true
      wait "$PLANTD_PID" 2>/dev/null || true
      _forget_pid "$PLANTD_PID"
      fail "plantd (pid $PLANTD_PID) still running after $(_secs "$timeout"); killed"
    fi
    sleep 0.05
  done
  STATUS=0
  wait "$PLANTD_PID" || STATUS=$?
  _forget_pid "$PLANTD_PID"
}

# send_signal SIG: send SIG (HUP, TERM...) to the background plantd.
send_signal() {
  plantd_running || fail "cannot send SIG$1: plantd is not running"
  kill -s "$1" "$PLANTD_PID"
}

# stop_plantd [SIG] [TIMEOUT_S]: signal (default TERM) and wait for the end.
stop_plantd() {
  send_signal "${1:-TERM}"
  wait_exit "${2:-20}"
}

# plantd_run ARGS...: run plantd to its end (at most 30 s x TIME_FACTOR); stdout in
# $OUT, stderr in $LOG, exit status in STATUS.
plantd_run() {
  start_plantd "$@"
  wait_exit 30
}

# expect_exit CODE: the last plantd that ended exited with CODE.
expect_exit() {
  [[ -n $STATUS ]] || fail "expect_exit: plantd has not ended"
  [[ $STATUS == "$1" ]] || fail "plantd exited with status $STATUS, expected $1"
}

# ---- waiting ----------------------------------------------------------------------

# wait_until TIMEOUT_S WHAT CMD...: poll CMD every 50 ms until it succeeds;
# fail naming WHAT at the deadline, or as soon as the background plantd
# (if one was started) is found dead with CMD still false.
wait_until() {
  local timeout=$1 what=$2
  shift 2
  _deadline "$timeout"
  while true; do
    if "$@"; then
      return 0
    fi
    if [[ -n $PLANTD_PID && -z $STATUS ]] && ! plantd_running; then
      # it may have done it just before it ended
      if "$@"; then
        return 0
      fi
      STATUS=0
      wait "$PLANTD_PID" || STATUS=$?
      _forget_pid "$PLANTD_PID"
      fail "plantd ended (status $STATUS) while waiting for $what"
    fi
    _now_us
    if ((_NOW_US >= _DEADLINE_US)); then
      fail "timed out after $(_secs "$timeout") waiting for $what"
    fi
    sleep 0.05
  done
}

# log_lines: how many lines $LOG has now (a mark for log_since).
log_lines() {
  if [[ -f $LOG ]]; then
    wc -l <"$LOG"
  else
    echo 0
  fi
}

# log_since MARK: the lines of $LOG after the first MARK lines.
log_since() {
  tail -n "+$(($1 + 1))" "$LOG" 2>/dev/null || true
}

_log_matches() {
  log_since "$2" | grep -Eq -- "$1"
}

# wait_for_log ERE TIMEOUT_S [MARK]: wait until a line of $LOG (after the
# first MARK lines) matches the extended regular expression ERE.
wait_for_log() {
  wait_until "$2" "a log line matching /$1/" _log_matches "$1" "${3:-0}"
}

# file_lines_at_least FILE N: FILE exists and has N lines or more.
file_lines_at_least() {
  [[ -f $1 ]] && (($(wc -l <"$1") >= $2))
}

# ---- assertions ---------------------------------------------------------------------

_what() {
  if [[ $1 == -F ]]; then echo text; else echo regex; fi
}

# expect_in_log -F|-E TEXT [FILE]: FILE ($LOG by default) has a line with
# the fixed string (-F) or matching the extended regex (-E) TEXT.
expect_in_log() {
  local mode=$1 text=$2 file=${3:-$LOG}
  grep -q "$mode" -- "$text" "$file" || fail "expected $(_what "$mode") '$text' in $file"
}

# expect_not_in_log -F|-E TEXT [FILE]: the opposite.
expect_not_in_log() {
  local mode=$1 text=$2 file=${3:-$LOG} hit
  if hit=$(grep "$mode" -- "$text" "$file"); then
    fail "unexpected $(_what "$mode") '$text' in $file: $hit"
  fi
}

# line_of FILE TEXT: the number of the first line of FILE holding TEXT.
line_of() {
  local n
  n=$(grep -nF -- "$2" "$1" | head -n 1 | cut -d: -f1)
  if [[ -z $n ]]; then
    echo "line_of: no '$2' in $1" >&2
    return 1
  fi
  echo "$n"
}

# host_abi: the SDK ABI of the plantd binary, e.g. "1.0" (from --version,
# run without the wrapper: it only prints).
host_abi() {
  "$PLANTD" --version | sed -nE 's/.*SDK ABI ([0-9]+\.[0-9]+).*/\1/p'
}

# ---- HTTP -------------------------------------------------------------------------

# wait_urls DATA_DIR: wait until plantd wrote DATA_DIR/listeners.json (where
# each listener ended up: sites in tests use port = 0).
wait_urls() {
  wait_until 10 "$1/listeners.json" test -s "$1/listeners.json"
}

# url_of DATA_DIR NAME: the base URL of listener NAME.
url_of() {
  jq -r --arg n "$2" '.[$n]' "$1/listeners.json"
}

# req METHOD URL [CURL_ARGS...]: one request with curl; the status in CODE,
# the body in BODY, the headers in the file $HDR_FILE (000: no answer).
req() {
  local method=$1 url=$2
  shift 2
  HDR_FILE=$TEST_TMP/resp.headers
  CODE=$(curl -s -o "$TEST_TMP/resp.body" -D "$HDR_FILE" -w '%{http_code}' \
    --max-time $((10 * TIME_FACTOR)) -X "$method" "$@" "$url") || true
  [[ -n $CODE ]] || CODE=000
  BODY=$(cat "$TEST_TMP/resp.body" 2>/dev/null || true)
}

# expect_code CODE WHAT: the last req answered CODE.
expect_code() {
  [[ $CODE == "$1" ]] || fail "$2: HTTP $CODE, expected $1 (body: ${BODY:0:300})"
}

# header_of NAME: a header of the last req's answer.
header_of() {
  grep -i "^$1:" "$HDR_FILE" | head -1 | cut -d' ' -f2- | tr -d '\r'
}
