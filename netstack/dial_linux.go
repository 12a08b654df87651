package netstack

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// hostDialer dials upstream from host sockets carrying SO_MARK (so policy
// routing can send them around the TUN) and, if iface is set, bound to it.
// TCP sockets whose connection has ended are kept in spares (if not nil)
// for later dials, unless bound to iface: an interface that goes away and
// comes back would leave them bound to one that is no more.
func hostDialer(mark uint32, iface string, spares *spareSockets) DialFunc {
	if iface != "" {
		spares = nil
	}
	// No TCP keepalive from the start: idle flows are ended by
	// limits.tcp_idle, and the four setsockopt calls per flow would cost
	// connection rate. A flow whose client probes gets them then
	// (relay.steerProbes).
	d := &net.Dialer{ControlContext: socketControl(mark, iface), KeepAlive: -1}
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		if network == "tcp" {
			// A zoned (link-local) address needs its scope: net.Dialer.
			if ap, err := netip.ParseAddrPort(address); err == nil && ap.Addr().Zone() == "" {
				return dialTCP(ctx, ap, mark, iface, spares)
			}
		}
		return d.DialContext(ctx, network, address)
	}
}

// socketControl applies the egress mark and interface to a new socket, and
// the TTL the dial's context asks for; it makes a UDP socket queue the
// ICMP errors about its datagrams, to be passed on to the client.
func socketControl(mark uint32, iface string) func(ctx context.Context, network, address string, c syscall.RawConn) error {
	return func(ctx context.Context, network, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			v6 := network == "udp6" || network == "tcp6"
			serr = setEgress(int(fd), mark, iface)
			if hops := dialHops(ctx); serr == nil && hops != 0 {
				serr = setHops(int(fd), v6, int(hops))
			}
			if serr == nil && (network == "udp4" || network == "udp6") {
				serr = setRecvErr(int(fd), v6)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

func setEgress(fd int, mark uint32, iface string) error {
	if mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
			return &net.OpError{Op: "setsockopt SO_MARK", Err: err}
		}
	}
	if iface != "" {
		if err := unix.BindToDevice(fd, iface); err != nil {
			return &net.OpError{Op: "setsockopt SO_BINDTODEVICE", Err: err}
		}
	}
	return nil
}

// withFD runs fn with the file descriptor of the host socket behind c (a
// net.Conn or *os.File of one), and reports whether it could.
func withFD(c any, fn func(fd int)) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) }) == nil
}

// connectSegments is what segmentsIn gives for a socket whose connect
// has just returned: the SYN-ACK.
const connectSegments = 1

// segmentsIn returns how many TCP segments the host socket behind c has
// received, keepalive probes included (TCP_INFO), or 0 if it cannot tell.
func segmentsIn(c net.Conn) uint64 {
	var n uint64
	withFD(c, func(fd int) {
		if info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			n = uint64(info.Segs_in)
		}
	})
	return n
}

// upstreamReset reports whether the host TCP socket behind c has been
// reset by its peer or has otherwise failed (a pending socket error;
// reading it clears it, and the flow ends on it).
func upstreamReset(c net.Conn) bool {
	var failed bool
	withFD(c, func(fd int) {
		errno, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		failed = err == nil && errno != 0
	})
	return failed
}

// hopsOption is the socket option value for a dial's hops: 0 (none asked
// for) is the host's default.
func hopsOption(hops uint8) int {
	if hops == 0 {
		return -1
	}
	return int(hops)
}

// setHops sets the TTL (IPv4) or unicast hop limit (IPv6) of the socket
// fd; -1 is the host's default.
func setHops(fd int, v6 bool, hops int) error {
	if v6 {
		return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, hops)
	}
	return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, hops)
}

// keepaliveUpstream turns the host's keepalive probes on the upstream
// socket behind c on or off (keepaliveTiming).
func keepaliveUpstream(c net.Conn, on bool, idle time.Duration) {
	if hc, ok := c.(*hostConn); ok && on {
		hc.tuned.Store(true) // not to be kept for a flow that did not ask
	}
	withFD(c, func(fd int) {
		enable := 0
		if on {
			first, interval, count := keepaliveTiming(idle)
			unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(first/time.Second))
			unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(interval/time.Second))
			unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, count)
			enable = 1
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, enable)
	})
}
