#!/usr/bin/env bash
# System test: the bare-metal aarch64 guest (guest-aarch64/) drives the real vhost-user SCMI
# platform (vhost-device-scmi) through QEMU's `vhost-user-scmi` virtio-mmio device.
#
#   scripts/qemu-scmi.sh            build the guest, run it, check its output; exit 0 on PASS
#   scripts/qemu-scmi.sh --install  first run scripts/setup.sh (installs vhost-device-scmi 0.4.0,
#                                   QEMU 10 from bookworm-backports, the rustup target; idempotent)
#
# Environment:
#   VHOST_DEVICE_SCMI   the daemon (default $FWIPC_TOOLS/bin/vhost-device-scmi, FWIPC_TOOLS defaulting
#                       to /opt/fwipc-cache/tools as in scripts/setup.sh, then PATH)
#   QEMU_SYSTEM_AARCH64 qemu-system-aarch64 >= 8.1 with vhost-user-scmi (default: PATH)
#   QEMU_TIMEOUT        seconds the guest may run (default 60; a passing run takes about 1 s)
#
# Exit status: 0 pass; 1 the guest's output does not match; 2 missing tool or build failure;
# 3 the daemon failed; 4 QEMU failed or hung (timeout).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GUEST_DIR="$ROOT/guest-aarch64"
GUEST_ELF="$GUEST_DIR/target/aarch64-unknown-none/release/fwipc-guest-aarch64"
TOOLS=${FWIPC_TOOLS:-/opt/fwipc-cache/tools}
QEMU_TIMEOUT=${QEMU_TIMEOUT:-60}
SENSOR_NAME=acc0
INSTALL=0
case "${1:-}" in
"") ;;
--install) INSTALL=1 ;;
*) echo "usage: $0 [--install]" >&2; exit 2 ;;
esac

say() { printf 'qemu-scmi: %s\n' "$*"; }
die() { local code=$1; shift; say "FAIL: $*"; exit "$code"; }

# --- tools -------------------------------------------------------------------------------------
find_daemon() {
    if [[ -n "${VHOST_DEVICE_SCMI:-}" ]]; then
        echo "$VHOST_DEVICE_SCMI"
    elif [[ -x "$TOOLS/bin/vhost-device-scmi" ]]; then
        echo "$TOOLS/bin/vhost-device-scmi"
    else
        command -v vhost-device-scmi || true
    fi
}
qemu_ok() { [[ -n "$1" && -x "$1" ]] && "$1" -device help 2>/dev/null | grep -q '"vhost-user-scmi"'; }

if [[ $INSTALL -eq 1 ]]; then
    say "installing prerequisites (scripts/setup.sh)"
    FWIPC_TOOLS="$TOOLS" bash "$ROOT/scripts/setup.sh" || die 2 "scripts/setup.sh failed"
fi
DAEMON=$(find_daemon)
[[ -n "$DAEMON" && -x "$DAEMON" ]] ||
    die 2 "vhost-device-scmi not found (set VHOST_DEVICE_SCMI, or run with --install)"
QEMU=${QEMU_SYSTEM_AARCH64:-$(command -v qemu-system-aarch64 || true)}
[[ -n "$QEMU" && -x "$QEMU" ]] || die 2 "qemu-system-aarch64 not found (QEMU >= 8.1 needed; --install)"
qemu_ok "$QEMU" ||
    die 2 "$QEMU has no vhost-user-scmi device (QEMU >= 8.1 for arm/aarch64 needed): $("$QEMU" --version | head -n1)"
command -v timeout >/dev/null || die 2 "timeout(1) not found"

# --- build the guest ---------------------------------------------------------------------------
say "building guest"
cargo build --quiet --release --manifest-path "$GUEST_DIR/Cargo.toml" --target aarch64-unknown-none --target-dir "$GUEST_DIR/target" ||
    die 2 "guest build failed"
[[ -f "$GUEST_ELF" ]] || die 2 "guest ELF missing: $GUEST_ELF"

