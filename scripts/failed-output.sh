#!/usr/bin/env bash
# Prints the whole output (its last 400 lines) of every top-level test that
# failed in a `go test -v` log. The test targets show only the lines of the
# log that name a test file; a failing test's multi-line output (the
# consumer's log tail, a diff) would otherwise be visible in .cache/*.log
# only, which a CI run does not keep.
set -euo pipefail
log=${1:?usage: failed-output.sh LOG}
for name in $(grep -oE '^--- FAIL: [A-Za-z0-9_]+' "$log" | awk '{print $3}' | sort -u); do
	echo "===== output of $name (from $log) ====="
	awk -v n="$name" '
		$0 == "=== RUN   " n { on = 1 }
		on { print }
		on && index($0, "--- FAIL: " n " ") == 1 { on = 0 }
	' "$log" | tail -n 400
done
