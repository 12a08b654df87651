package tun

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// StateDir is where tunwall keeps its routing state records. It is on a
// tmpfs, as are the routes and rules it describes: both are gone after a
// reboot.
const StateDir = "/run/tunwall"

// State records what one tunwall routing setup installed in one network
// namespace, so that "tunwall down" (or the next start) can remove it
// after a crash. It is written before anything is installed and rewritten
// as the setup changes.
type State struct {
	Netns   Netns    `json:"netns"`
	PID     int      `json:"pid,omitempty"` // 0 once the process has stopped
	Start   uint64   `json:"start,omitempty"`
	Table   int      `json:"table"`
	Tun     string   `json:"tun"`
	Rules   []Rule   `json:"rules"`
	Routes  []Route  `json:"routes"`
	Sysctls []Sysctl `json:"sysctls,omitempty"`
	// Kept says the backstop was left in place on purpose (keep_blocked).
	Kept bool `json:"kept,omitempty"`
}

// Netns identifies a network namespace: its inode names the state file,
// and its cookie (never reused) tells a live namespace from a dead one
// whose inode number came back.
type Netns struct {
	Inode  uint64 `json:"inode"`
	Cookie uint64 `json:"cookie,omitempty"`
}

// statePath is the record of table in the namespace ns.
func statePath(dir string, ns Netns, table int) string {
	return filepath.Join(dir, fmt.Sprintf("routing-%d-%d.json", ns.Inode, table))
}

// save writes s atomically (a reader sees the old or the new record).
func (s *State) save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	path := statePath(dir, s.Netns, s.Table)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

func (s *State) remove(dir string) error {
	err := os.Remove(statePath(dir, s.Netns, s.Table))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// loadStates reads the records of namespace ns (all tables when table is
// 0). Records of a dead namespace that shared ns's inode number are
// deleted and skipped; an unreadable record is an error, never ignored.
func loadStates(dir string, ns Netns, table int) ([]*State, error) {
	pattern := fmt.Sprintf("routing-%d-*.json", ns.Inode)
	if table != 0 {
		pattern = filepath.Base(statePath(dir, ns, table))
	}
	paths, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		return nil, err
	}
	slices.Sort(paths)
	var out []*State
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		s := new(State)
		if err := json.Unmarshal(b, s); err != nil {
			return nil, fmt.Errorf("state %s is damaged (%v); remove it after checking `ip rule` and `ip route show table all`", path, err)
		}
		if s.Netns.Cookie != 0 && ns.Cookie != 0 && s.Netns.Cookie != ns.Cookie {
			os.Remove(path) // a namespace that no longer exists
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// union merges b into a, keeping a's order and dropping what contains
// finds already there.
func union[T any](a, b []T, contains func([]T, T) bool) []T {
	out := slices.Clone(a)
	for _, x := range b {
		if !contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func containsRule(rules []Rule, r Rule) bool {
	// By their text: UIDs is a pointer, so == would compare addresses.
	return slices.ContainsFunc(rules, func(x Rule) bool { return x.String() == r.String() })
}

// items lists what a state holds, one line each.
func (s *State) items() []string {
	var out []string
	for _, r := range s.Rules {
		out = append(out, "rule "+r.String())
	}
	for _, r := range s.Routes {
		out = append(out, "route "+r.String())
	}
	for _, c := range s.Sysctls {
		out = append(out, fmt.Sprintf("sysctl %s=%s (restored to %s)", c.Path, c.Value, c.Old))
	}
	return out
}

// ProcessStart is a process's start time in clock ticks since boot (0 if
// it does not exist): with the pid it names one process, never a later
// one that reused the pid.
func ProcessStart(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0
	}
	n, _ := strconv.ParseUint(f[19], 10, 64) // field 22, starttime
	return n
}
