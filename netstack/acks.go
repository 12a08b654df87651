package netstack

import (
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ackDelay is the longest a pure ACK waits for a segment of its flow to
// carry the acknowledgement instead.
const ackDelay = 500 * time.Microsecond

// maxAckOptions is the most TCP option bytes a held ACK may carry: room
// for timestamps, none for SACK blocks (an ACK reporting loss goes out at
// once).
const maxAckOptions = 12

// acks delays pure ACKs that gVisor sends to TUN clients, the way a host's
// delayed ACK does. gVisor acknowledges every segment it has processed at
// once; for a request that is answered right away the acknowledgement then
// costs a TUN write and a packet for the client to take in, although the
// response, a moment later, would have carried it. A held ACK is dropped
// when the next segment of its flow goes out (that segment acknowledges at
// least as much), sent with a newer pure ACK that replaces it, sent before
// a duplicate of it (duplicate ACKs are signals and all go out), and sent
// on its own after ackDelay otherwise.
type acks struct {
	delay time.Duration                    // ackDelay but in tests
	write func(pkts []*stack.PacketBuffer) // sends held ACKs that timed out

	mu    sync.Mutex // guards the following fields
	held  map[ackKey]heldAck
	timer *time.Timer // armed while held is not empty
	armed bool
}

type ackKey struct {
	src, dst     tcpip.Address
	sport, dport uint16
}

type heldAck struct {
	pkt *stack.PacketBuffer // a reference owned by acks
	ack uint32
	due time.Time
}

// ackOf reads the flow key, the acknowledgement number and whether pkt, an
// outgoing TCP segment, is a pure ACK that may be held.
func ackOf(pkt *stack.PacketBuffer) (k ackKey, ack uint32, pure, ok bool) {
	th := header.TCP(pkt.TransportHeader().Slice())
	if len(th) < header.TCPMinimumSize {
		return k, 0, false, false
	}
	switch nh := pkt.NetworkHeader().Slice(); pkt.NetworkProtocolNumber {
	case header.IPv4ProtocolNumber:
		if len(nh) < header.IPv4MinimumSize {
			return k, 0, false, false
		}
		ip := header.IPv4(nh)
		k.src, k.dst = ip.SourceAddress(), ip.DestinationAddress()
	case header.IPv6ProtocolNumber:
		if len(nh) < header.IPv6MinimumSize {
			return k, 0, false, false
		}
		ip := header.IPv6(nh)
		k.src, k.dst = ip.SourceAddress(), ip.DestinationAddress()
	default:
		return k, 0, false, false
	}
	k.sport, k.dport = th.SourcePort(), th.DestinationPort()
	pure = th.Flags() == header.TCPFlagAck && pkt.Data().Size() == 0 &&
		int(th.DataOffset()) <= header.TCPMinimumSize+maxAckOptions
	return k, th.AckNumber(), pure, true
}

// hold is called for every outgoing TCP segment, in order. It returns true
// if it kept pkt (taking a reference) to send later or never. Otherwise the
// caller sends pkt, after prior if that is not nil; the caller then owns
// prior's reference.
func (a *acks) hold(pkt *stack.PacketBuffer) (kept bool, prior *stack.PacketBuffer) {
	k, ack, pure, ok := ackOf(pkt)
	if !ok {
		return false, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	h, had := a.held[k]
	switch {
	case had && pure && seqnum.Value(ack).LessThanEq(seqnum.Value(h.ack)):
		// A duplicate ACK (or one that overtook the held one): the held
		// one goes first, then this one.
		delete(a.held, k)
		return false, h.pkt
	case had:
		// This segment acknowledges as much as the held ACK or more.
		delete(a.held, k)
		h.pkt.DecRef()
		return false, nil
	case !pure:
		return false, nil
	}
	if a.held == nil {
		a.held = make(map[ackKey]heldAck)
	}
	pkt.IncRef()
	a.held[k] = heldAck{pkt: pkt, ack: ack, due: time.Now().Add(a.delay)}
	if !a.armed {
		a.armed = true
		if a.timer == nil {
			a.timer = time.AfterFunc(a.delay, a.expire)
		} else {
			a.timer.Reset(a.delay)
		}
	}
	return true, nil
}

// expire sends the held ACKs that are due and re-arms the timer for the
// rest.
func (a *acks) expire() {
	now := time.Now()
	var due []*stack.PacketBuffer
	a.mu.Lock()
	next := time.Duration(-1)
	for k, h := range a.held {
		if left := h.due.Sub(now); left > 0 {
			if next < 0 || left < next {
				next = left
			}
			continue
		}
		due = append(due, h.pkt)
		delete(a.held, k)
	}
	a.armed = next >= 0
	if a.armed {
		a.timer.Reset(next)
	}
	a.mu.Unlock()
	if len(due) > 0 {
		a.write(due)
		for _, p := range due {
			p.DecRef()
		}
	}
}

// drop releases every held ACK without sending it.
func (a *acks) drop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, h := range a.held {
		h.pkt.DecRef()
		delete(a.held, k)
	}
	if a.timer != nil {
		a.timer.Stop()
	}
	a.armed = false
}
