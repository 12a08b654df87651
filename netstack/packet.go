package netstack

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// ICMP message types tunwall reads or writes.
const (
	icmp4EchoReply    = 0
	icmp4Unreachable  = 3
	icmp4Echo         = 8
	icmp4TimeExceeded = 11
	icmp4ParamProblem = 12
	icmp6Unreachable  = 1
	icmp6PacketTooBig = 2
	icmp6TimeExceeded = 3
	icmp6ParamProblem = 4
	icmp6Echo         = 128
	icmp6EchoReply    = 129

	icmp4CodeHostUnreachable = 1
	icmp4CodePortUnreachable = 3
	icmp4CodeFragNeeded      = 4
	icmp4CodeAdminProhibited = 13
	icmp6CodeAdminProhibited = 1
	icmp6CodeAddrUnreachable = 3
	icmp6CodePortUnreachable = 4
	protoICMPv4              = 1
	protoTCP                 = 6
	protoUDP                 = 17
	protoICMPv6              = 58
	ipv4HeaderLen            = 20
	ipv6HeaderLen            = 40
	icmpHeaderLen            = 8
	udpHeaderLen             = 8
	icmp4ErrorQuoteMax       = 576 - ipv4HeaderLen - icmpHeaderLen  // RFC 1812 4.3.2.3
	icmp6ErrorQuoteMax       = 1280 - ipv6HeaderLen - icmpHeaderLen // RFC 4443 2.4(c)
)

// echoReply builds the reply to an echo request from src (the client) to
// dst, as dst would send it.
func echoReply(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	typ := uint8(icmp4EchoReply)
	if dst.Is6() {
		typ = icmp6EchoReply
	}
	msg := make([]byte, icmpHeaderLen+len(payload))
	msg[0] = typ
	binary.BigEndian.PutUint16(msg[4:], id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	copy(msg[icmpHeaderLen:], payload)
	return ipPacket(dst, src, msg)
}

// icmpError builds an ICMP error about orig (a packet the client sent),
// sent back to the client from orig's destination.
func icmpError(orig []byte, src, dst netip.Addr, typ, code uint8) []byte {
	return icmpErrorFrom(dst, src, orig, typ, code, 0)
}

// icmpErrorFrom builds the ICMP error from sends to the client about orig,
// a packet the client sent; info goes where the type wants it (the MTU of
// "fragmentation needed" and "packet too big", a parameter problem's
// pointer).
func icmpErrorFrom(from, client netip.Addr, orig []byte, typ, code uint8, info uint32) []byte {
	quote := orig
	limit := icmp4ErrorQuoteMax
	if client.Is6() {
		limit = icmp6ErrorQuoteMax
	}
	if len(quote) > limit {
		quote = quote[:limit]
	}
	msg := make([]byte, icmpHeaderLen+len(quote))
	msg[0], msg[1] = typ, code
	switch {
	case client.Is6() && (typ == icmp6PacketTooBig || typ == icmp6ParamProblem):
		binary.BigEndian.PutUint32(msg[4:], info)
	case client.Is4() && typ == icmp4Unreachable && code == icmp4CodeFragNeeded:
		binary.BigEndian.PutUint16(msg[6:], uint16(info))
	case client.Is4() && typ == icmp4ParamProblem:
		msg[4] = uint8(info)
	}
	copy(msg[icmpHeaderLen:], quote)
	return ipPacket(from, client, msg)
}

// portUnreachable builds the ICMP port unreachable that the destination
// of a UDP flow from src to dst sends back to src, for an upstream socket
// that reported it without the datagram it refused. The datagram it quotes
// is an empty one from src to dst: a host matches the error to its socket
// by the quoted addresses and ports alone.
func portUnreachable(src, dst netip.AddrPort) []byte {
	e := &ICMPError{Type: icmp4Unreachable, Code: icmp4CodePortUnreachable}
	if src.Addr().Is6() {
		e.Type, e.Code = icmp6Unreachable, icmp6CodePortUnreachable
	}
	return datagramError(src, dst, dst.Addr(), e)
}

// datagramError builds the ICMP error e that from sends to src about a UDP
// datagram from src to dst. The datagram it quotes carries as much of its
// payload as the upstream error quoted (e.Payload).
func datagramError(src, dst netip.AddrPort, from netip.Addr, e *ICMPError) []byte {
	n := udpHeaderLen + len(e.Payload)
	udp := make([]byte, n)
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(n))
	copy(udp[udpHeaderLen:], e.Payload)
	s, d := src.Addr(), dst.Addr()
	sum := pseudoHeader(s.AsSlice(), d.AsSlice(), protoUDP, n)
	binary.BigEndian.PutUint16(udp[6:], ^checksum.Checksum(udp, sum))
	return icmpErrorFrom(from, s, append(ipHeader(s, d, protoUDP, n), udp...), e.Type, e.Code, e.Info)
}

