package netstack

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// side is one end of a relayed flow.
type side struct {
	conn  net.Conn
	abort func() // tear down abruptly (TCP: send RST)
	// icmpError (an upstream datagram socket) is given each error the
	// socket reports; if it is an ICMP error about one datagram, it passes
	// it on to the client and reports true, and the session goes on.
	icmpError func(error) bool
	// reset, if set, reports whether the side's peer has reset the
	// connection.
	reset func() bool
}

// closeWriter is a stream whose write half can be closed alone.
type closeWriter interface{ CloseWrite() error }

// relay copies between the originator (client) and the upstream socket
// until both directions end, a side fails, the flow is idle for too long, or
// close is called. It counts bytes both ways.
type relay struct {
	client, upstream side
	datagram         bool // UDP: copy datagrams, no half-close, ends only by idle/close
	idle             time.Duration
	// packets (TCP), if set, counts the segments each side has received
	// so far (the client's endpoint from the client, the upstream socket
	// from the server), keepalive probes included: a flow that moves no
	// byte but still carries packets is not idle, as for a router's
	// connection tracking. It is looked at every quarter of the idle time.
	packets func() (client, upstream uint64)
	// packetsAtStart, if set, gives the counts packets would give when
	// the relay starts, where they are known without asking (the upstream
	// socket's count is a system call each time).
	packetsAtStart func() (client, upstream uint64)
	// probe (TCP), if set, turns tunwall's own keepalive probes towards
	// the upstream side or the client on or off (see steerProbes).
	probe func(upstream, on bool)
	// Filters (DNS): each sees what one direction read and returns what to
	// pass on, which may be less (or, for a stream, held back for later).
	outFilter, inFilter func(b []byte) []byte
	// buffers, if set, counts the relay buffers held.
	buffers *atomic.Int64

	out, in atomic.Int64 // originator->destination, destination->originator
	last    atomic.Int64 // unix nanos of the last byte moved
	// outWriting is set while the client's bytes are written upstream:
	// the relay reads nothing from the client then, and whoever watches
	// the client's side for a reset must end the flow instead.
	outWriting atomic.Bool

	mu       sync.Mutex   // guards the following fields
	reason   string       // first reason to end the flow wins
	timer    *time.Timer  // idle timer
	finished bool         // run has returned; the timer must not re-arm
	seen     [2]uint64    // packets() when the idle timer last ran
	heard    [2]time.Time // when the idle timer last saw packets from the client, the server
	checked  time.Time    // when the idle timer last ran
	probing  probing      // which side tunwall probes
	probed   probing      // which side it probed in the quarter before the last

	stopOnce sync.Once
}

// run relays until the flow ends and returns the reason it ended.
func (r *relay) run() string {
	r.touch()
	r.mu.Lock()
	first := r.idle
	if r.packets != nil {
		at := r.packets
		if r.packetsAtStart != nil {
			at = r.packetsAtStart
		}
		c, u := at()
		now := time.Now()
		r.seen, r.heard, r.checked = [2]uint64{c, u}, [2]time.Time{now, now}, now
		first = r.idle / 4
	}
	r.timer = time.AfterFunc(first, r.checkIdle)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.finished = true
		r.timer.Stop()
		r.mu.Unlock()
	}()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.pipe(r.upstream, r.client, &r.out, &r.outWriting, r.outFilter)
	}()
	r.pipe(r.client, r.upstream, &r.in, nil, r.inFilter)
	wg.Wait()
	r.stop("")
	return r.endReason()
}

// pipe copies from src to dst until src ends. A clean end of a TCP stream
// is passed on as a half-close; anything else ends the whole flow. filter,
// if set, decides what of each read goes on to dst. writing, if set, is
// up during each write to dst; src's reset is then looked for first, as
// its watcher may have seen it come just before.
func (r *relay) pipe(dst, src side, n *atomic.Int64, writing *atomic.Bool, filter func([]byte) []byte) {
	buf := relayBuf{held: r.buffers}
	defer buf.put()
	for {
		k, err := readInto(src.conn, &buf)
		if k > 0 {
			r.touch()
			b := buf.get()[:k]
			if filter != nil {
				b = filter(b)
			}
			if len(b) > 0 {
				if writing != nil {
					writing.Store(true)
					if src.reset != nil && src.reset() {
						writing.Store(false)
						r.close(reasonRST)
						return
					}
				}
				sent, werr := r.write(dst, b)
				if writing != nil {
					writing.Store(false)
				}
				if werr != nil {
					r.close(reasonRST)
					return
				}
				if sent {
					n.Add(int64(len(b)))
				}
			}
		}
		buf.put()
		if err == nil {
			continue
		}
		if src.isICMPError(err) {
			continue // an error about one datagram; the session goes on
		}
		if errors.Is(err, io.EOF) && !r.datagram {
			if cw, ok := dst.conn.(closeWriter); ok && cw.CloseWrite() == nil {
				return // half-close: the other direction goes on
			}
		}
		if r.probeTimedOut(err) {
			r.close(reasonIdle)
			return
		}
		r.close(reasonRST)
		return
	}
}

// write sends b to dst and reports whether it went out. A connected
// datagram socket reports the ICMP error about an earlier datagram on
// whichever call comes next, and a write that gets it sends nothing: the
// error is passed on and b sent once more (should that meet a newer
// error, b is lost, as the network may lose it).
func (r *relay) write(dst side, b []byte) (bool, error) {
	for range 2 {
		_, err := dst.conn.Write(b)
		if err == nil {
			return true, nil
		}
		if !dst.isICMPError(err) {
			return false, err
		}
	}
	return false, nil
}

