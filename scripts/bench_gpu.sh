#!/usr/bin/env bash
# Finishes a standard-suite sweep on one GPU machine with no network, one process per CPU core.
# Needs, in the repo root: .whl/ (the packages that machine lacks, as wheels) and .gpu/ holding the
# shared CSVs, cache/ (a copy of ~/.cache/latticegym: hull energies, fingerprints) and bench/ (the
# sweep's suite.json and the summary.json of every run already finished, so those are skipped).
# Each AGENT:N starts N `latticegym bench` processes for that agent label; they share the sweep and
# lock runs apart. At MINUTES they are interrupted (a run keeps its last iteration's checkpoint).
# Writes DEST/runs.tgz.* (the runs this machine touched; checkpoints only of unfinished ones) and DEST/logs.tgz.
# Each process's closing table and plots fail there (the skeleton has no finished runs' CSVs): unpack the
# runs into the sweep at home and run `latticegym bench ... --tabulate`. Moved runs resume on a CPU.
# Usage: [ONLY=Task1,Task2] scripts/bench_gpu.sh MINUTES DEST AGENT:N [AGENT:N ...]   (ONLY: `bench --only`)
set -uo pipefail
minutes=$1 dest=$2; shift 2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/pkg /tmp/logs "$dest" && ln -sfn "$PWD" /tmp/pkg/latticegym
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 LATTICEGYM_CACHE=$PWD/.gpu/cache
nvidia-cuda-mps-control -d 2>/dev/null && echo "MPS on" || echo "MPS off"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
find .gpu/bench -name summary.json | sed 's|/summary.json||' | sort > /tmp/finished_before

for spec in "$@"; do
  for i in $(seq "${spec#*:}"); do
    timeout --signal=INT --kill-after=30 "${minutes}m" python3 -m latticegym.cli bench --suite standard \
      --agents "${spec%:*}" --seeds 3 ${ONLY:+--only "$ONLY"} --out .gpu/bench --data .gpu --device cuda > "/tmp/logs/${spec%:*}_$i.log" 2>&1 &
    sleep 1
  done
done
sleep 90  # a CUDA path that breaks does so in the first iteration: stop early rather than burn the lease
if grep -l "Traceback" /tmp/logs/*.log; then
  grep -h -B2 -A25 "Traceback" /tmp/logs/*.log | head -80
  pkill -INT -f "latticegym.cli bench"; sleep 20
fi
wait

cd .gpu/bench || exit 1
find runs -name metrics.csv | sed 's|/metrics.csv||' | sort | while read -r run; do
  grep -qx ".gpu/bench/$run" /tmp/finished_before && continue
  find "$run" -type f ! -name '*.prev' ! -name '*.tmp' ! -name .lock \
    | { if [ -f "$run/summary.json" ]; then grep -v 'checkpoint.pt$'; else cat; fi; }
done > /tmp/files
# Checkpoints last: if the archive is cut at the size limit, the finished runs still come back whole.
{ grep -v 'checkpoint.pt$' /tmp/files; grep 'checkpoint.pt$' /tmp/files; } > /tmp/ordered
tar -czf - -T /tmp/ordered | split -b 15M - "$dest/runs.tgz."
for run in $(sed 's|/[^/]*$||' /tmp/files | grep -v tensorboard | sort -u); do
  echo "$run: iteration,evaluations $(tail -1 "$run/metrics.csv" | cut -d, -f1,2)$([ -f "$run/summary.json" ] && echo ' finished')"
done
cd /tmp && tar -czf "$dest/logs.tgz" logs
ls -la "$dest"
