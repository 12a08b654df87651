package control

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/tunwall/tunwall/netstack"
	"github.com/tunwall/tunwall/policy"
)

// Capture trailers: how many packets the file holds, how many the
// gateway dropped because the reader fell behind, and why it ended.
const (
	TrailerPackets = "Tunwall-Packets"
	TrailerDropped = "Tunwall-Dropped"
	TrailerEnd     = "Tunwall-End"
)

// Why a capture ended (TrailerEnd).
const (
	EndCount      = "count"       // the requested number of packets
	EndMaxBytes   = "max_bytes"   // the size bound
	EndFlowClosed = "flow_closed" // the captured flow ended
	EndStopped    = "stopped"     // the gateway stopped
)

const (
	pcapFileHeader   = 24
	pcapRecordHeader = 16
)

// MinCaptureBytes is the smallest max_bytes a capture takes: the file's
// header and one packet's.
const MinCaptureBytes = pcapFileHeader + pcapRecordHeader

// PacketSource is a running capture (*netstack.Capture).
type PacketSource interface {
	Packets() <-chan netstack.Packet
	Done() <-chan struct{}
	Dropped() uint64
	Close()
}

// captureParams are the query parameters of a capture.
var captureParams = []string{"flow", "denied", "count", "max_bytes"}

// capture streams a pcap file of one flow's packets (flow=ID) or of the
// packets the policy refuses (denied), until count packets, max_bytes
// (at most capture.max_bytes), the end of the flow, or the client leaves.
func capture(b Backend, w http.ResponseWriter, r *http.Request) {
	cc := b.CaptureConfig()
	if !cc.Enabled {
		fail(w, http.StatusForbidden, "packet capture is off (capture.enabled: false)")
		return
	}
	q := r.URL.Query()
	flowArg, denied := q.Get("flow"), q.Has("denied")
	switch v := q.Get("denied"); v {
	case "", "1", "true":
	default:
		fail(w, http.StatusBadRequest, "denied=%s: give denied alone (or denied=true) for the refused packets, or flow=ID", v)
		return
	}
	if (flowArg != "") == denied {
		fail(w, http.StatusBadRequest, "give flow=ID or denied, one of them")
		return
	}
	var id uint64
	if flowArg != "" {
		var err error
		if id, err = strconv.ParseUint(flowArg, 10, 64); err != nil || id == 0 {
			fail(w, http.StatusBadRequest, "flow id %q is not a number", flowArg)
			return
		}
	}
	maxBytes := cc.MaxBytes
	if s := q.Get("max_bytes"); s != "" {
		n, err := policy.ParseSize(s)
		if err != nil || n < MinCaptureBytes {
			fail(w, http.StatusBadRequest, "max_bytes %q: want a size of at least %d bytes", s, MinCaptureBytes)
			return
		}
		maxBytes = min(maxBytes, n)
	}
	var count uint64
	if s := q.Get("count"); s != "" {
		var err error
		if count, err = strconv.ParseUint(s, 10, 64); err != nil {
			fail(w, http.StatusBadRequest, "count %q is not a number", s)
			return
		}
	}
	c, err := b.Capture(id, cc.Snaplen)
	if errors.Is(err, netstack.ErrNoFlow) {
		fail(w, http.StatusNotFound, "no live flow %d", id)
		return
	}
	if err != nil {
		fail(w, http.StatusInternalServerError, "%v", err)
		return
	}
	defer c.Close()

	h := w.Header()
	h.Set("Content-Type", "application/vnd.tcpdump.pcap")
	h.Set("Trailer", TrailerPackets+", "+TrailerDropped+", "+TrailerEnd)
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(uint32(cc.Snaplen), layers.LinkTypeRaw); err != nil {
		return
	}
	rc := http.NewResponseController(w)
	rc.Flush()
	written, packets := int64(pcapFileHeader), uint64(0)
	// write adds one packet; it reports why the capture ends, "" to go on.
	write := func(p netstack.Packet) (end string, ok bool) {
		if written+pcapRecordHeader+int64(len(p.Data)) > maxBytes {
			return EndMaxBytes, true
		}
		ci := gopacket.CaptureInfo{Timestamp: p.At, CaptureLength: len(p.Data), Length: p.Len}
		if pw.WritePacket(ci, p.Data) != nil {
			return "", false // the client is gone
		}
		written += pcapRecordHeader + int64(len(p.Data))
		packets++
		if count > 0 && packets >= count {
			return EndCount, true
		}
		return "", true
	}
	end := ""
	for end == "" {
		select {
		case p := <-c.Packets():
			var ok bool
			if end, ok = write(p); !ok {
				return
			}
			if len(c.Packets()) == 0 {
				rc.Flush()
			}
		case <-c.Done():
			for end == "" && len(c.Packets()) > 0 {
				var ok bool
				if end, ok = write(<-c.Packets()); !ok {
					return
				}
			}
			if end == "" {
				end = EndStopped
				if id != 0 {
					end = EndFlowClosed
				}
			}
		case <-r.Context().Done():
			// The client left (then nobody reads this), or tunwall is
			// stopping: the trailers say so.
			end = EndStopped
		}
	}
	h.Set(TrailerPackets, strconv.FormatUint(packets, 10))
	h.Set(TrailerDropped, strconv.FormatUint(c.Dropped(), 10))
	h.Set(TrailerEnd, end)
}
