package e2e

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// egressConfig is a gateway on device dev that allows everything and
// binds its upstream sockets to iface.
func egressConfig(dev, iface string) string {
	return "tun: {name: " + dev + "}\nlog: {level: info, format: json}\negress: {interface: " + iface + "}\npolicy: {default: allow}\n"
}

// echoByte sends one byte on c and reads it back, within 3 s.
func echoByte(c net.Conn) error {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("e")); err != nil {
		return err
	}
	_, err := c.Read(make([]byte, 1))
	return err
}

// TestEgressInterface: with egress.interface set, the upstream sockets of
// TCP flows and UDP sessions, IPv4 and IPv6, are bound to that interface
// (the gateway's link to the server, g1, as ss shows), and traffic passes.
// Bound to an interface that does not exist, tunwall warns at start and
// every dial fails: a TCP client is reset and the flow's close event says
// why, a UDP client gets port unreachable.
func TestEgressInterface(t *testing.T) {
	l := routedLab(t, "twh")
	gw := startGateway(t, l, "twh0", egressConfig("twh0", "g1"))
	for _, fam := range families {
		for _, network := range []string{"tcp", "udp"} {
			t.Run(fam.name+"/"+network, func(t *testing.T) {
				c, err := l.Dial(l.Client, network, net.JoinHostPort(fam.server, "7001"), 3*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if err := echoByte(c); err != nil {
					t.Fatalf("echo through tunwall bound to g1: %v", err)
				}
				// The upstream socket, while the flow lives.
				out, err := l.Run(l.Gateway, "ss", "-nH", "--"+network)
				if err != nil {
					t.Fatal(err)
				}
				server := net.JoinHostPort(fam.server, "7001")
				var upstream []string
				for _, line := range strings.Split(out, "\n") {
					if strings.Contains(line, server) {
						upstream = append(upstream, line)
					}
				}
				if len(upstream) != 1 || !strings.Contains(upstream[0], "%g1:") {
					t.Fatalf("want one upstream socket to %s, bound to g1; sockets:\n%s", server, out)
				}
			})
		}
	}
	// The warning would come right after ready, before any flow's event.
	waitEvent(t, gw.Log, func(e event) bool {
		return e.str("event") == "close" && e.str("proto") == "tcp" && e.str("dst") == net.JoinHostPort(lab.ServerV6, "7001")
	})
	for _, e := range readEvents(t, gw.Log) {
		if e.str("event") == "egress" {
			t.Errorf("egress warning with the interface present: %v", e)
		}
	}

	t.Run("missing interface", func(t *testing.T) {
		l := routedLab(t, "twj")
		gw := startGateway(t, l, "twj0", egressConfig("twj0", "nosuch0"))
		warn := waitEvent(t, gw.Log, func(e event) bool { return e.str("event") == "egress" })
		if warn.str("level") != "warn" || warn.str("interface") != "nosuch0" {
			t.Errorf("egress event %v, want a warning naming nosuch0", warn)
		}
		_, err := l.Dial(l.Client, "tcp", net.JoinHostPort(lab.ServerV4, "7001"), 3*time.Second)
		if err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("dial through tunwall bound to a missing interface: %v, want connection refused", err)
		}
		e := waitEvent(t, gw.Log, func(e event) bool {
			return e.str("event") == "close" && e.str("dst") == net.JoinHostPort(lab.ServerV4, "7001")
		})
		if e.str("reason") != "rst" || !strings.Contains(e.str("error"), "SO_BINDTODEVICE") || !strings.Contains(e.str("error"), "no such device") {
			t.Errorf("close event %v, want reason rst and an error naming SO_BINDTODEVICE and no such device", e)
		}
		// A UDP session's socket cannot be opened either: port unreachable.
		c, err := l.Dial(l.Client, "udp", net.JoinHostPort(lab.ServerV4, "7001"), 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echoByte(c); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("UDP echo through tunwall bound to a missing interface: %v, want connection refused", err)
		}
	})
}
