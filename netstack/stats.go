package netstack

import (
	"encoding/binary"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Stats are the gateway's counters. All fields are safe to read at any time.
type Stats struct {
	PacketsIn   atomic.Uint64 // well-formed packets read from the device
	PacketsOut  atomic.Uint64 // packets written to the device
	ReadErrors  atomic.Uint64 // device reads that failed (bad offload header, ...)
	WriteErrors atomic.Uint64 // packets the device refused

	// Malformed packets from the device, dropped before the stack sees them.
	Truncated   atomic.Uint64 // shorter than their IP header
	BadVersion  atomic.Uint64 // IP version neither 4 nor 6
	BadLength   atomic.Uint64 // header or total length inconsistent with the packet
	Fragments   atomic.Uint64 // fragmented ICMP (echo is only handled whole)
	BadChecksum atomic.Uint64 // IP, TCP, UDP or ICMP checksum wrong

	StrayTCP   atomic.Uint64 // non-SYN segments for flows that do not exist
	NotUnicast atomic.Uint64 // to a multicast group or the limited broadcast address
	MSSClamped atomic.Uint64 // client SYNs whose MSS was lowered to the path towards the client
	Fragmented atomic.Uint64 // IPv6 packets to a client split into fragments to fit the path towards it

	// Flows refused by limits.
	RefusedFlows       atomic.Uint64 // limits.max_flows
	RefusedPendingTCP  atomic.Uint64 // limits.max_pending_tcp
	RefusedPerSource   atomic.Uint64 // limits.max_flows_per_source
	RefusedUDPSessions atomic.Uint64 // limits.max_udp_sessions
	BlockedNames       atomic.Uint64 // DNS queries answered by tunwall for blocked names

	DialErrors    atomic.Uint64 // allowed flows whose upstream could not be reached
	FailedSYNs    atomic.Uint64 // retransmitted SYNs of such flows, answered with RST again (failedSYN)
	SocketsReused atomic.Uint64 // upstream TCP connections made on a socket an ended flow left (spare.go)

	// App identity of flows from this machine.
	OwnerLookups atomic.Uint64 // owners found
	OwnerMisses  atomic.Uint64 // no owning socket found (it closed, or a raw socket)
	OwnerSkipped atomic.Uint64 // not looked up: too many lookups at once
}

// Malformed returns the total of packets dropped as malformed.
func (s *Stats) Malformed() uint64 {
	return s.Truncated.Load() + s.BadVersion.Load() + s.BadLength.Load() + s.BadChecksum.Load()
}

// check validates the IP header of a packet read from the device and returns
// its network protocol. Malformed packets are counted and refused.
func (s *Stats) check(pkt []byte) (tcpip.NetworkProtocolNumber, bool) {
	if len(pkt) == 0 {
		s.Truncated.Add(1)
		return 0, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < header.IPv4MinimumSize {
			s.Truncated.Add(1)
			return 0, false
		}
		ihl := int(pkt[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:]))
		if ihl < header.IPv4MinimumSize || ihl > len(pkt) || total < ihl || total > len(pkt) {
			s.BadLength.Add(1)
			return 0, false
		}
		return header.IPv4ProtocolNumber, true
	case 6:
		if len(pkt) < header.IPv6MinimumSize {
			s.Truncated.Add(1)
			return 0, false
		}
		if header.IPv6MinimumSize+int(binary.BigEndian.Uint16(pkt[4:])) > len(pkt) {
			s.BadLength.Add(1)
			return 0, false
		}
		return header.IPv6ProtocolNumber, true
	}
	s.BadVersion.Add(1)
	return 0, false
}
