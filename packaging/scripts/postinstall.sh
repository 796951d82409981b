#!/bin/sh
# postinst of compute-tools: safe with or without a running systemd.
set -e
if [ "$1" = "configure" ] || [ "$1" = "1" ] || [ "$1" = "2" ]; then
  getent group postgres >/dev/null || { echo "compute-tools: the postgres group is missing (postgresql-common creates it)" >&2; exit 1; }
  install -d -m 0750 -o root -g postgres /etc/compute
  if [ -d /run/systemd/system ]; then
    systemd-tmpfiles --create compute-tools.conf || true
    systemctl daemon-reload || true
  else
    install -d -m 2770 -o root -g postgres /run/compute 2>/dev/null || true
    install -d -m 0750 -o postgres -g postgres /var/db/postgres
  fi
fi
exit 0
