package sdnotify

import (
	"fmt"
	"net"
	"os"
	"time"
)

// The states tunwall reports.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
)

// Send writes state (one or more newline-separated KEY=VALUE assignments)
// to the socket named by $NOTIFY_SOCKET. It reports false, nil when the
// variable is unset. A name beginning with '@' is an abstract socket.
func Send(state string) (bool, error) {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return false, nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("notify %s: %w", name, err)
	}
	defer c.Close()
	// A manager that does not read must not hold tunwall up.
	c.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("notify %s: %w", name, err)
	}
	return true, nil
}
