package netstack

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/tunwall/tunwall/policy"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// EchoConn is an upstream ICMP echo socket for one flow (one client, one
// destination, one echo identifier).
type EchoConn interface {
	// WriteEcho sends an echo request with this sequence number and
	// payload. It and ReadEcho may return an *ICMPError: an error the
	// network sent back for an earlier request. The connection stays
	// usable after it; a write that returned one sent nothing.
	WriteEcho(seq uint16, payload []byte) error
	// ReadEcho waits for the next echo reply of this flow and copies its
	// payload into buf. After the read deadline it returns an error that
	// wraps os.ErrDeadlineExceeded.
	ReadEcho(buf []byte) (seq uint16, n int, err error)
	SetReadDeadline(t time.Time) error
	Close() error
}

// ICMPError is an ICMP error that came back for an echo request (or, inside
// the gateway, a UDP datagram) sent upstream: who sent it (a router on the
// way, the destination, or this host when the destination did not answer
// its neighbour solicitations), its type and code, Info (the next-hop MTU
// of "fragmentation needed" and "packet too big", the pointer of a
// parameter problem), and the request's sequence number and payload (the
// datagram's payload) as far as the error quoted it.
type ICMPError struct {
	From       netip.Addr
	Type, Code uint8
	Info       uint32
	Seq        uint16
	Payload    []byte
}

func (e *ICMPError) Error() string {
	return fmt.Sprintf("icmp type %d code %d from %s", e.Type, e.Code, e.From)
}

// hopLimiter is an EchoConn that can send its requests with the TTL (hop
// limit) the client's request had left (see limitedHops; 0: the host's
// default).
type hopLimiter interface{ SetHopLimit(hops uint8) error }

// PingFunc opens an EchoConn towards dst.
type PingFunc func(ctx context.Context, dst netip.Addr) (EchoConn, error)

// icmpHandler answers echo requests from the device in place of gVisor:
// only a real upstream reply produces a reply to the client.
type icmpHandler struct {
	g   *Gateway
	dec *echoDecoder // reader goroutine only

	mu    sync.Mutex // guards flows
	flows map[icmpKey]*icmpFlow
}

type icmpKey struct {
	src, dst netip.Addr
	id       uint16
}

// icmpFlow is one allowed echo flow.
type icmpFlow struct {
	h       *icmpHandler
	key     icmpKey
	id      uint64
	flow    policy.Flow
	verdict policy.Verdict
	conn    EchoConn
	start   time.Time

	mu       sync.Mutex // guards the following fields
	out, in  int64
	last     time.Time
	reason   string
	stopOnce sync.Once
}

func newICMPHandler(g *Gateway) *icmpHandler {
	return &icmpHandler{g: g, dec: newEchoDecoder(), flows: make(map[icmpKey]*icmpFlow)}
}

func (fl *icmpFlow) counts() (out, in int64, last time.Time) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.out, fl.in, fl.last
}

// intercept is the endpoint's inspect hook: it consumes echo requests and
// fragmented ICMP, and passes everything else to the stack. A path MTU
// an ICMP error reports is noted on the way (mssClamp.reported).
func (h *icmpHandler) intercept(pkt []byte) bool {
	var req echoRequest
	switch h.dec.classify(pkt, &req) {
	case dropFragment:
		h.g.stats.Fragments.Add(1)
		return true
	case isEcho:
		h.echo(&req)
		return true
	case tooBig:
		if tb := &h.dec.tooBig; h.g.mss != nil && h.sentOnLiveFlow(tb.quoted) {
			h.g.mss.reported(tb.client, tb.mtu, tb.from)
		}
	}
	return false
}

