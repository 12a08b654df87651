package netstack

import (
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/loopback"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// endpointPair connects two TCP endpoints of a loopback gVisor stack: a
// dialed and b accepted, with their queues.
func endpointPair(t *testing.T) (a tcpip.Endpoint, aq *waiter.Queue, b tcpip.Endpoint, bq *waiter.Queue) {
	t.Helper()
	s, lo := loopbackStack(t)
	return connectPair(t, s, lo)
}

// connectPair connects two TCP endpoints of stack s, whose address is lo.
func connectPair(t *testing.T, s *stack.Stack, lo tcpip.Address) (a tcpip.Endpoint, aq *waiter.Queue, b tcpip.Endpoint, bq *waiter.Queue) {
	t.Helper()
	var lq waiter.Queue
	l, err := s.NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &lq)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	if err := l.Bind(tcpip.FullAddress{Addr: lo}); err != nil {
		t.Fatal(err)
	}
	if err := l.Listen(1); err != nil {
		t.Fatal(err)
	}
	addr, _ := l.GetLocalAddress()
	accepting, acceptable := waiter.NewChannelEntry(waiter.ReadableEvents)
	lq.EventRegister(&accepting)
	defer lq.EventUnregister(&accepting)

	aq = new(waiter.Queue)
	if a, err = s.NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, aq); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	connecting, connected := waiter.NewChannelEntry(waiter.WritableEvents)
	aq.EventRegister(&connecting)
	defer aq.EventUnregister(&connecting)
	if err := a.Connect(addr); err != nil {
		if _, ok := err.(*tcpip.ErrConnectStarted); !ok {
			t.Fatal(err)
		}
		<-connected
	}
	for {
		b, bq, err = l.Accept(nil)
		if _, ok := err.(*tcpip.ErrWouldBlock); ok {
			<-acceptable
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		return a, aq, b, bq
	}
}

// loopbackStack is a gVisor stack with TCP and UDP over IPv4 on a
// loopback interface with address lo.
func loopbackStack(t *testing.T) (s *stack.Stack, lo tcpip.Address) {
	t.Helper()
	s = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	t.Cleanup(func() { s.Close(); s.Wait() })
	lo = tcpip.AddrFrom4([4]byte{127, 0, 0, 1})
	if err := s.CreateNIC(1, loopback.New()); err != nil {
		t.Fatal(err)
	}
	if err := s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: lo.WithPrefix()}, stack.AddressProperties{}); err != nil {
		t.Fatal(err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})
	return s, lo
}

// A write to a client that reads nothing gives up once gone says so, and
// reports how much went out.
func TestClientConnWriteGivesUpWhenGone(t *testing.T) {
	a, aq, _, _ := endpointPair(t) // the peer reads nothing
	c := newClientConn(aq, a)
	var looks atomic.Int32
	c.gone = func() bool { return looks.Add(1) == 2 }
	start := time.Now()
	n, err := writeWithin(t, c, 64<<20)
	if !errors.Is(err, errPeerGone) || n <= 0 || n >= 64<<20 {
		t.Fatalf("wrote %d bytes, then %v; want part of them and %v", n, err, errPeerGone)
	}
	if looks.Load() != 2 {
		t.Errorf("gone was asked %d times, want 2", looks.Load())
	}
	// The second look comes after the first and twice that.
	if d := time.Since(start); d < 3*stallFirstLook {
		t.Errorf("gave up after %v, before the second look was due", d)
	}
}

// A write to a client that reads late, while gone says no, waits for it
// and writes everything.
func TestClientConnWriteWaitsForReader(t *testing.T) {
	a, aq, b, bq := endpointPair(t)
	c := newClientConn(aq, a)
	asked := make(chan struct{})
	var looks atomic.Int32
	c.gone = func() bool {
		if looks.Add(1) == 1 {
			close(asked)
		}
		return false
	}
	read := make(chan int64, 1)
	go func() {
		<-asked // the write has waited for a look: now read
		read <- drain(b, bq)
	}()
	const size = 8 << 20
	n, err := writeWithin(t, c, size)
	if err != nil || n != size {
		t.Fatalf("wrote %d bytes, then %v; want %d and no error", n, err, size)
	}
	a.Shutdown(tcpip.ShutdownWrite)
	if got := <-read; got != size {
		t.Errorf("the peer read %d bytes, want %d", got, size)
	}
}

// writeWithin writes size bytes to c and returns what Write returned. A
// write still waiting after 10 seconds fails the test (the endpoint is
// aborted to let it end).
func writeWithin(t *testing.T, c *clientConn, size int) (int, error) {
	t.Helper()
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := c.Write(make([]byte, size))
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		return r.n, r.err
	case <-time.After(10 * time.Second):
		c.ep.Abort()
		<-done
		t.Fatal("the write was still waiting after 10 s")
		return 0, nil
	}
}

// drain reads ep until EOF and returns how much it read.
func drain(ep tcpip.Endpoint, wq *waiter.Queue) int64 {
	readable, ch := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&readable)
	defer wq.EventUnregister(&readable)
	var n int64
	for {
		res, err := ep.Read(io.Discard, tcpip.ReadOptions{})
		n += int64(res.Count)
		switch err.(type) {
		case nil:
		case *tcpip.ErrWouldBlock:
			<-ch
		default:
			return n
		}
	}
}

// The client's side being reset is reported while the relay is busy
// writing upstream.
func TestWatchClientReset(t *testing.T) {
	a, aq, b, _ := endpointPair(t)
	reset := make(chan struct{}, 1)
	stop := watchClientReset(aq, a, func() bool { return true }, func() { reset <- struct{}{} })
	defer stop()
	if clientReset(a) {
		t.Fatal("reset before the peer reset it")
	}
	b.Abort()
	select {
	case <-reset:
	case <-time.After(5 * time.Second):
		t.Fatal("the reset was not reported")
	}
	if !clientReset(a) {
		t.Error("clientReset is false after the reset")
	}
}

// TestKeepaliveClient: turned on, the stack probes the client's side
// once it has been silent for the first probe time (a second here), and
// the probes are answered; turned off, the option is off again.
func TestKeepaliveClient(t *testing.T) {
	a, _, b, _ := endpointPair(t)
	first, _, _ := keepaliveTiming(4 * time.Second)
	before, answers := segmentsReceived(b), segmentsReceived(a)
	start := time.Now()
	keepaliveClient(a, true, 4*time.Second)
	for segmentsReceived(b) == before {
		if time.Since(start) > first+2*time.Second {
			t.Fatalf("no probe %v after turning keepalive on", time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if took := time.Since(start); took < first-100*time.Millisecond {
		t.Errorf("first probe after %v, want %v", took, first)
	}
	if !a.SocketOptions().GetKeepAlive() {
		t.Error("keepalive option off while on")
	}
	for segmentsReceived(a) == answers {
		if time.Since(start) > first+3*time.Second {
			t.Fatal("the probe was not answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	keepaliveClient(a, false, 4*time.Second)
	if a.SocketOptions().GetKeepAlive() {
		t.Error("keepalive option still on after turning it off")
	}
}
