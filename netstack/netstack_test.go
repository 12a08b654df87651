package netstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/tunwall/tunwall/policy"
	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestTCPRejectSendsRST(t *testing.T) {
	h := newHarness(t, nil, nil, policy.Limits{})
	for _, tc := range []struct{ src, dst string }{{"10.0.0.2:5000", "192.0.2.1:81"}, {"[fd00::2]:5000", "[2001:db8::1]:81"}} {
		h.send(tcpSyn(t, tc.src, tc.dst))
		tcp, ok := h.next().Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok || !tcp.RST || tcp.SrcPort != 81 || tcp.DstPort != 5000 || tcp.Ack != 1001 {
			t.Fatalf("%s: want RST answering the SYN, got %+v", tc.dst, tcp)
		}
	}
	if len(h.ev.verdictList()) != 2 || h.ev.verdictList()[0].Rule != "refuse" || h.ev.verdictList()[0].Action != policy.Reject {
		t.Errorf("verdicts = %+v", h.ev.verdictList())
	}
}

func TestTCPDenyIsSilent(t *testing.T) {
	h := newHarness(t, nil, nil, policy.Limits{})
	h.send(tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:22"))
	h.send(tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:22")) // a retransmission: judged once
	h.nothingBefore("10.0.0.2")
	if n := len(h.ev.verdictList()); n != 2 || h.ev.verdictList()[0].Action != policy.Deny || h.ev.verdictList()[0].Rule != policy.DefaultRule {
		t.Errorf("want one deny verdict (plus the marker's), got %+v", h.ev.verdictList())
	}
}

func TestTCPStraySegmentsDropped(t *testing.T) {
	h := newHarness(t, nil, nil, policy.Limits{})
	ack := tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:80")
	ack[33] = 0x10 // flags: ACK only (IPv4 header 20 bytes + 13)
	fixChecksums(ack)
	h.send(ack)
	h.nothingBefore("10.0.0.2")
	if h.gw.Stats().StrayTCP.Load() != 1 {
		t.Errorf("stray segment not counted")
	}
}

// TestTCPAllowDialsFirst: the SYN-ACK is sent only after the upstream dial
// has succeeded, and data is relayed both ways.
func TestTCPAllowDialsFirst(t *testing.T) {
	release := make(chan struct{})
	dialed := make(chan string, 1)
	up, upPeer := net.Pipe()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialed <- network + " " + addr
		<-release
		return up, nil
	}
	h := newHarness(t, dial, nil, policy.Limits{})
	h.send(tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:80"))
	if got := <-dialed; got != "tcp 192.0.2.1:80" {
		t.Fatalf("dialed %q", got)
	}
	h.nothingBefore("10.0.0.2") // no SYN-ACK while the dial is pending
	close(release)
	tcp := h.next().Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !tcp.SYN || !tcp.ACK || tcp.Ack != 1001 {
		t.Fatalf("want SYN-ACK after the dial, got %+v", tcp)
	}
	// Complete the handshake and send data: it must reach upstream.
	h.send(tcpAck(t, "10.0.0.2:5000", "192.0.2.1:80", 1001, tcp.Seq+1))
	h.send(tcpData(t, "10.0.0.2:5000", "192.0.2.1:80", 1001, tcp.Seq+1, []byte("GET /")))
	buf := make([]byte, 16)
	upPeer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := io.ReadFull(upPeer, buf[:5]); err != nil || string(buf[:n]) != "GET /" {
		t.Fatalf("upstream got %q, %v", buf[:n], err)
	}
	upPeer.Close()
}

// closingDial returns a dialer whose upstream connections (TCP, on
// loopback) close at once, as a server does that has nothing (more) to say.
func closingDial(t *testing.T) DialFunc {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go closeEach(ln)
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, ln.Addr().String())
	}
}

