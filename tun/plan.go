package tun

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/tunwall/tunwall/policy"
)

// Rule priorities tunwall uses, in the order the kernel consults them:
// bypasses first (marked upstream sockets, packets leaving the TUN,
// excluded destinations), then the selectors that send traffic into
// tunwall's table. The main table's rule (32766) comes after all of them.
const (
	PrioMark     = 7470 // fwmark MARK lookup main: tunwall's own sockets
	PrioMarkEnd  = 7471 // fwmark MARK unreachable: ... and nowhere else
	PrioFromTun  = 7472 // iif TUN lookup main: never route the TUN back into itself
	PrioExclude  = 7473 // to CIDR lookup main: routing.exclude, link-local
	PrioSelector = 7474 // ... lookup TABLE: everything, uid ranges, LAN interfaces
)

// TableMain is the kernel's main routing table.
const TableMain = 254

// Protocol tags every rule and route tunwall installs ("proto 116" in
// ip rule / ip route), so they can be told apart from anyone else's.
const Protocol = 116

// MetricBackstop is the metric of the unreachable backstop routes: the
// largest there is, so any real route in the table wins over them.
const MetricBackstop = 0xffffffff

// Rule is one policy-routing rule.
type Rule struct {
	Family   int              `json:"family"` // 4 or 6
	Priority int              `json:"priority"`
	Mark     uint32           `json:"mark,omitempty"`
	Iif      string           `json:"iif,omitempty"`
	To       netip.Prefix     `json:"to"` // invalid: any destination
	UIDs     *policy.UIDRange `json:"uids,omitempty"`
	Table    int              `json:"table"`
	// Unreachable: the rule answers "network unreachable" instead of
	// looking up Table.
	Unreachable bool `json:"unreachable,omitempty"`
}

// String reads like `ip rule` output.
func (r Rule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ipv%d pref %d", r.Family, r.Priority)
	if r.Mark != 0 {
		fmt.Fprintf(&b, " fwmark %#x", r.Mark)
	}
	if r.Iif != "" {
		fmt.Fprintf(&b, " iif %s", r.Iif)
	}
	if r.To.IsValid() {
		fmt.Fprintf(&b, " to %s", r.To)
	}
	if r.UIDs != nil {
		fmt.Fprintf(&b, " uidrange %d-%d", r.UIDs.First, r.UIDs.Last)
	}
	if r.Unreachable {
		b.WriteString(" unreachable")
	} else {
		fmt.Fprintf(&b, " lookup %s", tableName(r.Table))
	}
	return b.String()
}

func tableName(t int) string {
	if t == TableMain {
		return "main"
	}
	return fmt.Sprint(t)
}

// Route is a route in tunwall's table: into the TUN when Dev is set,
// otherwise unreachable.
type Route struct {
	To     netip.Prefix `json:"to"`
	Dev    string       `json:"dev,omitempty"`
	Metric uint32       `json:"metric"`
	Table  int          `json:"table"`
}

func (r Route) String() string {
	kind := "unreachable " + r.To.String()
	if r.Dev != "" {
		kind = r.To.String() + " dev " + r.Dev
	}
	return fmt.Sprintf("%s table %d metric %d", kind, r.Table, r.Metric)
}

// Sysctl is one kernel setting tunwall changes, with the value it found
// (restored on exit) once it is applied.
type Sysctl struct {
	Path  string `json:"path"` // under /proc/sys, e.g. net/ipv4/conf/eth1/forwarding
	Value string `json:"value"`
	Old   string `json:"old,omitempty"`
	// IfStrict makes the change only if the setting is 1 (strict reverse
	// path filtering), the one value that drops what tunwall routes.
	IfStrict bool `json:"if_strict,omitempty"`
}

// Plan is everything tunwall installs for a routing configuration.
type Plan struct {
	Table    int
	Rules    []Rule
	Backstop []Route        // unreachable routes, installed before the TUN exists
	Through  []netip.Prefix // destinations routed into the TUN once it exists
	Sysctls  []Sysctl       // host settings, restored on exit
	// TunSysctls are settings on the TUN itself (they vanish with it).
	TunSysctls []Sysctl
}

