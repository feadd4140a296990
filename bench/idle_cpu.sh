#!/usr/bin/env bash
# Idle CPU of a dev cluster (six nodes in one process): empty, then after
# two 256 MiB uploads, each measured over SECS seconds once the uploads are
# done. Scrub is what runs on an idle cluster; this shows its pacing.
#
#   bash bench/idle_cpu.sh          # SECS=60 by default
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-60}
cargo build --release -q -p stretchfs
bin=$PWD/target/release/stretchfs
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
cd "$dir"
"$bin" dev > dev.log 2>&1 &
pid=$!
for _ in $(seq 100); do
    grep -q "API key" dev.log 2>/dev/null && break
    sleep 0.2
done
sleep 5
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
measure() {
    local a b
    a=$(cpu)
    sleep "$SECS"
    b=$(cpu)
    awk -v d=$((b - a)) -v t="$tick" -v s="$SECS" 'BEGIN { printf "%.2f", 100 * d / t / s }'
}
empty=$(measure)
for i in 1 2; do
    head -c $((256 << 20)) /dev/urandom > "big$i"
    "$bin" upload "big$i" --ext bin > "upload$i.txt"
done
sleep 2
full=$(measure)
echo "| dev cluster, idle | CPU (% of one core, over $SECS s) |"
echo "|---|---|"
echo "| empty | $empty |"
echo "| after two 256 MiB uploads | $full |"
