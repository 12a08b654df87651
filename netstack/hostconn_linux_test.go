package netstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listenLoopback listens on a free loopback port of the given family.
func listenLoopback(t *testing.T, network, addr string) (net.Listener, netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback here: %v", network, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, ln.Addr().(*net.TCPAddr).AddrPort()
}

// serveOne accepts one connection on ln in the background, hands it to
// serve and closes it when serve returns.
func serveOne(t *testing.T, ln net.Listener, serve func(s net.Conn)) {
	go func() {
		s, err := ln.Accept()
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		defer s.Close()
		serve(s)
	}()
}

func TestDialTCPRelaysBothWaysWithHalfClose(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			ln, ap := listenLoopback(t, tc.network, tc.addr)
			got := make(chan []byte, 1)
			serveOne(t, ln, func(s net.Conn) {
				b, _ := io.ReadAll(s) // until the dialer's half-close
				got <- b
				s.Write([]byte("reply after FIN"))
			})
			c, err := dialTCP(context.Background(), ap, 0, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			if err := c.(closeWriter).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if b := <-got; string(b) != "hello" {
				t.Fatalf("server read %q, want %q", b, "hello")
			}
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "reply after FIN" {
				t.Fatalf("read after half-close: %q, %v", b, err)
			}
			if ra := c.RemoteAddr().(*net.TCPAddr).AddrPort(); ra.Port() != ap.Port() || ra.Addr().Unmap() != ap.Addr().Unmap() {
				t.Errorf("RemoteAddr %v, want %v", ra, ap)
			}
			if la := c.LocalAddr().(*net.TCPAddr); la.Port == 0 {
				t.Errorf("LocalAddr %v has no port", la)
			}
		})
	}
}

func TestDialTCPMappedIPv4(t *testing.T) {
	ln, ap := listenLoopback(t, "tcp4", "127.0.0.1:0")
	serveOne(t, ln, func(s net.Conn) { s.Write([]byte("v4")) })
	mapped := netip.AddrPortFrom(netip.AddrFrom16(ap.Addr().As16()), ap.Port())
	c, err := dialTCP(context.Background(), mapped, 0, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	domain := -1
	c.(*hostConn).rc.Control(func(fd uintptr) { domain, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN) })
	if domain != unix.AF_INET {
		t.Errorf("socket family %d, want AF_INET for an IPv4-mapped address", domain)
	}
	if b, err := io.ReadAll(c); string(b) != "v4" || err != nil {
		t.Fatalf("read %q, %v", b, err)
	}
}

func TestDialTCPAbortSendsRST(t *testing.T) {
	ln, ap := listenLoopback(t, "tcp4", "127.0.0.1:0")
	readErr := make(chan error, 1)
	serveOne(t, ln, func(s net.Conn) {
		_, err := s.Read(make([]byte, 1))
		readErr <- err
	})
	c, err := dialTCP(context.Background(), ap, 0, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	abortTCP(c)
	c.Close()
	if err := <-readErr; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("server read after abort: %v, want connection reset", err)
	}
}

func TestDialTCPRefused(t *testing.T) {
	ln, ap := listenLoopback(t, "tcp4", "127.0.0.1:0")
	ln.Close() // nobody listens on the port now
	_, err := dialTCP(context.Background(), ap, 0, "", nil)
	var op *net.OpError
	if !errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("dial to a closed port: %v, want a dial error with connection refused", err)
	}
}

func TestDialTCPMarksSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SO_MARK needs CAP_NET_ADMIN")
	}
	_, ap := listenLoopback(t, "tcp4", "127.0.0.1:0") // the kernel completes the handshake
	c, err := dialTCP(context.Background(), ap, 0x2a, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mark, nodelay int
	c.(*hostConn).rc.Control(func(fd uintptr) {
		mark, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
		nodelay, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY)
	})
	if mark != 0x2a || nodelay == 0 {
		t.Fatalf("socket mark %#x nodelay %d, want 0x2a and on", mark, nodelay)
	}
}

// unansweredPort is a loopback listener whose accept queue is full, so the
// kernel drops new SYNs and a connect to it stays in progress.
func unansweredPort(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	// Fill the queue: connections are made until one stays unanswered.
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp4", ap.String(), 200*time.Millisecond)
		if err != nil {
			return ap
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("the kernel answered every SYN to a full accept queue")
	return ap
}

func TestDialTCPTimesOut(t *testing.T) {
	ap := unansweredPort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := dialTCP(ctx, ap, 0, "", nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("dial to an unanswered port: %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the timeout took %v", d)
	}
}

func TestDialTCPCanceled(t *testing.T) {
	ap := unansweredPort(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := dialTCP(ctx, ap, 0, "", nil)
		errc <- err
	}()
	waitSynSent(t, ap.Port())
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("dial after cancel: %v, want context.Canceled", err)
	}
}

