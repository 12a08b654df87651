package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
	"golang.org/x/sys/unix"
)

// Other ICMP errors about a session's datagrams reach the client too, from
// the address they are about: here the gateway's neighbour solicitations
// for an address nobody has go unanswered (about three seconds). A
// connected UDP socket hears of such an error only with IP_RECVERR, through
// a kernel router as well; its error queue then holds the error, quoting
// the datagram.
func TestUDPErrorsPassedOn(t *testing.T) {
	need(t)
	for _, tc := range []struct {
		addr       string
		typ, code  uint8
		level, opt int
	}{
		{lab.Absent4, 3, 1, unix.IPPROTO_IP, unix.IP_RECVERR},     // host unreachable
		{lab.Absent6, 1, 3, unix.IPPROTO_IPV6, unix.IPV6_RECVERR}, // address unreachable
	} {
		t.Run(tc.addr, func(t *testing.T) {
			t.Parallel()
			c, q := erroredDatagram(t, net.JoinHostPort(tc.addr, "7001"), "anyone?", func(fd int) error {
				return unix.SetsockoptInt(fd, tc.level, tc.opt, 1)
			})
			if q.origin != unix.SO_EE_ORIGIN_ICMP && q.origin != unix.SO_EE_ORIGIN_ICMP6 || q.typ != tc.typ || q.code != tc.code ||
				q.from.String() != tc.addr || string(q.data) != "anyone?" {
				t.Errorf("queued error: %+v; want ICMP type %d code %d from %s quoting %q", q, tc.typ, tc.code, tc.addr, "anyone?")
			}
			assertVerdict(t, c.LocalAddr().String(), c.RemoteAddr().String(), "allow", "udp-absent")
		})
	}
}

// farHops are the far network's addresses (behind the server), each with
// the addresses the server answers from when a packet's hops run out
// there, the ICMP type of that answer (Time Exceeded), and the socket
// options that ask for the error queue and set the hops.
var farHops = []struct {
	addr       string
	router     [2]string
	typ        uint8
	level, opt int
	hops       int
}{
	{lab.Far4, [2]string{lab.ServerV4, lab.ServerAlt4}, 11, unix.IPPROTO_IP, unix.IP_RECVERR, unix.IP_TTL},
	{lab.Far6, [2]string{lab.ServerV6, lab.ServerAlt6}, 3, unix.IPPROTO_IPV6, unix.IPV6_RECVERR, unix.IPV6_UNICAST_HOPS},
}

// TestUDPHopsPassedOn: a datagram that reaches tunwall with its TTL (hop
// limit) nearly spent goes upstream with what is left, as through a
// router, so the router where it runs out answers with Time Exceeded and
// the client hears it from that router: traceroute sees the hops behind
// tunwall. The client sends with 2; the gateway's forwarding into the TUN
// takes one, and the server, forwarding towards the network behind it,
// finds none left.
//
// The server answers from one of its two addresses on that link (for IPv6
// the kernel picks one), so either is the router's.
func TestUDPHopsPassedOn(t *testing.T) {
	need(t)
	for _, tc := range farHops {
		t.Run(tc.addr, func(t *testing.T) {
			_, q := erroredDatagram(t, net.JoinHostPort(tc.addr, "7001"), "hops?", func(fd int) error {
				return errors.Join(unix.SetsockoptInt(fd, tc.level, tc.opt, 1), unix.SetsockoptInt(fd, tc.level, tc.hops, 2))
			})
			if from := q.from.String(); q.typ != tc.typ || q.code != 0 || from != tc.router[0] && from != tc.router[1] || string(q.data) != "hops?" {
				t.Errorf("queued error: type %d code %d from %s quoting %q; want ICMP type %d code 0 from %s quoting %q",
					q.typ, q.code, q.from, q.data, tc.typ, tc.router, "hops?")
			}
		})
	}
}

