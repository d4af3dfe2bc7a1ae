#!/usr/bin/env bash
# browser-test.sh runs the browser call test (web/test/call.test.ts): two
# headless Chromium pages with fake cameras and microphones call each other
# through a freshly built `parley serve`. It installs what is missing first:
# Chromium and Node from Debian packages, web/'s npm packages from its lock file.
# Without Chromium the test fails, saying so; it never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-packages.sh chromium node postgres
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "browser-test: Node $(node -v) is too old for playwright-core; install Node 20 or later" >&2
  exit 1
fi
scripts/ensure-web.sh

go build -o bin/parley ./cmd/parley
cd web
npm run --silent typecheck
npm run --silent build
node --test test/dist/
