#!/usr/bin/env bash
# System test: the Linux kernel's own SCMI stack (arm_scmi on its virtio transport, with the hwmon,
# clock, regulator, reset, power-domain and cpufreq drivers) in an arm64 Linux guest under QEMU,
# against a vhost-user SCMI device: fwipc's daemon (`fwipc-scmi-vhost`, configured from
# scmi-vhost/configs/linux-guest.toml) and, as a baseline, rust-vmm's vhost-device-scmi. The guest's
# init prints what Linux sees (`check: ...` lines); this script checks them against the daemon's
# configuration and prints both side by side.
#
#   scripts/linux-guest.sh             build what is missing, run both peers, check; exit 0 on PASS
#   scripts/linux-guest.sh --install   first install the Debian packages it needs (root)
#
# What it builds, once, and caches under $FWIPC_TOOLS (default /opt/fwipc-cache/tools):
#   linux-6.12-<config hash>/Image   an arm64 kernel from Debian's linux-source-6.12, allnoconfig
#                                    plus scripts/linux-guest/kernel.config (a few minutes on 2 cores)
# and, every run (seconds): the initramfs (busybox-static:arm64 + scripts/linux-guest/init) and the
# device tree (QEMU's `-machine dumpdtb` plus scripts/linux-guest/scmi.dtsi, compiled with dtc).
#
# Environment: FWIPC_TOOLS, VHOST_DEVICE_SCMI (baseline daemon), QEMU_SYSTEM_AARCH64,
# LINUX_TIMEOUT (seconds per boot, default 180), JOBS (kernel build parallelism, default nproc).
# Exit status: 0 pass; 1 a check failed; 2 missing tool or build failure; 4 QEMU failed or hung.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/scripts/linux-guest"
TOOLS=${FWIPC_TOOLS:-/opt/fwipc-cache/tools}
LINUX_TIMEOUT=${LINUX_TIMEOUT:-180}
JOBS=${JOBS:-$(nproc)}
CONFIG_TOML="$ROOT/scmi-vhost/configs/linux-guest.toml"

say() { printf 'linux-guest: %s\n' "$*"; }
die() { local code=$1; shift; say "FAIL: $*"; exit "$code"; }

if [[ "${1:-}" == "--install" ]]; then
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        linux-source-6.12 gcc-aarch64-linux-gnu device-tree-compiler busybox-static:arm64 \
        flex bison bc cpio make xz-utils >/dev/null
fi
for t in aarch64-linux-gnu-gcc dtc cpio flex bison bc; do
    command -v "$t" >/dev/null || die 2 "$t not found (run with --install)"
done
[[ -f /usr/src/linux-source-6.12.tar.xz ]] || die 2 "linux-source-6.12 not installed (--install)"
BUSYBOX=$(dpkg -L busybox-static:arm64 2>/dev/null | grep -m1 '/bin/busybox$' || true)
[[ -n "$BUSYBOX" ]] || die 2 "busybox-static:arm64 not installed (--install)"
QEMU=${QEMU_SYSTEM_AARCH64:-$(command -v qemu-system-aarch64 || true)}
[[ -x "$QEMU" ]] || die 2 "qemu-system-aarch64 not found (scripts/setup.sh installs QEMU 10)"
BASELINE=${VHOST_DEVICE_SCMI:-$TOOLS/bin/vhost-device-scmi}

