package netstack

import (
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
