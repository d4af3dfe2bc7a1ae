#!/usr/bin/env bash
# ensure-packages.sh installs, from Debian/Ubuntu packages, what `make run` and
# `make test` need and this machine lacks:
#   postgres  PostgreSQL server binaries (initdb, postgres) for the embedded server
#   redis     redis-server, which the multi-node tests start when no Redis answers
#   gcc       a C compiler, which the Go race detector needs
#   chromium  headless Chromium, which the browser call test (web/) drives
#   node      Node.js and npm, which build web/ and run the browser test
# It installs nothing that is already there, and uses sudo when not root.
set -euo pipefail

need=()
for what in "$@"; do
  case "$what" in
    postgres)
      if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null; then
        need+=(postgresql)
      fi
      ;;
    redis)
      command -v redis-server >/dev/null && command -v redis-cli >/dev/null || need+=(redis-server)
      ;;
    gcc)
      command -v gcc >/dev/null || need+=(gcc libc6-dev)
      ;;
    chromium)
      [ -x /usr/bin/chromium ] || need+=(chromium)
      ;;
    node)
      command -v node >/dev/null && command -v npm >/dev/null || need+=(nodejs npm)
      ;;
    *)
      echo "ensure-packages: unknown requirement $what" >&2
      exit 2
      ;;
  esac
done
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "ensure-packages: need root or sudo to install ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
progress="$(dirname "$0")/progress.sh"
"$progress" "ensure-packages: updating apt's package lists" "under a minute" $sudo apt-get update -qq
"$progress" "ensure-packages: installing ${need[*]} with apt" "1 to 5 minutes (Chromium is the largest)" \
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
