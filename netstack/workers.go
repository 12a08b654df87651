package netstack

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// workerIdle is how long a worker waits for its next flow before it exits.
const workerIdle = 10 * time.Second

// workers runs flow handlers (TCP from the SYN on, UDP sessions) on
// goroutines kept from earlier flows. A fresh goroutine starts with a small
// stack and grows it, copying it each time, as gVisor's handshake and send
// paths go deep; in a connection-rate run that growth was 5% of tunwall's
// CPU. A kept goroutine has grown already.
type workers struct {
	ctx     context.Context // done: idle workers exit
	wg      *sync.WaitGroup
	idleFor time.Duration
	tasks   chan func() // unbuffered: a send succeeds only to a waiting worker

	started atomic.Int64 // goroutines started so far
	idle    atomic.Int32 // workers waiting for a task
}

func newWorkers(ctx context.Context, wg *sync.WaitGroup) *workers {
	return &workers{ctx: ctx, wg: wg, idleFor: workerIdle, tasks: make(chan func())}
}

// run starts fn on a waiting worker, or on a new one if none waits. It
// never blocks.
func (w *workers) run(fn func()) {
	select {
	case w.tasks <- fn:
	default:
		w.started.Add(1)
		w.wg.Add(1)
		go w.loop(fn)
	}
}

func (w *workers) loop(fn func()) {
	defer w.wg.Done()
	timer := time.NewTimer(w.idleFor)
	defer timer.Stop()
	for {
		fn()
		timer.Reset(w.idleFor)
		w.idle.Add(1)
		select {
		case fn = <-w.tasks:
			w.idle.Add(-1)
		case <-timer.C:
			w.idle.Add(-1)
			return
		case <-w.ctx.Done():
			w.idle.Add(-1)
			return
		}
	}
}
