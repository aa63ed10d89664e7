#!/usr/bin/env bash
# Mutation check: does the suite notice when important behaviour breaks?
#
#   scripts/mutate.sh [-j 2] [-b] [-k] [NAME_FILTER ...]
#
# Each tests/mutations/*.patch is one known breakage of the product, in this format (git apply
# skips the leading lines):
#     # breaks: <the behaviour, in words>
#     # tests: tests/e2e/<file>.test.ts [more files]
#     --- a/src/path/file.ts
#     +++ b/src/path/file.ts
#     @@ ... a unified diff made with `git diff` ...
# For each patch (or those whose name contains one of the NAME_FILTERs) the script copies the
# working tree as it is (tracked and untracked files, not ignored ones; node_modules linked) to
# a scratch directory, applies the patch there, rebuilds build/mailraven, and runs the listed
# test files against the broken binary. The caller's tree is never touched.
#
#   caught          the listed tests failed: the breakage is noticed
#   SURVIVED        they all passed: the tests do not cover what the patch breaks
#   does-not-apply  the patch no longer fits src/ (refresh it)
#   does-not-build  the patched tree does not compile
#   no-tests        the patch has no "# tests:" line
#
# Options: -j 2 runs two patches at a time (each in its own scratch copy; the machine has 2
# cores, more only slows every test down; patches whose tests bind the same fixed port, such
# as npm-start's 2525 or mx-delivery's 127.0.0.N:25, must not run together); -b first runs
# each listed test file once on the unpatched copy, so a test that fails anyway is reported
# ("baseline-fails") rather than counted as catching; -k keeps the scratch copies. Logs go to
# a temp directory named at the end.
# Exit status: 0 when every patch is caught, 1 otherwise, 2 on a usage error.
#
# Not part of `npm test` (one build and one test run per patch: minutes each). Run it before
# resolving an issue that changes tests or hardening, and quote the table in the issue note.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$root/node_modules/.bin:$PATH"

jobs=1 baseline=0 keep=0
usage() { echo "usage: scripts/mutate.sh [-j N] [-b] [-k] [NAME_FILTER ...]" >&2; exit 2; }
while getopts "j:bkh" opt; do
  case $opt in
    j) [[ $OPTARG =~ ^[1-9][0-9]*$ ]] || usage; jobs=$OPTARG ;;
    b) baseline=1 ;;
    k) keep=1 ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
filters=("$@")

command -v bun >/dev/null || { echo "mutate.sh: bun not found; run npm ci first" >&2; exit 1; }
patches=()
for p in tests/mutations/*.patch; do
  [ -e "$p" ] || continue
  name=$(basename "$p" .patch)
  if [ ${#filters[@]} -gt 0 ]; then
    match=0
    for f in "${filters[@]}"; do [[ $name == *"$f"* ]] && match=1; done
    [ "$match" = 1 ] || continue
  fi
  patches+=("$p")
done
[ ${#patches[@]} -gt 0 ] || { echo "mutate.sh: no patch in tests/mutations/ matches" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/mailraven-mutate-XXXXXX")
logs="$work/logs"
mkdir -p "$logs" "$work/results"
cleanup() { [ "$keep" = 1 ] || find "$work" -mindepth 1 -maxdepth 1 -name 'tree-*' -exec rm -rf {} +; }
trap cleanup EXIT
trap 'echo "mutate.sh: interrupted" >&2; exit 130' INT TERM

# A copy of the working tree as the caller has it (uncommitted changes included).
scratch_copy() {
  local dest=$1
  mkdir -p "$dest"
  git -C "$root" ls-files -z --cached --others --exclude-standard \
    | (cd "$root" && xargs -0 -r sh -c 'for f; do if [ -e "$f" ]; then printf "%s\0" "$f"; fi; done' sh) \
    | tar -C "$root" --null -T - -cf - | tar -C "$dest" -xf -
  ln -s "$root/node_modules" "$dest/node_modules"
}

tests_of() { sed -n 's/^# tests:[[:space:]]*//p' "$1" | head -1; }
breaks_of() { sed -n 's/^# breaks:[[:space:]]*//p' "$1" | head -1; }

