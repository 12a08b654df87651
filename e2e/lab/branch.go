package lab

import "fmt"

// Addresses of the branch host and of the client on the branch link.
const (
	BranchV4       = "10.77.4.2"
	BranchV6       = "fd77:4::2"
	BranchRouterV4 = "10.77.4.1"
	BranchRouterV6 = "fd77:4::1"
)

// AddBranch puts one more host behind the client, as a branch network
// behind a router: the client namespace forwards between it and the
// gateway, which routes 10.77.4.0/24 and fd77:4::/64 through the client.
//
//	branch ns --veth-- client ns --veth-- gateway ns ...
//	10.77.4.2  10.77.4.1 (c1)
//	fd77:4::2  fd77:4::1
//
// The branch link has MTU mtu, but the branch host's routes announce the
// MSS of a 1500-byte path (advmss), as a host on a LAN behind a narrower
// tunnel does: the client, a router on the way, cannot forward a
// full-size segment to it and answers with "fragmentation needed" /
// "packet too big" to the segment's source. It returns the branch
// namespace; RemoveBranch (or Close) undoes it all.
func (l *Lab) AddBranch(mtu int) (string, error) {
	b, c, g := l.branch(), l.Client, l.Gateway
	steps := [][]string{
		{"ip", "netns", "add", b},
		l.in(b, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"),
		{"ip", "link", "add", "b0", "netns", b, "type", "veth", "peer", "name", "c1", "netns", c},
		l.in(b, "ip", "link", "set", "b0", "mtu", fmt.Sprint(mtu)),
		l.in(b, "ip", "link", "set", "lo", "up"),
		l.in(b, "ip", "addr", "add", BranchV4+"/24", "dev", "b0"),
		l.in(b, "ip", "addr", "add", BranchV6+"/64", "dev", "b0", "nodad"),
		l.in(b, "ip", "link", "set", "b0", "up"),
		l.in(b, "ip", "route", "add", "default", "via", BranchRouterV4, "advmss", "1460"),
		l.in(b, "ip", "-6", "route", "add", "default", "via", BranchRouterV6, "advmss", "1440"),
		l.in(c, "ip", "link", "set", "c1", "mtu", fmt.Sprint(mtu)),
		l.in(c, "ip", "addr", "add", BranchRouterV4+"/24", "dev", "c1"),
		l.in(c, "ip", "addr", "add", BranchRouterV6+"/64", "dev", "c1", "nodad"),
		l.in(c, "ip", "link", "set", "c1", "up"),
		l.in(c, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"),
		l.in(g, "ip", "route", "add", "10.77.4.0/24", "via", ClientV4),
		l.in(g, "ip", "-6", "route", "add", "fd77:4::/64", "via", ClientV6),
	}
	for _, s := range steps {
		if _, err := run(s...); err != nil {
			l.RemoveBranch()
			return "", err
		}
	}
	for _, addr := range []string{BranchRouterV4, BranchRouterV6} {
		var err error
		for try := 0; try < 20; try++ {
			if _, err = l.Run(b, "ping", "-n", "-c", "1", "-W", "1", addr); err == nil {
				break
			}
		}
		if err != nil {
			l.RemoveBranch()
			return "", fmt.Errorf("branch cannot reach %s: %w", addr, err)
		}
	}
	return b, nil
}

// RemoveBranch removes what AddBranch made, whatever part of it exists.
func (l *Lab) RemoveBranch() {
	run("ip", "netns", "del", l.branch()) // the veth pair goes with it
	l.Run(l.Client, "sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")
	l.Run(l.Gateway, "ip", "route", "del", "10.77.4.0/24")
	l.Run(l.Gateway, "ip", "-6", "route", "del", "fd77:4::/64")
}

func (l *Lab) branch() string { return l.prefix + "-br" }
