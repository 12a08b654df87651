package flowlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tunwall/tunwall/netstack"
	"github.com/tunwall/tunwall/policy"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a goroutine-safe log destination.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		out = append(out, m)
	}
	return out
}

var (
	tcpFlow  = policy.Flow{Proto: policy.TCP, Src: netip.MustParseAddrPort("10.0.0.2:40000"), Dst: netip.MustParseAddrPort("192.0.2.1:443")}
	icmpFlow = policy.Flow{Proto: policy.ICMP, Src: netip.MustParseAddrPort("10.0.0.2:0"), Dst: netip.MustParseAddrPort("192.0.2.1:0"), Type: 8}
)

func newTestLog(level zerolog.Level, burst int, window time.Duration) (*Log, *syncBuffer) {
	buf := &syncBuffer{}
	return NewLog(New(buf, "json", false).Level(level), burst, window), buf
}

func TestEventFields(t *testing.T) {
	l, buf := newTestLog(zerolog.InfoLevel, 10, time.Hour)
	l.Verdict(1, tcpFlow, policy.Verdict{Action: policy.Reject, Rule: "no-https"})
	l.Verdict(2, icmpFlow, policy.Verdict{Action: policy.Allow, Rule: "ping", Log: true})
	l.Verdict(3, tcpFlow, policy.Verdict{Action: policy.Allow, Rule: "quiet"}) // debug: not at info
	l.Closed(2, tcpFlow, policy.Verdict{Rule: "web"}, netstack.FlowStats{BytesOut: 10, BytesIn: 20, Duration: 1500 * time.Millisecond, Reason: "fin"})
	l.Closed(4, tcpFlow, policy.Verdict{Rule: "web"}, netstack.FlowStats{Reason: "rst", Err: errors.New("connection refused")})
	l.Close()
	got := buf.lines(t)
	if len(got) != 4 {
		t.Fatalf("want 4 lines, got %d: %v", len(got), got)
	}
	want := []map[string]any{
		{"event": "verdict", "flow": 1.0, "proto": "tcp", "src": "10.0.0.2:40000", "dst": "192.0.2.1:443", "action": "reject", "rule": "no-https", "level": "info"},
		{"event": "verdict", "flow": 2.0, "proto": "icmp", "src": "10.0.0.2", "dst": "192.0.2.1", "icmp_type": 8.0, "action": "allow", "rule": "ping"},
		{"event": "close", "flow": 2.0, "rule": "web", "bytes_out": 10.0, "bytes_in": 20.0, "duration_ms": 1500.0, "reason": "fin"},
		{"event": "close", "flow": 4.0, "reason": "rst", "error": "connection refused"},
	}
	for i, w := range want {
		for k, v := range w {
			if got[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v", i, k, got[i][k], v)
			}
		}
		if _, ok := got[i]["time"]; !ok {
			t.Errorf("line %d has no time", i)
		}
	}
}

// Flows with an owner carry uid, user, pid and exe; parts not known are
// left out rather than logged empty, and flows without one carry none.
func TestOwnerFields(t *testing.T) {
	l, buf := newTestLog(zerolog.InfoLevel, 10, time.Hour)
	full := tcpFlow
	full.Owner = &policy.Owner{UID: 1001, User: "alice", PID: 4242, Exe: "/usr/bin/curl"}
	bare := tcpFlow
	bare.Owner = &policy.Owner{UID: 64101}
	l.Verdict(1, full, policy.Verdict{Action: policy.Deny, Rule: "r"})
	l.Closed(2, bare, policy.Verdict{Rule: "r"}, netstack.FlowStats{Reason: "fin"})
	l.Verdict(3, tcpFlow, policy.Verdict{Action: policy.Deny, Rule: "r"})
	l.Close()
	got := buf.lines(t)
	if len(got) != 3 {
		t.Fatalf("want 3 lines, got %d: %v", len(got), got)
	}
	for k, v := range map[string]any{"uid": 1001.0, "user": "alice", "pid": 4242.0, "exe": "/usr/bin/curl"} {
		if got[0][k] != v {
			t.Errorf("full owner: %s = %v, want %v", k, got[0][k], v)
		}
	}
	if got[1]["uid"] != 64101.0 {
		t.Errorf("bare owner: uid = %v, want 64101", got[1]["uid"])
	}
	for _, k := range []string{"user", "pid", "exe"} {
		if _, ok := got[1][k]; ok {
			t.Errorf("bare owner: %s is logged though unknown", k)
		}
	}
	for _, k := range []string{"uid", "user", "pid", "exe"} {
		if _, ok := got[2][k]; ok {
			t.Errorf("flow without owner carries %s", k)
		}
	}
}

