package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Miss is a rule that did not match a flow, and why.
type Miss struct {
	Rule  string
	Index int
	Line  int
	Why   string
}

// Explain judges f as Decide does and also says, for every rule before
// the deciding one (every rule if none decides), why it did not match. It
// walks the rules one by one: it is for people, not for the packet path.
func (p *Policy) Explain(f Flow) (Verdict, []Miss) {
	src, dst := f.Src.Addr().Unmap(), f.Dst.Addr().Unmap()
	if f.At.IsZero() {
		f.At = time.Now() // one moment for every rule, and for the message
	}
	var misses []Miss
	for i := range p.rules {
		r := &p.rules[i]
		why := r.mismatch(&f, src, dst)
		if why == "" {
			return p.verdictOf(r), misses
		}
		misses = append(misses, Miss{Rule: r.name, Index: r.index, Line: r.line, Why: why})
	}
	return p.defaultVerdict(), misses
}

// mismatch returns why r does not match f, or "" if it does. It names the
// first condition that fails, in the order proto, port, destination,
// source, name, time, owner.
func (r *rule) mismatch(f *Flow, src, dst netip.Addr) string {
	if r.protos&f.Proto == 0 {
		return fmt.Sprintf("proto %s: the rule is for %s", f.Proto, protoList(r.protos))
	}
	if f.Proto != ICMP && !portsMatch(r.ports, f.Dst.Port()) {
		return fmt.Sprintf("port %d: not in %s", f.Dst.Port(), portList(r.ports))
	}
	if !addrMatches(&r.dst, r.dstLists, dst) {
		return fmt.Sprintf("dst %s: not in %s", dst, addrList(&r.dst, r.dstLists))
	}
	if !addrMatches(&r.src, r.srcLists, src) {
		return fmt.Sprintf("src %s: not in %s", src, addrList(&r.src, r.srcLists))
	}
	if r.byName() {
		if f.Domain == "" {
			return "the rule needs the destination's name, and it is not known"
		}
		if !r.nameMatches(f.Domain) {
			return fmt.Sprintf("name %s: not in the rule's domains or domain lists", f.Domain)
		}
	}
	if !r.inWindow(f.At) {
		return fmt.Sprintf("%s is outside the rule's time window", f.At.In(r.when.loc).Format("Mon 15:04 MST"))
	}
	if r.asksOwner() {
		switch o := f.Owner; {
		case o == nil:
			return "the rule is for users or apps, and the flow has no owner on this machine"
		case len(r.users) > 0 && !uidIn(r.users, o.UID):
			return fmt.Sprintf("uid %d: not one of the rule's users", o.UID)
		case len(r.apps) > 0 && !appMatches(r.apps, o.Exe):
			return fmt.Sprintf("app %q: not one of %s", o.Exe, strings.Join(r.apps, ", "))
		}
	}
	return ""
}

func addrMatches(s *prefixSet, lists []*List, a netip.Addr) bool {
	if len(lists) > 0 {
		return inPrefixesOrLists(s, lists, a)
	}
	return s.contains(a)
}

func protoList(p Proto) string {
	var names []string
	for _, one := range []Proto{TCP, UDP, ICMP} {
		if p&one != 0 {
			names = append(names, one.String())
		}
	}
	return strings.Join(names, ", ")
}

func portList(rs []portRange) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteString(", ")
		}
		if r.lo == r.hi {
			fmt.Fprintf(&b, "%d", r.lo)
		} else {
			fmt.Fprintf(&b, "%d-%d", r.lo, r.hi)
		}
	}
	return b.String()
}

// addrList names a rule's prefixes (the first few) and lists.
func addrList(s *prefixSet, lists []*List) string {
	var parts []string
	all := append(append([]netip.Prefix(nil), s.v4...), s.v6...)
	for i, p := range all {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("and %d more", len(all)-3))
			break
		}
		parts = append(parts, p.String())
	}
	for _, l := range lists {
		parts = append(parts, "list "+l.Name)
	}
	return strings.Join(parts, ", ")
}
