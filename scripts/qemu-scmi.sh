#!/usr/bin/env bash
# System test: the bare-metal aarch64 guest (guest-aarch64/) drives two real vhost-user SCMI
# platforms (two vhost-device-scmi daemons, each with a differently named fake sensor) through two
# QEMU `vhost-user-scmi` virtio-mmio devices, found through the device tree; each device must
# return its own daemon's names and readings. The guest runs with the MMU and caches on, on two
# vCPUs, interrupts on: in its last stage both CPUs send commands to both devices at once while
# the device interrupts complete them on CPU 0, and each CPU reports how many completed.
#
#   scripts/qemu-scmi.sh            build the guest, run it, check its output; exit 0 on PASS
#   scripts/qemu-scmi.sh --install  first run scripts/setup.sh (installs vhost-device-scmi 0.4.0,
#                                   QEMU 10 from bookworm-backports, the rustup target; idempotent)
#
# Environment:
#   VHOST_DEVICE_SCMI   the daemon (default $FWIPC_TOOLS/bin/vhost-device-scmi, FWIPC_TOOLS defaulting
#                       to /opt/fwipc-cache/tools as in scripts/setup.sh, then PATH)
#   QEMU_SYSTEM_AARCH64 qemu-system-aarch64 >= 8.1 with vhost-user-scmi (default: PATH)
#   QEMU_TIMEOUT        seconds the guest may run (default 60; a passing run takes about 5-10 s
#                       under TCG with two vCPUs)
#
# Exit status: 0 pass; 1 the guest's output does not match; 2 missing tool or build failure;
# 3 the daemon failed; 4 QEMU failed or hung (timeout).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GUEST_DIR="$ROOT/guest-aarch64"
GUEST_ELF="$GUEST_DIR/target/aarch64-unknown-none/release/fwipc-guest-aarch64"
TOOLS=${FWIPC_TOOLS:-/opt/fwipc-cache/tools}
QEMU_TIMEOUT=${QEMU_TIMEOUT:-60}
# One fake sensor name per daemon (at most 15 characters); device tags in the guest's output are
# matched to daemons through these names.
SENSOR_NAMES=(accel-left accel-right)
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

# --- daemons ------------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/qemu-scmi.XXXXXX")
DAEMON_PIDS=()
QEMU_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$QEMU_PID" ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null || true # timeout(1) passes the signal on to QEMU
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    # The daemons before fds 3 and 4: with no writer left, a daemon's fd 1 reports HUP, which
    # kills its worker.
    local pid
    for pid in "${DAEMON_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill "$pid" 2>/dev/null || true
    done
    for pid in "${DAEMON_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    exec 3>&- 4>&- 2>/dev/null || true
    if [[ $rc -ne 0 ]]; then
        local i
        for i in "${!SENSOR_NAMES[@]}"; do
            if [[ -s "$WORK/daemon$i.log" ]]; then
                say "daemon $i stderr (last 20 lines):"
                tail -n 20 "$WORK/daemon$i.log" | sed 's/^/  | /'
            fi
        done
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The daemon's `fake` sensor uses its fd 1 as the notification source: fd 1 must be a live,
# pollable pipe (the daemon panics on /dev/null or a file, and its worker dies on EPOLLERR/HUP), and
# a byte becoming readable on it makes the daemon send SENSOR_UPDATE notifications. So each
# daemon's stdout is the read end of a FIFO whose write side this script holds open (daemon 0 on
# fd 3, daemon 1 on fd 4) until the daemon is gone; writing to that fd triggers the notifications
# the guest waits for on that daemon's device.
mkfifo "$WORK/daemon0.stdout" "$WORK/daemon1.stdout"
exec 3<>"$WORK/daemon0.stdout"
exec 4<>"$WORK/daemon1.stdout"
QEMU_DEVICES=()
for i in "${!SENSOR_NAMES[@]}"; do
    sock="$WORK/scmi$i.sock"
    "$DAEMON" --socket-path "$sock" -d "fake,name=${SENSOR_NAMES[$i]}" \
        1<"$WORK/daemon$i.stdout" 2>"$WORK/daemon$i.log" 3>&- 4>&- </dev/null &
    DAEMON_PIDS+=($!)
    for _ in $(seq 100); do
        [[ -S "$sock" ]] && break
        kill -0 "${DAEMON_PIDS[$i]}" 2>/dev/null || die 3 "vhost-device-scmi $i exited at start-up"
        sleep 0.05
    done
    [[ -S "$sock" ]] || die 3 "vhost-device-scmi $i did not create $sock within 5 s"
    say "daemon $i: $DAEMON (pid ${DAEMON_PIDS[$i]}) on $sock, sensor ${SENSOR_NAMES[$i]}"
    # The second device is behind the platform's DMA translation (VIRTIO_F_ACCESS_PLATFORM, no
    # vIOMMU): the drivers must accept the feature, as a protected VM's would.
    ap=""; ((i == 1)) && ap=",iommu_platform=on"
    QEMU_DEVICES+=(-chardev "socket,path=$sock,id=scmi$i" -device "vhost-user-scmi,chardev=scmi$i$ap")
