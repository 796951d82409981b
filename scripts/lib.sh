# Shared shell functions of the project scripts (sourced, not run).
# Everything here is idempotent: a second run on the same machine installs nothing new.

NFPM_VERSION=v2.45.2        # later versions do not install from the module proxy
STATICCHECK_VERSION=v0.8.2  # honnef.co/go/tools
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export GOFLAGS=${GOFLAGS:--buildvcs=false}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "run this as root (it installs packages and boots a container)"; }

# apt_install PKG...: installs the Debian packages that are missing.
apt_install() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null || die "apt-get update failed"; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

# ensure_go: a Go toolchain on PATH. Uses one that is there (PATH or /usr/local/go);
# otherwise installs Debian's golang-1.23 from bookworm-backports, which fetches the
# toolchain go.mod asks for from the module proxy (GOTOOLCHAIN=auto).
ensure_go() {
  export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
  if command -v go >/dev/null 2>&1; then return 0; fi
  if [ ! -x /usr/lib/go-1.23/bin/go ]; then
    log "no Go found: installing golang-1.23 from bookworm-backports"
    if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        >/etc/apt/sources.list.d/compute-tools-backports.sources
      APT_UPDATED=
    fi
    apt_install golang-1.23-go ca-certificates git
  fi
  export PATH="$PATH:/usr/lib/go-1.23/bin"
  export GOTOOLCHAIN=auto
}

# ensure_go_tool NAME MODULE@VERSION: installs a pinned Go tool into $(go env GOPATH)/bin.
ensure_go_tool() {
  local name=$1 mod=$2 bin
  bin="$(go env GOPATH)/bin/$name"
  if [ -x "$bin" ] && [ -f "$bin.version" ] && [ "$(cat "$bin.version")" = "$mod" ]; then return 0; fi
  log "installing $mod"
  (cd / && go install "$mod") || die "go install $mod failed"
  echo "$mod" >"$bin.version"
}

ensure_tools() {
  ensure_go
  export PATH="$PATH:$(go env GOPATH)/bin"
  ensure_go_tool nfpm "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
  ensure_go_tool staticcheck "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
}

# build: static binaries into bin/.
build() {
  log "building binaries"
  local tag
  tag=$(build_tag) || exit 1
  mkdir -p "$REPO/bin"
  (cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/computetools/compute-tools/internal/version.Version=$(version) -X github.com/computetools/compute-tools/internal/version.BuildTag=$tag" \
    -o bin/ ./cmd/compute-init ./cmd/compute-api ./cmd/compute-monitor) || die "go build failed"
}

version() { echo "${VERSION:-0.1.0}"; }
# build_tag: BUILD_TAG, as Neon's compute image builds set it: the build_tag label of
# compute_ctl_up and the first element of the remote-extension archive path. "latest" when
# unset, as compute_ctl built without one.
build_tag() {
  local t="${BUILD_TAG:-latest}"
  case "$t" in */*|*' '*|'') die "BUILD_TAG must be one path element without spaces: '$t'";; esac
  echo "$t"
}

# package: .deb and .rpm into dist/.
package() {
  build
  log "packaging with nfpm $NFPM_VERSION"
  mkdir -p "$REPO/dist"; rm -rf "$REPO"/dist/*
  gzip -9n -c "$REPO/packaging/changelog" >"$REPO/bin/changelog.gz"
  for m in compute-init compute-api compute-monitor; do gzip -9n -c "$REPO/packaging/man/$m.8" >"$REPO/bin/$m.8.gz"; done
  rpm_files
  (cd "$REPO" && GOARCH=$(go env GOARCH) VERSION=$(version) nfpm pkg --packager deb --target dist/ >/dev/null \
    && GOARCH=$(go env GOARCH) VERSION=$(version) nfpm pkg --packager rpm --target dist/ >/dev/null) || die "nfpm failed"
  ls "$REPO"/dist >&2
}

# rpm_files: the .rpm's copies of the files that name the environment file or PGBIN, into
# bin/rpm/: on the RHEL family the environment file is /etc/sysconfig/compute-tools and
# PGDG's PostgreSQL 15 is in /usr/pgsql-15/bin. The .deb's files are the sources, unchanged.
rpm_files() {
  local out="$REPO/bin/rpm" f m
  local subst=(-e 's|/etc/default/compute-tools|/etc/sysconfig/compute-tools|g' -e 's|/usr/lib/postgresql/15/bin|/usr/pgsql-15/bin|g')
  rm -rf "$out"; mkdir -p "$out/units"
  for f in "$REPO"/units/*.service; do sed "${subst[@]}" "$f" >"$out/units/${f##*/}"; done
  sed "${subst[@]}" "$REPO/packaging/systemd/compute-tools-generator" >"$out/compute-tools-generator"
  sed "${subst[@]}" "$REPO/packaging/default/compute-tools" >"$out/compute-tools"
  for m in compute-init compute-api compute-monitor; do sed "${subst[@]}" "$REPO/packaging/man/$m.8" | gzip -9n >"$out/$m.8.gz"; done
  grep -qx 'PGBIN=/usr/pgsql-15/bin/postgres' "$out/compute-tools" || die "rpm_files: no PGBIN line to rewrite"
  ! grep -rq /etc/default/compute-tools "$out"/units "$out/compute-tools-generator" || die "rpm_files: /etc/default left"
}

# system_test_setup: what the system test and the neon benchmark need on the host: the
# packages, the tools, the .deb (unless SKIP_PACKAGE=1), the test binary and the fakes.
system_test_setup() {
  need_root
  apt_install systemd-container debootstrap dbus postgresql-15 ca-certificates
  ensure_tools
  [ "${SKIP_PACKAGE:-}" = 1 ] || package
  build_system_test
}

# build_system_test: the system test binary and the Neon fakes into dist/ (run inside the
# container from /dist).
build_system_test() {
  log "building the system test binary and the Neon fakes"
  (cd "$REPO" && CGO_ENABLED=0 go test -c -o dist/system.test ./test/system) || die "go test -c failed"
  (cd "$REPO" && CGO_ENABLED=0 go build -o dist/neonfakes ./test/neonfakes) || die "go build neonfakes failed"
}
