package pgconf

import (
	"fmt"
	"strings"

	"github.com/computetools/compute-tools/internal/spec"
)

// NeonHBALine is the line compute_ctl appends to pg_hba.conf: every role may log in
// with its password from anywhere. The bytes are Neon's exactly: one tab, then double
// tabs.
const NeonHBALine = "host\tall\t\tall\t\tall\t\tmd5"

// IdentMap is the pg_ident.conf map through which OS users become the admin role.
const IdentMap = "compute"

// DefaultIdentOSUsers are the OS users allowed to act as the admin role over the socket.
var DefaultIdentOSUsers = []string{"postgres", "root"}

// hbaKeywords have a special meaning in the user or database column of pg_hba.conf
// unless quoted.
var hbaKeywords = map[string]bool{
	"all": true, "sameuser": true, "samerole": true, "samegroup": true, "replication": true,
}

// CheckAdminRole accepts only admin role names that need no quoting in pg_hba.conf and
// pg_ident.conf: lowercase letters, digits and underscores, not starting with a digit,
// at most 63 bytes, and not an hba keyword. We reject rather than quote because the
// quoting rules of these files differ between PostgreSQL versions (PG16 gave a meaning
// to leading "+", "/" and "@" in pg_ident.conf and to regular expressions in pg_hba.conf)
// and a mistake would silently change who may log in; the admin role is an operator's
// fixed choice (cloud_admin), so the restriction costs nothing.
func CheckAdminRole(name string) error {
	if why := spec.CheckIdentifier(name); why != "" {
		return fmt.Errorf("admin role: %s", why)
	}
	if !simpleName(name, false) {
		return fmt.Errorf("admin role %q: only lowercase letters, digits and _ are allowed, not starting with a digit", name)
	}
	if hbaKeywords[name] {
		return fmt.Errorf("admin role %q: is a pg_hba.conf keyword", name)
	}
	return nil
}

func simpleName(s string, osUser bool) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c == '_' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9' || osUser && i > 0 && (c == '-' || c == '.')
		if !ok {
			return false
		}
	}
	return true
}

// HBAStandalone returns pg_hba.conf for standalone mode: the admin role connects over
// the unix socket with peer authentication through the "compute" ident map; every other
// role logs in with its password, over the socket or over TCP (Neon's line).
func HBAStandalone(adminRole string) (string, error) {
	if err := CheckAdminRole(adminRole); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("# pg_hba.conf of a standalone compute, written by compute-tools.\n")
	b.WriteString("# The admin role logs in only over the unix socket, as an OS user mapped to it in\n")
	b.WriteString("# pg_ident.conf (map \"" + IdentMap + "\"). Every other role logs in with its password.\n")
	b.WriteString("# TYPE\tDATABASE\tUSER\tADDRESS\tMETHOD\n")
	fmt.Fprintf(&b, "local\tall\t%s\t\tpeer map=%s\n", adminRole, IdentMap)
	b.WriteString("local\tall\tall\t\tmd5\n")
	b.WriteString(NeonHBALine + "\n")
	return b.String(), nil
}

// IdentStandalone returns pg_ident.conf mapping each OS user (DefaultIdentOSUsers when
// osUsers is empty) to the admin role in the "compute" map.
func IdentStandalone(adminRole string, osUsers []string) (string, error) {
	if err := CheckAdminRole(adminRole); err != nil {
		return "", err
	}
	if len(osUsers) == 0 {
		osUsers = DefaultIdentOSUsers
	}
	var b strings.Builder
	b.WriteString("# pg_ident.conf of a standalone compute, written by compute-tools.\n")
	b.WriteString("# MAPNAME\tSYSTEM-USERNAME\tPG-USERNAME\n")
	for _, u := range osUsers {
		if !simpleName(u, true) {
			return "", fmt.Errorf("ident map: OS user %q: only lowercase letters, digits, _, - and . are allowed", u)
		}
		fmt.Fprintf(&b, "%s\t%s\t%s\n", IdentMap, u, adminRole)
	}
	return b.String(), nil
}

// AppendHBALine returns the pg_hba.conf content with NeonHBALine added at the end,
// unless an identical line is already there (what compute_ctl does to the pg_hba.conf
// of a pageserver basebackup).
func AppendHBALine(content string) string {
	for _, l := range strings.Split(content, "\n") {
		if strings.TrimSuffix(l, "\r") == NeonHBALine {
			return content
		}
	}
	if content != "" && !strings.HasSuffix(content, "\n") {
		content += "\n"
	}
	return content + NeonHBALine + "\n"
}
