package flowlog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunwall/tunwall/policy"
)

// After a rotation renamed the log file, Reopen starts a new one: what was
// logged before is in the old file, what comes after in the new.
func TestReopenAfterRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "flows.log")
	zl, out, err := Open(policy.LogConfig{Output: path, Level: "info", Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	zl.Info().Msg("before rotation")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	got, err := out.Reopen()
	if err != nil || got != path {
		t.Fatalf("Reopen: %q, %v", got, err)
	}
	zl.Info().Msg("after rotation")
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	wantLines(t, path+".1", "before rotation")
	wantLines(t, path, "after rotation")
}

// A file that cannot be opened again leaves the log where it was.
func TestReopenFailureKeepsLogging(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "flows.log")
	zl, out, err := Open(policy.LogConfig{Output: path, Level: "info", Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	moved := dir + ".old"
	if err := os.Rename(dir, moved); err != nil { // the path's directory is gone
		t.Fatal(err)
	}
	if _, err := out.Reopen(); err == nil {
		t.Error("Reopen into a missing directory: no error")
	}
	zl.Info().Msg("still logging")
	out.Close()
	wantLines(t, filepath.Join(moved, "flows.log"), "still logging")
}

func TestReopenStandardError(t *testing.T) {
	_, out, err := Open(policy.LogConfig{Output: "stderr", Level: "info", Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if got, err := out.Reopen(); got != "" || err != nil {
		t.Errorf("Reopen of stderr: %q, %v; want nothing done", got, err)
	}
}

// wantLines asserts the file holds exactly the messages given, in order.
func wantLines(t *testing.T, path string, msgs ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != len(msgs) {
		t.Fatalf("%s: %d lines %q, want %d", path, len(lines), lines, len(msgs))
	}
	for i, m := range msgs {
		if !strings.Contains(lines[i], `"message":"`+m+`"`) {
			t.Errorf("%s line %d: %s, want message %q", path, i+1, lines[i], m)
		}
	}
}
