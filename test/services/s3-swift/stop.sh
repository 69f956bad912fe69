#!/usr/bin/env bash
# Stops the daemons start.sh started from BASE_DIR, by their recorded PIDs only.
BASE=${1:-${TMPDIR:-/tmp}/s3-swift}
for f in "$BASE"/pids/*.pid; do
  [ -f "$f" ] || continue
  p=$(cat "$f")
  kill "$p" 2>/dev/null && echo "stopped $(basename "$f" .pid) ($p)"
  rm -f "$f"
done
