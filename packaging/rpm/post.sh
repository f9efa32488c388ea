# berth-agent %post (rpm). $1: 1 = install, 2 = upgrade.
# Same behaviour as the Debian postinst: create the agent's directories,
# enable the unit on install, and start it (install) or restart it (upgrade)
# when `berth-agent check-config` passes. Without TLS material the unit is
# enabled but left stopped, and this says what to do.
UNIT=berth-agent.service
for spec in /etc/berth:0755 /etc/berth/env:0700 /etc/berth/tls:0700 /var/lib/berth:0700; do
	dir=${spec%:*}
	[ -d "$dir" ] || install -d -m "${spec#*:}" "$dir"
done
if [ "$1" -eq 1 ]; then
	# Works without a running systemd too (creates the wants symlink).
	systemctl --no-reload enable "$UNIT" >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if ! systemctl --quiet is-enabled "$UNIT" 2>/dev/null; then
		: # an admin disabled it: leave it alone
	elif problem=$(/usr/bin/berth-agent check-config 2>&1); then
		if [ "$1" -eq 1 ]; then action=start; else action=restart; fi
		systemctl "$action" "$UNIT" >/dev/null 2>&1 || :
	else
		echo "berth-agent: enabled, but not started: ${problem#berth-agent: }"
		echo "berth-agent: put ca.pem, agent.pem and agent-key.pem in /etc/berth/tls"
		echo "berth-agent: (see /usr/share/doc/berth-agent/README.packaging.md), then:"
		echo "berth-agent:   systemctl start berth-agent"
	fi
fi
exit 0
