#!/usr/bin/env bash
# Draws bench/benchmarks.png (latency percentiles and throughput, polymesh vs
# Gearman) from the raw lines of bench/compare-gearman.sh.
#
#   bench/chart.sh [GEARMAN_RESULTS] [OUT_PNG]
#
# Needs gnuplot (Debian: gnuplot-nox).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
IN=${1:-/tmp/polymesh-gearman-results.txt}
OUT=${2:-$HERE/benchmarks.png}
command -v gnuplot >/dev/null || { echo "gnuplot is missing: apt-get install -y gnuplot-nox" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
val() { # SYSTEM BENCH KEY
  local l
  l=$(grep "^system=$1 bench=$2 " "$IN" | head -1 || true)
  printf '%s\n' "$l" | tr ' ' '\n' | sed -n "s/^$3=//p" | head -1
}
{
  echo "figure polymesh gearman-sqlite gearman-memory"
  for k in dispatch_from_send e2e; do
    for p in p50 p90 p99; do
      name=$([ $k = e2e ] && echo "submit-done" || echo "dispatch")
      echo "$name-$p $(val polymesh latency ${k}_${p}_us) $(val gearman-sqlite gearman-latency ${k}_${p}_us) $(val gearman-memory gearman-latency ${k}_${p}_us)"
    done
  done
} >"$TMP/lat.dat"
{
  echo "figure polymesh polymesh-batch-100 gearman-sqlite gearman-memory"
  for b in submit e2e; do
    echo "$b $(val polymesh $b runs_per_s) $(val polymesh-batch $b runs_per_s) $(val gearman-sqlite gearman-$b runs_per_s) $(val gearman-memory gearman-$b runs_per_s)"
  done
  # batch submits and one agent x 8 slots over POST /v1/agents/{id}/report
  echo "e2e-report 0 $(val polymesh-report e2e runs_per_s) $(val gearman-sqlite gearman-e2e runs_per_s) $(val gearman-memory gearman-e2e runs_per_s)"
} >"$TMP/thr.dat"
gnuplot <<GP
set terminal pngcairo size 1200,520 font ",10"
set output "$OUT"
set multiplot layout 1,2 title "polymesh vs Gearman ($(nproc) cores, loopback)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key top left
set grid ytics
set xtics rotate by -30
set title "Latency from submit sent: to worker holding it, to done (idle worker; lower is better)"
set ylabel "microseconds (log scale)"
set logscale y
plot "$TMP/lat.dat" using 2:xtic(1) title columnheader(2) lc rgb "#9400d3", '' using 3 title columnheader(3) lc rgb "#009e73", '' using 4 title columnheader(4) lc rgb "#56b4e9"
unset logscale y
set title "Throughput, 20,000 runs, 4 clients, durable polymesh (higher is better)"
set ylabel "runs per second"
set xtics norotate
set key top right
set offsets 0, 0, graph 0.25, 0
plot "$TMP/thr.dat" using 2:xtic(1) title columnheader(2) lc rgb "#9400d3", '' using 3 title columnheader(3) lc rgb "#e69f00", '' using 4 title columnheader(4) lc rgb "#009e73", '' using 5 title columnheader(5) lc rgb "#56b4e9"
unset multiplot
GP
echo "wrote $OUT"
