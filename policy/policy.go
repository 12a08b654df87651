package policy

import (
	"net/netip"
	"path"
	"slices"
	"strings"
	"time"
)

// Policy is a compiled, immutable rule list. It is safe for concurrent use;
// replace a Policy as a whole (atomic.Pointer) rather than editing it.
type Policy struct {
	rules       []rule
	def         Action
	ix          *index
	needsOwner  bool  // some rule has users or apps
	needsDomain bool  // some rule has domains or domain lists
	monitor     bool  // policy.mode monitor: verdicts are logged, not enforced
	reevaluate  bool  // policy.on_reload reevaluate
	nameRules   []int // rules that judge names being resolved, in order
}

// JudgeName judges a name being resolved (f.Domain, asked by f.Src). Only
// rules about names alone decide: rules with domains or domain_list and
// no proto, ports, dst or dst_list (their src, users, apps and when still
// apply). The first such rule that matches gives the verdict; ok is false
// when none does, and then the name resolves as usual. A rule that names
// a domain together with ports or addresses judges connections, not the
// name. It does not allocate.
func (p *Policy) JudgeName(f Flow) (v Verdict, ok bool) {
	src := f.Src.Addr().Unmap()
	for _, i := range p.nameRules {
		r := &p.rules[i]
		if !addrMatches(&r.src, r.srcLists, src) || !r.nameMatches(f.Domain) || !r.inWindow(f.At) ||
			r.asksOwner() && !r.ownerMatches(f.Owner) {
			continue
		}
		return p.verdictOf(r), true
	}
	return Verdict{}, false
}

// verdictOf is the verdict rule r gives.
func (p *Policy) verdictOf(r *rule) Verdict {
	return Verdict{Action: r.action, Rule: r.name, Index: r.index, Log: r.log, Monitor: p.monitor}
}

// defaultVerdict is the verdict for a flow no rule matches.
func (p *Policy) defaultVerdict() Verdict {
	return Verdict{Action: p.def, Rule: DefaultRule, Index: -1, Monitor: p.monitor}
}

// aboutNameOnly reports whether the rule judges names being resolved:
// it matches on names and says nothing about protocol, port or
// destination address.
func (r *rule) aboutNameOnly() bool {
	return r.byName() && r.protos == anyProto && len(r.ports) == 0 && r.dst.any && len(r.dstLists) == 0
}

// Reevaluate reports whether, when this policy is loaded by a reload, the
// flows already running are judged again (policy.on_reload: reevaluate).
func (p *Policy) Reevaluate() bool { return p.reevaluate }

// Monitor reports whether the policy only watches (policy.mode: monitor).
func (p *Policy) Monitor() bool { return p.monitor }

type rule struct {
	name     string
	index    int
	line     int
	action   Action
	protos   Proto
	src, dst prefixSet
	ports    []portRange // empty: any port
	log      bool
	users    []UIDRange // empty: any user (or none)
	apps     []string   // exe globs; empty: any app (or none)

	// Checked outside the index: a rule with src or dst lists matches an
	// address in its prefixes or in one of its lists; a rule with domains
	// matches only a flow whose name is known and fits.
	srcLists, dstLists []*List
	domains            domainSet
	domainLists        []*List
	when               *window // nil: at any time
}

// byName reports whether the rule matches on the flow's domain name.
func (r *rule) byName() bool { return r.domains.len() > 0 || len(r.domainLists) > 0 }

// outsideIndex reports whether the rule has conditions the index does not
// check.
func (r *rule) outsideIndex() bool {
	return len(r.srcLists) > 0 || len(r.dstLists) > 0 || r.byName() || r.when != nil
}

// matchesOutside checks the conditions the index leaves out (lists and
// names, time windows); owners are checked separately.
// With skipName the name is not checked (it is not known yet).
func (r *rule) matchesOutside(f *Flow, src, dst netip.Addr, skipName bool) bool {
	if !r.inWindow(f.At) {
		return false
	}
	if len(r.srcLists) > 0 && !inPrefixesOrLists(&r.src, r.srcLists, src) {
		return false
	}
	if len(r.dstLists) > 0 && !inPrefixesOrLists(&r.dst, r.dstLists, dst) {
		return false
	}
	return skipName || !r.byName() || r.nameMatches(f.Domain)
}

// inWindow reports whether at (the zero time: now) is inside the rule's
// time window, if it has one.
func (r *rule) inWindow(at time.Time) bool {
	if r.when == nil {
		return true
	}
	if at.IsZero() {
		at = time.Now()
	}
	return r.when.contains(at)
}

