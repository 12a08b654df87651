package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

const bulk = 64 << 20 // bytes each way

var families = []struct {
	name   string
	server string
}{{"ipv4", lab.ServerV4}, {"ipv6", lab.ServerV6}}

func dialClient(t *testing.T, network, addr string, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	c, err := lb.Dial(lb.Client, network, addr, timeout)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func streamHash(seed uint64, n int64) string {
	h := sha256.New()
	io.CopyN(h, lab.NewStream(seed), n)
	return hex.EncodeToString(h.Sum(nil))
}

// TestTCPUpload sends 64 MiB to the hash service and half-closes; the
// service hashes what it received and answers only after the client's FIN,
// so the answer also proves half-close: the client's write side is closed
// while the server -> client direction still works.
func TestTCPUpload(t *testing.T) {
	need(t)
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			c, err := dialClient(t, "tcp", net.JoinHostPort(fam.server, "7002"), 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(60 * time.Second))
			seed := uint64(time.Now().UnixNano())
			if _, err := io.CopyN(c, lab.NewStream(seed), bulk); err != nil {
				t.Fatal(err)
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			reply, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				t.Fatalf("no answer after half-close: %v", err)
			}
			want := fmt.Sprintf("%d %s\n", bulk, streamHash(seed, bulk))
			if reply != want {
				t.Fatalf("server received %q, client sent %q", reply, want)
			}
			src, dst := c.LocalAddr().String(), c.RemoteAddr().String()
			assertVerdict(t, src, dst, "allow", "lab-services")
			c.Close()
			e := waitEvent(t, gw.Log, flowEvent("close", src, dst))
			if e.num("bytes_out") != bulk || e.num("bytes_in") != int64(len(reply)) {
				t.Errorf("close event counts out %d in %d, want %d and %d", e.num("bytes_out"), e.num("bytes_in"), bulk, len(reply))
			}
			if e.str("rule") != "lab-services" || e.str("reason") != "fin" {
				t.Errorf("close event rule %q reason %q", e.str("rule"), e.str("reason"))
			}
		})
	}
}

// TestTCPDownload has the server generate 64 MiB from a seed and checks the
// client received exactly those bytes.
func TestTCPDownload(t *testing.T) {
	need(t)
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			c, err := dialClient(t, "tcp", net.JoinHostPort(fam.server, "7003"), 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(60 * time.Second))
			seed := uint64(time.Now().UnixNano())
			req := fmt.Sprintf("%d %d\n", bulk, seed)
			if _, err := io.WriteString(c, req); err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			n, err := io.Copy(h, c)
			if err != nil {
				t.Fatal(err)
			}
			if n != bulk || hex.EncodeToString(h.Sum(nil)) != streamHash(seed, bulk) {
				t.Fatalf("received %d bytes with a different hash than the %d sent", n, bulk)
			}
			src, dst := c.LocalAddr().String(), c.RemoteAddr().String()
			c.Close()
			e := waitEvent(t, gw.Log, flowEvent("close", src, dst))
			if e.num("bytes_in") != bulk || e.num("bytes_out") != int64(len(req)) {
				t.Errorf("close event counts out %d in %d, want %d and %d", e.num("bytes_out"), e.num("bytes_in"), len(req), bulk)
			}
		})
	}
}

// TestTCPEchoHalfClose writes, half-closes and still reads everything back.
func TestTCPEchoHalfClose(t *testing.T) {
	need(t)
	c, err := dialClient(t, "tcp", net.JoinHostPort(lab.ServerV4, "7001"), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := strings.Repeat("half-close ", 10000)
	go func() {
		io.WriteString(c, msg)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != msg {
		t.Fatalf("echo after half-close: %d of %d bytes, err %v", len(got), len(msg), err)
	}
}

func TestTCPRejected(t *testing.T) {
	need(t)
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			start := time.Now()
			_, err := dialClient(t, "tcp", net.JoinHostPort(fam.server, "7009"), 5*time.Second)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("connect to rejected port: %v, want connection refused", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("refusal took %v, want under 1s", d)
			}
			wantVerdict(t, gw.Log, "tcp", net.JoinHostPort(fam.server, "7009"), "reject", "reject-7009")
		})
	}
}

func TestTCPDenied(t *testing.T) {
	need(t)
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			_, err := dialClient(t, "tcp", net.JoinHostPort(fam.server, "7010"), 1500*time.Millisecond)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("connect to denied port: %v, want a timeout (no answer at all)", err)
			}
			wantVerdict(t, gw.Log, "tcp", net.JoinHostPort(fam.server, "7010"), "deny", "deny-7010")
		})
	}
}

// TestUpstreamSocketMarked: the gateway's upstream socket for a client flow
// carries egress.mark (default 0x7475), which is what keeps policy routing
// from looping it back into the TUN in the routing modes.
func TestUpstreamSocketMarked(t *testing.T) {
	need(t)
	c, err := dialClient(t, "tcp", net.JoinHostPort(lab.ServerV4, "7001"), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("m")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	out, err := lb.Run(lb.Gateway, "ss", "-tnHe", "state", "established", "dst", lab.ServerV4)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "fwmark:0x7475") {
		t.Fatalf("upstream socket without the egress mark:\n%s", out)
	}
}
