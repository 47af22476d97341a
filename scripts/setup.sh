#!/usr/bin/env bash
# Installs what fwipc's full test run needs on a fresh Debian bookworm machine (root):
#  - rustfmt/clippy, the aarch64-unknown-none and armv7a-none-eabi targets (no_std proof on 64 and
#    32 bits, bare-metal guest)
#  - the declared MSRV toolchain (`rust-version` in Cargo.toml), minimal profile
#  - a nightly toolchain with Miri (the unsafe and shared-memory code, and the wire parsers on a
#    32-bit target: `--target i686-unknown-linux-gnu` needs no cross toolchain under Miri)
#  - vhost-device-scmi 0.4.0, the rust-vmm SCMI platform daemon (real peer), into $FWIPC_TOOLS
#  - cargo-fuzz (fuzz targets run with `-s none`, which needs no nightly toolchain)
#  - QEMU 10 (qemu-system-aarch64 with vhost-user-scmi) from bookworm-backports
# Idempotent: each step is skipped when already satisfied. Prints the env to export at the end.
set -euo pipefail

FWIPC_TOOLS=${FWIPC_TOOLS:-/opt/fwipc-cache/tools}
log() { printf '[setup] %s\n' "$*"; }

log "rust components and targets"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add aarch64-unknown-none armv7a-none-eabi >/dev/null
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$(dirname "$0")/../Cargo.toml")
log "MSRV toolchain $msrv"
rustup toolchain install "$msrv" --profile minimal >/dev/null 2>&1
if cargo +nightly miri --version >/dev/null 2>&1; then
  log "nightly with Miri present: $(cargo +nightly miri --version)"
else
  log "installing nightly with Miri"
  rustup toolchain install nightly --profile minimal --component miri,rust-src >/dev/null
fi

if [ -x "$FWIPC_TOOLS/bin/vhost-device-scmi" ]; then
  log "vhost-device-scmi already at $FWIPC_TOOLS/bin"
else
  log "installing vhost-device-scmi 0.4.0 into $FWIPC_TOOLS (about a minute)"
  mkdir -p "$FWIPC_TOOLS"
  cargo install vhost-device-scmi@0.4.0 --locked --root "$FWIPC_TOOLS" --quiet
fi

if [ -x "$FWIPC_TOOLS/bin/cargo-fuzz" ]; then
  log "cargo-fuzz already at $FWIPC_TOOLS/bin"
else
  log "installing cargo-fuzz into $FWIPC_TOOLS"
  cargo install cargo-fuzz --locked --root "$FWIPC_TOOLS" --quiet
fi

have_qemu_scmi() {
  command -v qemu-system-aarch64 >/dev/null 2>&1 &&
    qemu-system-aarch64 -device help 2>/dev/null | grep -q vhost-user-scmi
}
if have_qemu_scmi; then
  log "qemu-system-aarch64 with vhost-user-scmi present: $(qemu-system-aarch64 --version | head -1)"
else
  log "installing QEMU 10 from bookworm-backports"
  src=/etc/apt/sources.list.d/debian.sources
  if [ -f "$src" ] && ! grep -q bookworm-backports "$src"; then
    sed -i 's/^Suites: bookworm bookworm-updates$/Suites: bookworm bookworm-updates bookworm-backports/' "$src"
  fi
  if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/backports.list
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -t bookworm-backports --no-install-recommends qemu-system-arm >/dev/null
  have_qemu_scmi || { echo "qemu-system-aarch64 lacks vhost-user-scmi after install" >&2; exit 1; }
fi

if command -v valgrind >/dev/null 2>&1; then
  log "valgrind present: $(valgrind --version)"
else
  log "installing valgrind (the benchmark's instruction counts, docs/benchmarks.md)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi

log "done; export VHOST_DEVICE_SCMI=$FWIPC_TOOLS/bin/vhost-device-scmi"
