#!/usr/bin/env bash
# The host's HTTP server and its bad input (issue 6): tokens (none, wrong,
# right), TLS with a certificate made here, a body over max_body (413), huge
# headers (400), a client that never finishes its request (closed after the
# timeout), connections beyond max_connections (503, and served again once
# one closes), a bad percent escape (400), requests during shutdown (503,
# while the request already in a handler still gets its answer); listener
# mistakes in the config are refused by --check naming file and line, and a
# plugin asking for a listener the site lacks fails at start. plantd stays
# up through all of it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v jq >/dev/null || fail "jq is needed"
command -v curl >/dev/null || fail "curl is needed"
command -v openssl >/dev/null || fail "openssl is needed"

CONF=$TEST_TMP/site.conf
DATA=$TEST_TMP/data
TOKEN=s3cret-token-for-tests

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TEST_TMP/key.pem" -out "$TEST_TMP/cert.pem" \
  -days 1 -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null ||
  fail "openssl could not make a test certificate"

cat >"$CONF" <<CONF
site = "it-http";
data_dir = "data";
plugin_path = "$PLANTD_FIXTURE_DIR";
listeners = (
  { name = "admin"; admin = true; port = 0; },
  { name = "ingest"; port = 0; threads = 2; max_body = 1000; max_header = 1024;
    timeout = "1s"; },
  { name = "limited"; port = 0; max_connections = 2; timeout = "30s"; },
  { name = "secure"; port = 0; tls_cert = "cert.pem"; tls_key = "key.pem";
    tokens = ["$TOKEN"]; }
);
plugins = (
  { name = "web"; module = "fx_http"; slow = "1s"; },
  { name = "web2"; module = "fx_http"; listener = "limited"; },
  { name = "web3"; module = "fx_http"; listener = "secure"; }
);
CONF

