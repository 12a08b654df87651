package main

import (
	"os"
	"runtime"
)

// spareProc gives the Go scheduler one processor more than the CPUs it may
// use, unless GOMAXPROCS is set, and returns the number in force.
//
// Much of tunwall's work is system calls that carry the kernel's own
// packet work: a TUN write runs the receiving socket's TCP processing, and
// a connect to a nearby host runs the whole handshake. With one processor
// per CPU, a CPU often idles while goroutines wait for a processor held
// through such a call; on a 2-CPU machine the spare one raised the
// connection rate 7-19% and cut round-trip latency 6-8%, at a cost of 0-7%
// (once 15%) in single-flow throughput (README, "Benchmarks").
func spareProc() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	n := runtime.GOMAXPROCS(0) + 1
	runtime.GOMAXPROCS(n)
	return n
}
