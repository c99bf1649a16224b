#!/usr/bin/env bash
# The priors' GPU recipe: pretraining runs side by side on one GPU machine with no network.
# Needs, in the repo root: .whl/ (pymatgen, gymnasium and the deps that machine lacks, as wheels)
# and .gpu/ (the shared CSVs). Writes DEST/<run>.pt (the EMA prior) and DEST/pretrain.log.
# Usage: scripts/pretrain_gpu.sh MINUTES DEST
set -euo pipefail
minutes=$1 dest=$2 runs=/tmp/runs
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/pkg "$runs" "$dest" && ln -sfn "$PWD" /tmp/pkg/latticegym
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
nvidia-cuda-mps-control -d 2>/dev/null && echo "MPS on" || echo "MPS off"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

run() {  # name data hidden layers lr [extra...]
  local name=$1 data=$2 hidden=$3 layers=$4 lr=$5; shift 5
  python3 -m latticegym.cli pretrain --data ".gpu/$data" --out "$runs/$name" --hidden "$hidden" --layers "$layers" \
    --lr "$lr" --device cuda --minutes "$minutes" --checkpoint-every 20 --epochs 100000 "$@" > "$runs/$name.log" 2>&1 &
}
run carbon_128x4 carbon_24_val.csv.gz 128 4 5e-4 --init carbon_24 --name carbon_24
run carbon_256x6 carbon_24_val.csv.gz 256 6 1e-3 --name carbon_24
run perov_128x4 perov_5_val.csv.gz 128 4 5e-4 --init perov_5 --name perov_5
run perov_256x6 perov_5_val.csv.gz 256 6 1e-3 --name perov_5
wait || true
for name in carbon_128x4 carbon_256x6 perov_128x4 perov_256x6; do
  echo "== $name" >> "$dest/pretrain.log"
  tr '\r' '\n' < "$runs/$name.log" | grep -v '^$' | grep -v 'pretrain:.*it/s\]$' | awk 'NR<=8 || /epoch\]|rror|Trace/' | tail -40 >> "$dest/pretrain.log"
  cp "$runs/$name/prior.pt" "$dest/$name.pt" 2>/dev/null || echo "no prior for $name" >> "$dest/pretrain.log"
done
cat "$dest/pretrain.log" | tail -60
