#!/usr/bin/env bash
# Run every benchmark in turn (about 25 minutes on 2 cores, 12 of them the soak); each prints
# a table and writes bench/results/NAME.json, and this script keeps what each printed in
# bench/results/NAME.txt.
# Needs root (network namespaces, TUN) and the Debian packages prometheus-blackbox-exporter
# and wrk. Run nothing else heavy meanwhile: the figures are CPU time and latency.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p results
PY="${PYTHON:-python3}"
run() { local name=$1; shift; echo "== $name: $*"; "$PY" "$@" | tee "results/$name.txt"; }
run continuous-1000   continuous.py --targets 1000  --interval 1 --seconds 20
run continuous-4000   continuous.py --targets 4000  --interval 1 --seconds 20
run continuous-10000  continuous.py --targets 10000 --interval 1 --seconds 20
run continuous-2000-scraped  continuous.py --targets 2000  --interval 1 --seconds 20 --scrape-every 1
run continuous-10000-10s-scraped continuous.py --targets 10000 --interval 10 --seconds 30 --scrape-every 1
run scrape-1000   scrape.py --targets 1000 --scrapes 20
run scrape-10000  scrape.py --targets 10000 --scrapes 20
run status-page-10000 status_page.py --targets 10000 --requests 50
run probe-throughput probe_throughput.py --rounds 3 --seconds 10 --connections 32
run accuracy accuracy.py
run worker-restart-10000 worker_restart.py --targets 10000
run reload-50000 reload.py --targets 50000
run resolver resolver.py --lookups 3000 --rounds 5
run icmp-1000 icmp.py --targets 1000 --silent 50 --interval 1 --seconds 20
run icmp-1000-packets5 icmp.py --targets 1000 --silent 50 --interval 1 --seconds 20 --packets 5
run worker-restart-10000 worker_restart.py --targets 10000 --interval 1
run soak-10000 soak.py --targets 10000 --minutes 10
