#!/usr/bin/env bash
# test-fresh.sh runs the Go tests as they run on a fresh machine, where
# nothing answers on 127.0.0.1: PARLEY_TEST_PRIVATE=1 makes them start their
# own PostgreSQL and redis-server instead of using the machine's, and, when
# root can make one, they run in a network namespace of their own whose only
# interface is loopback, as in a bare container (no other address for WebRTC
# candidates either). Arguments go to go test (default: ./...).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-packages.sh postgres redis gcc
scripts/ensure-test-tools.sh
# The namespace has no network: modules come from the cache.
go mod download

# -vet=off: make test and make lint vet the code already, and under ip netns
# exec go test's vet step failed to copy vet's output to a file ("copy_file_range:
# bad file descriptor").
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
cmd=(env PARLEY_TEST_PRIVATE=1 CGO_ENABLED=1 GOPROXY=off
  go test -race -vet=off -count=1 -timeout "${TEST_TIMEOUT:-20m}" "${pkgs[@]}")
where="with PARLEY_TEST_PRIVATE=1"
if [ "$(id -u)" -eq 0 ] && command -v ip >/dev/null; then
  ns="parley-fresh-$$"
  if ip netns add "$ns" 2>/dev/null; then
    trap 'ip netns delete "$ns" 2>/dev/null || true' EXIT
    ip netns exec "$ns" ip link set lo up
    cmd=(ip netns exec "$ns" "${cmd[@]}")
    where="$where, in network namespace $ns (loopback only)"
  else
    echo "test-fresh: cannot create a network namespace here; PARLEY_TEST_PRIVATE=1 alone keeps the tests off the machine's servers" >&2
  fi
fi
PROGRESS_INTERVAL=${PROGRESS_INTERVAL:-60} scripts/progress.sh \
  "go test $where" "3 to 12 minutes on 2 cores; each package's result prints when it is done" "${cmd[@]}"
