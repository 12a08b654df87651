package netstack

import (
	"maps"
	"net/netip"
	"sync"
	"time"

	"github.com/tunwall/tunwall/policy"
)

// Owners finds who on this machine opened a flow.
type Owners interface {
	// Local reports whether a is one of this machine's addresses: only
	// flows from those have an owner to look up.
	Local(a netip.Addr) bool
	// Lookup finds the owner of the local socket with address src talking
	// to dst. For ICMP, src's port is the echo identifier.
	Lookup(p policy.Proto, src, dst netip.AddrPort) (policy.Owner, bool)
}

const (
	// maxHeld bounds the flows waiting for an owner lookup their verdict
	// depends on; past it a flow is judged as if it had no owner.
	maxHeld = 1024
	// maxHeldPackets bounds the packets kept per held flow (a UDP or ICMP
	// client may send several before the verdict).
	maxHeldPackets = 16
	// readyTTL is how long a verdict decided after a lookup waits for its
	// held packet to come back through the stack.
	readyTTL = 10 * time.Second
	// logWorkers and logQueue bound the lookups made only for the log.
	logWorkers = 2
	logQueue   = 1024
)

// ownership attaches owners to flows that start on this machine.
//
// When the policy's verdict depends on the owner (Policy.Prejudge asks for
// it), the flow's first packets are held: a goroutine looks the owner up,
// decides, logs the verdict, and sends the packets through the stack again,
// where judge finds the verdict waiting. The packet path never waits for a
// lookup.
//
// Otherwise the verdict is final at once and the flow goes ahead; the
// lookup runs on a small worker pool and the verdict event is written when
// it is done. The flow's close (or refused) event waits for that lookup,
// so it carries the owner too and never comes before the verdict.
type ownership struct {
	g   *Gateway
	src Owners

	mu      sync.Mutex // guards the following fields
	held    map[flowKey]*heldFlow
	ready   map[flowKey]readyVerdict
	logs    map[uint64]*logLookup
	stopped bool // stopLogs was called: log at once, queue nothing

	jobs     chan logJob
	workers  sync.WaitGroup
	resolves sync.WaitGroup
}

type heldFlow struct {
	replays []func()
}

type readyVerdict struct {
	id      uint64
	verdict policy.Verdict
	owner   *policy.Owner
	expires time.Time
}

// logLookup is a verdict event waiting for its owner.
type logLookup struct {
	done  chan struct{} // closed once owner is set and the event written
	owner *policy.Owner
}

type logJob struct {
	id uint64
	f  policy.Flow
	k  flowKey
	v  policy.Verdict
	l  *logLookup
}

func newOwnership(g *Gateway, src Owners) *ownership {
	o := &ownership{
		g: g, src: src,
		held:  make(map[flowKey]*heldFlow),
		ready: make(map[flowKey]readyVerdict),
		logs:  make(map[uint64]*logLookup),
		jobs:  make(chan logJob, logQueue),
	}
	for range logWorkers {
		o.workers.Add(1)
		go o.logWorker()
	}
	return o
}

// lookup finds the owner of the flow k identifies, or nil.
func (o *ownership) lookup(k flowKey) *policy.Owner {
	ow, ok := o.src.Lookup(k.proto, k.src, k.dst)
	if !ok {
		o.g.stats.OwnerMisses.Add(1)
		return nil
	}
	o.g.stats.OwnerLookups.Add(1)
	return &ow
}

// takeReady returns a verdict decided after a lookup for k: an allow once
// (the flow it starts handles the packets that follow), a deny or reject
// until it expires (the denied cache may have had no room for it).
func (o *ownership) takeReady(k flowKey, now time.Time) (readyVerdict, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r, ok := o.ready[k]
	if ok && (r.verdict.Effective() == policy.Allow || now.After(r.expires)) {
		delete(o.ready, k)
	}
	return r, ok && now.Before(r.expires)
}

// holdMore keeps one more packet of a flow already held; it reports false
// if k is not held.
func (o *ownership) holdMore(k flowKey, capture func() func()) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	h := o.held[k]
	if h == nil {
		return false
	}
	if capture != nil && len(h.replays) < maxHeldPackets {
		h.replays = append(h.replays, capture())
	}
	return true
}

