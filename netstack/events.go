package netstack

import (
	"time"

	"github.com/tunwall/tunwall/policy"
)

// Close reasons carried by Closed events.
const (
	reasonFIN      = "fin"      // both sides finished normally
	reasonRST      = "rst"      // a side reset, or upstream could not be reached
	reasonIdle     = "idle"     // no traffic for the idle timeout, or an end stopped answering probes
	reasonLimit    = "limit"    // closed to respect a limit
	reasonShutdown = "shutdown" // the gateway is stopping
	reasonPolicy   = "policy"   // a reloaded policy refuses the flow
	reasonClosed   = "closed"   // closed on request (CloseFlow)
)

// FlowStats describes a finished allowed flow.
type FlowStats struct {
	BytesOut int64 // originator -> destination (payload bytes)
	BytesIn  int64 // destination -> originator
	Duration time.Duration
	Reason   string // fin | rst | idle | limit | shutdown
	Err      error  // why the flow failed, when it did (upstream dial error)
}

// Events receives one Verdict per judged flow, one Closed per allowed flow
// that ends, and one Refused per flow turned away by a limit. Methods may be
// called from many goroutines at once and must not block for long.
type Events interface {
	Verdict(id uint64, f policy.Flow, v policy.Verdict)
	Closed(id uint64, f policy.Flow, v policy.Verdict, st FlowStats)
	Refused(id uint64, f policy.Flow, limit string)
	// Name reports a name being resolved that a rule about names judged
	// (f.Domain; qtype is the query type): refused names are answered by
	// tunwall, allowed ones go to the server.
	Name(id uint64, f policy.Flow, qtype string, v policy.Verdict)
}

type nopEvents struct{}

func (nopEvents) Verdict(uint64, policy.Flow, policy.Verdict)           {}
func (nopEvents) Closed(uint64, policy.Flow, policy.Verdict, FlowStats) {}
func (nopEvents) Refused(uint64, policy.Flow, string)                   {}
func (nopEvents) Name(uint64, policy.Flow, string, policy.Verdict)      {}
