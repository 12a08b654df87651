package lab

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// MarkDir holds a mark per existing lab, named after its prefix and
// holding its creator's PID. A run that dies without tearing its lab down
// (a panicking test skips TestMain's teardown; a demo killed hard) leaves
// its mark behind, and the next New removes that lab.
const MarkDir = "/run/tunwall-lab"

// mark records that this process created the lab with prefix.
func mark(prefix string) error {
	if err := os.MkdirAll(MarkDir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(MarkDir, prefix), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
}

// Sweep removes every lab whose creator is gone: it kills the processes
// left in its namespaces (servers, gateways the tests started), deletes
// the namespaces and the mark. It returns the prefixes of the labs it
// removed. Labs of live processes, and namespaces without a mark, are left
// alone.
func Sweep() []string {
	ents, err := os.ReadDir(MarkDir)
	if err != nil {
		return nil
	}
	var swept []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(MarkDir, e.Name()))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || alive(pid) {
			continue
		}
		l := named(e.Name())
		l.killAll()
		l.Close()
		swept = append(swept, e.Name())
	}
	return swept
}

// named is the lab with prefix.
func named(prefix string) *Lab {
	return &Lab{Client: prefix + "-cli", Gateway: prefix + "-gw", Server: prefix + "-srv", prefix: prefix}
}

func alive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	err = p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, syscall.EPERM)
}

// killAll kills the processes left in the lab's namespaces.
func (l *Lab) killAll() {
	for _, ns := range []string{l.branch(), l.Client, l.Gateway, l.Server} {
		out, err := run("ip", "netns", "pids", ns)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				if p, err := os.FindProcess(pid); err == nil {
					p.Kill()
				}
			}
		}
	}
}