var (
	anyV4       = netip.MustParsePrefix("0.0.0.0/0")
	anyV6       = netip.MustParsePrefix("::/0")
	linkLocalV4 = netip.MustParsePrefix("169.254.0.0/16")
	linkLocalV6 = netip.MustParsePrefix("fe80::/10")
)

// NewPlan works out the rules, routes and settings for r. tunName is the
// TUN device's name and mark the egress mark of tunwall's own sockets. A
// configuration that routes nothing (mode none, no from) gives an empty
// plan.
func NewPlan(r policy.RoutingConfig, tunName string, mark uint32) Plan {
	p := Plan{Table: r.Table}
	if !r.Routes() {
		return p
	}
	both := func(rule Rule) {
		for _, fam := range []int{4, 6} {
			rule.Family = fam
			p.Rules = append(p.Rules, rule)
		}
	}
	// A marked socket's destination that main cannot route is
	// unreachable: falling through to the selectors would send tunwall's
	// own upstream back into the TUN, and round again, flow after flow.
	both(Rule{Priority: PrioMark, Mark: mark, Table: TableMain})
	both(Rule{Priority: PrioMarkEnd, Mark: mark, Unreachable: true})
	both(Rule{Priority: PrioFromTun, Iif: tunName, Table: TableMain})
	exclude := r.Exclude
	if r.Mode == "all" {
		exclude = append([]netip.Prefix{linkLocalV4, linkLocalV6}, exclude...)
	}
	for _, x := range exclude {
		p.Rules = append(p.Rules, Rule{Family: family(x), Priority: PrioExclude, To: x, Table: TableMain})
	}
	p.selectors(r)

	p.Through = []netip.Prefix{anyV4, anyV6}
	if r.Mode == "split" {
		p.Through = r.Include
	}
	if r.Strict {
		for _, to := range p.Through {
			p.Backstop = append(p.Backstop, Route{To: to, Metric: MetricBackstop, Table: r.Table})
		}
	}
	p.forwarding(r.From, tunName)
	return p
}

// selectors adds the rules that send traffic into tunwall's table: all of
// it, or only some users' (mode all/split), and whatever arrives on the
// LAN interfaces unless a catch-all rule already takes it.
func (p *Plan) selectors(r policy.RoutingConfig) {
	add := func(rule Rule) {
		rule.Priority, rule.Table = PrioSelector, r.Table
		for _, fam := range []int{4, 6} {
			rule.Family = fam
			p.Rules = append(p.Rules, rule)
		}
	}
	catchAll := r.Mode != "none" && len(r.UIDs) == 0
	switch {
	case catchAll:
		add(Rule{})
	case r.Mode != "none":
		for i := range r.UIDs {
			add(Rule{UIDs: &r.UIDs[i]})
		}
	}
	if !catchAll {
		for _, iface := range r.From {
			add(Rule{Iif: iface})
		}
	}
}

// forwarding enables forwarding for exactly the interfaces other hosts'
// traffic crosses: in on a LAN interface, back in from the TUN. Strict
// reverse-path filtering on a LAN interface would drop that traffic (the
// reverse route of a LAN host may lead into the TUN), so it is relaxed to
// loose there.
func (p *Plan) forwarding(from []string, tunName string) {
	if len(from) == 0 {
		return
	}
	for _, iface := range from {
		p.Sysctls = append(p.Sysctls,
			Sysctl{Path: "net/ipv4/conf/" + iface + "/forwarding", Value: "1"},
			Sysctl{Path: "net/ipv6/conf/" + iface + "/force_forwarding", Value: "1"},
			Sysctl{Path: "net/ipv4/conf/" + iface + "/rp_filter", Value: "2", IfStrict: true},
		)
	}
	p.TunSysctls = []Sysctl{
		{Path: "net/ipv4/conf/" + tunName + "/forwarding", Value: "1"},
		{Path: "net/ipv6/conf/" + tunName + "/force_forwarding", Value: "1"},
	}
}

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 4
	}
	return 6
}
