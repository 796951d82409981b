package migrations

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}

// effect is everything about an entry that reaches the database.
func effect(m Migration) string {
	sql := ""
	if m.SQL != nil {
		sql = m.SQL("neon_superuser")
	}
	return fmt.Sprintf("%d|%v|%s", m.MinPGVersion, m.Skip, sql)
}

// TestAppendOnly pins every entry. Changing, reordering or removing an entry must make this
// test fail: computes remember only the last id they applied. To add a migration, append
// it to All and append its line here.
func TestAppendOnly(t *testing.T) {
	pinned := []struct {
		id           int
		name, effect string // shortHash of Name and of effect()
	}{
		{1, "a35e6d9f546c", "c5cefb0a1415"},
		{2, "5ccf6de7d4fb", "aa7e9eca1b8c"},
		{3, "1a86b9c52e5f", "5a3857314ba1"},
		{4, "61be8893f627", "b0e5555a41e2"},
		{5, "b8c95026715b", "35057cb9b3fe"},
		{6, "139016c4b361", "35057cb9b3fe"},
		{7, "6f4393ff8303", "35057cb9b3fe"},
		{8, "10e6324d24d0", "35057cb9b3fe"},
		{9, "4beec1c59656", "35057cb9b3fe"},
		{10, "4c6673f075d9", "93ca1006ed38"},
		{11, "530f453ff4c7", "3f25e5911cd7"},
		{12, "845b44f8a43e", "b183d1c73eaf"},
	}
	if len(All) < len(pinned) {
		t.Fatalf("All has %d entries, %d are pinned: entries were removed", len(All), len(pinned))
	}
	for i, m := range All {
		if m.ID != i+1 {
			t.Errorf("entry %d has ID %d, want %d (ids are 1, 2, 3, … in list order)", i, m.ID, i+1)
		}
		if i >= len(pinned) {
			t.Errorf("entry %d (%q) is not pinned: append {%d, %q, %q} to the table", m.ID, m.Name, m.ID, shortHash(m.Name), shortHash(effect(m)))
			continue
		}
		p := pinned[i]
		if got := shortHash(m.Name); p.id != m.ID || p.name != got {
			t.Errorf("entry %d: name %q hashes to %s, pinned {%d, %s}: existing entries must not change", m.ID, m.Name, got, p.id, p.name)
		}
		if got := shortHash(effect(m)); p.effect != got {
			t.Errorf("entry %d (%q): effect hashes to %s, pinned %s: existing entries must not change", m.ID, m.Name, got, p.effect)
		}
	}
}

func TestListShape(t *testing.T) {
	for _, m := range All {
		if m.Skip != (m.SQL == nil) {
			t.Errorf("entry %d: Skip=%v but SQL set=%v", m.ID, m.Skip, m.SQL != nil)
		}
		if m.Name == "" {
			t.Errorf("entry %d has no name", m.ID)
		}
	}
}

// TestPrivilegedRoleQuoted checks that a hostile role name stays one identifier in every
// entry's SQL (the catalog tests run the SQL for real with an ordinary name).
func TestPrivilegedRoleQuoted(t *testing.T) {
	const hostile = `x" SUPERUSER; --'\$m$`
	quoted := `"x"" SUPERUSER; --'\$m$"`
	for _, m := range All {
		if m.SQL == nil {
			continue
		}
		sql := m.SQL(hostile)
		if strings.Contains(sql, `"x" SUPERUSER`) {
			t.Errorf("entry %d: role name not quoted: %s", m.ID, sql)
		}
		if m.ID == 2 {
			// Inside the DO body the quoted name is an E'' literal, and the dollar-quote
			// tag must not occur in the body.
			want := `E'"x"" SUPERUSER; --''\\$m$"'`
			if !strings.Contains(sql, want) {
				t.Errorf("entry 2: want literal %s in:\n%s", want, sql)
			}
			if !strings.HasPrefix(sql, "DO $mm$") || strings.Count(sql, "$mm$") != 2 {
				t.Errorf("entry 2: dollar quoting broken:\n%s", sql)
			}
			continue
		}
		if !strings.Contains(sql, quoted) {
			t.Errorf("entry %d: want %s in: %s", m.ID, quoted, sql)
		}
	}
}
