#!/usr/bin/env bash
# The store contract (tests/test_store_contract.c, built with the fake
# host's HTTP client as test_store_contract_http) against store_dynamodb on
# dynalite, started on loopback for the run and stopped by pid.
#
# Every data_dir of the contract gets its own table (contract-plantd-test-
# XXXXXX: PLANTD_STORE_UNIQUE_SETTING=table), created by the store at its
# first open, and the reopen test runs too (PLANTD_STORE_DURABLE=1).
# dynalite has no transactions: batches are written op by op, which the
# contract accepts (atomic_out = 0). TTL semantics are the store's own
# read-side check (dynalite has no TTL either), which the contract's TTL
# tests exercise through explicit `now` values.
#
# Environment (tests/meson.build): what lib.sh wants, plus
#   PLANTD_STORE_CONTRACT  the test_store_contract_http binary
#   PLANTD_STORE_PLUGIN    store_dynamodb.so
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/integration/lib.sh"
# shellcheck source-path=SCRIPTDIR source=integration/lib_aws.sh
source "$(dirname "${BASH_SOURCE[0]}")/integration/lib_aws.sh"

: "${PLANTD_STORE_CONTRACT:?set PLANTD_STORE_CONTRACT to the test_store_contract_http binary}"
: "${PLANTD_STORE_PLUGIN:?set PLANTD_STORE_PLUGIN to store_dynamodb.so}"

need_aws_peers
start_dynalite

export PLANTD_STORE_SETTINGS="{\"table\": \"contract\", \"endpoint\": \"$DYNALITE_URL\", \"region\": \"us-east-1\", \"timeout\": \"10s\"}"
export PLANTD_STORE_UNIQUE_SETTING=table
export PLANTD_STORE_DURABLE=1
unset PLANTD_STORE_PERSISTENT
# the contract's data_dirs (unused by this backend) under our own tmp
export TMPDIR=$TEST_TMP

say "store contract: store_dynamodb against dynalite at $DYNALITE_URL"
rc=0
timeout $((540 * TIME_FACTOR)) "$PLANTD_STORE_CONTRACT" >"$TEST_TMP/contract.out" 2>&1 || rc=$?
cat "$TEST_TMP/contract.out"
if ((rc != 0)); then
  aws_fail "the store contract failed against dynalite (status $rc)"
fi

# What the contract wrote is really in dynalite: one table per data_dir,
# and the item layout the README documents (pk, sk as bytes, ver, val).
tables=$(aws_cli dynamodb list-tables | jq -r '.TableNames[]' | grep -c '^contract-plantd-test-' || true)
((tables >= 20)) || aws_fail "expected a table per contract test, found $tables"
say "the contract created $tables tables"
say "PASS"
