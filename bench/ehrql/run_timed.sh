#!/bin/sh
# One timed ehrQL run: ./run_timed.sh A|B N WORKDIR
#   A: dataset_definition.py on WORKDIR/ehrql-core.db (SNOMED CT codes only, ehrQL's core schema)
#   B: dataset_definition_by_system.py on WORKDIR/ehrql-by-system.db (codes matched by system)
# Writes WORKDIR/out/<V>_run<N>.csv and .log (wall time and peak memory from /usr/bin/time -v).
# Wrap it in `flock WORKDIR/../bench.lock` so no other benchmark runs at the same time.
set -e
here=$(cd "$(dirname "$0")" && pwd)
V=$1; N=$2; WORK=$3
case $V in
  A) DEF=$here/dataset_definition.py; DB=$WORK/ehrql-core.db ;;
  B) DEF=$here/dataset_definition_by_system.py; DB=$WORK/ehrql-by-system.db ;;
  *) echo "usage: $0 A|B N WORKDIR" >&2; exit 2 ;;
esac
mkdir -p "$WORK/out"
OUT=$WORK/out/${V}_run$N
{
  echo "start $(date -Is)"; echo "uptime before: $(uptime)"
  /usr/bin/time -v env PYTHONHASHSEED=0 "$WORK/venv/bin/ehrql" generate-dataset "$DEF" \
    --query-engine sqlite --dsn "sqlite:///$DB" --output "$OUT.csv"
  echo "rows (without header): $(($(wc -l < "$OUT.csv") - 1))"
} > "$OUT.log" 2>&1
grep -E "Elapsed|Maximum resident|rows" "$OUT.log"
