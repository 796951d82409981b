package compute

import (
	"os/user"
	"strings"
	"testing"

	"github.com/computetools/compute-tools/internal/paths"
)

func TestParseConnstr(t *testing.T) {
	for _, k := range []string{"PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE", "PGSERVICEFILE"} {
		t.Setenv(k, "")
	}
	osUser := ""
	if u, err := user.Current(); err == nil {
		osUser = u.Username
	}
	for _, tc := range []struct {
		connstr string
		want    connInfo
	}{
		{paths.DefaultConnstr, connInfo{User: "cloud_admin", Port: 55432, SocketDir: "/run/compute-postgres"}},
		{"postgresql://u@/db?host=/tmp&port=6000", connInfo{User: "u", Port: 6000, SocketDir: "/tmp"}},
		{"postgresql://u@%2Fvar%2Frun%2Fpg:6001/db", connInfo{User: "u", Port: 6001, SocketDir: "/var/run/pg"}},
		{"host=/tmp port=7000 user=x dbname=postgres", connInfo{User: "x", Port: 7000, SocketDir: "/tmp"}},
		// What pgx connects to when the string leaves something out: port 5432, the OS user.
		{"postgresql:///postgres?host=/run/x", connInfo{User: osUser, Port: 5432, SocketDir: "/run/x"}},
	} {
		got, err := parseConnstr(tc.connstr)
		if err != nil || got != tc.want {
			t.Errorf("parseConnstr(%q) = %+v, %v; want %+v", tc.connstr, got, err, tc.want)
		}
	}
	// The admin role logs in only over the unix socket (peer authentication): a TCP host is
	// refused at once, naming the fix.
	for _, tcp := range []string{"postgres://cloud_admin@localhost:5433/postgres", "postgresql://u:s3cret@127.0.0.1:6002/db?port=6003"} {
		_, err := parseConnstr(tcp)
		if err == nil || !strings.Contains(err.Error(), "only over the unix socket") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("parseConnstr(%q) = %v, want the unix socket error without the password", tcp, err)
		}
	}
	for _, bad := range []string{"postgresql://u:s3cret@h:notaport/db", "postgresql://u:s3cret@h/db?sslmode=bogus", "host"} {
		_, err := parseConnstr(bad)
		if err == nil {
			t.Errorf("parseConnstr(%q) accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the error quotes the password: %v", err)
		}
	}
}