# --- kernel (cached) ---------------------------------------------------------------------------
# One source change beside the config: clk.c's CLOCK_ALLOW_WRITE_DEBUGFS (a #define with no Kconfig
# option) makes debugfs clk_rate writable, so the guest can round-trip a clock rate change through
# CLOCK_RATE_SET. It is part of the cache key.
KPATCH='s/^#undef CLOCK_ALLOW_WRITE_DEBUGFS/#define CLOCK_ALLOW_WRITE_DEBUGFS/'
HASH=$({ cat "$HERE/kernel.config"; echo "$KPATCH"; } | sha256sum | cut -c1-12)
KDIR="$TOOLS/linux-6.12-$HASH"
IMAGE="$KDIR/Image"
if [[ ! -f "$IMAGE" ]]; then
    say "building the kernel (once; cached in $KDIR)"
    start=$(date +%s)
    BUILD=$(mktemp -d "${TMPDIR:-/tmp}/linux-build.XXXXXX")
    tar xf /usr/src/linux-source-6.12.tar.xz -C "$BUILD"
    SRC="$BUILD/linux-source-6.12"
    sed -i "$KPATCH" "$SRC/drivers/clk/clk.c"
    grep -q '^#define CLOCK_ALLOW_WRITE_DEBUGFS' "$SRC/drivers/clk/clk.c" || die 2 "clk.c patch did not apply"
    K=(make -s -C "$SRC" O="$BUILD/out" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-)
    "${K[@]}" allnoconfig >/dev/null
    "$SRC/scripts/kconfig/merge_config.sh" -m -O "$BUILD/out" "$BUILD/out/.config" "$HERE/kernel.config" >/dev/null
    "${K[@]}" olddefconfig >/dev/null
    for o in ARM_SCMI_PROTOCOL ARM_SCMI_TRANSPORT_VIRTIO SENSORS_ARM_SCMI COMMON_CLK_SCMI \
        REGULATOR_ARM_SCMI RESET_SCMI ARM_SCMI_POWER_DOMAIN ARM_SCMI_CPUFREQ DEVTMPFS BLK_DEV_INITRD \
        DEBUG_FS VIRTIO_MMIO SERIAL_AMBA_PL011_CONSOLE ARM_GIC_V3; do
        grep -q "^CONFIG_$o=y" "$BUILD/out/.config" || die 2 "kernel config lacks CONFIG_$o"
    done
    "${K[@]}" -j"$JOBS" Image || die 2 "kernel build failed"
    mkdir -p "$KDIR"
    cp "$BUILD/out/arch/arm64/boot/Image" "$BUILD/out/.config" "$KDIR/"
    rm -rf "$BUILD"
    say "kernel built in $(( $(date +%s) - start )) s"
fi

