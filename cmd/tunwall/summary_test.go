package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/tunwall/tunwall/policy"
)

// TestSummary: the startup summary names the device, routing, policy,
// log, API socket and dashboard, and what to run next; it is only for
// terminals.
func TestSummary(t *testing.T) {
	cfg, err := policy.Parse("/etc/tw.yaml", []byte(`
tun: {name: tw7, addresses: [198.18.0.1/30]}
routing: {mode: all, strict: true}
log: {output: /var/log/tunwall.log}
policy:
  mode: monitor
  default: deny
  rules:
    - {name: web, action: allow, proto: tcp, ports: [443]}
`))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	printSummary(&b, setup{cfg: cfg, device: "tw7", mtu: 1500, routing: []string{"rule a", "route b"}, socket: "/run/tunwall/c.sock", dashboard: "http://127.0.0.1:9190/#token=t"})
	out := b.String()
	for _, want := range []string{
		"tunwall " + versionString() + " is running\n",
		"  device     tw7, mtu 1500, 198.18.0.1/30\n",
		"  routing    all, strict (traffic is blocked, not leaked, while tunwall is down)\n",
		"             2 rules and routes installed, removed at stop\n",
		"  policy     1 rule, default deny, monitor mode: verdicts are logged, nothing is refused\n",
		"             from /etc/tw.yaml (hash " + cfg.Hash + ")\n",
		"  apps       unavailable: flows carry no user or program\n",
		"  log        /var/log/tunwall.log (level info)\n",
		"  control    /run/tunwall/c.sock\n",
		"  dashboard  http://127.0.0.1:9190/#token=t\n",
		"next: tunwall flows --watch",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if onTerminal(&b) {
		t.Error("a buffer counted as a terminal")
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if onTerminal(f) {
		t.Error("a file counted as a terminal")
	}
}
