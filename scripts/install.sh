#!/usr/bin/env bash
# Installs edgeway as a systemd service on Debian / Raspberry Pi OS (arm64, armv7, x86-64), from this checkout.
#
#   sudo scripts/install.sh              install (or repair); running it again changes nothing
#   sudo scripts/install.sh --upgrade    replace the app with this checkout's version and restart the service
#   sudo scripts/install.sh --uninstall  remove app, unit and CLI wrapper; keeps /etc/edgeway and /var/lib/edgeway
#   sudo scripts/install.sh --uninstall --purge   ... and the config, the data and the edgeway user
#
# Options:
#   --root DIR (or DESTDIR=DIR)  write the whole tree under DIR; never touches the real system's users or systemd
#                                (implies --no-systemctl; what would have been done is printed as "skipped: ...")
#   --no-systemctl               do not call systemctl (e.g. in a container without systemd)
#   --reuse-node-modules         copy this checkout's node_modules and prune dev dependencies instead of a fresh
#                                `npm ci --omit=dev`: faster (no second native build), valid on the same machine only;
#                                native modules (better-sqlite3, serialport) are load-tested either way and rebuilt
#                                if they do not load
#   --no-build                   use dist/ as it is (built beforehand, e.g. a release tarball or `npm test`'s pretest)
#   --low-ports                  allow binding ports below 1024 (CAP_NET_BIND_SERVICE); automatic when the config
#                                asks for such a port
# Environment: EDGEWAY_NODE=/path/to/node picks the Node.js binary (default: `node` on PATH).
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${DESTDIR:-}
MODE=install
PURGE=0
SYSTEMCTL=1
REUSE_MODULES=0
LOW_PORTS=0
BUILD=1

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift ;;
    --root=*) ROOT=${1#--root=} ;;
    --no-systemctl) SYSTEMCTL=0 ;;
    --upgrade) MODE=upgrade ;;
    --uninstall) MODE=uninstall ;;
    --purge) PURGE=1 ;;
    --reuse-node-modules) REUSE_MODULES=1 ;;
    --low-ports) LOW_PORTS=1 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[ "$PURGE" = 1 ] && [ "$MODE" != uninstall ] && die "--purge only goes with --uninstall"

# A target root other than / is a staging tree (tests, image builds): the real system's users and services are
# not ours to change there.
if [ -n "$ROOT" ]; then
  ROOT=$(mkdir -p "$ROOT" && cd "$ROOT" && pwd)
  [ "$ROOT" = / ] && ROOT=""
fi
REAL_SYSTEM=1
if [ -n "$ROOT" ]; then REAL_SYSTEM=0; SYSTEMCTL=0; fi
if [ "$REAL_SYSTEM" = 1 ] && [ "$(id -u)" -ne 0 ]; then die "run as root (sudo $0 ...), or use --root DIR for a staging tree"; fi

SVC_USER=edgeway
APP=/opt/edgeway
ETC=/etc/edgeway
DATA=/var/lib/edgeway
UNIT=/etc/systemd/system/edgeway.service
WRAPPER=/usr/local/bin/edgeway
STAMP=.edgeway-install

skip() { say "skipped (target root $ROOT): $*"; }
sysctl() {
  if [ "$SYSTEMCTL" = 1 ]; then systemctl "$@"; else say "skipped (--no-systemctl): systemctl $*"; fi
}

# ---------------------------------------------------------------------------------------------------- uninstall
if [ "$MODE" = uninstall ]; then
  if [ -f "$ROOT$UNIT" ]; then
    sysctl disable --now edgeway.service || true
    rm -f "$ROOT$UNIT"
    sysctl daemon-reload
  fi
  rm -rf "$ROOT$APP" "$ROOT$APP.new" "$ROOT$APP.old"
  rm -f "$ROOT$WRAPPER"
  if [ "$PURGE" = 1 ]; then
    rm -rf "$ROOT$ETC" "$ROOT$DATA"
    if [ "$REAL_SYSTEM" = 1 ]; then
      if id "$SVC_USER" >/dev/null 2>&1; then userdel "$SVC_USER"; fi
    else
      skip "userdel $SVC_USER"
    fi
    say "removed edgeway, its configuration, its data and the $SVC_USER user"
  else
    say "removed edgeway; kept $ETC (configuration) and $DATA (data): --uninstall --purge removes them too"
  fi
  exit 0
