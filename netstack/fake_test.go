package netstack

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/rs/zerolog"
	"github.com/tunwall/tunwall/policy"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// fakeDevice is a channel-backed Device: tests inject packets as if read
// from a TUN and receive what the gateway writes.
type fakeDevice struct {
	in      chan []byte
	batches chan [][]byte // packets that one Read returns together
	out     chan []byte
	closed  chan struct{}
	once    sync.Once
}

func newFakeDevice() *fakeDevice {
	return &fakeDevice{in: make(chan []byte, 64), batches: make(chan [][]byte, 1), out: make(chan []byte, 256), closed: make(chan struct{})}
}

func (d *fakeDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case p := <-d.in:
		sizes[0] = copy(bufs[0][offset:], p)
		return 1, nil
	case b := <-d.batches:
		for i, p := range b {
			sizes[i] = copy(bufs[i][offset:], p)
		}
		return len(b), nil
	case <-d.closed:
		return 0, os.ErrClosed
	}
}

// Write queues the packets for the test to read. Like a real TUN it never
// blocks: with the queue full (a test that stopped reading) a packet is
// dropped, so a test waiting for it fails rather than hangs the gateway.
func (d *fakeDevice) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		select {
		case d.out <- append([]byte(nil), b[offset:]...):
		default:
		}
	}
	return len(bufs), nil
}

func (d *fakeDevice) BatchSize() int { return 8 }

func (d *fakeDevice) Close() { d.once.Do(func() { close(d.closed) }) }

// recorder is an Events sink that keeps everything.
type recorder struct {
	mu       sync.Mutex
	verdicts []policy.Verdict
	closes   []FlowStats
	refused  []string
	vflows   []policy.Flow // the flow of each verdict
	cflows   []policy.Flow // the flow of each close
	names    []string      // "name rule" of each name judged
}

// verdictFor returns the verdict recorded for the flow from src, if any.
func (r *recorder) verdictFor(src string) (policy.Flow, policy.Verdict, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, f := range r.vflows {
		if f.Src.String() == src || f.Src.Addr().String() == src {
			return f, r.verdicts[i], true
		}
	}
	return policy.Flow{}, policy.Verdict{}, false
}

// closeFor returns the close event's flow for the flow from src, if any.
func (r *recorder) closeFor(src string) (policy.Flow, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.cflows {
		if f.Src.String() == src {
			return f, true
		}
	}
	return policy.Flow{}, false
}

// snapshot returns copies of what was recorded so far.
func (r *recorder) snapshot() (verdicts []policy.Verdict, closes []FlowStats, refused []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]policy.Verdict(nil), r.verdicts...), append([]FlowStats(nil), r.closes...), append([]string(nil), r.refused...)
}

func (r *recorder) verdictList() []policy.Verdict { v, _, _ := r.snapshot(); return v }
func (r *recorder) closeList() []FlowStats        { _, c, _ := r.snapshot(); return c }
func (r *recorder) refusedList() []string         { _, _, f := r.snapshot(); return f }

func (r *recorder) Verdict(_ uint64, f policy.Flow, v policy.Verdict) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.verdicts = append(r.verdicts, v)
	r.vflows = append(r.vflows, f)
}

func (r *recorder) Closed(_ uint64, f policy.Flow, _ policy.Verdict, st FlowStats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closes = append(r.closes, st)
	r.cflows = append(r.cflows, f)
}

func (r *recorder) Name(_ uint64, f policy.Flow, _ string, v policy.Verdict) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.names = append(r.names, f.Domain+" "+v.Rule)
}

func (r *recorder) Refused(_ uint64, _ policy.Flow, limit string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refused = append(r.refused, limit)
}

// testPolicy is the rule set the netstack tests share.
const testPolicy = `
policy:
  default: deny
  rules:
    - {name: web, action: allow, proto: [tcp, udp], ports: [80]}
    - {name: refuse, action: reject, proto: [tcp, udp], ports: [81]}
    - {name: ping-ok, action: allow, proto: icmp, dst: [192.0.2.1, 192.0.2.2, "2001:db8::1"]}
    - {name: ping-no, action: reject, proto: icmp, dst: [192.0.2.3]}
`

