package netstack

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

const nicID tcpip.NICID = 1

// TCP buffer sizes for terminated flows: modest defaults, room to grow to
// a few megabytes on fast paths (receive buffer auto-tuning is on). The
// largest size goes down under limits.buffer_memory; bufferBudget sets
// the stack's ranges.
const (
	tcpBufMin     = 4 << 10
	tcpBufDefault = 256 << 10
	tcpBufMax     = 8 << 20
)

// newStack builds a gVisor stack with IPv4, IPv6, TCP and UDP on one NIC
// that accepts packets for any address (promiscuous) and answers from any
// address (spoofing), with default routes for both families.
func newStack(ep stack.LinkEndpoint) (*stack.Stack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	fail := func(what string, err tcpip.Error) error {
		s.Close()
		return errorf("%s: %s", what, err)
	}
	opts := []tcpip.SettableTransportProtocolOption{
		ptr(tcpip.TCPSACKEnabled(true)),
		ptr(tcpip.TCPModerateReceiveBufferOption(true)),
		// No TIME_WAIT. A flow whose server closed first is closed first on
		// the client's side too, and the stack would hold its 4-tuple for a
		// minute: a client opening its next connection from the same port
		// (as a router lets it) would get no answer, the stack only hands
		// such a SYN to a listener, and there is none. Held endpoints would
		// also take memory that no limit counts.
		ptr(tcpip.TCPTimeWaitTimeoutOption(0)),
	}
	for _, o := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return nil, fail("tcp option", err)
		}
	}
	if err := s.CreateNIC(nicID, ep); err != nil {
		return nil, fail("create NIC", err)
	}
	if err := s.SetPromiscuousMode(nicID, true); err != nil {
		return nil, fail("promiscuous mode", err)
	}
	if err := s.SetSpoofing(nicID, true); err != nil {
		return nil, fail("spoofing", err)
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	return s, nil
}

func ptr[T any](v T) *T { return &v }