// closeEach accepts connections on ln and closes each at once, until ln
// is closed.
func closeEach(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// serverClosesFirst runs a flow from client to 192.0.2.1:80 whose server
// closes first: the gateway's FIN reaches the client before the client's
// own, and the gateway acknowledges the client's FIN last.
func serverClosesFirst(t *testing.T, h *harness, client string) {
	t.Helper()
	const server = "192.0.2.1:80"
	h.send(tcpSyn(t, client, server))
	synAck := h.nextTCP(t)
	if !synAck.SYN || !synAck.ACK {
		t.Fatalf("want SYN-ACK, got %+v", synAck)
	}
	h.send(tcpAck(t, client, server, 1001, synAck.Seq+1))
	if fin := h.nextTCP(t); !fin.FIN || fin.Seq != synAck.Seq+1 {
		t.Fatalf("want the gateway's FIN once the server closed, got %+v", fin)
	}
	h.send(tcpFinAck(t, client, server, 1001, synAck.Seq+2))
	if ack := h.nextTCP(t); !ack.ACK || ack.FIN || ack.RST || ack.Ack != 1002 {
		t.Fatalf("want the ACK of the client's FIN, got %+v", ack)
	}
}

// TestTCPNoTimeWait: a flow whose server closed first leaves no endpoint
// behind in the stack once it is over.
func TestTCPNoTimeWait(t *testing.T) {
	h := newHarness(t, closingDial(t), nil, policy.Limits{})
	serverClosesFirst(t, h, "10.0.0.2:5000")
	waitFor(t, func() bool { return h.gw.Metrics().Endpoints == 0 })
}

// TestTCPSYNRetiresTimeWait: a SYN for the 4-tuple of a connection in
// TIME_WAIT opens a new connection. The stack itself would hand it to a
// listener only, and there is none; the wait is set to a minute here so
// that it cannot run out during the test.
func TestTCPSYNRetiresTimeWait(t *testing.T) {
	h := newHarness(t, closingDial(t), nil, policy.Limits{})
	minute := tcpip.TCPTimeWaitTimeoutOption(time.Minute)
	if err := h.gw.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &minute); err != nil {
		t.Fatal(err)
	}
	serverClosesFirst(t, h, "10.0.0.2:5000")
	if n := h.gw.Metrics().Endpoints; n != 1 {
		t.Fatalf("%d endpoints after the flow, want the one in TIME_WAIT", n)
	}
	h.send(tcpSynSeq(t, "10.0.0.2:5000", "192.0.2.1:80", 90000))
	seg := h.nextTCP(t)
	if seg.RST { // the old connection's, ignored by the client's new one
		seg = h.nextTCP(t)
	}
	if !seg.SYN || !seg.ACK || seg.Ack != 90001 {
		t.Fatalf("want a SYN-ACK for the new connection, got %+v", seg)
	}
	// The old flow ended as it did, whether its relay had read the
	// client's FIN before the SYN came or not.
	waitFor(t, func() bool { return len(h.ev.closeList()) >= 1 })
	if st := h.ev.closeList()[0]; st.Reason != reasonFIN {
		t.Errorf("the first flow ended with %q, want %q", st.Reason, reasonFIN)
	}
}

// TestTCPSYNAfterClientReset: a client that resets a connection and at
// once opens the next from the same port gets its new connection, also
// when its RST and SYN are read together, before the stack has taken in
// the RST. Left to the stack, the old endpoint would close on the RST and
// answer the SYN, which no longer finds it, with a RST.
func TestTCPSYNAfterClientReset(t *testing.T) {
	h := newHarness(t, pipeDial(t), nil, policy.Limits{})
	const client, server = "10.0.0.2:5000", "192.0.2.1:80"
	h.send(tcpSynSeq(t, client, server, 1000))
	var last uint64
	for i := range uint32(20) {
		synAck := h.nextTCP(t)
		if !synAck.SYN || !synAck.ACK || synAck.Ack != 1001+i*100000 {
			t.Fatalf("connection %d: want the SYN-ACK of its SYN, got %+v", i, synAck)
		}
		seq := synAck.Ack
		h.send(tcpAck(t, client, server, seq, synAck.Seq+1))
		// The flow's relay runs once its handshake is done (the flow
		// before may still be live).
		waitFor(t, func() bool {
			for _, lf := range h.gw.flows.live() {
				if lf.id > last {
					last = lf.id
					return true
				}
			}
			return false
		})
		h.sendBatch(tcpRST(t, client, server, seq, synAck.Seq+1), tcpSynSeq(t, client, server, 1000+(i+1)*100000))
	}
	if seg := h.nextTCP(t); !seg.SYN || !seg.ACK {
		t.Fatalf("the last connection: want its SYN-ACK, got %+v", seg)
	}
	waitFor(t, func() bool { return len(h.ev.closeList()) == 20 })
	for i, st := range h.ev.closeList() {
		if st.Reason != reasonRST {
			t.Errorf("flow %d ended with %q, want %q", i, st.Reason, reasonRST)
		}
	}
}

