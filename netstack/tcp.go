package netstack

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/tunwall/tunwall/policy"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// failedSYNTTL is how long the SYN of a flow whose dial failed is
// remembered, and maxFailedSYNs how many such SYNs at most (failedSYN).
const (
	failedSYNTTL  = 10 * time.Second
	maxFailedSYNs = 4096
)

// staleProbe is how long a SYN held for an owned 4-tuple (reuseTuple)
// waits before it is shown to an old flow that is still established.
const staleProbe = 100 * time.Millisecond

// deniedTCPTTL is how long a denied SYN's verdict is remembered, covering
// the client's SYN retransmissions (Linux gives up after about two minutes).
const deniedTCPTTL = 3 * time.Minute

// tcpHandler judges SYNs for flows gVisor does not know and sets up the
// allowed ones.
type tcpHandler struct {
	g   *Gateway
	fwd *tcp.Forwarder

	mu      sync.Mutex // guards pending, owned and failed
	pending map[stack.TransportEndpointID]*tcpFlow
	owned   map[stack.TransportEndpointID]*ownedTuple
	failed  map[stack.TransportEndpointID]failedSYN

	handshakes sync.Mutex // guards the following fields
	stopping   bool       // stopHandshakes was called: start no more
	accepting  int        // handshakes under way in accept
}

// tcpFlow is one allowed TCP flow, from its SYN to its close event.
type tcpFlow struct {
	id      uint64
	flow    policy.Flow
	verdict policy.Verdict
	start   time.Time
	relay   relay
	sniff   bool // judged after its first bytes (the verdict may depend on its name)
	// hops is the TTL (hop limit) the SYN had left, if below reachHops
	// (else 0), and syn its IP and TCP headers: the upstream SYN goes out
	// with hops, and a Time Exceeded for it goes back quoting syn.
	hops uint8
	syn  []byte
	isn  uint32 // the SYN's sequence number
}

// failedSYN is the SYN of a flow whose upstream dial failed and which was
// answered with RST. A client retransmits its SYN once a second at first
// (Linux), and a dial that fails after the neighbour lookup gives up does
// so on the second too: a retransmission that crossed the RST is the same
// attempt, not a new connection. It gets a RST of its own at once instead
// of a verdict and a dial of its own, which the client, already told, has
// stopped waiting for. A new connection on the 4-tuple has a new sequence
// number and is judged as usual.
type failedSYN struct {
	isn     uint32
	expires time.Time
}

// ownedTuple is the 4-tuple of a flow whose endpoint is its own: from the
// start of its handshake until the relay has let go of the endpoint (or
// the flow ended before its relay began).
type ownedTuple struct {
	done chan struct{} // closed once the flow has let go of the endpoint
	isn  uint32        // the sequence number of the flow's SYN
	held bool          // a SYN for the same 4-tuple waits for done
}

func newTCPHandler(g *Gateway) *tcpHandler {
	h := &tcpHandler{g: g, pending: make(map[stack.TransportEndpointID]*tcpFlow), owned: make(map[stack.TransportEndpointID]*ownedTuple),
		failed: make(map[stack.TransportEndpointID]failedSYN)}
	// The forwarder's own in-flight cap is set above ours so that our
	// limit (with its RST and its count) is the one that applies.
	h.fwd = tcp.NewForwarder(g.stack, 0, g.cfg.Limits.MaxPendingTCP+64, func(r *tcp.ForwarderRequest) {
		g.workers.run(func() { h.connect(r) })
	})
	g.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, h.handle)
	return h
}