// isICMPError reports whether err is the side's socket reporting an ICMP
// error about one datagram, passed on to the client.
func (s side) isICMPError(err error) bool {
	return s.icmpError != nil && s.icmpError(err)
}

func (r *relay) touch() { r.last.Store(time.Now().UnixNano()) }

func (r *relay) counts() (out, in int64, last time.Time) {
	return r.out.Load(), r.in.Load(), time.Unix(0, r.last.Load())
}

// checkIdle runs on the idle timer: it ends an idle flow or re-arms itself.
// A flow is active when it moved a byte, or (packets set) when the timer
// saw its packet count change; it ends once it has not been active for the
// idle time. A packet is seen a quarter of the idle time late at most, so
// a flow that only carries packets ends up to 1.25 idle times after its
// last one.
func (r *relay) checkIdle() {
	now := time.Now()
	r.mu.Lock()
	if r.finished {
		r.mu.Unlock()
		return
	}
	active := time.Unix(0, r.last.Load())
	var steer func()
	if r.packets != nil {
		c, u := r.packets()
		fromClient, fromServer := c != r.seen[0], u != r.seen[1]
		r.seen = [2]uint64{c, u}
		// The answers to tunwall's own probes tell nothing of the peers;
		// the last may come in the quarter after tunwall stopped.
		for _, p := range [2]probing{r.probing, r.probed} {
			switch p {
			case probingUpstream:
				fromServer = false
			case probingClient:
				fromClient = false
			}
		}
		r.probed = r.probing
		if fromClient {
			r.heard[0] = now
		}
		if fromServer {
			r.heard[1] = now
		}
		if r.probe != nil {
			steer = r.steerProbes(now, fromClient, fromServer, active.Before(r.checked))
		}
		r.checked = now
		for _, h := range r.heard {
			if h.After(active) {
				active = h
			}
		}
	}
	if left := r.idle - now.Sub(active); left > 0 {
		if r.packets != nil {
			left = min(left, r.idle/4)
		}
		r.timer.Reset(left)
		r.mu.Unlock()
		if steer != nil {
			steer()
		}
		return
	}
	r.mu.Unlock()
	r.close(reasonIdle)
}

// probing is the side of a TCP flow tunwall sends keepalive probes to.
type probing uint8

const (
	probingNone probing = iota
	probingUpstream
	probingClient
)

// steerProbes decides, from what the last quarter of the idle time
// carried, whether tunwall should probe one side of the flow, and returns
// the change to make (nil: none). r.mu is held.
//
// tunwall's stack answers the client's keepalive probes and the host
// answers the server's, so neither prober learns whether the other end is
// still there, as it would through a router, and their probes would keep
// the flow from ever being idle. So when one end probes while the flow
// moves no byte, tunwall probes the other end itself, for as long as the
// first goes on: should that end stop answering, its socket fails and
// the flow ends (reason idle), both ends reset. tunwall probes one side
// at a time, the upstream side first: the answers to its probes cannot
// be told from that side's own packets, so they are not counted as
// activity, and a prober on that side is heard again once tunwall stops.
// It stops once the first end has been silent for three quarters of the
// idle time, not at the first check without a probe: probes often come
// further apart than the checks.
func (r *relay) steerProbes(now time.Time, fromClient, fromServer, quiet bool) func() {
	silent := func(i int) bool { return now.Sub(r.heard[i]) >= r.idle*3/4 }
	switch {
	case r.probing == probingNone && quiet && fromClient:
		r.probing = probingUpstream
		return func() { r.probe(true, true) }
	case r.probing == probingNone && quiet && fromServer:
		r.probing = probingClient
		return func() { r.probe(false, true) }
	case r.probing == probingUpstream && silent(0):
		r.probing = probingNone
		return func() { r.probe(true, false) }
	case r.probing == probingClient && silent(1):
		r.probing = probingNone
		return func() { r.probe(false, false) }
	}
	return nil
}

// probeTimedOut reports whether err is a side's socket giving up on the
// keepalive probes tunwall had it send.
func (r *relay) probeTimedOut(err error) bool {
	r.mu.Lock()
	on := r.probing != probingNone
	r.mu.Unlock()
	return on && (errors.Is(err, syscall.ETIMEDOUT) || strings.HasSuffix(err.Error(), (&tcpip.ErrTimeout{}).String()))
}

// close ends the flow for reason (rst, idle, limit, shutdown): both sides
// are torn down and run returns.
func (r *relay) close(reason string) {
	r.setReason(reason)
	r.stop(reason)
}

// stop closes both sides once. Any reason but a clean finish aborts TCP
// sides so the peers see a reset rather than a normal close.
func (r *relay) stop(reason string) {
	r.stopOnce.Do(func() {
		for _, s := range []side{r.client, r.upstream} {
			if reason != "" && s.abort != nil {
				s.abort()
			}
			s.conn.Close()
		}
	})
}

func (r *relay) setReason(reason string) {
	r.mu.Lock()
	if r.reason == "" {
		r.reason = reason
	}
	r.mu.Unlock()
}

func (r *relay) endReason() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reason == "" {
		if r.datagram {
			return reasonIdle
		}
		return reasonFIN
	}
	return r.reason
}
