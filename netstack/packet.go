package netstack

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// ICMP message types tunwall reads or writes.
const (
	icmp4EchoReply   = 0
	icmp4Unreachable = 3
	icmp4Echo        = 8
	icmp6Unreachable = 1
	icmp6Echo        = 128
	icmp6EchoReply   = 129

	icmp4CodeHostUnreachable = 1
	icmp4CodePortUnreachable = 3
	icmp4CodeAdminProhibited = 13
	icmp6CodeAdminProhibited = 1
	icmp6CodeAddrUnreachable = 3
	icmp6CodePortUnreachable = 4
	protoICMPv4              = 1
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
	quote := orig
	limit := icmp4ErrorQuoteMax
	if dst.Is6() {
		limit = icmp6ErrorQuoteMax
	}
	if len(quote) > limit {
		quote = quote[:limit]
	}
	msg := make([]byte, icmpHeaderLen+len(quote))
	msg[0], msg[1] = typ, code
	copy(msg[icmpHeaderLen:], quote)
	return ipPacket(dst, src, msg)
}

// portUnreachable builds the ICMP port unreachable that the destination
// of a UDP flow from src to dst sends back to src. The datagram it quotes is
// an empty one from src to dst: the relay no longer has the one the
// destination refused, and a host matches the error to its socket by the
// quoted addresses and ports alone.
func portUnreachable(src, dst netip.AddrPort) []byte {
	udp := make([]byte, udpHeaderLen)
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], udpHeaderLen)
	var orig []byte
	typ, code := uint8(icmp4Unreachable), uint8(icmp4CodePortUnreachable)
	if s, d := src.Addr(), dst.Addr(); s.Is4() {
		orig = make([]byte, ipv4HeaderLen, ipv4HeaderLen+udpHeaderLen)
		orig[0] = 0x45
		binary.BigEndian.PutUint16(orig[2:], ipv4HeaderLen+udpHeaderLen)
		orig[8] = 64 // TTL
		orig[9] = protoUDP
		s4, d4 := s.As4(), d.As4()
		copy(orig[12:16], s4[:])
		copy(orig[16:20], d4[:])
		binary.BigEndian.PutUint16(orig[10:], ^checksum.Checksum(orig, 0))
		var ph [12]byte
		copy(ph[0:4], s4[:])
		copy(ph[4:8], d4[:])
		ph[9] = protoUDP
		binary.BigEndian.PutUint16(ph[10:], udpHeaderLen)
		binary.BigEndian.PutUint16(udp[6:], ^checksum.Checksum(udp, checksum.Checksum(ph[:], 0)))
	} else {
		typ, code = icmp6Unreachable, icmp6CodePortUnreachable
		orig = make([]byte, ipv6HeaderLen, ipv6HeaderLen+udpHeaderLen)
		orig[0] = 0x60
		binary.BigEndian.PutUint16(orig[4:], udpHeaderLen)
		orig[6] = protoUDP
		orig[7] = 64 // hop limit
		s16, d16 := s.As16(), d.As16()
		copy(orig[8:24], s16[:])
		copy(orig[24:40], d16[:])
		var ph [40]byte
		copy(ph[0:16], s16[:])
		copy(ph[16:32], d16[:])
		binary.BigEndian.PutUint32(ph[32:], udpHeaderLen)
		ph[39] = protoUDP
		binary.BigEndian.PutUint16(udp[6:], ^checksum.Checksum(udp, checksum.Checksum(ph[:], 0)))
	}
	return icmpError(append(orig, udp...), src.Addr(), dst.Addr(), typ, code)
}

// ipPacket wraps an ICMP message (checksum field zero) in an IP header from
// src to dst and fills in both checksums.
func ipPacket(src, dst netip.Addr, msg []byte) []byte {
	if src.Is4() {
		pkt := make([]byte, ipv4HeaderLen+len(msg))
		h := pkt[:ipv4HeaderLen]
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(len(pkt)))
		h[8] = 64 // TTL
		h[9] = protoICMPv4
		s4, d4 := src.As4(), dst.As4()
		copy(h[12:16], s4[:])
		copy(h[16:20], d4[:])
		binary.BigEndian.PutUint16(h[10:], ^checksum.Checksum(h, 0))
		binary.BigEndian.PutUint16(msg[2:], ^checksum.Checksum(msg, 0))
		copy(pkt[ipv4HeaderLen:], msg)
		return pkt
	}
	pkt := make([]byte, ipv6HeaderLen+len(msg))
	h := pkt[:ipv6HeaderLen]
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(msg)))
	h[6] = protoICMPv6
	h[7] = 64 // hop limit
	s16, d16 := src.As16(), dst.As16()
	copy(h[8:24], s16[:])
	copy(h[24:40], d16[:])
	binary.BigEndian.PutUint16(msg[2:], ^icmp6Checksum(s16, d16, msg))
	copy(pkt[ipv6HeaderLen:], msg)
	return pkt
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
