#!/usr/bin/env bash
# plantd-bundle, the bundle command line (issue 9), with keys made by the
# openssl command line:
#
# - pack: NAME-VERSION.bundle in the current directory by default (no
#   temporary file left), -o, -c settings, -k signs; prints the file and
#   the manifest;
# - show: the manifest as JSON, whose sha256 and size are the module's and
#   whose abi is this build's SDK;
# - the format is what host/bundle.h says: openssl itself verifies the
#   signature over `jq -cS .manifest` and finds the same key_id;
# - verify: OK with the right key and --require-signature; refused (exit 1,
#   the reason) with another key, after an edit of the manifest (jq), after a
#   changed module byte, unsigned under --require-signature, a newer SDK;
#   an unsigned bundle, or a signed one without keys, passes when
#   signatures are not required, saying so;
# - pack refuses what is not a plugin and a public key to sign with;
# - bad command lines exit 2 with the usage; --help exits 0.
#
# Under $PLANTD_WRAPPER (valgrind), plantd-bundle runs behind it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v jq >/dev/null || fail "jq is needed"
command -v openssl >/dev/null || fail "the openssl command is needed"

TOOL=$PLANTD_BUILD_ROOT/tools/plantd-bundle
[[ -x $TOOL ]] || fail "no plantd-bundle at $TOOL"
read -r -a tool_wrapper <<<"$PLANTD_WRAPPER"
TOOL_CMD=("${tool_wrapper[@]}" "$TOOL")
GOOD=$PLANTD_FIXTURE_DIR/fx_good.so

# tool ARGS...: run plantd-bundle in $TEST_TMP/work; exit status in RC,
# stdout in TOUT, stderr in TERR.
WORK=$TEST_TMP/work
mkdir -p "$WORK"
tool() {
  RC=0
  (cd "$WORK" && "${TOOL_CMD[@]}" "$@") >"$TEST_TMP/tool.out" 2>"$TEST_TMP/tool.err" </dev/null || RC=$?
  TOUT=$(cat "$TEST_TMP/tool.out")
  TERR=$(cat "$TEST_TMP/tool.err")
}

# expect RC WHAT: the last run exited RC.
expect() {
  [[ $RC == "$1" ]] || fail "$2: exit $RC, expected $1
--- stdout:
$TOUT
--- stderr:
$TERR"
}

# has STREAM TEXT WHAT: TOUT or TERR holds the fixed string TEXT.
has() {
  local text
  if [[ $1 == out ]]; then text=$TOUT; else text=$TERR; fi
  [[ $text == *"$2"* ]] || fail "$3: no '$2' in std$1:
$text"
}

# key_id PUB.pem: the first 16 hex digits of the sha256 of the raw public
# key (the last 32 bytes of its DER form), computed by openssl alone.
key_id() {
  openssl pkey -pubin -in "$1" -outform DER | tail -c 32 | openssl dgst -sha256 -r | cut -c1-16
}

say "keys"
KEYS=$TEST_TMP/keys
mkdir -p "$KEYS"
for k in a b; do
  openssl genpkey -algorithm ed25519 -out "$KEYS/$k.pem" 2>/dev/null
  openssl pkey -in "$KEYS/$k.pem" -pubout -out "$KEYS/$k.pub.pem"
done
ID_A=$(key_id "$KEYS/a.pub.pem")
ID_B=$(key_id "$KEYS/b.pub.pem")
[[ $ID_A =~ ^[0-9a-f]{16}$ && $ID_A != "$ID_B" ]] || fail "bad key ids '$ID_A' '$ID_B'"

tool --version
expect 0 "--version"
ABI=$(sed -nE 's/.*SDK ABI ([0-9]+\.[0-9]+).*/\1/p' <<<"$TOUT")
[[ $ABI =~ ^[0-9]+\.[0-9]+$ ]] || fail "no SDK ABI in '$TOUT'"
SHA=$(openssl dgst -sha256 -r "$GOOD" | cut -c1-64)
SIZE=$(stat -c %s "$GOOD")

