package main

import (
	"runtime"
	"testing"
)

func TestSpareProc(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })
	for _, tc := range []struct {
		name  string
		env   string
		procs int // the default in force before
		want  int
	}{
		{"two processors get a spare", "", 2, 3},
		{"eight processors get a spare", "", 8, 9},
		{"one processor stays one", "", 1, 1},
		{"the operator's GOMAXPROCS stands", "2", 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOMAXPROCS", tc.env)
			runtime.GOMAXPROCS(tc.procs)
			if got := spareProc(); got != tc.want || runtime.GOMAXPROCS(0) != tc.want {
				t.Fatalf("spareProc %d, in force %d, want %d", got, runtime.GOMAXPROCS(0), tc.want)
			}
		})
	}
}
