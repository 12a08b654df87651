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
	if code != 0 || !strings.Contains(out, "ok (8 rules, default deny") {
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

// Lists load relative to the config file, check reports them, explain
// judges by list and by --domain, and a bad list line fails check with its
// file and line.
func TestListsCheckAndExplain(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ads.hosts"), []byte("# hosts\n0.0.0.0 ads.example.com\n0.0.0.0 track.example.net\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "nets.txt"), []byte("203.0.113.0/24\n2001:db8:bad::/48\nbogus line here\n"), 0o644)
	path := filepath.Join(dir, "lists.yaml")
	os.WriteFile(path, []byte(`lists:
  ads: {file: ads.hosts}
  bad-nets: {file: nets.txt, lenient: true}
policy:
  default: allow
  rules:
    - {name: no-ads, action: reject, domain_list: [ads]}
    - {name: no-bad-nets, action: deny, dst_list: [bad-nets]}
`), 0o644)
	out, stderr, code := tunwallCLI(t, "check", "-c", path)
	for _, want := range []string{"list ads: " + filepath.Join(dir, "ads.hosts") + ": 0 addresses, 2 domains", "list bad-nets: " + filepath.Join(dir, "nets.txt") + ": 2 addresses, 0 domains, 1 bad lines skipped"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("check: exit %d, got %q%s, want %q", code, out, stderr, want)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--domain", "ADS.example.com.", "tcp", "10.0.0.2", "192.0.2.1:443"}, `reject: rule "no-ads"`},
		{[]string{"--domain", "www.example.com", "tcp", "10.0.0.2", "192.0.2.1:443"}, `allow: no rule matches`},
		{[]string{"tcp", "10.0.0.2", "192.0.2.1:443"}, "note: rules with domains or domain lists are skipped"},
		{[]string{"udp", "10.0.0.2", "203.0.113.9:53"}, `deny: rule "no-bad-nets"`},
		{[]string{"icmp", "2001:db8::1", "2001:db8:bad::1"}, `deny: rule "no-bad-nets"`},
	} {
		out, stderr, code := tunwallCLI(t, append([]string{"explain", "-c", path}, tt.args...)...)
		if code != 0 || !strings.Contains(out, tt.want) {
			t.Errorf("explain %v: exit %d, got %q%s, want %q", tt.args, code, out, stderr, tt.want)
		}
	}
	strict := strings.Replace(mustRead(t, path), ", lenient: true", "", 1)
	os.WriteFile(path, []byte(strict), 0o644)
	_, stderr, code = tunwallCLI(t, "check", "-c", path)
	if want := filepath.Join(dir, "nets.txt") + ":3:1: list \"bad-nets\""; code != 2 || !strings.Contains(stderr, want) {
		t.Errorf("check with a bad list line: exit %d, stderr %q, want 2 and %q", code, stderr, want)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// explain --at judges a flow at a given time against time windows.
func TestExplainAt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "when.yaml")
	os.WriteFile(path, []byte("policy:\n  default: allow\n  rules:\n    - {name: night, action: deny, when: {days: [mon-fri], time: [\"22:00-06:00\"], zone: UTC}}\n"), 0o644)
	for _, tt := range []struct{ at, want string }{
		{"2026-11-23T23:00:00Z", `deny: rule "night"`},     // Monday night
		{"2026-11-24T05:59:00Z", `deny: rule "night"`},     // still Monday's night
		{"2026-11-24T06:00:00Z", `allow: no rule matches`}, // the end is outside
		{"2026-11-24T06:00:00Z", `rule #1 "night" (` + path + `:4) does not match: Tue 06:00 UTC is outside the rule's time window`},
		{"2026-11-29T05:00:00Z", `allow: no rule matches`}, // Sunday: Saturday night is not listed
	} {
		out, stderr, code := tunwallCLI(t, "explain", "-c", path, "--at", tt.at, "tcp", "10.0.0.1", "10.0.0.2:80")
		if code != 0 || !strings.Contains(out, tt.want) {
			t.Errorf("explain --at %s: exit %d, got %q%s, want %q", tt.at, code, out, stderr, tt.want)
		}
	}
	if _, stderr, code := tunwallCLI(t, "explain", "-c", path, "--at", "teatime", "tcp", "10.0.0.1", "10.0.0.2:80"); code != 2 || !strings.Contains(stderr, "--at") {
		t.Errorf("explain --at teatime: exit %d (%q), want 2 naming --at", code, stderr)
	}
}
