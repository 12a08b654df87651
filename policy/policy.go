package policy

import "net/netip"

// Policy is a compiled, immutable rule list. It is safe for concurrent use;
// replace a Policy as a whole (atomic.Pointer) rather than editing it.
type Policy struct {
	rules []rule
	def   Action
}

type rule struct {
	name     string
	index    int
	line     int
	action   Action
	protos   Proto
	src, dst prefixSet
	ports    []portRange // empty: any port
	log      bool
}

// Default returns the action for flows no rule matches.
func (p *Policy) Default() Action { return p.def }

// Len returns the number of rules.
func (p *Policy) Len() int { return len(p.rules) }

// RuleLine returns the line in the source file where rule i starts, or 0.
func (p *Policy) RuleLine(i int) int {
	if i < 0 || i >= len(p.rules) {
		return 0
	}
	return p.rules[i].line
}

// Decide judges one flow: the first matching rule wins, otherwise the
// default action. It does not allocate.
func (p *Policy) Decide(f Flow) Verdict {
	src, dst := f.Src.Addr().Unmap(), f.Dst.Addr().Unmap()
	port := f.Dst.Port()
	for i := range p.rules {
		r := &p.rules[i]
		if r.protos&f.Proto == 0 || !r.src.contains(src) || !r.dst.contains(dst) {
			continue
		}
		if f.Proto != ICMP && !portsMatch(r.ports, port) {
			continue
		}
		return Verdict{Action: r.action, Rule: r.name, Index: r.index, Log: r.log}
	}
	return Verdict{Action: p.def, Rule: DefaultRule, Index: -1}
}

func portsMatch(ranges []portRange, port uint16) bool {
	if len(ranges) == 0 {
		return true
	}
	for _, r := range ranges {
		if port >= r.lo && port <= r.hi {
			return true
		}
	}
	return false
}

// prefixSet is a set of prefixes split by family. The zero value (no
// prefixes configured) matches every address.
type prefixSet struct {
	any    bool
	v4, v6 []netip.Prefix
}

func newPrefixSet(ps []netip.Prefix) prefixSet {
	s := prefixSet{any: len(ps) == 0}
	for _, p := range ps {
		if p.Addr().Is4() {
			s.v4 = append(s.v4, p)
		} else {
			s.v6 = append(s.v6, p)
		}
	}
	return s
}

func (s *prefixSet) contains(a netip.Addr) bool {
	if s.any {
		return true
	}
	list := s.v6
	if a.Is4() {
		list = s.v4
	}
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
