#!/usr/bin/env bash
# Mutation testing of core with cargo-mutants (not in CI: on 2 cores about
# 12 s a mutant for the first pass, 30 s for each that times out, and about a
# minute and a half for each the second pass judges). Each mutant of core/src
# is judged by core's unit tests and the cross-crate tests (named scenarios,
# oracle self-tests and a swarm of 200 + 50 seeds, in stretchfs-tests).
#
#   bash bench/mutants.sh                      # the files the simulator must guard
#   bash bench/mutants.sh core/src/repair.rs   # chosen files
#   LIST=1 bash bench/mutants.sh               # only count the mutants
#   REST=1 SHARD=0/8 bash bench/mutants.sh     # every eighth mutant of the rest of core
#   FIRST_ONLY=1 JOBS=2 ...                    # only core's unit tests, two at a time
#
# Results land in mutants.out/ (caught.txt, missed.txt, timeout.txt,
# unviable.txt); the summary line is what the README quotes.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-mutants >/dev/null 2>&1; then
    echo "installing cargo-mutants from crates.io (a few minutes, once)"
    cargo install cargo-mutants --locked
fi

guarded=(core/src/vote_tally.rs core/src/ping_net.rs core/src/placement.rs
    core/src/repair.rs core/src/purchase.rs core/src/replica.rs
    core/src/feed.rs core/src/feed_server.rs core/src/restore.rs)
files=("$@")
args=()
if [ -n "${REST:-}" ]; then
    # The rest of core: every file but the nine guarded ones.
    for f in "${guarded[@]}"; do
        args+=(--exclude "$f")
    done
else
    [ ${#files[@]} -eq 0 ] && files=("${guarded[@]}")
    for f in "${files[@]}"; do
        args+=(--file "$f")
    done
fi
# A sample: round-robin takes every n-th mutant, so each file is represented.
shard=()
if [ -n "${SHARD:-}" ]; then
    shard=(--shard "$SHARD" --sharding round-robin)
fi

if [ -n "${LIST:-}" ]; then
    cargo mutants --package stretchfs-core "${args[@]}" "${shard[@]}" --list | awk -F: '{print $1}' | sort | uniq -c
    exit 0
fi

# Two passes: core's unit tests judge every mutant (seconds each); the
# mutants they miss are judged again by the cross-crate tests (scenarios,
# oracle self-tests, the swarm), skipping what the first pass caught.
# One job: two cores, and each build already uses both.
common=(--package stretchfs-core "${args[@]}" --jobs "${JOBS:-1}" --no-shuffle)
# cargo-mutants exits 2 when mutants were missed and 3 when some timed out:
# results, not failures. Anything else (a tree that does not build or pass
# unmutated, a usage error) stops the script.
mutants() {
    local rc=0
    cargo mutants "$@" || rc=$?
    case $rc in 0 | 2 | 3) ;; *) echo "cargo mutants failed ($rc)" >&2; exit "$rc" ;; esac
}
if [ -z "${SECOND_ONLY:-}" ]; then
    # The unmutated unit tests take about 4 s: 30 s is a livelock.
    mutants "${common[@]}" "${shard[@]}" --test-package stretchfs-core --timeout 30
    rm -rf mutants.unit && cp -r mutants.out mutants.unit
fi
[ -n "${FIRST_ONLY:-}" ] && exit 0
second=(--iterate)
if [ -n "${SHARD:-}" ]; then
    # A shard of what is left is another sample: name the ones missed.
    second=()
    while IFS= read -r name; do
        second+=(--re "^$(printf '%s' "$name" | sed 's/[][\\.*^$()+?{}|]/\\&/g')\$")
    done <mutants.unit/missed.txt
    [ ${#second[@]} -eq 0 ] && second=(--re '^$')
fi
mutants "${common[@]}" --baseline skip "${second[@]}" \
    --test-package stretchfs-core --test-package stretchfs-tests --timeout 600
count() { cat "$@" 2>/dev/null | sort -u | wc -l; }
echo "by core's unit tests: $(count mutants.unit/caught.txt) caught"
echo "then by the cross-crate tests: $(count mutants.out/caught.txt) caught"
echo "missed: $(count mutants.out/missed.txt), timed out: $(count mutants.out/timeout.txt), unviable: $(count mutants.unit/unviable.txt)"
echo "missed mutants are in mutants.out/missed.txt"
