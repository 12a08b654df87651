package netstack

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// IPv6 next-header values the fragmenter looks at.
const (
	ip6HopByHop   = 0
	ip6Routing    = 43
	ip6Fragment   = 44
	ip6DestOpts   = 60
	ip6FragHdrLen = 8
)

// fragmentIPv6 splits pkt, an IPv6 packet, into fragments of at most mtu
// bytes each and returns them (they share one new buffer). The stack's
// packets carry the server's address, so tunwall is their source, and an
// IPv6 packet may be fragmented by its source alone: routers on the way
// drop what does not fit. A whole packet gets a Fragment header with
// identification id. A packet that is already a fragment (the stack
// fragments a datagram larger than the device's MTU) is split into
// smaller fragments of the same packet: same identification, offsets
// within the original, and the last keeps the original's more-fragments
// flag. It returns nil for a packet it leaves alone: one that fits, one
// whose length fields disagree with it, one with extension headers that
// would have to be repeated in every fragment, or an mtu too small to
// carry 8 bytes of data.
func fragmentIPv6(pkt []byte, mtu int, id uint32) [][]byte {
	if len(pkt) < ipv6HeaderLen || pkt[0]>>4 != 6 {
		return nil
	}
	end := ipv6HeaderLen + int(binary.BigEndian.Uint16(pkt[4:]))
	if end > len(pkt) || end <= mtu {
		return nil
	}
	pkt = pkt[:end]
	next := pkt[6]
	data := pkt[ipv6HeaderLen:]
	offset, more := 0, false
	switch next {
	case ip6HopByHop, ip6Routing, ip6DestOpts:
		return nil
	case ip6Fragment:
		if len(data) < ip6FragHdrLen {
			return nil
		}
		frag := data[:ip6FragHdrLen]
		next = frag[0]
		offset = int(binary.BigEndian.Uint16(frag[2:]) &^ 7)
		more = frag[3]&1 == 1
		id = binary.BigEndian.Uint32(frag[4:])
		data = data[ip6FragHdrLen:]
	}
	chunk := (mtu - ipv6HeaderLen - ip6FragHdrLen) &^ 7
	if chunk < 8 || offset+len(data) > 0xffff {
		return nil
	}
	n := (len(data) + chunk - 1) / chunk
	buf := make([]byte, 0, len(data)+n*(ipv6HeaderLen+ip6FragHdrLen))
	frags := make([][]byte, 0, n)
	for start := 0; start < len(data); start += chunk {
		stop := min(start+chunk, len(data))
		m := more || stop < len(data)
		at := len(buf)
		buf = append(buf, pkt[:ipv6HeaderLen]...)
		h := buf[at:]
		binary.BigEndian.PutUint16(h[4:], uint16(ip6FragHdrLen+stop-start))
		h[6] = ip6Fragment
		field := uint16(offset + start)
		if m {
			field |= 1
		}
		buf = append(buf, next, 0, byte(field>>8), byte(field))
		buf = binary.BigEndian.AppendUint32(buf, id)
		buf = append(buf, data[start:stop]...)
		frags = append(frags, buf[at:])
	}
	return frags
}

// splitMTU returns the MTU to fragment pkt, a packet from the stack, to:
// that of the path towards its destination, when the packet is an IPv6
// one that does not fit it. It returns 0 for every other packet. TCP
// segments are left alone, as their MSS already fits the path
// (mssClamp); UDP datagrams and packets tunwall builds are what remain.
func (e *endpoint) splitMTU(pkt *stack.PacketBuffer) int {
	if e.pathMTU == nil || pkt.NetworkProtocolNumber != header.IPv6ProtocolNumber ||
		pkt.GSOOptions.Type != stack.GSONone || pkt.TransportProtocolNumber == header.TCPProtocolNumber ||
		pkt.Size() <= header.IPv6MinimumMTU {
		return 0
	}
	h := pkt.NetworkHeader().Slice()
	if len(h) < ipv6HeaderLen {
		return 0
	}
	return e.tooBig(h[24:40], h[8:24], pkt.Size())
}

// tooBig returns the MTU of the path towards dst, for a packet from src,
// if a packet of size bytes does not fit it; else 0.
func (e *endpoint) tooBig(dst, src []byte, size int) int {
	if mtu := e.pathMTU(dst, src); mtu > 0 && size > mtu {
		return mtu
	}
	return 0
}

// mayFragment clears DF in pkt, a datagram (not a TCP segment) from the
// stack, when it is an IPv4 one that does not fit the path towards its
// destination, so that the host fragments it instead of refusing it with
// an error addressed to the server. The stack sets DF on its datagrams;
// TCP segments fit the path by their MSS (mssClamp).
func (e *endpoint) mayFragment(pkt *stack.PacketBuffer) {
	if e.pathMTU == nil || pkt.NetworkProtocolNumber != header.IPv4ProtocolNumber ||
		pkt.TransportProtocolNumber == header.TCPProtocolNumber || pkt.Size() <= pathMTUMin4 {
		return
	}
	h := header.IPv4(pkt.NetworkHeader().Slice())
	if len(h) < header.IPv4MinimumSize || h.Flags()&header.IPv4FlagDontFragment == 0 ||
		e.tooBig(h[16:20], h[12:16], pkt.Size()) == 0 {
		return
	}
	h.SetFlagsFragmentOffset(h.Flags()&^header.IPv4FlagDontFragment, h.FragmentOffset())
	h.SetChecksum(0)
	h.SetChecksum(^h.CalculateChecksum())
}

// rawSplitMTU is splitMTU for a packet built outside the stack.
func (e *endpoint) rawSplitMTU(pkt []byte) int {
	if e.pathMTU == nil || len(pkt) <= header.IPv6MinimumMTU || pkt[0]>>4 != 6 || pkt[6] == protoTCP {
		return 0
	}
	return e.tooBig(pkt[24:40], pkt[8:24], len(pkt))
}

// fragments returns pkt split to fit mtu, counting it, or nil if it
// cannot be split (and goes whole).
func (e *endpoint) fragments(pkt []byte, mtu int) [][]byte {
	frags := fragmentIPv6(pkt, mtu, e.fragIDs.Add(1))
	if frags != nil {
		e.stats.Fragmented.Add(1)
	}
	return frags
}
