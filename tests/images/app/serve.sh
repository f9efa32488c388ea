#!/bin/sh
# v1 / v2 / bad: an HTTP server on :8000 (which paths answer is decided by the
# files in /www, see build-image.sh).
# shellcheck source=lib.sh
. /app/lib.sh

echo "$NAME: starting"
start_httpd
wait "$httpd_pid" # set by start_httpd
rc=$?
# Only reached if httpd died by itself (e.g. the port was taken).
echo "$NAME: httpd exited with status $rc"
exit 1
