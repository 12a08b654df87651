package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/tunwall/tunwall/internal/flowlog"
	"github.com/tunwall/tunwall/internal/owner"
	"github.com/tunwall/tunwall/internal/sdnotify"
	"github.com/tunwall/tunwall/netstack"
	"github.com/tunwall/tunwall/tun"
)

// Deny/reject lines allowed per second before they are summarised.
const (
	logBurst  = 100
	logWindow = time.Second
)

// cmdRun runs the gateway until SIGINT or SIGTERM, then shuts down in
// order: flows and stack, then the device (which takes its addresses and
// routes with it), then tunwall's rules and backstop (kept with
// --keep-blocked), then the log.
func cmdRun(args []string, stderr io.Writer) error {
	var keep bool
	path, rest, err := flags("run", args, false, boolFlag{"keep-blocked", &keep})
	if err != nil {
		return err
	}
	if err := noArgs("run", rest); err != nil {
		return err
	}
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	// SIGHUP reloads; caught from the start so that an early one does not
	// end the process (it is handled once the gateway is ready).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	keep = keep || cfg.Routing.KeepBlocked
	zl, logFile, err := flowlog.Open(cfg.Log)
	if err != nil {
		return err
	}
	defer logFile.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if path := os.Getenv("TUNWALL_CPUPROFILE"); path != "" { // diagnostics
		stopProfile, err := startCPUProfile(path)
		if err != nil {
			return err
		}
		defer stopProfile()
	}

	procs := spareProc()
	zl.Info().Str("event", "start").Str("config", cfg.Source).Str("policy_hash", cfg.Hash).
		Str("tun", cfg.Tun.Name).Str("mode", cfg.Routing.Mode).Int("rules", cfg.Policy.Len()).Bool("monitor", cfg.Policy.Monitor()).
		Int("procs", procs).Str("version", versionString()).Msg("starting")
	logLists(zl, cfg.Lists)
	if cfg.Policy.NeedsDomain() {
		zl.Info().Msg("rules with domains or domain lists match by the name from TLS SNI, HTTP Host or DNS")
	}
	// App identity needs the set of local addresses, followed from now on
	// (the TUN's own address included once it exists).
	var owners netstack.Owners
	locals, err := owner.WatchLocals()
	switch {
	case err == nil:
		defer locals.Close()
		owners = hostOwners{locals: locals, finder: owner.NewFinder()}
	case cfg.Policy.NeedsOwner():
		err = fmt.Errorf("rules with users or apps need app identity, which is unavailable: %w", err)
		zl.Error().Str("event", "stop").Err(err).Msg("stopped")
		return err
	default:
		zl.Warn().Err(err).Msg("app identity unavailable: flows will carry no uid, user, pid or exe")
	}
	// Routing first: a strict backstop must exist before the TUN does.
	rt, err := tun.Install(cfg.Routing, cfg.Tun.Name, cfg.Egress.Mark)
	if err != nil {
		zl.Error().Str("event", "stop").Err(err).Msg("stopped")
		return err
	}
	dev, err := tun.Open(cfg.Tun)
	var watch *tun.Watcher
	if err == nil {
		// Followed from now on, so that no change to the device goes
		// unnoticed: what happens before the watch runs waits for it.
		var werr error
		if watch, werr = dev.Watch(); werr != nil {
			zl.Warn().Err(werr).Msg("device changes not followed: a device set down or deleted goes unnoticed")
		} else {
			defer watch.Close()
		}
		if err = rt.Attach(dev); err != nil {
			err = errors.Join(err, dev.Close())
		}
	}
	if err != nil {
		err = errors.Join(err, rt.Remove(keep))
		zl.Error().Str("event", "stop").Err(err).Msg("stopped")
		return err
	}
	if locals != nil {
		// The TUN's own address (the source of local flows in route-all)
		// counts from the first flow, not from its netlink notification.
		if err := locals.Refresh(); err != nil {
			zl.Warn().Err(err).Msg("local addresses not read again after the device came up")
		}
	}
	flows := flowlog.NewLog(zl.With().Str("component", "flow").Logger(), logBurst, logWindow)
	gw, err := netstack.New(netstack.Config{
		Device:    dev,
		MTU:       cfg.Tun.MTU,
		Policy:    cfg.Policy,
		Limits:    cfg.Limits,
		Events:    flows,
		Owners:    owners,
		DNS:       cfg.DNS,
		Log:       zl,
		Mark:      cfg.Egress.Mark,
		Interface: cfg.Egress.Interface,
		PathMTU:   dev.PathMTU,
	})
	if err != nil {
		err = errors.Join(err, dev.Close(), rt.Remove(keep))
		flows.Close()
		zl.Error().Str("event", "stop").Err(err).Msg("stopped")
		return err
	}
	// shutdown ends the flows, then the device, then tunwall's routing.
	shutdown := func() error {
		gw.Close()
		err := dev.Close()
		gw.Wait()
		err = errors.Join(err, rt.Remove(keep))
		flows.Close()
		return err
	}
	status := newRunStatus(cfg, path)
	defer status.remove()
	rl := newReloader(path, cfg, gw, zl, logFile)
	ctl, err := openControl(cfg)
	if err != nil {
		err = errors.Join(err, shutdown())
		zl.Error().Str("event", "stop").Err(err).Msg("stopped")
		return err
	}
	// The run ends at a signal, or when the device is deleted. All that
	// runs is started before readiness is reported.
	runCtx, endRun := context.WithCancel(ctx)
	defer endRun()
	var devErr error
	reloadDone, apiDone, watchDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watchDone)
		if watch == nil {
			return
		}
		err := watch.Run(runCtx, func(ev tun.LinkEvent) { linkChanged(zl, dev, rt, ev) })
		switch {
		case errors.Is(err, tun.ErrDeleted):
			devErr = fmt.Errorf("tun %s was deleted", dev.Name())
			endRun()
		case err != nil:
			zl.Warn().Err(err).Msg("device changes not followed: a device set down or deleted goes unnoticed")
		}
	}()
	go func() {
		defer close(reloadDone)
		rl.run(runCtx, hup)
	}()
	go func() {
		defer close(apiDone)
		if err := ctl.serve(runCtx, &api{gw: gw, rl: rl, ctx: runCtx, dashboard: ctl.dashboard}); err != nil {
			zl.Error().Err(err).Msg("control API stopped")
		}
	}()

	ready := zl.Info().Str("event", "ready").Str("tun", dev.Name()).Int("mtu", dev.MTU()).Int("queue_length", cfg.Tun.QueueLength).
		Bool("tso", dev.CanOffloadTCP()).Int("batch", dev.BatchSize()).Bool("app_identity", owners != nil).
		Strs("routing", rt.Installed()).Str("control", ctl.socket).Int64("buffer_memory", gw.BufferMemory())
	if ctl.tcp != nil {
		ready = ready.Str("control_listen", ctl.tcp.Addr().String())
	}
	ready.Msg("ready")
	if name := cfg.Egress.Interface; name != "" {
		// Not a config error: the interface (a VPN's, say) may come later.
		if _, err := net.InterfaceByName(name); err != nil {
			zl.Warn().Str("event", "egress").Str("interface", name).
				Msg("egress.interface does not exist (yet): every upstream dial fails until it does")
		}
	}
	notify(zl, sdnotify.Ready)
	if onTerminal(stderr) {
		printSummary(stderr, setup{cfg: cfg, device: dev.Name(), mtu: dev.MTU(), routing: rt.Installed(),
			appIdentity: owners != nil, socket: ctl.socket, dashboard: ctl.dashboard})
	}

	<-runCtx.Done()
	<-reloadDone
	<-apiDone
	endRun()
	<-watchDone
	reason := "signal received, stopping"
	if devErr != nil {
		// Like a crash: a strict backstop stays, so nothing leaks until
		// tunwall runs again (or "tunwall down").
		keep = true
		reason = "device deleted, stopping"
	}
	zl.Info().Str("event", "stopping").Int("flows", gw.ActiveFlows()).Msg(reason)
	notify(zl, sdnotify.Stopping)
	if os.Getenv("TUNWALL_DUMP_STATS") != "" {
		gw.DumpStackStats(stderr)
	}
	err = errors.Join(devErr, shutdown())
	st := gw.Stats()
	stopped := zl.Info()
	if err != nil {
		stopped = zl.Error().Err(err)
	}
	stopped.Str("event", "stop").Str("tun", cfg.Tun.Name).Str("mode", cfg.Routing.Mode).
		Uint64("packets_in", st.PacketsIn.Load()).Uint64("packets_out", st.PacketsOut.Load()).
		Uint64("malformed", st.Malformed()).Uint64("read_errors", st.ReadErrors.Load()).Uint64("write_errors", st.WriteErrors.Load()).
		Uint64("owners_found", st.OwnerLookups.Load()).Uint64("owners_missed", st.OwnerMisses.Load()).Uint64("owners_skipped", st.OwnerSkipped.Load()).
		Bool("kept_blocked", rt.Kept()).Msg("stopped")
	return err
}

