#!/usr/bin/env bash
# Set up foleyloop on a fresh Debian/Ubuntu machine: venv with the pinned stack, the embedded offline parts,
# and (when run as root with apt) the CC0 sample bank from Debian. Idempotent: re-running is quick.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
# CC0 foley recordings (Debian sonic-pi-samples). Optional: without them the renderer uses the ovos animal
# recordings and procedural synthesis, with a warning.
if [ ! -d /usr/share/sonic-pi/samples ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sonic-pi-samples >/dev/null) \
      || echo "warning: could not install Debian sonic-pi-samples; continuing with a smaller sample bank" >&2
  else
    echo "note: for the full CC0 sample bank run: sudo apt-get install sonic-pi-samples" >&2
  fi
fi
echo "foleyloop is set up: .venv/bin/foleyloop --help"
