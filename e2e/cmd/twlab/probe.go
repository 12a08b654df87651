package main

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// probe makes one echo exchange with addr over tcp, udp or icmp (a ping
// socket) and reports
// {"ok": true} or {"ok": false, "error": "...", "errno": "..."}. It always
// exits 0: a refused or unreachable probe is a result, not a failure.
func probe(network, addr string) error {
	return emit(probeOnce(network, addr, 2*time.Second))
}

func probeOnce(network, addr string, timeout time.Duration) map[string]any {
	err := echoOnce(network, addr, timeout)
	if err == nil {
		return map[string]any{"ok": true}
	}
	return map[string]any{"ok": false, "error": err.Error(), "errno": errnoName(err)}
}

func echoOnce(network, addr string, timeout time.Duration) error {
	if network == "icmp" {
		return echoICMP(addr, timeout)
	}
	c, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("p\n")); err != nil {
		return err
	}
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil {
		return err
	}
	return nil
}

// errnoName names the errno under err ("ECONNREFUSED"), or "timeout".
func errnoName(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTimeout) {
		return "timeout"
	}
	for _, e := range errnoNames {
		if errors.Is(err, e.errno) {
			return e.name
		}
	}
	return "other"
}

var errnoNames = []struct {
	errno syscall.Errno
	name  string
}{
	{syscall.ECONNREFUSED, "ECONNREFUSED"}, {syscall.EHOSTUNREACH, "EHOSTUNREACH"},
	{syscall.ENETUNREACH, "ENETUNREACH"}, {syscall.ECONNRESET, "ECONNRESET"},
	{syscall.EPERM, "EPERM"}, {syscall.EACCES, "EACCES"},
}

// spray sends a TCP echo and a UDP echo to each address every 20 ms for
// the given time, and reports how each attempt ended, by protocol and
// errno: the traffic a leak test watches for.
func spray(d time.Duration, addrs []string) error {
	var mu sync.Mutex
	results := map[string]int{}
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for _, a := range addrs {
		for _, network := range []string{"tcp", "udp"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) {
					outcome := "ok"
					if err := echoOnce(network, a, 200*time.Millisecond); err != nil {
						outcome = errnoName(err)
					}
					mu.Lock()
					results[network+" "+outcome]++
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
				}
			}()
		}
	}
	wg.Wait()
	return emit(results)
}

// errTimeout is a ping that got no reply in time.
var errTimeout = errors.New("timeout")
