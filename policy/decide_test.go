package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// mustParse parses a policy snippet (the rules below "policy:") or fails.
func mustParse(t testing.TB, policyYAML string) *Policy {
	t.Helper()
	cfg, err := Parse("test.yaml", []byte("policy:\n"+indent(policyYAML)))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return cfg.Policy
}

func indent(s string) string {
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n") + "\n"
}

func flow(proto Proto, src, dst string) Flow {
	f := Flow{Proto: proto}
	if proto == ICMP {
		f.Src = netip.AddrPortFrom(netip.MustParseAddr(src), 0)
		f.Dst = netip.AddrPortFrom(netip.MustParseAddr(dst), 0)
		f.Type = 8
		return f
	}
	f.Src = netip.MustParseAddrPort(src)
	f.Dst = netip.MustParseAddrPort(dst)
	return f
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		flow   Flow
		action Action
		rule   string
	}{
		{
			name:   "no rules: default deny",
			policy: "default: deny",
			flow:   flow(TCP, "10.0.0.2:40000", "192.0.2.1:443"),
			action: Deny, rule: "default",
		},
		{
			name: "reject ssh anywhere",
			policy: `
default: allow
rules:
  - {name: no-ssh-out, action: reject, proto: tcp, ports: [22]}`,
			flow:   flow(TCP, "10.0.0.2:40000", "192.0.2.1:22"),
			action: Reject, rule: "no-ssh-out",
		},
		{
			name: "ssh rule does not catch udp/22",
			policy: `
default: allow
rules:
  - {name: no-ssh-out, action: reject, proto: tcp, ports: [22]}`,
			flow:   flow(UDP, "10.0.0.2:40000", "192.0.2.1:22"),
			action: Allow, rule: "default",
		},
		{
			name: "port range includes both ends",
			policy: `
rules:
  - {name: high, action: allow, proto: tcp, ports: ["2200-2299"]}`,
			flow:   flow(TCP, "10.0.0.2:1", "192.0.2.1:2299"),
			action: Allow, rule: "high",
		},
		{
			name: "port just past the range falls through",
			policy: `
rules:
  - {name: high, action: allow, proto: tcp, ports: ["2200-2299"]}`,
			flow:   flow(TCP, "10.0.0.2:1", "192.0.2.1:2300"),
			action: Deny, rule: "default",
		},
		{
			name: "first match wins",
			policy: `
rules:
  - {name: block-one-host, action: deny, dst: [192.0.2.7]}
  - {name: web, action: allow, proto: tcp, ports: [443]}`,
			flow:   flow(TCP, "10.0.0.2:1", "192.0.2.7:443"),
			action: Deny, rule: "block-one-host",
		},
		{
			name: "block incoming from an address (src match)",
			policy: `
default: allow
rules:
  - {name: bad-client, action: deny, src: [10.10.0.66]}`,
			flow:   flow(UDP, "10.10.0.66:5353", "192.0.2.1:53"),
			action: Deny, rule: "bad-client",
		},
		{
			name: "src CIDR limits a rule to LAN clients",
			policy: `
rules:
  - {name: lan-web, action: allow, src: [10.10.0.0/24], proto: [tcp, udp], ports: [80, 443]}`,
			flow:   flow(TCP, "10.10.1.5:1", "192.0.2.1:443"),
			action: Deny, rule: "default",
		},
		{
			name: "IPv6 destination CIDR",
			policy: `
rules:
  - {name: v6-docs, action: allow, dst: ["2001:db8::/32"]}`,
			flow:   flow(TCP, "[fd00::2]:1", "[2001:db8::1]:80"),
			action: Allow, rule: "v6-docs",
		},
		{
			name: "IPv4 CIDR never matches IPv6",
			policy: `
rules:
  - {name: v4-all, action: allow, dst: [0.0.0.0/0]}`,
			flow:   flow(TCP, "[fd00::2]:1", "[2001:db8::1]:80"),
			action: Deny, rule: "default",
		},
		{
			name: "icmp rule ignores ports",
			policy: `
rules:
  - {name: ping, action: allow, proto: icmp}`,
			flow:   flow(ICMP, "10.0.0.2", "192.0.2.1"),
			action: Allow, rule: "ping",
		},
		{
			name: "proto omitted matches icmp",
			policy: `
default: allow
rules:
  - {name: quarantine, action: reject, dst: [192.0.2.0/24]}`,
			flow:   flow(ICMP, "10.0.0.2", "192.0.2.9"),
			action: Reject, rule: "quarantine",
		},
		{
			name: "proto list",
			policy: `
rules:
  - {name: dns, action: allow, proto: [udp, tcp], ports: [53]}`,
			flow:   flow(TCP, "10.0.0.2:1", "192.0.2.1:53"),
			action: Allow, rule: "dns",
		},
		{
			name: "default reject",
			policy: `
default: reject`,
			flow:   flow(UDP, "10.0.0.2:1", "192.0.2.1:9"),
			action: Reject, rule: "default",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := mustParse(t, tt.policy).Decide(tt.flow)
			if v.Action != tt.action || v.Rule != tt.rule {
				t.Errorf("Decide = %v by %q, want %v by %q", v.Action, v.Rule, tt.action, tt.rule)
			}
		})
	}
}

