package main

import (
	"context"
	"errors"
	"fmt"
	"net"
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

// controlListeners are where the control API answers: its unix socket and
// the optional loopback TCP listener.
type controlListeners struct {
	socket    string
	unix      net.Listener
	tcp       net.Listener // nil without control.listen
	token     string
	hosts     []string
	dashboard string // the dashboard's URL with its token, "" without tcp
}

// openControl opens the control socket and, with control.listen, the TCP
// listener, whose token comes from control.token_file or is made now.
func openControl(cfg *policy.Config) (*controlListeners, error) {
	c := &controlListeners{socket: socketPath(cfg)}
	var err error
	if c.unix, err = control.Listen(c.socket, cfg.Control.GID); err != nil {
		return nil, err
	}
	if !cfg.Control.Listen.IsValid() {
		return c, nil
	}
	if c.tcp, err = net.Listen("tcp", cfg.Control.Listen.String()); err != nil {
		c.unix.Close()
		return nil, fmt.Errorf("control.listen: %w", err)
	}
	c.token, c.hosts = cfg.Control.Token, cfg.Control.Hosts
	if c.token == "" {
		c.token = control.NewToken()
	}
	c.dashboard = "http://" + c.tcp.Addr().String() + "/#token=" + c.token
	return c, nil
}

// serve answers on every listener until ctx ends; the TCP listener's
// requests pass control.Guard first.
func (c *controlListeners) serve(ctx context.Context, b control.Backend) error {
	h := control.Handler(b)
	errs := make(chan error, 2)
	go func() { errs <- control.Serve(ctx, c.unix, h) }()
	n := 1
	if c.tcp != nil {
		n++
		go func() { errs <- control.Serve(ctx, c.tcp, control.Guard(h, c.token, c.hosts)) }()
	}
	var err error
	for range n {
		err = errors.Join(err, <-errs)
	}
	return err
}

// api is the running gateway as the control API sees it.
type api struct {
	gw        *netstack.Gateway
	rl        *reloader
	ctx       context.Context
	dashboard string
}

func (a *api) Dashboard() string { return a.dashboard }

func (a *api) CaptureConfig() policy.CaptureConfig { return a.rl.cfg.Load().Capture }

func (a *api) Capture(id uint64, snaplen int) (control.PacketSource, error) {
	if id == 0 {
		return a.gw.CaptureDenied(snaplen), nil
	}
	c, err := a.gw.CaptureFlow(id, snaplen)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (a *api) Flows() []netstack.FlowInfo    { return a.gw.Flows() }
func (a *api) CloseFlow(id uint64) bool      { return a.gw.CloseFlow(id) }
func (a *api) Denied() []netstack.DeniedInfo { return a.gw.Denied() }
func (a *api) Reload() error                 { return a.rl.request(a.ctx) }
func (a *api) Metrics() netstack.Metrics     { return a.gw.Metrics() }

func (a *api) Stats() map[string]uint64 {
	st := a.gw.Stats()
	m := a.gw.Metrics()
	var allowed, refused uint64
	for _, byAction := range m.Judged {
		for i, n := range byAction {
			if netstack.Actions[i] == policy.Allow {
				allowed += n
			} else {
				refused += n
			}
		}
	}
	return map[string]uint64{
		"flows_active":         uint64(a.gw.ActiveFlows()),
		"flows_allowed":        allowed,
		"flows_refused":        refused,
		"bytes_out":            m.Bytes.Out,
		"bytes_in":             m.Bytes.In,
		"pending_tcp":          uint64(m.Pending),
		"udp_sessions":         uint64(m.UDP),
		"packets_in":           st.PacketsIn.Load(),
		"packets_out":          st.PacketsOut.Load(),
		"malformed":            st.Malformed(),
		"stray_tcp":            st.StrayTCP.Load(),
		"not_unicast":          st.NotUnicast.Load(),
		"mss_clamped":          st.MSSClamped.Load(),
		"ipv6_fragmented":      st.Fragmented.Load(),
		"sockets_reused":       st.SocketsReused.Load(),
		"refused_max_flows":    st.RefusedFlows.Load(),
		"refused_pending_tcp":  st.RefusedPendingTCP.Load(),
		"refused_per_source":   st.RefusedPerSource.Load(),
		"refused_udp_sessions": st.RefusedUDPSessions.Load(),
		"blocked_names":        st.BlockedNames.Load(),
		"dial_errors":          st.DialErrors.Load(),
		"failed_syn_retries":   st.FailedSYNs.Load(),
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
