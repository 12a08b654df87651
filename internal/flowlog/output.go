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

// Open builds the process logger described by cfg. The returned closer
// closes the log file, if one was opened.
func Open(cfg policy.LogConfig) (zerolog.Logger, io.Closer, error) {
	var out *os.File
	var closer io.Closer = io.NopCloser(nil)
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
		out, closer = f, f
	}
	level, err := zerolog.ParseLevel(cfg.Level)
	if err != nil {
		return zerolog.Nop(), nil, fmt.Errorf("log level: %w", err)
	}
	return New(out, cfg.Format, isatty.IsTerminal(out.Fd())).Level(level), closer, nil
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
