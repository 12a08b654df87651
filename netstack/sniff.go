package netstack

import (
	"errors"
	"net"
	"time"

	"github.com/tunwall/tunwall/internal/names"
	"github.com/tunwall/tunwall/policy"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// How long and how far tunwall reads a client's first bytes for a name.
const (
	sniffWait = time.Second
	sniffMax  = 16 << 10
)

// needsName reports whether f's verdict can depend on a name that its
// first bytes may carry. A flow from this machine whose verdict can depend
// on its owner takes the owner's way instead (judged on the SYN once the
// owner is known, with a name from DNS at most).
func (h *tcpHandler) needsName(f policy.Flow) bool {
	p := h.g.policy.Load()
	if !p.NeedsDomain() {
		return false
	}
	if h.g.local(f) {
		if _, needOwner := p.Prejudge(f); needOwner {
			return false
		}
	}
	_, need := p.PrejudgeName(f)
	return need
}

// connectNamed completes the client's handshake, reads its first bytes
// for a name (TLS server name, else HTTP Host, else what DNS told this
// client), judges the flow with it, and then dials upstream and passes the
// bytes on, or resets the client.
func (h *tcpHandler) connectNamed(r *tcp.ForwarderRequest, id stack.TransportEndpointID, tf *tcpFlow) {
	ep, wq, release, terr := h.accept(r, id, tf.isn)
	if terr != nil { // the client never completed the handshake: not judged
		h.g.flows.remove(tf.id)
		return
	}
	client := newClientConn(wq, ep)
	first, name, source := readName(client)
	f := tf.flow
	if d, ok := policy.NormalizeDomain(name); ok {
		f.Domain, f.DomainSource = d, source
	}
	h.g.nameFromDNS(&f, time.Now())
	v := h.g.decide(f)
	if h.g.local(f) {
		h.g.owners.logLater(tf.id, f, keyOf(f), v) // the line waits for the owner
	} else {
		h.g.cfg.Events.Verdict(tf.id, f, v)
	}
	tf.flow, tf.verdict = f, v
	if v.Effective() != policy.Allow {
		h.g.denials.note(&f, v, time.Now())
		// The handshake is done, so a refusal, deny or reject, is a reset.
		ep.Abort()
		client.Close()
		release()
		h.g.flows.remove(tf.id)
		return
	}
	up, err := h.g.dial("tcp", tf.flow, 0) // the client's handshake is done: no trace
	if err != nil {
		ep.Abort()
		client.Close()
		release()
		h.dialFailed(tf, err)
		h.g.flows.remove(tf.id)
		return
	}
	h.run(tf, client, up, first, release)
}

// readName reads from c until its bytes hold a TLS ClientHello or an HTTP
// request head, or show they are neither, or sniffMax bytes or sniffWait
// have passed. It returns what it read and the name found with its source
// ("sni" or "host"), if any.
func readName(c net.Conn) (first []byte, name, source string) {
	c.SetReadDeadline(time.Now().Add(sniffWait))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 0, 4096)
	for len(buf) < sniffMax {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := c.Read(buf[len(buf):min(cap(buf), sniffMax)])
		buf = buf[:len(buf)+n]
		sni, errS := names.ServerName(buf)
		if errS == nil {
			return buf, sni, "sni"
		}
		host, errH := names.HTTPHost(buf)
		if errH == nil {
			return buf, host, "host"
		}
		if !errors.Is(errS, names.ErrMore) && !errors.Is(errH, names.ErrMore) {
			return buf, "", "" // neither TLS nor HTTP
		}
		if err != nil {
			return buf, "", ""
		}
	}
	return buf, "", ""
}