func TestTCPDialFailureRSTs(t *testing.T) {
	h := newHarness(t, nil, nil, policy.Limits{})
	h.send(tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:80"))
	tcp := h.next().Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !tcp.RST {
		t.Fatalf("want RST when upstream is unreachable, got %+v", tcp)
	}
	waitFor(t, func() bool { return len(h.ev.closeList()) == 1 })
	if st := h.ev.closeList()[0]; st.Reason != reasonRST || st.Err == nil {
		t.Errorf("close event %+v, want reason rst with the dial error", st)
	}
	if h.gw.Stats().DialErrors.Load() != 1 {
		t.Error("dial error not counted")
	}
}

// TestTCPSYNAfterResetInHandshake: a client whose ACK ending the
// handshake, RST and next SYN from the same port are read together gets
// its new connection, although the flow's accept has not returned when
// the SYN comes. A retransmission of a flow's own SYN during its
// handshake is answered by its endpoint at once, not held.
func TestTCPSYNAfterResetInHandshake(t *testing.T) {
	h := newHarness(t, pipeDial(t), nil, policy.Limits{})
	const client, server = "10.0.0.2:5000", "192.0.2.1:80"
	h.send(tcpSynSeq(t, client, server, 1000))
	for i := range uint32(20) {
		isn := 1000 + i*100000
		synAck := h.nextTCP(t)
		if i > 0 && synAck.RST && synAck.Ack == isn-100000+1 {
			// A handshake that failed on the client's RST is answered with
			// a RST for its SYN, which the client's next connection drops.
			synAck = h.nextTCP(t)
		}
		if !synAck.SYN || !synAck.ACK || synAck.Ack != isn+1 {
			t.Fatalf("connection %d: want the SYN-ACK of its SYN, got %+v", i, synAck)
		}
		if i == 0 {
			// The stack answers a SYN in SYN-RCVD with an ACK. Held as a
			// new connection's would be, it would wait the full second.
			sent := time.Now()
			h.send(tcpSynSeq(t, client, server, isn))
			if again := h.nextTCP(t); again.RST || !again.ACK || again.Ack != isn+1 {
				t.Fatalf("the SYN sent again: want its endpoint's answer, got %+v", again)
			}
			if d := time.Since(sent); d >= time.Second {
				t.Errorf("the SYN sent again was answered after %v, want it not held", d)
			}
		}
		h.sendBatch(tcpAck(t, client, server, isn+1, synAck.Seq+1),
			tcpRST(t, client, server, isn+1, synAck.Seq+1),
			tcpSynSeq(t, client, server, isn+100000))
	}
	seg := h.nextTCP(t)
	if seg.RST && seg.Ack == 1000+19*100000+1 {
		seg = h.nextTCP(t)
	}
	if !seg.SYN || !seg.ACK {
		t.Fatalf("the last connection: want its SYN-ACK, got %+v", seg)
	}
	waitFor(t, func() bool { return len(h.ev.closeList()) == 20 })
}

// TestTCPSYNForgottenConnection: a client whose RST was lost (or that has
// forgotten its connection) opens a new one from the same port. Its SYN
// is shown to the old, still established endpoint, whose challenge ACK
// the client answers with a RST; the old flow ends, and the new
// connection gets its SYN-ACK without the client sending its SYN again.
func TestTCPSYNForgottenConnection(t *testing.T) {
	h := newHarness(t, pipeDial(t), nil, policy.Limits{})
	const client, server = "10.0.0.2:5000", "192.0.2.1:80"
	h.send(tcpSynSeq(t, client, server, 1000))
	synAck := h.nextTCP(t)
	if !synAck.SYN || !synAck.ACK {
		t.Fatalf("want SYN-ACK, got %+v", synAck)
	}
	h.send(tcpAck(t, client, server, 1001, synAck.Seq+1))
	waitFor(t, func() bool { return len(h.gw.flows.live()) == 1 })

	h.send(tcpSynSeq(t, client, server, 50000))
	challenge := h.nextTCP(t)
	if challenge.SYN || challenge.RST || !challenge.ACK || challenge.Ack != 1001 || challenge.Seq != synAck.Seq+1 {
		t.Fatalf("want the old connection's challenge ACK, got %+v", challenge)
	}
	h.send(tcpRST(t, client, server, challenge.Ack, 0))
	if seg := h.nextTCP(t); !seg.SYN || !seg.ACK || seg.Ack != 50001 {
		t.Fatalf("want the SYN-ACK of the new connection, got %+v", seg)
	}
	waitFor(t, func() bool { return len(h.ev.closeList()) == 1 })
	if st := h.ev.closeList()[0]; st.Reason != reasonRST {
		t.Errorf("the old flow ended with %q, want %q", st.Reason, reasonRST)
	}
}

// TestTCPFailedSYNRetransmitted: a retransmission of a SYN whose dial
// failed (the same sequence number on the same 4-tuple) gets a RST at
// once, without a verdict or a dial of its own; a new connection on the
// tuple (a new sequence number) is judged and dialed as usual.
func TestTCPFailedSYNRetransmitted(t *testing.T) {
	var dials atomic.Int32
	h := newHarness(t, failingDial(&dials), nil, policy.Limits{})
	const client, server = "10.0.0.2:5000", "192.0.2.1:80"
	rst := func(what string, seq uint32) {
		t.Helper()
		h.send(tcpSynSeq(t, client, server, seq))
		if tcp := h.nextTCP(t); !tcp.RST || tcp.Ack != seq+1 {
			t.Fatalf("%s: got %+v, want the RST for it", what, tcp)
		}
	}
	rst("the SYN", 1000)
	waitFor(t, func() bool { return len(h.ev.closeList()) == 1 })
	rst("its retransmission", 1000)
	rst("a new connection on the tuple", 7000)
	waitFor(t, func() bool { return len(h.ev.closeList()) >= 2 })
	if n := dials.Load(); n != 2 {
		t.Errorf("%d dials, want 2: the retransmission is not dialed", n)
	}
	if n := len(h.ev.verdictList()); n != 2 {
		t.Errorf("%d verdicts, want 2: the retransmission is not judged", n)
	}
	if n := h.gw.Stats().FailedSYNs.Load(); n != 1 {
		t.Errorf("%d retransmitted SYNs of failed dials counted, want 1", n)
	}
	if n := h.gw.Metrics().DropsUpstream; n != 3 {
		t.Errorf("%d drops for an unreachable upstream, want 3: two dials and the retransmission", n)
	}
}

// A SYN with few hops left goes upstream with them; when it runs out of
// them on the way, the client gets the router's Time Exceeded, quoting its
// SYN, instead of a RST. A SYN with a full TTL meets the same dial error
// with a RST.
func TestTCPTimeExceededPassedOn(t *testing.T) {
	for _, tc := range []struct {
		client, dst, router string
		typ                 uint8
		layer               gopacket.LayerType
	}{
		{"10.0.0.2:5000", "192.0.2.1:80", "198.51.100.1", icmp4TimeExceeded, layers.LayerTypeICMPv4},
		{"[fd00::2]:5000", "[2001:db8::1]:80", "2001:db8:ffff::1", icmp6TimeExceeded, layers.LayerTypeICMPv6},
	} {
		t.Run(tc.dst, func(t *testing.T) {
			hops := make(chan uint8, 2)
			router := netip.MustParseAddr(tc.router)
			h := newHarness(t, func(ctx context.Context, _, _ string) (net.Conn, error) {
				hops <- dialHops(ctx)
				return nil, fmt.Errorf("connect: %w", &ICMPError{From: router, Type: tc.typ})
			}, nil, policy.Limits{})

			syn := tcpSyn(t, tc.client, tc.dst)
			if syn[0]>>4 == 4 {
				syn[8] = 5
			} else {
				syn[7] = 5
			}
			fixChecksums(syn)
			h.send(syn)
			p := h.next()
			if got := <-hops; got != 5 {
				t.Errorf("dialed with %d hops, want 5", got)
			}
			if p.Layer(tc.layer) == nil || p.NetworkLayer().NetworkFlow().Src().String() != tc.router {
				t.Fatalf("got %v, want ICMP from %s", p, tc.router)
			}
			msg := p.NetworkLayer().LayerPayload()
			if msg[0] != tc.typ || msg[1] != 0 || !bytes.Equal(msg[icmpHeaderLen:], syn[:min(len(syn), len(msg)-icmpHeaderLen)]) || len(msg)-icmpHeaderLen < 28 {
				t.Errorf("ICMP type %d code %d quoting % x; want type %d code 0 quoting the SYN % x", msg[0], msg[1], msg[icmpHeaderLen:], tc.typ, syn)
			}
			waitFor(t, func() bool { return len(h.ev.closeList()) == 1 })

			// With a full TTL: the host's default, and a RST.
			h.send(tcpSyn(t, strings.Replace(tc.client, "5000", "5001", 1), tc.dst))
			if got := <-hops; got != 0 {
				t.Errorf("dialed with %d hops for a full TTL, want 0 (the host's default)", got)
			}
			// The very next packet: no RST went to the first SYN.
			if tcp, ok := h.next().Layer(layers.LayerTypeTCP).(*layers.TCP); !ok || !tcp.RST || tcp.DstPort != 5001 {
				t.Errorf("full TTL: got %+v, want the RST to port 5001", tcp)
			}
		})
	}
}

// failingDial returns a dialer whose every dial fails, counted in dials.
func failingDial(dials *atomic.Int32) DialFunc {
	return func(context.Context, string, string) (net.Conn, error) {
		dials.Add(1)
		return nil, errors.New("no upstream in this test")
	}
}

// blockingDial returns a dialer that fails only once block is closed (or
// the gateway shuts down), keeping its flows pending until then.
func blockingDial(block chan struct{}) DialFunc {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return nil, errors.New("released")
	}
}