say "pack, unsigned, to the default file"
tool pack "$GOOD"
expect 0 "pack"
has out "wrote fx_good-0.0.1.bundle" "pack"
has out "sha256   $SHA" "pack"
has out "signed   no" "pack"
UNSIGNED=$WORK/fx_good-0.0.1.bundle
[[ -s $UNSIGNED ]] || fail "no $UNSIGNED"
[[ $(ls -A "$WORK") == fx_good-0.0.1.bundle ]] || fail "files left in $WORK: $(ls -A "$WORK")"

say "pack, signed, with settings, to -o"
tool pack -k "$KEYS/a.pem" --config '{"count": 2, "label": "x"}' "$GOOD" -o signed.bundle
expect 0 "pack -k"
has out "wrote signed.bundle" "pack -k"
has out "signed   yes, key $ID_A" "pack -k"
SIGNED=$WORK/signed.bundle

say "show"
tool show signed.bundle
expect 0 "show"
jq -e --arg sha "$SHA" --argjson size "$SIZE" --arg abi "$ABI" '
  .name == "fx_good" and .version == "0.0.1" and .abi == $abi and .sha256 == $sha and
  .size == $size and .config == {"count": 2, "label": "x"} and
  (.created | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"))' \
  <<<"$TOUT" >/dev/null || fail "show: unexpected manifest: $TOUT"
jq -e '.format == "plantd-bundle/1" and (.module | type) == "string"' "$SIGNED" >/dev/null ||
  fail "bad bundle document"

say "the format, checked by openssl alone"
jq -jcS .manifest "$SIGNED" >"$TEST_TMP/manifest.txt"
jq -r .signature.sig "$SIGNED" | openssl base64 -d -A >"$TEST_TMP/sig.bin"
[[ $(jq -r .signature.key_id "$SIGNED") == "$ID_A" ]] || fail "key_id is not openssl's $ID_A"
[[ $(jq -r .signature.alg "$SIGNED") == ed25519 ]] || fail "alg is not ed25519"
openssl pkeyutl -verify -pubin -inkey "$KEYS/a.pub.pem" -rawin -in "$TEST_TMP/manifest.txt" \
  -sigfile "$TEST_TMP/sig.bin" >/dev/null || fail "openssl does not verify the signature"
jq -r .module "$SIGNED" | openssl base64 -d -A | cmp -s - "$GOOD" ||
  fail "the module is not fx_good.so"

say "verify: the right key"
tool verify signed.bundle -K "$KEYS/b.pub.pem" --trusted-key "$KEYS/a.pub.pem" --require-signature
expect 0 "verify"
has out "bundle signed.bundle" "verify"
has out "version  0.0.1" "verify"
has out "OK (signature by key $ID_A verified)" "verify"
tool verify signed.bundle
expect 0 "verify, no keys"
has out "OK (signed by key $ID_A, not checked: no --trusted-key)" "verify, no keys"
tool verify fx_good-0.0.1.bundle
expect 0 "verify unsigned"
has out "OK (not signed)" "verify unsigned"

say "verify: the wrong key"
tool verify signed.bundle -K "$KEYS/b.pub.pem"
expect 1 "verify, another key"
has err "is signed by key $ID_A, which is not among the trusted keys ($ID_B in $KEYS/b.pub.pem)" \
  "verify, another key"
[[ $TOUT != *OK* ]] || fail "verify, another key: says OK: $TOUT"

say "verify: a manifest edited after signing"
jq '.manifest.version = "9.9.9"' "$SIGNED" >"$WORK/edited.bundle"
tool verify edited.bundle -K "$KEYS/a.pub.pem"
expect 1 "verify, edited"
has err "bundle edited.bundle: bad signature by key $ID_A" "verify, edited"
jq '.manifest.config.count = 3' "$SIGNED" >"$WORK/edited.bundle"
tool verify edited.bundle -K "$KEYS/a.pub.pem"
expect 1 "verify, edited config"
has err "bad signature" "verify, edited config"

say "verify: one byte of the module changed"
jq -r .module "$SIGNED" | openssl base64 -d -A >"$TEST_TMP/mod.bin"
old=$(od -An -tx1 -j 4096 -N 1 "$TEST_TMP/mod.bin" | tr -d ' ')
if [[ $old == 00 ]]; then new='\x01'; else new='\x00'; fi
printf '%b' "$new" | dd of="$TEST_TMP/mod.bin" bs=1 seek=4096 conv=notrunc status=none
BAD_SHA=$(openssl dgst -sha256 -r "$TEST_TMP/mod.bin" | cut -c1-64)
[[ $BAD_SHA != "$SHA" ]] || fail "the module did not change"
openssl base64 -A -in "$TEST_TMP/mod.bin" >"$TEST_TMP/mod.b64"
jq --rawfile m "$TEST_TMP/mod.b64" '.module = $m' "$SIGNED" >"$WORK/tampered.bundle"
for cmd in verify show; do
  tool "$cmd" tampered.bundle
  expect 1 "$cmd, tampered module"
  has err "bundle tampered.bundle: sha256 mismatch: manifest says $SHA, module is $BAD_SHA" \
    "$cmd, tampered module"
done

say "verify: unsigned under --require-signature"
tool verify fx_good-0.0.1.bundle --require-signature -K "$KEYS/a.pub.pem"
expect 1 "verify unsigned, required"
has err "bundle fx_good-0.0.1.bundle is not signed and the site requires signatures" \
  "verify unsigned, required"

say "verify: a module for a newer SDK"
tool pack "$PLANTD_FIXTURE_DIR/fx_newer_minor.so" -o newer.bundle
expect 0 "pack a newer minor"
tool verify newer.bundle
expect 1 "verify a newer minor"
has err "module fx_newer_minor built for SDK ${ABI%.*}.$((${ABI#*.} + 1)), host provides $ABI" \
  "verify a newer minor"

say "refusals of pack and of files"
tool pack "$PLANTD_FIXTURE_DIR/fx_no_desc.so"
expect 1 "pack, no descriptor"
has err "no plantd descriptor" "pack, no descriptor"
tool pack "$GOOD" -k "$KEYS/a.pub.pem"
expect 1 "pack, public key"
has err "signing key $KEYS/a.pub.pem: not a PEM private key" "pack, public key"
tool verify signed.bundle -K "$KEYS/a.pem"
expect 1 "verify, private key as trusted"
has err "trusted key $KEYS/a.pem: not a PEM public key" "verify, private key as trusted"
tool show missing.bundle
expect 1 "show, missing"
has err "bundle missing.bundle: No such file or directory" "show, missing"
echo '{"format": "zip"}' >"$WORK/other.bundle"
tool show other.bundle
expect 1 "show, another format"
has err "format zip is not supported" "show, another format"

say "command lines"
tool --help
expect 0 "--help"
has out "usage: plantd-bundle COMMAND" "--help"
has out "openssl genpkey -algorithm ed25519" "--help"
for cmd in pack verify show; do
  tool "$cmd" --help
  expect 0 "$cmd --help"
  has out "usage: plantd-bundle $cmd" "$cmd --help"
done
has out "Exit status" "show --help"
bad_lines=(
  ""
  "frobnicate x"
  "pack"
  "pack a.so b.so"
  "verify"
  "show"
  "show a b"
  "verify signed.bundle --config {}"
  "show signed.bundle -o out"
  "pack $GOOD -K $KEYS/a.pub.pem"
  "pack $GOOD --require-signature"
  "pack $GOOD --bogus"
  "pack $GOOD -o"
)
for line in "${bad_lines[@]}"; do
  read -r -a args <<<"$line"
  tool "${args[@]}"
  expect 2 "'plantd-bundle $line'"
  has err "usage: plantd-bundle" "'plantd-bundle $line'"
done
for cfg in '[1, 2]' 'not json' '"x"'; do
  tool pack "$GOOD" -c "$cfg"
  expect 2 "pack -c '$cfg'"
  has err "--config needs a JSON object" "pack -c '$cfg'"
done

say "ok"
