package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// figure is one benchmark measurement on both paths.
type figure struct {
	Name    string   `json:"name"`
	Unit    string   `json:"unit"`
	Kernel  *float64 `json:"kernel"`
	Tunwall *float64 `json:"tunwall"`
	Ratio   *float64 `json:"ratio"` // tunwall / kernel
	// The reference gateway (refgw), when the run measured it.
	Reference *float64 `json:"reference,omitempty"`
	RefRatio  *float64 `json:"reference_ratio,omitempty"` // reference / kernel
	Note      string   `json:"note,omitempty"`
}

// benchConfig is the gateway's configuration under benchmark: allow
// everything, log flows to a file as a deployment would.
const benchConfig = `tun: {name: twbench}
log: {level: info, format: json, output: %s}
policy:
  default: allow
`

// Benchmark sizes.
const (
	iperfSeconds = "4"
	crrWorkers   = "32"
	crrSeconds   = "3"
	rrCount      = "10000"
	idleFlows    = 2000
)

// benchPath is one way from client to server: the kernel's forwarding
// (dev "") or a gateway whose device dev the client is routed into. A
// failed measurement of an optional path (the reference gateway) leaves
// that figure out instead of ending the run.
type benchPath struct {
	name, dev string
	gw        *lab.Tunwall
	optional  bool
}

// gaps lists the measurements of optional paths that failed.
type gaps struct{ list []string }

// tolerate reports whether the run goes on after what (a figure or a
// round) failed with err on path p, and if so notes it and says so.
func (g *gaps) tolerate(p benchPath, what string, err error) bool {
	if !p.optional {
		return false
	}
	msg := fmt.Sprintf("%s path, %s: %v", p.name, what, err)
	fmt.Fprintf(os.Stderr, "%s; left out\n", msg)
	g.list = append(g.list, msg)
	return true
}

// bench measures the kernel forwarding path, the tunwall path and, if ref
// is set, the path through the reference gateway ref (refgw), in one lab,
// with the same tools, and writes the table to stdout and the figures to
// out.
func bench(tunwall, ref, out string) error {
	b, err := newBenchLab("bench", "twb")
	if err != nil {
		return err
	}
	defer b.close()
	l, self := b.Lab, b.self

	// The gateways run from the start; each idles with no traffic routed
	// to it while another path is measured.
	tw, err := l.StartTunwall(tunwall, b.cfg, b.log, "twbench")
	if err != nil {
		return err
	}
	defer tw.Stop(10 * time.Second)
	l.Unroute()
	paths := []benchPath{{name: "kernel"}, {name: "tunwall", dev: "twbench", gw: tw}}
	var missing gaps
	if ref != "" {
		rg, err := l.Start([]string{ref, "run", "-tun", "twref"}, filepath.Join(filepath.Dir(b.log), "refgw.log"), "twref")
		if err != nil {
			return err
		}
		defer rg.Stop(10 * time.Second)
		paths = append(paths, benchPath{name: "reference", dev: "twref", gw: rg, optional: true})
	}
	figs := map[string]map[string]float64{} // path -> figure -> value
	for _, p := range paths {
		fmt.Printf("%s path ...\n", p.name)
		if err := routeTo(l, p); err != nil {
			return err
		}
		m, err := measure(l, self, p.gw, func(key string, err error) bool { return missing.tolerate(p, key, err) })
		if err != nil {
			return fmt.Errorf("%s path: %w", p.name, err)
		}
		figs[p.name] = m
	}
	fmt.Println("latency and connection rate, alternating paths ...")
	rounds := map[string]map[string][]float64{} // figure -> path -> each round's value
	for _, m := range []measurement{latency, connRate} {
		got, err := alternating(3, paths, &missing, func(p benchPath) error { return routeTo(l, p) }, func() (map[string]float64, error) { return m(l, self) })
		if err != nil {
			return err
		}
		for path, byFig := range got {
			for key, v := range byFig {
				if rounds[key] == nil {
					rounds[key] = map[string][]float64{}
				}
				rounds[key][path] = v
			}
			maps.Copy(figs[path], medians(byFig))
		}
	}
	for _, p := range paths[1:] {
		if err := p.gw.Stop(10 * time.Second); err != nil {
			return fmt.Errorf("%s stop: %w", p.name, err)
		}
	}
	table := combine(figs["kernel"], figs["tunwall"], figs["reference"])
	printTable(os.Stdout, table, ref != "")
	for _, g := range missing.list {
		fmt.Printf("not measured: %s\n", g)
	}
	var data bytes.Buffer
	enc := json.NewEncoder(&data)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	doc := map[string]any{
		"date": time.Now().UTC().Format(time.RFC3339), "figures": table, "rounds": rounds,
		"method": "3 namespaces, veth, 1500 MTU; iperf3 " + iperfSeconds + "s; 1-byte ping-pong x" + rrCount + " and crr " + crrWorkers + " clients closing by RST for " + crrSeconds + "s, each the median of 3 rounds per path, paths alternating",
	}
	if len(missing.list) > 0 {
		doc["not_measured"] = missing.list
	}
	enc.Encode(doc)
	return os.WriteFile(out, data.Bytes(), 0o644)
}

