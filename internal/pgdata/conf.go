package pgdata

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/computetools/compute-tools/internal/pgconf"
	"github.com/computetools/compute-tools/internal/spec"
)

// files are the names postgresql.conf refers to.
var files = pgconf.Files{TempOverride: TempOverrideFile, ServerCert: ServerCertFile, ServerKey: ServerKeyFile}

// WritePostgresConf renders postgresql.conf for p (pgconf.PostgresqlConf, with the names
// of the files it refers to filled in) and writes it, and makes sure the temp override
// file exists: postgresql.conf includes it last, and later steps write into it.
func (d Dir) WritePostgresConf(p *spec.Parsed, o pgconf.Options) error {
	o.Files = files
	if err := d.write(ConfFile, []byte(pgconf.PostgresqlConf(p, o))); err != nil {
		return err
	}
	if _, err := os.Stat(d.File(TempOverrideFile)); errors.Is(err, fs.ErrNotExist) {
		if err := d.write(TempOverrideFile, nil); err != nil {
			return err
		}
	}
	return nil
}

// Auth says who may log in as the admin role: AdminRole, over the unix socket only, as
// one of the OS users OSUsers (peer authentication through the ident map). LegacyRoles
// log in the same way (neon mode: paths.LegacyAdminRole, for old timelines).
type Auth struct {
	AdminRole   string
	OSUsers     []string
	LegacyRoles []string
}

// WriteAuth writes the compute's pg_hba.conf and pg_ident.conf (pgconf.HBA and
// pgconf.Ident), in both storage modes: the admin role logs in over the unix socket as
// one of a.OSUsers, every other role with its password. Nothing is written when either
// file cannot be rendered.
func (d Dir) WriteAuth(a Auth) error {
	hba, err := pgconf.HBA(a.AdminRole, a.LegacyRoles...)
	if err != nil {
		return err
	}
	ident, err := pgconf.Ident(a.AdminRole, a.OSUsers, a.LegacyRoles...)
	if err != nil {
		return err
	}
	if err := d.write(HBAFile, []byte(hba)); err != nil {
		return err
	}
	return d.write(IdentFile, []byte(ident))
}

// WriteTempOverride replaces the content of the temp override file.
func (d Dir) WriteTempOverride(body string) error { return d.write(TempOverrideFile, []byte(body)) }

// TempOverride reads the temp override file.
func (d Dir) TempOverride() (string, error) {
	b, err := os.ReadFile(d.File(TempOverrideFile))
	if err != nil {
		return "", fmt.Errorf("read temp override: %w", err)
	}
	return string(b), nil
}

// EnableSubscribers makes sure that postgresql.conf ends up with logical replication
// subscribers enabled (pgconf.EnableSubscribers), and reports whether it changed the
// file (a reload is then due).
func (d Dir) EnableSubscribers() (bool, error) {
	b, err := os.ReadFile(d.File(ConfFile))
	if err != nil {
		return false, fmt.Errorf("enable subscribers: %w", err)
	}
	conf, changed := pgconf.EnableSubscribers(string(b))
	if !changed {
		return false, nil
	}
	if err := d.write(ConfFile, []byte(conf)); err != nil {
		return false, fmt.Errorf("enable subscribers: %w", err)
	}
	return true, nil
}
