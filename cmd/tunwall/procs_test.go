package main

import (
	"runtime"
	"testing"
)

func TestSpareProc(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })

	t.Setenv("GOMAXPROCS", "")
	if got := spareProc(); got != before+1 || runtime.GOMAXPROCS(0) != before+1 {
		t.Fatalf("without GOMAXPROCS: spareProc %d, in force %d, want %d", got, runtime.GOMAXPROCS(0), before+1)
	}

	runtime.GOMAXPROCS(before)
	t.Setenv("GOMAXPROCS", "1") // the operator's choice stands, whatever the runtime made of it
	if got := spareProc(); got != before || runtime.GOMAXPROCS(0) != before {
		t.Fatalf("with GOMAXPROCS set: spareProc %d, in force %d, want %d unchanged", got, runtime.GOMAXPROCS(0), before)
	}
}