done

# --- QEMU --------------------------------------------------------------------------------------
# GICv3 (the guest drives it with the arm-gic crate); two vCPUs (the second started by the guest with PSCI CPU_ON);
# vhost-user needs guest RAM in a shared memfd; modern (version 2) virtio-mmio headers. The guest powers off with PSCI SYSTEM_OFF (HVC conduit at EL1) and QEMU
# then exits 0 whatever the verdict, so the verdict is read from the console below; -no-reboot
# turns a reset into an exit too.
timeout --kill-after=5 "$QEMU_TIMEOUT" "$QEMU" \
    -M virt,gic-version=3 -cpu cortex-a57 -m 128M -smp 2 \
    -object memory-backend-memfd,id=mem,size=128M,share=on -machine memory-backend=mem \
    -global virtio-mmio.force-legacy=false \
    "${QEMU_DEVICES[@]}" \
    -display none -monitor none -serial stdio -nic none -no-reboot \
    -kernel "$GUEST_ELF" </dev/null >"$WORK/guest.log" 2>"$WORK/qemu.err" 3>&- 4>&- &
QEMU_PID=$!
# When the guest says it waits for a notification from a sensor, make that sensor's daemon's fd
# readable (once per daemon). Once that device has its notification, read the byte back: the
# daemon polls the fd level-triggered, so an unread byte keeps its worker spinning (and logging)
# for the rest of the run, starving QEMU and the other daemon on a small host.
TRIGGERED=(0 0) # 0 not yet, 1 byte written, 2 byte read back
WAITER=("" "")  # the guest's line prefix of the device waiting on each daemon
while kill -0 "$QEMU_PID" 2>/dev/null; do
    for i in "${!SENSOR_NAMES[@]}"; do
        case ${TRIGGERED[$i]} in
        0)
            line=$(grep -sF "waiting for SENSOR_UPDATE from \"${SENSOR_NAMES[$i]}\"" "$WORK/guest.log" |
                head -n 1 || true)
            if [[ -n "$line" ]]; then
                WAITER[i]=${line%%: waiting*}
                printf 'n' >&$((3 + i))
                TRIGGERED[i]=1
            fi
            ;;
        1)
            if grep -qsF -e "${WAITER[$i]}: notification SENSOR_UPDATE" -e "${WAITER[$i]}: shut down" \
                -e "FAIL" "$WORK/guest.log"; then
                read -r -n 1 -t 1 -u $((3 + i)) _ || true
                TRIGGERED[i]=2
            fi
            ;;
        esac
    done
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
for i in "${!DAEMON_PIDS[@]}"; do
    kill -0 "${DAEMON_PIDS[$i]}" 2>/dev/null || die 3 "vhost-device-scmi $i died during the run"
done

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
# Discovery: QEMU's device tree declares 32 virtio-mmio windows; exactly our two are SCMI devices,
# each with a GIC SPI.
expect_re 'guest: device tree from (x0|start of RAM), [0-9]+ bytes' "device tree found"
N_SCMI=$(grep -cxE 'virtio-mmio: 0x[0-9a-f]+: version 2 device id 32 vendor 0x[0-9a-f]+, SPI [0-9]+ \(INTID [0-9]+\)' \
    "$WORK/guest.txt" || true)
