// Package e2e runs tunwall end to end in network namespaces: client ->
// gateway (tunwall) -> server, IPv4 and IPv6, asserting what the client
// sees and what the flow log says. It needs root, iproute2, ping, setpriv and
// /dev/net/tun; without them the tests skip, except under CI=true, where
// they fail.
package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

var (
	skipReason string       // why the lab cannot run here ("" if it can)
	bin        string       // directory holding the built binaries
	lb         *lab.Lab     // the suite's lab
	gw         *lab.Tunwall // the suite's gateway, running testdata/gateway.yaml
	services   *exec.Cmd    // twlab serve in the server namespace
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tunwall-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Other users run twlab too (the per-app routing tests).
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	bin = dir
	for _, pkg := range []string{"../cmd/tunwall", "./cmd/twlab"} {
		out, err := exec.Command("go", "build", "-o", dir, pkg).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
			return 1
		}
	}
	if skipReason = lab.Supported(); skipReason == "" {
		if err := setUp(dir); err != nil {
			fmt.Fprintln(os.Stderr, "e2e setup:", err)
			tearDown()
			return 1
		}
	}
	code := m.Run()
	if code != 0 && gw != nil {
		if log, err := os.ReadFile(gw.Log); err == nil {
			fmt.Fprintf(os.Stderr, "--- gateway log (%s) ---\n%s", gw.Log, lastLines(log, 40))
		}
	}
	tearDown()
	return code
}

// setUp builds the lab, starts the services in the server namespace and the
// suite's gateway.
func setUp(dir string) error {
	var err error
	if lb, err = lab.New(fmt.Sprintf("twe%d", os.Getpid()%10000)); err != nil {
		return err
	}
	srv := lb.Cmd(lb.Server, filepath.Join(dir, "twlab"), "serve")
	out, err := srv.StdoutPipe()
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	services = srv
	ready := make([]byte, 6)
	if _, err := out.Read(ready); err != nil || string(ready) != "ready\n" {
		return fmt.Errorf("lab services did not start: %q %v", ready, err)
	}
	gw, err = lb.StartTunwall(filepath.Join(dir, "tunwall"), "testdata/gateway.yaml", filepath.Join(dir, "gateway.log"), "twe2e")
	return err
}

func tearDown() {
	if gw != nil {
		gw.Stop(10 * time.Second)
	}
	if services != nil {
		services.Process.Kill()
		services.Wait()
	}
	if lb != nil {
		lb.Close()
	}
}

// need skips t when the lab cannot run here, and fails it under CI, where
// a skipped end-to-end suite would hide a broken pipeline.
func need(t *testing.T) {
	t.Helper()
	if skipReason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("e2e cannot run under CI: %s", skipReason)
	}
	t.Skipf("e2e skipped: %s", skipReason)
}

// startOutput starts cmd and returns its standard output; the process is
// killed and reaped when the test ends.
func startOutput(t *testing.T, cmd *exec.Cmd) io.Reader {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return out
}

func lastLines(b []byte, n int) []byte {
	for i := len(b) - 2; i >= 0; i-- {
		if b[i] == '\n' {
			if n--; n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}
