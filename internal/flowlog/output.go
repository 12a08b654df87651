package flowlog

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/tunwall/tunwall/policy"
)

// Log lines are buffered for at most flushInterval (or flushBytes) before
// they are written.
const (
	flushInterval = 50 * time.Millisecond
	flushBytes    = 64 << 10
)

// Open builds the process logger described by cfg, and returns with it
// the output it writes to; close that last.
func Open(cfg policy.LogConfig) (zerolog.Logger, *Output, error) {
	o := &Output{}
	switch cfg.Output {
	case "stderr", "":
		o.f = os.Stderr
	case "stdout":
		o.f = os.Stdout
	default:
		f, err := openFile(cfg.Output)
		if err != nil {
			return zerolog.Nop(), nil, err
		}
		o.f, o.path = f, cfg.Output
	}
	level, err := zerolog.ParseLevel(cfg.Level)
	if err != nil {
		if o.path != "" {
			o.f.Close()
		}
		return zerolog.Nop(), nil, fmt.Errorf("log level: %w", err)
	}
	o.bw = newBufferedWriter(fileWriter{o}, flushBytes, flushInterval)
	return New(o.bw, cfg.Format, isatty.IsTerminal(o.f.Fd())).Level(level), o, nil
}

func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	return f, nil
}

// Output is where the process log goes: standard error or output, or a
// file that it appends to.
type Output struct {
	bw   *bufferedWriter
	path string // the file's; "" for standard error or output

	mu sync.Mutex // guards f
	f  *os.File
}

// fileWriter writes to the output's file of the moment.
type fileWriter struct{ o *Output }

func (w fileWriter) Write(p []byte) (int, error) {
	w.o.mu.Lock()
	defer w.o.mu.Unlock()
	return w.o.f.Write(p)
}

// Reopen opens the log file again by its path and writes on to it: after
// a rotation that renamed the file, lines go to a new one. Lines logged
// before go to the old file. It reports where the log goes now, and does
// nothing for standard error or output; if the file cannot be opened,
// the log stays where it was.
func (o *Output) Reopen() (string, error) {
	if o.path == "" {
		return "", nil
	}
	o.bw.flush()
	f, err := openFile(o.path)
	if err != nil {
		return "", err
	}
	o.mu.Lock()
	old := o.f
	o.f = f
	o.mu.Unlock()
	old.Close() // written out above; nothing more goes to it
	return o.path, nil
}

// Close writes out buffered lines and closes the log file, if one was
// opened.
func (o *Output) Close() error {
	o.bw.Close()
	if o.path == "" {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.f.Close()
}

// New returns a logger writing to w: JSON, or the console format when format
// is "console", or "auto" and w is a terminal.
func New(w io.Writer, format string, tty bool) zerolog.Logger {
	if format == "console" || format == "auto" && tty {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000", NoColor: !tty}
	}
	return zerolog.New(w).With().Timestamp().Logger()
}

func init() {
	// Millisecond timestamps: denied-packet logs are read for their times.
	zerolog.TimeFieldFormat = time.RFC3339Nano
}
