package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/tunwall/tunwall/policy"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Device is the packet source and sink, such as a tun.Device.
type Device interface {
	// Read reads up to len(bufs) packets, each starting offset bytes into
	// its buffer, and stores their lengths in sizes. len(sizes) must be >=
	// len(bufs). After the device is closed it returns an error wrapping
	// os.ErrClosed.
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	// Write writes len(bufs) packets, each starting offset bytes into its
	// buffer.
	Write(bufs [][]byte, offset int) (int, error)
	// BatchSize is the largest number of packets one Read or Write moves.
	BatchSize() int
}

// tcpOffloader is implemented by devices that accept TCP segments with a
// partial checksum and let the kernel segment them, and that write single
// packets without copying them (tun.Device on Linux).
type tcpOffloader interface {
	CanOffloadTCP() bool
	WriteTCPOffload(pkt [][]byte, l3Len, hdrLen, mss int) error
	WritePacket(pkt [][]byte) error
}

// DialFunc opens an upstream connection ("tcp" or "udp" network).
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Config is what New needs.
type Config struct {
	Device Device           // required
	MTU    int              // required
	Policy *policy.Policy   // required; replace later with SetPolicy
	Limits policy.Limits    // zero fields take the v1 defaults
	Dial   DialFunc         // upstream TCP/UDP; nil: a host dialer with Mark and Interface
	Ping   PingFunc         // upstream ICMP echo; nil: host ping sockets with Mark and Interface
	Events Events           // verdict and close events; nil: discarded
	Owners Owners           // owners of flows from this machine; nil: none
	DNS    policy.DNSConfig // DNS handling (UDP port 53)
	Log    zerolog.Logger   // component diagnostics

	// PathMTU, when set, tells the MTU of this host's path back to a
	// client; SYNs are clamped to it (see mssClamp), and datagrams that do
	// not fit go in fragments or without DF (fit.go). Narrower path MTUs
	// reported by routers further on need it too.
	PathMTU PathMTUFunc

	Mark        uint32 // SO_MARK for the default dialer and pinger
	Interface   string // SO_BINDTODEVICE for the default dialer and pinger
	DialTimeout time.Duration
}

// Gateway is a running netstack: it reads from the device until Close.
type Gateway struct {
	cfg      Config
	log      zerolog.Logger
	stack    *stack.Stack
	ep       *endpoint
	policy   atomic.Pointer[policy.Policy]
	stats    Stats
	flows    *flowTable
	denied   *verdictCache
	tcp      *tcpHandler
	udp      *udpHandler
	icmp     *icmpHandler
	owners   *ownership // nil without Config.Owners
	mss      *mssClamp  // nil without Config.PathMTU
	budget   *bufferBudget
	spares   *spareSockets // ended upstream TCP sockets kept for new flows
	names    *nameCache
	denials  deniedRing
	hits     atomic.Pointer[ruleHits]
	counters counters
	// relayBuffers counts the relay buffers flows hold: those of relay
	// directions whose receiver has not yet taken what was read.
	relayBuffers atomic.Int64
	capMu        sync.Mutex // serialises changes to the set of captures

	ctx     context.Context // cancelled by Close: stops dials and janitors
	cancel  context.CancelFunc
	wg      sync.WaitGroup // janitor goroutine and flow workers
	workers *workers       // run TCP flows and UDP sessions

	closeOnce sync.Once
}

