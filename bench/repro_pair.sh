#!/bin/bash
# The whole default `dvc repro` of two commits, side by side (issue 19's "done when"):
#   bash bench/repro_pair.sh WORKDIR COMMIT_A COMMIT_B
# clones this repository at each commit into WORKDIR/<commit>, links this checkout's .venv (each
# clone's own code goes first on PYTHONPATH, so the shared editable install does not mask it),
# runs one `dvc repro` per clone one after the other, and prints the wall time and each stage's
# start (DVC's "Running stage" lines, time-stamped). Run it on an otherwise idle machine, under
# `flock /tmp/augment-cpu.lock` if others share it; run it again with the commits swapped.
set -euo pipefail
work=$1; shift
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$work"
for commit in "$@"; do
  dir="$work/$commit"
  if [ -e "$dir" ]; then   # never delete a folder this script did not make in this run
    echo "error: $dir exists; give another WORKDIR (nothing was changed)" >&2
    exit 2
  fi
  git clone -q "$repo" "$dir"
  git -C "$dir" checkout -q "$commit"
  ln -s "$repo/.venv" "$dir/.venv"
  (
    cd "$dir"
    export PATH="$PWD/.venv/bin:$PATH" PYTHONPATH="$PWD"
    set +e   # a failed repro is reported with its exit status, not cut short
    t0=$(date +%s.%N)
    dvc repro 2>&1 | while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done > repro_ts.log
    rc=${PIPESTATUS[0]}
    t1=$(date +%s.%N)
    echo "$commit: rc $rc, whole dvc repro $(echo "$t1 - $t0" | bc) s, $(date -u +%H:%M) UTC"
    grep "Running stage" repro_ts.log | awk -v t0="$t0" '{printf "  %s starts at %.1f s\n", $4, $1 - t0}'
  )
done
