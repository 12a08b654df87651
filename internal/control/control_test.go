package control

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/tunwall/tunwall/netstack"
	"github.com/tunwall/tunwall/policy"
)

// fake is a Backend with one flow (id 7) and one refusal.
type fake struct {
	closed     []uint64
	reloadErr  error
	panics     bool
	dashboard  string
	captureOff bool
}

func (f *fake) Flows() []netstack.FlowInfo {
	if f.panics {
		panic("boom")
	}
	return []netstack.FlowInfo{{
		ID: 7, Rule: "web", Action: policy.Allow, Enforced: true, BytesOut: 10, BytesIn: 20,
		Start: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC), Idle: 1500 * time.Millisecond,
		Flow: policy.Flow{Proto: policy.TCP, Src: netip.MustParseAddrPort("10.0.0.2:5000"), Dst: netip.MustParseAddrPort("192.0.2.1:443"),
			Domain: "ok.test", DomainSource: "sni", Owner: &policy.Owner{UID: 0, User: "root", PID: 42, Exe: "/usr/bin/curl"}},
	}}
}

func (f *fake) CloseFlow(id uint64) bool {
	if id != 7 {
		return false
	}
	f.closed = append(f.closed, id)
	return true
}

func (f *fake) Denied() []netstack.DeniedInfo {
	return []netstack.DeniedInfo{{Proto: policy.ICMP, Src: netip.MustParseAddr("10.0.0.3"), Dst: netip.MustParseAddrPort("192.0.2.9:0"), Rule: "no-ping", Action: policy.Reject, Count: 3}}
}

func (f *fake) Stats() map[string]uint64 { return map[string]uint64{"flows_active": 1} }
func (f *fake) Reload() error            { return f.reloadErr }
func (f *fake) Policy() PolicyInfo {
	return PolicyInfo{Hash: "abc", Rules: []Rule{{Name: "web", Action: "allow", Line: 4, Hits: 9}}}
}

func (f *fake) Metrics() netstack.Metrics {
	var m netstack.Metrics
	m.Active[0], m.Judged[0][1], m.Judged[2][2] = 1, 5, 2 // tcp live; tcp allow; icmp reject
	m.Bytes.Out, m.Bytes.In = 1000, 2000
	m.DropsPolicy, m.DropsLimit, m.DropsMalformed, m.DropsUpstream, m.DropsNotUnicast = 7, 1, 3, 4, 6
	m.Pending, m.UDP, m.Endpoints = 2, 6, 9
	m.Decisions[0], m.Decisions[2], m.Decisions[len(m.Decisions)-1] = 3, 1, 1
	m.DecisionSum = 2500 * time.Microsecond
	m.PacketsIn, m.PacketsOut = 11, 12
	m.MSSClamped = 13
	m.Fragmented = 17
	m.RelayBuffers = 14
	m.StackBuffers, m.FlowBufferMax = 15, 16
	return m
}

func (f *fake) Dashboard() string { return f.dashboard }

func (f *fake) CaptureConfig() policy.CaptureConfig {
	return policy.CaptureConfig{Enabled: !f.captureOff, MaxBytes: 1 << 20, Snaplen: 80}
}

// Capture offers three packets of 100 bytes (cut to the snap length);
// flow 7 has ended by then, the denied capture goes on.
func (f *fake) Capture(id uint64, snaplen int) (PacketSource, error) {
	if id != 0 && id != 7 {
		return nil, netstack.ErrNoFlow
	}
	c := &fakeCapture{ch: make(chan netstack.Packet, 3), done: make(chan struct{})}
	for i := range 3 {
		data := make([]byte, 100)
		data[0], data[1] = 0x45, byte(i)
		c.ch <- netstack.Packet{At: time.Unix(1700000000+int64(i), 0), Data: data[:snaplen], Len: len(data)}
	}
	if id == 7 {
		close(c.done)
	}
	return c, nil
}

type fakeCapture struct {
	ch   chan netstack.Packet
	done chan struct{}
}

func (c *fakeCapture) Packets() <-chan netstack.Packet { return c.ch }
func (c *fakeCapture) Done() <-chan struct{}           { return c.done }
func (c *fakeCapture) Dropped() uint64                 { return 5 }
func (c *fakeCapture) Close()                          {}

