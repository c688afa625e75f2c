#!/usr/bin/env bash
# Installs Debian's headless chromium for the browser tests (Playwright drives it;
# no browser download from the internet is needed).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
command -v chromium
