package flowlog

import (
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/tunwall/tunwall/netstack"
	"github.com/tunwall/tunwall/policy"
)

// Log is the flow log. It implements netstack.Events.
type Log struct {
	zl     zerolog.Logger
	window time.Duration
	burst  int

	mu         sync.Mutex // guards the following fields
	inWindow   int        // rate-limited lines written in this window
	suppressed int        // rate-limited lines held back in this window

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

var _ netstack.Events = (*Log)(nil)

// NewLog starts a flow log on zl that lets at most burst deny, reject and
// refused lines through per window, and reports the rest as "suppressed".
func NewLog(zl zerolog.Logger, burst int, window time.Duration) *Log {
	l := &Log{zl: zl, window: window, burst: burst, stop: make(chan struct{}), done: make(chan struct{})}
	go every(l.window, l.stop, l.done, l.flush)
	return l
}

// Close stops the window timer and reports anything still suppressed.
func (l *Log) Close() {
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		l.flush()
	})
}

// every calls f each interval until stop is closed, then closes done.
func every(interval time.Duration, stop <-chan struct{}, done chan<- struct{}, f func()) {
	defer close(done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			f()
		}
	}
}

// flush ends the window: it writes the suppressed summary, if any.
func (l *Log) flush() {
	l.mu.Lock()
	n := l.suppressed
	l.inWindow, l.suppressed = 0, 0
	l.mu.Unlock()
	if n > 0 {
		l.zl.Warn().Str("event", "suppressed").Int("count", n).Int64("window_ms", l.window.Milliseconds()).
			Msg("deny/reject log lines rate-limited")
	}
}

// allow reports whether a rate-limited line may be written now.
func (l *Log) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inWindow < l.burst {
		l.inWindow++
		return true
	}
	l.suppressed++
	return false
}

// Verdict implements netstack.Events. Allowed flows log at debug (info
// when their rule says log: true); denied and rejected ones at info,
// rate-limited. In monitor mode every verdict is logged at info (deny and
// reject still rate-limited) with enforced: false.
func (l *Log) Verdict(id uint64, f policy.Flow, v policy.Verdict) {
	e := l.verdictEvent(v)
	if e == nil {
		return
	}
	e = flowFields(e.Str("event", "verdict"), id, f).Str("action", v.Action.String()).Str("rule", v.Rule)
	if v.Monitor {
		e = e.Bool("enforced", false)
	}
	e.Msg(v.Action.String())
}

// verdictEvent starts the line for a verdict at its level, or returns nil
// if it is not logged: allowed ones at debug (info with log: true or in
// monitor mode), refused ones at info within the rate limit.
func (l *Log) verdictEvent(v policy.Verdict) *zerolog.Event {
	switch {
	case v.Action == policy.Allow && (v.Log || v.Monitor):
		return l.zl.Info()
	case v.Action == policy.Allow:
		return l.zl.Debug()
	case !l.zl.Info().Enabled() || !l.allow():
		return nil
	}
	return l.zl.Info()
}

// Closed implements netstack.Events.
func (l *Log) Closed(id uint64, f policy.Flow, v policy.Verdict, st netstack.FlowStats) {
	e := l.zl.Info()
	if !e.Enabled() {
		return
	}
	e = flowFields(e.Str("event", "close"), id, f).Str("rule", v.Rule).
		Int64("bytes_out", st.BytesOut).Int64("bytes_in", st.BytesIn).
		Int64("duration_ms", st.Duration.Milliseconds()).Str("reason", st.Reason)
	if st.Err != nil {
		e = e.AnErr("error", st.Err)
	}
	e.Msg("closed")
}

// Refused implements netstack.Events: a flow the policy allowed but a
// limit turned away (rate-limited with deny/reject lines).
func (l *Log) Refused(id uint64, f policy.Flow, limit string) {
	if !l.zl.Warn().Enabled() || !l.allow() {
		return
	}
	flowFields(l.zl.Warn().Str("event", "refused"), id, f).Str("limit", limit).Msg("refused by limit")
}

// Name implements netstack.Events: a name being resolved that a rule about
// names judged. Refused names log at info (rate-limited with deny/reject
// lines), allowed ones at debug (info with log: true or in monitor mode).
func (l *Log) Name(id uint64, f policy.Flow, qtype string, v policy.Verdict) {
	e := l.verdictEvent(v)
	if e == nil {
		return
	}
	e = flowFields(e.Str("event", "dns"), id, f).Str("qtype", qtype).Str("action", v.Action.String()).Str("rule", v.Rule)
	if v.Monitor {
		e = e.Bool("enforced", false)
	}
	e.Msg("name " + v.Action.String())
}

// flowFields adds the fields every flow event carries. ICMP flows show
// bare addresses and the ICMP type. Flows that started on this machine
// carry their owner: uid, and user, pid and exe where known.
func flowFields(e *zerolog.Event, id uint64, f policy.Flow) *zerolog.Event {
	e = e.Uint64("flow", id).Str("proto", f.Proto.String())
	if f.Proto == policy.ICMP {
		e = e.Str("src", f.Src.Addr().String()).Str("dst", f.Dst.Addr().String()).Uint8("icmp_type", f.Type)
	} else {
		e = e.Str("src", f.Src.String()).Str("dst", f.Dst.String())
	}
	if f.Domain != "" {
		e = e.Str("domain", f.Domain).Str("domain_source", f.DomainSource)
	}
	if o := f.Owner; o != nil {
		e = e.Uint32("uid", o.UID)
		if o.User != "" {
			e = e.Str("user", o.User)
		}
		if o.PID != 0 {
			e = e.Int("pid", o.PID)
		}
		if o.Exe != "" {
			e = e.Str("exe", o.Exe)
		}
	}
	return e
}
