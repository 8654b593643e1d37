// Package serialtest provides the pty fixture for device packages: a pty
// standing in for a serial device behind a stable link (as udev's
// /dev/serial/by-id links are), which tests can unplug and plug again.
package serialtest

import (
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// Port is a pty whose tty end is reachable at Link. The test plays the
// device on the master end.
type Port struct {
	t      testing.TB
	Link   string
	mu     sync.Mutex
	master *os.File
	slave  *os.File
}

// NewPort makes a port at dir/name and plugs it in; it is unplugged when
// the test ends.
func NewPort(t testing.TB, dir, name string) *Port {
	p := &Port{t: t, Link: filepath.Join(dir, name)}
	p.Plug()
	t.Cleanup(p.Unplug)
	return p
}

// Plug makes a new pty and points the link at it.
func (p *Port) Plug() {
	m, s, err := pty.Open()
	if err != nil {
		p.t.Fatal(err)
	}
	master := pollable(p.t, m)
	os.Remove(p.Link)
	if err := os.Symlink(s.Name(), p.Link); err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.master, p.slave = master, s
	p.mu.Unlock()
}

// Unplug closes the pty, as pulling the cable does.
func (p *Port) Unplug() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.master != nil {
		p.master.Close()
		p.slave.Close()
		p.master, p.slave = nil, nil
	}
}

// Master is the device end; it supports read deadlines.
func (p *Port) Master() *os.File {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.master
}

// WriteSlowly writes s one byte at a time, as a slow UART delivers it.
func (p *Port) WriteSlowly(s string) {
	m := p.Master()
	for i := 0; i < len(s); i++ {
		if _, err := m.Write([]byte{s[i]}); err != nil {
			p.t.Fatal(err)
		}
	}
}

// ReadN reads exactly n bytes from the device end within 5 s.
func (p *Port) ReadN(n int) []byte {
	p.t.Helper()
	m := p.Master()
	buf := make([]byte, n)
	m.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(m, buf); err != nil {
		p.t.Fatalf("read %d bytes: %v (have %q)", n, err, buf)
	}
	return buf
}

// Quiet fails the test if anything arrives within 50 ms.
func (p *Port) Quiet() {
	p.t.Helper()
	m := p.Master()
	m.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	b := make([]byte, 64)
	if n, _ := m.Read(b); n > 0 {
		p.t.Fatalf("unexpected bytes %q", b[:n])
	}
}

// pollable returns a non-blocking duplicate of f registered with Go's
// poller, so deadlines work (creack/pty leaves the master blocking).
func pollable(t testing.TB, f *os.File) *os.File {
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fd), "ptmx")
}
