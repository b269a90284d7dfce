#!/usr/bin/env bash
# Train the shipped model xmodal-tiny-shapes from scratch on freshly generated synthetic shapes and
# export it into the package (src/xmodal/shipped/xmodal-tiny-shapes). 80 % of the captions are replaced by
# partial descriptions ("a red circle") from the images' shapes annotations. CPU only; see BENCHMARKS.md
# for the wall time on 2 cores and the test recall. Usage: bash scripts/train_tiny_shapes.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-runs/tiny-shapes}"
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -m xmodal datasets synth-shapes --out "$WORK/data" --n 24000 --seed 12345 --quiet
"$PYTHON" -m xmodal train "karpathy:$WORK/data/dataset_synth_shapes.json" --out "$WORK/run" --restart \
  --epochs 14 --batch-size 128 --seed 0 --threads 2 --attribute-captions 0.8 --quiet \
  --name xmodal-tiny-shapes --export src/xmodal/shipped/xmodal-tiny-shapes
