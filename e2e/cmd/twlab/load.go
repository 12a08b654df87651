package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// crr measures connect-request-response: workers each connect, send one
// byte, read it back and close with RST, as fast as they can.
func crr(addr string, workers int, d time.Duration) error {
	var done, failed, slow atomic.Int64
	var errMu sync.Mutex
	errs := map[string]int{}
	fail := func(err error) {
		failed.Add(1)
		msg := err.Error()
		if i := strings.Index(msg, "->"); i >= 0 { // drop the varying local port
			msg = msg[:strings.LastIndex(msg[:i], ":")] + msg[i:]
		}
		errMu.Lock()
		errs[msg]++
		errMu.Unlock()
	}
	start := time.Now()
	end := start.Add(d)
	// The dials share the run's deadline, so a dial still waiting when the
	// run ends is cut short: that is the end of the run, not a failure.
	ctx, cancel := context.WithDeadline(context.Background(), end)
	defer cancel()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := []byte{1}
			dialer := net.Dialer{Timeout: 2 * time.Second}
			for time.Now().Before(end) {
				t0 := time.Now()
				c, err := dialer.DialContext(ctx, "tcp", addr)
				if err != nil && (ctx.Err() != nil || !time.Now().Before(end)) {
					break
				}
				if time.Since(t0) > 900*time.Millisecond {
					slow.Add(1) // a SYN or SYN-ACK was lost and retransmitted
				}
				if err != nil {
					fail(err)
					continue
				}
				c.SetDeadline(time.Now().Add(2 * time.Second))
				_, err = c.Write(b)
				if err == nil {
					_, err = io.ReadFull(c, b)
				}
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
				if err != nil {
					fail(err)
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	return emit(map[string]any{"rate": float64(done.Load()) / secs, "done": done.Load(), "failed": failed.Load(), "slow_dials": slow.Load(), "errors": errs})
}

// rr measures 1-byte request-response latency on one connection.
func rr(network, addr string, n int) error {
	c, err := net.DialTimeout(network, addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	lat := make([]time.Duration, 0, n)
	b := []byte{1}
	for i := 0; i < n+n/10; i++ { // the first tenth warms up
		c.SetDeadline(time.Now().Add(2 * time.Second))
		t := time.Now()
		if _, err := c.Write(b); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return fmt.Errorf("rr read: %w", err)
		}
		if i >= n/10 {
			lat = append(lat, time.Since(t))
		}
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	return emit(map[string]any{"p50_us": pct(0.50), "p99_us": pct(0.99), "n": len(lat)})
}

// hold opens n TCP connections, prints "ready", and keeps them open until
// stdin closes or a signal arrives.
func hold(addr string, n int) error {
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return fmt.Errorf("hold: %d open: %w", len(conns), err)
		}
		conns = append(conns, c)
	}
	// One round trip on each proves the flow is established end to end.
	b := []byte{1}
	for _, c := range conns {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write(b); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
	}
	fmt.Println("ready")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() { io.Copy(io.Discard, os.Stdin); stop() }()
	<-ctx.Done()
	return nil
}

func emit(v any) error {
	if err := json.NewEncoder(os.Stdout).Encode(v); err != nil {
		return err
	}
	return nil
}

var errUsage = errors.New("usage")