func TestMaxPendingTCP(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	h := newHarness(t, blockingDial(block), nil, policy.Limits{MaxPendingTCP: 1})
	h.send(tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:80"))
	h.send(tcpSyn(t, "10.0.0.2:5001", "192.0.2.1:80"))
	tcp := h.next().Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !tcp.RST || tcp.DstPort != 5001 {
		t.Fatalf("second handshake over the limit: want RST to 5001, got %+v", tcp)
	}
	if h.gw.Stats().RefusedPendingTCP.Load() != 1 || len(h.ev.refusedList()) != 1 || h.ev.refusedList()[0] != "max_pending_tcp" {
		t.Errorf("refusal not counted/logged: %v", h.ev.refusedList())
	}
}

func TestUDPRejectSendsPortUnreachable(t *testing.T) {
	h := newHarness(t, nil, nil, policy.Limits{})
	h.send(udpPacket(t, "10.0.0.2:5000", "192.0.2.1:81", []byte("hi")))
	icmp, ok := h.next().Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if !ok || icmp.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort) {
		t.Fatalf("want ICMP port unreachable, got %+v", icmp)
	}
}

func TestUDPDenyIsSilent(t *testing.T) {
	h := newHarness(t, nil, nil, policy.Limits{})
	for i := 0; i < 3; i++ {
		h.send(udpPacket(t, "10.0.0.2:5000", "192.0.2.1:53", []byte("q")))
	}
	h.nothingBefore("10.0.0.2")
	if len(h.ev.verdictList()) != 2 {
		t.Errorf("three datagrams of one denied flow: want one verdict, got %d (incl. marker)", len(h.ev.verdictList()))
	}
}

