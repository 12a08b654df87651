package netstack

import (
	"errors"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunwall/tunwall/policy"
)

// flowKey identifies a flow by protocol and both endpoints.
type flowKey struct {
	proto    policy.Proto
	src, dst netip.AddrPort
}

func keyOf(f policy.Flow) flowKey { return flowKey{f.Proto, f.Src, f.Dst} }

// closer is an active flow the table can end and count.
type closer interface {
	close(reason string)
	// counts returns the bytes moved each way so far and when the last
	// byte moved.
	counts() (out, in int64, last time.Time)
}

// flowTable tracks active flows: it enforces limits.max_flows and
// limits.max_flows_per_source and lets Close end every flow.
type flowTable struct {
	max       int
	perSource int // 0: no bound per source
	nextID    atomic.Uint64

	mu     sync.Mutex               // guards the following fields
	flows  map[uint64]*liveFlow     // nil: reserved, not yet added
	closed bool                     // closeAll was called: admit nothing more
	ended  struct{ out, in uint64 } // bytes moved by flows since removed
	// With a bound per source: the flows (reserved or added) of each
	// source (sourceOf), and each flow's source.
	sources map[netip.Addr]int
	source  map[uint64]netip.Addr

	onRemove func(id uint64) // called after a flow leaves the table
	active   sync.WaitGroup  // one count per admitted flow, until remove
}

// liveFlow is an active flow: how it was judged and how to end it.
type liveFlow struct {
	id      uint64
	flow    policy.Flow
	verdict policy.Verdict
	start   time.Time
	c       closer
}

func newFlowTable(max, perSource int) *flowTable {
	t := &flowTable{max: max, perSource: perSource, flows: make(map[uint64]*liveFlow)}
	if perSource > 0 {
		t.sources, t.source = make(map[netip.Addr]int), make(map[uint64]netip.Addr)
	}
	return t
}

// sourceOf is what limits.max_flows_per_source counts flows by: the
// address, an IPv4-mapped one as IPv4. IPv6 sources are not grouped by
// prefix: the hosts of a LAN share one /64.
func sourceOf(a netip.Addr) netip.Addr { return a.Unmap() }

// id returns a fresh flow id (ids are shared by allowed and refused flows).
func (t *flowTable) id() uint64 { return t.nextID.Add(1) }

// Why reserve turns a flow away.
var (
	errTableFull  = errors.New("limits.max_flows reached")
	errSourceFull = errors.New("limits.max_flows_per_source reached")
	errStopping   = errors.New("the gateway is stopping")
)

// reserve admits a flow from src that will register itself with add. It
// fails with errStopping once Close has begun, with errTableFull when
// limits.max_flows flows are live, and with errSourceFull when
// limits.max_flows_per_source of them come from src's source.
func (t *flowTable) reserve(id uint64, src netip.Addr) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errStopping
	}
	if len(t.flows) >= t.max {
		return errTableFull
	}
	if t.perSource > 0 {
		k := sourceOf(src)
		if t.sources[k] >= t.perSource {
			return errSourceFull
		}
		t.sources[k]++
		t.source[id] = k
	}
	t.flows[id] = nil
	t.active.Add(1)
	return nil
}

// add attaches the flow and its closer to a reservation. If the table was
// closed meanwhile, the flow is closed at once.
func (t *flowTable) add(id uint64, f policy.Flow, v policy.Verdict, start time.Time, c closer) {
	t.mu.Lock()
	closed := t.closed
	if !closed {
		t.flows[id] = &liveFlow{id: id, flow: f, verdict: v, start: start, c: c}
	}
	t.mu.Unlock()
	if closed {
		c.close(reasonShutdown)
	}
}

// remove releases a reservation or a flow. Callers report the flow's
// close event first: Close waits for every remove.
func (t *flowTable) remove(id uint64) {
	t.mu.Lock()
	lf, ok := t.flows[id]
	if lf != nil {
		out, in, _ := lf.c.counts()
		t.ended.out += uint64(out)
		t.ended.in += uint64(in)
	}
	delete(t.flows, id)
	if k, ok := t.source[id]; ok {
		delete(t.source, id)
		if t.sources[k]--; t.sources[k] == 0 {
			delete(t.sources, k)
		}
	}
	t.mu.Unlock()
	if lf != nil && t.onRemove != nil {
		t.onRemove(id)
	}
	if ok {
		t.active.Done()
	}
}

// tally returns the live flows by protocol (index of Protos) and the bytes
// moved each way by every flow so far, live or ended, read together so the
// byte totals never go down.
func (t *flowTable) tally() (active [len(Protos)]int, out, in uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out, in = t.ended.out, t.ended.in
	for _, lf := range t.flows {
		if lf == nil {
			continue
		}
		if i := protoIndex(lf.flow.Proto); i < len(Protos) {
			active[i]++
		}
		o, n, _ := lf.c.counts()
		out += uint64(o)
		in += uint64(n)
	}
	return active, out, in
}

func (t *flowTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.flows)
}

// closeAll ends every flow and refuses new ones.
func (t *flowTable) closeAll(reason string) {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	for _, lf := range t.live() {
		lf.c.close(reason)
	}
}

// get returns the running flow id, or nil.
func (t *flowTable) get(id uint64) *liveFlow {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.flows[id]
}

// live returns the flows that are running now.
func (t *flowTable) live() []*liveFlow {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*liveFlow, 0, len(t.flows))
	for _, lf := range t.flows {
		if lf != nil {
			out = append(out, lf)
		}
	}
	return out
}

// wait returns when every admitted flow has been removed.
func (t *flowTable) wait() { t.active.Wait() }

// verdictCache remembers deny and reject verdicts for a while, so that
// retransmitted SYNs and later datagrams of a refused flow are handled the
// same way without being judged and logged again.
type verdictCache struct {
	max int

	mu      sync.Mutex // guards entries
	entries map[flowKey]cachedVerdict
}

type cachedVerdict struct {
	verdict policy.Verdict
	expires time.Time
}

func newVerdictCache(max int) *verdictCache {
	return &verdictCache{max: max, entries: make(map[flowKey]cachedVerdict)}
}

// lookup returns the cached verdict for k and extends its life by ttl.
func (c *verdictCache) lookup(k flowKey, now time.Time, ttl time.Duration) (policy.Verdict, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok || now.After(e.expires) {
		return policy.Verdict{}, false
	}
	e.expires = now.Add(ttl)
	c.entries[k] = e
	return e.verdict, true
}

// store caches a verdict; when the cache is full the verdict is simply
// not cached (the flow is judged again next time).
func (c *verdictCache) store(k flowKey, v policy.Verdict, now time.Time, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) < c.max {
		c.entries[k] = cachedVerdict{v, now.Add(ttl)}
	}
}

// clear forgets every verdict (the policy changed).
func (c *verdictCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
}

func (c *verdictCache) sweep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	maps.DeleteFunc(c.entries, func(_ flowKey, e cachedVerdict) bool { return now.After(e.expires) })
}
