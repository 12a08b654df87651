package netstack

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tunwall/tunwall/policy"
)

// TestFlowTable: a live flow shows with its rule and byte counts, and
// CloseFlow ends it (close reason "closed").
func TestFlowTable(t *testing.T) {
	up, upPeer := net.Pipe()
	defer upPeer.Close()
	h := newHarness(t, func(context.Context, string, string) (net.Conn, error) { return up, nil }, nil, policy.Limits{})
	openWeb(t, h, upPeer)
	var fl []FlowInfo
	waitFor(t, func() bool { fl = h.gw.Flows(); return len(fl) == 1 && fl[0].BytesOut == 5 })
	f := fl[0]
	if f.Flow.Proto != policy.TCP || f.Flow.Src.String() != "10.0.0.2:5000" || f.Flow.Dst.String() != "192.0.2.1:80" ||
		f.Rule != "web" || !f.Enforced || f.BytesIn != 0 || f.Start.IsZero() || f.Idle < 0 || f.Idle > time.Minute {
		t.Errorf("flow %+v", f)
	}
	if !h.gw.CloseFlow(f.ID) {
		t.Fatal("CloseFlow of a live flow returned false")
	}
	waitFor(t, func() bool { return len(h.ev.closeList()) == 1 })
	if r := h.ev.closeList()[0].Reason; r != reasonClosed {
		t.Errorf("close reason %q, want %q", r, reasonClosed)
	}
	waitFor(t, func() bool { return len(h.gw.Flows()) == 0 })
	if h.gw.CloseFlow(f.ID) {
		t.Error("CloseFlow of a gone flow returned true")
	}
}

// openWeb opens the flow 10.0.0.2:5000 -> 192.0.2.1:80 (rule "web"), whose
// upstream end is upPeer, and sends "hello" through it (client sequence
// numbers from 1001: the next is 1006).
func openWeb(t *testing.T, h *harness, upPeer net.Conn) {
	t.Helper()
	h.send(tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:80"))
	synAck := h.nextTCP(t)
	h.send(tcpAck(t, "10.0.0.2:5000", "192.0.2.1:80", 1001, synAck.Seq+1))
	h.send(tcpData(t, "10.0.0.2:5000", "192.0.2.1:80", 1001, synAck.Seq+1, []byte("hello")))
	upPeer.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(upPeer, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
}

// TestDeniedRing: refusals that differ only in source port are one entry
// with a count, retries of a remembered refusal count too, newest first,
// and the ring stays bounded.
func TestDeniedRing(t *testing.T) {
	h := newHarness(t, nil, nil, policy.Limits{})
	for _, port := range []int{4000, 4001, 4002, 4002} { // the last is a retry
		h.send(tcpSyn(t, fmt.Sprintf("10.0.0.2:%d", port), "192.0.2.1:81"))
		h.nextTCP(t)
	}
	h.send(udpPacket(t, "10.0.0.3:5000", "192.0.2.1:81", []byte("x")))
	h.next()
	d := h.gw.Denied()
	if len(d) != 2 {
		t.Fatalf("%d entries: %+v", len(d), d)
	}
	if d[0].Proto != policy.UDP || d[0].Count != 1 {
		t.Errorf("newest %+v, want the UDP refusal", d[0])
	}
	p, hits, byDef := h.gw.RuleHits()
	if p == nil || hits[1] != 4 || byDef != 0 { // rule #2 "refuse": three fresh TCP verdicts and the UDP one; the retry is not one
		t.Errorf("rule hits %v, default %d", hits, byDef)
	}
	if tcp := d[1]; tcp.Proto != policy.TCP || tcp.Src.String() != "10.0.0.2" || tcp.Dst.String() != "192.0.2.1:81" ||
		tcp.Rule != "refuse" || tcp.Action != policy.Reject || tcp.Count != 4 || tcp.Last.Before(tcp.First) {
		t.Errorf("tcp entry %+v, want refuse x4", tcp)
	}
	var r deniedRing
	for i := range maxDenied + 50 {
		f := policy.Flow{Proto: policy.TCP, Src: netipPortOf(t, fmt.Sprintf("10.1.%d.%d:1", i/256, i%256)), Dst: netipPortOf(t, "192.0.2.1:81")}
		r.note(&f, policy.Verdict{Rule: "x"}, time.Unix(int64(i), 0))
	}
	if len(r.entries) != maxDenied {
		t.Errorf("%d entries, want %d", len(r.entries), maxDenied)
	}
}

func netipPortOf(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	return netip.MustParseAddrPort(s)
}

// TestMetrics: verdicts are counted by proto and action, refusals and
// retries as policy drops, relayed bytes of live and ended flows add up
// and never go down, and every decision lands in the latency histogram.
func TestMetrics(t *testing.T) {
	up, upPeer := net.Pipe()
	h := newHarness(t, func(context.Context, string, string) (net.Conn, error) { return up, nil }, nil, policy.Limits{})
	for _, port := range []int{4000, 4000} { // a refusal and its retry
		h.send(tcpSyn(t, fmt.Sprintf("10.0.0.2:%d", port), "192.0.2.1:81"))
		h.nextTCP(t)
	}
	openWeb(t, h, upPeer)
	var m Metrics
	waitFor(t, func() bool { m = h.gw.Metrics(); return m.Bytes.Out == 5 })
	tcp, allow, reject := protoIndex(policy.TCP), int(policy.Allow), int(policy.Reject)
	if m.Active[tcp] != 1 || m.Judged[tcp][allow] != 1 || m.Judged[tcp][reject] != 1 || m.DropsPolicy != 2 {
		t.Errorf("active %v, judged %v, policy drops %d; want 1 live TCP flow, 1 allowed, 1 rejected, 2 drops", m.Active, m.Judged, m.DropsPolicy)
	}
	var decisions uint64
	for _, n := range m.Decisions {
		decisions += n
	}
	if decisions != 2 || m.DecisionSum <= 0 {
		t.Errorf("%d decisions taking %v in the histogram, want 2", decisions, m.DecisionSum)
	}
	if _, err := upPeer.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return h.gw.Metrics().Bytes.In == 4 })
	h.send(tcpRST(t, "10.0.0.2:5000", "192.0.2.1:80", 1006, 0))
	waitFor(t, func() bool { return len(h.ev.closeList()) == 1 && len(h.gw.Flows()) == 0 })
	m = h.gw.Metrics()
	if m.Active[tcp] != 0 || m.Bytes.Out != 5 || m.Bytes.In != 4 {
		t.Errorf("after the close: active %v, bytes %+v; want none live, 5 out and 4 in kept", m.Active, m.Bytes)
	}
}

