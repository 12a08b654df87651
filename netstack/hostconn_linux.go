package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dialTCP opens an upstream TCP connection to ap from a host socket with
// the egress mark and interface. It does what net.Dialer does for one
// numeric address with fewer system calls and no helper goroutine, and it
// makes the connect call without handing the Go processor to another
// thread: to a nearby host the kernel completes the whole handshake inside
// that call, which the scheduler would otherwise take for a blocked call.
// It connects a socket kept in spares if there is one (spare.go), and the
// connection's socket may go back there when it is closed.
func dialTCP(ctx context.Context, ap netip.AddrPort, mark uint32, iface string, spares *spareSockets) (net.Conn, error) {
	fail := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	opErr := func(call string, err error) error { return fail(os.NewSyscallError(call, err)) }
	if err := ctxErr(ctx); err != nil {
		return nil, fail(err)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) // as net.Dialer: IPv4 from an IPv4 socket
	family := unix.AF_INET6
	if ap.Addr().Is4() {
		family = unix.AF_INET
	}
	v6 := family == unix.AF_INET6
	c := &hostConn{remote: ap, v6: v6, spares: spares}
	k, kept := spares.get(v6)
	if kept {
		c.f, c.rc, c.hops = k.f, k.rc, k.hops
	} else if err := c.open(family, mark, iface); err != nil {
		return nil, fail(err)
	}
	fd, err := c.fd()
	if err != nil {
		c.f.Close()
		return nil, fail(err)
	}
	// A SYN with few hops left (a traceroute's, or one forwarded here
	// already) goes on with them, and the error of the router where they
	// run out is kept for the client.
	hops := dialHops(ctx)
	if hops != c.hops {
		if err := setHops(fd, v6, hopsOption(hops)); err != nil {
			c.f.Close()
			return nil, opErr("setsockopt", err)
		}
		c.hops = hops
	}
	if hops != 0 {
		if err := setRecvErr(fd, v6); err != nil {
			c.f.Close()
			return nil, opErr("setsockopt", err)
		}
	}
	sa, salen := rawSockaddr(ap)
	connected, err := connectStep(fd, sa, salen)
	if err == nil && !connected {
		// A second call reports how the handshake went if it has already
		// ended, as it often has by now.
		connected, err = connectStep(fd, sa, salen)
	}
	if err != nil {
		err = withQueuedError(fd, hops, err)
		c.f.Close()
		return nil, opErr("connect", err)
	}
	if !connected {
		if err := c.waitFailed(ctx, sa, salen, hops); err != nil {
			return nil, err
		}
	}
	if hops != 0 {
		// Off again, which also drops what is queued: a kept socket has
		// it off.
		if err := stopRecvErr(fd, v6); err != nil {
			c.f.Close()
			return nil, fail(err)
		}
	}
	if kept {
		spares.connected()
	}
	return c, nil
}

// open gives c a new socket of the family with the egress settings.
func (c *hostConn) open(family int, mark uint32, iface string) error {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	if err := setEgress(fd, mark, iface); err != nil {
		unix.Close(fd)
		return err
	}
	// The relay writes what it reads at once; Nagle would hold small
	// writes back for an ACK.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(fd)
		return os.NewSyscallError("setsockopt", err)
	}
	f := os.NewFile(uintptr(fd), "tcp") // non-blocking: joins the poller
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	c.f, c.rc = f, rc
	return nil
}

