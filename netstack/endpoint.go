package netstack

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// headroom is the offset at which packets start in every buffer handed to
// the Device; it leaves room for a virtio-net header.
const headroom = 16

// maxPacket is the largest packet the endpoint reads or writes.
const maxPacket = 65535

// endpoint is the link endpoint between a Device and the gVisor stack.
// One goroutine reads batches from the device and delivers them (through
// GRO) to the stack; gVisor's goroutines write through WritePackets. An
// offloading device (the Linux TUN) takes each packet straight from the
// stack's buffers in one raw system call; any other device gets batches
// copied into pooled buffers, one Device.Write call per batch.
type endpoint struct {
	dev     Device
	offload tcpOffloader // nil: every packet takes the batched, copying path
	mtu     uint32
	batch   int
	inspect func(pkt []byte) bool // true: the packet was consumed (not for gVisor)
	stats   *Stats

	mu         sync.RWMutex // guards dispatcher
	dispatcher stack.NetworkDispatcher

	started atomic.Bool
	done    chan struct{} // closed when the reader goroutine has exited
	writes  sync.Pool     // *writeBatch

	taps atomic.Pointer[captures] // nil: nothing is being captured

	// pathMTU, when set, returns the MTU of this host's path towards
	// dst (the client) for a packet from src, or 0 if unknown. Datagrams
	// larger than it are sent in fragments (IPv6) or without DF (IPv4)
	// (fit.go). Set before start.
	pathMTU func(dst, src []byte) int
	fragIDs atomic.Uint32 // identification of the last packet fragmented
}

var (
	_ stack.LinkEndpoint = (*endpoint)(nil)
	_ stack.GSOEndpoint  = (*endpoint)(nil)
)

func newEndpoint(dev Device, mtu int, stats *Stats, inspect func([]byte) bool) *endpoint {
	e := &endpoint{dev: dev, mtu: uint32(mtu), batch: max(dev.BatchSize(), 1), inspect: inspect, stats: stats, done: make(chan struct{})}
	if o, ok := dev.(tcpOffloader); ok && o.CanOffloadTCP() {
		e.offload = o
	}
	e.writes.New = func() any { return &writeBatch{} }
	e.fragIDs.Store(rand.Uint32())
	return e
}

// MTU implements stack.LinkEndpoint.
func (e *endpoint) MTU() uint32 { return e.mtu }

// SetMTU implements stack.LinkEndpoint.
func (e *endpoint) SetMTU(mtu uint32) { e.mtu = mtu }

