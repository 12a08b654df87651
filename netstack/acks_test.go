package netstack

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tunwall/tunwall/policy"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// handshake opens an allowed flow from 10.0.0.2:5000 to an upstream pipe
// and returns the pipe's far end and the gateway's next sequence number.
func handshake(t *testing.T, h *harness, up net.Conn) uint32 {
	t.Helper()
	h.send(tcpSyn(t, "10.0.0.2:5000", "192.0.2.1:80"))
	synAck := h.nextTCP(t)
	if !synAck.SYN || !synAck.ACK {
		t.Fatalf("want SYN-ACK, got %+v", synAck)
	}
	h.send(tcpAck(t, "10.0.0.2:5000", "192.0.2.1:80", 1001, synAck.Seq+1))
	return synAck.Seq + 1
}

// TestResponseCarriesAck: a request answered by upstream is acknowledged
// by the response segment itself, with no pure ACK written before it.
func TestResponseCarriesAck(t *testing.T) {
	up, upPeer := net.Pipe()
	defer upPeer.Close()
	h := newHarness(t, func(context.Context, string, string) (net.Conn, error) { return up, nil }, nil, policy.Limits{})
	h.gw.ep.acks.delay = time.Minute // the response surely comes first
	seq := handshake(t, h, up)
	h.send(tcpData(t, "10.0.0.2:5000", "192.0.2.1:80", 1001, seq, []byte("ping")))
	buf := make([]byte, 4)
	upPeer.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(upPeer, buf); err != nil {
		t.Fatal(err)
	}
	if _, err := upPeer.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	seg := h.nextTCP(t)
	if string(seg.Payload) != "pong" || !seg.ACK || seg.Ack != 1005 {
		t.Fatalf("want the response acknowledging the request (ack 1005), got %+v", seg)
	}
}

// TestLoneAckSent: a request nothing answers is still acknowledged.
func TestLoneAckSent(t *testing.T) {
	up, upPeer := net.Pipe()
	defer upPeer.Close()
	go io.Copy(io.Discard, upPeer)
	h := newHarness(t, func(context.Context, string, string) (net.Conn, error) { return up, nil }, nil, policy.Limits{})
	seq := handshake(t, h, up)
	h.send(tcpData(t, "10.0.0.2:5000", "192.0.2.1:80", 1001, seq, []byte("ping")))
	seg := h.nextTCP(t)
	if len(seg.Payload) != 0 || !seg.ACK || seg.SYN || seg.FIN || seg.RST || seg.Ack != 1005 {
		t.Fatalf("want a pure ACK of the request (ack 1005), got %+v", seg)
	}
}

// segment builds an outgoing IPv4 TCP segment as gVisor hands it to the
// link endpoint.
func segment(ack uint32, flags header.TCPFlags, options int, payload string) *stack.PacketBuffer {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 100, Payload: buffer.MakeWithData([]byte(payload))})
	th := header.TCP(pkt.TransportHeader().Push(header.TCPMinimumSize + options))
	th.Encode(&header.TCPFields{SrcPort: 80, DstPort: 5000, SeqNum: 1, AckNum: ack, DataOffset: uint8(header.TCPMinimumSize + options), Flags: flags, WindowSize: 1000})
	ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(pkt.Size()), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4([4]byte{192, 0, 2, 1}), DstAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 2})})
	pkt.NetworkProtocolNumber, pkt.TransportProtocolNumber = header.IPv4ProtocolNumber, header.TCPProtocolNumber
	return pkt
}

func TestAckHolding(t *testing.T) {
	const ack = header.TCPFlagAck
	type step struct {
		ack     uint32
		flags   header.TCPFlags
		options int
		payload string
		kept    bool   // held back
		prior   uint32 // ack number of a held ACK to send first, 0: none
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a pure ACK is held", []step{{ack: 100, flags: ack, kept: true}}},
		{"timestamps fit", []step{{ack: 100, flags: ack, options: 12, kept: true}}},
		{"SACK blocks go at once", []step{{ack: 100, flags: ack, options: 20}}},
		{"data replaces the held ACK", []step{{ack: 100, flags: ack, kept: true}, {ack: 100, flags: ack | header.TCPFlagPsh, payload: "x"}}},
		{"FIN replaces the held ACK", []step{{ack: 100, flags: ack, kept: true}, {ack: 100, flags: ack | header.TCPFlagFin}}},
		{"a newer ACK goes, the held one not", []step{{ack: 100, flags: ack, kept: true}, {ack: 200, flags: ack}, {ack: 300, flags: ack, kept: true}}},
		{"a duplicate ACK follows the held one", []step{{ack: 100, flags: ack, kept: true}, {ack: 100, flags: ack, prior: 100}}},
		{"an older ACK follows the held one", []step{{ack: 100, flags: ack, kept: true}, {ack: 90, flags: ack, prior: 100}}},
		{"not held: SYN-ACK", []step{{ack: 100, flags: ack | header.TCPFlagSyn}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := acks{delay: time.Minute, write: func([]*stack.PacketBuffer) { t.Error("timer fired") }}
			defer a.drop()
			for i, s := range tc.steps {
				pkt := segment(s.ack, s.flags, s.options, s.payload)
				kept, prior := a.hold(pkt)
				if kept != s.kept {
					t.Fatalf("step %d: kept %v, want %v", i, kept, s.kept)
				}
				got := uint32(0)
				if prior != nil {
					got = header.TCP(prior.TransportHeader().Slice()).AckNumber()
					prior.DecRef()
				}
				if got != s.prior {
					t.Fatalf("step %d: prior ACK %d, want %d", i, got, s.prior)
				}
				pkt.DecRef()
			}
		})
	}
}

// TestHeldAckExpires: a held ACK is written by the timer and nothing is
// kept afterwards.
func TestHeldAckExpires(t *testing.T) {
	sent := make(chan uint32, 4)
	a := acks{delay: time.Millisecond, write: func(pkts []*stack.PacketBuffer) {
		for _, p := range pkts {
			sent <- header.TCP(p.TransportHeader().Slice()).AckNumber()
		}
	}}
	defer a.drop()
	for _, n := range []uint32{100, 200} {
		pkt := segment(n, header.TCPFlagAck, 0, "")
		if kept, _ := a.hold(pkt); !kept {
			t.Fatal("pure ACK not held")
		}
		pkt.DecRef()
		select {
		case got := <-sent:
			if got != n {
				t.Fatalf("timer sent ack %d, want %d", got, n)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("held ACK never sent")
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.held) != 0 || a.armed {
		t.Fatalf("after expiry: %d held, armed %v", len(a.held), a.armed)
	}
}
