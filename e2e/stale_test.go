package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"

	"github.com/tunwall/tunwall/e2e/lab"
)

// A lab whose creator is gone (a test run that panicked) is removed by the
// next lab's creation: the processes left in it are killed and its
// namespaces deleted. A live creator's lab stays.
func TestStaleLabSwept(t *testing.T) {
	need(t)
	prefix := fmt.Sprintf("tws%d", os.Getpid()%10000)
	l, err := lab.New(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	left := l.Cmd(l.Gateway, "sleep", "60")
	if err := left.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { left.Process.Kill(); left.Wait() })
	if swept := lab.Sweep(); slices.Contains(swept, prefix) || !exists(l) {
		t.Fatalf("the lab of a live process was swept (%v)", swept)
	}

	// Hand the lab to a process that has exited.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	mark := filepath.Join(lab.MarkDir, prefix)
	if err := os.WriteFile(mark, []byte(strconv.Itoa(gone.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	if swept := lab.Sweep(); !slices.Contains(swept, prefix) {
		t.Fatalf("swept %v, want %s among them", swept, prefix)
	}
	var ee *exec.ExitError
	if err := left.Wait(); !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() {
		t.Errorf("the process left in the lab: %v, want it killed", err)
	}
	if exists(l) {
		t.Error("the stale lab's namespaces are still there")
	}
	if _, err := os.Stat(mark); err == nil {
		t.Error("the stale lab's mark is still there")
	}
}

// exists reports whether any of the lab's namespaces is there.
func exists(l *lab.Lab) bool {
	for _, ns := range []string{l.Client, l.Gateway, l.Server} {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			return true
		}
	}
	return false
}
