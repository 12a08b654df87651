package policy

import (
	"math/bits"
	"net/netip"
	"slices"

	"github.com/gaissmai/bart"
)

// The index finds the first rule that matches a flow without walking the
// rule list. Each dimension of a rule (protocol, destination, source,
// destination port) splits into the rules that match any value ("wild")
// and those that name values; for the named ones the dimension keeps one
// class per distinct value region, holding the rules that match there.
// A flow's candidates in a dimension are wild ∪ class; the rules that
// match in every dimension are the intersection, kept as bitsets with one
// bit per rule in list order, so the lowest set bit is the first match.
// What the index leaves out (owners, and whatever a rule checks beyond the
// four dimensions) is checked on that candidate before it wins.
//
// Bitsets have a summary with one bit per 64-rule word, so words where
// some dimension has no candidate are skipped without being read. Class
// bitsets are sparse: only their non-zero words are stored.

// bitset is a dense set of rule indices.
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

func (b bitset) set(i int)   { b[i/64] |= 1 << (i % 64) }
func (b bitset) unset(i int) { b[i/64] &^= 1 << (i % 64) }
func (b bitset) or(o bitset) {
	for i := range b {
		b[i] |= o[i]
	}
}
func (b bitset) clone() bitset { return slices.Clone(b) }
func (b bitset) summary() bitset {
	s := newBitset(len(b))
	for i, w := range b {
		if w != 0 {
			s.set(i)
		}
	}
	return s
}

// sparse is a class's bitset. When at least a quarter of its words are
// non-zero it is stored whole, already joined with its dimension's wild
// rules; otherwise only its non-zero words are kept. Either way its
// summary covers the wild rules too.
type sparse struct {
	sum   bitset   // bit i: word i of wild ∪ class is non-zero
	full  bitset   // wild ∪ class, or nil
	at    []int32  // indices of the class's non-zero words, ascending
	words []uint64 // the words, in the same order
}

func newSparse(b, wild bitset) sparse {
	nonzero := 0
	for _, w := range b {
		if w != 0 {
			nonzero++
		}
	}
	joined := b.clone()
	joined.or(wild)
	s := sparse{sum: joined.summary()}
	if nonzero*4 >= len(b) {
		s.full = joined
		return s
	}
	for i, w := range b {
		if w != 0 {
			s.at = append(s.at, int32(i))
			s.words = append(s.words, w)
		}
	}
	return s
}

// dim is one dimension of the index.
type dim struct {
	wild    bitset // rules that match any value in this dimension
	wildSum bitset
	classes []sparse
}

// cursor walks one dimension's candidates for one flow in ascending word
// order.
type cursor struct {
	full, sums bitset  // the candidates whole (nil: wild plus c) and their summary
	wild       bitset  // with c
	c          *sparse // the flow's class when stored sparse
	next       int     // position in c.at
}

func (d *dim) cursor(class int) cursor {
	switch {
	case class < 0:
		return cursor{full: d.wild, sums: d.wildSum}
	case d.classes[class].full != nil:
		return cursor{full: d.classes[class].full, sums: d.classes[class].sum}
	}
	c := &d.classes[class]
	return cursor{sums: c.sum, wild: d.wild, c: c}
}

// word returns the candidates in word i; calls come with ascending i.
func (c *cursor) word(i int) uint64 {
	if c.full != nil {
		return c.full[i]
	}
	w := c.wild[i]
	at := c.c.at
	for c.next < len(at) && int(at[c.next]) < i {
		c.next++
	}
	if c.next < len(at) && int(at[c.next]) == i {
		w |= c.c.words[c.next]
	}
	return w
}

// index is the compiled form of a rule list.
type index struct {
	// Protocol and port are one dimension: for TCP and for UDP, the rules
	// of that protocol by destination port; for ICMP, the ICMP rules.
	port     [2]portDim // TCP, UDP
	icmp     dim        // no classes
	dst, src addrDim
}

// addrDim classes addresses by the longest rule prefix containing them.
type addrDim struct {
	dim
	lpm *bart.Table[int32] // prefix -> class
}

func (a *addrDim) class(addr netip.Addr) int {
	if c, ok := a.lpm.Lookup(addr); ok {
		return int(c)
	}
	return -1
}

// portDim classes ports by the ranges between rule port boundaries.
type portDim struct {
	dim
	starts []uint16 // class i covers starts[i] up to starts[i+1]-1
	class0 []int32  // class of each range; -1 where no rule names the port
}

func (p *portDim) class(port uint16) int {
	i, found := slices.BinarySearch(p.starts, port)
	if !found {
		i--
	}
	if i < 0 {
		return -1
	}
	return int(p.class0[i])
}

