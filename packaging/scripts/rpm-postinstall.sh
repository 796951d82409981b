#!/bin/sh
# %post of the compute-tools .rpm (RHEL family): safe with or without a running systemd.
# $1 is 1 on install, 2 on upgrade. postgresql15-server (PGDG) creates the user and group
# postgres; should they be missing, they are created here as that package does.
set -e
if [ "$1" = "1" ] || [ "$1" = "2" ]; then
  getent group postgres >/dev/null || groupadd -r postgres
  getent passwd postgres >/dev/null ||
    useradd -r -g postgres -d /var/lib/pgsql -s /bin/bash -c "PostgreSQL Server" postgres
  # compute-api's own user (in group postgres): /usr/lib/sysusers.d/compute-tools.conf.
  if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers compute-tools.conf
  elif ! getent passwd compute-api >/dev/null; then
    useradd -r -M -d / -s /sbin/nologin -g postgres -c "compute-tools HTTP API" compute-api
  fi
  id -nG compute-api | tr ' ' '\n' | grep -qx postgres || usermod -a -G postgres compute-api
  # The vm-monitor's own user (same file; its unit's Group= is postgres).
  getent passwd compute-vm-monitor >/dev/null ||
    useradd -r -M -U -d / -s /sbin/nologin -c "compute-tools vm-monitor" compute-vm-monitor
  # The bus read our policy file when rpm installed it, before the user existed: a rule for
  # an unknown user is dropped, so have it read the file again.
  if [ -S /run/dbus/system_bus_socket ]; then
    dbus-send --system --type=method_call --dest=org.freedesktop.DBus / org.freedesktop.DBus.ReloadConfig >/dev/null 2>&1 || true
  fi
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
