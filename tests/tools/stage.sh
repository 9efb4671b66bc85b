#!/usr/bin/env bash
# Usage: stage.sh NAME COMMAND...  Runs one stage of `make test`, prints how long it took and
# appends "NAME STATUS SECONDS" to build/stages.txt for the summary at the end.
set -u
name=$1; shift
mkdir -p build
printf '\n==== %s ====\n' "$name"
start=$(date +%s)
"$@"
rc=$?
seconds=$(( $(date +%s) - start ))
status=passed; [ "$rc" -eq 0 ] || status="FAILED(rc=$rc)"
printf '==== %s: %s in %ss ====\n' "$name" "$status" "$seconds"
echo "$name $status $seconds" >> build/stages.txt
exit "$rc"
