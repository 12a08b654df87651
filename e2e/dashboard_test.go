package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tunwall/tunwall/e2e/lab"
	"github.com/tunwall/tunwall/internal/control"
)

const listenAddr = "127.0.0.1:9190" // the control API's TCP listener in the gateway namespace

// httpIn is an HTTP client whose connections are opened in namespace ns.
func httpIn(l *lab.Lab, ns string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
			return l.Dial(ns, network, addr, 3*time.Second)
		},
	}}
}

// fetch makes one request and returns the status and body.
func fetch(t *testing.T, hc *http.Client, method, url string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metricsOf parses Prometheus text into series -> value.
func metricsOf(t *testing.T, text string) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for line := range strings.SplitSeq(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("metrics line %q", line)
		}
		m[line[:i]] = v
	}
	return m
}

// TestControlTCP: the loopback TCP listener wants the bearer token, a
// loopback or configured Host and no foreign Origin; /metrics answers
// there and on the socket, and its figures move with the traffic the test
// makes: one allowed flow of 1 MiB each way and one rejected flow.
func TestControlTCP(t *testing.T) {
	l := routedLab(t, "twm")
	gw := l.Gateway
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	token := control.NewToken()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	launch(t, l, routed("info", fmt.Sprintf(`control: {socket: %s, listen: "%s", token_file: %s, hosts: [tw.lan]}
policy:
  default: allow
  rules:
    - {name: no-telnet, action: reject, proto: tcp, ports: [23]}
`, sock, listenAddr, tokenFile)))
	hc := httpIn(l, gw)
	base := "http://" + listenAddr
	auth := map[string]string{"Authorization": "Bearer " + token}
	with := func(kv ...string) map[string]string {
		h := map[string]string{"Authorization": "Bearer " + token}
		for i := 0; i < len(kv); i += 2 {
			h[kv[i]] = kv[i+1]
		}
		return h
	}
	for _, c := range []struct {
		name, method, path string
		header             map[string]string
		status             int
	}{
		{"no token", "GET", "/v1/stats", nil, 401},
		{"wrong token", "GET", "/v1/stats", map[string]string{"Authorization": "Bearer " + control.NewToken()}, 401},
		{"token", "GET", "/v1/stats", auth, 200},
		{"metrics without token", "GET", "/metrics", nil, 401},
		{"rebinding host", "GET", "/v1/flows", with("Host", "attacker.example:9190"), 403},
		{"configured host", "GET", "/v1/flows", with("Host", "tw.lan:9190"), 200},
		{"foreign origin", "POST", "/v1/reload", with("Origin", "http://attacker.example"), 403},
		{"cross-site", "GET", "/v1/flows", with("Sec-Fetch-Site", "cross-site"), 403},
		{"same origin", "POST", "/v1/reload", with("Origin", base), 200},
		{"page without token", "GET", "/", nil, 200},
	} {
		if code, body := fetch(t, hc, c.method, base+c.path, c.header); code != c.status {
			t.Errorf("%s: %s %s: %d %s, want %d", c.name, c.method, c.path, code, body, c.status)
		}
	}

	scrape := func() map[string]float64 {
		code, body := fetch(t, hc, "GET", base+"/metrics", auth)
		if code != 200 {
			t.Fatalf("GET /metrics: %d %s", code, body)
		}
		return metricsOf(t, body)
	}
	const (
		active   = `tunwall_flows_active{proto="tcp"}`
		allowed  = `tunwall_flows_total{action="allow",proto="tcp"}`
		rejected = `tunwall_flows_total{action="reject",proto="tcp"}`
		out      = `tunwall_bytes_total{direction="out"}`
		in       = `tunwall_bytes_total{direction="in"}`
		policy   = `tunwall_drops_total{reason="policy"}`
		hits     = `tunwall_rule_hits_total{rule="no-telnet"}`
		packets  = `tunwall_tun_packets_total{direction="in"}`
		judged   = `tunwall_decision_duration_seconds_count`
	)
	before := scrape()

	// One allowed flow moving 1 MiB each way, held open for a scrape.
	const size = 1 << 20
	c, _ := echoFlow(t, l, gw, "")
	go io.Copy(c, io.LimitReader(lab.NewStream(7), size))
	if n, err := io.Copy(io.Discard, io.LimitReader(c, size)); n != size {
		t.Fatalf("echo of 1 MiB: %d bytes, %v", n, err)
	}
	if m := scrape(); m[active] != before[active]+1 {
		t.Errorf("%s = %v with the flow open, want %v", active, m[active], before[active]+1)
	}
	c.Close()
	// One rejected flow.
	if r := probe(t, l, gw, 0, "tcp", hostPort(lab.ServerV4, "23")); r.Errno != "ECONNREFUSED" {
		t.Fatalf("telnet probe: %+v", r)
	}
	var after map[string]float64
	deadline := time.Now().Add(5 * time.Second)
	for {
		after = scrape()
		if after[active] == before[active] && after[out]-before[out] == size || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []struct {
		series string
		delta  float64
	}{
		{active, 0}, {allowed, 1}, {rejected, 1}, {out, size}, {in, size}, {policy, 1}, {hits, 1}, {judged, 2},
	} {
		if d := after[want.series] - before[want.series]; d != want.delta {
			t.Errorf("%s moved by %v, want %v", want.series, d, want.delta)
		}
	}
	if after[packets]-before[packets] < 100 {
		t.Errorf("%s moved by %v for 1 MiB, want at least 100", packets, after[packets]-before[packets])
	}

	// The socket serves the same metrics.
	if got := unixMetrics(t, sock)()[hits]; got != after[hits] {
		t.Errorf("metrics on the socket: %s = %v, want %v", hits, got, after[hits])
	}
}

// chromium returns Debian's chromium, skipping the test without it (a
// failure under CI, which installs it).
func chromium(t *testing.T) string {
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is not installed (.ci/run installs it)")
		}
		t.Skip("chromium is not installed (apt-get install chromium)")
	}
	return path
}