// handle runs on the packet path for every TCP segment that matches no
// endpoint. Returning false makes the stack answer with RST.
func (h *tcpHandler) handle(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	th := header.TCP(pkt.TransportHeader().Slice())
	if len(th) < header.TCPMinimumSize {
		return true
	}
	if fl := th.Flags(); !fl.Contains(header.TCPFlagSyn) || fl.Contains(header.TCPFlagAck) {
		// Not the start of a flow: drop quietly, as a stateful firewall
		// drops packets of connections it does not track.
		h.g.stats.StrayTCP.Add(1)
		return true
	}
	now, isn := time.Now(), th.SequenceNumber()
	h.mu.Lock()
	_, inFlight := h.pending[id]
	fs, failed := h.failed[id]
	if failed && (fs.isn != isn || now.After(fs.expires)) {
		delete(h.failed, id)
		failed = false
	}
	h.mu.Unlock()
	if inFlight {
		return true // retransmitted SYN while upstream is being dialed
	}
	if failed {
		h.g.stats.FailedSYNs.Add(1)
		return false // retransmitted SYN of a failed dial: RST again
	}
	f := flowOf(policy.TCP, id)
	if h.needsName(f) {
		// Judged once the client's first bytes tell the name.
		fid := h.g.flows.id()
		if !h.admit(fid, f, nil) {
			return false
		}
		return h.forward(id, pkt, &tcpFlow{id: fid, flow: f, start: now, sniff: true, isn: isn})
	}
	fid, v, held := h.g.judge(&f, keyOf(f), now, deniedTCPTTL, h.g.capture(pkt))
	if held {
		return true
	}
	if v.Effective() != policy.Allow {
		h.g.tapRefusedBuffer(pkt)
		return v.Effective() == policy.Deny
	}
	if !h.admit(fid, f, &v) {
		return false
	}
	tf := &tcpFlow{id: fid, flow: f, verdict: v, start: now, isn: isn}
	tf.hops, tf.syn = limitedSYN(pkt)
	return h.forward(id, pkt, tf)
}

// timeExceeded returns the Time Exceeded that failed a dial (err), if
// that is what failed it.
func timeExceeded(err error) *ICMPError {
	var e *ICMPError
	if errors.As(err, &e) && (e.From.Is4() && e.Type == icmp4TimeExceeded || e.From.Is6() && e.Type == icmp6TimeExceeded) {
		return e
	}
	return nil
}

// limitedSYN returns the TTL (hop limit) a SYN has left and a copy of its
// IP and TCP headers if that is below reachHops, else nothing.
func limitedSYN(pkt *stack.PacketBuffer) (uint8, []byte) {
	nh := pkt.NetworkHeader().Slice()
	hops := limitedHops(nh)
	if hops == 0 {
		return 0, nil
	}
	return hops, append(slices.Clip(slices.Clone(nh)), pkt.TransportHeader().Slice()...)
}

// forward hands an admitted SYN to gVisor's forwarder, which calls connect.
func (h *tcpHandler) forward(id stack.TransportEndpointID, pkt *stack.PacketBuffer, tf *tcpFlow) bool {
	h.mu.Lock()
	h.pending[id] = tf
	h.mu.Unlock()
	if !h.fwd.HandlePacket(id, pkt) { // a SYN the forwarder cannot parse
		h.g.closed(tf.id, tf.flow, tf.verdict, FlowStats{Reason: reasonRST})
		h.finishPending(id, tf)
		return false
	}
	return true
}

// admit applies max_pending_tcp and max_flows to an allowed SYN; v is its
// verdict, nil when it is judged later (by its name).
func (h *tcpHandler) admit(fid uint64, f policy.Flow, v *policy.Verdict) bool {
	h.mu.Lock()
	n := len(h.pending)
	h.mu.Unlock()
	if n >= h.g.cfg.Limits.MaxPendingTCP {
		h.g.stats.RefusedPendingTCP.Add(1)
		h.g.refused(fid, f, v, "max_pending_tcp")
		return false
	}
	return h.g.reserve(fid, f, v)
}

// rememberFailed notes the SYN (its sequence number isn) of a flow on id
// whose dial failed (failedSYN), while it is still pending. When
// maxFailedSYNs are noted and none has expired, it is not noted.
func (h *tcpHandler) rememberFailed(id stack.TransportEndpointID, isn uint32) {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.failed) >= maxFailedSYNs {
		for k, fs := range h.failed {
			if now.After(fs.expires) {
				delete(h.failed, k)
			}
		}
		if len(h.failed) >= maxFailedSYNs {
			return
		}
	}
	h.failed[id] = failedSYN{isn: isn, expires: now.Add(failedSYNTTL)}
}

