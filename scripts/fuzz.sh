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

failed=()
for target in "${targets[@]}"; do
  read -r pkg name <<<"$target"
  echo "== $name ($pkg)"
  start=$(date +%s)
  if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg"; then
    result=ok
  else
    result=FAIL
    failed+=("$name ($pkg)")
  fi
  echo "== $name: $result in $(( $(date +%s) - start ))s"
done

if [ ${#failed[@]} -gt 0 ]; then
  printf 'fuzz.sh: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "fuzz.sh: all ${#targets[@]} targets passed"
