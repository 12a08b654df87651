package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// tunwallCLI runs the built binary and returns stdout, stderr and the exit
// code.
func tunwallCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(filepath.Join(bin, "tunwall"), args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	}
	t.Fatal(err)
	return "", "", -1
}

// TestCheckBrokenConfigs needs no root: it only reads files.
func TestCheckBrokenConfigs(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"bad CIDR", "policy:\n  rules:\n    - name: web\n      action: allow\n      dst: [10.1.0.0/99]\n", `:5:13: rule "web": dst: "10.1.0.0/99" is not a CIDR`},
		{"duplicate name", "policy:\n  rules:\n    - {name: a, action: allow}\n    - {name: a, action: deny}\n", `:4:14: rule "a": duplicate name`},
		{"unknown key", "policy:\n  rules:\n    - name: a\n      action: allow\n      port: [80]\n", `:5:7: unknown field "port"`},
		{"bad port", "policy:\n  rules:\n    - name: p\n      action: allow\n      proto: tcp\n      ports: [99999]\n", `:6:15: rule "p": port "99999": want 1-65535`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "broken.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			_, stderr, code := tunwallCLI(t, "check", "-c", path)
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if !strings.Contains(stderr, path+tt.want) {
				t.Errorf("stderr does not name the position:\n%s\nwant %s%s", stderr, path, tt.want)
			}
		})
	}
}

func TestCheckGoodConfig(t *testing.T) {
	out, stderr, code := tunwallCLI(t, "check", "-c", "testdata/gateway.yaml")
	if code != 0 || !strings.Contains(out, "ok (6 rules, default deny") {
		t.Fatalf("check of the suite's own config: exit %d\n%s%s", code, out, stderr)
	}
}

// TestRunRefusesBadConfigBeforeDevice: an invalid file exits 2 and creates
// nothing (needs no root: it must fail before touching any device).
func TestRunRefusesBadConfigBeforeDevice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broken.yaml")
	os.WriteFile(path, []byte("tun:\n  name: twbad0\n  mtu: 10\n"), 0o644)
	_, stderr, code := tunwallCLI(t, "run", "-c", path)
	if code != 2 || !strings.Contains(stderr, ":3:8: tun.mtu 10 out of range") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	if _, err := os.Stat("/sys/class/net/twbad0"); err == nil {
		t.Fatal("run created the device despite the bad config")
	}
}

func TestExplain(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"tcp", "10.77.1.2", "10.77.2.2:7009"}, `reject: rule "reject-7009" (rule #2, testdata/gateway.yaml:17)`},
		{[]string{"udp", "10.77.1.2:5000", "10.77.2.2:7001"}, `allow: rule "lab-services"`},
		{[]string{"icmp", "fd77:1::2", "fd77:2::3"}, `deny: rule "deny-ping-alt"`},
		{[]string{"tcp", "10.77.1.2", "10.77.2.2:443"}, `deny: no rule matches, policy.default is deny`},
	}
	for _, tt := range tests {
		out, stderr, code := tunwallCLI(t, append([]string{"explain", "-c", "testdata/gateway.yaml"}, tt.args...)...)
		if code != 0 || !strings.Contains(out, tt.want) {
			t.Errorf("explain %v: exit %d, got %q%s, want %q", tt.args, code, out, stderr, tt.want)
		}
	}
	if _, _, code := tunwallCLI(t, "explain", "tcp", "10.0.0.1", "10.0.0.2"); code != 2 {
		t.Errorf("explain without a destination port: exit %d, want 2", code)
	}
}

// explain --user and --app judge a flow from this machine by its owner;
// without them users/apps rules are skipped, and it says so.
func TestExplainOwner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "apps.yaml")
	os.WriteFile(path, []byte(`policy:
  default: allow
  rules:
    - {name: no-root-web, action: reject, users: [root], proto: tcp, ports: [443]}
    - {name: no-curl, action: deny, apps: [curl]}
`), 0o644)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--user", "root", "tcp", "198.18.0.1", "192.0.2.1:443"}, `reject: rule "no-root-web"`},
		{[]string{"--user", "0", "tcp", "198.18.0.1", "192.0.2.1:443"}, `reject: rule "no-root-web"`},
		{[]string{"--user", "64101", "--app", "/usr/bin/curl", "tcp", "198.18.0.1", "192.0.2.1:443"}, `deny: rule "no-curl"`},
		{[]string{"--app", "/usr/bin/wget", "udp", "198.18.0.1", "192.0.2.1:53"}, `allow: no rule matches`},
		{[]string{"tcp", "198.18.0.1", "192.0.2.1:443"}, "note: rules with users or apps are skipped"},
	}
	for _, tt := range tests {
		out, stderr, code := tunwallCLI(t, append([]string{"explain", "-c", path}, tt.args...)...)
		if code != 0 || !strings.Contains(out, tt.want) {
			t.Errorf("explain %v: exit %d, got %q%s, want %q", tt.args, code, out, stderr, tt.want)
		}
	}
	for _, bad := range [][]string{{"--user", "no-such-user-tw"}, {"--app", "curl"}} {
		if _, stderr, code := tunwallCLI(t, append(append([]string{"explain", "-c", path}, bad...), "tcp", "198.18.0.1", "192.0.2.1:443")...); code != 2 || stderr == "" {
			t.Errorf("explain %v: exit %d (%q), want 2 with a message", bad, code, stderr)
		}
	}
}
