package paths

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const generator = "packaging/systemd/compute-tools-generator"

// shells are the POSIX shells the generator is run with: /bin/sh (dash on Debian, what
// systemd runs it with through its #! line), and the others found here.
func shells(t *testing.T) [][]string {
	var out [][]string
	for _, sh := range [][]string{{"/bin/sh"}, {"dash"}, {"bash", "--posix"}, {"busybox", "sh"}} {
		if p, err := exec.LookPath(sh[0]); err == nil {
			out = append(out, append([]string{p}, sh[1:]...))
		}
	}
	if len(out) == 0 {
		t.Fatal("no POSIX shell found")
	}
	return out
}

// runGenerator runs the generator with the settings file holding content (no file when
// content is nil) and returns its normal output directory.
func runGenerator(t *testing.T, sh []string, content *string) string {
	t.Helper()
	return runGeneratorPolkit(t, sh, content, true)
}

// runGeneratorPolkit is runGenerator on an image with or without polkit (polkitd 0.106
// or later).
func runGeneratorPolkit(t *testing.T, sh []string, content *string, polkit bool) string {
	return runGeneratorPolkitd(t, sh, content, polkit, polkit)
}

// runGeneratorPolkitd: service, the D-Bus service file of polkit; daemon, the polkitd of
// a polkit that reads JavaScript rules.
func runGeneratorPolkitd(t *testing.T, sh []string, content *string, service, daemon bool) string {
	t.Helper()
	return runGeneratorOpts(t, sh, genOpts{content: content, polkitService: service, polkitd: daemon})
}

// genOpts is what the generator finds: the settings file (nil: none), polkit's D-Bus
// service file and daemon, and the control-plane token credential (plain or encrypted)
// in a credential store, among the credentials PID 1 received (/run/credentials/@system,
// @encrypted), or in the $CREDENTIALS_DIRECTORY ($ENCRYPTED_CREDENTIALS_DIRECTORY) the
// generator is given.
type genOpts struct {
	content                  *string
	polkitService, polkitd   bool
	plainCred, encryptedCred bool
	systemCred, systemEnc    bool
	envCred, envEnc          bool
}

