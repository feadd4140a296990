#!/usr/bin/env bash
# The HTTP benchmark: installs nginx and wrk from Debian's packages (the
# references), builds release binaries, runs a local cluster of real
# processes and prints one table. BENCH_SECS sets each wrk run's length.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx wrk >/dev/null
fi
cargo build --release -q -p stretchfs --bins
sleep 1 # the binaries sometimes appear a moment after cargo exits here
PATH="/usr/sbin:$PATH" exec target/release/stretchfs-bench
