package netstack

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// hostPinger opens one ICMP socket per echo flow, connected to the
// destination: an unprivileged ping socket where net.ipv4.ping_group_range
// allows it, a raw socket otherwise (CAP_NET_RAW).
func hostPinger(mark uint32, iface string) PingFunc {
	return func(_ context.Context, dst netip.Addr) (EchoConn, error) {
		family, proto := unix.AF_INET, unix.IPPROTO_ICMP
		if dst.Is6() {
			family, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
		}
		raw := false
		fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EPROTONOSUPPORT) {
			raw = true
			fd, err = unix.Socket(family, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
		}
		if err != nil {
			return nil, fmt.Errorf("icmp socket: %w", err)
		}
		if err := setEgress(fd, mark, iface); err != nil {
			unix.Close(fd)
			return nil, err
		}
		if err := unix.Connect(fd, sockaddr(dst)); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("icmp connect %s: %w", dst, err)
		}
		// Every ICMP error for the flow's requests is queued to be read
		// and passed on; without this only a few kinds would show, as a
		// bare errno.
		level, opt := unix.IPPROTO_IP, unix.IP_RECVERR
		if dst.Is6() {
			level, opt = unix.IPPROTO_IPV6, unix.IPV6_RECVERR
		}
		if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("icmp socket: receive errors: %w", err)
		}
		c := &pingConn{f: os.NewFile(uintptr(fd), "icmp"), v6: dst.Is6(), raw: raw, id: uint16(rand.Uint32())}
		return c, nil
	}
}

func sockaddr(a netip.Addr) unix.Sockaddr {
	if a.Is4() {
		return &unix.SockaddrInet4{Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Addr: a.As16()}
}

// pingConn is a connected ICMP socket. Ping sockets get their echo id from
// the kernel and see only their own replies; raw sockets see every ICMP
// message from the destination and keep those carrying their own id.
type pingConn struct {
	f   *os.File
	v6  bool
	raw bool
	id  uint16
	buf [65536]byte
}

func (c *pingConn) WriteEcho(seq uint16, payload []byte) error {
	msg := make([]byte, icmpHeaderLen+len(payload))
	msg[0] = icmp4Echo
	if c.v6 {
		msg[0] = icmp6Echo // the kernel fills in the ICMPv6 checksum
	}
	binary.BigEndian.PutUint16(msg[4:], c.id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	copy(msg[icmpHeaderLen:], payload)
	if !c.v6 {
		binary.BigEndian.PutUint16(msg[2:], ^checksum.Checksum(msg, 0))
	}
	_, err := c.f.Write(msg)
	return c.checkQueued(err)
}

func (c *pingConn) ReadEcho(buf []byte) (uint16, int, error) {
	for {
		n, err := c.f.Read(c.buf[:])
		if err != nil {
			return 0, 0, c.checkQueued(err)
		}
		msg := c.buf[:n]
		if c.raw && !c.v6 && n >= ipv4HeaderLen { // raw IPv4 sockets include the IP header
			msg = msg[int(msg[0]&0xf)*4:]
		}
		if len(msg) < icmpHeaderLen {
			continue
		}
		want := uint8(icmp4EchoReply)
		if c.v6 {
			want = icmp6EchoReply
		}
		if msg[0] != want || c.raw && binary.BigEndian.Uint16(msg[4:]) != c.id {
			continue
		}
		return binary.BigEndian.Uint16(msg[6:]), copy(buf, msg[icmpHeaderLen:]), nil
	}
}

// checkQueued turns err, if it is the socket reporting an ICMP error, into
// the *ICMPError waiting in the socket's error queue. Each queued error is
// reported once, by the read or write that comes next.
func (c *pingConn) checkQueued(err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) || errno == syscall.EAGAIN {
		return err
	}
	rc, serr := c.f.SyscallConn()
	if serr != nil {
		return err
	}
	var ie *ICMPError
	rc.Control(func(fd uintptr) {
		// Not c.buf: a write and a read may both get here at once.
		var data [icmp6ErrorQuoteMax]byte
		var oob [128]byte
		for {
			n, oobn, _, _, rerr := unix.Recvmsg(int(fd), data[:], oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if rerr != nil {
				return // the queue is empty: err was something else
			}
			if ie = parseQueuedError(data[:n], oob[:oobn]); ie != nil {
				return
			}
		}
	})
	if ie != nil {
		return ie
	}
	return err
}

// sizeofSockExtendedErr is the size of struct sock_extended_err: errno
// (4 bytes), origin, type, code, a pad byte, info (4), data (4).
const sizeofSockExtendedErr = 16

// parseQueuedError reads an entry of an ICMP socket's error queue: the
// extended error in oob, the request it is about in data (its ICMP header
// first; raw sockets put the IP header before it). Errors this host raised
// without an ICMP message (a local MTU, say) give nil.
func parseQueuedError(data, oob []byte) *ICMPError {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	for _, m := range msgs {
		v4 := m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_RECVERR
		v6 := m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_RECVERR
		if !v4 && !v6 || len(m.Data) < sizeofSockExtendedErr {
			continue
		}
		ee := m.Data
		if origin := ee[4]; origin != unix.SO_EE_ORIGIN_ICMP && origin != unix.SO_EE_ORIGIN_ICMP6 {
			return nil
		}
		if len(data) == 0 {
			return nil
		}
		switch data[0] >> 4 {
		case 4: // an IPv4 header (echo request types have 0 or 8 here)
			data = data[min(int(data[0]&0xf)*4, len(data)):]
		case 6:
			data = data[min(ipv6HeaderLen, len(data)):]
		}
		if len(data) < icmpHeaderLen {
			return nil
		}
		e := &ICMPError{Type: ee[5], Code: ee[6], Info: binary.NativeEndian.Uint32(ee[8:]), Seq: binary.BigEndian.Uint16(data[6:]),
			Payload: bytes.Clone(data[icmpHeaderLen:])}
		e.From = offender(m.Data[sizeofSockExtendedErr:])
		return e
	}
	return nil
}

// offender reads the address of the sender of a queued ICMP error (the
// sockaddr after the extended error).
func offender(sa []byte) netip.Addr {
	if len(sa) < 2 {
		return netip.Addr{}
	}
	switch binary.NativeEndian.Uint16(sa) {
	case unix.AF_INET:
		if len(sa) >= 8 {
			return netip.AddrFrom4([4]byte(sa[4:8]))
		}
	case unix.AF_INET6:
		if len(sa) >= 24 {
			return netip.AddrFrom16([16]byte(sa[8:24]))
		}
	}
	return netip.Addr{}
}

func (c *pingConn) SetReadDeadline(t time.Time) error { return c.f.SetReadDeadline(t) }

func (c *pingConn) Close() error { return c.f.Close() }
