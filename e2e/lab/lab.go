// Package lab builds the three-namespace topology tunwall's end-to-end
// tests, demo and benchmarks run in:
//
//	client ns --veth-- gateway ns --veth-- server ns
//	10.77.1.2          10.77.1.1  10.77.2.1  10.77.2.2
//	fd77:1::2          fd77:1::1  fd77:2::1  fd77:2::2
//
// Behind the server lies one more network, 10.77.3.0/24 and fd77:3::/64,
// that the server forwards to a neighbour that is not there: a packet sent
// to it with a TTL of 1 from the gateway gets a Time Exceeded from the
// server, as from a router on the way.
//
// The gateway forwards between its veths (the kernel path). Route sends
// everything arriving from the client into a TUN device instead (the
// tunwall path): an "ip rule iif g0" points at a table whose default
// routes go to the TUN. Everything lives in namespaces the Lab creates and
// Close deletes; the machine's own namespace is never touched.
package lab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netns"
)

// Addresses of the lab hosts.
const (
	ClientV4  = "10.77.1.2"
	ClientV6  = "fd77:1::2"
	GwClient4 = "10.77.1.1"
	GwServer4 = "10.77.2.1"
	ServerV4  = "10.77.2.2"
	ServerV6  = "fd77:2::2"
	// ServerAlt4 and ServerAlt6 are second addresses of the server.
	ServerAlt4 = "10.77.2.3"
	ServerAlt6 = "fd77:2::3"
	// Absent4 and Absent6 are on the server's link but belong to no host.
	Absent4 = "10.77.2.99"
	Absent6 = "fd77:2::99"
	// Far4 and Far6 are in the network behind the server.
	Far4 = "10.77.3.1"
	Far6 = "fd77:3::1"

	// Table is the gateway's routing table for traffic sent into the TUN.
	Table = "100"
)

// Lab is one instance of the topology.
type Lab struct {
	Client, Gateway, Server string // namespace names
	prefix                  string
}