func (h *tcpHandler) finishPending(id stack.TransportEndpointID, tf *tcpFlow) {
	h.mu.Lock()
	delete(h.pending, id)
	h.mu.Unlock()
	h.g.flows.remove(tf.id)
}

// connect runs on a flow worker for each allowed SYN: it dials upstream
// first and only then completes the client's handshake.
func (h *tcpHandler) connect(r *tcp.ForwarderRequest) {
	id := r.ID()
	h.mu.Lock()
	tf := h.pending[id]
	h.mu.Unlock()
	if tf == nil { // cannot happen: handle registers before forwarding
		r.Complete(true)
		return
	}
	if tf.sniff {
		h.connectNamed(r, id, tf)
		return
	}
	up, err := h.g.dial("tcp", tf.flow, tf.hops)
	if err != nil {
		if e := timeExceeded(err); e != nil && tf.syn != nil {
			// The SYN ran out of hops on the way, as the client asked
			// (traceroute): the router's error goes back, not a RST.
			r.Complete(false)
			h.g.ep.WriteRaw(icmpErrorFrom(sender(e.From, tf.flow.Dst.Addr()), tf.flow.Src.Addr(), tf.syn, e.Type, e.Code, e.Info))
		} else {
			r.Complete(true) // RST, as if the destination had refused
			h.rememberFailed(id, tf.isn)
		}
		h.dialFailed(tf, err)
		h.finishPending(id, tf)
		return
	}
	ep, wq, release, terr := h.accept(r, id, tf.isn)
	if terr != nil { // the client never completed the handshake
		up.Close()
		reason := reasonRST
		if h.g.ctx.Err() != nil {
			reason = reasonShutdown
		}
		h.g.closed(tf.id, tf.flow, tf.verdict, FlowStats{Duration: time.Since(tf.start), Reason: reason})
		h.g.flows.remove(tf.id)
		return
	}
	h.run(tf, newClientConn(wq, ep), up, nil, release)
}

// accept completes the client's handshake (or fails it) and ends the
// flow's pending state; isn is the sequence number of the client's SYN.
// Once the gateway is stopping it resets the client instead. The flow owns
// its 4-tuple from the start of the handshake (reuseTuple): until accept
// returns if the handshake fails, else until the flow calls release.
func (h *tcpHandler) accept(r *tcp.ForwarderRequest, id stack.TransportEndpointID, isn uint32) (tcpip.Endpoint, *waiter.Queue, func(), tcpip.Error) {
	notPending := func() {
		h.mu.Lock()
		delete(h.pending, id)
		h.mu.Unlock()
	}
	h.handshakes.Lock()
	if h.stopping {
		h.handshakes.Unlock()
		r.Complete(true)
		notPending()
		return nil, nil, nil, &tcpip.ErrConnectionAborted{}
	}
	h.accepting++
	h.handshakes.Unlock()
	// Owned before the handshake starts: a client may reset the connection
	// as soon as its side is up and open the next one from the same port,
	// before CreateEndpoint has returned.
	release := h.own(id, isn)
	wq := new(waiter.Queue)
	ep, err := r.CreateEndpoint(wq)
	r.Complete(err != nil)
	h.handshakes.Lock()
	h.accepting--
	h.handshakes.Unlock()
	// Before release: a SYN held for the tuple goes in once it is
	// released, and one that finds the tuple pending is dropped.
	notPending()
	if err != nil {
		release()
		return nil, nil, nil, err
	}
	return ep, wq, release, nil
}

// stopHandshakes runs while the gateway stops, before the stack closes: it
// lets no handshake start and aborts those under way. Each registers its
// endpoint somewhere inside CreateEndpoint, so the stack's endpoints are
// aborted until no handshake is left; one left to start after the stack
// closed would wait forever, its segments no longer processed. It gives
// up after timeout.
func (h *tcpHandler) stopHandshakes(timeout time.Duration) {
	h.handshakes.Lock()
	h.stopping = true
	h.handshakes.Unlock()
	for deadline := time.Now().Add(timeout); ; {
		h.handshakes.Lock()
		n := h.accepting
		h.handshakes.Unlock()
		if n == 0 || time.Now().After(deadline) {
			return
		}
		for _, ep := range h.g.stack.RegisteredEndpoints() {
			ep.Abort()
		}
		time.Sleep(time.Millisecond)
	}
}

