#!/usr/bin/env bash
# Install Debian's chromium for the real-browser studio test (tests/test_ui_browser.py). Idempotent and quiet:
# does nothing when /usr/bin/chromium is already there. Needs root (or sudo) and the Debian mirror.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --version
