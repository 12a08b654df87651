package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/tunwall/tunwall/internal/control"
	"github.com/tunwall/tunwall/internal/flowlog"
	"github.com/tunwall/tunwall/netstack"
	"github.com/tunwall/tunwall/policy"
	"github.com/tunwall/tunwall/tun"
)

// pollEvery is how often the config file and its lists are checked for
// changes. A change is loaded once two checks in a row see the same
// files, so a file still being written is not loaded half done.
const pollEvery = 200 * time.Millisecond

// reloader loads the configuration again on SIGHUP, on a change of the
// file or of one of its lists, or on "tunwall reload" (POST /v1/reload on
// the control API), and swaps the policy in. Only the policy and its lists change
// while running; other sections need a restart. SIGHUP also reopens the
// log file, for log rotation.
type reloader struct {
	path     string // "" for the embedded default: nothing to watch
	gw       *netstack.Gateway
	log      zerolog.Logger
	logOut   *flowlog.Output               // the log's, reopened on SIGHUP
	cfg      atomic.Pointer[policy.Config] // the configuration in force
	loadedAt atomic.Int64                  // unix nanos of the last successful load
	failed   atomic.Int64                  // reloads that failed since start
	requests chan chan error               // reloads asked for through the API
}

func newReloader(path string, cfg *policy.Config, gw *netstack.Gateway, log zerolog.Logger, logOut *flowlog.Output) *reloader {
	r := &reloader{path: path, gw: gw, log: log, logOut: logOut, requests: make(chan chan error)}
	r.cfg.Store(cfg)
	r.loadedAt.Store(time.Now().UnixNano())
	return r
}

// request reloads from another goroutine and returns the outcome.
func (r *reloader) request(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case r.requests <- done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-done
}

// fileSig is what the watcher compares: a file replaced by rename gets a
// new inode, one written in place a new size or time.
type fileSig struct {
	size int64
	mod  time.Time
	ino  uint64
	ok   bool
}

func sigOf(path string) fileSig {
	fi, err := os.Stat(path)
	if err != nil {
		return fileSig{}
	}
	return fileSig{size: fi.Size(), mod: fi.ModTime(), ino: inode(fi), ok: true}
}

// watched returns the signatures of the config file and its lists.
func (r *reloader) watched() map[string]fileSig {
	sigs := map[string]fileSig{r.path: sigOf(r.path)}
	for _, l := range r.cfg.Load().Lists {
		sigs[l.File] = sigOf(l.File)
	}
	return sigs
}

// run reloads on hup and on file changes until ctx ends.
func (r *reloader) run(ctx context.Context, hup <-chan os.Signal) {
	var tick <-chan time.Time
	if r.path != "" {
		t := time.NewTicker(pollEvery)
		defer t.Stop()
		tick = t.C
	}
	var last, pending map[string]fileSig
	if r.path != "" {
		last = r.watched()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.reopenLog()
			r.reload("signal")
		case done := <-r.requests:
			done <- r.reload("api")
		case <-tick:
			now := r.watched()
			switch {
			case maps.Equal(now, last):
				pending = nil
				continue
			case pending == nil || !maps.Equal(now, pending):
				pending = now // changed: load once it holds still
				continue
			}
			r.reload("file")
		}
		pending = nil
		if r.path != "" {
			last = r.watched()
		}
	}
}

// reopenLog opens the log file again by its path (logrotate renames it,
// then sends SIGHUP); if that fails the log stays where it was.
func (r *reloader) reopenLog() {
	path, err := r.logOut.Reopen()
	switch {
	case err != nil:
		r.log.Error().Str("event", "log").Err(err).Msg("log file not reopened; logging on to the old one")
	case path != "":
		r.log.Info().Str("event", "log").Str("file", path).Msg("log file reopened")
	}
}

