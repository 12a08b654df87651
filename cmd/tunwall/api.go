package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/tunwall/tunwall/internal/control"
	"github.com/tunwall/tunwall/netstack"
	"github.com/tunwall/tunwall/policy"
	"github.com/tunwall/tunwall/tun"
)

// socketPath is where the control API listens: control.socket, or a path
// under tun.StateDir named for this network namespace and TUN device.
func socketPath(cfg *policy.Config) string {
	if cfg.Control.Socket != "" {
		return cfg.Control.Socket
	}
	return filepath.Join(tun.StateDir, fmt.Sprintf("control-%s-%s.sock", netnsID(), cfg.Tun.Name))
}

// api is the running gateway as the control API sees it.
type api struct {
	gw  *netstack.Gateway
	rl  *reloader
	ctx context.Context
}

func (a *api) Flows() []netstack.FlowInfo    { return a.gw.Flows() }
func (a *api) CloseFlow(id uint64) bool      { return a.gw.CloseFlow(id) }
func (a *api) Denied() []netstack.DeniedInfo { return a.gw.Denied() }
func (a *api) Reload() error                 { return a.rl.request(a.ctx) }
func (a *api) Metrics() netstack.Metrics     { return a.gw.Metrics() }

func (a *api) Stats() map[string]uint64 {
	st := a.gw.Stats()
	return map[string]uint64{
		"flows_active":         uint64(a.gw.ActiveFlows()),
		"packets_in":           st.PacketsIn.Load(),
		"packets_out":          st.PacketsOut.Load(),
		"malformed":            st.Malformed(),
		"stray_tcp":            st.StrayTCP.Load(),
		"refused_max_flows":    st.RefusedFlows.Load(),
		"refused_pending_tcp":  st.RefusedPendingTCP.Load(),
		"refused_udp_sessions": st.RefusedUDPSessions.Load(),
		"blocked_names":        st.BlockedNames.Load(),
		"dial_errors":          st.DialErrors.Load(),
		"owners_found":         st.OwnerLookups.Load(),
		"owners_missed":        st.OwnerMisses.Load(),
		"reloads_failed":       uint64(a.rl.failed.Load()),
	}
}

func (a *api) Policy() control.PolicyInfo {
	cfg := a.rl.cfg.Load()
	p, hits, byDef := a.gw.RuleHits()
	info := control.PolicyInfo{
		Hash: cfg.Hash, Source: cfg.Source, Mode: "enforce", Default: p.Default().String(), DefaultHits: byDef,
		LoadedAt:      time.Unix(0, a.rl.loadedAt.Load()).UTC().Format(time.RFC3339Nano),
		ReloadsFailed: int(a.rl.failed.Load()),
	}
	if p.Monitor() {
		info.Mode = "monitor"
	}
	for i, r := range p.Rules() {
		info.Rules = append(info.Rules, control.Rule{Name: r.Name, Action: r.Action.String(), Line: r.Line, Hits: hits[i]})
	}
	return info
}
