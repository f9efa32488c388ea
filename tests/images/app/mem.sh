#!/bin/sh
# mem: passes health checks, then grows its own memory (PID 1) until the
# memory limit OOM-kills it. PID 1 must be the biggest process: the OOM killer
# picks the largest one, and only PID 1 dying ends the container
# (State.OOMKilled=true).
# shellcheck source=lib.sh
. /app/lib.sh

max_mb="${MEM_MAX_MB:-512}"   # safety cap when run with no memory limit
step_delay="${MEM_STEP_DELAY:-0.2}"

echo "$NAME: starting"
start_httpd
# A 1 MiB string of 'x' (a shell variable cannot hold NUL bytes), then keep
# doubling it. ash stores variables in malloc'd memory that it really writes,
# so RSS follows the string size (briefly ~3x while doubling).
s=$(head -c 1048576 /dev/zero | tr '\0' x)
mb=1
echo "$NAME: holding $mb MB"
while [ "$mb" -lt "$max_mb" ]; do
	sleep "$step_delay"
	s="$s$s"
	mb=$((mb * 2))
	echo "$NAME: holding $mb MB"
done
echo "$NAME: reached MEM_MAX_MB=$max_mb without being killed; holding"
sleep_forever