// owned returns f as opened by uid running exe.
func owned(f Flow, uid uint32, exe string) Flow {
	f.Owner = &Owner{UID: uid, PID: 4242, Exe: exe}
	return f
}

// Rules with users and apps match on the flow's owner; a flow without one
// (from another host, or not found) never matches them.
func TestDecideOwner(t *testing.T) {
	p := mustParse(t, `
default: allow
rules:
  - {name: no-web-for-kids, action: reject, users: [1001, "2000-2099"], proto: tcp, ports: [443]}
  - {name: root-curl-only, action: allow, users: [root], apps: [curl]}
  - {name: no-curl, action: deny, apps: [curl, "/opt/*/bin/fetch"]}
  - {name: usr-bin-tools, action: allow, apps: ["/usr/bin/*"], proto: udp}
  - {name: no-udp, action: deny, proto: udp}`)
	web := flow(TCP, "198.18.0.1:40000", "192.0.2.1:443")
	udp := flow(UDP, "198.18.0.1:40000", "192.0.2.1:53")
	tests := []struct {
		name string
		flow Flow
		rule string
	}{
		{"listed uid", owned(web, 1001, "/usr/bin/firefox"), "no-web-for-kids"},
		{"uid in range", owned(web, 2050, "/usr/bin/firefox"), "no-web-for-kids"},
		{"uid past the range", owned(web, 2100, "/usr/bin/firefox"), "default"},
		{"other port for a listed uid", owned(flow(TCP, "198.18.0.1:1", "192.0.2.1:80"), 1001, "/usr/bin/firefox"), "default"},
		{"user by name, app by file name", owned(web, 0, "/usr/local/bin/curl"), "root-curl-only"},
		{"app by name, other user", owned(web, 1000, "/usr/bin/curl"), "no-curl"},
		{"app by path glob", owned(web, 1000, "/opt/acme/bin/fetch"), "no-curl"},
		{"a glob star stops at slashes", owned(web, 1000, "/opt/acme/x/bin/fetch"), "default"},
		{"unknown exe matches no apps rule", owned(udp, 1000, ""), "no-udp"},
		{"directory glob", owned(udp, 1000, "/usr/bin/dig"), "usr-bin-tools"},
		{"no owner: users and apps rules skipped", web, "default"},
		{"no owner: plain rules still apply", udp, "no-udp"},
	}
	for _, tt := range tests {
		if v := p.Decide(tt.flow); v.Rule != tt.rule {
			t.Errorf("%s: decided by %q, want %q", tt.name, v.Rule, tt.rule)
		}
	}
}

// Prejudge asks for the owner only when the first rule that could match
// the flow depends on it; otherwise its verdict is the final one.
func TestPrejudge(t *testing.T) {
	p := mustParse(t, `
default: deny
rules:
  - {name: dns, action: allow, proto: udp, ports: [53]}
  - {name: alice-web, action: allow, users: [1001], proto: tcp, ports: [443]}
  - {name: web, action: reject, proto: tcp}`)
	if !p.NeedsOwner() {
		t.Error("NeedsOwner = false for a policy with a users rule")
	}
	if v, need := p.Prejudge(flow(UDP, "198.18.0.1:1", "192.0.2.1:53")); need || v.Rule != "dns" {
		t.Errorf("dns: need %v rule %q, want final verdict by dns", need, v.Rule)
	}
	if v, need := p.Prejudge(flow(TCP, "198.18.0.1:1", "192.0.2.1:80")); need || v.Rule != "web" {
		t.Errorf("port 80: need %v rule %q, want final verdict by web", need, v.Rule)
	}
	if _, need := p.Prejudge(flow(TCP, "198.18.0.1:1", "192.0.2.1:443")); !need {
		t.Error("port 443: the owner decides between alice-web and web, but Prejudge did not ask for it")
	}
	if mustParse(t, "rules:\n  - {name: a, action: allow}").NeedsOwner() {
		t.Error("NeedsOwner = true for a policy without users or apps")
	}
}

