package netstack

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/tunwall/tunwall/policy"
)

// BenchmarkTCPFlow measures one whole allowed TCP flow in tunwall's own
// code and gVisor, without a kernel: SYN, upstream dial (an in-memory
// pipe that echoes), handshake, a 1-byte request and response, client RST.
// It is the user-space part of the connection-rate benchmark.
func BenchmarkTCPFlow(b *testing.B) {
	dial := func(context.Context, string, string) (net.Conn, error) {
		c, s := net.Pipe()
		go func() {
			buf := make([]byte, 1)
			if _, err := io.ReadFull(s, buf); err == nil {
				s.Write(buf)
			}
			io.Copy(io.Discard, s)
			s.Close()
		}()
		return c, nil
	}
	t := &testing.T{}
	h := newHarness(t, dial, nil, policy.Limits{})
	b.Cleanup(func() { h.gw.Close(); h.dev.Close(); h.gw.Wait() })
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		port := 1024 + i%60000
		src := netipPort("10.0.0.2", port)
		h.send(tcpSyn(b, src, "192.0.2.1:80"))
		synAck := h.nextTCP(b)
		for !synAck.SYN || int(synAck.DstPort) != port { // skip what earlier flows' ends sent
			synAck = h.nextTCP(b)
		}
		h.send(tcpData(b, src, "192.0.2.1:80", 1001, synAck.Seq+1, []byte{'x'}))
		for {
			seg := h.nextTCP(b)
			if len(seg.Payload) == 1 && int(seg.DstPort) == port {
				h.send(tcpRST(b, src, "192.0.2.1:80", 1002, seg.Seq+1))
				break
			}
		}
	}
}
