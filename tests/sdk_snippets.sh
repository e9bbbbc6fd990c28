#!/usr/bin/env bash
# The guide's code compiles: every ```c block of sdk/README.md is built on
# its own as C11 with -Wall -Wextra -Werror (and the project's warnings)
# against sdk/include, and the test fails naming the README line of each
# block that does not build.
#
# The convention (also stated in an HTML comment at the top of the README).
# What a block is follows from the HTML comment on the line right above its
# opening fence:
#
#   (none)                       A file's worth of top-level code: types,
#                                functions, a descriptor. It is compiled after
#                                the prelude below, which the README states in
#                                "Reading the examples".
#   <!-- snippet: body -->       Statements: compiled as the body of
#                                  static int snippet(plant_instance *self,
#                                          const struct plant_host_api *api,
#                                          const json_t *config)
#                                after the same prelude, i.e. where init() runs.
#   <!-- snippet: file PATH -->  A complete file of the tree (PATH from the
#                                source root, e.g. sdk/examples/x.c), shown in
#                                full: the block must be identical to the file,
#                                which meson builds as a plugin; it is compiled
#                                here as it is, without the prelude.
#
# Only fences opened by exactly ```c count; ```sh, ``` and the like are not
# compiled.
#
# The prelude: _POSIX_C_SOURCE 200809L; <inttypes.h>, <stdbool.h>,
# <stdint.h>, <stdio.h>, <stdlib.h>, <string.h>, <plantd/plantd.h>; and
# -Wunused-function and -Wunused-const-variable silenced, so that a block may
# show a handler or a key table without the code that uses it. A `#line`
# directive makes the compiler's messages name README lines.
#
# Usage: sdk_snippets.sh SOURCE_ROOT [CFLAG...] -- CC [CC_ARG...]
#   tests/meson.build passes the project's C compiler and jansson's include
#   directory; by hand: tests/sdk_snippets.sh . $(pkg-config --cflags jansson) -- cc
set -u

usage() {
	echo "usage: $0 SOURCE_ROOT [CFLAG...] -- CC [CC_ARG...]" >&2
	exit 2
}

[ $# -ge 1 ] || usage
root=$1
shift
extra=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
	extra+=("$1")
	shift
done
[ $# -ge 2 ] || usage
shift
cc=("$@")

readme=sdk/README.md
[ -f "$root/$readme" ] || { echo "no $root/$readme" >&2; exit 2; }
[ -f "$root/sdk/include/plantd/plantd.h" ] || { echo "no SDK header under $root/sdk/include" >&2; exit 2; }

cflags=(-std=c11 -O2 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
	-Wmissing-prototypes -Wpointer-arith -Wformat=2 -Wvla
	-I"$root/sdk/include" "${extra[@]}")

work=$(mktemp -d "${TMPDIR:-/tmp}/sdk-snippets.XXXXXX") || exit 2
trap 'rm -rf "$work"' EXIT

# Split the README into one file per ```c block: block-N.txt holds the code,
# blocks.tsv one line per block: N, the README line of its first code line,
# the mode (top, body, file) and the file for mode `file`.
awk -v dir="$work" '
function fail(msg) { printf "%s:%d: %s\n", FILENAME, NR, msg > "/dev/stderr"; bad = 1 }
BEGIN { n = 0; inblock = 0; other = 0; prev = "" }
{
	line = $0
	sub(/\r$/, "", line)
	if (other) {
		if (line ~ /^```[ \t]*$/)
			other = 0
		prev = line
		next
	}
	if (inblock) {
		if (line ~ /^```[ \t]*$/) {
			close(out)
			inblock = 0
		} else {
			print line > out
		}
		prev = line
		next
	}
	if (line ~ /^```c[ \t]*$/) {
		n++
		mode = "top"
		file = ""
		if (prev ~ /^<!-- snippet:/) {
			spec = prev
			sub(/^<!-- snippet:[ \t]*/, "", spec)
			sub(/[ \t]*-->[ \t]*$/, "", spec)
			if (spec == "body") {
				mode = "body"
			} else if (spec ~ /^file[ \t]+[^ \t]+$/) {
				mode = "file"
				file = spec
				sub(/^file[ \t]+/, "", file)
			} else {
				fail("unknown snippet marker \"" prev "\" (body, or file PATH)")
			}
		}
		out = dir "/block-" n ".txt"
		printf "" > out
		printf "%d\t%d\t%s\t%s\n", n, NR + 1, mode, file > (dir "/blocks.tsv")
		inblock = 1
		openline = NR
	} else if (line ~ /^```/) {
		other = 1
	}
	prev = line
}
END {
	if (inblock) {
		printf "%s:%d: the ```c block opened here is never closed\n", FILENAME, openline > "/dev/stderr"
		bad = 1
	}
	exit bad
}
' "$root/$readme" || { echo "FAIL: cannot read the blocks of $readme" >&2; exit 1; }

if [ ! -s "$work/blocks.tsv" ]; then
	echo "FAIL: $readme has no \`\`\`c block: is the fence syntax still \`\`\`c?" >&2
	exit 1
fi

prelude() {
	cat <<'EOF'
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <plantd/plantd.h>
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-const-variable"
EOF
}

total=0
failed=0
while IFS=$'\t' read -r n line mode file; do
	total=$((total + 1))
	src=$work/block-$n.c
	case $mode in
	top)
		{ prelude; printf '#line %d "%s"\n' "$line" "$root/$readme"; cat "$work/block-$n.txt"; } >"$src"
		;;
	body)
		{
			prelude
			printf 'static int snippet(plant_instance *self, const struct plant_host_api *api,\n'
			printf '\t\t   const json_t *config)\n{\n\t(void)self;\n\t(void)api;\n\t(void)config;\n'
			printf '#line %d "%s"\n' "$line" "$root/$readme"
			cat "$work/block-$n.txt"
			printf 'return PLANT_OK;\n}\n'
		} >"$src"
		;;
	file)
		if [ ! -f "$root/$file" ]; then
			echo "FAIL $readme:$line: the block shows $file, which does not exist"
			failed=$((failed + 1))
			continue
		fi
		if ! diff -u --label "$file" --label "$readme:$line" "$root/$file" \
			"$work/block-$n.txt" >"$work/diff-$n"; then
			echo "FAIL $readme:$line: the block differs from $file (copy the file into the block):"
			cat "$work/diff-$n"
			failed=$((failed + 1))
			continue
		fi
		src=$root/$file
		;;
	esac
	if "${cc[@]}" "${cflags[@]}" -c "$src" -o "$work/block-$n.o" 2>"$work/err-$n"; then
		echo "ok   $readme:$line ($mode${file:+ $file})"
	else
		echo "FAIL $readme:$line: this \`\`\`c block ($mode${file:+ $file}) does not compile:"
		sed 's/^/    /' "$work/err-$n"
		failed=$((failed + 1))
	fi
done <"$work/blocks.tsv"

echo "$((total - failed)) of $total blocks of $readme compile"
[ "$failed" -eq 0 ]