// Packets to a multicast group or the limited broadcast address are
// dropped and counted: nothing judges them or sends them upstream, and
// the client gets no answer.
func TestNotUnicastDropped(t *testing.T) {
	var dials atomic.Int32
	h := newHarness(t, failingDial(&dials), nil, policy.Limits{})
	pkts := [][]byte{
		udpPacket(t, "10.0.0.2:5353", "224.0.0.251:80", []byte("mdns")),
		udpPacket(t, "10.0.0.2:1900", "239.255.255.250:80", []byte("ssdp")),
		udpPacket(t, "10.0.0.2:68", "255.255.255.255:80", []byte("bcast")),
		udpPacket(t, "[fd00::2]:5353", "[ff02::fb]:80", []byte("mdns6")),
		tcpSyn(t, "10.0.0.2:5000", "239.1.2.3:80"),
		echoRequestPacket(t, "10.0.0.2", "224.0.0.1", 1, 1, []byte("ping")),
	}
	for _, p := range pkts {
		h.send(p)
	}
	h.nothingBefore("10.0.0.2")
	if n := h.gw.Stats().NotUnicast.Load(); n != uint64(len(pkts)) {
		t.Errorf("counted %d packets as not unicast, want %d", n, len(pkts))
	}
	if v := h.ev.verdictList(); len(v) != 1 || dials.Load() != 0 {
		t.Errorf("%d verdicts (want only the marker's) and %d dials (want none)", len(v), dials.Load())
	}
	// The unicast neighbours of those addresses are judged as ever.
	h.send(udpPacket(t, "10.0.0.2:5353", "223.255.255.255:80", []byte("unicast")))
	waitFor(t, func() bool { return dials.Load() == 1 })
}

func TestUDPRelay(t *testing.T) {
	h := newHarness(t, udpEcho(t, "re: "), nil, policy.Limits{})
	h.send(udpPacket(t, "10.0.0.2:5000", "192.0.2.1:80", []byte("ping")))
	p := h.next()
	udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	ip := p.NetworkLayer().(*layers.IPv4)
	if !ok || string(udp.Payload) != "re: ping" || udp.SrcPort != 80 || udp.DstPort != 5000 || !ip.SrcIP.Equal(net.IPv4(192, 0, 2, 1)) {
		t.Fatalf("reply not relayed with the original addresses: %v", p)
	}
}

// fakeEcho answers echo requests only if alive.
type fakeEcho struct {
	alive   bool
	replies chan [2]any
	closed  chan struct{}
}

func (f *fakeEcho) WriteEcho(seq uint16, payload []byte) error {
	if f.alive {
		f.replies <- [2]any{seq, append([]byte(nil), payload...)}
	}
	return nil
}

func (f *fakeEcho) ReadEcho(buf []byte) (uint16, int, error) {
	select {
	case r := <-f.replies:
		return r[0].(uint16), copy(buf, r[1].([]byte)), nil
	case <-f.closed:
		return 0, 0, net.ErrClosed
	}
}

func (f *fakeEcho) SetReadDeadline(time.Time) error { return nil }
func (f *fakeEcho) Close() error                    { close(f.closed); return nil }

