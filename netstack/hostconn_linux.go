package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
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
func dialTCP(ctx context.Context, ap netip.AddrPort, mark uint32, iface string) (net.Conn, error) {
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
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, opErr("socket", err)
	}
	if err := setEgress(fd, mark, iface); err != nil {
		unix.Close(fd)
		return nil, fail(err)
	}
	// A SYN with few hops left (a traceroute's) goes on with them, and the
	// error of the router where they run out is kept for the client.
	hops, v6 := dialHops(ctx), family == unix.AF_INET6
	if hops != 0 {
		if err := errors.Join(setHops(fd, v6, int(hops)), setRecvErr(fd, v6)); err != nil {
			unix.Close(fd)
			return nil, opErr("setsockopt", err)
		}
	}
	// The relay writes what it reads at once; Nagle would hold small
	// writes back for an ACK.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(fd)
		return nil, opErr("setsockopt", err)
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
		unix.Close(fd)
		return nil, opErr("connect", err)
	}
	f := os.NewFile(uintptr(fd), "tcp") // non-blocking: joins the poller
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, opErr("connect", err)
	}
	c := &hostConn{File: f, rc: rc, remote: ap}
	if !connected {
		if err := c.waitFailed(ctx, sa, salen, hops); err != nil {
			return nil, err
		}
	}
	if hops != 0 {
		if err := c.control("setsockopt", func(fd int) error { return stopRecvErr(fd, v6) }); err != nil {
			f.Close()
			return nil, fail(err)
		}
	}
	return c, nil
}

// waitFailed waits for the connect dialTCP started to end, and returns
// the dial's error if it failed (the socket closed), else nil.
func (c *hostConn) waitFailed(ctx context.Context, sa unsafe.Pointer, salen uintptr, hops uint8) error {
	fail := func(err error) error {
		c.File.Close()
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
	stop := context.AfterFunc(ctx, func() { c.SetWriteDeadline(time.Unix(1, 0)) })
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
	*os.File
	rc     syscall.RawConn
	remote netip.AddrPort
}

// LocalAddr asks the kernel: nothing on the relay path needs it, so the
// dial does not pay for it. It is nil once the socket is closed.
func (c *hostConn) LocalAddr() net.Addr {
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
	return readSocket(c, "tcp", c.rc, buf)
}

// CloseWrite sends FIN; reading goes on.
func (c *hostConn) CloseWrite() error {
	return c.control("shutdown", func(fd int) error { return unix.Shutdown(fd, unix.SHUT_WR) })
}

// SetLinger sets SO_LINGER as net.TCPConn does: 0 makes Close send RST.
func (c *hostConn) SetLinger(sec int) error {
	l := unix.Linger{}
	if sec >= 0 {
		l.Onoff, l.Linger = 1, int32(sec)
	}
	return c.control("setsockopt", func(fd int) error { return unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &l) })
}

func (c *hostConn) control(call string, fn func(fd int) error) error {
	var serr error
	if err := c.rc.Control(func(fd uintptr) { serr = fn(int(fd)) }); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError(call, serr)
	}
	return nil
}
