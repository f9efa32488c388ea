#!/bin/sh
# cpu: passes health checks (same /www as v1) while one shell loop burns a
# whole core, for CPU limit / metrics tests.
# shellcheck source=lib.sh
. /app/lib.sh

echo "$NAME: starting"
start_httpd
echo "$NAME: burning cpu"
# The shell checks for pending traps between commands, so SIGTERM still
# ends this loop promptly.
while :; do :; done
