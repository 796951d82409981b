package pgconf

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/computetools/compute-tools/internal/spec"
)

// NeonHBALine is the line compute_ctl appends to pg_hba.conf: every role may log in
// with its password from anywhere. The bytes are Neon's exactly: one tab, then double
// tabs.
const NeonHBALine = "host\tall\t\tall\t\tall\t\tmd5"

// IdentMap is the pg_ident.conf map through which OS users become the admin role.
const IdentMap = "compute"

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

// HBA returns the compute's pg_hba.conf, in both storage modes: the admin role connects
// over the unix socket with peer authentication through the "compute" ident map, for
// replication connections too (pg_basebackup, as the initdb defaults of a neon
// basebackup's pg_hba.conf allowed it locally); every
// other role logs in with its password, over the socket or over TCP (Neon's line). There
// is no trust line: in neon mode it replaces the basebackup's pg_hba.conf, whose initdb
// defaults trust every local connection (compute_ctl keeps that file and appends Neon's
// line to it). The legacy roles (neon mode: zenith_admin, the superuser of old
// timelines) log in exactly as the admin role does, on the same line.
func HBA(adminRole string, legacy ...string) (string, error) {
	roles, err := adminRoles(adminRole, legacy)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("# pg_hba.conf of the compute, written by compute-tools at every start.\n")
	b.WriteString("# The admin role logs in only over the unix socket, as an OS user mapped to it in\n")
	b.WriteString("# pg_ident.conf (map \"" + IdentMap + "\"). Every other role logs in with its password.\n")
	b.WriteString("# TYPE\tDATABASE\tUSER\tADDRESS\tMETHOD\n")
	fmt.Fprintf(&b, "local\tall\t%s\t\tpeer map=%s\n", strings.Join(roles, ","), IdentMap)
	fmt.Fprintf(&b, "local\treplication\t%s\t\tpeer map=%s\n", strings.Join(roles, ","), IdentMap)
	b.WriteString("local\tall\tall\t\tmd5\n")
	b.WriteString(NeonHBALine + "\n")
	return b.String(), nil
}

// adminRoles checks the admin role and the legacy roles (CheckAdminRole) and returns
// them in that order, without repeats.
func adminRoles(adminRole string, legacy []string) ([]string, error) {
	roles := []string{adminRole}
	if err := CheckAdminRole(adminRole); err != nil {
		return nil, err
	}
	for _, r := range legacy {
		if err := CheckAdminRole(r); err != nil {
			return nil, fmt.Errorf("legacy %w", err)
		}
		if !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	return roles, nil
}

// Ident returns pg_ident.conf mapping each of osUsers (at least one; the installed
// compute's list is paths.AdminOSUsers) to the admin role, and to each legacy role, in
// the "compute" map.
func Ident(adminRole string, osUsers []string, legacy ...string) (string, error) {
	roles, err := adminRoles(adminRole, legacy)
	if err != nil {
		return "", err
	}
	if len(osUsers) == 0 {
		return "", errors.New("ident map: no OS user may act as the admin role")
	}
	var b strings.Builder
	b.WriteString("# pg_ident.conf of the compute, written by compute-tools at every start.\n")
	b.WriteString("# MAPNAME\tSYSTEM-USERNAME\tPG-USERNAME\n")
	for _, u := range osUsers {
		if !simpleName(u, true) {
			return "", fmt.Errorf("ident map: OS user %q: only lowercase letters, digits, _, - and . are allowed", u)
		}
		for _, r := range roles {
			fmt.Fprintf(&b, "%s\t%s\t%s\n", IdentMap, u, r)
		}
	}
	return b.String(), nil
}
