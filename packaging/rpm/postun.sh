# berth-agent %postun (rpm). $1: 0 = erase, 1 = upgrade.
# rpm has no purge: erasing keeps /var/lib/berth (desired state) and
# /etc/berth (env files, TLS; a changed agent.toml is saved as
# agent.toml.rpmsave). Delete them by hand to forget the host's services:
#   rm -rf /var/lib/berth /etc/berth
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
