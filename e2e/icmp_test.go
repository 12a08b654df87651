package e2e

import (
	"strings"
	"testing"

	"github.com/tunwall/tunwall/e2e/lab"
)

// ping runs one ping from the client and returns its output and whether a
// reply came back.
func ping(t *testing.T, addr string) (string, bool) {
	t.Helper()
	out, err := lb.Run(lb.Client, "ping", "-n", "-c", "1", "-W", "1", addr)
	return out, err == nil && strings.Contains(out, "1 received")
}

// An ICMP error for an allowed echo request comes back to the client, as
// through a router: here the gateway's neighbour solicitations for an
// address nobody has go unanswered (which takes about three seconds).
func TestICMPErrorsPassedOn(t *testing.T) {
	need(t)
	for _, tc := range []struct{ addr, want string }{
		{lab.Absent4, "Destination Host Unreachable"},
		{lab.Absent6, "Address unreachable"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			t.Parallel()
			out, _ := lb.Run(lb.Client, "ping", "-n", "-c", "1", "-W", "10", tc.addr)
			if !strings.Contains(out, tc.want) || strings.Contains(out, "1 received") {
				t.Errorf("ping %s: want %q and no reply, got:\n%s", tc.addr, tc.want, out)
			}
		})
	}
}

func TestICMP(t *testing.T) {
	need(t)
	tests := []struct {
		name, addr   string
		reply        bool
		action, rule string
		output       string // substring of ping's output, if any
	}{
		{"allowed v4", lab.ServerV4, true, "allow", "ping-server", ""},
		{"allowed v6", lab.ServerV6, true, "allow", "ping-server", ""},
		{"denied v4 (host exists)", lab.ServerAlt4, false, "deny", "deny-ping-alt", ""},
		{"denied v6 (host exists)", lab.ServerAlt6, false, "deny", "deny-ping-alt", ""},
		{"allowed but no such host v4", lab.Absent4, false, "allow", "ping-server", ""},
		{"allowed but no such host v6", lab.Absent6, false, "allow", "ping-server", ""},
		{"rejected v4", "10.77.2.50", false, "reject", "reject-ping-absent", "Packet filtered"},
		{"rejected v6", "fd77:2::50", false, "reject", "reject-ping-absent", "Administratively prohibited"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, replied := ping(t, tt.addr)
			if replied != tt.reply {
				t.Fatalf("ping %s: replied=%v, want %v\n%s", tt.addr, replied, tt.reply, out)
			}
			if tt.output != "" && !strings.Contains(out, tt.output) {
				t.Errorf("ping %s output lacks %q:\n%s", tt.addr, tt.output, out)
			}
			src := lab.ClientV4
			if strings.Contains(tt.addr, ":") {
				src = lab.ClientV6
			}
			e := expectVerdict(t, gw.Log, flowEvent("verdict", src, tt.addr), "ping "+tt.addr, tt.action, tt.rule)
			if e.str("proto") != "icmp" {
				t.Errorf("ping %s: verdict proto %q, want icmp", tt.addr, e.str("proto"))
			}
			if _, ok := e["icmp_type"]; !ok {
				t.Error("icmp verdict lacks icmp_type")
			}
		})
	}
}
