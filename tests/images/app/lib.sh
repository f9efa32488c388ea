# Shared helpers for the berth test images; sourced by the /app/*.sh entrypoints.
# Runs under busybox sh (ash), so keep it POSIX.

NAME="${BERTH_TEST_VARIANT:-app}"
PORT="${PORT:-8000}"
httpd_pid=

# The entrypoint is PID 1 in its container, and the kernel gives PID 1 no
# default signal actions: an untrapped SIGTERM is simply ignored, so
# `docker stop` would sit out its whole timeout and then SIGKILL. Trap it.
on_signal() {
	echo "$NAME: received $1, exiting"
	if [ -n "$httpd_pid" ]; then kill "$httpd_pid" 2>/dev/null; fi
	exit 0
}
trap 'on_signal SIGTERM' TERM
trap 'on_signal SIGINT' INT

# Serve /www in the background; the caller keeps PID 1 (and the traps).
# Plain files only: busybox httpd returns 200 for a file, 404 for a missing one.
start_httpd() {
	httpd -f -p "$PORT" -h /www &
	httpd_pid=$!
	echo "$NAME: serving /www on :$PORT (pid $httpd_pid)"
}

# Block until a signal arrives. `wait` on a background sleep (not a foreground
# one) so a trapped signal interrupts it at once.
sleep_forever() {
	while :; do
		sleep 3600 &
		wait $!
	done
}