// tcpSYN returns the addresses and the segment of a checked packet that
// opens a TCP connection (SYN, no ACK, no RST).
func tcpSYN(pkt []byte) (src, dst, seg []byte, ok bool) {
	src, dst, proto, seg, frag, ok := upperLayer(pkt)
	if !ok || frag || proto != protoTCP || len(seg) < header.TCPMinimumSize {
		return nil, nil, nil, false
	}
	if header.TCPFlags(seg[header.TCPFlagsOffset])&(header.TCPFlagSyn|header.TCPFlagAck|header.TCPFlagRst) != header.TCPFlagSyn {
		return nil, nil, nil, false
	}
	return src, dst, seg, true
}

// reuseTuple lets a new connection use the 4-tuple of one that has just
// ended, and reports whether it took pkt to deliver later. pkt is a
// checked IP packet; src, dst and seg are its addresses and SYN segment.
//
// A SYN that meets the old connection's endpoint in the stack would not
// reach the forwarder:
//
//   - When the client's side closed last, the endpoint passes through
//     TIME_WAIT until a timer fires (newStack sets no wait), and the stack
//     hands a SYN that meets it only to a listener: with none, the SYN is
//     lost and the client sends it again a second later. So such an
//     endpoint is aborted before the SYN goes in. The RST it sends belongs
//     to the old connection; the client's new one, waiting for its
//     SYN-ACK, drops it. The stack acknowledges the client's FIN before it
//     moves the endpoint on, and the client may have its next SYN out
//     before then: an endpoint that has sent its FIN is looked at again
//     once the stack has let go of it.
//   - A client that ends a connection with RST may send the next SYN on
//     the same port at once. If both reach the endpoint before it has
//     taken in the RST, the endpoint closes on the RST and answers the
//     SYN, which no longer finds it, with a RST of its own: the client's
//     new connection is refused.
//
// So a SYN for the 4-tuple of a flow (owned from the start of its
// handshake), unless it is that flow's own SYN sent again, waits on a
// worker, up to a second, for the flow to let go of its endpoint; aborted
// before then, a TIME_WAIT flow would end as reset. The RST that closes a
// flow comes before the SYN, and its endpoint has taken it in within
// microseconds. An endpoint still established after staleProbe has had no
// RST: the client's was lost (a full device queue), or the client has
// forgotten the connection. A copy of the SYN goes to it then, and the
// stack answers with a challenge ACK, which such a client answers with
// the RST it lost; the SYN itself goes in once the flow has let go, and
// the client's new connection is answered without waiting for its next
// SYN.
func (h *tcpHandler) reuseTuple(pkt, src, dst, seg []byte) bool {
	netProto := header.IPv4ProtocolNumber
	if len(src) == header.IPv6AddressSize {
		netProto = header.IPv6ProtocolNumber
	}
	id := stack.TransportEndpointID{
		LocalPort:     binary.BigEndian.Uint16(seg[2:]),
		LocalAddress:  tcpip.AddrFromSlice(dst),
		RemotePort:    binary.BigEndian.Uint16(seg[0:]),
		RemoteAddress: tcpip.AddrFromSlice(src),
	}
	// The stack's endpoint for id now, if any.
	find := func() *tcp.Endpoint {
		ep, _ := h.g.stack.FindTransportEndpoint(netProto, tcp.ProtocolNumber, id, nicID).(*tcp.Endpoint)
		return ep
	}
	ep := find()
	isn := binary.BigEndian.Uint32(seg[4:])
	h.mu.Lock()
	r := h.owned[id]
	again := r != nil && r.isn == isn
	held := r != nil && !again && r.held
	if r != nil && !again {
		r.held = true
	}
	h.mu.Unlock()
	switch {
	case again:
		// The flow's own SYN, sent again (its SYN-ACK was lost or crossed
		// it): its endpoint answers it, as the stack would.
		return false
	case r == nil:
		if ep != nil && inTimeWait(ep) {
			ep.Abort()
		}
		return false
	case held:
		return true // one SYN waits already; the client sends it again
	}
	syn := slices.Clone(pkt)
	h.g.workers.run(func() {
		timeout, probe := time.After(time.Second), time.After(staleProbe)
		for waiting := r; waiting != nil; {
			select {
			case <-waiting.done:
			case <-probe:
				probe = nil
				if ep := find(); ep != nil && ep.EndpointState() == tcp.StateEstablished {
					h.g.ep.inject(netProto, syn) // copied: syn goes in again later
				}
				continue
			case <-timeout:
				waiting = nil
				continue
			case <-h.g.ctx.Done():
				return
			}
			// A later flow on the tuple may own it by now (a SYN that came
			// while the one before let go): its endpoint is the one this
			// SYN would meet, so it waits for that one in turn.
			h.mu.Lock()
			next := h.owned[id]
			h.mu.Unlock()
			if next == waiting {
				next = nil
			}
			if next != nil && next.isn == isn {
				// The client sent this SYN again and it went in: the
				// flow that owns the tuple is its own.
				h.mu.Lock()
				r.held = false
				h.mu.Unlock()
				return
			}
			waiting = next
		}
		if ep := find(); ep != nil && ep.EndpointState() == tcp.StateTimeWait {
			ep.Abort()
		}
		h.g.ep.inject(netProto, syn)
		h.mu.Lock()
		r.held = false
		h.mu.Unlock()
	})
	return true
}

