package netstack

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzInspect runs arbitrary bytes through everything the endpoint does to
// a packet from the device before gVisor sees it: length checks, checksum
// verification and the ICMP echo classifier. None of it may panic.
func FuzzInspect(f *testing.F) {
	f.Add(tcpSyn(f, "10.0.0.2:5000", "192.0.2.1:80"))
	f.Add(udpPacket(f, "[fd00::2]:5000", "[2001:db8::1]:53", []byte("q")))
	f.Add(echoRequestPacket(f, "10.0.0.2", "192.0.2.1", 1, 2, []byte("ping")))
	f.Add(echoRequestPacket(f, "fd00::2", "2001:db8::1", 1, 2, []byte("ping6")))
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 44, 64})
	seeds, _ := filepath.Glob("testdata/packets/*")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	var st Stats
	dec := newEchoDecoder()
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if _, ok := st.check(pkt); !ok {
			return
		}
		_ = checksumsOK(pkt)
		var req echoRequest
		if dec.classify(pkt, &req) == isEcho {
			_ = echoReply(req.src, req.dst, req.id, req.seq, req.payload)
			_ = icmpError(req.raw, req.src, req.dst, 3, 13)
		}
	})
}
