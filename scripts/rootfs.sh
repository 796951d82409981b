#!/usr/bin/env bash
# Builds (once) and caches the debootstrapped Debian 12 root file system that the system
# test and the demo boot with systemd-nspawn. Prints the path of the rootfs on stdout.
# The tree is never modified after it is built: every container runs with --volatile=overlay.
set -euo pipefail
ROOTFS_CACHE=${ROOTFS_CACHE:-/var/cache/compute-tools}
# Bump the version when the package list changes so a stale cache is not reused.
VERSION=v3
ROOTFS="$ROOTFS_CACHE/rootfs-bookworm-$VERSION"
PACKAGES=systemd,systemd-sysv,dbus,postgresql-15,iproute2,postgresql-client-15,curl,ca-certificates
if [ -f "$ROOTFS/.complete" ]; then echo "$ROOTFS"; exit 0; fi
command -v debootstrap >/dev/null || { echo "rootfs: debootstrap is missing" >&2; exit 1; }
mkdir -p "$ROOTFS_CACHE"
tmp="$ROOTFS.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
echo "rootfs: debootstrapping bookworm into $ROOTFS (about 2 minutes, once)" >&2
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$tmp" >"$ROOTFS_CACHE/debootstrap.log" 2>&1 || {
  tail -20 "$ROOTFS_CACHE/debootstrap.log" >&2; exit 1; }
# polkitd (the system test runs compute-api as its own user, allowed its unit operations by
# our polkit rule) fails to configure inside debootstrap's base stage: installed afterwards,
# with rsyslog (compute-rsyslog.service, the log shipping test). The system's own rsyslog
# that the package enables is masked (and the syslog socket that would start it): the
# compute runs its own instance, and journald need not forward every line to another.
cp /etc/resolv.conf "$tmp/etc/resolv.conf"
chroot "$tmp" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends polkitd rsyslog && apt-get clean' \
  >>"$ROOTFS_CACHE/debootstrap.log" 2>&1 || { tail -20 "$ROOTFS_CACHE/debootstrap.log" >&2; exit 1; }
systemctl --root="$tmp" mask rsyslog.service syslog.socket >>"$ROOTFS_CACHE/debootstrap.log" 2>&1 || {
  tail -20 "$ROOTFS_CACHE/debootstrap.log" >&2; exit 1; }
rm -f "$tmp/etc/resolv.conf"
rm -rf "$tmp/var/lib/apt/lists/"*
echo compute-test >"$tmp/etc/hostname"
# Keep the journal in memory and quiet: the tests read it with journalctl.
mkdir -p "$tmp/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' >"$tmp/etc/systemd/journald.conf.d/volatile.conf"
touch "$tmp/.complete"
rm -rf "$ROOTFS"; mv "$tmp" "$ROOTFS"; trap - EXIT
echo "$ROOTFS"
