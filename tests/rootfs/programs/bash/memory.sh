# Keeps 1 GiB in memory (tail buffers the last N bytes of a pipe), far above the run's limit.
# (Growing a bash variable that far is CPU-bound: bash rescans every expanded byte.)
head -c 1073741824 /dev/zero | tail -c 1073741824 | wc -c
