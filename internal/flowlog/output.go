package flowlog

import (
	"fmt"
	"io"
	"os"
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

// Open builds the process logger described by cfg. The returned closer
// writes out buffered lines and closes the log file, if one was opened;
// call it last.
func Open(cfg policy.LogConfig) (zerolog.Logger, io.Closer, error) {
	var out *os.File
	var file io.Closer
	switch cfg.Output {
	case "stderr", "":
		out = os.Stderr
	case "stdout":
		out = os.Stdout
	default:
		f, err := os.OpenFile(cfg.Output, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return zerolog.Nop(), nil, fmt.Errorf("open log: %w", err)
		}
		out, file = f, f
	}
	level, err := zerolog.ParseLevel(cfg.Level)
	if err != nil {
		if file != nil {
			file.Close()
		}
		return zerolog.Nop(), nil, fmt.Errorf("log level: %w", err)
	}
	bw := newBufferedWriter(out, flushBytes, flushInterval)
	closer := closerFunc(func() error {
		bw.Close()
		if file != nil {
			return file.Close()
		}
		return nil
	})
	return New(bw, cfg.Format, isatty.IsTerminal(out.Fd())).Level(level), closer, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

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
