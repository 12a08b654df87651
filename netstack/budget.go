package netstack

import (
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// The stack's TCP buffers hold what a relayed flow's receiver has not yet
// taken: data sent to the client and not yet acknowledged, data from the
// client not yet written upstream. The stack grows each flow's buffers to
// its path (up to tcpBufMax each way), so a flow whose receiver stops
// reading after a fast start can hold megabytes. limits.buffer_memory is
// what all relayed TCP flows may hold together: each flow's share, per
// direction, is the budget over twice the number of flows, taken down to
// a power of two between bufShareMin and tcpBufMax.
const bufShareMin = 16 << 10

// budgetMemoryMin is the smallest limits.buffer_memory the automatic
// choice (an eighth of the machine's memory) takes.
const budgetMemoryMin = 64 << 20

// autoBufferMemory is limits.buffer_memory when the configuration leaves
// it to tunwall: an eighth of the machine's memory (mem bytes; 0 if not
// known), at least budgetMemoryMin; 1 GiB when the memory is not known.
func autoBufferMemory(mem int64) int64 {
	if mem <= 0 {
		return 1 << 30
	}
	return max(mem/8, budgetMemoryMin)
}

// bufferBudget keeps the stack's largest TCP buffer size at the share of
// the flows relayed now. The stack reads that size each time it grows a
// buffer, so a change holds for every flow at once; buffers already larger
// are cut down to it when the share falls.
type bufferBudget struct {
	stack *stack.Stack
	limit int64
	log   zerolog.Logger
	flows atomic.Int64
	share atomic.Int64 // the largest buffer, per direction, in force

	mu sync.Mutex // serialises changes of share
}

// newBufferBudget sets the stack's TCP buffer ranges, as for one flow.
func newBufferBudget(s *stack.Stack, limit int64, log zerolog.Logger) (*bufferBudget, error) {
	b := &bufferBudget{stack: s, limit: limit, log: log}
	if err := b.apply(shareOf(limit, 1)); err != nil {
		return nil, err
	}
	return b, nil
}

// shareOf is the largest buffer, per direction, each of n flows may have
// under limit.
func shareOf(limit, n int64) int64 {
	fair := limit / (2 * max(n, 1))
	s := int64(bufShareMin)
	for s < tcpBufMax && 2*s <= fair {
		s *= 2
	}
	return s
}

// join counts in a relayed flow whose endpoint is ep, and brings ep's
// buffers within the share: the stack gives an endpoint made from a SYN
// the forwarder's receive buffer, whatever the share.
func (b *bufferBudget) join(ep tcpip.Endpoint) {
	b.adjust(b.flows.Add(1))
	if ep, ok := ep.(*tcp.Endpoint); ok {
		cutTo(ep, b.share.Load())
	}
}

// leave counts a relayed flow out.
func (b *bufferBudget) leave() { b.adjust(b.flows.Add(-1)) }

// adjust changes the share when n flows no longer fit it: at once when it
// is too large for them, and when it is too small even for twice as many,
// to what twice as many would get, so that a count going up and down
// around a step does not resize every flow each time.
func (b *bufferBudget) adjust(n int64) {
	if !b.needs(n, b.share.Load()) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n = b.flows.Load()
	old := b.share.Load()
	if !b.needs(n, old) {
		return
	}
	s := shareOf(b.limit, n)
	if s > old {
		s = shareOf(b.limit, 2*n)
	}
	if err := b.apply(s); err != nil {
		b.log.Error().Err(err).Msg("flow buffers not resized")
		return
	}
	if s < old {
		b.cut(s)
	}
	b.log.Info().Str("event", "buffers").Int64("flows", n).Int64("max_buffer", s).Int64("budget", b.limit).
		Msg("flow buffers resized")
}

// needs reports whether n flows need a share other than s.
func (b *bufferBudget) needs(n, s int64) bool {
	return shareOf(b.limit, n) < s || shareOf(b.limit, 2*n) > s
}

// apply makes s the stack's largest TCP buffer each way (and its starting
// size, when that is smaller).
func (b *bufferBudget) apply(s int64) error {
	start := min(tcpBufDefault, int(s))
	for _, o := range []tcpip.SettableTransportProtocolOption{
		&tcpip.TCPSendBufferSizeRangeOption{Min: tcpBufMin, Default: start, Max: int(s)},
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: tcpBufMin, Default: start, Max: int(s)},
	} {
		if err := b.stack.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return errorf("tcp buffer sizes: %s", err)
		}
	}
	b.share.Store(s)
	return nil
}

// cut brings every TCP endpoint's buffers down to s. The stack goes on
// tuning them, now up to s; what they already hold beyond it stays until
// its receiver takes it.
func (b *bufferBudget) cut(s int64) {
	for _, e := range b.stack.RegisteredEndpoints() {
		if ep, ok := e.(*tcp.Endpoint); ok {
			cutTo(ep, s)
		}
	}
}

// cutTo brings ep's buffers down to s, if they are larger.
func cutTo(ep *tcp.Endpoint, s int64) {
	so := ep.SocketOptions()
	if so.GetSendBufferSize() > s {
		so.SetSendBufferSize(s, false)
	}
	if so.GetReceiveBufferSize() > s {
		so.SetReceiveBufferSize(s, false)
	}
}

// endpointsAndBuffers counts the stack's TCP and UDP endpoints and says
// what its TCP endpoints may hold now: the sizes of their send and
// receive buffers.
func endpointsAndBuffers(s *stack.Stack) (endpoints int, buffers int64) {
	eps := s.RegisteredEndpoints()
	for _, e := range eps {
		if ep, ok := e.(*tcp.Endpoint); ok {
			so := ep.SocketOptions()
			buffers += so.GetSendBufferSize() + so.GetReceiveBufferSize()
		}
	}
	return len(eps), buffers
}
