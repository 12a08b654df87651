package netstack

import (
	"bytes"
	"errors"
	"net"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// A relay direction can stall: while it waits to write to one side, it
// reads nothing from the other, and so would not see that side reset the
// flow. A router passes a reset on whatever else is queued, so tunwall
// must notice it anyway. For the client's side the stack says so at once
// (watchClientReset); the upstream socket is looked at while a write to
// the client waits (clientConn).

// How soon, and then how often at most, a write to the client that waits
// looks whether the upstream connection has been reset. The first looks
// come quickly, for a reset that comes as the client stops reading; a
// client that stays stalled costs a system call a second.
const (
	stallFirstLook = 50 * time.Millisecond
	stallLookMax   = time.Second
)

var errPeerGone = errors.New("the other side of the flow has been reset")

// clientConn is the client's side of a relayed TCP flow: a gonet
// connection whose writes, while they wait for the client to read, call
// gone every so often and give up once it reports true.
type clientConn struct {
	*gonet.TCPConn
	ep   tcpip.Endpoint
	wq   *waiter.Queue
	gone func() bool // set before the relay starts; nil: never gives up
}

func newClientConn(wq *waiter.Queue, ep tcpip.Endpoint) *clientConn {
	return &clientConn{TCPConn: gonet.NewTCPConn(wq, ep), ep: ep, wq: wq}
}

// Write writes all of b, as gonet's Write does (which it replaces, so
// that waiting needs no deadline and costs nothing until it happens).
func (c *clientConn) Write(b []byte) (int, error) {
	var (
		r       bytes.Reader
		n       int
		entry   waiter.Entry
		ch      <-chan struct{}
		look    *time.Timer
		between = stallFirstLook
	)
	for n != len(b) {
		r.Reset(b[n:])
		k, err := c.ep.Write(&r, tcpip.WriteOptions{})
		n += int(k)
		switch err.(type) {
		case nil:
			continue
		case *tcpip.ErrWouldBlock:
		default:
			return n, c.writeError(errors.New(err.String()))
		}
		if ch == nil {
			// Registered, try again at once: room may have come
			// between the write and the registration.
			entry, ch = waiter.NewChannelEntry(waiter.WritableEvents)
			c.wq.EventRegister(&entry)
			defer c.wq.EventUnregister(&entry)
			continue
		}
		if look == nil && c.gone != nil {
			look = time.NewTimer(between)
			defer look.Stop()
		}
		if !c.wait(ch, look, &between) {
			return n, c.writeError(errPeerGone)
		}
	}
	return n, nil
}

// readLazy reads as gonet's Read does, taking buf's buffer only once the
// stack has something to return.
func (c *clientConn) readLazy(buf *relayBuf) (int, error) {
	return readEndpoint(c, "tcp", c.ep, c.wq, buf, nil)
}

func (c *clientConn) writeError(err error) error {
	return &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// wait waits until ch fires, looking at gone each time look fires; it
// reports false if gone said to give up.
func (c *clientConn) wait(ch <-chan struct{}, look *time.Timer, between *time.Duration) bool {
	if look == nil {
		<-ch
		return true
	}
	for {
		select {
		case <-ch:
			return true
		case <-look.C:
			if c.gone() {
				return false
			}
			*between = min(2**between, stallLookMax)
			look.Reset(*between)
		}
	}
}

// watchClientReset calls reset (on a goroutine of its own) when the
// client's side of the flow is reset, until the returned stop is called.
// busy, checked when that happens, tells whether the relay is in a write
// upstream and so not reading from the client.
func watchClientReset(wq *waiter.Queue, ep tcpip.Endpoint, busy func() bool, reset func()) (stop func()) {
	entry := waiter.NewFunctionEntry(waiter.EventErr, func(waiter.EventMask) {
		// The stack notifies with its locks held at times: the reset,
		// which closes the endpoint, must not run here.
		if clientReset(ep) && busy() {
			go reset()
		}
	})
	wq.EventRegister(&entry)
	return func() { wq.EventUnregister(&entry) }
}

// clientReset reports whether the client's side of a flow has been reset
// (or has failed otherwise).
func clientReset(ep tcpip.Endpoint) bool {
	e, ok := ep.(*tcp.Endpoint)
	return ok && e.EndpointState() == tcp.StateError
}
