// Package e2e runs tunwall end to end in network namespaces: client ->
// gateway (tunwall) -> server, IPv4 and IPv6, asserting what the client
// sees and what the flow log says. It needs root, iproute2, ping, setpriv and
// /dev/net/tun; without them the tests skip, except under CI=true, where
// they fail. With TUNWALL_E2E_RACE=1 (make e2e-race) the binaries are built
// with the race detector, and any report it writes fails the suite.
package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	build := []string{"build", "-o", dir}
	var reports string
	if os.Getenv("TUNWALL_E2E_RACE") == "1" {
		// The binaries the suite runs are built with the race detector,
		// and write what it finds to files of their own: the suite fails
		// on any, whatever the tests saw.
		build = append(build, "-race")
		if reports, err = raceReports(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	for _, pkg := range []string{"../cmd/tunwall", "./cmd/twlab"} {
		out, err := exec.Command("go", append(build, pkg)...).CombinedOutput()
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
	if reports != "" && raceFound(reports) {
		return 1
	}
	return code
}

// raceReports makes a directory in dir for the race detector's reports,
// writable by the other users some tests run twlab as, and points GORACE
// there for every process the suite starts.
func raceReports(dir string) (string, error) {
	reports := filepath.Join(dir, "race")
	if err := os.Mkdir(reports, 0o777); err != nil {
		return "", err
	}
	if err := os.Chmod(reports, 0o1777); err != nil {
		return "", err
	}
	opts := strings.TrimSpace(os.Getenv("GORACE") + " log_path=" + filepath.Join(reports, "report"))
	return reports, os.Setenv("GORACE", opts)
}

// raceFound prints the reports the race detector wrote into dir, and
// reports whether there were any.
func raceFound(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "report.*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		fmt.Fprintf(os.Stderr, "--- race detector report (%s) ---\n%s", filepath.Base(f), b)
	}
	if len(files) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the race detector reported %d time(s)\n", len(files))
	}
	return len(files) > 0
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
