package netstack

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/tunwall/tunwall/policy"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// erringEcho is an upstream echo socket on a path that sends back errors:
// its first writes fail with writeErrs; every request it sends comes back
// as the error readErr (with the request's sequence number and payload).
type erringEcho struct {
	readErr   ICMPError
	mu        sync.Mutex
	writeErrs []error
	sent      []uint16
	errs      chan *ICMPError
	closed    chan struct{}
}

func (e *erringEcho) WriteEcho(seq uint16, payload []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.writeErrs) > 0 {
		err := e.writeErrs[0]
		e.writeErrs = e.writeErrs[1:]
		return err
	}
	e.sent = append(e.sent, seq)
	ie := e.readErr
	ie.Seq, ie.Payload = seq, append([]byte(nil), payload...)
	e.errs <- &ie
	return nil
}

func (e *erringEcho) ReadEcho([]byte) (uint16, int, error) {
	select {
	case ie := <-e.errs:
		return 0, 0, ie
	case <-e.closed:
		return 0, 0, net.ErrClosed
	}
}

func (e *erringEcho) SetReadDeadline(time.Time) error { return nil }
func (e *erringEcho) Close() error                    { close(e.closed); return nil }

func (e *erringEcho) sentSeqs() []uint16 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]uint16(nil), e.sent...)
}

// The ICMP errors the network sends back for allowed echo requests reach
// the client from their sender, quoting the client's own request; an error
// raised by this host is sent in the destination's name. The flow goes on.
func TestICMPErrorsPassedOn(t *testing.T) {
	for _, tc := range []struct {
		name, client, dst string
		err               ICMPError
		wantFrom          string
	}{
		{"v4 router", "10.0.0.2", "192.0.2.1",
			ICMPError{From: netip.MustParseAddr("198.51.100.1"), Type: icmp4Unreachable, Code: icmp4CodeHostUnreachable}, "198.51.100.1"},
		{"v4 fragmentation needed", "10.0.0.2", "192.0.2.1",
			ICMPError{From: netip.MustParseAddr("198.51.100.1"), Type: icmp4Unreachable, Code: icmp4CodeFragNeeded, Info: 1400}, "198.51.100.1"},
		{"v4 this host", "10.0.0.2", "192.0.2.1",
			ICMPError{From: netip.MustParseAddr("127.0.0.1"), Type: icmp4Unreachable, Code: icmp4CodeHostUnreachable}, "192.0.2.1"},
		{"v6 router", "fd00::2", "2001:db8::1",
			ICMPError{From: netip.MustParseAddr("2001:db8:ff::1"), Type: icmp6Unreachable, Code: icmp6CodeAddrUnreachable}, "2001:db8:ff::1"},
		{"v6 packet too big", "fd00::2", "2001:db8::1",
			ICMPError{From: netip.MustParseAddr("2001:db8:ff::1"), Type: icmp6PacketTooBig, Info: 1280}, "2001:db8:ff::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := &erringEcho{readErr: tc.err, errs: make(chan *ICMPError, 4), closed: make(chan struct{})}
			ping := func(context.Context, netip.Addr) (EchoConn, error) { return up, nil }
			h := newHarness(t, nil, ping, policy.Limits{})
			for seq := uint16(1); seq <= 2; seq++ {
				h.send(echoRequestPacket(t, tc.client, tc.dst, 7, seq, []byte("probe")))
				p := h.next()
				checkEchoError(t, p, tc.wantFrom, tc.client, tc.dst, tc.err, 7, seq, "probe")
			}
			if n := len(h.ev.closeList()); n != 0 {
				t.Errorf("%d flows closed, want the flow to go on", n)
			}
		})
	}
}

