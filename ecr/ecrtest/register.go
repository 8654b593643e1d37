// Package ecrtest plays the cash register's side of Concert E+ for tests
// and tools: the ecr package's link tests, the end-to-end tests and
// cmd/fakeecr, which technicians use to check a link.
package ecrtest

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/scanpay/scanpay/ecr"
)

// Register plays the cash register's side of Concert E+, as the public ECR
// libraries do.
type Register struct {
	Conn interface {
		io.ReadWriter
		SetReadDeadline(time.Time) error
	}
	Timeout time.Duration // per byte/frame answer, 3 s
}

func (r *Register) timeout() time.Duration {
	if r.Timeout <= 0 {
		return 3 * time.Second
	}
	return r.Timeout
}

// NextByte reads one byte from the terminal, waiting at most d.
func (r *Register) NextByte(d time.Duration) (byte, error) {
	r.Conn.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	if _, err := io.ReadFull(r.Conn, b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}

// ErrRefused is returned when the terminal answers NAK.
var ErrRefused = errors.New("terminal answered NAK")

// Send sends a request: ENQ → ACK, frame → ACK (resent on NAK, 3 tries), EOT.
func (r *Register) Send(req ecr.Request) error {
	return r.SendPayload(req.Encode())
}

// SendPayload sends any payload (tests send malformed ones).
func (r *Register) SendPayload(payload []byte) error {
	if _, err := r.Conn.Write([]byte{ecr.ENQ}); err != nil {
		return err
	}
	b, err := r.NextByte(r.timeout())
	if err != nil {
		return fmt.Errorf("waiting for ACK to ENQ: %w", err)
	}
	if b != ecr.ACK {
		return ErrRefused
	}
	for try := 0; try < 3; try++ {
		if _, err := r.Conn.Write(ecr.Frame(payload)); err != nil {
			return err
		}
		b, err := r.NextByte(r.timeout())
		if err != nil {
			return fmt.Errorf("waiting for ACK to the frame: %w", err)
		}
		if b == ecr.ACK {
			_, err := r.Conn.Write([]byte{ecr.EOT})
			return err
		}
	}
	r.Conn.Write([]byte{ecr.EOT})
	return ErrRefused
}

// Receive waits up to wait for the terminal's ENQ, then reads the result
// (28 or 83 bytes with STX, ETX and LRC), checks the LRC, answers ACK and
// waits for EOT.
func (r *Register) Receive(wait time.Duration, full bool) (ecr.Result, error) {
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return ecr.Result{}, errors.New("no result in time")
		}
		b, err := r.NextByte(left)
		if err != nil {
			return ecr.Result{}, fmt.Errorf("waiting for ENQ: %w", err)
		}
		if b == ecr.ENQ {
			break
		}
	}
	if _, err := r.Conn.Write([]byte{ecr.ACK}); err != nil {
		return ecr.Result{}, err
	}
	n := ecr.ShortResultLen + 3
	if full {
		n = ecr.FullResultLen + 3
	}
	for try := 0; try < 3; try++ {
		buf := make([]byte, n)
		r.Conn.SetReadDeadline(time.Now().Add(r.timeout()))
		if _, err := io.ReadFull(r.Conn, buf); err != nil {
			return ecr.Result{}, fmt.Errorf("reading the result frame: %w", err)
		}
		payload := buf[1 : n-2]
		if buf[0] != ecr.STX || buf[n-2] != ecr.ETX || ecr.LRC(payload) != buf[n-1] {
			r.Conn.Write([]byte{ecr.NAK})
			continue
		}
		if _, err := r.Conn.Write([]byte{ecr.ACK}); err != nil {
			return ecr.Result{}, err
		}
		if b, err := r.NextByte(r.timeout()); err != nil || b != ecr.EOT {
			return ecr.Result{}, fmt.Errorf("no EOT after the result (%v)", err)
		}
		return ecr.ParseResult(payload)
	}
	return ecr.Result{}, errors.New("result frame kept failing its LRC")
}
