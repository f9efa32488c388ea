# berth-agent %preun (rpm). $1: 0 = erase, 1 = upgrade.
# On erase, stop and disable the agent. Upgrades leave it running (%post of
# the new package restarted it). Its Docker containers keep running.
if [ "$1" -eq 0 ]; then
	systemctl --no-reload disable --now berth-agent.service >/dev/null 2>&1 || :
fi
exit 0
