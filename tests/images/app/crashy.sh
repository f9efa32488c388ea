#!/bin/sh
# crashy: says hello, then dies with a non-zero status about a second later,
# for restart-policy and exit-code tests.
# shellcheck source=lib.sh
. /app/lib.sh

code="${CRASHY_EXIT_CODE:-3}"
echo "crashy: starting"
sleep "${CRASHY_DELAY:-1}"
echo "crashy: exiting with $code"
exit "$code"
