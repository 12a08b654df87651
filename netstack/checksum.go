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
	var src, dst []byte
	var proto uint8
	var payload []byte
	if pkt[0]>>4 == 4 {
		ihl := int(pkt[0]&0xf) * 4
		if checksum.Checksum(pkt[:ihl], 0) != 0xffff {
			return false
		}
		if binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 {
			return true
		}
		src, dst, proto = pkt[12:16], pkt[16:20], pkt[9]
		payload = pkt[ihl:binary.BigEndian.Uint16(pkt[2:])]
	} else {
		next, off, frag := ipv6Upper(pkt)
		end := ipv6HeaderLen + int(binary.BigEndian.Uint16(pkt[4:]))
		if frag || off > end {
			return frag
		}
		src, dst, proto = pkt[8:24], pkt[24:40], next
		payload = pkt[off:end]
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
