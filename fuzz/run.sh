#!/usr/bin/env bash
# Build every fuzz target (cargo-fuzz, stable toolchain: `-s none` needs no nightly sanitizer) and
# run each for SECONDS (default 5) of libFuzzer. Fails on the first crash; the crashing input is
# left in fuzz/artifacts/<target>/. The committed seeds (fuzz/seeds/<target>/, the stateful
# targets' scripts) are read as a second corpus. Usage: fuzz/run.sh [SECONDS] [TARGET-SUBSTRING]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-5}
filter=${2:-}
# Build into the workspace's target directory (target/fuzz), not a second one under fuzz/.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/../target/fuzz}
fuzz=${CARGO_FUZZ:-cargo-fuzz}
command -v "$fuzz" >/dev/null || fuzz=/opt/fwipc-cache/tools/bin/cargo-fuzz
"$fuzz" build -s none -O -a
n=0
for t in $("$fuzz" list); do
  case "$t" in *"$filter"*) ;; *) continue ;; esac
  mkdir -p "corpus/$t"
  printf 'fuzz %-32s %ss ... ' "$t" "$secs"
  seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  if out=$("$fuzz" run -s none -O -a "$t" "corpus/$t" "${seeds[@]}" -- -max_total_time="$secs" -max_len=4096 2>&1); then
    echo "$out" | grep -Eo 'Done [0-9]+ runs' | tail -1
  else
    echo "CRASH"; echo "$out" | tail -40; exit 1
  fi
  n=$((n + 1))
done
echo "fuzz: $n targets ran clean"