start_plantd -c "$CONF"
wait_urls "$DATA"
I=$(url_of "$DATA" ingest)
L=$(url_of "$DATA" limited)
S=$(url_of "$DATA" secure)
[[ $S == https://127.0.0.1:* ]] || fail "the TLS listener's URL: $S"

say "tokens and TLS"
req GET "$S/fx/echo" --cacert "$TEST_TMP/cert.pem"
expect_code 401 "no token"
[[ $(header_of WWW-Authenticate) == Bearer ]] || fail "401 without WWW-Authenticate"
[[ $(jq -r .error <<<"$BODY") == *"needs a token"* ]] || fail "401 message: $BODY"
req GET "$S/fx/echo" --cacert "$TEST_TMP/cert.pem" -H "Authorization: Bearer ${TOKEN}x"
expect_code 401 "a wrong token"
req GET "$S/fx/echo" --cacert "$TEST_TMP/cert.pem" -H "Authorization: Bearer ${TOKEN:0:10}"
expect_code 401 "a prefix of the token"
req GET "$S/fx/echo" --cacert "$TEST_TMP/cert.pem" -H "Authorization: Bearer $TOKEN"
expect_code 200 "the right token over TLS"
[[ $(jq -r .instance <<<"$BODY") == web3 ]] || fail "TLS echo: $BODY"
req GET "http://${S#https://}/fx/echo" -H "Authorization: Bearer $TOKEN"
[[ $CODE != 200 ]] || fail "plain HTTP to the TLS listener was answered 200"

say "limits: body, headers, escapes"
head -c 2000 /dev/zero | tr '\0' a >"$TEST_TMP/big"
req POST "$I/fx/echo/x" --data-binary "@$TEST_TMP/big"
expect_code 413 "a body over max_body"
head -c 10485760 /dev/zero | tr '\0' a >"$TEST_TMP/10mb"
req POST "$I/fx/echo/x" --data-binary "@$TEST_TMP/10mb"
[[ $CODE == 413 || $CODE == 000 ]] || fail "a 10 MB body: HTTP $CODE"
req POST "$I/fx/echo/x" --data-binary 'small'
expect_code 200 "a small body after the big ones"
req GET "$I/fx/echo" -H "X-Big: $(head -c 2000 /dev/zero | tr '\0' b)"
expect_code 400 "headers over max_header"
req GET "$I/fx/ech%zz"
expect_code 400 "a bad percent escape"
req GET "$I/fx/ech%00o"
expect_code 400 "an escaped NUL"

say "a client that never finishes its request is closed after the timeout"
port=${I##*:}
exec {slow}<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /fx/echo HTTP/1.1\r\nHost: x\r\n' >&"$slow"
start=$(date +%s%N)
timeout $((10 * TIME_FACTOR)) cat <&"$slow" >/dev/null || fail "the slow client was not closed"
took_ms=$((($(date +%s%N) - start) / 1000000))
((took_ms >= 800)) || fail "closed after $took_ms ms, before the 1 s timeout"
exec {slow}>&-

say "max_connections: the third connection is refused, served again once one closes"
lport=${L##*:}
exec {c1}<>"/dev/tcp/127.0.0.1/$lport"
exec {c2}<>"/dev/tcp/127.0.0.1/$lport"
printf 'GET /fx/echo HTTP/1.1\r\nHost: x\r\n\r\n' >&"$c1"
printf 'GET /fx/echo HTTP/1.1\r\nHost: x\r\n\r\n' >&"$c2"
IFS= read -r line1 <&"$c1"
IFS= read -r line2 <&"$c2"
[[ $line1 == "HTTP/1.1 200"* && $line2 == "HTTP/1.1 200"* ]] || fail "two connections: $line1 / $line2"
req GET "$L/fx/echo"
expect_code 503 "a third connection"
[[ $(jq -r .error <<<"$BODY") == *"connections already"* ]] || fail "503 message: $BODY"
exec {c1}>&-
served_again() {
  req GET "$L/fx/echo"
  [[ $CODE == 200 ]]
}
wait_until 5 "a connection to be served after one closed" served_again
exec {c2}>&-

say "listener mistakes are config errors with file and line"
check_conf() {
  cat >"$TEST_TMP/bad.conf" <<CONF
site = "bad";
plugin_path = "$PLANTD_FIXTURE_DIR";
listeners = (
  $1
);
CONF
  plantd_run -c "$TEST_TMP/bad.conf" --check
  expect_exit 2
  grep -qF -- "$2" "$LOG" || fail "--check of '$1': expected '$2' in: $(cat "$LOG")"
}
saved_log=$LOG saved_pid=$PLANTD_PID
LOG=$TEST_TMP/check.log
check_conf '{ name = "admin"; admin = true; address = "0.0.0.0"; port = 0; }' \
  'bad.conf:4: listener "admin": the admin listener on 0.0.0.0 needs '"'tokens'"
check_conf '{ name = "a"; port = 70000; }' "bad.conf:4: listener \"a\": 'port' must be an integer from 0 to 65535"
check_conf '{ name = "a"; port = 0; colour = "red"; }' "bad.conf:4: listener \"a\": unknown setting 'colour'"
check_conf '{ name = "a"; port = 0; tls_cert = "missing.pem"; tls_key = "missing.pem"; }' \
  'bad.conf:4: listener "a": cannot use certificate'
check_conf '{ name = "a"; port = 0; tokens = ["short"]; }' "8 characters or more"
check_conf '{ name = "a"; }' "missing required setting 'port'"
cat >"$TEST_TMP/nolistener.conf" <<CONF
site = "bad";
data_dir = "data2";
plugin_path = "$PLANTD_FIXTURE_DIR";
plugins = ( { name = "w"; module = "fx_http"; listener = "nope"; } );
CONF
plantd_run -c "$TEST_TMP/nolistener.conf"
expect_exit 2
grep -qF 'instance "w" (module fx_http): init failed: cannot serve GET /fx/echo on "nope": not found' "$LOG" ||
  fail "a missing listener: $(cat "$LOG")"
LOG=$saved_log PLANTD_PID=$saved_pid STATUS=

say "during shutdown: new requests get 503, the one in a handler its answer"
curl -s -o "$TEST_TMP/slow.body" -w '%{http_code}' --max-time $((20 * TIME_FACTOR)) \
  -X POST "$I/fx/slow" >"$TEST_TMP/slow.code" &
slow_pid=$!
_BG_PIDS+=("$slow_pid")
wait_for_log "inst=web msg=\"slow request: in the handler\"" 10
send_signal TERM
wait_for_log "signal SIGTERM: stopping" 10
req GET "$I/fx/echo"
expect_code 503 "a request during shutdown"
[[ $(jq -r .error <<<"$BODY") == "plantd is shutting down" ]] || fail "503 body: $BODY"
wait "$slow_pid" || fail "the slow request failed"
_forget_pid "$slow_pid"
[[ $(cat "$TEST_TMP/slow.code") == 200 ]] || fail "the request in its handler got $(cat "$TEST_TMP/slow.code")"
wait_exit 20
expect_exit 0
say "ok"
