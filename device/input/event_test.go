package input

import (
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
