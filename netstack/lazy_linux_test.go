package netstack

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunwall/tunwall/policy"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// startRelay runs r until the test ends and returns the count of relay
// buffers it holds.
func startRelay(t *testing.T, r *relay) *atomic.Int64 {
	t.Helper()
	held := new(atomic.Int64)
	r.buffers = held
	ended := make(chan struct{})
	go func() { r.run(); close(ended) }()
	t.Cleanup(func() { r.close(reasonShutdown); <-ended })
	return held
}

// waitHeld waits until held satisfies ok, and fails the test with what it
// was after 5 s.
func waitHeld(t *testing.T, held *atomic.Int64, want string, ok func(int64) bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(held.Load()); {
		if time.Now().After(deadline) {
			t.Fatalf("the relay holds %d buffers after 5 s, want %s", held.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A TCP relay holds a buffer only for a direction whose receiver has not
// taken what was read: none while both ends are quiet after an exchange
// that filled the buffers, one while the client does not read a download.
func TestRelayHoldsBuffersOnlyWhileStalled(t *testing.T) {
	a, aq, b, bq := endpointPair(t) // a: tunwall's side of the client's connection, b: the client
	client := gonet.NewTCPConn(bq, b)
	ln, ap := listenLoopback(t, "tcp4", "127.0.0.1:0")
	servers := make(chan net.Conn, 1)
	serveOne(t, ln, func(s net.Conn) {
		servers <- s
		<-t.Context().Done()
	})
	up, err := dialTCP(context.Background(), ap, 0, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	server := <-servers
	held := startRelay(t, &relay{
		client:   side{conn: newClientConn(aq, a), abort: a.Abort},
		upstream: side{conn: up, abort: func() { abortTCP(up) }},
		idle:     time.Hour,
	})

	// An exchange of a full buffer each way.
	msg := bytes.Repeat([]byte("tunwall "), 8<<10)
	if _, err := client.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(server, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("the server read %d bytes (%v), want the %d sent", len(got), err, len(msg))
	}
	if _, err := server.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("the client read %d bytes (%v), want the %d sent", len(got), err, len(msg))
	}
	waitHeld(t, held, "0 while both ends are quiet", func(n int64) bool { return n == 0 })

	// A download the client does not read.
	const size = 64 << 20
	sent := make(chan error, 1)
	go func() {
		_, err := server.Write(make([]byte, size))
		sent <- err
	}()
	waitHeld(t, held, "1 while the client does not read", func(n int64) bool { return n == 1 })
	n, err := io.CopyN(io.Discard, client, size)
	if err != nil || n != size {
		t.Fatalf("the client read %d bytes (%v), want %d", n, err, size)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	waitHeld(t, held, "0 once the client has read everything", func(n int64) bool { return n == 0 })
}

// datagramPair connects two UDP endpoints of a loopback gVisor stack.
func datagramPair(t *testing.T) (a tcpip.Endpoint, aq *waiter.Queue, b tcpip.Endpoint, bq *waiter.Queue) {
	t.Helper()
	s, lo := loopbackStack(t)
	open := func(port uint16) (tcpip.Endpoint, *waiter.Queue) {
		var q waiter.Queue
		ep, err := s.NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, &q)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ep.Close)
		if err := ep.Bind(tcpip.FullAddress{Addr: lo, Port: port}); err != nil {
			t.Fatal(err)
		}
		return ep, &q
	}
	a, aq = open(7101)
	b, bq = open(7102)
	if err := a.Connect(tcpip.FullAddress{Addr: lo, Port: 7102}); err != nil {
		t.Fatal(err)
	}
	if err := b.Connect(tcpip.FullAddress{Addr: lo, Port: 7101}); err != nil {
		t.Fatal(err)
	}
	return a, aq, b, bq
}

// A UDP session holds no relay buffer between datagrams.
func TestRelayDatagramsHoldNoBuffer(t *testing.T) {
	a, aq, b, bq := datagramPair(t)
	client := gonet.NewUDPConn(bq, b)
	up, err := udpEcho(t, "")(context.Background(), "udp4", "")
	if err != nil {
		t.Fatal(err)
	}
	up = lazyDatagrams(up)
	if _, ok := up.(lazyReader); !ok {
		t.Fatalf("a host UDP socket is a %T, not read lazily", up)
	}
	held := startRelay(t, &relay{
		client:   side{conn: newClientDatagrams(aq, a)},
		upstream: side{conn: up},
		datagram: true,
		idle:     time.Hour,
	})
	msg := bytes.Repeat([]byte("x"), 1400)
	got := make([]byte, 2048)
	if _, err := client.Write(msg); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(got); err != nil || !bytes.Equal(got[:n], msg) {
		t.Fatalf("the echo came back as %d bytes (%v), want the %d sent", n, err, len(msg))
	}
	waitHeld(t, held, "0 between datagrams", func(n int64) bool { return n == 0 })
}

// A UDP session's datagrams go upstream each with the TTL (hop limit) it
// had left when it reached tunwall, below reachHops, or with the host's
// default: a client may change it within one session, as tracepath does.
// The server here reads each datagram's TTL.
func TestUDPHopsFollowEachDatagram(t *testing.T) {
	for _, tc := range []struct {
		client, server, listen string
		level, opt, cmsg       int
	}{
		{"10.0.0.2:5000", "192.0.2.1:80", "127.0.0.1:0", unix.IPPROTO_IP, unix.IP_RECVTTL, unix.IP_TTL},
		{"[fd00::2]:5000", "[2001:db8::1]:80", "[::1]:0", unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, unix.IPV6_HOPLIMIT},
	} {
		t.Run(tc.client, func(t *testing.T) {
			pc, err := net.ListenPacket("udp", tc.listen)
			if err != nil {
				t.Skipf("no loopback here: %v", err)
			}
			defer pc.Close()
			uc := pc.(*net.UDPConn)
			rc, _ := uc.SyscallConn()
			rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), tc.level, tc.opt, 1) })
			if err != nil {
				t.Fatal(err)
			}
			hostDial := hostDialer(0, "", nil)
			dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
				return hostDial(ctx, network, pc.LocalAddr().String())
			}
			h := newHarness(t, dial, nil, policy.Limits{})
			var def int // the host's default, as the server sees it
			for i, ttl := range []uint8{64, 5, 64, 3, 3, 200} {
				p := udpPacket(t, tc.client, tc.server, []byte{byte(i)})
				if p[0]>>4 == 4 {
					p[8] = ttl
				} else {
					p[7] = ttl
				}
				fixChecksums(p)
				h.send(p)
				uc.SetReadDeadline(time.Now().Add(5 * time.Second))
				b, oob := make([]byte, 16), make([]byte, 64)
				n, oobn, _, _, err := uc.ReadMsgUDP(b, oob)
				if err != nil || n != 1 || b[0] != byte(i) {
					t.Fatalf("datagram %d: %v %v, %v", i, n, b[:n], err)
				}
				msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
				if err != nil || len(msgs) != 1 || msgs[0].Header.Type != int32(tc.cmsg) || len(msgs[0].Data) < 4 {
					t.Fatalf("datagram %d: control messages %v, %v", i, msgs, err)
				}
				got := int(binary.NativeEndian.Uint32(msgs[0].Data))
				want := int(ttl)
				if ttl >= reachHops {
					if i == 0 {
						def = got
					}
					want = def
				}
				if got != want {
					t.Errorf("datagram %d, sent with TTL %d: went with %d, want %d", i, ttl, got, want)
				}
			}
		})
	}
}
