#!/usr/bin/env bash
# rpm-check: checks the built .rpm (dist/compute-tools-*.rpm, from `make package`) without
# installing it: its dependencies, files, modes, config and doc files, scriptlets and the
# contents of the files that differ from the .deb's (RHEL-family paths), then rpmlint.
# Needs rpm (rpm2cpio), cpio and rpmlint (Debian packages). scripts/test.sh runs it.
#
# nfpm writes the payload's member names as absolute paths (/usr/bin/...; rpmbuild writes
# ./usr/bin/...): a plain `rpm2cpio | cpio -i` would write into the real /. Here cpio runs
# with --no-absolute-filenames, and rpmlint (which unpacks with plain cpio) runs as the
# unprivileged user nobody, whose unpacking of absolute paths fails harmlessly.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO"
shopt -s nullglob
rpms=(dist/compute-tools-*.rpm)
[ ${#rpms[@]} = 1 ] || die "rpm-check: want one dist/compute-tools-*.rpm, found ${#rpms[@]} (run make package)"
rpm=${rpms[0]}
fails=0
bad() { printf 'rpm-check: %s\n' "$*" >&2; fails=$((fails + 1)); }
q() { rpm -qp --nosignature "$@" "$rpm" 2>/dev/null; }

# Dependencies: the RHEL family's names, none of Debian's.
want_requires=$'dbus\npostgresql15-server\nshadow-utils\nsystemd'
got_requires=$(q --requires | grep -v '^rpmlib(' | sort -u)
[ "$got_requires" = "$want_requires" ] || bad "requires: got [$got_requires], want [$want_requires]"

# Files with their modes; the one config file; docs and licence.
want_files='-rw-r--r-- /etc/sysconfig/compute-tools
-rwxr-xr-x /usr/bin/compute-api
-rwxr-xr-x /usr/bin/compute-init
-rwxr-xr-x /usr/bin/compute-monitor
-rwxr-xr-x /usr/lib/systemd/system-generators/compute-tools-generator
-rw-r--r-- /usr/lib/systemd/system/compute-api.service
-rw-r--r-- /usr/lib/systemd/system/compute-configure.service
-rw-r--r-- /usr/lib/systemd/system/compute-disk-quota@.service
-rw-r--r-- /usr/lib/systemd/system/compute-init.service
-rw-r--r-- /usr/lib/systemd/system/compute-lsn-lease.service
-rw-r--r-- /usr/lib/systemd/system/compute-monitor.service
-rw-r--r-- /usr/lib/systemd/system/compute-monitor.timer
-rw-r--r-- /usr/lib/systemd/system/compute-postgres.service
-rw-r--r-- /usr/lib/systemd/system/compute-resize-swap@.service
-rw-r--r-- /usr/lib/systemd/system/compute-rsyslog.service
-rw-r--r-- /usr/lib/systemd/system/compute-vm-monitor.service
-rw-r--r-- /usr/lib/systemd/system/compute.target
-rw-r--r-- /usr/lib/sysusers.d/compute-tools.conf
-rw-r--r-- /usr/lib/tmpfiles.d/compute-tools.conf
-rw-r--r-- /usr/share/dbus-1/system.d/org.computetools.Compute1.conf
-rw-r--r-- /usr/share/doc/compute-tools/README.md
-rw-r--r-- /usr/share/licenses/compute-tools/copyright
-rw-r--r-- /usr/share/man/man8/compute-api.8.gz
-rw-r--r-- /usr/share/man/man8/compute-init.8.gz
-rw-r--r-- /usr/share/man/man8/compute-monitor.8.gz
-rw-r--r-- /usr/share/polkit-1/rules.d/50-compute-tools.rules'
got_files=$(q --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' | grep -v '^d' | sort -k2)
[ "$got_files" = "$want_files" ] || bad "files differ:
$(diff <(echo "$want_files") <(echo "$got_files") || true)"
[ "$(q --configfiles)" = /etc/sysconfig/compute-tools ] || bad "config files: $(q --configfiles | tr '\n' ' ')"
[ "$(q --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' | grep ' /etc/sysconfig/compute-tools$' | cut -d' ' -f1)" = cn ] ||
  bad "/etc/sysconfig/compute-tools is not %config(noreplace)"
[ "$(q --docfiles | sort | tr '\n' ' ')" = "/usr/share/doc/compute-tools/README.md /usr/share/man/man8/compute-api.8.gz /usr/share/man/man8/compute-init.8.gz /usr/share/man/man8/compute-monitor.8.gz " ] ||
  bad "doc files: $(q --docfiles | tr '\n' ' ')"
[ "$(q --licensefiles)" = /usr/share/licenses/compute-tools/copyright ] || bad "licence files: $(q --licensefiles)"

# Scriptlets: %post creates the postgres user and group if missing (no Debian-only
# postgresql-common demand), compute-api and compute-vm-monitor through sysusers (useradd
# where there is none); %preun stops the compute.
post=$(q --qf '%{POSTIN}')
for want in 'getent group postgres >/dev/null || groupadd -r postgres' 'useradd -r -g postgres -d /var/lib/pgsql' \
  'systemd-sysusers compute-tools.conf' 'install -d -m 0750 -o root -g postgres /etc/compute' \
  'useradd -r -M -U -d / -s /sbin/nologin -c "compute-tools vm-monitor" compute-vm-monitor'; do
  grep -qF -- "$want" <<<"$post" || bad "%post lacks: $want"
done
! grep -qE 'postgresql-common|adduser|exit 1' <<<"$post" || bad "%post has a Debian-only step or fails the install"
sh -n <<<"$post" || bad "%post: syntax error"
grep -qF 'systemctl stop compute.target' <<<"$(q --qf '%{PREUN}')" || bad "%preun does not stop the compute"
grep -qF 'systemctl daemon-reload' <<<"$(q --qf '%{POSTUN}')" || bad "%postun does not reload systemd"

# The payload, unpacked under a temporary directory only.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# rpm2cpio exits 1 on nfpm's packages (payload size in the header: nfpm issue 341), having
# written the whole archive; cpio's status is the one that counts.
rpm2cpio "$rpm" >"$tmp/payload.cpio" || true
(cd "$tmp" && cpio -idm --quiet --no-absolute-filenames <payload.cpio 2>/dev/null) || die "rpm-check: cannot unpack $rpm"
env="$tmp/etc/sysconfig/compute-tools"
[ -f "$env" ] || die "rpm-check: no etc/sysconfig/compute-tools in the payload"
grep -qx 'PGBIN=/usr/pgsql-15/bin/postgres' "$env" || bad "sysconfig: PGBIN is not /usr/pgsql-15/bin/postgres"
# Every other setting as in the .deb's /etc/default/compute-tools.
settings() { grep -E '^#?[A-Z][A-Z0-9_]*=' "$1" | grep -v '^PGBIN=' || true; }
[ "$(settings "$env")" = "$(settings packaging/default/compute-tools)" ] || bad "sysconfig settings differ from packaging/default/compute-tools:
$(diff <(settings packaging/default/compute-tools) <(settings "$env") || true)"
for u in "$tmp"/usr/lib/systemd/system/*.service; do
  n=${u##*/}
  ef=$(grep '^EnvironmentFile=' "$u" || true)
  # A unit that reads the settings file in the .deb reads /etc/sysconfig's in the .rpm; one
  # that reads none (compute-resize-swap@) reads none.
  want_ef=; ! grep -q '^EnvironmentFile=' "units/$n" || want_ef=EnvironmentFile=-/etc/sysconfig/compute-tools
  [ "$ef" = "$want_ef" ] || bad "$n: EnvironmentFile lines [$ef], want [$want_ef]"
  ! grep -q '/etc/default\|/usr/lib/postgresql' "$u" || bad "$n: names a Debian path"
  # Otherwise the .deb's unit, line for line.
  [ "$(grep -c '' "$u")" = "$(grep -c '' "units/$n")" ] || bad "$n: not the .deb's unit with paths replaced"
done
grep -q 'ExecStart=.*\${PGBIN:-/usr/pgsql-15/bin/postgres}' "$tmp/usr/lib/systemd/system/compute-postgres.service" ||
  bad "compute-postgres.service: PGBIN fallback is not /usr/pgsql-15/bin/postgres"
gen="$tmp/usr/lib/systemd/system-generators/compute-tools-generator"
grep -qF 'file=${COMPUTE_TOOLS_ENV_FILE:-/etc/sysconfig/compute-tools}' "$gen" || bad "generator does not read /etc/sysconfig/compute-tools"
sh -n "$gen" || bad "generator: syntax error"
# The generator reads the AUTOSCALING of the file it names.
out=$(mktemp -d -p "$tmp") && printf 'AUTOSCALING=true\n' >"$tmp/env" &&
  COMPUTE_TOOLS_ENV_FILE="$tmp/env" COMPUTE_TOOLS_POLKIT_SERVICE=/dev/null sh "$gen" "$out" &&
  [ -L "$out/compute.target.wants/compute-vm-monitor.service" ] || bad "generator did not enable the vm-monitor for AUTOSCALING=true"
for m in compute-init compute-api compute-monitor; do
  page=$(gzip -dc "$tmp/usr/share/man/man8/$m.8.gz")
  ! grep -q /etc/default <<<"$page" || bad "$m.8 names /etc/default"
done
cmp -s "$tmp/usr/bin/compute-init" bin/compute-init || bad "usr/bin/compute-init is not bin/compute-init"

# rpmlint (Debian's, openSUSE defaults), as nobody (see above). Errors that are expected:
#   no-signature             packages are not signed here;
#   no-changelogname-tag     nfpm's changelog would also replace the .deb's;
#   no-binary, dbus-parsing-exception  rpmlint cannot unpack the absolute payload paths
#                            (nfpm issue 1122), so it sees no files.
if command -v rpmlint >/dev/null; then
  lint=$(mktemp -d) && cp "$rpm" "$lint/" && chown -R nobody "$lint"
  runuser -u nobody -- env HOME="$lint" TMPDIR="$lint" rpmlint "$lint/${rpm##*/}" >out/rpmlint.txt 2>&1 || true
  rm -rf "$lint"
  errs=$(grep ': E: ' out/rpmlint.txt | grep -vE ': E: (no-signature|no-changelogname-tag|no-binary|dbus-parsing-exception)( |$)' || true)
  grep -q 'packages and 0 specfiles checked' out/rpmlint.txt || bad "rpmlint did not run: $(tail -3 out/rpmlint.txt)"
  [ -z "$errs" ] || bad "rpmlint errors:
$errs"
else
  bad "rpmlint is not installed (apt-get install rpmlint)"
fi

[ $fails = 0 ] || die "rpm-check: $fails problem(s) in $rpm"
log "rpm-check: $rpm is fine ($(q --qf '%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}'))"