// hold starts the lookup that f's verdict depends on, keeping its packet.
// It reports false when too many flows are held already.
func (o *ownership) hold(id uint64, f policy.Flow, k flowKey, capture func() func(), ttl time.Duration) bool {
	o.mu.Lock()
	if len(o.held) >= maxHeld {
		o.mu.Unlock()
		o.g.stats.OwnerSkipped.Add(1)
		return false
	}
	h := &heldFlow{}
	if capture != nil {
		h.replays = append(h.replays, capture())
	}
	o.held[k] = h
	o.resolves.Add(1)
	o.mu.Unlock()
	go o.resolve(id, f, k, ttl)
	return true
}

// resolve looks up a held flow's owner, decides, and replays its packets.
func (o *ownership) resolve(id uint64, f policy.Flow, k flowKey, ttl time.Duration) {
	defer o.resolves.Done()
	f.Owner = o.lookup(k)
	v := o.g.decide(f)
	o.g.cfg.Events.Verdict(id, f, v)
	now := time.Now()
	if v.Effective() != policy.Allow {
		o.g.refuse(&f, k, v, now, ttl)
	}
	o.mu.Lock()
	o.ready[k] = readyVerdict{id: id, verdict: v, owner: f.Owner, expires: now.Add(readyTTL)}
	h := o.held[k]
	delete(o.held, k)
	o.mu.Unlock()
	replays := h.replays
	switch {
	case o.g.ctx.Err() != nil:
		return // stopping: the packets have nowhere to go
	case v.Effective() == policy.Deny:
		return // silence
	case v.Effective() == policy.Reject && len(replays) > 1:
		replays = replays[:1] // one refusal answers the client
	}
	for _, replay := range replays {
		replay()
	}
}

// logLater writes f's verdict event once its owner is looked up.
func (o *ownership) logLater(id uint64, f policy.Flow, k flowKey, v policy.Verdict) {
	l := &logLookup{done: make(chan struct{})}
	o.mu.Lock()
	queued := false
	if !o.stopped {
		select {
		case o.jobs <- logJob{id, f, k, v, l}:
			queued = true
			o.logs[id] = l
		default:
		}
	}
	o.mu.Unlock()
	if !queued {
		o.g.stats.OwnerSkipped.Add(1)
		o.g.cfg.Events.Verdict(id, f, v)
	}
}

func (o *ownership) logWorker() {
	defer o.workers.Done()
	for j := range o.jobs {
		j.f.Owner = o.lookup(j.k)
		j.l.owner = j.f.Owner
		o.g.cfg.Events.Verdict(j.id, j.f, j.v)
		if j.v.Effective() != policy.Allow { // no close event will ask for it
			o.mu.Lock()
			delete(o.logs, j.id)
			o.mu.Unlock()
		}
		close(j.l.done)
	}
}

// How owner reads the lookup made for a flow's verdict event.
const (
	lookupPeek = iota // use it if it is done; leave it
	lookupWait        // wait for it; leave it
	lookupTake        // wait for it and forget it: the flow's last event
)

// owner sets f.Owner, for a flow from this machine, from the lookup
// started for its verdict event, if there is one.
func (o *ownership) owner(id uint64, f *policy.Flow, how int) {
	if f.Owner != nil || !o.src.Local(f.Src.Addr()) {
		return
	}
	o.mu.Lock()
	l := o.logs[id]
	if how == lookupTake {
		delete(o.logs, id)
	}
	o.mu.Unlock()
	if l == nil {
		return
	}
	if how == lookupPeek {
		select {
		case <-l.done:
		default:
			return
		}
	}
	<-l.done
	f.Owner = l.owner
}

// sweep drops verdicts whose packets never came back.
func (o *ownership) sweep(now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	maps.DeleteFunc(o.ready, func(_ flowKey, r readyVerdict) bool { return now.After(r.expires) })
}

// waitResolves waits for the lookups of held flows (the gateway is
// stopping: they log their verdicts and replay nothing).
func (o *ownership) waitResolves() { o.resolves.Wait() }

// stopLogs finishes the queued log lookups and stops the workers.
func (o *ownership) stopLogs() {
	o.mu.Lock()
	o.stopped = true
	close(o.jobs)
	o.mu.Unlock()
	o.workers.Wait()
}

// pending reports how many flows are held, verdicts wait, and log lookups
// are open (for tests).
func (o *ownership) pending() (held, ready, logs int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.held), len(o.ready), len(o.logs)
}