// routeTo points the client's traffic at path p.
func routeTo(l *lab.Lab, p benchPath) error {
	l.Unroute()
	if p.dev == "" {
		return nil
	}
	return l.Route(p.dev)
}

// benchLab is a lab with the benchmark services running in its server
// namespace and a directory for the gateway's config (cfg) and log.
type benchLab struct {
	*lab.Lab
	self     string // this twlab
	cfg, log string
	close    func() // removes it all
}

// newBenchLab sets up the lab for command name (bench, ab); prefix starts
// its namespace names.
func newBenchLab(name, prefix string) (*benchLab, error) {
	if why := lab.Supported(); why != "" {
		return nil, fmt.Errorf("%s %s", name, why)
	}
	l, err := lab.New(fmt.Sprintf("%s%d", prefix, os.Getpid()%10000))
	if err != nil {
		return nil, err
	}
	self, _ := os.Executable()
	stopSrv, err := startServices(l, self)
	if err != nil {
		l.Close()
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tunwall-"+name+"-")
	if err != nil {
		stopSrv()
		l.Close()
		return nil, err
	}
	b := &benchLab{Lab: l, self: self, cfg: filepath.Join(dir, "bench.yaml"), log: filepath.Join(dir, "tunwall.log")}
	b.close = func() {
		os.RemoveAll(dir)
		stopSrv()
		l.Close()
	}
	if err := os.WriteFile(b.cfg, []byte(fmt.Sprintf(benchConfig, filepath.Join(dir, "flows.log"))), 0o644); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

// startServices runs iperf3 and twlab serve in the server namespace.
func startServices(l *lab.Lab, self string) (func(), error) {
	var cmds []*exec.Cmd
	stop := func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}
	// Each prints a line once it listens (iperf3 after a separator line;
	// --forceflush because its stdout is a pipe).
	for _, args := range [][]string{{"iperf3", "-s", "--forceflush"}, {self, "serve"}} {
		c := l.Cmd(l.Server, args...)
		r, err := c.StdoutPipe()
		if err != nil {
			return stop, err
		}
		if err := c.Start(); err != nil {
			stop()
			return nil, err
		}
		cmds = append(cmds, c)
		br := bufio.NewReader(r)
		line, err := br.ReadString('\n')
		for err == nil && (strings.TrimSpace(line) == "" || strings.HasPrefix(line, "---")) {
			line, err = br.ReadString('\n')
		}
		if err != nil {
			stop()
			return nil, fmt.Errorf("%s did not start: %w", args[0], err)
		}
		go io.Copy(io.Discard, br)
	}
	return stop, nil
}

// measure runs every benchmark on the current path; tw is the gateway
// process, nil for the kernel path. A figure that fails is left out if
// tolerate(its key, the error) says so; otherwise the error ends it.
func measure(l *lab.Lab, self string, tw *lab.Tunwall, tolerate func(key string, err error) bool) (map[string]float64, error) {
	m := map[string]float64{}
	server := lab.ServerV4
	for _, t := range []struct {
		key  string
		args []string
	}{
		{"tcp_up", nil}, {"tcp_down", []string{"-R"}}, {"tcp_4", []string{"-P", "4"}},
	} {
		cpu0, pcpu0 := systemCPU(), processCPU(tw)
		bps, bytes, err := iperf(l, server, t.args...)
		if errors.Is(err, errNothingReceived) || errors.Is(err, errControlLost) {
			// Each seen once or twice in a few dozen runs, through refgw
			// (its -P 4 run): say so and measure again rather than report
			// zero or end the whole run.
			fmt.Fprintf(os.Stderr, "%v; measuring again\n", err)
			cpu0, pcpu0 = systemCPU(), processCPU(tw)
			bps, bytes, err = iperf(l, server, t.args...)
		}
		if err != nil {
			if tolerate(t.key, err) {
				continue
			}
			return nil, err
		}
		m[t.key] = bps / 1e9
		if t.key == "tcp_up" {
			m["cpu_per_gb"] = (systemCPU() - cpu0) / (bytes / 1e9)
			if tw != nil {
				m["proc_cpu_per_gb"] = (processCPU(tw) - pcpu0) / (bytes / 1e9)
			}
		}
	}

	mem, rss, err := idleMemory(l, self, tw)
	if err != nil {
		if tolerate("mem_per_flow", err) {
			return m, nil
		}
		return nil, err
	}
	m["mem_per_flow"] = mem
	if tw != nil {
		m["rss_per_flow"] = rss
	}
	return m, nil
}

// measurement runs one benchmark on the current path; self is twlab.
type measurement func(l *lab.Lab, self string) (map[string]float64, error)

// alternating runs measure on each path in turn (route points the
// client at it), rounds times, so that all paths see the same machine
// conditions, and returns each path's values per figure in round order.
// An optional path's failed round is noted in missing and left out.
func alternating(rounds int, paths []benchPath, missing *gaps, route func(benchPath) error, measure func() (map[string]float64, error)) (map[string]map[string][]float64, error) {
	got := map[string]map[string][]float64{}
	for i := range rounds {
		for _, p := range paths {
			if err := route(p); err != nil {
				return nil, err
			}
			m, err := measure()
			if err != nil {
				if missing.tolerate(p, fmt.Sprintf("round %d", i+1), err) {
					continue
				}
				return nil, fmt.Errorf("%s path: %w", p.name, err)
			}
			if got[p.name] == nil {
				got[p.name] = map[string][]float64{}
			}
			for key, v := range m {
				got[p.name][key] = append(got[p.name][key], v)
			}
		}
	}
	return got, nil
}

// medians returns the median of each figure's values.
func medians(runs map[string][]float64) map[string]float64 {
	m := make(map[string]float64, len(runs))
	for key, v := range runs {
		m[key] = median(v)
	}
	return m
}

// median returns the median of v, which must not be empty.
func median(v []float64) float64 {
	v = slices.Sorted(slices.Values(v))
	n := len(v)
	return (v[(n-1)/2] + v[n/2]) / 2
}

// latency measures 1-byte request-response latency over TCP and UDP.
func latency(l *lab.Lab, self string) (map[string]float64, error) {
	m := map[string]float64{}
	for _, proto := range []string{"tcp", "udp"} {
		var rr struct{ P50, P99 float64 }
		if err := runJSON(l, &rr, self, "rr", proto, net.JoinHostPort(lab.ServerV4, "7001"), rrCount); err != nil {
			return nil, err
		}
		m[proto+"_rr_p50"], m[proto+"_rr_p99"] = rr.P50, rr.P99
	}
	return m, nil
}

// connRate measures the connection rate.
func connRate(l *lab.Lab, self string) (map[string]float64, error) {
	var crr struct{ Rate float64 }
	if err := runJSON(l, &crr, self, "crr", net.JoinHostPort(lab.ServerV4, "7001"), crrWorkers, crrSeconds); err != nil {
		return nil, err
	}
	return map[string]float64{"crr": crr.Rate}, nil
}

// iperf runs one iperf3 test from the client. A server still busy with
// the previous test (whose end a gateway may pass on a moment late) is
// asked again until it is free, for up to busyWait.
func iperf(l *lab.Lab, server string, extra ...string) (bps, bytes float64, err error) {
	args := append([]string{"iperf3", "-c", server, "-t", iperfSeconds, "-J"}, extra...)
	deadline := time.Now().Add(busyWait)
	for {
		out, runErr := l.Cmd(l.Client, args...).Output()
		bps, bytes, err = parseIperf(out, extra)
		if errors.Is(err, errServerBusy) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if runErr != nil && err == nil {
			err = fmt.Errorf("iperf3 %v: %w: %s", extra, runErr, out)
		}
		return bps, bytes, err
	}
}

const busyWait = 10 * time.Second

// errNothingReceived: iperf3 finished without error but the server
// received no data.
var errNothingReceived = errors.New("nothing received")

// errServerBusy: the iperf3 server was still running another test.
var errServerBusy = errors.New("server busy")

// errControlLost: iperf3's control connection failed during the test.
var errControlLost = errors.New("control connection lost")

// parseIperf reads the receiver's rate and byte count from iperf3's JSON
// report; a run that moved no data is an error, not a zero.
func parseIperf(out []byte, args []string) (bps, bytes float64, err error) {
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
				Bytes         float64 `json:"bytes"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, 0, fmt.Errorf("iperf3 %v: %w", args, err)
	}
	if strings.Contains(r.Error, "server is busy") {
		return 0, 0, fmt.Errorf("iperf3 %v: %s: %w", args, r.Error, errServerBusy)
	}
	if strings.Contains(r.Error, "control message") {
		return 0, 0, fmt.Errorf("iperf3 %v: %s: %w", args, r.Error, errControlLost)
	}
	if r.Error != "" {
		return 0, 0, fmt.Errorf("iperf3 %v: %s", args, r.Error)
	}
	sum := r.End.SumReceived
	if sum.Bytes <= 0 || sum.BitsPerSecond <= 0 {
		return 0, 0, fmt.Errorf("iperf3 %v: %w", args, errNothingReceived)
	}
	return sum.BitsPerSecond, sum.Bytes, nil
}

func runJSON(l *lab.Lab, v any, args ...string) error {
	out, err := l.Cmd(l.Client, args...).Output()
	if err != nil {
		return fmt.Errorf("%v: %w", args[1:], err)
	}
	// The tools print snake_case keys; match them loosely.
	var raw map[string]any
	if err := json.Unmarshal(out, &raw); err != nil {
		return err
	}
	norm := map[string]any{}
	for k, x := range raw {
		norm[strings.TrimSuffix(k, "_us")] = x
	}
	b, _ := json.Marshal(norm)
	return json.Unmarshal(b, v)
}

// idleMemory holds idleFlows connections open and returns the system
// memory used per flow (MemTotal-MemAvailable delta) and, for a gateway
// path, the gateway's RSS delta per flow, in KiB.
func idleMemory(l *lab.Lab, self string, tw *lab.Tunwall) (mem, rss float64, err error) {
	sys0, rss0 := usedMemory(), processRSS(tw)
	c := l.Cmd(l.Client, self, "hold", net.JoinHostPort(lab.ServerV4, "7001"), strconv.Itoa(idleFlows))
	stdin, _ := c.StdinPipe()
	stdout, _ := c.StdoutPipe()
	if err := c.Start(); err != nil {
		return 0, 0, err
	}
	defer func() { stdin.Close(); c.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		return 0, 0, fmt.Errorf("hold %d flows: %q %v", idleFlows, line, err)
	}
	time.Sleep(500 * time.Millisecond) // let buffers settle after the handshakes
	return (usedMemory() - sys0) / idleFlows, (processRSS(tw) - rss0) / idleFlows, nil
}

// systemCPU returns the machine's busy CPU seconds so far (/proc/stat).
func systemCPU() float64 {
	b, _ := os.ReadFile("/proc/stat")
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	var busy float64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseFloat(v, 64)
		busy += n
	}
	return busy / 100 // USER_HZ
}

// processCPU returns the gateway's user+system CPU seconds.
func processCPU(tw *lab.Tunwall) float64 {
	if tw == nil {
		return 0
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", tw.Cmd.Process.Pid))
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100
}

func processRSS(tw *lab.Tunwall) float64 {
	if tw == nil {
		return 0
	}
	return meminfoField(fmt.Sprintf("/proc/%d/status", tw.Cmd.Process.Pid), "VmRSS:")
}

func usedMemory() float64 {
	return meminfoField("/proc/meminfo", "MemTotal:") - meminfoField("/proc/meminfo", "MemAvailable:")
}

func meminfoField(path, key string) float64 {
	b, _ := os.ReadFile(path)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key) {
			n, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return n
		}
	}
	return 0
}
