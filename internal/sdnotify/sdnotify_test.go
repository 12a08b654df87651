package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// listen opens a datagram socket at name and points $NOTIFY_SOCKET at it.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Skipf("unixgram sockets: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return c
}

func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestSend(t *testing.T) {
	names := map[string]string{"path": filepath.Join(t.TempDir(), "notify")}
	if runtime.GOOS == "linux" {
		names["abstract"] = fmt.Sprintf("@tunwall-sdnotify-test-%d", os.Getpid())
	}
	for kind, name := range names {
		t.Run(kind, func(t *testing.T) {
			c := listen(t, name)
			for _, state := range []string{Ready, Stopping} {
				if sent, err := Send(state); !sent || err != nil {
					t.Fatalf("Send(%q) = %v, %v", state, sent, err)
				}
				if got := receive(t, c); got != state {
					t.Errorf("received %q, want %q", got, state)
				}
			}
		})
	}
}

func TestSendUnset(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Send(Ready); sent || err != nil {
		t.Errorf("Send without NOTIFY_SOCKET = %v, %v, want false, nil", sent, err)
	}
}

// A socket that is gone is an error that names it, not a panic or a hang.
func TestSendNoListener(t *testing.T) {
	name := filepath.Join(t.TempDir(), "gone")
	t.Setenv("NOTIFY_SOCKET", name)
	sent, err := Send(Ready)
	if sent || err == nil {
		t.Fatalf("Send to a missing socket = %v, %v, want an error", sent, err)
	}
	if !strings.HasPrefix(err.Error(), "notify "+name) {
		t.Errorf("error %q does not name the socket", err)
	}
}
