#!/bin/sh
# prerm of compute-tools: stop the compute if systemd runs; keep PGDATA and /etc/compute.
set -e
if [ -d /run/systemd/system ]; then
  systemctl stop compute.target compute-api.service compute-init.service compute-postgres.service compute-configure.service compute-lsn-lease.service compute-monitor.timer compute-monitor.service compute-vm-monitor.service >/dev/null 2>&1 || true
fi
exit 0
