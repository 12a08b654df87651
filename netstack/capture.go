package netstack

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunwall/tunwall/policy"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Packet is one captured packet as it crossed the TUN device: an IP packet,
// cut to the capture's snap length.
type Packet struct {
	At   time.Time
	Data []byte
	Len  int // the packet's length before it was cut
}

// captureQueue is how many packets a capture holds for its reader; when
// the reader falls behind, later packets are dropped and counted, never
// waited for.
const captureQueue = 4096

// Capture receives copies of packets: those of one flow, both ways, or the
// packets the policy refused. The data path never waits for it.
type Capture struct {
	g       *Gateway
	flow    uint64 // 0: refused packets
	proto   policy.Proto
	src     netip.AddrPort // the flow's originator (port 0 for ICMP)
	dst     netip.AddrPort
	snaplen int
	ch      chan Packet
	dropped atomic.Uint64
	done    chan struct{} // closed when the flow ends or the capture is closed
	once    sync.Once
}

// ErrNoFlow is CaptureFlow's error for an id that is not a live flow.
var ErrNoFlow = errors.New("no such live flow")

// CaptureFlow starts capturing the packets of live flow id, both ways, as
// the TUN device sees them. The capture is done when the flow ends.
func (g *Gateway) CaptureFlow(id uint64, snaplen int) (*Capture, error) {
	lf := g.flows.get(id)
	if lf == nil {
		return nil, ErrNoFlow
	}
	c := g.newCapture(snaplen)
	c.flow, c.proto, c.src, c.dst = id, lf.flow.Proto, lf.flow.Src, lf.flow.Dst
	if c.proto == policy.ICMP {
		c.src, c.dst = netip.AddrPortFrom(c.src.Addr(), 0), netip.AddrPortFrom(c.dst.Addr(), 0)
	}
	g.addCapture(c)
	if g.flows.get(id) == nil { // ended meanwhile
		c.Close()
	}
	return c, nil
}

// CaptureDenied starts capturing the packets the policy refuses: the
// packets that open refused TCP, UDP and ICMP flows, and their retries.
func (g *Gateway) CaptureDenied(snaplen int) *Capture {
	c := g.newCapture(snaplen)
	g.addCapture(c)
	return c
}

func (g *Gateway) newCapture(snaplen int) *Capture {
	if snaplen <= 0 || snaplen > maxPacket {
		snaplen = maxPacket
	}
	return &Capture{g: g, snaplen: snaplen, ch: make(chan Packet, captureQueue), done: make(chan struct{})}
}

// Packets delivers the captured packets.
func (c *Capture) Packets() <-chan Packet { return c.ch }

// Done is closed when the captured flow has ended, the gateway stops, or
// Close was called; packets already captured stay readable.
func (c *Capture) Done() <-chan struct{} { return c.done }

// Dropped counts packets lost because the reader fell behind.
func (c *Capture) Dropped() uint64 { return c.dropped.Load() }

// Close stops the capture.
func (c *Capture) Close() {
	c.once.Do(func() {
		c.g.removeCapture(c)
		close(c.done)
	})
}

// offer queues a copy of the packet made of parts, or counts it dropped.
func (c *Capture) offer(now time.Time, parts ...[]byte) {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	data := make([]byte, 0, min(n, c.snaplen))
	for _, p := range parts {
		data = append(data, p[:min(len(p), cap(data)-len(data))]...)
	}
	select {
	case c.ch <- Packet{At: now, Data: data, Len: n}:
	default:
		c.dropped.Add(1)
	}
}

// matches reports whether pkt belongs to the captured flow, either way.
func (c *Capture) matches(proto policy.Proto, src, dst netip.AddrPort) bool {
	return proto == c.proto && (src == c.src && dst == c.dst || src == c.dst && dst == c.src)
}

// captures is the set of running captures, swapped whole on change so the
// data path reads it with one atomic load.
type captures struct {
	flows  []*Capture
	denied []*Capture
}

