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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tunwall/tunwall/policy"
	"golang.org/x/sys/unix"
)

// serveEach accepts connections on ln until it closes, and serves each in
// a goroutine of its own, closing it after.
func serveEach(ln net.Listener, serve func(s net.Conn)) {
	for {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer s.Close()
			serve(s)
		}()
	}
}

// echoServer answers every connection on ln with what it reads, until the
// connection ends.
func echoServer(ln net.Listener) { serveEach(ln, func(s net.Conn) { io.Copy(s, s) }) }

// dialKept dials ap with spares, failing the test if it cannot.
func dialKept(t *testing.T, ap netip.AddrPort, spares *spareSockets) net.Conn {
	t.Helper()
	c, err := dialTCP(context.Background(), ap, 0, "", spares)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Flows reset one after another, several at a time, reuse a few sockets,
// and each new connection carries its own bytes only.
func TestSpareSocketsReused(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			ln, ap := listenLoopback(t, tc.network, tc.addr)
			go echoServer(ln)
			var reused atomic.Uint64
			spares := newSpareSockets(&reused)
			defer spares.close()
			const workers, each = 8, 250
			var mu sync.Mutex
			files := map[*os.File]bool{}
			var wg sync.WaitGroup
			errc := make(chan error, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						c, err := dialTCP(context.Background(), ap, 0, "", spares)
						if err != nil {
							errc <- err
							return
						}
						mu.Lock()
						files[c.(*hostConn).f] = true
						mu.Unlock()
						msg := []byte{byte(w), byte(i), byte(i >> 8)}
						got := make([]byte, len(msg))
						if _, err := c.Write(msg); err != nil {
							errc <- err
							return
						}
						if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
							errc <- fmt.Errorf("flow %d/%d read %v, %v; want %v", w, i, got, err, msg)
							return
						}
						abortTCP(c)
						c.Close()
					}
				}()
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Error(err)
			}
			if n := len(files); n > 2*workers || reused.Load() != uint64(workers*each-n) {
				t.Errorf("%d flows used %d sockets, %d counted as reused; want at most %d sockets, the rest reused", workers*each, n, reused.Load(), 2*workers)
			}
			if n := spares.count(); n == 0 || n > 2*workers {
				t.Errorf("%d sockets kept at the end, want 1 to %d", n, 2*workers)
			}
		})
	}
}

// keptAfter closes c after abortTCP and reports the file it kept, failing
// if it kept none.
func keptAfter(t *testing.T, spares *spareSockets, c net.Conn) *os.File {
	t.Helper()
	before := spares.count()
	f := c.(*hostConn).f
	abortTCP(c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if spares.count() != before+1 {
		t.Fatalf("%d sockets kept after a reset connection, want %d", spares.count(), before+1)
	}
	return f
}

func sockopt(t *testing.T, c net.Conn, level, opt int) int {
	t.Helper()
	v := -1
	c.(*hostConn).rc.Control(func(fd uintptr) { v, _ = unix.GetsockoptInt(int(fd), level, opt) })
	return v
}

// A kept socket keeps the egress mark, and the next dial sets the TTL it
// asks for, or the host's default; it does not queue ICMP errors.
func TestSpareSocketHops(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SO_MARK needs CAP_NET_ADMIN")
	}
	ln, ap := listenLoopback(t, "tcp4", "127.0.0.1:0")
	go echoServer(ln)
	spares := newSpareSockets(nil)
	defer spares.close()
	def := -1
	var last *os.File
	for i, hops := range []uint8{0, 5, 5, 0} {
		ctx := context.Background()
		if hops != 0 {
			ctx = context.WithValue(ctx, hopsKey{}, hops)
		}
		c, err := dialTCP(ctx, ap, 0x2a, "", spares)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			def = sockopt(t, c, unix.IPPROTO_IP, unix.IP_TTL)
		}
		want := int(hops)
		if hops == 0 {
			want = def
		}
		if ttl := sockopt(t, c, unix.IPPROTO_IP, unix.IP_TTL); ttl != want {
			t.Errorf("dial %d (hops %d): TTL %d, want %d", i, hops, ttl, want)
		}
		if mark := sockopt(t, c, unix.SOL_SOCKET, unix.SO_MARK); mark != 0x2a {
			t.Errorf("dial %d: mark %#x, want 0x2a", i, mark)
		}
		if q := sockopt(t, c, unix.IPPROTO_IP, unix.IP_RECVERR); q != 0 {
			t.Errorf("dial %d: IP_RECVERR %d after connecting, want 0", i, q)
		}
		f := keptAfter(t, spares, c)
		if i > 0 && f != last {
			t.Errorf("dial %d opened a socket of its own with one kept", i)
		}
		last = f
	}
}

