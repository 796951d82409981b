package pageserver

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/computetools/compute-tools/internal/safetar"
)

// UnsafeEntryError is an archive entry refused because it would write outside the
// target directory, through a symbolic link, or create a device or fifo.
type UnsafeEntryError = safetar.UnsafeEntryError

const copyBufSize = 256 << 10

// Untar unpacks the gzip'd tar stream r into dir (created 0700 if missing) and then
// reads r to its end, so that the caller's stream is fully consumed and the gzip
// checksum is verified. Directories are made 0700 and files 0600 (0700 when the archive
// marks them executable): PostgreSQL wants a private data directory. Entries that would
// land outside dir, go through a symbolic link, or are devices or fifos are refused
// with an *UnsafeEntryError; symbolic links must be relative and may not contain "..".
// Every write goes through an os.Root of dir (package safetar).
func Untar(r io.Reader, dir string) error {
	if dir == "" {
		return errors.New("untar: empty directory path")
	}
	d, err := safetar.Open(dir, 0o700)
	if err != nil {
		return fmt.Errorf("untar: %w", err)
	}
	defer d.Close()
	br := bufio.NewReaderSize(r, copyBufSize)
	gz, err := gzip.NewReader(br)
	if err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	x := &extractor{d: d, w: bufio.NewWriterSize(nil, copyBufSize)}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			var unsafe *UnsafeEntryError
			if errors.As(err, &unsafe) {
				return err
			}
			return fmt.Errorf("untar %q: %w", hdr.Name, err)
		}
	}
	// Past the tar end: trailing zero blocks, the gzip trailer (checksum), and anything
	// the server still sends.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return fmt.Errorf("read stream: %w", err)
	}
	return nil
}

type extractor struct {
	d *safetar.Dir
	w *bufio.Writer
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	name := hdr.Name
	rel, err := safetar.CleanName(name)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeChar, tar.TypeBlock:
		return safetar.Unsafe(name, "device entries are not allowed")
	case tar.TypeFifo:
		return safetar.Unsafe(name, "fifo entries are not allowed")
	case tar.TypeDir:
		return x.d.Mkdir(name, rel)
	case tar.TypeReg, tar.TypeGNUSparse:
		return x.file(name, rel, hdr.Mode, r)
	case tar.TypeSymlink:
		if rel == "." {
			return safetar.Unsafe(name, "a symbolic link cannot replace the target directory")
		}
		if err := safetar.CheckLinkTarget(name, hdr.Linkname); err != nil {
			return err
		}
		if err := x.d.RealParents(name, rel, true); err != nil {
			return err
		}
		return x.d.Symlink(name, rel, hdr.Linkname)
	case tar.TypeLink:
		return x.d.Link(name, rel, hdr.Linkname)
	default:
		return safetar.Unsafe(name, "unsupported entry type %q", hdr.Typeflag)
	}
}

// onlyWriter hides the file's ReadFrom so that bufio does the buffering.
type onlyWriter struct{ io.Writer }

func (x *extractor) file(name, rel string, mode int64, r io.Reader) error {
	if rel == "." {
		return safetar.Unsafe(name, "a file cannot replace the target directory")
	}
	if err := x.d.RealParents(name, rel, true); err != nil {
		return err
	}
	perm := os.FileMode(0o600)
	if mode&0o100 != 0 {
		perm = 0o700
	}
	f, err := x.d.CreateFile(rel, perm)
	if err != nil {
		return err
	}
	x.w.Reset(onlyWriter{f})
	_, err = io.Copy(x.w, r)
	if err == nil {
		err = x.w.Flush()
	}
	if err == nil {
		err = f.Chmod(perm) // the umask may have narrowed it
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
