package pageserver_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/computetools/compute-tools/internal/execx"
	"github.com/computetools/compute-tools/internal/pageserver"
	"github.com/computetools/compute-tools/internal/pageservertest"
	"github.com/computetools/compute-tools/internal/spec"
)

// benchArchive makes a gzip'd tar of about size bytes of relation-like files: 8 KiB
// pages, half random and half zero, so that gzip has something to do (about 2:1).
func benchArchive(b *testing.B, size int) (gz []byte, raw int64) {
	b.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	rng := rand.NewChaCha8([32]byte{1})
	const fileSize = 16 << 20
	page := make([]byte, 8192)
	for i := 0; i*fileSize < size; i++ {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("base/16384/%d", 16400+i), Mode: 0o600, Size: fileSize, ModTime: time.Now()}
		if err := tw.WriteHeader(hdr); err != nil {
			b.Fatal(err)
		}
		for off := 0; off < fileSize; off += len(page) {
			rng.Read(page[:4096])
			if _, err := tw.Write(page); err != nil {
				b.Fatal(err)
			}
		}
		raw += fileSize
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes(), raw
}

// BenchmarkIngest compares our streaming unpacker (from memory, and through the fake
// pageserver over TCP) with `gzip -dc | tar -x` on the same ≥200 MB archive. MB/s is
// of uncompressed data, gzMB/s of compressed bytes.
func BenchmarkIngest(b *testing.B) {
	archive, raw := benchArchive(b, 200<<20)
	b.Logf("archive: %d MB raw, %d MB gzip'd", raw>>20, len(archive)>>20)
	report := func(b *testing.B) {
		secs := b.Elapsed().Seconds() / float64(b.N)
		b.ReportMetric(float64(raw)/1e6/secs, "MB/s")
		b.ReportMetric(float64(len(archive))/1e6/secs, "gzMB/s")
	}
	work := b.TempDir()
	b.Run("untar", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			dir := filepath.Join(work, fmt.Sprint("u", i))
			if err := pageserver.Untar(bytes.NewReader(archive), dir); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.RemoveAll(dir)
			b.StartTimer()
		}
		report(b)
	})
	b.Run("basebackup-fake", func(b *testing.B) {
		f, err := pageservertest.New(pageservertest.Options{Password: token, Archive: archive, ChunkSize: 128 << 10})
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		for i := 0; i < b.N; i++ {
			dir := filepath.Join(work, fmt.Sprint("b", i))
			o := pageserver.BasebackupOptions{PGData: dir, Connstr: f.Connstr(), Token: token, TenantID: tenant, TimelineID: timeline, Mode: spec.ModeTypePrimary, Attempts: 1, Logger: slog.New(slog.DiscardHandler)}
			if _, err := pageserver.Basebackup(context.Background(), o); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.RemoveAll(dir)
			b.StartTimer()
		}
		report(b)
	})
	b.Run("gzip-tar", func(b *testing.B) {
		sh, err := exec.LookPath("sh")
		if err != nil {
			b.Skip("no sh")
		}
		file := filepath.Join(work, "archive.tar.gz")
		if err := os.WriteFile(file, archive, 0o600); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < b.N; i++ {
			dir := filepath.Join(work, fmt.Sprint("g", i))
			if err := os.Mkdir(dir, 0o700); err != nil {
				b.Fatal(err)
			}
			if _, err := execx.Run(context.Background(), execx.Cmd{Path: sh, Args: []string{"-c", `gzip -dc < "$1" | tar -x -C "$2"`, "sh", file, dir}}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.RemoveAll(dir)
			b.StartTimer()
		}
		report(b)
	})
}
