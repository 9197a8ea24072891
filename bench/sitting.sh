#!/usr/bin/env bash
# One sitting: every issue-16 benchmark, one after the other, on one machine and one
# commit, each output kept whole in OUT/ (default bench-sitting-<commit>/) and every
# ratio line gathered in OUT/summary.txt. About 30 minutes here; run it on a quiet
# machine (the figures are ratios against DCMTK measured in the same run, but two
# benches at once would measure each other).
#
#   scripts/setup.sh --test && bench/sitting.sh [OUT]
#
# --cpu-budget needs root and the cgroup v1 cpu controller (bench/cpu_budget.py);
# without them those two runs say so and the rest go on.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
out=${1:-bench-sitting-$commit}
mkdir -p "$out"
out=$(cd "$out" && pwd)
: >"$out/summary.txt"

# Start-up as on a box, whose release venv pip compiled ahead of time: bytecode is
# written (here into OUT/pycache, not the checkout) and compiled once before any
# bench starts the gateway, so no run pays for compiling ~250 modules.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="$out/pycache"
"$PY" -m compileall -q -j 0 gateway drivers "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1

run() {
  local name=$1
  shift
  echo "== $name: $*" | tee -a "$out/summary.txt"
  local started=$SECONDS
  "$PY" "$@" >"$out/$name.txt" 2>&1
  local status=$?
  grep -E 'ratio|MISSED|target|why' "$out/$name.txt" >>"$out/summary.txt"
  echo "   (exit $status, $((SECONDS - started)) s, full output in $out/$name.txt)" |
    tee -a "$out/summary.txt"
}

{
  echo "sitting at $commit ($(git log -1 --format=%cs 2>/dev/null)), $(date -u +%FT%TZ)"
  echo "machine: $(nproc) CPU(s), $(uname -srm), load $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$out/summary.txt"

run forward bench/forward.py --cpu-budget 0.5
run backlog bench/backlog.py --count 2000 --outage 30
run backlog-budget bench/backlog.py --count 2000 --outage 30 --cpu-budget 0.5
run intake bench/intake.py
run hotfolder bench/hotfolder.py
run idle bench/idle.py
run confocal_memory bench/confocal_memory.py
run memory bench/memory.py
echo "summary: $out/summary.txt"