type harness struct {
	t   *testing.T
	dev *fakeDevice
	gw  *Gateway
	ev  *recorder
}

// newHarness starts a gateway on a fake device with testPolicy and the
// given dialer and pinger (nil: ones that fail).
func newHarness(t *testing.T, dial DialFunc, ping PingFunc, lim policy.Limits) *harness {
	t.Helper()
	return newHarnessWith(t, testPolicy, nil, dial, ping, lim)
}

// newHarnessWith starts a gateway with its own policy file and owner
// source (nil: none); opts change its Config further.
func newHarnessWith(t *testing.T, policyYAML string, owners Owners, dial DialFunc, ping PingFunc, lim policy.Limits, opts ...func(*Config)) *harness {
	t.Helper()
	cfg, err := policy.Parse("test.yaml", []byte(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	if dial == nil {
		dial = func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("no upstream in this test")
		}
	}
	if ping == nil {
		ping = func(context.Context, netip.Addr) (EchoConn, error) {
			return nil, errors.New("no upstream in this test")
		}
	}
	h := &harness{t: t, dev: newFakeDevice(), ev: &recorder{}}
	c := Config{Device: h.dev, MTU: 1500, Policy: cfg.Policy, Limits: lim, Dial: dial, Ping: ping, Events: h.ev, Owners: owners, Log: zerolog.Nop()}
	for _, o := range opts {
		o(&c)
	}
	h.gw, err = New(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.gw.Close()
		h.dev.Close()
		h.gw.Wait()
	})
	return h
}

func (h *harness) send(pkt []byte) { h.dev.in <- pkt }

// sendBatch has the gateway read pkts (at most its batch size) together.
func (h *harness) sendBatch(pkts ...[]byte) { h.dev.batches <- pkts }

// next returns the next packet the gateway wrote, or fails after 5s.
func (h *harness) next() gopacket.Packet {
	h.t.Helper()
	select {
	case b := <-h.dev.out:
		first := layers.LayerTypeIPv4
		if b[0]>>4 == 6 {
			first = layers.LayerTypeIPv6
		}
		return gopacket.NewPacket(b, first, gopacket.Default)
	case <-time.After(5 * time.Second):
		h.t.Fatal("gateway wrote nothing")
		return nil
	}
}

// nothingBefore proves the gateway wrote nothing for the packets sent so
// far: it sends a SYN to the rejected port 81 and requires the very next
// written packet to be the RST answering it. The device is read in order,
// so any answer to earlier packets from the reader would come first.
func (h *harness) nothingBefore(src string) {
	h.t.Helper()
	h.send(tcpSyn(h.t, src+":4999", "192.0.2.1:81"))
	p := h.next()
	tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok || !tcp.RST || tcp.DstPort != 4999 {
		h.t.Fatalf("expected only the marker RST, got %v", p)
	}
}

// Packet builders (valid checksums).

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func ipLayer(src, dst netip.Addr, proto layers.IPProtocol) (gopacket.SerializableLayer, gopacket.NetworkLayer) {
	if src.Is4() {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		return ip, ip
	}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	return ip, ip
}

func tcpSyn(t testing.TB, src, dst string) []byte {
	return tcpSynSeq(t, src, dst, 1000)
}

func tcpSynSeq(t testing.TB, src, dst string, seq uint32) []byte {
	return tcpSegment(t, src, dst, layers.TCP{SYN: true, Seq: seq, Window: 65535}, nil)
}

// tcpFinAck is the client's FIN, acknowledging everything up to ack.
func tcpFinAck(t testing.TB, src, dst string, seq, ack uint32) []byte {
	return tcpSegment(t, src, dst, layers.TCP{FIN: true, ACK: true, Seq: seq, Ack: ack, Window: 65535}, nil)
}

