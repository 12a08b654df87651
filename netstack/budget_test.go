package netstack

import (
	"testing"

	"github.com/rs/zerolog"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// Each of n flows gets the budget over 2n per direction, down to a power
// of two, within bufShareMin and tcpBufMax.
func TestShareOf(t *testing.T) {
	for _, c := range []struct {
		limit, n, want int64
	}{
		{1 << 30, 0, tcpBufMax},
		{1 << 30, 1, tcpBufMax},
		{1 << 30, 64, tcpBufMax},   // 64 flows * 2 * 8 MiB = 1 GiB
		{1 << 30, 65, 4 << 20},     // a little less than 8 MiB each
		{1 << 30, 1000, 512 << 10}, // 536 KB each
		{1 << 30, 65536, bufShareMin},
		{4 << 20, 16, 128 << 10},
		{4 << 20, 17, 64 << 10},
	} {
		if got := shareOf(c.limit, c.n); got != c.want {
			t.Errorf("shareOf(%d, %d) = %d, want %d", c.limit, c.n, got, c.want)
		}
	}
	if got := autoBufferMemory(24 << 30); got != 3<<30 {
		t.Errorf("autoBufferMemory(24 GiB) = %d, want an eighth", got)
	}
	if got := autoBufferMemory(256 << 20); got != budgetMemoryMin {
		t.Errorf("autoBufferMemory(256 MiB) = %d, want the minimum %d", got, budgetMemoryMin)
	}
}

// The share follows the number of flows, falling at once and rising only
// once twice as many would fit; the stack's largest buffer goes with it,
// and a fall cuts the buffers of the endpoints there are.
func TestBufferBudgetFollowsFlows(t *testing.T) {
	s, lo := loopbackStack(t)
	a, _, b, _ := connectPair(t, s, lo)
	budget, err := newBufferBudget(s, 1<<20, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range []tcpip.Endpoint{a, b} { // grown as far as they may
		ep.SocketOptions().SetSendBufferSize(512<<10, false)
		ep.SocketOptions().SetReceiveBufferSize(512<<10, false)
	}
	check := func(step string, want int64) {
		t.Helper()
		if got := budget.share.Load(); got != want {
			t.Fatalf("%s: share %d, want %d", step, got, want)
		}
		var send tcpip.TCPSendBufferSizeRangeOption
		var recv tcpip.TCPReceiveBufferSizeRangeOption
		s.TransportProtocolOption(tcp.ProtocolNumber, &send)
		s.TransportProtocolOption(tcp.ProtocolNumber, &recv)
		if int64(send.Max) != want || int64(recv.Max) != want || int64(send.Default) > want {
			t.Errorf("%s: stack buffer sizes %+v / %+v, want at most %d", step, send, recv, want)
		}
		for _, ep := range []tcpip.Endpoint{a, b} {
			if so := ep.SocketOptions(); so.GetSendBufferSize() > want || so.GetReceiveBufferSize() > want {
				t.Errorf("%s: an endpoint's buffers are %d / %d, want at most %d", step, so.GetSendBufferSize(), so.GetReceiveBufferSize(), want)
			}
		}
	}
	check("no flow", 512<<10)
	budget.join(nil)
	check("1 flow", 512<<10)
	budget.join(nil)
	check("2 flows", 256<<10)
	budget.join(nil)
	budget.join(nil)
	check("4 flows", 128<<10)
	budget.leave()
	budget.leave()
	check("2 flows again: 4 would not fit more", 128<<10)
	budget.leave()
	check("1 flow: 2 would fit 256 KiB", 256<<10)
	budget.join(nil)
	check("2 flows", 256<<10)
	budget.join(nil)
	check("3 flows", 128<<10)
	// An endpoint made from a SYN starts with the forwarder's receive
	// buffer; it joins within the share though the share stays.
	a.SocketOptions().SetReceiveBufferSize(1<<20, false)
	budget.join(a)
	check("4 flows, the last with a large buffer", 128<<10)
}
