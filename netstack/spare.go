package netstack

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Spare sockets: a host TCP socket whose connection has ended can connect
// again (Linux: connect to AF_UNSPEC resets it to a new, unbound socket),
// so the next flow is spared opening, setting up and registering a socket
// of its own, and closing it at the end. Only sockets that carry nothing
// of their flow are kept: ones with the egress settings and no per-flow
// option but their TTL, which the next dial sets if it wants another,
// whose connection was reset or had fully closed (a TIME_WAIT is kept by
// the kernel apart from the socket).
const (
	sparesPerFamily = 256              // at most this many kept for each of IPv4 and IPv6
	spareIdle       = 10 * time.Second // a socket unused this long is closed
)

// spareSockets keeps ended host TCP sockets for later dials.
type spareSockets struct {
	mu     sync.Mutex
	free   [2][]spareSocket // IPv4, IPv6; the last put is taken first
	closed bool
	reused *atomic.Uint64 // counts the connections made on kept sockets (nil: not counted)
}

// spareSocket is a kept socket, still registered with the poller.
type spareSocket struct {
	f     *os.File
	rc    syscall.RawConn
	hops  uint8 // the TTL (hop limit) set on it; 0: the host's default
	since time.Time
}

func newSpareSockets(reused *atomic.Uint64) *spareSockets {
	return &spareSockets{reused: reused}
}

func spareIndex(v6 bool) int {
	if v6 {
		return 1
	}
	return 0
}

// get takes the most recently kept socket of the family, if any.
func (s *spareSockets) get(v6 bool) (spareSocket, bool) {
	if s == nil {
		return spareSocket{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	free := s.free[spareIndex(v6)]
	if len(free) == 0 {
		return spareSocket{}, false
	}
	k := free[len(free)-1]
	free[len(free)-1] = spareSocket{}
	s.free[spareIndex(v6)] = free[:len(free)-1]
	return k, true
}

// connected counts a connection made on a kept socket.
func (s *spareSockets) connected() {
	if s.reused != nil {
		s.reused.Add(1)
	}
}

// put keeps a socket for later, and reports whether it did; if it did not
// (none are kept any more, or enough are), the caller closes it.
func (s *spareSockets) put(v6 bool, k spareSocket) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	free := s.free[spareIndex(v6)]
	if s.closed || len(free) >= sparesPerFamily {
		return false
	}
	s.free[spareIndex(v6)] = append(free, k)
	return true
}

// sweep closes the sockets left unused for spareIdle by now.
func (s *spareSockets) sweep(now time.Time) {
	var stale []spareSocket
	s.mu.Lock()
	for i, free := range s.free {
		n := 0 // the oldest come first
		for n < len(free) && now.Sub(free[n].since) >= spareIdle {
			n++
		}
		stale = append(stale, free[:n]...)
		rest := copy(free, free[n:])
		clear(free[rest:])
		s.free[i] = free[:rest]
	}
	s.mu.Unlock()
	for _, k := range stale {
		k.f.Close()
	}
}

// count returns how many sockets are kept.
func (s *spareSockets) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.free[0]) + len(s.free[1])
}

// close closes the kept sockets and keeps none from now on.
func (s *spareSockets) close() {
	s.mu.Lock()
	s.closed = true
	free := s.free
	s.free = [2][]spareSocket{}
	s.mu.Unlock()
	for _, list := range free {
		for _, k := range list {
			k.f.Close()
		}
	}
}
