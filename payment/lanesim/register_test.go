package lanesim

import (
	"net"
	"sync"
	"time"

	"github.com/scanpay/scanpay/ecr"
)

// registerEnd is the register's side of the line. A reader goroutine
// buffers what the terminal sends, as a UART would, so the terminal's
// writes never wait on the model.
type registerEnd struct {
	conn net.Conn
	in   chan byte
	done chan struct{}
	// resetAfter is how long a register that resets the line waits first:
	// at once (the link may still be busy with its request at the
	// gateway) or after the result was offered.
	resetAfter time.Duration
}

func newRegisterEnd(c net.Conn) *registerEnd {
	r := &registerEnd{conn: c, in: make(chan byte, 1<<14), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		buf := make([]byte, 256)
		for {
			n, err := c.Read(buf)
			for _, b := range buf[:n] {
				select {
				case r.in <- b:
				default: // overflow: the UART drops it
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return r
}

func (r *registerEnd) close() {
	r.conn.Close()
	<-r.done
}

// dead reports whether the line dropped (the link closed it: idle, reset,
// or the lane went down).
func (r *registerEnd) dead() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// reset is a register that loses patience: it floods the line with noise
// and drops the connection with bytes the terminal has not read.
func (r *registerEnd) reset() {
	noise := make([]byte, 24)
	for i := range noise {
		noise[i] = byte('!' + i%90)
	}
	go func() {
		// Line noise in many small pieces: the link's reader gets more
		// reads than it buffers, and must still let the session end.
		r.conn.SetWriteDeadline(time.Now().Add(time.Second))
		for range 50 {
			if _, err := r.conn.Write(noise); err != nil {
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	r.close()
}

// read waits up to d for the next byte.
func (r *registerEnd) read(d time.Duration) (byte, bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case b := <-r.in:
		return b, true
	case <-t.C:
		return 0, false
	}
}

func (r *registerEnd) write(b ...byte) bool {
	r.conn.SetWriteDeadline(time.Now().Add(3 * time.Second))
	_, err := r.conn.Write(b)
	return err == nil
}

// drain forgets whatever the terminal sent so far.
func (r *registerEnd) drain() {
	for {
		select {
		case <-r.in:
		default:
			return
		}
	}
}

// send runs the register's side of a request exchange: ENQ → ACK, frame →
// ACK (resent on NAK), EOT. taken is false when the terminal answered NAK
// or nothing (busy).
func (r *registerEnd) send(req ecr.Request) (taken bool) {
	r.drain()
	if !r.write(ecr.ENQ) {
		return false
	}
	if b, ok := r.read(3 * time.Second); !ok || b != ecr.ACK {
		return false
	}
	frame := ecr.Frame(req.Encode())
	for try := 0; try < 3; try++ {
		if !r.write(frame...) {
			return false
		}
		b, ok := r.read(3 * time.Second)
		if ok && b == ecr.ACK {
			return r.write(ecr.EOT)
		}
	}
	r.write(ecr.EOT)
	return false
}

// missKind is how the register fails to take a result.
type missKind int

const (
	takeIt     missKind = iota
	ignoreENQ           // the register is away: it never answers ENQ
	nakFrames           // line noise: every frame fails its check
	dropOffENQ          // it answers ENQ, then goes silent
	resetLine           // it gives up waiting, floods the line and resets the connection
)

// receive waits up to wait for the terminal to offer a result and takes it
// (or misses it as kind says). got is true when the register has it.
func (r *registerEnd) receive(wait time.Duration, full bool, kind missKind) (res ecr.Result, got bool) {
	if kind == resetLine {
		time.Sleep(r.resetAfter)
		r.reset()
		return res, false
	}
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return res, false
		}
		b, ok := r.read(left)
		if !ok {
			return res, false
		}
		if b == ecr.ENQ {
			break
		}
	}
	switch kind {
	case ignoreENQ:
		// Let the terminal's tries run out.
		for {
			if _, ok := r.read(5 * time.Second); !ok {
				return res, false
			}
		}
	case dropOffENQ:
		r.write(ecr.ACK)
		for {
			if _, ok := r.read(5 * time.Second); !ok {
				return res, false
			}
		}
	}
	if !r.write(ecr.ACK) {
		return res, false
	}
	for try := 0; try < 3; try++ {
		payload, ok := r.frame()
		if !ok {
			return res, false
		}
		if kind == nakFrames || ecr.LRC(payload[:len(payload)-2]) != payload[len(payload)-1] {
			r.write(ecr.NAK)
			continue
		}
		p := payload[:len(payload)-2]
		if !r.write(ecr.ACK) {
			return res, false
		}
		r.read(3 * time.Second) // EOT
		parsed, err := ecr.ParseResult(p)
		if err != nil {
			return res, false
		}
		return parsed, true
	}
	// The terminal gives up after three frames and sends EOT.
	r.read(3 * time.Second)
	return res, false
}

// frame reads STX … ETX LRC and returns payload+ETX+LRC.
func (r *registerEnd) frame() ([]byte, bool) {
	for {
		b, ok := r.read(3 * time.Second)
		if !ok {
			return nil, false
		}
		if b == ecr.STX {
			break
		}
	}
	var p []byte
	for {
		b, ok := r.read(3 * time.Second)
		if !ok {
			return nil, false
		}
		p = append(p, b)
		if b == ecr.ETX {
			lrc, ok := r.read(3 * time.Second)
			if !ok {
				return nil, false
			}
			return append(p, lrc), true
		}
		if len(p) > ecr.MaxPayload+1 {
			return nil, false
		}
	}
}

// pipeListener is a TCP listener in memory: each dial is a net.Pipe, so
// the link's RunTCP (one register at a time, replaced on reconnect, idle
// deadline) runs on the fake clock.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return loopback }

// dial connects a register; nil when the listener is closed.
func (l *pipeListener) dial() net.Conn {
	server, client := net.Pipe()
	select {
	case l.conns <- loopbackConn{server}:
		return client
	case <-l.done:
		server.Close()
		client.Close()
		return nil
	}
}

var loopback = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8800}

// loopbackConn reports a loopback peer, as a register on the same machine.
type loopbackConn struct{ net.Conn }

func (loopbackConn) RemoteAddr() net.Addr { return loopback }
