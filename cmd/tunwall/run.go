package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	if err == nil {
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
	rl := newReloader(path, cfg, gw, zl)
	ctl, err := openControl(cfg)
	if err != nil {
		err = errors.Join(err, shutdown())
		zl.Error().Str("event", "stop").Err(err).Msg("stopped")
		return err
	}
	ready := zl.Info().Str("event", "ready").Str("tun", dev.Name()).Int("mtu", dev.MTU()).
		Bool("tso", dev.CanOffloadTCP()).Int("batch", dev.BatchSize()).Bool("app_identity", owners != nil).
		Strs("routing", rt.Installed()).Str("control", ctl.socket)
	if ctl.tcp != nil {
		ready = ready.Str("control_listen", ctl.tcp.Addr().String())
	}
	ready.Msg("ready")
	notify(zl, sdnotify.Ready)
	if onTerminal(stderr) {
		printSummary(stderr, setup{cfg: cfg, device: dev.Name(), mtu: dev.MTU(), routing: rt.Installed(),
			appIdentity: owners != nil, socket: ctl.socket, dashboard: ctl.dashboard})
	}

	reloadDone, apiDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(reloadDone)
		rl.run(ctx, hup)
	}()
	go func() {
		defer close(apiDone)
		if err := ctl.serve(ctx, &api{gw: gw, rl: rl, ctx: ctx, dashboard: ctl.dashboard}); err != nil {
			zl.Error().Err(err).Msg("control API stopped")
		}
	}()

	<-ctx.Done()
	<-reloadDone
	<-apiDone
	zl.Info().Str("event", "stopping").Int("flows", gw.ActiveFlows()).Msg("signal received, stopping")
	notify(zl, sdnotify.Stopping)
	if os.Getenv("TUNWALL_DUMP_STATS") != "" {
		gw.DumpStackStats(stderr)
	}
	err = shutdown()
	st := gw.Stats()
	zl.Info().Str("event", "stop").Str("tun", cfg.Tun.Name).Str("mode", cfg.Routing.Mode).
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