func (g *Gateway) addCapture(c *Capture) {
	g.capMu.Lock()
	defer g.capMu.Unlock()
	next := &captures{}
	if cur := g.ep.taps.Load(); cur != nil {
		*next = captures{flows: slices.Clone(cur.flows), denied: slices.Clone(cur.denied)}
	}
	if c.flow != 0 {
		next.flows = append(next.flows, c)
	} else {
		next.denied = append(next.denied, c)
	}
	g.ep.taps.Store(next)
}

func (g *Gateway) removeCapture(c *Capture) {
	g.capMu.Lock()
	defer g.capMu.Unlock()
	cur := g.ep.taps.Load()
	if cur == nil {
		return
	}
	not := func(x *Capture) bool { return x == c }
	next := &captures{flows: slices.DeleteFunc(slices.Clone(cur.flows), not), denied: slices.DeleteFunc(slices.Clone(cur.denied), not)}
	if len(next.flows) == 0 && len(next.denied) == 0 {
		next = nil
	}
	g.ep.taps.Store(next)
}

// flowEnded finishes the captures of flow id.
func (g *Gateway) flowEnded(id uint64) {
	cur := g.ep.taps.Load()
	if cur == nil {
		return
	}
	for _, c := range cur.flows {
		if c.flow == id {
			c.Close()
		}
	}
}

// closeCaptures finishes every capture (the gateway is stopping).
func (g *Gateway) closeCaptures() {
	cur := g.ep.taps.Load()
	if cur == nil {
		return
	}
	for _, c := range append(slices.Clone(cur.flows), cur.denied...) {
		c.Close()
	}
}

// tapFlows offers pkt, crossing the device, to the flow captures it
// belongs to.
func (e *endpoint) tapFlows(pkt []byte) {
	cur := e.taps.Load()
	if cur == nil || len(cur.flows) == 0 {
		return
	}
	proto, src, dst, ok := tupleOf(pkt)
	if !ok {
		return
	}
	now := time.Now()
	for _, c := range cur.flows {
		if c.matches(proto, src, dst) {
			c.offer(now, pkt)
		}
	}
}

// tapRefused offers a packet the policy refused (its parts, in order) to
// the denied captures.
func (g *Gateway) tapRefused(parts ...[]byte) {
	cur := g.ep.taps.Load()
	if cur == nil || len(cur.denied) == 0 {
		return
	}
	now := time.Now()
	for _, c := range cur.denied {
		c.offer(now, parts...)
	}
}

// tapRefusedBuffer is tapRefused for a packet the stack holds; its slices
// are only gathered while something captures.
func (g *Gateway) tapRefusedBuffer(pkt *stack.PacketBuffer) {
	if cur := g.ep.taps.Load(); cur != nil && len(cur.denied) > 0 {
		g.tapRefused(pkt.AsSlices()...)
	}
}

// tupleOf reads protocol and endpoints of an IP packet (ports 0 for ICMP).
// The packet was checked on the way in, or built by the stack.
func tupleOf(pkt []byte) (proto policy.Proto, src, dst netip.AddrPort, ok bool) {
	var next uint8
	var l4 []byte
	var sa, da netip.Addr
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		ihl := int(pkt[0]&0xf) * 4
		if ihl < 20 || len(pkt) < ihl {
			return 0, src, dst, false
		}
		next, l4 = pkt[9], pkt[ihl:]
		sa, da = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		next, l4 = pkt[6], pkt[40:]
		sa, da = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
	default:
		return 0, src, dst, false
	}
	var sp, dp uint16
	switch next {
	case 6, 17:
		if len(l4) < 4 {
			return 0, src, dst, false
		}
		sp, dp = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		proto = policy.TCP
		if next == 17 {
			proto = policy.UDP
		}
	case 1, 58:
		proto = policy.ICMP
	default:
		return 0, src, dst, false
	}
	return proto, netip.AddrPortFrom(sa, sp), netip.AddrPortFrom(da, dp), true
}