// echoError builds the ICMP error e that from sends to the client about
// its echo request (identifier id) to dst. The request it quotes carries
// the client's identifier, and the sequence number and as much of the
// payload as the upstream error quoted.
func echoError(client, dst, from netip.Addr, id uint16, e *ICMPError) []byte {
	echo := make([]byte, icmpHeaderLen+len(e.Payload))
	echo[0] = icmp4Echo
	proto := uint8(protoICMPv4)
	binary.BigEndian.PutUint16(echo[4:], id)
	binary.BigEndian.PutUint16(echo[6:], e.Seq)
	copy(echo[icmpHeaderLen:], e.Payload)
	if client.Is6() {
		echo[0], proto = icmp6Echo, protoICMPv6
		binary.BigEndian.PutUint16(echo[2:], ^icmp6Checksum(client.As16(), dst.As16(), echo))
	} else {
		binary.BigEndian.PutUint16(echo[2:], ^checksum.Checksum(echo, 0))
	}
	orig := append(ipHeader(client, dst, proto, len(echo)), echo...)
	return icmpErrorFrom(from, client, orig, e.Type, e.Code, e.Info)
}

// ipHeader returns an IPv4 (with its checksum) or IPv6 header for a packet
// from src to dst carrying n bytes of protocol proto.
func ipHeader(src, dst netip.Addr, proto uint8, n int) []byte {
	if src.Is4() {
		h := make([]byte, ipv4HeaderLen)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(ipv4HeaderLen+n))
		h[8] = 64 // TTL
		h[9] = proto
		s4, d4 := src.As4(), dst.As4()
		copy(h[12:16], s4[:])
		copy(h[16:20], d4[:])
		binary.BigEndian.PutUint16(h[10:], ^checksum.Checksum(h, 0))
		return h
	}
	h := make([]byte, ipv6HeaderLen)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(n))
	h[6] = proto
	h[7] = 64 // hop limit
	s16, d16 := src.As16(), dst.As16()
	copy(h[8:24], s16[:])
	copy(h[24:40], d16[:])
	return h
}

// ipPacket wraps an ICMP message (checksum field zero) in an IP header from
// src to dst and fills in both checksums.
func ipPacket(src, dst netip.Addr, msg []byte) []byte {
	if src.Is4() {
		binary.BigEndian.PutUint16(msg[2:], ^checksum.Checksum(msg, 0))
		return append(ipHeader(src, dst, protoICMPv4, len(msg)), msg...)
	}
	binary.BigEndian.PutUint16(msg[2:], ^icmp6Checksum(src.As16(), dst.As16(), msg))
	return append(ipHeader(src, dst, protoICMPv6, len(msg)), msg...)
}

// icmp6Checksum sums the ICMPv6 pseudo-header and message.
func icmp6Checksum(src, dst [16]byte, msg []byte) uint16 {
	var ph [40]byte
	copy(ph[0:16], src[:])
	copy(ph[16:32], dst[:])
	binary.BigEndian.PutUint32(ph[32:], uint32(len(msg)))
	ph[39] = protoICMPv6
	return checksum.Checksum(msg, checksum.Checksum(ph[:], 0))
}
