//go:build linux

package main

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// TestRelayResetEndsFlow: when the client resets its flow, the relay
// returns and the upstream server sees a reset at once, not a connection
// kept for drainTime and then closed.
func TestRelayResetEndsFlow(t *testing.T) {
	client, local := pair(t)    // the client's flow as the gateway sees it
	upstream, server := pair(t) // the gateway's connection to the server
	done := make(chan struct{})
	go func() {
		relay(local, upstream)
		close(done)
	}()
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := server.Read(buf); err != nil {
		t.Fatal(err)
	}
	client.SetLinger(0)
	client.Close()
	select {
	case <-done:
	case <-time.After(drainTime / 2):
		t.Fatal("relay still running after the client reset")
	}
	server.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := server.Read(buf); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("server read after the reset: %v, want ECONNRESET", err)
	}
}
