package e2e

import (
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// TestNarrowLinkBeyondClient: a host behind the client namespace, which
// routes for it over a 1400-byte link, while the host's SYNs announce the
// MSS of a 1500-byte path (as behind a narrower tunnel). This host's
// route to it looks as wide as the TUN: only the
// client, a router on the way, can tell, by "fragmentation needed" /
// "packet too big" to the server's address, which the client side routes
// back into the TUN. The first download must arrive whole (the stack
// adapts to the report), tunwall must log the reported path MTU, and the
// next download must fit the link from its first segment: the client
// refuses no packet of it. Datagrams to the host fit the reported path
// too, in a UDP session that began before the report.
func TestNarrowLinkBeyondClient(t *testing.T) {
	need(t)
	br, err := lb.AddBranch(1400)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lb.RemoveBranch)
	for _, tc := range []struct{ name, host, router, server string }{
		{"ipv4", lab.BranchV4, lab.ClientV4, lab.ServerV4},
		{"ipv6", lab.BranchV6, lab.ClientV6, lab.ServerV6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := lb.Dial(br, "udp", net.JoinHostPort(tc.server, "7001"), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			echo(t, c, 100)

			t.Logf("first download: %v", download(t, br, tc.server))
			e := waitEvent(t, gw.Log, func(e event) bool { return e.str("client") == tc.host })
			if e.num("path_mtu") != 1400 || e.str("reported_by") != tc.router {
				t.Errorf("log line %v, want path_mtu 1400 reported_by %s", e, tc.router)
			}
			refused := fragFails(t, tc.host)
			t.Logf("second download: %v", download(t, br, tc.server))
			if n := fragFails(t, tc.host) - refused; n != 0 {
				t.Errorf("the client refused %d packets of the second download as too big", n)
			}

			echo(t, c, 1450)
		})
	}
}

// download fetches 1 MiB from the lab's generator service from namespace
// ns, and fails unless all of it arrives within 10 s. It returns how long
// that took.
func download(t *testing.T, ns, server string) time.Duration {
	t.Helper()
	c, err := lb.Dial(ns, "tcp", net.JoinHostPort(server, "7003"), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 1 << 20
	start := time.Now()
	c.SetDeadline(start.Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "%d 1\n", size); err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, c); n != size {
		t.Fatalf("received %d of %d bytes (%v)", n, size, err)
	}
	return time.Since(start)
}

// fragFails returns how many packets the client namespace, as a router,
// has refused to forward for being too big for the link out (IPv4 with DF
// or IPv6), in the family of addr.
func fragFails(t *testing.T, addr string) int {
	t.Helper()
	file, key := "/proc/net/snmp", "FragFails"
	if strings.Contains(addr, ":") {
		file, key = "/proc/net/snmp6", "Ip6FragFails"
	}
	out, err := lb.Run(lb.Client, "cat", file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == key { // snmp6: "name value"
			n, _ := strconv.Atoi(f[1])
			return n
		}
		// snmp: a line of names, then a line of values, both "Ip: ..."
		if len(f) > 0 && f[0] == "Ip:" && i+1 < len(lines) {
			if at := slices.Index(f, key); at > 0 {
				v := strings.Fields(lines[i+1])
				if at < len(v) {
					n, _ := strconv.Atoi(v[at])
					return n
				}
			}
		}
	}
	t.Fatalf("no %s in %s", key, file)
	return 0
}