// nameMatches reports whether domain is one of the rule's names.
func (r *rule) nameMatches(domain string) bool {
	return domain != "" && (r.domains.contains(domain) ||
		slices.ContainsFunc(r.domainLists, func(l *List) bool { return l.ContainsDomain(domain) }))
}

func inPrefixesOrLists(s *prefixSet, lists []*List, a netip.Addr) bool {
	if !s.any && s.contains(a) {
		return true
	}
	for _, l := range lists {
		if l.ContainsAddr(a) {
			return true
		}
	}
	return false
}

// asksOwner reports whether the rule matches on who opened the flow.
func (r *rule) asksOwner() bool { return len(r.users) > 0 || len(r.apps) > 0 }

// RuleInfo names one rule for people.
type RuleInfo struct {
	Name   string
	Action Action
	Line   int
}

// Rules lists the rules in order.
func (p *Policy) Rules() []RuleInfo {
	out := make([]RuleInfo, len(p.rules))
	for i, r := range p.rules {
		out[i] = RuleInfo{Name: r.name, Action: r.action, Line: r.line}
	}
	return out
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

// NeedsDomain reports whether any rule matches on domain names.
func (p *Policy) NeedsDomain() bool { return p.needsDomain }

// NeedsOwner reports whether any rule matches on users or apps: only then
// can a verdict depend on a flow's owner.
func (p *Policy) NeedsOwner() bool { return p.needsOwner }

// Decide judges one flow: the first matching rule wins, otherwise the
// default action. A rule with users or apps matches only a flow whose
// Owner is set and fits. It does not allocate.
func (p *Policy) Decide(f Flow) Verdict {
	v, _ := p.decide(f, 0)
	return v
}

// Prejudge judges a flow that started on this machine before its owner is
// known. If the first rule that could match it asks about users or apps,
// it returns needOwner: look the owner up, set f.Owner and call Decide.
// Otherwise the verdict is final, whoever the owner is. It does not
// allocate.
func (p *Policy) Prejudge(f Flow) (v Verdict, needOwner bool) {
	return p.decide(f, pendingOwner)
}

// PrejudgeName judges a flow whose destination name may still be learned
// (from its first bytes). If the first rule that could match it asks
// about names, it returns needName: learn the name, set f.Domain and call
// Decide. Otherwise the verdict is final, whatever the name. It does not
// allocate.
func (p *Policy) PrejudgeName(f Flow) (v Verdict, needName bool) {
	return p.decide(f, pendingName)
}

// What decide may not know yet.
const (
	pendingOwner = 1 << iota
	pendingName
)

func (p *Policy) decide(f Flow, pending int) (v Verdict, need bool) {
	src, dst := f.Src.Addr().Unmap(), f.Dst.Addr().Unmap()
	i := p.ix.first(&f, src, dst, func(i int) bool {
		r := &p.rules[i]
		byName := pending&pendingName != 0 && r.byName()
		if r.outsideIndex() && !r.matchesOutside(&f, src, dst, byName) {
			return false
		}
		switch {
		case byName:
			need = true
			return true
		case !r.asksOwner():
			return true
		case pending&pendingOwner != 0:
			need = true
			return true
		}
		return r.ownerMatches(f.Owner)
	})
	switch {
	case need:
		return Verdict{}, true
	case i < 0:
		return p.defaultVerdict(), false
	}
	return p.verdictOf(&p.rules[i]), false
}

func (r *rule) ownerMatches(o *Owner) bool {
	if o == nil {
		return false
	}
	if len(r.users) > 0 && !uidIn(r.users, o.UID) {
		return false
	}
	if len(r.apps) > 0 && !appMatches(r.apps, o.Exe) {
		return false
	}
	return true
}

func uidIn(ranges []UIDRange, uid uint32) bool {
	for _, u := range ranges {
		if uid >= u.First && uid <= u.Last {
			return true
		}
	}
	return false
}

// appMatches reports whether exe fits one of the globs. A glob with a slash
// matches the whole path; one without matches the file name alone, so
// "curl" is any curl and "/usr/bin/curl" only that one.
func appMatches(globs []string, exe string) bool {
	if exe == "" {
		return false
	}
	base := exe[strings.LastIndexByte(exe, '/')+1:]
	for _, g := range globs {
		name := base
		if strings.IndexByte(g, '/') >= 0 {
			name = exe
		}
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
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
