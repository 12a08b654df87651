package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// linearDecide is the reference the index must agree with: walk the rules
// in order, first match wins.
func linearDecide(p *Policy, f Flow, ownerPending bool) (Verdict, bool) {
	src, dst := f.Src.Addr().Unmap(), f.Dst.Addr().Unmap()
	for i := range p.rules {
		r := &p.rules[i]
		if r.protos&f.Proto == 0 || !r.src.contains(src) || !r.dst.contains(dst) {
			continue
		}
		if f.Proto != ICMP && !portsMatch(r.ports, f.Dst.Port()) {
			continue
		}
		if r.asksOwner() {
			if ownerPending {
				return Verdict{}, true
			}
			if !r.ownerMatches(f.Owner) {
				continue
			}
		}
		return Verdict{Action: r.action, Rule: r.name, Index: r.index, Log: r.log, Monitor: p.monitor}, false
	}
	return Verdict{Action: p.def, Rule: DefaultRule, Index: -1, Monitor: p.monitor}, false
}

// Nested and overlapping values, so that classes, supernets and ranges
// all get exercised.
var (
	randPrefixes = []string{"0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "10.200.0.0/16",
		"192.0.2.0/24", "192.0.2.128/25", "::/0", "2001:db8::/32", "2001:db8:1::/48", "2001:db8:1::5/128", "fd00::/8"}
	randAddrs = []string{"10.1.2.3", "10.1.2.4", "10.1.9.9", "10.200.1.1", "10.9.9.9", "192.0.2.1", "192.0.2.200",
		"203.0.113.5", "2001:db8:1::5", "2001:db8:1::6", "2001:db8:2::1", "fd00::1", "2001:dead::1", "::ffff:10.1.2.3"}
	randPorts  = []string{"22", "53", "80", "443", "1-1023", "1000-2000", "1024-65535", "8000-8080", "65535"}
	flowPorts  = []uint16{1, 22, 53, 80, 443, 999, 1000, 1500, 2000, 2001, 8080, 9000, 65535}
	randProtos = []string{"tcp", "udp", "icmp", "[tcp, udp]", "[tcp, icmp]", "[tcp, udp, icmp]"}
)

func pick[T any](r *rand.Rand, from []T, max int) []T {
	var out []T
	for range r.IntN(max + 1) {
		out = append(out, from[r.IntN(len(from))])
	}
	return out
}

func quoted(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = `"` + v + `"`
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// randomPolicy writes n rules with random protocols, addresses, ports and
// owners.
func randomPolicy(t testing.TB, r *rand.Rand, n int) *Policy {
	var b strings.Builder
	b.WriteString("default: deny\nrules:\n")
	for i := range n {
		proto := randProtos[r.IntN(len(randProtos))]
		if r.IntN(4) == 0 {
			proto = ""
		}
		fmt.Fprintf(&b, "  - name: r%d\n    action: %s\n", i, []string{"allow", "deny", "reject"}[r.IntN(3)])
		if proto != "" {
			fmt.Fprintf(&b, "    proto: %s\n", proto)
		}
		if s := pick(r, randPrefixes, 2); len(s) > 0 {
			fmt.Fprintf(&b, "    src: %s\n", quoted(s))
		}
		if s := pick(r, randPrefixes, 3); len(s) > 0 {
			fmt.Fprintf(&b, "    dst: %s\n", quoted(s))
		}
		if !strings.Contains(proto, "icmp") && proto != "" {
			if s := pick(r, randPorts, 2); len(s) > 0 {
				fmt.Fprintf(&b, "    ports: %s\n", quoted(s))
			}
		}
		if r.IntN(8) == 0 {
			fmt.Fprintf(&b, "    users: [%d]\n", 1000+r.IntN(2))
		}
	}
	return mustParse(t, b.String())
}

func randomFlow(r *rand.Rand) Flow {
	addr := func() netip.Addr { return netip.MustParseAddr(randAddrs[r.IntN(len(randAddrs))]) }
	f := Flow{Proto: []Proto{TCP, UDP, ICMP}[r.IntN(3)]}
	port := flowPorts[r.IntN(len(flowPorts))]
	if f.Proto == ICMP {
		port = 0
	}
	f.Src = netip.AddrPortFrom(addr(), 40000)
	f.Dst = netip.AddrPortFrom(addr(), port)
	if r.IntN(2) == 0 {
		f.Owner = &Owner{UID: uint32(1000 + r.IntN(2))}
	}
	return f
}

// TestIndexAgreesWithRuleOrder compares the index with a plain walk of the
// rules over random policies and flows.
func TestIndexAgreesWithRuleOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	checked := map[string]int{}
	for round := range 300 {
		n := 1 + r.IntN(150)
		p := randomPolicy(t, r, n)
		for range 200 {
			f := randomFlow(r)
			for _, pending := range []bool{false, true} {
				got, gotNeed := p.decide(f, map[bool]int{true: pendingOwner}[pending])
				want, wantNeed := linearDecide(p, f, pending)
				if got != want || gotNeed != wantNeed {
					t.Fatalf("round %d, %d rules, flow %+v (owner pending %v): index %+v/%v, rule order %+v/%v",
						round, n, f, pending, got, gotNeed, want, wantNeed)
				}
				switch {
				case wantNeed:
					checked["owner needed"]++
				case want.Index < 0:
					checked["default"]++
				default:
					checked["rule"]++
				}
			}
		}
	}
	// The random mix must have reached every outcome often.
	for _, k := range []string{"owner needed", "default", "rule"} {
		if checked[k] < 1000 {
			t.Errorf("only %d flows ended with %s: %v", checked[k], k, checked)
		}
	}
}

// BenchmarkDecideMixed decides random flows against 10,000 random rules
// (nested prefixes, port ranges, some owner rules): first matches spread
// over the whole list, and many flows fall through to the default.
func BenchmarkDecideMixed(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	p := randomPolicy(b, r, 10000)
	flows := make([]Flow, 1024)
	for i := range flows {
		flows[i] = randomFlow(r)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p.Decide(flows[i%len(flows)])
		i++
	}
}

// BenchmarkDecideNoMatch is the index's hard case: 10,000 rules that each
// match the flow in some dimensions but never in all, interleaved so that
// no word of candidates can be skipped by its summary.
func BenchmarkDecideNoMatch(b *testing.B) {
	var s strings.Builder
	s.WriteString("default: deny\nrules:\n")
	for i := range 10000 {
		if i%2 == 0 {
			fmt.Fprintf(&s, "  - {name: r%d, action: allow, proto: tcp, dst: [10.0.0.0/8], ports: [443]}\n", i)
		} else {
			fmt.Fprintf(&s, "  - {name: r%d, action: allow, proto: tcp, dst: [192.0.2.0/24], ports: [80]}\n", i)
		}
	}
	p := mustParse(b, s.String())
	f := Flow{Proto: TCP, Src: netip.MustParseAddrPort("192.0.2.1:40000"), Dst: netip.MustParseAddrPort("10.1.1.1:80")}
	b.ReportAllocs()
	for b.Loop() {
		if p.Decide(f).Index != -1 {
			b.Fatal("matched")
		}
	}
}