func TestICMPEchoOnlyRealReplies(t *testing.T) {
	ping := func(_ context.Context, dst netip.Addr) (EchoConn, error) {
		alive := dst == netip.MustParseAddr("192.0.2.1") || dst == netip.MustParseAddr("2001:db8::1")
		return &fakeEcho{alive: alive, replies: make(chan [2]any, 4), closed: make(chan struct{})}, nil
	}
	h := newHarness(t, nil, ping, policy.Limits{})
	h.send(echoRequestPacket(t, "10.0.0.2", "192.0.2.2", 7, 1, []byte("nobody home")))
	h.nothingBefore("10.0.0.2")
	for _, tc := range []struct{ src, dst string }{{"10.0.0.2", "192.0.2.1"}, {"fd00::2", "2001:db8::1"}} {
		h.send(echoRequestPacket(t, tc.src, tc.dst, 7, 42, []byte("hello")))
		p := h.next()
		var id, seq uint16
		var payload []byte
		if v4, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok && v4.TypeCode.Type() == layers.ICMPv4TypeEchoReply {
			id, seq, payload = v4.Id, v4.Seq, v4.Payload
		} else if e6, ok := p.Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo); ok {
			id, seq, payload = e6.Identifier, e6.SeqNumber, p.Layer(layers.LayerTypeICMPv6).LayerPayload()[4:]
		}
		if id != 7 || seq != 42 || !bytes.Equal(payload, []byte("hello")) || p.ErrorLayer() != nil {
			t.Fatalf("%s: want echo reply id 7 seq 42 'hello', got %v", tc.dst, p)
		}
		if p.NetworkLayer().NetworkFlow().Src().String() != tc.dst {
			t.Errorf("reply source %v, want %s", p.NetworkLayer().NetworkFlow().Src(), tc.dst)
		}
	}
}

func TestICMPRejectAdminProhibited(t *testing.T) {
	h := newHarness(t, nil, nil, policy.Limits{})
	h.send(echoRequestPacket(t, "10.0.0.2", "192.0.2.3", 7, 1, []byte("x")))
	icmp, ok := h.next().Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if !ok || icmp.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeCommAdminProhibited) {
		t.Fatalf("want admin prohibited, got %+v", icmp)
	}
}

func TestMalformedPacketsDropped(t *testing.T) {
	h := newHarness(t, nil, nil, policy.Limits{})
	good := tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:80")
	badSum := append([]byte(nil), good...)
	badSum[len(badSum)-1] ^= 0xff
	longLen := append([]byte(nil), good...)
	longLen[2], longLen[3] = 0xff, 0xff
	for _, p := range [][]byte{
		{0x45, 0, 0},        // truncated IPv4
		{0x60, 0, 0, 0},     // truncated IPv6
		{0x75, 0, 0, 20, 0}, // version 7
		make([]byte, 40),    // version 0
		longLen,             // total length beyond the packet
		badSum,              // TCP checksum wrong
	} {
		h.send(p)
	}
	h.nothingBefore("10.0.0.2")
	st := h.gw.Stats()
	if st.Truncated.Load() != 2 || st.BadVersion.Load() != 2 || st.BadLength.Load() != 1 || st.BadChecksum.Load() != 1 {
		t.Errorf("counters: truncated %d version %d length %d checksum %d",
			st.Truncated.Load(), st.BadVersion.Load(), st.BadLength.Load(), st.BadChecksum.Load())
	}
}