// reload loads, validates and compiles the configuration and swaps the
// policy in. A file with errors changes nothing: the errors are logged
// with their positions, returned, and the running policy stays.
func (r *reloader) reload(trigger string) error {
	var cfg *policy.Config
	var err error
	if r.path == "" {
		cfg, err = policy.Default()
	} else {
		cfg, err = policy.Load(r.path)
	}
	if err == nil {
		if zero := cfg.ZeroBytes(); len(zero) > 0 {
			err = zero // taken for a failed write, not for "deny, no rules"
		}
	}
	if err != nil {
		r.log.Error().Str("event", "reload").Str("trigger", trigger).Bool("ok", false).Err(err).
			Msg("reload failed; the running policy stays")
		r.failed.Add(1)
		return err
	}
	if restart := needsRestart(r.cfg.Load(), cfg); len(restart) > 0 {
		r.log.Warn().Str("event", "reload").Strs("not_applied", restart).
			Msg("changes outside policy and lists take effect at the next start")
	}
	logLists(r.log, cfg.Lists)
	r.gw.SetPolicy(cfg.Policy)
	closed := 0
	if cfg.Policy.Reevaluate() {
		closed = r.gw.Reevaluate()
	}
	r.cfg.Store(cfg)
	r.loadedAt.Store(time.Now().UnixNano())
	r.log.Info().Str("event", "reload").Str("trigger", trigger).Bool("ok", true).Str("policy_hash", cfg.Hash).
		Int("rules", cfg.Policy.Len()).Int("lists", len(cfg.Lists)).Bool("monitor", cfg.Policy.Monitor()).
		Bool("reevaluate", cfg.Policy.Reevaluate()).Int("closed", closed).Msg("policy reloaded")
	return nil
}

// logLists logs what each list of a loaded configuration holds.
func logLists(log zerolog.Logger, lists []*policy.List) {
	for _, l := range lists {
		log.Info().Str("event", "list").Str("name", l.Name).Str("file", l.File).Int("addresses", l.Addrs).
			Int("domains", l.Domains).Int("skipped", l.Skipped).Msg("list loaded")
	}
}

// needsRestart names the sections that differ between two configurations
// and are only read at start.
func needsRestart(old, cur *policy.Config) []string {
	var out []string
	for _, s := range []struct {
		name     string
		old, cur any
	}{
		{"tun", old.Tun, cur.Tun}, {"routing", old.Routing, cur.Routing}, {"egress", old.Egress, cur.Egress},
		{"limits", old.Limits, cur.Limits}, {"log", old.Log, cur.Log}, {"dns", old.DNS, cur.DNS},
		{"control", old.Control, cur.Control},
	} {
		if !reflect.DeepEqual(s.old, s.cur) {
			out = append(out, s.name)
		}
	}
	return out
}

// runStatus is the file a running tunwall keeps under tun.StateDir so
// that reload and the live commands can find it and its control socket.
type runStatus struct {
	path string
	rec  statusRecord
}

type statusRecord struct {
	PID    int    `json:"pid"`
	Start  uint64 `json:"start"` // process start time, to tell a reused pid
	Config string `json:"config"`
	Tun    string `json:"tun"`
	Socket string `json:"socket"` // the control API's
}

// netnsID names this network namespace (its inode) in status file names;
// each namespace has its own tunwalls.
func netnsID() string {
	fi, err := os.Stat("/proc/self/ns/net")
	if err != nil {
		return "0"
	}
	return strconv.FormatUint(inode(fi), 10)
}

func newRunStatus(cfg *policy.Config, path string) *runStatus {
	abs := path
	if path != "" {
		abs, _ = filepath.Abs(path)
	}
	pid := os.Getpid()
	st := &runStatus{
		path: filepath.Join(tun.StateDir, fmt.Sprintf("run-%s-%s.json", netnsID(), cfg.Tun.Name)),
		rec:  statusRecord{PID: pid, Start: tun.ProcessStart(pid), Config: abs, Tun: cfg.Tun.Name, Socket: socketPath(cfg)},
	}
	sweepStatus()
	st.write()
	return st
}

