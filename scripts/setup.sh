#!/usr/bin/env bash
# Installs what the test suite and the benchmark need on Debian 12 / Raspberry Pi OS.
# Idempotent: packages already present are not fetched again, npm ci only when the lock changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests start as real peers (each test starts its own private instance).
# simavr, libsimavr-dev (+ libelf-dev it links against), gcc-avr, avr-libc: the sensor-node firmware and its simulated board (serial tests); avrdude, socat: flashing and pty tooling.
# systemd: `systemd-analyze verify` checks the unit scripts/install.sh writes (test/install.test.ts).
# prosody: XMPP bridge tests; chromium: dashboard and camera tests (playwright-core drives it); ffmpeg: camera test source; arduino-core-avr: the ATmegaBOOT bootloader the simulated board flashes through.
PKGS=(mosquitto mosquitto-clients rabbitmq-server python3 make g++ pkg-config simavr libsimavr-dev libelf-dev gcc-avr avr-libc avrdude socat openssl systemd prosody chromium ffmpeg arduino-core-avr
  lua-dbi-sqlite3  # Prosody's SQL storage: the XMPP PubSub tests keep items across a Prosody restart without the file store's O(n) publishes
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node dependencies: reinstall only when package-lock.json changed since the last install.
stamp=node_modules/.edgeway-lock.sha
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  npm ci --no-audit --no-fund
  echo "$want" > "$stamp"
fi
# StandardFirmata for the Uno, the real build the Firmata tests run in the simulated board. It ships in the npm
# package avrgirl-arduino, which itself does not install here (it depends on a GitHub tarball): fetch only its tarball
# with `npm pack` into a cache outside git and keep the one file (test/helpers/simavr.ts looks for it there).
# (FIRMATA_CACHE_DIR overrides the cache dir; not EDGEWAY_*: every EDGEWAY_ variable is read as gateway config.)
FIRMATA_DIR="${FIRMATA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeway}/avrgirl-arduino-5.0.1"
if [ ! -s "$FIRMATA_DIR/StandardFirmata.cpp.hex" ]; then
  mkdir -p "$FIRMATA_DIR"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent avrgirl-arduino@5.0.1 >/dev/null && tar xzf avrgirl-arduino-5.0.1.tgz package/junk/hex/uno/StandardFirmata.cpp.hex)
  mv "$tmp/package/junk/hex/uno/StandardFirmata.cpp.hex" "$FIRMATA_DIR/StandardFirmata.cpp.hex"
  rm -rf "$tmp"
  echo "setup: StandardFirmata.cpp.hex in $FIRMATA_DIR"
fi
echo "setup: ok"