func TestCloseEndsFlows(t *testing.T) {
	up, upPeer := net.Pipe()
	defer upPeer.Close()
	go io.Copy(io.Discard, upPeer)
	h := newHarness(t, func(context.Context, string, string) (net.Conn, error) { return up, nil }, nil, policy.Limits{})
	h.send(tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:80"))
	synAck := h.next().Layer(layers.LayerTypeTCP).(*layers.TCP)
	h.send(tcpAck(t, "10.0.0.2:5000", "192.0.2.1:80", 1001, synAck.Seq+1))
	waitFor(t, func() bool { return h.gw.ActiveFlows() == 1 })
	h.gw.Close()
	if h.gw.ActiveFlows() != 0 || len(h.ev.closeList()) != 1 || h.ev.closeList()[0].Reason != reasonShutdown {
		t.Fatalf("after Close: %d flows, closes %+v", h.gw.ActiveFlows(), h.ev.closeList())
	}
}

// TestCloseAbortsHandshakes: a client that never sends its final ACK must
// not hold up Close (the stack would wait two minutes for it).
func TestCloseAbortsHandshakes(t *testing.T) {
	up, upPeer := net.Pipe()
	defer upPeer.Close()
	h := newHarness(t, func(context.Context, string, string) (net.Conn, error) { return up, nil }, nil, policy.Limits{})
	h.send(tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:80"))
	h.next() // SYN-ACK, never acknowledged
	done := make(chan struct{})
	go func() { h.gw.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits for a handshake that will never complete")
	}
	if len(h.ev.closeList()) != 1 || h.ev.closeList()[0].Reason != reasonShutdown {
		t.Errorf("closes %+v, want one with reason shutdown", h.ev.closeList())
	}
}

// TestCloseCutsDials: a flow still dialing its upstream when the gateway
// closes ends with reason shutdown; the cut-short dial is not an
// unreachable upstream.
func TestCloseCutsDials(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	h := newHarness(t, blockingDial(block), nil, policy.Limits{})
	h.send(tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:80"))
	waitFor(t, func() bool { return h.gw.ActiveFlows() == 1 })
	h.gw.Close()
	if got := h.ev.closeList(); len(got) != 1 || got[0].Reason != reasonShutdown || got[0].Err != nil {
		t.Errorf("closes %+v, want one with reason shutdown and no error", got)
	}
	if n := h.gw.Stats().DialErrors.Load(); n != 0 {
		t.Errorf("%d dial errors counted for a dial cut short by Close", n)
	}
}

// TestCloseRefusesLateHandshakes: a flow whose upstream dial ends after
// Close has stopped handshakes (and then closed the stack, which would
// leave a handshake started now waiting forever) gets a reset, ends with
// reason shutdown, and Close returns.
func TestCloseRefusesLateHandshakes(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	up, upPeer := net.Pipe()
	defer upPeer.Close()
	h := newHarness(t, func(context.Context, string, string) (net.Conn, error) {
		close(entered)
		<-release // deaf to the gateway's cancel, like a dial already done
		return up, nil
	}, nil, policy.Limits{})
	h.send(tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:80"))
	<-entered
	closed := make(chan struct{})
	go func() { h.gw.Close(); close(closed) }()
	waitFor(t, func() bool {
		h.gw.tcp.handshakes.Lock()
		defer h.gw.tcp.handshakes.Unlock()
		return h.gw.tcp.stopping
	})
	close(release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits for a handshake started after it")
	}
	if got := h.ev.closeList(); len(got) != 1 || got[0].Reason != reasonShutdown {
		t.Errorf("closes %+v, want one with reason shutdown", got)
	}
	if tcp := h.next().Layer(layers.LayerTypeTCP).(*layers.TCP); !tcp.RST {
		t.Errorf("the client got %+v, want a reset", tcp)
	}
}

// TestStoppingJudgesNothing: once the gateway is stopping, a new flow is
// neither judged nor logged; its packet is dropped.
func TestStoppingJudgesNothing(t *testing.T) {
	h := newHarness(t, nil, nil, policy.Limits{})
	f := policy.Flow{Proto: policy.TCP, Src: netip.MustParseAddrPort("10.0.0.2:5000"), Dst: netip.MustParseAddrPort("192.0.2.1:80")}
	if _, _, held := h.gw.judge(&f, keyOf(f), time.Now(), time.Minute, nil); held || len(h.ev.verdictList()) != 1 {
		t.Fatalf("before Close: held %v, %d verdicts, want judged once", held, len(h.ev.verdictList()))
	}
	h.gw.cancel() // what Close does first
	f.Src = netip.MustParseAddrPort("10.0.0.2:5001")
	if _, _, held := h.gw.judge(&f, keyOf(f), time.Now(), time.Minute, nil); !held || len(h.ev.verdictList()) != 1 {
		t.Errorf("while stopping: held %v, %d verdicts, want the packet dropped unjudged", held, len(h.ev.verdictList()))
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// udpEcho starts a loopback UDP server answering every datagram with
// prefix+datagram, and returns a dialer that reaches it.
func udpEcho(t testing.TB, prefix string) DialFunc {
	t.Helper()
	echo, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		b := make([]byte, 65535)
		for {
			n, a, err := echo.ReadFrom(b)
			if err != nil {
				return
			}
			echo.WriteTo(append([]byte(prefix), b[:n]...), a)
		}
	}()
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		return net.Dial(network, echo.LocalAddr().String())
	}
}

func TestUDPIdleTimeout(t *testing.T) {
	h := newHarness(t, udpEcho(t, ""), nil, policy.Limits{UDPIdle: 50 * time.Millisecond})
	h.send(udpPacket(t, "10.0.0.2:5000", "192.0.2.1:80", []byte("one")))
	h.next() // the echo
	waitFor(t, func() bool { return len(h.ev.closeList()) == 1 })
	st := h.ev.closeList()[0]
	if st.Reason != reasonIdle || st.BytesOut != 3 || st.BytesIn != 3 {
		t.Errorf("close %+v, want idle with 3 bytes each way", st)
	}
	if h.gw.ActiveFlows() != 0 {
		t.Error("idle session still counted")
	}
}

func TestMaxUDPSessions(t *testing.T) {
	h := newHarness(t, udpEcho(t, ""), nil, policy.Limits{MaxUDPSessions: 1})
	h.send(udpPacket(t, "10.0.0.2:5000", "192.0.2.1:80", []byte("a")))
	h.next()
	h.send(udpPacket(t, "10.0.0.2:5001", "192.0.2.1:80", []byte("b")))
	icmp, ok := h.next().Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if !ok || icmp.TypeCode.Type() != layers.ICMPv4TypeDestinationUnreachable {
		t.Fatalf("second session over max_udp_sessions: want ICMP unreachable, got %+v", icmp)
	}
	if got := h.ev.refusedList(); len(got) != 1 || got[0] != "max_udp_sessions" {
		t.Errorf("refused %v", got)
	}
	if h.gw.Stats().RefusedUDPSessions.Load() != 1 {
		t.Error("refusal not counted")
	}
}

func TestMaxFlows(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	h := newHarness(t, blockingDial(block), nil, policy.Limits{MaxFlows: 1})
	h.send(tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:80")) // holds the only slot while dialing
	h.send(tcpSyn(t, "10.0.0.2:5001", "192.0.2.1:80"))
	tcp := h.next().Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !tcp.RST || tcp.DstPort != 5001 {
		t.Fatalf("flow over max_flows: want RST to 5001, got %+v", tcp)
	}
	if got := h.ev.refusedList(); len(got) != 1 || got[0] != "max_flows" {
		t.Errorf("refused %v", got)
	}
}

// TestMaxFlowsPerSource: limits.max_flows_per_source counts a source's
// flows of every protocol, refuses the next one as max_flows does (RST,
// ICMP unreachable) and leaves other sources their own places.
func TestMaxFlowsPerSource(t *testing.T) {
	h := newHarness(t, udpEcho(t, ""), nil, policy.Limits{MaxFlowsPerSource: 2})
	for _, src := range []string{"10.0.0.2:5000", "10.0.0.2:5001", "10.0.0.3:5000"} {
		h.send(udpPacket(t, src, "192.0.2.1:80", []byte("a")))
		if udp, ok := h.next().Layer(layers.LayerTypeUDP).(*layers.UDP); !ok || string(udp.Payload) != "a" {
			t.Fatalf("session from %s: want its echo, got %+v", src, udp)
		}
	}
	h.send(udpPacket(t, "10.0.0.2:5002", "192.0.2.1:80", []byte("b")))
	icmp, ok := h.next().Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if !ok || icmp.TypeCode.Type() != layers.ICMPv4TypeDestinationUnreachable {
		t.Fatalf("third session from 10.0.0.2: want ICMP unreachable, got %+v", icmp)
	}
	h.send(tcpSyn(t, "10.0.0.2:5003", "192.0.2.1:80"))
	if tcp := h.nextTCP(t); !tcp.RST || tcp.DstPort != 5003 {
		t.Fatalf("SYN from 10.0.0.2 with two sessions: want RST to 5003, got %+v", tcp)
	}
	h.send(udpPacket(t, "10.0.0.3:5001", "192.0.2.1:80", []byte("c")))
	if udp, ok := h.next().Layer(layers.LayerTypeUDP).(*layers.UDP); !ok || string(udp.Payload) != "c" {
		t.Fatalf("second session from 10.0.0.3: want its echo, got %+v", udp)
	}
	if got := h.ev.refusedList(); len(got) != 2 || got[0] != "max_flows_per_source" || got[1] != "max_flows_per_source" {
		t.Errorf("refused %v, want max_flows_per_source twice", got)
	}
	if n := h.gw.Stats().RefusedPerSource.Load(); n != 2 {
		t.Errorf("%d refusals counted, want 2", n)
	}
	// Both are among the recent refusals, with the rule that allowed
	// them; they are not counted as the policy's.
	denied := h.gw.Denied()
	if len(denied) != 2 {
		t.Fatalf("recent refusals %+v, want the two", denied)
	}
	for _, d := range denied {
		if d.Limit != "max_flows_per_source" || d.Rule != "web" || d.Action != policy.Reject || d.Src != netip.MustParseAddr("10.0.0.2") || d.Count != 1 {
			t.Errorf("recent refusal %+v, want one by max_flows_per_source from 10.0.0.2, allowed by web", d)
		}
	}
	if n := h.gw.denials.total.Load(); n != 0 {
		t.Errorf("%d refusals counted as the policy's, want 0", n)
	}
}
