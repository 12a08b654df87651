package netstack

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// readSocket reads from the host socket rc of c, a "tcp" (stream) or
// "udp" connection, as its Read does, taking buf's buffer only once the
// socket has something to return.
func readSocket(c net.Conn, network string, rc syscall.RawConn, buf *relayBuf) (int, error) {
	var (
		n    int
		serr error
	)
	err := rc.Read(func(fd uintptr) bool {
		for {
			n, serr = unix.Read(int(fd), buf.get())
			if serr != unix.EINTR {
				break
			}
		}
		if serr == unix.EAGAIN {
			buf.put()
			return false // wait until the socket is readable
		}
		return true
	})
	if serr != nil {
		err = os.NewSyscallError("read", serr)
	}
	switch {
	case err != nil:
		return 0, &net.OpError{Op: "read", Net: network, Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	case n == 0 && network == "tcp":
		return 0, io.EOF
	}
	return n, nil
}

// upstreamDatagrams is a UDP session's host socket.
type upstreamDatagrams struct {
	*net.UDPConn
	rc syscall.RawConn
	// follow, if set, returns the hops (limitedHops) of the client's
	// datagram about to be written; the socket's TTL (hop limit), set to
	// hops, follows it.
	follow func() uint8
	hops   uint8
	v6     bool
}

// followHops has each datagram written on c, a UDP session's host socket,
// go with the hops hops returns, as a router passes each packet on with
// what it has left: a client may change the TTL within one session (as
// tracepath does). The socket was dialed with first. Other connections
// are left as they are.
func followHops(c net.Conn, first uint8, hops func() uint8) {
	if u, ok := c.(*upstreamDatagrams); ok {
		u.follow, u.hops = hops, first
		u.v6 = u.RemoteAddr().(*net.UDPAddr).AddrPort().Addr().Unmap().Is6()
	}
}

// Write sends b, first setting the socket's TTL (hop limit) to that of the
// client's datagram if it changed.
func (c *upstreamDatagrams) Write(b []byte) (int, error) {
	if c.follow != nil {
		if hops := c.follow(); hops != c.hops {
			var serr error
			if err := c.rc.Control(func(fd uintptr) { serr = setHops(int(fd), c.v6, hopsOption(hops)) }); err != nil || serr != nil {
				return 0, &net.OpError{Op: "write", Net: "udp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errors.Join(err, os.NewSyscallError("setsockopt", serr))}
			}
			c.hops = hops
		}
	}
	return c.UDPConn.Write(b)
}

// lazyDatagrams makes a host UDP socket take its relay buffer only once a
// datagram is there; any other connection is returned as it is.
func lazyDatagrams(c net.Conn) net.Conn {
	uc, ok := c.(*net.UDPConn)
	if !ok {
		return c
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return c
	}
	return &upstreamDatagrams{UDPConn: uc, rc: rc}
}

func (c *upstreamDatagrams) readLazy(buf *relayBuf) (int, error) {
	return readSocket(c, "udp", c.rc, buf)
}
