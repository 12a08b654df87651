package netstack

import (
	"io"
	"maps"
	"net/netip"
	"sync"
	"time"

	"github.com/tunwall/tunwall/internal/names"
	"github.com/tunwall/tunwall/policy"
)

// Name cache bounds: how long an answer is trusted at most and at least,
// whatever its TTL says.
const (
	maxNameTTL = time.Hour
	minNameTTL = 10 * time.Second
)

// blockedTTL is the TTL of tunwall's own answers for blocked names.
const blockedTTL = 60

// nameCache maps, per client, the addresses DNS answers gave it to the
// name it asked for, until the answer's TTL runs out. It is bounded: when
// full, expired entries go first, then arbitrary ones.
type nameCache struct {
	max int

	mu      sync.Mutex // guards entries
	entries map[nameKey]nameEntry
}

type nameKey struct{ client, addr netip.Addr }

type nameEntry struct {
	name    string
	expires time.Time
}

func newNameCache(max int) *nameCache {
	return &nameCache{max: max, entries: make(map[nameKey]nameEntry)}
}

func (c *nameCache) put(client netip.Addr, name string, addrs []names.Address, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range addrs {
		ttl := min(max(time.Duration(a.TTL)*time.Second, minNameTTL), maxNameTTL)
		k := nameKey{client.Unmap(), a.Addr.Unmap()}
		if _, ok := c.entries[k]; !ok && len(c.entries) >= c.max {
			c.evict(now)
			if len(c.entries) >= c.max {
				return
			}
		}
		c.entries[k] = nameEntry{name: name, expires: now.Add(ttl)}
	}
}

// evict frees room: every expired entry, or else one in eight.
func (c *nameCache) evict(now time.Time) {
	c.sweepLocked(now)
	if len(c.entries) < c.max {
		return
	}
	n := max(c.max/8, 1)
	for k := range c.entries { // map order is arbitrary
		delete(c.entries, k)
		if n--; n == 0 {
			return
		}
	}
}

// get returns the name client resolved to addr, if the answer is current.
func (c *nameCache) get(client, addr netip.Addr, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[nameKey{client.Unmap(), addr.Unmap()}]
	if !ok || now.After(e.expires) {
		return "", false
	}
	return e.name, true
}

func (c *nameCache) sweep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweepLocked(now)
}

func (c *nameCache) sweepLocked(now time.Time) {
	maps.DeleteFunc(c.entries, func(_ nameKey, e nameEntry) bool { return now.After(e.expires) })
}

// isDNS reports whether f goes to the DNS port, where tunwall reads the
// queries and answers.
func isDNS(f policy.Flow) bool { return f.Dst.Port() == 53 }

// upstreamOf is where an allowed flow is dialed: its destination, or
// dns.upstream for DNS when that is set.
func (g *Gateway) upstreamOf(f policy.Flow) string {
	if isDNS(f) && g.cfg.DNS.Upstream.IsValid() {
		return g.cfg.DNS.Upstream.String()
	}
	return f.Dst.String()
}

// dnsFilter handles the messages of one DNS session (UDP or TCP): it
// answers queries for names the policy blocks itself, and learns the
// addresses of answered names for the client.
type dnsFilter struct {
	g    *Gateway
	id   uint64
	flow policy.Flow
}

// query inspects a message from the client. It returns true if tunwall
// answered it (the name is blocked) and it must not go upstream.
func (d *dnsFilter) query(b []byte, reply func([]byte) error) bool {
	q, err := names.ParseQuery(b)
	if err != nil || q.Name == "" {
		return false // not a query tunwall reads: it goes upstream as it is
	}
	f := d.flow
	f.Domain, f.DomainSource = q.Name, "dns"
	f.At = time.Now()
	p := d.g.policy.Load()
	v, ok := p.JudgeName(f)
	if !ok {
		return false
	}
	d.g.count(p, v)
	d.g.cfg.Events.Name(d.id, f, q.Type.String(), v)
	if v.Effective() == policy.Allow {
		return false
	}
	d.g.denials.note(&f, v, f.At)
	answer, err := names.Blocked(b, d.g.cfg.DNS.BlockZero, blockedTTL)
	if err != nil {
		return false
	}
	d.g.stats.BlockedNames.Add(1)
	reply(answer)
	return true
}

// datagrams returns the relay filters of a DNS session over UDP: blocked
// queries are answered to client and not sent on; answers pass on and are
// learned.
func (d *dnsFilter) datagrams(client io.Writer) (out, in func([]byte) []byte) {
	out = func(b []byte) []byte {
		if d.query(b, func(answer []byte) error { _, err := client.Write(answer); return err }) {
			return nil
		}
		return b
	}
	in = func(b []byte) []byte { d.answer(b); return b }
	return out, in
}

// answer inspects a message from the server and caches its addresses.
func (d *dnsFilter) answer(b []byte) {
	name, addrs, err := names.Answer(b)
	if err != nil || len(addrs) == 0 {
		return
	}
	d.g.names.put(d.flow.Src.Addr(), name, addrs, time.Now())
}

// dnsStream does for DNS over TCP what dnsFilter does for datagrams. Both
// directions pass on whole length-prefixed messages only, so that an
// answer tunwall writes to the client never lands inside one from the
// server; writes to the client share a lock for the same reason.
type dnsStream struct {
	d       *dnsFilter
	client  *lockedConn
	out, in []byte // bytes of an unfinished message, each direction
}

// frames splits whole messages off the front of *buf, calls each with
// every message (without its length prefix, and with it), and leaves an
// unfinished one in *buf.
func frames(buf *[]byte, each func(msg, framed []byte)) {
	b := *buf
	for len(b) >= 2 {
		n := int(b[0])<<8 | int(b[1])
		if len(b) < 2+n {
			break
		}
		each(b[2:2+n], b[:2+n])
		b = b[2+n:]
	}
	*buf = append((*buf)[:0], b...)
}

// fromClient returns the client's whole queries that go to the server;
// queries for blocked names are answered here.
func (s *dnsStream) fromClient(b []byte) []byte {
	s.out = append(s.out, b...)
	var fwd []byte
	frames(&s.out, func(msg, framed []byte) {
		answered := s.d.query(msg, func(answer []byte) error {
			_, err := s.client.Write(append([]byte{byte(len(answer) >> 8), byte(len(answer))}, answer...))
			return err
		})
		if !answered {
			fwd = append(fwd, framed...)
		}
	})
	return fwd
}

// fromServer returns the server's whole answers, learning their addresses.
func (s *dnsStream) fromServer(b []byte) []byte {
	s.in = append(s.in, b...)
	var whole []byte
	frames(&s.in, func(msg, framed []byte) {
		s.d.answer(msg)
		whole = append(whole, framed...)
	})
	return whole
}