# --- daemon, initramfs, device tree ------------------------------------------------------------
cargo build --quiet --release -p fwipc-scmi-vhost --manifest-path "$ROOT/Cargo.toml" || die 2 "daemon build failed"
OURS="$ROOT/target/release/fwipc-scmi-vhost"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/linux-guest.XXXXXX")
DAEMON_PID=""
cleanup() {
    local rc=$?
    [[ -n "$DAEMON_PID" ]] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT

mkdir -p "$WORK/root"/{bin,proc,sys,dev}
cp "$BUSYBOX" "$WORK/root/bin/busybox"
cp "$HERE/init" "$WORK/root/init"
(cd "$WORK/root" && find . | cpio -o -H newc --quiet | gzip -1 >"$WORK/initrd.gz")

MACHINE=(-M virt,gic-version=3 -cpu cortex-a57 -smp 2 -m 256M)
"$QEMU" "${MACHINE[@]}" -machine dumpdtb="$WORK/virt.dtb" -nic none -display none >/dev/null 2>&1 ||
    die 2 "QEMU could not dump its device tree"
{ dtc -q -I dtb -O dts "$WORK/virt.dtb"; cat "$HERE/scmi.dtsi"; } >"$WORK/guest.dts"
dtc -q -I dts -O dtb -o "$WORK/guest.dtb" "$WORK/guest.dts" || die 2 "dtc failed on the SCMI node"

# run <name> <daemon command...>: boot the guest against that daemon, keep its check lines.
run() {
    local name=$1; shift
    local sock="$WORK/$name.sock" fifo="$WORK/$name.stdout" hold
    # vhost-device-scmi's fake sensor polls its stdout for notification triggers: it must be a live
    # pipe (the daemon panics on a file); this script holds the write end until the daemon is gone.
    mkfifo "$fifo"
    exec {hold}<>"$fifo"
    "$@" --socket-path "$sock" 1<"$fifo" 2>"$WORK/$name.daemon.log" &
    DAEMON_PID=$!
    for _ in $(seq 100); do [[ -S "$sock" ]] && break; sleep 0.05; done
    [[ -S "$sock" ]] || { cat "$WORK/$name.daemon.log"; die 2 "$name: daemon did not create its socket"; }
    set +e
    timeout --kill-after=5 "$LINUX_TIMEOUT" "$QEMU" "${MACHINE[@]}" \
        -object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem \
        -global virtio-mmio.force-legacy=false \
        -chardev "socket,path=$sock,id=scmi" -device vhost-user-scmi,chardev=scmi \
        -kernel "$IMAGE" -initrd "$WORK/initrd.gz" -dtb "$WORK/guest.dtb" \
        -append "console=ttyAMA0 rdinit=/init panic=-1 pd_ignore_unused" \
        -display none -monitor none -serial stdio -nic none -no-reboot </dev/null >"$WORK/$name.console" 2>&1
    local rc=$?
    set -e
    kill "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
    DAEMON_PID=""
    exec {hold}>&-
    tr -d '\r' <"$WORK/$name.console" | sed -n 's/^check: //p' >"$WORK/$name.checks"
    if [[ $rc -ne 0 ]] || ! grep -qx done "$WORK/$name.checks"; then
        say "$name: console (last 40 lines):"
        tr -d '\r' <"$WORK/$name.console" | tail -n 40 | sed 's/^/  | /'
        say "$name: daemon log (last 20 lines):"
        tail -n 20 "$WORK/$name.daemon.log" | sed 's/^/  ! /'
        die 4 "$name: the guest did not finish (QEMU status $rc)"
    fi
}

run fwipc "$OURS" --config "$CONFIG_TOML"
if [[ -x "$BASELINE" ]]; then
    run baseline "$BASELINE" -d fake,name=accel-baseline
else
    say "baseline: vhost-device-scmi not found at $BASELINE, skipped"
    : >"$WORK/baseline.checks"
fi

say "what Linux sees: fwipc-scmi-vhost (linux-guest.toml) | vhost-device-scmi 0.4.0 (fake sensor)"
paste -d '|' "$WORK/fwipc.checks" "$WORK/baseline.checks" | sed 's/^/  /; s/|/  |  /'

# --- checks against linux-guest.toml -----------------------------------------------------------
FAILED=0
expect() { # expect <extended regex, whole line> <description>
    if grep -qxE -- "$1" "$WORK/fwipc.checks"; then say "ok: $2"; else say "MISSING: $2 (/$1/)"; FAILED=1; fi
}
expect "dmesg: .*SCMI Protocol v[0-9.]+ 'fwipc:linux-test' Firmware version 0x[0-9a-f]+" "vendor and sub-vendor"
expect "hwmon: scmi_sensors soc-temp temp1_input = 45000" "sensor soc-temp 45.000 C"
expect "hwmon: scmi_sensors vdd-core in[0-9]_input = 900" "sensor vdd-core 900 mV"
expect "clk: uart-clk rate 24000000" "clock uart-clk 24 MHz"
expect "clk: cpu-clk rate 600000000" "clock cpu-clk 600 MHz (rate_hz)"
expect "clk: set cpu-clk 1200000000 read back 1200000000" "clock rate change round-trips (CLOCK_RATE_SET)"
for drv in scmi-hwmon scmi-clocks scmi-regulator scmi-reset scmi-power-domain scmi-cpufreq \
    scmi-perf-domain scmi-system-power; do
    expect "scmi device: scmi_dev\.[0-9]+ +driver $drv" "Linux bound $drv"
done
expect "regulator: vdd-io microvolts 1800000 state .*" "regulator vdd-io 1.8 V"
# pd_ignore_unused: genpd would otherwise switch vpu-pd off at late init (no device uses it), and
# the states below would no longer be the ones Linux read from the daemon.
expect "power domain: gpu-pd off(-[0-9]+)?" "power domain gpu-pd off"
expect "power domain: vpu-pd on" "power domain vpu-pd on"
expect "cpufreq: driver scmi frequencies .+" "cpufreq on performance domain 0"
if grep -q '^cpufreq: set ' "$WORK/fwipc.checks"; then
    while read -r _ _ f _ _ back; do
        if [[ "$f" == "$back" ]]; then say "ok: cpufreq $f kHz round-trips"; else say "MISSING: cpufreq set $f read back $back"; FAILED=1; fi
    done < <(grep '^cpufreq: set ' "$WORK/fwipc.checks")
else
    say "MISSING: cpufreq level changes"; FAILED=1
fi
if [[ -s "$WORK/baseline.checks" ]]; then
    if grep -qE '^dmesg: .*SCMI Protocol' "$WORK/baseline.checks"; then
        say "ok: baseline: Linux probed vhost-device-scmi too"
    else
        say "MISSING: baseline: no SCMI probe against vhost-device-scmi"; FAILED=1
    fi
fi
[[ $FAILED -eq 0 ]] || die 1 "what Linux sees does not match the configuration"
say "PASS"
