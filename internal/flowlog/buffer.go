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
	w.buf = nil
	w.mu.Unlock()
	if len(data) > 0 {
		w.out.Write(data)
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
