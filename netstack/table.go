package netstack

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunwall/tunwall/policy"
)

// FlowInfo is one live flow as the flow table shows it.
type FlowInfo struct {
	ID       uint64
	Flow     policy.Flow // addresses, name and owner as far as known
	Rule     string      // the rule that let it through
	Enforced bool        // false in monitor mode: the policy may refuse it
	Action   policy.Action
	BytesOut int64 // originator -> destination
	BytesIn  int64
	Start    time.Time
	Idle     time.Duration // since the last byte either way
}

// Flows returns every live flow, oldest first.
func (g *Gateway) Flows() []FlowInfo {
	now := time.Now()
	live := g.flows.live()
	out := make([]FlowInfo, 0, len(live))
	for _, lf := range live {
		f := lf.flow
		if g.owners != nil {
			g.owners.owner(lf.id, &f, lookupPeek)
		}
		o, in, last := lf.c.counts()
		if last.Before(lf.start) {
			last = lf.start
		}
		out = append(out, FlowInfo{
			ID: lf.id, Flow: f, Rule: lf.verdict.Rule, Action: lf.verdict.Action, Enforced: !lf.verdict.Monitor,
			BytesOut: o, BytesIn: in, Start: lf.start, Idle: now.Sub(last),
		})
	}
	slices.SortFunc(out, func(a, b FlowInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// CloseFlow ends one live flow (reason "closed"); it reports false if
// there is no such flow.
func (g *Gateway) CloseFlow(id uint64) bool {
	lf := g.flows.get(id)
	if lf == nil {
		return false
	}
	lf.c.close(reasonClosed)
	return true
}

// DeniedInfo is a refused flow in the recent-denials ring: flows that
// differ only in their source port count as repeats.
type DeniedInfo struct {
	Proto  policy.Proto
	Src    netip.Addr
	Dst    netip.AddrPort
	Domain string
	Rule   string
	Action policy.Action
	// Limit, if set, is the limit that refused a flow the policy allowed
	// (by Rule); Action is then what the client got, reject.
	Limit string
	Count uint64 // verdicts and repeats (retries of a remembered refusal)
	First time.Time
	Last  time.Time
}

// maxDenied bounds the recent-denials ring.
const maxDenied = 256

// deniedRing keeps the most recently seen refused flows.
type deniedRing struct {
	mu      sync.Mutex
	entries map[deniedKey]*DeniedInfo
	total   atomic.Uint64 // refusals noted, repeats included
}

type deniedKey struct {
	proto  policy.Proto
	src    netip.Addr
	dst    netip.AddrPort
	domain string
	rule   string
	limit  string
}

// note counts a refusal of f by v at now.
func (r *deniedRing) note(f *policy.Flow, v policy.Verdict, now time.Time) {
	r.total.Add(1)
	r.remember(f, v, "", now)
}

// noteLimit remembers a refusal of f, which the policy allowed by v, by
// limit at now. It is not counted with the policy's refusals.
func (r *deniedRing) noteLimit(f *policy.Flow, v policy.Verdict, limit string, now time.Time) {
	v.Action = policy.Reject
	r.remember(f, v, limit, now)
}

func (r *deniedRing) remember(f *policy.Flow, v policy.Verdict, limit string, now time.Time) {
	k := deniedKey{f.Proto, f.Src.Addr(), f.Dst, f.Domain, v.Rule, limit}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.entries == nil {
		r.entries = make(map[deniedKey]*DeniedInfo)
	}
	if e := r.entries[k]; e != nil {
		e.Count++
		e.Last = now
		return
	}
	if len(r.entries) >= maxDenied { // forget the one seen longest ago
		var oldest deniedKey
		var at time.Time
		for k, e := range r.entries {
			if at.IsZero() || e.Last.Before(at) {
				oldest, at = k, e.Last
			}
		}
		delete(r.entries, oldest)
	}
	r.entries[k] = &DeniedInfo{Proto: f.Proto, Src: f.Src.Addr(), Dst: f.Dst, Domain: f.Domain, Rule: v.Rule, Action: v.Action, Limit: limit, Count: 1, First: now, Last: now}
}

// Denied returns the recent refusals, most recent first.
func (g *Gateway) Denied() []DeniedInfo {
	g.denials.mu.Lock()
	out := make([]DeniedInfo, 0, len(g.denials.entries))
	for _, e := range g.denials.entries {
		out = append(out, *e)
	}
	g.denials.mu.Unlock()
	slices.SortFunc(out, func(a, b DeniedInfo) int { return b.Last.Compare(a.Last) })
	return out
}

// ruleHits counts the flows each rule of one policy decided.
type ruleHits struct {
	p     *policy.Policy
	rules []atomic.Uint64
	byDef atomic.Uint64 // flows no rule matched
}

func newRuleHits(p *policy.Policy) *ruleHits {
	return &ruleHits{p: p, rules: make([]atomic.Uint64, p.Len())}
}

// count notes a fresh verdict of policy p.
func (g *Gateway) count(p *policy.Policy, v policy.Verdict) {
	h := g.hits.Load()
	if h == nil || h.p != p {
		return // decided by a policy just replaced
	}
	if v.Index >= 0 && v.Index < len(h.rules) {
		h.rules[v.Index].Add(1)
	} else {
		h.byDef.Add(1)
	}
}

// RuleHits returns the policy in force, how many flows each of its rules
// decided since it was loaded, and how many fell to its default.
func (g *Gateway) RuleHits() (p *policy.Policy, rules []uint64, byDefault uint64) {
	h := g.hits.Load()
	rules = make([]uint64, len(h.rules))
	for i := range h.rules {
		rules[i] = h.rules[i].Load()
	}
	return h.p, rules, h.byDef.Load()
}