// tcpSegment builds the IP packet from src to dst carrying the TCP segment
// tcp (its ports and checksum filled in) with payload.
func tcpSegment(t testing.TB, src, dst string, tcp layers.TCP, payload []byte) []byte {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	ip, nl := ipLayer(s.Addr(), d.Addr(), layers.IPProtocolTCP)
	tcp.SrcPort, tcp.DstPort = layers.TCPPort(s.Port()), layers.TCPPort(d.Port())
	tcp.SetNetworkLayerForChecksum(nl)
	return serialize(t, ip, &tcp, gopacket.Payload(payload))
}

func udpPacket(t testing.TB, src, dst string, payload []byte) []byte {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	ip, nl := ipLayer(s.Addr(), d.Addr(), layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(s.Port()), DstPort: layers.UDPPort(d.Port())}
	udp.SetNetworkLayerForChecksum(nl)
	return serialize(t, ip, udp, gopacket.Payload(payload))
}

func echoRequestPacket(t testing.TB, src, dst string, id, seq uint16, payload []byte) []byte {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	if s.Is4() {
		ip, _ := ipLayer(s, d, layers.IPProtocolICMPv4)
		icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: id, Seq: seq}
		return serialize(t, ip, icmp, gopacket.Payload(payload))
	}
	ip, nl := ipLayer(s, d, layers.IPProtocolICMPv6)
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
	icmp.SetNetworkLayerForChecksum(nl)
	return serialize(t, ip, icmp, &layers.ICMPv6Echo{Identifier: id, SeqNumber: seq}, gopacket.Payload(payload))
}

func tcpAck(t testing.TB, src, dst string, seq, ack uint32) []byte {
	return tcpData(t, src, dst, seq, ack, nil)
}

func tcpData(t testing.TB, src, dst string, seq, ack uint32, payload []byte) []byte {
	return tcpSegment(t, src, dst, layers.TCP{ACK: true, PSH: len(payload) > 0, Seq: seq, Ack: ack, Window: 65535}, payload)
}

func netipPort(addr string, port int) string {
	return netip.AddrPortFrom(netip.MustParseAddr(addr), uint16(port)).String()
}

// nextTCP returns the next TCP segment the gateway wrote.
func (h *harness) nextTCP(tb testing.TB) *layers.TCP {
	select {
	case b := <-h.dev.out:
		p := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Lazy)
		if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
			return tcp
		}
		tb.Fatalf("not TCP: %v", p)
	case <-time.After(5 * time.Second):
		tb.Fatal("gateway wrote nothing")
	}
	return nil
}

func tcpRST(t testing.TB, src, dst string, seq, ack uint32) []byte {
	return tcpSegment(t, src, dst, layers.TCP{RST: true, ACK: true, Seq: seq, Ack: ack}, nil)
}

// fixChecksums sets the IPv4 header checksum and the TCP, UDP or ICMP
// checksum of pkt, as far as its lengths allow, so that a packet a test
// changed (or the fuzzer mutated) passes the endpoint's verification.
func fixChecksums(pkt []byte) {
	var st Stats
	if _, ok := st.check(pkt); !ok {
		return
	}
	if pkt[0]>>4 == 4 {
		ihl := int(pkt[0]&0xf) * 4
		binary.BigEndian.PutUint16(pkt[10:], 0)
		binary.BigEndian.PutUint16(pkt[10:], ^checksum.Checksum(pkt[:ihl], 0))
	}
	src, dst, proto, payload, frag, ok := upperLayer(pkt)
	if frag || !ok {
		return // a fragment: the stack checks the reassembled datagram
	}
	at := map[uint8]int{6: 16, 17: 6, protoICMPv4: 2, protoICMPv6: 2}
	i, known := at[proto]
	if !known || len(payload) < i+2 {
		return
	}
	binary.BigEndian.PutUint16(payload[i:], 0)
	var sum uint16
	if proto != protoICMPv4 {
		sum = pseudoHeader(src, dst, proto, len(payload))
	}
	binary.BigEndian.PutUint16(payload[i:], ^checksum.Checksum(payload, sum))
}