fi

# ---------------------------------------------------------------------------------------------------- Node.js
NODE=${EDGEWAY_NODE:-$(command -v node || true)}
[ -n "$NODE" ] && [ -x "$NODE" ] || die "Node.js not found. edgeway needs Node.js >= 20:
  Raspberry Pi OS / Debian 13:  sudo apt-get install -y nodejs npm
  Debian 12 (ships Node 18):    NodeSource, https://github.com/nodesource/distributions
                                (curl -fsSL https://deb.nodesource.com/setup_20.x | sudo -E bash - && sudo apt-get install -y nodejs)"
NODE_VERSION=$("$NODE" -p 'process.versions.node' 2>/dev/null) || die "$NODE does not run"
if [ "${NODE_VERSION%%.*}" -lt 20 ]; then
  die "Node.js $NODE_VERSION at $NODE is too old: edgeway needs Node.js >= 20.
  Raspberry Pi OS / Debian 13:  sudo apt-get install -y nodejs npm
  Debian 12 (ships Node 18):    NodeSource, https://github.com/nodesource/distributions
                                (curl -fsSL https://deb.nodesource.com/setup_20.x | sudo -E bash - && sudo apt-get install -y nodejs)"
fi
# The unit runs with ProtectHome=yes: a per-user Node (nvm, ~/.local) is invisible to the service.
case "$(readlink -f "$NODE")" in
  /home/*|/root/*) die "Node.js at $(readlink -f "$NODE") lives in a home directory, which the hardened service cannot see (ProtectHome=yes). Install Node.js system-wide (apt or NodeSource) or pass EDGEWAY_NODE=/usr/bin/node." ;;
esac
command -v npm >/dev/null || die "npm not found (sudo apt-get install -y npm, or NodeSource's nodejs which includes it)"
say "Node.js $NODE_VERSION at $NODE ($(uname -m))"

# ---------------------------------------------------------------------------------------------------- build
# dist/ is built from this checkout, which needs the dev dependencies (TypeScript); the installed app never does.
# Under sudo the checkout belongs to the invoking user: build as that user so no root-owned files land in it.
as_owner() {
  local owner; owner=$(stat -c %U "$SRC")
  if [ "$(id -u)" -eq 0 ] && [ "$owner" != root ] && command -v runuser >/dev/null; then runuser -u "$owner" -- "$@"; else "$@"; fi
}
if [ "$BUILD" = 1 ] && [ -f "$SRC/tsconfig.build.json" ]; then
  if [ ! -x "$SRC/node_modules/.bin/tsc" ]; then
    say "installing build dependencies in $SRC (npm ci; compiles better-sqlite3 if no prebuilt binary fits)"
    (cd "$SRC" && as_owner npm ci --no-audit --no-fund)   # "prepare" builds dist/ too
  fi
  say "building dist/"
  (cd "$SRC" && as_owner npm run --silent build)
fi
[ -f "$SRC/dist/app/cli.js" ] || die "$SRC/dist/app/cli.js missing: run npm run build in the checkout"

VERSION=$("$NODE" -p "require('$SRC/package.json').version")
# The node options the service runs with: the ones of `npm start` (package.json), so both run the same gateway.
NODE_FLAGS=$("$NODE" -p "require('$SRC/package.json').scripts.start.split(' ').filter((w) => w.startsWith('--')).join(' ')")
# What an installed app is made of; equal stamps mean there is nothing to do (keeps a second run a no-op).
app_stamp() {
  (cd "$SRC" && {
    echo "node-abi $("$NODE" -p process.versions.modules) $(uname -m)"
    sha256sum package.json package-lock.json gateway/config/edgeway.schema.json
    find bin dist gateway/dashboard/public -type f -print0 | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1)
}
WANT=$(app_stamp)
HAVE=$(cat "$ROOT$APP/$STAMP" 2>/dev/null || true)

# ---------------------------------------------------------------------------------------------------- app
# Dependencies with install scripts (native code): better-sqlite3 (prebuilt download or node-gyp), the serialport
# binding (ships prebuilds for linux-x64/arm64/arm, else node-gyp) and esbuild (tsx's fallback for source checkouts).
NATIVE_MODULES="better-sqlite3 @serialport/bindings-cpp esbuild"
# Loads each native binary for real: a copied or prebuilt one for another arch or Node ABI fails here, not at start.
NATIVE_CHECK="new (require('better-sqlite3'))(':memory:').close();
if (require('./package.json').dependencies.serialport) require('@serialport/bindings-cpp/dist/load-bindings.js')"
install_app() {
  local stage="$ROOT$APP.new"
  rm -rf "$stage"
  mkdir -p "$stage/gateway/config" "$stage/gateway/dashboard"
  cp -a "$SRC/package.json" "$SRC/package-lock.json" "$SRC/bin" "$SRC/dist" "$stage/"
  cp -a "$SRC/gateway/config/edgeway.schema.json" "$stage/gateway/config/"
  # The dashboard's pages and modules are served as they are (no build step); dist/ finds them via package.json.
  cp -a "$SRC/gateway/dashboard/public" "$stage/gateway/dashboard/"
  # --ignore-scripts: the root package's "prepare" runs the TypeScript build, which needs dev dependencies the
  # production tree does not have (and dist/ is already built). The native modules' own install scripts are
  # then run explicitly with `npm rebuild`.
  if [ "$REUSE_MODULES" = 1 ] && [ -d "$SRC/node_modules" ]; then
    say "copying node_modules from $SRC and pruning dev dependencies"
    cp -a "$SRC/node_modules" "$stage/"
    (cd "$stage" && npm prune --omit=dev --ignore-scripts --no-audit --no-fund >/dev/null)
  else
    say "installing production dependencies (npm ci --omit=dev; better-sqlite3 may compile for a minute)"
    (cd "$stage" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund >/dev/null && npm rebuild $NATIVE_MODULES >/dev/null)
  fi
  if ! (cd "$stage" && "$NODE" -e "$NATIVE_CHECK" 2>/dev/null); then
    say "a native module does not load with Node.js $NODE_VERSION on $(uname -m): rebuilding $NATIVE_MODULES"
    (cd "$stage" && npm rebuild $NATIVE_MODULES >/dev/null)
    (cd "$stage" && "$NODE" -e "$NATIVE_CHECK") \
      || die "native modules do not load; a native build needs: sudo apt-get install -y python3 make g++"
  fi
  rm -f "$stage/node_modules/.edgeway-lock.sha"
  # cp -a keeps the checkout owner's ownership: the code the service runs must not be writable by that user.
  if [ "$REAL_SYSTEM" = 1 ]; then chown -R root:root "$stage"; fi
  echo "$WANT" > "$stage/$STAMP"
  # Swap in one rename so a running service never sees a half-copied tree.
  if [ -d "$ROOT$APP" ]; then mv "$ROOT$APP" "$ROOT$APP.old"; fi
  mv "$stage" "$ROOT$APP"
  rm -rf "$ROOT$APP.old"
}

APP_CHANGED=0
if [ "$HAVE" = "$WANT" ]; then
  say "app $APP is up to date (edgeway $VERSION)"
elif [ -n "$HAVE" ] && [ "$MODE" != upgrade ]; then
  die "a different edgeway build is installed in $APP: run with --upgrade to replace it with $VERSION from $SRC"
else
  mkdir -p "$ROOT/opt"
  install_app
  APP_CHANGED=1
  say "installed edgeway $VERSION into $APP"
fi

# serial boards (dialout) and, where the group exists, the optional camera (video); a missing group would stop the unit.
SUPP_GROUPS=dialout
getent group video >/dev/null && SUPP_GROUPS="dialout video"

# ---------------------------------------------------------------------------------------------------- user
if [ "$REAL_SYSTEM" = 1 ]; then
  getent group dialout >/dev/null || groupadd --system dialout
  if ! id "$SVC_USER" >/dev/null 2>&1; then
    useradd --system --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin --user-group --groups dialout "$SVC_USER"
    say "created system user $SVC_USER (groups: $SVC_USER, dialout)"
  elif ! id -nG "$SVC_USER" | tr ' ' '\n' | grep -qx dialout; then
    usermod -aG dialout "$SVC_USER"
    say "added $SVC_USER to dialout"
  fi
  # The optional camera reads /dev/video*: the video group exists on Debian and Raspberry Pi OS.
  if getent group video >/dev/null && ! id -nG "$SVC_USER" | tr ' ' '\n' | grep -qx video; then
    usermod -aG video "$SVC_USER"
    say "added $SVC_USER to video (camera)"
  fi
else
  skip "useradd --system --home-dir $DATA --no-create-home --shell /usr/sbin/nologin --user-group --groups dialout $SVC_USER"
fi

# Sets owner:group only on the real system (the user does not exist in a staging root) and only when it differs.
own() {
  local who=$1 path=$2
  if [ "$REAL_SYSTEM" = 1 ]; then
    [ "$(stat -c %U:%G "$path")" = "$who" ] || chown "$who" "$path"
  else
    skip "chown $who $path"
  fi
}

# ---------------------------------------------------------------------------------------------------- config, data
mkdir -p "$ROOT$ETC"
chmod 0755 "$ROOT$ETC"
if [ ! -e "$ROOT$ETC/edgeway.yaml" ]; then
  cat > "$ROOT$ETC/edgeway.yaml" <<'YAML'
# edgeway configuration (installed by scripts/install.sh; upgrades never overwrite this file).
# Every key has a default; uncomment what you change. Check a change with:  sudo edgeway config check /etc/edgeway/edgeway.yaml
# then apply it with:  sudo systemctl restart edgeway      Diagnose problems with:  sudo edgeway doctor
# Reference: README "Configuration"; JSON schema for editors: /opt/edgeway/gateway/config/edgeway.schema.json

# gateway:
#   id: greenhouse-1          # part of every reading's message id: keep it stable and unique (default: the hostname)
#   dataDir: ...              # ignored under systemd: the unit sets EDGEWAY_GATEWAY__DATA_DIR=/var/lib/edgeway,
#                             # the only directory the hardened service may write

log:
  level: info                 # fatal, error, warn, info, debug, trace; logs go to the journal: journalctl -u edgeway

# mqtt:
#   tcp: { enabled: true, host: 0.0.0.0, port: 1883 }
#   ws:  { enabled: true, host: 0.0.0.0, port: 8083, path: /mqtt }
#   tls: { enabled: true, port: 8883, cert: /etc/edgeway/cert.pem, key: /etc/edgeway/key.pem }
#   maxPacketSize: 262144
#   allowAnonymous: false
# Ports below 1024 need CAP_NET_BIND_SERVICE: re-run `scripts/install.sh --upgrade` after configuring one.

# http: { enabled: true, host: 0.0.0.0, port: 8080 }   # /healthz and /metrics

# outbox:
#   maxBytes: 536870912       # retention: drop the oldest readings beyond this many payload bytes
#   maxAgeSeconds: 604800     # retention: drop readings older than a week

# serial:                     # boards on serial ports; the service is in the dialout group
#   ports:
#     - device: sensor-node-1
#       path: /dev/serial/by-id/usb-...   # by-id names survive replugging, ttyUSB numbers do not

# upstreams:
#   - name: cloud
#     type: mqtt
#     url: mqtts://broker.example.com:8883
#     username: gw1
#     password: secret        # this file is readable by root and the edgeway group only
#     topicPrefix: edgeway/
YAML
  chmod 0640 "$ROOT$ETC/edgeway.yaml"
  say "wrote default configuration $ETC/edgeway.yaml"
else
  say "kept existing configuration $ETC/edgeway.yaml"
fi
own "root:$SVC_USER" "$ROOT$ETC/edgeway.yaml"

mkdir -p "$ROOT$DATA"
chmod 0750 "$ROOT$DATA"
own "$SVC_USER:$SVC_USER" "$ROOT$DATA"

# ---------------------------------------------------------------------------------------------------- low ports, devices
# What the unit grants depends on the config: the lowest port it listens on and whether the camera is on.
# (`config show --json`: newer CLIs print YAML without it; older ones have no --json and print JSON.)
show_config() {
  EDGEWAY_CONFIG="$ROOT$ETC/edgeway.yaml" "$NODE" "$ROOT$APP/bin/edgeway.js" config show --json 2>/dev/null \
    || EDGEWAY_CONFIG="$ROOT$ETC/edgeway.yaml" "$NODE" "$ROOT$APP/bin/edgeway.js" config show 2>/dev/null
}
CONFIG_FACTS=$(show_config \
  | "$NODE" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const c=JSON.parse(s);const l=[c.mqtt.tcp,c.mqtt.tls,c.mqtt.ws,c.http].filter(x=>x.enabled&&x.port>0);console.log(Math.min(65536,...l.map(x=>x.port)),c.camera&&c.camera.enabled?1:0)})' 2>/dev/null || true)
MIN_PORT=${CONFIG_FACTS% *}
CAMERA=${CONFIG_FACTS#* }
[ -n "$CONFIG_FACTS" ] || say "warning: $ETC/edgeway.yaml is not valid: see \`edgeway config check $ETC/edgeway.yaml\`"
# The service runs without any capability; only a configured port below 1024 earns it CAP_NET_BIND_SERVICE.
if [ "$LOW_PORTS" = 0 ] && [ -n "$CONFIG_FACTS" ] && [ "$MIN_PORT" -lt 1024 ]; then
  LOW_PORTS=1
  say "the configuration listens on port $MIN_PORT (< 1024): granting CAP_NET_BIND_SERVICE"
fi
if [ "$LOW_PORTS" = 1 ]; then
  CAPS="AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE"
else
  CAPS="CapabilityBoundingSet="
fi

# Devices: DevicePolicy=closed leaves only /dev/null, zero, full, random, urandom (and tty, ptmx) plus these classes
# (names from /proc/devices): serial ports ttyS (8250 UARTs, the Pi's mini UART), ttyAMA (the Pi's PL011 UART,
# /dev/serial0), ttyUSB (FTDI, CH340, CP210x adapters), ttyACM (USB CDC boards: Arduino Uno/Leonardo, Pico);
# /dev/serial/by-id/* are symlinks to these. File permissions still apply (dialout, video).
DEVICES="DevicePolicy=closed
DeviceAllow=char-ttyS rw
DeviceAllow=char-ttyAMA rw
DeviceAllow=char-ttyUSB rw
DeviceAllow=char-ttyACM rw"
# systemd resolves a class to its major number when the service starts, and a class whose driver is not loaded yet
# (no USB adapter plugged in since boot) has none: load those drivers first, so an adapter plugged in later opens.
MODULES="usbserial cdc_acm"
if [ "$CAMERA" = 1 ]; then
  # /dev/video* (V4L2 cameras, the Pi's encoders), /dev/media* and /dev/v4l-subdev* (libcamera), /dev/dma_heap/*
  # (libcamera's buffers).
  DEVICES="$DEVICES
DeviceAllow=char-video4linux rw
DeviceAllow=char-media rw
DeviceAllow=char-dma_heap rw"
  MODULES="$MODULES videodev"
  say "the camera is enabled: the service may open video devices"
fi
MODPROBE=$(PATH="$PATH:/usr/sbin:/sbin" command -v modprobe || true)
# "+": modprobe runs with full privileges (the sandbox below stops the service itself from loading modules);
# "-": a missing or built-in module is not an error.
if [ -n "$MODPROBE" ]; then PRELOAD="ExecStartPre=-+$MODPROBE -qa $MODULES"; else PRELOAD="# (no modprobe on this system: serial drivers are not preloaded)"; fi

# ---------------------------------------------------------------------------------------------------- systemd unit
UNIT_TEXT="# Installed by edgeway scripts/install.sh (rewritten on --upgrade; put local changes in
# /etc/systemd/system/edgeway.service.d/*.conf via \`systemctl edit edgeway\`).
[Unit]
Description=edgeway IoT edge gateway (MQTT broker, durable outbox, upstream bridges)
After=network-online.target time-sync.target
Wants=network-online.target

[Service]
Type=simple
User=$SVC_USER
Group=$SVC_USER
SupplementaryGroups=$SUPP_GROUPS
Environment=NODE_ENV=production
Environment=EDGEWAY_CONFIG=$ETC/edgeway.yaml
Environment=EDGEWAY_GATEWAY__DATA_DIR=$DATA
WorkingDirectory=$DATA
$PRELOAD
ExecStart=$NODE $NODE_FLAGS $APP/bin/edgeway.js run
Restart=on-failure
RestartSec=2s
# The gateway commits pending readings on SIGTERM and gives up itself after 5 s.
TimeoutStopSec=15s
StandardOutput=journal
StandardError=journal
SyslogIdentifier=edgeway
LimitNOFILE=65536
UMask=0027

# Hardening (\`systemd-analyze security edgeway\`): read-only system, private /tmp, no way to gain privileges, only the
# data dir is writable, only serial (and camera) devices, system calls limited to what a service needs.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
ReadWritePaths=$DATA
$CAPS
$DEVICES
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
# /proc shows only this service's processes and no system files (Node reads total memory with sysinfo() then).
ProtectProc=invisible
ProcSubset=pid
RemoveIPC=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native
# @system-service covers Node, libuv (epoll, io_uring, eventfd), V8 (mmap/mprotect/madvise, membarrier) and
# better-sqlite3 (pread/pwrite, fcntl locks, fsync/fdatasync); pkey_*: V8 protects its JIT code with memory
# protection keys where the CPU has them. No @privileged (setuid, chown, mount, ...) or @resources (setpriority,
# sched_setaffinity, setrlimit, ...). A refused call fails with EPERM instead of killing the gateway.
SystemCallFilter=@system-service pkey_alloc pkey_free pkey_mprotect
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
# AF_NETLINK: os.networkInterfaces() (the dashboard's own addresses) reads them over netlink.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
# Not set on purpose: PrivateDevices (it would hide the serial adapters and cameras; DevicePolicy above limits
# devices instead), MemoryDenyWriteExecute (V8's JIT needs writable+executable memory), PrivateUsers (the
# supplementary groups dialout and video would not be mapped into the service's user namespace), PrivateNetwork,
# IPAddressDeny (the gateway serves the LAN and talks to upstreams anywhere).

[Install]
WantedBy=multi-user.target"

mkdir -p "$ROOT$(dirname "$UNIT")"
UNIT_CHANGED=0
if [ "$(cat "$ROOT$UNIT" 2>/dev/null || true)" != "$UNIT_TEXT" ]; then
  printf '%s\n' "$UNIT_TEXT" > "$ROOT$UNIT"
  chmod 0644 "$ROOT$UNIT"
  UNIT_CHANGED=1
  say "wrote $UNIT"
fi

# ---------------------------------------------------------------------------------------------------- CLI wrapper
# `sudo edgeway device add x` must use the service's config and data dir, and create files the service can open:
# the wrapper sets both and drops root to the service user. Commands that write /etc/edgeway (root's directory, where
# the service user may not create files) stay root: `dashboard set-password`, whose writer keeps the config's
# owner, group and mode (root:edgeway 0640), so the service can still read it.
WRAPPER_TEXT="#!/bin/sh
# Installed by edgeway scripts/install.sh: the edgeway CLI with the service's configuration and data dir.
export EDGEWAY_CONFIG=\"\${EDGEWAY_CONFIG:-$ETC/edgeway.yaml}\"
export EDGEWAY_GATEWAY__DATA_DIR=\"\${EDGEWAY_GATEWAY__DATA_DIR:-$DATA}\"
# The command: the first two words that are not options.
cmd=
for a in \"\$@\"; do
  case \"\$a\" in -*) continue ;; esac
  cmd=\"\$cmd \$a\"
  case \"\$cmd\" in *' '*' '*) break ;; esac
done
case \"\$cmd\" in
  ' dashboard set-password') ;;   # writes $ETC/edgeway.yaml: stays root
  *) if [ \"\$(id -u)\" = 0 ] && id $SVC_USER >/dev/null 2>&1; then
       exec runuser -u $SVC_USER -- $NODE $NODE_FLAGS $APP/bin/edgeway.js \"\$@\"
     fi ;;
esac
exec $NODE $NODE_FLAGS $APP/bin/edgeway.js \"\$@\""
mkdir -p "$ROOT$(dirname "$WRAPPER")"
if [ "$(cat "$ROOT$WRAPPER" 2>/dev/null || true)" != "$WRAPPER_TEXT" ]; then
  printf '%s\n' "$WRAPPER_TEXT" > "$ROOT$WRAPPER"
  chmod 0755 "$ROOT$WRAPPER"
  say "wrote $WRAPPER"
fi

# ---------------------------------------------------------------------------------------------------- service
if [ "$UNIT_CHANGED" = 1 ]; then sysctl daemon-reload; fi
if [ "$SYSTEMCTL" = 1 ]; then
  systemctl is-enabled --quiet edgeway.service || systemctl enable edgeway.service
  if systemctl is-active --quiet edgeway.service; then
    if [ "$APP_CHANGED" = 1 ] || [ "$UNIT_CHANGED" = 1 ]; then systemctl restart edgeway.service; say "restarted edgeway"; fi
  else
    systemctl start edgeway.service
    say "started edgeway"
  fi
else
  say "skipped (--no-systemctl): systemctl enable --now edgeway.service"
fi
say "done. Check it with:  sudo edgeway doctor   and   journalctl -u edgeway -f"