// runGeneratorOpts runs the generator on what o describes and returns its normal output
// directory.
func runGeneratorOpts(t *testing.T, sh []string, o genOpts) string {
	t.Helper()
	content, service, daemon := o.content, o.polkitService, o.polkitd
	dir := t.TempDir()
	store, encStore := filepath.Join(dir, "credstore"), filepath.Join(dir, "credstore.encrypted")
	sysCreds, sysEnc := filepath.Join(dir, "@system"), filepath.Join(dir, "@encrypted")
	envCreds, envEnc := filepath.Join(dir, "generator-credentials"), filepath.Join(dir, "generator-encrypted")
	for _, c := range []struct {
		dir  string
		with bool
	}{{store, o.plainCred}, {encStore, o.encryptedCred}, {sysCreds, o.systemCred}, {sysEnc, o.systemEnc}, {envCreds, o.envCred}, {envEnc, o.envEnc}} {
		if err := os.Mkdir(c.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if c.with {
			if err := os.WriteFile(filepath.Join(c.dir, "compute-control-plane-token"), []byte("secret\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	polkitService := filepath.Join(dir, "org.freedesktop.PolicyKit1.service")
	if service {
		if err := os.WriteFile(polkitService, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	polkitd := filepath.Join(dir, "polkitd")
	if daemon {
		if err := os.WriteFile(polkitd, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := filepath.Join(dir, "compute-tools")
	if content != nil {
		if err := os.WriteFile(env, []byte(*content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	normal, early, late := filepath.Join(dir, "normal"), filepath.Join(dir, "early"), filepath.Join(dir, "late")
	for _, d := range []string{normal, early, late} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script, err := filepath.Abs(filepath.Join(repoRoot, generator))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sh[0], append(sh[1:], script, normal, early, late)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "COMPUTE_TOOLS_ENV_FILE=" + env, "COMPUTE_TOOLS_POLKIT_SERVICE=" + polkitService, "COMPUTE_TOOLS_POLKITD=" + polkitd,
		"COMPUTE_TOOLS_CREDSTORE_DIRS=" + filepath.Join(dir, "nonexistent") + " " + store,
		"COMPUTE_TOOLS_CREDSTORE_ENCRYPTED_DIRS=" + encStore,
		"COMPUTE_TOOLS_SYSTEM_CREDENTIALS_DIR=" + sysCreds, "COMPUTE_TOOLS_SYSTEM_ENCRYPTED_CREDENTIALS_DIR=" + sysEnc}
	if o.envCred {
		cmd.Env = append(cmd.Env, "CREDENTIALS_DIRECTORY="+envCreds)
	}
	if o.envEnc {
		cmd.Env = append(cmd.Env, "ENCRYPTED_CREDENTIALS_DIRECTORY="+envEnc)
	}
	if out, err := cmd.CombinedOutput(); err != nil || len(out) != 0 {
		t.Fatalf("%v %s: %v\n%s", sh, generator, err, out)
	}
	for _, d := range []string{early, late} {
		if ents, _ := os.ReadDir(d); len(ents) != 0 {
			t.Errorf("the generator wrote into %s", d)
		}
	}
	return normal
}

func TestGenerator(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, c := range []struct {
		name    string
		content *string
		on      bool
	}{
		{"no file", nil, false},
		{"empty file", s(""), false},
		{"the packaged file", nil, false}, // filled in below
		{"bare", s("AUTOSCALING=true\n"), true},
		{"double quotes", s(`AUTOSCALING="true"` + "\n"), true},
		{"single quotes", s("AUTOSCALING='true'\n"), true},
		{"no final newline", s("PGDATA=/x\nAUTOSCALING=true"), true},
		{"leading and trailing blanks, CRLF", s(" \tAUTOSCALING=true \t\r\n"), true},
		{"among others", s("COMPUTE_ID=c\n# AUTOSCALING=false\nAUTOSCALING=true\nPGDATA=/x\n"), true},
		{"false", s("AUTOSCALING=false\n"), false},
		{"commented out", s("#AUTOSCALING=true\n"), false},
		{"commented out after blanks", s("  # AUTOSCALING=true\n"), false},
		{"last line wins: off", s("AUTOSCALING=true\nAUTOSCALING=false\n"), false},
		{"last line wins: on", s("AUTOSCALING=false\nAUTOSCALING=true\n"), true},
		{"empty value", s("AUTOSCALING=\n"), false},
		{"capitalised", s("AUTOSCALING=True\n"), false},
		{"yes", s("AUTOSCALING=yes\n"), false},
		{"one", s("AUTOSCALING=1\n"), false},
		{"unbalanced quote", s(`AUTOSCALING="true` + "\n"), false},
		{"unbalanced quote at the end of the file", s(`AUTOSCALING="true`), true},
		{"blanks around =", s("AUTOSCALING = true\n"), true},
		{"tabs around =, CRLF", s("\tAUTOSCALING\t=\ttrue\t\r\n"), true},
		{"blanks around =, quoted", s(`AUTOSCALING =  "true"  ` + "\n"), true},
		{"blank inside the name", s("AUTO SCALING=true\n"), false},
		{"quoted pieces", s(`AUTOSCALING="tr"'ue'` + "\n"), true},
		{"a quoted piece, then a bare one", s(`AUTOSCALING="tr"ue` + "\n"), true},
		{"quotes inside a bare value are kept", s(`AUTOSCALING=tr"ue"` + "\n"), false},
		{"a quoted blank", s(`AUTOSCALING="true "` + "\n"), false},
		{"blanks inside", s("AUTOSCALING=tr ue\n"), false},
		{"a backslash takes the next character", s(`AUTOSCALING=\true` + "\n"), true},
		{"a backslash in double quotes is kept before a letter", s(`AUTOSCALING="\true"` + "\n"), false},
		{"a semicolon comment", s(";AUTOSCALING=true\n"), false},
		{"blanks around =, last line wins: off", s("AUTOSCALING=true\nAUTOSCALING = false\n"), false},
		{"mixed quotes", s(`AUTOSCALING="true'` + "\n"), false},
		{"a comment after it", s("AUTOSCALING=true # on\n"), false},
		{"space before =", s("AUTOSCALING =true\n"), true},
		{"another name", s("XAUTOSCALING=true\nAUTOSCALING_X=true\n"), false},
		{"a command in it is not run", s("AUTOSCALING=$(touch /tmp/compute-tools-generator-ran)true\n"), false},
		{"garbage", s("\x00\xff\xfe=true\n'\"\\\n"), false},
	} {
		if c.name == "the packaged file" {
			b, err := os.ReadFile(filepath.Join(repoRoot, "packaging/default/compute-tools"))
			if err != nil {
				t.Fatal(err)
			}
			c.content = s(string(b))
		}
		for _, sh := range shells(t) {
			t.Run(c.name+"/"+filepath.Base(sh[0]), func(t *testing.T) {
				normal := runGenerator(t, sh, c.content)
				link := filepath.Join(normal, UnitTarget+".wants", UnitVMMonitor)
				target, err := os.Readlink(link)
				switch {
				case c.on && err != nil:
					t.Errorf("no want: %v", err)
				case c.on && target != "/usr/lib/systemd/system/"+UnitVMMonitor:
					t.Errorf("%s -> %s", link, target)
				case !c.on:
					if ents, _ := os.ReadDir(normal); len(ents) != 0 {
						t.Errorf("off, but the generator wrote %s", ents[0].Name())
					}
				}
			})
		}
	}
	if _, err := os.Stat("/tmp/compute-tools-generator-ran"); err == nil {
		t.Error("the generator ran a command substitution from the settings file")
	}
}

// TestGeneratorFiles checks the script's defaults and how it is shipped: executable, the
// settings file it reads, its place in the package.
func TestGeneratorFiles(t *testing.T) {
	st, err := os.Stat(filepath.Join(repoRoot, generator))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o111 == 0 {
		t.Errorf("%s is not executable (%v)", generator, st.Mode())
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, generator))
	if err != nil {
		t.Fatal(err)
	}
	script := string(b)
	if !strings.HasPrefix(script, "#!/bin/sh\n") {
		t.Error("the generator does not start with #!/bin/sh")
	}
	for _, want := range []string{"${COMPUTE_TOOLS_ENV_FILE:-" + EnvironmentFile + "}", "\t\t" + EnvAutoscaling + ")\n", "\t\t" + EnvOnTerminated + ")\n",
		UnitTarget + ".wants", "/usr/lib/systemd/system/" + UnitVMMonitor} {
		if !strings.Contains(script, want) {
			t.Errorf("the generator does not contain %q", want)
		}
	}
	nfpm := strings.Join(readLines(t, "nfpm.yaml"), "\n")
	want := "  - src: " + generator + "\n    dst: /usr/lib/systemd/system-generators/compute-tools-generator\n    file_info: {mode: 0755}\n"
	if !strings.Contains(nfpm+"\n", want) {
		t.Errorf("nfpm.yaml does not ship the generator as\n%s", want)
	}
}

// TestGeneratorWithoutPolkit: without polkit, compute-api and the vm-monitor run as root
// (a drop-in each), since
// systemd lets only root manage units then; with polkit nothing is written (TestGenerator).
func TestGeneratorWithoutPolkit(t *testing.T) {
	on := "AUTOSCALING=true\n"
	for _, sh := range shells(t) {
		t.Run(filepath.Base(sh[0]), func(t *testing.T) {
			// A polkit too old for JavaScript rules (0.105: the service, no
			// /usr/lib/polkit-1/polkitd) is no polkit for us.
			old := runGeneratorPolkitd(t, sh, &on, true, false)
			if _, err := os.Stat(filepath.Join(old, "compute-api.service.d", "50-no-polkit.conf")); err != nil {
				t.Errorf("polkit 0.105: no drop-in: %v", err)
			}
			normal := runGeneratorPolkit(t, sh, &on, false)
			for _, unit := range []string{"compute-api.service", UnitVMMonitor} {
				b, err := os.ReadFile(filepath.Join(normal, unit+".d", "50-no-polkit.conf"))
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(b), "\n[Service]\nUser=root\n") || !strings.Contains(string(b), "to run "+strings.TrimSuffix(unit, ".service")+" as its own user") {
					t.Errorf("%s drop-in:\n%s", unit, b)
				}
			}
			// The vm-monitor's want is written all the same.
			if _, err := os.Readlink(filepath.Join(normal, UnitTarget+".wants", UnitVMMonitor)); err != nil {
				t.Errorf("no want: %v", err)
			}
		})
	}
}

// TestGeneratorCredential: the control-plane token's credential is loaded by compute-init
// and compute-api only when the credential store has it (a credential costs a mount at
// every start), encrypted when it is encrypted; nothing else gets it.
func TestGeneratorCredential(t *testing.T) {
	for _, sh := range shells(t) {
		t.Run(filepath.Base(sh[0]), func(t *testing.T) {
			const plain, encrypted = "LoadCredential=compute-control-plane-token", "LoadCredentialEncrypted=compute-control-plane-token"
			for _, c := range []struct {
				name string
				o    genOpts
				want string
			}{
				{"none", genOpts{}, ""},
				{"plain", genOpts{plainCred: true}, plain},
				{"encrypted", genOpts{encryptedCred: true}, encrypted},
				{"both: the encrypted one", genOpts{plainCred: true, encryptedCred: true}, encrypted},
				{"received by PID 1", genOpts{systemCred: true}, plain},
				{"received by PID 1, encrypted", genOpts{systemEnc: true}, encrypted},
				{"in $CREDENTIALS_DIRECTORY", genOpts{envCred: true}, plain},
				{"in $ENCRYPTED_CREDENTIALS_DIRECTORY", genOpts{envEnc: true}, encrypted},
			} {
				o := c.o
				o.polkitService, o.polkitd = true, true
				normal := runGeneratorOpts(t, sh, o)
				var units []string
				_ = filepath.WalkDir(normal, func(p string, d os.DirEntry, err error) error {
					if err == nil && !d.IsDir() {
						rel, _ := filepath.Rel(normal, p)
						units = append(units, rel)
					}
					return nil
				})
				if c.want == "" {
					if len(units) != 0 {
						t.Errorf("%s: wrote %v", c.name, units)
					}
					continue
				}
				if len(units) != 2 {
					t.Errorf("%s: wrote %v, want the two drop-ins", c.name, units)
				}
				for _, u := range []string{UnitInit, "compute-api.service"} {
					b, err := os.ReadFile(filepath.Join(normal, u+".d", "50-control-plane-token.conf"))
					if err != nil {
						t.Errorf("%s: %v", c.name, err)
						continue
					}
					if !strings.Contains(string(b), "\n[Service]\n"+c.want+"\n") || strings.Count(string(b), "Credential") != 1 {
						t.Errorf("%s: %s:\n%s", c.name, u, b)
					}
				}
			}
		})
	}
}

// TestGeneratorPoweroff: COMPUTE_ON_TERMINATED=poweroff (the last line, bare or quoted)
// makes the generator write the drop-in the polkit rule looks for; anything else
// writes nothing, and AUTOSCALING is read as before beside it.
func TestGeneratorPoweroff(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, c := range []struct {
		name        string
		content     *string
		poweroff    bool
		autoscaling bool
	}{
		{"no file", nil, false, false},
		{"bare", s("COMPUTE_ON_TERMINATED=poweroff\n"), true, false},
		{"double quotes", s(`COMPUTE_ON_TERMINATED="poweroff"` + "\n"), true, false},
		{"single quotes, blanks, CRLF", s(" COMPUTE_ON_TERMINATED='poweroff' \r\n"), true, false},
		{"blanks around =", s("COMPUTE_ON_TERMINATED = poweroff\n"), true, false},
		{"blanks around =, quoted, no final newline", s("COMPUTE_ON_TERMINATED =\t'poweroff'"), true, false},
		{"blanks around = for both", s("AUTOSCALING = true\nCOMPUTE_ON_TERMINATED = poweroff\n"), true, true},
		{"blanks around =, then stop", s("COMPUTE_ON_TERMINATED = poweroff\nCOMPUTE_ON_TERMINATED = stop\n"), false, false},
		{"stop", s("COMPUTE_ON_TERMINATED=stop\n"), false, false},
		{"none", s("COMPUTE_ON_TERMINATED=none\n"), false, false},
		{"commented out", s("#COMPUTE_ON_TERMINATED=poweroff\n"), false, false},
		{"last line wins: off", s("COMPUTE_ON_TERMINATED=poweroff\nCOMPUTE_ON_TERMINATED=stop\n"), false, false},
		{"last line wins: on", s("COMPUTE_ON_TERMINATED=stop\nCOMPUTE_ON_TERMINATED=poweroff\n"), true, false},
		{"capitalised", s("COMPUTE_ON_TERMINATED=Poweroff\n"), false, false},
		{"another name", s("XCOMPUTE_ON_TERMINATED=poweroff\nCOMPUTE_ON_TERMINATED_X=poweroff\n"), false, false},
		{"both settings", s("AUTOSCALING=true\nCOMPUTE_ON_TERMINATED=poweroff\n"), true, true},
		{"autoscaling only", s("AUTOSCALING=true\nCOMPUTE_ON_TERMINATED=stop\n"), false, true},
	} {
		for _, sh := range shells(t) {
			t.Run(c.name+"/"+filepath.Base(sh[0]), func(t *testing.T) {
				normal := runGenerator(t, sh, c.content)
				b, err := os.ReadFile(filepath.Join(normal, PoweroffDropIn))
				switch {
				case c.poweroff && err != nil:
					t.Errorf("no drop-in: %v", err)
				case c.poweroff && (!strings.Contains(string(b), "COMPUTE_ON_TERMINATED=poweroff") || strings.Contains(string(b), "[")):
					t.Errorf("drop-in: %q, want comments only", b)
				case !c.poweroff && err == nil:
					t.Errorf("the generator wrote %s", PoweroffDropIn)
				}
				_, err = os.Lstat(filepath.Join(normal, UnitTarget+".wants", UnitVMMonitor))
				if (err == nil) != c.autoscaling {
					t.Errorf("vm-monitor want: %v, want %v", err == nil, c.autoscaling)
				}
			})
		}
	}
}
