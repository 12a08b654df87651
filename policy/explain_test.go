package policy

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

func TestExplainReasons(t *testing.T) {
	p := mustParse(t, `
default: allow
rules:
  - {name: udp-only, action: deny, proto: udp}
  - {name: web, action: deny, proto: tcp, ports: [80, "8000-8080"]}
  - {name: far, action: deny, dst: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, "fd00::/8"]}
  - {name: from-lab, action: deny, src: [192.0.2.0/24]}
  - {name: named, action: deny, domains: [example.com]}
  - {name: night, action: deny, when: {time: ["22:00-06:00"], zone: UTC}}
  - {name: bob, action: deny, users: [1001]}
  - {name: curl, action: deny, apps: [curl]}
  - {name: decider, action: reject, proto: tcp, ports: [443]}
  - {name: after, action: deny}
`)
	f := Flow{Proto: TCP, Src: netip.MustParseAddrPort("198.51.100.7:40000"), Dst: netip.MustParseAddrPort("203.0.113.9:443"),
		At: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	check := func(f Flow, wantRule string, wantWhy []string) {
		t.Helper()
		v, misses := p.Explain(f)
		if v.Rule != wantRule || v != p.Decide(f) {
			t.Errorf("verdict %+v, want rule %q and Decide's %+v", v, wantRule, p.Decide(f))
		}
		if len(misses) != len(wantWhy) {
			t.Fatalf("%d misses, want %d: %+v", len(misses), len(wantWhy), misses)
		}
		for i, m := range misses {
			if m.Why != wantWhy[i] || m.Index != i || m.Line != p.RuleLine(i) {
				t.Errorf("miss %d: %+v, want %q at line %d", i, m, wantWhy[i], p.RuleLine(i))
			}
		}
	}
	check(f, "decider", []string{
		"proto tcp: the rule is for udp",
		"port 443: not in 80, 8000-8080",
		"dst 203.0.113.9: not in 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, and 1 more",
		"src 198.51.100.7: not in 192.0.2.0/24",
		"the rule needs the destination's name, and it is not known",
		"Mon 12:00 UTC is outside the rule's time window",
		"the rule is for users or apps, and the flow has no owner on this machine",
		"the rule is for users or apps, and the flow has no owner on this machine",
	})
	f.Domain, f.Owner = "www.example.com", &Owner{UID: 1000, Exe: "/usr/bin/wget"}
	v, misses := p.Explain(f)
	if v.Rule != "decider" || misses[4].Why != "name www.example.com: not in the rule's domains or domain lists" ||
		misses[6].Why != "uid 1000: not one of the rule's users" || misses[7].Why != `app "/usr/bin/wget": not one of curl` {
		t.Errorf("with name and owner: %+v %+v", v, misses)
	}
	f.Dst = netip.MustParseAddrPort("203.0.113.9:444")
	v, misses = p.Explain(f)
	if v.Rule != "after" || len(misses) != 9 || misses[8].Why != "port 444: not in 443" {
		t.Errorf("the last rule decides: %+v %+v", v, misses)
	}
}

// TestExplainAgreesWithDecide: Explain's verdict is Decide's over random
// policies and flows, and it lists exactly the rules before the decider.
func TestExplainAgreesWithDecide(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 100 {
		p := randomPolicy(t, r, 1+r.IntN(60))
		for range 100 {
			f := randomFlow(r)
			v, misses := p.Explain(f)
			if want := p.Decide(f); v != want {
				t.Fatalf("flow %+v: Explain %+v, Decide %+v", f, v, want)
			}
			n := v.Index
			if n < 0 {
				n = p.Len()
			}
			if len(misses) != n {
				t.Fatalf("flow %+v: %d misses before rule #%d", f, len(misses), v.Index)
			}
			for _, m := range misses {
				if m.Why == "" {
					t.Fatalf("miss without a reason: %+v", m)
				}
			}
		}
	}
}
