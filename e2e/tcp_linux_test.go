package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// TestTCPPortReusedAfterServerClose opens connections one after another
// from the same client port to a service that closes first, as a client
// does that talks to such a server in a loop. The side of tunwall that
// answered the client closed first too; if it held the 4-tuple (TIME_WAIT),
// the next SYN would go unanswered. Through a router the port can be used
// again at once, and so it can through tunwall.
//
// Each connection must be up before the client would send a lost SYN
// again (after a second): the next SYN often comes while tunwall's side is
// still moving into TIME_WAIT, and a SYN lost there costs that second.
func TestTCPPortReusedAfterServerClose(t *testing.T) {
	need(t)
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			d := &net.Dialer{Timeout: 900 * time.Millisecond, Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
				})
				return errors.Join(err, serr)
			}}
			const n = 20
			for i := range n {
				c, err := dialAgain(d, net.JoinHostPort(fam.server, "7003"))
				if err != nil {
					t.Fatalf("connection %d from %v: %v", i+1, d.LocalAddr, err)
				}
				d.LocalAddr = c.LocalAddr() // the next one comes from the same port
				c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(c, "%d %d\n", 1000, i+1)
				got, err := io.Copy(io.Discard, c) // the server sends, then closes
				c.Close()
				if err != nil || got != 1000 {
					t.Fatalf("connection %d: %d bytes, %v; want 1000 and the server's close", i+1, got, err)
				}
			}
			// Each connection ended cleanly, the one before a reuse too.
			src, dst := d.LocalAddr.String(), net.JoinHostPort(fam.server, "7003")
			var reasons map[string]int
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				reasons = map[string]int{}
				for _, e := range readEvents(t, gw.Log) {
					if flowEvent("close", src, dst)(e) {
						reasons[e.str("reason")]++
					}
				}
				if reasons["fin"] == n || time.Now().After(deadline) {
					break
				}
			}
			if reasons["fin"] != n || len(reasons) != 1 {
				t.Errorf("close events of the %d connections by reason: %v, want all fin", n, reasons)
			}
		})
	}
}

