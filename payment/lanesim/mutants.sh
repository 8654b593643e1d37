#!/usr/bin/env bash
# Puts back, one at a time, each bug the audit of "every answer bound to its
# order" found, and runs the whole-lane simulation on it: each mutant must be
# caught. Prints the first seed that caught it and how many seeds that took.
#
#   payment/lanesim/mutants.sh [SEEDS [NAME-FILTER]]    (default 5000 seeds per mutant)
#
# Runs in a scratch worktree of HEAD; the checkout is not touched.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel)
seeds=${1:-5000}
filter=${2:-}
tmp=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$tmp/wt" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git -C "$root" worktree add --detach "$tmp/wt" HEAD >/dev/null
cd "$tmp/wt"
status=0
for patch in "$here"/mutants/*.patch; do
  name=$(basename "$patch" .patch)
  [[ "$name" == *"$filter"* ]] || continue
  git checkout -q -- .
  if ! git apply "$patch"; then
    echo "mutant $name: patch does not apply (regenerate it)"; status=1; continue
  fi
  start=$(date +%s)
  out=$(SCANPAY_SIM_SEEDS=$seeds go test -count=1 -timeout 60m -run '^TestLaneSim$' -v ./payment/lanesim 2>&1 || true)
  took=$(( $(date +%s) - start ))
  # The first failure names its seed.
  why=$(grep -E '(oracle|driver|world|lane|register)_test\.go:[0-9]+' <<<"$out" | head -1 | sed -E 's/^\s+//' | cut -c1-180 || true)
  seed=$(grep -oE 'seed [0-9]+' <<<"$why" | head -1 | grep -oE '[0-9]+' || true)
  if [ -z "$seed" ] && grep -qE '^(--- FAIL|FAIL|panic)' <<<"$out"; then
    seed=$(grep -oE 'seed[0-9]+' <<<"$out" | head -1 | grep -oE '[0-9]+' || echo "?")
  fi
  if [ -n "$seed" ]; then
    echo "mutant $name: caught by seed $seed (${took}s): $why"
  else
    echo "mutant $name: NOT caught in $seeds seeds"; status=1
  fi
done
exit $status
