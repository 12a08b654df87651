package main

import (
	"os"
	"runtime"
)

// spareProc gives the Go scheduler one processor more than its default
// when that default is two or more and GOMAXPROCS is not set, and returns
// the number in force.
//
// Much of tunwall's work is system calls that carry the kernel's own
// packet work: a TUN write runs the receiving socket's TCP processing, and
// a connect to a nearby host runs the whole handshake. With one processor
// per CPU, a CPU often idles while goroutines wait for a processor held
// through such a call. On a 2-CPU machine the spare one raised the
// connection rate 7-19% and cut round-trip latency 6-8%, at a cost of 0-7%
// (once 15%) in single-flow throughput; a fourth was worse than a third.
// On one CPU it made everything worse (connection rate -20%, upload -33%),
// so a single processor stays single (README, "Benchmarks").
func spareProc() int {
	n := runtime.GOMAXPROCS(0)
	if os.Getenv("GOMAXPROCS") != "" || n < 2 {
		return n
	}
	runtime.GOMAXPROCS(n + 1)
	return n + 1
}