# --- daemon ------------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/qemu-scmi.XXXXXX")
SOCK="$WORK/scmi.sock"
DAEMON_PID=""
QEMU_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$QEMU_PID" ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null || true # timeout(1) passes the signal on to QEMU
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    # The daemon before fd 3: with no writer left, its fd 1 reports HUP, which kills its worker.
    if [[ -n "$DAEMON_PID" ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill "$DAEMON_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$DAEMON_PID" 2>/dev/null || true
    fi
    [[ -n "$DAEMON_PID" ]] && wait "$DAEMON_PID" 2>/dev/null || true
    exec 3>&- 2>/dev/null || true
    if [[ $rc -ne 0 && -s "$WORK/daemon.log" ]]; then
        say "daemon stderr (last 20 lines):"
        tail -n 20 "$WORK/daemon.log" | sed 's/^/  | /'
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The daemon's `fake` sensor uses its fd 1 as the notification source: fd 1 must be a live,
# pollable pipe (the daemon panics on /dev/null or a file, and its worker dies on EPOLLERR/HUP), and
# a byte becoming readable on it makes the daemon send SENSOR_UPDATE notifications. So its stdout
# is the read end of a FIFO whose write side this script holds open on fd 3 until the daemon is
# gone; writing to fd 3 triggers the notifications the guest waits for.
mkfifo "$WORK/daemon.stdout"
exec 3<>"$WORK/daemon.stdout"
"$DAEMON" --socket-path "$SOCK" -d "fake,name=$SENSOR_NAME" \
    1<"$WORK/daemon.stdout" 2>"$WORK/daemon.log" 3>&- </dev/null &
DAEMON_PID=$!
for _ in $(seq 100); do
    [[ -S "$SOCK" ]] && break
    kill -0 "$DAEMON_PID" 2>/dev/null || die 3 "vhost-device-scmi exited at start-up"
    sleep 0.05
done
[[ -S "$SOCK" ]] || die 3 "vhost-device-scmi did not create $SOCK within 5 s"
say "daemon $DAEMON (pid $DAEMON_PID) on $SOCK, sensor $SENSOR_NAME"

# --- QEMU --------------------------------------------------------------------------------------
# GICv2 (the guest drives it); vhost-user needs guest RAM in a shared memfd; modern (version 2)
# virtio-mmio headers. The guest powers off with PSCI SYSTEM_OFF (HVC conduit at EL1) and QEMU
# then exits 0 whatever the verdict, so the verdict is read from the console below; -no-reboot
# turns a reset into an exit too.
timeout --kill-after=5 "$QEMU_TIMEOUT" "$QEMU" \
    -M virt,gic-version=2 -cpu cortex-a57 -m 128M -smp 1 \
    -object memory-backend-memfd,id=mem,size=128M,share=on -machine memory-backend=mem \
    -global virtio-mmio.force-legacy=false \
    -chardev socket,path="$SOCK",id=scmi -device vhost-user-scmi,chardev=scmi \
    -display none -monitor none -serial stdio -nic none -no-reboot \
    -kernel "$GUEST_ELF" </dev/null >"$WORK/guest.log" 2>"$WORK/qemu.err" 3>&- &
QEMU_PID=$!
# When the guest says it waits for a notification, make the fake sensor's fd readable (once).
TRIGGERED=0
while kill -0 "$QEMU_PID" 2>/dev/null; do
    if [[ $TRIGGERED -eq 0 ]] && grep -qs 'waiting for SENSOR_UPDATE' "$WORK/guest.log"; then
        printf 'n' >&3
        TRIGGERED=1
    fi
    sleep 0.02
done
set +e
wait "$QEMU_PID"
QEMU_RC=$?
set -e
QEMU_PID=""
tr -d '\r' <"$WORK/guest.log" >"$WORK/guest.txt"
say "guest output:"
sed 's/^/  | /' "$WORK/guest.txt"
if [[ -s "$WORK/qemu.err" ]]; then
    say "qemu stderr:"
    sed 's/^/  ! /' "$WORK/qemu.err"
fi
case $QEMU_RC in
0) ;;
124 | 137) die 4 "QEMU did not finish within ${QEMU_TIMEOUT}s (guest hung)" ;;
*) die 4 "QEMU exited with status $QEMU_RC" ;;
esac
kill -0 "$DAEMON_PID" 2>/dev/null || die 3 "vhost-device-scmi died during the run"

# --- check the guest's output ------------------------------------------------------------------
FAILED=0
expect() { # expect <exact line>
    if grep -qxF -- "$1" "$WORK/guest.txt"; then
        say "ok: $1"
    else
        say "MISSING: $1"
        FAILED=1
    fi
}
expect_re() { # expect_re <extended regex matching a whole line> <description>
    if grep -qxE -- "$1" "$WORK/guest.txt"; then
        say "ok: $2"
    else
        say "MISSING: $2 (/$1/)"
        FAILED=1
    fi
}
expect_re 'virtio-mmio: slot [0-9]+ @ 0x[0-9a-f]+: version 2 device id 32 vendor 0x[0-9a-f]+' \
    "modern virtio-mmio slot with device id 32 found by the scan"
