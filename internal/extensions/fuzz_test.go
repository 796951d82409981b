package extensions

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// fuzzTypes are the entry types the fuzzer picks from.
var fuzzTypes = []byte{tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo, tar.TypeXGlobalHeader, tar.TypeChar, 'Z'}

// fuzzPrefixes are put before an entry's name (so the fuzzer reaches both destinations
// without having to find their names).
var fuzzPrefixes = []string{"", "lib/", "share/extension/", "share/"}

// fuzzTar turns fuzz data into a tar: entries are separated by 0x1e; in each, the first
// byte picks the type (low 3 bits), the name prefix (bits 3-4) and the executable bit
// (0x80), and 0x1f separates the name, the link name and the content.
func fuzzTar(data []byte) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for rec := range bytes.SplitSeq(data, []byte{0x1e}) {
		if len(rec) == 0 {
			continue
		}
		typ := fuzzTypes[rec[0]&7]
		prefix := fuzzPrefixes[(rec[0]>>3)&3]
		mode := int64(0o644)
		if rec[0]&0x80 != 0 {
			mode = 0o755
		}
		f := bytes.SplitN(rec[1:], []byte{0x1f}, 3)
		for len(f) < 3 {
			f = append(f, nil)
		}
		hdr := &tar.Header{Typeflag: typ, Name: prefix + string(f[0]), Linkname: string(f[1]), Mode: mode, Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(f[2]))
		}
		if typ == tar.TypeXGlobalHeader {
			hdr = &tar.Header{Typeflag: typ, Name: hdr.Name, PAXRecords: map[string]string{"comment": string(f[2])}, Format: tar.FormatPAX}
		}
		if tw.WriteHeader(hdr) != nil {
			break
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write(f[2]); err != nil {
				break
			}
		}
	}
	_ = tw.Close()
	return buf.Bytes()
}

func fuzzRec(b byte, name, link, body string) string {
	return string([]byte{0x1e, b}) + name + "\x1f" + link + "\x1f" + body
}

// FuzzUnpack unpacks fuzzed remote extension archives (zstd tar) into a library and a
// share directory, the library directory already holding a symbolic link to a sibling
// directory. Whatever the archive, unpack must not panic, must leave the sibling and
// the parent as they were (no write, no hard link to its file), must create symbolic
// links only to a sibling name (no "/"), and when it fails must leave no temporary
// file behind. Fuzzed archives may also be plain bytes (not zstd).
func FuzzUnpack(f *testing.F) {
	const lib, share = 1 << 3, 2 << 3
	for _, s := range []string{
		fuzzRec(share|1, "foo.control", "", "default_version = '1.0'") + fuzzRec(lib|1, "foo.so.1", "", "\x7fELF") + fuzzRec(lib|2, "foo.so", "foo.so.1", ""),
		fuzzRec(lib|1, "../evil", "", "x"),
		fuzzRec(lib|1, "escape/evil", "", "x"),
		fuzzRec(lib|1, "escape", "", "replaced"),
		fuzzRec(lib|2, "l", "../outside", ""),
		fuzzRec(lib|2, "l", "escape", "") + fuzzRec(lib|1, "l/x", "", ""),
		fuzzRec(lib|3, "h", "../outside/canary", ""),
		fuzzRec(1, "/abs/lib/x", "", "x"),
		fuzzRec(1, "lib\\..\\x", "", "x"),
		fuzzRec(lib, "sub/dir", "", "") + fuzzRec(lib|1, "sub/dir/f", "", "x") + fuzzRec(lib|4, "p", "", ""),
		fuzzRec(share|5, "g", "", "c") + fuzzRec(share|7, "z", "", ""),
		fuzzRec(lib|1, "", "", "x") + fuzzRec(share, "", "", ""),
	} {
		f.Add([]byte(s), true)
	}
	f.Add([]byte("\x28\xb5\x2f\xfd garbage"), false)

	tmp := os.Getenv("FUZZ_TMPDIR")
	if tmp == "" {
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			tmp = "/dev/shm"
		}
	}
	base, err := os.MkdirTemp(tmp, "fuzz-unpack-")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(base) })
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		f.Fatal(err)
	}
	outside := filepath.Join(base, "outside")
	libDir := filepath.Join(base, "lib")
	shareDir := filepath.Join(base, "share")
	d := &Downloader{PkgLibDir: libDir, ShareDir: shareDir, MaxUnpackedBytes: 1 << 20}

	f.Fuzz(func(t *testing.T, data []byte, structured bool) {
		archive := data
		if structured {
			archive = enc.EncodeAll(fuzzTar(data), nil)
		}
		for _, dir := range []string{outside, libDir, shareDir} {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		canary := filepath.Join(outside, "canary")
		if err := os.WriteFile(canary, []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../outside", filepath.Join(libDir, "escape")); err != nil {
			t.Fatal(err)
		}
		uerr := d.unpack(bytes.NewReader(archive))

		if ents, _ := os.ReadDir(base); len(ents) != 3 {
			t.Fatalf("parent holds %v", ents)
		}
		if ents, _ := os.ReadDir(outside); len(ents) != 1 || ents[0].Name() != "canary" {
			t.Fatalf("sibling holds %v", ents)
		}
		var st syscall.Stat_t
		if b, rerr := os.ReadFile(canary); rerr != nil || string(b) != "keep" || syscall.Lstat(canary, &st) != nil || st.Nlink != 1 {
			t.Fatalf("sibling's file changed: %q %v nlink %d", b, rerr, st.Nlink)
		}
		for _, root := range []string{libDir, shareDir} {
			werr := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				typ := de.Type()
				switch {
				case typ.IsDir():
				case typ.IsRegular():
					if uerr != nil && strings.Contains(de.Name(), ".tmp-") {
						t.Errorf("temporary file %s left after the failure %v", p, uerr)
					}
				case typ&fs.ModeSymlink != 0:
					link, err := os.Readlink(p)
					if err != nil {
						return err
					}
					if p == filepath.Join(libDir, "escape") && link == "../outside" {
						return nil // planted by the test
					}
					if strings.ContainsAny(link, "/\x00") || link == ".." || link == "" {
						t.Errorf("symbolic link %s -> %q", p, link)
					}
				default:
					t.Errorf("%s has type %v", p, typ)
				}
				return nil
			})
			if werr != nil {
				t.Fatal(werr)
			}
		}
	})
}
