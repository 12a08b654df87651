package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func afOf(fam int) int {
	if fam == 4 {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func nlRule(r Rule) *netlink.Rule {
	n := netlink.NewRule()
	n.Family = afOf(r.Family)
	n.Priority = r.Priority
	n.Table = r.Table
	if r.Unreachable {
		n.Type = nl.FR_ACT_UNREACHABLE
	}
	n.Protocol = Protocol
	if r.Mark != 0 {
		mask := uint32(0xffffffff)
		n.Mark, n.Mask = r.Mark, &mask
	}
	n.IifName = r.Iif
	if r.To.IsValid() {
		n.Dst = ipNet(r.To)
	}
	if r.UIDs != nil {
		n.UIDRange = netlink.NewRuleUIDRange(r.UIDs.First, r.UIDs.Last)
	}
	return n
}

func addRule(r Rule) error {
	if err := netlink.RuleAdd(nlRule(r)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add rule %s: %w", r, err)
	}
	return nil
}

func delRule(r Rule) error {
	if err := netlink.RuleDel(nlRule(r)); err != nil && !missing(err) {
		return fmt.Errorf("delete rule %s: %w", r, err)
	}
	return nil
}

func nlRoute(r Route) (*netlink.Route, error) {
	n := &netlink.Route{Dst: ipNet(r.To), Table: r.Table, Priority: int(r.Metric),
		Protocol: netlink.RouteProtocol(Protocol), Family: afOf(family(r.To))}
	if r.Dev == "" {
		n.Type = unix.RTN_UNREACHABLE
		return n, nil
	}
	link, err := netlink.LinkByName(r.Dev)
	if err != nil {
		return nil, err
	}
	n.LinkIndex, n.Scope = link.Attrs().Index, netlink.SCOPE_LINK
	return n, nil
}

func addRoute(r Route) error {
	n, err := nlRoute(r)
	if err == nil {
		err = netlink.RouteReplace(n)
	}
	if err != nil {
		return fmt.Errorf("add route %s: %w", r, err)
	}
	return nil
}

func delRoute(r Route) error {
	n, err := nlRoute(r)
	if err != nil {
		return nil // its device is gone, and the route with it
	}
	if err := netlink.RouteDel(n); err != nil && !missing(err) {
		return fmt.Errorf("delete route %s: %w", r, err)
	}
	return nil
}

// missing reports a delete of something that is not there.
func missing(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV)
}

// checkConflicts refuses a table or mark that something other than
// tunwall uses: a route in the table, a rule leading to it or matching
// the mark, not tagged with tunwall's protocol.
func checkConflicts(table int, mark uint32) error {
	for _, af := range []int{unix.AF_INET, unix.AF_INET6} {
		rules, err := netlink.RuleList(af)
		if err != nil {
			return fmt.Errorf("list rules: %w", err)
		}
		for _, r := range rules {
			if r.Protocol == Protocol {
				continue
			}
			if r.Table == table {
				return fmt.Errorf("routing table %d is already used by another rule (%s); choose another routing.table", table, r)
			}
			if r.Mark == mark && mark != 0 {
				return fmt.Errorf("egress mark %#x is already matched by another rule (%s); choose another egress.mark", mark, r)
			}
		}
		routes, err := netlink.RouteListFiltered(af, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("list table %d: %w", table, err)
		}
		for _, r := range routes {
			if r.Protocol != Protocol {
				return fmt.Errorf("routing table %d already holds a route tunwall did not make (%s); choose another routing.table", table, r)
			}
		}
	}
	return nil
}

// sweep removes rules and routes tagged with tunwall's protocol that no
// record mentions (table 0: every table).
func sweep(table int) ([]string, error) {
	var done []string
	var errs error
	for _, af := range []int{unix.AF_INET, unix.AF_INET6} {
		rules, err := netlink.RuleList(af)
		if err != nil {
			return done, fmt.Errorf("list rules: %w", err)
		}
		for i := range rules {
			r := &rules[i]
			if r.Protocol != Protocol || table != 0 && r.Table != table {
				continue
			}
			if err := netlink.RuleDel(r); err != nil && !missing(err) {
				errs = errors.Join(errs, fmt.Errorf("delete %s: %w", r, err))
				continue
			}
			done = append(done, "rule "+r.String())
		}
		filter, mask := &netlink.Route{Table: table, Protocol: Protocol}, uint64(netlink.RT_FILTER_PROTOCOL)
		if table == 0 {
			filter.Table = unix.RT_TABLE_UNSPEC
		} else {
			mask |= netlink.RT_FILTER_TABLE
		}
		routes, err := netlink.RouteListFiltered(af, filter, mask)
		if err != nil {
			return done, fmt.Errorf("list routes: %w", err)
		}
		for i := range routes {
			if err := netlink.RouteDel(&routes[i]); err != nil && !missing(err) {
				errs = errors.Join(errs, fmt.Errorf("delete %s: %w", routes[i], err))
				continue
			}
			done = append(done, "route "+routes[i].String())
		}
	}
	return done, errs
}

// currentNetns identifies the network namespace this process is in.
func currentNetns() (Netns, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return Netns{}, fmt.Errorf("network namespace: %w", err)
	}
	ns := Netns{Inode: st.Ino}
	if fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
		const soNetnsCookie = 71 // SO_NETNS_COOKIE, Linux 5.14+
		if c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, soNetnsCookie); err == nil {
			ns.Cookie = c
		}
		unix.Close(fd)
	}
	return ns, nil
}

// running reports whether the tunwall that wrote s still runs: the pid
// with the same start time, not a later process that reused the pid.
func (s *State) running() bool {
	return s.PID != 0 && ProcessStart(s.PID) == s.Start
}
