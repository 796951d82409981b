package pageapi

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The committed code is what scripts/gen-proto.sh makes from page_service.proto today
// (protoc from Debian's protobuf-compiler, the plugins at the script's pinned versions).
// Without protoc the test cannot regenerate and says so.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: regenerating builds the protoc plugins")
	}
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Skip("protoc not installed (Debian: protobuf-compiler); scripts/test.sh installs it")
	}
	if _, err := os.Stat("/usr/include/google/protobuf/timestamp.proto"); err != nil {
		t.Skip("protobuf's well-known types not installed (Debian: libprotobuf-dev); scripts/test.sh installs them")
	}
	out := t.TempDir()
	cmd := exec.Command("bash", "../../../scripts/gen-proto.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen-proto.sh: %v\n%s", err, b)
	}
	for _, f := range []string{"page_service.pb.go", "page_service_grpc.pb.go"} {
		want, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from a fresh scripts/gen-proto.sh run: regenerate and commit it", f)
		}
	}
}
