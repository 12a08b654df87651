package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// notifySocket receives a started gateway's state messages
// ($NOTIFY_SOCKET, systemd's Type=notify protocol) for as long as it runs.
type notifySocket struct {
	conn      *net.UnixConn
	dir, name string
	ready     chan struct{} // closed at the first READY=1
	done      chan struct{} // closed when the reader has stopped

	mu     sync.Mutex // guards states
	states []string   // every assignment received, in order
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
	s := &notifySocket{conn: c, dir: dir, name: name, ready: make(chan struct{}), done: make(chan struct{})}
	go s.read()
	return s, nil
}

// read records every message until the socket is closed or its read
// deadline passes.
func (s *notifySocket) read() {
	defer close(s.done)
	buf := make([]byte, 4096)
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			return
		}
		for _, st := range strings.Split(string(buf[:n]), "\n") {
			s.mu.Lock()
			first := st == "READY=1" && !slices.Contains(s.states, st)
			s.states = append(s.states, st)
			s.mu.Unlock()
			if first {
				close(s.ready)
			}
		}
	}
}

// wait returns once READY=1 has arrived, or ctx's error.
func (s *notifySocket) wait(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("no READY=1 on the notify socket: %w", ctx.Err())
	}
}

// close stops receiving once what was sent has been read (the sender has
// exited: anything it sent is queued already) and removes the socket.
func (s *notifySocket) close() {
	s.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	<-s.done
	s.conn.Close()
	os.RemoveAll(s.dir)
}

// received returns the assignments received so far.
func (s *notifySocket) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.states...)
}
