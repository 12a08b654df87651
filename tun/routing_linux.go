package tun

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/tunwall/tunwall/policy"
)

// Routing is tunwall's routing setup in the current network namespace:
// rules and routes that send traffic into the TUN, the strict backstop,
// and the forwarding settings of a LAN gateway. Every change is written to
// a state record first, so a crash leaves nothing that "tunwall down"
// cannot find. Its methods may be called from any goroutine: the device's
// watcher attaches routes again while the rest of tunwall reads what is
// installed.
type Routing struct {
	plan Plan
	dir  string

	mu    sync.Mutex
	state *State
}

// Install sets up routing for cfg before the TUN exists: it refuses a
// table or mark someone else uses, takes over what a crashed tunwall left
// behind, then installs the backstop, the rules and the settings. The TUN
// routes follow with Attach once the device is up. An empty plan (mode
// none, no from) installs nothing and records nothing.
func Install(cfg policy.RoutingConfig, tunName string, mark uint32) (*Routing, error) {
	return install(StateDir, NewPlan(cfg, tunName, mark), tunName, mark)
}

func install(dir string, plan Plan, tunName string, mark uint32) (*Routing, error) {
	rt := &Routing{plan: plan, dir: dir}
	if len(plan.Rules) == 0 {
		return rt, nil
	}
	ns, err := currentNetns()
	if err != nil {
		return nil, err
	}
	if err := checkInterfaces(plan.Sysctls); err != nil {
		return nil, err
	}
	old, err := previous(dir, ns, plan.Table)
	if err != nil {
		return nil, err
	}
	if err := checkConflicts(plan.Table, mark); err != nil {
		return nil, err
	}
	self, start := os.Getpid(), ProcessStart(os.Getpid())
	rt.state = &State{Netns: ns, PID: self, Start: start, Table: plan.Table, Tun: tunName,
		Rules: union(plan.Rules, old.Rules, containsRule), Routes: union(plan.Backstop, old.Routes, slices.Contains),
		Sysctls: carryOld(plan.Sysctls, old.Sysctls)}
	if err := rt.state.save(dir); err != nil {
		return nil, err
	}
	if err := rt.apply(old); err != nil {
		return nil, errors.Join(err, rt.Remove(false))
	}
	return rt, nil
}

// apply installs the plan, then removes what an earlier run left that the
// plan does not keep. New first, old second: a restart over a strict
// setup never opens a gap.
func (rt *Routing) apply(old *State) error {
	for _, r := range rt.plan.Backstop {
		if err := addRoute(r); err != nil {
			return err
		}
	}
	for _, r := range rt.plan.Rules {
		if err := addRule(r); err != nil {
			return err
		}
	}
	var err error
	if rt.state.Sysctls, err = applySysctls(rt.state.Sysctls); err != nil {
		return err
	}
	for _, r := range old.Rules {
		if !containsRule(rt.plan.Rules, r) {
			delRule(r)
		}
	}
	for _, r := range old.Routes {
		if !slices.Contains(rt.plan.Backstop, r) {
			delRoute(r)
		}
	}
	restoreSysctls(droppedSysctls(old.Sysctls, rt.state.Sysctls))
	rt.state.Rules = rt.plan.Rules
	rt.state.Routes = slices.Clone(rt.plan.Backstop)
	return rt.state.save(rt.dir)
}