// TestCapture: a denied capture gets the refused SYN and its retry as
// sent; a flow capture gets that flow's packets both ways and none of
// another flow's, and is done when the flow ends.
func TestCapture(t *testing.T) {
	up, upPeer := net.Pipe()
	h := newHarness(t, func(context.Context, string, string) (net.Conn, error) { return up, nil }, nil, policy.Limits{})
	if _, err := h.gw.CaptureFlow(99, 0); err != ErrNoFlow {
		t.Errorf("capture of no flow: %v", err)
	}
	denied := h.gw.CaptureDenied(0)
	syn := tcpSyn(t, "10.0.0.2:4000", "192.0.2.1:81")
	for range 2 {
		h.send(syn)
		h.nextTCP(t)
	}
	for i := range 2 {
		select {
		case p := <-denied.Packets():
			if string(p.Data) != string(syn) || p.Len != len(syn) || p.At.IsZero() {
				t.Errorf("denied packet %d: % x, want the SYN % x", i, p.Data, syn)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("denied packet %d not captured", i)
		}
	}
	denied.Close()

	h.send(tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:80"))
	synAck := h.nextTCP(t)
	h.send(tcpAck(t, "10.0.0.2:5000", "192.0.2.1:80", 1001, synAck.Seq+1))
	var fl []FlowInfo
	waitFor(t, func() bool { fl = h.gw.Flows(); return len(fl) == 1 })
	c, err := h.gw.CaptureFlow(fl[0].ID, 48) // headers and a few payload bytes
	if err != nil {
		t.Fatal(err)
	}
	h.send(syn) // another flow's packet: not captured
	h.nextTCP(t)
	data := tcpData(t, "10.0.0.2:5000", "192.0.2.1:80", 1001, synAck.Seq+1, []byte("hello, capture"))
	h.send(data)
	upPeer.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(upPeer, make([]byte, 14)); err != nil {
		t.Fatal(err)
	}
	upPeer.Write([]byte("back"))
	h.send(tcpRST(t, "10.0.0.2:5000", "192.0.2.1:80", 1015, 0))
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("flow capture not done after the flow ended")
	}
	var in, out int
	for len(c.Packets()) > 0 {
		p := <-c.Packets()
		proto, src, dst, ok := tupleOf(p.Data)
		switch {
		case !ok || proto != policy.TCP || len(p.Data) > 48:
			t.Errorf("captured % x", p.Data)
		case src.String() == "10.0.0.2:5000" && dst.String() == "192.0.2.1:80":
			in++
			if p.Len == len(data) && string(p.Data) != string(data[:48]) {
				t.Errorf("data packet cut to % x, want % x", p.Data, data[:48])
			}
		case src.String() == "192.0.2.1:80" && dst.String() == "10.0.0.2:5000":
			out++
		default:
			t.Errorf("packet of another flow captured: %v -> %v", src, dst)
		}
	}
	if in < 2 || out < 1 { // the data and the RST in; the reply out
		t.Errorf("captured %d packets in and %d out", in, out)
	}
	if cur := h.gw.ep.taps.Load(); cur != nil {
		t.Errorf("captures left running: %+v", cur)
	}
}
