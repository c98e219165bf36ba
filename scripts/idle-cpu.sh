#!/bin/bash
# CPU of running processes over a window, from /proc/PID/stat (utime + stime), in % of one core,
# with their resident memory. Used for the idle-store figures in docs/perf.md
# ("Hibernating regions").
#
#   scripts/idle-cpu.sh SECONDS PID...
set -euo pipefail
secs=${1:?usage: idle-cpu.sh SECONDS PID...}
shift
hz=$(getconf CLK_TCK)
declare -A before
for pid in "$@"; do before[$pid]=$(awk '{print $14 + $15}' "/proc/$pid/stat"); done
sleep "$secs"
for pid in "$@"; do
  after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  name=$(tr '\0' ' ' < "/proc/$pid/cmdline" | awk '{print $2, $4}')
  cpu=$(echo "scale=2; 100 * ($after - ${before[$pid]}) / $hz / $secs" | bc)
  echo "$pid $name cpu=${cpu}% rss=${rss}kB"
done