// fd returns the socket's descriptor, for the calls of the dial, which
// has it alone.
func (c *hostConn) fd() (int, error) {
	fd := -1
	if err := c.rc.Control(func(d uintptr) { fd = int(d) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// waitFailed waits for the connect dialTCP started to end, and returns
// the dial's error if it failed (the socket closed), else nil.
func (c *hostConn) waitFailed(ctx context.Context, sa unsafe.Pointer, salen uintptr, hops uint8) error {
	fail := func(err error) error {
		c.f.Close()
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(c.remote), Err: err}
	}
	if err := c.waitConnected(ctx, sa, salen, hops != 0); err != nil {
		var errno syscall.Errno
		var ce *connectError
		switch {
		case errors.As(err, &ce):
		case errors.As(err, &errno):
			err = errno
			c.control("recvmsg", func(fd int) error { err = withQueuedError(fd, hops, errno); return nil })
		default:
			return fail(err)
		}
		return fail(os.NewSyscallError("connect", err))
	}
	return nil
}

// connectError is a connect that failed on an ICMP error, such as a
// router's Time Exceeded.
type connectError struct {
	errno error
	icmp  *ICMPError
}

func (e *connectError) Error() string   { return e.errno.Error() + " (" + e.icmp.Error() + ")" }
func (e *connectError) Unwrap() []error { return []error{e.errno, e.icmp} }

// withQueuedError adds to err, the failed connect of socket fd, the ICMP
// error queued on fd, if the socket was set to queue them (hops set).
func withQueuedError(fd int, hops uint8, err error) error {
	if hops == 0 {
		return err
	}
	if e, _ := readQueuedError(fd); e != nil {
		return &connectError{errno: err, icmp: e}
	}
	return err
}

// waitConnected waits for a started connect to end, until ctx is done.
//
// With queued set (the socket queues its ICMP errors) a Time Exceeded ends
// the wait at once. The kernel ends a connect on an ICMP error, but only
// on one that comes while no call holds the socket: in a connect call it
// sends the SYN again a second later, where a client's TCP would have
// given up, as through a router.
func (c *hostConn) waitConnected(ctx context.Context, sa unsafe.Pointer, salen uintptr, queued bool) error {
	// When ctx ends (its deadline or the gateway's close), a deadline in
	// the past wakes the wait, and the dial fails even if the handshake
	// ended in the meantime, as the socket's deadline is then spent.
	stop := context.AfterFunc(ctx, func() { c.f.SetWriteDeadline(time.Unix(1, 0)) })
	var cerr error
	err := c.rc.Write(func(fd uintptr) bool {
		var done bool
		done, cerr = connectStep(int(fd), sa, salen)
		if !done && cerr == nil && queued {
			if e, _ := readQueuedError(int(fd)); e != nil && timeExceeded(e) != nil {
				cerr = &connectError{errno: syscall.EHOSTUNREACH, icmp: e}
			}
		}
		return done || cerr != nil
	})
	if !stop() {
		return ctxErr(ctx)
	}
	if err != nil {
		return err
	}
	return cerr
}

// ctxErr is why ctx is done, as net.Dialer reports it: a passed deadline
// is an i/o timeout.
func ctxErr(ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return os.ErrDeadlineExceeded
	}
	return err
}

// connectStep calls connect once and says whether the connection is up;
// a connection still being made is neither up nor an error.
func connectStep(fd int, sa unsafe.Pointer, salen uintptr) (up bool, err error) {
	switch err := rawConnect(fd, sa, salen); err {
	case nil, unix.EISCONN:
		return true, nil
	case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
		return false, nil
	default:
		return false, err
	}
}

func rawConnect(fd int, sa unsafe.Pointer, salen uintptr) error {
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(sa), salen)
	runtime.KeepAlive(sa)
	if e != 0 {
		return e
	}
	return nil
}

// rawSockaddr is ap in the kernel's socket address layout.
func rawSockaddr(ap netip.AddrPort) (unsafe.Pointer, uintptr) {
	port := ap.Port()
	if ap.Addr().Is4() {
		sa := &unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().As4()}
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		return unsafe.Pointer(sa), unix.SizeofSockaddrInet4
	}
	sa := &unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ap.Addr().As16()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	return unsafe.Pointer(sa), unix.SizeofSockaddrInet6
}

// hostConn is an upstream TCP connection on a host socket.
type hostConn struct {
	f      *os.File
	rc     syscall.RawConn
	remote netip.AddrPort
	v6     bool
	hops   uint8 // the TTL (hop limit) set on the socket; 0: the host's default
	// spares, if set, keeps the socket for another flow once the
	// connection has ended (spare.go), unless a per-flow option was set
	// on it (tuned).
	spares *spareSockets
	tuned  atomic.Bool
	abort  atomic.Bool // SetLinger(0) was asked for: Close resets the connection
	// Each call on the socket holds mu shared, and Close holds it alone:
	// once the socket is kept for another flow, no call of this one
	// reaches it.
	mu      sync.RWMutex
	closing atomic.Bool
}

// hold takes mu shared for a call on the socket; false: c is closed.
func (c *hostConn) hold() bool {
	c.mu.RLock()
	if c.closing.Load() {
		c.mu.RUnlock()
		return false
	}
	return true
}

func (c *hostConn) closedError(op string) error {
	return &net.OpError{Op: op, Net: "tcp", Addr: c.RemoteAddr(), Err: net.ErrClosed}
}

func (c *hostConn) Read(b []byte) (int, error) {
	if !c.hold() {
		return 0, c.closedError("read")
	}
	defer c.mu.RUnlock()
	return c.f.Read(b)
}

func (c *hostConn) Write(b []byte) (int, error) {
	if !c.hold() {
		return 0, c.closedError("write")
	}
	defer c.mu.RUnlock()
	return c.f.Write(b)
}

func (c *hostConn) SetDeadline(t time.Time) error      { return c.deadline(c.f.SetDeadline, t) }
func (c *hostConn) SetReadDeadline(t time.Time) error  { return c.deadline(c.f.SetReadDeadline, t) }
func (c *hostConn) SetWriteDeadline(t time.Time) error { return c.deadline(c.f.SetWriteDeadline, t) }

func (c *hostConn) deadline(set func(time.Time) error, t time.Time) error {
	if !c.hold() {
		return c.closedError("set deadline")
	}
	defer c.mu.RUnlock()
	return set(t)
}

// SyscallConn gives the socket's descriptor to calls on it while the
// connection is open.
func (c *hostConn) SyscallConn() (syscall.RawConn, error) { return heldRawConn{c}, nil }

// heldRawConn is a hostConn's RawConn whose every call holds the
// connection open.
type heldRawConn struct{ c *hostConn }

func (h heldRawConn) Control(fn func(fd uintptr)) error {
	if !h.c.hold() {
		return h.c.closedError("control")
	}
	defer h.c.mu.RUnlock()
	return h.c.rc.Control(fn)
}