// buildIndex compiles the rules' protocols, addresses and ports.
func buildIndex(rules []rule) *index {
	ix := &index{}
	icmp := newBitset(len(rules))
	for i := range rules {
		if rules[i].protos&ICMP != 0 {
			icmp.set(i)
		}
	}
	ix.icmp = dim{wild: icmp, wildSum: icmp.summary()}
	ix.port = [2]portDim{buildPortDim(rules, TCP), buildPortDim(rules, UDP)}
	// A rule with lists for an address is wild there: its prefixes and
	// lists are checked together outside the index.
	ix.dst = buildAddrDim(rules, func(r *rule) (*prefixSet, bool) { return &r.dst, len(r.dstLists) > 0 })
	ix.src = buildAddrDim(rules, func(r *rule) (*prefixSet, bool) { return &r.src, len(r.srcLists) > 0 })
	return ix
}

func buildAddrDim(rules []rule, set func(*rule) (*prefixSet, bool)) addrDim {
	n := len(rules)
	wild := newBitset(n)
	named := new(bart.Table[bitset]) // prefix -> rules that name it
	for i := range rules {
		s, lists := set(&rules[i])
		if s.any || lists {
			wild.set(i)
			continue
		}
		for _, list := range [][]netip.Prefix{s.v4, s.v6} {
			for _, p := range list {
				named.Modify(p.Masked(), func(b bitset, ok bool) (bitset, bool) {
					if !ok {
						b = newBitset(n)
					}
					b.set(i)
					return b, false
				})
			}
		}
	}
	d := addrDim{dim: dim{wild: wild, wildSum: wild.summary()}, lpm: new(bart.Table[int32])}
	// An address's rules are those naming any prefix that contains it:
	// the longest such prefix and all prefixes above it.
	for p := range named.All() {
		b := newBitset(n)
		for _, above := range named.Supernets(p) {
			b.or(above)
		}
		d.lpm.Insert(p, int32(len(d.classes)))
		d.classes = append(d.classes, newSparse(b, wild))
	}
	return d
}

// buildPortDim indexes the rules of protocol p by destination port.
func buildPortDim(rules []rule, p Proto) portDim {
	n := len(rules)
	wild := newBitset(n)
	type edge struct {
		at   int // port where the change happens; 65536 is past the end
		rule int
		add  bool
	}
	var edges []edge
	for i := range rules {
		if rules[i].protos&p == 0 {
			continue
		}
		if len(rules[i].ports) == 0 {
			wild.set(i)
			continue
		}
		for _, r := range rules[i].ports {
			edges = append(edges, edge{int(r.lo), i, true}, edge{int(r.hi) + 1, i, false})
		}
	}
	slices.SortFunc(edges, func(a, b edge) int { return a.at - b.at })
	d := portDim{dim: dim{wild: wild, wildSum: wild.summary()}}
	// Sweep the port line: count how many of each rule's ranges cover the
	// current port, and snapshot the set at every boundary.
	cover := make([]int32, n)
	cur := newBitset(n)
	for k := 0; k < len(edges); {
		at := edges[k].at
		for ; k < len(edges) && edges[k].at == at; k++ {
			e := edges[k]
			if e.add {
				cover[e.rule]++
			} else {
				cover[e.rule]--
			}
			if cover[e.rule] > 0 {
				cur.set(e.rule)
			} else {
				cur.unset(e.rule)
			}
		}
		if at > 65535 {
			break
		}
		class := int32(-1)
		if slices.ContainsFunc(cur, func(w uint64) bool { return w != 0 }) {
			class = int32(len(d.classes))
			d.classes = append(d.classes, newSparse(cur.clone(), wild))
		}
		d.starts = append(d.starts, uint16(at))
		d.class0 = append(d.class0, class)
	}
	return d
}

// first calls try with each rule that matches f in protocol, addresses and
// port, in rule order, until try returns true; it returns that rule's
// index or -1.
func (ix *index) first(f *Flow, src, dst netip.Addr, try func(i int) bool) int {
	var cs [3]cursor
	switch f.Proto {
	case TCP, UDP:
		d := &ix.port[0]
		if f.Proto == UDP {
			d = &ix.port[1]
		}
		cs[0] = d.cursor(d.class(f.Dst.Port()))
	default:
		cs[0] = ix.icmp.cursor(-1)
	}
	cs[1] = ix.dst.cursor(ix.dst.class(dst))
	cs[2] = ix.src.cursor(ix.src.class(src))
	const nd = len(cs)
	for j := range cs[0].sums {
		s := cs[0].sums[j]
		for k := 1; k < nd && s != 0; k++ {
			s &= cs[k].sums[j]
		}
		for s != 0 {
			i := j*64 + bits.TrailingZeros64(s)
			s &= s - 1
			w := cs[0].word(i)
			for k := 1; k < nd && w != 0; k++ {
				w &= cs[k].word(i)
			}
			for w != 0 {
				r := i*64 + bits.TrailingZeros64(w)
				w &= w - 1
				if try(r) {
					return r
				}
			}
		}
	}
	return -1
}
