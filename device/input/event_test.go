package input

import (
	"bytes"
	"errors"
	"runtime"
	"testing"
	"time"
)

func TestNativeLayout(t *testing.T) {
	want := 24
	switch runtime.GOARCH {
	case "arm", "386", "mips", "mipsle":
		want = 16
	}
	if NativeLayout.Size != want {
		t.Fatalf("native input_event size on %s is %d, want %d", runtime.GOARCH, NativeLayout.Size, want)
	}
	for _, l := range []Layout{Layout64, Layout32} {
		ev := RawEvent{Time: time.Unix(1764255600, 123456000), Type: EvKey, Code: 30, Value: KeyPressed}
		if got := l.Decode(l.Encode(ev)); !got.Time.Equal(ev.Time) || got.Code != 30 || got.Value != 1 || got.Type != EvKey {
			t.Fatalf("layout %d round trip: %+v", l.Size, got)
		}
	}
}

func TestRuneKeyRoundTrip(t *testing.T) {
	for _, r := range "0123456789abcxyzABCXYZ-_=+[]{};:'\",.<>/?`~!@#$%^&*() \\|" {
		c, shift, ok := RuneKey(r)
		if !ok {
			t.Fatalf("%q not typeable", r)
		}
		if back, _ := KeyRune(c, shift, false); back != r {
			t.Fatalf("%q → key %d shift %v → %q", r, c, shift, back)
		}
	}
	if _, _, ok := RuneKey('é'); ok {
		t.Fatal("é typed on a US keyboard")
	}
}

// FuzzReadEvents: any byte stream reads as whole records, and only a
// stream that ends inside a record is an error.
func FuzzReadEvents(f *testing.F) {
	for _, l := range []Layout{Layout64, Layout32} {
		var b bytes.Buffer
		evs, _ := TypeCode("AbC1", KeyEnter, time.Unix(1764255600, 0), 10*time.Millisecond)
		for _, ev := range evs {
			b.Write(l.Encode(ev))
		}
		f.Add(b.Bytes(), l == Layout32)
		f.Add(b.Bytes()[:b.Len()-3], l == Layout32)
	}
	f.Fuzz(func(t *testing.T, data []byte, small bool) {
		l := Layout64
		if small {
			l = Layout32
		}
		evs, err := ReadEvents(bytes.NewReader(data), l)
		if len(evs) != len(data)/l.Size {
			t.Fatalf("%d bytes gave %d records of %d", len(data), len(evs), l.Size)
		}
		if (len(data)%l.Size != 0) != errors.Is(err, ErrTruncatedEvent) || (err != nil && !errors.Is(err, ErrTruncatedEvent)) {
			t.Fatalf("%d bytes: error %v", len(data), err)
		}
		for i, ev := range evs {
			back := l.Decode(l.Encode(ev))
			if back.Type != ev.Type || back.Code != ev.Code || back.Value != ev.Value {
				t.Fatalf("record %d does not survive a round trip: %+v → %+v", i, ev, back)
			}
		}
	})
}
