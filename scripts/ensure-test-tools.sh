#!/usr/bin/env bash
# ensure-test-tools.sh installs, with `go install` into $(go env GOPATH)/bin,
# the servers the tests start themselves and no package manager offers:
#   versitygw  an S3-compatible server, which the S3 media tests run on a
#              directory (a few minutes to build the first time)
# It installs nothing already at the pinned version: the binary stays in
# $(go env GOPATH)/bin, which later runs (and CI on the same machine) reuse.
set -euo pipefail

VERSITYGW_VERSION=v1.8.0

gobin="$(go env GOBIN)"
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
# `versitygw --version` prints no module version, so a stamp beside the
# binary records which one was installed.
stamp="$gobin/.versitygw-version"
if [ ! -x "$gobin/versitygw" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$VERSITYGW_VERSION" ]; then
  # Building it compiles a few hundred packages (AWS and Azure SDKs among
  # them): 3 minutes on 2 idle cores, 15 on busy ones.
  "$(dirname "$0")/progress.sh" "ensure-test-tools: building versitygw $VERSITYGW_VERSION with go install, once; later runs reuse $gobin/versitygw" \
    "3 to 15 minutes on 2 cores" go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  echo "$VERSITYGW_VERSION" >"$stamp"
fi
