package extensions

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/spec"
)

type fakeSource struct {
	spec *spec.ComputeSpec
	err  error
}

func (f fakeSource) CurrentSpec() (*spec.ComputeSpec, error) { return f.spec, f.err }

func TestHandler(t *testing.T) {
	withExt := &spec.ComputeSpec{RemoteExtensions: remoteSpec()}
	tests := []struct {
		name     string
		method   string
		target   string
		src      fakeSource
		noBase   bool
		gwStatus int
		want     int
		wantErr  string // "" = empty body
	}{
		{name: "ok extension", target: "/extension_server/foo", src: fakeSource{spec: withExt}, want: 200},
		{name: "ok library", target: "/extension_server/foo.so?is_library=true", src: fakeSource{spec: withExt}, want: 200},
		{name: "explicit is_library=false", target: "/extension_server/foo?is_library=false", src: fakeSource{spec: withExt}, want: 200},
		{name: "no remote storage", target: "/extension_server/foo", src: fakeSource{spec: withExt}, noBase: true, want: 412, wantErr: "remote storage is not configured"},
		{name: "no remote_extensions", target: "/extension_server/foo", src: fakeSource{spec: &spec.ComputeSpec{}}, want: 409, wantErr: "information about remote extensions is unavailable"},
		{name: "no spec yet", target: "/extension_server/foo", src: fakeSource{}, want: 409, wantErr: "information about remote extensions is unavailable"},
		{name: "no spec file", target: "/extension_server/foo", src: fakeSource{err: fmt.Errorf("read: %w", fs.ErrNotExist)}, want: 409, wantErr: "information about remote extensions is unavailable"},
		{name: "spec unreadable", target: "/extension_server/foo", src: fakeSource{err: errors.New("bad json")}, want: 500, wantErr: "read spec: bad json"},
		{name: "not allowed", target: "/extension_server/baz", src: fakeSource{spec: withExt}, want: 404, wantErr: "extension baz is not found"},
		{name: "unknown library", target: "/extension_server/nope.so?is_library=true", src: fakeSource{spec: withExt}, want: 404, wantErr: "library nope is not found"},
		{name: "library name as extension", target: "/extension_server/foo.so", src: fakeSource{spec: withExt}, want: 404, wantErr: "extension foo.so is not found"},
		{name: "nested file name", target: "/extension_server/a/b", src: fakeSource{spec: withExt}, want: 404, wantErr: "extension a/b is not found"},
		{name: "gateway failure", target: "/extension_server/foo", src: fakeSource{spec: withExt}, gwStatus: 500, want: 500, wantErr: "download extension foo: gateway answered 500 Internal Server Error"},
		{name: "malformed query", target: "/extension_server/foo?is_library=%zz", src: fakeSource{spec: withExt}, want: 400, wantErr: "failed to deserialize query string: malformed query"},
		{name: "bad is_library", target: "/extension_server/foo?is_library=yes", src: fakeSource{spec: withExt}, want: 400, wantErr: "failed to deserialize query string: is_library: provided string was not `true` or `false`"},
		{name: "wrong method", method: "GET", target: "/extension_server/foo", src: fakeSource{spec: withExt}, want: 405, wantErr: "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGateway(t)
			g.set("foo", fooArchive(t))
			g.setFail("foo", tt.gwStatus)
			d := newDownloader(t, g)
			if tt.noBase {
				d.BaseURL = ""
			}
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			rec := httptest.NewRecorder()
			testMux(tt.src, d).ServeHTTP(rec, httptest.NewRequest(method, tt.target, nil))
			if rec.Code != tt.want {
				t.Fatalf("status = %d, want %d; body %q", rec.Code, tt.want, rec.Body)
			}
			switch tt.wantErr {
			case "-": // the mux's own answer
			case "":
				if rec.Body.Len() != 0 {
					t.Errorf("body = %q, want empty", rec.Body)
				}
			default:
				if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
				var body map[string]string
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body) != 1 || body["error"] != tt.wantErr {
					t.Errorf("body = %q, want {\"error\": %q}", rec.Body, tt.wantErr)
				}
			}
		})
	}
}

// testMux routes the extension server's pattern (as internal/api's route table does) to
// NewHandler.
func testMux(src SpecSource, d *Downloader) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(routePattern, NewHandler(src, d))
	return mux
}

// routePattern is internal/api's route for the handler.
const routePattern = "POST /extension_server/{" + FilenameParam + "...}"

// TestRoutesOnSharedMux checks the handler on a mux that serves other routes too, as
// the internal port's does.
func TestRoutesOnSharedMux(t *testing.T) {
	g := newGateway(t)
	g.set("foo", fooArchive(t))
	d := newDownloader(t, g)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /extensions", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) })
	mux.Handle(routePattern, NewHandler(fakeSource{spec: &spec.ComputeSpec{RemoteExtensions: remoteSpec()}}, d))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for target, want := range map[string]int{"/extension_server/foo": 200, "/extensions": 201, "/extension_server/": 404} {
		resp, err := srv.Client().Post(srv.URL+target, "", strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("POST %s = %d, want %d", target, resp.StatusCode, want)
		}
	}
}
