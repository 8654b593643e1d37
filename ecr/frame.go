// Package ecr links scanpay to the cash register (ECR) with the Concert
// protocol E+, playing the payment terminal: framing with LRC, the
// ENQ/ACK/NAK/EOT exchanges in both directions with 3-second timeouts and
// up to 3 tries, request decoding and result encoding, over a serial port
// (8N1 or 7E1, opened through device/serial) or a TCP socket. Results the
// register did not take are kept and sent again when it next asks about the
// same reference. The register's side of the protocol, for tests and
// cmd/fakeecr, is in ecr/ecrtest.
package ecr

import "errors"

// Control bytes.
const (
	STX = 0x02
	ETX = 0x03
	EOT = 0x04
	ENQ = 0x05
	ACK = 0x06
	NAK = 0x15
)

// Payload lengths.
const (
	RequestLen     = 34
	ShortResultLen = 25
	FullResultLen  = 80
	// MaxPayload is the longest valid payload; a frame running past it
	// without ETX is dropped.
	MaxPayload = FullResultLen
)

// LRC is the XOR of every payload byte and ETX.
func LRC(payload []byte) byte {
	x := byte(ETX)
	for _, b := range payload {
		x ^= b
	}
	return x
}

// Frame wraps a payload: STX payload ETX LRC.
func Frame(payload []byte) []byte {
	f := make([]byte, 0, len(payload)+3)
	f = append(f, STX)
	f = append(f, payload...)
	return append(f, ETX, LRC(payload))
}

// Frame reader outcomes.
var (
	ErrBadLRC   = errors.New("frame LRC does not match")
	ErrTooLong  = errors.New("frame runs past the longest payload without ETX")
	errNotFrame = errors.New("not in a frame")
)

// FrameReader assembles frames from a byte stream. Bytes before STX are
// noise and skipped; an STX inside a frame starts it again (resync).
type FrameReader struct {
	inFrame bool
	gotETX  bool
	buf     []byte
}

// Feed takes one byte. It returns (payload, nil) for a good frame, (nil,
// ErrBadLRC or ErrTooLong) for a bad one, and (nil, nil) while it waits.
func (r *FrameReader) Feed(b byte) ([]byte, error) {
	switch {
	case !r.inFrame:
		if b == STX {
			r.inFrame, r.gotETX, r.buf = true, false, r.buf[:0]
		}
		return nil, nil
	case r.gotETX:
		r.inFrame = false
		payload := append([]byte(nil), r.buf...)
		if LRC(payload) != b {
			return nil, ErrBadLRC
		}
		return payload, nil
	case b == STX:
		r.buf = r.buf[:0]
		return nil, nil
	case b == ETX:
		r.gotETX = true
		return nil, nil
	}
	if len(r.buf) >= MaxPayload {
		r.inFrame = false
		return nil, ErrTooLong
	}
	r.buf = append(r.buf, b)
	return nil, nil
}

// Reset drops a partial frame.
func (r *FrameReader) Reset() { r.inFrame, r.gotETX, r.buf = false, false, r.buf[:0] }
