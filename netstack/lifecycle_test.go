package netstack

import (
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tunwall/tunwall/policy"
)

// packetDevice brings the same packet on every read (repeat) or on the
// first read only. After Close, left more reads still bring it, the way a
// read already under way when the device closes still brings its packet.
type packetDevice struct {
	pkt    []byte
	repeat bool
	left   atomic.Int32
	read   atomic.Bool
	closed chan struct{}
	once   sync.Once
}

func newPacketDevice(t *testing.T, repeat bool, left int32) *packetDevice {
	d := &packetDevice{pkt: udpPacket(t, "10.0.0.2:5000", "192.0.2.1:9", []byte("x")), repeat: repeat, closed: make(chan struct{})}
	d.left.Store(left)
	return d
}

func (d *packetDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if !d.repeat && d.read.Swap(true) {
		<-d.closed
	}
	select {
	case <-d.closed:
		if d.left.Add(-1) < 0 {
			return 0, os.ErrClosed
		}
	default:
	}
	sizes[0] = copy(bufs[0][offset:], d.pkt)
	return 1, nil
}

func (d *packetDevice) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }
func (d *packetDevice) BatchSize() int                               { return 1 }
func (d *packetDevice) Close()                                       { d.once.Do(func() { close(d.closed) }) }

// gatewayOn starts a gateway with testPolicy on dev, reporting to ev. The
// caller stops it.
func gatewayOn(t *testing.T, dev Device, ev Events) *Gateway {
	t.Helper()
	cfg, err := policy.Parse("test.yaml", []byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := New(Config{Device: dev, MTU: 1500, Policy: cfg.Policy, Events: ev, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	return gw
}

// TestWaitWithPacketsInFlight: Wait returns while the device reader is
// still delivering packets read before the device closed. (gVisor's
// Stack.Wait holds the stack's lock while it waits for the link endpoint,
// and delivering a packet takes that lock, so the reader must be waited
// for first.)
func TestWaitWithPacketsInFlight(t *testing.T) {
	for i := 0; i < 20; i++ {
		dev := newPacketDevice(t, true, 2000)
		gw := gatewayOn(t, dev, &recorder{})
		gw.Close()
		dev.Close()
		done := make(chan struct{})
		go func() {
			gw.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Wait still blocked after 10 s with %d reads left", i, dev.left.Load())
		}
	}
}

// TestFirstPacketJudged: a packet waiting on the device when the gateway
// starts is judged like any other, not lost to a stack still being set up.
func TestFirstPacketJudged(t *testing.T) {
	for i := 0; i < 20; i++ {
		dev := newPacketDevice(t, false, 0)
		ev := &recorder{}
		gw := gatewayOn(t, dev, ev)
		deadline := time.Now().Add(5 * time.Second)
		_, v, ok := ev.verdictFor("10.0.0.2:5000")
		for !ok && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
			_, v, ok = ev.verdictFor("10.0.0.2:5000")
		}
		gw.Close()
		dev.Close()
		gw.Wait()
		if !ok || v.Action != policy.Deny {
			t.Fatalf("round %d: first packet's verdict %+v (recorded %v), want deny", i, v, ok)
		}
	}
}
