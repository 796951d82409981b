// Package tlsfiles reads the certificate and key that Postgres serves TLS with
// (compute_ctl_config.tls with the spec feature tls_experimental, as compute_ctl): it
// checks that the key matches the first certificate of the chain and tells a renewed
// certificate by the SHA-256 digest of its file. Package pgdata copies them into PGDATA.
//
// The files are named by the config, which the postgres user can write, and compute-api
// reads the certificate (as its own user, or as root on an image without polkit): every
// read is bounded (a regular file of at most MaxFileSize, opened without blocking, so
// that a FIFO or a device cannot stall or exhaust the reader), and a reader that is not
// the postgres user reads only what postgres could read itself: the named path
// may be a symbolic link only to a file below the link's own directory (the
// certificate managers' and Kubernetes secret mounts' ..data links), and the file and
// every directory on its way must be readable (searchable) by postgres by their owner,
// group (postgres's groups, ssl-cert among them on Debian) and mode bits. The links are
// resolved by name once; the resolved path is then opened one directory at a time from
// the root, each opened without following a link and checked through its descriptor
// (openChecked), so a directory renamed or replaced by a link between the check and the
// open cannot lead the reader elsewhere. So a path
// chosen by postgres makes compute-api or a root process read nothing postgres could
// not read (its digest in the journal tells nothing new). ACLs are not looked at: a
// file postgres reads through an ACL only is refused to the other readers (the watcher
// then keeps the installed certificate, with a warning).
//
// The check is crypto/tls's: any key type Go and Postgres both handle (ECDSA, Ed25519,
// RSA) is accepted, where compute_ctl knows only ECDSA P-256 and Ed25519.
package tlsfiles

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/computetools/compute-tools/internal/spec"
)

// Feature is the spec feature that turns TLS on.
const Feature = "tls_experimental"

// Enabled returns the TLS files of a config when Postgres is to serve TLS: the spec has
// the feature and compute_ctl_config names the files; nil otherwise.
func Enabled(cc *spec.ComputeConfig) *spec.TLSConfig {
	if cc == nil || cc.Spec == nil || cc.ComputeCtlConfig == nil || cc.ComputeCtlConfig.TLS == nil {
		return nil
	}
	if !slices.Contains(cc.Spec.Features, Feature) {
		return nil
	}
	return cc.ComputeCtlConfig.TLS
}

// Pair is a certificate chain and its key, PEM-encoded, checked to belong together.
type Pair struct {
	Cert, Key []byte
}

// Load reads the files of c and checks that the key matches the first certificate
// (checking together, which also catches a renewal caught half-way: new certificate,
// old key).
func Load(c spec.TLSConfig) (Pair, error) {
	if c.CertPath == "" || c.KeyPath == "" {
		return Pair{}, errors.New("tls: cert_path and key_path are both required")
	}
	cert, err := readBounded(c.CertPath)
	if err != nil {
		return Pair{}, fmt.Errorf("tls: read certificate: %w", err)
	}
	key, err := readBounded(c.KeyPath)
	if err != nil {
		return Pair{}, fmt.Errorf("tls: read key: %w", err)
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		// crypto/tls's messages name the problem and never include key material.
		return Pair{}, fmt.Errorf("tls: %s and %s: %w", c.CertPath, c.KeyPath, err)
	}
	return Pair{Cert: cert, Key: key}, nil
}

// Digest is the hex SHA-256 of the certificate file's bytes.
func (p Pair) Digest() string { return digest(p.Cert) }

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// FileDigest is the hex SHA-256 of a certificate file (compare with Pair.Digest).
func FileDigest(path string) (string, error) {
	b, err := readBounded(path)
	if err != nil {
		return "", fmt.Errorf("tls: read certificate: %w", err)
	}
	return digest(b), nil
}

// MaxFileSize bounds a certificate chain or key file (a chain is a few KiB).
const MaxFileSize = 1 << 20

// Owner is the user whose files the config names: the files are read only if that user
// could read them (mayRead), unless the reader is that user.
const Owner = "postgres"

// readBounded reads path if it is a regular file of at most MaxFileSize bytes that the
// Owner may read (for a reader that is not the Owner: resolveBelow, then openChecked).
// O_NONBLOCK keeps the open of a FIFO from waiting for a writer; it changes nothing for
// a regular file.
func readBounded(path string) ([]byte, error) {
	owner, err := lookupCred(Owner)
	if err != nil {
		return nil, err
	}
	checked := uint32(os.Geteuid()) != owner.uid
	var f *os.File
	if checked {
		resolved, err := resolveBelow(path)
		if err != nil {
			return nil, err
		}
		afterResolve(resolved)
		if f, err = openChecked(path, resolved, owner); err != nil {
			return nil, err
		}
	} else if f, err = os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0); err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if checked {
		// The file opened is the one checked.
		if err := owner.mayAccess(fi, 0o4); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxFileSize)
	}
	return b, nil
}

