#!/bin/sh
# postinst of compute-tools: safe with or without a running systemd.
set -e
if [ "$1" = "configure" ] || [ "$1" = "1" ] || [ "$1" = "2" ]; then
  getent group postgres >/dev/null || { echo "compute-tools: the postgres group is missing (postgresql-common creates it)" >&2; exit 1; }
  # compute-api's own user (in group postgres): /usr/lib/sysusers.d/compute-tools.conf.
  if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers compute-tools.conf
  elif ! getent passwd compute-api >/dev/null; then
    adduser --system --no-create-home --home / --shell /usr/sbin/nologin --ingroup postgres compute-api
  fi
  id -nG compute-api | tr ' ' '\n' | grep -qx postgres || usermod -a -G postgres compute-api
  # The vm-monitor's own user (same file; its unit's Group= is postgres).
  if ! getent passwd compute-vm-monitor >/dev/null; then
    adduser --system --no-create-home --home / --shell /usr/sbin/nologin --group compute-vm-monitor
  fi
  # The bus read our policy file when dpkg unpacked it, before the user existed: a rule for an
  # unknown user is dropped, so have it read the file again.
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
