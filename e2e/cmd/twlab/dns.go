package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/tunwall/tunwall/e2e/lab"
	"github.com/tunwall/tunwall/internal/names"
)

// dnsAnswer answers a DNS query for any name: A with the lab server's IPv4
// address, AAAA with its IPv6 one, TTL 300. It returns nil if msg is not a
// query.
func dnsAnswer(msg []byte) []byte {
	q, err := names.ParseQuery(msg)
	if err != nil {
		return nil
	}
	r := layers.DNS{ID: q.ID, QR: true, RD: true, RA: true,
		Questions: []layers.DNSQuestion{{Name: []byte(q.Name), Type: q.Type, Class: layers.DNSClassIN}}}
	switch q.Type {
	case layers.DNSTypeA:
		r.Answers = append(r.Answers, layers.DNSResourceRecord{Name: []byte(q.Name), Type: q.Type, Class: layers.DNSClassIN, TTL: 300, IP: net.ParseIP(lab.ServerV4).To4()})
	case layers.DNSTypeAAAA:
		r.Answers = append(r.Answers, layers.DNSResourceRecord{Name: []byte(q.Name), Type: q.Type, Class: layers.DNSClassIN, TTL: 300, IP: net.ParseIP(lab.ServerV6)})
	}
	buf := gopacket.NewSerializeBuffer()
	if r.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true}) != nil {
		return nil
	}
	return buf.Bytes()
}

// resolve asks server (address:port) for name's record of type qtype (A
// or AAAA) and prints the response code and addresses as JSON.
func resolve(server, name, qtype string) error {
	t := layers.DNSTypeA
	switch qtype {
	case "A":
	case "AAAA":
		t = layers.DNSTypeAAAA
	default:
		return fmt.Errorf("resolve: record type %q: want A or AAAA", qtype)
	}
	q := layers.DNS{ID: uint16(time.Now().UnixNano()), RD: true,
		Questions: []layers.DNSQuestion{{Name: []byte(name), Type: t, Class: layers.DNSClassIN}}}
	buf := gopacket.NewSerializeBuffer()
	if err := q.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true}); err != nil {
		return err
	}
	c, err := net.DialTimeout("udp", server, 2*time.Second)
	if err != nil {
		return emit(map[string]any{"ok": false, "error": err.Error()})
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(buf.Bytes()); err != nil {
		return emit(map[string]any{"ok": false, "error": err.Error()})
	}
	b := make([]byte, 1500)
	n, err := c.Read(b)
	if err != nil {
		return emit(map[string]any{"ok": false, "error": err.Error()})
	}
	var d layers.DNS
	if err := d.DecodeFromBytes(b[:n], gopacket.NilDecodeFeedback); err != nil {
		return emit(map[string]any{"ok": false, "error": err.Error()})
	}
	addrs := []string{}
	for _, a := range d.Answers {
		addrs = append(addrs, a.IP.String())
	}
	return emit(map[string]any{"ok": true, "rcode": d.ResponseCode.String(), "addrs": addrs})
}

// tlsProbe opens a TLS handshake to addr with serverName as SNI and
// reports how it ended (the lab has no TLS servers: an allowed handshake
// reaches a plain service and fails on its answer, a refused one is
// reset).
func tlsProbe(addr, serverName string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return emit(map[string]any{"ok": false, "error": err.Error(), "errno": errnoName(err)})
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	err = tls.Client(c, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}).Handshake()
	if err == nil {
		return emit(map[string]any{"ok": true})
	}
	return emit(map[string]any{"ok": false, "error": err.Error(), "errno": errnoName(err)})
}
