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
	"sync"
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
		if err := setRecvErr(fd, dst.Is6()); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("icmp socket: %w", err)
		}
		c := &pingConn{f: os.NewFile(uintptr(fd), "icmp"), v6: dst.Is6(), raw: raw, id: uint16(rand.Uint32()), hops: -1}
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
	f      *os.File
	v6     bool
	raw    bool
	id     uint16
	hopsMu sync.Mutex
	hops   int // the socket's TTL or hop limit; -1: the host's default
	buf    [65536]byte
}

// SetHopLimit has the next requests sent with hops, or with the host's
// default for 0. Only a change costs a call.
func (c *pingConn) SetHopLimit(hops uint8) error {
	want := int(hops)
	if hops == 0 {
		want = -1
	}
	c.hopsMu.Lock()
	defer c.hopsMu.Unlock()
	if want == c.hops {
		return nil
	}
	err := errors.New("icmp socket closed")
	withFD(c.f, func(fd int) { err = setHops(fd, c.v6, want) })
	if err == nil {
		c.hops = want
	}
	return err
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
	if _, ok := socketErrno(err); !ok {
		return err
	}
	for {
		var e *ICMPError
		var data []byte
		withFD(c.f, func(fd int) { e, data = readQueuedError(fd) })
		if e == nil {
			return err // the queue is empty: err was something else
		}
		if e = echoErrorOf(e, data); e != nil {
			return e
		}
	}
}

// echoErrorOf completes e, an ICMP error read from an ICMP socket's error
// queue, from data, the request it is about (its ICMP header first; raw
// sockets put the IP header before it). A request too short to carry its
// sequence number gives nil.
func echoErrorOf(e *ICMPError, data []byte) *ICMPError {
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
	e.Seq = binary.BigEndian.Uint16(data[6:])
	e.Payload = bytes.Clone(data[icmpHeaderLen:])
	return e
}

func (c *pingConn) SetReadDeadline(t time.Time) error { return c.f.SetReadDeadline(t) }

func (c *pingConn) Close() error { return c.f.Close() }