// dialAgain dials from the client namespace. The previous connection from
// the same port may still wait for the last ACK of its close; while it
// does, the kernel does not hand out its 4-tuple (EADDRNOTAVAIL), so that
// is tried again for up to a second.
func dialAgain(d *net.Dialer, addr string) (net.Conn, error) {
	deadline := time.Now().Add(time.Second)
	for {
		c, err := lb.DialWith(lb.Client, d, "tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRNOTAVAIL) || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTCPIdleAndKeepalive: with tcp_idle at 2 s, a flow that moves nothing
// is reset as idle, while one whose client sends TCP keepalive probes
// (every second) lives on without moving a byte, as through a router,
// and still works afterwards.
func TestTCPIdleAndKeepalive(t *testing.T) {
	l := routedLab(t, "twi")
	tw := launch(t, l, routed("info", "limits: {tcp_idle: 2s}\npolicy: {default: allow}\n"))
	kept, keptReader := echoHello(t, l, &net.Dialer{Timeout: 3 * time.Second, KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 5}})
	plain, _ := echoHello(t, l, &net.Dialer{Timeout: 3 * time.Second, KeepAlive: -1})
	quiet := time.Now()

	// The quiet flow is reset once idle.
	plain.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := plain.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("quiet flow: read %v, want a reset", err)
	}
	e := waitEvent(t, tw.Log, flowEvent("close", plain.LocalAddr().String(), plain.RemoteAddr().String()))
	if e.str("reason") != "idle" {
		t.Errorf("quiet flow closed with reason %q, want idle", e.str("reason"))
	}

	// Three idle times without a byte: the flow with keepalives still
	// echoes.
	time.Sleep(time.Until(quiet.Add(6 * time.Second)))
	kept.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(kept, "still there\n"); err != nil {
		t.Fatalf("flow with keepalives: %v", err)
	}
	if got, err := keptReader.ReadString('\n'); err != nil || got != "still there\n" {
		t.Fatalf("flow with keepalives, after %v without a byte: %q %v", time.Since(quiet).Round(time.Second), got, err)
	}
}

// echoHello connects from l's gateway namespace (the route-all labs'
// client) to the echo service with d, and has "hello" echoed. The
// connection is closed when the test ends.
func echoHello(t *testing.T, l *lab.Lab, d *net.Dialer) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := l.DialWith(l.Gateway, d, "tcp", hostPort(lab.ServerV4, "7001"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	br := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := br.ReadString('\n'); err != nil || got != "hello\n" {
		t.Fatalf("echo: %q %v", got, err)
	}
	return c, br
}

// TestTCPKeepaliveFindsServerGone: a client that sends TCP keepalive
// probes learns, through tunwall as through a router, that its server has
// gone without a word. tunwall's stack answers the client's probes, so
// tunwall probes the server itself while they come; when the server stops
// answering (a blackhole route in its namespace drops everything it sends
// to the gateway), the flow ends as idle and the client is reset.
func TestTCPKeepaliveFindsServerGone(t *testing.T) {
	l := routedLab(t, "twk")
	tw := launch(t, l, routed("info", "limits: {tcp_idle: 2s}\npolicy: {default: allow}\n"))
	d := &net.Dialer{Timeout: 3 * time.Second, KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 30}}
	c, _ := echoHello(t, l, d)
	// Two idle times of probes only, then the server goes.
	time.Sleep(4 * time.Second)
	if out, err := l.Run(l.Server, "ip", "route", "add", "blackhole", lab.GwServer4+"/32"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	gone := time.Now()
	// The client's own probes (30 a second apart) would take half a
	// minute; tunwall's give up on the server within a few seconds.
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read %v %v after the server went, want a reset", err, time.Since(gone).Round(time.Second))
	}
	t.Logf("reset %v after the server went", time.Since(gone).Round(100*time.Millisecond))
	e := waitEvent(t, tw.Log, flowEvent("close", c.LocalAddr().String(), c.RemoteAddr().String()))
	if e.str("reason") != "idle" {
		t.Errorf("closed with reason %q, want idle", e.str("reason"))
	}
}

// TestTCPKeepaliveFindsClientGone is the other way round: a server that
// sends keepalive probes (the lab service on 7004, every second) learns
// that its client has gone. While the client is there the flow lives on
// without a byte; once the client answers nothing more (a blackhole route
// in its namespace drops all it sends), tunwall's probes towards it go
// unanswered, the flow ends as idle and the server is reset.
func TestTCPKeepaliveFindsClientGone(t *testing.T) {
	l := routedLab(t, "twkc")
	tw := startGateway(t, l, "twka", "tun: {name: twka}\nlog: {format: json}\nlimits: {tcp_idle: 2s}\npolicy: {default: allow}\n")
	addr := net.JoinHostPort(lab.ServerV4, "7004")
	c, err := l.DialWith(l.Client, &net.Dialer{Timeout: 3 * time.Second, KeepAlive: -1}, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "probe\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := bufio.NewReader(c).ReadString('\n'); err != nil || got != "probing\n" {
		t.Fatalf("probe service: %q %v", got, err)
	}
	// Two idle times without a byte, the server probing: the flow lives.
	time.Sleep(4 * time.Second)
	if stallConns(l) == "" {
		t.Fatal("the server lost its connection while the client was there")
	}
	if out, err := l.Run(l.Client, "ip", "route", "add", "blackhole", lab.ServerV4+"/32"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	gone := time.Now()
	for stallConns(l) != "" {
		if time.Since(gone) > 20*time.Second {
			t.Fatal("the server still holds its connection 20 s after the client went")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the server was reset %v after the client went", time.Since(gone).Round(100*time.Millisecond))
	e := waitEvent(t, tw.Log, flowEvent("close", c.LocalAddr().String(), addr))
	if e.str("reason") != "idle" {
		t.Errorf("closed with reason %q, want idle", e.str("reason"))
	}
}

// TestTCPResetWhileStalled: a reset from one end of a flow reaches the
// other end while tunwall's relay towards the first end is stuck, as a
// router passes a reset on whatever else is queued. "client resets": the
// service reads nothing, the client writes until its writes stall and
// then resets; the service's connection must go. "server resets": the
// client reads nothing, the service sends until its writes stall and then
// resets; the client must get the reset after the data that had arrived.
// Each flow must end logged as reset.
func TestTCPResetWhileStalled(t *testing.T) {
	need(t)
	for _, fam := range families {
		addr := net.JoinHostPort(fam.server, "7004")
		t.Run(fam.name+"/client resets", func(t *testing.T) {
			c, src := stallService(t, addr, "hold")
			sent := fillUntilStalled(t, c)
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			if e := waitEvent(t, gw.Log, flowEvent("close", src, addr)); e.str("reason") != "rst" {
				t.Errorf("close event %v, want reason rst", e)
			}
			for deadline := time.Now().Add(3 * time.Second); stallConns(lb) != ""; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the service still holds its connection after the client's reset (%d bytes sent): %s", sent, stallConns(lb))
				}
			}
		})
		t.Run(fam.name+"/server resets", func(t *testing.T) {
			c, src := stallService(t, addr, "reset")
			if e := waitEvent(t, gw.Log, flowEvent("close", src, addr)); e.str("reason") != "rst" {
				t.Errorf("close event %v, want reason rst", e)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := io.Copy(io.Discard, c)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("client read %d bytes, then %v; want the reset", n, err)
			}
		})
	}
}

// stallService connects the suite's client to the lab service on port
// 7004 at addr and gives it command ("hold", "reset"); it returns the
// connection and its local address.
func stallService(t *testing.T, addr, command string) (net.Conn, string) {
	t.Helper()
	c, err := dialClient(t, "tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, command+"\n"); err != nil {
		t.Fatal(err)
	}
	return c, c.LocalAddr().String()
}

// stallConns lists the connections the lab service on port 7004 holds
// in l's server namespace ("" when none).
func stallConns(l *lab.Lab) string {
	out, _ := l.Run(l.Server, "ss", "-tnH", "state", "established", "( sport = :7004 )")
	return strings.TrimSpace(out)
}

// fillUntilStalled writes to c until a write has not gone out for 300 ms,
// and returns how much went out.
func fillUntilStalled(t *testing.T, c net.Conn) int64 {
	t.Helper()
	buf := make([]byte, 64<<10)
	var sent int64
	for {
		c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Write(buf)
		sent += int64(n)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.SetWriteDeadline(time.Time{})
			return sent
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", sent, err)
		}
	}
}

// narrowPath gives the lab client one more address, client (with its
// network's prefix), and narrows the gateway's path to it to an MTU of
// 1400: a route of its own (route, "/32" or "/128") with that mtu, or,
// with route "", the gateway's whole link to the clients. All is undone
// when the test ends.
func narrowPath(t *testing.T, client, prefix, route string) {
	t.Helper()
	addr := []string{"ip", "addr", "add", client + prefix, "dev", "c0"}
	if strings.Contains(client, ":") {
		addr = append(addr, "nodad")
	}
	if out, err := lb.Run(lb.Client, addr...); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { lb.Run(lb.Client, "ip", "addr", "del", client+prefix, "dev", "c0") })
	narrow, widen := []string{"ip", "link", "set", "g0", "mtu", "1400"}, []string{"ip", "link", "set", "g0", "mtu", "1500"}
	if route != "" {
		narrow = []string{"ip", "route", "add", client + route, "dev", "g0", "mtu", "1400"}
		widen = []string{"ip", "route", "del", client + route}
	}
	if out, err := lb.Run(lb.Gateway, narrow...); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { lb.Run(lb.Gateway, widen...) })
}