// sentOnLiveFlow reports whether quoted, the start of a packet a router
// on the client's side could not forward, is one tunwall sent a client on
// a flow still live: a TCP segment or UDP datagram of one of the stack's
// endpoints, or an echo reply of an echo flow. A report about any other
// packet is not taken, as the kernel takes none that no socket of its own
// matches: no one can narrow a client's path by quoting a packet tunwall
// never sent, without knowing a live flow's addresses and ports.
func (h *icmpHandler) sentOnLiveFlow(quoted []byte) bool {
	var (
		netProto tcpip.NetworkProtocolNumber
		proto    uint8
		server   netip.Addr // the quoted packet's source
		client   netip.Addr
		upper    []byte
	)
	switch {
	case len(quoted) >= ipv4HeaderLen && quoted[0]>>4 == 4:
		ihl := int(quoted[0]&0xf) * 4
		if ihl < ipv4HeaderLen || len(quoted) < ihl+8 || binary.BigEndian.Uint16(quoted[6:])&0x1fff != 0 {
			return false // no ports: cut short, or a later fragment
		}
		netProto, proto, upper = header.IPv4ProtocolNumber, quoted[9], quoted[ihl:]
		server, client = netip.AddrFrom4([4]byte(quoted[12:16])), netip.AddrFrom4([4]byte(quoted[16:20]))
	case len(quoted) >= ipv6HeaderLen && quoted[0]>>4 == 6:
		next, off, frag := ipv6Upper(quoted)
		if frag || off+8 > len(quoted) {
			return false
		}
		netProto, proto, upper = header.IPv6ProtocolNumber, next, quoted[off:]
		server, client = netip.AddrFrom16([16]byte(quoted[8:24])), netip.AddrFrom16([16]byte(quoted[24:40]))
	default:
		return false
	}
	switch proto {
	case protoTCP, protoUDP:
		id := stack.TransportEndpointID{
			LocalAddress:  tcpip.AddrFromSlice(server.AsSlice()),
			LocalPort:     binary.BigEndian.Uint16(upper),
			RemoteAddress: tcpip.AddrFromSlice(client.AsSlice()),
			RemotePort:    binary.BigEndian.Uint16(upper[2:]),
		}
		return h.g.stack.FindTransportEndpoint(netProto, tcpip.TransportProtocolNumber(proto), id, nicID) != nil
	case protoICMPv4, protoICMPv6:
		if proto == protoICMPv4 && upper[0] != icmp4EchoReply || proto == protoICMPv6 && upper[0] != icmp6EchoReply {
			return false
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.flows[icmpKey{client, server, binary.BigEndian.Uint16(upper[4:])}] != nil
	}
	return false
}

// echo handles one echo request: through an existing flow, or by judging
// a new one.
func (h *icmpHandler) echo(req *echoRequest) {
	key := icmpKey{req.src, req.dst, req.id}
	h.mu.Lock()
	fl := h.flows[key]
	h.mu.Unlock()
	if fl != nil {
		fl.send(req)
		return
	}
	typ := uint8(icmp4Echo)
	if req.dst.Is6() {
		typ = icmp6Echo
	}
	f := policy.Flow{Proto: policy.ICMP, Src: netip.AddrPortFrom(req.src, 0), Dst: netip.AddrPortFrom(req.dst, 0), Type: typ}
	now := time.Now()
	idle := h.g.cfg.Limits.UDPIdle
	// Echo flows are told apart by identifier: it stands in the source port.
	ck := flowKey{policy.ICMP, netip.AddrPortFrom(req.src, req.id), f.Dst}
	var capture func() func()
	if h.g.owners != nil {
		capture = func() func() {
			r := req.clone()
			return func() { h.echo(r) }
		}
	}
	fid, v, held := h.g.judge(&f, ck, now, idle, capture)
	if held {
		return
	}
	if v.Effective() != policy.Allow {
		h.g.tapRefused(req.raw)
	}
	switch v.Effective() {
	case policy.Deny:
		return
	case policy.Reject:
		h.unreachable(req, true)
		return
	}
	if !h.g.reserve(fid, f, &v) {
		h.unreachable(req, true)
		return
	}
	ctx, cancel := context.WithTimeout(h.g.ctx, h.g.cfg.DialTimeout)
	conn, err := h.g.cfg.Ping(ctx, req.dst)
	cancel()
	if err != nil {
		h.g.dialFailed(fid, f, v, 0, err)
		h.g.flows.remove(fid)
		h.unreachable(req, false)
		return
	}
	fl = &icmpFlow{h: h, key: key, id: fid, flow: f, verdict: v, conn: conn, start: now, last: now}
	h.mu.Lock()
	h.flows[key] = fl
	h.mu.Unlock()
	h.g.flows.add(fid, f, v, now, fl)
	go fl.readLoop()
	fl.send(req)
}

// unreachable answers req with "administratively prohibited" (policy) or
// "host/address unreachable" (upstream failure).
func (h *icmpHandler) unreachable(req *echoRequest, prohibited bool) {
	typ, code := uint8(icmp4Unreachable), uint8(icmp4CodeHostUnreachable)
	if prohibited {
		code = icmp4CodeAdminProhibited
	}
	if req.dst.Is6() {
		typ, code = icmp6Unreachable, icmp6CodeAddrUnreachable
		if prohibited {
			code = icmp6CodeAdminProhibited
		}
	}
	h.g.ep.WriteRaw(icmpError(req.raw, req.src, req.dst, typ, code))
}

// send forwards one echo request upstream. An ICMP error reported on the
// write belongs to an earlier request: it is passed on and the request
// sent once more.
func (fl *icmpFlow) send(req *echoRequest) {
	if hl, ok := fl.conn.(hopLimiter); ok {
		hl.SetHopLimit(limitedHops(req.raw))
	}
	for try := 0; ; try++ {
		err := fl.conn.WriteEcho(req.seq, req.payload)
		if err == nil {
			break
		}
		var ie *ICMPError
		if !errors.As(err, &ie) {
			return // like a lost packet: the client's ping reports it
		}
		fl.passOn(ie)
		if try == 1 {
			return
		}
	}
	fl.mu.Lock()
	fl.out += int64(len(req.payload))
	fl.last = time.Now()
	fl.mu.Unlock()
}

// readLoop relays upstream replies to the client until the flow is idle
// or closed, then reports its end.
func (fl *icmpFlow) readLoop() {
	idle := fl.h.g.cfg.Limits.UDPIdle
	buf := make([]byte, 65535)
	for {
		fl.mu.Lock()
		deadline := fl.last.Add(idle)
		fl.mu.Unlock()
		fl.conn.SetReadDeadline(deadline)
		seq, n, err := fl.conn.ReadEcho(buf)
		var ie *ICMPError
		if errors.As(err, &ie) {
			fl.passOn(ie)
			continue
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(fl.deadline(idle)) {
				continue // a request came in meanwhile: wait longer
			}
			fl.close(reasonIdle)
			break
		}
		pkt := echoReply(fl.key.src, fl.key.dst, fl.key.id, seq, buf[:n])
		if fl.h.g.ep.WriteRaw(pkt) == nil {
			fl.mu.Lock()
			fl.in += int64(n)
			fl.last = time.Now()
			fl.mu.Unlock()
		}
	}
	fl.h.mu.Lock()
	delete(fl.h.flows, fl.key)
	fl.h.mu.Unlock()
	fl.mu.Lock()
	st := FlowStats{BytesOut: fl.out, BytesIn: fl.in, Duration: time.Since(fl.start), Reason: fl.reason}
	fl.mu.Unlock()
	fl.h.g.closed(fl.id, fl.flow, fl.verdict, st)
	fl.h.g.flows.remove(fl.id)
}

// passOn sends the client the ICMP error that came back for one of its
// echo requests, as a router between them would. An error this host
// raised itself (a neighbour that did not answer) is sent in the
// destination's name: the client's host would drop a packet from the TUN
// carrying one of its own addresses, which this host's may be.
func (fl *icmpFlow) passOn(e *ICMPError) {
	fl.h.g.ep.WriteRaw(echoError(fl.key.src, fl.key.dst, sender(e.From, fl.key.dst), fl.key.id, e))
}

// sender is the address an ICMP error from from, about a packet to dst, is
// passed on from: from itself, or dst when from is this host (or unknown).
func sender(from, dst netip.Addr) netip.Addr {
	if !from.IsValid() || from.Is4() != dst.Is4() || isLocalAddr(from) {
		return dst
	}
	return from
}

// isLocalAddr reports whether a is one of this host's addresses. It reads
// them afresh: ICMP errors are few (and rate-limited by the hosts that
// send them).
func isLocalAddr(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, n := range addrs {
		if p, ok := n.(*net.IPNet); ok {
			if b, ok := netip.AddrFromSlice(p.IP); ok && b.Unmap() == a {
				return true
			}
		}
	}
	return false
}

func (fl *icmpFlow) deadline(idle time.Duration) time.Time {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.last.Add(idle)
}

// close ends the flow (flow table: shutdown/limit; reader: idle).
func (fl *icmpFlow) close(reason string) {
	fl.mu.Lock()
	if fl.reason == "" {
		fl.reason = reason
	}
	fl.mu.Unlock()
	fl.stopOnce.Do(func() { fl.conn.Close() })
}
