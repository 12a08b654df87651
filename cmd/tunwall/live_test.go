package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunwall/tunwall/internal/control"
	"github.com/tunwall/tunwall/netstack"
	"github.com/tunwall/tunwall/policy"
)

// backend is a control.Backend with fixed answers: flow 7 (curl to
// ok.test over TLS), a monitor-mode flow 8, one refusal.
type backend struct{ closed []uint64 }

func (b *backend) Flows() []netstack.FlowInfo {
	start := time.Now().Add(-90 * time.Second)
	return []netstack.FlowInfo{
		{ID: 7, Rule: "web", Action: policy.Allow, Enforced: true, BytesOut: 1536, BytesIn: 3 << 20, Start: start, Idle: 2 * time.Second,
			Flow: policy.Flow{Proto: policy.TCP, Src: netip.MustParseAddrPort("10.0.0.2:5000"), Dst: netip.MustParseAddrPort("192.0.2.1:443"),
				Domain: "ok.test", DomainSource: "sni", Owner: &policy.Owner{UID: 1000, User: "ann", PID: 42, Exe: "/usr/bin/curl"}}},
		{ID: 8, Rule: "no-dns", Action: policy.Deny, Enforced: false, BytesOut: 40, Start: start, Idle: 300 * time.Millisecond,
			Flow: policy.Flow{Proto: policy.UDP, Src: netip.MustParseAddrPort("10.0.0.3:5353"), Dst: netip.MustParseAddrPort("192.0.2.53:53")}},
	}
}

func (b *backend) CloseFlow(id uint64) bool {
	if id != 7 {
		return false
	}
	b.closed = append(b.closed, id)
	return true
}

func (b *backend) Denied() []netstack.DeniedInfo {
	at := time.Date(2026, 11, 21, 9, 30, 5, 0, time.Local)
	return []netstack.DeniedInfo{{Proto: policy.TCP, Src: netip.MustParseAddr("10.0.0.3"), Dst: netip.MustParseAddrPort("192.0.2.9:23"),
		Domain: "telnet.test", Rule: "no-telnet", Action: policy.Reject, Count: 4, First: at, Last: at},
		{Proto: policy.UDP, Src: netip.MustParseAddr("10.0.0.4"), Dst: netip.MustParseAddrPort("192.0.2.7:443"),
			Rule: "web", Action: policy.Reject, Limit: "max_flows_per_source", Count: 1, First: at, Last: at}}
}

func (b *backend) Stats() map[string]uint64 {
	return map[string]uint64{"flows_active": 2, "packets_in": 1234, "blocked_names": 0}
}
func (b *backend) Reload() error { return nil }
func (b *backend) Policy() control.PolicyInfo {
	return control.PolicyInfo{Hash: "abc123", Source: "/etc/tunwall.yaml"}
}
func (b *backend) Metrics() netstack.Metrics { return netstack.Metrics{} }
func (b *backend) Dashboard() string         { return "http://127.0.0.1:9190/#token=secret" }
func (b *backend) CaptureConfig() policy.CaptureConfig {
	return policy.CaptureConfig{}
}
func (b *backend) Capture(uint64, int) (control.PacketSource, error) { return nil, netstack.ErrNoFlow }