// TestTCPNarrowPathToClient gives the gateway a route to one client
// address with a smaller MTU (1400) than the TUN's (1500), or its link to
// the clients that MTU, as when that link is a tunnel. The kernel refuses
// to forward the stack's full-size segments on that path and sends
// "fragmentation needed" to the server's address, which tunwall's packets
// carry: no one who could act on it hears of it. tunwall must fit its
// segments to the route (by the MSS of the client's SYN), so that a
// download arrives whole, and log the narrow path once.
func TestTCPNarrowPathToClient(t *testing.T) {
	need(t)
	for _, tc := range []struct {
		name, client, server, prefix, route string // route "": the link is narrow
	}{
		{"ipv4 route", "10.77.1.5", lab.ServerV4, "/24", "/32"},
		{"ipv6 route", "fd77:1::5", lab.ServerV6, "/64", "/128"},
		{"ipv4 link", "10.77.1.6", lab.ServerV4, "/24", ""},
		{"ipv6 link", "fd77:1::6", lab.ServerV6, "/64", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			narrowPath(t, tc.client, tc.prefix, tc.route)
			d := &net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(tc.client)}}
			c, err := lb.DialWith(lb.Client, d, "tcp", net.JoinHostPort(tc.server, "7003"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			const size = 1 << 20
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := fmt.Fprintf(c, "%d 1\n", size); err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, c)
			if n != size {
				t.Fatalf("received %d of %d bytes (%v)", n, size, err)
			}
			e := waitEvent(t, gw.Log, func(e event) bool { return e.str("client") == tc.client })
			if e.num("path_mtu") != 1400 || e.num("tun_mtu") != 1500 {
				t.Errorf("log line %v, want path_mtu 1400 and tun_mtu 1500", e)
			}
		})
	}
}

// TestUpstreamSocketsReused: connections one after another, ended by the
// client's reset or by a close both ways, each with its own echo; from the
// second on, each goes upstream on the host socket the one before left
// (tunwall_upstream_sockets_reused_total), and each ends as it was ended.
func TestUpstreamSocketsReused(t *testing.T) {
	need(t)
	ready := waitEvent(t, gw.Log, func(e event) bool { return e.str("event") == "ready" })
	metrics := unixMetrics(t, ready.str("control"))
	const reused = "tunwall_upstream_sockets_reused_total"
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			before := metrics()[reused]
			const n = 10
			for i := range n {
				c, err := lb.Dial(lb.Client, "tcp", net.JoinHostPort(fam.server, "7001"), 3*time.Second)
				if err != nil {
					t.Fatalf("connection %d: %v", i+1, err)
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				line := fmt.Sprintf("connection %d\n", i+1)
				io.WriteString(c, line)
				if got, err := bufio.NewReader(c).ReadString('\n'); got != line {
					c.Close()
					t.Fatalf("connection %d echoed %q, %v; want %q", i+1, got, err, line)
				}
				src, dst := c.LocalAddr().String(), c.RemoteAddr().String()
				reason := "fin"
				if i%2 == 0 {
					c.(*net.TCPConn).SetLinger(0)
					reason = "rst"
				}
				c.Close()
				// The flow's close event comes once its upstream socket is closed or kept.
				if e := waitEvent(t, gw.Log, flowEvent("close", src, dst)); e.str("reason") != reason {
					t.Errorf("connection %d closed with reason %q, want %q", i+1, e.str("reason"), reason)
				}
			}
			if got := metrics()[reused] - before; got < n-1 {
				t.Errorf("%v of %d connections one after another went upstream on a socket left by one before, want at least %d", got, n, n-1)
			}
		})
	}
}
