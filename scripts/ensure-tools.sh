#!/usr/bin/env bash
# ensure-tools.sh installs the code generators at pinned versions, so that
# `make generate` produces byte-identical output on every machine:
#   buf and protoc-gen-es from npm (package.json, package-lock.json)
#   sqlc with `go install` into $(go env GOPATH)/bin
# protoc-gen-go and protoc-gen-connect-go are tool dependencies in go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."

SQLC_VERSION=v1.31.1

command -v npm >/dev/null || { echo "ensure-tools: npm is needed for buf and protoc-gen-es (apt-get install nodejs npm)" >&2; exit 1; }
if [ ! -x node_modules/.bin/buf ] || [ ! -x node_modules/.bin/protoc-gen-es ] \
   || [ "$(node_modules/.bin/buf --version 2>/dev/null)" != "$(node -p 'require("./package.json").devDependencies["@bufbuild/buf"]')" ]; then
  # npm ci rejects this lock file for the optional per-platform buf packages it
  # (correctly) leaves out; npm install follows the lock and leaves it unchanged.
  npm install --no-audit --no-fund --loglevel=error
fi

gobin="$(go env GOBIN)"
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
if [ "$("$gobin/sqlc" version 2>/dev/null)" != "$SQLC_VERSION" ]; then
  "$(dirname "$0")/progress.sh" "ensure-tools: building sqlc $SQLC_VERSION with go install, once; later runs reuse $gobin/sqlc" \
    "5 minutes on 2 cores" env CGO_ENABLED=1 go install "github.com/sqlc-dev/sqlc/cmd/sqlc@$SQLC_VERSION"
fi
