package flowlog

import (
	"io"
	"sync"
	"time"
)

// bufferedWriter collects log lines in memory and writes them out every
// interval, or at once when max bytes are pending, so that logging a flow
// costs no system call of its own. Close writes what is left. A process
// killed outright loses at most one interval of lines.
type bufferedWriter struct {
	out io.Writer
	max int

	mu  sync.Mutex // guards buf
	buf []byte

	writeMu sync.Mutex // serialises writes to out, keeping lines in order
	spare   []byte     // the buffer written last, for buf to take next; guarded by writeMu

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func newBufferedWriter(out io.Writer, max int, interval time.Duration) *bufferedWriter {
	w := &bufferedWriter{out: out, max: max, stop: make(chan struct{}), done: make(chan struct{})}
	go every(interval, w.stop, w.done, w.flush)
	return w
}

// Write implements io.Writer. It never fails; errors of the underlying
// writer surface nowhere better than in the log itself, so they are
// dropped.
func (w *bufferedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf = append(w.buf, p...)
	full := len(w.buf) >= w.max
	w.mu.Unlock()
	if full {
		w.flush()
	}
	return len(p), nil
}

func (w *bufferedWriter) flush() {
	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	w.mu.Lock()
	data := w.buf
	w.buf, w.spare = w.spare[:0], nil
	w.mu.Unlock()
	if len(data) > 0 {
		w.out.Write(data)
	}
	// The two buffers take turns, so a steady stream of lines needs no
	// new memory; one a burst grew far past max is let go.
	if cap(data) <= 2*w.max {
		w.spare = data
	}
}

// Close stops the timer and writes what is pending.
func (w *bufferedWriter) Close() error {
	w.once.Do(func() {
		close(w.stop)
		<-w.done
		w.flush()
	})
	return nil
}
