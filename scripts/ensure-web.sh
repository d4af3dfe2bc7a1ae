#!/usr/bin/env bash
# ensure-web.sh installs web/'s npm packages (connect-web, esbuild, TypeScript,
# playwright-core) exactly as web/package-lock.json pins them, when they are
# missing or the lock file changed since they were installed.
set -euo pipefail
cd "$(dirname "$0")/../web"

command -v npm >/dev/null || { echo "ensure-web: npm is needed (scripts/ensure-packages.sh node)" >&2; exit 1; }
# npm records what it installed in node_modules/.package-lock.json.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "ensure-web: installing web/ npm packages" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
