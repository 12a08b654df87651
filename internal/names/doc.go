// Package names reads destination names out of traffic: DNS queries and
// answers, the server name of a TLS ClientHello, and the Host header of an
// HTTP request. The parsers take untrusted bytes and never panic; they are
// fuzzed.
package names
