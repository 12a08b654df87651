package netstack

import (
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/tunwall/tunwall/policy"
)

// Protos and Actions list the values Metrics counts by, in index order.
var (
	Protos  = [...]policy.Proto{policy.TCP, policy.UDP, policy.ICMP}
	Actions = [...]policy.Action{policy.Deny, policy.Allow, policy.Reject}
)

// protoIndex maps TCP, UDP, ICMP to 0, 1, 2 (their bit positions).
func protoIndex(p policy.Proto) int { return bits.TrailingZeros8(uint8(p)) }

// DecisionBuckets are the upper bounds of the decision-latency histogram.
var DecisionBuckets = [...]time.Duration{
	250 * time.Nanosecond, 500 * time.Nanosecond, time.Microsecond, 2500 * time.Nanosecond,
	5 * time.Microsecond, 10 * time.Microsecond, 25 * time.Microsecond, 100 * time.Microsecond,
	time.Millisecond,
}

// latency is a histogram of policy decision times, cheap enough to update
// once per new flow from any goroutine.
type latency struct {
	buckets [len(DecisionBuckets) + 1]atomic.Uint64 // the last one: over every bound
	sum     atomic.Uint64                           // nanoseconds
}

func (l *latency) observe(d time.Duration) {
	i := 0
	for i < len(DecisionBuckets) && d > DecisionBuckets[i] {
		i++
	}
	l.buckets[i].Add(1)
	l.sum.Add(uint64(d))
}

// counters are the per-verdict tallies behind Metrics.
type counters struct {
	judged    [len(Protos)][len(Actions)]atomic.Uint64 // fresh flow verdicts
	decisions latency
}

// tally counts a fresh verdict on a flow of proto.
func (c *counters) tally(proto policy.Proto, v policy.Verdict) {
	if i, a := protoIndex(proto), int(v.Action); i < len(Protos) && a < len(Actions) {
		c.judged[i][a].Add(1)
	}
}

// Metrics is a snapshot of the gateway for monitoring. Counters only grow
// while the gateway runs; gauges are the state at the time of the call.
type Metrics struct {
	Active  [len(Protos)]int                  // live flows by proto (index of Protos)
	Judged  [len(Protos)][len(Actions)]uint64 // verdicts on new flows by proto and action
	Bytes   struct{ Out, In uint64 }          // payload relayed, ended and live flows
	Pending int                               // TCP handshakes waiting for their upstream
	UDP     int                               // live UDP sessions

	// Endpoints is the number of TCP and UDP endpoints the userspace stack
	// holds, live flows and those closing (TIME_WAIT included).
	Endpoints int
	// RelayBuffers is the number of 64 KiB relay buffers flows hold now:
	// a flow only holds one while its receiver has not taken what was
	// read for it.
	RelayBuffers int
	// StackBuffers is what the stack's TCP buffers may hold now (the
	// sizes of every TCP endpoint's send and receive buffers), and
	// FlowBufferMax the largest size, per direction, limits.buffer_memory
	// gives a flow now.
	StackBuffers, FlowBufferMax int64

	// Refusals by reason: the policy (new flows and retries of refused
	// ones, DNS queries for blocked names), a limit, a malformed packet,
	// an upstream that could not be reached (and retransmissions of the
	// SYNs of such flows).
	DropsPolicy, DropsLimit, DropsMalformed, DropsUpstream uint64
	// Packets to a multicast group or the limited broadcast address.
	DropsNotUnicast uint64
	// Client SYNs whose MSS option was lowered to the path towards the
	// client.
	MSSClamped uint64
	// IPv6 packets to a client split into fragments to fit the path
	// towards it.
	Fragmented uint64
	// Upstream TCP connections made on a host socket an ended flow left.
	SocketsReused uint64

	// Decision-latency histogram: Decisions[i] counts decisions that took
	// at most DecisionBuckets[i] (not cumulative); the last entry counts
	// the slower ones.
	Decisions   [len(DecisionBuckets) + 1]uint64
	DecisionSum time.Duration

	PacketsIn, PacketsOut uint64 // through the TUN device
}

// Metrics returns the gateway's counters and gauges now.
func (g *Gateway) Metrics() Metrics {
	var m Metrics
	m.Active, m.Bytes.Out, m.Bytes.In = g.flows.tally()
	for i := range m.Judged {
		for a := range m.Judged[i] {
			m.Judged[i][a] = g.counters.judged[i][a].Load()
		}
	}
	g.tcp.mu.Lock()
	m.Pending = len(g.tcp.pending)
	g.tcp.mu.Unlock()
	m.UDP = int(g.udp.sessions.Load())
	m.Endpoints, m.StackBuffers = endpointsAndBuffers(g.stack)
	m.FlowBufferMax = g.budget.share.Load()
	m.RelayBuffers = int(g.relayBuffers.Load())
	s := &g.stats
	m.DropsPolicy = g.denials.total.Load()
	m.DropsLimit = s.RefusedFlows.Load() + s.RefusedPendingTCP.Load() + s.RefusedUDPSessions.Load() + s.RefusedPerSource.Load()
	m.DropsMalformed = s.Malformed()
	m.DropsUpstream = s.DialErrors.Load() + s.FailedSYNs.Load()
	m.DropsNotUnicast = s.NotUnicast.Load()
	m.MSSClamped = s.MSSClamped.Load()
	m.Fragmented = s.Fragmented.Load()
	m.SocketsReused = s.SocketsReused.Load()
	for i := range m.Decisions {
		m.Decisions[i] = g.counters.decisions.buckets[i].Load()
	}
	m.DecisionSum = time.Duration(g.counters.decisions.sum.Load())
	m.PacketsIn, m.PacketsOut = s.PacketsIn.Load(), s.PacketsOut.Load()
	return m
}
