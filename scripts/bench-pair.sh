#!/usr/bin/env bash
# Judges a change by timing it: builds the framework benchmark at a base commit and from the
# working tree, runs the two alternately, and prints, per backend and figure, the median of each
# build's runs and in how many pairs the working tree's was lower (docs/benchmarks.md, "Judging
# a change"). A single run moves by more than most changes do; alternating the two builds
# spreads the machine's drift over both.
#
#   scripts/bench-pair.sh BASE [--pairs N] [-- BENCH_ARGS...]
#   scripts/bench-pair.sh --env VAR [--pairs N] [-- BENCH_ARGS...]
#
# BASE is any commit (`HEAD`, `HEAD~1`, a hash); N pairs, 6 unless given; BENCH_ARGS go to both
# runs (`--only loopback --samples 9` unless given). With `--env VAR` the working tree is built
# once and run with VAR=1 in the environment, standing for the base, and with VAR=0: a change
# the working tree switches off when VAR is 1 is then judged in one binary, without the two
# builds' different code and data placement (docs/benchmarks.md, "Judging a change"). Each
# run's full output is kept in the directory printed at the start.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
base="" env_var=""
if [ "$1" = --env ]; then
  env_var=${2:-}
  [[ $env_var =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { echo "--env wants a variable name" >&2; exit 2; }
  shift 2
else
  base=$(git rev-parse --verify --quiet "$1^{commit}") || { echo "not a commit: $1" >&2; exit 2; }
  shift
fi
pairs=6
while [ $# -gt 0 ]; do
  case $1 in
    --pairs) pairs=${2:?--pairs needs a count}; shift 2 ;;
    --) shift; break ;;
    *) usage ;;
  esac
done
[[ $pairs =~ ^[1-9][0-9]*$ ]] || { echo "--pairs wants a positive count" >&2; exit 2; }
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--only loopback --samples 9)

out=$(mktemp -d)
tree="$out/base-tree"
cleanup() { git worktree remove --force "$tree" 2>/dev/null || true; }
trap cleanup EXIT
echo "runs in $out" >&2

# The bench binary of the workspace at $1, built in target directory $3, copied to $2. The base
# tree has a target directory of its own (target/bench-pair-base, kept between runs): cargo
# names a workspace crate's artifacts the same whatever the workspace's path, so a base build
# in this workspace's target directory left artifacts that the next build of the working tree
# took as fresh (its sources older than the base's checkout), a binary of the base's code.
build() {
  local exe
  exe=$(cd "$1" && CARGO_TARGET_DIR="$3" cargo bench -q -p fwipc-runner \
    --bench framework --no-run --message-format=json |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "framework":
        print(m["executable"])
    elif m.get("reason") == "compiler-message" and m["message"]["level"] == "error":
        sys.stderr.write(m["message"].get("rendered") or m["message"]["message"])') || true
  [ -n "$exe" ] || { echo "no framework bench binary built in $1" >&2; exit 1; }
  cp "$exe" "$2"
}
echo "building the working tree" >&2
build . "$out/new" "${CARGO_TARGET_DIR:-$PWD/target}"
if [ -n "$base" ]; then
  echo "building $base" >&2
  git worktree add --quiet --detach "$tree" "$base"
  build "$tree" "$out/old" "$PWD/target/bench-pair-base"
  cleanup
else
  # One binary: the variable is 1 in the base's runs, 0 in the working tree's.
  cp "$out/new" "$out/old"
fi

# As scripts/bench-docs.sh sets it, for (e)'s memcpy baseline.
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.cpu.x86_rep_movsb_threshold=100000000}
for i in $(seq 1 "$pairs"); do
  # Alternate which build goes first, so a drift within a pair favours neither.
  if [ $((i % 2)) -eq 1 ]; then order="old new"; else order="new old"; fi
  for b in $order; do
    echo "pair $i/$pairs: $b" >&2
    # Both runs get the variable, 1 and 0: an environment one variable longer moves
    # the stack's start, which moved (a) by 10% in eight pairs of one binary.
    set_env=()
    if [ -n "$env_var" ]; then
      if [ "$b" = old ]; then set_env=("$env_var=1"); else set_env=("$env_var=0"); fi
    fi
    env "${set_env[@]}" "$out/$b" --bench "${args[@]}" >"$out/$b-$i.md" 2>"$out/$b-$i.err" ||
      { cat "$out/$b-$i.err" >&2; echo "the $b build's run $i failed" >&2; exit 1; }
  done
done

python3 - "$out" "$pairs" <<'EOF'
import os, re, statistics, sys

out, pairs = sys.argv[1], int(sys.argv[2])

def rows(lines, start):
    """Backend rows of the first table after the line matching `start`."""
    found, table = False, {}
    for l in lines:
        if not found:
            found = re.match(start, l) is not None
            continue
        if l.startswith("| ") and not l.startswith("| backend") and not l.startswith("| *"):
            cells = [c.strip() for c in l.strip().strip("|").split("|")]
            table[cells[0]] = cells[1:]
        elif table and not l.startswith("|"):
            break
    return table

def first(cell):
    try:
        return float(cell.split()[0])
    except (ValueError, IndexError):
        return None

# Figure name, the table's heading, the column (after the backend's).
FIGURES = [
    ("(a) / mc", r"^## \(a\)", 1),
    ("(b) / pp", r"^## \(b\)", 0),
    ("(b) lines", r"^## \(b\)", 3),
    ("(c) 1 core / crossbeam", r"^\*\*One core per side", 0),
]

def figures(path):
    with open(path) as f:
        lines = f.read().splitlines()
    got = {}
    for name, head, col in FIGURES:
        for backend, cells in rows(lines, head).items():
            if col < len(cells) and first(cells[col]) is not None:
                got[(backend, name)] = first(cells[col])
    return got

runs = {b: [figures(os.path.join(out, f"{b}-{i}.md")) for i in range(1, pairs + 1)]
        for b in ("old", "new")}
keys = sorted({k for r in runs["old"] + runs["new"] for k in r},
              key=lambda k: (k[0], [f[0] for f in FIGURES].index(k[1])))
print(f"| backend | figure | base (median of {pairs}) | working tree | working tree lower in |")
print("|---|---|---:|---:|---:|")
for k in keys:
    old = [r[k] for r in runs["old"] if k in r]
    new = [r[k] for r in runs["new"] if k in r]
    both = [(o[k], n[k]) for o, n in zip(runs["old"], runs["new"]) if k in o and k in n]
    lower = sum(1 for o, n in both if n < o)
    if old and new:
        print(f"| {k[0]} | {k[1]} | {statistics.median(old):.2f} | "
              f"{statistics.median(new):.2f} | {lower} of {len(both)} |")
EOF