// TestDashboard loads the dashboard in headless Chromium (in the gateway
// namespace) with the link tunwall dashboard prints (its token made at
// start), sees a flow the test
// made and a refusal, closes the flow with its button, and sees it gone:
// the connection is reset and its close event says closed.
func TestDashboard(t *testing.T) {
	l := routedLab(t, "twd")
	browser := chromium(t)
	gw := l.Gateway
	sock := filepath.Join(t.TempDir(), "control.sock")
	tw := launch(t, l, routed("info", fmt.Sprintf(`control: {socket: %s, listen: "%s"}
policy:
  default: allow
  rules:
    - {name: no-telnet, action: reject, proto: tcp, ports: [23]}
`, sock, listenAddr)))
	link, err := l.Run(gw, filepath.Join(bin, "tunwall"), "dashboard", "--socket", sock)
	link = strings.TrimSpace(link)
	prefix := "http://" + listenAddr + "/#token="
	if err != nil || !strings.HasPrefix(link, prefix) || len(link) < len(prefix)+32 {
		t.Fatalf("tunwall dashboard: %v %q", err, link)
	}

	// A live flow with bytes each way, and a refusal.
	c, br := echoFlow(t, l, gw, "hello\n")
	probe(t, l, gw, 0, "tcp", hostPort(lab.ServerV4, "23"))
	var id uint64
	var flows []control.Flow
	if err := control.NewClient(sock).Do("GET", "/v1/flows", &flows); err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		if f.Src == c.LocalAddr().String() {
			id = f.ID
		}
	}
	if id == 0 {
		t.Fatalf("flow from %s not in %+v", c.LocalAddr(), flows)
	}

	// Chromium runs in the gateway namespace, where the listener is: the
	// allocator talks to it over a pipe, which "ip netns exec" passes on.
	wrapper := filepath.Join(t.TempDir(), "chromium-in-ns")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\nexec ip netns exec "+gw+" "+browser+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Its traffic goes through tunwall like the namespace's own: it may
	// resolve no name (its lookups would flood the UDP table with DNS
	// sessions) and needs none, the page being on 127.0.0.1.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(wrapper), chromedp.NoSandbox, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	row := chromedp.CSS(fmt.Sprintf(`#flows tr[data-flow-id="%d"]`, id))
	if err := chromedp.Do(bctx, chromedp.Navigate(link), chromedp.WaitVisible(row)); err != nil {
		t.Fatalf("loading the dashboard: %v", err)
	}
	text := func(sel string) string {
		s, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	rowText, denied, rules, cards, status := text(string(row)), text("#denied tbody"), text("#rules tbody"), text("#cards"), text("#status")
	for _, want := range []string{c.LocalAddr().String(), hostPort(lab.ServerV4, "7001"), "tcp", "default", "6 B"} {
		if !strings.Contains(rowText, want) {
			t.Errorf("flow row %q lacks %q", rowText, want)
		}
	}
	if !strings.Contains(denied, hostPort(lab.ServerV4, "23")) || !strings.Contains(denied, "no-telnet") {
		t.Errorf("refusals %q lack the telnet probe", denied)
	}
	if !strings.Contains(rules, "no-telnet") || !strings.Contains(cards, "live flows") || !strings.HasPrefix(status, "live") {
		t.Errorf("rules %q, cards %q, status %q", rules, cards, status)
	}

	var live []control.Flow
	if err := control.NewClient(sock).Do("GET", "/v1/flows", &live); err != nil || len(live) != 1 {
		t.Errorf("%d live flows with the page open, want only the test's: %+v %v", len(live), live, err)
	}

	// Close it from the page.
	if err := chromedp.Do(bctx,
		chromedp.Click(row+" button.kill"),
		chromedp.WaitNotPresent(row),
	); err != nil {
		t.Fatalf("closing the flow from the page: %v", err)
	}
	if _, err := br.ReadString('\n'); err == nil {
		t.Error("the closed flow still works")
	}
	if e := waitEvent(t, tw.Log, flowEvent("close", c.LocalAddr().String(), c.RemoteAddr().String())); e.str("reason") != "closed" {
		t.Errorf("close reason %q, want closed", e.str("reason"))
	}
	var left []control.Flow
	if err := control.NewClient(sock).Do("GET", "/v1/flows", &left); err != nil {
		t.Fatal(err)
	}
	for _, f := range left {
		if f.ID == id {
			t.Errorf("flow %d still listed after closing it from the page", id)
		}
	}
}

