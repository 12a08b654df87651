package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUsageErrors: commands given the wrong arguments exit 2 and say what
// was wrong, before doing anything.
func TestUsageErrors(t *testing.T) {
	one := filepath.Join(t.TempDir(), "one.yaml")
	if err := os.WriteFile(one, []byte("policy:\n  default: deny\n  rules:\n    - {name: web, action: allow, proto: tcp, ports: [443]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty.yaml")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{nil, 2, "", "usage:"},
		{[]string{"bogus"}, 2, "", `unknown command "bogus"`},
		{[]string{"check"}, 2, "", "check: -c FILE is required\n"},
		{[]string{"check", one}, 2, "", "check: -c FILE is required (tunwall check -c " + one + ")"},
		{[]string{"check", "-c", one, "extra"}, 2, "", `check: unexpected arguments ["extra"]`},
		{[]string{"check", "-c", one}, 0, "ok (1 rule, default deny", ""},
		{[]string{"check", "-c", empty}, 0, "ok (0 rules, default deny, tun tw0, routing none)\nnote: the file has 0 bytes", ""},
		{[]string{"down", "extra"}, 2, "", `down: unexpected arguments ["extra"]`},
		{[]string{"version", "extra"}, 2, "", `version: unexpected arguments ["extra"]`},
		{[]string{"version"}, 0, "tunwall ", ""},
		{[]string{"explain", "tcp"}, 2, "", "got 1 argument\n"},
		{[]string{"explain", "tcp", "10.0.0.2"}, 2, "", "got 2 arguments\n"},
		{[]string{"explain", "tcp", "10.0.0.2", "example.com:443"}, 2, "", `"example.com:443" is not an address or address:port (for a name, give an address and --domain example.com)`},
		{[]string{"explain", "tcp", "10.0.0.2", "fe80::zz"}, 2, "", "\"fe80::zz\" is not an address or address:port\n"},
		{[]string{"explain", "tcp", "10.0.0.2", "192.0.2.1:70000"}, 2, "", `"192.0.2.1:70000": port "70000": want 1-65535`},
		{[]string{"explain", "tcp", "10.0.0.2", "[2001:db8::1]:http"}, 2, "", `"[2001:db8::1]:http": port "http": want 1-65535`},
		// Flags may follow the arguments; after -- all are arguments.
		{[]string{"explain", "tcp", "10.0.0.2", "192.0.2.1:443", "-c", one}, 0, `allow: rule "web"`, ""},
		{[]string{"explain", "-c", one, "tcp", "10.0.0.2", "--at", "2026-11-23 09:00", "192.0.2.1:443"}, 0, `allow: rule "web"`, ""},
		{[]string{"explain", "-c", one, "--", "tcp", "10.0.0.2", "192.0.2.1:443"}, 0, `allow: rule "web"`, ""},
		{[]string{"explain", "-c", one, "tcp", "10.0.0.2", "192.0.2.1:443", "--", "--at"}, 2, "", "got 4 arguments\n"},
		{[]string{"explain", "tcp", "10.0.0.2", "192.0.2.1:443", "--bogus"}, 2, "", "explain: flag provided but not defined: -bogus"},
		{[]string{"check", one, "-c", one}, 2, "", `check: unexpected arguments ["`},
		// The commands that talk to a running tunwall judge their command
		// line first, whether or not one runs.
		{[]string{"kill"}, 2, "", "kill: want one flow ID (see tunwall flows)\n"},
		{[]string{"kill", "x"}, 2, "", `kill: "x" is not a flow ID`},
		{[]string{"kill", "0"}, 2, "", `kill: "0" is not a flow ID`},
		{[]string{"kill", "1", "2"}, 2, "", "kill: want one flow ID"},
		{[]string{"flows", "--json", "extra"}, 2, "", `flows: unexpected arguments ["extra"]`},
		{[]string{"stats", "x"}, 2, "", `stats: unexpected arguments ["x"]`},
		{[]string{"dashboard", "x"}, 2, "", `dashboard: unexpected arguments ["x"]`},
		{[]string{"capture", "--denied"}, 2, "", "capture: -w FILE is required (- for standard output)\n"},
		{[]string{"capture", "-w", "-"}, 2, "", "capture: give --denied or --flow ID, one of them\n"},
		{[]string{"capture", "--flow", "0", "-w", "-"}, 2, "", `capture: --flow "0" is not a flow ID`},
		{[]string{"capture", "--denied", "-w", "-", "--count", "-1"}, 2, "", `capture: --count "-1" is not a number`},
		{[]string{"capture", "--denied", "-w", "-", "--max-bytes", "10x"}, 2, "", `capture: --max-bytes: "10x" is not a size`},
		{[]string{"capture", "--denied", "-w", "-", "--max-bytes", "39"}, 2, "", "capture: --max-bytes 39: want at least 40 bytes (the file's header and one packet's)\n"},
	} {
		code, out, errOut := cli(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errOut, tc.stderr) {
			t.Errorf("tunwall %s: exit %d, stdout %q, stderr %q; want %d, %q, %q",
				strings.Join(tc.args, " "), code, out, errOut, tc.code, tc.stdout, tc.stderr)
		}
	}
}

// TestCommandHelp: -h or --help after a command, and "help COMMAND", print
// that command's usage on stdout and exit 0.
func TestCommandHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--help"}, "  tunwall run     [-c FILE] [--keep-blocked]"},
		{[]string{"explain", "tcp", "-h"}, "                  [--at TIME]"},
		{[]string{"kill", "-help"}, "  tunwall kill    [-c FILE|--socket PATH] ID"},
		{[]string{"version", "--help"}, "  tunwall version\n"},
		{[]string{"help", "capture"}, "pcap of refused packets"},
		{[]string{"help", "version"}, "  tunwall version\n"},
	} {
		code, out, errOut := cli(tc.args...)
		if code != 0 || errOut != "" || !strings.HasPrefix(out, "usage:\n") || !strings.Contains(out, tc.want) || !strings.Contains(out, "Exit codes:") {
			t.Errorf("tunwall %s: exit %d, stdout %q, stderr %q; want 0 and usage with %q", strings.Join(tc.args, " "), code, out, errOut, tc.want)
		}
		if lines := strings.Count(out, "\n  tunwall "); lines != 1 {
			t.Errorf("tunwall %s: usage of %d commands, want 1:\n%s", strings.Join(tc.args, " "), lines, out)
		}
	}
	if code, out, _ := cli("help"); code != 0 || strings.Count(out, "\n  tunwall ") < 10 {
		t.Errorf("tunwall help: exit %d, want every command:\n%s", code, out)
	}
}
