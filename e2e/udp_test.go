package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
)

// eachFamily runs check over IPv4 and over IPv6 with a connected UDP
// socket from the client to port on the server.
func eachFamily(t *testing.T, port string, check func(t *testing.T, c net.Conn)) {
	t.Helper()
	need(t)
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			c, err := dialClient(t, "udp", net.JoinHostPort(fam.server, port), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			check(t, c)
		})
	}
}

// wantPortUnreachable sends a datagram on c and requires the read after it
// to fail with ECONNREFUSED: an ICMP port unreachable came back.
func wantPortUnreachable(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("anyone?")); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if _, err := c.Read(make([]byte, 64)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("read after %s: %v, want ECONNREFUSED (ICMP port unreachable)", what, err)
	}
}

func TestUDPEcho(t *testing.T) {
	eachFamily(t, "7001", func(t *testing.T, c net.Conn) {
		buf := make([]byte, 2048)
		for i, msg := range []string{"first datagram", "second datagram, same session"} {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != msg {
				t.Fatalf("datagram %d: got %q, %v", i, buf[:n], err)
			}
		}
		assertVerdict(t, c.LocalAddr().String(), c.RemoteAddr().String(), "allow", "lab-services")
	})
}

// Datagrams larger than the path MTU cross as IP fragments both ways: up to
// the largest a UDP socket can send.
func TestUDPFragmented(t *testing.T) {
	eachFamily(t, "7001", func(t *testing.T, c net.Conn) {
		largest := 65507 // 65535 - IPv4 and UDP headers
		if c.RemoteAddr().(*net.UDPAddr).IP.To4() == nil {
			largest = 65527 // 65535 - UDP header (IPv6's payload length excludes its own)
		}
		buf := make([]byte, 70000)
		for _, size := range []int{1400, 1473, 1500, 4000, 9000, largest} {
			msg := make([]byte, size)
			for i := range msg {
				msg[i] = byte(i*7 + size)
			}
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write(msg); err != nil {
				t.Fatalf("%d bytes: %v", size, err)
			}
			n, err := c.Read(buf)
			if err != nil || !bytes.Equal(buf[:n], msg) {
				t.Fatalf("%d bytes: echo of %d bytes, %v", size, n, err)
			}
		}
	})
}

func TestUDPRejected(t *testing.T) {
	eachFamily(t, "7009", func(t *testing.T, c net.Conn) {
		wantPortUnreachable(t, c, "rejected datagram")
		assertVerdict(t, c.LocalAddr().String(), c.RemoteAddr().String(), "reject", "reject-7009")
	})
}

// An allowed session to a port nobody listens on: the server's ICMP port
// unreachable reaches the client, as through a kernel router, and the
// session goes on (every datagram gets its answer).
func TestUDPUpstreamRefused(t *testing.T) {
	eachFamily(t, "7003", func(t *testing.T, c net.Conn) {
		for i := range 3 {
			wantPortUnreachable(t, c, fmt.Sprintf("datagram %d", i))
		}
		assertVerdict(t, c.LocalAddr().String(), c.RemoteAddr().String(), "allow", "lab-services")
	})
}

func TestUDPDenied(t *testing.T) {
	eachFamily(t, "7010", func(t *testing.T, c net.Conn) {
		c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("anyone?")); err != nil {
			t.Fatal(err)
		}
		_, err := c.Read(make([]byte, 64))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read after denied datagram: %v, want a timeout (nothing comes back)", err)
		}
		assertVerdict(t, c.LocalAddr().String(), c.RemoteAddr().String(), "deny", "deny-7010")
	})
}