// New creates the namespaces, links and addresses. prefix makes the
// namespace names unique (at most 8 characters). Labs left behind by
// processes that are gone are removed first (Sweep).
func New(prefix string) (*Lab, error) {
	Sweep()
	l := named(prefix)
	if err := mark(prefix); err != nil {
		return nil, fmt.Errorf("lab mark: %w", err)
	}
	steps := [][]string{
		{"ip", "netns", "add", l.Client},
		{"ip", "netns", "add", l.Gateway},
		{"ip", "netns", "add", l.Server},
	}
	// No duplicate address detection: links are usable the moment they are
	// up (link-local addresses would otherwise stay tentative for a while,
	// stalling neighbour discovery). Set before the links exist, so they
	// inherit it.
	for _, ns := range []string{l.Client, l.Gateway, l.Server} {
		steps = append(steps, l.in(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"))
	}
	steps = append(steps, [][]string{
		{"ip", "link", "add", "c0", "netns", l.Client, "type", "veth", "peer", "name", "g0", "netns", l.Gateway},
		{"ip", "link", "add", "s0", "netns", l.Server, "type", "veth", "peer", "name", "g1", "netns", l.Gateway},
	}...)
	host := func(ns, dev, v4, v6, gw4, gw6 string) {
		steps = append(steps,
			l.in(ns, "ip", "link", "set", "lo", "up"),
			l.in(ns, "ip", "addr", "add", v4+"/24", "dev", dev),
			l.in(ns, "ip", "addr", "add", v6+"/64", "dev", dev, "nodad"),
			l.in(ns, "ip", "link", "set", dev, "up"),
			l.in(ns, "ip", "route", "add", "default", "via", gw4),
			l.in(ns, "ip", "-6", "route", "add", "default", "via", gw6),
		)
	}
	host(l.Client, "c0", ClientV4, ClientV6, GwClient4, "fd77:1::1")
	host(l.Server, "s0", ServerV4, ServerV6, GwServer4, "fd77:2::1")
	steps = append(steps,
		l.in(l.Server, "ip", "addr", "add", ServerAlt4+"/24", "dev", "s0"),
		l.in(l.Server, "ip", "addr", "add", ServerAlt6+"/64", "dev", "s0", "nodad"),
		// The network behind the server.
		l.in(l.Server, "ip", "route", "add", "10.77.3.0/24", "via", Absent4),
		l.in(l.Server, "ip", "-6", "route", "add", "fd77:3::/64", "via", Absent6),
		l.in(l.Server, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"))
	g := l.Gateway
	steps = append(steps,
		l.in(g, "ip", "link", "set", "lo", "up"),
		l.in(g, "ip", "addr", "add", GwClient4+"/24", "dev", "g0"),
		l.in(g, "ip", "addr", "add", "fd77:1::1/64", "dev", "g0", "nodad"),
		l.in(g, "ip", "addr", "add", GwServer4+"/24", "dev", "g1"),
		l.in(g, "ip", "addr", "add", "fd77:2::1/64", "dev", "g1", "nodad"),
		l.in(g, "ip", "link", "set", "g0", "up"),
		l.in(g, "ip", "link", "set", "g1", "up"),
		l.in(g, "ip", "route", "add", "10.77.3.0/24", "via", ServerV4),
		l.in(g, "ip", "-6", "route", "add", "fd77:3::/64", "via", ServerV6),
		// Forwarding on; reverse-path filtering off, because replies come
		// out of the TUN with the server's address as source.
		l.in(g, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
			"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"),
	)
	for _, s := range steps {
		if _, err := run(s...); err != nil {
			l.Close()
			return nil, err
		}
	}
	if err := l.warmUp(); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// warmUp pings the gateway from both hosts, both families, until each
// answers: the first IPv6 packets on fresh links can be lost while
// neighbour discovery settles, and tests must not see that.
func (l *Lab) warmUp() error {
	probes := []struct{ ns, addr string }{
		{l.Client, GwClient4}, {l.Client, "fd77:1::1"},
		{l.Server, GwServer4}, {l.Server, "fd77:2::1"},
	}
	for _, p := range probes {
		var err error
		for try := 0; try < 20; try++ {
			if _, err = l.Run(p.ns, "ping", "-n", "-c", "1", "-W", "1", p.addr); err == nil {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("lab warm-up: %s cannot reach %s: %w", p.ns, p.addr, err)
		}
	}
	return nil
}

// in builds a command that runs inside namespace ns.
func (l *Lab) in(ns string, args ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, args...)
}

// Cmd returns an unstarted command running inside namespace ns.
func (l *Lab) Cmd(ns string, args ...string) *exec.Cmd {
	full := l.in(ns, args...)
	return exec.Command(full[0], full[1:]...)
}

// Run runs a command in namespace ns and returns its combined output.
func (l *Lab) Run(ns string, args ...string) (string, error) {
	return run(l.in(ns, args...)...)
}

// Route sends traffic arriving from the client into TUN device dev (which
// must exist) through policy routing, for both families.
func (l *Lab) Route(dev string) error {
	for _, fam := range []string{"-4", "-6"} {
		if _, err := l.Run(l.Gateway, "ip", fam, "route", "replace", "default", "dev", dev, "table", Table); err != nil {
			return err
		}
		if _, err := l.Run(l.Gateway, "ip", fam, "rule", "add", "iif", "g0", "lookup", Table, "pref", "100"); err != nil {
			return err
		}
	}
	return nil
}

// Unroute removes the rules added by Route (the routes go with the device).
func (l *Lab) Unroute() {
	for _, fam := range []string{"-4", "-6"} {
		l.Run(l.Gateway, "ip", fam, "rule", "del", "iif", "g0", "lookup", Table, "pref", "100")
		l.Run(l.Gateway, "ip", fam, "route", "flush", "table", Table)
	}
}

// WaitLink waits until interface dev exists and is up in namespace ns.
func (l *Lab) WaitLink(ctx context.Context, ns, dev string) error {
	for {
		out, err := l.Run(ns, "ip", "-o", "link", "show", "dev", dev)
		if err == nil && strings.Contains(out, ",UP") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("link %s in %s not up: %w", dev, ns, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Dial opens a connection from inside namespace ns. The socket stays in
// that namespace; the returned Conn is used like any other.
func (l *Lab) Dial(ns, network, addr string, timeout time.Duration) (net.Conn, error) {
	return l.DialWith(ns, &net.Dialer{Timeout: timeout}, network, addr)
}

// DialWith is Dial with a dialer of the caller's (a local address, socket
// options).
func (l *Lab) DialWith(ns string, d *net.Dialer, network, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return nil, err
	}
	defer netns.Set(orig)
	return d.Dial(network, addr)
}

// Close deletes the namespaces, and with them everything inside.
func (l *Lab) Close() {
	for _, ns := range []string{l.branch(), l.Client, l.Gateway, l.Server} {
		run("ip", "netns", "del", ns)
	}
	os.Remove(filepath.Join(MarkDir, l.prefix))
}

func run(args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Supported reports why the lab cannot run here, or "" if it can.
func Supported() string {
	if os.Geteuid() != 0 {
		return "needs root (network namespaces, veth, TUN)"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "needs iproute2 (ip)"
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "needs /dev/net/tun"
	}
	return ""
}