// New builds the stack on cfg.Device and starts reading from it.
func New(cfg Config) (*Gateway, error) {
	if cfg.Device == nil || cfg.Policy == nil || cfg.MTU <= 0 {
		return nil, errors.New("netstack: Device, MTU and Policy are required")
	}
	cfg.Limits = withDefaults(cfg.Limits)
	if cfg.Events == nil {
		cfg.Events = nopEvents{}
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 30 * time.Second
	}
	if cfg.Ping == nil {
		cfg.Ping = hostPinger(cfg.Mark, cfg.Interface)
	}
	if cfg.DNS.CacheSize <= 0 {
		cfg.DNS.CacheSize = 65536
	}
	g := &Gateway{cfg: cfg, log: cfg.Log.With().Str("component", "netstack").Logger()}
	g.spares = newSpareSockets(&g.stats.SocketsReused)
	if g.cfg.Dial == nil {
		g.cfg.Dial = hostDialer(cfg.Mark, cfg.Interface, g.spares)
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.workers = newWorkers(g.ctx, &g.wg)
	g.policy.Store(cfg.Policy)
	g.hits.Store(newRuleHits(cfg.Policy))
	g.flows = newFlowTable(cfg.Limits.MaxFlows, cfg.Limits.MaxFlowsPerSource)
	g.flows.onRemove = g.flowEnded
	g.denied = newVerdictCache(cfg.Limits.MaxUDPSessions)
	g.names = newNameCache(cfg.DNS.CacheSize)
	g.icmp = newICMPHandler(g)
	if cfg.PathMTU != nil {
		g.mss = newMSSClamp(cfg.PathMTU, cfg.MTU, &g.stats, func(client netip.Addr, mtu int, from netip.Addr) {
			ev := g.log.Info().Str("client", client.String()).Int("path_mtu", mtu).Int("tun_mtu", cfg.MTU)
			if from.IsValid() {
				ev = ev.Str("reported_by", from.String())
			}
			ev.Msg("the path to this client is narrower than the TUN: its TCP segments are clamped to fit")
		})
	}
	g.ep = newEndpoint(cfg.Device, cfg.MTU, &g.stats, g.inspect)
	if g.mss != nil {
		g.ep.pathMTU = g.mss.pathMTU
	}
	s, err := newStack(g.ep)
	if err != nil {
		g.cancel()
		return nil, err
	}
	g.stack = s
	if g.budget, err = newBufferBudget(s, cfg.Limits.BufferMemory, g.log); err != nil {
		s.Close()
		g.cancel()
		return nil, err
	}
	g.tcp = newTCPHandler(g)
	g.udp = newUDPHandler(g)
	if cfg.Owners != nil {
		g.owners = newOwnership(g, cfg.Owners)
	}
	g.wg.Add(1)
	go g.janitor()
	g.ep.start() // packets from now on: everything above is in place
	return g, nil
}

// inspect sees each checked packet from the device before the stack does;
// true means it was consumed. It may lower the MSS option of a SYN
// (mssClamp).
func (g *Gateway) inspect(pkt []byte) bool {
	if notUnicast(pkt) {
		g.stats.NotUnicast.Add(1)
		return true
	}
	if g.icmp.intercept(pkt) {
		return true
	}
	src, dst, seg, ok := tcpSYN(pkt)
	if !ok {
		return false
	}
	if g.mss != nil {
		g.mss.clamp(src, dst, seg)
	}
	return g.tcp.reuseTuple(pkt, src, dst, seg)
}

// notUnicast reports whether a checked packet is addressed to a multicast
// group or to the limited broadcast address. tunwall relays flows from
// one host to another, and such a packet has no one host to go to: it is
// dropped (and counted) before anything judges it or sends it on, as a
// router keeps link-scoped multicast and broadcast on their link.
func notUnicast(pkt []byte) bool {
	if pkt[0]>>4 == 4 {
		d := pkt[16:20]
		return d[0]>>4 == 0xe || d[0] == 0xff && d[1] == 0xff && d[2] == 0xff && d[3] == 0xff
	}
	return pkt[24] == 0xff
}

// SetPolicy replaces the policy for flows judged from now on. Remembered
// deny and reject verdicts are forgotten, so a refused flow that tries
// again is judged by the new policy.
func (g *Gateway) SetPolicy(p *policy.Policy) {
	g.hits.Store(newRuleHits(p))
	g.policy.Store(p)
	g.denied.clear()
}

// Reevaluate judges every active flow again by the current policy and
// closes, with reason "policy", those it no longer allows. It returns how
// many it closed. A flow from this machine is judged with its owner once
// the owner lookup for its log line is done.
func (g *Gateway) Reevaluate() int {
	p := g.policy.Load()
	n := 0
	for _, lf := range g.flows.live() {
		f := lf.flow
		if g.owners != nil {
			g.owners.owner(lf.id, &f, lookupWait)
		}
		if p.Decide(f).Effective() != policy.Allow {
			lf.c.close(reasonPolicy)
			n++
		}
	}
	return n
}

// Stats returns the gateway's counters.
func (g *Gateway) Stats() *Stats { return &g.stats }

// BufferMemory is the limits.buffer_memory in force, in bytes (the one
// tunwall chose, when the configuration left it to it).
func (g *Gateway) BufferMemory() int64 { return g.budget.limit }

// ActiveFlows returns the number of flows currently relayed.
func (g *Gateway) ActiveFlows() int { return g.flows.len() }

// Close stops the gateway: it stops accepting flows, closes every active
// flow (reason "shutdown") and tears down the stack. The device is the
// caller's: close it afterwards to stop the reader. Close is idempotent.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		// Order: stop dials and timers; let owner lookups of held flows
		// log their verdicts; abort the relayed flows while the
		// stack can still send their RSTs; start no more handshakes and
		// abort those waiting for a client's final ACK while the stack
		// still processes segments; close the stack; then wait for every
		// flow's goroutines to report and exit.
		g.cancel()
		if g.owners != nil {
			g.owners.waitResolves()
		}
		g.flows.closeAll(reasonShutdown)
		g.tcp.stopHandshakes(5 * time.Second)
		g.stack.Close()
		g.flows.wait()
		if g.owners != nil {
			g.owners.stopLogs()
		}
		g.wg.Wait()
		g.spares.close()
		g.closeCaptures()
	})
	return nil
}

