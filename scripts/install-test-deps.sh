#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine: conda-package-handling
# (cph, independent conda package tooling), nginx and wrk (benchmark anchors),
# zstd, bzip2 (libbzip2, the reference decoder) and lbzip2 (a parallel one, a
# benchmark anchor), curl and Python requests (the HTTP clients conda users
# have), shellcheck (the shell scripts are kept clean of its warnings), and the
# pinned npm conda client (rattler) under e2e/node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pair in cph:conda-package-handling nginx:nginx wrk:wrk zstd:zstd bzip2:bzip2 lbzip2:lbzip2 curl:curl shellcheck:shellcheck; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
{ python3 -c 'import requests' || /usr/bin/python3 -c 'import requests'; } >/dev/null 2>&1 || need+=(python3-requests)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ ! -d e2e/node_modules/@conda-org/rattler ]; then
  (cd e2e && npm ci --no-audit --no-fund)
fi