if [[ $N_SCMI -eq ${#SENSOR_NAMES[@]} ]]; then
    say "ok: $N_SCMI modern virtio-mmio devices with id 32 and an SPI in the device tree"
else
    say "MISSING: ${#SENSOR_NAMES[@]} virtio-mmio devices with id 32 (found $N_SCMI)"
    FAILED=1
fi
expect_re "guest: [0-9]+ virtio-mmio windows, ${#SENSOR_NAMES[@]} virtio-scmi devices" "both SCMI devices found"
expect "guest: drove ${#SENSOR_NAMES[@]} of ${#SENSOR_NAMES[@]} virtio-scmi devices"

# The discovery every fwipc path prints, with its line prefix.
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

# Every device, all its stages, against the daemon its sensor name says it is connected to. Each
# daemon is fresh and only ever talks to its own device, so each fake sensor's counter runs
# 0, 1, 2... across that device's stages: a reading that went to the other daemon would show.
SEEN_NAMES=()
for dev in "${!SENSOR_NAMES[@]}"; do
    SUMMARY=$(grep -xE "device\[$dev\] @ 0x[0-9a-f]+: vendor \"rust-vmm\", sensors \[\"[^\"]+\"\]" \
        "$WORK/guest.txt" | head -n 1 || true)
    NAME=${SUMMARY##*sensors \[\"}
    NAME=${NAME%\"\]}
    if [[ -z "$SUMMARY" ]]; then
        say "MISSING: device[$dev] summary line (vendor and sensor names)"
        FAILED=1
        continue
    fi
    KNOWN=0
    for n in "${SENSOR_NAMES[@]}"; do [[ "$n" == "$NAME" ]] && KNOWN=1; done
    for n in "${SEEN_NAMES[@]}"; do [[ "$n" == "$NAME" ]] && KNOWN=2; done
    case $KNOWN in
    1) say "ok: $SUMMARY (the daemon with sensor $NAME)" ;;
    2) say "MISSING: device[$dev] reports sensor \"$NAME\", already reported by another device"; FAILED=1 ;;
    *) say "MISSING: device[$dev] reports sensor \"$NAME\", which no daemon has"; FAILED=1 ;;
    esac
    SEEN_NAMES+=("$NAME")
    # The second daemon's device offers VIRTIO_F_ACCESS_PLATFORM: every fwipc stage on it must
    # have negotiated it.
    AP=""; [[ "$NAME" == "${SENSOR_NAMES[1]}" ]] && AP=" \\| ACCESS_PLATFORM"

    # 1. The fwipc stack: fwipc-scmi-virtio's ScmiVirtio under the typed SCMI agent, requests in
    #    polled mode, no eventq. A fresh daemon's fake sensor reads counter, counter + 100,
    #    counter + 200, the counter advancing once per read across the device's stages.
    ag="agent[$dev]"
    expect_re "agent\[$dev\]: virtio-scmi up: features ScmiFeatures\(RING_EVENT_IDX \| VERSION_1$AP\), .*polling true.*" \
        "$ag: backend up (RING_EVENT_IDX | VERSION_1, polling)"
    expect_discovery "$ag" 2.0 3.0
    expect "$ag: sensor 0 \"$NAME\": 3 axes, unit 0, continuous-update notify true"
    expect "$ag: sensor 0 reading 0: 0 100 200"
    expect "$ag: sensor 0 reading 1: 1 101 201"
    expect "$ag: sensor 0 reading 2: 2 102 202"
    # The whole message pool in flight at once, then one more send, refused.
    expect "$ag: 8 requests in flight at once: 8 correct replies; next send Busy"
    expect "$ag: shut down"

    # 2. After a device reset, the same polled stack on BounceHal: rings and every buffer in the guest's shared bounce
    #     pool (the protected-VM mode); the pool must be empty again after shutdown.
    bo="agent-bounce[$dev]"
    expect_re "agent-bounce\[$dev\]: virtio-scmi up: features ScmiFeatures\(RING_EVENT_IDX \| VERSION_1$AP\), .*polling true.*" \
        "$bo: backend up on the bounce pool"
    expect_discovery "$bo" 2.0 3.0
    expect "$bo: sensor 0 \"$NAME\": 3 axes, unit 0, continuous-update notify true"
    expect "$bo: sensor 0 reading 0: 3 103 203"
    expect "$bo: sensor 0 reading 1: 4 104 204"
    expect "$bo: sensor 0 reading 2: 5 105 205"
    expect "$bo: 8 requests in flight at once: 8 correct replies; next send Busy"
    expect "$bo: shut down"
    expect_re "agent-bounce\[$dev\]: every DMA address in the shared pool 0x[0-9a-f]+\.\.0x[0-9a-f]+; 0 bytes still allocated after shutdown" \
        "$bo: bounce pool empty after the session"

    # 3. After another reset, the same stack in interrupt mode: the device's GIC interrupt (from
    #    the device tree) runs ScmiVirtio::complete; the pipelined waits park in fwipc-virtio's
    #    EventParker (Wait::Completion); P2A negotiated.
    irq="agent-irq[$dev]"
    expect_re "agent-irq\[$dev\]: virtio-scmi up: features ScmiFeatures\(P2A_CHANNELS \| RING_EVENT_IDX \| VERSION_1$AP\), .*notifications true" \
        "$irq: backend up (P2A_CHANNELS | RING_EVENT_IDX | VERSION_1, notifications)"
    expect_re "agent-irq\[$dev\]: device interrupt INTID [0-9]+ -> ScmiVirtio::complete" "$irq: handler registered"
    expect_re "agent-irq\[$dev\]: INTID [0-9]+ edge-triggered \(device tree\), routed to cpu0" "$irq: SPI routed to cpu0"
    expect_discovery "$irq" 2.0 3.0
    expect "$irq: sensor 0 \"$NAME\": 3 axes, unit 0, continuous-update notify true"
    expect "$irq: sensor 0 reading 0: 6 106 206"
    expect "$irq: sensor 0 reading 1: 7 107 207"
    expect "$irq: sensor 0 reading 2: 8 108 208"
    expect "$irq: 8 requests in flight at once: 8 correct replies; next send Busy"
    # SENSOR_UPDATE notification (triggered by this script through that daemon's stdout pipe): one
    # fake reading, so the axes are x, x + 100, x + 200.
    expect "$irq: waiting for SENSOR_UPDATE from \"$NAME\""
    NOTIF=$(grep -xE "agent-irq\[$dev\]: notification SENSOR_UPDATE sensor 0: -?[0-9]+ -?[0-9]+ -?[0-9]+" \
        "$WORK/guest.txt" | head -n 1 || true)
    if [[ -n "$NOTIF" ]] && read -r x y z <<<"${NOTIF##*:}" && ((y == x + 100 && z == x + 200)); then
        say "ok: $NOTIF"
    else
        say "MISSING: $irq: a SENSOR_UPDATE notification with axes x, x+100, x+200"
        FAILED=1
    fi
    expect "$irq: cmdq after notifications ok"
    expect_re "agent-irq\[$dev\]: [1-9][0-9]* device interrupts handled, 0 spurious" "$irq: replies completed by interrupts"
    expect "$irq: shut down"
done
# MMU and caches on both CPUs; CPU 1 started through PSCI.
expect_re 'guest: cpu0: MMU on, D-cache on, I-cache on \(.*\)' "cpu0: MMU and caches on"
expect_re 'guest: cpu1: online via PSCI CPU_ON \(hvc\), MMU on, D-cache on, I-cache on \(.*\), GIC CPU interface and IRQs on' \
    "cpu1: online, MMU and caches on"
expect_re 'guest: GICv3 distributor 0x[0-9a-f]+, redistributors 0x[0-9a-f]+' "GICv3 up (from the device tree)"
# The concurrent stage: each CPU sent COMMANDS commands to every device, all completed with
# checked replies (vendor, this device's own sensor name, consistent axes), and the device
# interrupts were handled on CPU 0 only.
COMMANDS=100
PER_DEV=""
for dev in "${!SENSOR_NAMES[@]}"; do PER_DEV+="${PER_DEV:+, }device $dev: $COMMANDS"; done
for cpu in 0 1; do
    expect "cpu$cpu: $((COMMANDS * ${#SENSOR_NAMES[@]})) concurrent commands completed ($PER_DEV)"
done
expect_re "concurrent: 2 CPUs x ${#SENSOR_NAMES[@]} devices x $COMMANDS commands in [0-9]+ ms; device interrupts handled on cpu0: [1-9][0-9]*, cpu1: 0 \(.*\)" \
    "concurrent stage: device interrupts handled on cpu0 only"
expect_re "concurrent: both CPUs sending at once for [1-9][0-9]* us \(cpu0 [0-9]+ us, cpu1 [0-9]+ us\)" \
    "concurrent stage: both CPUs' command streams overlapped"

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
