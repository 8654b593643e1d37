package input

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
	"unsafe"
)

// RawEvent is one struct input_event.
type RawEvent struct {
	Time  time.Time
	Type  uint16
	Code  uint16
	Value int32
}

// Layout is the byte layout of struct input_event: the timeval is two
// longs, so the record is 24 bytes on 64-bit and 16 bytes on 32-bit ARM.
type Layout struct{ Size int }

// Event layouts.
var (
	Layout64 = Layout{Size: 24}
	Layout32 = Layout{Size: 16}
	// NativeLayout is this build's layout.
	NativeLayout = Layout{Size: 2*int(unsafe.Sizeof(uintptr(0))) + 8}
)

// ParseLayout reads "64", "32" or "native".
func ParseLayout(s string) (Layout, error) {
	switch s {
	case "64":
		return Layout64, nil
	case "32":
		return Layout32, nil
	case "native", "":
		return NativeLayout, nil
	}
	return Layout{}, fmt.Errorf("event layout %q: want 64, 32 or native", s)
}

// Encode writes one event record (little-endian, as on every Pi).
func (l Layout) Encode(ev RawEvent) []byte {
	b := make([]byte, l.Size)
	sec, usec := ev.Time.Unix(), int64(ev.Time.Nanosecond()/1000)
	w := l.Size/2 - 4 // width of one long
	if w == 8 {
		binary.LittleEndian.PutUint64(b[0:], uint64(sec))
		binary.LittleEndian.PutUint64(b[8:], uint64(usec))
	} else {
		binary.LittleEndian.PutUint32(b[0:], uint32(sec))
		binary.LittleEndian.PutUint32(b[4:], uint32(usec))
	}
	binary.LittleEndian.PutUint16(b[2*w:], ev.Type)
	binary.LittleEndian.PutUint16(b[2*w+2:], ev.Code)
	binary.LittleEndian.PutUint32(b[2*w+4:], uint32(ev.Value))
	return b
}

// Decode reads one record.
func (l Layout) Decode(b []byte) RawEvent {
	w := l.Size/2 - 4
	var sec, usec int64
	if w == 8 {
		sec, usec = int64(binary.LittleEndian.Uint64(b[0:])), int64(binary.LittleEndian.Uint64(b[8:]))
	} else {
		sec, usec = int64(int32(binary.LittleEndian.Uint32(b[0:]))), int64(int32(binary.LittleEndian.Uint32(b[4:])))
	}
	return RawEvent{
		Time:  time.Unix(sec, usec*1000),
		Type:  binary.LittleEndian.Uint16(b[2*w:]),
		Code:  binary.LittleEndian.Uint16(b[2*w+2:]),
		Value: int32(binary.LittleEndian.Uint32(b[2*w+4:])),
	}
}

// ErrTruncatedEvent is returned when a stream ends inside a record.
var ErrTruncatedEvent = errors.New("event stream ends inside a record")

// ReadEvents reads every record from r.
func ReadEvents(r io.Reader, l Layout) ([]RawEvent, error) {
	var out []RawEvent
	buf := make([]byte, l.Size)
	for {
		_, err := io.ReadFull(r, buf)
		switch {
		case err == io.EOF:
			return out, nil
		case err == io.ErrUnexpectedEOF:
			return out, ErrTruncatedEvent
		case err != nil:
			return out, err
		}
		out = append(out, l.Decode(buf))
	}
}

// TypeCode returns the key events a keyboard-wedge scanner sends for code:
// each character as press and release (with Shift around capitals), then
// the terminator, keyDelay apart, each followed by a SYN_REPORT.
func TypeCode(code string, terminator uint16, start time.Time, keyDelay time.Duration) ([]RawEvent, error) {
	return typeKeys(code, terminator, start, keyDelay, false)
}

// TypeKeypad is TypeCode for a numeric keypad: digits use the keypad keys.
func TypeKeypad(code string, terminator uint16, start time.Time, keyDelay time.Duration) ([]RawEvent, error) {
	return typeKeys(code, terminator, start, keyDelay, true)
}

var keypadDigits = [10]uint16{KeyKP0, KeyKP1, KeyKP2, KeyKP3, KeyKP4, KeyKP5, KeyKP6, KeyKP7, KeyKP8, KeyKP9}

func typeKeys(code string, terminator uint16, start time.Time, keyDelay time.Duration, numpad bool) ([]RawEvent, error) {
	var out []RawEvent
	t := start
	key := func(c uint16, v int32) {
		out = append(out, RawEvent{Time: t, Type: EvKey, Code: c, Value: v}, RawEvent{Time: t, Type: EvSyn})
	}
	for _, r := range code {
		c, shift, ok := RuneKey(r)
		if numpad && r >= '0' && r <= '9' {
			c, shift, ok = keypadDigits[r-'0'], false, true
		}
		if !ok {
			return nil, fmt.Errorf("character %q cannot be typed on a US keyboard", r)
		}
		if shift {
			key(KeyLeftShift, KeyPressed)
		}
		key(c, KeyPressed)
		key(c, KeyReleased)
		if shift {
			key(KeyLeftShift, KeyReleased)
		}
		t = t.Add(keyDelay)
	}
	key(terminator, KeyPressed)
	key(terminator, KeyReleased)
	return out, nil
}