// MaxHeaderLength implements stack.LinkEndpoint: IP packets, no link header.
func (*endpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint.
func (*endpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint.
func (*endpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint. Receive checksums are
// verified by deliver before a packet reaches the stack.
func (*endpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// ARPHardwareType implements stack.LinkEndpoint.
func (*endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint.
func (*endpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint.
func (*endpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// SetOnCloseAction implements stack.LinkEndpoint.
func (*endpoint) SetOnCloseAction(func()) {}

// Close implements stack.LinkEndpoint. The reader stops when the device is
// closed; the owner closes the device.
func (*endpoint) Close() {}

// GSOMaxSize implements stack.GSOEndpoint.
func (*endpoint) GSOMaxSize() uint32 { return 65000 }

// SupportedGSO implements stack.GSOEndpoint: with an offloading device gVisor
// hands over TCP segments of up to 64 KB and the kernel splits them.
func (e *endpoint) SupportedGSO() stack.SupportedGSO {
	if e.offload != nil {
		return stack.HostGSOSupported
	}
	return stack.GSONotSupported
}

// Attach implements stack.LinkEndpoint.
func (e *endpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	e.dispatcher = d
	e.mu.Unlock()
}

// start starts the reader goroutine. The owner calls it once the stack is
// ready for packets: gVisor attaches the endpoint while the NIC is made,
// before the stack's settings and protocol handlers are in place.
func (e *endpoint) start() {
	if e.started.CompareAndSwap(false, true) {
		go e.readLoop()
	}
}

// IsAttached implements stack.LinkEndpoint.
func (e *endpoint) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

// Wait implements stack.LinkEndpoint: it returns once the reader has exited
// (after the device was closed), or at once if it never started.
func (e *endpoint) Wait() {
	if e.started.Load() {
		<-e.done
	}
}

// readLoop moves batches from the device into the stack until the device
// is closed.
func (e *endpoint) readLoop() {
	defer close(e.done)
	bufs := make([][]byte, e.batch)
	sizes := make([]int, e.batch)
	for i := range bufs {
		bufs[i] = make([]byte, headroom+maxPacket)
	}
	var g gro.GRO
	g.Init(true)
	for {
		n, err := e.dev.Read(bufs, sizes, headroom)
		if err != nil {
			if errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) {
				return
			}
			// A bad virtio header or an oversized GSO packet loses that
			// read, not the loop.
			e.stats.ReadErrors.Add(1)
			if n == 0 {
				continue
			}
		}
		e.mu.RLock()
		g.Dispatcher = e.dispatcher
		e.mu.RUnlock()
		// GRO only pays when a read brought several segments (a GSO
		// packet the device split); a lone packet goes straight in.
		// Nothing stays in GRO across reads, so order is kept.
		coalesce := n > 1
		for i := 0; i < n; i++ {
			e.deliver(&g, coalesce, bufs[i][headroom:headroom+sizes[i]])
		}
		if coalesce {
			g.Flush()
		}
	}
}

// deliver checks one packet and hands it to the stack.
func (e *endpoint) deliver(g *gro.GRO, coalesce bool, pkt []byte) {
	proto, ok := e.stats.check(pkt)
	if !ok || g.Dispatcher == nil {
		return
	}
	if !checksumsOK(pkt) {
		e.stats.BadChecksum.Add(1)
		return
	}
	e.stats.PacketsIn.Add(1)
	if e.taps.Load() != nil {
		e.tapFlows(pkt)
	}
	if e.inspect != nil && e.inspect(pkt) {
		return
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	pb.NetworkProtocolNumber = proto
	pb.RXChecksumValidated = true
	if coalesce {
		g.Enqueue(pb)
	} else {
		g.Dispatcher.DeliverNetworkPacket(proto, pb)
	}
	pb.DecRef()
}

// inject delivers a packet to the stack again (one that was held while its
// flow's owner was looked up). It was checked when it was first read.
func (e *endpoint) inject(proto tcpip.NetworkProtocolNumber, pkt []byte) {
	e.mu.RLock()
	d := e.dispatcher
	e.mu.RUnlock()
	if d == nil {
		return
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	pb.NetworkProtocolNumber = proto
	pb.RXChecksumValidated = true
	d.DeliverNetworkPacket(proto, pb)
	pb.DecRef()
}

// WritePackets implements stack.LinkEndpoint. Safe for concurrent use.
func (e *endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	if e.offload != nil {
		return e.writeDirect(pkts), nil
	}
	b := e.writes.Get().(*writeBatch)
	defer e.writes.Put(b)
	b.reset()
	written := 0
	for _, pkt := range pkts.AsSlice() {
		e.mayFragment(pkt)
		if !b.add(pkt) {
			e.stats.WriteErrors.Add(1) // larger than any packet we can write
			continue
		}
		last := b.bufs[len(b.bufs)-1][headroom:]
		if e.taps.Load() != nil {
			e.tapFlows(last)
		}
		if mtu := e.splitMTU(pkt); mtu > 0 {
			if frags := e.fragments(last, mtu); frags != nil {
				// The whole packet's slot is reused by its first
				// fragment; the rest follow it into the batch.
				b.bufs = b.bufs[:len(b.bufs)-1]
				for _, f := range frags {
					b.addBytes(f)
					if len(b.bufs) == e.batch {
						written += e.flush(b)
					}
				}
				continue
			}
		}
		if len(b.bufs) == e.batch {
			written += e.flush(b)
		}
	}
	written += e.flush(b)
	return written, nil
}

// writeDirect writes each packet to an offloading device straight from the
// stack's buffers, one system call per packet (a TCP segment of up to
// 64 KB is one packet: the kernel splits it).
func (e *endpoint) writeDirect(pkts stack.PacketBufferList) int {
	written := 0
	for _, pkt := range pkts.AsSlice() {
		if pkt.Size() > maxPacket {
			e.stats.WriteErrors.Add(1) // larger than any packet we can write
			continue
		}
		e.mayFragment(pkt)
		var whole []byte
		mtu := e.splitMTU(pkt)
		if e.taps.Load() != nil || mtu > 0 {
			for _, s := range pkt.AsSlices() {
				whole = append(whole, s...)
			}
			e.tapFlows(whole)
		}
		if mtu > 0 {
			if frags := e.fragments(whole, mtu); frags != nil {
				written += e.writeEach(frags)
				continue
			}
		}
		var err error
		if pkt.GSOOptions.Type != stack.GSONone {
			err = e.writeOffload(pkt)
		} else {
			err = e.offload.WritePacket(pkt.AsSlices())
		}
		if err != nil {
			e.stats.WriteErrors.Add(1)
			continue
		}
		e.stats.PacketsOut.Add(1)
		written++
	}
	return written
}

// writeEach writes packets built outside the stack to an offloading
// device, one system call each, and returns how many it wrote.
func (e *endpoint) writeEach(pkts [][]byte) int {
	written := 0
	for _, p := range pkts {
		if err := e.offload.WritePacket([][]byte{p}); err != nil {
			e.stats.WriteErrors.Add(1)
			continue
		}
		e.stats.PacketsOut.Add(1)
		written++
	}
	return written
}

// WriteRaw writes one packet built outside the stack (ICMP replies and
// errors), in fragments if it is an IPv6 packet larger than the path
// towards its destination. The packet must carry valid checksums.
func (e *endpoint) WriteRaw(pkt []byte) error {
	e.tapFlows(pkt)
	pkts := [][]byte{pkt}
	if mtu := e.rawSplitMTU(pkt); mtu > 0 {
		if frags := e.fragments(pkt, mtu); frags != nil {
			pkts = frags
		}
	}
	b := e.writes.Get().(*writeBatch)
	defer e.writes.Put(b)
	b.reset()
	for _, p := range pkts {
		b.addBytes(p)
	}
	if e.flush(b) != len(pkts) {
		return errors.New("tun write failed")
	}
	return nil
}

func (e *endpoint) writeOffload(pkt *stack.PacketBuffer) error {
	l3 := len(pkt.NetworkHeader().Slice())
	hdr := l3 + len(pkt.TransportHeader().Slice())
	return e.offload.WriteTCPOffload(pkt.AsSlices(), l3, hdr, int(pkt.GSOOptions.MSS))
}

// flush writes the batch to the device, empties it and returns how many
// packets were written (none if the device failed the write).
func (e *endpoint) flush(b *writeBatch) int {
	if len(b.bufs) == 0 {
		return 0
	}
	bufs := b.bufs
	n := len(bufs)
	b.reset()
	if _, err := e.dev.Write(bufs, headroom); err != nil {
		e.stats.WriteErrors.Add(1)
		return 0
	}
	e.stats.PacketsOut.Add(uint64(n))
	return n
}

// writeBatch is a reusable set of write buffers. Each has capacity for the
// largest packet so the device may coalesce segments into it.
type writeBatch struct {
	store [][]byte
	bufs  [][]byte
}

func (b *writeBatch) reset() { b.bufs = b.bufs[:0] }

func (b *writeBatch) slot() []byte {
	i := len(b.bufs)
	if i == len(b.store) {
		b.store = append(b.store, make([]byte, headroom+maxPacket))
	}
	return b.store[i][:headroom]
}

func (b *writeBatch) add(pkt *stack.PacketBuffer) bool {
	if pkt.Size() > maxPacket {
		return false
	}
	buf := b.slot()
	for _, s := range pkt.AsSlices() {
		buf = append(buf, s...)
	}
	b.bufs = append(b.bufs, buf)
	return true
}

func (b *writeBatch) addBytes(pkt []byte) {
	b.bufs = append(b.bufs, append(b.slot(), pkt...))
}