// tcpState waits until the socket of c is in TCP_INFO state want, and
// fails after 5s.
func waitTCPState(t *testing.T, c net.Conn, want uint8) {
	t.Helper()
	var state uint8
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		c.(*hostConn).rc.Control(func(fd uintptr) {
			if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				state = info.State
			}
		})
		if state == want {
			return
		}
		runtime.Gosched()
	}
	t.Fatalf("socket state %d, want %d", state, want)
}

// A connection closed both ways, each FIN acknowledged, leaves a socket
// to keep; one closed while still open is closed with a FIN, as before,
// and not kept.
func TestSpareSocketClosing(t *testing.T) {
	ln, ap := listenLoopback(t, "tcp4", "127.0.0.1:0")
	serverEnd := make(chan error, 2)
	go serveEach(ln, func(s net.Conn) {
		// Close at once if told so, else read until the client's FIN.
		b := make([]byte, 1)
		if _, err := s.Read(b); err == nil && b[0] == 'q' {
			return
		}
		_, err := io.ReadAll(s)
		serverEnd <- err
	})
	spares := newSpareSockets(nil)
	defer spares.close()

	c := dialKept(t, ap, spares)
	c.Write([]byte("q"))
	if _, err := io.ReadAll(c); err != nil { // the server's FIN
		t.Fatal(err)
	}
	if err := c.(closeWriter).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitTCPState(t, c, tcpStateClose)
	c.Close()
	if n := spares.count(); n != 1 {
		t.Fatalf("%d sockets kept after a connection closed both ways, want 1", n)
	}

	c = dialKept(t, ap, spares)
	c.Write([]byte("x"))
	c.Close() // open: a FIN goes, and the kernel sees the close through
	if err := <-serverEnd; err != nil {
		t.Fatalf("server's read after the client closed an open connection: %v, want its FIN", err)
	}
	if n := spares.count(); n != 0 {
		t.Fatalf("%d sockets kept after closing an open connection, want 0", n)
	}
}

// Once closed, a connection whose socket was kept reaches it no more: its
// calls fail, and the connection now on the socket sees none of them.
func TestSpareSocketOldConnection(t *testing.T) {
	ln, ap := listenLoopback(t, "tcp4", "127.0.0.1:0")
	got := make(chan []byte, 4)
	go serveEach(ln, func(s net.Conn) {
		b, _ := io.ReadAll(s)
		got <- b
	})
	spares := newSpareSockets(nil)
	defer spares.close()
	old := dialKept(t, ap, spares)
	f := keptAfter(t, spares, old)
	<-got // the old connection's end
	c := dialKept(t, ap, spares)
	if c.(*hostConn).f != f {
		t.Fatal("the dial did not take the kept socket")
	}
	// A read reaching the socket would wait for the new connection's bytes.
	within := func(what string, call func() error) {
		t.Helper()
		errc := make(chan error, 1)
		go func() { errc <- call() }()
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("%s on the closed connection: %v, want net.ErrClosed", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s on the closed connection waited on the socket", what)
		}
	}
	within("write", func() error { _, err := old.Write([]byte("old")); return err })
	within("read", func() error { _, err := old.Read(make([]byte, 1)); return err })
	within("lazy read", func() error { _, err := old.(lazyReader).readLazy(&relayBuf{}); return err })
	if err := old.SetDeadline(time.Unix(1, 0)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("deadline on the closed connection: %v, want net.ErrClosed", err)
	}
	if err := old.(closeWriter).CloseWrite(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("half-close of the closed connection: %v, want net.ErrClosed", err)
	}
	if err := old.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second close: %v, want net.ErrClosed", err)
	}
	keepaliveUpstream(old, true, time.Minute)
	if segmentsIn(old) != 0 || upstreamReset(old) || old.LocalAddr() != nil {
		t.Error("the closed connection still reads its socket")
	}
	if ka := sockopt(t, c, unix.SOL_SOCKET, unix.SO_KEEPALIVE); ka != 0 {
		t.Error("keepalive asked on the closed connection reached the new one")
	}
	if n := spares.count(); n != 0 {
		t.Errorf("%d sockets kept while the new connection has the socket", n)
	}
	c.Write([]byte("new"))
	c.(closeWriter).CloseWrite()
	if b := <-got; string(b) != "new" {
		t.Fatalf("server of the new connection read %q, want %q", b, "new")
	}
	c.Close()
}

