package netstack

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Relay buffers are pooled. A relay direction takes one for each read
// that has something to read and gives it back once that has been written
// on, so a flow waiting for data holds none; only a direction whose
// receiver does not keep up keeps one.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// relayBuf is the buffer a relay direction holds, if any; held, if set,
// counts the buffers held.
type relayBuf struct {
	p    *[]byte
	held *atomic.Int64
}

func (b *relayBuf) get() []byte {
	if b.p == nil {
		b.p = bufPool.Get().(*[]byte)
		if b.held != nil {
			b.held.Add(1)
		}
	}
	return *b.p
}

func (b *relayBuf) put() {
	if b.p != nil {
		bufPool.Put(b.p)
		b.p = nil
		if b.held != nil {
			b.held.Add(-1)
		}
	}
}

// lazyReader is a source that takes its buffer only once a read has
// something to return (data, the end, an error).
type lazyReader interface {
	readLazy(buf *relayBuf) (int, error)
}

// readInto reads from c into buf's buffer. A source that cannot wait
// without one is given it before the read.
func readInto(c net.Conn, buf *relayBuf) (int, error) {
	if lr, ok := c.(lazyReader); ok {
		return lr.readLazy(buf)
	}
	return c.Read(buf.get())
}

// lazyWriter fills buf's buffer, taking it at the first write.
type lazyWriter struct {
	buf  *relayBuf
	rest []byte
	took bool
}

func (w *lazyWriter) Write(p []byte) (int, error) {
	if !w.took {
		w.rest, w.took = w.buf.get(), true
	}
	n := copy(w.rest, p)
	w.rest = w.rest[n:]
	if n != len(p) {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// readEndpoint reads from the stack's endpoint behind c, a network
// ("tcp", "udp") connection, as gonet's Read does (without a deadline),
// taking buf's buffer only once the endpoint has something to return. If
// cm is set, it gets the control messages of what was read.
func readEndpoint(c net.Conn, network string, ep tcpip.Endpoint, wq *waiter.Queue, buf *relayBuf, cm *tcpip.ReceivableControlMessages) (int, error) {
	var (
		w     = lazyWriter{buf: buf}
		entry waiter.Entry
		ch    <-chan struct{}
	)
	for {
		res, err := ep.Read(&w, tcpip.ReadOptions{})
		switch err.(type) {
		case nil:
			if res.Count != 0 {
				ep.ModerateRecvBuf(res.Count)
			}
			if cm != nil {
				*cm = res.ControlMessages
			}
			return res.Count, nil
		case *tcpip.ErrWouldBlock:
		case *tcpip.ErrClosedForReceive:
			return 0, io.EOF
		default:
			return 0, &net.OpError{Op: "read", Net: network, Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errors.New(err.String())}
		}
		if ch == nil {
			// Registered, try again at once: data may have come
			// between the read and the registration.
			entry, ch = waiter.NewChannelEntry(waiter.ReadableEvents)
			wq.EventRegister(&entry)
			defer wq.EventUnregister(&entry)
			continue
		}
		<-ch
	}
}

// clientDatagrams is the client's side of a UDP session.
type clientDatagrams struct {
	*gonet.UDPConn
	ep tcpip.Endpoint
	wq *waiter.Queue
	// hops is what the datagram read last had left of its TTL (hop
	// limit), if below reachHops, else 0 (limitedHops).
	hops uint8
}

func newClientDatagrams(wq *waiter.Queue, ep tcpip.Endpoint) *clientDatagrams {
	ep.SocketOptions().SetReceiveTTL(true)
	ep.SocketOptions().SetReceiveHopLimit(true)
	return &clientDatagrams{UDPConn: gonet.NewUDPConn(wq, ep), ep: ep, wq: wq}
}

// readLazy reads one datagram as gonet's Read does, taking buf's buffer
// only once the stack has one, and notes its hops.
func (c *clientDatagrams) readLazy(buf *relayBuf) (int, error) {
	var cm tcpip.ReceivableControlMessages
	n, err := readEndpoint(c, "udp", c.ep, c.wq, buf, &cm)
	if err == nil {
		switch {
		case cm.HasTTL:
			c.hops = limitedTTL(cm.TTL)
		case cm.HasHopLimit:
			c.hops = limitedTTL(cm.HopLimit)
		}
	}
	return n, err
}

// lastHops returns the hops of the datagram read last.
func (c *clientDatagrams) lastHops() uint8 { return c.hops }
