#!/usr/bin/env bash
# fuzz.sh runs every fuzz target (func FuzzXxx) of every package of the
# module, one after another, each for FUZZTIME (default 60s; a count such as
# 500x works too): `go test -fuzz` takes one target per run. The targets are
# found with `go test -list`, so a new one needs no edit here. It prints each
# target and its result, and fails if any target fails; the input that made
# it fail is saved under the package's testdata/fuzz/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-60s}

# `go test -list` prints the names each package matches, then a line
# "ok <package> <time>".
listing=$(go test -list '^Fuzz' ./...)
mapfile -t targets < <(awk '/^Fuzz/ { names[n++] = $1 } $1 == "ok" { for (i = 0; i < n; i++) print $2, names[i]; n = 0 }' <<<"$listing")
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz.sh: no fuzz targets found" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, $FUZZTIME each"

# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" when -fuzztime ends while a starved worker is mid-call
# (go.dev/issue/75804, fixed in Go 1.27). That run found nothing: no input
# was written. So a failure that wrote no input and printed only that error
# is reported as a flake, once the target's corpus replays clean; any other
# failure fails.
corpus_files() { find "$1" -type f 2>/dev/null | sort; }

failed=()
flaked=()
for target in "${targets[@]}"; do
  read -r pkg name <<<"$target"
  echo "== $name ($pkg)"
  start=$(date +%s)
  dir="$(go list -f '{{.Dir}}' "$pkg")/testdata/fuzz/$name"
  before=$(corpus_files "$dir")
  out=$(mktemp)
  if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1 | tee "$out"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
    result=ok
  elif [ "$(corpus_files "$dir")" = "$before" ] && grep -qxE '[[:space:]]*context deadline exceeded' "$out" &&
    ! grep -q 'Failing input written' "$out" && go test -count=1 -run "^${name}\$" "$pkg" >/dev/null; then
    result="flake (go.dev/issue/75804: the fuzz deadline raced a worker; nothing found, corpus replays clean)"
    flaked+=("$name ($pkg)")
  else
    result=FAIL
    failed+=("$name ($pkg)")
  fi
  rm -f "$out"
  echo "== $name: $result in $(( $(date +%s) - start ))s"
done

if [ ${#failed[@]} -gt 0 ]; then
  printf 'fuzz.sh: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
if [ ${#flaked[@]} -gt 0 ]; then
  printf 'fuzz.sh: flaked (not failures): %s\n' "${flaked[@]}"
fi
echo "fuzz.sh: all ${#targets[@]} targets passed"