// Wait blocks until the device reader and the stack's goroutines have
// exited. Call it after Close and after closing the device.
func (g *Gateway) Wait() {
	// The reader first, and outside the stack: gVisor's Stack.Wait holds
	// the stack's lock while it waits for the link endpoint, and a packet
	// the reader read before the device closed needs that lock to be
	// delivered.
	g.ep.Wait()
	g.stack.Wait()
}

// judge returns the verdict for a new flow: a deny or reject remembered for
// this flow (extended by ttl), or a fresh decision, which gets an id and a
// verdict event and, if it refuses the flow, is remembered for ttl.
//
// A flow from this machine gets its owner in f, and may be held: when the
// verdict depends on the owner, judge calls capture to keep the packet
// (capture returns a function that sends it through again) and reports
// held. The caller then drops the packet quietly; it comes back once the
// owner is known and the verdict is waiting. Once the gateway is
// stopping, every packet is reported held and nothing comes back. capture
// may be nil when a packet need not come back.
func (g *Gateway) judge(f *policy.Flow, k flowKey, now time.Time, ttl time.Duration, capture func() func()) (id uint64, v policy.Verdict, held bool) {
	if g.ctx.Err() != nil {
		// Stopping: a new flow is not judged (its source may no longer
		// look local once the device is gone), and its packet is dropped
		// as by a gateway that has gone.
		return 0, policy.Verdict{}, true
	}
	if v, ok := g.denied.lookup(k, now, ttl); ok {
		g.denials.note(f, v, now) // a retry of a refused flow
		return 0, v, false
	}
	g.nameFromDNS(f, now)
	o := g.owners
	local := g.local(*f)
	if local {
		if r, ok := o.takeReady(k, now); ok {
			f.Owner = r.owner
			return r.id, r.verdict, false
		}
		if o.holdMore(k, capture) {
			return 0, policy.Verdict{}, true
		}
	}
	id = g.flows.id()
	p := g.policy.Load()
	if local {
		var need bool
		start := time.Now()
		v, need = p.Prejudge(*f)
		if !need { // decided without the owner: that was the decision
			g.counters.decisions.observe(time.Since(start))
		} else {
			if o.hold(id, *f, k, capture, ttl) {
				return 0, policy.Verdict{}, true
			}
			v = g.timed(p, f) // too many held: judged without an owner
		}
		o.logLater(id, *f, k, v)
	} else {
		v = g.timed(p, f)
		g.cfg.Events.Verdict(id, *f, v)
	}
	g.count(p, v)
	g.counters.tally(f.Proto, v)
	if v.Effective() != policy.Allow {
		g.refuse(f, k, v, now, ttl)
	}
	return id, v, false
}

// dial opens the upstream connection of an allowed TCP or UDP flow
// (network "tcp" or "udp"), giving up after the dial timeout or at Close.
// hops, unless 0, is the TTL (hop limit) its packets are to go out with
// (see reachHops); a Dial other than the host's may not heed it.
func (g *Gateway) dial(network string, f policy.Flow, hops uint8) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(g.ctx, g.cfg.DialTimeout)
	defer cancel()
	if hops != 0 {
		ctx = context.WithValue(ctx, hopsKey{}, hops)
	}
	return g.cfg.Dial(ctx, network, g.upstreamOf(f))
}

// hopsKey keys the TTL (hop limit) a dial's packets are to go out with, in
// its context; none: the host's default. The host dialer sets it.
type hopsKey struct{}

// dialHops returns the TTL (hop limit) the connection dialed with ctx is
// to send with, or 0 for the host's default.
func dialHops(ctx context.Context) uint8 {
	hops, _ := ctx.Value(hopsKey{}).(uint8)
	return hops
}

// local reports whether f started on this machine (and so has an owner
// to look up).
func (g *Gateway) local(f policy.Flow) bool {
	return g.owners != nil && g.owners.src.Local(f.Src.Addr())
}

// decide judges f by the policy in force and counts the rule's hit.
func (g *Gateway) decide(f policy.Flow) policy.Verdict {
	p := g.policy.Load()
	v := g.timed(p, &f)
	g.count(p, v)
	g.counters.tally(f.Proto, v)
	return v
}

// timed decides f by p and notes how long that took.
func (g *Gateway) timed(p *policy.Policy, f *policy.Flow) policy.Verdict {
	start := time.Now()
	v := p.Decide(*f)
	g.counters.decisions.observe(time.Since(start))
	return v
}

