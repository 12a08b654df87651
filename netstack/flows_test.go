package netstack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tunwall/tunwall/policy"
)

var anySource = netip.MustParseAddr("10.0.0.1")

// TestFlowTableReserve: a full table refuses with errTableFull, a closing
// one with errStopping, whatever its size; a removed flow frees its place.
func TestFlowTableReserve(t *testing.T) {
	tab := newFlowTable(2, 0)
	for id := uint64(1); id <= 2; id++ {
		if err := tab.reserve(id, anySource); err != nil {
			t.Fatalf("reserve %d of 2: %v", id, err)
		}
	}
	if err := tab.reserve(3, anySource); err != errTableFull {
		t.Errorf("reserve on a full table: %v, want errTableFull", err)
	}
	tab.remove(1)
	if err := tab.reserve(3, anySource); err != nil {
		t.Errorf("reserve after a remove: %v", err)
	}
	tab.remove(2)
	tab.remove(3)
	tab.closeAll(reasonShutdown)
	if err := tab.reserve(4, anySource); err != errStopping {
		t.Errorf("reserve on a closed table: %v, want errStopping", err)
	}
}

// TestFlowTablePerSource: with limits.max_flows_per_source each source
// address has that many places, whatever the others hold (an
// IPv4-mapped address is its IPv4 one, IPv6 hosts of one /64 are apart);
// a removed flow, whether only reserved or added, gives its source's
// place back; and the table's own bound still comes first.
func TestFlowTablePerSource(t *testing.T) {
	tab := newFlowTable(6, 2)
	next := uint64(0)
	reserve := func(src string) error {
		next++
		return tab.reserve(next, netip.MustParseAddr(src))
	}
	for _, step := range []struct {
		src  string
		want error
	}{
		{"10.0.0.1", nil},
		{"::ffff:10.0.0.1", nil}, // id 2: the same source as 10.0.0.1
		{"10.0.0.1", errSourceFull},
		{"10.0.0.2", nil},
		{"2001:db8:1:2::1", nil},
		{"2001:db8:1:2::1", nil}, // id 6
		{"2001:db8:1:2::1", errSourceFull},
		{"2001:db8:1:2::2", nil}, // id 8: another host of the /64; the table is full (6)
	} {
		if err := reserve(step.src); err != step.want {
			t.Fatalf("reserve %d from %s: %v, want %v", next, step.src, err, step.want)
		}
	}
	src := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), 40000)
	tab.add(2, policy.Flow{Proto: policy.TCP, Src: src}, policy.Verdict{}, time.Now(), idleFlow{})
	tab.remove(2) // added: gives 10.0.0.1 a place back
	tab.remove(6) // only reserved: gives 2001:db8:1:2::1 a place back
	for _, src := range []string{"::ffff:10.0.0.1", "2001:db8:1:2::1"} {
		if err := reserve(src); err != nil {
			t.Errorf("reserve from %s after a remove: %v", src, err)
		}
	}
	if err := reserve("10.0.0.3"); err != errTableFull {
		t.Errorf("reserve from a new source on a full table: %v, want errTableFull", err)
	}
	// Every id, refused ones too (3, 7, 11: they took no place).
	for id := uint64(1); id <= next; id++ {
		tab.remove(id)
	}
	if len(tab.sources) != 0 || len(tab.source) != 0 {
		t.Errorf("after every remove: sources %v, flows' sources %v", tab.sources, tab.source)
	}
}

// idleFlow is a flow that moves nothing.
type idleFlow struct{}

func (idleFlow) close(string)                         {}
func (idleFlow) counts() (out, in int64, _ time.Time) { return 0, 0, time.Time{} }
