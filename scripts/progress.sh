#!/usr/bin/env bash
# progress.sh LABEL EXPECT COMMAND [ARGS...] runs COMMAND, so that a long
# install or build is never silent: it says what starts and how long it
# usually takes, then every PROGRESS_INTERVAL seconds (default 30) that it is
# still at it, with what COMMAND is running at that moment (its child
# processes: compile and link for a Go build, the test binaries for go test,
# dpkg for apt), and at the end how long it took. COMMAND's own output passes
# through unchanged; its exit status is progress.sh's.
#   scripts/progress.sh "building versitygw" "3 to 15 minutes" go install ...
set -euo pipefail

[ $# -ge 3 ] || { echo "usage: progress.sh LABEL EXPECT COMMAND [ARGS...]" >&2; exit 2; }
label=$1 expect=$2
shift 2
interval=${PROGRESS_INTERVAL:-30}
start=$(date +%s)

elapsed() {
  local s=$(( $(date +%s) - start ))
  printf '%dm%02ds' $((s / 60)) $((s % 60))
}

# children names the programs COMMAND runs now, counted: "compile ×2, link".
children() {
  ps -o comm= --ppid "$1" 2>/dev/null | sort | uniq -c \
    | awk '{ printf "%s%s%s", (NR > 1 ? ", " : ""), $2, ($1 > 1 ? " ×" $1 : "") }'
}

echo "== $label (usually $expect)" >&2
"$@" &
pid=$!
(
  while sleep "$interval"; do
    now=$(children "$pid")
    echo "== still $label, $(elapsed)${now:+: running $now}" >&2
  done
) &
ticker=$!
trap 'kill "$ticker" 2>/dev/null || true; kill "$pid" 2>/dev/null || true' INT TERM
trap 'kill "$ticker" 2>/dev/null || true' EXIT
rc=0
wait "$pid" || rc=$?
kill "$ticker" 2>/dev/null || true
if [ "$rc" -eq 0 ]; then
  echo "== $label: done in $(elapsed)" >&2
else
  echo "== $label: failed (exit $rc) after $(elapsed)" >&2
fi
exit "$rc"