// waitSynSent waits until a socket of this process is connecting to port.
func waitSynSent(t *testing.T, port uint16) {
	t.Helper()
	want := fmt.Sprintf(":%04X 02 ", port) // remote port, state SYN_SENT
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		b, err := os.ReadFile("/proc/self/net/tcp")
		if err != nil {
			t.Skipf("cannot read socket states: %v", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 3 && strings.HasSuffix(" "+f[2]+" "+f[3]+" ", want) {
				return
			}
		}
		runtime.Gosched()
	}
	t.Fatal("the dial never started connecting")
}

// TestSegmentsIn: an upstream socket whose connect returned has received
// connectSegments segments (what a relay starts from without asking), a
// kept socket connected again too; the count grows with what the server
// sends. For tunwall's own dial and net.Dialer's.
func TestSegmentsIn(t *testing.T) {
	spares := newSpareSockets(nil)
	defer spares.close()
	for _, dial := range []struct {
		name string
		dial func(ap netip.AddrPort) (net.Conn, error)
	}{
		{"dialTCP", func(ap netip.AddrPort) (net.Conn, error) { return dialTCP(context.Background(), ap, 0, "", nil) }},
		{"net.Dialer", func(ap netip.AddrPort) (net.Conn, error) { return net.Dial("tcp", ap.String()) }},
		{"kept socket", func(ap netip.AddrPort) (net.Conn, error) {
			// A connection to another server that moved bytes both ways,
			// reset, leaves its socket for the next dial.
			ln, echo := listenLoopback(t, "tcp4", "127.0.0.1:0")
			go echoServer(ln)
			c, err := dialTCP(context.Background(), echo, 0, "", spares)
			if err != nil {
				return nil, err
			}
			if _, err := c.Write([]byte("first\n")); err != nil {
				return nil, err
			}
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				return nil, err
			}
			f := c.(*hostConn).f
			keptAfter(t, spares, c)
			c, err = dialTCP(context.Background(), ap, 0, "", spares)
			if err == nil && c.(*hostConn).f != f {
				t.Fatal("the dial did not take the kept socket")
			}
			return c, err
		}},
	} {
		t.Run(dial.name, func(t *testing.T) {
			ln, ap := listenLoopback(t, "tcp4", "127.0.0.1:0")
			send := make(chan struct{})
			serveOne(t, ln, func(s net.Conn) {
				<-send
				s.Write([]byte("x"))
				io.Copy(io.Discard, s)
			})
			c, err := dial.dial(ap)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			before := segmentsIn(c)
			if before != connectSegments {
				t.Fatalf("%d segments counted after the handshake, want %d", before, connectSegments)
			}
			close(send)
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			if after := segmentsIn(c); after <= before {
				t.Errorf("%d segments after the server's byte, %d before", after, before)
			}
		})
	}
}

// The host dialer's sockets, TCP and UDP, send with the TTL (hop limit) a
// dial's context asks for, and with the host's default without one. A
// connected TCP socket no longer queues its ICMP errors (it did while it
// connected); a UDP socket always does.
func TestHostDialerHops(t *testing.T) {
	for _, tc := range []struct {
		network, listen     string
		level, opt, recvErr int
		queues              int
	}{
		{"tcp", "127.0.0.1:0", unix.IPPROTO_IP, unix.IP_TTL, unix.IP_RECVERR, 0},
		{"tcp", "[::1]:0", unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, unix.IPV6_RECVERR, 0},
		{"udp", "127.0.0.1:0", unix.IPPROTO_IP, unix.IP_TTL, unix.IP_RECVERR, 1},
		{"udp", "[::1]:0", unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, unix.IPV6_RECVERR, 1},
	} {
		t.Run(tc.network+" "+tc.listen, func(t *testing.T) {
			var addr string
			if tc.network == "tcp" {
				ln, _ := listenLoopback(t, tc.network, tc.listen)
				go closeEach(ln)
				addr = ln.Addr().String()
			} else {
				pc, err := net.ListenPacket(tc.network, tc.listen)
				if err != nil {
					t.Skipf("no loopback here: %v", err)
				}
				defer pc.Close()
				addr = pc.LocalAddr().String()
			}
			hopsOf := func(ctx context.Context) int {
				t.Helper()
				c, err := hostDialer(0, "", nil)(ctx, tc.network, addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				hops, queues := -1, -1
				withFD(c, func(fd int) {
					hops, err = unix.GetsockoptInt(fd, tc.level, tc.opt)
					if err == nil {
						queues, err = unix.GetsockoptInt(fd, tc.level, tc.recvErr)
					}
				})
				if err != nil {
					t.Fatal(err)
				}
				if queues != tc.queues {
					t.Errorf("connected socket: RECVERR %d, want %d", queues, tc.queues)
				}
				return hops
			}
			if got := hopsOf(context.WithValue(context.Background(), hopsKey{}, uint8(7))); got != 7 {
				t.Errorf("with 7 hops asked: the socket sends with %d", got)
			}
			if got := hopsOf(context.Background()); got == 7 {
				t.Errorf("with no hops asked: the socket sends with %d, want the host's default", got)
			}
		})
	}
}
