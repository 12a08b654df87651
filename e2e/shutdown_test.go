package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// TestSIGTERMCleansUp runs a second gateway in its own lab, holds a flow
// open, sends SIGTERM and checks: exit 0, the flow closed with reason
// shutdown, and no device, address, route or rule of tunwall's is left.
func TestSIGTERMCleansUp(t *testing.T) {
	l := routedLab(t, "tws")
	before := routingState(t, l)
	cfg := filepath.Join(t.TempDir(), "gw.yaml")
	os.WriteFile(cfg, []byte("tun: {name: twstop}\nlog: {format: json}\npolicy:\n  default: allow\n"), 0o644)
	tw, err := l.StartTunwall(filepath.Join(bin, "tunwall"), cfg, filepath.Join(t.TempDir(), "gw.log"), "twstop")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tw.Stop(5 * time.Second) })

	c, err := l.Dial(l.Client, "tcp", net.JoinHostPort(lab.ServerV4, "7001"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}

	if err := tw.Stop(10 * time.Second); err != nil {
		t.Fatalf("tunwall exit after SIGTERM: %v", err)
	}
	e := waitEvent(t, tw.Log, flowEvent("close", c.LocalAddr().String(), c.RemoteAddr().String()))
	if e.str("reason") != "shutdown" {
		t.Errorf("held flow closed with reason %q, want shutdown", e.str("reason"))
	}
	waitEvent(t, tw.Log, func(e event) bool { return e.str("event") == "stop" })
	if out, err := l.Run(l.Gateway, "ip", "link", "show", "twstop"); err == nil {
		t.Errorf("TUN device still exists after SIGTERM:\n%s", out)
	}
	l.Unroute() // the lab's own rules; what remains must equal the start
	if after := routingState(t, l); after != before {
		t.Errorf("routing state changed:\n%s", lineDiff(before, after))
	}
}

// routingState dumps the gateway namespace's addresses, rules, routes of
// every table and forwarding and reverse-path settings: what a clean exit
// must leave exactly as it found it.
func routingState(t *testing.T, l *lab.Lab) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-o", "addr"}, {"ip", "-4", "rule"}, {"ip", "-6", "rule"},
		{"ip", "-4", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
		{"sh", "-c", "grep -H . /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv4/conf/*/rp_filter /proc/sys/net/ipv6/conf/*/forwarding /proc/sys/net/ipv6/conf/*/force_forwarding"},
	} {
		out, err := l.Run(l.Gateway, args...)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(out)
	}
	return b.String()
}
