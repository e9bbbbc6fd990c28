#!/usr/bin/env bash
# plantctl, the admin command line (issue 6), against a real plantd whose
# admin listener (port 0, a token) is read from DATA/listeners.json. Every
# command, checked for what a user reads:
#
# - status: "plantd at URL: ok" and the instances and stores healthy, exit 0;
#   with a required instance unhealthy "failing", the instance named, exit 1;
# - plugins, queues, topics, stores: aligned tables with the expected rows;
#   --json gives the server's JSON (parsed with jq);
# - publish (an argument, or stdin with -) prints the id; peek shows those
#   messages (id, topic, body), consuming nothing; a body that is not JSON is
#   refused before sending (exit 2), a bad topic with the server's 400;
# - a consumer that fails everything fills the dead-letter queue; after the
#   config is edited (the consumer acks now) and `reload`ed, `redrive` moves
#   the 3 messages back and they are acked; a bad config is refused (400,
#   file:line), the site runs on;
# - tail -n 3 prints 3 messages published while it runs, in order, and ends
#   by itself (--json: the raw lines);
# - errors: an unknown queue exits 1 with plantd's message; no token, 401;
#   bad command lines exit 2 with the usage; plantd stopped: "cannot reach".
#
# Under $PLANTD_WRAPPER (valgrind), plantctl runs behind it too.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v jq >/dev/null || fail "jq is needed"

PLANTCTL=$PLANTD_BUILD_ROOT/tools/plantctl
[[ -x $PLANTCTL ]] || fail "no plantctl at $PLANTCTL"
read -r -a ctl_wrapper <<<"$PLANTD_WRAPPER"
CTL_CMD=("${ctl_wrapper[@]}" "$PLANTCTL")

# The test's own settings only, not the caller's.
unset PLANTD_URL PLANTD_TOKEN

CONF=$TEST_TMP/site.conf
DATA=$TEST_TMP/data
HEALTHY=$TEST_TMP/healthy
ACKED=$TEST_TMP/acked
TOKEN=it-plantctl-token

# site FAIL_EVERY [EXTRA_QUEUE]: the consumer of "jobs" nacks every
# FAIL_EVERY-th delivery (1: all, so that they end in jobs.dlq; 0: none).
site() {
  cat >"$CONF" <<CONF
site = "it-plantctl";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR:$PLANTD_BUILD_ROOT/plugins/store_sqlite";
listeners = (
  { name = "admin"; admin = true; address = "127.0.0.1"; port = 0; tokens = [ "$TOKEN" ]; },
  { name = "ingest"; address = "127.0.0.1"; port = 0; }
);
stores = ( { name = "main"; backend = "sqlite"; path = "main.db"; } );
queues = (
  { name = "inbox"; subscribe = [ "inbox" ]; },
  { name = "jobs"; subscribe = [ "jobs.*" ]; max_receive = 1; dead_letter = "jobs.dlq";
    visibility_timeout = "200ms"; },
  { name = "jobs.dlq"; }${2:+,
  $2}
);
plugins = (
  { name = "web"; module = "fx_http"; healthy_file = "$HEALTHY"; },
  { name = "worker"; module = "fx_consumer"; queue = "jobs"; fail_every = $1;
    acked = "$ACKED"; }
);
CONF
}

# ctl ARGS...: run plantctl; exit status in RC, stdout in COUT, stderr in CERR.
ctl() {
  RC=0
  "${CTL_CMD[@]}" "$@" >"$TEST_TMP/ctl.out" 2>"$TEST_TMP/ctl.err" </dev/null || RC=$?
  COUT=$(cat "$TEST_TMP/ctl.out")
  CERR=$(cat "$TEST_TMP/ctl.err")
}

# ctl_in INPUT ARGS...: the same, INPUT on stdin.
ctl_in() {
  local input=$1
  shift
  RC=0
  "${CTL_CMD[@]}" "$@" >"$TEST_TMP/ctl.out" 2>"$TEST_TMP/ctl.err" <<<"$input" || RC=$?
  COUT=$(cat "$TEST_TMP/ctl.out")
  CERR=$(cat "$TEST_TMP/ctl.err")
}

# expect_rc CODE WHAT: the last ctl exited with CODE.
expect_rc() {
  [[ $RC == "$1" ]] ||
    fail "plantctl $2: exit $RC, expected $1"$'\n'"stdout: $COUT"$'\n'"stderr: $CERR"
}

# expect_line ERE WHAT: a line of the last ctl's stdout matches ERE.
expect_line() {
  grep -Eq -- "$1" <<<"$COUT" || fail "plantctl $2: no line /$1/ in:"$'\n'"$COUT"
}

