#!/usr/bin/env bash
# Self-tests of promcheck: every tests/promcheck_cases/good_*.prom must pass;
# every bad_*.prom must fail, with the reason its first line names
# ("# expect: TEXT": TEXT must appear in promcheck's "line N: reason").
#
#   tests/promcheck_test.sh [PROMCHECK [CASES_DIR]]
#
# PROMCHECK defaults to $PROMCHECK, CASES_DIR to promcheck_cases beside
# this script. Prints one line per case and ends with "N passed, N failed".
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
promcheck=${1:-${PROMCHECK:-}}
cases=${2:-$here/promcheck_cases}
if [ -z "$promcheck" ] || [ ! -x "$promcheck" ]; then
	echo "usage: promcheck_test.sh PROMCHECK [CASES_DIR] (or set \$PROMCHECK)" >&2
	exit 2
fi

passed=0
failed=0
n=0
for f in "$cases"/good_*.prom "$cases"/bad_*.prom; do
	[ -e "$f" ] || continue
	n=$((n + 1))
	name=$(basename "$f" .prom)
	out=$("$promcheck" <"$f" 2>&1)
	rc=$?
	ok=0
	case $name in
	good_*)
		[ $rc -eq 0 ] && ok=1
		;;
	bad_*)
		expect=$(sed -n '1s/^# expect: //p' "$f")
		if [ $rc -eq 1 ] && [[ $out == line\ [0-9]*:\ * ]] &&
			{ [ -z "$expect" ] || [[ $out == *"$expect"* ]]; }; then
			ok=1
		fi
		;;
	esac
	if [ $ok -eq 1 ]; then
		passed=$((passed + 1))
		echo "ok $n - $name${out:+: $out}"
	else
		failed=$((failed + 1))
		echo "not ok $n - $name: exit $rc: ${out:-no output}${expect:+ (expected: $expect)}"
	fi
	expect=
done
echo "1..$n"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ] && [ $n -gt 0 ]