# 1. The guest's raw path (bare VirtQueue, hand-rolled SCMI header): a fresh daemon's fake sensor
#    reads counter, counter + 100, counter + 200, the counter advancing once per read from 0.
expect 'scmi: base protocol version 0x20000'
expect 'scmi: 1 protocols besides base, 0 agents'
expect 'scmi: vendor "rust-vmm"'
expect 'scmi: protocols [0x15]'
expect 'scmi: sensor protocol version 0x30000'
expect 'scmi: 1 sensors'
expect_re "scmi: sensor 0 \"$SENSOR_NAME\": 3 axes, .*" "raw: sensor 0 is the 3-axis fake sensor $SENSOR_NAME"
# Unit 89 = m/s^2 (accelerometer).
for a in 0:X 1:Y 2:Z; do expect "scmi: sensor 0 axis ${a%:*} \"acc_${a#*:}\": unit 89"; done
expect 'scmi: sensor 0 reading 0: 0 100 200'
expect 'scmi: sensor 0 reading 1: 1 101 201'
expect 'scmi: sensor 0 reading 2: 2 102 202'
# The discovery every path prints, with its line prefix.
expect_discovery() { # expect_discovery <prefix> <version words: base sensor>
    expect "$1: base protocol version $2"
    expect "$1: 1 protocols besides base, 0 agents"
    expect "$1: vendor \"rust-vmm\""
    expect "$1: implementation version 0x0"
    expect "$1: protocols [0x15]"
    expect "$1: sensor protocol version $3"
    expect "$1: 1 sensors"
    # Unit 89 = m/s^2 (accelerometer).
    for a in 0:X 1:Y 2:Z; do expect "$1: sensor 0 axis ${a%:*} \"acc_${a#*:}\": unit 89"; done
}
# 2. After a device reset, the fwipc stack: backend-scmi-virtio's ScmiVirtio under the typed SCMI
#    agent, requests in polled mode, no eventq. Same platform, so the counter continues at 3.
expect_re 'agent: virtio-scmi up: features ScmiFeatures\(RING_EVENT_IDX \| VERSION_1\), .*polling true.*' \
    "agent: backend up (RING_EVENT_IDX | VERSION_1, polling)"
expect_discovery agent 2.0 3.0
expect "agent: sensor 0 \"$SENSOR_NAME\": 3 axes, unit 0, continuous-update notify true"
expect 'agent: sensor 0 reading 0: 3 103 203'
expect 'agent: sensor 0 reading 1: 4 104 204'
expect 'agent: sensor 0 reading 2: 5 105 205'
# The whole message pool in flight at once, then one more send, refused.
expect 'agent: 8 requests in flight at once: 8 correct replies; next send Busy'
expect 'agent: shut down'
# 3. After another reset, the same stack in interrupt mode: the device's GIC interrupt runs
#    ScmiVirtio::complete, the agent sleeps in WFE between polls; P2A negotiated.
expect_re 'agent-irq: virtio-scmi up: features ScmiFeatures\(P2A_CHANNELS \| RING_EVENT_IDX \| VERSION_1\), .*notifications true' \
    "agent-irq: backend up (P2A_CHANNELS | RING_EVENT_IDX | VERSION_1, notifications)"
expect_re 'agent-irq: device interrupt INTID [0-9]+ -> ScmiVirtio::complete' "agent-irq: handler registered"
expect_discovery agent-irq 2.0 3.0
expect 'agent-irq: sensor 0 reading 0: 6 106 206'
expect 'agent-irq: sensor 0 reading 1: 7 107 207'
expect 'agent-irq: sensor 0 reading 2: 8 108 208'
expect 'agent-irq: 8 requests in flight at once: 8 correct replies; next send Busy'
# SENSOR_UPDATE notification (triggered by this script through the daemon's stdout pipe): one
# fake reading, so the axes are x, x + 100, x + 200.
NOTIF=$(grep -xE 'agent-irq: notification SENSOR_UPDATE sensor 0: -?[0-9]+ -?[0-9]+ -?[0-9]+' \
    "$WORK/guest.txt" | head -n 1 || true)
if [[ -n "$NOTIF" ]] && read -r x y z <<<"${NOTIF##*:}" && ((y == x + 100 && z == x + 200)); then
    say "ok: $NOTIF"
else
    say "MISSING: a SENSOR_UPDATE notification with axes x, x+100, x+200"
    FAILED=1
fi
expect 'agent-irq: cmdq after notifications ok'
expect_re 'agent-irq: [1-9][0-9]* device interrupts handled, 0 spurious' "agent-irq: replies completed by interrupts"
expect 'agent-irq: shut down'
if grep -q 'FAIL' "$WORK/guest.txt"; then
    say "guest reported: $(grep 'FAIL' "$WORK/guest.txt" | head -n1)"
    FAILED=1
fi
[[ "$(tail -n 2 "$WORK/guest.txt" | head -n 1)" == "guest: PASS" ]] || {
    say "MISSING: 'guest: PASS' just before the power-off line"
    FAILED=1
}
expect 'guest: PSCI SYSTEM_OFF (hvc)'
[[ $FAILED -eq 0 ]] || die 1 "guest output does not match"
say "PASS"