// serveBackend runs the API for b on a socket and returns its path.
func serveBackend(t *testing.T, b control.Backend) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "c.sock")
	ln, err := control.Listen(sock, -1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { control.Serve(ctx, ln, control.Handler(b)); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return sock
}

// cli runs the command line and returns exit code, stdout and stderr.
func cli(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestLiveCommands: the commands that talk to a running tunwall print
// tables people can read, JSON as the API gives it, and the right exit
// codes for bad arguments and missing flows.
func TestLiveCommands(t *testing.T) {
	b := &backend{}
	sock := serveBackend(t, b)
	for _, tc := range []struct {
		args   []string
		code   int
		stdout []string // lines (after trimming spaces) or fragments that must appear
		stderr string
	}{
		{[]string{"flows"}, 0, []string{
			"ID  PROTO  SRC            DST            NAME           APP   RULE                    OUT      IN       AGE    IDLE\n",
			"7   tcp    10.0.0.2:5000  192.0.2.1:443  ok.test (sni)  curl  web                     1.5 KiB  3.0 MiB  1m3",
			"8   udp    10.0.0.3:5353  192.0.2.53:53  -              -     no-dns (deny, monitor)  40 B     0 B      1m3",
			"300ms",
			"2 live flows",
		}, ""},
		{[]string{"denied"}, 0, []string{
			"LAST      PROTO  SRC       DST            NAME         ACTION  RULE                        COUNT\n",
			"09:30:05  tcp    10.0.0.3  192.0.2.9:23   telnet.test  reject  no-telnet                   4\n",
			"09:30:05  udp    10.0.0.4  192.0.2.7:443  -            reject  limit max_flows_per_source  1\n",
		}, ""},
		{[]string{"stats"}, 0, []string{"blocked_names  0\nflows_active   2\npackets_in     1234\n"}, ""},
		{[]string{"kill", "7"}, 0, []string{"flow 7 closed\n"}, ""},
		{[]string{"kill", "9"}, 1, nil, "tunwall: kill: no live flow 9\n"},
		{[]string{"kill", "x"}, 2, nil, `kill: "x" is not a flow ID`},
		{[]string{"kill"}, 2, nil, "kill: want one flow ID"},
		{[]string{"flows", "extra"}, 2, nil, `flows: unexpected arguments ["extra"]`},
		{[]string{"dashboard"}, 0, []string{"http://127.0.0.1:9190/#token=secret\n"}, ""},
		{[]string{"capture", "--flow", "3", "-w", filepath.Join(t.TempDir(), "x.pcap")}, 1, nil, "tunwall: capture: packet capture is off (capture.enabled: false)\n"},
		{[]string{"capture", "--flow", "3", "--denied", "-w", "x"}, 2, nil, "capture: give --denied or --flow ID, one of them"},
		{[]string{"capture", "--flow", "x", "-w", "x"}, 2, nil, `capture: --flow "x" is not a flow ID`},
		{[]string{"capture", "--denied", "--max-bytes", "lots", "-w", "x"}, 2, nil, `capture: --max-bytes: "lots" is not a size`},
		{[]string{"reload"}, 0, []string{"reloaded: tunwall runs policy abc123 from /etc/tunwall.yaml\n"}, ""},
	} {
		args := append([]string{tc.args[0], "--socket", sock}, tc.args[1:]...)
		code, out, errOut := cli(args...)
		if code != tc.code || !strings.Contains(errOut, tc.stderr) {
			t.Errorf("tunwall %s: exit %d, stderr %q; want %d, %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.stderr)
		}
		for _, want := range tc.stdout {
			if !strings.Contains(out, want) {
				t.Errorf("tunwall %s: output lacks %q:\n%s", strings.Join(tc.args, " "), want, out)
			}
		}
	}
	if len(b.closed) != 1 || b.closed[0] != 7 {
		t.Errorf("closed %v, want [7]", b.closed)
	}

	// --json gives the API's objects.
	code, out, _ := cli("flows", "--socket", sock, "--json")
	var flows []control.Flow
	if code != 0 || json.Unmarshal([]byte(out), &flows) != nil || len(flows) != 2 || flows[0].Exe != "/usr/bin/curl" || *flows[0].UID != 1000 {
		t.Errorf("flows --json: %d %q", code, out)
	}
	code, out, _ = cli("denied", "--socket", sock, "--json")
	var denied []control.Denied
	if code != 0 || json.Unmarshal([]byte(out), &denied) != nil || len(denied) != 2 || denied[0].Count != 4 || denied[0].Limit != "" || denied[1].Limit != "max_flows_per_source" || denied[1].Rule != "web" {
		t.Errorf("denied --json: %d %q", code, out)
	}

	// Nothing listening.
	code, _, errOut := cli("stats", "--socket", filepath.Join(t.TempDir(), "none.sock"))
	if code != 1 || !strings.Contains(errOut, "no tunwall answers") {
		t.Errorf("stats with no server: %d %q", code, errOut)
	}
}
