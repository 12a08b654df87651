package policy

import (
	"fmt"
	"net/netip"
	"time"
)

// Action is what happens to a flow.
type Action uint8

const (
	// Deny drops the flow silently: no SYN-ACK, no reply, no ICMP error.
	Deny Action = iota
	// Allow re-originates the flow from a host socket and relays it.
	Allow
	// Reject refuses the flow visibly: TCP RST, ICMP port unreachable for
	// UDP, ICMP administratively prohibited for ICMP.
	Reject
)

// String returns the action as it is spelled in the config and the log.
func (a Action) String() string {
	switch a {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// ParseAction parses "allow", "deny" or "reject".
func ParseAction(s string) (Action, error) {
	switch s {
	case "allow":
		return Allow, nil
	case "deny":
		return Deny, nil
	case "reject":
		return Reject, nil
	}
	return Deny, fmt.Errorf("unknown action %q (want allow, deny or reject)", s)
}

// Proto is a flow's transport protocol as the policy sees it. ICMP covers
// both ICMPv4 and ICMPv6.
type Proto uint8

const (
	TCP Proto = 1 << iota
	UDP
	ICMP

	anyProto = TCP | UDP | ICMP
)

// String returns the protocol's config spelling.
func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case ICMP:
		return "icmp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// ParseProto parses "tcp", "udp" or "icmp".
func ParseProto(s string) (Proto, error) {
	switch s {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	case "icmp":
		return ICMP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (want tcp, udp or icmp)", s)
}

// Flow is what the policy judges: the first packet of a connection.
// For ICMP the ports are zero and Type holds the ICMP message type.
type Flow struct {
	Proto Proto
	Src   netip.AddrPort // originator
	Dst   netip.AddrPort // destination
	Type  uint8          // ICMP type (ICMP flows only)
	// Owner is the local user and process that opened the flow: nil for
	// flows from other hosts and when no owning socket was found. Rules
	// with users or apps never match a flow without one.
	Owner *Owner
	// Domain is the flow's destination name when known, normalised (see
	// NormalizeDomain); "" otherwise. Rules with domains or domain lists
	// never match a flow without one.
	Domain string
	// DomainSource says where Domain came from: "sni", "host" or "dns".
	DomainSource string
	// At is when the flow started, for rules with time windows; the zero
	// time means now.
	At time.Time
}

// Owner identifies who on this machine opened a flow.
type Owner struct {
	UID  uint32
	User string // "" if the uid has no name
	PID  int    // 0 if the process was not found (it may have exited)
	Exe  string // the process's executable path, "" if unknown
}

// Verdict is the decision for one flow and the rule that made it.
type Verdict struct {
	Action Action
	Rule   string // rule name, or "default"
	Index  int    // position of the rule in the file (0-based); -1 for default
	Log    bool   // the rule asks for allowed matches to be logged at info
	// Monitor: the policy is in monitor mode; Action is what it would do,
	// and the flow is let through.
	Monitor bool
}

// Effective is the action carried out: Action, or Allow in monitor mode.
func (v Verdict) Effective() Action {
	if v.Monitor {
		return Allow
	}
	return v.Action
}

// DefaultRule is the Verdict.Rule of flows that no rule matched.
const DefaultRule = "default"