// notify tells a service manager (systemd, Type=notify) the state; failing
// to is worth a warning, not a stop.
func notify(zl zerolog.Logger, state string) {
	if _, err := sdnotify.Send(state); err != nil {
		zl.Warn().Err(err).Str("state", state).Msg("service manager not notified")
	}
}

// linkChanged reports a change of the device's link. Set up again after
// being down, the device gets back its addresses and the routes into it,
// which the kernel dropped.
func linkChanged(zl zerolog.Logger, dev *tun.Device, rt *tun.Routing, ev tun.LinkEvent) {
	e := func(level zerolog.Level) *zerolog.Event {
		return zl.WithLevel(level).Str("event", "device").Str("tun", dev.Name()).Str("state", ev.String())
	}
	switch ev {
	case tun.LinkDown:
		e(zerolog.WarnLevel).Msg("device set down: nothing passes, and the kernel dropped the routes through it")
	case tun.LinkUp, tun.LinkResumed:
		// Down took the device's routes and IPv6 addresses away (after lost
		// notifications, it may have been down meanwhile): put back what
		// is missing.
		level, done, failed := zerolog.InfoLevel, "device up again: its addresses and tunwall's routes restored",
			"device up again, but its addresses or routes could not be restored"
		if ev == tun.LinkResumed {
			level, done, failed = zerolog.WarnLevel, "device notifications were lost; followed again, its addresses and tunwall's routes checked",
				"device followed again after lost notifications, but its addresses or routes could not be restored"
		}
		if err := errors.Join(dev.Reconfigure(), rt.Attach(dev)); err != nil {
			e(zerolog.ErrorLevel).Err(err).Msg(failed)
			return
		}
		e(level).Msg(done)
	case tun.LinkDeleted:
		e(zerolog.ErrorLevel).Msg("device deleted")
	}
}