// Attach routes the plan's destinations into dev, now that it exists. A
// destination the device cannot take (IPv6 disabled on it, say) is made
// unreachable instead: never left to leak around the TUN.
func (rt *Routing) Attach(dev *Device) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.state == nil {
		return nil
	}
	var routes []Route
	for _, to := range rt.plan.Through {
		routes = append(routes, Route{To: to, Dev: dev.Name(), Table: rt.plan.Table})
	}
	rt.state.Routes = union(rt.state.Routes, routes, slices.Contains)
	if err := rt.state.save(rt.dir); err != nil {
		return err
	}
	for _, r := range routes {
		if err := addRoute(r); err != nil {
			blocked := Route{To: r.To, Metric: 1, Table: r.Table}
			rt.state.Routes = union(rt.state.Routes, []Route{blocked}, slices.Contains)
			if err2 := errors.Join(rt.state.save(rt.dir), addRoute(blocked)); err2 != nil {
				return errors.Join(err, err2)
			}
		}
	}
	if _, err := applySysctls(rt.plan.TunSysctls); err != nil {
		return err
	}
	return nil
}

// Remove takes away everything Install and Attach added. With keep (and a
// strict plan) the backstop and the rules that lead to it stay, recorded
// for "tunwall down"; settings are restored either way.
func (rt *Routing) Remove(keep bool) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.state == nil {
		return nil
	}
	s := rt.state
	errs := restoreSysctls(s.Sysctls)
	s.Sysctls = nil
	if keep && len(rt.plan.Backstop) > 0 {
		for _, r := range s.Routes {
			if !slices.Contains(rt.plan.Backstop, r) {
				errs = errors.Join(errs, delRoute(r))
			}
		}
		s.Routes, s.PID, s.Start, s.Kept = slices.Clone(rt.plan.Backstop), 0, 0, true
		return errors.Join(errs, s.save(rt.dir))
	}
	errs = errors.Join(errs, removeAll(s))
	if errs != nil {
		return errs // the record stays, so "tunwall down" can finish the job
	}
	rt.state = nil
	return s.remove(rt.dir)
}

// Kept reports whether Remove left the backstop in place (keep_blocked).
func (rt *Routing) Kept() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.state != nil && rt.state.Kept
}

// Installed describes what is in place, one item per line, for the log.
func (rt *Routing) Installed() []string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.state == nil {
		return nil
	}
	return rt.state.items()
}

// removeAll deletes a state's rules and routes and restores its settings.
// Missing items are fine: they may never have been installed.
func removeAll(s *State) error {
	var errs error
	for _, r := range s.Rules {
		errs = errors.Join(errs, delRule(r))
	}
	for _, r := range s.Routes {
		errs = errors.Join(errs, delRoute(r))
	}
	return errors.Join(errs, restoreSysctls(s.Sysctls))
}

// previous returns the record an earlier run left for table (an empty one
// if there is none), refusing if that run is still alive.
func previous(dir string, ns Netns, table int) (*State, error) {
	states, err := loadStates(dir, ns, table)
	if err != nil || len(states) == 0 {
		return &State{}, err
	}
	s := states[0]
	if s.PID != os.Getpid() && s.running() {
		return nil, fmt.Errorf("routing table %d: tunwall (pid %d) is already running with it", table, s.PID)
	}
	return s, nil
}

// Down removes what tunwall installed in this namespace: from the state
// records (all of them, or table's), then any rule or route still tagged
// with tunwall's protocol. It refuses while the tunwall that owns a
// record is running. It returns what it removed.
func Down(table int) ([]string, error) {
	return down(StateDir, table)
}

func down(dir string, table int) ([]string, error) {
	ns, err := currentNetns()
	if err != nil {
		return nil, err
	}
	states, err := loadStates(dir, ns, table)
	if err != nil {
		return nil, err
	}
	var done []string
	var errs error
	for _, s := range states {
		if s.running() {
			errs = errors.Join(errs, fmt.Errorf("routing table %d: tunwall (pid %d) is running; stop it first (SIGTERM)", s.Table, s.PID))
			continue
		}
		if err := removeAll(s); err != nil {
			errs = errors.Join(errs, err)
			continue
		}
		done = append(done, s.items()...) // routes into a vanished TUN went with it
		errs = errors.Join(errs, s.remove(dir))
	}
	if errs != nil {
		return done, errs
	}
	swept, err := sweep(table)
	return append(done, swept...), err
}
