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
	h.send(tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:80"))
	synAck := h.nextTCP(t)
	h.send(tcpAck(t, "10.0.0.2:5000", "192.0.2.1:80", 1001, synAck.Seq+1))
	h.send(tcpData(t, "10.0.0.2:5000", "192.0.2.1:80", 1001, synAck.Seq+1, []byte("hello")))
	upPeer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(upPeer, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
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
