#!/usr/bin/env bash
# Bad configurations and bad plugins: plantd refuses them with exit status 2
# and a message that names the place (file:line, instance, plugin file).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ABI=$(host_abi)
[[ $ABI =~ ^([0-9]+)\.([0-9]+)$ ]] || fail "cannot read the SDK ABI from '$PLANTD --version'"
ABI_MAJOR=${BASH_REMATCH[1]}
ABI_MINOR=${BASH_REMATCH[2]}

# case_begin NAME: a fresh directory $DIR for the case; LOG and OUT in it.
case_begin() {
  say "case: $1"
  DIR=$TEST_TMP/$1
  mkdir -p "$DIR"
  LOG=$DIR/stderr
  OUT=$DIR/stdout
}

# site_file FILE [PLUGIN_PATH]: a site header (data in FILE's directory)
# followed by stdin.
site_file() {
  {
    echo 'site = "it-bad";'
    echo 'data_dir = "data";'
    echo "plugin_path = \"${2:-$PLANTD_FIXTURE_DIR}\";"
    cat
  } >"$1"
}

# refused ARGS...: plantd ARGS exits 2.
refused() {
  plantd_run "$@"
  expect_exit 2
}

# says TEXT...: stderr holds each fixed string.
says() {
  local t
  for t in "$@"; do
    expect_in_log -F "$t"
  done
}

# ---- configuration ---------------------------------------------------------------

case_begin syntax_error
site_file "$DIR/site.conf" <<'EOF'
log_level = "info";
oops = ;
EOF
line=$(line_of "$DIR/site.conf" 'oops')
refused -c "$DIR/site.conf" --check
[[ $(head -n 1 "$LOG") == "$DIR/site.conf:$line: "* ]] ||
  fail "the message does not start with $DIR/site.conf:$line: "
says "syntax error"
refused -c "$DIR/site.conf"
says "$DIR/site.conf:$line: "

case_begin unknown_module
site_file "$DIR/site.conf" <<'EOF'
plugins = (
  { name = "first"; module = "fx_good"; label = "ok"; },
  { name = "mystery"; module = "no_such_module"; }
);
EOF
line=$(line_of "$DIR/site.conf" '"mystery"')
refused -c "$DIR/site.conf" --check
says "$DIR/site.conf:$line: " '"mystery"' 'unknown module' 'no_such_module'
refused -c "$DIR/site.conf"
says "$DIR/site.conf:$line: " '"mystery"' 'unknown module'

case_begin duplicate_name
mkdir -p "$DIR/conf.d"
site_file "$DIR/conf.d/plantd.conf" <<'EOF'
plugins = (
  { name = "twin"; module = "fx_good"; label = "one"; }
);
EOF
cat >"$DIR/conf.d/20-more.conf" <<'EOF'
# a fragment
plugins = (
  { name = "other"; module = "fx_good"; label = "two"; },
  { name = "twin"; module = "fx_good"; label = "three"; }
);
EOF
line=$(line_of "$DIR/conf.d/20-more.conf" '"twin"')
refused -c "$DIR/conf.d" --check
says "$DIR/conf.d/20-more.conf:$line: " '"twin"' 'duplicate'

case_begin wrong_type
site_file "$DIR/site.conf" <<'EOF'
plugins = (
  { name = "typo";
    module = "fx_good";
    label = 5; }
);
EOF
line=$(line_of "$DIR/site.conf" 'label = 5')
refused -c "$DIR/site.conf" --check
says "$DIR/site.conf:$line: " '"typo"' 'must be a string'
refused -c "$DIR/site.conf"
says "$DIR/site.conf:$line: " '"typo"' 'must be a string'

case_begin missing_required
site_file "$DIR/site.conf" <<'EOF'
plugins = (
  { name = "nolabel";
    module = "fx_good";
    count = 2; }
);
EOF
line=$(line_of "$DIR/site.conf" '"nolabel"')
refused -c "$DIR/site.conf" --check
says "$DIR/site.conf:$line: " '"nolabel"' "'label'"

case_begin validate_refuses
site_file "$DIR/site.conf" <<'EOF'
plugins = (
  { name = "picky";
    module = "fx_good";
    label = "bad"; }
);
EOF
line=$(line_of "$DIR/site.conf" 'label = "bad"')
refused -c "$DIR/site.conf" --check
says "$DIR/site.conf:$line: " '"picky"' 'label must not be bad'

