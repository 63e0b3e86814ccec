#!/usr/bin/env bash
# Runs every fuzz target of caddy-atlas, one after the other, for FUZZTIME
# each (default 2m; any -fuzztime value, such as 30s or 10000x), and
# prints executions and findings per target.
#
#   scripts/fuzz.sh                      every target of every package
#   scripts/fuzz.sh ./atlasclient        the targets of some packages
#   FUZZTIME=30s FUZZ_TARGETS='Callback' scripts/fuzz.sh
#
# Environment:
#   FUZZTIME       time (or count) per target; default 2m
#   FUZZ_TARGETS   a regular expression the target names must match
#   FUZZ_PARALLEL  fuzzing workers per target (go test -parallel);
#                  default GOMAXPROCS
#   FUZZ_REPORT    the report file; default $TMPDIR/caddy-atlas-fuzz-report.md
#
# A crasher is written by go test to the package's testdata/fuzz/<Target>/,
# where it becomes a seed that `go test` runs from then on; this script
# copies each new one into the report. It exits non-zero when any target
# fails.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime=${FUZZTIME:-2m}
filter=${FUZZ_TARGETS:-.}
report=${FUZZ_REPORT:-${TMPDIR:-/tmp}/caddy-atlas-fuzz-report.md}
parallel=()
if [ -n "${FUZZ_PARALLEL:-}" ]; then
	parallel=(-parallel "$FUZZ_PARALLEL")
fi
if [ $# -eq 0 ]; then
	set -- ./...
fi

# The go test timeout: the fuzz time plus ten minutes for building and the
# seed corpus; none for an execution count.
timeout=0
case $fuzztime in
*h) timeout=$(( ${fuzztime%h} * 3600 + 600 ))s ;;
*m) timeout=$(( ${fuzztime%m} * 60 + 600 ))s ;;
*s) timeout=$(( ${fuzztime%s} + 600 ))s ;;
esac

# Discover the targets: `go test -list` prints a package's matching
# tests, then "ok <package>".
if ! listing=$(go test -list '^Fuzz' "$@" 2>&1); then
	echo "$listing" >&2
	echo "listing the fuzz targets failed" >&2
	exit 1
fi
targets=()
names=()
while IFS= read -r line; do
	case $line in
	Fuzz*) names+=("$line") ;;
	ok*)
		pkg=$(awk '{print $2}' <<<"$line")
		for n in "${names[@]}"; do
			if [[ $n =~ $filter ]]; then
				targets+=("$pkg $n")
			fi
		done
		names=()
		;;
	esac
done <<<"$listing"
if [ ${#targets[@]} -eq 0 ]; then
	echo "no fuzz targets match $filter" >&2
	exit 1
fi

module=$(go list -m)
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
{
	echo "# Fuzzing report, $(date -u +%Y-%m-%dT%H:%MZ), FUZZTIME=$fuzztime, $(go version | awk '{print $3}')"
	echo
	echo "| target | package | time | execs | new interesting | result |"
	echo "|---|---|---|---|---|---|"
} >"$report"

failed=0
crashers=()
for t in "${targets[@]}"; do
	pkg=${t% *}
	name=${t#* }
	dir=$(go list -f '{{.Dir}}' "$pkg")
	corpus=$dir/testdata/fuzz/$name
	before=$(ls "$corpus" 2>/dev/null | sort || true)
	out=$log/$name.log

	echo "== $name ($pkg), $fuzztime"
	start=$(date +%s)
	status=ok
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -timeout "$timeout" "${parallel[@]}" "$pkg" >"$out" 2>&1; then
		status=FAIL
		failed=1
	fi
	took=$(( $(date +%s) - start ))s

	# The last progress line, e.g. "fuzz: elapsed: 30s, execs: 123456
	# (4115/sec), new interesting: 3 (total: 40)".
	last=$(grep 'execs:' "$out" | tail -n 1 || true)
	execs=$(sed -n 's/.*execs: \([0-9]*\).*/\1/p' <<<"$last")
	interesting=$(sed -n 's/.*new interesting: \([0-9]*\).*/\1/p' <<<"$last")
	echo "   $status in $took: ${execs:-?} execs, ${interesting:-?} new interesting"

	new=$(comm -13 <(echo "$before") <(ls "$corpus" 2>/dev/null | sort || true) | sed '/^$/d')
	findings=0
	for f in $new; do
		findings=$((findings + 1))
		crashers+=("$corpus/$f")
	done
	result=$status
	if [ "$findings" -gt 0 ]; then
		result="$status, $findings crasher(s)"
	fi
	echo "| $name | .${pkg#"$module"} | $took | ${execs:-?} | ${interesting:-?} | $result |" >>"$report"
	if [ "$status" = FAIL ]; then
		{
			echo
			echo "### $name failed"
			echo
			echo '```'
			grep -v '^fuzz: elapsed' "$out" | tail -n 60
			echo '```'
		} >>"$report.failures"
		grep -v '^fuzz: elapsed' "$out" | tail -n 30 | sed 's/^/   | /'
	fi
done

if [ -f "$report.failures" ]; then
	cat "$report.failures" >>"$report"
	rm -f "$report.failures"
fi
for c in "${crashers[@]}"; do
	{
		echo
		echo "### crasher ${c#"$PWD"/}"
		echo
		echo '```'
		head -c 4096 "$c"
		echo
		echo '```'
	} >>"$report"
done

echo
cat "$report"
echo
echo "report: $report"
if [ ${#crashers[@]} -gt 0 ]; then
	echo "new crashers (now seeds of go test; commit them with the fix):"
	printf '  %s\n' "${crashers[@]#"$PWD"/}"
fi
exit $failed