// TestStartupSummary: on a terminal (a pty from script(1)), tunwall run
// prints what it set up and where to look next; Ctrl-C typed on that
// terminal stops it cleanly.
func TestStartupSummary(t *testing.T) {
	l := routedLab(t, "tws")
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("script(1) from util-linux is not installed")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	cfg := filepath.Join(dir, "tunwall.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`tun: {name: tw0}
log: {output: %s/tunwall.log}
routing: {mode: all, strict: false}
control: {socket: %s, listen: "%s"}
policy: {default: allow}
`, dir, sock, listenAddr)), 0o644)
	// script(1) runs the command through $SHELL or /bin/sh; exec makes tunwall
	// the only process on the terminal, so Ctrl-C reaches tunwall alone
	// (a forking dash would die of it itself, exit 130).
	cmd := l.Cmd(l.Gateway, "script", "-qefc", "exec "+filepath.Join(bin, "tunwall")+" run -c "+cfg, "/dev/null")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := startOutput(t, cmd)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- strings.TrimRight(sc.Text(), "\r")
		}
		close(lines)
	}()
	var summary []string
	timeout := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("tunwall ended before its summary: %q", summary)
			}
			summary = append(summary, line)
			done = strings.HasPrefix(line, "next: ")
		case <-timeout:
			t.Fatalf("no summary within 10 s: %q", summary)
		}
	}
	text := strings.Join(summary, "\n")
	for _, want := range []string{"is running", "device     tw0, mtu 1500", "routing    all", "policy     0 rules, default allow, enforcing",
		"log        " + dir + "/tunwall.log", "control    " + sock, "dashboard  http://" + listenAddr + "/#token=", "next: tunwall flows --watch"} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}
	io.WriteString(stdin, "\x03") // Ctrl-C on the terminal
	waited := make(chan error, 1)
	go func() {
		for range lines {
		}
		waited <- cmd.Wait()
	}()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("tunwall after Ctrl-C: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tunwall did not stop on Ctrl-C")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket left: %v", err)
	}
}
