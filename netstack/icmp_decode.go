package netstack

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// echoRequest is an ICMP echo request read from the device.
type echoRequest struct {
	src, dst netip.Addr
	id, seq  uint16
	payload  []byte // aliases the packet buffer: copy before keeping
	raw      []byte // the whole packet, for ICMP errors that quote it
}

// clone returns a copy that owns its bytes.
func (r *echoRequest) clone() *echoRequest {
	c := *r
	c.raw = append([]byte(nil), r.raw...)
	c.payload = append([]byte(nil), r.payload...)
	return &c
}

// echoDecoder finds ICMP echo requests among packets read from the device.
// It is used by the reader goroutine only.
type echoDecoder struct {
	p4, p6  *gopacket.DecodingLayerParser
	ip4     layers.IPv4
	icmp4   layers.ICMPv4
	icmp6   layers.ICMPv6
	echo6   layers.ICMPv6Echo
	payload gopacket.Payload
	decoded []gopacket.LayerType

	// What the last packet classified tooBig reported: a router towards
	// client (the destination of the packet it quotes) could forward
	// packets of at most mtu bytes.
	tooBig struct {
		from, client netip.Addr
		mtu          int
		quoted       []byte // the start of the packet refused (in the packet classified)
	}
}

func newEchoDecoder() *echoDecoder {
	d := &echoDecoder{decoded: make([]gopacket.LayerType, 0, 4)}
	d.p4 = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv4, &d.ip4, &d.icmp4, &d.payload)
	d.p6 = gopacket.NewDecodingLayerParser(layers.LayerTypeICMPv6, &d.icmp6, &d.echo6, &d.payload)
	d.p4.IgnoreUnsupported = true
	d.p6.IgnoreUnsupported = true
	return d
}

// classify says what the gateway must do with pkt, a well-formed IP packet:
// pass it to the stack, drop it (fragmented ICMP, which the stack would
// reassemble and answer itself), or handle it as an echo request (req).
func (d *echoDecoder) classify(pkt []byte, req *echoRequest) (verdict packetClass) {
	if pkt[0]>>4 == 4 {
		return d.classify4(pkt, req)
	}
	return d.classify6(pkt, req)
}

type packetClass int

const (
	toStack packetClass = iota
	dropFragment
	isEcho
	tooBig // for the stack, and the path MTU it reports is in d.tooBig
)

func (d *echoDecoder) classify4(pkt []byte, req *echoRequest) packetClass {
	if pkt[9] != protoICMPv4 {
		return toStack
	}
	if binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 { // MF or fragment offset
		return dropFragment
	}
	if err := d.p4.DecodeLayers(pkt, &d.decoded); err != nil || len(d.decoded) < 2 {
		return toStack // the stack counts and drops what it cannot parse
	}
	if d.icmp4.TypeCode == layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded) {
		// The next-hop MTU is in the second half of the word gopacket
		// reads as Id and Seq (RFC 1191); 0 from routers older than it.
		quoted := d.icmp4.Payload
		if d.icmp4.Seq == 0 || len(quoted) < ipv4HeaderLen || quoted[0]>>4 != 4 {
			return toStack
		}
		d.tooBig.from = netip.AddrFrom4([4]byte(d.ip4.SrcIP.To4()))
		d.tooBig.client = netip.AddrFrom4([4]byte(quoted[16:20]))
		d.tooBig.mtu = int(d.icmp4.Seq)
		d.tooBig.quoted = quoted
		return tooBig
	}
	if d.icmp4.TypeCode.Type() != layers.ICMPv4TypeEchoRequest || d.icmp4.TypeCode.Code() != 0 {
		return toStack
	}
	*req = echoRequest{
		src:     netip.AddrFrom4([4]byte(d.ip4.SrcIP.To4())),
		dst:     netip.AddrFrom4([4]byte(d.ip4.DstIP.To4())),
		id:      d.icmp4.Id,
		seq:     d.icmp4.Seq,
		payload: d.icmp4.Payload,
		raw:     pkt,
	}
	return isEcho
}

func (d *echoDecoder) classify6(pkt []byte, req *echoRequest) packetClass {
	next, off, frag := ipv6Upper(pkt)
	if next != protoICMPv6 {
		return toStack
	}
	if frag {
		return dropFragment
	}
	if err := d.p6.DecodeLayers(pkt[off:], &d.decoded); err != nil || len(d.decoded) < 2 {
		return toStack
	}
	if d.icmp6.TypeCode.Type() == layers.ICMPv6TypePacketTooBig {
		// The MTU, then the packet quoted (ICMPv6 leaves both in its
		// payload).
		p := d.icmp6.Payload
		if len(p) < 4+ipv6HeaderLen || p[4]>>4 != 6 {
			return toStack
		}
		d.tooBig.from = netip.AddrFrom16([16]byte(pkt[8:24]))
		d.tooBig.client = netip.AddrFrom16([16]byte(p[4+24 : 4+40]))
		d.tooBig.mtu = int(min(binary.BigEndian.Uint32(p), 1<<16))
		d.tooBig.quoted = p[4:]
		return tooBig
	}
	if d.icmp6.TypeCode.Type() != layers.ICMPv6TypeEchoRequest || d.icmp6.TypeCode.Code() != 0 {
		return toStack
	}
	*req = echoRequest{
		src:     netip.AddrFrom16([16]byte(pkt[8:24])),
		dst:     netip.AddrFrom16([16]byte(pkt[24:40])),
		id:      d.echo6.Identifier,
		seq:     d.echo6.SeqNumber,
		payload: d.icmp6.Payload[4:], // ICMPv6Echo leaves its own payload unset
		raw:     pkt,
	}
	return isEcho
}

// ipv6Upper walks the IPv6 extension headers and returns the upper-layer
// protocol, its offset, and whether the packet is a fragment. A chain that
// runs past the packet yields protocol 255 (none).
func ipv6Upper(pkt []byte) (next uint8, off int, frag bool) {
	next, off = pkt[6], ipv6HeaderLen
	for {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if off+2 > len(pkt) {
				return 255, off, frag
			}
			next, off = pkt[off], off+(int(pkt[off+1])+1)*8
		case 44: // fragment
			if off+8 > len(pkt) {
				return 255, off, frag
			}
			next, off, frag = pkt[off], off+8, true
		default:
			if off > len(pkt) {
				return 255, off, frag
			}
			return next, off, frag
		}
	}
}