func TestHandler(t *testing.T) {
	for _, tc := range []struct {
		name, method, path string
		backend            fake
		status             int
		want               string // substring of the body
	}{
		{"flows", "GET", "/v1/flows", fake{}, 200, `"id":7,"proto":"tcp","src":"10.0.0.2:5000","dst":"192.0.2.1:443","domain":"ok.test","domain_source":"sni","uid":0,"user":"root","pid":42,"exe":"/usr/bin/curl","rule":"web","action":"allow","enforced":true,"bytes_out":10,"bytes_in":20,"start":"2026-11-21T12:00:00Z","idle_ms":1500`},
		{"close", "DELETE", "/v1/flows/7", fake{}, 200, `{"closed":7}`},
		{"close unknown", "DELETE", "/v1/flows/8", fake{}, 404, `{"error":"no live flow 8"}`},
		{"close bad id", "DELETE", "/v1/flows/x7", fake{}, 400, `{"error":"flow id \"x7\" is not a number"}`},
		{"close huge id", "DELETE", "/v1/flows/99999999999999999999999", fake{}, 400, `is not a number`},
		{"flows wrong method", "POST", "/v1/flows", fake{}, 405, `{"error":"POST /v1/flows: method not allowed (use GET)"}`},
		{"denied", "GET", "/v1/denied", fake{}, 200, `[{"proto":"icmp","src":"10.0.0.3","dst":"192.0.2.9","rule":"no-ping","action":"reject","count":3,`},
		{"stats", "GET", "/v1/stats", fake{}, 200, `{"flows_active":1}`},
		{"policy", "GET", "/v1/policy", fake{}, 200, `"rules":[{"name":"web","action":"allow","line":4,"hits":9}]`},
		{"reload", "POST", "/v1/reload", fake{}, 200, `"hash":"abc"`},
		{"reload bad file", "POST", "/v1/reload", fake{reloadErr: policy.Errors{{File: "t.yaml", Line: 3, Col: 5, Msg: "bad"}}}, 422, `{"error":"t.yaml:3:5: bad"}`},
		{"reload fails", "POST", "/v1/reload", fake{reloadErr: errors.New("disk gone")}, 500, `{"error":"disk gone"}`},
		{"reload by GET", "GET", "/v1/reload", fake{}, 405, `method not allowed (use POST)`},
		{"unknown", "GET", "/v2/flows", fake{}, 404, `{"error":"/v2/flows: no such endpoint"}`},
		{"unknown file", "GET", "/app.jsx", fake{}, 404, `{"error":"/app.jsx: no such endpoint"}`},
		{"capture both", "GET", "/v1/capture?flow=7&denied", fake{}, 400, `{"error":"give flow=ID or denied, one of them"}`},
		{"capture neither", "GET", "/v1/capture", fake{}, 400, `give flow=ID or denied`},
		{"capture bad flow", "GET", "/v1/capture?flow=x", fake{}, 400, `{"error":"flow id \"x\" is not a number"}`},
		{"capture flow 0", "GET", "/v1/capture?flow=0", fake{}, 400, `is not a number`},
		{"capture no flow", "GET", "/v1/capture?flow=8", fake{}, 404, `{"error":"no live flow 8"}`},
		{"capture tiny", "GET", "/v1/capture?denied&max_bytes=10", fake{}, 400, `max_bytes \"10\": want a size of at least 40 bytes`},
		{"capture bad count", "GET", "/v1/capture?denied&count=-1", fake{}, 400, `count \"-1\" is not a number`},
		{"capture off", "GET", "/v1/capture?denied", fake{captureOff: true}, 403, `packet capture is off (capture.enabled: false)`},
		{"capture by POST", "POST", "/v1/capture?denied", fake{}, 405, `use GET`},
		{"capture unknown parameter", "GET", "/v1/capture?flow=8&max_byte=100&cnt=1", fake{}, 400, `{"error":"GET /v1/capture: unknown parameter \"cnt\" (this endpoint takes flow, denied, count, max_bytes)"}`},
		{"capture parameter twice", "GET", "/v1/capture?flow=8&flow=9", fake{}, 400, `{"error":"GET /v1/capture: parameter \"flow\" given 2 times"}`},
		{"capture denied false", "GET", "/v1/capture?denied=false", fake{}, 400, `{"error":"denied=false: give denied alone (or denied=true) for the refused packets, or flow=ID"}`},
		{"capture bad query", "GET", "/v1/capture?flow=8&count=%zz", fake{}, 400, `GET /v1/capture: bad query \"flow=8&count=%zz\": invalid URL escape \"%zz\"`},
		{"flows filter", "GET", "/v1/flows?proto=udp", fake{}, 400, `{"error":"GET /v1/flows: unknown parameter \"proto\" (this endpoint takes none)"}`},
		{"reload parameter", "POST", "/v1/reload?force=1", fake{}, 400, `unknown parameter \"force\"`},
		{"dashboard url", "GET", "/v1/dashboard", fake{dashboard: "http://127.0.0.1:9190/#token=x"}, 200, `{"url":"http://127.0.0.1:9190/#token=x"}`},
		{"no dashboard", "GET", "/v1/dashboard", fake{}, 404, `no dashboard: the API has no TCP listener (set control.listen)`},
		{"panic", "GET", "/v1/flows", fake{panics: true}, 500, `{"error":"internal error: boom"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.backend
			rec := httptest.NewRecorder()
			Handler(&b).ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("%s %s: %d %s, want %d with %s", tc.method, tc.path, rec.Code, rec.Body, tc.status, tc.want)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type %q", ct)
			}
			if !json.Valid(rec.Body.Bytes()) {
				t.Errorf("not JSON: %s", rec.Body)
			}
		})
	}
}

// TestSocket: the socket is 0600, the client works through it, a second
// Listen on a live socket fails, and a stale one is replaced.
func TestSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v %v, want 0600", fi.Mode(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b := &fake{}
	go func() { done <- Serve(ctx, ln, Handler(b)) }()
	c := NewClient(path)
	var flows []Flow
	if err := c.Do("GET", "/v1/flows", &flows); err != nil || len(flows) != 1 || flows[0].ID != 7 {
		t.Fatalf("GET /v1/flows: %+v %v", flows, err)
	}
	var apiErr *APIError
	if err := c.Do("DELETE", "/v1/flows/8", nil); !errors.As(err, &apiErr) || apiErr.Status != 404 || apiErr.Msg != "no live flow 8" {
		t.Errorf("DELETE unknown: %v", err)
	}
	if _, err := Listen(path, -1); err == nil || !strings.Contains(err.Error(), "another tunwall answers") {
		t.Errorf("second Listen: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket left after Serve ended: %v", err)
	}
	if err := c.Do("GET", "/v1/flows", nil); !errors.Is(err, ErrNoServer) {
		t.Errorf("with no server: %v", err)
	}
	os.WriteFile(path, nil, 0o600) // stale leftover
	ln, err = Listen(path, -1)
	if err != nil {
		t.Fatalf("Listen over a stale file: %v", err)
	}
	ln.Close()
}

// TestMetricsText: /metrics is Prometheus text with the backend's figures
// under their names and labels, the histogram cumulative. Parameters a
// scraper is set up to send are let be.
func TestMetricsText(t *testing.T) {
	rec := httptest.NewRecorder()
	Handler(&fake{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics?module=tunwall", nil))
	body := rec.Body.String()
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
		t.Fatalf("%d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	for _, want := range []string{
		`tunwall_flows_active{proto="tcp"} 1`,
		`tunwall_flows_active{proto="udp"} 0`,
		`tunwall_flows_total{action="allow",proto="tcp"} 5`,
		`tunwall_flows_total{action="reject",proto="icmp"} 2`,
		`tunwall_flows_total{action="deny",proto="udp"} 0`,
		`tunwall_bytes_total{direction="out"} 1000`,
		`tunwall_bytes_total{direction="in"} 2000`,
		`tunwall_drops_total{reason="policy"} 7`,
		`tunwall_drops_total{reason="limit"} 1`,
		`tunwall_drops_total{reason="malformed"} 3`,
		`tunwall_drops_total{reason="upstream_unreachable"} 4`,
		`tunwall_drops_total{reason="not_unicast"} 6`,
		`tunwall_rule_hits_total{rule="web"} 9`,
		`tunwall_default_hits_total 0`,
		`tunwall_decision_duration_seconds_bucket{le="2.5e-07"} 3`,
		`tunwall_decision_duration_seconds_bucket{le="5e-07"} 3`,
		`tunwall_decision_duration_seconds_bucket{le="1e-06"} 4`,
		`tunwall_decision_duration_seconds_bucket{le="0.001"} 4`,
		`tunwall_decision_duration_seconds_bucket{le="+Inf"} 5`,
		`tunwall_decision_duration_seconds_sum 0.0025`,
		`tunwall_decision_duration_seconds_count 5`,
		`tunwall_tun_packets_total{direction="in"} 11`,
		`tunwall_tun_packets_total{direction="out"} 12`,
		`tunwall_pending_handshakes 2`,
		`tunwall_udp_sessions 6`,
		`tunwall_stack_endpoints 9`,
		`tunwall_tcp_mss_clamped_total 13`,
		`tunwall_relay_buffers 14`,
		`tunwall_stack_buffer_bytes 15`,
		`tunwall_flow_buffer_max_bytes 16`,
		`tunwall_ipv6_fragmented_total 17`,
		`tunwall_policy_info{hash="abc",mode=""} 1`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(body, "\n"+want) {
			t.Errorf("no line %q in\n%s", want, body)
		}
	}
	rec = httptest.NewRecorder()
	Handler(&fake{}).ServeHTTP(rec, httptest.NewRequest("POST", "/metrics", nil))
	if rec.Code != 405 {
		t.Errorf("POST /metrics: %d", rec.Code)
	}
}

// TestCaptureStream: the capture is a pcap file of raw IP packets cut to
// the snap length, ending at the flow's end, a packet count or a size
// bound, said in the trailers with the drop count.
func TestCaptureStream(t *testing.T) {
	for _, tc := range []struct {
		query   string
		packets int
		end     string
	}{
		{"flow=7", 3, EndFlowClosed},
		{"denied&count=2", 2, EndCount},
		{"denied=true&count=2", 2, EndCount},
		{"denied&max_bytes=230", 2, EndMaxBytes}, // 24 + 2 x (16 + 80) = 216; a third would make 312
		{"denied", 3, EndStopped},                // until the server stops (the request's context ends)
	} {
		t.Run(tc.query, func(t *testing.T) {
			rec := httptest.NewRecorder()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.end == EndStopped {
				time.AfterFunc(100*time.Millisecond, cancel)
			}
			Handler(&fake{}).ServeHTTP(rec, httptest.NewRequest("GET", "/v1/capture?"+tc.query, nil).WithContext(ctx))
			res := rec.Result()
			if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/vnd.tcpdump.pcap" {
				t.Fatalf("%d %q %s", res.StatusCode, res.Header.Get("Content-Type"), rec.Body)
			}
			r, err := pcapgo.NewReader(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if r.LinkType() != layers.LinkTypeRaw || r.Snaplen() != 80 {
				t.Errorf("link type %v, snap length %d", r.LinkType(), r.Snaplen())
			}
			n := 0
			for {
				data, ci, err := r.ReadPacketData()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(data) != 80 || ci.Length != 100 || data[0] != 0x45 || data[1] != byte(n) || !ci.Timestamp.Equal(time.Unix(1700000000+int64(n), 0)) {
					t.Errorf("packet %d: %d of %d bytes % x at %v", n, len(data), ci.Length, data[:2], ci.Timestamp)
				}
				n++
			}
			tr := res.Trailer
			if n != tc.packets || tr.Get(TrailerPackets) != strconv.Itoa(tc.packets) || tr.Get(TrailerEnd) != tc.end || tr.Get(TrailerDropped) != "5" {
				t.Errorf("%d packets, trailers %v; want %d packets ending by %s", n, tr, tc.packets, tc.end)
			}
		})
	}
}

// FuzzHandler: any method, path and query gets an answer, never a panic
// or a 5xx; error answers are JSON.
func FuzzHandler(f *testing.F) {
	for _, s := range []string{"/v1/flows", "/v1/flows/7", "/v1/capture?flow=7&count=1", "/v1/capture?denied&max_bytes=1KiB",
		"/v1/reload", "/metrics", "/", "/app.js", "/v1/flows/%ff", "//v1/../v1/stats", "/v1/dashboard"} {
		f.Add("GET", s)
		f.Add("DELETE", s)
	}
	f.Fuzz(func(t *testing.T, method, target string) {
		req, err := http.NewRequest(method, "http://tunwall"+target, nil)
		if err != nil || req.URL.Host != "tunwall" {
			return // not a request a client could send
		}
		// A capture of refused packets lasts until the client leaves.
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		rec := httptest.NewRecorder()
		Handler(&fake{}).ServeHTTP(rec, req.WithContext(ctx))
		if rec.Code >= 500 || rec.Code < 200 {
			t.Fatalf("%s %s: %d %s", method, target, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && rec.Code != 405 && !json.Valid(rec.Body.Bytes()) && rec.Body.Len() > 0 {
			t.Fatalf("%s %s: %d with a body that is not JSON: %q", method, target, rec.Code, rec.Body)
		}
	})
}