// segmentsReceived returns how many segments the stack's endpoint ep has
// received from the client.
func segmentsReceived(ep tcpip.Endpoint) uint64 {
	if st, ok := ep.Stats().(*tcp.Stats); ok {
		return st.SegmentsReceived.Value()
	}
	return 0
}

// keepaliveTiming is how tunwall probes a side of a flow whose other end
// probes (relay.steerProbes): the first after a quarter of the idle time
// without a packet from that side, four in all, a sixteenth of it apart
// (never under a second); a side that answers none is given up a
// sixteenth after the last, about half the idle time after its last
// packet.
func keepaliveTiming(idle time.Duration) (first, interval time.Duration, count int) {
	return max(idle/4, time.Second), max(idle/16, time.Second), 4
}

// keepaliveClient turns the stack's keepalive probes towards the client
// on or off.
func keepaliveClient(ep tcpip.Endpoint, on bool, idle time.Duration) {
	if on {
		first, interval, count := keepaliveTiming(idle)
		fo, io := tcpip.KeepaliveIdleOption(first), tcpip.KeepaliveIntervalOption(interval)
		ep.SetSockOpt(&fo)
		ep.SetSockOpt(&io)
		ep.SetSockOptInt(tcpip.KeepaliveCountOption, count)
	}
	ep.SocketOptions().SetKeepAlive(on)
}

// inTimeWait reports whether ep is in TIME_WAIT, or was about to enter it
// while the stack held it.
func inTimeWait(ep *tcp.Endpoint) bool {
	switch ep.EndpointState() {
	case tcp.StateTimeWait:
		return true
	case tcp.StateFinWait1, tcp.StateFinWait2, tcp.StateClosing:
		ep.LockUser()
		defer ep.UnlockUser()
		return ep.EndpointState() == tcp.StateTimeWait
	}
	return false
}

// own marks the 4-tuple id as the own of a flow whose SYN had sequence
// number isn, and returns what to call once the flow has let go of its
// endpoint.
func (h *tcpHandler) own(id stack.TransportEndpointID, isn uint32) (release func()) {
	r := &ownedTuple{done: make(chan struct{}), isn: isn}
	h.mu.Lock()
	h.owned[id] = r
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		if h.owned[id] == r {
			delete(h.owned, id)
		}
		h.mu.Unlock()
		close(r.done)
	}
}

// dialFailed reports the end of a flow whose upstream dial failed.
func (h *tcpHandler) dialFailed(tf *tcpFlow, err error) {
	h.g.dialFailed(tf.id, tf.flow, tf.verdict, time.Since(tf.start), err)
}