# Each test file's outcome on the unpatched tree (for -b), computed once.
declare -A base=()
if [ "$baseline" = 1 ]; then
  echo "== baseline: the listed test files on the unpatched tree"
  tree="$work/tree-baseline"
  scratch_copy "$tree"
  (cd "$tree" && npm run --silent build >"$logs/baseline-build.log" 2>&1) || { echo "mutate.sh: the unpatched tree does not build; see $logs/baseline-build.log" >&2; exit 1; }
  for p in "${patches[@]}"; do
    for t in $(tests_of "$p"); do
      [ -n "${base[$t]:-}" ] && continue
      if (cd "$tree" && timeout 900 bun test --timeout 60000 "$t" >"$logs/baseline-$(basename "$t").log" 2>&1); then base[$t]=pass; else base[$t]=fail; fi
      echo "   $t: ${base[$t]}"
    done
  done
fi

# Runs one patch; writes "result<TAB>detail" to results/NAME.
mutate_one() {
  local patch=$1 name tree log tests verdict detail
  name=$(basename "$patch" .patch)
  tree="$work/tree-$name"
  log="$logs/$name.log"
  tests=$(tests_of "$patch")
  result() { printf '%s\t%s\n' "$1" "$2" >"$work/results/$name"; }
  if [ -z "$tests" ]; then result no-tests "no '# tests:' line"; return; fi
  for t in $tests; do
    if [ ! -f "$root/$t" ]; then result no-tests "$t does not exist"; return; fi
    if [ "${base[$t]:-}" = fail ]; then result baseline-fails "$t fails without the patch"; return; fi
  done
  scratch_copy "$tree"
  if ! (cd "$tree" && git apply --verbose "$root/$patch") >"$log" 2>&1; then result does-not-apply "$(grep -m1 -E 'error|failed' "$log" || true)"; return; fi
  if ! (cd "$tree" && npm run --silent build) >>"$log" 2>&1; then result does-not-build "see the log"; return; fi
  local rc=0
  # shellcheck disable=SC2086
  (cd "$tree" && timeout 1200 bun test --timeout 60000 $tests) >>"$log" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then
    verdict=SURVIVED
    detail="all listed tests passed"
  elif [ "$rc" = 124 ]; then
    verdict=caught
    detail="the test run hung and was stopped after 20 minutes"
  else
    verdict=caught
    detail=$(grep -E '^\(fail\)' "$log" | sed -E 's/^\(fail\) //; s/ \[[0-9.]+m?s\]$//' | head -3 | paste -sd '|' - | sed 's/|/; /g' || true)
    [ -n "$detail" ] || detail=$(grep -m1 -E 'error|timed out' "$log" || echo "the test run failed")
  fi
  result "$verdict" "$detail"
  [ "$keep" = 1 ] || rm -rf "$tree"
}

echo "== ${#patches[@]} mutation(s), $jobs at a time; logs in $logs"
running=0
for p in "${patches[@]}"; do
  echo "   $(basename "$p" .patch): $(breaks_of "$p")"
  mutate_one "$p" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait || true

status=0
printf '\n%-36s %-15s %s\n' "patch" "result" "failing tests (first 3) / detail"
for p in "${patches[@]}"; do
  name=$(basename "$p" .patch)
  IFS=$'\t' read -r verdict detail <"$work/results/$name" || { verdict=error; detail="no result (see $logs/$name.log)"; }
  printf '%-36s %-15s %s\n' "$name" "$verdict" "$detail"
  [ "$verdict" = caught ] || status=1
done
caught=$(cat "$work"/results/* 2>/dev/null | grep -c '^caught' || true)
echo
echo "mutations: $caught of ${#patches[@]} caught; logs in $logs"
exit $status
