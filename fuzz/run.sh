#!/usr/bin/env bash
# Build every fuzz target (cargo-fuzz, stable toolchain: `-s none` needs no nightly sanitizer) and
# run each for SECONDS (default 5) of libFuzzer. Fails on the first crash; the crashing input is
# left in fuzz/artifacts/<target>/. The committed seeds (fuzz/seeds/<target>/, the stateful
# targets' scripts) are read as a second corpus. Usage: fuzz/run.sh [SECONDS] [TARGET-SUBSTRING]
# SANITIZER=address runs the targets under AddressSanitizer, which needs the nightly toolchain
# (built into target/fuzz-address; without a substring that is every target).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-5}
filter=${2:-}
san=${SANITIZER:-none}
# Build into the workspace's target directory (target/fuzz), not a second one under fuzz/.
if [ "$san" = none ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/../target/fuzz}
else
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/../target/fuzz-$san}
  export RUSTUP_TOOLCHAIN=${RUSTUP_TOOLCHAIN:-nightly}
fi
fuzz=${CARGO_FUZZ:-cargo-fuzz}
command -v "$fuzz" >/dev/null || fuzz=/opt/fwipc-cache/tools/bin/cargo-fuzz
targets=()
for t in $("$fuzz" list); do
  case "$t" in *"$filter"*) targets+=("$t") ;; esac
done
if [ -z "$filter" ]; then
  "$fuzz" build -s "$san" -O -a
else
  for t in "${targets[@]}"; do "$fuzz" build -s "$san" -O -a "$t"; done
fi
n=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  printf 'fuzz %-32s %ss ... ' "$t" "$secs"
  seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  if out=$("$fuzz" run -s "$san" -O -a "$t" "corpus/$t" "${seeds[@]}" -- -max_total_time="$secs" -max_len=4096 2>&1); then
    echo "$out" | grep -Eo 'Done [0-9]+ runs' | tail -1
  else
    echo "CRASH"; echo "$out" | tail -40; exit 1
  fi
  n=$((n + 1))
done
echo "fuzz: $n targets ran clean (sanitizer: $san)"