// In monitor mode the verdict names what the policy would do, and its
// effective action lets the flow through.
func TestMonitorMode(t *testing.T) {
	rules := `
rules:
  - {name: no-ssh, action: reject, proto: tcp, ports: [22]}`
	enforcing := mustParse(t, "default: deny"+rules)
	monitoring := mustParse(t, "mode: monitor\ndefault: deny"+rules)
	for _, f := range []Flow{flow(TCP, "10.0.0.2:1", "192.0.2.1:22"), flow(UDP, "10.0.0.2:1", "192.0.2.1:53")} {
		e, m := enforcing.Decide(f), monitoring.Decide(f)
		if e.Monitor || e.Effective() != e.Action {
			t.Errorf("enforce: %+v takes effect as %v", e, e.Effective())
		}
		if !m.Monitor || m.Action != e.Action || m.Rule != e.Rule || m.Effective() != Allow {
			t.Errorf("monitor: %+v (effective %v), want %v by %q, let through", m, m.Effective(), e.Action, e.Rule)
		}
	}
	if enforcing.Monitor() || !monitoring.Monitor() {
		t.Error("Policy.Monitor does not report the mode")
	}
}

func TestDecideLogFlag(t *testing.T) {
	p := mustParse(t, `
rules:
  - {name: quiet, action: allow, proto: tcp, ports: [80]}
  - {name: loud, action: allow, proto: tcp, ports: [443], log: true}`)
	if v := p.Decide(flow(TCP, "10.0.0.2:1", "192.0.2.1:80")); v.Log || v.Index != 0 {
		t.Errorf("quiet rule: %+v", v)
	}
	if v := p.Decide(flow(TCP, "10.0.0.2:1", "192.0.2.1:443")); !v.Log || v.Index != 1 {
		t.Errorf("loud rule: %+v", v)
	}
}

func TestDecideNoAllocs(t *testing.T) {
	p := bigPolicy(t, 100)
	f := flow(TCP, "10.0.0.2:40000", "203.0.113.77:443")
	allocs := testing.AllocsPerRun(1000, func() { _ = p.Decide(f) })
	if allocs != 0 {
		t.Fatalf("Decide allocates %v times per call, want 0", allocs)
	}
	po := mustParse(t, `
rules:
  - {name: a, action: deny, users: ["1000-1999"], apps: ["/usr/*/curl", wget]}
  - {name: b, action: allow, apps: [curl]}`)
	of := owned(f, 1500, "/usr/local/bin/curl")
	allocs = testing.AllocsPerRun(1000, func() {
		if po.Decide(of).Rule != "b" {
			t.Fatal("wrong rule")
		}
		_, _ = po.Prejudge(of)
	})
	if allocs != 0 {
		t.Fatalf("Decide with users and apps allocates %v times per call, want 0", allocs)
	}
}

// bigPolicy builds n distinct rules that do not match 203.0.113.0/24 and a
// last rule that does, so Decide walks every rule.
func bigPolicy(t testing.TB, n int) *Policy {
	var b strings.Builder
	b.WriteString("default: deny\nrules:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - {name: r%d, action: reject, proto: [tcp, udp], dst: [10.%d.%d.0/24, \"fd00:%x::/48\"], ports: [%d, \"%d-%d\"]}\n",
			i, i/256%256, i%256, i, 1+i%60000, 2000+i%1000, 2100+i%1000)
	}
	b.WriteString("  - {name: last, action: allow, proto: tcp, dst: [203.0.113.0/24], ports: [443]}\n")
	return mustParse(t, b.String())
}

func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 10000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			p := bigPolicy(b, n)
			f := flow(TCP, "10.0.0.2:40000", "203.0.113.77:443")
			b.ReportAllocs()
			for b.Loop() {
				if p.Decide(f).Rule != "last" {
					b.Fatal("wrong rule")
				}
			}
		})
	}
}
