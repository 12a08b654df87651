package netstack

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// checksumsOK verifies the IPv4 header checksum and the TCP, UDP or ICMP
// checksum of a packet whose lengths check already validated. The endpoint
// verifies every packet here once, then tells the stack (and its GRO, which
// would otherwise leave merged headers unverifiable) that it need not.
// Fragments are verified up to their IP header; the stack reassembles them.
func checksumsOK(pkt []byte) bool {
	if pkt[0]>>4 == 4 && checksum.Checksum(pkt[:int(pkt[0]&0xf)*4], 0) != 0xffff {
		return false
	}
	src, dst, proto, payload, frag, ok := upperLayer(pkt)
	if frag {
		return true
	}
	if !ok {
		return false
	}
	switch proto {
	case uint8(header.TCPProtocolNumber):
	case uint8(header.UDPProtocolNumber):
		if len(payload) >= header.UDPMinimumSize && len(src) == 4 && binary.BigEndian.Uint16(payload[6:]) == 0 {
			return true // IPv4 UDP without checksum
		}
	case protoICMPv4:
		return checksum.Checksum(payload, 0) == 0xffff
	case protoICMPv6:
	default:
		return true
	}
	return checksum.Checksum(payload, pseudoHeader(src, dst, proto, len(payload))) == 0xffff
}

// upperLayer finds what an IP packet whose lengths check already validated
// carries: the addresses (for a pseudo-header), the protocol, and the bytes
// from the transport header to the end of the IP payload. frag reports a
// fragment, whose transport header may be in another packet; ok is false
// when IPv6 extension headers run past the payload.
func upperLayer(pkt []byte) (src, dst []byte, proto uint8, payload []byte, frag, ok bool) {
	if pkt[0]>>4 == 4 {
		if binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 {
			return nil, nil, 0, nil, true, true
		}
		ihl := int(pkt[0]&0xf) * 4
		return pkt[12:16], pkt[16:20], pkt[9], pkt[ihl:binary.BigEndian.Uint16(pkt[2:])], false, true
	}
	next, off, frag := ipv6Upper(pkt)
	end := ipv6HeaderLen + int(binary.BigEndian.Uint16(pkt[4:]))
	if frag || off > end {
		return nil, nil, 0, nil, frag, frag
	}
	return pkt[8:24], pkt[24:40], next, pkt[off:end], false, true
}

// reachHops is the initial TTL (hop limit) of Linux, macOS and the BSDs.
// A packet that reaches tunwall with less asks for less reach: a
// traceroute probe, or one that took a hop through this host's forwarding
// already. Its upstream socket sends with what is left, as a router passes
// a packet on; a packet with more goes with the host's default.
const reachHops = 64

// limitedHops returns the TTL (hop limit) left to the packet whose IP
// header starts nh, if that is below reachHops, else 0: the host's
// default.
func limitedHops(nh []byte) uint8 {
	if len(nh) == 0 {
		return 0
	}
	return limitedTTL(hopLimit(nh))
}

// limitedTTL returns ttl, a packet's TTL (hop limit) as it reached
// tunwall, if it is below reachHops, else 0.
func limitedTTL(ttl uint8) uint8 {
	if ttl < reachHops {
		return ttl
	}
	return 0
}

// hopLimit returns the TTL (IPv4) or hop limit (IPv6) of a checked packet.
func hopLimit(pkt []byte) uint8 {
	if pkt[0]>>4 == 4 {
		return pkt[8]
	}
	return pkt[7]
}

// pseudoHeader sums the TCP/UDP/ICMPv6 pseudo-header.
func pseudoHeader(src, dst []byte, proto uint8, length int) uint16 {
	sum := checksum.Checksum(src, 0)
	sum = checksum.Checksum(dst, sum)
	var tail [4]byte
	binary.BigEndian.PutUint16(tail[0:], uint16(length>>16))
	binary.BigEndian.PutUint16(tail[2:], uint16(length))
	sum = checksum.Checksum(tail[:], sum)
	return checksum.Combine(sum, uint16(proto))
}
