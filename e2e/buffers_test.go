package e2e

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// TestStalledDownloadsShareTheBufferBudget: 16 clients each start a large
// download, read 8 MiB of it at full speed and then stop reading. With
// limits.buffer_memory at 4 MiB, each flow's stack buffers stay at 128 KiB
// each way (4 MiB over twice 16 flows), so what the stack may hold stays
// within the budget, and each flow holds one relay buffer. With 1 GiB the
// stack grows the same flows' buffers to their path, well beyond 4 MiB:
// the budget is what kept them small.
func TestStalledDownloadsShareTheBufferBudget(t *testing.T) {
	l := routedLab(t, "twbm")
	const flows, fast = 16, 8 << 20
	for _, c := range []struct {
		budget  string
		bytes   int64
		limited bool
	}{{"4MiB", 4 << 20, true}, {"1GiB", 1 << 30, false}} {
		t.Run(c.budget, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "control.sock")
			t.Cleanup(l.Unroute)
			tw := startGateway(t, l, "twbm", fmt.Sprintf("tun: {name: twbm}\nlog: {format: json}\ncontrol: {socket: %s}\nlimits: {buffer_memory: %s}\npolicy: {default: allow}\n", sock, c.budget))
			metrics := unixMetrics(t, sock)
			ready := waitEvent(t, tw.Log, func(e event) bool { return e.str("event") == "ready" })
			if ready.num("buffer_memory") != c.bytes {
				t.Errorf("ready event: buffer_memory %v, want %d", ready["buffer_memory"], c.bytes)
			}
			conns := make([]net.Conn, flows)
			for i := range conns {
				conn, err := l.Dial(l.Client, "tcp", net.JoinHostPort(lab.ServerV4, "7003"), 3*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				conns[i] = conn
			}
			var wg sync.WaitGroup
			errs := make(chan error, flows)
			for _, conn := range conns {
				wg.Go(func() {
					conn.SetDeadline(time.Now().Add(20 * time.Second))
					if _, err := fmt.Fprintf(conn, "%d 1\n", 1<<40); err != nil {
						errs <- err
						return
					}
					if _, err := io.CopyN(io.Discard, conn, fast); err != nil {
						errs <- fmt.Errorf("read %d MiB fast: %w", fast>>20, err)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			// The queues fill once the clients stop reading: wait for the
			// stack's buffer sizes and the relay buffers to settle, and
			// (for up to 10 s: a slow server fills them late) for every
			// flow to hold its relay buffer.
			var m map[string]float64
			deadline := time.Now().Add(10 * time.Second)
			for last, same := -1.0, 0; same < 5 || (m["tunwall_relay_buffers"] != flows && time.Now().Before(deadline)); {
				time.Sleep(100 * time.Millisecond)
				m = metrics()
				if v := m["tunwall_stack_buffer_bytes"] + m["tunwall_relay_buffers"]; v == last {
					same++
				} else {
					last, same = v, 0
				}
			}
			sizes, share := m["tunwall_stack_buffer_bytes"], m["tunwall_flow_buffer_max_bytes"]
			t.Logf("stack buffers %.0f KiB in all, at most %.0f KiB per flow each way; %v relay buffers held; tunwall RSS %.1f MiB",
				sizes/1024, share/1024, m["tunwall_relay_buffers"], m["process_resident_memory_bytes"]/(1<<20))
			if m["tunwall_relay_buffers"] != flows {
				t.Errorf("%v relay buffers held, want one for each of the %d stalled downloads", m["tunwall_relay_buffers"], flows)
			}
			// Every change of the share is logged; the last one set it.
			var resized event
			for _, e := range readEvents(t, tw.Log) {
				if e.str("event") == "buffers" {
					resized = e
				}
			}
			switch {
			case c.limited && (resized.num("max_buffer") != 128<<10 || resized.num("budget") != c.bytes):
				t.Errorf("last buffers event: %v, want max_buffer 128 KiB, budget %d", resized, c.bytes)
			case !c.limited && resized != nil:
				t.Errorf("buffers resized (%v) under a budget these flows do not reach", resized)
			}
			if c.limited {
				if share != 128<<10 {
					t.Errorf("a flow's buffers may grow to %v bytes each way, want 128 KiB", share)
				}
				if sizes > 4<<20 {
					t.Errorf("the stack's buffers may hold %v bytes, more than the 4 MiB budget", sizes)
				}
			} else if sizes <= 4<<20 {
				t.Errorf("without a tight budget the stack's buffers may hold only %v bytes: the downloads did not grow them", sizes)
			}
			tw.Stop(5 * time.Second)
		})
	}
}