// run relays an established flow and reports its end. first holds bytes
// already read from the client (while learning the name), to go upstream
// before the rest; release is accept's, called once the relay has let go
// of the client's endpoint.
func (h *tcpHandler) run(tf *tcpFlow, cc *clientConn, up net.Conn, first []byte, release func()) {
	ep := cc.ep
	var client net.Conn = cc
	var dns *dnsStream
	if isDNS(tf.flow) {
		lc := &lockedConn{Conn: client}
		client, dns = lc, &dnsStream{d: &dnsFilter{g: h.g, id: tf.id, flow: tf.flow}, client: lc}
	}
	tf.relay = relay{
		client:   side{conn: client, abort: ep.Abort, reset: func() bool { return clientReset(ep) }},
		upstream: side{conn: up, abort: func() { abortTCP(up) }},
		idle:     h.g.cfg.Limits.TCPIdle,
		buffers:  &h.g.relayBuffers,
		packets:  func() (uint64, uint64) { return segmentsReceived(ep), segmentsIn(up) },
		// The upstream socket has received its SYN-ACK alone when the
		// connect returns (a kept socket counts again from its
		// disconnect); what came later was the server's and counts as
		// activity at the first look, which errs on the side of a live flow.
		packetsAtStart: func() (uint64, uint64) { return segmentsReceived(ep), connectSegments },
		probe: func(upstream, on bool) {
			if upstream {
				keepaliveUpstream(up, on, h.g.cfg.Limits.TCPIdle)
			} else {
				keepaliveClient(ep, on, h.g.cfg.Limits.TCPIdle)
			}
		},
	}
	// A reset from either end must end the flow while the relay is stuck
	// writing towards the other.
	cc.gone = func() bool { return upstreamReset(up) }
	unwatch := watchClientReset(cc.wq, ep, tf.relay.outWriting.Load, func() { tf.relay.close(reasonRST) })
	if dns != nil {
		tf.relay.outFilter, tf.relay.inFilter = dns.fromClient, dns.fromServer
		first = dns.fromClient(first)
	}
	h.g.flows.add(tf.id, tf.flow, tf.verdict, tf.start, &tf.relay)
	h.g.budget.join(ep)
	defer h.g.budget.leave()
	var err error
	if len(first) > 0 {
		_, err = up.Write(first)
	}
	reason := reasonRST
	if err == nil {
		tf.relay.out.Store(int64(len(first)))
		reason = tf.relay.run()
	} else {
		tf.relay.stop(reasonRST)
	}
	unwatch()
	release()
	h.g.closed(tf.id, tf.flow, tf.verdict, FlowStats{
		BytesOut: tf.relay.out.Load(),
		BytesIn:  tf.relay.in.Load(),
		Duration: time.Since(tf.start),
		Reason:   reason,
	})
	h.g.flows.remove(tf.id) // last: Close waits for this, so the event is out
}

// lockedConn serialises writes to a DNS-over-TCP client, which come from
// both relay directions (tunwall's own answers and the server's).
type lockedConn struct {
	net.Conn
	mu sync.Mutex
}

func (c *lockedConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.Write(b)
}

// CloseWrite passes a half-close on to the connection.
func (c *lockedConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errors.New("no half-close")
}

// abortTCP makes closing a host TCP socket send RST.
func abortTCP(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
}

// flowOf converts an incoming packet's endpoint id into a policy flow: the
// remote side is the originator, the local side the destination.
func flowOf(p policy.Proto, id stack.TransportEndpointID) policy.Flow {
	return policy.Flow{
		Proto: p,
		Src:   netip.AddrPortFrom(addrOf(id.RemoteAddress), id.RemotePort),
		Dst:   netip.AddrPortFrom(addrOf(id.LocalAddress), id.LocalPort),
	}
}

func addrOf(a tcpip.Address) netip.Addr {
	if a.Len() == 4 {
		return netip.AddrFrom4(a.As4())
	}
	return netip.AddrFrom16(a.As16())
}