// TestUDPHopsChangeWithinSession: a client that changes its TTL between
// datagrams of one session, as tracepath does on its one socket, has each
// datagram go on with what it has left. The first, sent with 2, runs out
// at the server (Time Exceeded); the next, sent with the default, gets as
// far as the network behind the server, whose next hop does not answer
// (host unreachable, after the server's neighbour solicitations).
func TestUDPHopsChangeWithinSession(t *testing.T) {
	need(t)
	for _, tc := range []struct {
		farHop             int
		unreachT, unreachC uint8
	}{{0, 3, 1}, {1, 1, 3}} {
		far := farHops[tc.farHop]
		t.Run(far.addr, func(t *testing.T) {
			t.Parallel()
			c, err := dialClient(t, "udp", net.JoinHostPort(far.addr, "7001"), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			rc, err := c.(syscall.Conn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			for _, d := range []struct {
				msg       string
				hops      int
				typ, code uint8
			}{{"near", 2, far.typ, 0}, {"far", 64, tc.unreachT, tc.unreachC}} {
				rc.Control(func(fd uintptr) {
					err = errors.Join(unix.SetsockoptInt(int(fd), far.level, far.opt, 1), unix.SetsockoptInt(int(fd), far.level, far.hops, d.hops))
				})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.Write([]byte(d.msg)); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Read(make([]byte, 64)); !errors.Is(err, syscall.EHOSTUNREACH) {
					t.Fatalf("read after %q: %v, want EHOSTUNREACH", d.msg, err)
				}
				var q queuedError
				rc.Control(func(fd uintptr) { q, err = readErrQueue(int(fd)) })
				if err != nil {
					t.Fatal(err)
				}
				if q.typ != d.typ || q.code != d.code || string(q.data) != d.msg {
					t.Errorf("error after %q sent with %d hops: ICMP type %d code %d quoting %q; want type %d code %d", d.msg, d.hops, q.typ, q.code, q.data, d.typ, d.code)
				}
			}
		})
	}
}

// TestPingHopsPassedOn: the same for echo requests, as traceroute -I and
// ping -t send them.
func TestPingHopsPassedOn(t *testing.T) {
	need(t)
	for _, tc := range []struct {
		addr   string
		router [2]string
		want   string
	}{
		{lab.Far4, [2]string{lab.ServerV4, lab.ServerAlt4}, " icmp_seq=1 Time to live exceeded"},
		{lab.Far6, [2]string{lab.ServerV6, lab.ServerAlt6}, " icmp_seq=1 Time exceeded: Hop limit"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			out, _ := lb.Run(lb.Client, "ping", "-n", "-c", "1", "-t", "2", "-W", "5", tc.addr)
			if !strings.Contains(out, "From "+tc.router[0]+tc.want) && !strings.Contains(out, "From "+tc.router[1]+tc.want) {
				t.Errorf("ping -t 2 %s: want %q from %s, got:\n%s", tc.addr, tc.want, tc.router, out)
			}
		})
	}
}

// TestTCPHopsPassedOn: the same for a TCP connect, as traceroute -T and
// mtr --tcp send their SYNs: the client's connect fails with EHOSTUNREACH
// and its error queue holds the router's Time Exceeded, quoting the SYN.
// Through a router that is what comes back; a RST would tell the client
// that it had reached the destination. It comes back for the first SYN,
// before the client would send it again (after a second).
func TestTCPHopsPassedOn(t *testing.T) {
	need(t)
	for _, tc := range farHops {
		t.Run(tc.addr, func(t *testing.T) {
			// The dialer closes its socket when the connect fails: a
			// duplicate keeps it, with its error queue.
			kept := -1
			d := &net.Dialer{Timeout: 900 * time.Millisecond, Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) {
					serr = errors.Join(unix.SetsockoptInt(int(fd), tc.level, tc.opt, 1), unix.SetsockoptInt(int(fd), tc.level, tc.hops, 2))
					if serr == nil {
						kept, serr = unix.Dup(int(fd))
					}
				})
				return errors.Join(err, serr)
			}}
			start := time.Now()
			c, err := lb.DialWith(lb.Client, d, "tcp", net.JoinHostPort(tc.addr, "7001"))
			if kept >= 0 {
				defer unix.Close(kept)
			}
			if err == nil {
				c.Close()
				t.Fatal("connected, want EHOSTUNREACH")
			}
			if !errors.Is(err, syscall.EHOSTUNREACH) {
				t.Fatalf("connect after %v: %v, want EHOSTUNREACH", time.Since(start).Round(time.Millisecond), err)
			}
			q, err := readErrQueue(kept)
			if err != nil {
				t.Fatal(err)
			}
			if from := q.from.String(); q.typ != tc.typ || q.code != 0 || from != tc.router[0] && from != tc.router[1] {
				t.Errorf("queued error: type %d code %d from %s; want ICMP type %d code 0 from %s", q.typ, q.code, q.from, tc.typ, tc.router)
			}
		})
	}
}

// erroredDatagram sends msg to addr from a connected client socket,
// set up by set (which must turn on IP_RECVERR or IPV6_RECVERR), and
// returns the socket and the entry that the ICMP error coming back leaves
// in its error queue. The client's read must fail with EHOSTUNREACH.
func erroredDatagram(t *testing.T, addr, msg string, set func(fd int) error) (net.Conn, queuedError) {
	t.Helper()
	c, err := dialClient(t, "udp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { err = set(int(fd)) })
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 64)); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("read: %v, want EHOSTUNREACH", err)
	}
	var q queuedError
	rc.Control(func(fd uintptr) { q, err = readErrQueue(int(fd)) })
	if err != nil {
		t.Fatal(err)
	}
	return c, q
}

// queuedError is an entry of a socket's error queue.
type queuedError struct {
	origin, typ, code uint8
	from              netip.Addr
	data              []byte // what the kernel hands back of the datagram
}