// Close wakes a read waiting on the socket, waits for it, and keeps the
// socket.
func TestSpareSocketCloseWakesRead(t *testing.T) {
	ln, ap := listenLoopback(t, "tcp6", "[::1]:0")
	go echoServer(ln)
	spares := newSpareSockets(nil)
	defer spares.close()
	c := dialKept(t, ap, spares)
	readErr := make(chan error, 1)
	go func() {
		_, err := c.(lazyReader).readLazy(&relayBuf{})
		readErr <- err
	}()
	waitStack(t, "[IO wait", "(*hostConn).readLazy")
	keptAfter(t, spares, c)
	if err := <-readErr; err == nil {
		t.Fatal("the waiting read returned no error after Close")
	}
}

// A socket set up for its flow (keepalive probes) is closed, with a
// reset if asked, and not kept.
func TestSpareSocketTunedNotKept(t *testing.T) {
	ln, ap := listenLoopback(t, "tcp4", "127.0.0.1:0")
	readErr := make(chan error, 1)
	serveOne(t, ln, func(s net.Conn) {
		_, err := s.Read(make([]byte, 1))
		readErr <- err
	})
	spares := newSpareSockets(nil)
	defer spares.close()
	c := dialKept(t, ap, spares)
	keepaliveUpstream(c, true, time.Minute)
	abortTCP(c)
	c.Close()
	if n := spares.count(); n != 0 {
		t.Errorf("%d sockets kept after keepalive was set, want 0", n)
	}
	if err := <-readErr; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("server read after abort: %v, want connection reset", err)
	}
}

// waitStack waits until a goroutine's stack holds each of parts, and
// fails after 5s.
func waitStack(t *testing.T, parts ...string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(g, p) }) {
				return
			}
		}
		runtime.Gosched()
	}
	t.Fatalf("no goroutine came to %v", parts)
}

// pipeSocket is a kept-socket stand-in: a pipe's read end, put at since.
func pipeSocket(t *testing.T, since time.Time) spareSocket {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { r.Close() })
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return spareSocket{f: r, rc: rc, since: since}
}

func isClosed(f *os.File) bool {
	_, err := f.Stat()
	return errors.Is(err, os.ErrClosed)
}

