package safetar

import (
	"path"
	"strings"
	"testing"
)

// FuzzNames checks the two name rules every unpacker relies on, for any entry name and
// link target: a name CleanName accepts is a clean relative path that stays inside the
// directory; a link CheckLinkTarget accepts, placed at any accepted name, points inside
// the directory (lexically; Dir refuses to go through links on disk). Refusals are
// *UnsafeEntryError.
func FuzzNames(f *testing.F) {
	for _, s := range [][2]string{
		{"base/1/PG_VERSION", "../x"}, {"./a/./b/", "a/b"}, {"../evil", ""}, {"/abs", "/etc"},
		{"a/../../b", "a/.."}, {"a\x00b", "x\x00"}, {".", "."}, {"a//b", "b//c"}, {"..a/b..", "...."},
		{"a/..", ".."}, {"", ""}, {"a/b/c", "./.././x"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, name, target string) {
		rel, err := CleanName(name)
		if err != nil {
			if !isUnsafe(err) {
				t.Fatalf("CleanName(%q): %v is not an *UnsafeEntryError", name, err)
			}
			return
		}
		switch {
		case rel == "" || path.Clean(rel) != rel:
			t.Fatalf("CleanName(%q) = %q: not clean", name, rel)
		case strings.HasPrefix(rel, "/") || rel == ".." || strings.HasPrefix(rel, "../"):
			t.Fatalf("CleanName(%q) = %q: leaves the directory", name, rel)
		case strings.ContainsRune(rel, 0):
			t.Fatalf("CleanName(%q) = %q: NUL", name, rel)
		}
		if err := CheckLinkTarget(name, target); err != nil {
			if !isUnsafe(err) {
				t.Fatalf("CheckLinkTarget(%q): %v is not an *UnsafeEntryError", target, err)
			}
			return
		}
		if strings.ContainsRune(target, 0) {
			t.Fatalf("CheckLinkTarget accepted %q with a NUL", target)
		}
		if to := path.Join(path.Dir(rel), target); to == ".." || strings.HasPrefix(to, "../") || strings.HasPrefix(to, "/") {
			t.Fatalf("link %q -> %q resolves to %q, outside the directory", rel, target, to)
		}
	})
}