// readErrQueue takes the first entry off a socket's error queue. Its
// control message is a struct sock_extended_err (errno, origin, type,
// code, pad, info, data: 16 bytes) followed by the sender's sockaddr.
func readErrQueue(fd int) (queuedError, error) {
	buf, oob := make([]byte, 2048), make([]byte, 512)
	n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
	if err != nil {
		return queuedError{}, fmt.Errorf("error queue: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 || len(msgs[0].Data) < 16 {
		return queuedError{}, fmt.Errorf("error queue: control messages %v (%v)", msgs, err)
	}
	d := msgs[0].Data
	q := queuedError{origin: d[4], typ: d[5], code: d[6], data: buf[:n]}
	switch sa := d[16:]; {
	case len(sa) >= 8 && binary.NativeEndian.Uint16(sa) == unix.AF_INET:
		q.from = netip.AddrFrom4([4]byte(sa[4:8]))
	case len(sa) >= 24 && binary.NativeEndian.Uint16(sa) == unix.AF_INET6:
		q.from = netip.AddrFrom16([16]byte(sa[8:24]))
	}
	return q, nil
}

// TestRouteAllMulticastDropped: with route-all, multicast and limited
// broadcast datagrams the gateway sends find no route of their own and go
// into the TUN. tunwall drops and counts them: there is no one host to
// relay them to, so no flow is judged and nothing is sent on.
func TestRouteAllMulticastDropped(t *testing.T) {
	l := routedLab(t, "twm")
	sock := filepath.Join(t.TempDir(), "control.sock")
	tw := launch(t, l, routed("debug", fmt.Sprintf("control: {socket: %s}\npolicy: {default: allow}\n", sock)))
	metrics := unixMetrics(t, sock)
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1) })
		return errors.Join(err, serr)
	}}
	dsts := []string{"224.0.0.251:5353", "239.255.255.250:1900", "255.255.255.255:9"}
	for _, dst := range dsts {
		c, err := l.DialWith(l.Gateway, d, "udp", dst)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("anyone?")); err != nil {
			t.Fatalf("send to %s: %v", dst, err)
		}
		c.Close()
	}
	const dropped = `tunwall_drops_total{reason="not_unicast"}`
	for deadline := time.Now().Add(5 * time.Second); metrics()[dropped] < float64(len(dsts)); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after sending %d datagrams, want at least %d", dropped, metrics()[dropped], len(dsts), len(dsts))
		}
	}
	for _, e := range readEvents(t, tw.Log) {
		if e.str("event") == "verdict" && slices.Contains(dsts, e.str("dst")) {
			t.Errorf("judged as a flow: %v", e)
		}
	}
}

// echo sends a datagram of size bytes on c and fails unless it comes back,
// trying 3 times (a datagram may be lost).
func echo(t *testing.T, c net.Conn, size int) {
	t.Helper()
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(i)
	}
	buf := make([]byte, size+1)
	var n int
	var err error
	for try := 0; try < 3; try++ {
		if _, err = c.Write(msg); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err = c.Read(buf); err == nil {
			break
		}
	}
	if err != nil || !slices.Equal(buf[:n], msg) {
		t.Fatalf("echo of %d bytes: got %d bytes, %v", size, n, err)
	}
}

// TestDatagramsNarrowPathToClient: with the gateway's route to a client
// narrower (1400) than the TUN, echoed UDP datagrams and echo replies
// that fit the TUN but not that route, and datagrams larger than the TUN,
// still reach the client. (The stack would send an IPv4 UDP datagram with
// DF, and the kernel's "fragmentation needed" would go to the server's
// address.) Over IPv4 tunwall leaves DF off and the gateway's kernel
// fragments as a router does; IPv6 has no fragmenting on the way, so
// tunwall, the packets' source, sends them in fragments that fit.
func TestDatagramsNarrowPathToClient(t *testing.T) {
	need(t)
	for _, tc := range []struct{ name, client, server, prefix, route string }{
		{"ipv4", "10.77.1.7", lab.ServerV4, "/24", "/32"},
		{"ipv6", "fd77:1::7", lab.ServerV6, "/64", "/128"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			narrowPath(t, tc.client, tc.prefix, tc.route)
			d := &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(tc.client)}}
			c, err := lb.DialWith(lb.Client, d, "udp", net.JoinHostPort(tc.server, "7001"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// 1450 bytes fit the TUN, not the route; 3000 fit neither.
			for _, size := range []int{1450, 3000} {
				echo(t, c, size)
			}
			if out, err := lb.Run(lb.Client, "ping", "-n", "-c", "1", "-W", "2", "-s", "1450", "-I", tc.client, tc.server); err != nil {
				t.Fatalf("ping of 1450 bytes: %v\n%s", err, out)
			}
		})
	}
}