case_begin env_missing
mkdir -p "$DIR/conf.d/env"
site_file "$DIR/conf.d/plantd.conf" <<'EOF'
plugins = (
  { name = "a"; module = "fx_good"; label = "x"; }
);
EOF
refused -c "$DIR/conf.d" --env nope --check
says "env/nope.conf"
refused -c "$DIR/conf.d" --env nope
says "env/nope.conf"

# ---- plugin files ----------------------------------------------------------------

case_begin plugin_file_missing
mkdir -p "$DIR/plugins"
ln -s "$DIR/plugins/does-not-exist.so" "$DIR/plugins/ghost.so"
site_file "$DIR/site.conf" "$DIR/plugins" <<'EOF'
plugins = (
  { name = "spook"; module = "ghost"; }
);
EOF
line=$(line_of "$DIR/site.conf" '"spook"')
refused -c "$DIR/site.conf" --check
says "$DIR/site.conf:$line: " '"spook"' 'ghost.so'

case_begin not_a_shared_object
mkdir -p "$DIR/plugins"
cp "$PLANTD_SOURCE_ROOT/tests/data/not_a_plugin.so" "$DIR/plugins/junk.so"
site_file "$DIR/site.conf" "$DIR/plugins" <<'EOF'
plugins = (
  { name = "trash"; module = "junk"; }
);
EOF
line=$(line_of "$DIR/site.conf" '"trash"')
refused -c "$DIR/site.conf" --check
says "$DIR/site.conf:$line: " '"trash"' "$DIR/plugins/junk.so"
refused -c "$DIR/site.conf"
says "$DIR/plugins/junk.so"

fixture_file() {
  local f
  f=$(cd -P "$PLANTD_FIXTURE_DIR" && pwd)/$1.so
  [[ -f $f ]] || fail "no fixture $f: is the build complete?"
  echo "$f"
}

case_begin no_descriptor
site_file "$DIR/site.conf" <<'EOF'
plugins = (
  { name = "plain"; module = "fx_no_desc"; }
);
EOF
file=$(fixture_file fx_no_desc)
refused -c "$DIR/site.conf" --check
says '"plain"' "$file" 'plant_plugin_v1'

case_begin abi_major
site_file "$DIR/site.conf" <<'EOF'
plugins = (
  { name = "future"; module = "fx_major2"; }
);
EOF
file=$(fixture_file fx_major2)
refused -c "$DIR/site.conf" --check
says '"future"' "$file" "built for SDK 2.0, host provides $ABI"
refused -c "$DIR/site.conf"
says "built for SDK 2.0, host provides $ABI"

case_begin abi_newer_minor
site_file "$DIR/site.conf" <<'EOF'
plugins = (
  { name = "newer"; module = "fx_newer_minor"; }
);
EOF
file=$(fixture_file fx_newer_minor)
refused -c "$DIR/site.conf" --check
says '"newer"' "$file" "built for SDK $ABI_MAJOR.$((ABI_MINOR + 1)), host provides $ABI"

# ---- init ----------------------------------------------------------------------------

case_begin init_fails
site_file "$DIR/site.conf" <<'EOF'
plugins = (
  { name = "dev"; module = "fx_init_fails"; }
);
EOF
line=$(line_of "$DIR/site.conf" '"dev"')
refused -c "$DIR/site.conf"
says "$DIR/site.conf:$line: " '"dev"' 'cannot open device /dev/fx0'
expect_not_in_log -E 'site .* up'

case_begin init_fails_not_required
site_file "$DIR/site.conf" <<'EOF'
plugins = (
  { name = "fine"; module = "fx_good"; label = "x"; },
  { name = "dev"; module = "fx_init_fails"; required = false; }
);
EOF
plantd_run -c "$DIR/site.conf" --run-for 1
expect_exit 0
expect_in_log -E 'inst=dev .*cannot open device /dev/fx0'
expect_in_log -E 'site .* up'
expect_in_log -E 'inst=fine .*msg="started \('
expect_in_log -F 'stopped cleanly'

# ---- the repository's own example site -------------------------------------------------

case_begin example_site
for env in "" dev prod; do
  plantd_run -c "$PLANTD_SOURCE_ROOT/conf.d" ${env:+--env "$env"} --check
  expect_exit 0
  expect_in_log -F 'configuration OK' "$OUT"
done

say "ok"
