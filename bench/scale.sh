#!/usr/bin/env bash
# The scale benchmark (not in CI): a cluster of real processes loaded with
# SCALE_N objects (cumulative sizes, default 10000,100000; add 1000000 for the
# million, about half an hour of uploads), SCALE_PURCHASES=1 to buy each one
# too. Prints one table: RSS per role and bytes per object, upload rate at
# each size against the first, restart to ready per role, a fresh prism.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p stretchfs --bins
exec target/release/stretchfs-scale