// sweepStatus removes the status files and control sockets of tunwalls
// that are gone without removing theirs (killed): their process no longer
// runs, nothing listens on the socket.
func sweepStatus() {
	files, _ := filepath.Glob(filepath.Join(tun.StateDir, "run-*.json"))
	for _, f := range files {
		if r, err := readStatus(f); err == nil && tun.ProcessStart(r.PID) != r.Start {
			os.Remove(f)
		}
	}
	socks, _ := filepath.Glob(filepath.Join(tun.StateDir, "control-*.sock"))
	for _, s := range socks {
		c, err := net.DialTimeout("unix", s, 200*time.Millisecond)
		if err == nil {
			c.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			os.Remove(s)
		}
	}
}

// write replaces the file atomically; a failure only costs the commands
// given no --socket their way to this tunwall, so it is not fatal.
func (s *runStatus) write() {
	b, _ := json.Marshal(s.rec)
	if os.MkdirAll(filepath.Dir(s.path), 0o700) != nil {
		return
	}
	tmp := s.path + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, s.path)
	}
}

func (s *runStatus) remove() { os.Remove(s.path) }

func readStatus(path string) (statusRecord, error) {
	var rec statusRecord
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	return rec, err
}

// errNotRunning: no status file names a running tunwall.
var errNotRunning = errors.New("no tunwall running")

// running returns the records of the tunwalls running in this network
// namespace according to their status files in dir; with config (an
// absolute path), only those started with that file.
func running(dir, config string) []statusRecord {
	files, _ := filepath.Glob(filepath.Join(dir, "run-"+netnsID()+"-*.json"))
	var found []statusRecord
	for _, f := range files {
		r, err := readStatus(f)
		if err != nil || r.Start == 0 || tun.ProcessStart(r.PID) != r.Start || r.Socket == "" || config != "" && r.Config != config {
			continue
		}
		found = append(found, r)
	}
	return found
}

// findRunning names, for command name, the one tunwall running in this
// network namespace (the one started with the file at path, if given)
// according to the status files in dir.
func findRunning(dir, name, path string) (statusRecord, error) {
	abs := path
	if path != "" {
		abs, _ = filepath.Abs(path)
	}
	found := running(dir, abs)
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		return statusRecord{}, usageError{fmt.Errorf("%s: %d tunwalls run in this network namespace; name one with -c FILE or --socket PATH", name, len(found))}
	case path != "":
		return statusRecord{}, fmt.Errorf("%s: %w with %s in this network namespace", name, errNotRunning, path)
	}
	return statusRecord{}, fmt.Errorf("%s: %w in this network namespace", name, errNotRunning)
}

// cmdReload asks the tunwall running in this network namespace (the one
// started with -c FILE, if given) to load its configuration again, and
// reports how that went: exit 0 when the new policy is in force, 2 when
// the file has errors (the old policy stays), 1 when no tunwall answers.
func cmdReload(args []string, stdout io.Writer) error {
	var socket string
	path, rest, err := flags("reload", args, false, stringFlag{"socket", &socket})
	if err != nil {
		return err
	}
	if err := noArgs("reload", rest); err != nil {
		return err
	}
	pid := 0
	if socket == "" {
		// Found through the status files rather than the config file, so
		// that a file that no longer parses still names its tunwall.
		r, err := findRunning(tun.StateDir, "reload", path)
		if err != nil {
			return err
		}
		socket, pid = r.Socket, r.PID
	}
	var info control.PolicyInfo
	err = control.NewClient(socket).Do(http.MethodPost, "/v1/reload", &info)
	var apiErr *control.APIError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusUnprocessableEntity {
		return usageError{fmt.Errorf("reload: the file has errors; tunwall keeps its running policy:\n%s", apiErr.Msg)}
	}
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	who := "tunwall"
	if pid != 0 {
		who = fmt.Sprintf("tunwall (pid %d)", pid)
	}
	fmt.Fprintf(stdout, "reloaded: %s runs policy %s from %s\n", who, info.Hash, info.Source)
	return nil
}
