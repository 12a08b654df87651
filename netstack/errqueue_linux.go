package netstack

import (
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// setRecvErr makes a socket queue every ICMP error about what it sent,
// with the sender's address and the quoted datagram (IP_RECVERR,
// IPV6_RECVERR). Without it a socket sees few kinds, as a bare errno.
func setRecvErr(fd int, v6 bool) error { return recvErr(fd, v6, 1) }

// stopRecvErr turns the queueing off again, dropping what is queued. A
// connected TCP socket that queues its ICMP errors takes each one as
// fatal, where TCP itself rides out a passing unreachable.
func stopRecvErr(fd int, v6 bool) error { return recvErr(fd, v6, 0) }

func recvErr(fd int, v6 bool, on int) error {
	level, opt := unix.IPPROTO_IP, unix.IP_RECVERR
	if v6 {
		level, opt = unix.IPPROTO_IPV6, unix.IPV6_RECVERR
	}
	if err := unix.SetsockoptInt(fd, level, opt, on); err != nil {
		return &net.OpError{Op: "setsockopt RECVERR", Err: err}
	}
	return nil
}

// readQueuedError takes entries off the error queue of socket fd up to the
// first ICMP error and returns it with the data the kernel hands back with
// it (the part of the datagram the error quoted). Entries of other origins
// are dropped. nil when the queue holds no ICMP error.
func readQueuedError(fd int) (*ICMPError, []byte) {
	// A buffer per call: a write and a read may both get here at once.
	buf := make([]byte, icmp6ErrorQuoteMax)
	var oob [128]byte
	for {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if err != nil {
			return nil, nil // the queue is empty
		}
		if e := parseExtendedError(oob[:oobn]); e != nil {
			return e, buf[:n]
		}
	}
}

// queuedDatagramError returns the ICMP error waiting in the error queue of
// conn, a UDP socket, its Payload the part of the datagram's payload that
// the error quoted; nil if there is none or conn has no queue to read.
func queuedDatagramError(conn net.Conn) *ICMPError {
	var e *ICMPError
	withFD(conn, func(fd int) {
		var data []byte
		if e, data = readQueuedError(fd); e != nil {
			e.Payload = data // a buffer of its own
		}
	})
	return e
}

// sizeofSockExtendedErr is the size of struct sock_extended_err: errno
// (4 bytes), origin, type, code, a pad byte, info (4), data (4).
const sizeofSockExtendedErr = 16

// parseExtendedError reads the extended error in an error queue entry's
// control messages: the ICMP type, code, info and sender. Errors this host
// raised without an ICMP message (a local MTU, say) give nil.
func parseExtendedError(oob []byte) *ICMPError {
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
		return &ICMPError{Type: ee[5], Code: ee[6], Info: binary.NativeEndian.Uint32(ee[8:]), From: offender(ee[sizeofSockExtendedErr:])}
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
