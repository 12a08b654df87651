package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// notifySocket receives a started gateway's state messages
// ($NOTIFY_SOCKET, systemd's Type=notify protocol).
type notifySocket struct {
	*net.UnixConn
	dir, name string
}

func listenNotify() (*notifySocket, error) {
	dir, err := os.MkdirTemp("", "twlab-notify-")
	if err != nil {
		return nil, err
	}
	name := filepath.Join(dir, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &notifySocket{UnixConn: c, dir: dir, name: name}, nil
}

// wait returns once a message says READY=1, or ctx's error.
func (s *notifySocket) wait(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 4096)
	for {
		n, err := s.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("no READY=1 on the notify socket: %w", ctx.Err())
			}
			return err
		}
		if slices.Contains(strings.Split(string(buf[:n]), "\n"), "READY=1") {
			return nil
		}
	}
}

func (s *notifySocket) Close() error {
	err := s.UnixConn.Close()
	os.RemoveAll(s.dir)
	return err
}
