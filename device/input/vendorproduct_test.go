package input

import (
	"fmt"
	"testing"
)

func TestParseVendorProduct(t *testing.T) {
	v, p, err := ParseVendorProduct("1eab:8203")
	if err != nil || v != 0x1eab || p != 0x8203 {
		t.Fatalf("1eab:8203: %04x %04x %v", v, p, err)
	}
	for _, bad := range []string{"", "1eab", "1eab:", ":8203", "1eab:82g3", "10000:1", "1eab:8203:1", "-1:1"} {
		if _, _, err := ParseVendorProduct(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseVendorProduct(f *testing.F) {
	for _, s := range []string{"1eab:8203", "0C2E:0B61", "1eab", "10000:1", "+1:2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, p, err := ParseVendorProduct(s)
		if err != nil {
			return
		}
		v2, p2, err := ParseVendorProduct(fmt.Sprintf("%04x:%04x", v, p))
		if err != nil || v2 != v || p2 != p {
			t.Fatalf("%q → %04x:%04x does not read back (%v)", s, v, p, err)
		}
	})
}
