package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/tunwall/tunwall/e2e/lab"
	"github.com/tunwall/tunwall/internal/control"
)

// startCapture runs "tunwall capture ARGS -w FILE" in the gateway
// namespace and returns once it is capturing, with a function that waits
// for it and returns its output.
func startCapture(t *testing.T, l *lab.Lab, sock, file string, args ...string) func() (string, error) {
	t.Helper()
	cmd := l.Cmd(l.Gateway, append([]string{filepath.Join(bin, "tunwall"), "capture", "--socket", sock, "-w", file}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	br := bufio.NewReader(startOutput(t, cmd))
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "capturing to "+file) {
		t.Fatalf("tunwall capture %v: %q %v %s", args, line, err, stderr.String())
	}
	return func() (string, error) {
		type result struct {
			out string
			err error
		}
		done := make(chan result, 1)
		go func() {
			rest, _ := io.ReadAll(br)
			err := cmd.Wait()
			done <- result{string(rest) + stderr.String(), err}
		}()
		select {
		case r := <-done:
			return r.out, r.err
		case <-time.After(10 * time.Second):
			return "", fmt.Errorf("tunwall capture %v did not end", args)
		}
	}
}

// readPcap decodes every packet of a pcap file of raw IP packets.
func readPcap(t *testing.T, file string) []gopacket.Packet {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeRaw {
		t.Errorf("link type %v, want raw IP", r.LinkType())
	}
	var out []gopacket.Packet
	for {
		data, ci, err := r.ReadPacketData()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s after %d packets: %v", file, len(out), err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeIPv4, gopacket.Default)
		p.Metadata().CaptureInfo = ci
		if p.ErrorLayer() != nil {
			t.Errorf("packet %d does not decode: %v", len(out), p.ErrorLayer().Error())
		}
		out = append(out, p)
	}
}

// TestCapture: tunwall capture --denied writes the refused TCP SYN and UDP
// datagram; --flow writes one flow's packets both ways with its payload
// and ends with the flow; --max-bytes bounds the file.
func TestCapture(t *testing.T) {
	l := routedLab(t, "twp")
	gw := l.Gateway
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	tw := launch(t, l, routed("info", fmt.Sprintf(`control: {socket: %s}
capture: {snaplen: 1500}
policy:
  default: allow
  rules:
    - {name: no-telnet, action: reject, proto: tcp, ports: [23]}
    - {name: no-9999, action: reject, proto: udp, ports: [9999]}
`, sock)))

	// Refused packets.
	deniedFile := filepath.Join(dir, "denied.pcap")
	wait := startCapture(t, l, sock, deniedFile, "--denied", "--count", "2")
	if r := probe(t, l, gw, 0, "tcp", hostPort(lab.ServerV4, "23")); r.Errno != "ECONNREFUSED" {
		t.Fatalf("telnet probe: %+v", r)
	}
	if r := probe(t, l, gw, 0, "udp", hostPort(lab.ServerV4, "9999")); r.Errno != "ECONNREFUSED" {
		t.Fatalf("udp probe: %+v", r)
	}
	if out, err := wait(); err != nil || !strings.Contains(out, "2 packets written (ended: count)") {
		t.Fatalf("capture --denied: %v %q", err, out)
	}
	var syn, udp bool
	for _, p := range readPcap(t, deniedFile) {
		ip, _ := p.NetworkLayer().(*layers.IPv4)
		if ip == nil || ip.DstIP.String() != lab.ServerV4 {
			t.Errorf("captured %v", p)
			continue
		}
		if tcp, ok := p.TransportLayer().(*layers.TCP); ok && tcp.DstPort == 23 && tcp.SYN && !tcp.ACK {
			syn = true
		}
		if u, ok := p.TransportLayer().(*layers.UDP); ok && u.DstPort == 9999 && string(u.Payload) == "p\n" {
			udp = true
		}
	}
	if !syn || !udp {
		t.Errorf("denied capture: SYN to port 23 %v, UDP to 9999 with its payload %v", syn, udp)
	}

	// One flow, both ways, until it ends.
	c, br := echoFlow(t, l, gw, "")
	id := flowID(t, sock, c.LocalAddr().String())
	flowFile := filepath.Join(dir, "flow.pcap")
	wait = startCapture(t, l, sock, flowFile, "--flow", fmt.Sprint(id))
	io.WriteString(c, "captured line\n")
	if line, err := br.ReadString('\n'); err != nil || line != "captured line\n" {
		t.Fatalf("echo: %q %v", line, err)
	}
	c.Close()
	if out, err := wait(); err != nil || !strings.Contains(out, "(ended: flow_closed)") {
		t.Fatalf("capture --flow: %v %q", err, out)
	}
	src, dst := c.LocalAddr().String(), c.RemoteAddr().String()
	var sent, echoed, fin bool
	for _, p := range readPcap(t, flowFile) {
		ip, _ := p.NetworkLayer().(*layers.IPv4)
		tcp, _ := p.TransportLayer().(*layers.TCP)
		if ip == nil || tcp == nil {
			t.Errorf("captured %v", p)
			continue
		}
		from, to := hostPort(ip.SrcIP.String(), fmt.Sprint(uint16(tcp.SrcPort))), hostPort(ip.DstIP.String(), fmt.Sprint(uint16(tcp.DstPort)))
		switch {
		case from == src && to == dst:
			sent = sent || string(tcp.Payload) == "captured line\n"
			fin = fin || tcp.FIN
		case from == dst && to == src:
			echoed = echoed || string(tcp.Payload) == "captured line\n"
		default:
			t.Errorf("packet of another flow: %s -> %s", from, to)
		}
	}
	if !sent || !echoed || !fin {
		t.Errorf("flow capture: line sent %v, echoed %v, client FIN %v", sent, echoed, fin)
	}

	// A size bound.
	c2, _ := echoFlow(t, l, gw, "")
	boundFile := filepath.Join(dir, "bound.pcap")
	wait = startCapture(t, l, sock, boundFile, "--flow", fmt.Sprint(flowID(t, sock, c2.LocalAddr().String())), "--max-bytes", "4KiB")
	go io.Copy(c2, io.LimitReader(lab.NewStream(3), 256<<10))
	if n, err := io.Copy(io.Discard, io.LimitReader(c2, 256<<10)); n != 256<<10 {
		t.Fatalf("echo of 256 KiB: %d %v", n, err)
	}
	if out, err := wait(); err != nil || !strings.Contains(out, "(ended: max_bytes)") {
		t.Fatalf("capture --max-bytes: %v %q", err, out)
	}
	if fi, err := os.Stat(boundFile); err != nil || fi.Size() > 4096 || len(readPcap(t, boundFile)) < 2 {
		t.Errorf("bounded capture: %v bytes, %v", fi.Size(), err)
	}
	// Bad requests.
	if out, err := l.Run(gw, filepath.Join(bin, "tunwall"), "capture", "--socket", sock, "--flow", "999999", "-w", filepath.Join(dir, "x.pcap")); exitCode(err) != 1 || !strings.Contains(out, "no live flow 999999") {
		t.Errorf("capture of no flow: exit %d %q", exitCode(err), out)
	}
	if out, err := l.Run(gw, filepath.Join(bin, "tunwall"), "capture", "--socket", sock, "--denied"); exitCode(err) != 2 || !strings.Contains(out, "-w FILE is required") {
		t.Errorf("capture without -w: exit %d %q", exitCode(err), out)
	}

	// A capture running when tunwall stops ends cleanly, its file whole.
	lastFile := filepath.Join(dir, "last.pcap")
	wait = startCapture(t, l, sock, lastFile, "--denied")
	if err := tw.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := wait(); err != nil || !strings.Contains(out, "0 packets written (ended: stopped)") {
		t.Errorf("capture over a stop: %v %q", err, out)
	}
	readPcap(t, lastFile)
}

// flowID finds the id of the live flow from src.
func flowID(t *testing.T, sock, src string) uint64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var flows []control.Flow
		if err := control.NewClient(sock).Do("GET", "/v1/flows", &flows); err != nil {
			t.Fatal(err)
		}
		for _, f := range flows {
			if f.Src == src {
				return f.ID
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no live flow from %s", src)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCaptureSwitchedOff: with capture.enabled false a capture is refused
// with the reason (exit 1) and a file already at its -w path is left as
// it was; switched on in the file and reloaded, the next capture works.
func TestCaptureSwitchedOff(t *testing.T) {
	l := routedLab(t, "twco")
	gw := l.Gateway
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	config := func(on bool) string {
		return routed("info", fmt.Sprintf(`control: {socket: %s}
capture: {enabled: %v}
policy:
  default: allow
  rules:
    - {name: no-telnet, action: reject, proto: tcp, ports: [23]}
`, sock, on))
	}
	path := filepath.Join(dir, "tunwall.yaml")
	writeConfig(t, path, config(false))
	tw := launchFile(t, l, path)

	file := filepath.Join(dir, "denied.pcap")
	const kept = "an earlier capture\n"
	if err := os.WriteFile(file, []byte(kept), 0o644); err != nil {
		t.Fatal(err)
	}
	// Bounded in time: a capture that was not refused would wait for
	// denied packets.
	out, err := l.Run(gw, "timeout", "10", filepath.Join(bin, "tunwall"), "capture", "--socket", sock, "--denied", "-w", file)
	if exitCode(err) != 1 || !strings.Contains(out, "packet capture is off (capture.enabled: false)") {
		t.Errorf("capture while off: exit %d %q, want 1 and the reason", exitCode(err), out)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != kept {
		t.Errorf("the file at -w after a refused capture: %q %v, want it as it was", b, err)
	}

	writeConfig(t, path, config(true))
	if ev := reloadEvent(t, tw.Log, 1); ev["ok"] != true {
		t.Fatalf("reload event %v", ev)
	}
	wait := startCapture(t, l, sock, file, "--denied", "--count", "1")
	if r := probe(t, l, gw, 0, "tcp", hostPort(lab.ServerV4, "23")); r.Errno != "ECONNREFUSED" {
		t.Fatalf("telnet probe: %+v", r)
	}
	if out, err := wait(); err != nil || !strings.Contains(out, "1 packets written (ended: count)") {
		t.Fatalf("capture once switched on: %v %q", err, out)
	}
	if ps := readPcap(t, file); len(ps) != 1 {
		t.Errorf("%d packets in the capture, want the refused SYN", len(ps))
	}
}