// nameFromDNS gives f, if it has no name, the name DNS gave its source for
// its destination address.
func (g *Gateway) nameFromDNS(f *policy.Flow, now time.Time) {
	if f.Domain != "" {
		return
	}
	if name, ok := g.names.get(f.Src.Addr(), f.Dst.Addr(), now); ok {
		f.Domain, f.DomainSource = name, "dns"
	}
}

// refuse remembers a fresh refusal for retries and for the recent-denials
// view.
func (g *Gateway) refuse(f *policy.Flow, k flowKey, v policy.Verdict, now time.Time, ttl time.Duration) {
	g.denied.store(k, v, now, ttl)
	g.denials.note(f, v, now)
}

// capture returns judge's capture function for a packet the stack handed
// to a transport handler: it copies the packet so it can be delivered
// again.
func (g *Gateway) capture(pkt *stack.PacketBuffer) func() func() {
	if g.owners == nil {
		return nil
	}
	return func() func() {
		var b []byte
		for _, s := range pkt.AsSlices() {
			b = append(b, s...)
		}
		proto := pkt.NetworkProtocolNumber
		return func() { g.ep.inject(proto, b) }
	}
}

// closed reports the end of an allowed flow.
func (g *Gateway) closed(id uint64, f policy.Flow, v policy.Verdict, st FlowStats) {
	if g.owners != nil {
		g.owners.owner(id, &f, lookupTake)
	}
	g.cfg.Events.Closed(id, f, v, st)
}

// reserve takes a place in the flow table for an allowed flow, or reports
// why there is none: a full table is a refusal by limits.max_flows, a
// source with all its places taken one by limits.max_flows_per_source
// (each counted); a flow arriving while tunwall stops is closed with reason
// shutdown if its verdict was logged (v not nil), so that every allow
// verdict still has its close or refused event.
func (g *Gateway) reserve(id uint64, f policy.Flow, v *policy.Verdict) bool {
	switch err := g.flows.reserve(id, f.Src.Addr()); err {
	case nil:
		return true
	case errStopping:
		if v != nil {
			g.closed(id, f, *v, FlowStats{Reason: reasonShutdown})
		}
	case errSourceFull:
		g.stats.RefusedPerSource.Add(1)
		g.refused(id, f, v, "max_flows_per_source")
	default:
		g.stats.RefusedFlows.Add(1)
		g.refused(id, f, v, "max_flows")
	}
	return false
}

// dialFailed reports the end of an allowed flow whose upstream dial failed
// (the client gets a reset or an unreachable): reason rst with the error,
// counted as upstream unreachable; or reason shutdown, uncounted, when the
// dial was cut short because tunwall is stopping.
func (g *Gateway) dialFailed(id uint64, f policy.Flow, v policy.Verdict, d time.Duration, err error) {
	st := FlowStats{Duration: d, Reason: reasonShutdown}
	if g.ctx.Err() == nil {
		g.stats.DialErrors.Add(1)
		st.Reason, st.Err = reasonRST, err
	}
	g.closed(id, f, v, st)
}

// refused reports a flow the policy allowed by v (nil: its name is yet
// to be judged) turned away by a limit, and remembers it with the
// recent refusals.
func (g *Gateway) refused(id uint64, f policy.Flow, v *policy.Verdict, limit string) {
	if g.owners != nil {
		g.owners.owner(id, &f, lookupTake)
	}
	var allowedBy policy.Verdict
	if v != nil {
		allowedBy = *v
	}
	g.denials.noteLimit(&f, allowedBy, limit, time.Now())
	g.cfg.Events.Refused(id, f, limit)
}

// janitor expires cached deny/reject verdicts, names and owners, and
// closes the upstream sockets kept too long.
func (g *Gateway) janitor() {
	defer g.wg.Done()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case now := <-t.C:
			g.denied.sweep(now)
			g.names.sweep(now)
			g.spares.sweep(now)
			if g.owners != nil {
				g.owners.sweep(now)
			}
		}
	}
}

func withDefaults(l policy.Limits) policy.Limits {
	set := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	set(&l.MaxFlows, 65536)
	set(&l.MaxPendingTCP, 4096)
	set(&l.MaxUDPSessions, 16384)
	if l.UDPIdle <= 0 {
		l.UDPIdle = 60 * time.Second
	}
	if l.TCPIdle <= 0 {
		l.TCPIdle = 2 * time.Hour
	}
	if l.BufferMemory <= 0 {
		l.BufferMemory = autoBufferMemory(physicalMemory())
	}
	return l
}

func errorf(format string, args ...any) error { return fmt.Errorf("netstack: "+format, args...) }