// In monitor mode every verdict is logged at info, marked enforced: false.
func TestMonitorVerdicts(t *testing.T) {
	l, buf := newTestLog(zerolog.InfoLevel, 10, time.Hour)
	l.Verdict(1, tcpFlow, policy.Verdict{Action: policy.Reject, Rule: "r", Monitor: true})
	l.Verdict(2, tcpFlow, policy.Verdict{Action: policy.Allow, Rule: "a", Monitor: true})
	l.Verdict(3, tcpFlow, policy.Verdict{Action: policy.Reject, Rule: "r"})
	l.Close()
	got := buf.lines(t)
	if len(got) != 3 {
		t.Fatalf("want 3 lines (the monitored allow at info too), got %d: %v", len(got), got)
	}
	for i, want := range []any{false, false, nil} {
		if got[i]["enforced"] != want {
			t.Errorf("line %d: enforced = %v, want %v", i, got[i]["enforced"], want)
		}
	}
}

func TestDenyLinesRateLimited(t *testing.T) {
	l, buf := newTestLog(zerolog.InfoLevel, 5, time.Hour)
	for i := 0; i < 105; i++ {
		l.Verdict(uint64(i), tcpFlow, policy.Verdict{Action: policy.Deny, Rule: "default"})
	}
	l.Refused(200, tcpFlow, "max_flows")
	l.Close() // ends the window: the summary is written
	lines := buf.lines(t)
	if len(lines) != 6 {
		t.Fatalf("want 5 verdict lines and 1 summary, got %d", len(lines))
	}
	s := lines[5]
	if s["event"] != "suppressed" || s["count"] != 101.0 || s["window_ms"] != float64(time.Hour.Milliseconds()) {
		t.Errorf("summary = %v, want 101 suppressed", s)
	}
}

func TestWindowResets(t *testing.T) {
	l, buf := newTestLog(zerolog.InfoLevel, 1, 20*time.Millisecond)
	defer l.Close()
	l.Verdict(1, tcpFlow, policy.Verdict{Action: policy.Deny, Rule: "default"})
	l.Verdict(2, tcpFlow, policy.Verdict{Action: policy.Deny, Rule: "default"})
	deadline := time.Now().Add(5 * time.Second)
	for len(buf.lines(t)) < 2 { // the window timer writes the summary
		if time.Now().After(deadline) {
			t.Fatal("no suppressed summary after the window")
		}
		time.Sleep(5 * time.Millisecond)
	}
	l.Verdict(3, tcpFlow, policy.Verdict{Action: policy.Deny, Rule: "default"})
	if n := len(buf.lines(t)); n != 3 {
		t.Errorf("after the window a deny line should pass again: %d lines", n)
	}
}

func TestConsoleFormat(t *testing.T) {
	var b bytes.Buffer
	zl := New(&b, "auto", true)
	zl.Info().Str("event", "verdict").Msg("deny")
	if strings.HasPrefix(b.String(), "{") || !strings.Contains(b.String(), "event=") {
		t.Errorf("auto on a TTY should be console, got %q", b.String())
	}
	b.Reset()
	zl = New(&b, "auto", false)
	zl.Info().Msg("x")
	if !strings.HasPrefix(b.String(), "{") {
		t.Errorf("auto off a TTY should be JSON, got %q", b.String())
	}
}

func TestBufferedWriterKeepsOrderAndFlushes(t *testing.T) {
	var out syncBuffer
	w := newBufferedWriter(&out, 64, time.Hour)
	var want strings.Builder
	for i := 0; i < 100; i++ { // crosses the 64-byte threshold many times
		line := strings.Repeat(string(rune('a'+i%26)), i%7+1) + "\n"
		w.Write([]byte(line))
		want.WriteString(line)
	}
	w.Close()
	out.mu.Lock()
	defer out.mu.Unlock()
	if out.b.String() != want.String() {
		t.Fatal("buffered output differs from what was written")
	}
}

// A steady stream of lines, written out each time max bytes are pending,
// needs no new memory once the writer's two buffers have grown.
func TestBufferedWriterReusesBuffers(t *testing.T) {
	w := newBufferedWriter(io.Discard, 256, time.Hour)
	defer w.Close()
	line := []byte(strings.Repeat("x", 63) + "\n")
	cycle := func() {
		for range 256 / len(line) { // the last one reaches max and flushes
			w.Write(line)
		}
	}
	for range 4 {
		cycle()
	}
	if n := testing.AllocsPerRun(100, cycle); n != 0 {
		t.Errorf("%.1f allocations per %d bytes logged, want 0", n, 256)
	}
}

func TestBufferedWriterFlushesOnInterval(t *testing.T) {
	var out syncBuffer
	w := newBufferedWriter(&out, 1<<20, 10*time.Millisecond)
	defer w.Close()
	w.Write([]byte("line\n"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		out.mu.Lock()
		s := out.b.String()
		out.mu.Unlock()
		if s == "line\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("line not written within the interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
