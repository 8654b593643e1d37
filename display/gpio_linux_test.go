package display

import "testing"

func TestFindChipMissing(t *testing.T) {
	if _, err := OpenGPIO("no-such-chip", 17, false); err == nil {
		t.Fatal("opened a missing chip")
	}
}
