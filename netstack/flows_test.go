package netstack

import "testing"

// TestFlowTableReserve: a full table refuses with errTableFull, a closing
// one with errStopping, whatever its size; a removed flow frees its place.
func TestFlowTableReserve(t *testing.T) {
	tab := newFlowTable(2)
	for id := uint64(1); id <= 2; id++ {
		if err := tab.reserve(id); err != nil {
			t.Fatalf("reserve %d of 2: %v", id, err)
		}
	}
	if err := tab.reserve(3); err != errTableFull {
		t.Errorf("reserve on a full table: %v, want errTableFull", err)
	}
	tab.remove(1)
	if err := tab.reserve(3); err != nil {
		t.Errorf("reserve after a remove: %v", err)
	}
	tab.remove(2)
	tab.remove(3)
	tab.closeAll(reasonShutdown)
	if err := tab.reserve(4); err != errStopping {
		t.Errorf("reserve on a closed table: %v, want errStopping", err)
	}
}