func (h heldRawConn) Read(fn func(fd uintptr) bool) error {
	if !h.c.hold() {
		return h.c.closedError("read")
	}
	defer h.c.mu.RUnlock()
	return h.c.rc.Read(fn)
}

func (h heldRawConn) Write(fn func(fd uintptr) bool) error {
	if !h.c.hold() {
		return h.c.closedError("write")
	}
	defer h.c.mu.RUnlock()
	return h.c.rc.Write(fn)
}

// LocalAddr asks the kernel: nothing on the relay path needs it, so the
// dial does not pay for it. It is nil once the connection is closed.
func (c *hostConn) LocalAddr() net.Addr {
	if c.closing.Load() {
		return nil
	}
	var sa unix.Sockaddr
	c.rc.Control(func(fd uintptr) { sa, _ = unix.Getsockname(int(fd)) })
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}
	}
	return nil
}

// RemoteAddr is the address dialed.
func (c *hostConn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.remote) }

// readLazy reads as Read does, taking buf's buffer only once the socket
// has something to return.
func (c *hostConn) readLazy(buf *relayBuf) (int, error) {
	if !c.hold() {
		return 0, c.closedError("read")
	}
	defer c.mu.RUnlock()
	return readSocket(c, "tcp", c.rc, buf)
}

// CloseWrite sends FIN; reading goes on.
func (c *hostConn) CloseWrite() error {
	return c.control("shutdown", func(fd int) error { return unix.Shutdown(fd, unix.SHUT_WR) })
}

// SetLinger sets SO_LINGER as net.TCPConn does: 0 makes Close send RST.
// A socket that may be kept is only marked: its Close resets the
// connection as the kernel's close would.
func (c *hostConn) SetLinger(sec int) error {
	if sec == 0 && c.spares != nil {
		c.abort.Store(true)
		return nil
	}
	c.tuned.Store(true)
	return c.setLinger(sec)
}

func (c *hostConn) setLinger(sec int) error {
	l := unix.Linger{}
	if sec >= 0 {
		l.Onoff, l.Linger = 1, int32(sec)
	}
	return c.control("setsockopt", func(fd int) error { return unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &l) })
}

// Close ends the connection. A socket that may be kept goes back to the
// spares if its connection was reset (SetLinger(0): Close sends the RST,
// as the kernel's close does with that setting) or had fully closed;
// otherwise, or if it has been tuned for its flow, it is closed.
func (c *hostConn) Close() error {
	if !c.closing.CompareAndSwap(false, true) {
		return c.closedError("close")
	}
	if c.spares == nil || c.tuned.Load() {
		return c.closeFile()
	}
	// Wake the calls waiting on the socket, and wait for every call under
	// way to return.
	c.f.SetDeadline(time.Unix(1, 0))
	c.mu.Lock()
	defer c.mu.Unlock()
	var kept bool
	c.rc.Control(func(fd uintptr) { kept = reusable(int(fd), c.abort.Load()) })
	if kept && c.f.SetDeadline(time.Time{}) == nil && c.pollable() &&
		c.spares.put(c.v6, spareSocket{f: c.f, rc: c.rc, hops: c.hops, since: time.Now()}) {
		return nil
	}
	return c.closeFile()
}

// pollable reports whether a read of the socket may go on to wait for it.
// The poller refuses reads of a socket whose last event was an error
// alone, until another event comes; a kept socket might see none before
// its next connection's first read, and is not kept then.
func (c *hostConn) pollable() bool {
	return c.rc.Read(func(uintptr) bool { return true }) == nil
}

// closeFile closes the socket, resetting the connection if asked to.
func (c *hostConn) closeFile() error {
	if c.abort.Load() {
		c.rc.Control(func(fd uintptr) {
			unix.SetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1})
		})
	}
	return c.f.Close()
}

// reusable makes the TCP socket fd a new, unconnected socket if its
// connection is over, or is to be reset (abort), and reports whether it
// did. A connection still closing (a FIN not yet acknowledged either way)
// is left to the kernel's close.
func reusable(fd int, abort bool) bool {
	if !abort {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil || info.State != tcpStateClose {
			return false
		}
	}
	// connect to AF_UNSPEC: the kernel's tcp_disconnect, which the close
	// of a socket with SO_LINGER 0 calls too: a RST if the connection
	// was open, the queues emptied, the local port let go.
	var unspec unix.RawSockaddr
	if _, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&unspec)), unsafe.Sizeof(unspec)); e != 0 {
		return false
	}
	// Reading the reset's error clears it, so that it is not polled for
	// while the next connection is made.
	_, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	return err == nil
}

// tcpStateClose is TCP_CLOSE in TCP_INFO's state field.
const tcpStateClose = 7

func (c *hostConn) control(call string, fn func(fd int) error) error {
	if !c.hold() {
		return c.closedError(call)
	}
	defer c.mu.RUnlock()
	var serr error
	if err := c.rc.Control(func(fd uintptr) { serr = fn(int(fd)) }); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError(call, serr)
	}
	return nil
}
