#!/usr/bin/env bash
# Make sure the browser test (tests/browser) finds Chromium and its WebDriver at the paths it uses:
# Debian's chromium (/usr/bin/chromium) and chromium-driver (/usr/bin/chromedriver). Selenium is
# pointed at them explicitly, so nothing is downloaded when the tests run. If either is missing,
# install both from Debian's packages (needs root or sudo). Fast when they are already there.
# Override the paths with MLOPS_CHROMIUM and MLOPS_CHROMEDRIVER (e.g. a Chromium you installed).
set -euo pipefail
chromium="${MLOPS_CHROMIUM:-/usr/bin/chromium}"
driver="${MLOPS_CHROMEDRIVER:-/usr/bin/chromedriver}"
if [ -x "$chromium" ] && [ -x "$driver" ]; then exit 0; fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "ensure_browser: $chromium or $driver is missing and I cannot install them without root." >&2
    echo "Install them (apt-get install chromium chromium-driver), or set MLOPS_CHROMIUM and MLOPS_CHROMEDRIVER." >&2
    exit 1
  fi
fi
echo "ensure_browser: installing chromium and chromium-driver from Debian's packages"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
for binary in "$chromium" "$driver"; do
  if [ ! -x "$binary" ]; then
    echo "ensure_browser: $binary is still missing after the install" >&2
    exit 1
  fi
done
echo "ensure_browser: $("$chromium" --version 2>/dev/null | head -n 1), $("$driver" --version | head -n 1)"
