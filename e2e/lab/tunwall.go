package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Tunwall is a gateway process running in the lab's gateway namespace:
// tunwall, or another gateway the benchmark compares it with.
type Tunwall struct {
	Cmd    *exec.Cmd
	Log    string // path of the file its log goes to
	Dev    string
	done   chan struct{}
	err    error         // exit status, valid after done is closed
	notify *notifySocket // its $NOTIFY_SOCKET, if it was given one
}

// StartTunwall runs "bin run -c config" in the gateway namespace with its
// log written to logPath, waits until device dev is up, and routes the
// client's traffic into it.
func (l *Lab) StartTunwall(bin, config, logPath, dev string) (*Tunwall, error) {
	tw, err := l.Launch(bin, config, logPath, dev)
	if err != nil {
		return nil, err
	}
	if err := l.Route(dev); err != nil {
		tw.Stop(time.Second)
		return nil, err
	}
	return tw, nil
}

// Launch runs "bin run -c config [extra...]" in the gateway namespace with
// its log (stdout and stderr) written to logPath and waits until device
// dev is up and tunwall has reported itself ready (READY=1 on
// $NOTIFY_SOCKET: routing, device, its watch and control socket all in
// place).
// Routing is the configuration's business.
func (l *Lab) Launch(bin, config, logPath, dev string, extra ...string) (*Tunwall, error) {
	args := []string{bin, "run"}
	if config != "" {
		args = append(args, "-c", config)
	}
	return l.start(append(args, extra...), logPath, dev, true)
}

// Start runs the command args in the gateway namespace with its output
// written to logPath and waits until the device dev it creates is up: for
// gateways that do not report readiness, and tunwall builds older than
// that report.
func (l *Lab) Start(args []string, logPath, dev string) (*Tunwall, error) {
	return l.start(args, logPath, dev, false)
}

func (l *Lab) start(args []string, logPath, dev string, notify bool) (*Tunwall, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tw := &Tunwall{Cmd: l.Cmd(l.Gateway, args...), Log: logPath, Dev: dev, done: make(chan struct{})}
	tw.Cmd.Stdout, tw.Cmd.Stderr = f, f
	if notify {
		if tw.notify, err = listenNotify(); err != nil {
			return nil, err
		}
		tw.Cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+tw.notify.name)
	}
	if err := tw.Cmd.Start(); err != nil {
		if tw.notify != nil {
			tw.notify.close()
		}
		return nil, err
	}
	go func() {
		tw.err = tw.Cmd.Wait()
		if tw.notify != nil {
			tw.notify.close()
		}
		close(tw.done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		select {
		case <-tw.done:
			cancel() // exited early: stop waiting for the link
		case <-ctx.Done():
		}
	}()
	err = l.WaitLink(ctx, l.Gateway, dev)
	if err == nil && tw.notify != nil {
		err = tw.notify.wait(ctx)
	}
	if err != nil {
		tw.Stop(time.Second)
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("%s did not come up: %w\n%s", filepath.Base(args[0]), err, log)
	}
	return tw, nil
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it.
func (tw *Tunwall) Kill() {
	tw.Cmd.Process.Kill()
	<-tw.done
}

// Stop sends SIGTERM and waits up to timeout for the process to exit
// (then ends it with SIGQUIT, which makes a Go program write its
// goroutines, or SIGKILL). It returns the exit error (nil for exit status 0).
func (tw *Tunwall) Stop(timeout time.Duration) error {
	return tw.StopWith(syscall.SIGTERM, timeout)
}

// StopWith is Stop with another signal (SIGINT, as Ctrl-C sends).
func (tw *Tunwall) StopWith(sig syscall.Signal, timeout time.Duration) error {
	select {
	case <-tw.done:
		return tw.err
	default:
	}
	tw.Cmd.Process.Signal(sig)
	select {
	case <-tw.done:
		return tw.err
	case <-time.After(timeout):
		// SIGQUIT first: a Go gateway writes its goroutines to its log.
		tw.Cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-tw.done:
		case <-time.After(2 * time.Second):
			tw.Cmd.Process.Kill()
			<-tw.done
		}
		return fmt.Errorf("gateway did not exit after %s; stopped with SIGQUIT (goroutines in %s)", SignalName(sig), tw.Log)
	}
}

// SignalName is the name a stop signal goes by: SIGTERM or SIGINT.
func SignalName(sig syscall.Signal) string {
	if sig == syscall.SIGINT {
		return "SIGINT"
	}
	return "SIGTERM"
}

// Notified returns the state assignments (READY=1, STOPPING=1, ...) the
// process sent to its $NOTIFY_SOCKET; complete once Done is closed. Nil
// for a process started without one.
func (tw *Tunwall) Notified() []string {
	if tw.notify == nil {
		return nil
	}
	return tw.notify.received()
}

// Done is closed when the process has exited.
func (tw *Tunwall) Done() <-chan struct{} { return tw.done }
