package main

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// fakeListener hands out the results in its list, then net.ErrClosed.
type fakeListener struct {
	results []any // net.Conn or error
}

func (l *fakeListener) Accept() (net.Conn, error) {
	if len(l.results) == 0 {
		return nil, net.ErrClosed
	}
	r := l.results[0]
	l.results = l.results[1:]
	if err, ok := r.(error); ok {
		return nil, err
	}
	return r.(net.Conn), nil
}
func (l *fakeListener) Close() error   { return nil }
func (l *fakeListener) Addr() net.Addr { return &net.TCPAddr{} }

// TestAcceptLoopOutlastsEMFILE: running out of descriptors pauses the
// service; the connection after it is still served, and only a closed
// listener ends the loop.
func TestAcceptLoopOutlastsEMFILE(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	ln := &fakeListener{results: []any{syscall.EMFILE, syscall.EMFILE, a}}
	served := make(chan net.Conn, 1)
	acceptLoop(ln, func(c net.Conn) { served <- c })
	select {
	case c := <-served:
		if c != a {
			t.Fatalf("served %v, want the connection after the errors", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the connection after the errors was not served")
	}
}