# expect_err TEXT WHAT: the last ctl's stderr is exactly TEXT.
expect_err() {
  [[ $CERR == "$1" ]] || fail "plantctl $2: stderr"$'\n'"$CERR"$'\n'"expected"$'\n'"$1"
}

# expect_aligned WHAT: every line of the table in COUT has its cells where
# the header has its titles.
expect_aligned() {
  awk 'NR == 1 {
         for (i = 2; i <= length($0); i++)
           if (substr($0, i - 1, 2) ~ /^ [^ ]$/) col[++n] = i
         next
       }
       { for (k = 1; k <= n; k++)
           if (substr($0, col[k] - 1, 2) !~ /^ [^ ]$/) exit 1 }' <<<"$COUT" ||
    fail "plantctl $1: columns not aligned:"$'\n'"$COUT"
}

site 1
touch "$HEALTHY" "$ACKED"
start_plantd -c "$CONF"
wait_urls "$DATA"
A=$(url_of "$DATA" admin)
[[ $A == http://127.0.0.1:* ]] || fail "listeners.json: admin $A"
export PLANTD_URL=$A PLANTD_TOKEN=$TOKEN

say "status: ok, then failing while a required instance is unhealthy"
ctl status
expect_rc 0 "status"
expect_line "^plantd at $A: ok$" "status"
expect_line '^instances +3/3 healthy$' "status"
expect_line '^stores +1/1 healthy$' "status"
expect_line '^queues +3 \(0 waiting, 0 in flight, 0 dead-lettered\)$' "status"
expect_line '^uptime +[0-9]+:[0-9]{2}:[0-9]{2}$' "status"
ctl --json status
expect_rc 0 "--json status"
[[ $(jq -r .status <<<"$COUT") == ok ]] || fail "--json status: $COUT"
[[ $(jq -r '[.instances[].name] | join(",")' <<<"$COUT") == "store_sqlite,web,worker" ]] ||
  fail "--json status: $COUT"
rm "$HEALTHY"
ctl status
expect_rc 1 "status with web unhealthy"
expect_line "^plantd at $A: failing$" "status with web unhealthy"
expect_line '^instances +2/3 healthy$' "status with web unhealthy"
expect_line "^  web: running, \\{\"file\":\"$HEALTHY\"\\}$" "status with web unhealthy"
touch "$HEALTHY"
ctl status
expect_rc 0 "status after recovery"

say "plugins, stores: tables and --json"
ctl plugins
expect_rc 0 "plugins"
expect_line '^NAME +MODULE +VERSION +STATE +HANDLED +ERRORS$' "plugins"
expect_line '^store_sqlite +store_sqlite +[0-9.]+ +running +[0-9]+ +0$' "plugins"
expect_line '^web +fx_http +1\.0\.0 +running +[0-9]+ +0$' "plugins"
expect_line '^worker +fx_consumer +1\.0\.0 +running +0 +0$' "plugins"
expect_aligned "plugins"
ctl plugins --json
expect_rc 0 "plugins --json"
[[ $(jq -r '[.plugins[] | .name + ":" + .state] | join(" ")' <<<"$COUT") == \
  "store_sqlite:running web:running worker:running" ]] || fail "plugins --json: $COUT"
ctl stores
expect_rc 0 "stores"
[[ $COUT == $'NAME  BACKEND  HEALTHY\nmain  sqlite   yes' ]] || fail "stores: $COUT"
ctl -j stores
[[ $(jq -c '.stores | map([.name, .backend, .healthy])' <<<"$COUT") == '[["main","sqlite",true]]' ]] ||
  fail "stores --json: $COUT"

say "publish, then peek shows the messages and consumes nothing"
ctl publish inbox '{"hello":"world"}'
expect_rc 0 "publish"
[[ $COUT =~ ^[0-9a-f]{24}$ ]] || fail "publish printed '$COUT', not an id"
id1=$COUT
ctl_in '{"n": 2}' publish inbox -
expect_rc 0 "publish from stdin"
id2=$COUT
[[ $id2 =~ ^[0-9a-f]{24}$ && $id2 != "$id1" ]] || fail "publish from stdin printed '$id2'"
for i in 1 2; do
  ctl peek inbox
  expect_rc 0 "peek"
  [[ $COUT == "$id1  inbox  {\"hello\":\"world\"}"$'\n'"$id2  inbox  {\"n\":2}" ]] ||
    fail "peek $i: $COUT"
done
ctl peek inbox -n 1
[[ $COUT == "$id1  inbox  {\"hello\":\"world\"}" ]] || fail "peek -n 1: $COUT"
ctl --json peek inbox
expect_rc 0 "--json peek"
[[ $(jq -c '[.messages[].body]' <<<"$COUT") == '[{"hello":"world"},{"n":2}]' ]] ||
  fail "--json peek: $COUT"
[[ $(jq -r '[.queue, .messages[].id] | join(" ")' <<<"$COUT") == "inbox $id1 $id2" ]] ||
  fail "--json peek: $COUT"
ctl publish inbox '{"hello":'
expect_rc 2 "publish of a body that is not JSON"
expect_err "plantctl: the message is not JSON: line 1, column 9: unexpected token near end of file" \
  "publish of a body that is not JSON"
ctl publish 'bad topic' '{}'
expect_rc 1 "publish on a bad topic"
[[ $CERR == 'plantctl: 400: "bad topic" is not a topic name'* ]] || fail "bad topic: $CERR"

say "queues, topics"
ctl queues
expect_rc 0 "queues"
expect_line '^NAME +DEPTH +IN_FLIGHT +OLDEST_AGE +DEAD_LETTERED +DURABLE$' "queues"
expect_line '^inbox +2 +0 +[0-9.]+(ms|s) +0 +no$' "queues"
expect_line '^jobs +0 +0 +- +0 +no$' "queues"
expect_line '^jobs\.dlq +0 +0 +- +0 +no$' "queues"
expect_aligned "queues"
ctl topics
expect_rc 0 "topics"
expect_line '^NAME +PUBLISHED +SUBSCRIBERS +QUEUES$' "topics"
expect_line '^inbox +2 +0 +1$' "topics"
expect_aligned "topics"
ctl --json topics
[[ $(jq '.topics[] | select(.name == "inbox") | .published' <<<"$COUT") == 2 ]] ||
  fail "--json topics: $COUT"

say "a consumer that fails everything: 3 jobs in jobs.dlq"
for i in 1 2 3; do
  ctl publish jobs.build "{\"job\":$i}"
  expect_rc 0 "publish job $i"
  jobs[i]=$COUT
done
dlq_depth() {
  ctl --json queues
  [[ $(jq '.queues[] | select(.name == "jobs.dlq") | .depth' <<<"$COUT") == "$1" ]]
}
wait_until 10 "3 messages in jobs.dlq" dlq_depth 3
ctl queues
expect_line '^jobs +0 +0 +- +3 +no$' "queues with dead letters"
expect_line '^jobs\.dlq +3 +0 +[0-9.]+(ms|s) +0 +no$' "queues with dead letters"
ctl peek jobs.dlq
[[ $COUT == "${jobs[1]}  jobs.build  {\"job\":1}"$'\n'"${jobs[2]}  jobs.build  {\"job\":2}"$'\n'"${jobs[3]}  jobs.build  {\"job\":3}" ]] ||
  fail "peek jobs.dlq: $COUT"
[[ ! -s $ACKED ]] || fail "nothing should have been acked yet"

say "reload after editing the config, then redrive: the 3 jobs go back and are acked"
site 0 '{ name = "audit"; }'
ctl reload
expect_rc 0 "reload"
[[ $COUT == "configuration reloaded" ]] || fail "reload: $COUT"
ctl queues
expect_line '^audit +0 +0 +- +0 +no$' "queues after the reload"
ctl redrive jobs.dlq
expect_rc 0 "redrive"
[[ $COUT == "redriven 3 messages from jobs.dlq" ]] || fail "redrive: $COUT"
wait_until 10 "3 jobs acked" file_lines_at_least "$ACKED" 3
for i in 1 2 3; do
  grep -qx "${jobs[i]}" "$ACKED" || fail "job $i (${jobs[i]}) was not acked after the redrive"
done
ctl peek jobs.dlq
expect_rc 0 "peek of the empty jobs.dlq"
[[ -z $COUT ]] || fail "jobs.dlq not empty after the redrive: $COUT"
ctl --json redrive jobs.dlq
expect_rc 0 "--json redrive"
[[ $(jq -c '[.queue, .redriven]' <<<"$COUT") == '["jobs.dlq",0]' ]] || fail "--json redrive: $COUT"
printf 'plugins = ( { name = "x"; module = "fx_http"; nonsense = 1; } );\n' >>"$CONF"
ctl reload
expect_rc 1 "reload of a bad config"
[[ $CERR == "plantctl: 400: "*"site.conf:"* ]] || fail "reload error without file:line: $CERR"
site 0 '{ name = "audit"; }'
ctl status
expect_rc 0 "status after a refused reload"

say "tail -n 3: three messages published while it runs, then it ends"
# tail_run FILE ARGS...: plantctl tail in the background, its stdout in FILE
tail_run() {
  local file=$1
  shift
  "${CTL_CMD[@]}" "$@" >"$file" 2>"$file.err" </dev/null &
  TAIL_PID=$!
  _BG_PIDS+=("$TAIL_PID")
}
# tail_fed: publish one more message (tail.t<N>, {"n":N}, its id in
# tail_ids[N]) and another on a topic the tail does not match; true once
# the tail has ended. Messages published before it subscribed are not for
# it: it gets the next ones, in order.
n_pub=0
tail_fed() {
  n_pub=$((n_pub + 1))
  ctl publish "tail.t$n_pub" "{\"n\":$n_pub}"
  expect_rc 0 "publish for the tail"
  tail_ids[n_pub]=$COUT
  ctl publish other '{"n":0}'
  ! kill -0 "$TAIL_PID" 2>/dev/null
}
tail_run "$TEST_TMP/tail" tail 'tail.*' -n 3
wait_until 10 "tail -n 3 to end" tail_fed
tail_rc=0
wait "$TAIL_PID" || tail_rc=$?
_forget_pid "$TAIL_PID"
[[ $tail_rc == 0 ]] || fail "tail -n 3 exited $tail_rc: $(cat "$TEST_TMP/tail.err")"
[[ $(wc -l <"$TEST_TMP/tail") == 3 ]] || fail "tail -n 3 printed: $(cat "$TEST_TMP/tail")"
first=$(sed -nE '1s/^.* tail\.t([0-9]+) .*$/\1/p' "$TEST_TMP/tail")
[[ -n $first ]] || fail "tail: $(cat "$TEST_TMP/tail")"
for k in 0 1 2; do
  n=$((first + k))
  line=$(sed -n "$((k + 1))p" "$TEST_TMP/tail")
  [[ $line =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z\ tail\.t$n\ ${tail_ids[n]}\ \{\"n\":$n\}$ ]] ||
    fail "tail line $((k + 1)): '$line', expected message $n (${tail_ids[n]})"
done

say "tail --json -n 1: the raw line"
tail_run "$TEST_TMP/tail.json" --json tail 'tail.*' -n 1
wait_until 10 "tail --json -n 1 to end" tail_fed
wait "$TAIL_PID" || fail "tail --json exited $?: $(cat "$TEST_TMP/tail.json.err")"
_forget_pid "$TAIL_PID"
n=$(jq -r '.body.n' "$TEST_TMP/tail.json") || fail "tail --json: $(cat "$TEST_TMP/tail.json")"
[[ $(jq -r '[.id, .topic] | join(" ")' "$TEST_TMP/tail.json") == "${tail_ids[n]} tail.t$n" ]] ||
  fail "tail --json: $(cat "$TEST_TMP/tail.json")"

say "errors: unknown queue, no token, bad command lines"
ctl peek nope
expect_rc 1 "peek of an unknown queue"
expect_err 'plantctl: 404: no queue "nope"' "peek of an unknown queue"
ctl redrive nope
expect_rc 1 "redrive of an unknown queue"
expect_err 'plantctl: 404: no queue "nope"' "redrive of an unknown queue"
PLANTD_TOKEN='' ctl queues
expect_rc 1 "queues without a token"
[[ $CERR == "plantctl: 401: "*"(set --token or PLANTD_TOKEN)" ]] || fail "no token: $CERR"
PLANTD_TOKEN='' ctl queues --token "$TOKEN"
expect_rc 0 "queues with --token"
PLANTD_URL=http://127.0.0.1:1 ctl --url "$A" stores
expect_rc 0 "--url over PLANTD_URL"
ctl
expect_rc 2 "without a command"
[[ $CERR == "usage: plantctl [options] COMMAND [ARGS]"* ]] || fail "no usage: $CERR"
ctl frobnicate
expect_rc 2 "with an unknown command"
[[ $CERR == 'plantctl: unknown command "frobnicate"'* ]] || fail "unknown command: $CERR"
ctl peek
expect_rc 2 "peek without a queue"
[[ $CERR == *"usage: plantctl [options] peek QUEUE [-n N]"* ]] || fail "peek usage: $CERR"
ctl status -n 3
expect_rc 2 "status -n 3"
ctl --help
expect_rc 0 "--help"
for c in status plugins queues topics stores publish peek redrive tail reload; do
  expect_line "^  $c( |$)" "--help (command $c)"
done
ctl tail --help
expect_rc 0 "tail --help"
expect_line '^usage: plantctl \[options\] tail PATTERN \[-n N\]$' "tail --help"

say "plantd stopped: cannot reach"
stop_plantd TERM 20
expect_exit 0
expect_in_log -F "stopped cleanly"
ctl status
expect_rc 1 "status with plantd stopped"
[[ $CERR == "plantctl: cannot reach plantd at $A: "* ]] || fail "plantd stopped: $CERR"
say "ok"
