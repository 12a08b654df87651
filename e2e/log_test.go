package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
	"time"
)

// event is one parsed line of the flow log.
type event map[string]any

func (e event) str(k string) string {
	s, _ := e[k].(string)
	return s
}

func (e event) num(k string) int64 {
	f, _ := e[k].(float64)
	return int64(f)
}

// readEvents parses every JSON line of the log at path. The one plain line
// allowed is the error report "tunwall: ..." that the command writes to
// stderr (the lab's log file has both) when it exits with an error. The
// log may be read while tunwall writes it, so a last line without its
// newline is a write still in progress: it is left for the next read (a
// log that ends so after tunwall exits fails the callers' checks of its
// last event).
func readEvents(t *testing.T, path string) []event {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var evs []event
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break
		}
		line := b[:i]
		b = b[i+1:]
		if bytes.HasPrefix(line, []byte("tunwall: ")) {
			continue
		}
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}

// waitEvent polls the log until an event matches, for up to 5 seconds.
func waitEvent(t *testing.T, path string, match func(event) bool) event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, e := range readEvents(t, path) {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching event in %s", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitNth waits for the n-th event (1-based) that match picks in log;
// what names such events in the failure.
func waitNth(t *testing.T, path string, match func(event) bool, n int, what string) event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var seen []event
		for _, e := range readEvents(t, path) {
			if match(e) {
				seen = append(seen, e)
			}
		}
		if len(seen) >= n {
			return seen[n-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s #%d never came (%d seen)", what, n, len(seen))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// flowEvent matches an event of kind ev for the flow from src (ip:port, or
// a bare address for ICMP) to dst.
func flowEvent(ev, src, dst string) func(event) bool {
	return func(e event) bool { return e.str("event") == ev && e.str("src") == src && e.str("dst") == dst }
}

// assertVerdict waits for the verdict of a flow of the suite's gateway
// and checks action and rule.
func assertVerdict(t *testing.T, src, dst, action, rule string) {
	t.Helper()
	expectVerdict(t, gw.Log, flowEvent("verdict", src, dst), src+" -> "+dst, action, rule)
}

// verdictTo matches the verdict events of proto flows to dst (ip:port, or
// an address for ICMP).
func verdictTo(proto, dst string) func(event) bool {
	return func(e event) bool {
		return e.str("event") == "verdict" && e.str("proto") == proto && e.str("dst") == dst
	}
}

// wantVerdict waits for a verdict for a proto flow to dst and checks it.
func wantVerdict(t *testing.T, log, proto, dst, action, rule string) event {
	t.Helper()
	return expectVerdict(t, log, verdictTo(proto, dst), proto+" to "+dst, action, rule)
}

// expectVerdict waits for the verdict event match picks in log and checks
// its action and rule; what names the flow in messages.
func expectVerdict(t *testing.T, log string, match func(event) bool, what, action, rule string) event {
	t.Helper()
	e := waitEvent(t, log, match)
	if e.str("action") != action || e.str("rule") != rule {
		t.Errorf("verdict for %s: action %q rule %q, want %q by %q", what, e.str("action"), e.str("rule"), action, rule)
	}
	return e
}
