#!/usr/bin/env bash
# Regenerates the images and measured tables under docs/ (issue 26: one command), each with the command that the
# page holding it shows. Offline, on the bundled digits model; hours on a 2-core CPU, so parts can be chosen:
#
#   bash scripts/docs_images.sh                  # samples, neighbours, sampler tables and grids, Table 6
#   bash scripts/docs_images.sh --with-training  # also retrains the digits model for docs/digits_loss.png (~90 min)
#
# Writes into a scratch folder first and copies only what succeeded into docs/. Needs the [digits] extra.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# docs/digits_samples.png (Getting started, Training): the main job
ncsn-fast sample --steps 5 --quiet --out "$work/samples"
cp "$work/samples/samples.png" docs/digits_samples.png

# docs/neighbors_digits.png (Evaluation): nearest training digits of the new samples
ncsn-fast neighbors --samples "$work/samples/samples.pt" --k 10 --out "$work/neighbors.png"
cp "$work/neighbors.png" docs/neighbors_digits.png

# docs/samplers/ (Sampling): the mixture and digits tables, a grid per sampler at 25 evaluations, the chart
python scripts/sampler_table.py gmm
python scripts/sampler_table.py digits --n 100

# docs/table6_cpu_quick.{md,png} (Performance): paper Table 6 beside this machine
ncsn-fast bench table6 --device cpu --quick --quiet --out "$work/table6"
cp "$work/table6/table6.md" docs/table6_cpu_quick.md
cp "$work/table6/table6.png" docs/table6_cpu_quick.png

# docs/digits_loss.png (Training): the DSM loss of the bundled model's training run
if [[ "${1:-}" == "--with-training" ]]; then
    ncsn-fast train --config digits --workdir "$work/digits" --seed 0
    cp "$work/digits/loss.png" docs/digits_loss.png
fi
# docs/bf16_profile.md (Performance) is the output of scripts/profile_model.py with the arguments it names.
