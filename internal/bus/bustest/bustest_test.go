package bustest

import (
	"strings"
	"testing"
)

func TestSystemLikeConfig(t *testing.T) {
	in := `<!DOCTYPE busconfig>
<busconfig>
  <type>system</type>
  <user>messagebus</user>
  <fork/>
  <standard_system_servicedirs/>
  <servicehelper>/usr/lib/dbus-1.0/dbus-daemon-launch-helper</servicehelper>
  <pidfile>/run/dbus/pid</pidfile>
  <syslog/>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <policy context="default"><deny own="*"/></policy>
  <include ignore_missing="yes">/etc/dbus-1/system.conf</include>
  <includedir>system.d</includedir>
  <includedir>/etc/dbus-1/system.d</includedir>
  <include if_selinux_enabled="yes" selinux_root_relative="yes">contexts/dbus_contexts</include>
</busconfig>
`
	got, err := SystemLikeConfig(in, "/tmp/x/sock", "/tmp/x/policy")
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"<user>", "<fork", "servicedirs", "<servicehelper>", "<pidfile>", "<syslog", "/run/dbus", "system.d<", "/etc/dbus-1", "selinux"} {
		if strings.Contains(got, gone) {
			t.Errorf("rewritten config still has %q:\n%s", gone, got)
		}
	}
	for _, kept := range []string{"<type>system</type>", `<deny own="*"/>`, "<listen>unix:path=/tmp/x/sock</listen>", "<includedir>/tmp/x/policy</includedir>\n</busconfig>"} {
		if !strings.Contains(got, kept) {
			t.Errorf("rewritten config lacks %q:\n%s", kept, got)
		}
	}
	if _, err := SystemLikeConfig("<busconfig></busconfig>", "/s", "/d"); err == nil {
		t.Error("a config without <listen> was accepted")
	}
}
