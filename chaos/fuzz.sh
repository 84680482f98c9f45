#!/usr/bin/env bash
# Runs every fuzz target of the repository for a fixed budget of executions
# (FUZZ_EXECS, default 1000000) and prints one line per target: package,
# target, executions, result. Exits 1 if any target crashed.
#
#   bash chaos/fuzz.sh                 # 10^6 executions each
#   FUZZ_EXECS=100000 bash chaos/fuzz.sh
set -uo pipefail
cd "$(dirname "$0")/.."
execs="${FUZZ_EXECS:-1000000}"
status=0
while IFS=: read -r file _ line; do
	name="$(sed -E 's/^func (Fuzz[A-Za-z0-9_]+).*/\1/' <<<"$line")"
	pkg="$(dirname "$file")"
	log="$(mktemp)"
	start=$(date +%s)
	if go test -run '^$' -fuzz "^${name}\$" -fuzztime "${execs}x" "$pkg" >"$log" 2>&1; then
		result=ok
	else
		result=FAILED
		status=1
	fi
	# The last progress line gives the executions ("execs: N (…/sec)").
	done_execs="$(grep -oE 'execs: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')"
	printf '%s\t%s\t%s execs\t%ss\t%s\n' "$pkg" "$name" "${done_execs:-?}" "$(($(date +%s) - start))" "$result"
	if [[ $result != ok ]]; then tail -30 "$log"; fi
	rm -f "$log"
done < <(grep -rn --include='*_test.go' '^func Fuzz' . | sort)
exit "$status"