// The kept sockets: the last kept is taken first, per family; no more
// than sparesPerFamily are kept; sweep closes those unused for spareIdle;
// close closes them all and keeps none after.
func TestSpareSocketsKeeping(t *testing.T) {
	s := newSpareSockets(nil)
	t0 := time.Now()
	a, b, c := pipeSocket(t, t0), pipeSocket(t, t0.Add(time.Second)), pipeSocket(t, t0)
	if !s.put(false, a) || !s.put(false, b) || !s.put(true, c) {
		t.Fatal("put refused with room left")
	}
	if k, ok := s.get(false); !ok || k.f != b.f {
		t.Fatal("get did not return the last IPv4 socket kept")
	}
	if k, ok := s.get(true); !ok || k.f != c.f {
		t.Fatal("get did not return the IPv6 socket")
	}
	if _, ok := s.get(true); ok {
		t.Fatal("get returned an IPv6 socket with none left")
	}
	// At t0+spareIdle, a (kept at t0) has been unused for spareIdle, d
	// (kept just then) not.
	d := pipeSocket(t, t0.Add(spareIdle))
	if !s.put(false, d) {
		t.Fatal("put refused with room left")
	}
	s.sweep(t0.Add(spareIdle - time.Nanosecond))
	if isClosed(a.f) || s.count() != 2 {
		t.Fatalf("sweep before a socket was unused for %v: closed %v, %d kept; want open, 2 kept", spareIdle, isClosed(a.f), s.count())
	}
	s.sweep(t0.Add(spareIdle))
	if !isClosed(a.f) || isClosed(d.f) || s.count() != 1 {
		t.Fatalf("sweep: socket unused for %v closed %v, newer one closed %v, %d kept; want the first only closed, 1 kept", spareIdle, isClosed(a.f), isClosed(d.f), s.count())
	}
	if k, ok := s.get(false); !ok || k.f != d.f || !s.put(false, d) {
		t.Fatal("sweep left the wrong socket")
	}
	for s.count() < sparesPerFamily {
		if !s.put(false, pipeSocket(t, t0.Add(spareIdle))) {
			t.Fatalf("put refused with %d kept", s.count())
		}
	}
	if s.put(false, pipeSocket(t, t0.Add(spareIdle))) {
		t.Fatalf("put kept more than %d sockets", sparesPerFamily)
	}
	if !s.put(true, pipeSocket(t, t0.Add(spareIdle))) {
		t.Fatal("a full IPv4 list refused an IPv6 socket")
	}
	s.close()
	if !isClosed(d.f) || s.count() != 0 {
		t.Fatal("close left sockets open or kept")
	}
	e := pipeSocket(t, t0)
	if s.put(false, e) {
		t.Fatal("put kept a socket after close")
	}
}

// The gateway's host dialer keeps ended sockets and counts their reuse;
// Close closes the ones kept.
func TestGatewaySpareSockets(t *testing.T) {
	ln, ap := listenLoopback(t, "tcp4", "127.0.0.1:0")
	go echoServer(ln)
	h := newHarnessWith(t, testPolicy, nil, nil, nil, policy.Limits{}, func(c *Config) { c.Dial = nil })
	var f *os.File
	for range 2 {
		c, err := h.gw.cfg.Dial(context.Background(), "tcp", ap.String())
		if err != nil {
			t.Fatal(err)
		}
		f = keptAfter(t, h.gw.spares, c)
	}
	if n := h.gw.stats.SocketsReused.Load(); n != 1 {
		t.Fatalf("%d sockets counted as reused after two dials, want 1", n)
	}
	h.gw.Close()
	if h.gw.spares.count() != 0 || !isClosed(f) {
		t.Fatal("the kept socket outlived the gateway")
	}
}

// pollable is false once the poller has seen an error alone on the
// descriptor: here a full pipe's write end whose reader has gone.
func TestPollable(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rc, err := w.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	c := &hostConn{f: w, rc: rc}
	if !c.pollable() {
		t.Fatal("a new pipe is not pollable")
	}
	full := make(chan error, 1)
	go func() {
		_, err := w.Write(make([]byte, 4<<20)) // fills the pipe and waits
		full <- err
	}()
	waitStack(t, "[IO wait", "os.(*File).Write")
	r.Close() // the waiting write wakes on the pipe's error
	if err := <-full; err == nil {
		t.Fatal("the write to a pipe without reader succeeded")
	}
	if c.pollable() {
		t.Fatal("pollable after the poller saw the pipe's error alone")
	}
}
