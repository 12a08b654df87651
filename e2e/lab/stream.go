package lab

import "encoding/binary"

// Stream is a deterministic pseudo-random byte stream (xorshift64*), so both
// ends of a transfer can produce or check the same bytes without storing
// them.
type Stream struct {
	s   uint64
	buf [8]byte
	n   int
}

// NewStream returns the stream for seed.
func NewStream(seed uint64) *Stream { return &Stream{s: seed | 1} }

// Read fills p with the next bytes of the stream. It never fails.
func (r *Stream) Read(p []byte) (int, error) {
	for i := range p {
		if r.n == 0 {
			r.s ^= r.s >> 12
			r.s ^= r.s << 25
			r.s ^= r.s >> 27
			binary.LittleEndian.PutUint64(r.buf[:], r.s*2685821657736338717)
			r.n = 8
		}
		p[i] = r.buf[8-r.n]
		r.n--
	}
	return len(p), nil
}
