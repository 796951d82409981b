package pageserver_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/computetools/compute-tools/internal/pageserver"
)

// fuzzTypes are the entry types the fuzzer picks from: what a basebackup holds, what
// must be refused, and an unknown type.
var fuzzTypes = []byte{tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo, tar.TypeChar, tar.TypeXGlobalHeader, 'Z'}

// fuzzArchive turns fuzz data into tar entries: entries are separated by 0x1e; in each,
// the first byte picks the type (fuzzTypes) and the executable bit (0x80), and 0x1f
// separates the name, the link name and the content. It returns the gzip'd archive and
// the types of the entries the tar writer took.
func fuzzArchive(data []byte) ([]byte, []byte) {
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	tw := tar.NewWriter(gz)
	var types []byte
	for rec := range bytes.SplitSeq(data, []byte{0x1e}) {
		if len(rec) == 0 {
			continue
		}
		typ := fuzzTypes[int(rec[0]&0x7f)%len(fuzzTypes)]
		mode := int64(0o644)
		if rec[0]&0x80 != 0 {
			mode = 0o755
		}
		f := bytes.SplitN(rec[1:], []byte{0x1f}, 3)
		for len(f) < 3 {
			f = append(f, nil)
		}
		hdr := &tar.Header{Typeflag: typ, Name: string(f[0]), Linkname: string(f[1]), Mode: mode, Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(f[2]))
		}
		if typ == tar.TypeXGlobalHeader {
			hdr = &tar.Header{Typeflag: typ, Name: string(f[0]), PAXRecords: map[string]string{"comment": string(f[2])}, Format: tar.FormatPAX}
		}
		if tw.WriteHeader(hdr) != nil {
			break
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write(f[2]); err != nil {
				break
			}
		}
		types = append(types, typ)
	}
	_ = tw.Close()
	_ = gz.Close()
	return buf.Bytes(), types
}

func rec(typ byte, name, link, body string) string {
	return string([]byte{0x1e, typ}) + name + "\x1f" + link + "\x1f" + body
}

// FuzzUntar unpacks fuzzed archives into a directory that already holds a symbolic link
// to a sibling directory. Whatever the archive, Untar must not panic, must leave the
// sibling and the parent exactly as they were (no write, no hard link to its file),
// and must leave inside the target only directories, regular files and symbolic links
// with relative targets without ".."; an archive with a device, fifo or unknown entry
// must fail.
func FuzzUntar(f *testing.F) {
	for _, s := range []string{
		rec(0, "base/", "", "") + rec(1, "base/1/PG_VERSION", "", "15\n") + rec(0x81, "bin/x", "", "#!") + rec(2, "pg_wal", "", "") + rec(2, "lnk", "base/1", ""),
		rec(1, "../evil", "", "x"),
		rec(1, "/abs", "", "x"),
		rec(2, "etc", "/etc", "") + rec(1, "etc/evil", "", "x"),
		rec(2, "up", "../..", ""),
		rec(1, "escape/file", "", "x"),
		rec(1, "escape", "", "replaced"),
		rec(3, "pw", "../outside/canary", ""),
		rec(3, "pw", "escape/canary", ""),
		rec(1, "a", "", "x") + rec(3, "b", "a", "") + rec(3, "a", "b", ""),
		rec(0, "real/", "", "") + rec(2, "lnk", "real", "") + rec(1, "lnk/file", "", "x"),
		rec(4, "pipe", "", ""),
		rec(5, "null", "", ""),
		rec(6, "g", "", "c") + rec(7, "z", "", ""),
		rec(1, ".", "", "x"),
		rec(2, ".", "a", ""),
		rec(1, "a/b/c/d/e", "", "") + rec(0, "a/b", "", "") + rec(1, "a/b", "", "f"),
	} {
		f.Add([]byte(s))
	}
	// One directory for all the runs of this process (on tmpfs when there is one: the
	// runs are file-system bound), emptied before each run.
	tmp := os.Getenv("FUZZ_TMPDIR")
	if tmp == "" {
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			tmp = "/dev/shm"
		}
	}
	base, err := os.MkdirTemp(tmp, "fuzz-untar-")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(base) })
	outside := filepath.Join(base, "outside")
	target := filepath.Join(base, "pgdata")
	f.Fuzz(func(t *testing.T, data []byte) {
		archive, types := fuzzArchive(data)
		for _, d := range []string{outside, target} {
			if err := os.RemoveAll(d); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		canary := filepath.Join(outside, "canary")
		if err := os.WriteFile(canary, []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../outside", filepath.Join(target, "escape")); err != nil {
			t.Fatal(err)
		}
		err := pageserver.Untar(bytes.NewReader(archive), target)

		if ents, _ := os.ReadDir(base); len(ents) != 2 {
			t.Fatalf("parent holds %v", ents)
		}
		if ents, _ := os.ReadDir(outside); len(ents) != 1 || ents[0].Name() != "canary" {
			t.Fatalf("sibling holds %v", ents)
		}
		var st syscall.Stat_t
		if b, rerr := os.ReadFile(canary); rerr != nil || string(b) != "keep" || syscall.Lstat(canary, &st) != nil || st.Nlink != 1 {
			t.Fatalf("sibling's file changed: %q %v nlink %d", b, rerr, st.Nlink)
		}
		werr := filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch typ := d.Type(); {
			case typ.IsDir(), typ.IsRegular():
			case typ&fs.ModeSymlink != 0:
				link, err := os.Readlink(p)
				if err != nil {
					return err
				}
				if p == filepath.Join(target, "escape") && link == "../outside" {
					return nil // planted by the test
				}
				if strings.HasPrefix(link, "/") || strings.Contains("/"+link+"/", "/../") {
					t.Errorf("symbolic link %s -> %s", p, link)
				}
			default:
				t.Errorf("%s has type %v", p, typ)
			}
			return nil
		})
		if werr != nil {
			t.Fatal(werr)
		}
		if err == nil {
			for _, typ := range types {
				if typ == tar.TypeFifo || typ == tar.TypeChar || typ == 'Z' {
					t.Fatalf("archive with a %q entry unpacked without error", typ)
				}
			}
		}
	})
}