// A write that meets a queued error passes it on and sends its request
// still; a second in a row loses the request only.
func TestICMPWriteErrorPassedOn(t *testing.T) {
	from := netip.MustParseAddr("198.51.100.1")
	queued := &ICMPError{From: from, Type: icmp4Unreachable, Code: icmp4CodeHostUnreachable, Seq: 1, Payload: []byte("earlier")}
	up := &erringEcho{
		readErr:   ICMPError{From: from, Type: icmp4Unreachable, Code: icmp4CodeHostUnreachable},
		writeErrs: []error{queued, queued, queued},
		errs:      make(chan *ICMPError, 4),
		closed:    make(chan struct{}),
	}
	ping := func(context.Context, netip.Addr) (EchoConn, error) { return up, nil }
	h := newHarness(t, nil, ping, policy.Limits{})
	h.send(echoRequestPacket(t, "10.0.0.2", "192.0.2.1", 7, 1, []byte("earlier")))
	checkEchoError(t, h.next(), "198.51.100.1", "10.0.0.2", "192.0.2.1", *queued, 7, 1, "earlier")
	checkEchoError(t, h.next(), "198.51.100.1", "10.0.0.2", "192.0.2.1", *queued, 7, 1, "earlier")
	h.nothingBefore("10.0.0.2") // two refusals in a row: request 1 lost
	h.send(echoRequestPacket(t, "10.0.0.2", "192.0.2.1", 7, 2, []byte("probe")))
	checkEchoError(t, h.next(), "198.51.100.1", "10.0.0.2", "192.0.2.1", *queued, 7, 1, "earlier")
	checkEchoError(t, h.next(), "198.51.100.1", "10.0.0.2", "192.0.2.1", up.readErr, 7, 2, "probe")
	if got := up.sentSeqs(); len(got) != 1 || got[0] != 2 {
		t.Errorf("requests sent upstream: %v, want [2]", got)
	}
}

// checkEchoError asserts that p is the ICMP error e sent from from to the
// client about its echo request (id, seq, payload want) to dst, with valid
// checksums.
func checkEchoError(t *testing.T, p gopacket.Packet, from, client, dst string, e ICMPError, id, seq uint16, want string) {
	t.Helper()
	src, to := p.NetworkLayer().NetworkFlow().Endpoints()
	if src.String() != from || to.String() != client {
		t.Fatalf("error sent %v -> %v, want %s -> %s: %v", src, to, from, client, p)
	}
	msg := p.NetworkLayer().LayerPayload()
	if len(msg) < icmpHeaderLen+ipv4HeaderLen+icmpHeaderLen {
		t.Fatalf("short ICMP message: %v", p)
	}
	if msg[0] != e.Type || msg[1] != e.Code {
		t.Errorf("type %d code %d, want %d %d", msg[0], msg[1], e.Type, e.Code)
	}
	quoteType := layers.LayerTypeIPv4
	if netip.MustParseAddr(client).Is6() {
		quoteType = layers.LayerTypeIPv6
		a, b := netip.MustParseAddr(from).As16(), netip.MustParseAddr(client).As16()
		if icmp6Checksum(a, b, msg) != 0xffff {
			t.Error("bad ICMPv6 checksum")
		}
		if e.Type == icmp6PacketTooBig && uint32(msg[4])<<24|uint32(msg[5])<<16|uint32(msg[6])<<8|uint32(msg[7]) != e.Info {
			t.Errorf("MTU field % x, want %d", msg[4:8], e.Info)
		}
	} else {
		if checksum.Checksum(msg, 0) != 0xffff {
			t.Error("bad ICMPv4 checksum")
		}
		if e.Code == icmp4CodeFragNeeded && uint32(msg[6])<<8|uint32(msg[7]) != e.Info {
			t.Errorf("next-hop MTU % x, want %d", msg[6:8], e.Info)
		}
	}
	q := gopacket.NewPacket(msg[icmpHeaderLen:], quoteType, gopacket.Default)
	qs, qd := q.NetworkLayer().NetworkFlow().Endpoints()
	if qs.String() != client || qd.String() != dst {
		t.Errorf("quoted request %v -> %v, want %s -> %s", qs, qd, client, dst)
	}
	var gotID, gotSeq uint16
	if l, ok := q.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
		gotID, gotSeq = l.Id, l.Seq
	} else if l, ok := q.Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo); ok {
		gotID, gotSeq = l.Identifier, l.SeqNumber
	}
	payload := q.NetworkLayer().LayerPayload()[icmpHeaderLen:]
	if gotID != id || gotSeq != seq || string(payload) != want {
		t.Errorf("quoted echo id %d seq %d payload %q, want %d %d %q", gotID, gotSeq, payload, id, seq, want)
	}
}