// afterResolve is called between resolveBelow and openChecked (tests swap a directory
// there, as a concurrent writer could).
var afterResolve = func(string) {}

// cred is a user and its groups, for mayRead.
type cred struct {
	uid  uint32
	gids []uint32
}

func lookupCred(name string) (cred, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return cred{}, fmt.Errorf("tls: the files' owner: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return cred{}, fmt.Errorf("tls: user %s: uid %q", name, u.Uid)
	}
	c := cred{uid: uint32(uid)}
	gids, err := u.GroupIds()
	if err != nil {
		gids = []string{u.Gid}
	}
	for _, g := range append(gids, u.Gid) {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil && !slices.Contains(c.gids, uint32(n)) {
			c.gids = append(c.gids, uint32(n))
		}
	}
	return c, nil
}

// mayAccess says whether c may access a file of fi's owner, group and mode for want
// (0o4 read, 0o1 search), by the mode bits alone; root gets no exception (c is the
// owner of the files, never root).
func (c cred) mayAccess(fi fs.FileInfo, want fs.FileMode) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("no owner information")
	}
	perm := fi.Mode().Perm()
	var bits fs.FileMode
	switch {
	case st.Uid == c.uid:
		bits = perm >> 6
	case slices.Contains(c.gids, st.Gid):
		bits = perm >> 3
	default:
		bits = perm
	}
	if bits&want != want {
		what := "read"
		if want == 0o1 {
			what = "searched"
		}
		return fmt.Errorf("%s (owner %d, group %d, mode %04o) cannot be %s by %s", fi.Name(), st.Uid, st.Gid, perm, what, Owner)
	}
	return nil
}

// resolveBelow returns path with its symbolic links resolved, which must lead below the
// directory of path (a link elsewhere is refused): the certificate managers' and
// Kubernetes secret mounts' links within their directory are followed here, by name;
// what is opened is then the resolved path, through openChecked, which follows nothing.
func resolveBelow(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", err
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(resolved, dir+string(filepath.Separator)) {
		return "", fmt.Errorf("%s: a symbolic link to %s, outside %s: refused", path, resolved, dir)
	}
	return resolved, nil
}

// openChecked opens resolved (absolute and clean, as resolveBelow returns it) for reading
// only if c could: it walks from the root one component at a time, each directory opened
// with O_PATH|O_DIRECTORY|O_NOFOLLOW from its parent's descriptor and checked (searchable
// by c) through its own descriptor, and opens the file from the last one with O_NOFOLLOW.
// So no name is looked up twice: a component swapped for a symbolic link after the
// resolution fails to open (ELOOP or ENOTDIR) instead of being followed past the checks.
// The caller checks the file itself (Stat of the returned file). path names it in errors.
func openChecked(path, resolved string, c cred) (*os.File, error) {
	if !filepath.IsAbs(resolved) || filepath.Clean(resolved) != resolved {
		return nil, fmt.Errorf("%s: %s is not an absolute clean path", path, resolved)
	}
	dirFlags := unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Open("/", dirFlags, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: open /: %w", path, err)
	}
	d := "/"
	parts := strings.Split(strings.TrimPrefix(resolved, "/"), "/")
	for i, name := range parts {
		dirFile := os.NewFile(uintptr(fd), d)
		fi, err := dirFile.Stat()
		if err == nil {
			err = c.mayAccess(fi, 0o1)
		}
		if err != nil {
			dirFile.Close()
			return nil, fmt.Errorf("%s: directory %s: %w", path, d, err)
		}
		if i == len(parts)-1 {
			nfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			dirFile.Close()
			if err != nil {
				return nil, fmt.Errorf("open %s: %w", resolved, err)
			}
			return os.NewFile(uintptr(nfd), resolved), nil
		}
		nfd, err := unix.Openat(fd, name, dirFlags, 0)
		dirFile.Close()
		d = filepath.Join(d, name)
		if err != nil {
			return nil, fmt.Errorf("%s: directory %s (no symbolic link may be on the resolved path): %w", path, d, err)
		}
		fd = nfd
	}
	return nil, fmt.Errorf("%s: empty path", path)
}
